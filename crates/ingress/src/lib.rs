//! loket-ingress: the gRPC API internal services call.
//!
//! It owns the front door of a transaction: authenticating the client
//! ([`auth`]), validating every request into a typed value naming the bad
//! field ([`validate`]), routing a product to its provider ([`products`]),
//! inserting the transaction idempotently by `client_ref` ([`idempotency`],
//! [`queries`]), publishing its first command on JetStream ([`dispatch`]),
//! and answering with the transaction — at once, or once it settles
//! ([`waiters`]; a pay-in once its payment instructions are known) — plus
//! reads, listing, a watch stream, balances and code explanations
//! ([`service`]). QR payments, pay-ins and pay-outs follow the same path;
//! QR cancels and refunds are their own transactions linked to the payment,
//! inserted under a lock of the payment row so refunds never exceed what
//! was paid ([`queries::insert_linked`]). Errors map to gRPC codes in one
//! place ([`errors`]).
//!
//! It must not change a transaction's status after creating it (that is the
//! reconciler's job), talk to a provider, or let one client see another's
//! transactions. A failed publish never fails a call: Postgres is the record
//! of truth and the reconciler's sweep re-dispatches.

pub mod auth;
pub mod connections;
pub mod dispatch;
pub mod errors;
pub mod explain;
pub mod group_insert;
pub mod idempotency;
pub mod metrics;
pub mod products;
pub mod queries;
pub mod service;
pub mod validate;
pub mod waiters;
pub mod watch_slots;

use loket_protocol::{pb, subjects};
use loket_runtime::config::Common;
use loket_runtime::db::BoundedPool;
use loket_runtime::{admin, bus, db, Shutdown};
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;

pub use service::LoketService;

type Server = pb::loket_server::LoketServer<LoketService>;

/// The ingress's settings (`LOKET_` environment, `__` nests).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub common: Common,
    /// The gRPC port (the binary binds it; `run` takes a bound listener).
    pub grpc_addr: String,
    pub db_max_connections: u32,
    /// The longest one piece of the ingress's database work (a read, an
    /// insert, a refund's checks) may take. Past it the call fails
    /// `UNAVAILABLE` and the connection is closed: on a database gone silent
    /// without closing its connections (a crashed host, a cut network) calls
    /// fail in this time instead of waiting as long as the kernel keeps the
    /// connection. Above `lock_timeout` (10 s), so a lock wait fails as such.
    pub db_work_limit_ms: u64,
    /// Apply `migrations/` at start (safe with several replicas: sqlx locks).
    pub migrate: bool,
    /// How long an authenticated API key stays cached.
    pub auth_cache_ttl_ms: u64,
    /// How often the product catalogue is reloaded.
    pub products_refresh_ms: u64,
    /// How long a command publish may wait for JetStream's acknowledgement
    /// before the call answers anyway (the sweep re-dispatches).
    pub publish_timeout_ms: u64,
    /// How long a `GetBalance` waits for the provider's connector.
    pub balance_timeout_ms: u64,
    /// `WatchTransactions` streams one client may hold open at once (at
    /// least 1); past it a new one is refused with `RESOURCE_EXHAUSTED`.
    pub max_watches_per_client: usize,
    /// A client must send the HTTP/2 connection preface within this time
    /// of connecting, or the connection is closed ([`connections`]).
    pub handshake_timeout_ms: u64,
    /// On a connection where nothing arrived for this long the server
    /// pings; one whose ping is not answered within `keepalive_timeout_ms`
    /// is closed (its client vanished without closing it).
    pub keepalive_interval_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// Open gRPC connections beyond this are closed at accept.
    pub max_connections: usize,
    /// Open gRPC connections from one source address beyond this are
    /// closed at accept.
    pub max_connections_per_source: usize,
    /// Test-only fault injection ([`dispatch::Failpoint`]); none in
    /// production.
    pub failpoint: Option<dispatch::Failpoint>,
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
            grpc_addr: "127.0.0.1:50051".into(),
            db_max_connections: 16,
            db_work_limit_ms: 15_000,
            migrate: true,
            auth_cache_ttl_ms: 10_000,
            products_refresh_ms: 3_000,
            publish_timeout_ms: 3_000,
            balance_timeout_ms: 10_000,
            max_watches_per_client: 100,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            max_connections: 1_024,
            max_connections_per_source: 256,
            failpoint: None,
        }
    }
}

