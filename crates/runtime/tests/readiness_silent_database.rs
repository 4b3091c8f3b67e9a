//! Readiness against a PostgreSQL that goes silent, in a test binary of its
//! own: it counts log lines, which every test of a binary run by `cargo
//! test` writes into the same capture.

use loket_runtime::admin::{NotReady, Readiness};
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// A PostgreSQL gone silent (a crashed host keeps the probe's socket open
/// and answers nothing) makes every probe wait out its timeout and fail:
/// readiness says so once, as a warning, and not an error per probe; and
/// it is ready again as soon as the server answers (the probe's connection
/// was never given back to its pool, whose ping on return would never end).
#[tokio::test]
async fn a_silent_postgres_is_reported_once_not_at_every_probe() {
    loket_test_support::logs::capture();
    let url = loket_test_support::postgres::fresh_database()
        .await
        .unwrap();
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed = loket_test_support::postgres::through_silenceable_relay(&url, silence.clone())
        .await
        .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy(&relayed)
        .unwrap();
    let readiness = Readiness::default();
    readiness.watch_database(&pool);
    readiness.set(true);
    assert_eq!(readiness.check().await, Ok(()));

    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(readiness.check().await, Err(NotReady::DatabaseDown));
    }
    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut back = readiness.check().await;
    for _ in 0..50 {
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        back = readiness.check().await;
    }
    assert_eq!(back, Ok(()), "ready again once the server answers");

    let logs = loket_test_support::logs::captured();
    let lost = "readiness lost reason=\"not ready: PostgreSQL does not answer\"";
    assert_eq!(logs.matches(lost).count(), 1, "{logs}");
    assert!(!logs.contains("did not finish in time"), "{logs}");
}
