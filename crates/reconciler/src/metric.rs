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
/// A final report contradicted a final state (ALERT).
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
/// Scheduler ticks that failed (database or bus unavailable).
pub const TICK_ERRORS: &str = "loket_reconciler_tick_errors_total";
/// Update messages that could not be published after a commit.
pub const UPDATE_PUBLISH_ERRORS: &str = "loket_reconciler_update_publish_errors_total";
/// Scheduler updates published by a later tick, after the publish right
/// after their commit failed or never ran.
pub const UPDATES_REPUBLISHED: &str = "loket_reconciler_updates_republished_total";
/// Old rows of the bookkeeping tables deleted, by `table`
/// (`send_intents`, `applied_events`).
pub const PRUNED: &str = "loket_reconciler_pruned_rows_total";

/// The `kind` label values of [`EVENTS`] and [`UNKNOWN_TRANSACTIONS`].
const EVENT_KINDS: [&str; 3] = ["result", "callback", "decision"];
/// The `verdict` label values of [`EVENTS`].
const EVENT_VERDICTS: [&str; 6] = [
    "changed",
    "unchanged",
    "duplicate",
    "check_requested",
    "callback_noted",
    "unknown_transaction",
];

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
    let labelled: [(&str, &str, &[&'static str]); 5] = [
        (STATUS_CHECKS, "reason", &["schedule", "callback"]),
        (
            REDISPATCHED,
            "reason",
            &["never_sent", "never_dispatched", "no_result"],
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
                "unresolved",
            ],
        ),
        (PRUNED, "table", &["send_intents", "applied_events"]),
    ];
    for (name, label, values) in labelled {
        for value in values {
            metrics::counter!(name, label => *value).increment(0);
        }
    }
}
