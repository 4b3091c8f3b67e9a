//! Provider-neutral pieces every simulator shares: the HTTP server
//! (`loket-runtime`'s accept loop, so a connection that never sends its
//! request head is closed, open connections are capped and a stop ends
//! within a grace period) with a per-connection kill switch (to reproduce
//! "connection reset after the provider committed"), bounded body reading,
//! the bounded memory every per-reference record lives in (`RecentMap`, and
//! `IndexedRecentMap` for records found by a second key too), per-reference
//! request counting, the `/_sim/…/{reference}` introspection routes, and
//! the callback sender that records every delivery attempt.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use loket_runtime::http_server::{self, ConnectionMetrics, Limits, Port};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics as names;

/// Locks a mutex, ignoring poisoning: the simulators' critical sections
/// never leave half-written state behind, and a simulator must not panic
/// because another request did.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// HTTP server with a kill switch per connection
// ---------------------------------------------------------------------------

/// What a handler knows about the connection its request came on: the peer
/// address (for IP allow-lists) and a switch that makes the connection fail
/// on its next write, so the client sees the connection drop with no reply.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    kill: Arc<AtomicBool>,
}

impl ConnInfo {
    /// Makes the connection fail before any byte of the reply is written
    /// (the socket is closed with a zero linger, i.e. a TCP reset).
    pub fn abort(&self) {
        self.kill.store(true, Ordering::SeqCst);
    }

    /// The connection info of a request, when it came through [`serve`].
    pub fn of(request: &axum::extract::Request) -> Option<ConnInfo> {
        request
            .extensions()
            .get::<ConnectInfo<ConnInfo>>()
            .map(|ConnectInfo(info)| info.clone())
    }
}

/// Gives an accepted connection its kill switch: the stream to serve, and
/// the [`ConnInfo`] its requests carry.
fn killable(stream: TcpStream, peer: SocketAddr) -> (KillableStream, ConnInfo) {
    let kill = Arc::new(AtomicBool::new(false));
    let info = ConnInfo {
        peer,
        kill: kill.clone(),
    };
    (
        KillableStream {
            inner: stream,
            kill,
        },
        info,
    )
}

/// A TCP stream that errors on write once its connection was aborted.
struct KillableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
}

impl KillableStream {
    fn killed(&self) -> bool {
        if self.kill.load(Ordering::SeqCst) {
            // Zero linger: closing sends a RST instead of a FIN, like a
            // provider whose load balancer dropped the connection.
            let _ = self.inner.set_zero_linger();
            true
        } else {
            false
        }
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "simulated connection reset")
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A simulator port's connection limits unless `loket-sim`'s settings
/// change them ([`crate::service::Settings`]). A simulator stands in for a
/// provider under load tests, so the cap is far above what a load test opens
/// (a connector keeps at most 256 idle connections to a host) and one
/// source, the load generator's machine, may hold all of it; it only bounds
/// the file descriptors a runaway client can take. 5 s to send a request
/// head, which also closes a kept-alive connection left idle that long (a
/// connector's pool then opens a new one), or to take in an answer. 10 s for the requests in flight
/// at a stop, as a loket service's drain.
pub const DEFAULT_CONNECTION_LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_secs(5),
    stalled_write_timeout: Duration::from_secs(5),
    max_connections: 4_096,
    max_connections_per_source: 4_096,
    max_header_bytes: 16 * 1024,
    drain_grace: Duration::from_secs(10),
};

/// Serves `router` on `listener` with [`DEFAULT_CONNECTION_LIMITS`] until
/// `shutdown` fires, then drains the requests in flight for at most the
/// limits' drain grace.
///
/// `background` is the simulator's own stop signal (pending callbacks,
/// settle timers); it fires together with `shutdown`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: loket_runtime::Shutdown,
    background: loket_runtime::Shutdown,
) {
    serve_limited(
        router,
        listener,
        DEFAULT_CONNECTION_LIMITS,
        shutdown,
        background,
    )
    .await;
}

/// [`serve`] with the connection `limits` given (`loket-sim` takes them from
/// its settings). Every connection carries a [`ConnInfo`], so a scenario can
/// reset it and an IP allow-list sees its peer.
pub async fn serve_limited(
    router: Router,
    listener: TcpListener,
    limits: Limits,
    shutdown: loket_runtime::Shutdown,
    background: loket_runtime::Shutdown,
) {
    let linked = shutdown.clone();
    tokio::spawn(async move {
        linked.wait().await;
        background.trigger();
    });
    let port = Port {
        name: "simulator",
        limits,
        admit: http_server::admit_all(),
        metrics: ConnectionMetrics {
            refused: crate::metrics::CONNECTIONS_REFUSED_TOTAL,
            open: crate::metrics::CONNECTIONS_OPEN,
        },
    };
    http_server::serve_wrapping(listener, router, port, shutdown, killable).await;
}

