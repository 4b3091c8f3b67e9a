//! The periodic work of the reconciler, one step after another on every
//! tick. Each step locks a batch of rows with `FOR UPDATE SKIP LOCKED`, so
//! several replicas share the work without doing any of it twice, and
//! publishes its commands *before* committing: a crash in between only
//! repeats a publish whose message id the stream de-duplicates.
//!
//! 1. expire inquiries left unresolved (`failed` / `EXPIRED`; inquiries move
//!    no money);
//! 2. park transactions unresolved past `review_after` in `needs_review`;
//! 3. sweep: dispatch what the ingress inserted but never published,
//!    re-dispatch what was published but never answered, and what the
//!    provider has no record of and the send journal shows no connector ever
//!    sent (`first_dispatch = false`, so the connector checks status before
//!    any send);
//! 4. publish the status checks that are due and schedule the next one;
//! 5. publish the updates an earlier tick committed and could not publish
//!    (a crash or a JetStream outage between its commit and its publish):
//!    the scheduler's own transitions are recorded in `unpublished_updates`
//!    in the transaction that makes them, and deleted once published;
//! 6. prune the bookkeeping tables: send records (`send_intents`) older than
//!    `send_record_retention_ms`, which is kept well beyond the send horizon
//!    ([`loket_protocol::horizon`]), and claims of applied events
//!    (`applied_events`) older than `applied_event_retention_ms`, long after
//!    the event could be delivered again (and re-applying an old event
//!    changes no state: final states are immutable and the same report
//!    decides the same). Both use an index on their time column and delete
//!    at most `prune_batch` rows per table and tick.
//!
//! A tick runs its steps on one connection and is given up after a limit
//! (see [`Reconciler::tick`]), so a database gone silent cannot hold the
//! scheduler for longer.

use crate::apply::{ApplyError, Reconciler};
use crate::metric;
use crate::plan::{plan_expiry, plan_review, EventRecord};
use crate::schedule::millis;
use crate::write;
use chrono::{DateTime, Utc};
use loket_protocol::{subjects, Provider, TransactionKind, TransactionStatus};
use loket_runtime::bus as lbus;
use loket_runtime::telemetry::{self, TraceContext};
use loket_runtime::Shutdown;
use loket_store::{TransactionRow, COLUMNS};
use prost::Message as _;
use serde_json::json;
use sqlx::{Connection as _, PgConnection};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tracing::Instrument as _;
use uuid::Uuid;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub expired: usize,
    pub reviewed: usize,
    pub redispatched: usize,
    pub checks: usize,
    pub republished: usize,
    pub pruned: usize,
}

/// Ticks until `shutdown`; a failing step is logged and retried next tick.
pub async fn run(reconciler: Arc<Reconciler>, every: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        match reconciler.tick().await {
            Ok(report) if report != TickReport::default() => {
                tracing::debug!(?report, "scheduler tick")
            }
            Ok(_) => {}
            Err(error) => {
                metrics::counter!(metric::TICK_ERRORS).increment(1);
                tracing::warn!(%error, "scheduler tick failed; retrying next tick");
            }
        }
    }
}

const INQUIRY_KINDS: &str = "kind IN ('prepaid_inquiry', 'bill_inquiry')";

impl Reconciler {
    /// Runs every scheduler step once ([`Reconciler::tick_steps`]) on one
    /// connection, for at most its limit
    /// ([`HELD_WORK_LIMIT`](loket_runtime::db::HELD_WORK_LIMIT)), as the
    /// event batches' work is bounded. Each step's statements take
    /// milliseconds, or wait at most the lock timeout, so a tick still
    /// running after that long waits on a database that went silent without
    /// closing its connections (a crashed host, a cut network), where it
    /// would otherwise stay until the kernel gives the connection up, about
    /// a quarter of an hour, with no status check, sweep or review made
    /// meanwhile. Given up, the tick's open database transaction is never
    /// committed and its connection is closed, not given back to the pool;
    /// the next tick starts afresh on another.
    pub async fn tick(&self) -> Result<TickReport, ApplyError> {
        loket_runtime::db::HeldConnection::with_work_limit(self.pool.clone(), self.tick_limit)
            .with(async |conn| self.tick_steps(conn).await)
            .await
    }

