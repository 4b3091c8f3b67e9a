//! Every fuzz target over its seeds (well-formed inputs in each provider's
//! shape and the hostile ones RELIABILITY.md names), over random bytes, and
//! over seeds with random bytes changed, inserted or cut: the short run
//! `make test` can afford. `crates/fuzz/fuzz` runs the same bodies for long.
//! Each check the targets make is also shown to fail on the defect it is
//! there to catch.

use proptest::prelude::*;

const OKEBAYAR_REPLIES: &[&str] = &[
    "<transaction-status><transactionstatus>000</transactionstatus><referencecode>LKT1</referencecode>\
     <serialnumber>SN1</serialnumber><harga>10500</harga><tanggal>2026-11-22 10:00:00</tanggal></transaction-status>",
    "{ <transaction-status><status>001</status></transaction-status> }",
    r#"{"transactionstatus":"000","referencecode":"LKT1","harga":10500,"expired":"22/11/2026 10:30"}"#,
    "<transaction-status><responsecode>000</responsecode><additionaldata><caid>9</caid></additionaldata></transaction-status>",
    // Hostile: external entity, entity expansion (spelling a marker of
    // `loket_fuzz::ENTITY_MARKERS` when expanded), deep nesting, no root.
    "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><transaction-status><status>&e;</status></transaction-status>",
    "<!DOCTYPE l [<!ENTITY a \"LOKET-ENTITY-\"><!ENTITY b \"&a;EXPANDED&a;EXPANDED\">]><transaction-status><s>&b;</s></transaction-status>",
    "<a><a><a><a><a><a><a><a><a><a><a><a></a></a></a></a></a></a></a></a></a></a></a></a>",
    "<transaction-status><status>000</status>",
    "just text",
    // A marker written through a reference or an escape is no expansion.
    "<transaction-status><status>000</status><note>LOKET-&#69;NTITY-EXPANDED ro&#x6f;t:</note></transaction-status>",
    r#"{"transactionstatus":"000","note":"LOKET-\u0045NTITY-EXPANDED ro\u006ft:"}"#,
    // Padded beyond any fixed look-ahead: JSON, and a doc-literal's XML.
    "                                                                          {\"transactionstatus\":\"000\"}",
    "{                                                                          <transaction-status><status>001</status></transaction-status> }",
];

const OKEBAYAR_CALLBACKS: &[&str] = &[
    "\u{0}referencecode=LKT1&status=000&tracecode=T1&serialnumber=SN1",
    "\u{1}<transaction-status><referencecode>LKT1</referencecode><transactionstatus>000</transactionstatus></transaction-status>",
    "\u{1}{\"referencecode\":\"LKT1\",\"status\":\"000\",\"userpin\":\"CANARY-SECRET-5150\"}",
    "\u{2}referencecode=LKT1&status=000&userpin=CANARY-SECRET-5150",
    "\u{0}referencecode=LKT%31&status=0%300&serialnumber=CANARY-SECRET-5150",
    "\u{0}referencecode=LKT1&status=000&tracecode=canary-secret-5150",
    "\u{1}<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><transaction-status><referencecode>&e;</referencecode></transaction-status>",
    "\u{1}<!DOCTYPE x [<!ENTITY a \"LOKET-ENTITY-\"><!ENTITY b \"&a;EXPANDED\">]><transaction-status><referencecode>LKT1</referencecode>\
     <status>000</status><serialnumber>&b;</serialnumber></transaction-status>",
];

const SNAP_NOTIFIES: &[&str] = &[
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{"value":"10000.00","currency":"IDR"},"latestTransactionStatus":"00","transactionStatusDesc":"Success"}"#,
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","merchantId":"M1","latestTransactionStatus":"06","additionalInfo":{"note":"CANARY-SECRET-5150"}}"#,
    // Both configured secrets, one JSON-escaped, one in lower case.
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","merchantId":"M1","latestTransactionStatus":"00","additionalInfo":{"note":"CANARY-TOKEN\u002dKEY-6160","echo":"canary-secret-5150"}}"#,
    // A secret echoed as the amount and as the issuer's reference.
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"CANARY-SECRET-5150","merchantId":"M1","amount":{"value":"CANARY-SECRET-5150","currency":"IDR"},"latestTransactionStatus":"00"}"#,
    r#"{"originalPartnerReferenceNo":"","latestTransactionStatus":null}"#,
    "[1,2,3]",
];

