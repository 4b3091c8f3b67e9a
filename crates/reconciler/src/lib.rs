//! The reconciler: the only writer of transaction state after the ingress
//! created a row. It owns
//!
//! - applying connector results and provider callbacks from `LOKET_EVT`
//!   exactly once (the `applied_events` table, in the same database
//!   transaction as the change), through the state machine
//!   ([`loket_protocol::state::decide`]) and the pure planner ([`plan`]);
//!   a batch of events that panics is a vital failure: the service drains
//!   and exits non-zero (`spawn_batch`);
//! - applying operators' decisions (`loket.evt.operator.decision`, from
//!   `loketctl review settle`) the same way: the one way out of
//!   `needs_review` ([`loket_protocol::state::settle`]), refused and logged
//!   for a transaction in any other status;
//! - the append-only event log (`transaction_events`) and the stored provider
//!   exchanges;
//! - publishing every state change on `loket.upd.<client>` (the transaction
//!   in the `Loket-Transaction` header);
//! - status checks on each provider's schedule, the sweep that re-dispatches
//!   what never reached a connector, inquiry expiry and the `needs_review`
//!   limit ([`scheduler`]) — with `FOR UPDATE SKIP LOCKED`, so replicas never
//!   do the same work twice;
//! - publishing the updates the scheduler committed but could not publish
//!   (`unpublished_updates`, [`scheduler`], step 5);
//! - keeping the bookkeeping tables bounded: send records and applied-event
//!   claims past their retention are deleted ([`scheduler`], step 6).
//!
//! It must not talk to providers, never move a transaction out of a final
//! state, and never let an unverified callback decide a state (money-safety
//! rules 4 and 5): those only trigger a status check.

pub mod apply;
pub mod clock;
pub mod metric;
pub mod plan;
pub mod schedule;
pub mod scheduler;
mod write;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::{FutureExt, StreamExt};
use loket_protocol::{horizon, subjects};
use loket_runtime::admin::{self, Readiness};
use loket_runtime::config::Common;
use loket_runtime::db::{self, HeldConnection};
use loket_runtime::Vital;
use loket_runtime::{bus, Shutdown};
use schedule::{Schedule, ScheduleSettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use apply::{Applied, ApplyError, Incoming, Reconciler};
pub use scheduler::TickReport;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    #[serde(flatten)]
    pub common: Common,
    /// Postgres pool size.
    pub db_max_connections: u32,
    /// Apply the migrations at start.
    pub migrate: bool,
    /// Batches of events applied at once by this replica, each in its own
    /// database transaction. Few slots make busy traffic form large batches
    /// (a batch costs about the round trips of one event).
    pub concurrency: usize,
    /// Most events in one batch: what has arrived when a slot frees up.
    pub event_batch_max: usize,
    /// JetStream ack wait for events: an event not acked by then is
    /// redelivered (and then found in `applied_events`).
    pub ack_wait_ms: u64,
    /// Scheduler period (status checks, sweep, limits).
    pub tick_ms: u64,
    /// Rows handled per scheduler step and tick.
    pub batch_size: i64,
    /// Status-check schedules per provider name; a provider not listed uses
    /// the OkeBayar default (spec §5.D).
    pub schedules: BTreeMap<String, ScheduleSettings>,
    /// How long a status check may find "no record of the reference" before
    /// the provider is taken never to have received it (`failed`,
    /// `NOT_FOUND`). At least a second.
    pub not_found_grace_ms: u64,
    /// A `received` transaction never dispatched this long after creation
    /// (the ingress crashed between insert and publish) is dispatched.
    pub dispatch_grace_ms: u64,
    /// A `received` transaction dispatched this long ago without any result
    /// (command lost) is re-dispatched (the connector then checks first);
    /// each further re-dispatch waits twice as long, up to 16 times this.
    pub redispatch_after_ms: u64,
    /// `received`/`pending`/`unknown` this long after creation:
    /// `needs_review` with an alert. More than the latest first status
    /// check of any schedule (its longer first wait plus jitter).
    pub review_after_ms: u64,
    /// Inquiries unresolved this long after creation: `failed` / `EXPIRED`.
    /// More than the latest first status check of any schedule.
    pub inquiry_timeout_ms: u64,
    /// Send records (`send_intents`) older than this are deleted. At least
    /// [`MIN_SEND_RECORD_RETENTION`](loket_protocol::horizon::MIN_SEND_RECORD_RETENTION)
    /// (two days): connectors trust the journal only within the one-day send
    /// horizon.
    pub send_record_retention_ms: u64,
    /// Claims of applied events (`applied_events`) older than this are
    /// deleted; at least an hour.
    pub applied_event_retention_ms: u64,
    /// Most rows deleted from each of those tables per tick.
    pub prune_batch: i64,
}

