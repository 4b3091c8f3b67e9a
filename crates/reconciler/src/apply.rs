//! Applying one bus event: exactly once, in one database transaction.
//!
//! 1. `INSERT INTO applied_events … ON CONFLICT DO NOTHING`: a duplicate
//!    commits nothing, but re-publishes what the first application published
//!    (the update, and for an unverified callback its status check) — the
//!    first attempt may have crashed between commit and publish; message ids
//!    make the re-publish a no-op otherwise.
//! 2. `SELECT … FOR UPDATE` the transaction, [`crate::plan::plan`], write the
//!    row with a conditional `UPDATE … WHERE status = <old>`, append the
//!    event and the provider exchanges, commit.
//! 3. Publish the update, then (in the caller) ack.

use crate::metric;
use crate::plan::{self, EventRecord, Plan, Policy, Report, Verdict};
use crate::schedule::{millis, Schedule};
use crate::Settings;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb::bus;
use loket_protocol::{subjects, Operation, Provider, TransactionStatus};
use loket_runtime::bus as lbus;
use loket_runtime::telemetry::TraceContext;
use loket_store::{TransactionRow, COLUMNS};
use prost::Message as _;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::time::Instant;
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
    /// No such transaction (result) or reference (callback): logged, acked.
    UnknownTransaction,
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
}

/// The reconciler's state: the pool, the bus and the per-provider policy.
#[derive(Clone)]
pub struct Reconciler {
    pub(crate) pool: PgPool,
    pub(crate) js: jetstream::Context,
    pub(crate) policies: BTreeMap<Provider, Policy>,
    pub(crate) default_policy: Policy,
    pub(crate) settings: Settings,
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
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn policy(&self, provider: &str) -> &Policy {
        Provider::parse(provider)
            .ok()
            .and_then(|p| self.policies.get(&p))
            .unwrap_or(&self.default_policy)
    }

    /// Applies one message from `LOKET_EVT` (its subject says whether it is a
    /// result or a callback). The consumer acks on `Ok`, terminates on
    /// [`ApplyError::Poison`] and naks otherwise; tests call it directly.
    pub async fn apply_event(
        &self,
        subject: &str,
        payload: &[u8],
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        let (kind, result) = if subject.ends_with(".result") {
            let event = bus::ResultEvent::decode(payload)
                .map_err(|e| ApplyError::Poison(format!("result event: {e}")))?;
            ("result", self.apply_result(event, trace).await)
        } else if subject.ends_with(".callback") {
            let event = bus::CallbackEvent::decode(payload)
                .map_err(|e| ApplyError::Poison(format!("callback event: {e}")))?;
            ("callback", self.apply_callback(event, trace).await)
        } else {
            return Err(ApplyError::Poison(format!("unexpected subject {subject}")));
        };
        metrics::histogram!(metric::APPLY_SECONDS).record(started.elapsed().as_secs_f64());
        if let Ok(applied) = &result {
            let verdict = match applied {
                Applied::Applied { changed: true, .. } => "changed",
                Applied::Applied { .. } => "unchanged",
                Applied::Duplicate { .. } => "duplicate",
                Applied::CheckRequested { .. } => "check_requested",
                Applied::UnknownTransaction => "unknown_transaction",
            };
            metrics::counter!(metric::EVENTS, "kind" => kind, "verdict" => verdict).increment(1);
        }
        result
    }

