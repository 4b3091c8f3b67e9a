//! Every metric the reconciler records, in one place, and the counters'
//! zero series registered when it starts ([`register_at_zero`]).

/// Events taken from `LOKET_EVT`, by `kind` (result/callback/decision) and
/// `verdict`.
pub const EVENTS: &str = "loket_reconciler_events_total";
/// Events terminated: undecodable, or never writable and their transaction
/// not parkable for review either (ALERT).
pub const POISON: &str = "loket_reconciler_poison_events_total";
/// Events already applied (redeliveries, re-published results).
pub const DUPLICATES: &str = "loket_reconciler_duplicate_events_total";
/// Events whose application failed for a transient reason (left for redelivery).
pub const APPLY_ERRORS: &str = "loket_reconciler_apply_errors_total";
/// Time to apply one batch of events, commit and update publishes included.
pub const APPLY_SECONDS: &str = "loket_reconciler_apply_seconds";
/// Events per applied batch.
pub const BATCH_EVENTS: &str = "loket_reconciler_batch_events";
/// Status transitions written, by `from` and `to`.
pub const TRANSITIONS: &str = "loket_reconciler_transitions_total";
/// Reports that contradict each other parked a transaction (ALERT): a
/// final report against a final state, a provider contradicting itself, a
/// report against a failure for "no record", or a callback's claim its
/// status check left open. The log line's `reason` says which.
pub const CONFLICTS: &str = "loket_reconciler_conflicts_total";
/// A provider reported an amount different from ours (money-safety rule 8).
pub const AMOUNT_MISMATCHES: &str = "loket_reconciler_amount_mismatches_total";
/// Results or callbacks naming a transaction or reference we do not have.
pub const UNKNOWN_TRANSACTIONS: &str = "loket_reconciler_unknown_transactions_total";
/// Status-check commands published, by `reason` (schedule/callback).
pub const STATUS_CHECKS: &str = "loket_reconciler_status_checks_total";
/// Commands re-published by the sweep.
pub const REDISPATCHED: &str = "loket_reconciler_redispatched_total";
/// Inquiries failed with `EXPIRED`.
pub const INQUIRIES_EXPIRED: &str = "loket_reconciler_inquiries_expired_total";
/// Operators' decisions on transactions in `needs_review`, by `verdict`
/// (`settled`, or `refused`: the transaction was not in review, or the
/// decision named another serial number, or another payment holds the bill).
pub const OPERATOR_DECISIONS: &str = "loket_reconciler_operator_decisions_total";
/// Transactions moved to `needs_review`, by `reason`.
pub const NEEDS_REVIEW: &str = "loket_reconciler_needs_review_total";
/// Reports whose data PostgreSQL refused for good, dropped without moving
/// their transaction (already in review, or final and not contradicted),
/// by the `status` it kept (ALERT).
pub const REPORTS_DROPPED: &str = "loket_reconciler_unwritable_reports_dropped_total";
/// Scheduler ticks that failed (database or bus unavailable).
pub const TICK_ERRORS: &str = "loket_reconciler_tick_errors_total";
/// Update messages that could not be published after a commit.
pub const UPDATE_PUBLISH_ERRORS: &str = "loket_reconciler_update_publish_errors_total";
/// Scheduler updates published by a later tick, after the publish right
/// after their commit failed or never ran.
pub const UPDATES_REPUBLISHED: &str = "loket_reconciler_updates_republished_total";
/// PostgreSQL's clock minus this host's, in seconds, as the last scheduler
/// tick measured it (the reconciler keeps PostgreSQL's time; see
/// [`crate::clock`]).
pub const CLOCK_OFFSET_SECONDS: &str = "loket_reconciler_clock_offset_seconds";
/// Old rows of the bookkeeping tables deleted, by `table` ([`pruned_table`]).
pub const PRUNED: &str = "loket_reconciler_pruned_rows_total";

/// The `table` label values of [`PRUNED`]: the tables the scheduler prunes,
/// by their names in the database.
pub mod pruned_table {
    pub const SEND_INTENTS: &str = "send_intents";
    pub const APPLIED_EVENTS: &str = "applied_events";
}

/// The `kind` label values of [`EVENTS`] and [`UNKNOWN_TRANSACTIONS`]: what
/// the event was.
pub mod event_kind {
    pub const RESULT: &str = "result";
    pub const CALLBACK: &str = "callback";
    pub const DECISION: &str = "decision";
}
const EVENT_KINDS: [&str; 3] = [
    event_kind::RESULT,
    event_kind::CALLBACK,
    event_kind::DECISION,
];

