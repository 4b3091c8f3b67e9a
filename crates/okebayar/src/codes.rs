//! OkeBayar status codes → outcomes, through the shared code catalogue
//! (`loket_protocol::catalogue`, spec §7). This module holds no code table of
//! its own: it only picks the operation the code answered and applies the
//! two connector-side rules the catalogue cannot know:
//!
//! - a code we cannot even read (not 3 digits, garbled) is
//!   [`Outcome::Unknown`] — never failed (money-safety rule 1);
//! - on a status check the code may describe either the original
//!   transaction or a rejection of the status request itself (bad signature,
//!   bad format…). The catalogue reads the code for a status query, where a
//!   rejected request means "unknown"; only when that reading is not unknown is
//!   the code read for the original operation.

use loket_connector::report::clip;
use loket_protocol::catalogue::{self, CodeOperation, Explanation};
use loket_protocol::{Operation, Outcome, Provider};

/// The catalogue's answer for one code, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub outcome: Outcome,
    /// The catalogue's text for the code, when it explained it.
    pub meaning: Option<String>,
    /// Set when the code could not be explained (then the outcome is unknown).
    pub problem: Option<String>,
}

impl Classification {
    fn from_explanation(explanation: &Explanation) -> Self {
        Classification {
            outcome: explanation.outcome,
            meaning: Some(explanation.provider_message.clone()).filter(|m| !m.is_empty()),
            problem: None,
        }
    }

    fn unreadable(code: &str, error: impl std::fmt::Display) -> Self {
        Classification {
            outcome: Outcome::Unknown,
            meaning: None,
            problem: Some(format!(
                "status code {:?} not understood: {error}",
                clip(code, 32)
            )),
        }
    }
}

/// Classifies `code` answered to `operation` (for [`Operation::StatusCheck`]
/// use [`classify_status_check`]).
pub fn classify(code: &str, operation: CodeOperation) -> Classification {
    match catalogue::explain(Provider::OkeBayar, code, Some(operation)) {
        Ok(explanation) => Classification::from_explanation(&explanation),
        Err(error) => Classification::unreadable(code, error),
    }
}

/// "Already paid / inquiry invalid" (spec §7).
const ALREADY_PAID: &str = "401";

/// Classifies the reply to a money-moving request (a purchase or a bill
/// payment). Spec §7 gives `401` as F/U: failed, unless we paid ourselves
/// before (an attempt that timed out). On the transaction's first send
/// ever (`first_send`: the send journal has no earlier one) that cannot be,
/// so the bill was paid elsewhere, or the inquiry a PLN token purchase
/// names is invalid: failed, as on an inquiry. On any later send, `unknown`
/// and a status check.
pub fn classify_money_request(
    code: &str,
    operation: Operation,
    first_send: bool,
) -> Classification {
    if first_send && code == ALREADY_PAID {
        return classify(code, CodeOperation::BillInquiry);
    }
    classify(code, CodeOperation::from(operation))
}

/// "Success, SN missing (non-final by rule)" (spec §7).
pub const SUCCESS_SERIAL_MISSING: &str = "001";

/// How a prepaid purchase's success that carries no serial number reads,
/// whether its own reply or a status check about it said so: as
/// [`SUCCESS_SERIAL_MISSING`] (spec §5.A and §7: `000` is "success, SN
/// given"; without the SN — a PLN token, a voucher code — nothing can be
/// delivered, and a final success would stop the checks that could still
/// bring it). Pending whatever the catalogue's row for `001` becomes: the
/// status checks go on, and nothing is refunded.
pub fn success_without_serial_number() -> Classification {
    let as_001 = classify(SUCCESS_SERIAL_MISSING, CodeOperation::Purchase);
    Classification {
        outcome: Outcome::Pending,
        meaning: as_001.meaning,
        problem: None,
    }
}

/// Classifies the `transactionstatus` a status check reported about a
/// transaction whose own operation was `original`.
pub fn classify_status_check(code: &str, original: Operation) -> Classification {
    let as_query = classify(code, CodeOperation::StatusCheck);
    if as_query.outcome == Outcome::Unknown {
        return as_query;
    }
    let original = match original {
        // A status check about a status check is meaningless; read it as a
        // status query (cautious).
        Operation::StatusCheck => return as_query,
        other => CodeOperation::from(other),
    };
    classify(code, original)
}

/// Classifies a callback's `status` (a claim only: OkeBayar callbacks are
/// unsigned).
pub fn classify_callback(code: &str) -> Classification {
    classify(code, CodeOperation::Callback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_table_through_the_catalogue() {
        let purchase = CodeOperation::Purchase;
        assert_eq!(classify("000", purchase).outcome, Outcome::Success);
        for pending in ["001", "002", "003"] {
            assert_eq!(
                classify(pending, purchase).outcome,
                Outcome::Pending,
                "{pending}"
            );
        }
        for failed in ["203", "204", "205", "207", "211"] {
            assert_eq!(
                classify(failed, purchase).outcome,
                Outcome::Failed,
                "{failed}"
            );
        }
        assert_eq!(classify("208", purchase).outcome, Outcome::Unknown);
        let meaning = classify("203", purchase).meaning.unwrap();
        assert!(!meaning.is_empty());
    }

    #[test]
    fn unreadable_codes_are_unknown_never_failed() {
        for garbled in ["", "abc", "0000", "2O3", "<html>", "20"] {
            let c = classify(garbled, CodeOperation::Purchase);
            assert_eq!(c.outcome, Outcome::Unknown, "{garbled:?}");
            assert!(c.problem.is_some());
        }
    }

    #[test]
    fn status_check_reads_the_original_operation_but_not_a_rejected_query() {
        assert_eq!(
            classify_status_check("000", Operation::PrepaidPurchase).outcome,
            Outcome::Success
        );
        assert_eq!(
            classify_status_check("002", Operation::PrepaidPurchase).outcome,
            Outcome::Pending
        );
        assert_eq!(
            classify_status_check("204", Operation::PrepaidPurchase).outcome,
            Outcome::Failed
        );
        // A rejected status request says nothing about the purchase.
        for rejected in ["207", "211", "212"] {
            assert_eq!(
                classify_status_check(rejected, Operation::PrepaidPurchase).outcome,
                Outcome::Unknown,
                "{rejected}"
            );
        }
    }
}
