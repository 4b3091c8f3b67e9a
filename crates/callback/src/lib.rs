//! The callback receiver: the HTTP endpoint providers call back
//! (`GET|POST /callback/{provider}`). It owns the HTTP edge for callbacks:
//! the per-provider source-IP allow-list, the body-size limit (413 before
//! the body is buffered, chunked or not), header and request timeouts and a
//! connection cap so slow clients are reaped ([`server`]), and durability:
//! a parsed callback is published on `loket.evt.<provider>.callback` with
//! `Nats-Msg-Id = cb:<provider>:<dedupe key>` (so a provider's retries
//! collapse) and the provider gets its acknowledgement only after JetStream
//! acknowledged the publish; if that fails the provider gets 503 and retries.
//! Those refusals (403, 413, 400, 503 above) are worded by the provider's
//! parser ([`loket_connector::Refusal`]), so a SNAP issuer gets them in
//! SNAP's JSON form (401/400/500 with a `responseCode`).
//! Behind the same allow-list and limits it also serves SNAP's own notify
//! path and, for SNAP notify mode B, the token endpoint issuers sign in at
//! (`POST /{version}/access-token/b2b`, answered by the provider's parser).
//!
//! Provider formats, signatures and replies belong to the provider crates
//! (each implements [`loket_connector::CallbackParser`]). This crate must not
//! decide any transaction state, must not read the database, and must never
//! log a callback body beyond a short sanitized prefix.

pub mod metric;
pub mod server;

use async_nats::jetstream;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use loket_connector::{CallbackParser, CallbackReply, CallbackRequest, Refusal};
use loket_protocol::pb::bus;
use loket_protocol::{subjects, Provider};
use loket_runtime::admin::{self, Readiness};
use loket_runtime::allow::AllowList;
use loket_runtime::config::Common;
use loket_runtime::http_server::SourceFilter;
use loket_runtime::telemetry::{self, TraceContext};
use loket_runtime::{bus as lbus, Shutdown};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument as _;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub common: Common,
    /// The callback port (`GET|POST /callback/{provider}`).
    pub listen_addr: String,
    /// Source addresses or CIDR blocks allowed per provider name; a provider
    /// not listed, or listed with an empty list, accepts every source.
    pub allowed_ips: BTreeMap<String, Vec<String>>,
    /// Largest accepted callback body; larger ones get 413 (SNAP: 400)
    /// before they are buffered.
    pub body_limit_bytes: usize,
    /// A client must send the request line and headers within this time
    /// (also the idle time allowed on a kept-alive connection, and how long
    /// an answer may wait for the client to read any of it).
    pub header_read_timeout_ms: u64,
    /// The body must have arrived within this time after the headers, or
    /// the provider gets its own "retry later" answer (plain 503; SNAP: 500
    /// `5007901`) and nothing is published. Making a callback durable is
    /// bounded by `publish_timeout_ms` of its own.
    pub request_timeout_ms: u64,
    /// How long to wait for JetStream to acknowledge a callback before
    /// answering 503 (SNAP: 500; the provider then retries).
    pub publish_timeout_ms: u64,
    /// Open connections beyond this are closed at once.
    pub max_connections: usize,
    /// Open connections from one source address beyond this are closed at
    /// once, so hosts a provider without an allow-list admits cannot use up
    /// the connections the others need.
    pub max_connections_per_source: usize,
    /// Our OkeBayar account (`userid`, `userpin`: the connector's), only to
    /// mask the PIN, alone or glued to the userid, wherever a callback
    /// echoes it. Both or neither; neither is warned about at start.
    pub okebayar: loket_okebayar::callback::CallbackSettings,
    /// SNAP QR CPM notify (79) verification: mode, issuer public key, window.
    pub snapqr: loket_snapqr::NotifySettings,
    /// Smilepayz callback verification: the platform public key.
    pub smilepayz: loket_smilepayz::CallbackSettings,
    /// Test-only fault injection ([`Failpoint`]); none in production.
    pub failpoint: Option<Failpoint>,
}

