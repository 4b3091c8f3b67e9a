//! The HTTP/1 accept loop, with what `axum::serve` does not offer: a header
//! read timeout (a client that opens a connection and sends nothing, or
//! headers byte by byte, is disconnected — also an idle kept-alive
//! connection), a cap on open connections (which a source no allow-list
//! admits never takes) and on those from any one source, a header-size cap, and the peer address as
//! [`ConnectInfo`] for the allow-list. Graceful: on shutdown it
//! stops accepting and waits (bounded) for open requests to finish.

use crate::metric;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use loket_runtime::Shutdown;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Open connections one source address may hold.
    pub max_connections_per_source: usize,
    /// hyper's read buffer, which bounds the request line plus headers.
    pub max_header_bytes: usize,
    pub drain_grace: Duration,
}

impl Limits {
    pub fn from_settings(settings: &crate::Settings) -> Self {
        Limits {
            header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
            max_connections: settings.max_connections.max(1),
            max_connections_per_source: settings.max_connections_per_source.max(1),
            max_header_bytes: 16 * 1024,
            drain_grace: Duration::from_millis(settings.common.shutdown_grace_ms),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains. A connection
/// from a source `admit` refuses is closed at accept, before it takes a slot.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    admit: crate::SourceFilter,
    shutdown: Shutdown,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_source = PerSource::new(limits.max_connections_per_source);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !admit(peer.ip()) {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "source").increment(1);
            drop(stream);
            continue;
        }
        let Some(source_slot) = per_source.take(peer.ip()) else {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "source_full").increment(1);
            drop(stream);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "full").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8 * 1024));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            metrics::gauge!(metric::CONNECTIONS_OPEN).increment(1.0);
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "callback connection ended with an error");
            }
            metrics::gauge!(metric::CONNECTIONS_OPEN).decrement(1.0);
            drop(slot);
            drop(source_slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain_grace) => {
            tracing::warn!("drain grace period passed with callback connections open");
        }
    }
}

/// Open connections per source address, each at most `limit`.
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
