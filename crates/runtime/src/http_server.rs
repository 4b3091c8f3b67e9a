//! The HTTP/1 accept loop of every loket HTTP port (the callback receiver's
//! and each service's admin port), with what `axum::serve` does not offer: a
//! header read timeout (a client that opens a connection and sends nothing,
//! or headers byte by byte, is disconnected — also an idle kept-alive
//! connection), a stalled-write timeout (a client that reads none of our
//! answers, pipelining requests until its window is shut, is disconnected
//! too), a cap on open connections (which a source the port's admission
//! filter refuses never takes) and on those from any one source (an IPv6
//! source counted by its /64), a header-size cap, and the peer address as
//! [`ConnectInfo`]. Without them a
//! client holding connections open would use up the process's file
//! descriptors, and with them the service's NATS, PostgreSQL and gRPC
//! sockets. Graceful: on `stop` it closes the port and waits (bounded) for
//! open requests to finish. The provider simulators serve through it too,
//! each connection wrapped first ([`serve_wrapping`]) so a scenario can reset
//! it.

use crate::Shutdown;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt as _;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// How long an answer may make no progress at all towards the client
    /// (its receive window shut) before the connection is closed. hyper's
    /// header read timeout runs only while it reads, so without this a
    /// client pipelining requests and never reading the answers held its
    /// connection, and its slot, for ever.
    pub stalled_write_timeout: Duration,
    pub max_connections: usize,
    /// Open connections one source may hold: an IPv4 address, or an IPv6
    /// /64 (one host's usual allocation, so a host cannot multiply its
    /// share by drawing addresses from its own prefix).
    pub max_connections_per_source: usize,
    /// hyper's read buffer, which bounds the request line plus headers.
    pub max_header_bytes: usize,
    /// How long a stopping port waits for open requests to finish.
    pub drain_grace: Duration,
}

/// Whether a connection from a source address may take one of the port's
/// connection slots.
pub type SourceFilter = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// A [`SourceFilter`] admitting every source.
pub fn admit_all() -> SourceFilter {
    Arc::new(|_| true)
}

/// Where a port records its connections: a counter of those closed at
/// accept, labelled `reason` (`source`: refused by the admission filter;
/// `source_full`: that source holds its share; `full`: every slot is taken),
/// and a gauge of those open. Both are on `/metrics` at 0 from the moment
/// the port serves, so an alert on refusals has a series before the first.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionMetrics {
    pub refused: &'static str,
    pub open: &'static str,
}

/// The `reason` label values of [`ConnectionMetrics::refused`].
const REFUSED_SOURCE: &str = "source";
const REFUSED_SOURCE_FULL: &str = "source_full";
const REFUSED_FULL: &str = "full";

impl ConnectionMetrics {
    /// Registers the counter for each reason an [`Admission`] refuses
    /// for, and for `port_reasons` (the port's own), and the gauge, at 0;
    /// adding zero changes no value, so a port opened again in one process
    /// (tests) keeps its counts.
    pub fn register_at_zero(self, port_reasons: &[&'static str]) {
        let admission_reasons = [REFUSED_SOURCE_FULL, REFUSED_FULL];
        for &reason in admission_reasons.iter().chain(port_reasons) {
            metrics::counter!(self.refused, "reason" => reason).increment(0);
        }
        metrics::gauge!(self.open).increment(0.0);
    }
}

/// One HTTP port's policy.
#[derive(Clone)]
pub struct Port {
    /// What log lines call the port ("callback", "admin").
    pub name: &'static str,
    pub limits: Limits,
    /// Checked at accept, before a connection takes a slot.
    pub admit: SourceFilter,
    pub metrics: ConnectionMetrics,
}

/// Serves `app` on `listener` until `stop`, then closes the port and drains.
/// Handlers see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, port: Port, stop: Shutdown) {
    serve_wrapping(listener, app, port, stop, |stream, peer| (stream, peer)).await;
}

/// [`serve`], with each connection the port admits passed through `wrap`
/// before HTTP is spoken on it: `wrap` returns the stream to serve and what
/// every request on that connection carries as [`ConnectInfo`] instead of
/// the bare peer address. The simulators wrap each connection in a switch
/// that resets it, for the "connection reset after the provider committed"
/// scenarios.
pub async fn serve_wrapping<Io, Info>(
    listener: TcpListener,
    app: Router,
    port: Port,
    stop: Shutdown,
    wrap: impl Fn(TcpStream, SocketAddr) -> (Io, Info),
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Info: Clone + Send + Sync + 'static,
{
    let Port {
        name,
        limits,
        admit,
        metrics: names,
    } = port;
    names.register_at_zero(&[REFUSED_SOURCE]);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let admission = Admission::new(
        limits.max_connections,
        limits.max_connections_per_source,
        names,
    );
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.wait() => break,
            accepted = next_connection(&listener, name) => accepted,
        };
        if !admit(peer.ip()) {
            metrics::counter!(names.refused, "reason" => REFUSED_SOURCE).increment(1);
            drop(stream);
            continue;
        }
        let Some(place) = admission.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stream, info) = wrap(stream, peer);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(info.clone()));
            app.clone().oneshot(request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8 * 1024));
        let stream = StallLimited::new(stream, limits.stalled_write_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, port = name, "connection ended with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_grace) => {
            tracing::warn!(port = name, "drain grace period passed with connections open");
        }
    }
}

