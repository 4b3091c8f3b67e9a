//! End-to-end: prepaid purchases and PLN tokens through every real service
//! (gRPC ingress → JetStream → OkeBayar connector → simulator over HTTP →
//! reconciler → Postgres → the waiting client).

mod common;

use common::*;
use loket_protocol::pb;
use loket_test_support::leaks::{assert_no_secret_leaked, Canaries};
use loket_test_support::{logs, TestApp, TestOptions, CANARY_NUMERIC_PIN, CANARY_PIN};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepaid_purchase_succeeds_with_a_serial_number() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let txn = client
        .purchase(purchase("order-1", "PULSA10", OK_ACCOUNT, 10_000))
        .await
        .expect("purchase accepted")
        .into_inner();
    assert_eq!(txn.status(), pb::TransactionStatus::Success, "{txn:?}");
    assert!(!txn.serial_number.is_empty(), "a serial number: {txn:?}");
    assert_eq!(txn.provider_code, "000");
    assert_eq!(txn.amount.as_ref().map(|m| m.minor), Some(10_500));
    let explanation = txn.explanation.expect("the code is explained");
    assert!(explanation.in_catalogue);
    assert_eq!(app.sim.money_requests_for(&txn.provider_reference), 1);
    let row = app
        .wait_for_status(&txn.id, "success", Duration::from_secs(5))
        .await;
    assert!(
        !row.amount_mismatch,
        "simulator price equals the catalogue price"
    );
    assert_eq!(row.provider_amount_minor, Some(10_500));
    let ledger = app
        .sim
        .ledger_state(&txn.provider_reference)
        .expect("the simulator saw it");
    assert_eq!(ledger.serial_number.as_str(), txn.serial_number);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pln_inquiry_then_purchase_copies_the_inquiry_references() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let inquiry = successful(
        client
            .inquire(inquire("pln-inq-1", "PLN20", "512345678901", 10_000))
            .await
            .expect("inquiry accepted")
            .into_inner(),
    );
    let bill = inquiry.bill.as_ref().expect("inquiry details");
    assert!(
        !bill.customer_name.is_empty(),
        "customer name from PLN_NAMAPELANGGAN: {bill:?}"
    );
    assert!(bill.expires_at.is_some());

    let mut request = purchase("pln-buy-1", "PLN20", "512345678901", 10_000);
    request.inquiry_id = inquiry.id.clone();
    let token = client
        .purchase(request)
        .await
        .expect("purchase accepted")
        .into_inner();
    assert_eq!(token.status(), pb::TransactionStatus::Success, "{token:?}");
    assert!(!token.serial_number.is_empty(), "the PLN token");
    assert_ne!(
        token.provider_reference, inquiry.provider_reference,
        "a new referencecode for the purchase"
    );
    assert_eq!(app.sim.money_requests_for(&token.provider_reference), 1);
    // The simulator refuses refs that do not match an inquiry it issued and
    // records the inquiry a purchase's refs named: without the refs the
    // purchase would have gone through as one without an inquiry.
    let bought = app.sim.ledger_state(&token.provider_reference).unwrap();
    let inquired = app.sim.ledger_state(&inquiry.provider_reference).unwrap();
    assert!(inquired.inquirycode.is_some(), "{inquired:?}");
    assert_eq!(bought.inquirycode, inquired.inquirycode);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_balance_is_served_by_the_connector() {
    let app = TestApp::spawn().await;
    app.sim.set_balance(123_456_789);
    let mut client = app.client_a().await;
    let balance = client
        .get_balance(pb::GetBalanceRequest {
            provider: "okebayar".into(),
        })
        .await
        .expect("balance")
        .into_inner();
    assert_eq!(balance.balance.map(|m| m.minor), Some(123_456_789));
}

