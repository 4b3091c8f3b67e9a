//! The OkeBayar simulator driven over real HTTP, as the connector drives it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loket_okebayar::callback::MAX_REFERENCE_LEN;
use loket_okebayar::sign::signature;
use loket_okebayar::wire::{decode, encode, Fields, Format, REQUEST_ROOT};
use loket_runtime::allow::AllowList;
use loket_runtime::{Secret, Shutdown};
use loket_simulators::{CallbackMethod, OkeBayarSim, OkeBayarSimSettings, RequestCounts};
use tokio::net::TcpListener;

const USER: &str = "sim-user";
const PIN: &str = "pin-4921";
const PREFIX: &str = "089900000";

fn settings() -> OkeBayarSimSettings {
    OkeBayarSimSettings {
        userid: USER.into(),
        userpin: Secret::new(PIN),
        initial_balance: 1_000_000,
        callback_delay_ms: 50,
        callback_retry_ms: 50,
        slow_reply_ms: 1_500,
        // One price for every product, so the arithmetic below stays simple.
        prices: std::collections::BTreeMap::new(),
        ..OkeBayarSimSettings::default()
    }
}

struct Harness {
    sim: OkeBayarSim,
    url: String,
    http: reqwest::Client,
    shutdown: Shutdown,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start(settings: OkeBayarSimSettings) -> Harness {
    serve(OkeBayarSim::new(settings)).await
}

async fn serve(sim: OkeBayarSim) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let served = sim.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move { served.serve(listener, stop).await });
    Harness {
        sim,
        url,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        shutdown,
    }
}

