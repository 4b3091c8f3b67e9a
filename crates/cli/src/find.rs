//! `loketctl find`: support staff look a transaction up by any reference a
//! merchant or a provider may quote (our transaction id, the client's
//! `client_ref`, our reference at the provider, the provider's own trace or
//! reference number, a serial number or token) across every client, and see
//! what it is, what its provider code means and its whole event history.
//! A reference nothing matches is an error (exit code 1), as an unknown id
//! is for `loketctl get`. It reads the database directly, like the other
//! admin commands; nothing here writes.

use loket_store::TransactionRow;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::output::{Lines, Render, TransactionView};
use crate::CliError;

/// The most matches shown unless asked for more.
pub const DEFAULT_LIMIT: i64 = 20;

/// Every transaction `reference` names, newest first, at most `limit`.
///
/// The client's reference, the provider's trace and the serial number have
/// no index of their own (each would slow every purchase down), so a search
/// reads the whole table: on a large database it takes seconds, not
/// milliseconds.
pub async fn find(pool: &PgPool, reference: &str, limit: i64) -> Result<FindView, CliError> {
    let reference = reference.trim();
    if reference.is_empty() || reference.len() > 256 {
        return Err(CliError::Usage(
            "reference: give one reference of 1 to 256 characters".into(),
        ));
    }
    if !(1..=1_000).contains(&limit) {
        return Err(CliError::Usage("--limit: 1 to 1000".into()));
    }
    let id = Uuid::parse_str(reference).ok();
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM transactions \
         WHERE id = $1 OR provider_reference = $2 OR client_ref = $2 \
            OR provider_trace = $2 OR serial_number = $2 \
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(id)
    .bind(reference)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut matches = Vec::with_capacity(ids.len());
    for id in ids {
        // Gone between the two reads only if deleted by hand: skip it.
        let Some(row) = loket_store::get(pool, id).await? else {
            continue;
        };
        let on = matched_on(&row, reference);
        matches.push(found(pool, &row, on).await?);
    }
    Ok(FindView {
        reference: reference.to_string(),
        matches,
    })
}

/// `row` as support reads it: its client by name, the case if it is in
/// review, the transaction and its whole history. `matched_on` names the
/// references a search found it by (none when it was asked for by id).
pub async fn found(
    pool: &PgPool,
    row: &TransactionRow,
    matched_on: Vec<&'static str>,
) -> Result<FoundView, CliError> {
    let client: Option<String> = sqlx::query_scalar("SELECT name FROM clients WHERE id = $1")
        .bind(row.client_id)
        .fetch_optional(pool)
        .await?;
    let events = sqlx::query_as::<_, EventRow>(
        "SELECT id, at, source, from_status, to_status, provider_code, detail->>'operator' AS operator, \
           detail->>'reason' AS reason, detail->>'refused' AS refused \
         FROM transaction_events WHERE transaction_id = $1 ORDER BY id",
    )
    .bind(row.id)
    .fetch_all(pool)
    .await?;
    Ok(FoundView {
        matched_on,
        client: client.unwrap_or_else(|| row.client_id.to_string()),
        review_reason: row.review_reason.clone(),
        reviewed_from: row.reviewed_from.clone(),
        check_count: row.check_count,
        next_check_at: row.next_check_at.map(|at| at.to_rfc3339()),
        transaction: TransactionView::from_pb(&row.to_pb()),
        events: events.into_iter().map(EventView::from).collect(),
    })
}

/// Which of a row's references equal `reference`.
fn matched_on(row: &TransactionRow, reference: &str) -> Vec<&'static str> {
    let mut on = Vec::new();
    if Uuid::parse_str(reference).ok() == Some(row.id) {
        on.push("transaction id");
    }
    if row.client_ref == reference {
        on.push("client ref");
    }
    if row.provider_reference == reference {
        on.push("our reference");
    }
    if row.provider_trace.as_deref() == Some(reference) {
        on.push("provider trace");
    }
    if row.serial_number.as_deref() == Some(reference) {
        on.push("serial number");
    }
    on
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    at: chrono::DateTime<chrono::Utc>,
    source: String,
    from_status: Option<String>,
    to_status: Option<String>,
    provider_code: Option<String>,
    operator: Option<String>,
    reason: Option<String>,
    refused: Option<String>,
}