const SMILEPAYZ_CALLBACKS: &[&str] = &[
    r#"{"tradeNo":"112300011201511220001","orderNo":"LKT0190f0aa00007000","status":"SUCCESS","money":{"currency":"IDR","amount":10000},"transactionTime":"2026-11-22T10:00:00+07:00"}"#,
    r#"{"tradeNo":"T2","orderNo":"O2","status":"EXPIRED","money":{"currency":"IDR","amount":"10000.00"},"remark":"CANARY-SECRET-5150"}"#,
    r#"{"tradeNo":"T3","orderNo":"O3","status":"PAID?","money":{"amount":1e400}}"#,
    r#"{"tradeNo":"CANARY-SECRET-5150","orderNo":"LKT0190f0aa00007000","status":"SUCCESS","money":{"currency":"IDR","amount":10000}}"#,
];

const JSON_REPLIES: &[&str] = &[
    r#"{"responseCode":"2005100","responseMessage":"Successful","referenceNo":"R1","amount":{"value":"10000.00","currency":"IDR"}}"#,
    r#"{"code":"00","message":"Successful","orderNo":"O1","tradeNo":"T1","status":"PROCESSING","money":{"currency":"IDR","amount":10000},"channel":{"qrString":"000201"}}"#,
    r#"{"amount":{"value":"1.000,00","currency":"idr"},"refundAmount":7}"#,
    r#"{"money":{"amount":-1},"status":123}"#,
    // SNAP: a server error, echoing a secret.
    r#"{"responseCode":"5005101","responseMessage":"Internal Server Error CANARY-SECRET-5150"}"#,
    // Smilepayz: an answered inquiry (leading zero, escaped secret), a reply
    // without a code, an order not found.
    r#"{"code":"00","responseCode":"2009200","message":"Successful","status":"SUCCESS","money":{"currency":"IDR","amount":"010000.00"},"remark":"CANARY\u002dSECRET-5150"}"#,
    r#"{"status":"FAILED","message":"no code"}"#,
    r#"{"code":"99","responseCode":"5009100","message":"Order not found","status":"FAILED"}"#,
];

const MINIFIER: &[&str] = &[
    "{ \"a\" : [1, 2, {\"b\":\"x y\"}] }",
    "{\"s\":\"\\\" \\\\ \\/\"}",
    "\"unterminated",
    "{\"a\":\"\\",
    // Found by the fuzzer: whitespace removal joins `/ /` into a comment.
    "0\r/\r/\r",
];

fn seeds(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn run_seeds<T>(target: fn(&[u8]) -> T, list: &[&str]) {
    for seed in seeds(list) {
        target(&seed);
    }
}

/// A seed with a few bytes changed, inserted or cut.
fn mutated(list: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(list),
        prop::collection::vec((any::<u8>(), any::<prop::sample::Index>(), 0..3u8), 1..6),
    )
        .prop_map(|(seed, edits)| {
            let mut bytes = seed.as_bytes().to_vec();
            for (byte, at, kind) in edits {
                let len = bytes.len();
                match kind {
                    0 if len > 0 => bytes[at.index(len)] = byte,
                    1 => bytes.insert(at.index(len + 1), byte),
                    _ if len > 0 => bytes.truncate(at.index(len)),
                    _ => {}
                }
            }
            bytes
        })
}

/// `cases` per property; a failing case is printed, not stored (these
/// tests live outside `src`, where proptest would keep it).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn random() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..512)
}

