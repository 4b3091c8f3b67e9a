//! What a connector learned from one operation, before it becomes a bus
//! [`ResultEvent`](loket_protocol::pb::bus::ResultEvent), and the bound on
//! that event's size ([`MAX_RESULT_EVENT_BYTES`]).

use loket_protocol::conversions::readable_provider_amount;
use loket_protocol::pb::{self, bus};
use loket_protocol::text::shortened;
use loket_protocol::{Money, Operation, Outcome};
use prost::Message as _;
use std::collections::BTreeMap;

/// The largest result event published whole. nats-server refuses a message
/// over its `max_payload` (1 MiB by default), and a result that can never be
/// published leaves its command redelivered, and its provider asked again,
/// for ever. A provider's reply may be 1 MB, and a report may carry its
/// fields (inquiry data, bill details, serial number) beside its exchanges;
/// this leaves room for the headers and a server set a little lower.
pub const MAX_RESULT_EVENT_BYTES: usize = 768 * 1024;

/// How many characters of a provider's message a result carries (stored,
/// shown to clients): every provider's real messages are far shorter, and a
/// reply's whole body posing as one is cut here, for all of them alike.
/// Connectors have masked it before.
const MAX_PROVIDER_MESSAGE_CHARS: usize = 1024;

/// How many characters of each exchange body, error and of the
/// contradiction an oversized result keeps.
const OVERSIZED_KEPT_CHARS: usize = 4 * 1024;

/// The largest payment instructions an oversized result keeps whole (a QR
/// string, VA number and payment URL are far smaller). Larger ones keep
/// only their method and expiry: instructions are never cut.
const OVERSIZED_KEPT_PAYMENT_BYTES: usize = 8 * 1024;

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
    /// The request this report answers never left: the connection was
    /// refused, there was no token to send it with ([`Report::not_sent`]),
    /// or it could not be built ([`Report::not_built`]).
    /// Nothing of it reached the provider. Not carried on the bus: the
    /// worker turns it into `sent` and, for a first send, a failure.
    pub never_left: bool,
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
            never_left: false,
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

    /// A provider amount the shared rule refuses (a negative one:
    /// [`readable_provider_amount`]) is [`Report::amount_unreadable`],
    /// flagged and deciding nothing, rather than carried for the reconciler
    /// to refuse on every delivery.
    fn refuse_a_negative_amount(&mut self) {
        if let Err(why) = readable_provider_amount(self.provider_amount.map(|amount| amount.minor))
        {
            self.provider_amount = None;
            self.amount_unreadable("provider amount", why);
        }
    }

    /// An outcome we cannot know (timeout, garbled reply...), with the reason.
    pub fn unknown(detail: impl Into<String>) -> Self {
        Report {
            detail: detail.into(),
            ..Report::new(Outcome::Unknown)
        }
    }

    /// A request that never left (a connection refused, no access token to
    /// send it with): `unknown` here, as a status check that was not made
    /// found nothing out. For a money-moving request the worker, whose send
    /// journal knows whether an earlier send exists, fails the transaction
    /// when none does: then nothing of it ever reached the provider.
    pub fn not_sent(detail: impl Into<String>) -> Self {
        Report {
            never_left: true,
            ..Report::unknown(detail)
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
            never_left: true,
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
        mut self,
        event_id: String,
        transaction_id: String,
        provider: &str,
        operation: Operation,
    ) -> bus::ResultEvent {
        self.refuse_a_negative_amount();
        fit_for_the_bus(bus::ResultEvent {
            event_id,
            transaction_id,
            provider: provider.to_string(),
            operation: bus::Operation::from(operation) as i32,
            outcome: pb::Outcome::from(self.outcome) as i32,
            provider_code: self.provider_code.unwrap_or_default(),
            provider_message: self
                .provider_message
                .map(|message| shortened(&message, MAX_PROVIDER_MESSAGE_CHARS))
                .unwrap_or_default(),
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
        })
    }
}

