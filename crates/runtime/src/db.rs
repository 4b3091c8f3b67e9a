//! The Postgres pool, whose sessions never wait for a lock for ever
//! ([`connect`]), and the migrations in `migrations/`, embedded at build
//! time so every service (and `loketctl migrate`) applies the same schema.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database_url (LOKET_DATABASE_URL) is not a valid PostgreSQL URL")]
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
///
/// No wait is endless. A row lock that is never released (a partitioned
/// replica's open transaction, a forgotten `psql` session holding `FOR
/// UPDATE`) would otherwise hold every statement queued behind it for ever,
/// the service still ready and nothing logged:
/// - `lock_timeout` ([`LOCK_TIMEOUT`]) fails a statement that waits longer
///   for a lock, with SQLSTATE `55P03` ([`is_lock_timeout`]); the caller's
///   error path retries (a redelivered event, a later tick, the client's
///   retry), and the lock, once released, is taken then;
/// - `idle_in_transaction_session_timeout` ([`IDLE_IN_TRANSACTION_TIMEOUT`])
///   ends a loket session left inside a transaction without running anything
///   (its client hung or cut off), so the locks it holds are released;
/// - TCP keepalives from the server ([`KEEPALIVE`]) find a client that
///   vanished in minutes instead of the system's two hours.
///
/// There is deliberately no `statement_timeout`: loketctl's `find` and
/// `export` run long scans over these connections, and a long scan waits
/// for no lock.
pub async fn connect(url: &crate::Secret, max_connections: u32) -> Result<PgPool, DbError> {
    let lock_timeout = format!("{}ms", LOCK_TIMEOUT.as_millis());
    let idle_in_transaction_timeout = format!("{}ms", IDLE_IN_TRANSACTION_TIMEOUT.as_millis());
    let options = PgConnectOptions::from_str(url.expose())
        .map_err(|_| DbError::BadUrl)?
        .application_name("loket")
        .options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("jit", "off"),
            // A space in a startup option's value is escaped with `\`.
            ("default_transaction_isolation", r"read\ committed"),
            ("lock_timeout", &lock_timeout),
            (
                "idle_in_transaction_session_timeout",
                &idle_in_transaction_timeout,
            ),
        ])
        .options(KEEPALIVE);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|error| DbError::Connect(error.to_string()))
}

/// The longest a statement on a loket connection waits for a lock before it
/// fails. Far above any lock loket itself holds (a batch commits in
/// milliseconds), and well under the reconciler's 30 s ack wait even twice
/// over (a batch, then its events one at a time), so an event is not
/// redelivered while its own attempt still waits.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a loket session may sit inside a transaction without running a
/// statement before the server ends it. Loket's transactions wait inside
/// only for their own statements and a JetStream publish's acknowledgement
/// (seconds at most).
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The server probes an idle connection after 60 s, every 10 s, and drops
/// it after 6 unanswered probes: a client gone without closing its
/// connection releases its session (and locks) within about two minutes.
/// Ignored on a Unix socket.
const KEEPALIVE: [(&str, &str); 3] = [
    ("tcp_keepalives_idle", "60"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "6"),
];

/// Whether `error` is a statement that waited for a lock longer than
/// [`LOCK_TIMEOUT`] (SQLSTATE `55P03`, `lock_not_available`): another session
/// holds the rows. Transient; the caller retries.
pub fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == LOCK_NOT_AVAILABLE)
}

const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Whether `error` is work given up after waiting its limit: the work limit
/// of [`HeldConnection::with`] (an I/O error of kind `TimedOut`) or the
/// pool's acquire timeout. The server is likely silent or overloaded, so
/// more work on it now would wait as long again.
pub fn is_timed_out(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
        _ => false,
    }
}

