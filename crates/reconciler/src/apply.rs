//! Applying bus events: each exactly once, a pull batch of results in one
//! database transaction.
//!
//! For the results in a batch, in one database transaction:
//! 1. lock the transactions they name (`SELECT … FOR UPDATE`, in id order,
//!    so batches running at once cannot deadlock);
//! 2. claim the events in `applied_events` (`INSERT … ON CONFLICT DO
//!    NOTHING RETURNING`). An event claimed before is a duplicate: nothing is
//!    written, but what its first application published is published again
//!    (that attempt may have crashed between commit and publish; message ids
//!    make the re-publish a no-op otherwise);
//! 3. plan each claimed event, in stream order, with [`crate::plan::plan`]
//!    against the row as the events before it left it; write every changed
//!    row with a conditional `UPDATE … WHERE status = <old>`, append the
//!    events and the provider exchanges ([`crate::write`]), commit;
//! 4. publish the updates (in order for each transaction), then (in the
//!    caller) ack.
//!
//! A batch whose database transaction fails is applied again one event at a
//! time, so a bad event costs only itself. A result whose own data
//! PostgreSQL refuses for good (`refused_for_good`) is not retried for
//! ever: its transaction is parked in `needs_review` without it
//! ([`crate::plan::plan_unwritable`]) and the event acked; should that park
//! be refused too, the event is terminated ([`ApplyError::Unwritable`]).
//! Callbacks are applied one at a
//! time: they are found by provider reference, and an unverified one only
//! requests a status check. So are operators' decisions
//! (`loket.evt.operator.decision`): the one way out of `needs_review`,
//! applied only to a transaction in it ([`crate::plan::plan_decision`]), and
//! recorded as refused for any other.

use crate::clock::DbClock;
use crate::metric;
use crate::plan::{self, EventRecord, Plan, Policy, Report, Verdict};
use crate::schedule::{millis, Schedule};
use crate::write;
use crate::Settings;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb::bus;
use loket_protocol::review::{OperatorDecision, Refusal};
use loket_protocol::{subjects, Operation, Outcome, Provider, TransactionKind, TransactionStatus};
use loket_runtime::bus as lbus;
use loket_runtime::db::HeldConnection;
use loket_runtime::telemetry::{self, TraceContext};
use loket_store::{TransactionRow, COLUMNS};
use prost::Message as _;
use serde_json::json;
use sqlx::{Connection as _, PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event was applied; `from`/`to` are the status before and after
    /// (equal when it only added information or nothing at all).
    Applied {
        transaction_id: Uuid,
        from: TransactionStatus,
        to: TransactionStatus,
        changed: bool,
    },
    /// Already applied earlier: nothing written, the update re-published.
    Duplicate { transaction_id: Option<Uuid> },
    /// An unverified callback: logged, and a status check requested.
    CheckRequested { transaction_id: Uuid },
    /// An unverified callback that could change nothing (its transaction is
    /// final and the claim agrees, or the same claim was checked moments
    /// ago): logged, no status check.
    CallbackNoted { transaction_id: Uuid },
    /// No such transaction (result) or reference (callback): logged, acked.
    UnknownTransaction,
}

/// What a callback's database transaction did, for what follows its commit.
enum CallbackWritten {
    UnknownTransaction,
    /// Its event was claimed before; `check` says its status check is asked
    /// again.
    Duplicate {
        row: TransactionRow,
        check: bool,
    },
    /// An unverified callback recorded, no status check (`why`).
    Noted {
        row: TransactionRow,
        claimed: &'static str,
        why: String,
    },
    /// An unverified callback recorded; its status check is to be asked.
    CheckNeeded {
        row: TransactionRow,
        claimed: &'static str,
    },
    /// A verified callback's plan, committed.
    Planned {
        row: TransactionRow,
        plan: Box<Plan>,
        event_id: String,
    },
}

/// What an operator decision's database transaction did.
enum DecisionWritten {
    UnknownTransaction,
    Duplicate(Uuid),
    Planned(Box<(TransactionRow, Plan)>),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event can never be applied (undecodable, unknown subject, missing
    /// id): terminate it.
    #[error("poison event: {0}")]
    Poison(String),
    /// Transient: leave for redelivery.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Transient: the change is committed; a redelivery re-publishes.
    #[error(transparent)]
    Bus(#[from] lbus::BusError),
    #[error("transaction {0} changed under its row lock")]
    Raced(Uuid),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// PostgreSQL refuses the event's data for good, and parking its
    /// transaction for review was refused too: terminate it, with an alert.
    #[error("the event can never be written ({refusal}), nor its transaction parked for review ({park})")]
    Unwritable { refusal: String, park: String },
}

/// One message taken from `LOKET_EVT`: its subject says whether it is a
/// result, a callback or an operator's decision.
pub struct Incoming<'a> {
    pub subject: &'a str,
    pub payload: &'a [u8],
    /// The context the event was sent with (its `traceparent`), if any.
    pub trace: Option<TraceContext>,
}

/// What a message on `LOKET_EVT` is, by its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Result,
    Callback,
    Decision,
}