/// A signed request with the common fields and `extra`.
fn request(
    transactioncode: &str,
    reference: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut fields = vec![
        ("transactioncode".to_string(), transactioncode.to_string()),
        ("userid".to_string(), USER.to_string()),
        ("userpin".to_string(), PIN.to_string()),
        ("signature".to_string(), signature(USER, PIN, reference)),
        ("referencecode".to_string(), reference.to_string()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fields
}

fn purchase(reference: &str, account: &str) -> Vec<(String, String)> {
    request(
        "OkeBayar-prabayar",
        reference,
        &[("productcode", "S10"), ("accnumber", account)],
    )
}

fn body(format: Format, fields: &[(String, String)]) -> Vec<u8> {
    encode(
        format,
        REQUEST_ROOT,
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

impl Harness {
    async fn send_raw(&self, raw: Vec<u8>) -> reqwest::Response {
        self.http.post(&self.url).body(raw).send().await.unwrap()
    }

    async fn send_as(&self, format: Format, fields: &[(String, String)]) -> Fields {
        let response = self.send_raw(body(format, fields)).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(
            Format::sniff(&bytes),
            format,
            "reply in the request's format"
        );
        decode(format, &bytes).unwrap()
    }

    async fn send(&self, fields: &[(String, String)]) -> Fields {
        self.send_as(Format::Xml, fields).await
    }

    async fn status_check(&self, reference: &str) -> Fields {
        self.send(&request("OkeBayar-cek-status", reference, &[]))
            .await
    }

    /// `GET` of an introspection route (`/_sim/...`).
    async fn introspect(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/_sim/{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    /// The JSON an introspection route answers.
    async fn introspect_json(&self, path: &str) -> serde_json::Value {
        self.introspect(path).await.json().await.unwrap()
    }
}

fn status(fields: &Fields) -> &str {
    fields
        .get("transactionstatus")
        .or_else(|| fields.get("responsecode"))
        .unwrap_or("<none>")
}

#[tokio::test]
async fn purchase_succeeds_with_serial_in_xml_and_json_and_debits_the_deposit() {
    let h = start(settings()).await;
    let xml = h
        .send_as(Format::Xml, &purchase("ref-xml", "081234567890"))
        .await;
    assert_eq!(status(&xml), "000");
    assert!(!xml.get("serialnumber").unwrap().is_empty());
    assert_eq!(xml.get("harga"), Some("11000"));
    assert_eq!(xml.get("balance"), Some("989000"));
    assert_eq!(xml.get("tracecode").unwrap().len(), 16);
    assert_eq!(xml.get("transactiontime").unwrap().len(), 15);
    assert_eq!(xml.get("referencecode"), Some("ref-xml"));

    let json = h
        .send_as(Format::Json, &purchase("ref-json", "081234567890"))
        .await;
    assert_eq!(status(&json), "000");
    assert_eq!(json.get("balance"), Some("978000"));
    assert_eq!(h.sim.balance(), 978_000);

    let entry = h.sim.ledger_state("ref-json").unwrap();
    assert_eq!((entry.code.as_str(), entry.amount), ("000", 11_000));
    assert_eq!(json.get("serialnumber"), Some(entry.serial_number.as_str()));
}

#[tokio::test]
async fn credentials_are_checked_207_211_213() {
    let h = start(settings()).await;
    let mut wrong_pin = purchase("auth-1", "081234567890");
    wrong_pin[2].1 = "000000".into();
    assert_eq!(status(&h.send(&wrong_pin).await), "207");

    let mut wrong_signature = purchase("auth-2", "081234567890");
    wrong_signature[3].1 = signature(USER, PIN, "another-reference");
    assert_eq!(status(&h.send(&wrong_signature).await), "211");

    let mut wrong_user = purchase("auth-3", "081234567890");
    wrong_user[1].1 = "intruder".into();
    assert_eq!(status(&h.send(&wrong_user).await), "213");

    // Nothing executed, nothing debited; every request counted in the total,
    // none under its reference (that is for requests that passed the checks).
    for reference in ["auth-1", "auth-2", "auth-3"] {
        assert!(h.sim.ledger_state(reference).is_none());
        assert_eq!(h.sim.requests_for(reference), RequestCounts::default());
    }
    assert_eq!(h.sim.total_requests(), 3);
    assert_eq!(h.sim.balance(), 1_000_000);
}

/// Spec §2: the signature is lower-case hex, over the reference as sent.
/// Written in upper case, or with spaces around it, it is not what the
/// provider computes: `211`, nothing executed.
#[tokio::test]
async fn a_signature_in_upper_case_or_with_spaces_is_211() {
    let h = start(settings()).await;
    let rewrites: [fn(String) -> String; 3] = [
        |good| good.to_ascii_uppercase(),
        |good| format!(" {good}"),
        |good| format!("{good}\n"),
    ];
    for (n, rewrite) in rewrites.into_iter().enumerate() {
        let reference = format!("sig-{n}");
        let mut sent = purchase(&reference, "081234567890");
        sent[3].1 = rewrite(sent[3].1.clone());
        assert_eq!(status(&h.send(&sent).await), "211", "{:?}", sent[3].1);
        assert!(h.sim.ledger_state(&reference).is_none(), "{reference}");
    }
    assert_eq!(h.sim.balance(), 1_000_000);
    // Lower case, as the connector writes it, passes.
    let sent = purchase("sig-9", "081234567890");
    assert_eq!(status(&h.send(&sent).await), "000");
}

/// Spec §1: a `referencecode` is an alphanumeric, UUID-like ID. One with
/// spaces around it (or inside, or other punctuation) is malformed: `206`,
/// whether its signature covers the text as sent or the text trimmed, and
/// nothing is kept under either text. UUIDs, with or without hyphens, pass.
#[tokio::test]
async fn a_reference_with_spaces_or_punctuation_is_206_and_nothing_is_kept() {
    let h = start(settings()).await;
    for sent in [" ws-1", "ws-2 ", "\tws-3", "ws 4", "ws_5", "ws.6"] {
        let trimmed = sent.trim();
        let as_sent = purchase(sent, "081234567890");
        let mut signed_trimmed = purchase(sent, "081234567890");
        signed_trimmed[3].1 = signature(USER, PIN, trimmed);
        for request in [as_sent, signed_trimmed] {
            assert_eq!(status(&h.send(&request).await), "206", "{sent:?}");
        }
        for reference in [sent, trimmed] {
            assert!(h.sim.ledger_state(reference).is_none(), "{sent:?}");
            assert_eq!(h.sim.requests_for(reference), RequestCounts::default());
        }
    }
    assert_eq!(h.sim.balance(), 1_000_000);
    for reference in [
        "0190f0aa-0000-7000-8000-0000000000d1",
        "0190f0aa000070008000000000000d2",
    ] {
        let bought = h.send(&purchase(reference, "081234567890")).await;
        assert_eq!(status(&bought), "000", "{reference}");
        assert_eq!(bought.get("referencecode"), Some(reference));
        assert!(h.sim.ledger_state(reference).is_some(), "{reference}");
    }
}

/// Whoever reaches the port must not make the simulator remember
/// references: a refused request, whatever the length of its
/// `referencecode` (up to the 64 KiB body limit), is counted in the total
/// only, and a `referencecode` longer than the callback receiver takes is
/// refused `206` before anything is kept under it. (Counted before any
/// check, 1,000 refused requests with 50 KB references pinned ~200 MB.)
#[tokio::test]
async fn refused_requests_and_overlong_references_leave_nothing_remembered() {
    let h = start(settings()).await;
    let huge = format!("huge-{}", "A".repeat(50_000));
    let mut intruder = purchase(&huge, "081234567890");
    intruder[1].1 = "intruder".into();
    assert_eq!(status(&h.send(&intruder).await), "213");
    assert_eq!(h.sim.requests_for(&huge), RequestCounts::default());

    let overlong = "R".repeat(MAX_REFERENCE_LEN + 1);
    let refused = h.send(&purchase(&overlong, "081234567890")).await;
    assert_eq!(status(&refused), "206");
    assert_eq!(h.sim.requests_for(&overlong), RequestCounts::default());
    assert!(h.sim.ledger_state(&overlong).is_none());

    let longest = "R".repeat(MAX_REFERENCE_LEN);
    let bought = h.send(&purchase(&longest, "081234567890")).await;
    assert_eq!(status(&bought), "000");
    assert_eq!(h.sim.money_requests_for(&longest), 1);
    assert_eq!(h.sim.total_requests(), 3);
    assert_eq!(h.sim.balance(), 1_000_000 - 11_000);
}

#[tokio::test]
async fn uppercase_tags_and_malformed_bodies_are_206_unknown_operation_241() {
    let h = start(settings()).await;
    let mut upper = purchase("fmt-1", "081234567890");
    upper[5].0 = "ProductCode".into();
    assert_eq!(status(&h.send(&upper).await), "206");
    assert!(h.sim.ledger_state("fmt-1").is_none());

    for garbage in [
        &b"<transaction><referencecode>x</transaction>"[..],
        b"{\"transactioncode\":",
        b"<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><transaction><a>&e;</a></transaction>",
        b"",
    ] {
        let response = h.send_raw(garbage.to_vec()).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        let fields = decode(Format::sniff(&bytes), &bytes).unwrap();
        assert_eq!(fields.get("transactionstatus"), Some("206"));
        assert_eq!(fields.get("responsecode"), Some("206"));
    }

    let unknown = request("OkeBayar-refund", "fmt-2", &[]);
    assert_eq!(status(&h.send(&unknown).await), "241");

    // Bodies above the limit are refused before decoding.
    let huge = vec![b'a'; 65 * 1024];
    assert_eq!(h.send_raw(huge).await.status(), 413);
}

/// Spec §1 / §8.6: a request's root is `<transaction>` and its names are
/// lower-case, else `206`. The root and the containers are checked too, not
/// only the leaves: an upper-case `<TRANSACTION>`, another root, or an
/// upper-case container used to have the purchase executed.
#[tokio::test]
async fn a_root_other_than_transaction_or_an_upper_case_container_is_206() {
    let h = start(settings()).await;
    let signed = |reference: &str, format: Format, root: &str| {
        let fields = purchase(reference, "081234567890");
        let body = encode(
            format,
            root,
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        String::from_utf8(body).unwrap()
    };
    let requests = [
        ("root-1", signed("root-1", Format::Xml, "TRANSACTION")),
        ("root-2", signed("root-2", Format::Xml, "request")),
        (
            "root-3",
            signed("root-3", Format::Xml, REQUEST_ROOT).replace(
                "</transaction>",
                "<AdditionalData><note>x</note></AdditionalData></transaction>",
            ),
        ),
        (
            "root-4",
            signed("root-4", Format::Json, REQUEST_ROOT).replacen(
                '{',
                r#"{"AdditionalData":{"note":"x"},"#,
                1,
            ),
        ),
    ];
    for (reference, request) in requests {
        let response = h.send_raw(request.clone().into_bytes()).await;
        let bytes = response.bytes().await.unwrap();
        let reply = decode(Format::sniff(&bytes), &bytes).unwrap();
        assert_eq!(status(&reply), "206", "{request}");
        assert!(h.sim.ledger_state(reference).is_none(), "{request}");
    }
}

#[tokio::test]
async fn reused_reference_is_208_with_new_tracecodes_and_no_second_debit() {
    let h = start(settings()).await;
    let first = h.send(&purchase("dup-1", "081234567890")).await;
    assert_eq!(status(&first), "000");
    let second = h.send(&purchase("dup-1", "081234567890")).await;
    assert_eq!(status(&second), "208");
    assert_ne!(first.get("tracecode"), second.get("tracecode"));
    assert_eq!(h.sim.balance(), 989_000);
    assert_eq!(h.sim.money_requests_for("dup-1"), 2);
    assert_eq!(h.sim.ledger_state("dup-1").unwrap().executions, 1);

    // Pending originals block reuse too.
    let pending = h.send(&purchase("dup-2", &format!("{PREFIX}002"))).await;
    assert_eq!(status(&pending), "002");
    assert_eq!(
        status(&h.send(&purchase("dup-2", &format!("{PREFIX}002"))).await),
        "208"
    );

    // Concurrent identical requests: exactly one executes.
    let same = purchase("dup-3", "081234567890");
    let calls = (0..20).map(|_| h.send(&same));
    let replies = futures::future::join_all(calls).await;
    let executed = replies.iter().filter(|r| status(r) == "000").count();
    let duplicates = replies.iter().filter(|r| status(r) == "208").count();
    assert_eq!((executed, duplicates), (1, 19));
    assert_eq!(h.sim.requests_for("dup-3").purchases, 20);
    assert_eq!(h.sim.balance(), 1_000_000 - 3 * 11_000);
}

/// Spec §8.3 holds for inquiries too: an inquiry resent under the
/// `referencecode` of one that succeeded answers `208` (new tracecode) and
/// issues no second handle; one whose original failed is answered anew.
#[tokio::test]
async fn a_reused_inquiry_reference_is_208_unless_its_inquiry_failed() {
    let h = start(settings()).await;
    let pln = |reference: &str, account: &str| {
        request(
            "OkeBayar-prabayar",
            reference,
            &[
                ("productcode", "PLN20"),
                ("accnumber", account),
                ("querycode", "inquiry"),
            ],
        )
    };
    for (reference, first) in [
        ("inq-dup-1", pln("inq-dup-1", "14234567890")),
        ("inq-dup-2", bill_inquiry("inq-dup-2", "531234567890")),
    ] {
        let original = h.send(&first).await;
        assert_eq!(status(&original), "000", "{reference}");
        let again = h.send(&first).await;
        assert_eq!(status(&again), "208", "{reference}");
        assert_ne!(original.get("tracecode"), again.get("tracecode"));
        let entry = h.sim.ledger_state(reference).unwrap();
        assert_eq!(
            (entry.code.as_str(), entry.inquirycode.as_deref()),
            ("000", original.get("inquirycode")),
            "{reference}: the original stands"
        );
    }
    let wrong = format!("{PREFIX}204");
    assert_eq!(status(&h.send(&pln("inq-dup-3", &wrong)).await), "204");
    assert_eq!(
        status(&h.send(&pln("inq-dup-3", "14234567890")).await),
        "000"
    );
}

#[tokio::test]
async fn empty_deposit_is_203_and_balance_operation_reports_it() {
    let h = start(settings()).await;
    h.sim.set_balance(5_000);
    let reply = h.send(&purchase("poor-1", "081234567890")).await;
    assert_eq!(status(&reply), "203");
    assert_eq!(h.sim.balance(), 5_000);
    assert_eq!(h.sim.ledger_state("poor-1").unwrap().code, "203");

    let balance = h.send(&request("OkeBayar-cek-balance", "bal-1", &[])).await;
    assert_eq!(balance.get("responsecode"), Some("000"));
    assert_eq!(balance.get("balance"), Some("5000"));

    let echo = h
        .send(&request("OkeBayar-echo", "echo-1", &[("message", "ping")]))
        .await;
    assert_eq!(echo.get("message"), Some("ping"));
}

/// Spec §7: "Never reuse a referencecode (→208)". A reference whose
/// purchase failed is refused `208` like any other, nothing executed; only
/// `allow_reuse_after_failure`, a deviation for tests, lets it run again.
#[tokio::test]
async fn a_failed_reference_is_208_unless_reuse_after_failure_is_allowed() {
    for allowed in [false, true] {
        // The default settings first: they must be the spec's.
        let h = start(if allowed {
            OkeBayarSimSettings {
                allow_reuse_after_failure: true,
                ..settings()
            }
        } else {
            settings()
        })
        .await;
        h.sim.set_balance(5_000);
        let poor = h.send(&purchase("again-1", "081234567890")).await;
        assert_eq!(status(&poor), "203");
        let failed = h.send(&purchase("again-2", &format!("{PREFIX}204"))).await;
        assert_eq!(status(&failed), "204");
        h.sim.set_balance(50_000);
        let expected = if allowed { "000" } else { "208" };
        for reference in ["again-1", "again-2"] {
            let again = h.send(&purchase(reference, "081234567890")).await;
            assert_eq!(status(&again), expected, "{reference}, reuse {allowed}");
            let entry = h.sim.ledger_state(reference).unwrap();
            assert_eq!(entry.executions, if allowed { 2 } else { 1 });
        }
        let spent = if allowed { 2 * 11_000 } else { 0 };
        assert_eq!(h.sim.balance(), 50_000 - spent, "reuse {allowed}");
    }
}

#[tokio::test]
async fn failure_selectors_answer_their_code_without_debit() {
    let h = start(settings()).await;
    for code in [
        "200", "201", "204", "205", "215", "232", "400", "404", "500", "401", "402",
    ] {
        let reference = format!("fail-{code}");
        let reply = h
            .send(&purchase(&reference, &format!("{PREFIX}{code}")))
            .await;
        assert_eq!(status(&reply), code);
        assert_eq!(h.sim.ledger_state(&reference).unwrap().code, code);
    }
    assert_eq!(h.sim.balance(), 1_000_000);
}

#[tokio::test]
async fn status_check_answers_from_the_ledger_and_not_found_code() {
    let h = start(settings()).await;
    let bought = h.send(&purchase("st-1", "081234567890")).await;
    let check = h.status_check("st-1").await;
    assert_eq!(status(&check), "000");
    assert_ne!(
        check.get("tracecode"),
        bought.get("tracecode"),
        "a tracecode is new on every hit (spec §1)"
    );
    assert_eq!(check.get("tracecode").map(str::len), Some(16));
    assert_ne!(
        h.status_check("st-1").await.get("tracecode"),
        check.get("tracecode")
    );
    assert_eq!(check.get("serialnumber"), bought.get("serialnumber"));
    assert_eq!(check.get("harga"), Some("11000"));

    let missing = h.status_check("never-sent").await;
    assert_eq!(
        status(&missing),
        loket_okebayar::settings::STATUS_NOT_FOUND_CODE_DEFAULT
    );
    assert_eq!(h.sim.requests_for("never-sent").status_checks, 1);
    assert_eq!(h.sim.money_requests_for("never-sent"), 0);

    // 001 → status check later finds 000 with an SN. The step is a second
    // here, so a loaded machine cannot take it before the first check.
    let h = start(OkeBayarSimSettings {
        callback_delay_ms: 1_000,
        ..settings()
    })
    .await;
    let first = h.send(&purchase("st-2", &format!("{PREFIX}001"))).await;
    assert_eq!(status(&first), "001");
    assert_eq!(first.get("serialnumber"), Some(""));
    assert_eq!(status(&h.status_check("st-2").await), "001");
    let mut checks = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let check = h.status_check("st-2").await;
        checks += 1;
        if status(&check) != "001" {
            break check;
        }
        assert!(std::time::Instant::now() < deadline, "still 001 after 10 s");
    };
    assert_eq!(status(&later), "000");
    assert!(!later.get("serialnumber").unwrap().is_empty());
    assert_eq!(h.sim.requests_for("st-2").status_checks, checks);
    assert_eq!(h.sim.money_requests_for("st-2"), 1);
}

#[tokio::test]
async fn beyond_its_memory_the_oldest_reference_is_forgotten_and_the_newest_kept() {
    let remembered = 3;
    let h = serve(OkeBayarSim::remembering(settings(), remembered)).await;
    let references: Vec<String> = (1..=remembered + 1).map(|n| format!("mem-{n}")).collect();
    let mut replies = Vec::new();
    for reference in &references {
        let reply = h.send(&purchase(reference, "081234567890")).await;
        assert_eq!(status(&reply), "000");
        replies.push(reply);
    }
    let (oldest, newest) = (&references[0], &references[remembered]);

    // The oldest: no request count, no ledger entry, over HTTP as in-process.
    let counts: serde_json::Value = h.introspect_json(&format!("requests/{oldest}")).await;
    assert_eq!(counts["total"], 0, "{counts}");
    let ledger = h.introspect(&format!("ledger/{oldest}")).await;
    assert_eq!(ledger.status(), 404);
    assert_eq!(
        status(&h.status_check(oldest).await),
        loket_okebayar::settings::STATUS_NOT_FOUND_CODE_DEFAULT,
        "a forgotten reference is unknown to the status check"
    );

    // The newest is still remembered: a resend is a duplicate and the
    // status check answers from the ledger.
    assert_eq!(
        status(&h.send(&purchase(newest, "081234567890")).await),
        "208"
    );
    let check = h.status_check(newest).await;
    assert_eq!(status(&check), "000");
    assert_eq!(
        check.get("serialnumber"),
        replies[remembered].get("serialnumber")
    );
    assert_eq!(h.sim.requests_for(newest).purchases, 2);
    assert_eq!(h.sim.balance(), 1_000_000 - 4 * 11_000);

    // A forgotten reference used again is a new purchase, not a duplicate.
    assert_eq!(
        status(&h.send(&purchase(oldest, "081234567890")).await),
        "000"
    );
    assert_eq!(h.sim.ledger_state(oldest).unwrap().executions, 1);
    assert_eq!(h.sim.balance(), 1_000_000 - 5 * 11_000);
}

#[tokio::test]
async fn loket_sim_gives_the_simulators_its_remembered_references() {
    use loket_simulators::service::{self, Listeners, Settings};
    let okebayar = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", okebayar.local_addr().unwrap());
    let listeners = Listeners {
        okebayar,
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        smilepayz: None,
        snapqr: None,
    };
    let settings = Settings {
        okebayar: settings(),
        remembered_references: 1,
        ..Settings::default()
    };
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service::run(settings, listeners, shutdown.clone()));
    let http = reqwest::Client::new();
    let send = |fields: Vec<(String, String)>| {
        let request = http.post(&url).body(body(Format::Xml, &fields)).send();
        async move {
            let bytes = request.await.unwrap().bytes().await.unwrap();
            decode(Format::Xml, &bytes).unwrap()
        }
    };
    assert_eq!(
        status(&send(purchase("one-1", "081234567890")).await),
        "000"
    );
    assert_eq!(
        status(&send(purchase("one-2", "081234567890")).await),
        "000"
    );
    let check = |reference: &str| send(request("OkeBayar-cek-status", reference, &[]));
    assert_eq!(
        status(&check("one-1").await),
        loket_okebayar::settings::STATUS_NOT_FOUND_CODE_DEFAULT
    );
    assert_eq!(status(&check("one-2").await), "000");
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

/// One received callback: HTTP method and fields (query and body merged).
type Seen = (String, HashMap<String, String>);

/// A tiny callback receiver recording every callback's fields.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        use axum::extract::{Query, State};
        use axum::routing::any;
        async fn record(
            State(receiver): State<Receiver>,
            method: axum::http::Method,
            Query(query): Query<HashMap<String, String>>,
            body: axum::body::Bytes,
        ) -> &'static str {
            let mut fields = query;
            if !body.is_empty() {
                let decoded = decode(Format::sniff(&body), &body).expect("callback body decodes");
                for (k, v) in decoded.iter() {
                    fields.insert(k.to_string(), v.to_string());
                }
            }
            receiver
                .seen
                .lock()
                .unwrap()
                .push((method.to_string(), fields));
            "OK"
        }
        let app = axum::Router::new()
            .route("/callback/okebayar", any(record))
            .with_state(self.clone());
        let base = loket_simulators::common::serve_stub(app).await.unwrap();
        format!("{base}/callback/okebayar")
    }

    fn statuses(&self, reference: &str) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f.get("referencecode").map(String::as_str) == Some(reference))
            .map(|(_, f)| f["status"].clone())
            .collect()
    }

    async fn wait_for(&self, reference: &str, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let statuses = self.statuses(reference);
            if statuses.len() >= count {
                return statuses;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.statuses(reference)
    }
}

#[tokio::test]
async fn pending_then_callbacks_then_final_by_post_and_get() {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let h = start(OkeBayarSimSettings {
        callback_url: Some(url.clone()),
        ..settings()
    })
    .await;

    let reply = h
        .send_as(Format::Json, &purchase("cb-1", &format!("{PREFIX}002")))
        .await;
    assert_eq!(status(&reply), "002");
    assert_eq!(h.sim.ledger_state("cb-1").unwrap().code, "002");
    assert_eq!(receiver.wait_for("cb-1", 2).await, ["002", "000"]);
    let entry = h.sim.ledger_state("cb-1").unwrap();
    assert_eq!(entry.code, "000");
    assert_eq!(entry.history, ["002", "000"]);
    let final_callback = receiver.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(final_callback.0, "POST");
    assert_eq!(final_callback.1["serialnumber"], entry.serial_number);
    assert_eq!(
        final_callback.1["tracecode"],
        reply.get("tracecode").unwrap()
    );
    // The simulator records a delivery once it has read our receiver's
    // answer, a moment after the receiver saw the callback.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.sim.callbacks_for("cb-1").acknowledged < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "deliveries not recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let log = h.sim.callbacks_for("cb-1");
    assert_eq!(
        (log.deliveries, log.acknowledged, log.last_http_status),
        (2, 2, Some(200))
    );

    // Same by GET, ending 201: the deposit comes back.
    let get_receiver = Receiver::default();
    let get_url = get_receiver.start().await;
    let g = start(OkeBayarSimSettings {
        callback_url: Some(get_url),
        callback_method: CallbackMethod::Get,
        ..settings()
    })
    .await;
    assert_eq!(
        status(&g.send(&purchase("cb-2", &format!("{PREFIX}012"))).await),
        "002"
    );
    assert_eq!(g.sim.balance(), 989_000);
    assert_eq!(get_receiver.wait_for("cb-2", 2).await, ["002", "201"]);
    assert_eq!(get_receiver.seen.lock().unwrap()[0].0, "GET");
    assert_eq!(g.sim.ledger_state("cb-2").unwrap().code, "201");
    assert_eq!(g.sim.balance(), 1_000_000);
    assert_eq!(status(&g.status_check("cb-2").await), "201");
}

/// Spec §4: `harga` is what was "debited from deposit". A transaction
/// that ends in a failure debited nothing (its deposit is refunded), so its
/// failed callback says 0, as its status check does; while it was pending
/// the price was taken and said.
#[tokio::test]
async fn a_failed_callback_reports_no_harga() {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let h = start(OkeBayarSimSettings {
        callback_url: Some(url),
        ..settings()
    })
    .await;
    let reply = h.send(&purchase("harga-1", &format!("{PREFIX}012"))).await;
    assert_eq!(status(&reply), "002");
    assert_eq!(receiver.wait_for("harga-1", 2).await, ["002", "201"]);
    let harga: Vec<String> = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, fields)| fields["harga"].clone())
        .collect();
    assert_eq!(harga, ["11000", "0"]);
    assert_eq!(h.status_check("harga-1").await.get("harga"), Some("0"));
    assert_eq!(h.sim.balance(), 1_000_000);
}