impl loket_runtime::binary::ServiceSettings for Settings {
    fn log_settings(&self) -> loket_runtime::telemetry::LogSettings {
        self.common.log_settings()
    }

    fn admin_addr(&self) -> &str {
        &self.common.admin_addr
    }
}

const WEEK_MS: u64 = 7 * 24 * 3_600_000;
/// The least `applied_event_retention_ms`.
const MIN_APPLIED_EVENT_RETENTION: Duration = Duration::from_secs(3600);
/// The least `not_found_grace_ms` (a second): 0 fails a transaction on the
/// second "no record" however soon it follows the first, and a value under
/// a second is a unit mistake (`5` meant as minutes).
const MIN_NOT_FOUND_GRACE_MS: u64 = 1_000;
/// The least `dispatch_grace_ms`: the ingress publishes a new transaction's
/// command right after inserting it, and a sweep sooner than this would
/// dispatch transactions it is still publishing (each copy costing a status
/// check first); under a second is a unit mistake.
const MIN_DISPATCH_GRACE: Duration = Duration::from_secs(1);
/// The least `redispatch_after_ms`: a command dispatched more recently may
/// still be with its connector, and a sweep every tick would send copies of
/// every transaction in flight (`10` meant as minutes).
const MIN_REDISPATCH_AFTER: Duration = Duration::from_secs(5);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            common: Common::default(),
            db_max_connections: 16,
            migrate: true,
            concurrency: 2,
            event_batch_max: 64,
            ack_wait_ms: 30_000,
            tick_ms: 1_000,
            batch_size: 256,
            schedules: BTreeMap::from([
                ("okebayar".to_string(), ScheduleSettings::default()),
                ("snapqr".to_string(), ScheduleSettings::snapqr()),
                ("smilepayz".to_string(), ScheduleSettings::smilepayz()),
            ]),
            not_found_grace_ms: 5 * 60_000,
            dispatch_grace_ms: 30_000,
            redispatch_after_ms: 10 * 60_000,
            review_after_ms: 24 * 3_600_000,
            inquiry_timeout_ms: 10 * 60_000,
            send_record_retention_ms: WEEK_MS,
            applied_event_retention_ms: WEEK_MS,
            prune_batch: 10_000,
        }
    }
}