/// Serves `router` on a fresh loopback port for as long as the process runs
/// and returns its base URL (`http://127.0.0.1:<port>`): for tests that put
/// a small stub where a provider or a callback receiver would be.
pub async fn serve_stub(router: Router) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

/// The value of the request header `name`, trimmed; `None` when it is
/// absent, blank or not visible ASCII.
pub(crate) fn header_str<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("body not received within {0:?}")]
    Timeout(Duration),
    #[error("body could not be read: {0}")]
    Broken(String),
}

impl BodyError {
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole body, refusing more than `limit` bytes and giving up after
/// `timeout` (a slow or endless body never holds memory or a task for long).
pub async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, BodyError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) => {
            // axum reports the limit as a length-limit error in its source chain.
            let text = format!("{error:?}");
            if text.contains("LengthLimit") {
                Err(BodyError::TooLarge(limit))
            } else {
                Err(BodyError::Broken(error.to_string()))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Provider outages
// ---------------------------------------------------------------------------

/// A provider outage (a "5xx storm", RELIABILITY.md #9) that an operator or
/// a test switches on: until it ends, every API request is answered with an
/// HTTP error page, the way a provider's front proxy answers when the
/// service behind it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// The HTTP status every request gets: 500–599 (default 503).
    #[serde(default = "Outage::default_status")]
    pub status: u16,
    /// How long the outage lasts from when it is switched on.
    pub for_ms: u64,
    /// When true, money-moving requests are still carried out (ledger and
    /// deposit) and only their answer is the error page: the provider did
    /// the work and the proxy in front of it failed. When false (default)
    /// nothing is carried out.
    #[serde(default)]
    pub after_commit: bool,
}

impl Outage {
    /// The longest outage accepted (one hour).
    pub const MAX_MS: u64 = 3_600_000;

    fn default_status() -> u16 {
        503
    }

    /// The first field that is out of range, named.
    pub fn validate(&self) -> Result<(), String> {
        if !(500..=599).contains(&self.status) {
            return Err(format!("status: must be 500-599, got {}", self.status));
        }
        if self.for_ms == 0 || self.for_ms > Self::MAX_MS {
            return Err(format!(
                "for_ms: must be 1-{}, got {}",
                Self::MAX_MS,
                self.for_ms
            ));
        }
        Ok(())
    }
}

/// The outage in force, as `GET /_sim/outage` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageState {
    pub active: bool,
    pub status: Option<u16>,
    pub after_commit: bool,
    pub remaining_ms: u64,
}

/// Holds the outage in force, if any; it ends by itself when its time is up.
#[derive(Debug, Default)]
pub struct OutageSwitch(Mutex<Option<(Outage, std::time::Instant)>>);

impl OutageSwitch {
    /// Starts `outage` now (replacing one in force), or names the bad field.
    pub fn start(&self, outage: Outage) -> Result<(), String> {
        outage.validate()?;
        let until = std::time::Instant::now() + Duration::from_millis(outage.for_ms);
        *lock(&self.0) = Some((outage, until));
        tracing::warn!(
            status = outage.status,
            for_ms = outage.for_ms,
            after_commit = outage.after_commit,
            "simulated outage started"
        );
        Ok(())
    }

    /// Ends the outage in force, if any.
    pub fn end(&self) {
        if lock(&self.0).take().is_some() {
            tracing::warn!("simulated outage ended");
        }
    }

    /// The outage in force now.
    pub fn current(&self) -> Option<Outage> {
        self.in_force().map(|(outage, _)| outage)
    }

    pub fn state(&self) -> OutageState {
        match self.in_force() {
            Some((outage, until)) => OutageState {
                active: true,
                status: Some(outage.status),
                after_commit: outage.after_commit,
                remaining_ms: until
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis() as u64,
            },
            None => OutageState {
                active: false,
                status: None,
                after_commit: false,
                remaining_ms: 0,
            },
        }
    }

    fn in_force(&self) -> Option<(Outage, std::time::Instant)> {
        let mut slot = lock(&self.0);
        match *slot {
            Some((_, until)) if until <= std::time::Instant::now() => {
                *slot = None;
                None
            }
            current => current,
        }
    }
}

