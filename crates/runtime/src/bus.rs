//! The JetStream layout (see [`loket_protocol::subjects`]) and the one way
//! loket publishes: with a `Nats-Msg-Id` so a re-publish is de-duplicated,
//! the trace context and the transaction id in headers, and waiting for the
//! stream's acknowledgement so "published" means "durable". Also the one way
//! loket connects ([`connect`]): credentials apart from the server addresses,
//! and, for who must know, a count of the moments messages may have been
//! missed ([`connect_observed`]).

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::HeaderMap;
use loket_protocol::subjects;
use std::time::Duration;
use tokio::sync::watch;

use crate::telemetry::TraceContext;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream setup failed: {0}")]
    Setup(String),
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscription not confirmed by the server: {0}")]
    Subscribe(String),
}

/// How long JetStream remembers a `Nats-Msg-Id` for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connects with unlimited reconnects, so a restarted nats-server is picked
/// up without restarting the service. For a service that must know when
/// messages may have passed it by, see [`connect_observed`].
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    connect_observed(url, name)
        .await
        .map(|(client, _gaps)| client)
}

/// [`connect`], plus a count of the moments plain subscriptions may have
/// missed messages: each loss of the connection (`Disconnected`; what is
/// published until the reconnect never reaches them) and each time the
/// server or the client dropped messages for a subscription that did not
/// keep up (`SlowConsumer`). The count starts at 0 and only grows; a service
/// that keeps state from core NATS messages (the ingress's watch streams)
/// waits on `changed()` and re-reads the record of truth. JetStream
/// consumers need not watch it: they are redelivered what they missed.
///
/// `url` is one NATS URL or a comma-separated list. Its user and password
/// (`nats://user:password@host`, percent-encoded as in any URL) or token
/// (`nats://token@host`) are taken out and handed to async-nats as
/// credentials, so the client never holds them in a server address (which it
/// logs at DEBUG on every connection attempt).
///
/// A server that refuses those credentials at the first attempt is an error
/// at once; a server not reachable yet is connected to in the background, and
/// the service's first JetStream call waits for it.
pub async fn connect_observed(
    url: &str,
    name: &str,
) -> Result<(async_nats::Client, watch::Receiver<u64>), BusError> {
    let (gaps, gaps_seen) = watch::channel(0u64);
    let gaps = std::sync::Arc::new(gaps);
    let observed = |options: async_nats::ConnectOptions| {
        let gaps = gaps.clone();
        options.max_reconnects(None).event_callback(move |event| {
            if matches!(
                event,
                async_nats::Event::Disconnected | async_nats::Event::SlowConsumer(_)
            ) {
                gaps.send_modify(|count| *count += 1);
            }
            async move {
                match event {
                    async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                        tracing::warn!(%event, "nats connection event")
                    }
                    _ => tracing::info!(%event, "nats connection event"),
                }
            }
        })
    };
    // One attempt first. A server that refuses the credentials is a
    // configuration mistake, reported now by name; async-nats would retry it
    // in the background for ever while the service waited on its first
    // JetStream call. A server not up yet is waited for, as before.
    let (options, servers) = options_for(url, name)?;
    match observed(options).connect(servers).await {
        Ok(client) => return Ok((client, gaps_seen)),
        Err(error) if is_refusal(&error) => {
            return Err(refused(
                url,
                format!("the server refused the credentials ({error}); check the NATS URL's user and password or token"),
            ))
        }
        Err(error) => tracing::warn!(
            url = %without_credentials(url),
            %error,
            "NATS not reachable yet; connecting in the background"
        ),
    }
    let (options, servers) = options_for(url, name)?;
    let client = observed(options)
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|error| refused(url, error.to_string()))?;
    Ok((client, gaps_seen))
}

/// Whether a connection failed because the server refused its credentials.
fn is_refusal(error: &async_nats::ConnectError) -> bool {
    matches!(
        error.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
            | async_nats::ConnectErrorKind::Authentication
    )
}

