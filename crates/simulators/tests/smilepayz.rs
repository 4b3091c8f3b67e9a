//! The Smilepayz connector and callback parser against the Smilepayz
//! simulator over real HTTP: pay-in paid / expired / spoofed, an unpaid
//! pay-in expiring after its `expiryPeriod`, pay-out success / failure /
//! insufficient balance, a pay-out timeout after acceptance resolved by
//! inquiry with exactly one pay-out, a concurrent duplicate (429xx00), a
//! callback before the create reply whose retries do not hold the reply,
//! callback retries on a wrong answer (same dedupe key), callbacks
//! refused for a bad signature, the simulator's own request checks
//! (signature, Content-Type, X-TIMESTAMP shape, field lengths) and what it
//! remembers of the requests it refuses, the method a hosted-page pay-in
//! reports, a wrong path (4049x01 Invalid Routing), the EMV lengths and CRC
//! of a QRIS pay-in's QR string, a forgotten order's timer doing nothing,
//! and inquiries by tradeNo alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use loket_connector::{CallbackParser, CallbackRequest, Command, Connector, ParsedCallback};
use loket_protocol::catalogue::{self, CodeOperation};
use loket_protocol::{Money, Operation, Outcome, Provider};
use loket_runtime::allow::AllowList;
use loket_runtime::{Secret, Shutdown};
use loket_simulators::common::DEFAULT_REMEMBERED_REFERENCES;
use loket_simulators::smilepayz::{SmilepayzCallbackLog, SmilepayzSim, SmilepayzSimSettings};
use loket_simulators::RequestCounts;
use loket_smilepayz::sign::{self, TimestampStyle};
use loket_smilepayz::{callback_parser, CallbackSettings, SmilepayzConnector, SmilepayzSettings};

const SECRET: &str = "CANARY-SMILEPAYZ-SECRET-42";

#[derive(Default)]
struct Received {
    parsed: Vec<ParsedCallback>,
    /// The JSON body of each callback in `parsed`, as the simulator sent it.
    bodies: Vec<serde_json::Value>,
    rejected: Vec<String>,
    /// Answer this many accepted callbacks with a wrong body first.
    wrong_answers: usize,
}

#[derive(Clone)]
struct Receiver {
    parser: Arc<loket_smilepayz::SmilepayzCallbacks>,
    received: Arc<Mutex<Received>>,
}

async fn receive(
    State(rx): State<Receiver>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let request = CallbackRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        source_ip: None,
    };
    let reply = match rx.parser.parse(&request) {
        Ok(parsed) => {
            let mut received = rx.received.lock().unwrap();
            received.parsed.push(parsed.clone());
            received
                .bodies
                .push(serde_json::from_slice(&request.body).unwrap());
            if received.wrong_answers > 0 {
                received.wrong_answers -= 1;
                return (axum::http::StatusCode::OK, "OK").into_response();
            }
            rx.parser.acknowledge(&request, &parsed)
        }
        Err(error) => {
            rx.received.lock().unwrap().rejected.push(error.to_string());
            rx.parser.reject(&request, &error)
        }
    };
    (
        axum::http::StatusCode::from_u16(reply.status).unwrap(),
        reply.body,
    )
        .into_response()
}

struct Setup {
    sim: SmilepayzSim,
    connector: SmilepayzConnector,
    received: Arc<Mutex<Received>>,
    sim_addr: SocketAddr,
    merchant_private_pem: String,
    _shutdown: Shutdown,
}

async fn setup_with(
    receiver_key: Option<String>,
    tweak: impl FnOnce(&mut SmilepayzSimSettings),
) -> Setup {
    setup_remembering(DEFAULT_REMEMBERED_REFERENCES, receiver_key, tweak).await
}

async fn setup_remembering(
    references: usize,
    receiver_key: Option<String>,
    tweak: impl FnOnce(&mut SmilepayzSimSettings),
) -> Setup {
    let shutdown = Shutdown::new();
    let (merchant_private_pem, merchant_public_pem) = sign::generate_key_pair();
    let cb_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cb_addr = cb_listener.local_addr().unwrap();
    let mut settings = SmilepayzSimSettings {
        merchant_id: "20001".into(),
        merchant_secret: Secret::new(SECRET),
        merchant_public_key: merchant_public_pem,
        settle_delay_ms: 200,
        callback_schedule_ms: vec![0, 150, 300],
        inquiry_race_ms: 100,
        slow_reply_ms: 2_000,
        ..Default::default()
    };
    tweak(&mut settings);
    let sim = SmilepayzSim::remembering(settings, references);
    let received = Arc::new(Mutex::new(Received::default()));
    let parser = callback_parser(&CallbackSettings {
        platform_public_key: receiver_key.unwrap_or_else(|| sim.platform_public_key_pem()),
        ..Default::default()
    })
    .unwrap();
    let rx = Receiver {
        parser: Arc::new(parser),
        received: received.clone(),
    };
    let app = Router::new()
        .route("/callback/smilepayz", post(receive))
        .with_state(rx);
    tokio::spawn(async move { axum::serve(cb_listener, app).await.unwrap() });
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = sim_listener.local_addr().unwrap();
    {
        let sim = sim.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { sim.serve(sim_listener, shutdown).await });
    }
    let connector = SmilepayzConnector::new(SmilepayzSettings {
        base_url: format!("http://{sim_addr}"),
        merchant_id: "20001".into(),
        merchant_secret: Secret::new(SECRET),
        merchant_private_key: Secret::new(merchant_private_pem.clone()),
        callback_url: format!("http://{cb_addr}/callback/smilepayz"),
        timeout_ms: 1_000,
        connect_timeout_ms: 500,
        ..Default::default()
    })
    .unwrap();
    Setup {
        sim,
        connector,
        received,
        sim_addr,
        merchant_private_pem,
        _shutdown: shutdown,
    }
}

async fn setup() -> Setup {
    setup_with(None, |_| {}).await
}

fn reference() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Every header a request to the simulator must carry, as the connector
/// sends them, signed over `ts` and `body` with the merchant key; a test
/// changes or drops one to see the simulator's check of it.
fn signed_headers(s: &Setup, ts: &str, body: &str) -> reqwest::header::HeaderMap {
    let key = sign::load_private_key(&s.merchant_private_pem).unwrap();
    let signature = sign::sign_request(&key, ts, SECRET, body.as_bytes());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    headers.insert("X-TIMESTAMP", ts.parse().unwrap());
    headers.insert("X-SIGNATURE", signature.parse().unwrap());
    headers.insert("X-PARTNER-ID", "20001".parse().unwrap());
    headers
}