/// `event` when it fits in [`MAX_RESULT_EVENT_BYTES`]; otherwise what can be
/// carried of it: `unknown` (what the provider said cannot be carried, so it
/// decides nothing; status checks follow, and a provider that keeps
/// answering that way leaves the transaction to the unresolved sweep and
/// review), the ids, operation, `sent` and provider code, a note in `detail`,
/// the exchanges and any contradiction cut short, the payment instructions
/// ([`kept_payment`]), and none of the other data.
fn fit_for_the_bus(event: bus::ResultEvent) -> bus::ResultEvent {
    let size = event.encoded_len();
    if size <= MAX_RESULT_EVENT_BYTES {
        return event;
    }
    tracing::warn!(
        size,
        transaction_id = %event.transaction_id,
        "the provider's answer is too large to carry on the bus; reported as unknown"
    );
    let cut = |text: &str| shortened(text, OVERSIZED_KEPT_CHARS);
    bus::ResultEvent {
        outcome: pb::Outcome::Unknown as i32,
        provider_code: shortened(&event.provider_code, 64),
        provider_message: String::new(),
        provider_trace: String::new(),
        serial_number: String::new(),
        provider_amount: None,
        provider_amount_unreadable: String::new(),
        contradiction: cut(&event.contradiction),
        bill: None,
        inquiry_data: Default::default(),
        exchanges: event
            .exchanges
            .iter()
            .map(|exchange| bus::Exchange {
                url: shortened(&exchange.url, 512),
                request: cut(&exchange.request),
                response: cut(&exchange.response),
                error: cut(&exchange.error),
                ..exchange.clone()
            })
            .collect(),
        not_found: false,
        detail: format!(
            "the provider's answer made a result of {size} bytes, more than the {MAX_RESULT_EVENT_BYTES} the bus carries: its data was left out and the outcome is unknown"
        ),
        payment: kept_payment(event.payment.clone()),
        ..event
    }
}

