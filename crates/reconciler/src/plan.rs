//! What applying one report to one transaction writes: a pure function of the
//! locked row, the report, the clock and the policy. The I/O around it
//! ([`crate::apply`]) only loads the row, writes [`Plan::next`] and the event,
//! and publishes the update, so every rule below is tested without a
//! database.
//!
//! Rules (BRIEF.md, money-safety rules 1, 4, 5, 8):
//! - the status moves only as [`loket_protocol::state::decide`] says;
//! - a final report contradicting a final state parks the transaction in
//!   `needs_review` with a reason naming both, and raises an alert;
//! - provider fields are overwritten when the status moves, and only filled
//!   in (never overwritten) when it does not: a serial number arriving after
//!   `success` is kept, a late `pending` never erases a final code;
//! - pay-in instructions (QR string / VA number / payment URL) are stored
//!   as reported, and instructions already stored are never replaced by a
//!   report without any (nor, when the status does not move, by other ones);
//!   the method recorded with them never changes: a report naming a method
//!   and no instructions (a hosted-page payer's choice, which the provider's
//!   inquiry names) fills it in when none is recorded, keeping the stored
//!   instructions, and a different one is only noted in the event
//!   (`method_differs`);
//! - a reported amount different from ours sets `amount_mismatch` and never
//!   changes the status; only a success or pending report's amount is
//!   compared (an unknown or failed one moved no money we know of), and a
//!   transaction that ends `failed` (a report or an operator's decision) has
//!   the flag cleared, with the clearing in its event;
//! - "the provider has no record of our reference" fails a transaction only
//!   after `not_found_grace` (the provider may not have recorded it yet), and
//!   not before the payment's own expiry plus that grace when the provider
//!   reported one (a QR CPM payment stays unknown until its QR expires, SNAP
//!   spec §2 step 4 and status `07`); never one the provider already
//!   acknowledged as `pending` (that goes to review instead). The clock
//!   restarts only on a report showing the provider holds our reference, or
//!   may from now on (`restarts_the_no_record_clock`), never on an
//!   inconclusive one (a status check that timed out). The failure is
//!   written only with the send journal closed to the transaction in the
//!   same database transaction (`write::close_sends_for_no_record`); when a
//!   send of it was recorded within the grace, the journal stays open, the
//!   report proves nothing (`Report::sent_within_grace`) and the count
//!   starts afresh;
//! - a QR payment held as `success` that the provider then reports cancelled
//!   (`05`) keeps `success` when a cancel loket sent for it has not failed
//!   (`Report::cancelled_by_us`): the cancel records the money's return;
//!   without one, the report contradicts the success;
//! - a provider amount below zero is no amount: it is taken as unreadable
//!   (flagged, deciding nothing), as the connector does;
//! - a change's `updated_at` is never before the row's own (`stamped`): the
//!   clocks that wrote them may differ;
//! - `pending`/`unknown` get a first status check per the provider's
//!   schedule if none is due yet; settled transactions have none.

use crate::schedule::Schedule;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::{from_timestamp, outcome_from_i32, ConversionError};
use loket_protocol::pb::{self, bus};
use loket_protocol::review::{OperatorDecision, Refusal};
use loket_protocol::state::{decide, Decision};
use loket_protocol::{Outcome, TransactionKind, TransactionStatus};
use loket_store::TransactionRow;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

pub use loket_protocol::state::{EXPIRED_CODE, NOT_FOUND_CODE};

/// Where a report came from; the `source` column of `transaction_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A connector's answer to the transaction's own operation.
    Result,
    /// A connector's answer to a status check.
    StatusCheck,
    /// A provider callback.
    Callback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Result => "result",
            Source::StatusCheck => "status_check",
            Source::Callback => "callback",
        }
    }
}

/// One authenticated report about a transaction, normalized (empty strings
/// are `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub event_id: String,
    pub source: Source,
    pub outcome: Outcome,
    pub provider_code: Option<String>,
    pub provider_message: Option<String>,
    pub provider_trace: Option<String>,
    pub serial_number: Option<String>,
    pub provider_amount_minor: Option<i64>,
    /// The provider reported an amount the connector could not read: why.
    pub provider_amount_unreadable: Option<String>,
    /// The provider contradicted itself within this report: why.
    pub contradiction: Option<String>,
    pub bill: Option<pb::BillDetails>,
    pub inquiry_data: BTreeMap<String, String>,
    pub not_found: bool,
    /// The report answers a money-moving request this delivery sent.
    pub sent: bool,
    pub detail: String,
    /// The callback as received, masked (callbacks only).
    pub raw: Option<String>,
    /// Pay-ins: what the payer needs (results only).
    pub payment: Option<pb::PaymentInstructions>,
    /// A status check an unverified callback asked for: the final outcome
    /// that callback claimed (filled in by the reconciler from the event log,
    /// see [`callback_of_check`]).
    pub claimed_by_callback: Option<Outcome>,
    /// A "no record" report only: the send journal holds a send of the
    /// transaction made within `not_found_grace`, so the provider may not
    /// show it yet and the report proves nothing about it (filled in by the
    /// reconciler when the journal would not close, see
    /// `write::close_sends_for_no_record`).
    pub sent_within_grace: bool,
    /// A report that a QR payment we hold as success was cancelled (SNAP
    /// status `05`, see [`may_report_our_cancel`]): a cancel loket sent for
    /// it that has not failed, whose work the report shows (filled in by the
    /// reconciler, see `write::live_cancel_of`). The payment keeps `success`,
    /// as a refunded one does: the cancel, a transaction of its own, records
    /// the money's return.
    pub cancelled_by_us: Option<Uuid>,
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Status-check commands are published with `chk:` message ids, and the
/// connector uses the command's message id (with `:d<n>` added on a
/// redelivery) as the result's `event_id`.
pub fn is_status_check_event(event_id: &str) -> bool {
    event_id.starts_with("chk:")
}

