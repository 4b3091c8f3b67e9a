//! Tests of the code catalogue: completeness against the four specs' tables
//! (the code lists below are written out from the specs, independently of the
//! data files), structural decoding, operation context, input errors, provider
//! guessing and the data files themselves.

use proptest::prelude::*;

use super::table::{Spec, Table};
use super::*;
use crate::{pb, Operation, Outcome, Provider};

use CodeOperation as Op;
use Provider::{Doku, OkeBayar, Smilepayz, SnapQr};

fn ex(provider: Provider, code: &str, op: Option<CodeOperation>) -> Explanation {
    explain(provider, code, op).unwrap_or_else(|e| panic!("{provider} {code} {op:?}: {e}"))
}

fn outcome(provider: Provider, code: &str, op: Option<CodeOperation>) -> Outcome {
    ex(provider, code, op).outcome
}

fn assert_complete(e: &Explanation, what: &str) {
    assert!(e.in_catalogue, "{what}: not in the catalogue: {e:?}");
    assert!(
        !e.provider_message.trim().is_empty(),
        "{what}: no provider message"
    );
    assert!(
        !e.operator_action.trim().is_empty(),
        "{what}: no operator action"
    );
    assert!(
        !e.merchant_message_en.trim().is_empty(),
        "{what}: no English merchant message"
    );
    assert!(
        !e.merchant_message_id.trim().is_empty(),
        "{what}: no Indonesian merchant message"
    );
    assert_eq!(
        e.retry_safe,
        e.retry.is_safe(),
        "{what}: retry_safe disagrees with retry"
    );
}

// ---------------------------------------------------------------- 1. completeness

/// okebayar.md §7 (260/261 and 216/217 are separate codes).
const OKEBAYAR_CODES: &[&str] = &[
    "000", "001", "002", "003", "200", "201", "202", "203", "204", "205", "206", "207", "208",
    "210", "211", "212", "213", "214", "215", "216", "217", "232", "233", "234", "240", "241",
    "260", "261", "270", "400", "401", "402", "403", "404", "405", "500", "510",
];

/// doku-biller.md §4.
const DOKU_CODES: &[&str] = &[
    "0000", "5586", "U000", "U001", "U002", "U003", "U004", "U101", "U102", "U103", "IT01", "IT02",
    "IT03", "IT04", "IT05", "IT06", "IT07", "IT08", "IT09", "SY00", "SY01", "SY06",
];

/// snap-qr-cpm.md §6: every (HTTP, case) of the table, on the services the
/// row is stated for (payment 60 where the row is general), plus the
/// service-specific readings (200 on 61, 404/01 on 61/62/80, 404/18 on 62/80,
/// 409/01 on 80, 500 on 59, token errors on 73).
const SNAP_RESPONSE_CODES: &[&str] = &[
    "2006000", "2006100", "2005900", "2006200", "2008000", "2007300", "2007900", //
    "2026000", //
    "4006000", "4006001", "4006002", //
    "4016000", "4016001", "4016002", "4016003", "4016004", //
    "4017300", "4017301", "4017302", "4017303", "4017304", //
    "4036000", "4036001", "4036002", "4036003", "4036004", "4036005", "4036006", "4036007",
    "4036008", "4036009", "4036010", "4036011", "4036012", "4036013", "4036014", "4036015",
    "4036016", "4036017", "4036018", "4036019", "4036020", "4036021", "4036022", "4036023", //
    "4046000", "4046001", "4046002", "4046003", "4046004", "4046005", "4046006", "4046007",
    "4046008", "4046009", "4046010", "4046011", "4046012", "4046013", "4046014", "4046015",
    "4046016", "4046017", "4046018", "4046019", //
    "4046101", "4046201", "4048001", "4046218", "4048018", //
    "4056200", "4056201", //
    "4096000", "4096001", "4098001", //
    "4296000", //
    "5006000", "5006001", "5006002", "5005900", "5005901", "5005902", //
    "5046000",
];

/// snap-qr-cpm.md §5 latestTransactionStatus.
const SNAP_STATUSES: &[&str] = &["00", "01", "02", "03", "04", "05", "06", "07"];

/// smilepayz.md §6 `code` values.
const SMILEPAYZ_CODES: &[&str] = &[
    "00", "01", "10", "11", "12", "13", "14", "15", "16", "20", "99",
];

/// smilepayz.md §5 statuses.
const SMILEPAYZ_STATUSES: &[&str] = &["INIT", "PROCESSING", "SUCCESS", "FAILED", "EXPIRED"];