/// A balance query the provider cannot answer is `UNAVAILABLE` to the
/// client and a warning in the logs of both the ingress and the connector
/// that asked, each under the trace the client's call sent (its
/// `traceparent` crosses the bus with the query).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_balance_query_is_logged_under_the_callers_trace() {
    let app = TestApp::spawn().await;
    app.sim
        .outage()
        .start(loket_simulators::Outage {
            status: 503,
            for_ms: 30_000,
            after_commit: false,
        })
        .unwrap();
    let trace_id = "5e0c1a2b3c4d5e6f708192a3b4c5d6e7";
    let mut request = tonic::Request::new(pb::GetBalanceRequest {
        provider: "okebayar".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let refused = app
        .client_a()
        .await
        .get_balance(request)
        .await
        .expect_err("no balance during an outage");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let logs = logs::captured();
    for (target, message) in [
        ("loket_ingress", ": balance query failed"),
        ("loket_connector", ": provider balance query failed"),
    ] {
        assert!(
            logs.lines().any(|line| line.contains(target)
                && line.contains(message)
                && line.contains(trace_id)),
            "{target}'s warning under the caller's trace: {logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn definite_failures_end_failed_with_code_and_meaning() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;

    // 204: wrong destination number.
    let wrong = bought(
        &mut client,
        purchase("fail-204", "PULSA10", &scenario("204"), 10_000),
    )
    .await;
    assert_eq!(wrong.status(), pb::TransactionStatus::Failed, "{wrong:?}");
    assert_eq!(wrong.provider_code, "204");
    let meaning = wrong.explanation.expect("explained");
    assert_eq!(meaning.category, "user_input");
    assert!(!meaning.merchant_message_id.is_empty());

    // 401 ("already paid / inquiry invalid") on the purchase's first send
    // ever cannot be our own earlier purchase: failed at once.
    let refused = bought(
        &mut client,
        purchase("fail-401", "PULSA10", &scenario("401"), 10_000),
    )
    .await;
    assert_eq!(
        refused.status(),
        pb::TransactionStatus::Failed,
        "{refused:?}"
    );
    assert_eq!(refused.provider_code, "401");
    assert_eq!(app.sim.money_requests_for(&refused.provider_reference), 1);

    // 203: the deposit is empty.
    app.sim.set_balance(0);
    let broke = bought(
        &mut client,
        purchase("fail-203", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    assert_eq!(broke.status(), pb::TransactionStatus::Failed, "{broke:?}");
    assert_eq!(broke.provider_code, "203");
    assert_eq!(broke.explanation.expect("explained").category, "balance");
}

/// Spec §7: `202` (server fault) and `240` (unidentified error) are "F,
/// confirm by cek-status first". loket does not fail a purchase on them: it
/// is `unknown` until a status check shows the provider has no record of it
/// (the simulator records neither), and `failed` only past the not-found
/// grace. Sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_fault_codes_fail_a_purchase_only_once_a_status_check_finds_no_record() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    for code in ["202", "240"] {
        fails_for_want_of_a_record(&app, &mut client, &format!("fault-{code}"), &scenario(code))
            .await;
    }
}

/// Spec §8.2 "request never received": a purchase lost on its way (the
/// simulator's `912`: the connection reset, nothing recorded) is `unknown`,
/// never failed by guesswork, until its status checks find no record; then
/// `failed` past the not-found grace. Sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_purchase_lost_on_its_way_fails_only_once_a_status_check_finds_no_record() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    fails_for_want_of_a_record(&app, &mut client, "lost-912", &scenario("912")).await;
}

/// Buys PULSA10 for `account` and waits for it to end `failed` for want of
/// a record at the provider: its first result `unknown`, at least one
/// status check, one purchase sent.
async fn fails_for_want_of_a_record(
    app: &TestApp,
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
    account: &str,
) {
    let txn = bought(client, purchase(client_ref, "PULSA10", account, 0)).await;
    failed_for_want_of_a_record(app, &txn.id).await;
    let events = app.events(&txn.id).await;
    let first = events
        .iter()
        .find(|(source, _, _)| source == "result")
        .expect("a result event");
    assert_eq!(first.2.as_deref(), Some("unknown"), "{events:?}");
    let requests = app.sim.requests_for(&txn.provider_reference);
    assert!(requests.status_checks >= 1, "{requests:?}");
    assert_eq!(app.sim.money_requests_for(&txn.provider_reference), 1);
}

/// A `202` answer carries `harga` 0 for a purchase that never happened (an
/// unknown report, resolved by a status check). It is no amount mismatch:
/// not in the event log, not on the row once the purchase fails for want of
/// a record, and not in finance's export.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_fault_reporting_harga_0_is_no_amount_mismatch() {
    use loket_cli::export::{export, ExportQuery, RowFormat};
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let txn = bought(
        &mut client,
        purchase("no-charge-202", "PULSA10", &scenario("202"), 0),
    )
    .await;
    let row = app
        .wait_for_status(&txn.id, "failed", Duration::from_secs(20))
        .await;
    assert!(!row.amount_mismatch, "{row:?}");
    let flagging_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND detail ? 'amount_mismatch'",
    )
    .bind(row.id)
    .fetch_one(&app.pool)
    .await
    .expect("events");
    assert_eq!(flagging_events, 0, "{:?}", app.events(&txn.id).await);
    let now = chrono::Utc::now();
    let summary = export(
        &app.pool,
        &ExportQuery {
            provider: loket_protocol::Provider::OkeBayar,
            from: now - chrono::Duration::hours(1),
            until: now + chrono::Duration::hours(1),
            status: None,
        },
        RowFormat::Csv,
        &mut Vec::new(),
    )
    .await
    .expect("export");
    assert_eq!(summary.rows, 1);
    assert_eq!(summary.amount_mismatches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_then_callbacks_then_success() {
    // No scheduled status check falls within the test: only the callbacks
    // (each asking for a check) can settle the purchase.
    let app = TestApp::spawn_with(TestOptions {
        first_check_ms: 60_000,
        ..TestOptions::default()
    })
    .await;
    let mut client = app.client_a().await;
    let (txn, events) = settled_by_callbacks(&app, &mut client, "pending-002").await;
    let row = app.row(&txn.id).await;
    assert_eq!(row.provider_code.as_deref(), Some("000"));
    assert!(row.serial_number.is_some());
    assert!(
        events
            .iter()
            .any(|(_, _, to)| to.as_deref() == Some("pending")),
        "went through pending: {events:?}"
    );
    // Unsigned callbacks are confirmed by a status check before the state moves.
    assert!(app.sim.requests_for(&txn.provider_reference).status_checks >= 1);
    assert_eq!(app.sim.money_requests_for(&txn.provider_reference), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn success_without_serial_number_is_completed_by_a_status_check() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let txn = bought(
        &mut client,
        purchase("sn-001", "PULSA10", &scenario("001"), 0),
    )
    .await;
    let row = app
        .wait_for_status(&txn.id, "success", Duration::from_secs(15))
        .await;
    assert!(
        row.serial_number
            .as_deref()
            .is_some_and(|sn| !sn.is_empty()),
        "SN arrived: {row:?}"
    );
    assert!(app.sim.requests_for(&txn.provider_reference).status_checks >= 1);
    assert_eq!(app.sim.money_requests_for(&txn.provider_reference), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_mode_purchase_and_callbacks_work_end_to_end() {
    // As above, only the JSON callbacks can settle the pending purchase.
    let app = TestApp::spawn_with(TestOptions {
        format: loket_okebayar::wire::Format::Json,
        first_check_ms: 60_000,
        ..TestOptions::default()
    })
    .await;
    let mut client = app.client_a().await;
    let quick = bought(
        &mut client,
        purchase("json-1", "PULSA10", &scenario("921"), 10_000),
    )
    .await;
    assert_eq!(quick.status(), pb::TransactionStatus::Success, "{quick:?}");
    assert_eq!(
        quick.provider_amount.as_ref().map(|m| m.minor),
        Some(10_500),
        "`10500.00` as a JSON number, exactly"
    );
    let (pending, _) = settled_by_callbacks(&app, &mut client, "json-2").await;
    assert!(
        app.sim
            .callbacks_for(&pending.provider_reference)
            .acknowledged
            >= 2
    );
    let exchange: String = sqlx::query_scalar(
        "SELECT request FROM provider_exchanges WHERE transaction_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(uuid::Uuid::parse_str(&quick.id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let sent: serde_json::Value = serde_json::from_str(&exchange).expect("sent as JSON");
    assert_eq!(sent["userpin"], "***", "{exchange}");
    assert_eq!(sent["signature"], "***", "{exchange}");
    let signature = loket_okebayar::sign::signature(
        loket_test_support::app::USERID,
        CANARY_PIN,
        &quick.provider_reference,
    );
    assert!(
        !exchange.contains(CANARY_PIN) && !exchange.contains(&signature),
        "PIN and signature masked: {exchange}"
    );
}

/// Money-safety rule 7 with a PIN of digits only, as real OkeBayar PINs
/// are (the masker treats one apart: masked only where it stands alone):
/// after a success, a failure code and a pending purchase settled by the
/// provider's callbacks, the full canary check (`Canaries::of`: the PIN
/// wherever it stands alone, its signatures, the bus and database
/// passwords) finds no secret in a log line at every level, a row, a
/// JetStream message or the PostgreSQL server's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_numeric_pin_reaches_no_log_row_or_message() {
    let _verbose = logs::verbose();
    // No scheduled status check falls within the test: the callbacks
    // settle the pending purchase.
    let app = TestApp::spawn_with(TestOptions {
        okebayar_pin: CANARY_NUMERIC_PIN,
        first_check_ms: 60_000,
        ..TestOptions::default()
    })
    .await;
    let mut client = app.client_a().await;
    let sold = successful(
        bought(
            &mut client,
            purchase("numeric-pin-ok", "PULSA10", OK_ACCOUNT, 10_000),
        )
        .await,
    );
    let refused = bought(
        &mut client,
        purchase("numeric-pin-204", "PULSA10", &scenario("204"), 10_000),
    )
    .await;
    assert_eq!(
        refused.status(),
        pb::TransactionStatus::Failed,
        "{refused:?}"
    );
    let (pending, _) = settled_by_callbacks(&app, &mut client, "numeric-pin-002").await;

    let canaries = Canaries::of(&app);
    assert!(
        canaries
            .iter()
            .any(|canary| canary.value == CANARY_NUMERIC_PIN),
        "the numeric PIN is a canary"
    );
    let ids = [sold.id, refused.id, pending.id];
    let checked = assert_no_secret_leaked(&app, &ids, "", &canaries).await;
    eprintln!("numeric PIN: {checked:?}");
    app.assert_services_alive();
}

/// Buys under the simulator's "002: pending, then callbacks" scenario and
/// waits until the transaction is `success` with a callback among its
/// events; returns it and its events.
async fn settled_by_callbacks(
    app: &TestApp,
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
) -> (
    pb::Transaction,
    Vec<(String, Option<String>, Option<String>)>,
) {
    let txn = bought(client, purchase(client_ref, "PULSA10", &scenario("002"), 0)).await;
    app.wait_for_status(&txn.id, "success", Duration::from_secs(15))
        .await;
    let events = app.events(&txn.id).await;
    assert!(
        events.iter().any(|(source, _, _)| source == "callback"),
        "callbacks were received: {events:?}"
    );
    (txn, events)
}