impl EventKind {
    fn of(subject: &str) -> Option<Self> {
        if subject.ends_with(".result") {
            Some(EventKind::Result)
        } else if subject.ends_with(".callback") {
            Some(EventKind::Callback)
        } else if subject == subjects::operator_decision() {
            Some(EventKind::Decision)
        } else {
            None
        }
    }

    /// The `kind` label of [`metric::EVENTS`].
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Result => metric::event_kind::RESULT,
            EventKind::Callback => metric::event_kind::CALLBACK,
            EventKind::Decision => metric::event_kind::DECISION,
        }
    }
}

/// A decoded result event, waiting in a batch.
struct ResultItem {
    /// Its position in the batch handed to [`Reconciler::apply_events`].
    position: usize,
    event: bus::ResultEvent,
    transaction_id: Uuid,
    report: Report,
    trace: Option<TraceContext>,
}

/// What the batch's database transaction decided for one result.
enum Step {
    NoSuchTransaction,
    OtherProvider {
        row_provider: String,
    },
    Duplicate,
    Planned {
        before: Box<TransactionRow>,
        plan: Box<Plan>,
    },
}

/// The reconciler's state: the pool, the bus and the per-provider policy.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) pool: PgPool,
    pub(crate) js: jetstream::Context,
    pub(crate) policies: BTreeMap<Provider, Policy>,
    pub(crate) default_policy: Policy,
    pub(crate) settings: Settings,
    /// The longest one scheduler tick may run ([`Reconciler::tick`]).
    pub(crate) tick_limit: std::time::Duration,
    /// The time every plan and scheduler step uses: PostgreSQL's.
    pub(crate) clock: DbClock,
}

impl Reconciler {
    /// `settings` must have passed [`Settings::validate`]; invalid schedules
    /// fall back to the default one.
    pub fn new(pool: PgPool, js: jetstream::Context, settings: &Settings) -> Self {
        let grace = millis(settings.not_found_grace_ms);
        let policies = settings
            .schedules
            .iter()
            .filter_map(|(name, schedule)| {
                let provider = Provider::parse(name).ok()?;
                let schedule = Schedule::new(name, schedule).ok()?;
                Some((
                    provider,
                    Policy {
                        schedule,
                        not_found_grace: grace,
                    },
                ))
            })
            .collect();
        Reconciler {
            pool,
            js,
            policies,
            default_policy: Policy {
                schedule: Schedule::default(),
                not_found_grace: grace,
            },
            settings: settings.clone(),
            tick_limit: loket_runtime::db::HELD_WORK_LIMIT,
            clock: DbClock::default(),
        }
    }

    /// The same with another bound on a scheduler tick (tests).
    pub fn with_tick_limit(self, tick_limit: std::time::Duration) -> Self {
        Reconciler { tick_limit, ..self }
    }

