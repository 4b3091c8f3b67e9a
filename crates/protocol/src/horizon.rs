//! The send horizon: how long after its transaction was created a
//! money-moving request may still be sent without first asking the provider,
//! and so how long the record that it was sent (`send_intents`) must be kept.
//!
//! A connector decides "send" or "ask first" from the send journal. The
//! journal cannot grow for ever, so the reconciler prunes records older than
//! its retention, which must stay well above this horizon (it refuses a
//! retention below [`MIN_SEND_RECORD_RETENTION`]). A command about a
//! transaction older than the horizon therefore never trusts the journal's
//! silence: it starts with a status check, and when the provider has no
//! record it is not sent either, so a pruned record can never lead to a
//! second request. A first dispatch leaves within milliseconds of creation;
//! only a command that surfaces again much later (a restarted nats-server,
//! an operator replaying a stream) meets this rule.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// Money-moving requests are sent only for transactions younger than this.
pub const SEND_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// The least time a send record is kept: twice the horizon.
pub const MIN_SEND_RECORD_RETENTION: Duration = Duration::from_secs(2 * 24 * 3600);
const _: () = assert!(MIN_SEND_RECORD_RETENTION.as_secs() >= 2 * SEND_HORIZON.as_secs());

/// Whether a transaction created at `created_at` may still have its
/// money-moving request sent at `now`. Unknown creation times (an older
/// publisher) count as too old: the safe side is to ask first.
pub fn may_send(created_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let Some(created_at) = created_at else {
        return false;
    };
    let horizon = chrono::Duration::from_std(SEND_HORIZON).expect("a day fits");
    now.signed_duration_since(created_at) < horizon
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transactions_younger_than_the_horizon_may_be_sent() {
        let now = Utc::now();
        let ago = |hours: i64| Some(now - chrono::Duration::hours(hours));
        assert!(may_send(Some(now), now));
        assert!(may_send(ago(23), now));
        assert!(!may_send(ago(24), now));
        assert!(!may_send(ago(24 * 30), now));
        assert!(!may_send(None, now), "an unknown age is too old");
    }
}
