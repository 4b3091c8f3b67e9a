//! Every fuzz target over its seeds (well-formed inputs in each provider's
//! shape and the hostile ones RELIABILITY.md names), over random bytes, and
//! over seeds with random bytes changed, inserted or cut: the short run
//! `make test` can afford. `crates/fuzz/fuzz` runs the same bodies for long.

use proptest::prelude::*;

const OKEBAYAR_REPLIES: &[&str] = &[
    "<transaction-status><transactionstatus>000</transactionstatus><referencecode>LKT1</referencecode>\
     <serialnumber>SN1</serialnumber><harga>10500</harga><tanggal>2026-11-22 10:00:00</tanggal></transaction-status>",
    "{ <transaction-status><status>001</status></transaction-status> }",
    r#"{"transactionstatus":"000","referencecode":"LKT1","harga":10500,"expired":"22/11/2026 10:30"}"#,
    "<transaction-status><responsecode>000</responsecode><additionaldata><caid>9</caid></additionaldata></transaction-status>",
    // Hostile: external entity, entity expansion, deep nesting, no root.
    "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><transaction-status><status>&e;</status></transaction-status>",
    "<!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><transaction-status><s>&b;</s></transaction-status>",
    "<a><a><a><a><a><a><a><a><a><a><a><a></a></a></a></a></a></a></a></a></a></a></a></a>",
    "<transaction-status><status>000</status>",
    "just text",
];

const OKEBAYAR_CALLBACKS: &[&str] = &[
    "\u{0}referencecode=LKT1&status=000&tracecode=T1&serialnumber=SN1",
    "\u{1}<transaction-status><referencecode>LKT1</referencecode><transactionstatus>000</transactionstatus></transaction-status>",
    "\u{1}{\"referencecode\":\"LKT1\",\"status\":\"000\",\"userpin\":\"CANARY-SECRET-5150\"}",
    "\u{2}referencecode=LKT1&status=000&userpin=CANARY-SECRET-5150",
    "\u{0}referencecode=LKT%31&status=0%300&serialnumber=CANARY-SECRET-5150",
    "\u{1}<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><transaction-status><referencecode>&e;</referencecode></transaction-status>",
];

const SNAP_NOTIFIES: &[&str] = &[
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{"value":"10000.00","currency":"IDR"},"latestTransactionStatus":"00","transactionStatusDesc":"Success"}"#,
    r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","merchantId":"M1","latestTransactionStatus":"06","additionalInfo":{"note":"CANARY-SECRET-5150"}}"#,
    r#"{"originalPartnerReferenceNo":"","latestTransactionStatus":null}"#,
    "[1,2,3]",
];

const SMILEPAYZ_CALLBACKS: &[&str] = &[
    r#"{"tradeNo":"112300011201511220001","orderNo":"LKT0190f0aa00007000","status":"SUCCESS","money":{"currency":"IDR","amount":10000},"transactionTime":"2026-11-22T10:00:00+07:00"}"#,
    r#"{"tradeNo":"T2","orderNo":"O2","status":"EXPIRED","money":{"currency":"IDR","amount":"10000.00"},"remark":"CANARY-SECRET-5150"}"#,
    r#"{"tradeNo":"T3","orderNo":"O3","status":"PAID?","money":{"amount":1e400}}"#,
];

const JSON_REPLIES: &[&str] = &[
    r#"{"responseCode":"2005100","responseMessage":"Successful","referenceNo":"R1","amount":{"value":"10000.00","currency":"IDR"}}"#,
    r#"{"code":"00","message":"Successful","orderNo":"O1","tradeNo":"T1","status":"PROCESSING","money":{"currency":"IDR","amount":10000},"channel":{"qrString":"000201"}}"#,
    r#"{"amount":{"value":"1.000,00","currency":"idr"},"refundAmount":7}"#,
    r#"{"money":{"amount":-1},"status":123}"#,
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
    assert!(loket_fuzz::smilepayz_callback(
        SMILEPAYZ_CALLBACKS[0].as_bytes()
    ));
}
