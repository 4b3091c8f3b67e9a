//! Per-provider status-check schedules (pure arithmetic).
//!
//! OkeBayar (spec §5.D, ASSUMED backoff): the first check 5 minutes after a
//! `pending` answer, then 10, 20, 40 minutes, then hourly. After a timeout
//! (`unknown`) the spec makes a check mandatory, so the first one comes much
//! sooner (`unknown_first_ms`, default 30 s). Tests configure seconds.
//!
//! Every wait is lengthened by up to `jitter_percent` (default 10 %), by an
//! amount the transaction id and the check number fix: transactions that
//! went `unknown` together (a provider outage, a 5xx storm) are then checked
//! spread out rather than all at once when the provider comes back, and
//! planning stays a pure function. Where lengthening would take a wait past
//! the schedule's longest delay, its cap (SNAP: "capped at 30 s", spec
//! §2.4), the wait is shortened by that amount instead, so the cap holds
//! and the checks at it are still spread.
//!
//! Every wait is between [`MIN_WAIT_MS`] and [`MAX_WAIT_MS`]: the settings
//! are milliseconds, and `[5, 10, 20]` meant as minutes would otherwise poll
//! the provider on every scheduler tick.

use chrono::{DateTime, Utc};
use loket_protocol::TransactionStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One provider's schedule as configured
/// (`schedules.<provider>.delays_ms`, `schedules.<provider>.unknown_first_ms`),
/// every wait in milliseconds, from [`MIN_WAIT_MS`] to [`MAX_WAIT_MS`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ScheduleSettings {
    /// `delays_ms[0]` is the wait before the first check of a `pending`
    /// transaction; after the n-th check the next one comes
    /// `delays_ms[min(n, len - 1)]` later (the last delay repeats).
    pub delays_ms: Vec<u64>,
    /// The wait before the first check of an `unknown` transaction.
    pub unknown_first_ms: u64,
    /// Each wait is lengthened by up to this share of it (0–100).
    pub jitter_percent: u32,
}

/// The default `jitter_percent`.
pub const JITTER_PERCENT_DEFAULT: u32 = 10;

impl ScheduleSettings {
    /// SNAP QR CPM (spec §2.4): back off 2, 4, 8… s, capped at 30 s.
    pub fn snapqr() -> Self {
        ScheduleSettings {
            delays_ms: vec![2_000, 4_000, 8_000, 16_000, 30_000],
            unknown_first_ms: 2_000,
            jitter_percent: JITTER_PERCENT_DEFAULT,
        }
    }

    /// Smilepayz: the spec gives no schedule (ASSUMED): a first inquiry
    /// after 10 s, then 30 s, 1, 5 and 15 minutes, repeating every 15.
    pub fn smilepayz() -> Self {
        ScheduleSettings {
            delays_ms: vec![10_000, 30_000, 60_000, 300_000, 900_000],
            unknown_first_ms: 10_000,
            jitter_percent: JITTER_PERCENT_DEFAULT,
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
            jitter_percent: JITTER_PERCENT_DEFAULT,
        }
    }
}

/// The shortest wait a schedule may name (100 ms). Tests run with waits of
/// half a second; a shorter one is a unit mistake (`5` meant as minutes or
/// seconds) that would check the provider on every scheduler tick.
pub const MIN_WAIT_MS: u64 = 100;
/// The longest wait a schedule may name (a day): an unresolved transaction
/// is checked at least daily, and a wait near `u64::MAX` cannot be added to
/// a time at all.
pub const MAX_WAIT_MS: u64 = 24 * 3_600_000;

/// A validated schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    delays: Vec<chrono::Duration>,
    unknown_first: chrono::Duration,
    jitter_percent: u32,
}

/// A schedule that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedules.{provider}.delays_ms must name at least one delay")]
    Empty { provider: String },
    #[error("schedules.{provider}.jitter_percent must be at most 100 (it is {value})")]
    Jitter { provider: String, value: u32 },
    /// `key` is `delays_ms[i]` or `unknown_first_ms`.
    #[error(
        "schedules.{provider}.{key} must be between {MIN_WAIT_MS} and {MAX_WAIT_MS} ms \
         (100 ms to a day; the settings are milliseconds: 5 minutes is 300000), not {value}"
    )]
    Wait {
        provider: String,
        key: String,
        value: u64,
    },
}

impl Schedule {
    pub fn new(provider: &str, settings: &ScheduleSettings) -> Result<Self, ScheduleError> {
        if settings.delays_ms.is_empty() {
            return Err(ScheduleError::Empty {
                provider: provider.to_string(),
            });
        }
        if settings.jitter_percent > 100 {
            return Err(ScheduleError::Jitter {
                provider: provider.to_string(),
                value: settings.jitter_percent,
            });
        }
        let waits = settings
            .delays_ms
            .iter()
            .enumerate()
            .map(|(i, ms)| (format!("delays_ms[{i}]"), *ms))
            .chain([("unknown_first_ms".to_string(), settings.unknown_first_ms)]);
        for (key, value) in waits {
            if !(MIN_WAIT_MS..=MAX_WAIT_MS).contains(&value) {
                return Err(ScheduleError::Wait {
                    provider: provider.to_string(),
                    key,
                    value,
                });
            }
        }
        Ok(Schedule {
            delays: settings.delays_ms.iter().map(|ms| millis(*ms)).collect(),
            unknown_first: millis(settings.unknown_first_ms),
            jitter_percent: settings.jitter_percent,
        })
    }