/// An nginx-style HTML error page with `status`: what a provider's front
/// proxy sends when the service behind it fails.
pub fn error_page(status: axum::http::StatusCode) -> axum::response::Response {
    use axum::response::IntoResponse;
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>\
         <hr><center>nginx</center></body></html>"
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/html")],
        body,
    )
        .into_response()
}

/// `GET /_sim/outage` (the outage in force), `PUT /_sim/outage` with an
/// [`Outage`] (400 naming the bad field) and `DELETE /_sim/outage`.
pub fn outage_routes(switch: Arc<OutageSwitch>) -> Router {
    use axum::extract::State;
    use axum::response::IntoResponse;
    use axum::Json;
    async fn show(State(switch): State<Arc<OutageSwitch>>) -> Json<OutageState> {
        Json(switch.state())
    }
    async fn start(
        State(switch): State<Arc<OutageSwitch>>,
        body: Result<Json<Outage>, axum::extract::rejection::JsonRejection>,
    ) -> axum::response::Response {
        let started = body
            .map_err(|rejection| rejection.body_text())
            .and_then(|Json(outage)| switch.start(outage));
        match started {
            Ok(()) => Json(switch.state()).into_response(),
            Err(error) => (
                axum::http::StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": error })),
            )
                .into_response(),
        }
    }
    async fn end(State(switch): State<Arc<OutageSwitch>>) -> Json<OutageState> {
        switch.end();
        Json(switch.state())
    }
    Router::new()
        .route(
            "/_sim/outage",
            axum::routing::get(show).put(start).delete(end),
        )
        .with_state(switch)
}

/// A front proxy for the API routes it wraps (`route_layer`): while an
/// outage is in force every request gets its error page without reaching
/// the simulated provider (so it is not counted); with `after_commit` the
/// request is carried out and only its answer is replaced.
pub async fn outage_gate(
    axum::extract::State(switch): axum::extract::State<Arc<OutageSwitch>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(outage) = switch.current() else {
        return next.run(request).await;
    };
    let status = axum::http::StatusCode::from_u16(outage.status)
        .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
    if outage.after_commit {
        let _carried_out = next.run(request).await;
    }
    error_page(status)
}

// ---------------------------------------------------------------------------
// Per-reference introspection
// ---------------------------------------------------------------------------

/// What a simulator keeps about one reference (in its provider's words: a
/// referencecode, partnerReferenceNo or orderNo), shown to operators and
/// cross-process tests by [`reference_routes`].
pub(crate) trait ReferenceRecords: Clone + Send + Sync + 'static {
    /// The requests counted for a reference.
    type Requests: Serialize;
    /// The simulator's ledger record of a reference.
    type Entry: Serialize;
    /// The callbacks sent about a reference.
    type Callbacks: Serialize;
    /// The `error` of the 404 answering a reference not in the ledger.
    const NOT_IN_LEDGER: &'static str;

    /// The requests received for `reference` (zero when never seen).
    fn requests_about(&self, reference: &str) -> Self::Requests;
    /// The ledger record of `reference`, if it has one.
    fn ledger_entry(&self, reference: &str) -> Option<Self::Entry>;
    /// The callbacks sent about `reference`.
    fn callbacks_about(&self, reference: &str) -> Self::Callbacks;
    /// Money-moving requests received under every remembered reference
    /// together, counted as [`Self::requests_about`] counts them: a test
    /// compares it with the sum over its transactions' references, which a
    /// resend under a new reference would fall short of.
    fn money_requests_total(&self) -> usize;
}

