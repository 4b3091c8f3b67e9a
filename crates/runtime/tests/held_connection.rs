//! `HeldConnection` against a real PostgreSQL: it keeps one connection
//! between batches, and renews it once the pool's `max_lifetime` has passed.

use std::str::FromStr as _;
use std::time::Duration;

use loket_runtime::db::HeldConnection;
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