#[tokio::test]
async fn callback_quirks_duplicate_out_of_order_late_early_and_ghost() {
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let h = start(OkeBayarSimSettings {
        callback_url: Some(url),
        ..settings()
    })
    .await;

    h.send(&purchase("q-905", &format!("{PREFIX}905"))).await;
    assert_eq!(receiver.wait_for("q-905", 3).await, ["000", "000", "000"]);

    h.send(&purchase("q-906", &format!("{PREFIX}906"))).await;
    assert_eq!(receiver.wait_for("q-906", 2).await, ["000", "002"]);
    assert_eq!(
        h.sim.ledger_state("q-906").unwrap().code,
        "000",
        "a stale 002 never moves the ledger"
    );

    assert_eq!(
        status(&h.send(&purchase("q-907", &format!("{PREFIX}907"))).await),
        "000"
    );
    assert_eq!(receiver.wait_for("q-907", 1).await, ["000"]);

    // 908: the callback is already delivered when the sync reply arrives.
    let early = h.send(&purchase("q-908", &format!("{PREFIX}908"))).await;
    assert_eq!(status(&early), "002");
    assert_eq!(receiver.statuses("q-908"), ["000"]);
    assert_eq!(h.sim.ledger_state("q-908").unwrap().code, "000");

    h.send(&purchase("q-909", &format!("{PREFIX}909"))).await;
    let ghosts_seen = || -> Vec<String> {
        receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| f["referencecode"].starts_with("GHOST"))
            .map(|(_, f)| f["referencecode"].clone())
            .collect()
    };
    // Wait for the ghost (a loaded machine may take a while), then a
    // little longer for any second one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ghosts_seen().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ghosts = ghosts_seen();
    assert_eq!(ghosts.len(), 1, "{ghosts:?}");
    assert!(h.sim.ledger_state(&ghosts[0]).is_none());
}