/// The payment instructions an oversized result keeps: whole when they are
/// small, as they nearly always are, else only their method and expiry. The
/// reconciler needs the expiry (a SNAP QR CPM payment's `expiryTime`): "no
/// record" fails a payment only after its expiry plus the grace, and
/// without it, after the grace alone, while the issuer may still record
/// the payment (SNAP spec, status `07`).
fn kept_payment(payment: Option<pb::PaymentInstructions>) -> Option<pb::PaymentInstructions> {
    payment.map(|payment| {
        if payment.encoded_len() <= OVERSIZED_KEPT_PAYMENT_BYTES {
            payment
        } else {
            pb::PaymentInstructions {
                method: shortened(&payment.method, 64),
                expires_at: payment.expires_at,
                ..Default::default()
            }
        }
    })
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

/// How many characters of a free text from a reply (a message, an `info`)
/// a report or an error carries. A reply may be 1 MB, and a result event
/// longer than the bus's 1 MB limit can never be published (its command
/// would be redelivered for ever). Values that are data, not notes (the
/// inquiry data, the serial number, the provider's trace), are not cut.
pub const QUOTED_TEXT_CHARS: usize = 256;

/// At most the first [`QUOTED_TEXT_CHARS`] characters of `text`.
pub fn quoted(text: &str) -> String {
    clip(text, QUOTED_TEXT_CHARS).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report too large for the bus (a 1 MB reply's fields copied into
    /// it) is published as a compact `unknown` that keeps what identifies
    /// it, instead of failing to publish for ever.
    #[test]
    fn a_result_too_large_for_the_bus_is_carried_as_unknown() {
        let huge = "9".repeat(MAX_RESULT_EVENT_BYTES);
        let mut report = Report::new(Outcome::Success);
        report.serial_number = Some(huge.clone());
        report.inquiry_data.insert("ref1".into(), huge.clone());
        report.provider_code = Some("00".into());
        report.sent = true;
        report.exchanges.push(bus::Exchange {
            operation: "purchase".into(),
            response: huge.clone(),
            ..bus::Exchange::default()
        });
        let event = report.into_event(
            "e1".into(),
            "t1".into(),
            "okebayar",
            Operation::PrepaidPurchase,
        );
        assert!(
            event.encoded_len() <= 16 * 1024,
            "{} bytes",
            event.encoded_len()
        );
        assert_eq!(event.outcome, pb::Outcome::Unknown as i32);
        assert_eq!(
            (
                event.event_id.as_str(),
                event.transaction_id.as_str(),
                event.provider.as_str()
            ),
            ("e1", "t1", "okebayar")
        );
        assert!(event.sent);
        assert_eq!(event.provider_code, "00");
        assert!(event.serial_number.is_empty() && event.inquiry_data.is_empty());
        assert_eq!(event.exchanges.len(), 1);
        assert!(event.detail.contains("more than the"), "{}", event.detail);

        // A SNAP QR payment keeps its instructions, and with them the
        // expiry its "no record" deadline counts from; instructions too
        // large to carry keep only their method and expiry.
        let expires_at = Some(prost_types::Timestamp {
            seconds: 1_900_000_000,
            nanos: 0,
        });
        for (qr_string, kept_qr) in [("CUSTOMER-QR".to_string(), true), (huge.clone(), false)] {
            let mut report = Report::new(Outcome::Unknown);
            report.exchanges.push(bus::Exchange {
                response: huge.clone(),
                ..bus::Exchange::default()
            });
            report.payment = Some(pb::PaymentInstructions {
                method: "QRCPM".into(),
                qr_string: qr_string.clone(),
                expires_at,
                ..Default::default()
            });
            let event = report.into_event("e4".into(), "t4".into(), "snapqr", Operation::QrPayment);
            assert!(event.detail.contains("more than the"), "{}", event.detail);
            assert!(
                event.encoded_len() <= 32 * 1024,
                "{} bytes",
                event.encoded_len()
            );
            let payment = event.payment.expect("the payment is kept");
            assert_eq!(
                (payment.method.as_str(), payment.expires_at),
                ("QRCPM", expires_at)
            );
            assert_eq!(payment.qr_string == qr_string, kept_qr);
            assert!(kept_qr || payment.qr_string.is_empty(), "never cut");
        }

        // A provider's message is cut however small the rest.
        let mut report = Report::new(Outcome::Failed);
        report.provider_message = Some("x".repeat(100_000));
        let event = report.into_event("e3".into(), "t3".into(), "smilepayz", Operation::PayIn);
        assert!(event.provider_message.chars().count() <= MAX_PROVIDER_MESSAGE_CHARS + 1);
        assert_eq!(event.outcome, pb::Outcome::Failed as i32);

        // One that fits is carried whole.
        let mut report = Report::new(Outcome::Success);
        report.serial_number = Some("SN123".into());
        let event = report.into_event(
            "e2".into(),
            "t2".into(),
            "okebayar",
            Operation::PrepaidPurchase,
        );
        assert_eq!(event.outcome, pb::Outcome::Success as i32);
        assert_eq!(event.serial_number, "SN123");
    }

    /// A negative provider amount (a connector's arithmetic gone wrong) is
    /// carried as unreadable, never as an amount: the reconciler could not
    /// store it (`transactions_provider_amount_not_negative`) and would
    /// retry the result for ever.
    #[test]
    fn a_negative_provider_amount_is_carried_as_unreadable() {
        let mut report = Report::new(Outcome::Success);
        report.provider_amount = Some(Money::idr(-500));
        let event = report.into_event("e5".into(), "t5".into(), "snapqr", Operation::QrRefund);
        assert_eq!(event.provider_amount, None);
        assert!(
            event.provider_amount_unreadable.contains("-500"),
            "{}",
            event.provider_amount_unreadable
        );
        assert!(event.detail.contains("amount not used"), "{}", event.detail);
        assert_eq!(event.outcome, pb::Outcome::Success as i32);

        let mut report = Report::new(Outcome::Success);
        report.provider_amount = Some(Money::idr(0));
        let event = report.into_event("e6".into(), "t6".into(), "snapqr", Operation::QrRefund);
        assert_eq!(event.provider_amount.map(|m| m.minor), Some(0));
        assert!(event.provider_amount_unreadable.is_empty());
    }

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
        assert!(purchase.never_left, "nothing of it reached the provider");
        let check = Report::not_built(Operation::StatusCheck, "reference: empty");
        assert_eq!(check.outcome, Outcome::Unknown);
    }
}