/// Test-only fault injection, named in configuration (`failpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failpoint {
    /// After a callback was made durable and before it is answered: hang,
    /// as a receiver killed right there never answers (RELIABILITY #4; the
    /// provider's retry must be a duplicate).
    HangAfterPublish,
}

impl loket_runtime::binary::ServiceSettings for Settings {
    fn log_settings(&self) -> loket_runtime::telemetry::LogSettings {
        self.common.log_settings()
    }

    fn admin_addr(&self) -> &str {
        &self.common.admin_addr
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            common: Common::default(),
            listen_addr: "127.0.0.1:8090".into(),
            allowed_ips: BTreeMap::new(),
            body_limit_bytes: 64 * 1024,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
            publish_timeout_ms: 5_000,
            max_connections: 1_024,
            max_connections_per_source: 64,
            okebayar: loket_okebayar::callback::CallbackSettings::default(),
            snapqr: loket_snapqr::NotifySettings::default(),
            smilepayz: loket_smilepayz::CallbackSettings::default(),
            failpoint: None,
        }
    }
}

impl Settings {
    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        self.allow_lists().map(|_| ())?;
        self.okebayar
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        loket_runtime::config::all_positive(&[
            ("body_limit_bytes", self.body_limit_bytes as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("publish_timeout_ms", self.publish_timeout_ms),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
        ])
        .map_err(Error::Config)
    }

    /// One list per provider. Two keys naming one provider (`OkeBayar` and
    /// `okebayar`, an alias, a base file and an override spelled apart) are
    /// an error: either list silently winning could open the provider to
    /// every source, or refuse its real callbacks.
    fn allow_lists(&self) -> Result<HashMap<Provider, AllowList>, Error> {
        let mut lists: HashMap<Provider, (&str, AllowList)> = HashMap::new();
        for (name, entries) in &self.allowed_ips {
            let provider = Provider::parse(name)
                .map_err(|e| Error::Config(format!("allowed_ips.{name}: {e}")))?;
            let list = AllowList::parse(entries)
                .map_err(|e| Error::Config(format!("allowed_ips.{name}: {e}")))?;
            if let Some((first, _)) = lists.insert(provider, (name, list)) {
                return Err(Error::Config(format!(
                    "allowed_ips.{first} and allowed_ips.{name} both name {provider}: keep one \
                     list for it"
                )));
            }
        }
        Ok(lists
            .into_iter()
            .map(|(provider, (_, list))| (provider, list))
            .collect())
    }
}

pub struct Listeners {
    pub main: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] lbus::BusError),
}

/// The callback parsers of every provider loket speaks to. Adding a
/// provider is one line here. A provider whose verification key is not
/// configured refuses every callback (its signature cannot be checked).
pub fn parsers(settings: &Settings) -> Result<Vec<Arc<dyn CallbackParser>>, Error> {
    let okebayar = loket_okebayar::callback::callback_parser(&settings.okebayar)
        .map_err(|e| Error::Config(e.to_string()))?;
    if !settings.okebayar.is_set() {
        tracing::warn!(
            "okebayar.userpin not set: an OkeBayar callback echoing our PIN outside its userpin \
             field would be stored with it; set LOKET_OKEBAYAR__USERID and LOKET_OKEBAYAR__USERPIN \
             (the connector's) for the receiver too"
        );
    }
    let snapqr = loket_snapqr::callback_parser(&settings.snapqr)
        .map_err(|e| Error::Config(format!("snapqr: {e}")))?;
    let smilepayz = loket_smilepayz::callback_parser(&settings.smilepayz)
        .map_err(|e| Error::Config(format!("smilepayz: {e}")))?;
    Ok(vec![
        Arc::new(okebayar),
        Arc::new(snapqr),
        Arc::new(smilepayz),
    ])
}

/// Where accepted callbacks go. [`JetStreamSink`] in production; tests may
/// use their own.
pub trait EventSink: Send + Sync + 'static {
    /// Publishes durably; `Ok` only once the stream acknowledged it.
    fn publish(
        &self,
        subject: String,
        msg_id: String,
        trace: TraceContext,
        event: bus::CallbackEvent,
    ) -> BoxFuture<'_, Result<(), String>>;
}