impl Settings {
    /// Refuses settings the ingress cannot serve with, naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_watches_per_client == 0 {
            return Err(Error::Config(
                "max_watches_per_client must be at least 1".into(),
            ));
        }
        loket_runtime::config::all_positive(&[
            ("db_max_connections", u64::from(self.db_max_connections)),
            ("db_work_limit_ms", self.db_work_limit_ms),
            ("products_refresh_ms", self.products_refresh_ms),
            ("publish_timeout_ms", self.publish_timeout_ms),
            ("balance_timeout_ms", self.balance_timeout_ms),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_source",
                self.max_connections_per_source as u64,
            ),
        ])
        .map_err(Error::Config)
    }
}

/// The bound sockets `run` serves on.
pub struct Listeners {
    /// gRPC: the `Loket` service, health and reflection.
    pub main: tokio::net::TcpListener,
    /// Admin: `/livez`, `/readyz`, `/metrics`.
    pub admin: tokio::net::TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot load the product catalogue: {0}")]
    Products(String),
    #[error("cannot subscribe to transaction updates: {0}")]
    Subscribe(String),
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error(transparent)]
    VitalTask(#[from] loket_runtime::vital::VitalTaskFailed),
}

/// Serves until `shutdown` fires, then drains: health turns `NOT_SERVING`
/// and readiness false at once, no new connections are taken, in-flight
/// calls finish (waits and watch streams end early), bounded by
/// `shutdown_grace_ms`.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let readiness = admin::Readiness::default();
    let admin_server = admin::spawn(listeners.admin, readiness.clone(), shutdown.clone());
    metrics::register_at_zero();
    let result = serve(
        settings,
        listeners.main,
        readiness.clone(),
        shutdown.clone(),
    )
    .await;
    readiness.set(false);
    admin_server.stop().await;
    result
}

async fn serve(
    settings: Settings,
    listener: tokio::net::TcpListener,
    readiness: admin::Readiness,
    shutdown: Shutdown,
) -> Result<(), Error> {
    let (nats, bus_gaps) =
        bus::connect_observed(&settings.common.nats_url, "loket-ingress").await?;
    let js = async_nats::jetstream::new(nats.clone());
    bus::ensure_streams(&js).await?;
    let pool = db::connect(&settings.common.database_url, settings.db_max_connections).await?;
    if settings.migrate {
        db::migrate(&pool).await?;
    }
    readiness.watch_bus(&nats);
    readiness.watch_database(&pool);
    let vital = loket_runtime::Vital::new(shutdown.clone());

    let db = BoundedPool::new(
        pool.clone(),
        Duration::from_millis(settings.db_work_limit_ms),
    );
    let products = Arc::new(
        products::Products::load(db.clone())
            .await
            .map_err(|error| Error::Products(error.to_string()))?,
    );
    {
        let products = Arc::clone(&products);
        let every = Duration::from_millis(settings.products_refresh_ms.max(100));
        let shutdown = shutdown.clone();
        tokio::spawn(vital.guard("product catalogue refresh", async move {
            products.refresh_every(every, shutdown).await
        }));
    }

    // One subscription feeds every waiting call; it must be active at the
    // server before the first call registers.
    let waiters = waiters::Waiters::new();
    let updates = nats
        .subscribe(subjects::UPDATE_SUBJECTS)
        .await
        .map_err(|error| Error::Subscribe(error.to_string()))?;
    loket_runtime::bus::confirm_subscriptions(&nats)
        .await
        .map_err(|error| Error::Subscribe(error.to_string()))?;
    tokio::spawn(vital.guard(
        "transaction update feed",
        Arc::clone(&waiters).run(updates, shutdown.clone()),
    ));

    // Fires once the server has drained: the dispatch marker writes what is
    // queued and stops.
    let finished = Shutdown::new();
    let (dispatcher, marks_task) = dispatch::Dispatcher::new(
        js,
        db.clone(),
        Duration::from_millis(settings.publish_timeout_ms),
        settings.failpoint,
        finished.clone(),
        &vital,
    );

    let service = LoketService::new(service::Inner {
        group_insert: group_insert::GroupInsert::start(db.clone(), &vital),
        db: db.clone(),
        nats: nats.clone(),
        auth: Arc::new(auth::Authenticator::new(
            db,
            Duration::from_millis(settings.auth_cache_ttl_ms),
        )),
        products,
        waiters,
        dispatcher,
        shutdown: shutdown.clone(),
        balance_timeout: Duration::from_millis(settings.balance_timeout_ms),
        watch_slots: watch_slots::WatchSlots::new(settings.max_watches_per_client),
        bus_gaps,
    });

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<Server>().await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::API_FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| Error::Reflection(error.to_string()))?;

    let health_follower = tokio::spawn(health_follows_readiness(health.clone(), readiness.clone()));
    let drain = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        let readiness = readiness.clone();
        async move {
            shutdown.wait().await;
            readiness.set(false);
            // Stopped before the last word, so it cannot say SERVING after.
            health_follower.abort();
            let _ = health_follower.await;
            health.set_not_serving::<Server>().await;
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            tracing::info!("draining: no new connections, finishing in-flight calls");
        }
    };
    let incoming = connections::admitted(
        listener,
        connections::Limits {
            handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms),
            max_connections: settings.max_connections,
            max_connections_per_source: settings.max_connections_per_source,
        },
    );
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_millis(settings.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(settings.keepalive_timeout_ms)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(Server::new(service))
        .serve_with_incoming_shutdown(incoming, drain);

    readiness.set(true);
    tracing::info!("ingress serving");
    let grace = Duration::from_millis(settings.common.shutdown_grace_ms);
    let served = tokio::select! {
        served = server => served,
        _ = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "drain exceeded the grace period; stopping with calls in flight");
            Ok(())
        }
    };
    readiness.set(false);
    finished.trigger();
    if tokio::time::timeout(Duration::from_secs(5), marks_task)
        .await
        .is_err()
    {
        tracing::warn!("recording dispatch marks did not finish; the sweep will cover them");
    }
    let _ = nats.flush().await;
    pool.close().await;
    tracing::info!("ingress stopped");
    served?;
    Ok(vital.outcome()?)
}