/// smilepayz.md §6 `responseCode` rows, one per message-level variant, with
/// the message as Smilepayz sends it.
const SMILEPAYZ_RESPONSE_CODES: &[(&str, &str)] = &[
    ("2009000", "Successful"),
    ("2009100", "Successful"),
    ("2009200", "Successful"),
    ("4009001", "Invalid Field Format [orderNo]"),
    ("4009101", "Invalid request parameter"),
    ("4009001", "Unsupported area"),
    ("4009001", "Unsupported currency"),
    ("4009001", "Currency not match with area"),
    ("4009101", "Invalid amount"),
    ("4009001", "Duplicate pay order"),
    ("4009101", "Duplicate payout order"),
    ("4009002", "Invalid Mandatory Field [payer.phone]"),
    ("4049001", "Invalid Routing"),
    ("4049102", "Partner :20001 Not Found"),
    ("4019000", "Unauthorized"),
    ("4019101", "Invalid Token"),
    ("4299000", "TOO_MANY_REQUESTS"),
    ("4299100", "TOO_MANY_REQUESTS"),
    ("4299200", "TOO_MANY_REQUESTS"),
    ("4039000", "Transaction Expired"),
    ("4039001", "Do Not Honor"),
    ("4039102", "Risk decline"),
    ("4039002", "Merchant invalid"),
    ("4039002", "Order failed"),
    ("4039102", "Operation not allowed in current status"),
    ("4039003", "Merchant Blacklisted"),
    ("4039104", "Insufficient configuration"),
    ("4039004", "No active channel"),
    ("4009103", "Insufficient Balance"),
    ("5029100", "External error"),
    ("5029100", "Channel timeout"),
    ("5029000", "Unknown status"),
    ("5029000", "Callback notify failed"),
    ("5009000", "Payment method inactive"),
    ("5009100", "Failed to generate order number"),
    ("5009000", "Unable to create order"),
    ("5009100", "Channel error"),
    ("5009000", "System error"),
    ("5009000", "Pay order not found"),
    ("5009200", "Order not found"),
];

#[test]
fn every_spec_code_is_in_the_catalogue_with_outcome_action_and_messages() {
    let mut checked = 0;
    for code in OKEBAYAR_CODES {
        for op in [
            None,
            Some(Op::Purchase),
            Some(Op::BillInquiry),
            Some(Op::BillPayment),
        ] {
            assert_complete(&ex(OkeBayar, code, op), &format!("okebayar {code} {op:?}"));
            checked += 1;
        }
    }
    for code in DOKU_CODES {
        for op in [
            None,
            Some(Op::BillInquiry),
            Some(Op::BillPayment),
            Some(Op::Advice),
        ] {
            assert_complete(&ex(Doku, code, op), &format!("doku {code} {op:?}"));
            checked += 1;
        }
    }
    for code in SNAP_RESPONSE_CODES {
        let e = ex(SnapQr, code, None);
        assert_complete(&e, &format!("snapqr {code}"));
        assert!(
            e.operation.is_some(),
            "snapqr {code}: the service names the operation"
        );
        checked += 1;
    }
    for code in SNAP_STATUSES {
        assert_complete(
            &ex(SnapQr, code, Some(Op::QrQuery)),
            &format!("snapqr status {code}"),
        );
        assert_complete(
            &explain_qr_status(code).unwrap(),
            &format!("snapqr status {code}"),
        );
        checked += 2;
    }
    for code in SMILEPAYZ_CODES {
        for op in [
            None,
            Some(Op::PayIn),
            Some(Op::PayOut),
            Some(Op::InquiryStatus),
        ] {
            assert_complete(
                &ex(Smilepayz, code, op),
                &format!("smilepayz code {code} {op:?}"),
            );
            checked += 1;
        }
    }
    for status in SMILEPAYZ_STATUSES {
        assert_complete(
            &ex(Smilepayz, status, Some(Op::InquiryStatus)),
            &format!("smilepayz {status}"),
        );
        assert_complete(
            &ex(Smilepayz, &status.to_lowercase(), Some(Op::Callback)),
            &format!("smilepayz {status}"),
        );
        checked += 2;
    }
    for (code, message) in SMILEPAYZ_RESPONSE_CODES {
        let e = explain_with_message(Smilepayz, code, None, message).unwrap();
        assert_complete(&e, &format!("smilepayz {code} {message:?}"));
        assert!(
            !e.provider_message.contains("not recognised"),
            "smilepayz {code} {message:?}: the message variant was not recognised: {e:?}"
        );
        checked += 1;
    }
    // The spec tables' sizes, so a shortened list is noticed.
    assert_eq!(
        [
            OKEBAYAR_CODES.len(),
            DOKU_CODES.len(),
            SNAP_RESPONSE_CODES.len(),
            SNAP_STATUSES.len()
        ],
        [37, 22, 83, 8]
    );
    assert_eq!(
        [
            SMILEPAYZ_CODES.len(),
            SMILEPAYZ_STATUSES.len(),
            SMILEPAYZ_RESPONSE_CODES.len()
        ],
        [11, 5, 40]
    );
    assert_eq!(checked, 37 * 4 + 22 * 4 + 83 + 8 * 2 + 11 * 4 + 5 * 2 + 40);
}