    /// Every scheduler step once. Each step runs even if an earlier one
    /// failed; the first error is returned.
    async fn tick_steps(&self, conn: &mut PgConnection) -> Result<TickReport, ApplyError> {
        let now = self.clock.read(conn).await?;
        let mut report = TickReport::default();
        let mut first_error = None;
        let mut keep = |result: Result<usize, ApplyError>, slot: &mut usize| match result {
            Ok(n) => *slot = n,
            Err(error) => {
                if first_error.is_none() {
                    first_error = Some(error);
                }
            }
        };
        keep(self.expire_inquiries(conn, now).await, &mut report.expired);
        keep(
            self.review_unresolved(conn, now).await,
            &mut report.reviewed,
        );
        keep(self.sweep(conn, now).await, &mut report.redispatched);
        keep(self.publish_due_checks(conn, now).await, &mut report.checks);
        keep(
            self.publish_left_updates(conn, now).await,
            &mut report.republished,
        );
        keep(self.prune(conn, now).await, &mut report.pruned);
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    fn batch(&self) -> i64 {
        self.settings.batch_size.max(1)
    }

    /// Deletes send records and applied-event claims past their retention
    /// (at most `prune_batch` of each); returns how many rows went.
    pub async fn prune(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let tables = [
            (
                metric::pruned_table::SEND_INTENTS,
                "transaction_id",
                "recorded_at",
                self.settings.send_record_retention_ms,
            ),
            (
                metric::pruned_table::APPLIED_EVENTS,
                "event_id",
                "applied_at",
                self.settings.applied_event_retention_ms,
            ),
        ];
        let mut pruned = 0;
        for (table, key, at, retention_ms) in tables {
            let deleted = sqlx::query(&format!(
                "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {at} < $1 \
                 ORDER BY {at} LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ))
            .bind(now - millis(retention_ms))
            .bind(self.settings.prune_batch.max(1))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if deleted > 0 {
                metrics::counter!(metric::PRUNED, "table" => table).increment(deleted);
                tracing::debug!(table, deleted, "pruned rows past their retention");
            }
            pruned += deleted as usize;
        }
        Ok(pruned)
    }

    /// Inquiries still `received`/`pending`/`unknown` after `inquiry_timeout`.
    pub async fn expire_inquiries(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let timeout = millis(self.settings.inquiry_timeout_ms);
        let cutoff = now - timeout;
        let mut tx = conn.begin().await?;
        let [received, sent] = &*EXPIRING_INQUIRIES;
        let mut rows = lock_batch(&mut tx, received, cutoff, self.batch()).await?;
        rows.extend(lock_batch(&mut tx, sent, cutoff, self.batch()).await?);
        let (changed, events): (Vec<TransactionRow>, Vec<EventRecord>) = rows
            .iter()
            .map(|row| plan_expiry(row, now, timeout))
            .unzip();
        write_planned(&mut tx, &rows, &changed, &events).await?;
        record_unpublished(&mut tx, &changed, EXPIRED).await?;
        tx.commit().await?;
        for next in &changed {
            metrics::counter!(metric::INQUIRIES_EXPIRED, "provider" => next.provider.clone())
                .increment(1);
            tracing::info!(transaction_id = %next.id, "inquiry expired");
        }
        self.publish_scheduled_updates(conn, &changed, EXPIRED)
            .await;
        Ok(changed.len())
    }

    /// Anything unresolved past `review_after` goes to `needs_review`;
    /// a payment with an expiry (a QR payment, a pay-in order, which may be
    /// live for up to a day) only `review_after` past that expiry, since
    /// until then the payer may still pay and the provider settle it.
    pub async fn review_unresolved(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let after = millis(self.settings.review_after_ms);
        let cutoff = now - after;
        let mut tx = conn.begin().await?;
        let mut rows = lock_batch(&mut tx, "status = 'received'", cutoff, self.batch()).await?;
        rows.extend(
            lock_batch(
                &mut tx,
                "status IN ('pending', 'unknown') \
                 AND COALESCE((payment->>'expires_at')::timestamptz, created_at) < $1",
                cutoff,
                self.batch(),
            )
            .await?,
        );
        let mut nexts = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut reasons = Vec::with_capacity(rows.len());
        for row in &rows {
            let (next, event, reason) = plan_review(row, now, after);
            nexts.push(next);
            events.push(event);
            reasons.push(reason);
        }
        write_planned(&mut tx, &rows, &nexts, &events).await?;
        record_unpublished(&mut tx, &nexts, REVIEW).await?;
        tx.commit().await?;
        for (next, reason) in nexts.iter().zip(&reasons) {
            metrics::counter!(metric::NEEDS_REVIEW, "reason" => metric::UNRESOLVED).increment(1);
            tracing::error!(transaction_id = %next.id, %reason, "ALERT transaction unresolved too long; parked in needs_review");
        }
        self.publish_scheduled_updates(conn, &nexts, REVIEW).await;
        Ok(nexts.len())
    }

    /// Dispatches `received` transactions the ingress never published,
    /// re-dispatches those whose command got no result, and those the
    /// provider has no record of that no connector ever sent (see below).
    ///
    /// A command that gets no result is dispatched again after
    /// `redispatch_after`, then after twice that, four times, … up to 16
    /// times it ([`REDISPATCH_BACKOFF_DOUBLINGS`]): while a provider's
    /// connectors are down, every copy waits in the command stream, and each
    /// costs a status check once they are back, all at the moment the
    /// provider recovers.
    pub async fn sweep(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let never = now - millis(self.settings.dispatch_grace_ms);
        let redispatch_after_secs = self.settings.redispatch_after_ms as f64 / 1000.0;
        let mut tx = conn.begin().await?;
        let mut rows = sqlx::query_as::<_, TransactionRow>(&SWEEP_RECEIVED_QUERY)
            .bind(never)
            .bind(now)
            .bind(redispatch_after_secs)
            .bind(REDISPATCH_BACKOFF_DOUBLINGS)
            .bind(self.batch())
            .fetch_all(&mut *tx)
            .await?;
        // A status check can move a transaction past `received` before its
        // command was ever handled (a client's query right after creating
        // it); if that command is then lost, only status checks follow, and
        // they end it failed for "no record" though it was never sent. The
        // send journal tells: no record there means no connector sent it.
        // Every `dispatch_grace` until one does, or the not-found grace ends.
        // Only money-moving kinds: the journal records nothing else, so its
        // silence says nothing about an inquiry.
        rows.extend(
            sqlx::query_as::<_, TransactionRow>(&SWEEP_NEVER_SENT_QUERY)
                .bind(never)
                .bind(self.batch())
                .bind(journalled_kinds())
                .fetch_all(&mut *tx)
                .await?,
        );
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let publishes = rows.iter().map(|row| async move {
            let kind = row
                .kind()
                .ok_or_else(|| format!("unreadable kind {:?}", row.kind))?;
            let provider = Provider::parse(&row.provider).map_err(|e| e.to_string())?;
            let msg_id = row.command_msg_id(sweep_dispatch_number(row));
            let subject = subjects::command(provider, kind.operation());
            let (span, trace) = scheduled_span("redispatch", row);
            let headers = lbus::headers(&msg_id, &trace, &row.id.to_string());
            lbus::publish_durable(
                &self.js,
                subject,
                headers,
                row.command(false).encode_to_vec(),
            )
            .instrument(span)
            .await
            .map_err(|e| e.to_string())?;
            Ok::<String, String>(msg_id)
        });
        let results = futures::future::join_all(publishes).await;
        let mut dispatched = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(msg_id) => {
                    let reason = if row.status() == Some(TransactionStatus::Unknown) {
                        metric::redispatch_reason::NEVER_SENT
                    } else if row.dispatched_at.is_none() {
                        metric::redispatch_reason::NEVER_DISPATCHED
                    } else {
                        metric::redispatch_reason::NO_RESULT
                    };
                    let event = EventRecord {
                        source: "sweep",
                        from_status: row.status(),
                        to_status: row.status(),
                        provider_code: None,
                        detail: json!({ "action": "redispatch", "reason": reason, "msg_id": msg_id, "dispatch_count": sweep_dispatch_number(row), "first_dispatch": false }),
                    };
                    metrics::counter!(metric::REDISPATCHED, "reason" => reason).increment(1);
                    tracing::warn!(transaction_id = %row.id, reason, %msg_id, "re-dispatched a stuck transaction");
                    dispatched.push(row.id);
                    events.push((row.id, event));
                }
                Err(error) => {
                    tracing::warn!(transaction_id = %row.id, %error, "re-dispatch not published; next tick retries")
                }
            }
        }
        sqlx::query(
            "UPDATE transactions SET dispatch_count = dispatch_count + 1, dispatched_at = $2 WHERE id = ANY($1)",
        )
        .bind(&dispatched)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        write::write(&mut tx, &[], &events, &[]).await?;
        tx.commit().await?;
        Ok(dispatched.len())
    }

    /// Publishes every status check that is due and schedules the next one
    /// (`next_check_at = now + schedule[min(check_count, len - 1)]`).
    pub async fn publish_due_checks(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let mut tx = conn.begin().await?;
        let rows = sqlx::query_as::<_, TransactionRow>(&format!(
            "SELECT {COLUMNS} FROM transactions WHERE status IN ('pending', 'unknown') AND next_check_at <= $1 \
             ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        ))
        .bind(now)
        .bind(self.batch())
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let results = futures::future::join_all(rows.iter().map(|row| {
            let msg_id = check_msg_id(row);
            let (span, trace) = scheduled_span("status_check", row);
            async move {
                self.publish_check(row, &msg_id, &trace)
                    .instrument(span)
                    .await
                    .map(|()| msg_id)
            }
        }))
        .await;
        let mut ids: Vec<Uuid> = Vec::new();
        let mut counts: Vec<i32> = Vec::new();
        let mut nexts: Vec<DateTime<Utc>> = Vec::new();
        let mut events = Vec::new();
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(msg_id) => {
                    let (count, next) = next_check(row, now, &self.policy(&row.provider).schedule);
                    ids.push(row.id);
                    counts.push(count);
                    nexts.push(next);
                    events.push((
                        row.id,
                        EventRecord {
                            source: "status_check",
                            from_status: row.status(),
                            to_status: row.status(),
                            provider_code: None,
                            detail: json!({ "action": "status_check_requested", "msg_id": msg_id, "check_count": count, "next_check_at": next.to_rfc3339() }),
                        },
                    ));
                }
                Err(error) => {
                    tracing::warn!(transaction_id = %row.id, %error, "status check not published; next tick retries")
                }
            }
        }
        sqlx::query(
            "UPDATE transactions t SET check_count = v.count, next_check_at = v.next \
             FROM UNNEST($1::uuid[], $2::int4[], $3::timestamptz[]) AS v(id, count, next) WHERE t.id = v.id",
        )
        .bind(&ids)
        .bind(&counts)
        .bind(&nexts)
        .execute(&mut *tx)
        .await?;
        write::write(&mut tx, &[], &events, &[]).await?;
        tx.commit().await?;
        metrics::counter!(metric::STATUS_CHECKS, "reason" => metric::check_reason::SCHEDULE)
            .increment(ids.len() as u64);
        Ok(ids.len())
    }

    /// Publishes `updates` (a row and the tag of its update), all at once,
    /// `attempts` tries each: one at a time, a JetStream slow to acknowledge
    /// could keep a tick past its limit, and every later tick the same.
    /// Returns the ids and tags of those published, and the failures.
    async fn publish_all<'a>(
        &self,
        updates: impl Iterator<Item = (&'a TransactionRow, &'a str)>,
        attempts: u32,
    ) -> (Vec<Uuid>, Vec<&'a str>, Vec<(Uuid, lbus::BusError)>) {
        let publishes = updates.map(|(row, tag)| async move {
            let (span, trace) = scheduled_span(tag, row);
            self.publish_update(row, &update_msg_id(row.id, tag), &trace, attempts)
                .instrument(span)
                .await
                .map(|()| (row.id, tag))
                .map_err(|error| (row.id, error))
        });
        let mut ids = Vec::new();
        let mut tags = Vec::new();
        let mut failed = Vec::new();
        for published in futures::future::join_all(publishes).await {
            match published {
                Ok((id, tag)) => {
                    ids.push(id);
                    tags.push(tag);
                }
                Err(failure) => failed.push(failure),
            }
        }
        (ids, tags, failed)
    }