#[tokio::test]
async fn faults_after_commit_leave_a_successful_ledger() {
    let h = start(settings()).await;

    // 902: connection reset without a reply.
    let reset = h
        .http
        .post(&h.url)
        .body(body(
            Format::Xml,
            &purchase("f-902", &format!("{PREFIX}902")),
        ))
        .send()
        .await;
    assert!(reset.is_err(), "no reply expected, got {reset:?}");
    assert_eq!(h.sim.ledger_state("f-902").unwrap().code, "000");

    // 901: the reply comes after the client gave up.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let slow = impatient
        .post(&h.url)
        .body(body(
            Format::Xml,
            &purchase("f-901", &format!("{PREFIX}901")),
        ))
        .send()
        .await;
    assert!(slow.unwrap_err().is_timeout());
    assert_eq!(h.sim.ledger_state("f-901").unwrap().code, "000");

    // 903: truncated reply.
    let truncated = h
        .send_raw(body(
            Format::Xml,
            &purchase("f-903", &format!("{PREFIX}903")),
        ))
        .await;
    assert_eq!(truncated.status(), 200);
    assert!(decode(Format::Xml, &truncated.bytes().await.unwrap()).is_err());

    // 904: HTML error page.
    let html = h
        .send_raw(body(
            Format::Json,
            &purchase("f-904", &format!("{PREFIX}904")),
        ))
        .await;
    assert_eq!(html.status(), 502);
    assert!(html.text().await.unwrap().contains("<html>"));

    for reference in ["f-901", "f-902", "f-903", "f-904"] {
        assert_eq!(
            h.sim.ledger_state(reference).unwrap().code,
            "000",
            "{reference}"
        );
        assert_eq!(h.sim.money_requests_for(reference), 1, "{reference}");
    }
    assert_eq!(h.sim.balance(), 1_000_000 - 4 * 11_000);
}

/// Spec §8.2 "request never received" (`912`): a purchase or bill payment
/// lost on its way is counted as received but never taken in; nothing is
/// recorded or debited, the connection is reset without a reply, and a
/// status check finds no record.
#[tokio::test]
async fn a_request_lost_on_its_way_leaves_no_record_and_no_debit() {
    let h = start(settings()).await;
    let lost =
        |fields: Vec<(String, String)>| h.http.post(&h.url).body(body(Format::Xml, &fields)).send();
    let account = format!("{PREFIX}912");
    let reset = lost(purchase("lost-buy", &account)).await;
    assert!(reset.is_err(), "no reply expected, got {reset:?}");

    let inquiry = h.send(&bill_inquiry("lost-inq", &account)).await;
    assert_eq!(status(&inquiry), "000", "an inquiry is not lost");
    let nominal = inquiry.get("nominal").unwrap().to_string();
    let reset = lost(bill_payment("lost-pay", &inquiry, &nominal)).await;
    assert!(reset.is_err(), "no reply expected, got {reset:?}");

    for reference in ["lost-buy", "lost-pay"] {
        assert!(h.sim.ledger_state(reference).is_none(), "{reference}");
        let counts = h.sim.requests_for(reference);
        assert_eq!(
            (
                counts.money(),
                counts.money_turned_away,
                counts.money_taken_in()
            ),
            (1, 1, 0),
            "{reference}"
        );
        assert_eq!(
            status(&h.status_check(reference).await),
            loket_okebayar::settings::STATUS_NOT_FOUND_CODE_DEFAULT,
            "{reference}"
        );
    }
    assert_eq!(h.sim.balance(), 1_000_000);
}

fn bill_inquiry(reference: &str, account: &str) -> Vec<(String, String)> {
    request(
        "OkeBayar-inquiry",
        reference,
        &[
            ("productcode", "PLNPOST"),
            ("accnumber1", account),
            ("accnumber2", ""),
            ("accnumber3", ""),
        ],
    )
}

fn bill_payment(reference: &str, inquiry: &Fields, nominal: &str) -> Vec<(String, String)> {
    request(
        "OkeBayar-inquiry",
        reference,
        &[
            ("productcode", "PLNPOST"),
            ("accnumber1", inquiry.get("accnumber1").unwrap()),
            ("accnumber2", ""),
            ("accnumber3", ""),
            ("inquirycode", inquiry.get("inquirycode").unwrap()),
            ("nominal", nominal),
            ("adminfee", inquiry.get("adminfee").unwrap()),
            ("ref2", inquiry.get("ref2").unwrap()),
            ("ref3", inquiry.get("ref3").unwrap()),
        ],
    )
}

/// `request` with field `name` set to `value`.
fn with(mut request: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    request.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.into();
    request
}

/// The simulator's BPJS productcode (loket's catalogue seeds `BPJSKS`).
const BPJS: &str = "BPJSKS";

/// A BPJS inquiry of `account` for `months` (spec §4: `accnumber3`).
fn bpjs_inquiry(reference: &str, account: &str, months: &str) -> Vec<(String, String)> {
    with(
        with(bill_inquiry(reference, account), "productcode", BPJS),
        "accnumber3",
        months,
    )
}

/// The payment of BPJS `inquiry`'s nominal, naming the `payer`'s phone
/// (`accnumber2`) and `months` (`accnumber3`), as spec §4 asks.
fn bpjs_payment(
    reference: &str,
    inquiry: &Fields,
    payer: &str,
    months: &str,
) -> Vec<(String, String)> {
    let payment = bill_payment(reference, inquiry, inquiry.get("nominal").unwrap());
    with(
        with(with(payment, "productcode", BPJS), "accnumber2", payer),
        "accnumber3",
        months,
    )
}

/// The names inside the `additionaldata` element of the XML reply `body`,
/// in document order, with their values.
fn additional_data_in_xml(body: &str) -> Vec<(String, String)> {
    let start = body
        .find("<additionaldata>")
        .expect("an additionaldata block")
        + 16;
    let end = body.find("</additionaldata>").expect("its end");
    let mut rest = &body[start..end];
    let mut leaves = Vec::new();
    while let Some(open) = rest.find('<') {
        let name_end = rest[open..].find('>').unwrap() + open;
        let name = &rest[open + 1..name_end];
        let close = format!("</{name}>");
        let value_end = rest.find(&close).unwrap();
        leaves.push((name.to_string(), rest[name_end + 1..value_end].to_string()));
        rest = &rest[value_end + close.len()..];
    }
    leaves
}

