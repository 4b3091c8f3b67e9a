//! Per-provider status-check schedules (pure arithmetic).
//!
//! OkeBayar (spec §5.D, ASSUMED backoff): the first check 5 minutes after a
//! `pending` answer, then 10, 20, 40 minutes, then hourly. After a timeout
//! (`unknown`) the spec makes a check mandatory, so the first one comes much
//! sooner (`unknown_first_ms`, default 30 s). Tests configure seconds.

use loket_protocol::TransactionStatus;
use serde::{Deserialize, Serialize};

/// One provider's schedule as configured
/// (`schedules.<provider>.delays_ms`, `schedules.<provider>.unknown_first_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ScheduleSettings {
    /// `delays_ms[0]` is the wait before the first check of a `pending`
    /// transaction; after the n-th check the next one comes
    /// `delays_ms[min(n, len - 1)]` later (the last delay repeats).
    pub delays_ms: Vec<u64>,
    /// The wait before the first check of an `unknown` transaction.
    pub unknown_first_ms: u64,
}

impl ScheduleSettings {
    /// SNAP QR CPM (spec §2.4): back off 2, 4, 8… s, capped at 30 s.
    pub fn snapqr() -> Self {
        ScheduleSettings {
            delays_ms: vec![2_000, 4_000, 8_000, 16_000, 30_000],
            unknown_first_ms: 2_000,
        }
    }

    /// Smilepayz: the spec gives no schedule (ASSUMED): a first inquiry
    /// after 10 s, then 30 s, 1, 5 and 15 minutes, repeating every 15.
    pub fn smilepayz() -> Self {
        ScheduleSettings {
            delays_ms: vec![10_000, 30_000, 60_000, 300_000, 900_000],
            unknown_first_ms: 10_000,
        }
    }
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        const MINUTE: u64 = 60_000;
        ScheduleSettings {
            delays_ms: vec![
                5 * MINUTE,
                10 * MINUTE,
                20 * MINUTE,
                40 * MINUTE,
                60 * MINUTE,
            ],
            unknown_first_ms: 30_000,
        }
    }
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    delays: Vec<chrono::Duration>,
    unknown_first: chrono::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedules.{provider}.delays_ms must name at least one delay")]
pub struct EmptySchedule {
    pub provider: String,
}

impl Schedule {
    pub fn new(provider: &str, settings: &ScheduleSettings) -> Result<Self, EmptySchedule> {
        if settings.delays_ms.is_empty() {
            return Err(EmptySchedule {
                provider: provider.to_string(),
            });
        }
        Ok(Schedule {
            delays: settings.delays_ms.iter().map(|ms| millis(*ms)).collect(),
            unknown_first: millis(settings.unknown_first_ms),
        })
    }

    /// The wait before the first check of a transaction that just entered
    /// `status` (`pending` or `unknown`).
    pub fn first(&self, status: TransactionStatus) -> chrono::Duration {
        match status {
            TransactionStatus::Unknown => self.unknown_first,
            _ => self.delays[0],
        }
    }

    /// The wait after the `check_count`-th check was published
    /// (`check_count >= 1`): `delays[min(check_count, len - 1)]`.
    pub fn after_check(&self, check_count: i32) -> chrono::Duration {
        let index = usize::try_from(check_count.max(0))
            .unwrap_or(0)
            .min(self.delays.len() - 1);
        self.delays[index]
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::new("default", &ScheduleSettings::default())
            .expect("the default schedule is not empty")
    }
}

/// Milliseconds as a chrono duration (saturating; configuration is small).
pub fn millis(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn okebayar_default_follows_the_spec() {
        let schedule = Schedule::default();
        let minutes = |d: chrono::Duration| d.num_minutes();
        assert_eq!(minutes(schedule.first(TransactionStatus::Pending)), 5);
        assert_eq!(schedule.first(TransactionStatus::Unknown).num_seconds(), 30);
        // after the 1st check: 10 min, 2nd: 20, 3rd: 40, then hourly forever.
        let after: Vec<i64> = (1..=7).map(|n| minutes(schedule.after_check(n))).collect();
        assert_eq!(after, vec![10, 20, 40, 60, 60, 60, 60]);
    }

    #[test]
    fn last_delay_repeats_and_odd_counts_are_clamped() {
        let schedule = Schedule::new(
            "okebayar",
            &ScheduleSettings {
                delays_ms: vec![1_000, 2_000],
                unknown_first_ms: 500,
            },
        )
        .unwrap();
        assert_eq!(schedule.after_check(0).num_milliseconds(), 1_000);
        assert_eq!(schedule.after_check(1).num_milliseconds(), 2_000);
        assert_eq!(schedule.after_check(50).num_milliseconds(), 2_000);
        assert_eq!(schedule.after_check(-3).num_milliseconds(), 1_000);
        assert_eq!(schedule.after_check(i32::MAX).num_milliseconds(), 2_000);
        assert_eq!(
            schedule
                .first(TransactionStatus::Unknown)
                .num_milliseconds(),
            500
        );
        assert_eq!(
            schedule
                .first(TransactionStatus::Pending)
                .num_milliseconds(),
            1_000
        );
    }

    #[test]
    fn an_empty_schedule_is_a_configuration_error_naming_the_key() {
        let error = Schedule::new(
            "okebayar",
            &ScheduleSettings {
                delays_ms: vec![],
                unknown_first_ms: 1,
            },
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "schedules.okebayar.delays_ms must name at least one delay"
        );
    }
}
