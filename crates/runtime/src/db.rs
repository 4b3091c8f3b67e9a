//! The Postgres pool and the migrations in `migrations/`, embedded at build
//! time so every service (and `loketctl migrate`) applies the same schema.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database_url is not a valid PostgreSQL URL")]
    BadUrl,
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Migrate(String),
}

/// Connects a pool. The URL is a secret (it may hold a password): errors
/// never repeat it.
///
/// Every statement loket runs is prepared once per connection and has one
/// good plan whatever its parameters (lookups by key, `UNNEST` batches,
/// partial indexes whose predicates are literals), so the connections use
/// generic plans instead of planning each execution again.
///
/// A generic plan is kept until the table's statistics change, so a plan
/// made while a table is still empty (a fresh `make run`) would keep its
/// sequential scan while the table grows, until autovacuum next analyzes it
/// (measured: reconciler statements 10× slower for the first minute). Every
/// statement has an index to go by, so sequential scans are ruled out on
/// loket's connections. JIT compilation is off too: it pays only for long
/// analytical queries, and a statement that must scan anyway (the small
/// product catalogue) would otherwise look costly enough to be compiled on
/// every run (measured: 75 ms per catalogue reload).
///
/// Transactions run at READ COMMITTED whatever the server's or database's
/// default: loket's guards lock a row and then read what other transactions
/// committed while they waited (the refunds and cancels already made against
/// a payment, before one more is accepted). At REPEATABLE READ that read
/// would see the snapshot taken before the wait, and concurrent refunds could
/// together exceed the payment.
pub async fn connect(url: &crate::Secret, max_connections: u32) -> Result<PgPool, DbError> {
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|_| DbError::BadUrl)?
        .application_name("loket")
        .options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("jit", "off"),
            // A space in a startup option's value is escaped with `\`.
            ("default_transaction_isolation", r"read\ committed"),
        ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|error| DbError::Connect(error.to_string()))
}

/// Applies the migrations this build knows that the database lacks.
///
/// A database a newer build has migrated further is accepted (sqlx would
/// otherwise refuse to start over migrations it does not know): during a
/// rolling deploy, or a rollback after one, the older binaries keep starting.
/// That is why every migration must leave the schema usable by the build
/// before it (ARCHITECTURE.md, Schema changes). An applied migration whose file
/// changed is still refused (checksums).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(|error| DbError::Migrate(error.to_string()))
}

/// A pooled connection one worker keeps between its batches.
///
/// sqlx pings a connection when it goes back to the pool (and, unless
/// disabled, when it is taken out): a round trip each way. A worker that
/// writes batch after batch (the ingress's group insert, the reconciler's
/// batch slots) keeps its connection instead, so a batch costs only its own
/// statements. After an error, [`HeldConnection::with`] hands it back: the
/// pool's check on return drops it if it is broken, and the next batch takes
/// a fresh one. A connection held longer than the pool's `max_lifetime` is
/// handed back too (the pool then closes it), so holding one does not
/// bypass the pool's renewal of its connections.
pub struct HeldConnection {
    pool: PgPool,
    connection: Option<(PoolConnection<Postgres>, std::time::Instant)>,
}

impl HeldConnection {
    pub fn new(pool: PgPool) -> Self {
        HeldConnection {
            pool,
            connection: None,
        }
    }

    /// The pool the connection comes from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `work` on the held connection (taken from the pool first if
    /// there is none), and gives the connection back to the pool if `work`
    /// fails.
    pub async fn with<T, E>(
        &mut self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        let lifetime = self.pool.options().get_max_lifetime();
        if let (Some((_, since)), Some(lifetime)) = (&self.connection, lifetime) {
            if since.elapsed() >= lifetime {
                // Back to the pool (which closes it) before taking another.
                self.connection = None;
            }
        }
        let held = match self.connection.take() {
            Some(held) => held,
            None => (self.pool.acquire().await?, std::time::Instant::now()),
        };
        let (connection, _) = self.connection.insert(held);
        let result = work(&mut **connection).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }
}

/// Starts a batch writer: `slots` tasks, each keeping its own
/// [`HeldConnection`], that take whatever jobs have queued up (at most
/// `batch_max`) and hand them to `write` as one batch. Nothing waits for a
/// batch to fill: a lone job is written at once, and busy traffic forms
/// large batches by itself while every slot is busy. `write` answers each
/// job (jobs carry their own reply channel) and gives the connection back.
/// The tasks end once every sender is dropped; a panicking one stops the
/// service (`vital`, named `name`).
pub fn spawn_batch_writer<J, F, Fut>(
    pool: PgPool,
    slots: usize,
    batch_max: usize,
    write: F,
    vital: &crate::Vital,
    name: &'static str,
) -> tokio::sync::mpsc::Sender<J>
where
    J: Send + 'static,
    F: Fn(HeldConnection, Vec<J>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = HeldConnection> + Send + 'static,
{
    let (queue, jobs) = tokio::sync::mpsc::channel(slots * batch_max * 4);
    let jobs = std::sync::Arc::new(tokio::sync::Mutex::new(jobs));
    let write = std::sync::Arc::new(write);
    for _ in 0..slots {
        let jobs = std::sync::Arc::clone(&jobs);
        let write = std::sync::Arc::clone(&write);
        let mut connection = HeldConnection::new(pool.clone());
        tokio::spawn(vital.guard_against_panics(name, async move {
            loop {
                let mut batch = Vec::with_capacity(batch_max);
                if jobs.lock().await.recv_many(&mut batch, batch_max).await == 0 {
                    return;
                }
                connection = write(connection, batch).await;
            }
        }));
    }
    queue
}