/// Spec §4: a PLN postpaid inquiry's `additionaldata` carries the spec's
/// whole list of fields, in its order (one bill: bill 1), in XML and in
/// JSON. The spec lists none for the other products, whose block carries the
/// few every bill has (ASSUMED).
#[tokio::test]
async fn a_pln_postpaid_bill_carries_every_additionaldata_field_of_the_spec_in_its_order() {
    let h = start(settings()).await;
    let mut expected: Vec<String> = "caid subscriberid billingstatus paymentstatus \
        totalmonthoutstanding swreferenceid subscribername serviceunit serviceunitphone \
        subscribersegmentation subscribercategory totaladmincharge"
        .split_whitespace()
        .map(String::from)
        .collect();
    expected.extend(
        "blth duedate meterreaddate RPTAG incentive valuaddedtax penaltyfee SLALWBP \
         SAHLWBP SLAWBP SAHWBP SLAKVARH SAHKVARH"
            .split_whitespace()
            .map(|name| format!("{name}1")),
    );
    expected.extend(
        "alamat plnnpwp subscribernpwp totalrptag info"
            .split_whitespace()
            .map(String::from),
    );

    let answer = h
        .send_raw(body(Format::Xml, &bill_inquiry("pln-xml", "512345678901")))
        .await;
    let reply = String::from_utf8(answer.bytes().await.unwrap().to_vec()).unwrap();
    let leaves = additional_data_in_xml(&reply);
    let names: Vec<&str> = leaves.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, expected, "{reply}");
    let value = |name: &str| {
        leaves
            .iter()
            .find(|(leaf, _)| leaf == name)
            .map(|(_, value)| value.as_str())
            .unwrap()
    };
    let fields = decode(Format::Xml, reply.as_bytes()).unwrap();
    let nominal = fields.get("nominal").unwrap();
    assert_eq!(value("RPTAG1"), nominal);
    assert_eq!(value("totalrptag"), nominal);
    assert_eq!(value("totaladmincharge"), fields.get("adminfee").unwrap());
    assert_eq!(value("subscriberid"), "512345678901");
    assert_eq!(value("swreferenceid"), fields.get("ref2").unwrap());
    assert_eq!(value("paymentstatus"), "0");
    assert!(value("incentive1").starts_with('D'), "a disincentive");

    let answer = h
        .send_raw(body(
            Format::Json,
            &bill_inquiry("pln-json", "512345678902"),
        ))
        .await;
    let reply: serde_json::Value = answer.json().await.unwrap();
    let block = reply["additionaldata"].as_object().expect("a JSON object");
    let mut keys: Vec<&str> = block.keys().map(String::as_str).collect();
    let mut wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
    keys.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(keys, wanted);

    let answer = h
        .send_raw(body(
            Format::Xml,
            &bpjs_inquiry("bpjs-xml", "888880123456", "3"),
        ))
        .await;
    let reply = String::from_utf8(answer.bytes().await.unwrap().to_vec()).unwrap();
    assert_eq!(
        additional_data_in_xml(&reply),
        [
            ("subscriberid", "888880123456"),
            ("subscribername", "PELANGGAN SIMULASI"),
            ("totalmonthoutstanding", "3"),
            ("paymentstatus", "0"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string())),
        "{reply}"
    );
}

/// A PSTN bill is named by its area code (`accnumber1`) and number
/// (`accnumber2`, spec §4): a payment naming another number than its
/// inquiry's is "payment data ≠ inquiry" (`402`), and pays nothing.
#[tokio::test]
async fn a_payment_naming_another_number_than_its_inquiry_is_402() {
    let h = start(settings()).await;
    let pstn_inquiry = with(bill_inquiry("pstn-inq", "021"), "accnumber2", "5550001");
    let pstn_inquiry = with(pstn_inquiry, "productcode", "TELKOM");
    let inquiry = h.send(&pstn_inquiry).await;
    assert_eq!(inquiry.get("responsecode"), Some("000"));
    let nominal = inquiry.get("nominal").unwrap().to_string();
    let payment = |reference: &str, number: &str| {
        let payment = with(
            bill_payment(reference, &inquiry, &nominal),
            "accnumber2",
            number,
        );
        with(payment, "productcode", "TELKOM")
    };
    let refused = h.send(&payment("pstn-other", "5559999")).await;
    assert_eq!(refused.get("responsecode"), Some("402"));
    assert_eq!(h.sim.balance(), 1_000_000, "nothing paid");
    let paid = h.send(&payment("pstn-pay", "5550001")).await;
    assert_eq!(paid.get("responsecode"), Some("000"));
    assert!(h.sim.balance() < 1_000_000);
}

#[tokio::test]
async fn a_bpjs_payment_needs_the_inquired_months_and_the_payers_phone() {
    let h = start(settings()).await;
    let inquiry = h.send(&bpjs_inquiry("bpjs-inq", "888880123456", "3")).await;
    assert_eq!(inquiry.get("responsecode"), Some("000"));
    for (reference, phone, months) in [
        ("no-phone", "", "3"),
        ("other-months", "0812999", "4"),
        ("no-months", "0812999", ""),
    ] {
        let refused = h
            .send(&bpjs_payment(reference, &inquiry, phone, months))
            .await;
        assert_eq!(refused.get("responsecode"), Some("402"), "{reference}");
    }
    assert_eq!(h.sim.balance(), 1_000_000, "nothing paid");
    let paid = h
        .send(&bpjs_payment("bpjs-pay", &inquiry, "081299990000", "3"))
        .await;
    assert_eq!(paid.get("responsecode"), Some("000"));
    assert_eq!(h.sim.balance(), 1_000_000 - (3 * 150_000 + 2_500));
}

/// Spec §4: a BPJS inquiry names the months to pay (`accnumber3`, 1–12) and
/// is billed for them: `nominal` is a month's times the months and
/// `totalmonthoutstanding` the months, and its payment debits that. Without
/// months, or with a number outside 1–12, it is malformed (`206`, ASSUMED:
/// no code of the table fits). The simulator used to bill one month
/// whatever was asked, and to take a BPJS inquiry without months.
#[tokio::test]
async fn a_bpjs_inquiry_is_billed_for_the_months_asked_and_needs_them() {
    let h = start(settings()).await;
    let account = "888880123456";
    for months in [1_i64, 3, 12] {
        let reply = h
            .send(&bpjs_inquiry(
                &format!("bpjs-{months}"),
                account,
                &months.to_string(),
            ))
            .await;
        assert_eq!(reply.get("responsecode"), Some("000"), "{months}");
        let nominal = (150_000 * months).to_string();
        assert_eq!(reply.get("nominal"), Some(nominal.as_str()), "{months}");
        assert_eq!(reply.get("adminfee"), Some("2500"), "{months}");
        assert_eq!(
            reply.get("totalmonthoutstanding"),
            Some(months.to_string().as_str())
        );
    }
    let without_months = bpjs_inquiry("bpjs-no-tag", account, "")
        .into_iter()
        .filter(|(name, _)| name != "accnumber3")
        .collect::<Vec<_>>();
    assert_eq!(
        h.send(&without_months).await.get("responsecode"),
        Some("206")
    );
    for (n, bad) in ["", "0", "13", "x", "-1", "1.5", "+3"]
        .into_iter()
        .enumerate()
    {
        let refused = h
            .send(&bpjs_inquiry(&format!("bpjs-bad-{n}"), account, bad))
            .await;
        assert_eq!(refused.get("responsecode"), Some("206"), "{bad:?}");
    }
    // Product codes compare without case.
    let lower_case = with(
        bpjs_inquiry("bpjs-lower", account, ""),
        "productcode",
        "bpjsks",
    );
    assert_eq!(h.send(&lower_case).await.get("responsecode"), Some("206"));

    let three_months = h.send(&bpjs_inquiry("bpjs-3b", "888880999999", "3")).await;
    let paid = h
        .send(&bpjs_payment(
            "bpjs-pay-3",
            &three_months,
            "081299990000",
            "3",
        ))
        .await;
    assert_eq!(paid.get("responsecode"), Some("000"));
    assert_eq!(h.sim.balance(), 1_000_000 - (3 * 150_000 + 2_500));
    assert_eq!(h.sim.ledger_state("bpjs-pay-3").unwrap().amount, 452_500);
}