/// Connects once, for a command at a terminal (loketctl): no reconnect
/// loop, so an unreachable server is an answer within the 5 s connection
/// timeout. Credentials are taken from `url` as by [`connect`].
pub async fn connect_once(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    let (options, servers) = options_for(url, name)?;
    options
        .connect(servers)
        .await
        .map_err(|error| refused(url, error.to_string()))
}

/// The connection options every loket connection shares, and the servers
/// of `url` without their credentials (see [`connect_observed`]).
fn options_for(
    url: &str,
    name: &str,
) -> Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>), BusError> {
    let (servers, credentials) =
        servers_and_credentials(url).map_err(|reason| refused(url, reason))?;
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5));
    let options = match credentials {
        None => options,
        Some(Credentials::UserAndPassword(user, password)) => {
            options.user_and_password(user, password)
        }
        Some(Credentials::Token(token)) => options.token(token),
    };
    Ok((options, servers))
}

/// A connection to `url` that failed for `reason`, naming the servers
/// without their credentials.
fn refused(url: &str, reason: String) -> BusError {
    BusError::Connect {
        url: without_credentials(url),
        reason,
    }
}

/// How a NATS URL authenticates.
#[derive(PartialEq, Eq)]
enum Credentials {
    UserAndPassword(String, String),
    Token(String),
}

/// The servers of `url` (one NATS URL or a comma-separated list) without
/// their userinfo, and the credentials that userinfo held. async-nats takes
/// one set of credentials per connection, so servers that name different
/// ones are refused; a server naming none uses the others'. Errors never
/// quote the URL (it may hold a password).
fn servers_and_credentials(
    url: &str,
) -> Result<(Vec<async_nats::ServerAddr>, Option<Credentials>), String> {
    let mut servers = Vec::new();
    let mut credentials = None;
    for server in url.split(',').map(ServerUrl::split) {
        if let Some(userinfo) = server.userinfo {
            let these = match userinfo.split_once(':') {
                Some((user, password)) => {
                    Credentials::UserAndPassword(percent_decoded(user)?, percent_decoded(password)?)
                }
                None => Credentials::Token(percent_decoded(userinfo)?),
            };
            if credentials.as_ref().is_some_and(|known| *known != these) {
                return Err("the servers name different credentials; give all the same".into());
            }
            credentials = Some(these);
        }
        let address = format!("{}{}", server.scheme, server.address);
        servers.push(
            address
                .parse()
                .map_err(|error: std::io::Error| error.to_string())?,
        );
    }
    Ok((servers, credentials))
}

/// One server of a NATS URL, cut around its userinfo (`user:password@` or
/// `token@`): `nats://` + `user:password` + `host:4222`.
struct ServerUrl<'a> {
    /// `nats://`, `tls://`, … or empty (async-nats then assumes `nats://`).
    scheme: &'a str,
    userinfo: Option<&'a str>,
    /// Host, port and anything after them.
    address: &'a str,
}

impl<'a> ServerUrl<'a> {
    fn split(server: &'a str) -> Self {
        let (scheme, rest) = match server.find("://") {
            Some(at) => server.split_at(at + "://".len()),
            None => ("", server),
        };
        match rest.rsplit_once('@') {
            Some((userinfo, address)) => ServerUrl {
                scheme,
                userinfo: Some(userinfo),
                address,
            },
            None => ServerUrl {
                scheme,
                userinfo: None,
                address: rest,
            },
        }
    }
}