    /// Publishes the updates the scheduler committed ([`Self::publish_all`]),
    /// then deletes the `unpublished_updates` rows of those published; the
    /// rest wait there for a later tick.
    async fn publish_scheduled_updates(
        &self,
        conn: &mut PgConnection,
        rows: &[TransactionRow],
        tag: &str,
    ) {
        let (published, tags, failed) = self
            .publish_all(rows.iter().map(|row| (row, tag)), SCHEDULED_UPDATE_ATTEMPTS)
            .await;
        for (id, error) in &failed {
            tracing::error!(transaction_id = %id, %error, "update not published; a later tick publishes it");
        }
        if let Err(error) = forget_unpublished(&mut *conn, &published, &tags).await {
            tracing::warn!(count = published.len(), %error, "updates published but still recorded as unpublished; a later tick publishes them again");
        }
    }

    /// Publishes the updates recorded as unpublished at least
    /// `REPUBLISH_AFTER` (60 s) before `now` (so the publish right after their
    /// commit is not raced), each as the transaction now reads, and deletes
    /// the records of those published; returns how many were.
    pub async fn publish_left_updates(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
    ) -> Result<usize, ApplyError> {
        let mut tx = conn.begin().await?;
        let left: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT transaction_id, tag FROM unpublished_updates WHERE recorded_at < $1 \
             ORDER BY recorded_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now - REPUBLISH_AFTER)
        .bind(self.batch())
        .fetch_all(&mut *tx)
        .await?;
        if left.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = left.iter().map(|(id, _)| *id).collect();
        let rows: HashMap<Uuid, TransactionRow> = sqlx::query_as::<_, TransactionRow>(&format!(
            "SELECT {COLUMNS} FROM transactions WHERE id = ANY($1)"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
        // A transaction that is gone has nothing left to tell: its record
        // is done with.
        let (gone, present): (Vec<_>, Vec<_>) =
            left.iter().partition(|(id, _)| !rows.contains_key(id));
        let (mut done_ids, mut done_tags, failed) = self
            .publish_all(present.iter().map(|(id, tag)| (&rows[id], tag.as_str())), 1)
            .await;
        for (id, tag) in done_ids.iter().zip(&done_tags) {
            tracing::info!(transaction_id = %id, tag, "left update published");
        }
        for (id, tag) in gone {
            done_ids.push(*id);
            done_tags.push(tag);
        }
        if let Some((id, error)) = failed.first() {
            tracing::warn!(failed = failed.len(), first = %id, %error, "left updates still not published; next tick retries");
        }
        forget_unpublished(&mut *tx, &done_ids, &done_tags).await?;
        tx.commit().await?;
        metrics::counter!(metric::UPDATES_REPUBLISHED).increment(done_ids.len() as u64);
        Ok(done_ids.len())
    }
}

/// The tags of the scheduler's own updates, in their message ids and in
/// `unpublished_updates`.
const EXPIRED: &str = "expired";
const REVIEW: &str = "review";

/// How often the scheduler tries to publish an update right after its
/// commit: no event's redelivery will publish it again, so it outlasts a
/// brief JetStream blip here (100 ms, then 200 ms); after that its
/// `unpublished_updates` row waits for a later tick. The updates of a step
/// are published together, so a JetStream that does not acknowledge holds a
/// step about 15 s (three acknowledgement timeouts of 5 s), and a tick with
/// both steps well inside its 60 s limit.
const SCHEDULED_UPDATE_ATTEMPTS: u32 = 3;

/// How old an unpublished update must be before a tick publishes it: well
/// beyond the publish right after its commit, which makes
/// [`SCHEDULED_UPDATE_ATTEMPTS`] attempts of up to JetStream's 5 s
/// acknowledgement timeout each (about 15 s), so the two rarely race (and
/// when they do, the stream keeps one copy within its 2-minute window).
const REPUBLISH_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The message id of the scheduler's `tag` update of `id`: the same for
/// the publish after the commit and any later one, so the stream keeps one.
fn update_msg_id(id: Uuid, tag: &str) -> String {
    format!("upd:{id}:{tag}")
}

/// Records, in the database transaction that makes them, the updates of
/// `rows` the scheduler has still to publish.
async fn record_unpublished(
    conn: &mut PgConnection,
    rows: &[TransactionRow],
    tag: &str,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    sqlx::query(
        "INSERT INTO unpublished_updates (transaction_id, tag) \
         SELECT id, $2 FROM UNNEST($1::uuid[]) AS id ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(tag)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes the unpublished-update records `(ids[i], tags[i])`.
async fn forget_unpublished(
    executor: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
    tags: &[&str],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM unpublished_updates WHERE (transaction_id, tag) IN \
         (SELECT * FROM UNNEST($1::uuid[], $2::text[]))",
    )
    .bind(ids)
    .bind(tags)
    .execute(executor)
    .await?;
    Ok(())
}

/// The status check's message id: one per transaction and check number, so
/// a re-publish after a crash before commit is de-duplicated.
pub fn check_msg_id(row: &TransactionRow) -> String {
    format!("chk:{}:{}", row.id, row.check_count)
}

/// The check count and next due time after publishing a check for `row`.
pub fn next_check(
    row: &TransactionRow,
    now: DateTime<Utc>,
    schedule: &crate::schedule::Schedule,
) -> (i32, DateTime<Utc>) {
    let count = row.check_count.saturating_add(1);
    (count, schedule.due_after_check(now, count, row.id))
}

/// The sweep's statements and the inquiry expiry's conditions, public so a
/// test can check their plans: each reads an index holding little more than
/// the rows it wants (migration 0015), not every unresolved transaction.
/// `$1` dispatch grace cutoff, `$2` now, `$3` seconds before a redispatch,
/// `$4` its doublings, `$5` the batch.
pub static SWEEP_RECEIVED_QUERY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM transactions WHERE status = 'received' \
         AND ((dispatched_at IS NULL AND created_at < $1) \
              OR dispatched_at < $2 - make_interval(secs => $3 \
                 * power(2, least(greatest(dispatch_count - 1, 0), $4)))) \
         ORDER BY created_at LIMIT $5 FOR UPDATE SKIP LOCKED"
    )
});