#[test]
fn spec_outcomes_of_key_codes() {
    // A sample of the specs' outcome column, so a data edit that flips one shows up.
    let cases: &[(Provider, &str, Option<CodeOperation>, Outcome)] = &[
        (OkeBayar, "000", Some(Op::Purchase), Outcome::Success),
        (OkeBayar, "002", Some(Op::Purchase), Outcome::Pending),
        (OkeBayar, "003", Some(Op::Purchase), Outcome::Pending),
        (OkeBayar, "203", Some(Op::Purchase), Outcome::Failed),
        (OkeBayar, "403", Some(Op::BillPayment), Outcome::Failed),
        (Doku, "0000", Some(Op::BillPayment), Outcome::Success),
        (Doku, "5586", Some(Op::BillPayment), Outcome::Pending),
        (Doku, "IT03", Some(Op::BillPayment), Outcome::Unknown),
        (Doku, "IT08", Some(Op::BillPayment), Outcome::Failed),
        (Doku, "SY06", Some(Op::BillPayment), Outcome::Failed),
        (SnapQr, "2006000", None, Outcome::Success),
        (SnapQr, "2026000", None, Outcome::Pending),
        (SnapQr, "4046014", None, Outcome::Unknown),
        (SnapQr, "4096000", None, Outcome::Unknown),
        (SnapQr, "4096001", None, Outcome::Success),
        (SnapQr, "4296000", None, Outcome::Failed),
        (SnapQr, "5006001", None, Outcome::Unknown),
        (SnapQr, "5046000", None, Outcome::Unknown),
        (SnapQr, "00", None, Outcome::Success),
        (SnapQr, "03", None, Outcome::Pending),
        (SnapQr, "04", None, Outcome::Success),
        (SnapQr, "05", None, Outcome::Failed),
        (SnapQr, "06", Some(Op::QrQuery), Outcome::Failed),
        (SnapQr, "07", Some(Op::QrQuery), Outcome::Unknown),
        (Smilepayz, "2009000", None, Outcome::Pending),
        (Smilepayz, "4009103", None, Outcome::Failed),
        (Smilepayz, "4299100", None, Outcome::Unknown),
        (Smilepayz, "5029100", None, Outcome::Unknown),
        (Smilepayz, "01", None, Outcome::Pending),
        (Smilepayz, "15", None, Outcome::Unknown),
        (
            Smilepayz,
            "SUCCESS",
            Some(Op::InquiryStatus),
            Outcome::Success,
        ),
        (
            Smilepayz,
            "FAILED",
            Some(Op::InquiryStatus),
            Outcome::Failed,
        ),
        (Smilepayz, "EXPIRED", Some(Op::Callback), Outcome::Failed),
        (Smilepayz, "INIT", Some(Op::PayIn), Outcome::Pending),
    ];
    for (provider, code, op, want) in cases {
        assert_eq!(
            outcome(*provider, code, *op),
            *want,
            "{provider} {code} {op:?}"
        );
    }
    let variant = |code, msg| {
        explain_with_message(Smilepayz, code, None, msg)
            .unwrap()
            .outcome
    };
    assert_eq!(variant("4009001", "Duplicate pay order"), Outcome::Unknown);
    assert_eq!(
        variant("4009001", "Invalid Field Format [orderNo]"),
        Outcome::Failed
    );
    assert_eq!(
        variant("4039102", "Operation not allowed in current status"),
        Outcome::Unknown
    );
    assert_eq!(variant("4039102", "Risk decline"), Outcome::Failed);
    // Without the message, the cautious reading.
    assert_eq!(outcome(Smilepayz, "4009001", None), Outcome::Unknown);
    assert_eq!(outcome(Smilepayz, "4039002", None), Outcome::Unknown);
}

/// The spec lists `4039000 Transaction Expired` for a pay-in (service 90)
/// alone. The same case code from a pay-out is not listed, so it reads as
/// any unlisted rejection of a money-moving call does, unknown, whatever its
/// message says: before, the pay-in's row answered it (failed).
#[test]
fn smilepayz_transaction_expired_is_a_pay_in_code_alone() {
    let e = explain_with_message(Smilepayz, "4039000", None, "Transaction Expired").unwrap();
    assert_eq!((e.in_catalogue, e.outcome), (true, Outcome::Failed));
    for message in ["Forbidden", "Transaction Expired"] {
        let e = explain_with_message(Smilepayz, "4039100", None, message).unwrap();
        assert_eq!(
            (e.in_catalogue, e.outcome),
            (false, Outcome::Unknown),
            "{message}"
        );
    }
    assert_eq!(ex(Smilepayz, "4039100", None).outcome, Outcome::Unknown);
    let e = explain_with_message(Smilepayz, "14", Some(Op::PayOut), "Transaction Expired").unwrap();
    assert_eq!(e.outcome, Outcome::Unknown);
    let e = explain_with_message(Smilepayz, "14", Some(Op::PayIn), "Transaction Expired").unwrap();
    assert_eq!(e.outcome, Outcome::Failed);
}

#[test]
fn smilepayz_two_digit_code_with_message_reads_like_its_response_code() {
    let e =
        explain_with_message(Smilepayz, "10", Some(Op::PayOut), "Insufficient Balance").unwrap();
    assert_eq!(
        (e.code.as_str(), e.outcome, e.category),
        ("10", Outcome::Failed, Category::Balance)
    );
    let e = explain_with_message(Smilepayz, "10", Some(Op::PayIn), "Duplicate pay order").unwrap();
    assert_eq!(
        (e.outcome, e.category),
        (Outcome::Unknown, Category::Duplicate)
    );
    let e = explain_with_message(Smilepayz, "14", Some(Op::PayIn), "Transaction Expired").unwrap();
    assert_eq!(e.outcome, Outcome::Failed);
    let e = explain_with_message(Smilepayz, "10", Some(Op::PayIn), "something new").unwrap();
    assert_eq!(
        (e.outcome, e.provider_message.starts_with("Bad request")),
        (Outcome::Unknown, true)
    );
}

/// A 2-digit `code` whose message matches variants of several case codes of
/// its HTTP class takes the most cautious of them, not the first in the data
/// file: `403xx00 "expired"` (failed) is listed before `403xx02 "not
/// allowed"` (unknown: the order is in a state we do not know).
#[test]
fn smilepayz_two_digit_code_matching_several_variants_takes_the_most_cautious() {
    let message = "Transaction expired: operation not allowed in current status";
    for op in [
        None,
        Some(Op::PayIn),
        Some(Op::PayOut),
        Some(Op::InquiryStatus),
    ] {
        let e = explain_with_message(Smilepayz, "14", op, message).unwrap();
        assert_eq!(
            (e.outcome, e.provider_message.as_str()),
            (Outcome::Unknown, "Operation not allowed in current status"),
            "{op:?}"
        );
    }
}