/// `text` with its `%XX` escapes decoded (a password holding `@`, `:` or
/// `,` is written `%40`, `%3A`, `%2C` in a URL). The error never quotes it.
fn percent_decoded(text: &str) -> Result<String, String> {
    let bad = || "the user, password or token is not correctly percent-encoded".to_string();
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, after)) = rest.split_first() {
        if first == b'%' {
            let escape = after.get(..2).ok_or_else(bad)?;
            let mut byte = [0u8];
            hex::decode_to_slice(escape, &mut byte).map_err(|_| bad())?;
            bytes.push(byte[0]);
            rest = &after[2..];
        } else {
            bytes.push(first);
            rest = after;
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// `url` (one NATS URL or a comma-separated list, or any other URL such as
/// the OTLP endpoint) with any user and password or token replaced by
/// `***`, for errors, logs and `Debug` output. Conservative where the text is
/// ambiguous: a userinfo runs back from its `@` to its server's scheme, or to
/// the comma after the previous server's `@`, or to the start, so a password
/// holding a raw `,` or `@` (which should have been percent-encoded) is hidden
/// whole, at the cost of hiding a server address in a list without schemes.
pub fn without_credentials(url: &str) -> String {
    let mut shown = String::with_capacity(url.len());
    let mut from = 0;
    for (at, _) in url.match_indices('@') {
        let before = &url[from..at];
        let mut userinfo_start = match (from, before.find(',')) {
            (0, _) | (_, None) => 0,
            (_, Some(comma)) => comma + 1,
        };
        if let Some(scheme) = before[userinfo_start..].rfind("://") {
            userinfo_start += scheme + "://".len();
        }
        shown.push_str(&before[..userinfo_start]);
        shown.push_str("***@");
        from = at + 1;
    }
    shown.push_str(&url[from..]);
    shown
}

/// Creates (or finds) the three streams. Safe to call from every service at
/// start. Only features of nats-server 2.9 are used.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), BusError> {
    let specs = [
        (
            subjects::COMMAND_STREAM,
            subjects::COMMAND_SUBJECTS,
            stream::RetentionPolicy::WorkQueue,
            Duration::ZERO,
        ),
        (
            subjects::EVENT_STREAM,
            subjects::EVENT_SUBJECTS,
            stream::RetentionPolicy::WorkQueue,
            Duration::ZERO,
        ),
        (
            subjects::UPDATE_STREAM,
            subjects::UPDATE_SUBJECTS,
            stream::RetentionPolicy::Limits,
            Duration::from_secs(7 * 24 * 3600),
        ),
    ];
    for (name, subject, retention, max_age) in specs {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            retention,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age,
            ..Default::default()
        };
        // Several services start at once and race to create the same
        // stream; the loser's create fails, and its next lookup finds it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match js.get_or_create_stream(config.clone()).await {
                Ok(_) => break,
                Err(error) if attempt < 10 => {
                    tracing::debug!(%error, stream = name, attempt, "stream setup raced; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(error) => return Err(BusError::Setup(format!("stream {name}: {error}"))),
            }
        }
    }
    Ok(())
}

/// The durable pull consumer `config` names on `stream`, created if it is
/// missing. One that exists keeps the settings it was made with, so when its
/// ack wait or its limit of unacknowledged messages differs from `config`'s
/// (the service's settings changed since), it is updated to them, keeping its
/// place in the stream, and the change is logged. Left as it was, a raised
/// `ack_wait_ms` would reach the service's own deadline checks but not the
/// server, which would go on handing the message out again at the old wait.
pub async fn durable_pull_consumer(
    stream: &stream::Stream,
    config: pull::Config,
) -> Result<jetstream::consumer::PullConsumer, BusError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let failed =
        |error: &dyn std::fmt::Display| BusError::Setup(format!("consumer {name}: {error}"));
    let consumer = stream
        .get_or_create_consumer(&name, config.clone())
        .await
        .map_err(|error| failed(&error))?;
    let existing = &consumer.cached_info().config;
    if existing.ack_wait == config.ack_wait && existing.max_ack_pending == config.max_ack_pending {
        return Ok(consumer);
    }
    tracing::warn!(
        consumer = name,
        ack_wait_ms_was = existing.ack_wait.as_millis() as u64,
        ack_wait_ms = config.ack_wait.as_millis() as u64,
        max_ack_pending_was = existing.max_ack_pending,
        max_ack_pending = config.max_ack_pending,
        "the durable consumer was made with other settings: updating it to this service's"
    );
    stream
        .create_consumer(config)
        .await
        .map_err(|error| failed(&error))
}