/// POSTs `body` with `headers` to the simulator's `path`: the HTTP status
/// and the JSON reply.
async fn post_raw(
    s: &Setup,
    path: &str,
    headers: reqwest::header::HeaderMap,
    body: String,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", s.sim_addr))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// POSTs `body` to `path` with every header right and a fresh timestamp.
async fn post_signed(s: &Setup, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let body = body.to_string();
    let ts = sign::timestamp(TimestampStyle::Wib, chrono::Utc::now());
    post_raw(s, path, signed_headers(s, &ts, &body), body).await
}

/// A QRIS pay-in of 10 000 for `order_no` (scenario 000).
fn pay_in_body(order_no: &str) -> serde_json::Value {
    serde_json::json!({
        "orderNo": order_no,
        "purpose": "t",
        "merchant": { "merchantId": "20001" },
        "money": { "currency": "IDR", "amount": 10000 },
        "paymentMethod": "QRIS",
    })
}

fn response_code(reply: &serde_json::Value) -> &str {
    reply["responseCode"].as_str().unwrap()
}

fn command(
    operation: Operation,
    reference: &str,
    amount: i64,
    details: &[(&str, &str)],
) -> Command {
    Command {
        transaction_id: uuid::Uuid::now_v7().to_string(),
        provider: Provider::Smilepayz,
        operation,
        provider_reference: reference.to_string(),
        provider_product_code: String::new(),
        account: if operation == Operation::PayOut {
            "1234567890".into()
        } else {
            String::new()
        },
        account2: String::new(),
        account3: String::new(),
        contact: String::new(),
        amount: Some(Money::idr(amount)),
        inquiry_data: BTreeMap::new(),
        original_operation: operation,
        provider_trace: String::new(),
        first_dispatch: true,
        first_send: false,
        journal_recorded: None,
        original_reference: String::new(),
        original_provider_trace: String::new(),
        details: details
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        transaction_created_at: Some(chrono::Utc::now()),
    }
}

/// Polls inquiry until the order is final (or fails the test).
async fn settle(s: &Setup, command: &Command) -> loket_connector::Report {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = s.connector.check_status(command).await;
        if matches!(report.outcome, Outcome::Success | Outcome::Failed) {
            return report;
        }
        assert!(Instant::now() < deadline, "never final: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_callbacks(s: &Setup, n: usize) -> Vec<ParsedCallback> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let parsed = s.received.lock().unwrap().parsed.clone();
        if parsed.len() >= n {
            return parsed;
        }
        assert!(Instant::now() < deadline, "only {} callbacks", parsed.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulator records a callback attempt once it has read the answer, a
/// moment after our receiver handled it: waits for `attempts` records.
async fn wait_recorded(s: &Setup, order: &str, attempts: usize) -> SmilepayzCallbackLog {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.sim.callbacks_for(order);
        if log.attempts.len() >= attempts {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "only {} attempts recorded",
            log.attempts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pay_in_created_paid_callback_verifies_and_inquiry_confirms_success() {
    let s = setup().await;
    let order = reference();
    let cmd = command(
        Operation::PayIn,
        &order,
        150_000,
        &[("method", "QRIS"), ("payer_name", "Budi")],
    );
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    let payment = report.payment.clone().expect("payment instructions");
    assert!(!payment.qr_string.is_empty());
    assert_eq!(payment.method, "QRIS");
    assert!(payment.expires_at.is_some());
    let trade_no = report.provider_trace.clone().expect("tradeNo");
    // The stored exchange masks the signature and never holds the secret.
    let exchange = &report.exchanges[0];
    assert!(exchange.request.contains("X-SIGNATURE: ***"));
    assert!(!format!("{:?}", report.exchanges).contains(SECRET));

    let callbacks = wait_callbacks(&s, 1).await;
    let callback = &callbacks[0];
    assert_eq!(callback.provider_reference, order);
    assert_eq!(callback.provider_trace, trade_no);
    assert_eq!(callback.claimed_outcome, Outcome::Success);
    assert!(!callback.verified, "inquiry decides");
    let log = wait_recorded(&s, &order, 1).await;
    assert_eq!(log.acknowledged, 1);
    assert_eq!(log.attempts.len(), 1);

    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Success);
    assert_eq!(status.provider_code.as_deref(), Some("SUCCESS"));
    assert_eq!(status.provider_amount, Some(Money::idr(150_000)));
    assert_eq!(s.sim.balances().payin_available, 150_000);
    assert_eq!(s.sim.money_requests_for(&order), 1);
}

#[tokio::test]
async fn hosted_pay_in_is_init_with_a_payment_url() {
    let s = setup().await;
    let order = reference();
    let report = s
        .connector
        .execute(&command(Operation::PayIn, &order, 50_000, &[]))
        .await;
    assert_eq!(report.outcome, Outcome::Pending);
    assert!(report.payment.unwrap().payment_url.starts_with("https://"));
    assert_eq!(s.sim.order(&order).unwrap().status, "INIT");
}

#[tokio::test]
async fn pay_in_expiry_is_failed_with_reason_expired() {
    let s = setup().await;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 150_001, &[("method", "BCA")]);
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Pending);
    assert!(!report.payment.unwrap().va_number.is_empty());
    let callbacks = wait_callbacks(&s, 1).await;
    assert_eq!(callbacks[0].provider_code, "EXPIRED");
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Failed);
    assert_eq!(status.provider_code.as_deref(), Some("EXPIRED"));
    let explanation =
        catalogue::explain(Provider::Smilepayz, "EXPIRED", Some(CodeOperation::PayIn)).unwrap();
    assert!(explanation
        .merchant_message_en
        .to_lowercase()
        .contains("expired"));
    // A later operation on the expired order: 4039000 (spec §8.8), which
    // loket reads as a definite failure that moved no money.
    let again = s.connector.execute(&cmd).await;
    assert_eq!(again.provider_code.as_deref(), Some("4039000"), "{again:?}");
    assert_eq!(again.outcome, Outcome::Failed, "{again:?}");
}

/// A hosted-page pay-in (no method asked) that expires unpaid had no
/// method chosen: the order and the inquiry name none.
#[tokio::test]
async fn a_hosted_page_pay_in_that_expires_names_no_method() {
    let s = setup().await;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 150_001, &[]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let callbacks = wait_callbacks(&s, 1).await;
    assert_eq!(callbacks[0].provider_code, "EXPIRED");
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Failed);
    assert_eq!(s.sim.order(&order).unwrap().payment_method, "");
    assert!(
        status.payment.is_none_or(|p| p.method.is_empty()),
        "no method reported"
    );
}

/// Spec §2.7 and §8.8: an unpaid pay-in (scenario 003 never pays) expires
/// once its `expiryPeriod` has passed: EXPIRED callback, inquiry EXPIRED,
/// and a later pay-in with its orderNo 4039000.
#[tokio::test]
async fn an_unpaid_pay_in_expires_after_its_expiry_period() {
    let s = setup().await;
    let order = reference();
    let cmd = command(
        Operation::PayIn,
        &order,
        150_003,
        &[("method", "QRIS"), ("expiry_seconds", "1")],
    );
    let created = Instant::now();
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    assert_eq!(s.sim.order(&order).unwrap().status, "PROCESSING");

    let callbacks = wait_callbacks(&s, 1).await;
    assert!(
        created.elapsed() >= Duration::from_millis(900),
        "not before its expiryPeriod"
    );
    assert_eq!(callbacks[0].provider_reference, order);
    assert_eq!(callbacks[0].provider_code, "EXPIRED");
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Failed);
    assert_eq!(status.provider_code.as_deref(), Some("EXPIRED"));
    let again = s.connector.execute(&cmd).await;
    assert_eq!(again.provider_code.as_deref(), Some("4039000"), "{again:?}");
    assert_eq!(again.outcome, Outcome::Failed, "{again:?}");
}