/// The message id of a status check an unverified callback asks for:
/// `chk:<transaction>:cb:<callback event>:<unique>`. Unique per request, so
/// the answer to a check asked again (the provider sent the callback again
/// after the bus's duplicate window) is applied, not dropped as a duplicate.
pub fn callback_check_id(transaction_id: Uuid, callback_event_id: &str) -> String {
    format!(
        "chk:{transaction_id}:cb:{callback_event_id}:{}",
        Uuid::now_v7().simple()
    )
}

/// How long after an unverified callback asked for a status check another
/// callback making the same claim about the same transaction asks for none
/// while that check is unanswered: the check asked first will answer it. A
/// provider repeating its callback with a changed body (each copy a new
/// event), or a sender flooding copies, then costs one check in flight per
/// claim instead of one per copy. Once the check has answered (perhaps
/// before the provider's records caught up with its callback), the next
/// copy asks again.
pub const CALLBACK_RECHECK_SECS: i64 = 30;

/// Why an unverified callback claiming `claim` about `row` asks for no
/// status check, if it asks none (money-safety rule 5: the check is all
/// such a callback can cause). A final transaction is asked again only when
/// the claim contradicts it, since nothing else could change it: a provider
/// reversing itself, or, against a failure for no record at the provider,
/// any claim but failure (the provider holds the transaction after all,
/// [`contradicts_no_record`]). `checked_recently` says a callback with the
/// same claim asked for a check that is still unanswered, less than
/// [`CALLBACK_RECHECK_SECS`] ago.
pub fn callback_check_skipped(
    row: &TransactionRow,
    claim: Option<Outcome>,
    checked_recently: bool,
) -> Option<String> {
    let claimed = claim.map_or("nothing readable", Outcome::as_str);
    if let Some(status) = row.status().filter(|s| s.is_final()) {
        let contradicts = match claim {
            Some(claim) if claim.is_final() => claim.as_str() != status.as_str(),
            _ => failed_for_no_record(row),
        };
        if !contradicts {
            return Some(format!(
                "the transaction is already {status}, which the callback's claim ({claimed}) \
                 does not contradict"
            ));
        }
    }
    checked_recently.then(|| {
        format!(
            "a callback with the same claim ({claimed}) asked for a status check less than \
             {CALLBACK_RECHECK_SECS} s ago"
        )
    })
}

/// The callback event whose check [`callback_check_id`] asked for, when
/// `event_id` answers one (the connector adds `:d<n>` on a redelivery).
pub fn callback_of_check(event_id: &str) -> Option<&str> {
    let rest = event_id.strip_prefix("chk:")?.split_once(':')?.1;
    let rest = rest.strip_prefix("cb:")?;
    let rest = match rest.rsplit_once(":d") {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => rest,
    };
    let (callback, unique) = rest.rsplit_once(':')?;
    (unique.len() == 32 && unique.bytes().all(|b| b.is_ascii_hexdigit())).then_some(callback)
}

impl Report {
    pub fn new(event_id: impl Into<String>, source: Source, outcome: Outcome) -> Self {
        Report {
            event_id: event_id.into(),
            source,
            outcome,
            provider_code: None,
            provider_message: None,
            provider_trace: None,
            serial_number: None,
            provider_amount_minor: None,
            provider_amount_unreadable: None,
            contradiction: None,
            bill: None,
            inquiry_data: BTreeMap::new(),
            not_found: false,
            sent: false,
            detail: String::new(),
            raw: None,
            payment: None,
            claimed_by_callback: None,
            sent_within_grace: false,
            cancelled_by_us: None,
        }
    }

    pub fn from_result(event: &bus::ResultEvent) -> Result<Self, ConversionError> {
        let outcome = outcome_from_i32(event.outcome)?;
        let (provider_amount_minor, provider_amount_unreadable) = reported_amount(
            event.provider_amount.as_ref(),
            &event.provider_amount_unreadable,
        );
        let source = if event.not_found || is_status_check_event(&event.event_id) {
            Source::StatusCheck
        } else {
            Source::Result
        };
        Ok(Report {
            event_id: event.event_id.clone(),
            source,
            outcome,
            provider_code: non_empty(&event.provider_code),
            provider_message: non_empty(&event.provider_message),
            provider_trace: non_empty(&event.provider_trace),
            serial_number: non_empty(&event.serial_number),
            provider_amount_minor,
            provider_amount_unreadable,
            contradiction: non_empty(&event.contradiction),
            bill: event.bill.clone(),
            inquiry_data: event
                .inquiry_data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            not_found: event.not_found,
            sent: event.sent,
            detail: event.detail.clone(),
            raw: None,
            payment: event.payment.clone().filter(reports_something),
            claimed_by_callback: None,
            sent_within_grace: false,
            cancelled_by_us: None,
        })
    }