// ---------------------------------------------------------------- 2. structural decoding

#[test]
fn unknown_snap_codes_are_decoded_from_their_structure() {
    let e = ex(SnapQr, "5006099", None);
    assert!(!e.in_catalogue);
    assert_eq!(
        (e.outcome, e.operation),
        (Outcome::Unknown, Some(Op::QrPayment))
    );
    assert!(
        e.provider_message.contains("HTTP 500"),
        "{}",
        e.provider_message
    );
    assert!(
        e.provider_message.contains("service 60 (QR CPM payment)"),
        "{}",
        e.provider_message
    );
    assert!(
        e.provider_message.contains("case 99"),
        "{}",
        e.provider_message
    );

    assert_eq!(ex(SnapQr, "2006055", None).outcome, Outcome::Unknown);
    assert_eq!(ex(SnapQr, "2026055", None).outcome, Outcome::Pending);
    assert_eq!(ex(SnapQr, "5036000", None).outcome, Outcome::Unknown);
    assert_eq!(ex(SnapQr, "5046099", None).outcome, Outcome::Unknown);
    assert_eq!(ex(SnapQr, "4086000", None).outcome, Outcome::Unknown);
    // 409/01 is only listed for generate/payment/cancel/refund: on a token call it is decoded, cautiously.
    let e = ex(SnapQr, "4097301", None);
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Unknown));
    // An unlisted 4xx: cautious on a payment or a query, failed on a call that moves no money.
    assert_eq!(ex(SnapQr, "4036099", None).outcome, Outcome::Unknown);
    assert_eq!(ex(SnapQr, "4036199", None).outcome, Outcome::Unknown);
    let e = ex(SnapQr, "4035999", None);
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Failed));
    // A service that is not SNAP's.
    let e = ex(SnapQr, "4005500", Some(Op::QrPayment));
    assert!(!e.in_catalogue);
    assert!(
        e.provider_message
            .contains("service 55 (not a snapqr service)"),
        "{}",
        e.provider_message
    );
    assert_eq!(e.outcome, Outcome::Unknown);
    // An unlisted status value.
    let e = ex(SnapQr, "08", Some(Op::QrQuery));
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Unknown));
}

#[test]
fn unknown_smilepayz_codes_are_decoded_from_their_structure() {
    let e = ex(Smilepayz, "5039100", None);
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Unknown));
    assert!(
        e.provider_message.contains("service 91 (pay-out)"),
        "{}",
        e.provider_message
    );
    assert_eq!(ex(Smilepayz, "4009199", None).outcome, Outcome::Unknown); // pay-out moves money
    assert_eq!(ex(Smilepayz, "4009299", None).outcome, Outcome::Unknown); // a query
                                                                          // An unlisted rejection of a call that moves no money is a failure.
    let e = ex(Smilepayz, "4005599", Some(Op::Balance));
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Failed));
    let e = ex(Smilepayz, "30", Some(Op::PayIn));
    assert_eq!((e.in_catalogue, e.outcome), (false, Outcome::Unknown));
    let e = ex(Smilepayz, "REFUNDED", Some(Op::InquiryStatus));
    assert_eq!(
        (e.in_catalogue, e.outcome, e.code.as_str()),
        (false, Outcome::Unknown, "REFUNDED")
    );
}

/// RELIABILITY #16: an unlisted rejection of a pay-in (service 90) is
/// `unknown` and a status check, as on a pay-out: a second order could be
/// paid twice. The catalogue's money-moving operations are the bus's.
#[test]
fn an_unlisted_smilepayz_pay_in_rejection_is_unknown_not_failed() {
    for code in ["4009099", "4039005", "4049009"] {
        for op in [None, Some(Op::PayIn)] {
            let e = ex(Smilepayz, code, op);
            assert_eq!(
                (e.in_catalogue, e.outcome, e.retry),
                (false, Outcome::Unknown, Retry::QueryFirst),
                "{code} {op:?}"
            );
        }
    }
    for operation in Operation::ALL {
        let op = CodeOperation::from(operation);
        assert_eq!(op.operation(), Some(operation));
        assert_eq!(op.moves_money(), operation.moves_money(), "{op}");
    }
}

#[test]
fn unknown_doku_codes_are_decoded_by_prefix() {
    for (code, category) in [
        ("UE01", Category::System),
        ("U099", Category::UserInput),
        ("U199", Category::UserInput),
        ("IT99", Category::Integration),
        ("SY99", Category::ProviderOutage),
        ("ZZ12", Category::System),
    ] {
        let inq = ex(Doku, code, Some(Op::BillInquiry));
        assert_eq!(
            (inq.in_catalogue, inq.outcome, inq.category),
            (false, Outcome::Failed, category),
            "{code}"
        );
        for op in [Some(Op::BillPayment), Some(Op::Advice), None] {
            let e = ex(Doku, code, op);
            assert_eq!(
                (e.in_catalogue, e.outcome),
                (false, Outcome::Unknown),
                "{code} {op:?}"
            );
            assert!(
                e.operator_action.contains("advice"),
                "{}",
                e.operator_action
            );
        }
    }
    // Lower case is accepted and reported upper case.
    assert_eq!(ex(Doku, "ue01", None).code, "UE01");
    assert!(ex(Doku, "it04", Some(Op::BillPayment)).in_catalogue);
}