    async fn apply_result(
        &self,
        event: bus::ResultEvent,
        trace: &TraceContext,
    ) -> Result<Applied, ApplyError> {
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

        let mut tx = self.pool.begin().await?;
        if !claim(&mut tx, &event.event_id, Some(id)).await? {
            tx.rollback().await?;
            return self.duplicate(Some(id), &event.event_id, None, trace).await;
        }
        let Some(row) = lock_by_id(&mut tx, id).await? else {
            tx.rollback().await?;
            metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => "result").increment(1);
            tracing::warn!(transaction_id = %id, event_id = %event.event_id, "result for an unknown transaction; dropped");
            return Ok(Applied::UnknownTransaction);
        };
        if !event.provider.is_empty() && Provider::parse(&event.provider).ok() != row.provider() {
            tx.rollback().await?;
            metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => "result").increment(1);
            tracing::warn!(
                transaction_id = %id,
                event_provider = %event.provider,
                provider = %row.provider,
                "result from a provider other than the transaction's; dropped"
            );
            return Ok(Applied::UnknownTransaction);
        }
        let plan = plan::plan(&row, &report, Utc::now(), self.policy(&row.provider))?;
        write_plan(&mut tx, &row, &plan).await?;
        insert_exchanges(&mut tx, id, &event.exchanges).await?;
        tx.commit().await?;
        self.after_commit(&row, &plan, &report.event_id, trace)
            .await
    }

    async fn apply_callback(
        &self,
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

        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_by_reference(&mut tx, provider, &event.provider_reference).await?
        else {
            tx.rollback().await?;
            metrics::counter!(metric::UNKNOWN_TRANSACTIONS, "kind" => "callback").increment(1);
            tracing::warn!(
                %provider,
                provider_reference = %event.provider_reference,
                event_id = %event.event_id,
                source_ip = %event.source_ip,
                "callback for an unknown reference; dropped"
            );
            return Ok(Applied::UnknownTransaction);
        };
        if !claim(&mut tx, &event.event_id, Some(row.id)).await? {
            tx.rollback().await?;
            let check = (!event.verified).then_some(&row);
            return self
                .duplicate(Some(row.id), &event.event_id, check, trace)
                .await;
        }

        let Some(report) = report else {
            // Money-safety rule 5: an unsigned callback only asks the
            // provider; it never sets the state, final or not.
            let status = row.status();
            let claimed = loket_protocol::conversions::outcome_from_i32(event.claimed_outcome)
                .map(|o| o.as_str())
                .unwrap_or("unspecified");
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
                    "action": "status_check",
                }),
            };
            insert_event(&mut tx, row.id, &record).await?;
            tx.commit().await?;
            tracing::info!(transaction_id = %row.id, status = %row.status, claimed, "unverified callback: status check requested");
            self.publish_callback_check(&row, &event.event_id, trace)
                .await?;
            return Ok(Applied::CheckRequested {
                transaction_id: row.id,
            });
        };

        let plan = plan::plan(&row, &report, Utc::now(), self.policy(&row.provider))?;
        write_plan(&mut tx, &row, &plan).await?;
        tx.commit().await?;
        self.after_commit(&row, &plan, &report.event_id, trace)
            .await
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
                reported_minor = mismatch.reported,
                "provider reported a different amount than ours (amount_mismatch flagged)"
            );
        }
        match (plan.verdict, &plan.alert) {
            (Verdict::Conflict, Some(reason)) => {
                metrics::counter!(metric::CONFLICTS, "provider" => row.provider.clone())
                    .increment(1);
                tracing::error!(transaction_id = %row.id, %reason, "ALERT conflicting final reports; transaction parked in needs_review");
            }
            (_, Some(reason)) => {
                metrics::counter!(metric::NEEDS_REVIEW, "reason" => plan.verdict.as_str())
                    .increment(1);
                tracing::error!(transaction_id = %row.id, %reason, "ALERT transaction parked in needs_review");
            }
            _ => {}
        }
        if plan.changed {
            self.publish_update(&plan.next, &format!("upd:{}:{}", row.id, event_id), trace)
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
            if let Some(row) = loket_store::get(&self.pool, id).await? {
                self.publish_update(&row, &format!("upd:{id}:{event_id}"), trace)
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
        let msg_id = format!("chk:{}:cb:{event_id}", row.id);
        self.publish_check(row, &msg_id, trace).await?;
        metrics::counter!(metric::STATUS_CHECKS, "reason" => "callback").increment(1);
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
        let headers = lbus::headers(msg_id, &trace.child(), &row.id.to_string());
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
    ) -> Result<(), lbus::BusError> {
        let subject = subjects::update(&row.client_id.to_string(), &row.id.to_string());
        let headers = lbus::headers(msg_id, &trace.child(), &row.id.to_string());
        let result =
            lbus::publish_durable(&self.js, subject, headers, row.to_pb().encode_to_vec()).await;
        if result.is_err() {
            metrics::counter!(metric::UPDATE_PUBLISH_ERRORS).increment(1);
        }
        result
    }
}