/// A pay-in whose payment would come only after its expiryPeriod expires
/// first, and the late payment never happens.
#[tokio::test]
async fn a_pay_in_paid_only_after_its_expiry_expires_instead() {
    let s = setup_with(None, |settings| settings.settle_delay_ms = 3_000).await;
    let order = reference();
    let cmd = command(
        Operation::PayIn,
        &order,
        150_000,
        &[("method", "QRIS"), ("expiry_seconds", "1")],
    );
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let callbacks = wait_callbacks(&s, 1).await;
    assert_eq!(callbacks[0].provider_code, "EXPIRED");
    assert_eq!(s.sim.order(&order).unwrap().status, "EXPIRED");
    assert_eq!(s.sim.balances().payin_available, 0, "never paid");
}

/// A forgotten order's timer leaves alone a newer order that took its
/// orderNo.
#[tokio::test]
async fn a_forgotten_orders_expiry_leaves_a_newer_order_with_its_order_no_alone() {
    let s = setup_remembering(1, None, |_| {}).await;
    let order = reference();
    let stuck = |expiry: &'static str| {
        command(
            Operation::PayIn,
            &order,
            150_003,
            &[("method", "QRIS"), ("expiry_seconds", expiry)],
        )
    };
    assert_eq!(
        s.connector.execute(&stuck("1")).await.outcome,
        Outcome::Pending
    );
    let other = command(
        Operation::PayIn,
        &reference(),
        150_003,
        &[("method", "QRIS")],
    );
    assert_eq!(s.connector.execute(&other).await.outcome, Outcome::Pending);
    assert_eq!(s.sim.order(&order), None, "forgotten");
    assert_eq!(
        s.connector.execute(&stuck("3600")).await.outcome,
        Outcome::Pending
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(s.sim.order(&order).unwrap().status, "PROCESSING");
}

/// Scenario 006 (spec §8.11, callback before the create reply): only the
/// first callback attempt comes before the reply; a retry, here due 3 s
/// later (past the connector's 1 s timeout), follows in the background.
#[tokio::test]
async fn a_callback_before_the_create_reply_does_not_hold_the_reply_for_its_retries() {
    let s = setup_with(None, |settings| {
        settings.callback_schedule_ms = vec![0, 3_000]
    })
    .await;
    s.received.lock().unwrap().wrong_answers = 1;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 150_006, &[("method", "QRIS")]);
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    assert_eq!(
        s.received.lock().unwrap().parsed.len(),
        1,
        "the first attempt came before the reply"
    );
    let callbacks = wait_callbacks(&s, 2).await;
    assert_eq!(callbacks[0].dedupe_key, callbacks[1].dedupe_key);
    let log = wait_recorded(&s, &order, 2).await;
    assert!(log.attempts[1].acknowledged);
    assert_eq!(s.sim.money_requests_for(&order), 1);
}

#[tokio::test]
async fn a_signed_callback_claiming_success_for_a_failed_order_is_overruled_by_inquiry() {
    let s = setup().await;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 150_004, &[("method", "QRIS")]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let callbacks = wait_callbacks(&s, 1).await;
    assert_eq!(callbacks[0].claimed_outcome, Outcome::Success);
    assert!(!callbacks[0].verified);
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Failed);
    assert_eq!(s.sim.order(&order).unwrap().status, "FAILED");
}

#[tokio::test]
async fn pay_out_success_freezes_then_settles() {
    let s = setup().await;
    let before = s.sim.balances();
    let order = reference();
    let cmd = command(
        Operation::PayOut,
        &order,
        200_000,
        &[("method", "BCA"), ("receiver_name", "Siti")],
    );
    let report = s.connector.execute(&cmd).await;
    assert_eq!(
        report.outcome,
        Outcome::Pending,
        "00 PROCESSING is pending, never success"
    );
    assert_eq!(report.provider_code.as_deref(), Some("2009100"));
    let frozen = s.sim.balances();
    assert_eq!(frozen.payout_frozen, 200_000);
    assert_eq!(frozen.payout_available, before.payout_available - 200_000);
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Success);
    let after = s.sim.balances();
    assert_eq!(after.payout_frozen, 0);
    assert_eq!(after.payout_available, before.payout_available - 200_000);
    assert_eq!(s.sim.requests_for(&order).payments, 1);
}

#[tokio::test]
async fn pay_out_failure_unfreezes() {
    let s = setup().await;
    let before = s.sim.balances();
    let order = reference();
    let cmd = command(Operation::PayOut, &order, 200_002, &[("method", "BRI")]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Failed);
    assert_eq!(status.provider_code.as_deref(), Some("FAILED"));
    assert_eq!(s.sim.balances(), before);
}

#[tokio::test]
async fn insufficient_balance_fails_with_the_catalogue_explanation() {
    let s = setup().await;
    s.sim.set_payout_balance(15_000);
    let order = reference();
    let report = s
        .connector
        .execute(&command(
            Operation::PayOut,
            &order,
            20_000,
            &[("method", "BCA")],
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.provider_code.as_deref(), Some("4009103"));
    assert_eq!(
        report.provider_message.as_deref(),
        Some("Insufficient Balance")
    );
    let explanation = catalogue::explain_with_message(
        Provider::Smilepayz,
        "4009103",
        Some(CodeOperation::PayOut),
        "Insufficient Balance",
    )
    .unwrap();
    assert_eq!(explanation.outcome, Outcome::Failed);
    assert!(explanation
        .operator_action
        .to_lowercase()
        .contains("top up"));
    assert!(s.sim.order(&order).is_none(), "nothing created");
    assert_eq!(s.sim.balances().payout_frozen, 0);
}

#[tokio::test]
async fn pay_out_timeout_after_acceptance_is_unknown_then_inquiry_final_with_one_pay_out() {
    let s = setup().await;
    let order = reference();
    let cmd = command(Operation::PayOut, &order, 300_010, &[("method", "BCA")]);
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("5029100"));
    let status = settle(&s, &cmd).await;
    assert_eq!(status.outcome, Outcome::Success);
    assert_eq!(
        s.sim.requests_for(&order).payments,
        1,
        "exactly one pay-out"
    );
    assert!(s.sim.requests_for(&order).status_checks >= 1);

    // A client timeout (slow reply) is unknown too; a resubmission is a duplicate.
    let slow = reference();
    let cmd = command(Operation::PayOut, &slow, 300_011, &[("method", "BCA")]);
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Unknown);
    let again = s.connector.execute(&cmd).await;
    assert_eq!(
        again.outcome,
        Outcome::Unknown,
        "duplicate orderNo is unknown: {again:?}"
    );
    assert_eq!(again.provider_code.as_deref(), Some("4009101"));
    assert_eq!(settle(&s, &cmd).await.outcome, Outcome::Success);
    assert_eq!(s.sim.requests_for(&slow).payments, 2);
    assert_eq!(s.sim.balances().payout_frozen, 0);
}