#[test]
fn unknown_okebayar_codes_are_pending_or_unknown_never_failed() {
    for code in ["004", "099", "150"] {
        let e = ex(OkeBayar, code, Some(Op::Purchase));
        assert_eq!(
            (e.in_catalogue, e.outcome),
            (false, Outcome::Pending),
            "{code}"
        );
    }
    // OkeBayar's rule calls these final failures; RELIABILITY #16 and
    // money-safety rule 1: an unknown code fails nothing, it is checked.
    for code in ["209", "299", "520", "999"] {
        for op in [Op::Purchase, Op::BillPayment, Op::StatusCheck] {
            let e = ex(OkeBayar, code, Some(op));
            assert_eq!(
                (e.in_catalogue, e.outcome),
                (false, Outcome::Unknown),
                "{code} {op:?}"
            );
            assert!(
                e.operator_action.contains("checks the status"),
                "{}",
                e.operator_action
            );
        }
    }
}

fn any_operation() -> impl Strategy<Value = Option<CodeOperation>> {
    prop_oneof![
        Just(None),
        proptest::sample::select(CodeOperation::ALL.to_vec()).prop_map(Some)
    ]
}

proptest! {
    #[test]
    fn no_5xx_response_code_is_ever_failed(
        http in 500u16..600,
        service in 0u8..100,
        case in 0u8..100,
        provider in proptest::sample::select(vec![SnapQr, Smilepayz]),
        op in any_operation(),
        message in "\\PC{0,40}",
    ) {
        let code = format!("{http}{service:02}{case:02}");
        // Operations that do not apply to the provider are refused, never guessed.
        if let Ok(e) = explain_with_message(provider, &code, op, &message) {
            prop_assert_ne!(e.outcome, Outcome::Failed, "{} {} {:?} {:?}: {:?}", provider, code, op, message, e);
        }
    }

    #[test]
    fn timeout_class_codes_are_never_failed(
        http in proptest::sample::select(vec![408u16, 409, 504]),
        service in proptest::sample::select(vec!["59", "60", "61", "62", "73", "79", "80", "90", "91", "92"]),
        case in 0u8..100,
        provider in proptest::sample::select(vec![SnapQr, Smilepayz]),
    ) {
        let code = format!("{http}{service}{case:02}");
        let e = explain(provider, &code, None).unwrap();
        // 409xx01 on a money-moving call is "an earlier attempt succeeded", the only non-unknown reading.
        prop_assert_ne!(e.outcome, Outcome::Failed, "{} {}: {:?}", provider, code, e);
    }

    #[test]
    fn smilepayz_server_and_timeout_codes_are_never_failed(
        code in proptest::sample::select(vec!["15", "20", "99", "13"]),
        op in proptest::sample::select(vec![None, Some(Op::PayIn), Some(Op::PayOut), Some(Op::InquiryStatus)]),
        message in "\\PC{0,40}",
    ) {
        let e = explain_with_message(Smilepayz, code, op, &message).unwrap();
        prop_assert_ne!(e.outcome, Outcome::Failed);
    }

    #[test]
    fn no_unmapped_doku_code_is_failed_on_payment_or_advice(
        suffix in "[0-9A-Z]{2}",
        op in proptest::sample::select(vec![None, Some(Op::BillPayment), Some(Op::Advice), Some(Op::Purchase), Some(Op::StatusCheck), Some(Op::Callback)]),
    ) {
        let e = explain(Doku, &format!("UE{suffix}"), op).unwrap();
        prop_assert_ne!(e.outcome, Outcome::Failed, "UE{} {:?}", suffix, op);
    }

    #[test]
    fn explain_never_panics_and_answers_or_names_the_problem(
        provider in proptest::sample::select(Provider::ALL.to_vec()),
        code in "\\PC{0,10}",
        op in any_operation(),
    ) {
        match explain(provider, &code, op) {
            Ok(e) => prop_assert!(!e.operator_action.is_empty()),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

// ---------------------------------------------------------------- 3. operation context

#[test]
fn snap_404xx18_fails_a_payment_but_completes_a_cancel_or_refund() {
    let pay = ex(SnapQr, "4046018", None);
    let cancel = ex(SnapQr, "4046218", None);
    let refund = ex(SnapQr, "4048018", None);
    assert_eq!(
        (pay.outcome, pay.operation),
        (Outcome::Failed, Some(Op::QrPayment))
    );
    assert_eq!(
        (cancel.outcome, cancel.operation),
        (Outcome::Success, Some(Op::QrCancel))
    );
    assert_eq!(
        (refund.outcome, refund.operation),
        (Outcome::Success, Some(Op::QrRefund))
    );
    // The service code decides over the operation passed.
    assert_eq!(
        outcome(SnapQr, "4046018", Some(Op::QrRefund)),
        Outcome::Failed
    );
    assert_eq!(
        outcome(SnapQr, "4048018", Some(Op::QrPayment)),
        Outcome::Success
    );
}

#[test]
fn snap_404xx01_is_unknown_on_a_query_and_failed_on_cancel_or_refund() {
    assert_eq!(outcome(SnapQr, "4046101", None), Outcome::Unknown);
    assert_eq!(outcome(SnapQr, "4046201", None), Outcome::Failed);
    assert_eq!(outcome(SnapQr, "4048001", None), Outcome::Failed);
}

/// 208 never fails a transaction: on a money-moving call the original
/// exists and did not fail; on an inquiry it is loket's own earlier send of
/// the same inquiry (references derive from the transaction), which the
/// provider answered, so failing would contradict that answer when it
/// arrived (a conflict, `needs_review`).
#[test]
fn okebayar_208_is_unknown_on_money_moving_calls_and_inquiries() {
    assert_eq!(
        outcome(OkeBayar, "208", Some(Op::Purchase)),
        Outcome::Unknown
    );
    assert_eq!(
        outcome(OkeBayar, "208", Some(Op::BillPayment)),
        Outcome::Unknown
    );
    assert_eq!(
        outcome(OkeBayar, "208", Some(Op::PrepaidInquiry)),
        Outcome::Unknown
    );
    assert_eq!(
        outcome(OkeBayar, "208", Some(Op::BillInquiry)),
        Outcome::Unknown
    );
    let inquiry = ex(OkeBayar, "208", Some(Op::BillInquiry));
    assert!(
        inquiry.operator_action.contains("inquires again"),
        "{}",
        inquiry.operator_action
    );
    let purchase = ex(OkeBayar, "208", Some(Op::Purchase));
    assert!(
        purchase.operator_action.contains("status"),
        "{}",
        purchase.operator_action
    );
    assert!(!purchase.retry_safe);
    // Without the operation: unknown either way, the money-moving reading.
    let none = ex(OkeBayar, "208", None);
    assert_eq!(none.outcome, Outcome::Unknown);
    assert_eq!(none.operator_action, purchase.operator_action);
}

#[test]
fn okebayar_401_is_nothing_due_on_inquiry_and_check_status_on_payment() {
    let inquiry = ex(OkeBayar, "401", Some(Op::BillInquiry));
    assert_eq!(inquiry.outcome, Outcome::Failed);
    assert!(
        inquiry.operator_action.contains("nothing is due"),
        "{}",
        inquiry.operator_action
    );
    let payment = ex(OkeBayar, "401", Some(Op::BillPayment));
    assert_eq!(payment.outcome, Outcome::Unknown);
    assert!(
        payment.operator_action.contains("check the status"),
        "{}",
        payment.operator_action
    );
    assert_eq!(outcome(OkeBayar, "401", None), Outcome::Unknown);
    // From the bus operation type.
    assert_eq!(
        outcome(OkeBayar, "401", Some(Operation::BillPayment.into())),
        Outcome::Unknown
    );
    assert_eq!(
        outcome(OkeBayar, "001", Some(Op::Purchase)),
        Outcome::Pending
    );
    assert_eq!(outcome(OkeBayar, "001", None), Outcome::Pending);
}

#[test]
fn doku_codes_depend_on_the_operation() {
    assert_eq!(
        outcome(Doku, "IT02", Some(Op::BillPayment)),
        Outcome::Failed
    );
    assert_eq!(outcome(Doku, "IT02", Some(Op::Advice)), Outcome::Unknown);
    assert_eq!(
        outcome(Doku, "SY00", Some(Op::BillInquiry)),
        Outcome::Failed
    );
    assert_eq!(
        outcome(Doku, "SY00", Some(Op::BillPayment)),
        Outcome::Unknown
    );
    assert_eq!(outcome(Doku, "SY00", Some(Op::Advice)), Outcome::Unknown);
    assert_eq!(
        outcome(Doku, "IT09", Some(Op::BillPayment)),
        Outcome::Unknown
    );
    assert_eq!(
        outcome(Doku, "IT09", Some(Op::BillInquiry)),
        Outcome::Failed
    );
    assert_eq!(
        outcome(Doku, "UE42", Some(Op::BillInquiry)),
        Outcome::Failed
    );
    assert_eq!(
        outcome(Doku, "UE42", Some(Op::BillPayment)),
        Outcome::Unknown
    );
    assert_eq!(outcome(Doku, "UE42", Some(Op::Advice)), Outcome::Unknown);
    for code in ["IT02", "SY00", "IT09", "IT06", "U101"] {
        assert_eq!(outcome(Doku, code, None), Outcome::Unknown, "{code}");
    }
    // Generic operations map onto DOKU's own.
    let e = ex(Doku, "SY00", Some(Op::Purchase));
    assert_eq!(
        (e.operation, e.outcome),
        (Some(Op::BillPayment), Outcome::Unknown)
    );
    assert_eq!(
        ex(Doku, "SY00", Some(Op::StatusCheck)).operation,
        Some(Op::Advice)
    );
}

#[test]
fn a_rejected_status_request_leaves_the_transaction_unknown() {
    assert_eq!(
        outcome(OkeBayar, "207", Some(Op::Purchase)),
        Outcome::Failed
    );
    let e = ex(OkeBayar, "207", Some(Op::StatusCheck));
    assert_eq!((e.outcome, e.retry_safe), (Outcome::Unknown, false));
    assert!(
        e.operator_action.contains("status is still unknown"),
        "{}",
        e.operator_action
    );
    // ...but a status check reporting the original's failure is a failure.
    assert_eq!(
        outcome(OkeBayar, "203", Some(Op::StatusCheck)),
        Outcome::Failed
    );
    assert_eq!(
        outcome(Doku, "IT04", Some(Op::BillPayment)),
        Outcome::Failed
    );
    assert_eq!(outcome(Doku, "IT04", Some(Op::Advice)), Outcome::Unknown);
    assert_eq!(outcome(Doku, "SY06", Some(Op::Advice)), Outcome::Failed);
    assert_eq!(outcome(SnapQr, "4016000", None), Outcome::Failed);
    assert_eq!(outcome(SnapQr, "4016100", None), Outcome::Unknown);
    assert_eq!(outcome(SnapQr, "2006100", None), Outcome::Unknown);
    assert_eq!(outcome(Smilepayz, "4019000", None), Outcome::Failed);
    assert_eq!(outcome(Smilepayz, "4019200", None), Outcome::Unknown);
    assert_eq!(outcome(Smilepayz, "4299200", None), Outcome::Unknown);
}

// ---------------------------------------------------------------- 4. bad input

#[test]
fn bad_input_errors_name_the_problem() {
    for provider in Provider::ALL {
        assert_eq!(explain(provider, "", None), Err(ExplainError::EmptyCode));
        assert_eq!(
            explain(provider, "  \t", None),
            Err(ExplainError::EmptyCode)
        );
    }
    assert!(ExplainError::EmptyCode.to_string().contains("empty"));

    let err = explain(OkeBayar, "12a", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"code "12a": OkeBayar codes are 3 digits"#
    );
    assert!(matches!(
        err,
        ExplainError::BadFormat {
            provider: OkeBayar,
            ..
        }
    ));
    assert!(explain(OkeBayar, "2080", None)
        .unwrap_err()
        .to_string()
        .contains("3 digits"));
    // A code may be a whole field of a provider's reply: only its start is quoted.
    let huge = "9".repeat(100_000);
    for provider in Provider::ALL {
        let msg = explain(provider, &huge, None).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("code \"{}…\": ", "9".repeat(32))) && msg.len() < 300,
            "{provider}: {} bytes",
            msg.len()
        );
    }

    let msg = explain(Doku, "IT4", None).unwrap_err().to_string();
    assert!(
        msg.starts_with(r#"code "IT4": "#) && msg.contains("4 letters or digits"),
        "{msg}"
    );
    assert!(explain(Doku, "IT-4", None)
        .unwrap_err()
        .to_string()
        .contains("XXYY"));

    for code in ["40460", "40460l8", "404601800"] {
        let msg = explain(SnapQr, code, None).unwrap_err().to_string();
        assert!(msg.contains("7-digit responseCode"), "{msg}");
    }
    for code in ["123", "4009x01", "40-0910"] {
        let msg = explain(Smilepayz, code, None).unwrap_err().to_string();
        assert!(
            msg.contains("7-digit responseCode") && msg.contains("2-digit code"),
            "{msg}"
        );
    }
    assert_eq!(explain_qr_status(""), Err(ExplainError::EmptyCode));
    assert!(explain_qr_status("0")
        .unwrap_err()
        .to_string()
        .contains("2 digits"));
    assert!(explain_qr_status("2006100")
        .unwrap_err()
        .to_string()
        .contains("2 digits"));

    let msg = explain(OkeBayar, "000", Some(Op::QrPayment))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("operation qr_payment does not apply to okebayar"),
        "{msg}"
    );
    assert!(msg.contains("bill_payment"), "{msg}");
    assert!(explain(SnapQr, "2006000", Some(Op::Purchase)).is_err());
}

#[test]
fn operation_names_parse() {
    for op in CodeOperation::ALL {
        assert_eq!(CodeOperation::parse(op.as_str()), Some(op));
        assert_eq!(op.as_str().parse::<CodeOperation>(), Ok(op));
    }
    assert_eq!(CodeOperation::parse("bill_payment"), Some(Op::BillPayment));
    assert_eq!(CodeOperation::parse("QR-Refund"), Some(Op::QrRefund));
    assert_eq!(CodeOperation::parse("pay_out"), Some(Op::PayOut));
    assert_eq!(CodeOperation::parse("status"), Some(Op::StatusCheck));
    assert_eq!(CodeOperation::parse("refund"), None);
    assert!("refund"
        .parse::<CodeOperation>()
        .unwrap_err()
        .to_string()
        .contains("qr_refund"));
    assert_eq!(
        CodeOperation::from(Operation::PrepaidPurchase),
        Op::Purchase
    );
    assert_eq!(CodeOperation::from(Operation::StatusCheck), Op::StatusCheck);
}

// ---------------------------------------------------------------- 5. guess_provider

#[test]
fn guess_provider_from_a_bare_code() {
    let cases: &[(&str, Option<Provider>)] = &[
        ("4046018", Some(SnapQr)),
        ("4017300", Some(SnapQr)),
        ("2005900", Some(SnapQr)),
        ("2007900", Some(SnapQr)),
        ("4046101", Some(SnapQr)),
        ("4056201", Some(SnapQr)),
        ("4048013", Some(SnapQr)),
        ("4009103", Some(Smilepayz)),
        ("5029100", Some(Smilepayz)),
        ("5009200", Some(Smilepayz)),
        ("5005500", None),
        ("IT04", Some(Doku)),
        ("5586", Some(Doku)),
        ("0000", Some(Doku)),
        ("ue01", Some(Doku)),
        ("208", Some(OkeBayar)),
        (" 401 ", Some(OkeBayar)),
        ("SUCCESS", Some(Smilepayz)),
        ("expired", Some(Smilepayz)),
        ("00", None),
        ("", None),
        ("12a", None),
    ];
    for (code, want) in cases {
        assert_eq!(guess_provider(code), *want, "{code:?}");
    }
}

// ---------------------------------------------------------------- 6. data files

fn specs() -> [Spec; 4] {
    [
        okebayar::spec(),
        doku::spec(),
        snapqr::spec(),
        smilepayz::spec(),
    ]
}

/// The service code of an operation, to build a concrete 7-digit code.
fn service_code(op: CodeOperation) -> &'static str {
    ["59", "60", "61", "62", "73", "79", "80", "90", "91", "92"]
        .into_iter()
        .find(|s| service(s).map(|s| s.operation) == Some(op))
        .unwrap_or_else(|| panic!("no service code for {op}"))
}