/// One entry of a transaction's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventView {
    /// Its place in the history; the newest is what an operator's decision
    /// is taken on (`review settle --seen-event`).
    pub id: i64,
    pub at: String,
    /// ingress, result, callback, status_check, sweep, review, operator.
    pub source: String,
    pub from_status: Option<String>,
    pub to_status: Option<String>,
    pub provider_code: Option<String>,
    /// An operator's decision: who decided,
    pub operator: Option<String>,
    /// why,
    pub reason: Option<String>,
    /// and why the reconciler refused it, when it did.
    pub refused: Option<String>,
}

impl From<EventRow> for EventView {
    fn from(row: EventRow) -> Self {
        EventView {
            id: row.id,
            at: crate::output::millis(&row.at),
            source: row.source,
            from_status: row.from_status,
            to_status: row.to_status,
            provider_code: row.provider_code,
            operator: row.operator,
            reason: row.reason,
            refused: row.refused,
        }
    }
}

impl EventView {
    /// Who decided and why, for an operator's decision, on one line.
    fn decision(&self) -> Option<String> {
        let operator = self.operator.as_deref()?;
        let why = match (&self.refused, &self.reason) {
            (Some(refused), _) => format!(", refused: {refused}"),
            (None, Some(reason)) => format!(": {reason}"),
            (None, None) => String::new(),
        };
        Some(format!("by {operator}{why}").replace(['\n', '\t'], " "))
    }
}

/// One transaction a reference names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundView {
    /// Which of its references equal the one searched for (empty when it
    /// was not searched for).
    pub matched_on: Vec<&'static str>,
    /// The client it belongs to, by name.
    pub client: String,
    pub review_reason: Option<String>,
    /// The status it had when it was parked for review.
    pub reviewed_from: Option<String>,
    pub check_count: i32,
    pub next_check_at: Option<String>,
    pub transaction: TransactionView,
    pub events: Vec<EventView>,
}

/// What `loketctl find` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindView {
    pub reference: String,
    pub matches: Vec<FoundView>,
}

impl Render for FoundView {
    fn text(&self) -> String {
        let mut head = Lines::new();
        if !self.matched_on.is_empty() {
            head.add("found by", self.matched_on.join(", "));
        }
        head.add("client", &self.client);
        head.opt("REVIEW", self.review_reason.as_ref());
        head.opt("parked from", self.reviewed_from.as_ref());
        if self.transaction.status == "needs_review" {
            if let Some(newest) = self.events.last() {
                head.add(
                    "decide on",
                    format!(
                        "the history up to #{0} (review settle --seen-event {0})",
                        newest.id
                    ),
                );
            }
        }
        if self.check_count > 0 || self.next_check_at.is_some() {
            let next = self
                .next_check_at
                .as_deref()
                .map(|at| format!(", next {at}"))
                .unwrap_or_default();
            head.add(
                "status checks",
                format!("{} so far{next}", self.check_count),
            );
        }
        let mut text = head.finish();
        text.push('\n');
        text.push_str(&self.transaction.text());
        text.push_str("\nhistory:");
        for event in &self.events {
            let change = match (&event.from_status, &event.to_status) {
                (Some(from), Some(to)) if from != to => format!("{from} -> {to}"),
                (_, Some(to)) => to.clone(),
                _ => "-".into(),
            };
            let line = format!(
                "\n  #{:<6} {}  {:<12}  {:<22}  {}",
                event.id,
                event.at,
                event.source,
                change,
                event
                    .decision()
                    .or_else(|| event.provider_code.clone())
                    .unwrap_or_default()
            );
            text.push_str(line.trim_end());
        }
        text
    }
}

impl FindView {
    /// The view when something matched; otherwise the error the binary
    /// ends on. Nothing found is exit code 1 with the reason on stderr and
    /// nothing on stdout, as `loketctl get` of an unknown id is: a script
    /// tells "no such transaction" from a hit by the exit code alone.
    pub fn found_any(self) -> Result<FindView, CliError> {
        if self.matches.is_empty() {
            return Err(CliError::NotFound(format!(
                "no transaction has the reference {:?} (searched: transaction id, client ref, our reference, provider trace, serial number)",
                self.reference
            )));
        }
        Ok(self)
    }
}

impl Render for FindView {
    fn text(&self) -> String {
        self.matches
            .iter()
            .map(FoundView::text)
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}
