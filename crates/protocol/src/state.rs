//! The transaction state machine. The reconciler is its only user after a
//! transaction is created; it applies every report through [`decide`] and
//! writes the result with a conditional update, so the rules below are the
//! whole of what can happen to a transaction's status.
//!
//! - `success` and `failed` are final: nothing moves a transaction out of them.
//! - A final report contradicting a final state sends it to `needs_review`.
//! - `needs_review` is final for everything automatic: no report, check or
//!   sweep moves a transaction out of it. An operator settles the case with
//!   the provider and records the outcome with `loketctl review settle`: an
//!   operator's decision ([`settle`]) is the one way out of `needs_review`,
//!   and only into `success` or `failed`; it moves nothing else.
//! - States only move forward: a pending or unknown report never downgrades.

use crate::Outcome;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
    Received,
    Pending,
    Unknown,
    Success,
    Failed,
    NeedsReview,
}

impl TransactionStatus {
    pub const ALL: [TransactionStatus; 6] = [
        TransactionStatus::Received,
        TransactionStatus::Pending,
        TransactionStatus::Unknown,
        TransactionStatus::Success,
        TransactionStatus::Failed,
        TransactionStatus::NeedsReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Received => "received",
            TransactionStatus::Pending => "pending",
            TransactionStatus::Unknown => "unknown",
            TransactionStatus::Success => "success",
            TransactionStatus::Failed => "failed",
            TransactionStatus::NeedsReview => "needs_review",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `success` and `failed`: immutable.
    pub fn is_final(self) -> bool {
        matches!(self, TransactionStatus::Success | TransactionStatus::Failed)
    }

    /// Final, or parked for a human: nothing automatic will change it.
    pub fn is_settled(self) -> bool {
        self.is_final() || self == TransactionStatus::NeedsReview
    }

    /// Whether a provider code with `outcome` explains a transaction in this
    /// status, so its explanation (what happened, what to tell the merchant)
    /// may be shown next to it. Not when they disagree: an operator settled
    /// the transaction against the provider's last report, or the provider
    /// contradicted itself and the transaction waits in `needs_review`, where
    /// the last code's merchant message ("the transaction was successful")
    /// would tell the opposite of what holds.
    pub fn is_explained_by(self, outcome: Outcome) -> bool {
        match self {
            TransactionStatus::Success => outcome == Outcome::Success,
            TransactionStatus::Failed => outcome == Outcome::Failed,
            TransactionStatus::Received
            | TransactionStatus::Pending
            | TransactionStatus::Unknown => {
                matches!(outcome, Outcome::Pending | Outcome::Unknown)
            }
            TransactionStatus::NeedsReview => false,
        }
    }
}

impl fmt::Display for TransactionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What applying one authenticated report to a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to this status.
    Move(TransactionStatus),
    /// Nothing changes (duplicate, stale, or not forward).
    Keep,
    /// A final report contradicts a final state: park for review and alert.
    Conflict,
}

/// `provider_code` the reconciler writes when a status check proved the
/// provider never received the request. Not a provider code.
pub const NOT_FOUND_CODE: &str = "NOT_FOUND";
/// `provider_code` the reconciler writes when an inquiry stayed unresolved
/// too long.
pub const EXPIRED_CODE: &str = "EXPIRED";

/// Applies an authenticated report (a connector result or a verified
/// callback) to the current status.
pub fn decide(current: TransactionStatus, report: Outcome) -> Decision {
    use TransactionStatus as S;
    match (current, report) {
        (S::NeedsReview, _) => Decision::Keep,
        (S::Success, Outcome::Success) | (S::Failed, Outcome::Failed) => Decision::Keep,
        (S::Success, Outcome::Failed) | (S::Failed, Outcome::Success) => Decision::Conflict,
        (S::Success | S::Failed, Outcome::Pending | Outcome::Unknown) => Decision::Keep,
        (_, Outcome::Success) => Decision::Move(S::Success),
        (_, Outcome::Failed) => Decision::Move(S::Failed),
        (S::Received | S::Unknown, Outcome::Pending) => Decision::Move(S::Pending),
        (S::Pending, Outcome::Pending) => Decision::Keep,
        (S::Received, Outcome::Unknown) => Decision::Move(S::Unknown),
        // Pending stays pending when a later check cannot tell: we already
        // know the provider accepted it.
        (S::Pending | S::Unknown, Outcome::Unknown) => Decision::Keep,
    }
}

/// Applies an operator's decision (`decided`: the status the operator
/// settled the case on with the provider) to the current status. Only a
/// transaction parked in `needs_review` moves, and only into a final state;
/// anything else is [`Decision::Keep`] (the reconciler records the refusal).
pub fn settle(current: TransactionStatus, decided: TransactionStatus) -> Decision {
    if current == TransactionStatus::NeedsReview && decided.is_final() {
        Decision::Move(decided)
    } else {
        Decision::Keep
    }
}