#[test]
fn seeds_of_every_target() {
    run_seeds(loket_fuzz::okebayar_reply, OKEBAYAR_REPLIES);
    run_seeds(loket_fuzz::okebayar_callback, OKEBAYAR_CALLBACKS);
    run_seeds(loket_fuzz::snapqr_notify, SNAP_NOTIFIES);
    run_seeds(loket_fuzz::smilepayz_callback, SMILEPAYZ_CALLBACKS);
    run_seeds(loket_fuzz::json_replies, JSON_REPLIES);
    run_seeds(loket_fuzz::minifier, MINIFIER);
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn okebayar_replies(data in prop_oneof![random(), mutated(OKEBAYAR_REPLIES)]) {
        loket_fuzz::okebayar_reply(&data);
    }

    #[test]
    fn okebayar_callbacks(data in prop_oneof![random(), mutated(OKEBAYAR_CALLBACKS)]) {
        loket_fuzz::okebayar_callback(&data);
    }

    #[test]
    fn json_replies(data in prop_oneof![random(), mutated(JSON_REPLIES)]) {
        loket_fuzz::json_replies(&data);
    }

    #[test]
    fn minifier(data in prop_oneof![random(), mutated(MINIFIER), mutated(SNAP_NOTIFIES)]) {
        loket_fuzz::minifier(&data);
    }
}

proptest! {
    // Each case signs with RSA: fewer of them.
    #![proptest_config(config(128))]

    #[test]
    fn snapqr_notifies(data in mutated(SNAP_NOTIFIES)) {
        loket_fuzz::snapqr_notify(&data);
    }

    #[test]
    fn smilepayz_callbacks(data in mutated(SMILEPAYZ_CALLBACKS)) {
        loket_fuzz::smilepayz_callback(&data);
    }
}

/// The seeds that should be accepted are: a target that refused everything
/// would test nothing behind its parser's first check.
#[test]
fn well_formed_seeds_get_through_to_the_checks() {
    assert!(loket_fuzz::okebayar_callback(
        OKEBAYAR_CALLBACKS[0].as_bytes()
    ));
    assert!(loket_fuzz::okebayar_callback(
        OKEBAYAR_CALLBACKS[3].as_bytes()
    ));
    assert!(loket_fuzz::snapqr_notify(SNAP_NOTIFIES[0].as_bytes()));
    assert!(loket_fuzz::snapqr_notify(SNAP_NOTIFIES[2].as_bytes()));
    // Secrets echoed in the texts a parsed callback carries besides its
    // body: the trace id; the amount and the issuer's reference; the
    // trade number.
    assert!(loket_fuzz::okebayar_callback(
        OKEBAYAR_CALLBACKS[5].as_bytes()
    ));
    assert!(loket_fuzz::snapqr_notify(SNAP_NOTIFIES[3].as_bytes()));
    assert!(loket_fuzz::smilepayz_callback(
        SMILEPAYZ_CALLBACKS[0].as_bytes()
    ));
    assert!(loket_fuzz::smilepayz_callback(
        SMILEPAYZ_CALLBACKS[3].as_bytes()
    ));
}

/// The message `check` panics with, or `None` when it passes.
fn failure(check: impl FnOnce() + std::panic::UnwindSafe) -> Option<String> {
    let payload = std::panic::catch_unwind(check).err()?;
    Some(
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_default(),
    )
}

/// The sniffing check fails when a body is sniffed as a format that cannot
/// read it while the other can (the connector would call the reply
/// unknown), and passes when neither format reads it.
#[test]
fn sniffing_into_a_format_that_cannot_read_the_body_is_caught() {
    use loket_okebayar::wire::Format;
    let why = failure(|| loket_fuzz::check_sniffed(Format::Xml, &[Format::Json]));
    assert!(
        why.as_deref()
            .is_some_and(|why| why.contains("sniffed as Xml, but only [Json] reads it")),
        "{why:?}"
    );
    assert_eq!(
        failure(|| loket_fuzz::check_sniffed(Format::Json, &[])),
        None
    );
}