impl Settings {
    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        for (provider, schedule) in &self.schedules {
            loket_protocol::Provider::parse(provider)
                .map_err(|e| Error::Config(format!("schedules.{provider}: {e}")))?;
            Schedule::new(provider, schedule).map_err(|e| Error::Config(e.to_string()))?;
        }
        loket_runtime::config::all_positive(&[
            ("concurrency", self.concurrency as u64),
            ("event_batch_max", self.event_batch_max as u64),
            ("ack_wait_ms", self.ack_wait_ms),
            ("tick_ms", self.tick_ms),
            ("batch_size", u64::try_from(self.batch_size).unwrap_or(0)),
            ("db_max_connections", u64::from(self.db_max_connections)),
            ("prune_batch", u64::try_from(self.prune_batch).unwrap_or(0)),
        ])
        .map_err(Error::Config)?;
        let least = [
            (
                "send_record_retention_ms",
                self.send_record_retention_ms,
                horizon::MIN_SEND_RECORD_RETENTION,
                "twice the connectors' one-day send horizon",
            ),
            (
                "applied_event_retention_ms",
                self.applied_event_retention_ms,
                MIN_APPLIED_EVENT_RETENTION,
                "an hour",
            ),
            (
                "dispatch_grace_ms",
                self.dispatch_grace_ms,
                MIN_DISPATCH_GRACE,
                "a second: the ingress may still be publishing a newer transaction's command",
            ),
            (
                "redispatch_after_ms",
                self.redispatch_after_ms,
                MIN_REDISPATCH_AFTER,
                "five seconds: a command dispatched more recently may still be with its connector",
            ),
        ];
        for (key, value, minimum, why) in least {
            if u128::from(value) < minimum.as_millis() {
                return Err(Error::Config(format!(
                    "{key} must be at least {} ({why}), not {value}",
                    minimum.as_millis()
                )));
            }
        }
        if self.not_found_grace_ms < MIN_NOT_FOUND_GRACE_MS {
            return Err(Error::Config(format!(
                "not_found_grace_ms must be at least {MIN_NOT_FOUND_GRACE_MS} (a second: \
                 the provider may not have recorded a reference it was just sent), not {}",
                self.not_found_grace_ms
            )));
        }
        // Both clocks run from a transaction's creation: one that ends it
        // before the first status check can come ends every unresolved
        // transaction unchecked.
        let (schedule, latest_first) = self.latest_first_check();
        let latest_first_ms = latest_first.num_milliseconds();
        for (key, value, then) in [
            (
                "review_after_ms",
                self.review_after_ms,
                "parks every unresolved transaction in needs_review",
            ),
            (
                "inquiry_timeout_ms",
                self.inquiry_timeout_ms,
                "expires every unresolved inquiry",
            ),
        ] {
            if i128::from(value) <= i128::from(latest_first_ms) {
                return Err(Error::Config(format!(
                    "{key} must be greater than the latest first status check of any provider \
                     ({latest_first_ms} ms: the longer first wait of {schedule} plus its \
                     jitter), not {value}: a shorter one {then} before it is checked"
                )));
            }
        }
        // An unresolved inquiry moves no money: it is meant to expire, not
        // to wait in needs_review for an operator.
        if self.review_after_ms <= self.inquiry_timeout_ms {
            return Err(Error::Config(format!(
                "review_after_ms must be greater than inquiry_timeout_ms ({} ms), not {}: \
                 a shorter one parks unresolved inquiries in needs_review before they expire",
                self.inquiry_timeout_ms, self.review_after_ms
            )));
        }
        Ok(())
    }

    /// Which schedule's first status check may come latest (its key, or
    /// the default one's a provider without a schedule of its own uses, as
    /// [`Reconciler::new`] does), and that wait ([`Schedule::latest_first`]).
    /// Call it on validated schedules (an invalid one counts as the default).
    fn latest_first_check(&self) -> (String, chrono::Duration) {
        let mut latest: Option<(String, chrono::Duration)> = None;
        for provider in loket_protocol::Provider::ALL {
            let name = provider.as_str();
            let (label, schedule) = match self.schedules.get(name) {
                Some(settings) => (
                    format!("schedules.{name}"),
                    Schedule::new(name, settings).unwrap_or_default(),
                ),
                None => (
                    format!("the default schedule, which {name} uses without schedules.{name},"),
                    Schedule::default(),
                ),
            };
            let wait = schedule.latest_first();
            if latest.as_ref().is_none_or(|(_, longest)| wait > *longest) {
                latest = Some((label, wait));
            }
        }
        latest.unwrap_or_else(|| {
            (
                "the default schedule".into(),
                Schedule::default().latest_first(),
            )
        })
    }
}

/// The reconciler has no main port: only the admin one.
pub struct Listeners {
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("event consumer setup failed: {0}")]
    Consumer(String),
    #[error("PostgreSQL's clock could not be read at start: {0}")]
    Clock(sqlx::Error),
    #[error("the event stream ended before the reconciler was asked to stop")]
    StreamEnded,
    #[error(transparent)]
    VitalTask(#[from] loket_runtime::vital::VitalTaskFailed),
}