/// How often the gRPC health status is brought in line with readiness.
const HEALTH_FOLLOWS_READINESS_EVERY: Duration = Duration::from_secs(2);

/// Keeps the gRPC health service in line with `/readyz`: `NOT_SERVING` while
/// the bus connection is down or PostgreSQL does not answer, `SERVING` again
/// once they are back, so a gRPC health probe or a client-side balancer stops
/// sending calls here meanwhile, as an HTTP readiness probe does. Runs until
/// aborted by the drain.
async fn health_follows_readiness(
    health: tonic_health::server::HealthReporter,
    readiness: admin::Readiness,
) {
    let mut serving = true;
    let mut ticker = tokio::time::interval(HEALTH_FOLLOWS_READINESS_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ready = match readiness.check().await {
            // Starting or draining: the start and the drain say so themselves.
            Err(admin::NotReady::NotStarted) => continue,
            verdict => verdict.is_ok(),
        };
        if ready == serving {
            continue;
        }
        serving = ready;
        let status = if ready {
            health.set_serving::<Server>().await;
            ServingStatus::Serving
        } else {
            health.set_not_serving::<Server>().await;
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_watch_limit_of_zero_is_refused_by_name() {
        let settings = super::Settings {
            max_watches_per_client: 0,
            ..Default::default()
        };
        let refused = settings.validate().unwrap_err().to_string();
        assert_eq!(
            refused,
            "configuration error: max_watches_per_client must be at least 1"
        );
        assert!(super::Settings::default().validate().is_ok());
    }

    /// A zero timeout would fail every publish (each transaction then
    /// waits for the sweep) or every balance call, and a zero refresh
    /// period stops the catalogue task: refused at start, by name.
    #[test]
    fn zero_timeouts_and_periods_are_refused_by_name() {
        let refused = |settings: super::Settings| settings.validate().unwrap_err().to_string();
        assert_eq!(
            refused(super::Settings {
                publish_timeout_ms: 0,
                ..Default::default()
            }),
            "configuration error: publish_timeout_ms must be greater than zero"
        );
        assert_eq!(
            refused(super::Settings {
                balance_timeout_ms: 0,
                ..Default::default()
            }),
            "configuration error: balance_timeout_ms must be greater than zero"
        );
        assert_eq!(
            refused(super::Settings {
                products_refresh_ms: 0,
                ..Default::default()
            }),
            "configuration error: products_refresh_ms must be greater than zero"
        );
    }
}