/// `GET /_sim/requests/{reference}`, `GET /_sim/ledger/{reference}` (404
/// with `{"error": S::NOT_IN_LEDGER}` for a reference not in the ledger)
/// and `GET /_sim/callbacks/{reference}`, answered in JSON from the
/// simulator `S` given as the router's state; and `GET /_sim/requests`,
/// `{"money_requests": N}` under every reference together.
pub(crate) fn reference_routes<S: ReferenceRecords>() -> Router<S> {
    use axum::extract::{Path, State};
    use axum::response::IntoResponse;
    use axum::Json;
    async fn all_requests<S: ReferenceRecords>(State(sim): State<S>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "money_requests": sim.money_requests_total() }))
    }
    async fn requests<S: ReferenceRecords>(
        State(sim): State<S>,
        Path(reference): Path<String>,
    ) -> Json<S::Requests> {
        Json(sim.requests_about(&reference))
    }
    async fn ledger<S: ReferenceRecords>(
        State(sim): State<S>,
        Path(reference): Path<String>,
    ) -> axum::response::Response {
        match sim.ledger_entry(&reference) {
            Some(entry) => Json(entry).into_response(),
            None => (
                axum::http::StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "error": S::NOT_IN_LEDGER })),
            )
                .into_response(),
        }
    }
    async fn callbacks<S: ReferenceRecords>(
        State(sim): State<S>,
        Path(reference): Path<String>,
    ) -> Json<S::Callbacks> {
        Json(sim.callbacks_about(&reference))
    }
    Router::new()
        .route("/_sim/requests", axum::routing::get(all_requests::<S>))
        .route(
            "/_sim/requests/{reference}",
            axum::routing::get(requests::<S>),
        )
        .route("/_sim/ledger/{reference}", axum::routing::get(ledger::<S>))
        .route(
            "/_sim/callbacks/{reference}",
            axum::routing::get(callbacks::<S>),
        )
}

// ---------------------------------------------------------------------------
// Bounded memory
// ---------------------------------------------------------------------------

/// How many references each simulator remembers unless configured otherwise
/// (`loket-sim`'s `remembered_references`).
pub const DEFAULT_REMEMBERED_REFERENCES: usize = 1_000_000;

/// A map that remembers at most `capacity` keys: inserting a new key into a
/// full map forgets the key inserted longest ago, and counts it in
/// [`FORGOTTEN_REFERENCES_TOTAL`](names::FORGOTTEN_REFERENCES_TOTAL).
/// Reading, updating or re-inserting a remembered key leaves its place
/// unchanged. Every record the simulators keep per reference lives in one,
/// so a load test of any length holds a bounded amount of memory.
///
/// Each key is held twice, by the table and by the insertion queue: text
/// keys are `Arc<str>`, so both share one copy of the text instead of
/// cloning it (a reference is whatever length a request sent, within the
/// checks of its simulator).
#[derive(Debug)]
pub(crate) struct RecentMap<K, V> {
    /// Each value with the insertion number of its key. Values are boxed:
    /// when the table doubles, it moves a pointer per key instead of the
    /// whole record. (Moving 100,000 OkeBayar ledger entries inline stalled
    /// the simulator for about 400 ms, and every purchase waiting on it.)
    entries: HashMap<K, (u64, Box<V>)>,
    /// The keys, oldest insertion first. A removed key stays behind until it
    /// reaches the front or is swept out; its insertion number no longer
    /// matching the entry's (or no entry) marks it stale.
    order: VecDeque<(u64, K)>,
    next_insertion: u64,
    capacity: usize,
    /// Metric labels: the simulator and which record this map holds.
    provider: &'static str,
    record: &'static str,
}

impl<K: Clone + Eq + Hash, V> RecentMap<K, V> {
    /// An empty map remembering at most `capacity` keys (0 acts as 1: the
    /// key just inserted is always remembered).
    ///
    /// Room for all of them is reserved now, so the map never grows under
    /// load: a doubling copies every key into fresh memory while requests
    /// wait (about 150 ms at 230,000 keys on a 2-core VM, even with boxed
    /// values). The reservation costs address space; memory is taken only
    /// as keys arrive.
    pub(crate) fn new(capacity: usize, provider: &'static str, record: &'static str) -> Self {
        RecentMap {
            entries: HashMap::with_capacity(capacity.max(1)),
            order: VecDeque::with_capacity(capacity.max(1)),
            next_insertion: 0,
            capacity,
            provider,
            record,
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get(key).map(|(_, value)| &**value)
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get_mut(key).map(|(_, value)| &mut **value)
    }

    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.contains_key(key)
    }