#[test]
fn data_files_parse_and_every_row_is_reachable() {
    for spec in specs() {
        let table = Table::parse(&spec).unwrap_or_else(|e| panic!("{e}"));
        assert!(!table.rows.is_empty());
        let listed = codes(spec.provider);
        assert_eq!(listed.len(), table.rows.len());
        for e in &listed {
            assert_complete(e, &format!("{} row {}", spec.provider, e.code));
        }
        for row in &table.rows {
            let ops = table.effective_ops(row);
            let op = ops.first().copied();
            let message = row.patterns.first().map(String::as_str).unwrap_or("");
            let code = match row.code.split_once("xx") {
                Some((http, case)) => {
                    format!("{http}{}{case}", service_code(op.expect("a service")))
                }
                None => row.code.clone(),
            };
            let e = explain_with_message(spec.provider, &code, op, message).unwrap();
            assert_eq!(
                e.provider_message, row.message,
                "{} row {:?} ({code}, {op:?}, {message:?}) is shadowed by another row",
                spec.provider, row.code
            );
        }
    }
}

#[test]
fn data_file_problems_are_reported_by_row() {
    let bad = Spec {
        provider: OkeBayar,
        operations: okebayar::OPERATIONS,
        key_ok: |code| code.len() == 3,
        data: r#"
code = [
  { code = "208", outcome = "unknown", retry = "no", category = "duplicate", who = "operations", message = "m", action = "a", en = "e", id = "i" },
  { code = "208", outcome = "failed", retry = "no", category = "duplicate", who = "operations", message = "m", action = "a", en = "e", id = "i" },
  { code = "2089", ops = ["qr_payment"], outcome = "failed", retry = "no", category = "system", who = "operations", message = "m", action = "", en = "e", id = "i" },
]
"#,
    };
    let err = Table::parse(&bad)
        .err()
        .expect("invalid data must be refused");
    assert!(
        err.contains("row 1 (code \"208\") and row 2: duplicate entry"),
        "{err}"
    );
    assert!(
        err.contains("row 3 (code \"2089\"): malformed code"),
        "{err}"
    );
    assert!(
        err.contains("operation qr_payment does not apply to okebayar"),
        "{err}"
    );
    assert!(err.contains("action is empty"), "{err}");

    let unparsable = Spec {
        data: "code = [ { code = \"000\", outcome = \"fine\" } ]",
        ..okebayar::spec()
    };
    assert!(Table::parse(&unparsable)
        .err()
        .unwrap()
        .contains("does not parse"));
}

