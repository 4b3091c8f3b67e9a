//! `loketctl review`: the transactions parked in `needs_review`, and an
//! operator's decision on one once the case is settled with the provider.
//!
//! A decision is never written here: it is checked against the row (so a
//! mistake is named at once), published on `loket.evt.operator.decision`
//! for the reconciler — the only writer of states, which applies it exactly
//! once, logs it in the transaction's history and tells the waiting client —
//! and then awaited in that history. The rules it must meet are
//! `loket_protocol::review`'s, the same the reconciler applies; one of them
//! binds a decision to the history the operator saw (`--seen-event`, the
//! newest event then), so a report that came in since is never overruled
//! unseen.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loket_protocol::conversions::{timestamp, ConversionError};
use loket_protocol::pb::{self, bus};
use loket_protocol::review::OperatorDecision;
use loket_protocol::subjects;
use loket_runtime::bus::{self as lbus, BusError};
use loket_runtime::telemetry::TraceContext;
use prost::Message as _;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cli::SettleArgs;
use crate::find::{found, FoundView};
use crate::output::{Render, Table};
use crate::CliError;

/// How often the history is read while waiting for the reconciler.
const POLL: Duration = Duration::from_millis(100);

/// The decision `args` describe, checked by the rules the reconciler
/// applies (an error names the flag); a new event id each time.
pub fn decision(args: &SettleArgs) -> Result<OperatorDecision, CliError> {
    let message = bus::OperatorDecision {
        event_id: Uuid::new_v4().to_string(),
        transaction_id: args.transaction_id.to_string(),
        status: pb::TransactionStatus::from(args.status) as i32,
        reason: args.reason.clone(),
        operator: args.operator.clone(),
        serial_number: args.serial_number.clone().unwrap_or_default(),
        void_serial_number: args.void_serial_number,
        decided_at: Some(timestamp(Utc::now())),
        seen_event: args.seen_event,
    };
    OperatorDecision::try_from(&message).map_err(|error| {
        CliError::Usage(match error {
            ConversionError::Invalid { field, problem } => {
                format!("--{}: {problem}", field.replace('_', "-"))
            }
            other => other.to_string(),
        })
    })
}

/// The NATS URL to publish `args`' decision on, from `--nats-url` or
/// `LOKET_NATS_URL`. clap lets both be missing, so the usage line does not
/// demand the flag; here a missing one is bad usage naming both.
pub fn nats_url(args: &SettleArgs) -> Result<&str, CliError> {
    crate::setting::required(
        args.nats_url.as_deref(),
        "review settle needs NATS",
        "LOKET_NATS_URL",
        "--nats-url",
    )
}

/// Checks that the transaction is in `needs_review` and takes the decision
/// on the history as it stands (nothing was added since the event the
/// operator saw), publishes it (the message id is its event id; returns once JetStream
/// stored it), and waits up to `wait` for the reconciler to apply it.
pub async fn settle(
    pool: &PgPool,
    nats_url: &str,
    decision: &OperatorDecision,
    wait: Duration,
) -> Result<SettledView, CliError> {
    let id = decision.transaction_id;
    let row = loket_store::get(pool, id)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("transaction {id}")))?;
    let status = row.status().ok_or_else(|| {
        CliError::Query(format!(
            "transaction {id} has an unreadable status {:?}",
            row.status
        ))
    })?;
    let newest_event = loket_store::newest_event(pool, id, decision.seen_event).await?;
    if let Some(refusal) = decision.refusal(status, row.serial_number.as_deref(), newest_event) {
        return Err(CliError::Refused(format!("transaction {id}: {refusal}")));
    }

    publish(nats_url, decision).await.map_err(|error| match error {
        // JetStream did not confirm it: it may be stored all the same, and
        // then the reconciler applies it.
        BusError::Publish { .. } => CliError::TimedOut(format!(
            "the decision on transaction {id} (event {}) was sent, but JetStream did not confirm \
             storing it ({error}); the reconciler applies it if it was stored: `loketctl find {id}` \
             shows whether it did before you settle again",
            decision.event_id
        )),
        other => other.into(),
    })?;
    let deadline = Instant::now() + wait;
    loop {
        match applied(pool, decision).await? {
            Some(None) => break,
            Some(Some(refused)) => {
                return Err(CliError::Refused(format!(
                    "transaction {id}: the reconciler refused the decision: {refused}"
                )))
            }
            None if Instant::now() >= deadline => {
                return Err(CliError::TimedOut(format!(
                    "the decision on transaction {id} (event {}) is on the bus, but the reconciler \
                     did not apply it within {} ms: is it running? It applies the decision when it \
                     takes it; `loketctl find {id}` shows when",
                    decision.event_id,
                    wait.as_millis()
                )))
            }
            None => tokio::time::sleep(POLL).await,
        }
    }
    let row = loket_store::get(pool, id)
        .await?
        .ok_or_else(|| CliError::NotFound(format!("transaction {id}")))?;
    Ok(SettledView {
        event_id: decision.event_id.to_string(),
        decision: decision.status.as_str(),
        operator: decision.operator.clone(),
        found: found(pool, &row, Vec::new()).await?,
    })
}