/// The entity check fails when a field holds what only an expansion of the
/// hostile seeds' entities could have put there, and not when the input
/// writes the marker itself through a reference.
#[test]
fn an_expanded_entity_is_caught_and_an_escaped_marker_is_not_one() {
    for (seed, expanded) in [
        (OKEBAYAR_REPLIES[4], "root:x:0:0:root:/root:/bin/bash"),
        (
            OKEBAYAR_REPLIES[5],
            "LOKET-ENTITY-EXPANDEDLOKET-ENTITY-EXPANDED",
        ),
    ] {
        let why = failure(|| loket_fuzz::check_no_entity_expanded(seed.as_bytes(), [expanded]));
        assert!(
            why.as_deref()
                .is_some_and(|why| why.starts_with("an entity was expanded")),
            "{seed}: {why:?}"
        );
    }
    let written = OKEBAYAR_REPLIES[9].as_bytes();
    assert_eq!(
        failure(|| loket_fuzz::check_no_entity_expanded(written, ["LOKET-ENTITY-EXPANDED root:"])),
        None
    );
}

/// The masking check fails on a configured secret left in any text a parsed
/// callback stores, as written or escaped, the reason for an unreadable
/// amount included (a SNAP notify's amount error quotes its value).
#[test]
fn a_secret_left_in_a_stored_text_is_caught_in_any_form() {
    let masked = loket_connector::ParsedCallback {
        provider_reference: "LKT1".into(),
        provider_trace: String::new(),
        provider_code: "00".into(),
        serial_number: String::new(),
        claimed_outcome: loket_protocol::Outcome::Success,
        verified: true,
        provider_amount: None,
        provider_amount_unreadable: None,
        raw_masked: r#"{"note":"***"}"#.into(),
        dedupe_key: "k".into(),
    };
    let secrets = [loket_fuzz::CANARY];
    assert_eq!(
        failure(|| loket_fuzz::check_masked(&masked, &secrets)),
        None
    );
    for (leaked, expected) in [
        (
            loket_connector::ParsedCallback {
                raw_masked: r#"{"note":"CANARY-SECRET-5150"}"#.into(),
                ..masked.clone()
            },
            "the stored raw callback holds a configured secret",
        ),
        (
            loket_connector::ParsedCallback {
                raw_masked: r#"{"note":"&#67;ANARY-SECRET-5150"}"#.into(),
                ..masked.clone()
            },
            "escaped or in another case",
        ),
        (
            loket_connector::ParsedCallback {
                provider_amount_unreadable: Some(
                    r#"amount: amount "CANARY-SECRET-5150" is not a decimal number"#.into(),
                ),
                ..masked.clone()
            },
            "why the amount is unreadable holds a configured secret",
        ),
        (
            loket_connector::ParsedCallback {
                serial_number: "CANARY-SECRET-5150".into(),
                ..masked.clone()
            },
            "the serial number holds a configured secret",
        ),
    ] {
        let why = failure(|| loket_fuzz::check_masked(&leaked, &secrets));
        assert!(
            why.as_deref().is_some_and(|why| why.contains(expected)),
            "{leaked:?}: {why:?}"
        );
    }
}

/// The amount check fails on an amount read as anything but what it says (a
/// dropped fraction, a lost sign, other digits), and passes the forms a
/// provider writes.
#[test]
fn an_amount_not_read_exactly_is_caught() {
    use loket_protocol::Money;
    for (written, read) in [
        ("10000.00", 10_000),
        (" 010000 ", 10_000),
        ("-0.0", 0),
        ("0", 0),
    ] {
        assert_eq!(
            failure(|| loket_fuzz::check_exact(written, Money::idr(read))),
            None,
            "{written}"
        );
    }
    for (written, read) in [
        ("10000.50", 10_000),
        ("-5", 5),
        ("1.000,00", 1),
        ("10000", 1_000),
    ] {
        let why = failure(|| loket_fuzz::check_exact(written, Money::idr(read)));
        assert!(
            why.as_deref()
                .is_some_and(|why| why.contains(&format!("{written:?} was read as"))),
            "{written}: {why:?}"
        );
    }
}