/// Publishes on JetStream and waits for the stream's acknowledgement.
#[derive(Clone)]
pub struct JetStreamSink {
    js: jetstream::Context,
    timeout: Duration,
}

impl JetStreamSink {
    pub fn new(js: jetstream::Context, timeout: Duration) -> Self {
        JetStreamSink { js, timeout }
    }
}

impl EventSink for JetStreamSink {
    fn publish(
        &self,
        subject: String,
        msg_id: String,
        trace: TraceContext,
        event: bus::CallbackEvent,
    ) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let headers = lbus::headers(&msg_id, &trace, "");
            let publish = lbus::publish_durable(&self.js, subject, headers, event.encode_to_vec());
            match tokio::time::timeout(self.timeout, publish).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no JetStream acknowledgement within {} ms",
                    self.timeout.as_millis()
                )),
            }
        })
    }
}

/// What the handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    parsers: HashMap<Provider, Arc<dyn CallbackParser>>,
    allow: HashMap<Provider, AllowList>,
    sink: Arc<dyn EventSink>,
    body_limit: usize,
    request_timeout: Duration,
    failpoint: Option<Failpoint>,
}

impl AppState {
    /// Admits a source some provider's allow-list admits (a provider without
    /// one admits every source): checked at accept, so hosts no provider
    /// calls from cannot fill the connection slots providers need.
    pub fn source_filter(&self) -> SourceFilter {
        let inner = self.inner.clone();
        Arc::new(move |ip| {
            inner.parsers.keys().any(|provider| {
                inner
                    .allow
                    .get(provider)
                    .is_none_or(|list| list.allows(Some(ip)))
            })
        })
    }

