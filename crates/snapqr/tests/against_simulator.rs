//! The connector against the SNAP QR CPM simulator over real HTTP: token
//! single-flight and refresh, payment outcomes, timeouts after debit, cancel
//! and refund rules, and notifies verified by our own parser.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use loket_connector::{CallbackParser, CallbackRequest, Command, Connector, ParsedCallback};
use loket_protocol::{Money, Operation, Outcome, Provider};
use loket_runtime::{Secret, Shutdown};
use loket_simulators::snapqr::{SnapQrSim, SnapQrSimSettings};
use loket_simulators::Outage;
use loket_snapqr::connector::Service;
use loket_snapqr::{callback_parser, NotifySettings, SnapQrConnector, SnapQrSettings};

const SECRET: &str = "test-client-secret-0001";
const CLIENT: &str = "loket-test-partner";

struct Env {
    sim: SnapQrSim,
    connector: Arc<SnapQrConnector>,
    settings: SnapQrSettings,
    notified: Arc<Mutex<Vec<Result<ParsedCallback, String>>>>,
    _stop: Shutdown,
}

async fn env_with(tune: impl FnOnce(&mut SnapQrSimSettings)) -> Env {
    let (private_pem, public_pem) = loket_snapqr::sign::generate_key_pair();
    let stop = Shutdown::new();
    // Our notify receiver: the real parser behind a tiny HTTP server.
    let notified = Arc::new(Mutex::new(Vec::new()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    let mut sim_settings = SnapQrSimSettings {
        client_key: CLIENT.into(),
        client_secret: Secret::new(SECRET),
        partner_public_key: Secret::new(public_pem),
        customer_token: Secret::new("demo-customer-token"),
        merchant_id: "M0001".into(),
        notify_url: Some(format!("http://{receiver_addr}/callback/snapqr")),
        notify_delay_ms: 100,
        pending_resolve_ms: 400,
        slow_reply_ms: 3_000,
        ..SnapQrSimSettings::default()
    };
    tune(&mut sim_settings);
    let sim = SnapQrSim::new(sim_settings).unwrap();
    let parser = Arc::new(
        callback_parser(&NotifySettings {
            issuer_public_key: Secret::new(sim.issuer_public_key_pem()),
            merchant_id: "M0001".into(),
            ..NotifySettings::default()
        })
        .unwrap(),
    );
    {
        type Shared = (
            Arc<loket_snapqr::SnapQrCallbacks>,
            Arc<Mutex<Vec<Result<ParsedCallback, String>>>>,
        );
        async fn receive(
            State((parser, log)): State<Shared>,
            request: axum::extract::Request,
        ) -> (axum::http::StatusCode, String) {
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
            let result = parser.parse(&request);
            let reply = match &result {
                Ok(parsed) => parser.acknowledge(&request, parsed),
                Err(error) => parser.reject(&request, error),
            };
            log.lock().unwrap().push(result.map_err(|e| e.to_string()));
            (
                axum::http::StatusCode::from_u16(reply.status).unwrap(),
                reply.body,
            )
        }
        let router = axum::Router::new()
            .route("/callback/snapqr", post(receive))
            .with_state((parser, notified.clone()));
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(receiver, router)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await
                .unwrap();
        });
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    {
        let sim = sim.clone();
        let stop = stop.clone();
        tokio::spawn(async move { sim.serve(listener, stop).await });
    }
    let settings = SnapQrSettings {
        base_url,
        client_key: CLIENT.into(),
        client_secret: Secret::new(SECRET),
        private_key: Secret::new(private_pem),
        merchant_id: "M0001".into(),
        timeout_ms: 1_500,
        connect_timeout_ms: 500,
        demo_customer_token: Secret::new("demo-customer-token"),
        ..SnapQrSettings::default()
    };
    settings.validate().unwrap();
    let connector = Arc::new(SnapQrConnector::new(settings.clone()).unwrap());
    Env {
        sim,
        connector,
        settings,
        notified,
        _stop: stop,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// A connector of its own (no token yet), talking to `front`: a server
/// that answers some paths itself and passes the rest to the simulator.
async fn connector_behind(env: &Env, front: axum::Router) -> SnapQrConnector {
    let base_url = loket_simulators::common::serve_stub(front).await.unwrap();
    SnapQrConnector::new(SnapQrSettings {
        base_url,
        ..env.settings.clone()
    })
    .unwrap()
}

fn reference() -> String {
    use rand::Rng as _;
    format!("{:032x}", rand::thread_rng().gen::<u128>())
}

/// A command without provider details: a payment of it has no QR, so the
/// connector generates one first (59).
fn command(operation: Operation, reference: &str, amount: i64) -> Command {
    Command {
        transaction_id: uuid_like(),
        provider: Provider::SnapQr,
        operation,
        provider_reference: reference.to_string(),
        provider_product_code: "QRCPM".into(),
        account: String::new(),
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
        details: BTreeMap::new(),
        transaction_created_at: Some(chrono::Utc::now()),
    }
}

/// A payment of `qr`, as scanned from the customer's app.
fn payment_of(qr: String, amount: i64) -> Command {
    let mut payment = command(Operation::QrPayment, &reference(), amount);
    payment.details.insert("qr_content".to_string(), qr);
    payment
}

/// A payment of a fresh QR the simulator issued.
fn qr_payment(env: &Env, amount: i64) -> Command {
    payment_of(env.sim.issue_qr(None), amount)
}

fn uuid_like() -> String {
    reference()
}

fn refund_of(payment: &Command, trace: &str, amount: i64) -> Command {
    Command {
        original_reference: payment.provider_reference.clone(),
        original_provider_trace: trace.to_string(),
        ..command(Operation::QrRefund, &reference(), amount)
    }
}

fn cancel_of(payment: &Command) -> Command {
    Command {
        original_reference: payment.provider_reference.clone(),
        amount: None,
        ..command(Operation::QrCancel, &reference(), 0)
    }
}

#[tokio::test]
async fn concurrent_payments_share_one_token_request() {
    let env = env().await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let connector = env.connector.clone();
        let payment = qr_payment(&env, 10_000);
        tasks.push(tokio::spawn(
            async move { connector.execute(&payment).await },
        ));
    }
    for task in tasks {
        let report = task.await.unwrap();
        assert_eq!(report.outcome, Outcome::Success, "{report:?}");
        assert!(report.provider_trace.is_some());
    }
    assert_eq!(env.sim.token_requests(), 1);
    assert_eq!(env.connector.tokens_fetched().await, 1);
}

#[tokio::test]
async fn an_expired_token_mid_flow_is_refreshed_exactly_once() {
    let env = env().await;
    let first = env.connector.execute(&qr_payment(&env, 10_000)).await;
    assert_eq!(first.outcome, Outcome::Success);
    env.sim.expire_tokens();
    let mut tasks = Vec::new();
    let payments: Vec<Command> = (0..6).map(|_| qr_payment(&env, 10_000)).collect();
    for payment in payments.clone() {
        let connector = env.connector.clone();
        tasks.push(tokio::spawn(
            async move { connector.execute(&payment).await },
        ));
    }
    for task in tasks {
        let report = task.await.unwrap();
        assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    }
    assert_eq!(env.sim.token_requests(), 2, "one refresh for all");
    for payment in &payments {
        // Each payment was sent at most twice (once refused with 4016001,
        // once accepted) and succeeded once in the ledger.
        let r = &payment.provider_reference;
        assert!(env.sim.payments_for(r) <= 2);
        assert_eq!(env.sim.ledger_state(r).unwrap().status, "00");
    }
}

/// A reply whose code says the B2B token is invalid (`4016001`) under an
/// HTTP status other than 401 contradicts itself: the payment is not sent
/// again on it, but the token is not used again either, or every call would
/// meet the same refusal until the token expired.
#[tokio::test]
async fn a_token_refused_under_another_http_status_is_not_used_again() {
    let env = env().await;
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let front = axum::Router::new()
        .route(
            &env.sim.path("qr/qr-cpm-payment"),
            post({
                let refused = refused.clone();
                move || async move {
                    refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    axum::Json(serde_json::json!({
                        "responseCode": "4016001",
                        "responseMessage": "Invalid Token (B2B)",
                    }))
                }
            }),
        )
        .fallback_service(env.sim.router());
    let connector = connector_behind(&env, front).await;
    let payment = qr_payment(&env, 10_000);
    let report = connector.execute(&payment).await;
    assert_ne!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not sent again on a reply that contradicts itself"
    );
    assert_eq!(connector.tokens_fetched().await, 1);
    connector.check_status(&payment.as_status_check()).await;
    assert_eq!(
        connector.tokens_fetched().await,
        2,
        "the next call fetched a new token"
    );
}

#[tokio::test]
async fn payment_outcomes_are_classified_through_the_catalogue() {
    let env = env().await;
    let ok = env.connector.execute(&qr_payment(&env, 25_000)).await;
    assert_eq!(ok.outcome, Outcome::Success);
    assert_eq!(ok.provider_code.as_deref(), Some("2006000"));
    let stored = format!("{:?}", ok.exchanges);
    assert!(
        !stored.contains(SECRET) && stored.contains("Bearer ***"),
        "{stored}"
    );

    for (amount, code) in [
        (10_301, "4036000"),
        (10_302, "4046011"),
        (10_303, "4036014"),
        (10_304, "4036002"),
        (10_305, "4036005"),
        (10_306, "4036003"),
        (10_307, "4046013"),
        (10_308, "4296000"),
        (10_309, "4036019"),
    ] {
        let report = env.connector.execute(&qr_payment(&env, amount)).await;
        assert_eq!(report.outcome, Outcome::Failed, "{amount}: {report:?}");
        assert_eq!(report.provider_code.as_deref(), Some(code));
        assert!(report
            .provider_message
            .as_deref()
            .is_some_and(|m| !m.is_empty()));
    }
    for amount in [10_202, 10_203, 10_204] {
        let report = env.connector.execute(&qr_payment(&env, amount)).await;
        assert_eq!(report.outcome, Outcome::Unknown, "{amount}: {report:?}");
    }
    // 203 never reached the ledger: the query says not found.
    let lost = qr_payment(&env, 11_203);
    assert_eq!(env.connector.execute(&lost).await.outcome, Outcome::Unknown);
    let check = env.connector.check_status(&lost).await;
    assert!(check.not_found, "{check:?}");
}

#[tokio::test]
async fn pending_without_notify_is_resolved_by_query() {
    let env = env().await;
    let mut payment = qr_payment(&env, 10_102);
    // Created a minute before it is sent (a queue, an outage).
    let created = chrono::Utc::now() - chrono::Duration::seconds(60);
    payment.transaction_created_at = Some(created);
    let report = env.connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    // Queried at once, before the issuer resolves it (400 ms here).
    let check = env.connector.check_status(&payment).await;
    assert_eq!(check.outcome, Outcome::Pending, "{check:?}");
    // The payment's expiry goes with it: "no record" is final only after it.
    // It counts from the transaction's creation, so a copy sent again
    // carries the same expiryTime.
    let expires_at = report
        .payment
        .as_ref()
        .and_then(|payment| payment.expires_at.as_ref())
        .and_then(loket_protocol::conversions::from_timestamp)
        .expect("the payment reports the expiryTime it sent");
    assert_eq!(
        expires_at,
        created + chrono::Duration::seconds(300),
        "the default 300 s after the transaction's creation"
    );
    // Held up for ten minutes (a lost command re-dispatched): not sent
    // already expired, but with a minute left.
    let mut late = qr_payment(&env, 10_000);
    late.transaction_created_at = Some(chrono::Utc::now() - chrono::Duration::seconds(600));
    let before = chrono::Utc::now();
    let late_report = env.connector.execute(&late).await;
    assert_eq!(late_report.outcome, Outcome::Success, "{late_report:?}");
    let late_expiry = late_report
        .payment
        .as_ref()
        .and_then(|payment| payment.expires_at.as_ref())
        .and_then(loket_protocol::conversions::from_timestamp)
        .unwrap();
    assert!(
        late_expiry >= before + chrono::Duration::seconds(60),
        "{late_expiry} is less than a minute after {before}"
    );
    let sent_expiry = report
        .exchanges
        .iter()
        .find(|e| e.operation == "qr_payment")
        .map(|e| e.request.clone())
        .unwrap_or_default();
    assert!(
        sent_expiry.contains(&loket_snapqr::connector::format_timestamp(
            loket_snapqr::settings::TimestampFormat::Offset,
            expires_at
        )),
        "{sent_expiry}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let check = loop {
        let check = env.connector.check_status(&payment).await;
        if check.outcome != Outcome::Pending {
            break check;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still pending after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");
    assert_eq!(check.provider_code.as_deref(), Some("00"));
    assert_eq!(check.provider_trace, report.provider_trace);
    assert_eq!(env.sim.payments_for(&payment.provider_reference), 1);
}

#[tokio::test]
async fn timeout_after_debit_is_unknown_then_the_query_finds_one_payment() {
    let env = env().await;
    let payment = qr_payment(&env, 10_201);
    let report = env.connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    let check = env.connector.check_status(&payment).await;
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");
    assert!(check.provider_trace.is_some());
    assert_eq!(env.sim.payments_for(&payment.provider_reference), 1);
}

/// RELIABILITY #9: while the issuer's front proxy answers every call with an
/// error page, a payment and its query are unknown, never failed; afterwards
/// the query answers from the issuer's ledger: not found when nothing was
/// carried out, the payment when the issuer carried it out behind the page.
/// (The whole flow through the reconciler: tests/faults.rs for OkeBayar,
/// tests/smilepayz.rs for pay-outs.)
#[tokio::test]
async fn a_5xx_storm_is_unknown_until_the_query_answers_from_the_ledger() {
    let env = env().await;
    // A token first: the storm hits payments and queries, not the token.
    let warm = qr_payment(&env, 10_000);
    assert_eq!(env.connector.execute(&warm).await.outcome, Outcome::Success);
    let storm = |after_commit| Outage {
        status: 503,
        for_ms: 60_000,
        after_commit,
    };

    env.sim.outage().start(storm(false)).unwrap();
    let lost = qr_payment(&env, 10_000);
    let report = env.connector.execute(&lost).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    let check = env.connector.check_status(&lost).await;
    assert_eq!(check.outcome, Outcome::Unknown, "{check:?}");
    assert_eq!(env.sim.payments_for(&lost.provider_reference), 0);

    env.sim.outage().start(storm(true)).unwrap();
    let carried_out = qr_payment(&env, 10_000);
    let report = env.connector.execute(&carried_out).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    assert_eq!(env.sim.payments_for(&carried_out.provider_reference), 1);

    env.sim.outage().end();
    // Not found: still unknown here; the reconciler fails it once not-found
    // has lasted past the provider's grace period.
    let check = env.connector.check_status(&lost).await;
    assert_eq!(
        (check.outcome, check.not_found),
        (Outcome::Unknown, true),
        "{check:?}"
    );
    let check = env.connector.check_status(&carried_out).await;
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");
    assert_eq!(env.sim.payments_for(&carried_out.provider_reference), 1);
}

#[tokio::test]
async fn a_duplicate_reference_after_success_is_success_with_the_original_reference_no_unless_the_query_contradicts_it(
) {
    let env = env().await;
    let payment = qr_payment(&env, 10_000);
    let first = env.connector.execute(&payment).await;
    let second = env.connector.execute(&payment).await;
    assert_eq!(second.outcome, Outcome::Success);
    assert_eq!(second.provider_code.as_deref(), Some("4096001"));
    assert_eq!(second.provider_trace, first.provider_trace);

    // The same duplicate from an issuer whose query then reads the payment
    // failed (`06`), or has no record of it: the answers contradict each
    // other, and neither decides. (A front that answers the query itself;
    // everything else reaches the simulator.)
    for (status, code) in [("06", "4096001 and 06"), ("07", "no record")] {
        let query_path = env.sim.path("qr/qr-cpm-query");
        let reference = payment.provider_reference.clone();
        let front = axum::Router::new()
            .route(
                &query_path,
                post(move || async move {
                    axum::Json(serde_json::json!({
                        "responseCode": "2006100",
                        "responseMessage": "Successful",
                        "originalPartnerReferenceNo": reference,
                        "latestTransactionStatus": status,
                    }))
                }),
            )
            .fallback_service(env.sim.router());
        let third = connector_behind(&env, front).await.execute(&payment).await;
        assert_eq!(third.provider_code.as_deref(), Some("4096001"), "{code}");
        assert_eq!(third.outcome, Outcome::Unknown, "{code}: {third:?}");
        assert!(
            third.detail.contains("not taken as success"),
            "{}",
            third.detail
        );
        assert!(
            third
                .contradiction
                .as_deref()
                .is_some_and(|why| why.contains("4096001")),
            "{third:?}"
        );
    }
}

#[tokio::test]
async fn an_empty_qr_content_is_generated_first_with_the_customer_token() {
    let env = env().await;
    let payment = command(Operation::QrPayment, &reference(), 10_000);
    let report = env.connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    let qr = report.payment.as_ref().unwrap().qr_string.clone();
    assert!(qr.starts_with("SIMQR-"), "{qr}");
    assert_eq!(
        env.sim.requests_for(&payment.provider_reference).generates,
        1
    );
    assert!(!format!("{:?}", report.exchanges).contains("demo-customer-token"));
}

/// A QR generation (59) the issuer refuses fails the payment, and the
/// report says the payment never left (its `sent` is false on the bus): no
/// payment reached the issuer.
#[tokio::test]
async fn a_refused_qr_generation_fails_a_payment_that_never_left() {
    let env = env_with(|sim| sim.customer_token = Secret::new("another-customer-token")).await;
    let payment = command(Operation::QrPayment, &reference(), 10_000);
    let report = env.connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.never_left, "{report:?}");
    let seen = env.sim.requests_for(&payment.provider_reference);
    assert_eq!(seen.generates, 1);
    assert_eq!(env.sim.payments_for(&payment.provider_reference), 0);
}

/// Spec §8.6 (ASSUMED): the issuer pays only QRs it issued.
#[tokio::test]
async fn a_qr_the_issuer_never_issued_is_a_definite_failure_with_no_ledger_entry() {
    let env = env().await;
    for qr in [
        format!("CUSTOMER-QR-{}", reference()),
        // A scenario in a made-up QR changes nothing.
        "CUSTOMER-QR-SCENARIO=101".to_string(),
    ] {
        let made_up = payment_of(qr, 10_000);
        let report = env.connector.execute(&made_up).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        assert_eq!(report.provider_code.as_deref(), Some("4046011"));
        assert!(
            report
                .provider_message
                .as_deref()
                .is_some_and(|m| m.contains("unknown QR")),
            "{report:?}"
        );
        assert!(env.sim.ledger_state(&made_up.provider_reference).is_none());
        assert_eq!(env.sim.payments_for(&made_up.provider_reference), 1);
        assert!(env
            .sim
            .notifies_for(&made_up.provider_reference)
            .labels
            .is_empty());
    }
}

#[tokio::test]
async fn an_issued_qr_pays_once_until_its_payment_is_cancelled_or_fails() {
    let env = env().await;
    let qr = env.sim.issue_qr(None);
    let first = payment_of(qr.clone(), 10_000);
    assert_eq!(
        env.connector.execute(&first).await.outcome,
        Outcome::Success
    );

    let another = payment_of(qr.clone(), 10_000);
    let refused = env.connector.execute(&another).await;
    assert_eq!(refused.outcome, Outcome::Failed, "{refused:?}");
    assert_eq!(refused.provider_code.as_deref(), Some("4046011"));
    assert!(
        refused
            .provider_message
            .as_deref()
            .is_some_and(|m| m.contains("already used")),
        "{refused:?}"
    );
    assert!(env.sim.ledger_state(&another.provider_reference).is_none());

    // A cancel frees the QR.
    let cancel = env.connector.execute(&cancel_of(&first)).await;
    assert_eq!(cancel.outcome, Outcome::Success, "{cancel:?}");
    let again = payment_of(qr, 10_000);
    assert_eq!(
        env.connector.execute(&again).await.outcome,
        Outcome::Success
    );

    // So does a pending payment that fails later (scenario 105: the issuer
    // notifies `06` after a step): a failed payment holds no QR.
    let qr = env.sim.issue_qr(None);
    let failing = payment_of(qr.clone(), 10_105);
    assert_eq!(
        env.connector.execute(&failing).await.outcome,
        Outcome::Pending
    );
    let held = env.connector.execute(&payment_of(qr.clone(), 10_000)).await;
    assert_eq!(held.provider_code.as_deref(), Some("4046011"), "{held:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entry = env
            .sim
            .ledger_state(&failing.provider_reference)
            .expect("the simulator keeps the payment");
        if entry.status == "06" {
            break;
        }
        assert!(Instant::now() < deadline, "scenario 105 never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = env.connector.execute(&payment_of(qr, 10_000)).await;
    assert_eq!(after.outcome, Outcome::Success, "{after:?}");
}

#[tokio::test]
async fn an_issued_qr_past_its_expiry_is_refused_4036000() {
    let env = env_with(|settings| settings.qr_ttl_secs = 0).await;
    let late = qr_payment(&env, 10_000);
    let report = env.connector.execute(&late).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("4036000"));
    assert!(env.sim.ledger_state(&late.provider_reference).is_none());
}

#[tokio::test]
async fn a_scenario_in_an_issued_qr_wins_over_the_amount() {
    let env = env().await;
    let poor = payment_of(env.sim.issue_qr(Some(303)), 10_000);
    let report = env.connector.execute(&poor).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("4036014"));
    let slow = payment_of(env.sim.issue_qr(Some(102)), 10_000);
    let report = env.connector.execute(&slow).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    assert_eq!(
        env.sim
            .ledger_state(&slow.provider_reference)
            .unwrap()
            .status,
        "03"
    );
}

#[tokio::test]
async fn a_pending_payment_cancelled_stays_cancelled_past_its_resolve_time() {
    let env = env().await;
    let payment = qr_payment(&env, 10_102);
    assert_eq!(
        env.connector.execute(&payment).await.outcome,
        Outcome::Pending
    );
    let cancel = env.connector.execute(&cancel_of(&payment)).await;
    assert_eq!(cancel.outcome, Outcome::Success, "{cancel:?}");
    // Scenario 102 would have resolved to 00 by now (400 ms here).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let check = env.connector.check_status(&payment).await;
    assert_eq!(check.outcome, Outcome::Failed, "{check:?}");
    assert_eq!(
        env.sim
            .ledger_state(&payment.provider_reference)
            .unwrap()
            .status,
        "05",
        "a cancelled payment came back as paid"
    );
}

#[tokio::test]
async fn cancel_same_day_then_after_the_window_refund_instead() {
    let env = env().await;
    let a = qr_payment(&env, 10_000);
    assert_eq!(env.connector.execute(&a).await.outcome, Outcome::Success);
    let cancel = env.connector.execute(&cancel_of(&a)).await;
    assert_eq!(cancel.outcome, Outcome::Success, "{cancel:?}");
    assert_eq!(
        env.sim.ledger_state(&a.provider_reference).unwrap().status,
        "05"
    );
    // The cancel's status check reads the original: 05.
    let cancel_check = env.connector.check_status(&cancel_of(&a)).await;
    assert_eq!(cancel_check.outcome, Outcome::Success);

    let b = qr_payment(&env, 10_000);
    let paid = env.connector.execute(&b).await;
    let trace = paid.provider_trace.clone().unwrap();
    env.sim
        .age_payment(&b.provider_reference, chrono::Duration::days(2));
    let refused = env.connector.execute(&cancel_of(&b)).await;
    assert_eq!(refused.outcome, Outcome::Failed);
    assert_eq!(refused.provider_code.as_deref(), Some("4056201"));

    let first = refund_of(&b, &trace, 4_000);
    let refunded = env.connector.execute(&first).await;
    assert_eq!(refunded.outcome, Outcome::Success, "{refunded:?}");
    assert_eq!(refunded.provider_amount, Some(Money::idr(4_000)));
    // Over-refund: 4 000 + 7 000 > 10 000.
    let over_refund = refund_of(&b, &trace, 7_000);
    let over = env.connector.execute(&over_refund).await;
    assert_eq!(over.outcome, Outcome::Failed);
    assert_eq!(over.provider_code.as_deref(), Some("4048013"));
    // Its status check re-sends it; the same refusal then decides nothing,
    // as an issuer could refuse the copy of a refund it had made.
    let over_check = env.connector.check_status(&over_refund).await;
    assert_eq!(over_check.outcome, Outcome::Unknown, "{over_check:?}");
    assert_eq!(over_check.provider_code.as_deref(), Some("4048013"));
    assert!(
        over_check
            .detail
            .contains("re-sent refund refused (4048013)"),
        "{}",
        over_check.detail
    );
    let meaning = loket_protocol::catalogue::explain(Provider::SnapQr, "4048013", None).unwrap();
    assert_eq!(meaning.outcome, Outcome::Failed);
    assert!(
        meaning.operator_action.contains("refund cannot exceed"),
        "{}",
        meaning.operator_action
    );
    // The rest may be refunded.
    let rest = env.connector.execute(&refund_of(&b, &trace, 6_000)).await;
    assert_eq!(rest.outcome, Outcome::Success);
    // A refund's status check re-sends it: already done = success, no second refund.
    let check = env.connector.check_status(&first).await;
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");
    assert_eq!(check.provider_code.as_deref(), Some("4098001"));
    let ledger = env.sim.ledger_state(&b.provider_reference).unwrap();
    assert_eq!((ledger.status.as_str(), ledger.refunded), ("04", 10_000));
}

async fn wait_for_notifies(env: &Env, n: usize) -> Vec<Result<ParsedCallback, String>> {
    for _ in 0..100 {
        if env.notified.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.notified.lock().unwrap().clone()
}

#[tokio::test]
async fn notifies_from_the_issuer_verify_and_duplicates_share_a_key() {
    let env = env().await;
    let pending = qr_payment(&env, 10_101);
    assert_eq!(
        env.connector.execute(&pending).await.outcome,
        Outcome::Pending
    );
    let got = wait_for_notifies(&env, 1).await;
    let parsed = got[0].clone().unwrap();
    assert!(parsed.verified);
    assert_eq!(parsed.claimed_outcome, Outcome::Success);
    assert_eq!(parsed.provider_reference, pending.provider_reference);

    let twice = qr_payment(&env, 10_104);
    assert_eq!(
        env.connector.execute(&twice).await.outcome,
        Outcome::Success
    );
    let got = wait_for_notifies(&env, 3).await;
    let (a, b) = (got[1].clone().unwrap(), got[2].clone().unwrap());
    assert_eq!(a.dedupe_key, b.dedupe_key);
    // The simulator records a delivery once it has read our answer, a moment
    // after our receiver handled it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.sim.notifies_for(&twice.provider_reference).acknowledged < 2 {
        assert!(
            Instant::now() < deadline,
            "the second notify was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.sim.notifies_for(&twice.provider_reference).acknowledged,
        2
    );

    let failed = qr_payment(&env, 10_105);
    assert_eq!(
        env.connector.execute(&failed).await.outcome,
        Outcome::Pending
    );
    let got = wait_for_notifies(&env, 4).await;
    assert_eq!(got[3].clone().unwrap().claimed_outcome, Outcome::Failed);
    // Before the HTTP reply.
    let early = qr_payment(&env, 10_103);
    assert_eq!(
        env.connector.execute(&early).await.outcome,
        Outcome::Success
    );
    assert_eq!(
        env.sim.notifies_for(&early.provider_reference).acknowledged,
        1
    );
}

/// The notifies our receiver has handled about `payment`: each must have
/// verified.
fn notifies_about(env: &Env, payment: &Command) -> Vec<ParsedCallback> {
    env.notified
        .lock()
        .unwrap()
        .iter()
        .map(|notify| notify.clone().expect("a notify that verifies"))
        .filter(|notify| notify.provider_reference == payment.provider_reference)
        .collect()
}

/// Waits (up to 5 s) until our receiver has handled `n` notifies about
/// `payment`.
async fn wait_for_notifies_about(env: &Env, payment: &Command, n: usize) -> Vec<ParsedCallback> {
    for _ in 0..100 {
        if notifies_about(env, payment).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    notifies_about(env, payment)
}

/// Spec §8.4: 2026000, and the notify before the reply, twice, or canceled.
#[tokio::test]
async fn pending_payments_are_notified_before_the_reply_twice_or_canceled() {
    let env = env().await;
    // 106: the ledger is 00 and its notify handled before the 2026000 reply.
    let early = qr_payment(&env, 10_106);
    let report = env.connector.execute(&early).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("2026000"));
    let got = notifies_about(&env, &early);
    assert_eq!(got.len(), 1, "no waiting: it came before the reply");
    assert!(got[0].verified);
    assert_eq!(
        (got[0].provider_code.as_str(), got[0].claimed_outcome),
        ("00", Outcome::Success)
    );
    assert_eq!(
        env.sim.notifies_for(&early.provider_reference).acknowledged,
        1
    );
    let check = env.connector.check_status(&early).await;
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");

    // 107: 2026000, then notify 00 twice, one dedupe key.
    let twice = qr_payment(&env, 10_107);
    let report = env.connector.execute(&twice).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    let got = wait_for_notifies_about(&env, &twice, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for notify in &got {
        assert!(notify.verified);
        assert_eq!(
            (notify.provider_code.as_str(), notify.claimed_outcome),
            ("00", Outcome::Success)
        );
    }
    assert_eq!(got[0].dedupe_key, got[1].dedupe_key);
    assert_eq!(
        env.sim
            .ledger_state(&twice.provider_reference)
            .unwrap()
            .status,
        "00"
    );

    // 108: 2026000, then notify 05 (canceled): a verified failure.
    let canceled = qr_payment(&env, 10_108);
    let report = env.connector.execute(&canceled).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    let got = wait_for_notifies_about(&env, &canceled, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].verified);
    assert_eq!(
        (got[0].provider_code.as_str(), got[0].claimed_outcome),
        ("05", Outcome::Failed)
    );
    let check = env.connector.check_status(&canceled).await;
    assert_eq!(check.outcome, Outcome::Failed, "{check:?}");
    assert_eq!(check.provider_code.as_deref(), Some("05"));
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_401_and_not_processed() {
    let env = env().await;
    let settings = SnapQrSettings {
        client_secret: Secret::new("not-the-secret"),
        ..env.settings.clone()
    };
    let connector = SnapQrConnector::new(settings).unwrap();
    let payment = qr_payment(&env, 10_000);
    let report = connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("4016000"));
    assert!(env.sim.ledger_state(&payment.provider_reference).is_none());
    assert!(!format!("{:?}", report.exchanges).contains("not-the-secret"));
}

/// For demos (`loketctl qr pay --qr`): `POST /_sim/qr?scenario=NNN` issues a
/// QR over HTTP that a payment may pay, its scenario chosen by the QR.
#[tokio::test]
async fn a_qr_issued_over_http_for_demos_pays_with_its_scenario() {
    let env = env().await;
    let http = reqwest::Client::new();
    let issued: serde_json::Value = http
        .post(format!("{}/_sim/qr?scenario=101", env.settings.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let qr = issued["qrContent"].as_str().expect("qrContent").to_string();
    // 10,000 alone would succeed at once; the QR's scenario 101 answers 202.
    let report = env.connector.execute(&payment_of(qr, 10_000)).await;
    assert_eq!(report.outcome, Outcome::Pending, "{report:?}");
    let refused = http
        .post(format!("{}/_sim/qr?scenario=1000", env.settings.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

/// A notify receiver in mode B whose parser (and so its token key) can be
/// replaced, as a callback receiver restarted with a key of its own would
/// be: it grants tokens at `/v1.0/access-token/b2b` and counts the grants.
#[derive(Clone)]
struct ModeBReceiver {
    parser: Arc<Mutex<Arc<loket_snapqr::SnapQrCallbacks>>>,
    grants: Arc<std::sync::atomic::AtomicUsize>,
}

impl ModeBReceiver {
    fn parser_with_key(
        issuer_public_pem: &str,
        token_key: &str,
    ) -> Arc<loket_snapqr::SnapQrCallbacks> {
        Arc::new(
            callback_parser(&NotifySettings {
                mode: loket_snapqr::NotifyMode::Hmac,
                issuer_public_key: Secret::new(issuer_public_pem.to_string()),
                client_secret: Secret::new("issued-secret"),
                issuer_client_key: "ISSUER-1".into(),
                token_key: Secret::new(token_key.to_string()),
                merchant_id: "M0001".into(),
                ..NotifySettings::default()
            })
            .unwrap(),
        )
    }

    async fn start(&self) -> String {
        async fn handle(
            State(receiver): State<ModeBReceiver>,
            request: axum::extract::Request,
        ) -> (axum::http::StatusCode, String) {
            let (parts, body) = request.into_parts();
            let request = CallbackRequest {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: None,
                headers: parts.headers,
                body: axum::body::to_bytes(body, 1 << 20).await.unwrap(),
                source_ip: None,
            };
            let parser = receiver.parser.lock().unwrap().clone();
            let reply = if request.path.ends_with("/access-token/b2b") {
                receiver
                    .grants
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                parser.grant_token(&request).unwrap()
            } else {
                match parser.parse(&request) {
                    Ok(parsed) => parser.acknowledge(&request, &parsed),
                    Err(error) => parser.reject(&request, &error),
                }
            };
            (
                axum::http::StatusCode::from_u16(reply.status).unwrap(),
                reply.body,
            )
        }
        let router = axum::Router::new()
            .route("/v1.0/access-token/b2b", post(handle))
            .route("/callback/snapqr", post(handle))
            .with_state(self.clone());
        let base = loket_simulators::common::serve_stub(router).await.unwrap();
        format!("{base}/callback/snapqr")
    }
}

/// Notify mode B from the issuer's side: the simulator signs in at the
/// receiver's token endpoint once and reuses the token; when the receiver no
/// longer accepts it (restarted with another token key) the notify is
/// refused 401, and the simulator signs in again and resends it.
#[tokio::test]
async fn in_mode_b_the_issuer_signs_in_again_when_its_token_is_refused() {
    let (issuer_private, issuer_public) = loket_snapqr::sign::generate_key_pair();
    let receiver = ModeBReceiver {
        parser: Arc::new(Mutex::new(ModeBReceiver::parser_with_key(
            &issuer_public,
            "key-1",
        ))),
        grants: Arc::default(),
    };
    let notify_url = receiver.start().await;
    let env = env_with(|settings| {
        settings.notify_url = Some(notify_url);
        settings.issuer_private_key = Secret::new(issuer_private);
        settings.notify_mode = loket_snapqr::NotifyMode::Hmac;
        settings.notify_client_key = "ISSUER-1".into();
        settings.notify_client_secret = Secret::new("issued-secret");
        settings.notify_retry_ms = 20;
    })
    .await;
    let notified = |reference: String| {
        let sim = env.sim.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let log = sim.notifies_for(&reference);
                if log.acknowledged >= 1 || Instant::now() > deadline {
                    return log;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let grants = || receiver.grants.load(std::sync::atomic::Ordering::SeqCst);

    let first = payment_of(env.sim.issue_qr(Some(101)), 10_000);
    assert_eq!(
        env.connector.execute(&first).await.outcome,
        Outcome::Pending
    );
    let log = notified(first.provider_reference.clone()).await;
    assert_eq!(log.last_http_status, Some(200), "{log:?}");
    assert_eq!(grants(), 1);

    let second = payment_of(env.sim.issue_qr(Some(101)), 10_000);
    assert_eq!(
        env.connector.execute(&second).await.outcome,
        Outcome::Pending
    );
    let log = notified(second.provider_reference.clone()).await;
    assert_eq!(log.last_http_status, Some(200), "{log:?}");
    assert_eq!(grants(), 1, "the token is reused");

    *receiver.parser.lock().unwrap() = ModeBReceiver::parser_with_key(&issuer_public, "key-2");
    let third = payment_of(env.sim.issue_qr(Some(101)), 10_000);
    assert_eq!(
        env.connector.execute(&third).await.outcome,
        Outcome::Pending
    );
    let log = notified(third.provider_reference.clone()).await;
    assert_eq!(log.last_http_status, Some(200), "{log:?}");
    assert!(log.attempts > log.acknowledged, "refused first: {log:?}");
    assert_eq!(grants(), 2, "signed in again once");
}

/// The body of the last `operation` reply (`qr_payment`, `qr_query`, …) a
/// report recorded, as the issuer wrote it.
fn reply_to(report: &loket_connector::Report, operation: &str) -> loket_snapqr::wire::Body {
    let exchange = report
        .exchanges
        .iter()
        .rfind(|exchange| exchange.operation == operation)
        .unwrap_or_else(|| panic!("no {operation} exchange in {report:?}"));
    loket_snapqr::wire::Body::parse(exchange.response.as_bytes()).expect("a JSON reply")
}

/// Spec §5: "61 resp: … No amount is returned."
#[tokio::test]
async fn a_query_returns_no_amount() {
    let env = env().await;
    let payment = qr_payment(&env, 10_000);
    assert_eq!(
        env.connector.execute(&payment).await.outcome,
        Outcome::Success
    );
    let check = env.connector.check_status(&payment).await;
    assert_eq!(check.outcome, Outcome::Success, "{check:?}");
    let reply = reply_to(&check, "qr_query");
    // Looked up leniently: no `Amount` or ` amount` either.
    assert_eq!(reply.value("amount"), None, "{reply:?}");
}

/// Spec §7: a partnerRefundNo is one refund per partner, whichever payment it
/// names. Sent again with another payment it is a reuse (`409xx01`, or
/// `404xx18` with another amount) and refunds nothing; sent again with its
/// own payment and amount it is the idempotent re-send a refund's status
/// check relies on. A reuse answered to a refund's first send ever is no
/// success: nothing of ours was sent before.
#[tokio::test]
async fn a_partner_refund_no_reused_on_another_payment_refunds_nothing() {
    let env = env().await;
    let paid = |payment: Command| {
        let connector = env.connector.clone();
        async move {
            let report = connector.execute(&payment).await;
            assert_eq!(report.outcome, Outcome::Success, "{report:?}");
            (payment, report.provider_trace.expect("a referenceNo"))
        }
    };
    let (a, trace_a) = paid(qr_payment(&env, 10_000)).await;
    let (b, trace_b) = paid(qr_payment(&env, 10_000)).await;
    let refund = refund_of(&a, &trace_a, 4_000);
    let done = env.connector.execute(&refund).await;
    assert_eq!(done.provider_code.as_deref(), Some("2008000"), "{done:?}");

    let on_b = Command {
        original_reference: b.provider_reference.clone(),
        original_provider_trace: trace_b,
        ..refund.clone()
    };
    let reused = env.connector.execute(&on_b).await;
    assert_eq!(
        reused.provider_code.as_deref(),
        Some("4098001"),
        "{reused:?}"
    );
    let other_amount = Command {
        amount: Some(Money::idr(5_000)),
        ..on_b.clone()
    };
    let inconsistent = env.connector.execute(&other_amount).await;
    assert_eq!(
        inconsistent.provider_code.as_deref(),
        Some("4048018"),
        "{inconsistent:?}"
    );
    // Sent before, the refund's number is held for another amount than it
    // asks: what was refunded is not known, so no success at its amount.
    assert_eq!(inconsistent.outcome, Outcome::Unknown, "{inconsistent:?}");
    assert!(
        inconsistent
            .contradiction
            .as_deref()
            .is_some_and(|why| why.contains("4048018") && why.contains("another amount")),
        "{inconsistent:?}"
    );
    // As its transaction's first send ever (the journal shows none before),
    // "made before" cannot be an earlier refund of ours: neither answer
    // decides, and the reconciler parks it for an operator.
    for (reuse, code) in [(on_b, "4098001"), (other_amount, "4048018")] {
        let first = Command {
            first_send: true,
            ..reuse
        };
        let report = env.connector.execute(&first).await;
        assert_eq!(report.provider_code.as_deref(), Some(code), "{report:?}");
        assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
        assert!(
            report
                .contradiction
                .as_deref()
                .is_some_and(|why| why.contains(code) && why.contains("never sent before")),
            "{report:?}"
        );
    }
    let untouched = env.sim.ledger_state(&b.provider_reference).unwrap();
    assert_eq!((untouched.status.as_str(), untouched.refunded), ("00", 0));
    assert!(untouched.refunds.is_empty(), "{untouched:?}");

    let resent = env.connector.check_status(&refund).await;
    assert_eq!(resent.outcome, Outcome::Success, "{resent:?}");
    assert_eq!(resent.provider_code.as_deref(), Some("4098001"));
    assert_eq!(resent.provider_trace, done.provider_trace);
    let refunded = env.sim.ledger_state(&a.provider_reference).unwrap();
    assert_eq!((refunded.status.as_str(), refunded.refunded), ("04", 4_000));
}

/// Spec §8.10: scenario 109's issuer writes every message about the payment
/// in the forms a lenient reader must accept (`externalStoreID`,
/// `" originalExternalId"`, `Value`/`Currency`, `"additionalInfo":null`);
/// the connector and the notify parser read them as the canonical ones.
#[tokio::test]
async fn messages_in_the_lenient_forms_of_8_10_read_as_canonical() {
    let env = env().await;
    let payment = qr_payment(&env, 10_109);
    let report = env.connector.execute(&payment).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.provider_code.as_deref(), Some("2006000"));
    let ledger = env.sim.ledger_state(&payment.provider_reference).unwrap();
    assert_eq!(ledger.amount, 10_109);
    assert_eq!(
        report.provider_trace.as_deref(),
        Some(ledger.reference_no.as_str())
    );
    let lenient = |reply: &loket_snapqr::wire::Body| {
        reply.0.contains_key("externalStoreID")
            && reply.0.get("additionalInfo") == Some(&serde_json::Value::Null)
    };
    let reply = reply_to(&report, "qr_payment");
    assert!(lenient(&reply), "{reply:?}");

    let check = env.connector.check_status(&payment).await;
    assert_eq!(
        (check.outcome, check.provider_code.as_deref()),
        (Outcome::Success, Some("00")),
        "{check:?}"
    );
    assert_eq!(check.provider_trace, report.provider_trace);
    let reply = reply_to(&check, "qr_query");
    assert!(
        lenient(&reply) && reply.0.contains_key(" originalExternalId"),
        "{reply:?}"
    );

    // The notify's signature covers `"additionalInfo":null` as sent.
    let notified = wait_for_notifies_about(&env, &payment, 1).await;
    let notify = notified.first().expect("a verified notify");
    assert!(notify.verified);
    assert!(notify.raw_masked.contains(r#""Value""#), "{notify:?}");
    assert_eq!(
        (notify.provider_code.as_str(), notify.claimed_outcome),
        ("00", Outcome::Success)
    );
    assert_eq!(notify.provider_trace, ledger.reference_no);
    assert_eq!(notify.provider_amount, Some(Money::idr(10_109)));

    let refund = env
        .connector
        .execute(&refund_of(&payment, &ledger.reference_no, 109))
        .await;
    assert_eq!(refund.outcome, Outcome::Success, "{refund:?}");
    assert_eq!(refund.provider_amount, Some(Money::idr(109)));
    let reply = reply_to(&refund, "qr_refund");
    assert!(
        lenient(&reply)
            && reply
                .0
                .get("refundAmount")
                .is_some_and(|amount| amount.get("Value").is_some()),
        "{reply:?}"
    );
}

/// With the issuer's token service failing (HTTP 503), no money-moving
/// request leaves, and each report says so: the worker then fails a first
/// send at once. A cancel among them would otherwise stay unknown, its
/// status check reading the payment still in progress, and never be sent.
#[tokio::test]
async fn with_no_access_token_no_request_leaves_and_the_report_says_so() {
    let env = env().await;
    let paid = qr_payment(&env, 10_000);
    assert_eq!(env.connector.execute(&paid).await.outcome, Outcome::Success);
    let front = axum::Router::new()
        .route(
            &env.sim.path(Service::Token.path()),
            post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .fallback_service(env.sim.router());
    let connector = connector_behind(&env, front).await;
    let cancel = cancel_of(&paid);
    let unpaid = qr_payment(&env, 10_000);
    for command in [&cancel, &unpaid] {
        assert_never_left(&connector.execute(command).await, "no B2B access token");
    }
    let counts = env.sim.requests_for(&paid.provider_reference);
    assert_eq!((counts.payments, counts.cancels), (1, 0), "{counts:?}");
    assert_eq!(env.sim.requests_for(&unpaid.provider_reference).payments, 0);
    // A cancel that went out and got no answer in time may have arrived.
    let silent = axum::Router::new()
        .route(
            &env.sim.path(Service::Cancel.path()),
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .fallback_service(env.sim.router());
    let report = connector_behind(&env, silent).await.execute(&cancel).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    assert!(!report.never_left, "{report:?}");
}

/// `report` answers a request that never left, for the reason `why`: still
/// unknown here (the worker fails a first send of it).
fn assert_never_left(report: &loket_connector::Report, why: &str) {
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    assert!(report.never_left, "{report:?}");
    assert!(report.detail.contains(why), "{}", report.detail);
}

/// `command` as the worker hands it over: its send journal entry written
/// `ago`.
fn journaled(command: &Command, ago: Duration) -> Command {
    Command {
        journal_recorded: Some(Instant::now() - ago),
        ..command.clone()
    }
}

#[tokio::test]
async fn a_request_held_up_past_its_send_window_is_not_sent() {
    let env = env().await;
    // Held up (waiting behind others for a token, generating the QR) until
    // it could still be on its way after its journal entry stops saying so:
    // another worker could then send it again. It stays where it was.
    let late = env.settings.longest_send() - env.settings.timeout() + Duration::from_millis(50);
    let paid = qr_payment(&env, 10_000);
    for held_up in [
        journaled(&qr_payment(&env, 10_000), late),
        journaled(&command(Operation::QrPayment, &reference(), 10_000), late),
        journaled(&cancel_of(&paid), late),
    ] {
        assert_never_left(&env.connector.execute(&held_up).await, "not sent: held up");
        let reference = match held_up.operation {
            Operation::QrCancel => &held_up.original_reference,
            _ => &held_up.provider_reference,
        };
        let counts = env.sim.requests_for(reference);
        assert_eq!((counts.payments, counts.cancels), (0, 0), "{counts:?}");
    }
    // Dated just now, the same requests go out.
    let report = env
        .connector
        .execute(&journaled(&paid, Duration::ZERO))
        .await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    let trace = report.provider_trace.unwrap();
    env.sim
        .age_payment(&paid.provider_reference, chrono::Duration::days(2));
    // A refund, and the status check that sends it again.
    let refund = refund_of(&paid, &trace, 4_000);
    let report = env.connector.execute(&journaled(&refund, late)).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    let check = journaled(&refund.as_status_check(), late);
    let report = env.connector.check_status(&check).await;
    assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    assert_eq!(env.sim.requests_for(&refund.provider_reference).refunds, 0);
    let report = env
        .connector
        .execute(&journaled(&refund, Duration::ZERO))
        .await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(env.sim.requests_for(&refund.provider_reference).refunds, 1);
}
