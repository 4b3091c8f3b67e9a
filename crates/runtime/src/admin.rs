//! The admin port every service opens beside its main one: `/livez`,
//! `/readyz` (false until started and again as soon as a drain begins; the
//! port stays open through the drain) and `/metrics` in Prometheus text
//! format.

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::Shutdown;

/// Whether the service should receive traffic.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often histogram samples are folded into their summaries. Without
/// it, samples pile up between scrapes, and without a scraper for ever.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed on first use), with a
/// thread that keeps its memory bounded.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); keep ours
            // as a renderer either way.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "no metrics upkeep thread: histogram samples are kept until each scrape");
            }
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// The running admin server. It keeps answering through a drain (`/readyz`
/// then says "not ready" while `/livez` stays alive, so an orchestrator stops
/// routing traffic without killing the draining process) until [`stop`].
///
/// [`stop`]: AdminServer::stop
pub struct AdminServer(tokio::task::JoinHandle<()>);

impl AdminServer {
    /// Closes the admin port: the last step of a service's stop.
    pub async fn stop(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

/// Starts serving the admin endpoints on `listener`. Readiness turns false
/// the moment `shutdown` fires; the port stays open until
/// [`AdminServer::stop`].
pub fn spawn(listener: TcpListener, readiness: Readiness, shutdown: Shutdown) -> AdminServer {
    let state = AdminState {
        readiness: readiness.clone(),
        metrics: metrics_handle(),
    };
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state);
    AdminServer(tokio::spawn(async move {
        let drain = async move {
            shutdown.wait().await;
            readiness.set(false);
            std::future::pending::<()>().await
        };
        tokio::select! {
            result = axum::serve(listener, app) => {
                if let Err(error) = result {
                    tracing::error!(%error, "admin server stopped");
                }
            }
            () = drain => {}
        }
    }))
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.render()
}