    /// The same with another clock (tests: a host whose clock is skewed).
    pub fn with_clock(self, clock: DbClock) -> Self {
        Reconciler { clock, ..self }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Reads PostgreSQL's clock, so that plans take its time from now on
    /// ([`DbClock::read`]; the scheduler reads it again every tick).
    pub async fn read_clock(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        loket_runtime::db::bounded(&self.pool, self.tick_limit, async |connection| {
            self.clock.read(connection).await
        })
        .await
    }

    pub(crate) fn policy(&self, provider: &str) -> &Policy {
        Provider::parse(provider)
            .ok()
            .and_then(|p| self.policies.get(&p))
            .unwrap_or(&self.default_policy)
    }

    /// Applies one message from `LOKET_EVT`; tests call it directly.
    pub async fn apply_event(
        &self,
        subject: &str,
        payload: &[u8],
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        let incoming = Incoming {
            subject,
            payload,
            trace: Some(*trace),
        };
        self.apply_events(std::slice::from_ref(&incoming))
            .await
            .pop()
            .expect("one result per event")
    }

    /// Applies messages from `LOKET_EVT` in stream order and returns one
    /// result per message, in the same order. The consumer acks on `Ok`,
    /// terminates on [`ApplyError::Poison`] and [`ApplyError::Unwritable`],
    /// and naks otherwise.
    pub async fn apply_events(&self, events: &[Incoming<'_>]) -> Vec<Result<Applied, ApplyError>> {
        self.apply_events_on(&mut HeldConnection::new(self.pool.clone()), events)
            .await
    }

    /// [`Self::apply_events`] on a connection the caller keeps between
    /// batches (the consumer's slots do).
    pub async fn apply_events_on(
        &self,
        connection: &mut HeldConnection,
        events: &[Incoming<'_>],
    ) -> Vec<Result<Applied, ApplyError>> {
        let started = Instant::now();
        let mut results: Vec<Option<Result<Applied, ApplyError>>> =
            events.iter().map(|_| None).collect();
        let mut batch = Vec::new();
        // Callbacks and decisions, applied one at a time after the batch.
        let mut singles = Vec::new();
        for (position, incoming) in events.iter().enumerate() {
            match EventKind::of(incoming.subject) {
                Some(EventKind::Result) => match decode_result(incoming.payload) {
                    Ok((event, transaction_id, report)) => batch.push(ResultItem {
                        position,
                        event,
                        transaction_id,
                        report,
                        trace: incoming.trace,
                    }),
                    Err(error) => results[position] = Some(Err(error)),
                },
                Some(kind) => singles.push((position, kind)),
                None => {
                    results[position] = Some(Err(ApplyError::Poison(format!(
                        "unexpected subject {}",
                        incoming.subject
                    ))))
                }
            }
        }

        match self.apply_results(connection, &batch).await {
            Ok(applied) => {
                for (item, result) in batch.iter().zip(applied) {
                    results[item.position] = Some(result);
                }
            }
            Err(error) if batch.len() == 1 => {
                let result = self.park_if_unwritable(connection, &batch[0], error).await;
                results[batch[0].position] = Some(result);
            }
            Err(error) => {
                tracing::warn!(%error, events = batch.len(), "batch not applied; applying its events one at a time");
                for item in &batch {
                    let result = match self
                        .apply_results(connection, std::slice::from_ref(item))
                        .await
                    {
                        Ok(mut one) => one.pop().expect("one result per event"),
                        Err(error) => self.park_if_unwritable(connection, item, error).await,
                    };
                    results[item.position] = Some(result);
                }
            }
        }

        for (position, kind) in singles {
            let incoming = &events[position];
            let (span, trace) = event_span(None, incoming.trace);
            let result = if kind == EventKind::Decision {
                self.apply_decision(connection, incoming.payload, &trace)
                    .instrument(span)
                    .await
            } else {
                match bus::CallbackEvent::decode(incoming.payload) {
                    Ok(event) => {
                        self.apply_callback(connection, event, &trace)
                            .instrument(span)
                            .await
                    }
                    Err(e) => Err(ApplyError::Poison(format!("callback event: {e}"))),
                }
            };
            results[position] = Some(result);
        }

        metrics::histogram!(metric::APPLY_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(metric::BATCH_EVENTS).record(events.len() as f64);
        events
            .iter()
            .zip(results)
            .map(|(incoming, result)| {
                let result = result.expect("every event has a result");
                if let Ok(applied) = &result {
                    let kind = EventKind::of(incoming.subject).map_or("unknown", EventKind::as_str);
                    metrics::counter!(metric::EVENTS, "kind" => kind, "verdict" => verdict(applied))
                        .increment(1);
                }
                result
            })
            .collect()
    }

    /// Applies results in one database transaction and then publishes what
    /// they changed. `Err` means nothing was written.
    async fn apply_results(
        &self,
        connection: &mut HeldConnection,
        items: &[ResultItem],
    ) -> Result<Vec<Result<Applied, ApplyError>>, ApplyError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let steps = connection
            .with(async |held| self.write_results(held, items).await)
            .await?;
        Ok(self.after_commit_all(items, steps).await)
    }

    /// The database transaction of [`Self::apply_results`]: what each result
    /// does, committed.
    async fn write_results(
        &self,
        connection: &mut PgConnection,
        items: &[ResultItem],
    ) -> Result<Vec<Step>, ApplyError> {
        let mut tx = connection.begin().await?;
        let ids: Vec<Uuid> = items.iter().map(|item| item.transaction_id).collect();
        let mut rows: HashMap<Uuid, TransactionRow> = write::lock_by_ids(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let mut steps: Vec<Option<Step>> = items
            .iter()
            .map(|item| match rows.get(&item.transaction_id) {
                None => Some(Step::NoSuchTransaction),
                Some(row)
                    if !item.event.provider.is_empty()
                        && Provider::parse(&item.event.provider).ok() != row.provider() =>
                {
                    Some(Step::OtherProvider {
                        row_provider: row.provider.clone(),
                    })
                }
                Some(_) => None,
            })
            .collect();
        let (event_ids, claim_ids): (Vec<&str>, Vec<Option<Uuid>>) = items
            .iter()
            .zip(&steps)
            .filter(|(_, step)| step.is_none())
            .map(|(item, _)| (item.event.event_id.as_str(), Some(item.transaction_id)))
            .unzip();
        let mut claimed = write::claim(&mut tx, &event_ids, &claim_ids).await?;

        let now = self.clock.now();
        // The status each changed row has in the database, which the update
        // must still find.
        let mut stored_status: BTreeMap<Uuid, String> = BTreeMap::new();
        // Planned by transaction id, each transaction's events in the order
        // they came: a "no record" failure takes its send journal row
        // (`plan_in`) in the order the connectors' journal batches take
        // theirs, so the two cannot deadlock.
        let mut by_transaction: Vec<usize> = (0..items.len()).collect();
        by_transaction.sort_by_key(|&index| items[index].transaction_id);
        for index in by_transaction {
            let (item, step) = (&items[index], &mut steps[index]);
            if step.is_some() {
                continue;
            }
            if !claimed.remove(item.event.event_id.as_str()) {
                *step = Some(Step::Duplicate);
                continue;
            }
            let before = rows[&item.transaction_id].clone();
            let with_claim;
            let settled = matches!(
                before.status(),
                Some(TransactionStatus::Success | TransactionStatus::Failed)
            );
            let report = match plan::callback_of_check(&item.report.event_id) {
                Some(callback) if settled => {
                    let mut report = item.report.clone();
                    report.claimed_by_callback =
                        write::callback_claim(&mut tx, before.id, callback).await?;
                    with_claim = report;
                    &with_claim
                }
                _ => &item.report,
            };
            let plan =
                plan_in(&mut tx, &before, report, now, self.policy(&before.provider)).await?;
            if plan.changed {
                stored_status
                    .entry(before.id)
                    .or_insert_with(|| before.status.clone());
                rows.insert(before.id, plan.next.clone());
            }
            *step = Some(Step::Planned {
                before: Box::new(before),
                plan: Box::new(plan),
            });
        }
        let steps: Vec<Step> = steps
            .into_iter()
            .map(|step| step.expect("every result has a step"))
            .collect();

        let writes: Vec<(&str, &TransactionRow)> = stored_status
            .iter()
            .map(|(id, status)| (status.as_str(), &rows[id]))
            .collect();
        let mut events: Vec<(Uuid, &EventRecord)> = Vec::new();
        let mut exchanges: Vec<(Uuid, &bus::Exchange)> = Vec::new();
        for (item, step) in items.iter().zip(&steps) {
            if let Step::Planned { plan, .. } = step {
                events.push((item.transaction_id, &plan.event));
                exchanges.extend(
                    item.event
                        .exchanges
                        .iter()
                        .map(|exchange| (item.transaction_id, exchange)),
                );
            }
        }
        write::write(&mut tx, &writes, &events, &exchanges).await?;
        tx.commit().await?;
        Ok(steps)
    }

    /// What follows `error`, the failure of `item` applied on its own: the
    /// error itself (the event is retried) unless PostgreSQL refused the
    /// event's data for good; then the transaction is parked in
    /// `needs_review` in a write of its own, without that data, and the
    /// event is claimed, so it is acked. A park refused for good too is
    /// [`ApplyError::Unwritable`] (the event is terminated); one failing
    /// otherwise (the database gone meanwhile) leaves the event for
    /// redelivery, which tries again.
    async fn park_if_unwritable(
        &self,
        connection: &mut HeldConnection,
        item: &ResultItem,
        error: ApplyError,
    ) -> Result<Applied, ApplyError> {
        let Some(refusal) = refused_for_good(&error) else {
            return Err(error);
        };
        let (span, trace) = event_span(Some(item.transaction_id), item.trace);
        async {
            tracing::warn!(%error, event_id = %item.event.event_id, "PostgreSQL refuses the event's data for good; parking its transaction");
            let parked = connection
                .with(async |held| self.write_unwritable(held, item, &refusal).await)
                .await;
            match parked {
                Ok(step) => self.finish_result(item, step, &trace).await,
                Err(park) => match refused_for_good(&park) {
                    Some(_) => Err(ApplyError::Unwritable {
                        refusal,
                        park: park.to_string(),
                    }),
                    None => Err(park),
                },
            }
        }
        .instrument(span)
        .await
    }

    /// The database transaction of [`Self::park_if_unwritable`]: the row
    /// locked, the event claimed, the park written (none of the event's
    /// data), committed.
    async fn write_unwritable(
        &self,
        connection: &mut PgConnection,
        item: &ResultItem,
        refusal: &str,
    ) -> Result<Step, ApplyError> {
        let mut tx = connection.begin().await?;
        let Some(row) = write::lock_by_ids(&mut tx, &[item.transaction_id])
            .await?
            .pop()
        else {
            return Ok(Step::NoSuchTransaction);
        };
        let claimed =
            write::claim(&mut tx, &[item.event.event_id.as_str()], &[Some(row.id)]).await?;
        if claimed.is_empty() {
            return Ok(Step::Duplicate);
        }
        let plan = plan::plan_unwritable(&row, &item.report, refusal, self.clock.now())?;
        write_plan(&mut tx, &row, &plan).await?;
        tx.commit().await?;
        Ok(Step::Planned {
            before: Box::new(row),
            plan: Box::new(plan),
        })
    }

    /// Logs and publishes what a committed batch did: the updates of one
    /// transaction in order, different transactions' at once.
    async fn after_commit_all(
        &self,
        items: &[ResultItem],
        steps: Vec<Step>,
    ) -> Vec<Result<Applied, ApplyError>> {
        let mut by_transaction: BTreeMap<Uuid, Vec<(usize, &ResultItem, Step)>> = BTreeMap::new();
        for (index, (item, step)) in items.iter().zip(steps).enumerate() {
            by_transaction
                .entry(item.transaction_id)
                .or_default()
                .push((index, item, step));
        }
        let groups = by_transaction.into_values().map(|group| async move {
            let mut done = Vec::with_capacity(group.len());
            for (index, item, step) in group {
                let (span, trace) = event_span(Some(item.transaction_id), item.trace);
                let result = self
                    .finish_result(item, step, &trace)
                    .instrument(span)
                    .await;
                done.push((index, result));
            }
            done
        });
        let mut results: Vec<Option<Result<Applied, ApplyError>>> =
            items.iter().map(|_| None).collect();
        for (index, result) in futures::future::join_all(groups)
            .await
            .into_iter()
            .flatten()
        {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|result| result.expect("every result finished"))
            .collect()
    }

    async fn finish_result(
        &self,
        item: &ResultItem,
        step: Step,
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        let id = item.transaction_id;
        match step {
            Step::NoSuchTransaction => {
                metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => metric::event_kind::RESULT).increment(1);
                tracing::warn!(transaction_id = %id, event_id = %item.event.event_id, "result for an unknown transaction; dropped");
                Ok(Applied::UnknownTransaction)
            }
            Step::OtherProvider { row_provider } => {
                metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => metric::event_kind::RESULT).increment(1);
                tracing::warn!(
                    transaction_id = %id,
                    event_provider = %item.event.provider,
                    provider = %row_provider,
                    "result from a provider other than the transaction's; dropped"
                );
                Ok(Applied::UnknownTransaction)
            }
            Step::Duplicate => {
                self.duplicate(Some(id), &item.event.event_id, None, trace)
                    .await
            }
            Step::Planned { before, plan } => {
                self.after_commit(&before, &plan, &item.report.event_id, trace)
                    .await
            }
        }
    }

    async fn apply_callback(
        &self,
        connection: &mut HeldConnection,
        event: bus::CallbackEvent,
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        if event.event_id.is_empty() {
            return Err(ApplyError::Poison("callback event without event_id".into()));
        }
        let provider =
            Provider::parse(&event.provider).map_err(|e| ApplyError::Poison(e.to_string()))?;
        let report = if event.verified {
            Some(
                Report::from_verified_callback(&event)
                    .map_err(|e| ApplyError::Poison(format!("callback event: {e}")))?,
            )
        } else {
            None
        };

        let written = connection
            .with(async |held| self.write_callback(held, provider, &event, report).await)
            .await?;
        match written {
            CallbackWritten::UnknownTransaction => Ok(Applied::UnknownTransaction),
            CallbackWritten::Duplicate { row, check } => {
                self.duplicate(Some(row.id), &event.event_id, check.then_some(&row), trace)
                    .await
            }
            CallbackWritten::Noted { row, claimed, why } => {
                tracing::info!(transaction_id = %row.id, status = %row.status, claimed, why, "unverified callback: recorded, no status check");
                Ok(Applied::CallbackNoted {
                    transaction_id: row.id,
                })
            }
            CallbackWritten::CheckNeeded { row, claimed } => {
                tracing::info!(transaction_id = %row.id, status = %row.status, claimed, "unverified callback: status check requested");
                self.publish_callback_check(&row, &event.event_id, trace)
                    .await?;
                Ok(Applied::CheckRequested {
                    transaction_id: row.id,
                })
            }
            CallbackWritten::Planned {
                row,
                plan,
                event_id,
            } => self.after_commit(&row, &plan, &event_id, trace).await,
        }
    }

    /// The database transaction of [`Self::apply_callback`].
    async fn write_callback(
        &self,
        connection: &mut PgConnection,
        provider: Provider,
        event: &bus::CallbackEvent,
        report: Option<Report>,
    ) -> Result<CallbackWritten, ApplyError> {
        let mut tx = connection.begin().await?;
        let Some(row) = lock_by_reference(&mut tx, provider, &event.provider_reference).await?
        else {
            tx.rollback().await?;
            metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => metric::event_kind::CALLBACK)
                .increment(1);
            tracing::warn!(
                %provider,
                provider_reference = %event.provider_reference,
                event_id = %event.event_id,
                source_ip = %event.source_ip,
                "callback for an unknown reference; dropped"
            );
            return Ok(CallbackWritten::UnknownTransaction);
        };
        let claimed = write::claim(&mut tx, &[event.event_id.as_str()], &[Some(row.id)]).await?;
        let claim = loket_protocol::conversions::outcome_from_i32(event.claimed_outcome).ok();
        if claimed.is_empty() {
            tx.rollback().await?;
            // Its check may not have left before a crash, so it is asked
            // again, unless nothing could come of it.
            let check =
                !event.verified && plan::callback_check_skipped(&row, claim, false).is_none();
            return Ok(CallbackWritten::Duplicate { row, check });
        }

        let Some(report) = report else {
            // Money-safety rule 5: an unsigned callback only asks the
            // provider; it never sets the state, final or not.
            let status = row.status();
            let claimed = claim.map_or("unspecified", Outcome::as_str);
            // The window is asked about only when nothing else rules the
            // check out (a final transaction the claim agrees with).
            let mut skipped = plan::callback_check_skipped(&row, claim, false);
            if skipped.is_none()
                && write::same_claim_check_unanswered_within(
                    &mut tx,
                    row.id,
                    claimed,
                    plan::CALLBACK_RECHECK_SECS,
                )
                .await?
            {
                skipped = plan::callback_check_skipped(&row, claim, true);
            }
            let record = EventRecord {
                source: "callback",
                from_status: status,
                to_status: status,
                provider_code: (!event.provider_code.is_empty())
                    .then(|| event.provider_code.clone()),
                detail: json!({
                    "event_id": event.event_id,
                    "verified": false,
                    "claimed_outcome": claimed,
                    "provider_trace": event.provider_trace,
                    "serial_number": event.serial_number,
                    "source_ip": event.source_ip,
                    "received_at": event.received_at.as_ref().and_then(from_timestamp).map(|t| t.to_rfc3339()),
                    "raw": event.raw,
                    "action": if skipped.is_some() { "none" } else { "status_check" },
                    "no_check_because": skipped,
                }),
            };
            write::write(&mut tx, &[], &[(row.id, &record)], &[]).await?;
            tx.commit().await?;
            return Ok(match skipped {
                Some(why) => CallbackWritten::Noted { row, claimed, why },
                None => CallbackWritten::CheckNeeded { row, claimed },
            });
        };

        let plan = plan_in(
            &mut tx,
            &row,
            &report,
            self.clock.now(),
            self.policy(&row.provider),
        )
        .await?;
        write_plan(&mut tx, &row, &plan).await?;
        tx.commit().await?;
        Ok(CallbackWritten::Planned {
            row,
            plan: Box::new(plan),
            event_id: report.event_id,
        })
    }

    /// Applies an operator's decision on a transaction in `needs_review`:
    /// checked (a missing or invalid field is poison), the row locked, the
    /// event claimed (a duplicate changes nothing), then planned by
    /// [`plan::plan_decision`]: settled, or refused with the reason in the
    /// event log. Published and acked like every other transition.
    async fn apply_decision(
        &self,
        connection: &mut HeldConnection,
        payload: &[u8],
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        let poison =
            |e: &dyn std::fmt::Display| ApplyError::Poison(format!("operator decision: {e}"));
        let message = bus::OperatorDecision::decode(payload).map_err(|e| poison(&e))?;
        let decision = OperatorDecision::try_from(&message).map_err(|e| poison(&e))?;
        let event_id = decision.event_id.to_string();

        let written = connection
            .with(async |held| write_decision(held, &decision, &event_id, &self.clock).await)
            .await?;
        let (row, plan) = match written {
            DecisionWritten::UnknownTransaction => return Ok(Applied::UnknownTransaction),
            DecisionWritten::Duplicate(id) => {
                return self.duplicate(Some(id), &event_id, None, trace).await
            }
            DecisionWritten::Planned(planned) => *planned,
        };
        metrics::counter!(metric::OPERATOR_DECISIONS, "verdict" => plan.verdict.as_str())
            .increment(1);
        if plan.verdict == Verdict::Refused {
            tracing::warn!(
                transaction_id = %row.id,
                operator = %decision.operator,
                status = %plan.from,
                decision = %decision.status,
                refused = plan.event.detail["refused"].as_str().unwrap_or_default(),
                "operator decision refused; nothing changed"
            );
        } else {
            tracing::info!(
                transaction_id = %row.id,
                operator = %decision.operator,
                from = %plan.from,
                to = %plan.to,
                "operator decision applied"
            );
        }
        self.after_commit(&row, &plan, &event_id, trace).await
    }

    /// Logs, counts and publishes what a committed plan did.
    async fn after_commit(
        &self,
        row: &TransactionRow,
        plan: &Plan,
        event_id: &str,
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        if plan.from != plan.to {
            metrics::counter!(metric::TRANSITIONS, "from" => plan.from.as_str(), "to" => plan.to.as_str()).increment(1);
            tracing::info!(transaction_id = %row.id, from = %plan.from, to = %plan.to, verdict = plan.verdict.as_str(), "transition");
        }
        if let Some(mismatch) = plan.amount_mismatch {
            metrics::counter!(metric::AMOUNT_MISMATCHES, "provider" => row.provider.clone())
                .increment(1);
            tracing::warn!(
                transaction_id = %row.id,
                expected_minor = mismatch.expected,
                reported_minor = ?mismatch.reported,
                "provider reported a different amount than ours, or one that could not be read (amount_mismatch flagged)"
            );
        }
        match (plan.verdict, &plan.alert) {
            (Verdict::Conflict, Some(reason)) => {
                metrics::counter!(metric::CONFLICTS, "provider" => row.provider.clone())
                    .increment(1);
                tracing::error!(transaction_id = %row.id, %reason, "ALERT conflicting reports; transaction parked in needs_review");
            }
            (Verdict::Unwritable, Some(reason)) if plan.from == plan.to => {
                metrics::counter!(metric::REPORTS_DROPPED, "status" => plan.to.as_str())
                    .increment(1);
                tracing::error!(transaction_id = %row.id, status = %plan.to, %reason, "ALERT a report's data could not be written; the transaction keeps its status");
            }
            (_, Some(reason)) => {
                metrics::counter!(metric::NEEDS_REVIEW, "reason" => plan.verdict.as_str())
                    .increment(1);
                tracing::error!(transaction_id = %row.id, %reason, "ALERT transaction parked in needs_review");
            }
            _ => {}
        }
        if plan.changed {
            self.publish_update(
                &plan.next,
                &format!("upd:{}:{}", row.id, event_id),
                trace,
                1,
            )
            .await?;
        }
        Ok(Applied::Applied {
            transaction_id: row.id,
            from: plan.from,
            to: plan.to,
            changed: plan.changed,
        })
    }

    async fn duplicate(
        &self,
        id: Option<Uuid>,
        event_id: &str,
        check_for: Option<&TransactionRow>,
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        metrics::counter!(metric::DUPLICATES).increment(1);
        tracing::info!(event_id, transaction_id = ?id, "event already applied; re-publishing its effects");
        if let Some(row) = check_for {
            self.publish_callback_check(row, event_id, trace).await?;
        }
        if let Some(id) = id {
            let current = loket_runtime::db::bounded(
                &self.pool,
                loket_runtime::db::HELD_WORK_LIMIT,
                async |connection| loket_store::get(connection, id).await,
            )
            .await?;
            if let Some(row) = current {
                self.publish_update(&row, &format!("upd:{id}:{event_id}"), trace, 1)
                    .await?;
            }
        }
        Ok(Applied::Duplicate { transaction_id: id })
    }

    async fn publish_callback_check(
        &self,
        row: &TransactionRow,
        event_id: &str,
        trace: &TraceContext,
    ) -> Result<(), ApplyError> {
        let msg_id = plan::callback_check_id(row.id, event_id);
        self.publish_check(row, &msg_id, trace).await?;
        metrics::counter!(metric::STATUS_CHECKS, "reason" => metric::check_reason::CALLBACK)
            .increment(1);
        Ok(())
    }

    /// Publishes a status-check command for `row` with `msg_id`.
    pub(crate) async fn publish_check(
        &self,
        row: &TransactionRow,
        msg_id: &str,
        trace: &TraceContext,
    ) -> Result<(), lbus::BusError> {
        let provider = Provider::parse(&row.provider).map_err(|e| lbus::BusError::Publish {
            subject: "loket.cmd".into(),
            reason: e.to_string(),
        })?;
        let subject = subjects::command(provider, Operation::StatusCheck);
        let headers = lbus::headers(msg_id, trace, &row.id.to_string());
        lbus::publish_durable(
            &self.js,
            subject,
            headers,
            row.status_check().encode_to_vec(),
        )
        .await
    }

    /// Publishes the row as the client sees it on its update subject.
    pub(crate) async fn publish_update(
        &self,
        row: &TransactionRow,
        msg_id: &str,
        trace: &TraceContext,
        attempts: u32,
    ) -> Result<(), lbus::BusError> {
        let subject = subjects::update(&row.client_id.to_string());
        let headers = lbus::headers(msg_id, trace, &row.id.to_string());
        let payload = row.to_pb().encode_to_vec();
        let result =
            lbus::publish_durable_retrying(&self.js, subject, headers, payload, attempts).await;
        if result.is_err() {
            metrics::counter!(metric::UPDATE_PUBLISH_ERRORS).increment(1);
        }
        result
    }
}

/// A result event's payload, its transaction and the report it makes.
fn decode_result(payload: &[u8]) -> Result<(bus::ResultEvent, Uuid, Report), ApplyError> {
    let event = bus::ResultEvent::decode(payload)
        .map_err(|e| ApplyError::Poison(format!("result event: {e}")))?;
    if event.event_id.is_empty() {
        return Err(ApplyError::Poison("result event without event_id".into()));
    }
    let id = Uuid::parse_str(&event.transaction_id).map_err(|_| {
        ApplyError::Poison(format!(
            "result event with bad transaction_id {:?}",
            event.transaction_id
        ))
    })?;
    let report = Report::from_result(&event)
        .map_err(|e| ApplyError::Poison(format!("result event: {e}")))?;
    Ok((event, id, report))
}

/// The span an event's log lines carry, so one grep for the trace id
/// follows it, joined to the trace the event was `received` in; with it the
/// context what the event causes is published in.
fn event_span(
    transaction_id: Option<Uuid>,
    received: Option<TraceContext>,
) -> (tracing::Span, TraceContext) {
    let span = match transaction_id {
        Some(id) => {
            tracing::info_span!("event", transaction_id = %id, trace_id = tracing::field::Empty)
        }
        None => tracing::info_span!("event", trace_id = tracing::field::Empty),
    };
    let trace = telemetry::join(&span, received);
    (span, trace)
}

/// Why PostgreSQL refuses an event's data for good, when `error` says it
/// does: the data breaks an integrity constraint (SQLSTATE class 23, such as
/// the check `transactions_provider_amount_not_negative` or a unique index)
/// or is a value its column cannot hold (class 22, data exception, such as
/// a timestamp out of range). The same event meets the same refusal on
/// every delivery, so retrying it only repeats the failure every second.
/// Every other error may pass on a retry and gives `None`: a lost
/// connection, a serialization failure (40001), a deadlock (40P01), a lock
/// or statement timeout (55P03, 57014), a row that moved under its lock.
/// The reason names the SQLSTATE and the constraint, never the refused
/// value.
pub(crate) fn refused_for_good(error: &ApplyError) -> Option<String> {
    let ApplyError::Db(sqlx::Error::Database(database)) = error else {
        return None;
    };
    let code = database.code()?;
    let class = match code.get(..2)? {
        "22" => "data exception",
        "23" => "integrity constraint violation",
        _ => return None,
    };
    Some(match database.constraint() {
        Some(constraint) => format!("{class} {code}, constraint {constraint}"),
        None => format!("{class} {code}"),
    })
}

/// The `verdict` label of [`metric::EVENTS`].
fn verdict(applied: &Applied) -> &'static str {
    match applied {
        Applied::Applied { changed: true, .. } => metric::event_verdict::CHANGED,
        Applied::Applied { .. } => metric::event_verdict::UNCHANGED,
        Applied::Duplicate { .. } => metric::event_verdict::DUPLICATE,
        Applied::CheckRequested { .. } => metric::event_verdict::CHECK_REQUESTED,
        Applied::CallbackNoted { .. } => metric::event_verdict::CALLBACK_NOTED,
        Applied::UnknownTransaction => metric::event_verdict::UNKNOWN_TRANSACTION,
    }
}