/// Logs at WARN, when `error` is a lock wait that ran out
/// ([`is_lock_timeout`]), which `statement` gave up, on which `rows`, and
/// what the server says it waited for (`while locking tuple (0,1) in
/// relation "transactions"`). The error alone reads "canceling statement due
/// to lock timeout", which names none of them. Does nothing for any other
/// error: the caller reports that as it does.
pub fn warn_on_lock_timeout(error: &sqlx::Error, statement: &str, rows: &dyn std::fmt::Debug) {
    if !is_lock_timeout(error) {
        return;
    }
    let waited_for = error
        .as_database_error()
        .and_then(|error| error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
        .and_then(|error| error.r#where())
        .unwrap_or("a lock");
    tracing::warn!(
        statement,
        ?rows,
        waited_for,
        lock_timeout = ?LOCK_TIMEOUT,
        "another session holds these rows longer than lock_timeout (a stuck replica, a psql \
         session left in a transaction: see pg_stat_activity and pg_blocking_pids); retried later"
    );
}

/// Applies the migrations this build knows that the database lacks.
///
/// A database a newer build has migrated further is accepted (sqlx would
/// otherwise refuse to start over migrations it does not know): during a
/// rolling deploy, or a rollback after one, the older binaries keep starting.
/// That is why every migration must leave the schema usable by the build
/// before it (ARCHITECTURE.md, Schema changes). An applied migration whose file
/// changed is still refused (checksums).
///
/// It runs under [`LOCK_TIMEOUT`] like every statement: a replica that waits
/// longer for another's migration (sqlx's advisory lock), or a migration
/// whose DDL waits longer for a table in use, fails to start and is restarted
/// by its supervisor, rather than queueing the service's statements behind it.
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
///
/// Work on it is bounded ([`HELD_WORK_LIMIT`]): sqlx sets no keepalive on
/// its side of a connection, so one whose server vanished without closing it
/// (a database host crashed or failed over, a network cut) would keep a read
/// waiting for ever, with the worker holding it, and everything queued
/// behind that worker, stuck while the service still looks ready.
pub struct HeldConnection {
    pool: PgPool,
    connection: Option<(PoolConnection<Postgres>, std::time::Instant)>,
    work_limit: Duration,
    /// Work given up is logged (an ERROR) unless its caller reports it
    /// itself ([`HeldConnection::for_probes`]).
    log_given_up: bool,
}

impl std::fmt::Debug for HeldConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldConnection")
            .field("holding", &self.connection.is_some())
            .field("work_limit", &self.work_limit)
            .finish()
    }
}

/// The longest [`HeldConnection::with`] lets one piece of work run. Its
/// statements wait at most [`LOCK_TIMEOUT`] for a lock and otherwise take
/// milliseconds, so work still running after this long is waiting on a
/// connection that will never answer.
pub const HELD_WORK_LIMIT: Duration = Duration::from_secs(60);

impl HeldConnection {
    pub fn new(pool: PgPool) -> Self {
        HeldConnection {
            pool,
            connection: None,
            work_limit: HELD_WORK_LIMIT,
            log_given_up: true,
        }
    }

    /// The same with another bound on each piece of work.
    pub fn with_work_limit(pool: PgPool, work_limit: Duration) -> Self {
        HeldConnection {
            work_limit,
            ..HeldConnection::new(pool)
        }
    }

    /// A held connection for a readiness probe: its work bounded by
    /// `limit`, and work given up not logged (the probe's caller reports a
    /// change once, not at every probe).
    pub fn for_probes(pool: PgPool, limit: Duration) -> Self {
        HeldConnection {
            log_given_up: false,
            ..HeldConnection::with_work_limit(pool, limit)
        }
    }

    /// Whether PostgreSQL answers a `SELECT 1` on the held connection within
    /// the work limit. Kept between probes, a connection that answered never
    /// goes back to the pool: sqlx pings a connection given back, in a task of
    /// its own, and a ping sent as the server goes silent never ends, which
    /// would keep the probe's one connection taken, and the service not
    /// ready, long after the server is back.
    pub async fn answers(&mut self) -> bool {
        self.with(async |connection| sqlx::query("SELECT 1").execute(connection).await)
            .await
            .is_ok()
    }