/// A message matching several variants of one code takes the most cautious
/// of them, whatever their order in the data file.
#[test]
fn a_message_matching_several_variants_takes_the_most_cautious_whatever_the_order() {
    let spec = Spec {
        data: r#"
code = [
  { code = "403xx02", match = ["expired"], outcome = "failed", retry = "no", category = "business", who = "operations", message = "expired", action = "a", en = "e", id = "i" },
  { code = "403xx02", match = ["not allowed"], outcome = "unknown", retry = "query_first", category = "business", who = "operations", message = "not allowed", action = "a", en = "e", id = "i" },
]
"#,
        ..smilepayz::spec()
    };
    let table = Table::parse(&spec).unwrap_or_else(|e| panic!("{e}"));
    let message = "Expired: not allowed";
    for op in [None, Some(Op::PayIn)] {
        let choice = table.lookup("403xx02", op, message).unwrap();
        assert_eq!(choice.row.message, "not allowed", "{op:?}");
        let variant = table.find_variant("403xx", op, message).unwrap();
        assert_eq!(variant.message, "not allowed", "{op:?}");
    }
}

#[test]
fn explanation_converts_to_protobuf() {
    let e = ex(SnapQr, "4046018", None);
    let p = pb::CodeExplanation::from(&e);
    assert_eq!(p.provider, "snapqr");
    assert_eq!(p.code, "4046018");
    assert_eq!(p.operation, "qr_payment");
    assert_eq!(p.outcome, pb::Outcome::Failed as i32);
    assert_eq!(p.category, "business");
    assert_eq!(p.who_acts, e.who_acts.as_str());
    assert_eq!(p.retry, "no");
    assert!(p.in_catalogue && !p.merchant_message_id.is_empty());
    let none = pb::CodeExplanation::from(ex(OkeBayar, "208", None));
    assert_eq!(
        (none.operation.as_str(), none.outcome),
        ("", pb::Outcome::Unknown as i32)
    );
}

/// An inquiry delivers nothing, so OkeBayar's `000` on an inquiry must
/// not tell the operator to deliver a serial number or token; a purchase's
/// `000`, and the reading without an operation, still do.
#[test]
fn okebayar_000_on_an_inquiry_delivers_nothing() {
    for op in [Op::PrepaidInquiry, Op::BillInquiry] {
        let inquiry = ex(OkeBayar, "000", Some(op));
        assert_eq!(inquiry.outcome, Outcome::Success, "{op}");
        assert!(
            !inquiry.operator_action.contains("Deliver"),
            "{op}: {}",
            inquiry.operator_action
        );
        assert!(
            inquiry.operator_action.contains("nothing was charged"),
            "{op}: {}",
            inquiry.operator_action
        );
    }
    for op in [Some(Op::Purchase), None] {
        let purchase = ex(OkeBayar, "000", op);
        assert!(
            purchase
                .operator_action
                .contains("Deliver the serial number"),
            "{op:?}: {}",
            purchase.operator_action
        );
    }
}