    /// A callback whose authenticity the receiver verified. Unverified ones
    /// never become a report (they only trigger a status check).
    pub fn from_verified_callback(event: &bus::CallbackEvent) -> Result<Self, ConversionError> {
        let outcome = outcome_from_i32(event.claimed_outcome)?;
        let (provider_amount_minor, provider_amount_unreadable) = reported_amount(
            event.provider_amount.as_ref(),
            &event.provider_amount_unreadable,
        );
        Ok(Report {
            provider_code: non_empty(&event.provider_code),
            provider_trace: non_empty(&event.provider_trace),
            serial_number: non_empty(&event.serial_number),
            raw: non_empty(&event.raw),
            provider_amount_minor,
            provider_amount_unreadable,
            ..Report::new(event.event_id.clone(), Source::Callback, outcome)
        })
    }
}

/// The provider's amount an event carries, and why it could not be read if
/// it could not, by the rule the connector's report follows
/// ([`loket_protocol::conversions::readable_provider_amount`]) and in its
/// words. Every event is held to it here, a callback's too: a negative
/// amount written would break `transactions_provider_amount_not_negative`
/// on every delivery.
fn reported_amount(amount: Option<&pb::Money>, unreadable: &str) -> (Option<i64>, Option<String>) {
    match loket_protocol::conversions::readable_provider_amount(amount.map(|money| money.minor)) {
        Ok(minor) => (minor, non_empty(unreadable)),
        Err(why) => (None, Some(format!("provider amount: {why}"))),
    }
}

/// Whether reported payment instructions say anything at all (a connector
/// may send an all-empty message).
fn reports_something(payment: &pb::PaymentInstructions) -> bool {
    !payment.method.is_empty() || payment.expires_at.is_some() || has_instructions(payment)
}

/// The row's stored payment instructions, if it has any.
fn stored_payment(row: &TransactionRow) -> Option<pb::PaymentInstructions> {
    row.payment
        .as_ref()
        .and_then(loket_store::payment_from_json)
}

/// The method recorded with `stored` payment instructions, if one is.
fn recorded_method(stored: Option<&pb::PaymentInstructions>) -> Option<String> {
    stored
        .map(|payment| payment.method.clone())
        .filter(|method| !method.is_empty())
}

/// Whether instructions tell the payer how to pay.
pub fn has_instructions(payment: &pb::PaymentInstructions) -> bool {
    !payment.qr_string.is_empty()
        || !payment.va_number.is_empty()
        || !payment.payment_url.is_empty()
}

/// What the reconciler needs to know about a provider to plan.
#[derive(Debug, Clone)]
pub struct Policy {
    pub schedule: Schedule,
    pub not_found_grace: chrono::Duration,
}

/// How a report or an operator's decision was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The status moved forward.
    Moved,
    /// The status stayed (duplicate, stale, not forward); fields may have
    /// been filled in.
    Kept,
    /// Reports contradict each other (a final report against a final
    /// state, a provider against itself or against a "no record" failure,
    /// a callback's claim against its status check): `needs_review`,
    /// alert; the plan's alert says which.
    Conflict,
    /// The provider has no record yet; within the grace period.
    NotFoundWaiting,
    /// The provider never received it: `failed` with [`NOT_FOUND_CODE`].
    NotFoundFailed,
    /// The provider acknowledged it once and now has no record: review.
    NotFoundReview,
    /// An operator settled a transaction in `needs_review`.
    Settled,
    /// An operator's decision could not apply; nothing changed.
    Refused,
    /// PostgreSQL refuses the event's own data for good: the transaction
    /// is parked in `needs_review` without it, unless it is there already
    /// or final and not contradicted ([`plan_unwritable`]).
    Unwritable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Moved => "moved",
            Verdict::Kept => "kept",
            Verdict::Conflict => "conflict",
            Verdict::NotFoundWaiting => "not_found_waiting",
            Verdict::NotFoundFailed => "not_found_failed",
            Verdict::NotFoundReview => "not_found_review",
            Verdict::Settled => "settled",
            Verdict::Refused => "refused",
            Verdict::Unwritable => "unwritable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmountMismatch {
    pub expected: i64,
    /// `None`: the provider's amount could not be read.
    pub reported: Option<i64>,
}

/// One row for `transaction_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub source: &'static str,
    pub from_status: Option<TransactionStatus>,
    pub to_status: Option<TransactionStatus>,
    pub provider_code: Option<String>,
    pub detail: Value,
}

/// Everything one report writes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The row as it must be after the report (every mutable column).
    pub next: TransactionRow,
    pub from: TransactionStatus,
    pub to: TransactionStatus,
    pub verdict: Verdict,
    /// Whether any column of the row changed (if not, no UPDATE and no
    /// update message are needed).
    pub changed: bool,
    pub amount_mismatch: Option<AmountMismatch>,
    pub event: EventRecord,
    /// Set when an operator must look (conflict, review); logged as ALERT.
    pub alert: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("transaction {id} has an unreadable status {status:?}")]
    BadStatus { id: String, status: String },
}

/// Tracks whether a row was changed while planning.
struct Writer {
    row: TransactionRow,
    changed: bool,
}

impl Writer {
    fn set<T: PartialEq>(changed: &mut bool, field: &mut T, value: T) {
        if *field != value {
            *field = value;
            *changed = true;
        }
    }

    /// Overwrites when `overwrite`, otherwise fills only an empty field.
    fn merge<T: PartialEq>(
        changed: &mut bool,
        field: &mut Option<T>,
        value: Option<T>,
        overwrite: bool,
    ) {
        if let Some(value) = value {
            if overwrite || field.is_none() {
                Self::set(changed, field, Some(value));
            }
        }
    }