    pub fn new(
        settings: &Settings,
        parsers: Vec<Arc<dyn CallbackParser>>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Self, Error> {
        settings.validate()?;
        let allow = settings.allow_lists()?;
        for parser in &parsers {
            let provider = parser.provider();
            if allow.get(&provider).is_none_or(AllowList::allows_all) {
                tracing::warn!(
                    %provider,
                    "callbacks accepted from any source address: set allowed_ips.{provider} (LOKET_ALLOWED_IPS__{}) to the provider's published ranges",
                    provider.as_str().to_ascii_uppercase()
                );
            }
        }
        Ok(AppState {
            inner: Arc::new(Inner {
                parsers: parsers.into_iter().map(|p| (p.provider(), p)).collect(),
                allow,
                sink,
                body_limit: settings.body_limit_bytes,
                request_timeout: Duration::from_millis(settings.request_timeout_ms),
                failpoint: settings.failpoint,
            }),
        })
    }
}

/// The callback routes with their limits. The source address is read from
/// the [`ConnectInfo<SocketAddr>`] request extension ([`server::serve`] sets
/// it; a request without one is refused by a non-empty allow-list).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/callback/{provider}", get(callback).post(callback))
        // SNAP's standard notify path (spec §2: service 79), for issuers that
        // call it rather than ours; the signature covers whichever was used.
        .route("/{version}/qr/qr-cpm-notify", post(snap_notify))
        // Our token endpoint for issuers in SNAP notify mode B (spec §4.3).
        .route("/{version}/access-token/b2b", post(snap_token))
        // No body-limit or timeout layer: their own 413 and 408 would bypass
        // the provider's answer form. Every route reads the body through
        // `receive`, which refuses a declared Content-Length over the limit
        // before reading, stops reading at the limit, and gives up on a body
        // still arriving after `request_timeout_ms`.
        .with_state(state)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The provider's answer to a request the receiver refuses on its own.
fn refuse(parser: &Arc<dyn CallbackParser>, refusal: Refusal) -> Response {
    reply(parser.refuse(refusal), parser.reply_headers())
}

fn count(provider: &str, result: &'static str) {
    metrics::counter!(metric::CALLBACKS, "provider" => provider.to_string(), "result" => result)
        .increment(1);
}

fn reply(reply: CallbackReply, extra_headers: Vec<(&'static str, String)>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let content_type = HeaderValue::from_static(reply.content_type);
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], reply.body).into_response();
    for (name, value) in extra_headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

enum BodyError {
    TooLarge,
    Broken,
}

/// Reads at most `limit` bytes; stops reading (and refuses) as soon as the
/// body goes past it, so an endless chunked body costs at most `limit`.
async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// A notify on SNAP's own path: the SNAP QR callback.
async fn snap_notify(state: State<AppState>, request: Request) -> Response {
    callback(state, Path(Provider::SnapQr.as_str().to_string()), request).await
}

/// SNAP's token endpoint (spec §4.3, notify mode B): an issuer asks us for
/// the access token it then signs its notifies with. Same source allow-list
/// and body limit as the notifies; 404 unless the SNAP parser grants tokens.
async fn snap_token(State(state): State<AppState>, request: Request) -> Response {
    let provider = Provider::SnapQr;
    let (parser, token_request) = match receive(&state, provider.as_str(), request).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    match parser.grant_token(&token_request) {
        Some(answer) => {
            if answer.status == 200 {
                tracing::info!(%provider, source_ip = ?token_request.source_ip, "access token granted");
            } else {
                tracing::warn!(%provider, source_ip = ?token_request.source_ip, status = answer.status, "token request refused");
            }
            reply(answer, parser.reply_headers())
        }
        None => plain(
            StatusCode::NOT_FOUND,
            "no token endpoint in this notify mode\n",
        ),
    }
}

/// What every route shares before the provider's parser reads a request:
/// the parser of `provider_name`, the source allow-list and the bounded body.
/// `Err` is the answer already decided (404, or the provider's refusal).
async fn receive(
    state: &AppState,
    provider_name: &str,
    request: Request,
) -> Result<(Arc<dyn CallbackParser>, CallbackRequest), Response> {
    let inner = &state.inner;
    let Some(parser) = Provider::parse(provider_name)
        .ok()
        .and_then(|p| inner.parsers.get(&p))
        .cloned()
    else {
        count(metric::NO_PROVIDER, metric::result::UNKNOWN_PROVIDER);
        return Err(plain(StatusCode::NOT_FOUND, "unknown provider\n"));
    };
    let provider = parser.provider();
    let source_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(list) = inner.allow.get(&provider) {
        if !list.allows(source_ip) {
            count(provider.as_str(), metric::result::FORBIDDEN);
            tracing::warn!(%provider, source_ip = ?source_ip, "callback from a source not on the allow-list refused");
            return Err(refuse(&parser, Refusal::Forbidden));
        }
    }
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > inner.body_limit as u64) {
        count(provider.as_str(), metric::result::TOO_LARGE);
        return Err(refuse(&parser, Refusal::TooLarge));
    }
    let read = tokio::time::timeout(inner.request_timeout, read_limited(body, inner.body_limit));
    let body = match read.await {
        Err(_) => {
            count(provider.as_str(), metric::result::SLOW_BODY);
            tracing::warn!(%provider, source_ip = ?source_ip, timeout_ms = inner.request_timeout.as_millis() as u64, "callback body still arriving after the request timeout; refused so the provider retries");
            return Err(refuse(&parser, Refusal::Unavailable));
        }
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => {
            count(provider.as_str(), metric::result::TOO_LARGE);
            tracing::warn!(%provider, source_ip = ?source_ip, "callback body over the limit refused");
            return Err(refuse(&parser, Refusal::TooLarge));
        }
        Ok(Err(BodyError::Broken)) => {
            count(provider.as_str(), metric::result::BROKEN_BODY);
            return Err(refuse(&parser, Refusal::Unreadable));
        }
    };
    let callback_request = CallbackRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body,
        source_ip,
    };
    Ok((parser, callback_request))
}

async fn callback(
    State(state): State<AppState>,
    Path(provider_name): Path<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parser, callback_request) = match receive(&state, &provider_name, request).await {
        Ok(received) => received,
        Err(response) => return response,
    };
    let provider = parser.provider();
    // A callback starts a trace of its own (providers send no traceparent);
    // the reconciler's work on it continues it.
    let span = tracing::info_span!("callback", %provider, trace_id = tracing::field::Empty);
    let trace = telemetry::join(&span, None);
    accept(&state, parser, callback_request, trace, started)
        .instrument(span)
        .await
}

