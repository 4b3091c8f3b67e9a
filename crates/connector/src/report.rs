//! What a connector learned from one operation, before it becomes a bus
//! [`ResultEvent`](loket_protocol::pb::bus::ResultEvent).

use loket_protocol::pb::{self, bus};
use loket_protocol::{Money, Operation, Outcome};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub outcome: Outcome,
    pub provider_code: Option<String>,
    pub provider_message: Option<String>,
    pub provider_trace: Option<String>,
    pub serial_number: Option<String>,
    pub provider_amount: Option<Money>,
    /// The provider reported an amount that could not be read: why
    /// ([`Report::amount_unreadable`]).
    pub provider_amount_unreadable: Option<String>,
    /// The provider's answers within this report contradict each other:
    /// why. The reconciler parks the transaction in `needs_review`.
    pub contradiction: Option<String>,
    pub bill: Option<pb::BillDetails>,
    /// Values a later payment must echo verbatim (inquirycode, ref1..3).
    pub inquiry_data: BTreeMap<String, String>,
    /// A status check found no record of our reference at the provider.
    pub not_found: bool,
    /// Every HTTP exchange made for this report, secrets masked.
    pub exchanges: Vec<bus::Exchange>,
    /// Free-text detail for operators (e.g. why a reply was unparseable).
    pub detail: String,
    /// Pay-ins: what the payer needs (QR string, VA number, payment URL).
    pub payment: Option<pb::PaymentInstructions>,
    /// This delivery sent the transaction's money-moving request: the
    /// report answers that send (set by the worker, not by a provider).
    pub sent: bool,
}

impl Report {
    pub fn new(outcome: Outcome) -> Self {
        Report {
            outcome,
            provider_code: None,
            provider_message: None,
            provider_trace: None,
            serial_number: None,
            provider_amount: None,
            provider_amount_unreadable: None,
            contradiction: None,
            bill: None,
            inquiry_data: BTreeMap::new(),
            not_found: false,
            exchanges: Vec::new(),
            detail: String::new(),
            payment: None,
            sent: false,
        }
    }

    /// The provider's `field` carried an amount that could not be read: it
    /// is noted, and the reconciler flags the transaction's amount as not
    /// matching ours (money-safety rule 8), whatever the outcome says.
    pub fn amount_unreadable(&mut self, field: &str, error: impl std::fmt::Display) {
        let why = clip(&format!("{field}: {error}"), 200).to_string();
        push_detail(&mut self.detail, &format!("{why} (amount not used)"));
        self.provider_amount_unreadable = Some(why);
    }

    /// An outcome we cannot know (timeout, garbled reply...), with the reason.
    pub fn unknown(detail: impl Into<String>) -> Self {
        Report {
            detail: detail.into(),
            ..Report::new(Outcome::Unknown)
        }
    }

    /// The report for a command whose request could not be built, so nothing
    /// reached the provider: a definite failure, except for a status check,
    /// which then found nothing out.
    pub fn not_built(operation: Operation, why: impl std::fmt::Display) -> Self {
        let outcome = if operation == Operation::StatusCheck {
            Outcome::Unknown
        } else {
            Outcome::Failed
        };
        Report {
            detail: format!("request not sent: {why}"),
            ..Report::new(outcome)
        }
    }

    /// Passes the free texts of the report (those a provider's reply can
    /// fill, but for the inquiry data a payment echoes) through `mask`, as
    /// its exchanges are. The bill's `extra` holds whatever fields of the
    /// reply a connector does not know (stored in `transactions.bill` and
    /// returned by the API), so each of its values is masked too.
    pub fn mask_texts(&mut self, mask: impl Fn(&str) -> String) {
        let texts = [
            &mut self.provider_code,
            &mut self.provider_message,
            &mut self.provider_trace,
            &mut self.serial_number,
            &mut self.provider_amount_unreadable,
            &mut self.contradiction,
        ];
        for text in texts.into_iter().flatten() {
            *text = mask(text);
        }
        self.detail = mask(&self.detail);
        // Not `inquiry_data`: the payment must send it back verbatim.
        if let Some(bill) = self.bill.as_mut() {
            bill.customer_name = mask(&bill.customer_name);
            for value in bill.extra.values_mut() {
                *value = mask(value);
            }
        }
    }