/// The next connection `listener` accepts. A failed accept (out of file
/// descriptors and the like) is logged, naming the port, and retried after
/// a short pause.
pub async fn next_connection(listener: &TcpListener, port: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, port, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A port's connection places: at most `max_connections` open, and at
/// most `max_per_source` from one source address. A connection over either
/// is refused, counted in [`ConnectionMetrics::refused`] (`full`,
/// `source_full`).
pub struct Admission {
    slots: Arc<Semaphore>,
    per_source: PerSource,
    names: ConnectionMetrics,
}

/// The places one open connection holds, and its count in
/// [`ConnectionMetrics::open`]; dropping it frees both.
pub struct Place {
    _slot: OwnedSemaphorePermit,
    _source_slot: SourceSlot,
    open: &'static str,
}

impl Admission {
    pub fn new(max_connections: usize, max_per_source: usize, names: ConnectionMetrics) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_source: PerSource::new(max_per_source),
            names,
        }
    }

    /// A place for a connection from `source`, or `None` (counted) when
    /// that source or the port holds all it may.
    pub fn admit(&self, source: IpAddr) -> Option<Place> {
        let Some(source_slot) = self.per_source.take(source) else {
            metrics::counter!(self.names.refused, "reason" => REFUSED_SOURCE_FULL).increment(1);
            return None;
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            metrics::counter!(self.names.refused, "reason" => REFUSED_FULL).increment(1);
            return None;
        };
        metrics::gauge!(self.names.open).increment(1.0);
        Some(Place {
            _slot: slot,
            _source_slot: source_slot,
            open: self.names.open,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        metrics::gauge!(self.open).decrement(1.0);
    }
}

/// What one source's connections are counted under: an IPv4 address (also
/// one written IPv4-mapped), or an IPv6 address's /64.
fn counted_source(address: IpAddr) -> IpAddr {
    match crate::allow::canonical(address) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// Open connections per source ([`counted_source`]), each at most `limit`.
#[derive(Clone)]
struct PerSource {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One open connection of a source; dropping it frees its place.
struct SourceSlot {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl PerSource {
    fn new(limit: usize) -> Self {
        PerSource {
            open: Arc::default(),
            limit,
        }
    }

    /// A place for one more connection from `source`, if it has one left.
    fn take(&self, source: IpAddr) -> Option<SourceSlot> {
        let source = counted_source(source);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            open: self.open.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

/// A connection's stream whose writes fail (`TimedOut`) once they have made
/// no progress for `limit`: the client has left its receive window shut
/// that long. Any progress starts the count again.
struct StallLimited<Io> {
    io: Io,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<Io> StallLimited<Io> {
    fn new(io: Io, limit: Duration) -> Self {
        StallLimited {
            io,
            limit,
            stalled: None,
        }
    }

    /// `polled`, a write-side poll's result, unless the write has been
    /// pending for `limit`.
    fn limited<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of the answer for {} ms",
                    limit.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for StallLimited<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for StallLimited<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.limited(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.limited(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.limited(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.limited(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the IPv6 count: every address of one /64 shares its source's
    /// places, as IPv4-mapped and plain IPv4 addresses do theirs.
    #[test]
    fn an_ipv6_source_is_counted_by_its_slash_64() {
        let per_source = PerSource::new(1);
        let host: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8:1:2:ffff:0:0:7".parse().unwrap();
        let next_prefix: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _held = per_source.take(host).unwrap();
        assert!(per_source.take(same_prefix).is_none());
        let _other = per_source.take(next_prefix).unwrap();

        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _v4 = per_source.take(v4).unwrap();
        assert!(per_source.take(mapped).is_none());
    }

    /// Once every place was dropped the source's count is gone, so its
    /// next connection is admitted.
    #[test]
    fn a_dropped_place_frees_its_slash_64() {
        let per_source = PerSource::new(1);
        let host: IpAddr = "2001:db8::1".parse().unwrap();
        drop(per_source.take(host).unwrap());
        assert!(per_source.take("2001:db8::2".parse().unwrap()).is_some());
    }
}
