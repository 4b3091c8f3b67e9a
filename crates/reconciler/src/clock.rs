//! The reconciler's time: PostgreSQL's clock, not its host's.
//!
//! Every time the reconciler compares with (`created_at`, `dispatched_at`,
//! `next_check_at`, `not_found_since`, an inquiry's expiry) was written by
//! PostgreSQL's clock or by its own earlier plans, so a reconciler host
//! whose clock runs minutes ahead would review, expire and fail for "no
//! record" early, and one behind would check late; replicas on several
//! hosts would disagree. Each scheduler tick reads PostgreSQL's clock and
//! keeps the offset to its host's; event batches, which plan many times a
//! second, use the host's clock corrected by the last offset measured.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// An offset beyond this is logged (a WARN once it grows past it, an INFO
/// once it is back within): the hosts' clocks want NTP.
const NOTABLE_OFFSET_MS: i64 = 1_000;

/// PostgreSQL's time, as the reconciler reads it. Cheap to clone; clones
/// share the offset.
#[derive(Clone)]
pub struct DbClock {
    /// The host's clock (tests give a skewed one).
    host: fn() -> DateTime<Utc>,
    /// PostgreSQL's clock minus the host's, in milliseconds, as last
    /// measured; zero until then.
    offset_ms: Arc<AtomicI64>,
}

impl Default for DbClock {
    fn default() -> Self {
        DbClock::with_host_clock(Utc::now)
    }
}

impl DbClock {
    /// A clock whose host clock is `host` (tests: a host skewed by hours).
    pub fn with_host_clock(host: fn() -> DateTime<Utc>) -> Self {
        DbClock {
            host,
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The host's time corrected by the last offset measured.
    pub fn now(&self) -> DateTime<Utc> {
        (self.host)() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Reads PostgreSQL's clock on `conn`, keeps its offset to the host's
    /// (taken at the middle of the round trip) and returns it.
    pub async fn read(&self, conn: &mut PgConnection) -> Result<DateTime<Utc>, sqlx::Error> {
        let before = (self.host)();
        let db: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(conn)
            .await?;
        let after = (self.host)();
        let offset = (db - (before + (after - before) / 2)).num_milliseconds();
        let previous = self.offset_ms.swap(offset, Ordering::Relaxed);
        metrics::gauge!(crate::metric::CLOCK_OFFSET_SECONDS).set(offset as f64 / 1000.0);
        match (
            previous.abs() > NOTABLE_OFFSET_MS,
            offset.abs() > NOTABLE_OFFSET_MS,
        ) {
            (false, true) => tracing::warn!(
                offset_ms = offset,
                "this host's clock is off PostgreSQL's by more than a second; the reconciler keeps PostgreSQL's time, but the hosts want NTP"
            ),
            (true, false) => {
                tracing::info!(offset_ms = offset, "this host's clock agrees with PostgreSQL's again")
            }
            _ => {}
        }
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn an_hour_ahead() -> DateTime<Utc> {
        Utc::now() + chrono::Duration::hours(1)
    }

    /// A host an hour ahead reads PostgreSQL's time once measured, and
    /// clones of the clock share the measure.
    #[tokio::test]
    async fn a_skewed_host_keeps_postgresql_time_once_measured() {
        let url = loket_test_support::postgres::fresh_database()
            .await
            .expect("database");
        let pool = loket_runtime::db::connect(&loket_runtime::Secret::new(url), 1)
            .await
            .unwrap();
        let clock = DbClock::with_host_clock(an_hour_ahead);
        let shared = clock.clone();
        assert!(clock.now() - Utc::now() > chrono::Duration::minutes(59));
        let mut conn = pool.acquire().await.unwrap();
        let db = clock.read(&mut conn).await.unwrap();
        let db_now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert!(
            (db_now - db).num_milliseconds().abs() < 1_000,
            "{db} {db_now}"
        );
        for now in [clock.now(), shared.now()] {
            assert!(
                (now - db_now).num_milliseconds().abs() < 1_000,
                "{now} {db_now}"
            );
        }
    }
}