/// Runs the reconciler until `shutdown`, then drains: stops pulling, lets
/// in-flight events finish (bounded by `shutdown_grace_ms`), stops the
/// scheduler after its current step.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let readiness = Readiness::default();
    let admin_server = admin::spawn(listeners.admin, readiness.clone(), shutdown.clone());
    // After the admin port installed the recorder: before it, the zeros
    // would go nowhere.
    metric::register_at_zero();

    let nats = bus::connect(&settings.common.nats_url, "loket-reconciler").await?;
    readiness.watch_bus(&nats);
    let js = jetstream::new(nats);
    bus::ensure_streams(&js).await?;
    let pool = db::connect(&settings.common.database_url, settings.db_max_connections).await?;
    if settings.migrate {
        db::migrate(&pool).await?;
    }
    readiness.watch_database(&pool);
    let reconciler = Arc::new(Reconciler::new(pool, js.clone(), &settings));
    // Before the first event is pulled: the scheduler's first tick, which
    // reads the clock too, may come after the first batch has planned with
    // an uncorrected host clock (next checks days off on a skewed host).
    reconciler.read_clock().await.map_err(Error::Clock)?;

    let stream = js
        .get_stream(subjects::EVENT_STREAM)
        .await
        .map_err(|e| Error::Consumer(e.to_string()))?;
    let concurrency = settings.concurrency.max(1);
    let batch_max = settings.event_batch_max.max(1);
    let consumer = loket_runtime::bus::durable_pull_consumer(
        &stream,
        pull::Config {
            durable_name: Some(subjects::RECONCILER_CONSUMER.to_string()),
            filter_subject: subjects::EVENT_SUBJECTS.to_string(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_millis(settings.ack_wait_ms),
            max_ack_pending: (concurrency * batch_max * 2).max(256) as i64,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| Error::Consumer(e.to_string()))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(concurrency * batch_max)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| Error::Consumer(e.to_string()))?;

    // Every task started here belongs to this run: when its future is
    // dropped (the process killed, or its task aborted in a test, as
    // `kill -9` would), the scheduler and the batches in flight end with it.
    // Stops the pull loop and the scheduler: triggered by `shutdown`, by a
    // vital task's failure, or once the event stream has ended.
    let stopping = shutdown.child();
    let vital = Vital::new(stopping.clone());
    let mut scheduler_task = JoinSet::new();
    scheduler_task.spawn(vital.guard(
        "scheduler",
        scheduler::run(
            reconciler.clone(),
            Duration::from_millis(settings.tick_ms),
            stopping.clone(),
        ),
    ));
    let mut batches = JoinSet::new();

    // A batch slot is a connection kept between batches (no pool round trips
    // per batch); a batch takes a free one, which goes back when dropped.
    let (free_slots, mut slots) = mpsc::channel(concurrency);
    for _ in 0..concurrency {
        let _ = free_slots.try_send(HeldConnection::new(reconciler.pool().clone()));
    }
    let take_slot = |connection| Slot {
        connection: Some(connection),
        free: free_slots.clone(),
    };
    readiness.set(true);
    tracing::info!(
        consumer = subjects::RECONCILER_CONSUMER,
        concurrency,
        batch_max,
        "reconciler started"
    );

    // A free slot takes the next message and whatever else has already
    // arrived (up to `batch_max`): under load the batches grow by
    // themselves, while a lone event is applied at once.
    let mut stream_ended = false;
    'pull: loop {
        // Finished batches are only reaped: a panicking one was caught by
        // its guard (`spawn_batch`).
        while batches.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = stopping.wait() => break,
            slot = slots.recv() => take_slot(slot.expect("a sender is kept here")),
        };
        let first = tokio::select! {
            _ = stopping.wait() => break,
            next = messages.next() => next,
        };
        let mut batch = match first {
            Some(Ok(message)) => vec![message],
            Some(Err(error)) => {
                tracing::warn!(%error, "pull error; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => {
                stream_ended = true;
                break;
            }
        };
        while batch.len() < batch_max {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(Some(Err(error))) => {
                    tracing::warn!(%error, "pull error");
                    break;
                }
                Some(None) => {
                    stream_ended = true;
                    break;
                }
                None => break,
            }
        }
        let reconciler = reconciler.clone();
        let mut slot = slot;
        spawn_batch(&mut batches, &vital, async move {
            handle_batch(&reconciler, slot.connection(), batch).await;
        });
        if stream_ended {
            break 'pull;
        }
    }

    let ended_unasked = stream_ended && !stopping.is_triggered();
    stopping.trigger();
    readiness.set(false);
    // Events received but not started go back for another replica at once;
    // in-flight ones finish (each commits and acks, or is left for
    // redelivery).
    let handed_back = bus::hand_back_unstarted(&mut messages).await;
    drop(messages);
    tracing::info!(handed_back, "reconciler draining");
    let grace = Duration::from_millis(settings.common.shutdown_grace_ms);
    let all_back = async {
        for _ in 0..concurrency {
            slots.recv().await;
        }
    };
    if tokio::time::timeout(grace, all_back).await.is_err() {
        tracing::warn!("drain grace period passed with events in flight; they will be redelivered");
    }
    let _ = tokio::time::timeout(grace, scheduler_task.join_next()).await;
    admin_server.stop().await;
    tracing::info!("reconciler stopped");
    if ended_unasked {
        return Err(Error::StreamEnded);
    }
    Ok(vital.outcome()?)
}

