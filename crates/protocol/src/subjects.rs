//! NATS subject and stream names: the bus layout in one place.
//!
//! - `LOKET_CMD` (work queue): `loket.cmd.<provider>.<operation>`, one durable
//!   pull consumer per provider shared by that provider's connector replicas.
//! - `LOKET_EVT` (work queue): `loket.evt.<provider>.result`,
//!   `loket.evt.<provider>.callback` and `loket.evt.operator.decision` (an
//!   operator settling a transaction in `needs_review`), consumed by the
//!   reconciler.
//! - `LOKET_UPD` (limits, kept for a while): `loket.upd.<client>`, every
//!   state change of that client's transactions (the transaction id in the
//!   `Loket-Transaction` header and in the payload), for the ingress's
//!   waiters and watchers and for any internal service that wants a durable
//!   feed. One subject per client, not per transaction: nats-server keeps
//!   state for every subject a stream holds, which per transaction would
//!   grow with every purchase for the stream's whole retention.
//! - `loket.rpc.<provider>.balance`: core NATS request/reply, no stream.

use crate::{Operation, Provider};

pub const COMMAND_STREAM: &str = "LOKET_CMD";
pub const EVENT_STREAM: &str = "LOKET_EVT";
pub const UPDATE_STREAM: &str = "LOKET_UPD";

pub const COMMAND_SUBJECTS: &str = "loket.cmd.>";
pub const EVENT_SUBJECTS: &str = "loket.evt.>";
pub const UPDATE_SUBJECTS: &str = "loket.upd.>";

/// The reconciler's durable consumer on [`EVENT_STREAM`].
pub const RECONCILER_CONSUMER: &str = "reconciler";

/// Header carrying the W3C trace context across the bus.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header carrying the transaction id, for operators reading the stream.
pub const TRANSACTION_HEADER: &str = "Loket-Transaction";

pub fn command(provider: Provider, operation: Operation) -> String {
    format!("loket.cmd.{}.{}", provider.as_str(), operation.as_str())
}

pub fn commands_of(provider: Provider) -> String {
    format!("loket.cmd.{}.>", provider.as_str())
}

/// The durable consumer shared by every replica of one provider's connector.
pub fn connector_consumer(provider: Provider) -> String {
    format!("connector-{}", provider.as_str())
}

pub fn result(provider: Provider) -> String {
    format!("loket.evt.{}.result", provider.as_str())
}

pub fn callback(provider: Provider) -> String {
    format!("loket.evt.{}.callback", provider.as_str())
}

/// Where `loketctl review settle` publishes an operator's decision on a
/// transaction in `needs_review` (`bus::OperatorDecision`); inside
/// [`EVENT_SUBJECTS`], so the reconciler's consumer receives it in stream
/// order with the providers' events.
pub fn operator_decision() -> &'static str {
    "loket.evt.operator.decision"
}

/// Where the state changes of `client_id`'s transactions are published.
pub fn update(client_id: &str) -> String {
    format!("loket.upd.{client_id}")
}

/// The client whose updates `subject` carries (`loket.upd.<client>`).
pub fn client_of_update(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("loket.upd.")
        .filter(|client| !client.is_empty() && !client.contains(['.', '*', '>']))
}

pub fn balance_rpc(provider: Provider) -> String {
    format!("loket.rpc.{}.balance", provider.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_layout() {
        assert_eq!(
            command(Provider::OkeBayar, Operation::PrepaidPurchase),
            "loket.cmd.okebayar.purchase"
        );
        assert_eq!(result(Provider::OkeBayar), "loket.evt.okebayar.result");
        assert_eq!(callback(Provider::OkeBayar), "loket.evt.okebayar.callback");
        assert!(commands_of(Provider::SnapQr).starts_with("loket.cmd.snapqr."));
        assert_eq!(operator_decision(), "loket.evt.operator.decision");
    }

    /// The reconciler's consumer takes every subject of the event stream
    /// (`loket.evt.>`): an operator's decision must be one of them, and must
    /// not read as a provider's result or callback.
    #[test]
    fn an_operator_decision_is_an_event_of_no_provider() {
        let prefix = EVENT_SUBJECTS.trim_end_matches('>');
        assert!(operator_decision().starts_with(prefix));
        assert!(!operator_decision().ends_with(".result"));
        assert!(!operator_decision().ends_with(".callback"));
        assert!(Provider::parse(operator_decision().split('.').nth(2).unwrap()).is_err());
    }

    #[test]
    fn an_update_subject_names_its_client_and_nothing_else() {
        let subject = update("0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000");
        assert_eq!(subject, "loket.upd.0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000");
        assert_eq!(
            client_of_update(&subject),
            Some("0191aaaa-bbbb-7ccc-8ddd-eeeeffff0000")
        );
        assert_eq!(client_of_update("loket.upd.c1.t1"), None);
        assert_eq!(client_of_update("loket.upd."), None);
        assert_eq!(client_of_update("loket.upd.>"), None);
        assert_eq!(client_of_update("loket.cmd.okebayar"), None);
    }
}