/// [`plan::plan`], planned again with what only the database can say,
/// asked in `tx` only when the plan depends on it:
/// - a "no record" failure is written only with the send journal closed to
///   the transaction; when a send was recorded within the grace, the report
///   proves nothing (`Report::sent_within_grace`);
/// - a report that a QR payment held as success was cancelled is no
///   contradiction when a cancel loket sent for it has not failed
///   (`Report::cancelled_by_us`).
async fn plan_in(
    tx: &mut PgConnection,
    row: &TransactionRow,
    report: &Report,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Plan, ApplyError> {
    let plan = plan::plan(row, report, now, policy)?;
    let known = if plan.verdict == Verdict::NotFoundFailed
        && !write::close_sends_for_no_record(tx, row.id, policy.not_found_grace).await?
    {
        Report {
            sent_within_grace: true,
            ..report.clone()
        }
    } else if plan.verdict == Verdict::Conflict && plan::may_report_our_cancel(row, report) {
        match write::live_cancel_of(tx, row.id).await? {
            Some(cancel) => Report {
                cancelled_by_us: Some(cancel),
                ..report.clone()
            },
            None => return Ok(plan),
        }
    } else {
        return Ok(plan);
    };
    Ok(plan::plan(row, &known, now, policy)?)
}

/// Writes what a plan for one locked row changed, and its event.
async fn write_plan(
    conn: &mut PgConnection,
    row: &TransactionRow,
    plan: &Plan,
) -> Result<(), ApplyError> {
    let changed = [(row.status.as_str(), &plan.next)];
    let writes: &[_] = if plan.changed { &changed } else { &[] };
    write::write(conn, writes, &[(row.id, &plan.event)], &[]).await
}

/// The database transaction of [`Reconciler::apply_decision`].
async fn write_decision(
    connection: &mut PgConnection,
    decision: &OperatorDecision,
    event_id: &str,
    clock: &DbClock,
) -> Result<DecisionWritten, ApplyError> {
    let mut tx = connection.begin().await?;
    let Some(row) = write::lock_by_ids(&mut tx, &[decision.transaction_id])
        .await?
        .pop()
    else {
        tx.rollback().await?;
        metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => metric::event_kind::DECISION)
            .increment(1);
        tracing::warn!(
            transaction_id = %decision.transaction_id,
            event_id,
            operator = %decision.operator,
            "operator decision for an unknown transaction; dropped"
        );
        return Ok(DecisionWritten::UnknownTransaction);
    };
    let claimed = write::claim(&mut tx, &[event_id], &[Some(row.id)]).await?;
    if claimed.is_empty() {
        tx.rollback().await?;
        return Ok(DecisionWritten::Duplicate(row.id));
    }
    let held = inquiry_held_by(&mut tx, &row, decision).await?;
    // Under the row's lock: every event is written holding it.
    let newest_event = loket_store::newest_event(&mut *tx, row.id, decision.seen_event).await?;
    let plan = plan::plan_decision(&row, decision, newest_event, held, clock.now())?;
    write_plan(&mut tx, &row, &plan).await?;
    tx.commit().await?;
    Ok(DecisionWritten::Planned(Box::new((row, plan))))
}