    /// Every remembered value, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().map(|(_, value)| &**value)
    }

    /// Stores `value` under `key` and returns the value it replaced. A new
    /// key in a full map makes it forget the oldest one; a remembered key
    /// keeps its place.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some((_, remembered)) = self.entries.get_mut(&key) {
            return Some(std::mem::replace(&mut **remembered, value));
        }
        let insertion = self.admit(key.clone());
        self.entries.insert(key, (insertion, Box::new(value)));
        None
    }

    /// The value under `key`, inserting `V::default()` first (as a new key,
    /// see [`insert`](Self::insert)) when there is none.
    pub(crate) fn get_or_insert_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let insertion = match self.entries.get(&key) {
            Some((insertion, _)) => *insertion,
            None => self.admit(key.clone()),
        };
        &mut self
            .entries
            .entry(key)
            .or_insert_with(|| (insertion, Box::default()))
            .1
    }

    /// Forgets `key` now (not counted as forgotten: it was asked for).
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.remove(key).map(|(_, value)| *value)
    }

    /// Makes room for the new `key` and queues it as the newest; returns its
    /// insertion number.
    fn admit(&mut self, key: K) -> u64 {
        if self.entries.len() >= self.capacity {
            self.forget_oldest();
        }
        // Removed keys leave stale places behind; sweep them out before they
        // outnumber the live ones (each sweep at least halves the queue, so
        // its cost is paid by the removals that made the stale places).
        if self.order.len() > 2 * self.entries.len() {
            let entries = &self.entries;
            self.order.retain(|(insertion, key)| {
                entries.get(key).is_some_and(|(live, _)| live == insertion)
            });
        }
        let insertion = self.next_insertion;
        self.next_insertion += 1;
        self.order.push_back((insertion, key));
        insertion
    }

    fn forget_oldest(&mut self) {
        while let Some((insertion, key)) = self.order.pop_front() {
            if self
                .entries
                .get(&key)
                .is_some_and(|(live, _)| *live == insertion)
            {
                self.entries.remove(&key);
                metrics::counter!(
                    names::FORGOTTEN_REFERENCES_TOTAL,
                    "provider" => self.provider,
                    "record" => self.record
                )
                .increment(1);
                return;
            }
        }
    }
}

/// A record an [`IndexedRecentMap`] keeps: the key it is kept under, and a
/// second key it is found by too.
pub(crate) trait IndexedRecord {
    fn key(&self) -> &str;
    /// Never the same for two records: the index holds one key per
    /// secondary key.
    fn secondary_key(&self) -> &str;
}

/// A [`RecentMap`] of records by their key, with an index by their
/// secondary key (a number the provider gave a reference), so a lookup by
/// either is one hash probe, never a scan.
///
/// The two maps forget in step: each record inserted adds one new key to
/// both, and each record replaced takes its keys out of both, so both hold
/// the same number of keys in the same insertion order and a full map
/// forgets the same record from each. A lookup by secondary key therefore
/// reaches the record filed under it, or nothing once that is forgotten.
#[derive(Debug)]
pub(crate) struct IndexedRecentMap<V> {
    /// Each record with the secondary key it is indexed under, which is what
    /// replacing it takes out of the index.
    by_key: RecentMap<Arc<str>, (Arc<str>, V)>,
    /// Secondary key → key.
    by_secondary: RecentMap<Arc<str>, Arc<str>>,
}

impl<V: IndexedRecord> IndexedRecentMap<V> {
    /// An empty map remembering at most `capacity` records; `record` and
    /// `index_record` label what each of its two maps forgets (see
    /// [`RecentMap`]).
    pub(crate) fn new(
        capacity: usize,
        provider: &'static str,
        record: &'static str,
        index_record: &'static str,
    ) -> Self {
        IndexedRecentMap {
            by_key: RecentMap::new(capacity, provider, record),
            by_secondary: RecentMap::new(capacity, provider, index_record),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.by_key.get(key).map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.by_key.get_mut(key).map(|(_, value)| value)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// The record whose secondary key is `secondary`, if still remembered.
    pub(crate) fn by_secondary(&self, secondary: &str) -> Option<&V> {
        let key = self.by_secondary.get(secondary)?;
        self.get(key)
    }

    /// [`by_secondary`](Self::by_secondary), to change the record.
    pub(crate) fn by_secondary_mut(&mut self, secondary: &str) -> Option<&mut V> {
        let key = self.by_secondary.get(secondary)?;
        self.by_key.get_mut(&**key).map(|(_, value)| value)
    }

    /// Remembers `value` as the newest record, forgetting the oldest one if
    /// full. A record already remembered under its key is taken out first,
    /// secondary key and all, rather than overwritten, so the new one is the
    /// newest remembered.
    pub(crate) fn record(&mut self, value: V) {
        let key: Arc<str> = value.key().into();
        let secondary: Arc<str> = value.secondary_key().into();
        if let Some((earlier, _)) = self.by_key.remove(&*key) {
            self.by_secondary.remove(&*earlier);
        }
        self.by_secondary.insert(secondary.clone(), key.clone());
        self.by_key.insert(key, (secondary, value));
    }
}

// ---------------------------------------------------------------------------
// Request counting
// ---------------------------------------------------------------------------

/// What a request asked for, in provider-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Moves money: a prepaid purchase (or pay-in/pay-out for others).
    Purchase,
    /// Moves money: a bill payment.
    Payment,
    /// Any inquiry (prepaid or bill).
    Inquiry,
    StatusCheck,
    /// Balance, echo, unknown operations.
    Other,
}

impl RequestKind {
    pub fn moves_money(self) -> bool {
        matches!(self, RequestKind::Purchase | RequestKind::Payment)
    }
}

/// Requests received for one reference that got past the simulator's
/// authentication, whatever their outcome after it (refused, duplicate and
/// malformed-but-referenced requests count too): every copy loket's
/// connector sent under a reference, which is what a test proving that
/// nothing was sent twice needs, while a sender without the partner's
/// credentials cannot fill the remembered references.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub purchases: usize,
    pub payments: usize,
    pub inquiries: usize,
    pub status_checks: usize,
    pub other: usize,
    pub total: usize,
    /// Money-moving requests among them that an outage turned away at the
    /// door (its error page, nothing done), or that were lost on their way
    /// (OkeBayar scenario `912`), counted in `purchases` and `payments` too.
    pub money_turned_away: usize,
}