    /// When the first check of `transaction`, which just entered `status`
    /// at `now`, is due: [`Self::first`] plus its jitter.
    pub fn first_due(
        &self,
        now: DateTime<Utc>,
        status: TransactionStatus,
        transaction: Uuid,
    ) -> DateTime<Utc> {
        now + self.jittered(self.first(status), transaction, 0)
    }

    /// When the check after the `check_count`-th of `transaction`, published
    /// at `now`, is due: [`Self::after_check`] plus its jitter.
    pub fn due_after_check(
        &self,
        now: DateTime<Utc>,
        check_count: i32,
        transaction: Uuid,
    ) -> DateTime<Utc> {
        now + self.jittered(self.after_check(check_count), transaction, check_count)
    }

    /// `wait` lengthened by a share of it below `jitter_percent`, the share
    /// fixed by the transaction (its id's random bits) and the check number;
    /// shortened by it instead where lengthened it would pass the schedule's
    /// longest delay.
    fn jittered(&self, wait: chrono::Duration, transaction: Uuid, check: i32) -> chrono::Duration {
        let mixed = (transaction.as_u128() as u64)
            ^ u64::from(check.unsigned_abs()).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // A fraction in [0, 1) with 32 bits of resolution.
        let fraction = i128::from(mixed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32);
        let extra_ms =
            i128::from(wait.num_milliseconds()) * i128::from(self.jitter_percent) * fraction
                / (100 << 32);
        let extra = chrono::Duration::milliseconds(i64::try_from(extra_ms).unwrap_or(0));
        let cap = self.delays.iter().max().copied().unwrap_or(wait);
        if wait + extra > cap {
            wait - extra
        } else {
            wait + extra
        }
    }

    /// The wait before the first check of a transaction that just entered
    /// `status` (`pending` or `unknown`).
    pub fn first(&self, status: TransactionStatus) -> chrono::Duration {
        match status {
            TransactionStatus::Unknown => self.unknown_first,
            _ => self.delays[0],
        }
    }

