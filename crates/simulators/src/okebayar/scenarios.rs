//! Scenario rules: the account number (`accnumber`, or `accnumber1` for
//! bills) chooses how the simulator behaves. An account made of the
//! scenario prefix (setting `scenario_prefix`, default `089900000`) and
//! exactly three digits selects the scenario named by those digits; every
//! other account succeeds at once. The table is [`TABLE`] and
//! `crates/simulators/SCENARIOS.md` (a test keeps the two in step).

/// How the simulator behaves for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `000` with a serial number (the default).
    Success,
    /// `001` (success, SN missing); the ledger turns `000` with an SN one
    /// step later, and a `000` callback is sent.
    SuccessNoSn,
    /// `002`; callback `002` after one step, then the ledger turns
    /// `final_code` and a callback with it is sent after two steps.
    Pending { final_code: &'static str },
    /// `003` (first attempt failed, re-queued); `000` + callback one step later.
    Requeued,
    /// An immediate failure with this code (no debit).
    Fail(&'static str),
    /// The purchase succeeds at once but the reply waits `slow_reply_ms`.
    SlowReply,
    /// The purchase succeeds, then the connection is reset without a reply.
    ResetAfterCommit,
    /// The purchase or payment is lost on its way (spec §8.2 "request never
    /// received"): the ledger never sees it, and the connection is reset
    /// without a reply, so a status check finds no record.
    LostRequest,
    /// The purchase succeeds; the reply is cut in the middle (HTTP 200).
    TruncatedReply,
    /// The purchase succeeds; the reply is an HTML `502 Bad Gateway` page.
    HtmlError,
    /// `002`; after one step the ledger turns `000` and the `000` callback
    /// is delivered three times at once.
    DuplicateCallbacks,
    /// `002`; callback `000` after one step, then a stale `002` after two.
    OutOfOrderCallbacks,
    /// `000` at once, then a `000` callback one step later (after final).
    LateCallback,
    /// The ledger records `000` and its callback is delivered before the
    /// synchronous reply, which says `002`.
    CallbackBeforeReply,
    /// `000`, plus a callback about a reference nobody ever sent.
    UnknownReferenceCallback,
    /// The purchase succeeds (ledger `000`), but the reply carries `999`, a
    /// code no table documents (RELIABILITY #16: unknown codes).
    UndocumentedCode,
    /// The reply says `201` (failed), yet the ledger holds `000` with a
    /// serial number, and a `000` callback follows after one step: the
    /// provider contradicts its own failure, a case for an operator
    /// (`needs_review`).
    ContradictedFailure,
    /// Success with `harga`/`balance`/`nominal`/`adminfee` as `11000.00`
    /// (a JSON number in JSON mode).
    DecimalAmounts,
    /// Success with amounts as bare JSON numbers (`11000`) in JSON mode.
    NumericAmounts,
    /// Bill inquiry whose `Inquiryexpired` is `yyMMddhhmmss` (12 digits,
    /// 12-hour `hh`).
    ExpiryTwelveDigits,
    /// Bill inquiry whose `Inquiryexpired` is `yyyy-MM-dd HH:mm:ss.SSS`.
    ExpiryDashed,
    /// Bills: the inquiry succeeds, the payment answers `401` (already paid).
    /// Prepaid: the purchase answers `401` at once; a PLN prepaid inquiry
    /// succeeds.
    BillAlreadyPaid,
    /// Bills: the inquiry succeeds, the payment answers `402` (the biller's
    /// amount changed). Prepaid: the purchase answers `402` at once; a PLN
    /// prepaid inquiry succeeds.
    BillChanged,
    /// Bills: the inquiry reply shows the normal expiry, but the biller
    /// expires it after `short_inquiry_ttl_ms` (per-product expiry, spec §7
    /// `403`), so the payment answers `403`. Prepaid: the purchase answers
    /// `403` at once; a PLN prepaid inquiry succeeds.
    BillExpiresEarly,
}

/// Failures that are the provider's own server fault (spec §7 `202`, `240`:
/// "confirm by cek-status first"): the request failed before the ledger
/// took it, so nothing is recorded and a status check finds no record.
pub const UNRECORDED_FAILURES: &[&str] = &["202", "240"];

/// Codes an account can select for an immediate failure (spec §7).
pub const FAILURE_CODES: &[&str] = &[
    "200", "201", "202", "203", "204", "205", "210", "214", "215", "216", "217", "232", "233",
    "234", "240", "260", "261", "270", "400", "404", "405", "500", "510",
];

/// Selector → behaviour, as documented in `SCENARIOS.md`.
pub const TABLE: &[(&str, &str)] = &[
    ("(any other account)", "000 at once with a serial number; deposit debited"),
    ("000", "000 at once with a serial number"),
    ("001", "001 (no SN); after one step the ledger turns 000 with an SN and a 000 callback is sent"),
    ("002", "002; callback 002 after one step; ledger 000 and callback 000 after two steps"),
    ("012", "002; callback 002 after one step; ledger 201 (deposit refunded) and callback 201 after two steps"),
    ("003", "003; ledger 000 and callback 000 after one step"),
    (
        "200 201 202 203 204 205 210 214 215 216 217 232 233 234 240 260 261 270 400 404 405 500 510",
        "immediate failure with that code, nothing debited (prepaid purchase, prepaid inquiry, bill inquiry); 202 and 240 (server faults) leave no ledger entry, so a status check finds no record",
    ),
    ("401", "bill: inquiry 000, payment answers 401 (already paid); prepaid: purchase answers 401 at once, PLN prepaid inquiry 000"),
    ("402", "bill: inquiry 000, payment answers 402 (bill changed); prepaid: purchase answers 402 at once, PLN prepaid inquiry 000"),
    ("403", "bill: inquiry 000 showing the normal expiry, but it expires after short_inquiry_ttl_ms, so the payment answers 403; prepaid: purchase answers 403 at once, PLN prepaid inquiry 000"),
    ("901", "success committed at once; the reply is sent after slow_reply_ms"),
    ("902", "success committed; the connection is reset without a reply"),
    ("903", "success committed; the reply is truncated in the middle (HTTP 200)"),
    ("904", "success committed; the reply is an HTML 502 Bad Gateway page"),
    ("905", "002; after one step ledger 000 and the 000 callback delivered three times concurrently"),
    ("906", "002; callback 000 after one step, then a stale 002 callback after two steps"),
    ("907", "000 at once; a late 000 callback after one step"),
    ("908", "ledger 000 and its 000 callback delivered before the synchronous reply, which says 002"),
    ("909", "000 at once; after one step a 000 callback about a reference nobody sent"),
    ("910", "success committed (ledger 000); the reply carries 999, a code no table documents"),
    ("911", "the reply says 201 (failed), yet the ledger holds 000 with an SN, and a 000 callback follows after one step: loket parks the transaction in needs_review"),
    ("912", "purchase or bill payment lost on its way: nothing recorded, nothing debited, the connection reset without a reply; a status check finds no record"),
    ("921", "000; harga/balance/nominal/adminfee as 11000.00 (JSON numbers in JSON mode)"),
    ("922", "000; amounts as bare JSON numbers (11000) in JSON mode"),
    ("931", "bill inquiry: Inquiryexpired as yyMMddhhmmss (12 digits, 12-hour hh)"),
    ("932", "bill inquiry: Inquiryexpired as yyyy-MM-dd HH:mm:ss.SSS"),
];

impl Scenario {
    /// The scenario an account selects under `prefix`.
    pub fn for_account(prefix: &str, account: &str) -> Scenario {
        let account = account.trim();
        let Some(selector) = account.strip_prefix(prefix) else {
            return Scenario::Success;
        };
        if selector.len() != 3 || !selector.bytes().all(|b| b.is_ascii_digit()) {
            return Scenario::Success;
        }
        if let Some(code) = FAILURE_CODES.iter().find(|c| **c == selector) {
            return Scenario::Fail(code);
        }
        match selector {
            "001" => Scenario::SuccessNoSn,
            "002" => Scenario::Pending { final_code: "000" },
            "012" => Scenario::Pending { final_code: "201" },
            "003" => Scenario::Requeued,
            "401" => Scenario::BillAlreadyPaid,
            "402" => Scenario::BillChanged,
            "403" => Scenario::BillExpiresEarly,
            "901" => Scenario::SlowReply,
            "902" => Scenario::ResetAfterCommit,
            "903" => Scenario::TruncatedReply,
            "904" => Scenario::HtmlError,
            "905" => Scenario::DuplicateCallbacks,
            "906" => Scenario::OutOfOrderCallbacks,
            "907" => Scenario::LateCallback,
            "908" => Scenario::CallbackBeforeReply,
            "909" => Scenario::UnknownReferenceCallback,
            "910" => Scenario::UndocumentedCode,
            "911" => Scenario::ContradictedFailure,
            "912" => Scenario::LostRequest,
            "921" => Scenario::DecimalAmounts,
            "922" => Scenario::NumericAmounts,
            "931" => Scenario::ExpiryTwelveDigits,
            "932" => Scenario::ExpiryDashed,
            _ => Scenario::Success,
        }
    }

    /// The failure answered at once by a prepaid purchase (`inquiry`
    /// false) or by an inquiry, bill or PLN prepaid (`inquiry` true). The
    /// bill selectors `401`–`403` fail the purchase only: their inquiry
    /// succeeds, so that the bill payment after it can fail.
    pub fn immediate_failure(self, inquiry: bool) -> Option<&'static str> {
        match self {
            Scenario::Fail(code) => Some(code),
            Scenario::BillAlreadyPaid if !inquiry => Some("401"),
            Scenario::BillChanged if !inquiry => Some("402"),
            Scenario::BillExpiresEarly if !inquiry => Some("403"),
            _ => None,
        }
    }

    /// The failure a bill payment answers regardless of its data.
    pub fn forced_payment_failure(self) -> Option<&'static str> {
        match self {
            Scenario::Fail(code) => Some(code),
            Scenario::BillAlreadyPaid => Some("401"),
            Scenario::BillChanged => Some("402"),
            _ => None,
        }
    }

    pub fn amount_style(self) -> AmountStyle {
        match self {
            Scenario::DecimalAmounts => AmountStyle::Decimal,
            Scenario::NumericAmounts => AmountStyle::Number,
            _ => AmountStyle::Plain,
        }
    }

    pub fn expiry_style(self) -> ExpiryStyle {
        match self {
            Scenario::ExpiryTwelveDigits => ExpiryStyle::TwelveDigits,
            Scenario::ExpiryDashed => ExpiryStyle::Dashed,
            _ => ExpiryStyle::Full,
        }
    }

    /// What happens to a money-moving request that passed every check.
    pub fn plan(self) -> Plan {
        let settle_and_call = |at, code| Step {
            at,
            settle: Some(code),
            callback: Some((code, 1)),
            ghost: false,
        };
        let call = |at, code| Step {
            at,
            settle: None,
            callback: Some((code, 1)),
            ghost: false,
        };
        let base = Plan {
            initial: "000",
            reply_code: "000",
            fault: Fault::None,
            steps: Vec::new(),
            callback_before_reply: false,
        };
        match self {
            Scenario::SuccessNoSn => Plan {
                initial: "001",
                reply_code: "001",
                steps: vec![settle_and_call(1, "000")],
                ..base
            },
            Scenario::Pending { final_code } => Plan {
                initial: "002",
                reply_code: "002",
                steps: vec![call(1, "002"), settle_and_call(2, final_code)],
                ..base
            },
            Scenario::Requeued => Plan {
                initial: "003",
                reply_code: "003",
                steps: vec![settle_and_call(1, "000")],
                ..base
            },
            Scenario::SlowReply => Plan {
                fault: Fault::Slow,
                ..base
            },
            Scenario::ResetAfterCommit => Plan {
                fault: Fault::Reset,
                ..base
            },
            Scenario::TruncatedReply => Plan {
                fault: Fault::Truncated,
                ..base
            },
            Scenario::HtmlError => Plan {
                fault: Fault::ErrorPage(502),
                ..base
            },
            Scenario::DuplicateCallbacks => Plan {
                initial: "002",
                reply_code: "002",
                steps: vec![Step {
                    at: 1,
                    settle: Some("000"),
                    callback: Some(("000", 3)),
                    ghost: false,
                }],
                ..base
            },
            Scenario::OutOfOrderCallbacks => Plan {
                initial: "002",
                reply_code: "002",
                steps: vec![settle_and_call(1, "000"), call(2, "002")],
                ..base
            },
            Scenario::LateCallback => Plan {
                steps: vec![call(1, "000")],
                ..base
            },
            Scenario::CallbackBeforeReply => Plan {
                reply_code: "002",
                steps: vec![call(0, "000")],
                callback_before_reply: true,
                ..base
            },
            Scenario::UndocumentedCode => Plan {
                reply_code: "999",
                ..base
            },
            Scenario::ContradictedFailure => Plan {
                reply_code: "201",
                steps: vec![call(1, "000")],
                ..base
            },
            Scenario::UnknownReferenceCallback => Plan {
                steps: vec![Step {
                    at: 1,
                    settle: None,
                    callback: Some(("000", 1)),
                    ghost: true,
                }],
                ..base
            },
            _ => base,
        }
    }
}