    /// The pool the connection comes from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `work` on the held connection (taken from the pool first if
    /// there is none), and gives the connection back to the pool if `work`
    /// fails. Work that has not finished within the work limit (counted
    /// from the call, so taking a connection counts too) is dropped
    /// (a database transaction it had open is then never committed) and
    /// fails with an I/O error of kind `TimedOut`; its connection is closed,
    /// not given back. So is the connection of work its caller gave up
    /// before it ended (see [`InUse`]).
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
        // Taking a connection counts against the limit: the pool checks an
        // idle one with a round trip, which a silent server never answers.
        let deadline = tokio::time::Instant::now() + self.work_limit;
        let held = match self.connection.take() {
            Some(held) => held,
            None => match tokio::time::timeout_at(deadline, self.pool.acquire()).await {
                Ok(acquired) => (acquired?, std::time::Instant::now()),
                Err(_) => return Err(self.given_up().into()),
            },
        };
        let mut in_use = InUse(Some(held));
        let finished = tokio::time::timeout_at(deadline, work(in_use.connection())).await;
        let result = match finished {
            Ok(result) => {
                self.connection = in_use.finished();
                result
            }
            Err(_) => {
                // `in_use`, dropped, closes the connection.
                drop(in_use);
                return Err(self.given_up().into());
            }
        };
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// Logs and returns the error of work not done within the limit.
    fn given_up(&self) -> sqlx::Error {
        if self.log_given_up {
            tracing::error!(
                limit_ms = self.work_limit.as_millis() as u64,
                "database work did not finish in time: its connection is closed and the work given up"
            );
        }
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "database work did not finish within {} ms; its connection was closed",
                self.work_limit.as_millis()
            ),
        ))
    }
}

/// A connection some work is running on. Dropped before the work ended (the
/// work limit passed, or the caller gave the work up: a gRPC client's
/// deadline, a shutdown), it is closed rather than given back to the pool.
/// The pool would first ping it, a round trip that on a server gone silent
/// never ends and so keeps one of the pool's connections taken for ever.
struct InUse(Option<(PoolConnection<Postgres>, std::time::Instant)>);

impl InUse {
    fn connection(&mut self) -> &mut PgConnection {
        &mut self.0.as_mut().expect("in use until finished").0
    }

    /// The connection, its work having ended: to keep or give back.
    fn finished(mut self) -> Option<(PoolConnection<Postgres>, std::time::Instant)> {
        self.0.take()
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some((connection, _)) = self.0.take() {
            // Detached, it is dropped here: its socket closes without a
            // goodbye the server could not answer.
            drop(connection.detach());
        }
    }
}

/// A pool whose every piece of work is bounded in time ([`bounded`]): for
/// statements outside the batch writers, such as a service's reads.
#[derive(Clone)]
pub struct BoundedPool {
    pool: PgPool,
    work_limit: Duration,
}

impl BoundedPool {
    pub fn new(pool: PgPool, work_limit: Duration) -> Self {
        BoundedPool { pool, work_limit }
    }

    /// The pool itself, for the batch writers (which bound their own work).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The longest one piece of work may take.
    pub fn work_limit(&self) -> Duration {
        self.work_limit
    }

    /// Runs `work` on a connection of the pool within the work limit
    /// ([`bounded`]).
    pub async fn run<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        bounded(&self.pool, self.work_limit, work).await
    }
}

/// Runs one piece of `work` (a statement outside any batch writer) on a
/// connection taken from `pool` for it, bounded by `work_limit` as
/// [`HeldConnection::with`] bounds a batch: on a server gone silent without
/// closing the connection it fails with an I/O error of kind `TimedOut`, and
/// the connection is closed, instead of waiting as long as the kernel keeps
/// the connection (about a quarter of an hour). Taking the connection is
/// bounded by the pool's acquire timeout.
pub async fn bounded<T, E>(
    pool: &PgPool,
    work_limit: Duration,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<sqlx::Error>,
{
    HeldConnection::with_work_limit(pool.clone(), work_limit)
        .with(work)
        .await
}

/// Starts a batch writer: `slots` tasks, each keeping its own
/// [`HeldConnection`] (whose work is bounded by `work_limit`), that take
/// whatever jobs have queued up (at most `batch_max`) and hand them to
/// `write` as one batch. Nothing waits for a
/// batch to fill: a lone job is written at once, and busy traffic forms
/// large batches by itself while every slot is busy. `write` answers each
/// job (jobs carry their own reply channel) and gives the connection back.
/// The tasks end once every sender is dropped; a panicking one stops the
/// service (`vital`, named `name`).
pub fn spawn_batch_writer<J, F, Fut>(
    pool: PgPool,
    slots: usize,
    batch_max: usize,
    work_limit: Duration,
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
        let mut connection = HeldConnection::with_work_limit(pool.clone(), work_limit);
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
