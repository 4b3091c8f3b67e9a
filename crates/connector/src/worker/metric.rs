//! Every metric a connector worker records, and the counters' zero series
//! registered when the worker's service starts ([`register_at_zero`]) or,
//! for the probe, when the provider first answers one
//! ([`register_probes_at_zero`]).

use loket_protocol::{Operation, Outcome, Provider};

/// Commands answered, by `provider`, `operation` and `outcome`.
pub const COMMANDS: &str = "loket_connector_commands_total";
/// Commands that could not be decoded, terminated rather than retried.
pub const POISON: &str = "loket_connector_poison_commands_total";
/// Money-moving commands that asked the provider for the status before
/// sending, by `provider` and `reason` (the values in [`check_first`]).
pub const CHECK_FIRST: &str = "loket_connector_check_first_total";
pub const HANDLE_SECONDS: &str = "loket_connector_handle_seconds";
/// 1 when the provider answered the last connectivity probe, else 0. Not
/// registered ahead: a 0 before the first probe would say "unreachable".
pub const PROVIDER_REACHABLE: &str = "loket_connector_provider_reachable";
/// Connectivity probes, by `result` ([`PROBE_OK`] / [`PROBE_FAILED`]).
pub const PROBES: &str = "loket_connector_probes_total";

pub const PROBE_OK: &str = "ok";
pub const PROBE_FAILED: &str = "failed";

/// The `reason` label values of [`CHECK_FIRST`]: why a money-moving command
/// may have been sent before.
pub mod check_first {
    /// The transaction is settled already: a command for it resurfaced.
    pub const ALREADY_SETTLED: &str = "already settled";
    /// Created before the send horizon: its journal entry may be pruned.
    pub const PAST_HORIZON: &str = "past the send horizon";
    /// JetStream delivered it more than once.
    pub const REDELIVERED: &str = "redelivered";
    /// It waited in the pull buffer so long that its ack deadline may have
    /// passed.
    pub const HELD_PAST_ACK_DEADLINE: &str = "held past the ack deadline";
    /// Published again by the reconciler's sweep.
    pub const RE_DISPATCHED: &str = "re-dispatched";
    /// The send journal recorded a send of it before.
    pub const ALREADY_RECORDED: &str = "already recorded";
}
const CHECK_FIRST_REASONS: [&str; 6] = [
    check_first::ALREADY_SETTLED,
    check_first::PAST_HORIZON,
    check_first::REDELIVERED,
    check_first::HELD_PAST_ACK_DEADLINE,
    check_first::RE_DISPATCHED,
    check_first::ALREADY_RECORDED,
];

/// Every outcome a report can carry, for the `outcome` label of [`COMMANDS`].
const OUTCOMES: [Outcome; 4] = [
    Outcome::Success,
    Outcome::Pending,
    Outcome::Failed,
    Outcome::Unknown,
];

/// Puts `provider`'s worker counters on `/metrics` at zero: [`POISON`],
/// [`COMMANDS`] for each operation and outcome, [`CHECK_FIRST`] for each
/// reason. A counter first seen at its first increment leaves a dashboard or
/// an alert on it with no data until then, and Prometheus's `increase()`
/// cannot count that first increment. Every operation is registered:
/// ASSUMED harmless that a provider's series for an operation it never
/// serves stays at 0, since a connector does not declare which it serves.
/// Call it once the recorder is installed; adding zero changes no value, so
/// a second worker in one process (tests) changes nothing.
pub fn register_at_zero(provider: Provider) {
    let provider = provider.as_str();
    metrics::counter!(POISON).increment(0);
    for operation in Operation::ALL.map(Operation::as_str) {
        for outcome in OUTCOMES.map(Outcome::as_str) {
            metrics::counter!(COMMANDS, "provider" => provider, "operation" => operation, "outcome" => outcome)
                .increment(0);
        }
    }
    for reason in CHECK_FIRST_REASONS {
        metrics::counter!(CHECK_FIRST, "provider" => provider, "reason" => reason).increment(0);
    }
}

/// Puts `provider`'s [`PROBES`] on `/metrics` at zero for both results. Not
/// at start: only the first answer tells whether the provider has a probe
/// at all (SNAP has none), and a provider without one must not show probe
/// series that never move.
pub fn register_probes_at_zero(provider: Provider) {
    for result in [PROBE_OK, PROBE_FAILED] {
        metrics::counter!(PROBES, "provider" => provider.as_str(), "result" => result).increment(0);
    }
}