    fn status(&mut self, status: TransactionStatus) {
        Self::set(
            &mut self.changed,
            &mut self.row.status,
            status.as_str().to_string(),
        );
    }

    /// Parks the row in `needs_review` for `reason`, remembering the status
    /// it had (a bill payment parked from `failed` no longer holds its
    /// inquiry: migration 0008).
    fn park_for_review(&mut self, reason: String) {
        let from = self.row.status.clone();
        Self::set(&mut self.changed, &mut self.row.reviewed_from, Some(from));
        self.status(TransactionStatus::NeedsReview);
        Self::set(&mut self.changed, &mut self.row.review_reason, Some(reason));
    }

    fn provider_fields(&mut self, report: &Report, overwrite: bool) {
        let row = &mut self.row;
        let changed = &mut self.changed;
        // A code and its message are one fact: a new code never keeps the
        // previous code's message (a SNAP notify carries no message).
        let new_code = overwrite
            && report.provider_code.is_some()
            && report.provider_code != row.provider_code;
        Self::merge(
            changed,
            &mut row.provider_code,
            report.provider_code.clone(),
            overwrite,
        );
        if new_code {
            Self::set(
                changed,
                &mut row.provider_message,
                report.provider_message.clone(),
            );
        } else {
            Self::merge(
                changed,
                &mut row.provider_message,
                report.provider_message.clone(),
                overwrite,
            );
        }
        Self::merge(
            changed,
            &mut row.provider_trace,
            report.provider_trace.clone(),
            overwrite,
        );
        Self::merge(
            changed,
            &mut row.serial_number,
            report.serial_number.clone(),
            overwrite,
        );
        Self::merge(
            changed,
            &mut row.provider_amount_minor,
            report.provider_amount_minor,
            overwrite,
        );
        if let Some(bill) = &report.bill {
            Self::merge(
                changed,
                &mut row.bill,
                Some(loket_store::bill_to_json(bill)),
                overwrite,
            );
            let expires = bill.expires_at.as_ref().and_then(from_timestamp);
            Self::merge(changed, &mut row.expires_at, expires, overwrite);
        }
        if let Some(payment) = &report.payment {
            let stored = stored_payment(row);
            let recorded = recorded_method(stored.as_ref());
            // Stored instructions give way only to other instructions, and
            // only when the status moves.
            let mut next = match stored.clone() {
                Some(stored)
                    if has_instructions(&stored) && !(overwrite && has_instructions(payment)) =>
                {
                    stored
                }
                _ => payment.clone(),
            };
            // The first method recorded is the one the payer was told (or
            // chose); a later report naming another cannot unsay it.
            next.method = recorded.unwrap_or_else(|| payment.method.clone());
            if stored.as_ref() != Some(&next) {
                Self::set(
                    changed,
                    &mut row.payment,
                    Some(loket_store::payment_to_json(&next)),
                );
            }
        }
        if !report.inquiry_data.is_empty() {
            let object: Map<String, Value> = report
                .inquiry_data
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            Self::merge(
                changed,
                &mut row.inquiry_data,
                Some(Value::Object(object)),
                overwrite,
            );
        }
    }
}