/// Headers for one published message.
pub fn headers(msg_id: &str, trace: &TraceContext, transaction_id: &str) -> HeaderMap {
    let mut headers = trace_headers(trace);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    if !transaction_id.is_empty() {
        headers.insert(subjects::TRANSACTION_HEADER, transaction_id);
    }
    headers
}

/// Headers carrying only `trace` (its `traceparent`), for a request that
/// is no published event (a balance query).
pub fn trace_headers(trace: &TraceContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(subjects::TRACEPARENT_HEADER, trace.to_header().as_str());
    headers
}

/// The trace context a received message was sent with (its `traceparent`),
/// if it carries a valid one; [`crate::telemetry::join`] continues it.
pub fn trace_of(message: &async_nats::Message) -> Option<TraceContext> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(subjects::TRACEPARENT_HEADER))
        .and_then(|value| TraceContext::parse(value.as_str()))
}

/// Publishes and waits for the stream's acknowledgement.
pub async fn publish_durable(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), BusError> {
    let ack = js
        .publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|error| BusError::Publish {
            subject: subject.clone(),
            reason: error.to_string(),
        })?;
    ack.await.map_err(|error| BusError::Publish {
        subject,
        reason: error.to_string(),
    })?;
    Ok(())
}

/// [`publish_durable`], tried up to `attempts` times while it fails, with a
/// pause that doubles from 100 ms: for a message that must outlast a brief
/// JetStream outage. The `Nats-Msg-Id` in `headers` keeps a retry of a
/// publish that did land from storing it twice.
pub async fn publish_durable_retrying(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
    attempts: u32,
) -> Result<(), BusError> {
    publish_with_retries(js, subject, headers, payload, Some(attempts)).await
}

/// [`publish_durable_retrying`] without a last attempt: for a message whose
/// loss costs more than any wait (a provider's answer that only the request
/// sent carried), whose caller keeps what it waits on (its command) its own
/// meanwhile and drops the future when it must stop. Pauses grow to
/// [`RETRY_PAUSE_MAX`]; the first failure and every tenth after it are
/// logged.
pub async fn publish_durable_until_stored(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) {
    // Without a last attempt there is no error to return.
    let _ = publish_with_retries(js, subject, headers, payload, None).await;
}

/// The longest pause between two attempts of a retried publish.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);

