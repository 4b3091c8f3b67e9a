//! The admin port every service opens beside its main one: `/livez`,
//! `/readyz` (false until started and again as soon as a drain begins, and
//! whenever NATS or PostgreSQL, where the service uses them, cannot be
//! reached; the port stays open through the drain) and `/metrics` in
//! Prometheus text format. It is served through [`http_server`] with fixed
//! [`LIMITS`], so a client holding connections open to it can take neither
//! the port nor the file descriptors the rest of the service needs.

use axum::{extract::State, http::StatusCode, routing::get, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;

use crate::http_server::{self, ConnectionMetrics, Limits, Port};
use crate::Shutdown;

/// How long `/readyz` waits for PostgreSQL to answer `SELECT 1` (a pool
/// connection included) before it calls the database unreachable.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the service should receive traffic: it has started and is not
/// draining ([`set`]), and each dependency it asked to be watched
/// ([`watch_bus`], [`watch_database`]) answers at the moment of asking. A
/// service that lost NATS or PostgreSQL stays alive (`/livez`), reconnects on
/// its own and is ready again once it has; meanwhile an orchestrator routes
/// traffic elsewhere and an operator sees why.
///
/// [`set`]: Readiness::set
/// [`watch_bus`]: Readiness::watch_bus
/// [`watch_database`]: Readiness::watch_database
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Default, Debug)]
struct ReadinessState {
    started: AtomicBool,
    bus: OnceLock<async_nats::Client>,
    /// The probe's connection (from a one-connection pool of its own) to
    /// the watched pool's database.
    database: OnceLock<tokio::sync::Mutex<crate::db::HeldConnection>>,
    /// Whether the last check found a dependency down, so each change is
    /// logged once rather than at every probe.
    dependency_down: AtomicBool,
}

/// Why a service is not ready, as `/readyz` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Not started yet, or draining.
    NotStarted,
    /// The NATS connection is down (async-nats is reconnecting).
    BusDown,
    /// PostgreSQL did not answer `SELECT 1` in time.
    DatabaseDown,
}

impl NotReady {
    fn as_str(self) -> &'static str {
        match self {
            NotReady::NotStarted => "not ready",
            NotReady::BusDown => "not ready: the NATS connection is down",
            NotReady::DatabaseDown => "not ready: PostgreSQL does not answer",
        }
    }
}

impl Readiness {
    /// Started (true) or not yet, or draining (false).
    pub fn set(&self, ready: bool) {
        self.0.started.store(ready, Ordering::SeqCst);
    }

    /// Makes readiness follow the state of this NATS connection.
    pub fn watch_bus(&self, client: &async_nats::Client) {
        let _ = self.0.bus.set(client.clone());
    }

    /// Makes readiness follow whether this pool's PostgreSQL answers. The
    /// probe has a connection of its own, so a pool busy under load (every
    /// connection held by a batch) is not taken for a lost database.
    pub fn watch_database(&self, pool: &sqlx::PgPool) {
        let probe = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(DATABASE_PROBE_TIMEOUT)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_lazy_with((*pool.connect_options()).clone());
        let probe = crate::db::HeldConnection::for_probes(probe, DATABASE_PROBE_TIMEOUT);
        let _ = self.0.database.set(tokio::sync::Mutex::new(probe));
    }

    /// Ready, or the first reason not to be. Asks PostgreSQL when a pool is
    /// watched, so it takes up to [`DATABASE_PROBE_TIMEOUT`].
    pub async fn check(&self) -> Result<(), NotReady> {
        if !self.0.started.load(Ordering::SeqCst) {
            return Err(NotReady::NotStarted);
        }
        let verdict = self.check_dependencies().await;
        let was_down = self
            .0
            .dependency_down
            .swap(verdict.is_err(), Ordering::SeqCst);
        match verdict {
            Err(reason) if !was_down => tracing::warn!(reason = reason.as_str(), "readiness lost"),
            Ok(()) if was_down => tracing::info!("readiness regained: dependencies answer again"),
            _ => {}
        }
        verdict
    }

    async fn check_dependencies(&self) -> Result<(), NotReady> {
        if let Some(bus) = self.0.bus.get() {
            if bus.connection_state() != async_nats::connection::State::Connected {
                return Err(NotReady::BusDown);
            }
        }
        if let Some(probe) = self.0.database.get() {
            // Probes asked at once take turns on the one connection.
            if !probe.lock().await.answers().await {
                return Err(NotReady::DatabaseDown);
            }
        }
        Ok(())
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

/// The admin port's connection limits, fixed: its clients are an
/// orchestrator's probes and a metrics scraper, a few hosts with a few
/// connections each, every one sending a short GET as soon as it connects
/// and reading the answer. So 5 s to send the headers, or to take an answer
/// in, is ample, 16 connections per host leave room
/// for several probes and scrapers on one node, and 64 in all bound what the
/// port can cost the service in file descriptors.
pub const LIMITS: Limits = Limits {
    header_read_timeout: Duration::from_secs(5),
    stalled_write_timeout: Duration::from_secs(5),
    max_connections: 64,
    max_connections_per_source: 16,
    max_header_bytes: 16 * 1024,
    // What is left at `stop` are probes answered at once (readiness is
    // already false, so no dependency is asked).
    drain_grace: Duration::from_secs(1),
};

/// Connections to the admin port closed at accept, by `reason`
/// (`source_full`, `full`).
pub const CONNECTIONS_REFUSED: &str = "loket_admin_connections_refused_total";
/// Open connections to the admin port.
pub const CONNECTIONS_OPEN: &str = "loket_admin_connections_open";

/// The running admin server. It keeps answering through a drain (`/readyz`
/// then says "not ready" while `/livez` stays alive, so an orchestrator stops
/// routing traffic without killing the draining process) until [`stop`].
///
/// [`stop`]: AdminServer::stop
pub struct AdminServer {
    /// The port's own stop, apart from the service's drain.
    closing: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Closes the admin port (requests in flight get [`LIMITS`]'
    /// `drain_grace` to finish): the last step of a service's stop.
    pub async fn stop(self) {
        self.closing.trigger();
        let _ = self.task.await;
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
    let port = Port {
        name: "admin",
        limits: LIMITS,
        admit: http_server::admit_all(),
        metrics: ConnectionMetrics {
            refused: CONNECTIONS_REFUSED,
            open: CONNECTIONS_OPEN,
        },
    };
    let closing = Shutdown::new();
    let serving = http_server::serve(listener, app, port, closing.clone());
    let task = tokio::spawn(async move {
        let not_ready_once_draining = async move {
            shutdown.wait().await;
            readiness.set(false);
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = serving => {}
            () = not_ready_once_draining => {}
        }
    });
    AdminServer { closing, task }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason.as_str()),
    }
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.render()
}
