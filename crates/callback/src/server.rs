//! The callback port's connection policy for the shared accept loop
//! ([`loket_runtime::http_server`]): its limits from the settings, the
//! providers' allow-lists as the admission filter (a source no allow-list
//! admits never takes a connection slot) and the receiver's connection
//! metrics.

use crate::{metric, Settings, SourceFilter};
use axum::Router;
use loket_runtime::http_server::{self, ConnectionMetrics, Port};
use loket_runtime::Shutdown;
use std::time::Duration;
use tokio::net::TcpListener;

pub use loket_runtime::http_server::Limits;

/// The receiver's [`Limits`], from its settings.
pub fn limits(settings: &Settings) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        stalled_write_timeout: Duration::from_millis(settings.header_read_timeout_ms),
        max_connections: settings.max_connections.max(1),
        max_connections_per_source: settings.max_connections_per_source.max(1),
        max_header_bytes: 16 * 1024,
        drain_grace: Duration::from_millis(settings.common.shutdown_grace_ms),
    }
}

/// Serves `app` on `listener` until `shutdown`, then drains. A connection
/// from a source `admit` refuses is closed at accept, before it takes a slot.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    admit: SourceFilter,
    shutdown: Shutdown,
) {
    let port = Port {
        name: "callback",
        limits,
        admit,
        metrics: ConnectionMetrics {
            refused: metric::CONNECTIONS_REFUSED,
            open: metric::CONNECTIONS_OPEN,
        },
    };
    http_server::serve(listener, app, port, shutdown).await;
}