/// Why a decision settling the bill payment `row` as success is refused:
/// another payment of its inquiry is live, and the schema holds one live
/// payment per inquiry (`one_live_payment_per_inquiry`, migration 0008; a
/// payment parked from `failed` stays out of it, so the client may have paid
/// again meanwhile). Without this the update would fail on that index on
/// every redelivery.
async fn inquiry_held_by(
    conn: &mut PgConnection,
    row: &TransactionRow,
    decision: &OperatorDecision,
) -> Result<Option<Refusal>, sqlx::Error> {
    let Some(inquiry) = row.inquiry_id.filter(|_| {
        decision.status == TransactionStatus::Success
            && row.kind() == Some(TransactionKind::BillPayment)
    }) else {
        return Ok(None);
    };
    let live: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM transactions WHERE inquiry_id = $1 AND id <> $2 \
           AND kind = 'bill_payment' AND status <> 'failed' \
           AND NOT (status = 'needs_review' AND reviewed_from IS NOT DISTINCT FROM 'failed') \
         LIMIT 1",
    )
    .bind(inquiry)
    .bind(row.id)
    .fetch_optional(conn)
    .await?;
    Ok(live.map(|(payment, status)| Refusal::InquiryHeldBy { payment, status }))
}

async fn lock_by_reference(
    conn: &mut PgConnection,
    provider: Provider,
    reference: &str,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE provider_reference = $1 AND provider = $2 FOR UPDATE"
    ))
    .bind(reference)
    .bind(provider.as_str())
    .fetch_optional(conn)
    .await
    .inspect_err(|error| {
        loket_runtime::db::warn_on_lock_timeout(
            error,
            "lock a transaction by provider reference",
            &(provider.as_str(), reference),
        )
    })
}