/// Plans the application of `report` to the locked `row`.
pub fn plan(
    row: &TransactionRow,
    report: &Report,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Plan, PlanError> {
    let from = status_of(row)?;
    let mut w = Writer {
        row: row.clone(),
        changed: false,
    };
    let mut alert = None;
    let mut detail = Map::new();
    detail.insert("event_id".into(), json!(report.event_id));
    detail.insert("outcome".into(), json!(report.outcome.as_str()));

    let contradiction = report
        .contradiction
        .as_deref()
        .filter(|_| !from.is_settled());
    let verdict = if let Some(why) = contradiction {
        // Rule 4: sources that contradict each other decide nothing; a
        // person does (a settled transaction is left to the usual rules).
        let reason = format!(
            "the provider contradicts itself: {why} (transaction was {from}, event {})",
            report.event_id
        );
        w.provider_fields(report, false);
        w.park_for_review(reason.clone());
        alert = Some(reason);
        Verdict::Conflict
    } else if report.not_found {
        plan_not_found(&mut w, from, report, now, policy, &mut detail, &mut alert)
    } else {
        if restarts_the_no_record_clock(report) {
            Writer::set(&mut w.changed, &mut w.row.not_found_since, None);
        }
        let decision = if contradicts_no_record(row, report) {
            Decision::Conflict
        } else {
            decide(from, report.outcome)
        };
        match decision {
            Decision::Conflict if expired_by_loket(row) => {
                // loket itself gave up on this inquiry (it moves no money):
                // a late answer changes nothing and is not worth an alert.
                detail.insert(
                    "note".into(),
                    json!("a late answer to an inquiry loket had already expired; kept"),
                );
                Verdict::Kept
            }
            Decision::Conflict if report.cancelled_by_us.is_some() => {
                detail.insert("cancelled_by".into(), json!(report.cancelled_by_us));
                detail.insert(
                    "note".into(),
                    json!("the provider reports the payment cancelled, by loket's own cancel (cancelled_by); kept"),
                );
                Verdict::Kept
            }
            Decision::Move(to) => {
                w.status(to);
                w.provider_fields(report, true);
                if to.is_final() {
                    Writer::set(&mut w.changed, &mut w.row.finalized_at, Some(now));
                }
                Verdict::Moved
            }
            Decision::Keep => {
                w.provider_fields(report, false);
                Verdict::Kept
            }
            Decision::Conflict => {
                // The provider's serial number, its evidence of delivery, is
                // kept even from a report not believed: an operator settling
                // the case failed must then declare it void
                // (`Refusal::HoldsSerialNumber`).
                Writer::merge(
                    &mut w.changed,
                    &mut w.row.serial_number,
                    report.serial_number.clone(),
                    false,
                );
                let kind = if report.outcome.is_final() {
                    "conflicting final reports"
                } else {
                    "failed for no record at the provider, yet the request may have reached it"
                };
                let reason = format!(
                    "{kind}: transaction is {from} (provider code {}) but a {} reports {} (provider code {}, event {})",
                    row.provider_code.as_deref().unwrap_or("none"),
                    report.source.as_str().replace('_', " "),
                    report.outcome,
                    report.provider_code.as_deref().unwrap_or("none"),
                    report.event_id,
                );
                w.park_for_review(reason.clone());
                alert = Some(reason);
                Verdict::Conflict
            }
        }
    };

    let verdict = match open_callback_claim(row, from, report) {
        Some(claim) if verdict == Verdict::Kept => {
            // Rule 4, and rule 1 for the claim: the status check an unverified
            // callback asked for could neither confirm the transaction's
            // final state nor the callback's. A settled transaction gets no
            // scheduled checks, and the provider will not send its callback
            // again (it was acknowledged), so a person decides.
            let reason = format!(
                "a callback claimed {claim} for this {from} transaction (provider code {}), and the status check it asked for could not settle which holds: {} (provider code {}, event {})",
                row.provider_code.as_deref().unwrap_or("none"),
                if report.not_found { "no record" } else { report.outcome.as_str() },
                report.provider_code.as_deref().unwrap_or("none"),
                report.event_id,
            );
            w.park_for_review(reason.clone());
            alert = Some(reason);
            Verdict::Conflict
        }
        _ => verdict,
    };

    let to = w.row.status().unwrap_or(from);
    // Money-safety rule 8: flag, never decide. Only a report saying money
    // moved (success) or is held and will (pending: OkeBayar debits the
    // deposit on acceptance and reports that `harga`) states an amount worth
    // comparing. An unknown report states nothing (OkeBayar's `202`/`240`
    // carry `harga` 0 for a purchase that may never have happened), nor does
    // a definite failure, which moved no money. An amount the provider
    // reported on such a report but the connector could not read cannot be
    // shown to match: flagged alike. A transaction that ends failed charged
    // nothing, so no amount is in question any more.
    let mut amount_mismatch = None;
    if to == TransactionStatus::Failed {
        if clear_amount_mismatch(&mut w.row, &mut detail) {
            w.changed = true;
        }
    } else if let Some(expected) = row
        .amount_minor
        .filter(|_| matches!(report.outcome, Outcome::Success | Outcome::Pending))
    {
        let reported = match (
            &report.provider_amount_unreadable,
            report.provider_amount_minor,
        ) {
            (Some(why), _) => Some((None, json!({ "unreadable": why }))),
            (None, Some(minor)) if minor != expected => Some((Some(minor), json!(minor))),
            (None, _) => None,
        };
        if let Some((reported, shown)) = reported {
            amount_mismatch = Some(AmountMismatch { expected, reported });
            Writer::set(&mut w.changed, &mut w.row.amount_mismatch, true);
            detail.insert(
                "amount_mismatch".into(),
                json!({ "expected_minor": expected, "reported_minor": shown, "currency": row.currency }),
            );
        }
    }

    // Status checks: a first one for a transaction that needs one, none for
    // a settled one.
    match to {
        TransactionStatus::Pending | TransactionStatus::Unknown => {
            if w.row.next_check_at.is_none() {
                let due = policy.schedule.first_due(now, to, w.row.id);
                Writer::set(&mut w.changed, &mut w.row.next_check_at, Some(due));
            }
        }
        TransactionStatus::Success | TransactionStatus::Failed | TransactionStatus::NeedsReview => {
            Writer::set(&mut w.changed, &mut w.row.next_check_at, None);
        }
        TransactionStatus::Received => {}
    }
    if w.changed {
        w.row.updated_at = stamped(row, now);
    }

    detail.insert("verdict".into(), json!(verdict.as_str()));
    let mut put = |key: &str, value: &Option<String>| {
        if let Some(value) = value {
            detail.insert(key.into(), json!(value));
        }
    };
    put("provider_message", &report.provider_message);
    put("provider_trace", &report.provider_trace);
    put("serial_number", &report.serial_number);
    put("raw", &report.raw);
    if let Some(payment) = &report.payment {
        detail.insert("payment".into(), loket_store::payment_to_json(payment));
        if let Some(recorded) = recorded_method(stored_payment(row).as_ref())
            .filter(|recorded| !payment.method.is_empty() && *recorded != payment.method)
        {
            detail.insert(
                "method_differs".into(),
                json!({ "recorded": recorded, "reported": payment.method }),
            );
        }
    }
    if let Some(amount) = report.provider_amount_minor {
        detail.insert("provider_amount_minor".into(), json!(amount));
    }
    if report.not_found {
        detail.insert("not_found".into(), json!(true));
    }
    if !report.detail.is_empty() {
        detail.insert("detail".into(), json!(report.detail));
    }
    if let Some(reason) = &alert {
        detail.insert("alert".into(), json!(reason));
    }

    Ok(Plan {
        event: EventRecord {
            source: report.source.as_str(),
            from_status: Some(from),
            to_status: Some(to),
            provider_code: report.provider_code.clone(),
            detail: Value::Object(detail),
        },
        from,
        to,
        verdict,
        changed: w.changed,
        amount_mismatch,
        next: w.row,
        alert,
    })
}

/// The `updated_at` of a change planned at `now` to `row`: `now`, or just
/// after the row's own when that reads later. The ingress's insert takes
/// PostgreSQL's clock, each reconciler replica its host's, and waiting calls
/// and `Watch` streams order a transaction's states by this time, so it must
/// never go back: behind by more than a result takes to arrive, a clock
/// would hide that result (a pay-in's instructions) from a waiting call.
fn stamped(row: &TransactionRow, now: DateTime<Utc>) -> DateTime<Utc> {
    now.max(row.updated_at + chrono::Duration::microseconds(1))
}

/// Clears the row's `amount_mismatch` flag once the transaction has ended
/// `failed`: nothing was charged, so finance has no amount to reconcile and
/// `loketctl export` must not count it. The event that raised the flag keeps
/// its `amount_mismatch` detail; this one records the clearing beside it, so
/// the history still shows both. Returns whether the row changed.
fn clear_amount_mismatch(row: &mut TransactionRow, detail: &mut Map<String, Value>) -> bool {
    if !row.amount_mismatch {
        return false;
    }
    row.amount_mismatch = false;
    detail.insert(
        "amount_mismatch_cleared".into(),
        json!("the transaction failed: nothing was charged, so no amount is in question"),
    );
    true
}

/// The row's status, which the reconciler must be able to read to plan.
fn status_of(row: &TransactionRow) -> Result<TransactionStatus, PlanError> {
    row.status().ok_or_else(|| PlanError::BadStatus {
        id: row.id.to_string(),
        status: row.status.clone(),
    })
}

/// What an operator's decision writes (`source = operator`). A transaction
/// in `needs_review` takes the decided status, `finalized_at` and, when the
/// decision names one, the serial number (the row holds none or the same
/// one); `review_reason` and `reviewed_from` stay, as the case's history.
/// Any other transaction, or one whose history has moved on past
/// `newest_event` since the operator looked, changes nothing: the event
/// records the refusal and why. `held` is a refusal the row alone cannot
/// show (another payment holds the inquiry this one pays).
pub fn plan_decision(
    row: &TransactionRow,
    decision: &OperatorDecision,
    newest_event: i64,
    held: Option<Refusal>,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    let from = status_of(row)?;
    let refusal = decision
        .refusal(from, row.serial_number.as_deref(), newest_event)
        .or(held);
    let mut next = row.clone();
    let mut detail = Map::new();
    detail.insert("event_id".into(), json!(decision.event_id.to_string()));
    detail.insert("operator".into(), json!(decision.operator));
    detail.insert("decision".into(), json!(decision.status.as_str()));
    detail.insert("reason".into(), json!(decision.reason));
    detail.insert("decided_at".into(), json!(decision.decided_at.to_rfc3339()));
    detail.insert("seen_event".into(), json!(decision.seen_event));
    detail.insert("serial_number".into(), json!(decision.serial_number));
    if decision.void_serial_number {
        detail.insert("void_serial_number".into(), json!(true));
    }
    let (to, verdict) = match &refusal {
        Some(refusal) => {
            detail.insert("refused".into(), json!(refusal.to_string()));
            (from, Verdict::Refused)
        }
        None => {
            next.status = decision.status.as_str().into();
            next.serial_number = decision.serial_number.clone().or(next.serial_number.take());
            if decision.status == TransactionStatus::Failed {
                clear_amount_mismatch(&mut next, &mut detail);
                // Declared void (else refused): a failed transaction shows
                // no serial a client could deliver on; the history keeps it.
                if let Some(voided) = next.serial_number.take() {
                    detail.insert("voided_serial_number".into(), json!(voided));
                }
            }
            next.next_check_at = None;
            next.finalized_at = Some(now);
            next.updated_at = stamped(row, now);
            (decision.status, Verdict::Settled)
        }
    };
    detail.insert("verdict".into(), json!(verdict.as_str()));
    Ok(Plan {
        event: EventRecord {
            source: "operator",
            from_status: Some(from),
            to_status: Some(to),
            provider_code: None,
            detail: Value::Object(detail),
        },
        from,
        to,
        verdict,
        changed: refusal.is_none(),
        amount_mismatch: None,
        next,
        alert: None,
    })
}

/// The final outcome an unverified callback claimed against the settled
/// `from`, when the status check it asked for (`report`) answered neither
/// way: the provider could not be asked (unknown), held the transaction as
/// pending, or had no record of it. No record is no news only after a
/// provider's own definite failure, which some providers do not keep
/// (OkeBayar `203`): a spoofed callback then changes nothing.
fn open_callback_claim(
    row: &TransactionRow,
    from: TransactionStatus,
    report: &Report,
) -> Option<Outcome> {
    let claim = report.claimed_by_callback?;
    let against = match from {
        TransactionStatus::Success => Outcome::Success,
        TransactionStatus::Failed => Outcome::Failed,
        _ => return None,
    };
    if !claim.is_final() || claim == against {
        return None;
    }
    let open = if report.not_found {
        from != TransactionStatus::Failed || failed_for_no_record(row)
    } else {
        matches!(report.outcome, Outcome::Unknown | Outcome::Pending)
    };
    open.then_some(claim)
}

/// Whether `report` shows that the provider holds our reference, or may
/// from now on, so "no record" must be counted afresh from the next
/// not-found: the provider answered with a status of its own (pending,
/// success, failed), named its own id for the transaction
/// (`provider_trace`), or the report answers a request this delivery sent
/// (which may reach the provider's records only now). An inconclusive
/// answer (a status check that timed out, a reply that could not be read,
/// a generic error code) shows none of that, and the clock runs on: else a
/// provider that answers every other check with a timeout would keep a
/// transaction it never received `unknown` until the review limit.
fn restarts_the_no_record_clock(report: &Report) -> bool {
    report.outcome != Outcome::Unknown || report.sent || report.provider_trace.is_some()
}

/// Whether `row` failed because the provider had no record of it
/// ([`NOT_FOUND_CODE`]).
fn failed_for_no_record(row: &TransactionRow) -> bool {
    row.status() == Some(TransactionStatus::Failed)
        && row.provider_code.as_deref() == Some(NOT_FOUND_CODE)
}

/// Whether `report` contradicts the row's failure for "no record at the
/// provider" ([`NOT_FOUND_CODE`]) although it claims no final outcome: the
/// provider holds the transaction as pending, or a request was sent whose
/// outcome is unknown. Either way money may move after all, so the failure
/// goes to review rather than standing unchallenged.
/// The SNAP QR CPM status of a payment a cancel voided (spec §2.6).
pub const QR_CANCELLED_STATUS: &str = "05";

/// Whether `report` may show a cancel loket sent: it says that `row`, a QR
/// payment held as success, was cancelled. The reconciler then looks for
/// such a cancel ([`Report::cancelled_by_us`]); without one the report
/// contradicts the success.
pub fn may_report_our_cancel(row: &TransactionRow, report: &Report) -> bool {
    row.kind == TransactionKind::QrPayment.as_str()
        && row.status() == Some(TransactionStatus::Success)
        && report.outcome == Outcome::Failed
        && report.provider_code.as_deref() == Some(QR_CANCELLED_STATUS)
}

fn contradicts_no_record(row: &TransactionRow, report: &Report) -> bool {
    failed_for_no_record(row)
        && match report.outcome {
            Outcome::Pending => true,
            Outcome::Unknown => report.sent,
            Outcome::Success | Outcome::Failed => false,
        }
}

fn plan_not_found(
    w: &mut Writer,
    from: TransactionStatus,
    report: &Report,
    now: DateTime<Utc>,
    policy: &Policy,
    detail: &mut Map<String, Value>,
    alert: &mut Option<String>,
) -> Verdict {
    use TransactionStatus as S;
    if from.is_settled() {
        // Nothing automatic changes a settled transaction. A provider that
        // forgot a successful one is worth a note for operators.
        if from == S::Success {
            detail.insert(
                "warning".into(),
                json!("status check found no record of a transaction we hold as success"),
            );
        }
        return Verdict::Kept;
    }
    let since = w.row.not_found_since.unwrap_or(now);
    Writer::set(&mut w.changed, &mut w.row.not_found_since, Some(since));
    detail.insert("not_found_since".into(), json!(since.to_rfc3339()));
    let expiry = payment_expiry(&w.row);
    let deadline = not_found_deadline(since, expiry, policy.not_found_grace);
    let waiting = |w: &mut Writer| {
        // The provider may not have recorded it yet. A `received`
        // transaction becomes `unknown` so it gets checked.
        if let Decision::Move(to) = decide(from, Outcome::Unknown) {
            w.status(to);
        }
        Verdict::NotFoundWaiting
    };
    if now <= deadline {
        return waiting(w);
    }
    if report.sent_within_grace && from != S::Pending {
        // The connector sent the request (again) lately, perhaps after the
        // check that found no record: the provider may hold it now, so the
        // count starts afresh from the next "no record".
        Writer::set(&mut w.changed, &mut w.row.not_found_since, None);
        detail.remove("not_found_since");
        detail.insert(
            "note".into(),
            json!("a send was recorded within the grace: no record proves nothing about it yet"),
        );
        return waiting(w);
    }
    if from == S::Pending {
        let reason = format!(
            "the provider acknowledged reference {} as pending, but status checks have found no record of it since {}",
            w.row.provider_reference,
            since.to_rfc3339()
        );
        w.park_for_review(reason.clone());
        *alert = Some(reason);
        return Verdict::NotFoundReview;
    }
    // Received or unknown, and the provider still has no record after the
    // grace period: it never received the request, so no money moved.
    let expired = expiry
        .map(|at| format!(", payment expired {}", at.to_rfc3339()))
        .unwrap_or_default();
    let message = format!(
        "the provider has no record of reference {} (status checks since {}{expired}, grace {} s)",
        w.row.provider_reference,
        since.to_rfc3339(),
        policy.not_found_grace.num_seconds()
    );
    w.status(S::Failed);
    Writer::set(
        &mut w.changed,
        &mut w.row.provider_code,
        Some(NOT_FOUND_CODE.to_string()),
    );
    Writer::set(&mut w.changed, &mut w.row.provider_message, Some(message));
    Writer::set(&mut w.changed, &mut w.row.finalized_at, Some(now));
    Verdict::NotFoundFailed
}

/// The expiry the provider's payment carries (stored with the payment
/// instructions: the QR CPM payment's `expiryTime`, a pay-in order's expiry).
fn payment_expiry(row: &TransactionRow) -> Option<DateTime<Utc>> {
    stored_payment(row)
        .and_then(|payment| payment.expires_at)
        .as_ref()
        .and_then(from_timestamp)
}

/// When "no record" becomes final: `grace` after the first not-found, and
/// never before the payment could no longer happen (its expiry plus `grace`).
fn not_found_deadline(
    since: DateTime<Utc>,
    expiry: Option<DateTime<Utc>>,
    grace: chrono::Duration,
) -> DateTime<Utc> {
    let after_first = since + grace;
    match expiry {
        Some(expiry) => after_first.max(expiry + grace),
        None => after_first,
    }
}

/// An inquiry loket itself failed with [`plan_expiry`]. Only an inquiry:
/// a provider may name a status `EXPIRED` too (Smilepayz), and a
/// contradiction of a payment's failure always goes to review.
fn expired_by_loket(row: &TransactionRow) -> bool {
    row.provider_code.as_deref() == Some(EXPIRED_CODE)
        && row
            .kind()
            .is_some_and(|kind| !kind.operation().moves_money())
}

/// An inquiry left unresolved past `inquiry_timeout`: `failed` / `EXPIRED`.
/// Inquiries move no money, so failing them is safe.
pub fn plan_expiry(
    row: &TransactionRow,
    now: DateTime<Utc>,
    timeout: chrono::Duration,
) -> (TransactionRow, EventRecord) {
    let mut next = row.clone();
    next.status = TransactionStatus::Failed.as_str().into();
    next.provider_code = Some(EXPIRED_CODE.into());
    next.provider_message = Some(format!(
        "inquiry unresolved {} s after it was received (last status {})",
        timeout.num_seconds(),
        row.status
    ));
    next.next_check_at = None;
    next.finalized_at = Some(now);
    next.updated_at = stamped(row, now);
    let event = EventRecord {
        source: "sweep",
        from_status: row.status(),
        to_status: Some(TransactionStatus::Failed),
        provider_code: Some(EXPIRED_CODE.into()),
        detail: json!({ "action": "inquiry_expired", "inquiry_timeout_s": timeout.num_seconds(), "check_count": row.check_count }),
    };
    (next, event)
}

/// A transaction unresolved past `review_after`: `needs_review` with a reason.
pub fn plan_review(
    row: &TransactionRow,
    now: DateTime<Utc>,
    review_after: chrono::Duration,
) -> (TransactionRow, EventRecord, String) {
    let reason = format!(
        "unresolved for more than {} s: still {} after {} status checks and {} dispatches",
        review_after.num_seconds(),
        row.status,
        row.check_count,
        row.dispatch_count
    );
    let mut next = row.clone();
    next.status = TransactionStatus::NeedsReview.as_str().into();
    next.review_reason = Some(reason.clone());
    next.reviewed_from = Some(row.status.clone());
    next.next_check_at = None;
    next.updated_at = stamped(row, now);
    let event = EventRecord {
        source: "review",
        from_status: row.status(),
        to_status: Some(TransactionStatus::NeedsReview),
        provider_code: None,
        detail: json!({ "action": "unresolved_too_long", "reason": reason }),
    };
    (next, event, reason)
}

/// What a report whose own data PostgreSQL refuses for good (`refusal`,
/// see `apply::refused_for_good`) writes instead of itself, so that it is
/// not retried for ever: the transaction parked in `needs_review` with the
/// refusal as its reason, and an event naming the report, its outcome and
/// the refusal. None of the report's provider data is written: that is what
/// cannot be stored. The alert is raised in every case, but two kinds of
/// transaction keep their status and record the event beside it:
/// - one already in review keeps its reason;
/// - a final one (`success`, `failed`), when the report does not
///   contradict it (rule 4: a final state never changes, and a report that
///   could only have filled in a field of it is no case for review). One
///   that does contradict it is parked, as [`plan`] would have parked it.
pub fn plan_unwritable(
    row: &TransactionRow,
    report: &Report,
    refusal: &str,
    now: DateTime<Utc>,
) -> Result<Plan, PlanError> {
    let from = status_of(row)?;
    let final_and_uncontradicted =
        from.is_final() && decide(from, report.outcome) == Decision::Keep;
    let parks = from != TransactionStatus::NeedsReview && !final_and_uncontradicted;
    let reason = format!(
        "a {} reporting {} (event {}) could not be written: PostgreSQL refused its data ({refusal}){}",
        report.source.as_str().replace('_', " "),
        report.outcome,
        report.event_id,
        if parks { String::new() } else { format!("; the transaction stays {from}") },
    );
    let mut w = Writer {
        row: row.clone(),
        changed: false,
    };
    if parks {
        w.park_for_review(reason.clone());
        Writer::set(&mut w.changed, &mut w.row.next_check_at, None);
        w.row.updated_at = stamped(row, now);
    }
    let to = w.row.status().unwrap_or(from);
    Ok(Plan {
        event: EventRecord {
            source: report.source.as_str(),
            from_status: Some(from),
            to_status: Some(to),
            provider_code: None,
            detail: json!({
                "event_id": report.event_id,
                "outcome": report.outcome.as_str(),
                "action": "unwritable",
                "refused": refusal,
                "verdict": Verdict::Unwritable.as_str(),
                "alert": reason,
            }),
        },
        from,
        to,
        verdict: Verdict::Unwritable,
        changed: w.changed,
        amount_mismatch: None,
        next: w.row,
        alert: Some(reason),
    })
}

#[cfg(test)]
pub(crate) mod tests_support;

#[cfg(test)]
mod tests;