#[tokio::test]
async fn postpaid_inquiry_payment_and_401_402_403_405() {
    let h = start(settings()).await;
    let inquiry = h.send(&bill_inquiry("inq-1", "123456789012")).await;
    assert_eq!(inquiry.get("responsecode"), Some("000"));
    assert_eq!(inquiry.get("nominal"), Some("150000"));
    assert_eq!(inquiry.get("adminfee"), Some("2500"));
    assert_eq!(inquiry.get("rptag1"), Some("150000"));
    assert!(inquiry.iter().any(|(k, _)| k == "Inquiryexpired"));
    assert!(loket_okebayar::wire::parse_time(inquiry.get("inquiryexpired").unwrap()).is_some());

    // Changed amount → 402, nothing paid.
    let wrong = h.send(&bill_payment("pay-1", &inquiry, "140000")).await;
    assert_eq!(wrong.get("responsecode"), Some("402"));
    // Exact amounts (written as a Double) → 000, debited nominal + adminfee.
    let paid = h.send(&bill_payment("pay-2", &inquiry, "150000.00")).await;
    assert_eq!(paid.get("responsecode"), Some("000"));
    assert_eq!(h.sim.balance(), 1_000_000 - 152_500);
    assert_eq!(h.sim.ledger_state("pay-2").unwrap().amount, 152_500);
    // Paid twice → 401.
    let twice = h.send(&bill_payment("pay-3", &inquiry, "150000")).await;
    assert_eq!(twice.get("responsecode"), Some("401"));
    assert_eq!(h.sim.balance(), 1_000_000 - 152_500);

    // No inquiry → 405.
    let mut orphan = bill_payment("pay-4", &inquiry, "150000");
    orphan
        .iter_mut()
        .find(|(k, _)| k == "inquirycode")
        .unwrap()
        .1 = "INQ-unknown".into();
    assert_eq!(h.send(&orphan).await.get("responsecode"), Some("405"));

    // Selectors: 402 and 401 at payment, 403 expired at payment.
    for (code, reference) in [("402", "sel-402"), ("401", "sel-401"), ("403", "sel-403")] {
        let inquiry = h
            .send(&bill_inquiry(
                &format!("inq-{code}"),
                &format!("{PREFIX}{code}"),
            ))
            .await;
        assert_eq!(inquiry.get("responsecode"), Some("000"), "{code}");
        let pay = h.send(&bill_payment(reference, &inquiry, "150000")).await;
        assert_eq!(pay.get("responsecode"), Some(code));
        assert_eq!(h.sim.ledger_state(reference).unwrap().code, code);
    }
    assert_eq!(h.sim.balance(), 1_000_000 - 152_500);
    assert_eq!(h.sim.requests_for("inq-1").inquiries, 1);
    assert_eq!(h.sim.requests_for("pay-2").payments, 1);

    // A failing bill inquiry.
    let missing = h
        .send(&bill_inquiry("inq-400", &format!("{PREFIX}400")))
        .await;
    assert_eq!(missing.get("responsecode"), Some("400"));
}

/// Past its inquiry's expiry a payment answers `403`, whatever else is wrong
/// with it: a changed amount, changed `ref2`/`ref3`, another BPJS period;
/// and so does a PLN token purchase whose refs differ from its expired
/// inquiry's. (ASSUMED: the spec gives no precedence between 402 and 403;
/// it lists 403 first, in §5.C and §8.5, and re-inquiring cures both.)
#[tokio::test]
async fn an_expired_inquiry_answers_403_even_when_the_payment_data_differs() {
    let h = start(OkeBayarSimSettings {
        inquiry_ttl_secs: 0,
        ..settings()
    })
    .await;
    let inquiry = h.send(&bill_inquiry("late-inq", "123456789012")).await;
    let bpjs = h
        .send(&bpjs_inquiry("late-bpjs", "888880123456", "3"))
        .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let payments = [
        (
            "late-amount",
            bill_payment("late-amount", &inquiry, "140000"),
        ),
        (
            "late-ref2",
            with(bill_payment("late-ref2", &inquiry, "150000"), "ref2", "SWX"),
        ),
        (
            "late-ref3",
            with(bill_payment("late-ref3", &inquiry, "150000"), "ref3", "BX"),
        ),
        (
            "late-months",
            bpjs_payment("late-months", &bpjs, "081299990000", "4"),
        ),
    ];
    for (reference, payment) in payments {
        let reply = h.send(&payment).await;
        assert_eq!(reply.get("responsecode"), Some("403"), "{reference}");
        assert_eq!(h.sim.ledger_state(reference).unwrap().code, "403");
    }
    let pln = pln_purchases_with_refs(&h, "14234567890", |ref1, ref2| {
        vec![
            [ref1.into(), format!("{ref2}X"), String::new()],
            [ref1.into(), ref2.into(), "R3".into()],
        ]
    })
    .await;
    assert_eq!(pln, ["403", "403"]);
    assert_eq!(h.sim.balance(), 1_000_000);
}

/// Spec §7 `401` "already paid", §8.5 "`401` paid twice": the biller sells
/// one bill once, whatever inquiry its payment names. Once a customer's bill
/// is paid, a new inquiry for it answers `401`, and so does the payment of
/// another handle for it (both used to answer `000`, and the deposit was
/// debited twice). What makes one bill: a BPJS period (`accnumber3`) is a
/// bill of its own and its payer's phone (`accnumber2`) is not part of it; a
/// PSTN number (`accnumber2` under the area code in `accnumber1`) is a bill
/// of its own.
#[tokio::test]
async fn a_paid_bill_cannot_be_paid_again_through_a_new_inquiry() {
    let h = start(settings()).await;
    let account = "531234567890";
    let inquiry = h.send(&bill_inquiry("twice-inq-1", account)).await;
    let other_handle = h.send(&bill_inquiry("twice-inq-2", account)).await;
    let paid = h
        .send(&bill_payment("twice-pay-1", &inquiry, "150000"))
        .await;
    assert_eq!(paid.get("responsecode"), Some("000"));
    let again = h.send(&bill_inquiry("twice-inq-3", account)).await;
    assert_eq!(again.get("responsecode"), Some("401"));
    assert_eq!(again.get("inquirycode"), Some(""), "no handle to pay");
    let through_other_handle = h
        .send(&bill_payment("twice-pay-2", &other_handle, "150000"))
        .await;
    assert_eq!(through_other_handle.get("responsecode"), Some("401"));
    assert_eq!(h.sim.balance(), 1_000_000 - 152_500, "debited once");

    let bpjs = |reference: &str, payer: &str, months: &str| {
        with(
            bpjs_inquiry(reference, "888880123456", months),
            "accnumber2",
            payer,
        )
    };
    let three_months = h.send(&bpjs("bpjs-inq-3", "", "3")).await;
    let payment = bpjs_payment("bpjs-pay-3", &three_months, "081299990000", "3");
    assert_eq!(h.send(&payment).await.get("responsecode"), Some("000"));
    let same_period = h.send(&bpjs("bpjs-inq-3b", "081277770000", "3")).await;
    assert_eq!(same_period.get("responsecode"), Some("401"));
    let next_period = h.send(&bpjs("bpjs-inq-4", "", "4")).await;
    assert_eq!(next_period.get("responsecode"), Some("000"));

    let pstn = |request: Vec<(String, String)>, number: &str| {
        with(with(request, "productcode", "TELKOM"), "accnumber2", number)
    };
    let line = h
        .send(&pstn(bill_inquiry("pstn-inq-1", "021"), "5550001"))
        .await;
    let payment = pstn(bill_payment("pstn-pay-1", &line, "150000"), "5550001");
    assert_eq!(h.send(&payment).await.get("responsecode"), Some("000"));
    let same_line = h
        .send(&pstn(bill_inquiry("pstn-inq-1b", "021"), "5550001"))
        .await;
    assert_eq!(same_line.get("responsecode"), Some("401"));
    let other_line = h
        .send(&pstn(bill_inquiry("pstn-inq-2", "021"), "5550002"))
        .await;
    assert_eq!(other_line.get("responsecode"), Some("000"));
    let three_months_of_bpjs = 3 * 150_000 + 2_500;
    assert_eq!(
        h.sim.balance(),
        1_000_000 - 2 * 152_500 - three_months_of_bpjs
    );
}