/// Starts one batch's work on `batches`, guarded like the scheduler: a
/// panic is logged at error (`vital task failed`, task `event batch`),
/// drains the service and becomes its error, so the process exits non-zero
/// for its supervisor to restart. Spawned bare, the panic would vanish with
/// its task (`try_join_next` only reaps), the service would stay ready,
/// and the batch's events, never acked, would come back after `ack_wait`
/// to panic again, for ever. The slot goes back as the task unwinds.
fn spawn_batch(
    batches: &mut JoinSet<()>,
    vital: &Vital,
    batch: impl Future<Output = ()> + Send + 'static,
) {
    batches.spawn(vital.guard_against_panics("event batch", batch));
}

/// A batch slot taken from the free ones: its connection goes back when the
/// slot is dropped, whichever way the batch (or the pull loop) ends.
struct Slot {
    connection: Option<HeldConnection>,
    free: mpsc::Sender<HeldConnection>,
}

impl Slot {
    fn connection(&mut self) -> &mut HeldConnection {
        self.connection.as_mut().expect("held until dropped")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // The channel has room for every slot, so this never fails.
            let _ = self.free.try_send(connection);
        }
    }
}

/// Applies a batch of messages and acks, terminates or naks each.
async fn handle_batch(
    reconciler: &Reconciler,
    connection: &mut HeldConnection,
    messages: Vec<jetstream::Message>,
) {
    let incoming: Vec<apply::Incoming<'_>> = messages
        .iter()
        .map(|message| apply::Incoming {
            subject: message.subject.as_str(),
            payload: &message.payload,
            trace: bus::trace_of(message),
        })
        .collect();
    let results = reconciler.apply_events_on(connection, &incoming).await;
    for ((message, incoming), result) in messages.iter().zip(&incoming).zip(results) {
        let trace_id = incoming
            .trace
            .map(|trace| trace.trace_id())
            .unwrap_or_default();
        let span = tracing::info_span!("event", subject = %message.subject, trace_id = %trace_id);
        acknowledge(message, result).instrument(span).await;
    }
}