impl RequestCounts {
    /// Money-moving requests received (purchases + payments).
    pub fn money(&self) -> usize {
        self.purchases + self.payments
    }

    /// Money-moving requests the provider took in: received and not turned
    /// away by an outage.
    pub fn money_taken_in(&self) -> usize {
        self.money() - self.money_turned_away
    }
}

/// Counts every request in total, and per reference (for the `remembered`
/// most recent references) those its simulator names one for.
#[derive(Debug)]
pub struct RequestCounter {
    by_reference: Mutex<RecentMap<Arc<str>, RequestCounts>>,
    total: AtomicU64,
}

impl RequestCounter {
    pub fn new(provider: &'static str, remembered: usize) -> Self {
        RequestCounter {
            by_reference: Mutex::new(RecentMap::new(remembered, provider, "requests")),
            total: AtomicU64::new(0),
        }
    }

    /// Counts one request, under `reference` too when given: a simulator
    /// passes one only for a request that passed its authentication.
    pub fn record(&self, reference: Option<&str>, kind: RequestKind) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let Some(reference) = reference else { return };
        let mut map = lock(&self.by_reference);
        let counts = map.get_or_insert_default(reference.into());
        match kind {
            RequestKind::Purchase => counts.purchases += 1,
            RequestKind::Payment => counts.payments += 1,
            RequestKind::Inquiry => counts.inquiries += 1,
            RequestKind::StatusCheck => counts.status_checks += 1,
            RequestKind::Other => counts.other += 1,
        }
        counts.total += 1;
    }

    /// Notes that the money-moving request just recorded for `reference`
    /// was turned away by an outage, or lost on its way.
    pub fn turn_away(&self, reference: Option<&str>) {
        let Some(reference) = reference else { return };
        lock(&self.by_reference)
            .get_or_insert_default(reference.into())
            .money_turned_away += 1;
    }

    /// The requests received for `reference`; zero for a reference never
    /// seen or forgotten.
    pub fn get(&self, reference: &str) -> RequestCounts {
        lock(&self.by_reference)
            .get(reference)
            .copied()
            .unwrap_or_default()
    }

    /// Every request received, with or without a reference.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Money-moving requests received under any remembered reference: a
    /// test compares it with the transactions it made, which a resend under
    /// a new reference would exceed while each reference's own count stays 1.
    pub fn money_total(&self) -> usize {
        lock(&self.by_reference)
            .values()
            .map(RequestCounts::money)
            .sum()
    }
}

// ---------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackMethod {
    /// Fields in the query string.
    Get,
    /// Fields in the body, in the original request's format.
    #[default]
    Post,
}

/// One callback to deliver.
#[derive(Debug, Clone)]
pub struct OutgoingCallback {
    /// The reference the callback is about (the log key).
    pub reference: String,
    /// A short label recorded in the log (e.g. the status it carries).
    pub label: String,
    pub url: String,
    pub method: CallbackMethod,
    /// GET: query pairs. POST: ignored.
    pub query: Vec<(String, String)>,
    /// POST: body and content type. GET: ignored.
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// What was delivered for one reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackLog {
    /// Callbacks the simulator decided to send (each may take attempts).
    pub deliveries: usize,
    /// HTTP attempts made, retries included.
    pub attempts: usize,
    /// Attempts answered with a 2xx.
    pub acknowledged: usize,
    pub last_http_status: Option<u16>,
    pub last_error: Option<String>,
    /// The labels of the deliveries, in the order they were started.
    pub labels: Vec<String>,
}