#[cfg(test)]
mod explained_tests {
    use super::TransactionStatus::{self, *};
    use crate::Outcome;

    #[test]
    fn only_an_outcome_that_agrees_explains_a_status() {
        let agreeing = |status: TransactionStatus| -> Vec<Outcome> {
            [
                Outcome::Success,
                Outcome::Pending,
                Outcome::Failed,
                Outcome::Unknown,
            ]
            .into_iter()
            .filter(|outcome| status.is_explained_by(*outcome))
            .collect()
        };
        assert_eq!(agreeing(Success), [Outcome::Success]);
        assert_eq!(agreeing(Failed), [Outcome::Failed]);
        for waiting in [Received, Pending, Unknown] {
            assert_eq!(agreeing(waiting), [Outcome::Pending, Outcome::Unknown]);
        }
        assert_eq!(agreeing(NeedsReview), []);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_status() -> impl Strategy<Value = TransactionStatus> {
        proptest::sample::select(TransactionStatus::ALL.to_vec())
    }

    fn any_outcome() -> impl Strategy<Value = Outcome> {
        proptest::sample::select(vec![
            Outcome::Success,
            Outcome::Pending,
            Outcome::Failed,
            Outcome::Unknown,
        ])
    }

    fn apply(current: TransactionStatus, report: Outcome) -> TransactionStatus {
        match decide(current, report) {
            Decision::Move(next) => next,
            Decision::Keep => current,
            Decision::Conflict => TransactionStatus::NeedsReview,
        }
    }

    #[test]
    fn ordinary_lifecycle() {
        use TransactionStatus as S;
        assert_eq!(
            decide(S::Received, Outcome::Pending),
            Decision::Move(S::Pending)
        );
        assert_eq!(
            decide(S::Pending, Outcome::Success),
            Decision::Move(S::Success)
        );
        assert_eq!(
            decide(S::Received, Outcome::Unknown),
            Decision::Move(S::Unknown)
        );
        assert_eq!(
            decide(S::Unknown, Outcome::Failed),
            Decision::Move(S::Failed)
        );
        assert_eq!(decide(S::Success, Outcome::Failed), Decision::Conflict);
        assert_eq!(decide(S::Failed, Outcome::Success), Decision::Conflict);
        assert_eq!(decide(S::Success, Outcome::Pending), Decision::Keep);
    }

    #[test]
    fn an_operator_settles_only_what_is_in_review_and_only_as_final() {
        use TransactionStatus as S;
        for current in S::ALL {
            for decided in S::ALL {
                let expected = if current == S::NeedsReview && decided.is_final() {
                    Decision::Move(decided)
                } else {
                    Decision::Keep
                };
                assert_eq!(settle(current, decided), expected, "{current} by {decided}");
            }
        }
    }

    proptest! {
        /// Operators' decisions mixed into any sequence of reports: a final
        /// state is only ever left for `needs_review`, and only a
        /// transaction in `needs_review` is settled.
        #[test]
        fn operators_never_move_a_final_state(
            start in any_status(),
            steps in proptest::collection::vec((any_outcome(), any_status(), any::<bool>()), 0..12),
        ) {
            let mut current = start;
            for (report, decided, by_operator) in steps {
                let next = if by_operator {
                    match settle(current, decided) {
                        Decision::Move(next) => next,
                        _ => current,
                    }
                } else {
                    apply(current, report)
                };
                if current.is_final() {
                    prop_assert!(next == current || next == TransactionStatus::NeedsReview);
                }
                if by_operator && next != current {
                    prop_assert_eq!(current, TransactionStatus::NeedsReview);
                    prop_assert!(next.is_final());
                }
                current = next;
            }
        }

        /// Whatever sequence of reports arrives, a final state never turns
        /// into another final state.
        #[test]
        fn final_states_are_immutable(start in any_status(), reports in proptest::collection::vec(any_outcome(), 0..12)) {
            let mut current = start;
            let mut first_final = current.is_final().then_some(current);
            for report in reports {
                current = apply(current, report);
                if let Some(final_state) = first_final {
                    prop_assert!(current == final_state || current == TransactionStatus::NeedsReview);
                } else if current.is_final() {
                    first_final = Some(current);
                }
            }
        }

        /// Re-applying the same report is a no-op (idempotence).
        #[test]
        fn applying_twice_equals_once(start in any_status(), report in any_outcome()) {
            let once = apply(start, report);
            prop_assert_eq!(apply(once, report), once);
        }
    }
}