/// The `verdict` label values of [`EVENTS`]: what applying the event did.
pub mod event_verdict {
    pub const CHANGED: &str = "changed";
    pub const UNCHANGED: &str = "unchanged";
    pub const DUPLICATE: &str = "duplicate";
    pub const CHECK_REQUESTED: &str = "check_requested";
    pub const CALLBACK_NOTED: &str = "callback_noted";
    pub const UNKNOWN_TRANSACTION: &str = "unknown_transaction";
}
const EVENT_VERDICTS: [&str; 6] = [
    event_verdict::CHANGED,
    event_verdict::UNCHANGED,
    event_verdict::DUPLICATE,
    event_verdict::CHECK_REQUESTED,
    event_verdict::CALLBACK_NOTED,
    event_verdict::UNKNOWN_TRANSACTION,
];

/// The `reason` label values of [`STATUS_CHECKS`]: the scheduler found the
/// check due, or a callback asked for it.
pub mod check_reason {
    pub const SCHEDULE: &str = "schedule";
    pub const CALLBACK: &str = "callback";
}

/// The `reason` label values of [`REDISPATCHED`]: what the sweep found
/// missing.
pub mod redispatch_reason {
    /// `unknown`, the provider has no record of it and the send journal
    /// shows no connector ever sent it.
    pub const NEVER_SENT: &str = "never_sent";
    /// `received` and never published by the ingress.
    pub const NEVER_DISPATCHED: &str = "never_dispatched";
    /// `received`, published, and no result came back in time.
    pub const NO_RESULT: &str = "no_result";
}

/// The `reason` of [`NEEDS_REVIEW`] when the scheduler parks a transaction
/// unresolved past its time limit (the other reasons are plan verdicts).
pub const UNRESOLVED: &str = "unresolved";

/// Puts every counter above on `/metrics` at zero, each labelled one with
/// the label values known before anything happened. A counter first seen
/// at its first increment leaves a dashboard or an alert on it with no data
/// until then, and Prometheus's `increase()` cannot count that first
/// increment (the series has no earlier sample to rise from).
/// [`TRANSITIONS`] is left out: its `from`/`to` pairs are whatever the plans
/// produce, not a list known up front. Call it once the recorder is
/// installed; adding zero never resets a counter, so a second run in one
/// process (tests) changes nothing.
pub fn register_at_zero() {
    use crate::plan::Verdict;
    use loket_protocol::TransactionStatus;

    for name in [
        POISON,
        DUPLICATES,
        APPLY_ERRORS,
        TICK_ERRORS,
        UPDATE_PUBLISH_ERRORS,
        UPDATES_REPUBLISHED,
    ] {
        metrics::counter!(name).increment(0);
    }
    for kind in EVENT_KINDS {
        for verdict in EVENT_VERDICTS {
            metrics::counter!(EVENTS, "kind" => kind, "verdict" => verdict).increment(0);
        }
        metrics::counter!(UNKNOWN_TRANSACTIONS, "kind" => kind).increment(0);
    }
    for provider in loket_protocol::Provider::ALL.map(loket_protocol::Provider::as_str) {
        for name in [CONFLICTS, AMOUNT_MISMATCHES, INQUIRIES_EXPIRED] {
            metrics::counter!(name, "provider" => provider).increment(0);
        }
    }
    let labelled: [(&str, &str, &[&'static str]); 6] = [
        (
            STATUS_CHECKS,
            "reason",
            &[check_reason::SCHEDULE, check_reason::CALLBACK],
        ),
        (
            REDISPATCHED,
            "reason",
            &[
                redispatch_reason::NEVER_SENT,
                redispatch_reason::NEVER_DISPATCHED,
                redispatch_reason::NO_RESULT,
            ],
        ),
        (
            OPERATOR_DECISIONS,
            "verdict",
            &[Verdict::Settled.as_str(), Verdict::Refused.as_str()],
        ),
        // What parks a transaction besides a conflict (counted in
        // CONFLICTS): a plan's verdict, or the scheduler's time limit.
        (
            NEEDS_REVIEW,
            "reason",
            &[
                Verdict::NotFoundReview.as_str(),
                Verdict::Unwritable.as_str(),
                UNRESOLVED,
            ],
        ),
        (
            REPORTS_DROPPED,
            "status",
            &[
                TransactionStatus::Success.as_str(),
                TransactionStatus::Failed.as_str(),
                TransactionStatus::NeedsReview.as_str(),
            ],
        ),
        (
            PRUNED,
            "table",
            &[pruned_table::SEND_INTENTS, pruned_table::APPLIED_EVENTS],
        ),
    ];
    for (name, label, values) in labelled {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
}