/// How the reply breaks, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Slow,
    Reset,
    Truncated,
    /// An HTML error page with this HTTP status instead of the reply.
    ErrorPage(u16),
}

/// One asynchronous step after the commit, `at` × `callback_delay_ms` later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at: u32,
    /// The ledger moves to this code (ignored once the ledger is final).
    pub settle: Option<&'static str>,
    /// A callback with this status, delivered this many times at once.
    pub callback: Option<(&'static str, usize)>,
    /// The callback names a reference nobody sent.
    pub ghost: bool,
}

/// What happens to a money-moving request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The ledger's code at commit.
    pub initial: &'static str,
    /// The code the synchronous reply carries.
    pub reply_code: &'static str,
    pub fault: Fault,
    pub steps: Vec<Step>,
    /// Run the steps (all at `at = 0`) before answering.
    pub callback_before_reply: bool,
}

/// How amounts are written in replies (spec §9 quirks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountStyle {
    /// A string of whole rupiah: `"110000"`.
    Plain,
    /// Two decimals; a JSON number in JSON mode: `11000.00`.
    Decimal,
    /// A bare JSON number in JSON mode: `11000`.
    Number,
}

/// How `Inquiryexpired` is written (spec §9: three formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryStyle {
    /// `YYMMDDHHmmssSSS`.
    Full,
    /// `yyMMddhhmmss`: Java's 12-hour `hh` (01–12) without AM/PM, as the
    /// doc's table has it.
    TwelveDigits,
    /// `yyyy-MM-dd HH:mm:ss.SSS` (the doc's example).
    Dashed,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIX: &str = "089900000";

    #[test]
    fn only_prefix_plus_three_digits_selects() {
        assert_eq!(
            Scenario::for_account(PREFIX, "081234567890"),
            Scenario::Success
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "089900000204"),
            Scenario::Fail("204")
        );
        assert_eq!(
            Scenario::for_account(PREFIX, " 089900000204 "),
            Scenario::Fail("204")
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "0899000002041"),
            Scenario::Success
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "08990000020x"),
            Scenario::Success
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "089900000999"),
            Scenario::Success
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "089900000012"),
            Scenario::Pending { final_code: "201" }
        );
        assert_eq!(
            Scenario::for_account(PREFIX, "089900000902"),
            Scenario::ResetAfterCommit
        );
    }

    #[test]
    fn every_documented_selector_parses_to_what_the_table_says() {
        for (selectors, _) in TABLE.iter().skip(1) {
            for selector in selectors.split_whitespace() {
                let scenario = Scenario::for_account(PREFIX, &format!("{PREFIX}{selector}"));
                if selector != "000" {
                    assert_ne!(
                        scenario,
                        Scenario::Success,
                        "{selector} is documented but not parsed"
                    );
                }
            }
        }
    }

    #[test]
    fn scenarios_md_lists_every_selector() {
        let doc = include_str!("../../SCENARIOS.md");
        for (selectors, _) in TABLE.iter().skip(1) {
            for selector in selectors.split_whitespace() {
                assert!(
                    doc.contains(&format!("`{selector}`")),
                    "SCENARIOS.md misses `{selector}`"
                );
            }
        }
    }

    #[test]
    fn bill_selectors_fail_prepaid_purchases_at_once_but_not_inquiries() {
        let paid = Scenario::BillAlreadyPaid;
        assert_eq!(paid.immediate_failure(false), Some("401"));
        assert_eq!(paid.immediate_failure(true), None);
        assert_eq!(paid.forced_payment_failure(), Some("401"));
        assert_eq!(Scenario::BillExpiresEarly.forced_payment_failure(), None);
    }

    #[test]
    fn pending_plans_end_final() {
        let plan = Scenario::Pending { final_code: "201" }.plan();
        assert_eq!(plan.reply_code, "002");
        assert_eq!(plan.steps.last().and_then(|s| s.settle), Some("201"));
        let before = Scenario::CallbackBeforeReply.plan();
        assert!(before.callback_before_reply);
        assert_eq!((before.initial, before.reply_code), ("000", "002"));
    }
}