/// Records `event_id` as applied; false when it already was.
async fn claim(
    conn: &mut PgConnection,
    event_id: &str,
    transaction_id: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("INSERT INTO applied_events (event_id, transaction_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(event_id)
        .bind(transaction_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn lock_by_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
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
}

/// Writes a plan: the row (only if it changed, and only if its status is
/// still the one planned from) and the event.
async fn write_plan(
    conn: &mut PgConnection,
    row: &TransactionRow,
    plan: &Plan,
) -> Result<(), ApplyError> {
    if plan.changed {
        write_row(conn, &row.status, &plan.next).await?;
    }
    insert_event(conn, row.id, &plan.event).await?;
    Ok(())
}

/// The conditional update of every column the reconciler owns.
pub(crate) async fn write_row(
    conn: &mut PgConnection,
    expected_status: &str,
    next: &TransactionRow,
) -> Result<(), ApplyError> {
    let done = sqlx::query(
        "UPDATE transactions SET status = $2, provider_code = $3, provider_message = $4, provider_trace = $5, \
         serial_number = $6, provider_amount_minor = $7, amount_mismatch = $8, bill = $9, inquiry_data = $10, \
         expires_at = $11, next_check_at = $12, not_found_since = $13, review_reason = $14, updated_at = $15, \
         finalized_at = $16, payment = $18 WHERE id = $1 AND status = $17",
    )
    .bind(next.id)
    .bind(&next.status)
    .bind(&next.provider_code)
    .bind(&next.provider_message)
    .bind(&next.provider_trace)
    .bind(&next.serial_number)
    .bind(next.provider_amount_minor)
    .bind(next.amount_mismatch)
    .bind(&next.bill)
    .bind(&next.inquiry_data)
    .bind(next.expires_at)
    .bind(next.next_check_at)
    .bind(next.not_found_since)
    .bind(&next.review_reason)
    .bind(next.updated_at)
    .bind(next.finalized_at)
    .bind(expected_status)
    .bind(&next.payment)
    .execute(conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(ApplyError::Raced(next.id));
    }
    Ok(())
}

pub(crate) async fn insert_event(
    conn: &mut PgConnection,
    id: Uuid,
    event: &EventRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO transaction_events (transaction_id, source, from_status, to_status, provider_code, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(event.source)
    .bind(event.from_status.map(|s| s.as_str()))
    .bind(event.to_status.map(|s| s.as_str()))
    .bind(&event.provider_code)
    .bind(&event.detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the (already masked) provider exchanges in one statement.
async fn insert_exchanges(
    conn: &mut PgConnection,
    id: Uuid,
    exchanges: &[bus::Exchange],
) -> Result<(), sqlx::Error> {
    if exchanges.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let mut operations = Vec::with_capacity(exchanges.len());
    let mut urls = Vec::with_capacity(exchanges.len());
    let mut requests = Vec::with_capacity(exchanges.len());
    let mut responses = Vec::with_capacity(exchanges.len());
    let mut statuses: Vec<Option<i32>> = Vec::with_capacity(exchanges.len());
    let mut durations = Vec::with_capacity(exchanges.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(exchanges.len());
    let mut ats: Vec<DateTime<Utc>> = Vec::with_capacity(exchanges.len());
    for exchange in exchanges {
        operations.push(exchange.operation.clone());
        urls.push(exchange.url.clone());
        requests.push(exchange.request.clone());
        responses.push(exchange.response.clone());
        statuses.push((exchange.http_status != 0).then_some(exchange.http_status));
        durations.push(i32::try_from(exchange.duration_ms).unwrap_or(i32::MAX));
        errors.push((!exchange.error.is_empty()).then(|| exchange.error.clone()));
        ats.push(exchange.at.as_ref().and_then(from_timestamp).unwrap_or(now));
    }
    sqlx::query(
        "INSERT INTO provider_exchanges (transaction_id, operation, url, request, response, http_status, duration_ms, error, at) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[], $8::text[], $9::timestamptz[])",
    )
    .bind(id)
    .bind(&operations)
    .bind(&urls)
    .bind(&requests)
    .bind(&responses)
    .bind(&statuses)
    .bind(&durations)
    .bind(&errors)
    .bind(&ats)
    .execute(conn)
    .await?;
    Ok(())
}