/// Spec §7: a duplicate that arrives while the first request for its
/// orderNo is still being processed (scenario 011 replies late) gets
/// 429xx00; once the first request has ended, a duplicate is 400xx01.
#[tokio::test]
async fn a_concurrent_duplicate_gets_429_while_the_first_request_is_in_flight() {
    let s = setup().await;
    let order = reference();
    let cmd = command(Operation::PayOut, &order, 300_011, &[("method", "BCA")]);
    let (first, concurrent) = tokio::join!(s.connector.execute(&cmd), async {
        while s.sim.order(&order).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.connector.execute(&cmd).await
    });
    assert_eq!(first.outcome, Outcome::Unknown, "{first:?}");
    assert_eq!(
        concurrent.provider_code.as_deref(),
        Some("4299100"),
        "{concurrent:?}"
    );
    assert_eq!(concurrent.outcome, Outcome::Unknown, "{concurrent:?}");
    // The first request's handler ends by slow_reply_ms at the latest.
    tokio::time::sleep(Duration::from_millis(s.sim.settings().slow_reply_ms)).await;
    let later = s.connector.execute(&cmd).await;
    assert_eq!(later.provider_code.as_deref(), Some("4009101"), "{later:?}");
    assert_eq!(settle(&s, &cmd).await.outcome, Outcome::Success);
    assert_eq!(s.sim.requests_for(&order).payments, 3);
    assert_eq!(s.sim.balances().payout_frozen, 0, "paid out once");
}

/// Scenarios 010–012 are pay-out only (spec §8.10 names the pay-out): a
/// pay-in with them is accepted and paid as 000.
#[tokio::test]
async fn reply_fault_scenarios_leave_a_pay_in_alone() {
    let s = setup().await;
    for amount in [150_010, 150_011, 150_012] {
        let order = reference();
        let cmd = command(Operation::PayIn, &order, amount, &[("method", "QRIS")]);
        let report = s.connector.execute(&cmd).await;
        assert_eq!(report.outcome, Outcome::Pending, "{amount}: {report:?}");
        assert_eq!(report.provider_code.as_deref(), Some("2009000"));
        assert_eq!(settle(&s, &cmd).await.outcome, Outcome::Success);
    }
}