/// `$1` the grace cutoff, `$2` the batch, `$3` the journalled kinds.
pub static SWEEP_NEVER_SENT_QUERY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM transactions t WHERE status = 'unknown' \
         AND kind = ANY($3) \
         AND not_found_since < $1 AND COALESCE(dispatched_at, created_at) < $1 \
         AND NOT EXISTS (SELECT 1 FROM send_intents s WHERE s.transaction_id = t.id) \
         ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    )
});

/// [`lock_batch`]'s statement for rows matching `condition`.
pub fn lock_batch_query(condition: &str) -> String {
    format!(
        "SELECT {COLUMNS} FROM transactions WHERE {condition} AND created_at < $1 \
         ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    )
}

/// The inquiry expiry's two conditions for [`lock_batch`].
pub static EXPIRING_INQUIRIES: LazyLock<[String; 2]> = LazyLock::new(|| {
    [
        format!("{INQUIRY_KINDS} AND status = 'received'"),
        format!("{INQUIRY_KINDS} AND status IN ('pending', 'unknown')"),
    ]
});

/// Locks up to `limit` rows matching `condition` created before `cutoff`.
async fn lock_batch(
    conn: &mut PgConnection,
    condition: &str,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&lock_batch_query(condition))
        .bind(cutoff)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Writes rows planned from `rows` (`nexts[i]` from `rows[i]`, which must
/// still have its status) with their events.
async fn write_planned(
    conn: &mut PgConnection,
    rows: &[TransactionRow],
    nexts: &[TransactionRow],
    events: &[EventRecord],
) -> Result<(), ApplyError> {
    let writes: Vec<(&str, &TransactionRow)> = rows
        .iter()
        .zip(nexts)
        .map(|(row, next)| (row.status.as_str(), next))
        .collect();
    let events: Vec<(Uuid, &EventRecord)> = rows.iter().map(|row| row.id).zip(events).collect();
    write::write(conn, &writes, &events, &[]).await
}

/// The kinds whose sends the connectors' journal records: those whose
/// operation moves money.
fn journalled_kinds() -> Vec<&'static str> {
    TransactionKind::ALL
        .into_iter()
        .filter(|kind| kind.operation().moves_money())
        .map(TransactionKind::as_str)
        .collect()
}

/// How many times the wait before dispatching a command that got no result
/// again doubles: at most 2^4 = 16 times `redispatch_after` (160 minutes by
/// default).
const REDISPATCH_BACKOFF_DOUBLINGS: i32 = 4;

/// The number the sweep dispatches `row`'s command under (its message id
/// `cmd:<id>:<n>`), and the `dispatch_count` it records: one more than the
/// dispatches recorded, so never 0. The ingress publishes `cmd:<id>:0` and
/// then records its dispatch (`dispatch_count = 1`); if it died in between,
/// the row still says 0, and a sweep under 0 would repeat the ingress's
/// message id: dropped by JetStream as a duplicate within its window, and
/// after it its result's id too (the connector names a result after its
/// command), so the re-dispatch would do nothing.
fn sweep_dispatch_number(row: &TransactionRow) -> i32 {
    row.dispatch_count + 1
}

/// The span of work the scheduler starts on its own (a re-dispatch, a
/// status check, an update after a sweep): the root of a new trace that what
/// it publishes continues.
fn scheduled_span(what: &str, row: &TransactionRow) -> (tracing::Span, TraceContext) {
    let span = tracing::info_span!(
        "scheduled",
        what,
        transaction_id = %row.id,
        trace_id = tracing::field::Empty
    );
    let trace = telemetry::join(&span, None);
    (span, trace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{Schedule, ScheduleSettings};
    use chrono::TimeZone;
    use loket_protocol::TransactionStatus;

    #[test]
    fn check_ids_and_next_due_follow_the_schedule() {
        let schedule = Schedule::new(
            "okebayar",
            &ScheduleSettings {
                delays_ms: vec![1_000, 2_000, 4_000],
                unknown_first_ms: 500,
                jitter_percent: 0,
            },
        )
        .unwrap();
        let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut row = crate::plan::tests_support::row(TransactionStatus::Pending);
        let mut ids = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..5 {
            ids.push(check_msg_id(&row));
            let (count, next) = next_check(&row, now, &schedule);
            delays.push((next - now).num_milliseconds());
            row.check_count = count;
        }
        assert_eq!(delays, vec![2_000, 4_000, 4_000, 4_000, 4_000]);
        assert_eq!(ids[0], format!("chk:{}:0", row.id));
        assert_eq!(ids[4], format!("chk:{}:4", row.id));
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "each check has its own message id");
    }
}
