//! loket's Postgres connections against a real PostgreSQL: `HeldConnection`
//! keeps one connection between batches and renews it once the pool's
//! `max_lifetime` has passed; no statement waits for a lock for ever.

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use loket_runtime::db::{self, HeldConnection};
use loket_runtime::Secret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

async fn backend_pid(held: &mut HeldConnection) -> i32 {
    held.with(async |connection| {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(connection)
            .await
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_held_connection_is_kept_and_renewed_after_the_pools_max_lifetime() {
    let url = loket_test_support::postgres::fresh_database()
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(Duration::from_millis(500))
        .connect_with(PgConnectOptions::from_str(&url).unwrap())
        .await
        .unwrap();
    let mut held = HeldConnection::new(pool.clone());
    let first = backend_pid(&mut held).await;
    assert_eq!(backend_pid(&mut held).await, first, "kept between batches");

    tokio::time::sleep(Duration::from_millis(700)).await;
    // One connection at most: the old one must go back before a new one
    // is taken, or this would wait for ever.
    let renewed = tokio::time::timeout(Duration::from_secs(5), backend_pid(&mut held))
        .await
        .expect("renewed without waiting on the pool");
    assert_ne!(renewed, first, "a fresh connection after max_lifetime");
    assert_eq!(backend_pid(&mut held).await, renewed);
}

/// A row lock that is never released (a partitioned replica's open
/// transaction, a forgotten psql session) must fail the statements waiting
/// on it after `lock_timeout`, recognisably, or the reconciler's batch slots
/// (`SELECT … FOR UPDATE`) hang with the service still ready and nothing
/// logged. There is no `statement_timeout`: loketctl's long scans use the
/// same connections.
#[tokio::test]
async fn a_statement_waiting_on_a_lock_fails_after_the_lock_timeout() {
    let url = Secret::new(
        loket_test_support::postgres::fresh_database()
            .await
            .unwrap(),
    );
    let pool = db::connect(&url, 2).await.unwrap();
    // In milliseconds, as `pg_settings` gives them.
    let timeouts: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN \
         ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout') ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let millis = |timeout: Duration| timeout.as_millis().to_string();
    assert_eq!(
        timeouts,
        [
            (
                "idle_in_transaction_session_timeout".to_string(),
                millis(db::IDLE_IN_TRANSACTION_TIMEOUT)
            ),
            ("lock_timeout".to_string(), millis(db::LOCK_TIMEOUT)),
            ("statement_timeout".to_string(), "0".to_string()),
        ]
    );
    sqlx::query("CREATE TABLE held (id INT PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO held VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    // The holder: a transaction that never ends.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM held WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let started = Instant::now();
    let waiter = tokio::time::timeout(
        db::LOCK_TIMEOUT * 2,
        sqlx::query("SELECT id FROM held WHERE id = 1 FOR UPDATE").execute(&pool),
    )
    .await
    .unwrap_or_else(|_| panic!("still waiting for the lock after {:?}", started.elapsed()));
    let error = waiter.expect_err("the lock is still held");
    assert!(db::is_lock_timeout(&error), "{error}");
    assert!(
        started.elapsed() >= db::LOCK_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    holder.rollback().await.unwrap();
}

/// Work its caller gives up midway (a gRPC client's deadline cuts a read
/// short) must not hand its connection back to the pool: the pool would
/// ping it first, and on a server gone silent that ping never returns, so
/// the connection would stay taken for ever. Here the pool has one
/// connection: were it kept by such a ping, nothing could run again once
/// the server is back.
#[tokio::test]
async fn work_given_up_midway_closes_its_connection_instead_of_handing_it_back() {
    let url = loket_test_support::postgres::fresh_database()
        .await
        .unwrap();
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed = loket_test_support::postgres::through_silenceable_relay(&url, silence.clone())
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with(PgConnectOptions::from_str(&relayed).unwrap())
        .await
        .unwrap();
    let select = async |connection: &mut sqlx::PgConnection| {
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_sleep(0.5)")
            .fetch_one(connection)
            .await
    };

    // The server goes silent while the work waits for its answer, and the
    // caller gives up before the work limit.
    let work = tokio::spawn({
        let pool = pool.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(1),
                db::bounded(&pool, Duration::from_secs(60), select),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        work.await.unwrap().is_err(),
        "a silent server answers nothing"
    );

    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    let again = tokio::time::timeout(
        Duration::from_secs(20),
        db::bounded(&pool, Duration::from_secs(5), select),
    )
    .await
    .expect("answered within the acquire timeout");
    assert_eq!(again.expect("the pool's one connection is free again"), 1);
}