    /// Adds an operator note to [`Report::detail`], after any earlier one.
    pub fn add_detail(&mut self, note: &str) {
        push_detail(&mut self.detail, note);
    }

    pub fn with_code(mut self, code: impl Into<String>, message: impl Into<String>) -> Self {
        self.provider_code = Some(code.into());
        self.provider_message = Some(message.into());
        self
    }

    pub fn into_event(
        self,
        event_id: String,
        transaction_id: String,
        provider: &str,
        operation: Operation,
    ) -> bus::ResultEvent {
        bus::ResultEvent {
            event_id,
            transaction_id,
            provider: provider.to_string(),
            operation: bus::Operation::from(operation) as i32,
            outcome: pb::Outcome::from(self.outcome) as i32,
            provider_code: self.provider_code.unwrap_or_default(),
            provider_message: self.provider_message.unwrap_or_default(),
            provider_trace: self.provider_trace.unwrap_or_default(),
            serial_number: self.serial_number.unwrap_or_default(),
            provider_amount: self.provider_amount.map(Into::into),
            provider_amount_unreadable: self.provider_amount_unreadable.unwrap_or_default(),
            contradiction: self.contradiction.unwrap_or_default(),
            bill: self.bill,
            inquiry_data: self.inquiry_data.into_iter().collect(),
            exchanges: self.exchanges,
            not_found: self.not_found,
            occurred_at: Some(loket_protocol::conversions::timestamp(chrono::Utc::now())),
            detail: self.detail,
            payment: self.payment,
            sent: self.sent,
        }
    }
}

/// Appends `note` to a `detail` text, separated from any earlier note by `; `.
pub fn push_detail(detail: &mut String, note: &str) {
    if !detail.is_empty() {
        detail.push_str("; ");
    }
    detail.push_str(note);
}

/// Provider text is bounded before a report stores or quotes it.
pub use loket_protocol::text::clip;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_separated() {
        let mut report = Report::unknown("");
        report.add_detail("HTTP 502");
        report.add_detail("reply unreadable");
        assert_eq!(report.detail, "HTTP 502; reply unreadable");
    }

    /// Money-safety rule 7: a secret a provider echoes in a bill field no
    /// connector knows (kept in `bill.extra`, stored and returned by the
    /// API) is masked like the report's other texts; the inquiry data a
    /// payment must send back is left verbatim.
    #[test]
    fn masking_reaches_every_bill_detail_but_not_the_inquiry_data() {
        let mut report = Report::new(Outcome::Success);
        report.bill = Some(pb::BillDetails {
            customer_name: "SITI s3cret".into(),
            extra: [("keterangan".to_string(), "pin s3cret".to_string())]
                .into_iter()
                .collect(),
            ..pb::BillDetails::default()
        });
        report.inquiry_data.insert("ref2".into(), "s3cret".into());
        report.mask_texts(|text| text.replace("s3cret", "***"));
        let bill = report.bill.unwrap();
        assert_eq!(bill.customer_name, "SITI ***");
        assert_eq!(
            bill.extra.get("keterangan").map(String::as_str),
            Some("pin ***")
        );
        assert_eq!(report.inquiry_data["ref2"], "s3cret");
    }

    #[test]
    fn an_unbuilt_request_fails_unless_it_was_a_status_check() {
        let purchase = Report::not_built(Operation::PrepaidPurchase, "account: empty");
        assert_eq!(purchase.outcome, Outcome::Failed);
        assert_eq!(purchase.detail, "request not sent: account: empty");
        let check = Report::not_built(Operation::StatusCheck, "reference: empty");
        assert_eq!(check.outcome, Outcome::Unknown);
    }
}