async fn publish_with_retries(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
    attempts: Option<u32>,
) -> Result<(), BusError> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match publish_durable(js, subject.clone(), headers.clone(), payload.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if attempts.is_none_or(|attempts| attempt < attempts) => {
                if attempt % 10 == 1 || attempts.is_some() {
                    tracing::warn!(%error, attempt, "publish failed; retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Returns once nats-server has in place every subscription `client` made
/// before the call, so a message published anywhere afterwards reaches them.
///
/// `Client::flush` only writes the client's buffer out; it does not wait for
/// the server. nats-server handles one connection's operations in order, so
/// when a message this client sends to a fresh inbox of its own comes back,
/// every subscription made before it is registered.
pub async fn confirm_subscriptions(client: &async_nats::Client) -> Result<(), BusError> {
    use futures::StreamExt as _;
    let failed = |reason: String| BusError::Subscribe(reason);
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(failed("the connection closed".into())),
        Err(_) => Err(failed(format!(
            "the server did not confirm within {SUBSCRIBE_CONFIRM_TIMEOUT:?}"
        ))),
    }
}

/// How long [`confirm_subscriptions`] waits for the server.
const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a draining service hands back from its pull buffer, so a drain
/// under a steady stream of new messages still ends.
const HAND_BACK_LIMIT: usize = 1_024;

/// Hands back (`nak`: redelivered at once, to any replica) the messages a
/// pull stream has already received but the service has not started, so a
/// draining replica does not keep them until their ack wait passes. Takes
/// only what has already arrived, never waits for more. Returns how many.
/// The stream is dropped afterwards, which ends its pull requests.
pub async fn hand_back_unstarted(messages: &mut jetstream::consumer::pull::Stream) -> usize {
    use futures::{FutureExt as _, StreamExt as _};
    let mut handed_back = 0;
    while handed_back < HAND_BACK_LIMIT {
        let Some(Some(Ok(message))) = messages.next().now_or_never() else {
            break;
        };
        match message.ack_with(jetstream::AckKind::Nak(None)).await {
            Ok(()) => handed_back += 1,
            Err(error) => {
                tracing::warn!(%error, "could not hand a message back; it returns after its ack wait");
            }
        }
    }
    handed_back
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_nats_urls_are_hidden() {
        assert_eq!(
            without_credentials("nats://loket:s3cret@10.0.0.1:4222,tls://a:b@n2:4222,n3:4222"),
            "nats://***@10.0.0.1:4222,tls://***@n2:4222,n3:4222"
        );
        assert_eq!(without_credentials("token@n1:4222"), "***@n1:4222");
        // A password with a raw `,` or `@` (unencoded) is hidden whole.
        for (url, shown) in [
            ("nats://loket:CANARY,X@n1:4222", "nats://***@n1:4222"),
            ("nats://loket:CANARY@X@n1:4222", "nats://***@***@n1:4222"),
            ("loket:CANARY,X@n1:4222,n2:4222", "***@n1:4222,n2:4222"),
            (
                "nats://n0:4222,nats://a:CANARY,X@n1:4222",
                "nats://n0:4222,nats://***@n1:4222",
            ),
        ] {
            assert_eq!(without_credentials(url), shown);
        }
        assert_eq!(
            without_credentials("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    /// async-nats gets the servers without their userinfo and the
    /// credentials apart (decoded), so it never holds them in an address it
    /// logs; servers naming different credentials are refused unquoted.
    #[test]
    fn credentials_are_taken_out_of_the_servers() {
        let shown = |url| {
            let (servers, credentials) = servers_and_credentials(url).unwrap();
            let servers: Vec<String> = servers
                .into_iter()
                .map(|server| server.into_inner().to_string())
                .collect();
            (servers, credentials)
        };
        let (servers, credentials) = shown("nats://loket:p%40ss%3Aw%2Crd@n1:4222,tls://n2:4222");
        assert_eq!(servers, ["nats://n1:4222", "tls://n2:4222"]);
        assert!(
            credentials
                == Some(Credentials::UserAndPassword(
                    "loket".into(),
                    "p@ss:w,rd".into()
                ))
        );
        let (servers, credentials) = shown("s3cret-token@n1:4222");
        assert_eq!(servers, ["nats://n1:4222"]);
        assert!(credentials == Some(Credentials::Token("s3cret-token".into())));
        assert!(shown("nats://127.0.0.1:4222").1.is_none());

        for refused in [
            "nats://a:CANARY-1@n1:4222,nats://b:CANARY-2@n2:4222",
            "nats://a:CANARY-1%4@n1:4222",
        ] {
            // `Credentials` has no `Debug` (it would print them): no `expect_err`.
            let Err(error) = servers_and_credentials(refused) else {
                panic!("refused");
            };
            assert!(!error.contains("CANARY"), "{error}");
        }
    }

    #[tokio::test]
    async fn a_connect_error_names_the_server_but_not_its_password() {
        let url = "nats://loket:CANARY-NATS-PASSWORD@127.0.0.1:notaport";
        let error = connect(url, "test")
            .await
            .expect_err("a bad port")
            .to_string();
        assert!(error.contains("127.0.0.1"), "{error}");
        assert!(!error.contains("CANARY-NATS-PASSWORD"), "{error}");
    }
}