    /// The longest a transaction that just became `pending` or `unknown`
    /// may wait for its first check: the longer first wait plus the most
    /// jitter can add to it.
    pub fn latest_first(&self) -> chrono::Duration {
        let first = self.delays[0].max(self.unknown_first);
        first + first * self.jitter_percent as i32 / 100
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

/// The longest [`millis`] returns: about 292 years, whose nanoseconds still
/// fit an `i64`, and which a time now can be moved by either way.
const MILLIS_MAX: u64 = i64::MAX as u64 / 1_000_000;

/// Milliseconds as a chrono duration, saturating at [`MILLIS_MAX`] (about
/// 292 years): a larger setting (say 10^16 ms) would make `now ± duration`
/// leave chrono's range and panic on every tick.
pub fn millis(ms: u64) -> chrono::Duration {
    chrono::Duration::milliseconds(ms.min(MILLIS_MAX) as i64)
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
                jitter_percent: 0,
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
                jitter_percent: 0,
            },
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "schedules.okebayar.delays_ms must name at least one delay"
        );
    }

    #[test]
    fn waits_under_100_ms_or_over_a_day_are_refused_naming_the_key() {
        let schedule = |delays_ms: Vec<u64>, unknown_first_ms: u64| {
            Schedule::new(
                "okebayar",
                &ScheduleSettings {
                    delays_ms,
                    unknown_first_ms,
                    jitter_percent: 0,
                },
            )
        };
        // Minutes written without their unit: every tick would poll.
        let error = schedule(vec![5, 10, 20], 30_000).unwrap_err();
        assert_eq!(
            error.to_string(),
            "schedules.okebayar.delays_ms[0] must be between 100 and 86400000 ms \
             (100 ms to a day; the settings are milliseconds: 5 minutes is 300000), not 5"
        );
        for (delays, unknown_first, key) in [
            (vec![1_000, 0], 500, "delays_ms[1]"),
            (vec![1_000, 2_000], 0, "unknown_first_ms"),
            (vec![1_000, 2_000], 99, "unknown_first_ms"),
            (vec![1_000, MAX_WAIT_MS + 1], 500, "delays_ms[1]"),
            (vec![u64::MAX], 500, "delays_ms[0]"),
            (vec![1_000], u64::MAX, "unknown_first_ms"),
        ] {
            let error = schedule(delays.clone(), unknown_first).unwrap_err();
            assert!(
                matches!(&error, ScheduleError::Wait { key: k, .. } if k == key),
                "{delays:?} {unknown_first}: {error}"
            );
            assert!(
                error
                    .to_string()
                    .contains(&format!("schedules.okebayar.{key} ")),
                "{error}"
            );
        }
        // The bounds themselves, and what the test suite runs with.
        schedule(vec![MIN_WAIT_MS, MAX_WAIT_MS], MIN_WAIT_MS).unwrap();
        schedule(vec![700, 1_000], 700).unwrap();
        schedule(vec![60_000, 1_000], 60_000).unwrap();
    }

    #[test]
    fn huge_millisecond_settings_saturate_instead_of_panicking_in_time_arithmetic() {
        let now = chrono::Utc::now();
        for ms in [10u64.pow(16), i64::MAX as u64, u64::MAX] {
            let duration = millis(ms);
            assert_eq!(duration, millis(MILLIS_MAX), "{ms}");
            // What the scheduler and the planner do with these settings.
            let _ = now - duration;
            let _ = now + duration + duration;
        }
        assert_eq!(millis(1_500).num_milliseconds(), 1_500);
    }

    #[test]
    fn the_latest_first_check_includes_the_longer_first_wait_and_its_jitter() {
        let schedule = Schedule::default(); // 5 min pending, 30 s unknown, 10 %
        assert_eq!(schedule.latest_first(), chrono::Duration::seconds(330));
        let unknown_longer = Schedule::new(
            "snapqr",
            &ScheduleSettings {
                delays_ms: vec![1_000],
                unknown_first_ms: 4_000,
                jitter_percent: 50,
            },
        )
        .unwrap();
        assert_eq!(
            unknown_longer.latest_first(),
            chrono::Duration::milliseconds(6_000)
        );
    }

    #[test]
    fn jitter_lengthens_each_wait_by_less_than_its_share_and_spreads_transactions() {
        let schedule = Schedule::default(); // 10 %
        let now = chrono::Utc::now();
        let mut unknown_waits = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let id = Uuid::now_v7();
            let first = schedule.first_due(now, TransactionStatus::Unknown, id) - now;
            assert!(first >= chrono::Duration::seconds(30), "{first}");
            assert!(first < chrono::Duration::seconds(33), "{first}");
            // The same transaction and check: the same time, always.
            assert_eq!(
                schedule.first_due(now, TransactionStatus::Unknown, id) - now,
                first
            );
            unknown_waits.insert(first.num_milliseconds());
            let later = schedule.due_after_check(now, 3, id) - now;
            assert!(later >= chrono::Duration::minutes(40), "{later}");
            assert!(later < chrono::Duration::minutes(44), "{later}");
        }
        // Transactions that went unknown together are checked spread over
        // the whole 3 s, not together.
        let spread = unknown_waits.last().unwrap() - unknown_waits.first().unwrap();
        assert!(spread > 2_500, "spread {spread} ms");
        assert!(
            unknown_waits.len() > 500,
            "{} distinct times",
            unknown_waits.len()
        );
    }

    /// Guards the cap (SNAP, spec §2.4: "capped at 30 s"): jitter never
    /// lengthens a wait past the schedule's longest delay; the checks at the
    /// cap come before it, still spread out. Waits below it are lengthened.
    #[test]
    fn jitter_keeps_waits_within_the_schedules_longest_delay() {
        let snap = Schedule::new("snapqr", &ScheduleSettings::snapqr()).unwrap();
        let now = chrono::Utc::now();
        let mut capped_waits = std::collections::BTreeSet::new();
        for _ in 0..1_000 {
            let id = Uuid::now_v7();
            let capped = snap.due_after_check(now, 12, id) - now;
            assert!(capped <= chrono::Duration::seconds(30), "{capped}");
            assert!(capped > chrono::Duration::seconds(27), "{capped}");
            capped_waits.insert(capped.num_milliseconds());
            let below = snap.due_after_check(now, 3, id) - now;
            assert!(below >= chrono::Duration::seconds(16), "{below}");
            assert!(below < chrono::Duration::milliseconds(17_600), "{below}");
        }
        let spread = capped_waits.last().unwrap() - capped_waits.first().unwrap();
        assert!(spread > 2_500, "spread {spread} ms");
    }

    #[test]
    fn no_jitter_keeps_the_schedule_exact_and_more_than_all_of_it_is_refused() {
        let exact = Schedule::new(
            "okebayar",
            &ScheduleSettings {
                jitter_percent: 0,
                ..ScheduleSettings::default()
            },
        )
        .unwrap();
        let now = chrono::Utc::now();
        let id = Uuid::now_v7();
        assert_eq!(
            exact.due_after_check(now, 1, id) - now,
            chrono::Duration::minutes(10)
        );
        let error = Schedule::new(
            "smilepayz",
            &ScheduleSettings {
                jitter_percent: 101,
                ..ScheduleSettings::smilepayz()
            },
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "schedules.smilepayz.jitter_percent must be at most 100 (it is 101)"
        );
    }
}