/// How many times a decision's publish is tried while JetStream does not
/// confirm it (its message id keeps a retry from storing it twice).
const PUBLISH_ATTEMPTS: u32 = 3;

/// Publishes `decision` durably on its subject.
async fn publish(nats_url: &str, decision: &OperatorDecision) -> Result<(), BusError> {
    // No reconnect loop, unlike the services: an unreachable server is an
    // answer for someone at a terminal.
    let nats = lbus::connect_once(nats_url, "loketctl").await?;
    let js = async_nats::jetstream::new(nats);
    let headers = lbus::headers(
        &decision.event_id.to_string(),
        &TraceContext::new_root(),
        &decision.transaction_id.to_string(),
    );
    lbus::publish_durable_retrying(
        &js,
        subjects::operator_decision().to_string(),
        headers,
        bus::OperatorDecision::from(decision).encode_to_vec(),
        PUBLISH_ATTEMPTS,
    )
    .await
}

/// Whether the reconciler has applied `decision`: `None` not yet,
/// `Some(None)` settled, `Some(Some(why))` refused.
async fn applied(
    pool: &PgPool,
    decision: &OperatorDecision,
) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT detail->>'refused' FROM transaction_events \
         WHERE transaction_id = $1 AND source = 'operator' AND detail->>'event_id' = $2",
    )
    .bind(decision.transaction_id)
    .bind(decision.event_id.to_string())
    .fetch_optional(pool)
    .await
}

/// The statement behind [`list`]; `$1` is the limit. Public so a test can
/// check its plan.
pub const IN_REVIEW_QUERY: &str =
    "SELECT t.id, COALESCE(c.name, t.client_id::text) AS client, t.kind, t.provider, \
       t.review_reason, t.reviewed_from, t.updated_at, \
       (SELECT COALESCE(max(e.id), 0) FROM transaction_events e WHERE e.transaction_id = t.id) \
         AS newest_event \
     FROM transactions t LEFT JOIN clients c ON c.id = t.client_id \
     WHERE t.status = 'needs_review' ORDER BY t.updated_at, t.id LIMIT $1";

/// Every transaction in `needs_review`, the longest waiting first (by when
/// it last changed: when it was parked, unless a later report filled in a
/// field), at most `limit`, read through the partial index
/// `transactions_in_review` (migration 0012). One more is read to tell
/// whether the queue goes on past the limit.
pub async fn list(pool: &PgPool, limit: i64) -> Result<ReviewListView, CliError> {
    let mut transactions: Vec<InReviewView> = sqlx::query_as::<_, InReviewRow>(IN_REVIEW_QUERY)
        .bind(limit.saturating_add(1))
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(InReviewView::from)
        .collect();
    let shown = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = transactions.len() > shown;
    transactions.truncate(shown);
    Ok(ReviewListView { transactions, more })
}

#[derive(sqlx::FromRow)]
struct InReviewRow {
    id: Uuid,
    client: String,
    kind: String,
    provider: String,
    review_reason: Option<String>,
    reviewed_from: Option<String>,
    updated_at: DateTime<Utc>,
    newest_event: i64,
}

/// One transaction waiting for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InReviewView {
    pub id: String,
    /// The client it belongs to, by name.
    pub client: String,
    pub kind: String,
    pub provider: String,
    pub review_reason: Option<String>,
    /// The status it had when it was parked.
    pub reviewed_from: Option<String>,
    pub updated_at: String,
    /// The newest event of its history: what a decision is taken on
    /// (`review settle --seen-event`).
    pub newest_event: i64,
}

impl From<InReviewRow> for InReviewView {
    fn from(row: InReviewRow) -> Self {
        InReviewView {
            id: row.id.to_string(),
            client: row.client,
            kind: row.kind,
            provider: row.provider,
            review_reason: row.review_reason,
            reviewed_from: row.reviewed_from,
            updated_at: row
                .updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            newest_event: row.newest_event,
        }
    }
}

