//! Provider-neutral pieces every simulator shares: the HTTP server with a
//! per-connection kill switch (to reproduce "connection reset after the
//! provider committed"), bounded body reading, per-reference request
//! counting, and the callback sender that records every delivery attempt.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
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

/// A TCP listener whose connections carry a [`ConnInfo`].
pub struct SimListener {
    inner: TcpListener,
}

impl SimListener {
    pub fn new(inner: TcpListener) -> Self {
        SimListener { inner }
    }
}

impl Listener for SimListener {
    type Io = KillableStream;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kill = Arc::new(AtomicBool::new(false));
                    let info = ConnInfo {
                        peer,
                        kill: kill.clone(),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            kill,
                        },
                        info,
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.inner.local_addr()?,
            kill: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, SimListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that errors on write once its connection was aborted.
pub struct KillableStream {
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

/// Serves `router` on `listener` until `shutdown` fires, then drains the
/// requests in flight.
///
/// `background` is the simulator's own stop signal (pending callbacks,
/// settle timers); it fires together with `shutdown`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: loket_runtime::Shutdown,
    background: loket_runtime::Shutdown,
) {
    let linked = shutdown.clone();
    tokio::spawn(async move {
        linked.wait().await;
        background.trigger();
    });
    let app = router.into_make_service_with_connect_info::<ConnInfo>();
    let result = axum::serve(SimListener::new(listener), app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "simulator server stopped");
    }
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

/// Requests received for one reference, whatever their outcome (rejected,
/// duplicate and malformed-but-referenced requests count too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub purchases: usize,
    pub payments: usize,
    pub inquiries: usize,
    pub status_checks: usize,
    pub other: usize,
    pub total: usize,
}

impl RequestCounts {
    /// Money-moving requests received (purchases + payments).
    pub fn money(&self) -> usize {
        self.purchases + self.payments
    }
}

/// Counts every request per reference.
#[derive(Debug, Default)]
pub struct RequestCounter {
    by_reference: Mutex<HashMap<String, RequestCounts>>,
    total: AtomicU64,
}

impl RequestCounter {
    pub fn record(&self, reference: Option<&str>, kind: RequestKind) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let Some(reference) = reference else { return };
        let mut map = lock(&self.by_reference);
        let counts = map.entry(reference.to_string()).or_default();
        match kind {
            RequestKind::Purchase => counts.purchases += 1,
            RequestKind::Payment => counts.payments += 1,
            RequestKind::Inquiry => counts.inquiries += 1,
            RequestKind::StatusCheck => counts.status_checks += 1,
            RequestKind::Other => counts.other += 1,
        }
        counts.total += 1;
    }

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

/// Sends callbacks with bounded retries and records every attempt.
#[derive(Debug)]
pub struct CallbackSender {
    client: reqwest::Client,
    log: Mutex<HashMap<String, CallbackLog>>,
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
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        CallbackSender {
            client,
            log: Mutex::new(HashMap::new()),
            max_attempts: max_attempts.max(1),
            retry_delay,
            provider,
        }
    }

    pub fn log_for(&self, reference: &str) -> CallbackLog {
        lock(&self.log).get(reference).cloned().unwrap_or_default()
    }

    /// Delivers one callback: retries a connection error or a non-2xx answer
    /// up to the configured attempts. Returns the last HTTP status, if any.
    pub async fn deliver(&self, callback: OutgoingCallback) -> Option<u16> {
        self.deliver_with_headers(callback, &[]).await
    }

    /// [`deliver`](Self::deliver) with extra request headers (signed
    /// callbacks: timestamp and signature headers).
    pub async fn deliver_with_headers(
        &self,
        callback: OutgoingCallback,
        headers: &[(String, String)],
    ) -> Option<u16> {
        {
            let mut log = lock(&self.log);
            let entry = log.entry(callback.reference.clone()).or_default();
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
            let request = headers.iter().fold(request, |request, (name, value)| {
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
                let entry = log.entry(callback.reference.clone()).or_default();
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