/// A bill is paid from the moment its payment is taken, not once it
/// succeeds: while that payment is pending, a new inquiry answers `401`.
/// When the payment ends in a failure (deposit refunded) the bill is due
/// again, and a new inquiry and payment for it are taken.
#[tokio::test]
async fn a_bill_stays_paid_while_its_payment_is_pending_and_is_due_again_if_it_fails() {
    let h = start(OkeBayarSimSettings {
        // Long enough that the checks below run while the payment is pending.
        callback_delay_ms: 1_000,
        ..settings()
    })
    .await;
    // Scenario 012: 002, then the ledger turns 201 after two steps.
    let account = format!("{PREFIX}012");
    let inquiry = h.send(&bill_inquiry("fail-inq-1", &account)).await;
    let pending = h
        .send(&bill_payment("fail-pay-1", &inquiry, "150000"))
        .await;
    assert_eq!(pending.get("responsecode"), Some("002"));
    let meanwhile = h.send(&bill_inquiry("fail-inq-2", &account)).await;
    assert_eq!(meanwhile.get("responsecode"), Some("401"));

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.sim.ledger_state("fail-pay-1").unwrap().code != "201" {
        assert!(std::time::Instant::now() < deadline, "never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.sim.balance(), 1_000_000, "refunded");
    let due_again = h.send(&bill_inquiry("fail-inq-3", &account)).await;
    assert_eq!(due_again.get("responsecode"), Some("000"));
    let taken = h
        .send(&bill_payment("fail-pay-2", &due_again, "150000"))
        .await;
    assert_eq!(taken.get("responsecode"), Some("002"));
}

/// `request` without field `name`.
fn without(mut request: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    request.retain(|(k, _)| k != name);
    request
}

/// Spec §4: a postpaid inquiry's `accnumber2` "tag must be present even if
/// empty", and a payment carries the inquiry's fields. A bill inquiry or
/// payment without the tag is malformed (`206`) and pays nothing, so a
/// connector that dropped it fails here as it would at the provider; the
/// tag present but empty is taken.
#[tokio::test]
async fn a_bill_inquiry_or_payment_without_the_accnumber2_tag_is_206() {
    let h = start(settings()).await;
    for format in [Format::Xml, Format::Json] {
        let inquiry = without(bill_inquiry("no-acc2-inq", "531234567891"), "accnumber2");
        let refused = h.send_as(format, &inquiry).await;
        assert_eq!(refused.get("responsecode"), Some("206"), "{format:?}");
    }
    let inquiry = h.send(&bill_inquiry("acc2-inq", "531234567891")).await;
    assert_eq!(inquiry.get("responsecode"), Some("000"), "empty tag taken");
    let payment = without(
        bill_payment("no-acc2-pay", &inquiry, "150000"),
        "accnumber2",
    );
    assert_eq!(h.send(&payment).await.get("responsecode"), Some("206"));
    assert_eq!(h.sim.balance(), 1_000_000, "nothing paid");
    let paid = h.send(&bill_payment("acc2-pay", &inquiry, "150000")).await;
    assert_eq!(paid.get("responsecode"), Some("000"));
}

#[tokio::test]
async fn expiry_formats_and_amount_quirks() {
    let h = start(settings()).await;
    let twelve = h
        .send(&bill_inquiry("exp-1", &format!("{PREFIX}931")))
        .await;
    let expiry = twelve.get("inquiryexpired").unwrap();
    assert_eq!(expiry.len(), 12);
    let hour: u32 = expiry[6..8].parse().unwrap();
    assert!((1..=12).contains(&hour), "Java's hh: {expiry}");
    let answered = loket_okebayar::wire::parse_time(twelve.get("responsetime").unwrap()).unwrap();
    let expires = loket_okebayar::wire::parse_expiry(expiry, answered).unwrap();
    assert!(
        expires > answered && expires - answered <= chrono::Duration::hours(12),
        "{expiry} read after the answer {answered}: {expires}"
    );
    let dashed = h
        .send(&bill_inquiry("exp-2", &format!("{PREFIX}932")))
        .await;
    assert!(dashed.get("inquiryexpired").unwrap().contains('-'));
    for expiry in [&twelve, &dashed] {
        assert!(loket_okebayar::wire::parse_time(expiry.get("inquiryexpired").unwrap()).is_some());
    }

    let response = h
        .send_raw(body(
            Format::Json,
            &purchase("amt-1", &format!("{PREFIX}921")),
        ))
        .await;
    let text = response.text().await.unwrap();
    assert!(text.contains("\"harga\":11000.00"), "{text}");
}

#[tokio::test]
async fn pln_prepaid_inquiry_then_purchase_copies_refs() {
    let h = start(settings()).await;
    let inquiry = h
        .send(&request(
            "OkeBayar-prabayar",
            "pln-inq",
            &[
                ("productcode", "PLN20"),
                ("accnumber", "14234567890"),
                ("querycode", "inquiry"),
            ],
        ))
        .await;
    assert_eq!(status(&inquiry), "000");
    assert!(inquiry
        .first_non_lowercase_name()
        .unwrap()
        .starts_with("PLN_"));
    assert_eq!(inquiry.get("pln_nometer"), Some("14234567890"));
    let ref1 = inquiry.get("ref1").unwrap().to_string();
    let ref2 = inquiry.get("ref2").unwrap().to_string();
    assert_eq!(h.sim.balance(), 1_000_000, "an inquiry costs nothing");

    let bought = h
        .send(&request(
            "OkeBayar-prabayar",
            "pln-buy",
            &[
                ("productcode", "PLN20"),
                ("accnumber", "14234567890"),
                ("ref1", &ref1),
                ("ref2", &ref2),
                ("ref3", ""),
            ],
        ))
        .await;
    assert_eq!(status(&bought), "000");
    assert_eq!(bought.get("ref1"), Some(ref1.as_str()));
    assert_eq!(bought.get("serialnumber").unwrap().len(), 20);
    assert_eq!(h.sim.requests_for("pln-inq").inquiries, 1);
    assert_eq!(
        h.sim.ledger_state("pln-buy").unwrap().inquirycode,
        h.sim.ledger_state("pln-inq").unwrap().inquirycode,
        "the purchase is recorded against the inquiry its refs named"
    );
}

/// A PLN prepaid inquiry for meter 14234567890, then purchases of `PLN20`
/// for `account`, each carrying refs that `refs` makes of the inquiry's
/// `ref1` and `ref2`; the purchases' codes.
async fn pln_purchases_with_refs(
    h: &Harness,
    account: &str,
    refs: impl Fn(&str, &str) -> Vec<[String; 3]>,
) -> Vec<String> {
    let inquiry = h
        .send(&request(
            "OkeBayar-prabayar",
            &format!("pln-inq-{account}"),
            &[
                ("productcode", "PLN20"),
                ("accnumber", "14234567890"),
                ("querycode", "inquiry"),
            ],
        ))
        .await;
    assert_eq!(status(&inquiry), "000");
    let (ref1, ref2) = (inquiry.get("ref1").unwrap(), inquiry.get("ref2").unwrap());
    let mut codes = Vec::new();
    for (n, [ref1, ref2, ref3]) in refs(ref1, ref2).into_iter().enumerate() {
        let bought = h
            .send(&request(
                "OkeBayar-prabayar",
                &format!("pln-buy-{account}-{n}"),
                &[
                    ("productcode", "PLN20"),
                    ("accnumber", account),
                    ("ref1", &ref1),
                    ("ref2", &ref2),
                    ("ref3", &ref3),
                ],
            ))
            .await;
        codes.push(status(&bought).to_string());
    }
    codes
}

#[tokio::test]
async fn a_pln_purchase_whose_refs_do_not_match_its_inquiry_is_refused() {
    let h = start(settings()).await;
    let codes = pln_purchases_with_refs(&h, "14234567890", |ref1, ref2| {
        vec![
            // ref2 changed → payment data ≠ inquiry
            [ref1.into(), format!("{ref2}X"), String::new()],
            // ref1 names no inquiry the simulator issued
            ["INQ-NEVER-ISSUED".into(), ref2.into(), String::new()],
            // ref3 invented
            [ref1.into(), ref2.into(), "R3".into()],
        ]
    })
    .await;
    assert_eq!(codes, ["402", "405", "402"]);
    // Another meter than the inquiry's.
    let other = pln_purchases_with_refs(&h, "14200000000", |ref1, ref2| {
        vec![[ref1.into(), ref2.into(), String::new()]]
    })
    .await;
    assert_eq!(other, ["402"]);
    assert_eq!(h.sim.balance(), 1_000_000, "nothing was debited");
}

#[tokio::test]
async fn a_pln_purchase_after_its_inquiry_expired_is_refused_with_403() {
    let h = start(OkeBayarSimSettings {
        inquiry_ttl_secs: 0,
        ..settings()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let codes = pln_purchases_with_refs(&h, "14234567890", |ref1, ref2| {
        vec![[ref1.into(), ref2.into(), String::new()]]
    })
    .await;
    assert_eq!(codes, ["403"]);
}

#[tokio::test]
async fn ip_allow_list_answers_212() {
    let h = start(OkeBayarSimSettings {
        allowed_ips: AllowList::parse(&["10.9.9.9"]).unwrap(),
        ..settings()
    })
    .await;
    assert_eq!(
        status(&h.send(&purchase("ip-1", "081234567890")).await),
        "212"
    );
    let open = start(OkeBayarSimSettings {
        // A block, as the callback receiver's allow-list takes them.
        allowed_ips: AllowList::parse(&["10.0.0.0/8", "127.0.0.0/8"]).unwrap(),
        ..settings()
    })
    .await;
    assert_eq!(
        status(&open.send(&purchase("ip-1", "081234567890")).await),
        "000"
    );
}

#[tokio::test]
async fn introspection_routes_report_counts_ledger_and_balance() {
    let h = start(settings()).await;
    h.send(&purchase("adm-1", "081234567890")).await;
    h.send(&purchase("adm-1", "081234567890")).await;
    h.status_check("adm-1").await;

    let counts: serde_json::Value = h.introspect_json("requests/adm-1").await;
    assert_eq!(counts["purchases"], 2);
    assert_eq!(counts["status_checks"], 1);
    assert_eq!(counts["total"], 3);

    let ledger: serde_json::Value = h.introspect_json("ledger/adm-1").await;
    assert_eq!(ledger["code"], "000");
    assert_eq!(ledger["amount"], 11_000);
    let missing = h.introspect("ledger/none").await;
    assert_eq!(missing.status(), 404);

    let set = h
        .http
        .put(format!("{}/_sim/balance", h.url))
        .json(&serde_json::json!({ "balance": 42 }))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert_eq!(h.sim.balance(), 42);
    let scenarios: serde_json::Value = h.introspect_json("scenarios").await;
    assert_eq!(scenarios["prefix"], PREFIX);
}

#[tokio::test]
async fn the_pin_never_appears_in_debug_output() {
    let sim = OkeBayarSim::new(settings());
    assert!(!format!("{sim:?} {:?}", sim.settings()).contains(PIN));
}

/// A small deterministic generator (no extra dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.next().checked_rem(n) == Some(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

#[tokio::test]
async fn hostile_and_random_requests_never_break_it_and_money_is_conserved() {
    let h = start(OkeBayarSimSettings {
        // No asynchronous settlement during the run: the ledger is what the
        // replies said.
        callback_delay_ms: 3_600_000,
        ..settings()
    })
    .await;
    let mut rng = Lcg(42);
    let codes = [
        "OkeBayar-prabayar",
        "OkeBayar-inquiry",
        "OkeBayar-cek-status",
        "OkeBayar-cek-balance",
        "OkeBayar-echo",
        "okebayar-PRABAYAR",
        "",
        "x",
    ];
    let accounts = [
        "081234567890",
        "089900000002",
        "089900000204",
        "089900000903",
        "089900000904",
        "089900000401",
        "089900000921",
        "",
        "<>&\"'",
        "\u{1F600}",
    ];
    let mut references = Vec::new();
    for i in 0..300 {
        let reference = format!("rnd-{}", rng.next() % 40);
        references.push(reference.clone());
        let raw = match i % 5 {
            0 => (0..(rng.next() % 200))
                .map(|_| rng.next() as u8)
                .collect::<Vec<u8>>(),
            _ => {
                let mut fields = request(
                    rng.pick(&codes),
                    &reference,
                    &[
                        ("productcode", rng.pick(&["S10", "PLN20", ""])),
                        ("accnumber", rng.pick(&accounts)),
                    ],
                );
                fields.push(("accnumber1".into(), rng.pick(&accounts).into()));
                // Mostly with the `accnumber2` tag a bill request must carry
                // (else it is refused 206 before anything else is checked).
                if !rng.one_in(3) {
                    fields.push(("accnumber2".into(), rng.pick(&["", "7654321"]).into()));
                }
                if rng.one_in(3) {
                    fields.push(("querycode".into(), "inquiry".into()));
                }
                if rng.one_in(3) {
                    fields.push(("inquirycode".into(), format!("INQ{}", rng.next())));
                    fields.push((
                        "nominal".into(),
                        rng.pick(&["150000", "1e9", "-1", "150000.50"]).into(),
                    ));
                }
                let format = if rng.one_in(2) {
                    Format::Xml
                } else {
                    Format::Json
                };
                body(format, &fields)
            }
        };
        let response = h.send_raw(raw).await;
        assert!(
            [200, 502].contains(&response.status().as_u16()),
            "{}",
            response.status()
        );
    }
    // Still serving, and every rupiah taken is held by a debited entry.
    assert_eq!(
        status(&h.send(&purchase("after-fuzz", "081234567890")).await),
        "000"
    );
    references.push("after-fuzz".into());
    references.sort();
    references.dedup();
    let held: i64 = references
        .iter()
        .filter_map(|r| h.sim.ledger_state(r))
        .filter(|e| e.debited)
        .map(|e| e.amount)
        .sum();
    assert_eq!(h.sim.balance() + held, 1_000_000);
}

impl Harness {
    async fn put_outage(&self, outage: serde_json::Value) -> reqwest::Response {
        self.http
            .put(format!("{}/_sim/outage", self.url))
            .json(&outage)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn an_outage_answers_every_request_with_an_error_page_until_it_ends() {
    let h = start(settings()).await;
    for (outage, field) in [
        (
            serde_json::json!({ "status": 200, "for_ms": 1000 }),
            "status:",
        ),
        (serde_json::json!({ "for_ms": 0 }), "for_ms:"),
        (serde_json::json!({ "status": 503 }), "for_ms"),
        (
            serde_json::json!({ "for_ms": 10, "colour": "red" }),
            "colour",
        ),
    ] {
        let refused = h.put_outage(outage.clone()).await;
        assert_eq!(refused.status(), 400, "{outage}");
        let error = refused.json::<serde_json::Value>().await.unwrap()["error"].to_string();
        assert!(error.contains(field), "{outage}: {error}");
    }
    assert_eq!(h.introspect_json("outage").await["active"], false);

    // Refusing: nothing is carried out, every request is counted.
    let started = h.put_outage(serde_json::json!({ "for_ms": 60_000 })).await;
    assert_eq!(started.status(), 200);
    let state = started.json::<serde_json::Value>().await.unwrap();
    assert_eq!(
        (state["active"].clone(), state["status"].clone()),
        (true.into(), 503.into())
    );
    for fields in [
        purchase("o-1", "081234567890"),
        request("OkeBayar-cek-status", "o-1", &[]),
    ] {
        let answer = h.send_raw(body(Format::Json, &fields)).await;
        assert_eq!(answer.status(), 503);
        assert!(answer
            .text()
            .await
            .unwrap()
            .contains("503 Service Unavailable"));
    }
    assert!(h.sim.ledger_state("o-1").is_none(), "nothing carried out");
    let counts = h.sim.requests_for("o-1");
    assert_eq!((counts.purchases, counts.status_checks), (1, 1));
    assert_eq!(
        (counts.money_turned_away, counts.money_taken_in()),
        (1, 0),
        "the purchase was turned away at the door"
    );
    assert_eq!(h.sim.balance(), 1_000_000);

    // After commit: the purchase is carried out, its answer is the error
    // page; a status check is not carried out.
    h.put_outage(serde_json::json!({ "status": 500, "for_ms": 60_000, "after_commit": true }))
        .await;
    let answer = h
        .send_raw(body(Format::Xml, &purchase("o-2", "081234567890")))
        .await;
    assert_eq!(answer.status(), 500);
    assert_eq!(h.sim.ledger_state("o-2").unwrap().code, "000");
    assert_eq!(h.sim.requests_for("o-2").money_taken_in(), 1, "taken in");
    assert_eq!(h.sim.balance(), 1_000_000 - 11_000);
    let check = h
        .send_raw(body(
            Format::Xml,
            &request("OkeBayar-cek-status", "o-2", &[]),
        ))
        .await;
    assert_eq!(check.status(), 500);

    // Ended by hand: the provider answers again, from its ledger.
    let ended = h
        .http
        .delete(format!("{}/_sim/outage", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ended.json::<serde_json::Value>().await.unwrap()["active"],
        false
    );
    assert_eq!(status(&h.status_check("o-2").await), "000");
    assert_eq!(
        status(&h.send(&purchase("o-3", "081234567890")).await),
        "000"
    );

    // Ended by time.
    h.put_outage(serde_json::json!({ "for_ms": 200 })).await;
    let refused = h
        .send_raw(body(Format::Xml, &purchase("o-4", "081234567890")))
        .await;
    assert_eq!(refused.status(), 503);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&h.send(&purchase("o-5", "081234567890")).await),
        "000"
    );
    assert_eq!(h.introspect_json("outage").await["active"], false);
}

#[tokio::test]
async fn doc_literal_mode_wraps_xml_replies_in_braces_and_the_connector_reads_them() {
    let h = start(OkeBayarSimSettings {
        doc_literal_xml: true,
        ..settings()
    })
    .await;
    let raw = h
        .send_raw(body(Format::Xml, &purchase("lit-1", "081234567890")))
        .await
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("{ <?xml") && text.ends_with(" }"),
        "{text}"
    );
    // The connector's decoder takes the wrapped document as XML.
    let fields = decode(Format::sniff(&raw), &raw).unwrap();
    assert_eq!(status(&fields), "000");
    assert_eq!(fields.get("referencecode"), Some("lit-1"));
    // JSON replies are never wrapped.
    let json = h
        .send_raw(body(Format::Json, &purchase("lit-2", "081234567890")))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(
        json.starts_with(b"{\""),
        "{}",
        String::from_utf8_lossy(&json)
    );
}

/// The echo's `transactioncode` is not in the doc (ASSUMED) and the
/// connector's is configurable: the simulator answers the echo under the
/// codes it is set to, and only those.
#[tokio::test]
async fn the_echo_answers_under_the_configured_transactioncodes_only() {
    let h = start(OkeBayarSimSettings {
        echo_transactioncodes: vec!["PARTNER-PING".into()],
        ..settings()
    })
    .await;
    let connector =
        loket_okebayar::OkeBayarConnector::new(loket_okebayar::settings::OkeBayarSettings {
            url: h.url.clone(),
            userid: USER.into(),
            userpin: Secret::new(PIN),
            echo_transaction_code: "PARTNER-PING".into(),
            ..Default::default()
        });
    assert_eq!(connector.echo("ping").await.unwrap(), "ping");
    let default_code = h
        .send(&request(
            loket_okebayar::settings::ECHO_TRANSACTION_CODE_DEFAULT,
            "echo-default",
            &[("message", "ping")],
        ))
        .await;
    assert_eq!(status(&default_code), "241", "an unknown transactioncode");
}

/// The bill selectors `401`–`403` fail a prepaid purchase at once, but a PLN
/// prepaid inquiry with them succeeds (as `SCENARIOS.md` says).
#[tokio::test]
async fn bill_selectors_fail_a_prepaid_purchase_but_not_a_pln_prepaid_inquiry() {
    let h = start(settings()).await;
    for code in ["401", "402", "403"] {
        let account = format!("{PREFIX}{code}");
        let inquiry = h
            .send(&request(
                "OkeBayar-prabayar",
                &format!("pln-inq-{code}"),
                &[
                    ("productcode", "PLN20"),
                    ("accnumber", &account),
                    ("querycode", "inquiry"),
                ],
            ))
            .await;
        assert_eq!(status(&inquiry), "000", "{code}");
        let bought = h
            .send(&request(
                "OkeBayar-prabayar",
                &format!("pln-buy-{code}"),
                &[("productcode", "PLN20"), ("accnumber", &account)],
            ))
            .await;
        assert_eq!(status(&bought), code);
    }
    assert_eq!(h.sim.balance(), 1_000_000, "nothing debited");
}