/// Parses a received callback, makes it durable and answers the provider.
async fn accept(
    state: &AppState,
    parser: Arc<dyn CallbackParser>,
    callback_request: CallbackRequest,
    trace: TraceContext,
    started: Instant,
) -> Response {
    let provider = parser.provider();
    let source_ip = callback_request.source_ip;

    let parsed = match parser.parse(&callback_request) {
        Ok(parsed) => parsed,
        Err(error) => {
            count(provider.as_str(), metric::result::REJECTED);
            tracing::warn!(
                %provider,
                %error,
                source_ip = ?source_ip,
                method = %callback_request.method,
                body_len = callback_request.body.len(),
                "callback rejected"
            );
            return reply(
                parser.reject(&callback_request, &error),
                parser.reply_headers(),
            );
        }
    };

    let event_id = format!("cb:{}:{}", provider.as_str(), parsed.dedupe_key);
    let event = bus::CallbackEvent {
        event_id: event_id.clone(),
        provider: provider.as_str().to_string(),
        provider_reference: parsed.provider_reference.clone(),
        provider_trace: parsed.provider_trace.clone(),
        provider_code: parsed.provider_code.clone(),
        serial_number: parsed.serial_number.clone(),
        verified: parsed.verified,
        claimed_outcome: loket_protocol::pb::Outcome::from(parsed.claimed_outcome) as i32,
        raw: parsed.raw_masked.clone(),
        provider_amount: parsed.provider_amount.map(Into::into),
        provider_amount_unreadable: parsed
            .provider_amount_unreadable
            .clone()
            .unwrap_or_default(),
        source_ip: source_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        received_at: Some(loket_protocol::conversions::timestamp(chrono::Utc::now())),
    };
    if let Err(error) = state
        .inner
        .sink
        .publish(subjects::callback(provider), event_id.clone(), trace, event)
        .await
    {
        count(provider.as_str(), metric::result::UNAVAILABLE);
        tracing::error!(%provider, %error, reference = %parsed.provider_reference, "callback could not be made durable; answering with a refusal so the provider retries");
        return refuse(&parser, Refusal::Unavailable);
    }
    if state.inner.failpoint == Some(Failpoint::HangAfterPublish) {
        tracing::warn!("failpoint hang_after_publish: the callback is durable and never answered");
        std::future::pending::<()>().await;
    }
    count(provider.as_str(), metric::result::ACCEPTED);
    metrics::histogram!(metric::HANDLE_SECONDS).record(started.elapsed().as_secs_f64());
    tracing::info!(
        %provider,
        reference = %parsed.provider_reference,
        code = %parsed.provider_code,
        verified = parsed.verified,
        trace_id = %trace.trace_id(),
        %event_id,
        "callback accepted"
    );
    reply(
        parser.acknowledge(&callback_request, &parsed),
        parser.reply_headers(),
    )
}

/// Runs the receiver until `shutdown`, then stops accepting, lets open
/// requests finish (bounded by `shutdown_grace_ms`) and returns.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let readiness = Readiness::default();
    let admin_server = admin::spawn(listeners.admin, readiness.clone(), shutdown.clone());
    let parsers = parsers(&settings)?;
    metric::register_at_zero(parsers.iter().map(|parser| parser.provider()));
    let nats = lbus::connect(&settings.common.nats_url, "loket-callback").await?;
    readiness.watch_bus(&nats);
    let js = jetstream::new(nats);
    lbus::ensure_streams(&js).await?;
    let sink = Arc::new(JetStreamSink::new(
        js,
        Duration::from_millis(settings.publish_timeout_ms),
    ));
    let state = AppState::new(&settings, parsers, sink)?;
    let limits = server::limits(&settings);
    let admit = state.source_filter();
    readiness.set(true);
    tracing::info!(addr = ?listeners.main.local_addr().ok(), "callback receiver started");
    server::serve(
        listeners.main,
        router(state),
        limits,
        admit,
        shutdown.clone(),
    )
    .await;
    readiness.set(false);
    admin_server.stop().await;
    tracing::info!("callback receiver stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