/// Builds the headers of one attempt of a signed callback when that attempt
/// is made. A receiver holds a callback's X-TIMESTAMP to a window of
/// minutes, the signature covers that timestamp, and a message id (SNAP's
/// X-EXTERNAL-ID) names one message: so every attempt, a retry minutes later
/// included, is stamped, signed and numbered afresh, never sent with the
/// first attempt's headers. Every simulator's callback sender takes the
/// headers of a signed callback this way.
pub type AttemptHeaders<'a> = dyn Fn() -> Vec<(String, String)> + Send + Sync + 'a;

/// Sends callbacks with bounded retries and records every attempt (for the
/// `remembered` most recent references).
#[derive(Debug)]
pub struct CallbackSender {
    client: reqwest::Client,
    log: Mutex<RecentMap<Arc<str>, CallbackLog>>,
    max_attempts: u32,
    retry_delay: Duration,
    provider: &'static str,
}

impl CallbackSender {
    pub fn new(
        provider: &'static str,
        timeout: Duration,
        max_attempts: u32,
        retry_delay: Duration,
        remembered: usize,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        CallbackSender {
            client,
            log: Mutex::new(RecentMap::new(remembered, provider, "callbacks")),
            max_attempts: max_attempts.max(1),
            retry_delay,
            provider,
        }
    }