#[tokio::test]
async fn inquiry_right_after_create_is_not_found_but_not_reported_as_not_found_within_grace() {
    let s = setup_with(None, |settings| settings.inquiry_race_ms = 5_000).await;
    let order = reference();
    let cmd = command(Operation::PayOut, &order, 100_003, &[("method", "BCA")]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let report = s.connector.check_status(&cmd).await;
    assert_eq!(report.outcome, Outcome::Unknown);
    assert!(!report.not_found, "a young order is not declared missing");
    // An orderNo never sent, with an old (non-v7) transaction id: not found.
    let mut missing = command(
        Operation::PayOut,
        &reference(),
        100_000,
        &[("method", "BCA")],
    );
    missing.transaction_id = uuid::Uuid::new_v4().to_string();
    let report = s.connector.check_status(&missing).await;
    assert!(report.not_found, "{report:?}");
    assert_eq!(report.outcome, Outcome::Unknown);
}

#[tokio::test]
async fn beyond_its_memory_the_oldest_order_is_forgotten_and_the_newest_kept() {
    let remembered = 2;
    let s = setup_remembering(remembered, None, |settings| settings.inquiry_race_ms = 0).await;
    let commands: Vec<Command> = (0..=remembered)
        .map(|_| {
            let mut cmd = command(
                Operation::PayIn,
                &reference(),
                150_000,
                &[("method", "QRIS")],
            );
            // Old enough (not a v7 id) for "not found" to be reported as such.
            cmd.transaction_id = uuid::Uuid::new_v4().to_string();
            cmd
        })
        .collect();
    for cmd in &commands {
        assert_eq!(s.connector.execute(cmd).await.outcome, Outcome::Pending);
    }
    let (oldest, newest) = (&commands[0], &commands[remembered]);

    assert_eq!(s.sim.order(&oldest.provider_reference), None);
    assert_eq!(s.sim.requests_for(&oldest.provider_reference).total, 0);
    let report = s.connector.check_status(oldest).await;
    assert!(report.not_found, "{report:?}");

    // The newest is remembered: resubmitting it is a duplicate, and the
    // inquiry finds it.
    let again = s.connector.execute(newest).await;
    assert_eq!(again.provider_code.as_deref(), Some("4009001"), "{again:?}");
    assert_eq!(s.sim.money_requests_for(&newest.provider_reference), 2);
    assert_eq!(settle(&s, newest).await.outcome, Outcome::Success);

    // A forgotten orderNo is accepted again as a new order.
    assert_eq!(s.connector.execute(oldest).await.outcome, Outcome::Pending);
    assert!(s.sim.order(&oldest.provider_reference).is_some());
}

#[tokio::test]
async fn a_wrong_answer_is_retried_and_the_retry_has_the_same_dedupe_key() {
    let s = setup().await;
    s.received.lock().unwrap().wrong_answers = 1;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 75_000, &[("method", "QRIS")]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let callbacks = wait_callbacks(&s, 2).await;
    assert_eq!(callbacks[0].dedupe_key, callbacks[1].dedupe_key);
    let log = wait_recorded(&s, &order, 2).await;
    assert_eq!(log.deliveries, 1);
    assert_eq!(log.attempts.len(), 2);
    assert!(!log.attempts[0].acknowledged);
    assert_eq!(log.attempts[0].answer, "OK");
    assert!(log.attempts[1].acknowledged);
    assert_eq!(log.attempts[0].trade_no, log.attempts[1].trade_no);
}

#[tokio::test]
async fn callbacks_signed_with_another_key_are_rejected_and_retried() {
    let (_, other_public) = sign::generate_key_pair();
    let s = setup_with(Some(other_public), |_| {}).await;
    let order = reference();
    let cmd = command(Operation::PayIn, &order, 80_000, &[("method", "QRIS")]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.sim.callbacks_for(&order).attempts.len() < 3 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.sim.callbacks_for(&order);
    assert_eq!(log.acknowledged, 0);
    assert!(log.attempts.iter().all(|a| a.http_status == Some(401)));
    let received = s.received.lock().unwrap();
    assert!(received.parsed.is_empty());
    assert_eq!(received.rejected.len(), 3);
}

/// Raw requests: the simulator's own checks.
#[tokio::test]
async fn the_simulator_checks_signature_timestamp_partner_and_order_rules() {
    let s = setup().await;
    let client = reqwest::Client::new();
    let url = format!(
        "http://{}{}",
        s.sim_addr,
        loket_smilepayz::wire::PAY_IN_PATH
    );
    let send = |body: String, ts: String, partner: &str, sig: Option<String>| {
        let mut headers = signed_headers(&s, &ts, &body);
        headers.insert("X-PARTNER-ID", partner.parse().unwrap());
        if let Some(sig) = sig {
            headers.insert("X-SIGNATURE", sig.parse().unwrap());
        }
        client.post(&url).headers(headers).body(body).send()
    };
    let body = |order: &str, merchant: &str| {
        format!(
            r#"{{"orderNo":"{order}","purpose":"t","merchant":{{"merchantId":"{merchant}"}},"money":{{"currency":"IDR","amount":10000}},"paymentMethod":"QRIS"}}"#
        )
    };
    let now = || sign::timestamp(TimestampStyle::Utc, chrono::Utc::now());
    let rc = |v: serde_json::Value| v["responseCode"].as_str().unwrap().to_string();

    // Bad signature → 401 4019000.
    let r = send(
        body("abc123456", "20001"),
        now(),
        "20001",
        Some("AAAA".into()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(rc(r.json().await.unwrap()), "4019000");
    assert_eq!(
        s.sim.requests_for("abc123456").total,
        0,
        "unsigned: not counted"
    );
    // Stale timestamp → 400 4009001 (not 401), and counted: signed, it
    // is a request sent (again, too late) by the partner.
    let stale = sign::timestamp(
        TimestampStyle::Wib,
        chrono::Utc::now() - chrono::Duration::minutes(10),
    );
    let r = send(body("abc123457", "20001"), stale, "20001", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(rc(r.json().await.unwrap()), "4009001");
    assert_eq!(s.sim.requests_for("abc123457").purchases, 1);
    // X-PARTNER-ID ≠ merchant.merchantId → 4009001, whichever of the two
    // is the partner we know (checked before the partner is looked up).
    let r = send(body("abc123458", "99999"), now(), "20001", None)
        .await
        .unwrap();
    assert_eq!(rc(r.json().await.unwrap()), "4009001");
    let r = send(body("abc123458", "20001"), now(), "99999", None)
        .await
        .unwrap();
    assert_eq!(rc(r.json().await.unwrap()), "4009001");
    // No merchant or no money at all on a pay-in → 4009002 naming it (a
    // mandatory field); a bad amount → 4009001.
    let complete = body("abc123458", "20001");
    for (without, code, named) in [
        (
            complete.replace(r#""merchant":{"merchantId":"20001"},"#, ""),
            "4009002",
            "merchant",
        ),
        (
            complete.replace(r#","money":{"currency":"IDR","amount":10000}"#, ""),
            "4009002",
            "money",
        ),
        (
            complete.replace(r#""amount":10000"#, r#""amount":-5"#),
            "4009001",
            "",
        ),
    ] {
        assert_ne!(without, complete);
        let r = send(without, now(), "20001", None).await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(rc(v.clone()), code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(named), "{v}");
    }
    // orderNo with '-' → 4009001 "Invalid Field Format".
    let r = send(body("abc-12345", "20001"), now(), "20001", None)
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(rc(v.clone()), "4009001");
    assert!(v["message"].as_str().unwrap().contains("orderNo"));
    // An orderNo, merchantId or currency is taken as sent: padded, or not a
    // JSON string, it is no valid one (the spec's fields are strings).
    for (sent, named) in [
        (body(" abc123457 ", "20001"), "orderNo"),
        (
            body("abc123457", "20001").replace(r#""abc123457""#, "123457890"),
            "orderNo",
        ),
        (body("abc123457", " 20001"), "merchantId"),
    ] {
        let r = send(sent.clone(), now(), "20001", None).await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(rc(v.clone()), "4009001", "{sent}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(named),
            "{sent}: {v}"
        );
    }
    let padded_currency = body("abc123457", "20001").replace(r#""IDR""#, r#"" IDR""#);
    let r = send(padded_currency, now(), "20001", None).await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Unsupported currency", "{v}");
    // Accepted once, then a duplicate.
    let r = send(body("abc123459", "20001"), now(), "20001", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send(body("abc123459", "20001"), now(), "20001", None)
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(rc(v.clone()), "4009001");
    assert_eq!(v["message"], "Duplicate pay order");
    assert_eq!(s.sim.money_requests_for("abc123459"), 2);
    // Rate limited scenario → 429.
    let r = send(
        body("abc123460", "20001").replace("10000", "10008"),
        now(),
        "20001",
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
}

/// Whoever reaches the port must not make the simulator remember order
/// numbers: a request refused before its signature verified (here one with
/// no headers at all), whatever the length of its orderNo (up to the 64 KiB
/// body limit), is counted in the total only; a signed one whose orderNo is
/// beyond S32 (spec §5) is refused and not counted under it either.
/// (Counted before any check, 1,000 unsigned requests with 50 KB order
/// numbers pinned ~200 MB.)
#[tokio::test]
async fn unsigned_requests_and_overlong_order_numbers_leave_nothing_remembered() {
    let s = setup().await;
    let path = loket_smilepayz::wire::PAY_IN_PATH;
    let huge = format!("huge{}", "B".repeat(50_000));
    let unsigned = pay_in_body(&huge).to_string();
    let (http, reply) = post_raw(&s, path, reqwest::header::HeaderMap::new(), unsigned).await;
    assert_eq!((http, response_code(&reply)), (400, "4009002"), "{reply}");
    assert_eq!(s.sim.requests_for(&huge), RequestCounts::default());

    let overlong = "9".repeat(33);
    let (http, reply) = post_signed(&s, path, pay_in_body(&overlong)).await;
    assert_eq!((http, response_code(&reply)), (400, "4009001"), "{reply}");
    assert_eq!(s.sim.requests_for(&overlong), RequestCounts::default());

    let longest = "9".repeat(32);
    let (http, reply) = post_signed(&s, path, pay_in_body(&longest)).await;
    assert_eq!(http, 200, "{reply}");
    assert_eq!(s.sim.money_requests_for(&longest), 1);
    assert_eq!(s.sim.total_requests(), 3);
}

#[tokio::test]
async fn ip_allow_list_and_balance() {
    let s = setup_with(None, |settings| {
        settings.allowed_ips = AllowList::parse(&["10.9.9.9"]).unwrap()
    })
    .await;
    let report = s
        .connector
        .execute(&command(
            Operation::PayIn,
            &reference(),
            10_000,
            &[("method", "QRIS")],
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(report.provider_code.as_deref(), Some("4039003"));

    let s = setup().await;
    let balance = s.connector.balance().await.unwrap();
    assert_eq!(balance, Money::idr(s.sim.balances().payout_available));
}

/// Spec §3: `Content-Type: application/json` is mandatory.
#[tokio::test]
async fn a_request_without_a_json_content_type_is_refused() {
    let s = setup().await;
    let path = loket_smilepayz::wire::PAY_IN_PATH;
    let body = pay_in_body("ctype0001").to_string();
    let ts = sign::timestamp(TimestampStyle::Wib, chrono::Utc::now());
    let with_content_type = |content_type: Option<&str>| {
        let mut headers = signed_headers(&s, &ts, &body);
        match content_type {
            Some(value) => headers.insert(reqwest::header::CONTENT_TYPE, value.parse().unwrap()),
            None => headers.remove(reqwest::header::CONTENT_TYPE),
        };
        headers
    };
    // Missing: like every missing mandatory header.
    let (http, reply) = post_raw(&s, path, with_content_type(None), body.clone()).await;
    assert_eq!((http, response_code(&reply)), (400, "4009002"), "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("Content-Type"));
    // Another media type: a field in the wrong format.
    for other in ["text/plain", "application/x-www-form-urlencoded"] {
        let (http, reply) = post_raw(&s, path, with_content_type(Some(other)), body.clone()).await;
        assert_eq!(
            (http, response_code(&reply)),
            (400, "4009001"),
            "{other}: {reply}"
        );
        assert!(reply["message"].as_str().unwrap().contains("Content-Type"));
    }
    assert!(s.sim.order("ctype0001").is_none(), "nothing created");
    // A charset parameter is still JSON.
    let (http, reply) = post_raw(
        &s,
        path,
        with_content_type(Some("application/json; charset=UTF-8")),
        body,
    )
    .await;
    assert_eq!(http, 200, "{reply}");
}

/// Spec §3: `X-TIMESTAMP` is `yyyy-MM-ddTHH:mm:ss±HH:mm` or `…Z`; other
/// RFC 3339 spellings of a fresh instant are refused as an invalid
/// timestamp (4009001), however well signed.
#[tokio::test]
async fn an_x_timestamp_not_in_the_spec_shape_is_refused() {
    let s = setup().await;
    let path = loket_smilepayz::wire::PAY_IN_PATH;
    let now = chrono::Utc::now();
    let wib = chrono::FixedOffset::east_opt(7 * 3600).unwrap();
    let new_york = chrono::FixedOffset::west_opt(5 * 3600).unwrap();
    let spelled = |offset: chrono::FixedOffset, format: &str| {
        now.with_timezone(&offset).format(format).to_string()
    };
    let refused = [
        spelled(wib, "%Y-%m-%dT%H:%M:%S%.3f%:z"),
        spelled(wib, "%Y-%m-%dT%H:%M:%S%.9f%:z"),
        now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        now.format("%Y-%m-%dt%H:%M:%SZ").to_string(),
        now.format("%Y-%m-%dT%H:%M:%Sz").to_string(),
        now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        spelled(wib, "%Y-%m-%dT%H:%M:%S%z"),
    ];
    for (i, ts) in refused.iter().enumerate() {
        let order = format!("tsshape{i:03}");
        let body = pay_in_body(&order).to_string();
        let (http, reply) = post_raw(&s, path, signed_headers(&s, ts, &body), body).await;
        assert_eq!(
            (http, response_code(&reply)),
            (400, "4009001"),
            "{ts}: {reply}"
        );
        assert!(
            reply["message"].as_str().unwrap().contains("X-TIMESTAMP"),
            "{reply}"
        );
        assert!(s.sim.order(&order).is_none(), "{ts}: nothing created");
    }
    let accepted = [
        sign::timestamp(TimestampStyle::Wib, now),
        sign::timestamp(TimestampStyle::Utc, now),
        spelled(new_york, "%Y-%m-%dT%H:%M:%S%:z"),
    ];
    for (i, ts) in accepted.iter().enumerate() {
        let body = pay_in_body(&format!("tsgood{i:03}")).to_string();
        let (http, reply) = post_raw(&s, path, signed_headers(&s, ts, &body), body).await;
        assert_eq!(http, 200, "{ts}: {reply}");
    }
}

/// Spec §5's `S<n>` lengths (in characters): one more is 400xx01 naming the
/// field; the connector keeps within them.
#[tokio::test]
async fn fields_longer_than_the_spec_allows_are_refused_naming_the_field() {
    let s = setup().await;
    let pay_in_path = loket_smilepayz::wire::PAY_IN_PATH;
    let pay_out_path = loket_smilepayz::wire::PAY_OUT_PATH;
    let inquiry_path = loket_smilepayz::wire::INQUIRY_STATUS_PATH;
    let url = |length: usize| format!("https://merchant.example/{}", "u".repeat(length - 25));
    let over_long_pay_ins = [
        ("purpose", "p".repeat(65)),
        ("productDetail", "d".repeat(129)),
        ("redirectUrl", url(257)),
        ("callbackUrl", url(257)),
    ];
    for (i, (field, value)) in over_long_pay_ins.iter().enumerate() {
        let order = format!("longin{i:03}");
        let mut body = pay_in_body(&order);
        body[*field] = value.as_str().into();
        let (http, reply) = post_signed(&s, pay_in_path, body).await;
        assert_eq!(
            (http, response_code(&reply)),
            (400, "4009001"),
            "{field}: {reply}"
        );
        assert_eq!(reply["message"], format!("Invalid Field Format [{field}]"));
        assert!(s.sim.order(&order).is_none(), "{field}: nothing created");
    }
    // At the limit, counted in characters (64 two-byte ones here).
    let mut body = pay_in_body("atlimit001");
    body["purpose"] = "é".repeat(64).into();
    body["productDetail"] = "d".repeat(128).into();
    body["redirectUrl"] = url(256).into();
    body["callbackUrl"] = url(256).into();
    let (http, reply) = post_signed(&s, pay_in_path, body).await;
    assert_eq!(http, 200, "{reply}");

    let pay_out = |order_no: &str, method: &str, account: &str| {
        serde_json::json!({
            "orderNo": order_no,
            "purpose": "t",
            "merchant": { "merchantId": "20001" },
            "money": { "currency": "IDR", "amount": 20000 },
            "paymentMethod": method,
            "cashAccount": account,
        })
    };
    let over_long_pay_outs = [
        (
            "paymentMethod",
            pay_out("longout001", "BANKXYZ", "1234567890"),
        ),
        ("cashAccount", pay_out("longout002", "BCA", &"1".repeat(33))),
    ];
    for (field, body) in over_long_pay_outs {
        let (http, reply) = post_signed(&s, pay_out_path, body).await;
        assert_eq!(
            (http, response_code(&reply)),
            (400, "4009101"),
            "{field}: {reply}"
        );
        assert_eq!(reply["message"], format!("Invalid Field Format [{field}]"));
    }
    let (http, reply) = post_signed(
        &s,
        pay_out_path,
        pay_out("atlimit002", "BANKXY", &"1".repeat(32)),
    )
    .await;
    assert_eq!(http, 200, "{reply}");

    for field in ["orderNo", "tradeNo"] {
        let body = serde_json::json!({ "tradeType": 1, field: "1".repeat(33) });
        let (http, reply) = post_signed(&s, inquiry_path, body).await;
        assert_eq!(
            (http, response_code(&reply)),
            (400, "4009201"),
            "{field}: {reply}"
        );
        assert_eq!(reply["message"], format!("Invalid Field Format [{field}]"));
    }

    // The connector cuts a long purpose to the spec's 64 characters.
    let report = s
        .connector
        .execute(&command(
            Operation::PayIn,
            &reference(),
            10_000,
            &[("method", "QRIS"), ("purpose", &"ü".repeat(100))],
        ))
        .await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
}

/// A hosted-page pay-in has no method while INIT ("awaiting method"); once
/// paid or failed its callback (where `paymentMethod` is mandatory, spec §5)
/// and its inquiry report the method its customer chose on the page
/// (ASSUMED QRIS).
#[tokio::test]
async fn a_hosted_pay_in_reports_the_method_chosen_on_the_page_once_final() {
    let s = setup().await;
    let inquiry = |order_no: &str| serde_json::json!({ "tradeType": 1, "orderNo": order_no });
    let inquiry_path = loket_smilepayz::wire::INQUIRY_STATUS_PATH;

    // Scenario 003: stays INIT.
    let waiting = reference();
    let report = s
        .connector
        .execute(&command(Operation::PayIn, &waiting, 50_003, &[]))
        .await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    tokio::time::sleep(Duration::from_millis(150)).await; // past inquiry_race_ms
    let (http, reply) = post_signed(&s, inquiry_path, inquiry(&waiting)).await;
    assert_eq!(http, 200, "{reply}");
    assert_eq!(reply["status"], "INIT");
    assert!(reply.get("paymentMethod").is_none(), "{reply}");

    let paid = reference();
    let cmd = command(Operation::PayIn, &paid, 50_000, &[]);
    let report = s.connector.execute(&cmd).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    wait_callbacks(&s, 1).await;
    let callback = s.received.lock().unwrap().bodies[0].clone();
    assert_eq!(callback["orderNo"], paid.as_str());
    assert_eq!(callback["status"], "SUCCESS");
    assert_eq!(callback["paymentMethod"], "QRIS", "{callback}");
    assert_eq!(settle(&s, &cmd).await.outcome, Outcome::Success);
    let (_, reply) = post_signed(&s, inquiry_path, inquiry(&paid)).await;
    assert_eq!(reply["paymentMethod"], "QRIS", "{reply}");

    // Scenario 002: the payment with the chosen method failed.
    let failed = reference();
    let cmd = command(Operation::PayIn, &failed, 50_002, &[]);
    assert_eq!(s.connector.execute(&cmd).await.outcome, Outcome::Pending);
    wait_callbacks(&s, 2).await;
    let callback = s.received.lock().unwrap().bodies[1].clone();
    assert_eq!(
        (
            &callback["orderNo"],
            &callback["status"],
            &callback["paymentMethod"]
        ),
        (&failed.as_str().into(), &"FAILED".into(), &"QRIS".into()),
        "{callback}"
    );
    assert_eq!(settle(&s, &cmd).await.outcome, Outcome::Failed);
    let (_, reply) = post_signed(&s, inquiry_path, inquiry(&failed)).await;
    assert_eq!(reply["paymentMethod"], "QRIS", "{reply}");
}

/// An amount past what the simulator takes (ASSUMED cap: the spec leaves
/// per-method limits open) is refused as an invalid amount, so no balance
/// can overflow; the cap itself is taken.
#[tokio::test]
async fn a_pay_in_amount_beyond_the_cap_is_an_invalid_amount() {
    let s = setup().await;
    let with_amount = |amount: i64| {
        let mut body = pay_in_body(&reference());
        body["money"]["amount"] = amount.into();
        body
    };
    for amount in [1_000_000_000_000, i64::MAX] {
        let (status, reply) =
            post_signed(&s, loket_smilepayz::wire::PAY_IN_PATH, with_amount(amount)).await;
        assert_eq!((status, response_code(&reply)), (400, "4009001"), "{reply}");
        assert!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.contains("Invalid amount")),
            "{reply}"
        );
    }
    let (status, reply) = post_signed(
        &s,
        loket_smilepayz::wire::PAY_IN_PATH,
        with_amount(999_999_999_999),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}

/// A pay-in naming a method that is not among the merchant's active
/// channels (`pay_in_methods`, ASSUMED) is refused `4039x04` "no active
/// channel" and creates nothing; the active ones, and no method at all (the
/// hosted page), are taken.
#[tokio::test]
async fn a_pay_in_with_a_method_not_active_is_refused_and_creates_nothing() {
    let s = setup().await;
    let path = loket_smilepayz::wire::PAY_IN_PATH;
    for method in ["FOOBAR", "qris", "OVO"] {
        let order = reference();
        let mut body = pay_in_body(&order);
        body["paymentMethod"] = method.into();
        let (status, reply) = post_signed(&s, path, body).await;
        assert_eq!(
            (status, response_code(&reply)),
            (403, "4039004"),
            "{method}: {reply}"
        );
        assert!(reply.to_string().contains("no active channel"), "{reply}");
        assert!(s.sim.order(&order).is_none(), "{method}: nothing created");
    }
    for method in [Some("QRIS"), Some("PERMATA"), Some("W_DANA"), None] {
        let order = reference();
        let mut body = pay_in_body(&order);
        match method {
            Some(method) => body["paymentMethod"] = method.into(),
            None => {
                body.as_object_mut().unwrap().remove("paymentMethod");
            }
        }
        let (status, reply) = post_signed(&s, path, body).await;
        assert_eq!(status, 200, "{method:?}: {reply}");
        assert!(s.sim.order(&order).is_some(), "{method:?}");
    }
}

/// `expiryPeriod` defaults to 3600 only when absent (spec §5); any other
/// form than whole seconds in 1..=86400 is an invalid field.
#[tokio::test]
async fn an_expiry_period_not_in_whole_seconds_is_an_invalid_field() {
    let s = setup().await;
    for period in [
        serde_json::json!("7200"),
        serde_json::json!(-1),
        serde_json::json!(3600.5),
        serde_json::json!(0),
        serde_json::json!(86_401),
    ] {
        let mut body = pay_in_body(&reference());
        body["expiryPeriod"] = period.clone();
        let (status, reply) = post_signed(&s, loket_smilepayz::wire::PAY_IN_PATH, body).await;
        assert_eq!(
            (status, response_code(&reply)),
            (400, "4009001"),
            "{period}: {reply}"
        );
        assert!(reply.to_string().contains("expiryPeriod"), "{reply}");
    }
    for period in [serde_json::json!(86_400), serde_json::Value::Null] {
        let mut body = pay_in_body(&reference());
        body["expiryPeriod"] = period.clone();
        let (status, reply) = post_signed(&s, loket_smilepayz::wire::PAY_IN_PATH, body).await;
        assert_eq!(status, 200, "{period}: {reply}");
    }
}

/// Spec §6: a request to a path Smilepayz has no endpoint at is answered
/// `4049x01 Invalid Routing` ("failed; fix the path") in the usual JSON
/// body, so a connector can read it: a misspelt path, and a known path
/// called with a method other than POST (§1: every call is a POST; the
/// table has no other code for it), each with the service code of the
/// endpoint it names. Loket's connector, pointed at a wrong base path,
/// reads it as the catalogue says: failed, nothing created.
#[tokio::test]
async fn a_wrong_path_or_method_is_4049x01_invalid_routing_and_fails_the_order() {
    let s = setup().await;
    let (status, reply) =
        post_signed(&s, "/v2.0/transaction/payin", pay_in_body(&reference())).await;
    assert_eq!(
        (
            status,
            response_code(&reply),
            &reply["code"],
            &reply["message"]
        ),
        (
            404,
            "4049001",
            &serde_json::json!("11"),
            &serde_json::json!("Invalid Routing")
        ),
        "{reply}"
    );
    let wrong_method = reqwest::Client::new()
        .get(format!(
            "http://{}{}",
            s.sim_addr,
            loket_smilepayz::wire::PAY_OUT_PATH
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status().as_u16(), 404);
    let reply: serde_json::Value = wrong_method.json().await.unwrap();
    assert_eq!(response_code(&reply), "4049101", "{reply}");

    let misrouted = SmilepayzConnector::new(SmilepayzSettings {
        base_url: format!("http://{}/gateway", s.sim_addr),
        merchant_id: "20001".into(),
        merchant_secret: Secret::new(SECRET),
        merchant_private_key: Secret::new(s.merchant_private_pem.clone()),
        ..Default::default()
    })
    .unwrap();
    let order = reference();
    let report = misrouted
        .execute(&command(
            Operation::PayIn,
            &order,
            10_000,
            &[("method", "QRIS")],
        ))
        .await;
    assert_eq!(
        (report.outcome, report.provider_code.as_deref()),
        (Outcome::Failed, Some("4049001")),
        "{report:?}"
    );
    assert!(s.sim.order(&order).is_none(), "nothing created");
}

/// The EMVCo data objects of a QR payload as (tag, value), failing the test
/// when a length does not match what follows it.
fn emv_data_objects(payload: &str) -> Vec<(String, String)> {
    let mut objects = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let head = rest
            .get(..4)
            .unwrap_or_else(|| panic!("cut head in {payload}"));
        let length: usize = head[2..].parse().unwrap();
        let value = rest
            .get(4..4 + length)
            .unwrap_or_else(|| panic!("tag {} longer than {payload}", &head[..2]));
        objects.push((head[..2].to_string(), value.to_string()));
        rest = &rest[4 + length..];
    }
    objects
}

/// A QRIS pay-in's `qrString` is an EMV payload (spec §5) a customer's app
/// can read: each length is its value's, the amount is the order's (also
/// one of 12 digits), and tag 63 is the CRC-16/CCITT-FALSE of all before
/// its value.
#[tokio::test]
async fn a_qris_pay_in_returns_an_emv_string_with_true_lengths_and_crc() {
    let s = setup().await;
    for amount in [10_000_i64, 999_999_999_000] {
        let mut body = pay_in_body(&reference());
        body["money"]["amount"] = amount.into();
        let (http, reply) = post_signed(&s, loket_smilepayz::wire::PAY_IN_PATH, body).await;
        assert_eq!(http, 200, "{reply}");
        let qr = reply["channel"]["qrString"].as_str().unwrap();
        let objects = emv_data_objects(qr);
        let value = |tag: &str| {
            objects
                .iter()
                .find(|(t, _)| t == tag)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no tag {tag} in {qr}"))
        };
        assert_eq!(value("00"), "01", "{qr}");
        assert_eq!(value("53"), "360", "{qr}");
        assert_eq!(value("54"), amount.to_string(), "{qr}");
        assert_eq!(value("58"), "ID", "{qr}");
        let merchant_account = emv_data_objects(value("26"));
        assert!(
            merchant_account
                .iter()
                .any(|(_, v)| v == reply["tradeNo"].as_str().unwrap()),
            "{qr}"
        );
        let (last_tag, crc) = objects.last().unwrap();
        assert_eq!(last_tag, "63", "{qr}");
        let covered = &qr[..qr.len() - crc.len()];
        assert_eq!(
            *crc,
            format!(
                "{:04X}",
                loket_simulators::smilepayz::qris::crc16_ccitt_false(covered.as_bytes())
            ),
            "{qr}"
        );
    }
}

/// The simulator remembers one order: the first is forgotten as the second
/// is made, before its timer is due. That timer sends no callback and does
/// not bring the order back.
#[tokio::test]
async fn a_forgotten_orders_timer_neither_calls_back_nor_brings_the_order_back() {
    let s = setup_remembering(1, None, |_| {}).await;
    let pay_in = |order: &str| command(Operation::PayIn, order, 150_000, &[("method", "QRIS")]);
    let (forgotten, kept) = (reference(), reference());
    for order in [&forgotten, &kept] {
        assert_eq!(
            s.connector.execute(&pay_in(order)).await.outcome,
            Outcome::Pending
        );
    }
    assert_eq!(s.sim.order(&forgotten), None);
    // The forgotten order's timer was due first: once the kept one's
    // callback is answered, the forgotten one's would have come.
    wait_callbacks(&s, 1).await;
    wait_recorded(&s, &kept, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let called_back: Vec<String> = s
        .received
        .lock()
        .unwrap()
        .bodies
        .iter()
        .map(|body| body["orderNo"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(called_back, std::slice::from_ref(&kept));
    assert_eq!(
        s.sim.callbacks_for(&forgotten),
        SmilepayzCallbackLog::default()
    );
    assert_eq!(s.sim.order(&forgotten), None, "not brought back");
    assert_eq!(s.sim.order(&kept).unwrap().status, "SUCCESS");
}

/// An inquiry naming only the tradeNo (spec §5: orderNo or tradeNo) finds a
/// remembered order, and not a forgotten one, even once its orderNo is
/// taken again by a new order.
#[tokio::test]
async fn an_inquiry_by_trade_no_finds_remembered_orders_and_not_forgotten_ones() {
    let s = setup_remembering(2, None, |settings| settings.inquiry_race_ms = 0).await;
    let pay_in = |order_no: String| {
        let s = &s;
        async move {
            let (http, reply) = post_signed(
                s,
                loket_smilepayz::wire::PAY_IN_PATH,
                pay_in_body(&order_no),
            )
            .await;
            assert_eq!(http, 200, "{reply}");
            reply["tradeNo"].as_str().unwrap().to_string()
        }
    };
    let inquiry = |trade_type: u8, trade_no: String| {
        let s = &s;
        async move {
            let body = serde_json::json!({ "tradeType": trade_type, "tradeNo": trade_no });
            let (_, reply) = post_signed(s, loket_smilepayz::wire::INQUIRY_STATUS_PATH, body).await;
            (response_code(&reply).to_string(), reply)
        }
    };
    let reused = reference();
    let first = pay_in(reused.clone()).await;
    let second = pay_in(reference()).await;
    let third = pay_in(reference()).await;
    assert_eq!(s.sim.order(&reused), None, "the first is forgotten");

    let (code, _) = inquiry(1, first.clone()).await;
    assert_eq!(code, "5009200", "forgotten");
    for trade_no in [&second, &third] {
        let (code, reply) = inquiry(1, trade_no.clone()).await;
        assert_eq!(code, "2009200", "{reply}");
        assert_eq!(reply["tradeNo"], trade_no.as_str());
    }
    let (code, _) = inquiry(2, third.clone()).await;
    assert_eq!(code, "5009200", "a pay-in is no pay-out");

    // The forgotten orderNo taken again forgets the second order; the old
    // tradeNo still finds nothing, the new one its order.
    let fourth = pay_in(reused.clone()).await;
    for (trade_no, want) in [(first, "5009200"), (second, "5009200"), (third, "2009200")] {
        let (code, reply) = inquiry(1, trade_no).await;
        assert_eq!(code, want, "{reply}");
    }
    let (code, reply) = inquiry(1, fourth.clone()).await;
    assert_eq!(code, "2009200", "{reply}");
    assert_eq!(s.sim.order(&reused).unwrap().trade_no, fourth);
}

/// Spec §5: a response's merchant adds its `accountNo` to what was asked,
/// on pay-ins and pay-outs alike.
#[tokio::test]
async fn pay_in_and_pay_out_responses_name_the_merchants_account() {
    let s = setup().await;
    let pay_out = serde_json::json!({
        "orderNo": "acctout001",
        "purpose": "t",
        "merchant": { "merchantId": "20001" },
        "money": { "currency": "IDR", "amount": 20000 },
        "paymentMethod": "BCA",
        "cashAccount": "1234567890",
    });
    for (path, body) in [
        (loket_smilepayz::wire::PAY_IN_PATH, pay_in_body("acctin001")),
        (loket_smilepayz::wire::PAY_OUT_PATH, pay_out),
    ] {
        let (http, reply) = post_signed(&s, path, body).await;
        assert_eq!(http, 200, "{path}: {reply}");
        let merchant = &reply["merchant"];
        assert_eq!(merchant["merchantId"], "20001", "{path}: {reply}");
        assert_eq!(merchant["accountNo"], "SIM0000000001", "{path}: {reply}");
    }
}