/// Acks an applied event, terminates a poison one or one that can never be
/// written, and naks the rest.
async fn acknowledge(message: &jetstream::Message, result: Result<Applied, ApplyError>) {
    match result {
        Ok(applied) => {
            tracing::debug!(?applied, "event applied");
            if let Err(error) = message.ack().await {
                // Applied and committed; a redelivery is a duplicate.
                tracing::warn!(%error, "ack failed after applying");
            }
        }
        Err(ApplyError::Poison(reason)) => {
            metrics::counter!(metric::POISON).increment(1);
            tracing::error!(%reason, "undecodable event terminated");
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(error @ ApplyError::Unwritable { .. }) => {
            metrics::counter!(metric::POISON).increment(1);
            tracing::error!(%error, "ALERT event terminated: it can never be written and its transaction could not be parked for review");
            let _ = message.ack_with(AckKind::Term).await;
        }
        Err(error) => {
            metrics::counter!(metric::APPLY_ERRORS).increment(1);
            tracing::warn!(%error, "event not applied; left for redelivery");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `validate` gives for settings changed by `change`.
    fn refusal(change: impl FnOnce(&mut Settings)) -> Option<String> {
        let mut settings = Settings::default();
        change(&mut settings);
        settings.validate().err().map(|error| error.to_string())
    }

    /// A batch that panics is not lost with its task: the panic becomes the
    /// service's failure (named `event batch`) and starts the drain, so
    /// `run` returns an error and the process exits for a restart, instead
    /// of staying ready while its events come back to panic again.
    #[tokio::test]
    async fn a_panicking_batch_drains_the_service_and_becomes_its_error() {
        let stopping = Shutdown::new();
        let vital = Vital::new(stopping.clone());
        let mut batches = JoinSet::new();
        spawn_batch(&mut batches, &vital, async {
            panic!("a batch broke");
        });
        batches.join_next().await.expect("one batch").ok();
        assert!(stopping.is_triggered(), "the drain started");
        let failure = vital.outcome().expect_err("the service fails");
        assert_eq!(failure.task, "event batch");
        assert_eq!(failure.how, "panicked: a batch broke");
        let error = Error::from(failure).to_string();
        assert!(error.contains("'event batch' panicked"), "{error}");
    }

    #[test]
    fn retentions_below_their_floor_are_refused_naming_the_key() {
        assert_eq!(refusal(|_| ()), None);
        let two_days = 2 * 24 * 3_600_000;
        assert_eq!(refusal(|s| s.send_record_retention_ms = two_days), None);
        let error = refusal(|s| s.send_record_retention_ms = two_days - 1).unwrap();
        assert!(error.contains("send_record_retention_ms"), "{error}");
        assert_eq!(refusal(|s| s.applied_event_retention_ms = 3_600_000), None);
        let error = refusal(|s| s.applied_event_retention_ms = 3_599_999).unwrap();
        assert!(error.contains("applied_event_retention_ms"), "{error}");
        let error = refusal(|s| s.prune_batch = 0).unwrap();
        assert!(error.contains("prune_batch"), "{error}");
    }

    #[test]
    fn zero_or_unit_mistaken_deadlines_and_schedules_are_refused_naming_the_key() {
        let error = refusal(|s| s.not_found_grace_ms = 0).unwrap();
        assert!(
            error.contains("not_found_grace_ms must be at least 1000"),
            "{error}"
        );
        let error = refusal(|s| s.not_found_grace_ms = 5).unwrap();
        assert!(error.contains("not_found_grace_ms"), "{error}");
        assert_eq!(refusal(|s| s.not_found_grace_ms = 1_000), None);
        for (key, least) in [("dispatch_grace_ms", 1_000), ("redispatch_after_ms", 5_000)] {
            let set = |s: &mut Settings, value| match key {
                "dispatch_grace_ms" => s.dispatch_grace_ms = value,
                _ => s.redispatch_after_ms = value,
            };
            for value in [0, 10, least - 1] {
                let error = refusal(|s| set(s, value)).unwrap();
                assert!(
                    error.contains(&format!("{key} must be at least {least}"))
                        && error.ends_with(&format!("not {value}")),
                    "{error}"
                );
            }
            assert_eq!(refusal(|s| set(s, least)), None, "{key}");
        }
        // The default schedules' latest first check: OkeBayar's 5 minutes
        // plus 10 % jitter.
        for key in ["review_after_ms", "inquiry_timeout_ms"] {
            let set = |s: &mut Settings, value| match key {
                "review_after_ms" => s.review_after_ms = value,
                _ => s.inquiry_timeout_ms = value,
            };
            for value in [0, 330_000] {
                let error = refusal(|s| set(s, value)).unwrap();
                assert!(
                    error.contains(&format!("{key} must be greater than")),
                    "{error}"
                );
                assert!(error.contains("330000 ms"), "{error}");
                assert!(error.contains("schedules.okebayar"), "{error}");
            }
        }
        assert_eq!(
            refusal(|s| {
                s.inquiry_timeout_ms = 330_001;
                s.review_after_ms = 330_002;
            }),
            None
        );
        // Unresolved inquiries expire; a review that comes first would park
        // them for an operator instead.
        for review_after_ms in [600_000, 599_999] {
            let error = refusal(|s| s.review_after_ms = review_after_ms).unwrap();
            assert!(
                error.contains(&format!(
                    "review_after_ms must be greater than inquiry_timeout_ms (600000 ms), not {review_after_ms}"
                )),
                "{error}"
            );
        }
        assert_eq!(refusal(|s| s.review_after_ms = 600_001), None);
        // A provider without a schedule of its own is checked on the default.
        let error = refusal(|s| {
            s.schedules.clear();
            s.review_after_ms = 60_000;
        })
        .unwrap();
        assert!(error.contains("review_after_ms"), "{error}");
        // Minutes written without their unit.
        let error = refusal(|s| {
            s.schedules.insert(
                "smilepayz".into(),
                ScheduleSettings {
                    delays_ms: vec![5, 10, 20],
                    ..ScheduleSettings::smilepayz()
                },
            );
        })
        .unwrap();
        assert!(
            error.contains("schedules.smilepayz.delays_ms[0] must be between 100 and"),
            "{error}"
        );
    }
}