    /// The HTTP client callbacks go out with (for a call a callback needs
    /// first, such as SNAP mode B's token request).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn log_for(&self, reference: &str) -> CallbackLog {
        lock(&self.log).get(reference).cloned().unwrap_or_default()
    }

    /// Delivers one callback: retries a connection error or a non-2xx answer
    /// up to the configured attempts. Returns the last HTTP status, if any.
    pub async fn deliver(&self, callback: OutgoingCallback) -> Option<u16> {
        self.deliver_signed(callback, &Vec::new).await
    }

    /// [`deliver`](Self::deliver) with the extra request headers
    /// `attempt_headers` builds for each attempt (a signed callback's
    /// timestamp, signature and message id, see [`AttemptHeaders`]).
    pub async fn deliver_signed(
        &self,
        callback: OutgoingCallback,
        attempt_headers: &AttemptHeaders<'_>,
    ) -> Option<u16> {
        let reference: Arc<str> = callback.reference.as_str().into();
        {
            let mut log = lock(&self.log);
            let entry = log.get_or_insert_default(reference.clone());
            entry.deliveries += 1;
            entry.labels.push(callback.label.clone());
        }
        let mut last = None;
        for attempt in 1..=self.max_attempts {
            let request = match callback.method {
                CallbackMethod::Get => self.client.get(&callback.url).query(&callback.query),
                CallbackMethod::Post => self
                    .client
                    .post(&callback.url)
                    .header(reqwest::header::CONTENT_TYPE, callback.content_type)
                    .body(callback.body.clone()),
            };
            let request = attempt_headers()
                .into_iter()
                .fold(request, |request, (name, value)| {
                    request.header(name, value)
                });
            let result = request.send().await;
            let (status, error) = match result {
                Ok(response) => (Some(response.status().as_u16()), None),
                Err(error) => (None, Some(error.without_url().to_string())),
            };
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            {
                let mut log = lock(&self.log);
                let entry = log.get_or_insert_default(reference.clone());
                entry.attempts += 1;
                if ok {
                    entry.acknowledged += 1;
                }
                if status.is_some() {
                    entry.last_http_status = status;
                }
                entry.last_error = error.clone();
            }
            metrics::counter!(
                names::CALLBACK_ATTEMPTS_TOTAL,
                "provider" => self.provider,
                "result" => if ok { "ok" } else { "error" }
            )
            .increment(1);
            last = status.or(last);
            if ok {
                break;
            }
            tracing::debug!(
                provider = self.provider,
                reference = %callback.reference,
                attempt,
                status = ?status,
                error = ?error,
                "callback not acknowledged"
            );
            if attempt < self.max_attempts {
                tokio::time::sleep(self.retry_delay).await;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;

    /// Counters by name and labels, e.g.
    /// `loket_sim_forgotten_references_total{provider=sim,record=test}`.
    #[derive(Default)]
    struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

    impl Counters {
        fn get(&self, name: &str) -> u64 {
            lock(&self.0)
                .get(name)
                .map_or(0, |counter| counter.load(Ordering::Relaxed))
        }
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(lock(&self.0).entry(name).or_default().clone())
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    const FORGOTTEN: &str = "loket_sim_forgotten_references_total{provider=sim,record=test}";

    fn map(capacity: usize) -> RecentMap<String, u32> {
        RecentMap::new(capacity, "sim", "test")
    }

    fn keys(map: &RecentMap<String, u32>) -> Vec<&str> {
        let mut keys: Vec<&str> = map.entries.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn forgets_the_oldest_inserted_key_first_and_counts_it() {
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || {
            let mut map = map(3);
            for (n, key) in ["a", "b", "c"].into_iter().enumerate() {
                assert_eq!(map.insert(key.into(), n as u32), None);
            }
            // Reading or changing a key does not make it recent.
            assert_eq!(map.get("a"), Some(&0));
            *map.get_mut("a").unwrap() += 10;
            assert_eq!(counters.get(FORGOTTEN), 0);

            map.insert("d".into(), 3);
            assert_eq!(keys(&map), ["b", "c", "d"]);
            assert!(!map.contains_key("a"));
            assert_eq!(counters.get(FORGOTTEN), 1);

            *map.get_or_insert_default("e".into()) += 4;
            assert_eq!(keys(&map), ["c", "d", "e"]);
            assert_eq!(map.get("e"), Some(&4));
            assert_eq!(counters.get(FORGOTTEN), 2);
            assert_eq!(map.values().sum::<u32>(), 2 + 3 + 4);
        });
    }

    #[test]
    fn updating_a_remembered_key_keeps_its_place_and_forgets_nothing() {
        let counters = Counters::default();
        metrics::with_local_recorder(&counters, || {
            let mut map = map(2);
            map.insert("a".into(), 1);
            map.insert("b".into(), 2);
            assert_eq!(map.insert("a".into(), 10), Some(1));
            *map.get_or_insert_default("a".into()) += 1;
            for key in ["a", "b"] {
                *map.get_mut(key).unwrap() += 100;
            }
            assert_eq!(keys(&map), ["a", "b"]);
            assert_eq!(map.get("a"), Some(&111));
            assert_eq!(counters.get(FORGOTTEN), 0);

            // "a" is still the oldest insertion, so it goes first.
            map.insert("c".into(), 3);
            assert_eq!(keys(&map), ["b", "c"]);
            assert_eq!(counters.get(FORGOTTEN), 1);
        });
    }

    #[test]
    fn capacity_one_remembers_only_the_newest_key() {
        let mut map = map(1);
        map.insert("a".into(), 1);
        map.insert("a".into(), 2);
        assert_eq!(keys(&map), ["a"]);
        map.insert("b".into(), 3);
        assert_eq!(keys(&map), ["b"]);
        *map.get_or_insert_default("c".into()) += 1;
        assert_eq!(keys(&map), ["c"]);
        assert_eq!(map.get("c"), Some(&1));

        // 0 is taken as 1: the key just inserted is always remembered.
        let mut zero = RecentMap::new(0, "sim", "test");
        zero.insert("a".to_string(), 1);
        zero.insert("b".to_string(), 2);
        assert_eq!(keys(&zero), ["b"]);
    }

    #[test]
    fn a_key_removed_and_inserted_again_is_new_and_not_forgotten_at_its_old_place() {
        let mut map = map(3);
        for key in ["a", "b", "c"] {
            map.insert(key.into(), 0);
        }
        assert_eq!(map.remove("b"), Some(0));
        assert_eq!(map.remove("b"), None);
        map.insert("b".into(), 1);
        map.insert("d".into(), 2);
        assert_eq!(keys(&map), ["b", "c", "d"]);
        map.insert("e".into(), 3);
        assert_eq!(keys(&map), ["b", "d", "e"]);
    }

    #[test]
    fn removals_do_not_grow_the_insertion_queue() {
        let mut map = map(1_000);
        map.insert("kept".into(), 0);
        for n in 0..10_000 {
            map.insert(format!("k{}", n % 3), n);
            map.remove(&format!("k{}", n % 3));
        }
        assert_eq!(keys(&map), ["kept"]);
        assert!(map.order.len() <= 4, "{} places queued", map.order.len());
    }
}