/// What `loketctl review list` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReviewListView {
    pub transactions: Vec<InReviewView>,
    /// More transactions wait in review than the limit let through.
    pub more: bool,
}

impl Render for ReviewListView {
    fn text(&self) -> String {
        if self.transactions.is_empty() {
            return "no transaction is in needs_review".into();
        }
        let mut table = Table::new(&[
            "UPDATED", "ID", "EVENT", "CLIENT", "KIND", "PROVIDER", "FROM", "REASON",
        ]);
        for t in &self.transactions {
            table.row(vec![
                t.updated_at.clone(),
                t.id.clone(),
                format!("#{}", t.newest_event),
                t.client.clone(),
                t.kind.clone(),
                t.provider.clone(),
                t.reviewed_from.clone().unwrap_or_default(),
                t.review_reason.clone().unwrap_or_default(),
            ]);
        }
        let mut text = table.finish();
        if self.more {
            text.push_str(&format!(
                "\n{} shown; more wait in review (the longest waiting come first): raise --limit",
                self.transactions.len()
            ));
        }
        text
    }
}

/// What `loketctl review settle` prints: the decision, then the transaction
/// as `loketctl find` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettledView {
    pub event_id: String,
    /// The status decided: success or failed.
    pub decision: &'static str,
    pub operator: String,
    #[serde(flatten)]
    pub found: FoundView,
}

impl Render for SettledView {
    fn text(&self) -> String {
        format!(
            "settled         {} as {} by {} (event {})\n{}",
            self.found.transaction.id,
            self.decision,
            self.operator,
            self.event_id,
            self.found.text()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn args(extra: &[&str]) -> SettleArgs {
        let base = [
            "loketctl",
            "review",
            "settle",
            "0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000",
            "--seen-event",
            "12",
            "--nats-url",
            "nats://127.0.0.1:4222",
            "--reason",
            "ticket 4711",
            "--operator",
            "siti",
        ];
        match crate::Cli::try_parse_from(base.iter().chain(extra))
            .unwrap()
            .command
        {
            crate::cli::Command::Review(crate::cli::ReviewCommand::Settle(args)) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_decision_is_checked_as_the_reconciler_will_and_names_the_flag() {
        let success = decision(&args(&["--status", "success", "--serial-number", "SN-1"])).unwrap();
        assert_eq!(success.serial_number.as_deref(), Some("SN-1"));
        assert_eq!(success.reason, "ticket 4711");
        let again = decision(&args(&["--status", "success"])).unwrap();
        assert_ne!(success.event_id, again.event_id, "a new event each time");

        // A failed transaction delivered nothing: no serial number with it.
        let error =
            decision(&args(&["--status", "failed", "--serial-number", "SN-1"])).unwrap_err();
        assert!(matches!(error, CliError::Usage(_)));
        assert!(
            error
                .to_string()
                .starts_with("--serial-number: only with success"),
            "{error}"
        );
        // A serial number is declared void with a failed only, and never
        // alongside one.
        let void = decision(&args(&["--status", "failed", "--void-serial-number"])).unwrap();
        assert!(void.void_serial_number);
        let error = decision(&args(&["--status", "success", "--void-serial-number"])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--void-serial-number: only with failed"),
            "{error}"
        );
        // Fields the parser checked are checked again (a caller may build
        // the arguments itself).
        let mut unchecked = args(&["--status", "failed"]);
        unchecked.reason = " ".into();
        let error = decision(&unchecked).unwrap_err().to_string();
        assert!(error.starts_with("--reason: required"), "{error}");
    }

    #[test]
    fn a_settled_transaction_reads_like_find() {
        let view = SettledView {
            event_id: "e-1".into(),
            decision: "success",
            operator: "siti".into(),
            found: FoundView {
                matched_on: Vec::new(),
                client: "shop".into(),
                review_reason: Some("conflicting final reports".into()),
                reviewed_from: Some("failed".into()),
                check_count: 0,
                next_check_at: None,
                transaction: crate::output::TransactionView::from_pb(&pb::Transaction {
                    id: "t-1".into(),
                    status: pb::TransactionStatus::Success as i32,
                    ..Default::default()
                }),
                events: Vec::new(),
            },
        };
        let text = view.text();
        assert!(
            text.starts_with("settled         t-1 as success by siti (event e-1)\nclient"),
            "{text}"
        );
        assert!(text.contains("parked from     failed"), "{text}");
        assert!(!text.contains("found by"), "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&crate::output::render(crate::output::Format::Json, &view))
                .unwrap();
        assert_eq!(json["decision"], "success");
        assert_eq!(json["transaction"]["status"], "success");
    }
}
