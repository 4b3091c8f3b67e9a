//! End-to-end: SNAP BI QR CPM through every real service — gRPC ingress →
//! JetStream → SNAP connector (B2B token, HMAC-SHA512 signatures) → issuer
//! simulator → signed notify at the callback receiver → reconciler.
//! Scenarios are chosen by the amount's last three digits
//! (crates/simulators/SCENARIOS.md).

mod common;

use common::*;
use loket_protocol::{pb, TransactionKind};
use loket_test_support::{TestApp, TestOptions};
use std::time::Duration;

async fn snap_app() -> TestApp {
    TestApp::spawn_with(TestOptions {
        snapqr: true,
        ..Default::default()
    })
    .await
}

/// No scheduled status query runs within the test (the first is due after a
/// minute), so the pending payment can only be settled by its notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_payment_outcomes_success_pending_notify_query_and_failures() {
    let app = TestApp::spawn_with(TestOptions {
        snapqr: true,
        first_check_ms: 60_000,
        ..Default::default()
    })
    .await;
    let sim = &app.snapqr.as_ref().unwrap().sim;
    let mut client = app.client_a().await;

    let paid = client
        .qr_pay(qr_pay("qr-ok", 10_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status(), pb::TransactionStatus::Success, "{paid:?}");
    assert_eq!(paid.provider_code, "2006000");
    assert!(!paid.provider_trace.is_empty(), "the issuer's referenceNo");

    // 2026000, then a signed notify 00: the verified notify sets the state.
    let notified = client
        .qr_pay(qr_pay("qr-notify", 10_101, 0))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&notified.id, "success", Duration::from_secs(15))
        .await;
    let log = event_log(&app, &notified.id).await;
    let settled = transition_into(&log, "success");
    assert_eq!(
        (settled.source.as_str(), settled.from.as_deref()),
        ("callback", Some("pending")),
        "the notify took the payment out of pending: {log:#?}"
    );
    assert!(
        !log.iter().any(|e| e.source == "status_check"),
        "no status query ran: {log:#?}"
    );
    assert_eq!(sim.requests_for(&notified.provider_reference).queries, 0);

    // Definite failures carry the catalogue's explanation.
    let expired = client
        .qr_pay(qr_pay("qr-expired", 10_301, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        expired.status(),
        pb::TransactionStatus::Failed,
        "{expired:?}"
    );
    assert_eq!(expired.provider_code, "4036000");
    let meaning = expired.explanation.clone().expect("explained");
    assert!(meaning.in_catalogue);
    assert!(!meaning.merchant_message_id.is_empty());
    // Each scenario sent its payment (60) exactly once; the expired QR's
    // payment was sent and refused.
    for txn in [&paid, &notified, &expired] {
        assert_eq!(
            sim.payments_for(&txn.provider_reference),
            1,
            "one payment request for {}",
            txn.client_ref
        );
    }
}

/// 2026000 and no notify at all (scenario 102): only the scheduled status
/// query (61) resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_payment_left_pending_without_a_notify_is_settled_by_the_query() {
    let app = snap_app().await;
    let sim = &app.snapqr.as_ref().unwrap().sim;
    let mut client = app.client_a().await;
    let silent = left_pending(&mut client, "qr-silent").await;
    app.wait_for_status(&silent.id, "success", Duration::from_secs(15))
        .await;
    let log = event_log(&app, &silent.id).await;
    let settled = transition_into(&log, "success");
    assert_eq!(
        (settled.source.as_str(), settled.from.as_deref()),
        ("status_check", Some("pending")),
        "the query took the payment out of pending: {log:#?}"
    );
    assert!(callbacks_in(&log).is_empty(), "no notify: {log:#?}");
    assert!(sim.requests_for(&silent.provider_reference).queries >= 1);
    assert_eq!(
        sim.payments_for(&silent.provider_reference),
        1,
        "one payment request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_is_shared_by_concurrent_payments_and_refreshed_once_after_expiry() {
    let app = snap_app().await;
    let sim = app.snapqr.as_ref().unwrap().sim.clone();
    let mut calls = Vec::new();
    for i in 0..8 {
        let mut client = app.client_a().await;
        calls.push(tokio::spawn(async move {
            client
                .qr_pay(qr_pay(&format!("tok-{i}"), 20_000, 10_000))
                .await
                .map(|r| r.into_inner())
        }));
    }
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().status(),
            pb::TransactionStatus::Success
        );
    }
    assert_eq!(
        sim.token_requests(),
        1,
        "concurrent requests shared one token"
    );

    sim.expire_tokens();
    let mut client = app.client_a().await;
    let after = client
        .qr_pay(qr_pay("tok-after", 20_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.status(),
        pb::TransactionStatus::Success,
        "no failed transaction: {after:?}"
    );
    assert_eq!(sim.token_requests(), 2, "exactly one refresh");
}

/// Scenario 201: the issuer debits, then answers only after our timeout
/// (and sends no notify). The payment is `unknown`, never `failed`; the
/// status query (61) finds it paid; the issuer saw one payment (60), under
/// its reference and in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_after_the_debit_is_unknown_then_the_query_finds_one_payment() {
    let app = snap_app().await;
    let sim = &app.snapqr.as_ref().unwrap().sim;
    let mut client = app.client_a().await;
    let txn = client
        .qr_pay(qr_pay("qr-slow", 10_201, 0))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&txn.id, "success", Duration::from_secs(20))
        .await;
    let log = event_log(&app, &txn.id).await;
    assert_unknown_then_settled_by_a_check(&log, "a payment answered after our timeout");
    let counts = sim.requests_for(&txn.provider_reference);
    assert_eq!(counts.payments, 1, "the issuer saw one payment: {counts:?}");
    assert!(
        counts.queries >= 1,
        "the unknown payment was queried: {counts:?}"
    );
    assert_one_money_request_per_transaction(
        &app,
        "a payment answered after our timeout",
        &[TransactionKind::QrPayment],
        sim.payments_total(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_replayed_and_duplicate_notifies() {
    let app = snap_app().await;
    let fixture = app.snapqr.as_ref().unwrap();
    let mut client = app.client_a().await;

    // Duplicate notifies (scenario 104): the issuer sends the same notify
    // twice, both are acknowledged, and the second is recognised as a
    // duplicate: one callback row, one transition.
    let twice = client
        .qr_pay(qr_pay("qr-dup", 10_104, 10_000))
        .await
        .unwrap()
        .into_inner();
    eventually(
        "both notifies delivered",
        Duration::from_secs(10),
        || async {
            fixture
                .sim
                .notifies_for(&twice.provider_reference)
                .acknowledged
                >= 2
        },
    )
    .await;
    let notifies = fixture.sim.notifies_for(&twice.provider_reference);
    assert_eq!(
        (notifies.deliveries, notifies.acknowledged),
        (2, 2),
        "the issuer sent the notify twice: {notifies:?}"
    );
    // Both copies were in the event stream before they were answered: once
    // it is drained, both have been applied.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    assert_eq!(
        callback_events(&app, &twice.id).await,
        1,
        "two copies of one notify, recorded once"
    );
    assert_eq!(app.transitions_into(&twice.id, "success").await, 1);

    // A payment still pending (scenario 102, no notify).
    let pending = left_pending(&mut client, "qr-forged").await;
    let issuer_key =
        loket_snapqr::sign::load_private_key(fixture.sim_settings.issuer_private_key.expose())
            .unwrap();
    let body = format!(
        r#"{{"originalPartnerReferenceNo":"{}","merchantId":"{}","latestTransactionStatus":"06","transactionStatusDesc":"Failed"}}"#,
        pending.provider_reference,
        loket_test_support::snapqr::MERCHANT_ID
    );
    let path = "/callback/snapqr";
    let http = reqwest::Client::new();
    let send = |headers: Vec<(String, String)>, body: String| {
        let mut request = http
            .post(app.callback_url().replace("/okebayar", "/snapqr"))
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    // The notify genuinely signed by the issuer, stamped `stamp`.
    let signed_at = |stamp: &str| {
        send(
            loket_snapqr::callback::sign_notify_rsa(&issuer_key, path, body.as_bytes(), stamp),
            body.clone(),
        )
    };

    // Signed with the wrong key → 401.
    let (wrong_pem, _) = loket_snapqr::sign::generate_key_pair();
    let wrong_key = loket_snapqr::sign::load_private_key(&wrong_pem).unwrap();
    let now = chrono::Utc::now();
    let fresh = loket_protocol::wib::timestamp(now);
    let forged = send(
        loket_snapqr::callback::sign_notify_rsa(&wrong_key, path, body.as_bytes(), &fresh),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    // A flipped byte in the body → 401.
    let headers =
        loket_snapqr::callback::sign_notify_rsa(&issuer_key, path, body.as_bytes(), &fresh);
    let flipped = send(headers, body.replace("Failed", "Faileb"))
        .await
        .unwrap();
    assert_eq!(flipped.status().as_u16(), 401);
    // Genuinely signed but 10 minutes old (a replay outside the window) → 401.
    let stale = loket_protocol::wib::timestamp(now - chrono::Duration::minutes(10));
    let replay = signed_at(&stale).await.unwrap();
    assert_eq!(replay.status().as_u16(), 401);
    // SNAP responses carry X-TIMESTAMP (spec §3), ISO-8601 with an offset.
    let stamp = replay
        .headers()
        .get("X-TIMESTAMP")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("X-TIMESTAMP on the answer");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&stamp).is_ok() && stamp.len() == 25,
        "{stamp}"
    );
    let text = replay.text().await.unwrap();
    assert!(text.contains("4017900"), "SNAP-style 401: {text}");
    // Genuinely signed but stamped 10 minutes ahead (a sender's clock
    // skewed forward, or a request made to be replayed later) → 401.
    let ahead = loket_protocol::wib::timestamp(now + chrono::Duration::minutes(10));
    let early = signed_at(&ahead).await.unwrap();
    assert_eq!(early.status().as_u16(), 401);
    let text = early.text().await.unwrap();
    assert!(text.contains("4017900"), "SNAP-style 401: {text}");
    // Genuinely signed and fresh, but about another merchant's payment → 400.
    let elsewhere = body.replace(
        &format!(
            r#""merchantId":"{}""#,
            loket_test_support::snapqr::MERCHANT_ID
        ),
        r#""merchantId":"SOMEONE-ELSE""#,
    );
    assert_ne!(elsewhere, body);
    let misdirected = send(
        loket_snapqr::callback::sign_notify_rsa(&issuer_key, path, elsewhere.as_bytes(), &fresh),
        elsewhere,
    )
    .await
    .unwrap();
    assert_eq!(misdirected.status().as_u16(), 400);
    let text = misdirected.text().await.unwrap();
    assert!(text.contains("4007900"), "SNAP-style 400: {text}");

    // Had the receiver published any of them before refusing it, that event
    // would be applied once the event stream is drained.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    let events = app.events(&pending.id).await;
    assert!(
        !events.iter().any(|(s, _, _)| s == "callback"),
        "nothing rejected reached the log: {events:?}"
    );
    assert_ne!(app.row(&pending.id).await.status, "failed", "{events:?}");
    app.wait_for_status(&pending.id, "success", Duration::from_secs(15))
        .await;

    // SNAP's own notify path (spec §2) is served too, verified over that
    // path: a signed "00" repeating the success is acknowledged, and the
    // same notify signed over another path is refused.
    let standard = "/v1.0/qr/qr-cpm-notify";
    let url = app.callback_url().replace("/callback/okebayar", standard);
    let success = body
        .replace(r#""06""#, r#""00""#)
        .replace("Failed", "Success");
    let post = |path: &str| {
        let mut request = http.post(&url).body(success.clone());
        for (name, value) in
            loket_snapqr::callback::sign_notify_rsa(&issuer_key, path, success.as_bytes(), &fresh)
        {
            request = request.header(name, value);
        }
        request.send()
    };
    let accepted = post(standard).await.unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    assert!(accepted.text().await.unwrap().contains("2007900"));
    assert_eq!(post(path).await.unwrap().status().as_u16(), 401);
    assert_eq!(app.row(&pending.id).await.status, "success");
}

/// A QR payment the issuer leaves pending and never notifies about
/// (scenario 102; its query reads `00` only after `pending_resolve_ms`).
async fn left_pending(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
) -> pb::Transaction {
    client
        .qr_pay(qr_pay(client_ref, 10_102, 0))
        .await
        .unwrap()
        .into_inner()
}

/// One notify the issuer signed claiming `reference` paid (`00`), as a
/// captured request: where it goes, its headers and its body.
fn signed_success_notify(
    app: &TestApp,
    reference: &str,
) -> (String, Vec<(String, String)>, String) {
    signed_success_notify_with(app, reference, "")
}

/// [`signed_success_notify`] with `extra` JSON members (each with a
/// leading comma) in its body.
fn signed_success_notify_with(
    app: &TestApp,
    reference: &str,
    extra: &str,
) -> (String, Vec<(String, String)>, String) {
    let fixture = app.snapqr.as_ref().unwrap();
    let issuer_key =
        loket_snapqr::sign::load_private_key(fixture.sim_settings.issuer_private_key.expose())
            .unwrap();
    let body = format!(
        r#"{{"originalPartnerReferenceNo":"{reference}","merchantId":"{}","latestTransactionStatus":"00","transactionStatusDesc":"Success"{extra}}}"#,
        loket_test_support::snapqr::MERCHANT_ID
    );
    let path = "/callback/snapqr";
    let stamp = loket_protocol::wib::timestamp(chrono::Utc::now());
    let headers =
        loket_snapqr::callback::sign_notify_rsa(&issuer_key, path, body.as_bytes(), &stamp);
    let url = app.callback_url().replace("/okebayar", "/snapqr");
    (url, headers, body)
}

/// Sends a captured notify once more, within `timeout`: its status and body.
async fn send_captured(
    (url, headers, body): &(String, Vec<(String, String)>, String),
    timeout: Duration,
) -> Result<(u16, String), reqwest::Error> {
    let mut request = reqwest::Client::new()
        .post(url)
        .timeout(timeout)
        .body(body.clone());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Rule 8: a signed notify whose amount cannot be read (a fraction of a
/// rupiah) still settles the payment it is about, and the payment is
/// flagged `amount_mismatch` with the reason in its event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_notify_with_an_unreadable_amount_settles_and_is_flagged() {
    let app = snap_app().await;
    let mut client = app.client_a().await;
    let pending = left_pending(&mut client, "qr-odd-amount").await;
    let captured = signed_success_notify_with(
        &app,
        &pending.provider_reference,
        r#","amount":{"value":"10102.50","currency":"IDR"}"#,
    );
    let (status, text) = send_captured(&captured, Duration::from_secs(10))
        .await
        .expect("the receiver answers");
    assert_eq!((status, text.contains("2007900")), (200, true), "{text}");
    let row = app
        .wait_for_status(&pending.id, "success", Duration::from_secs(10))
        .await;
    assert!(row.amount_mismatch, "{row:?}");
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT detail::text FROM transaction_events WHERE transaction_id = $1 AND source = 'callback'",
    )
    .bind(uuid::Uuid::parse_str(&pending.id).unwrap())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        details.iter().any(|detail| detail.contains("unreadable")),
        "{details:?}"
    );
}

/// RELIABILITY #11 and #14, for a signed provider: one genuinely signed
/// notify, captured and sent twenty times at once and once more after the
/// payment settled (each copy inside the time window), is answered as the
/// issuer expects every time, recorded once, and makes one transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_signed_notify_sent_many_times_at_once_and_replayed_is_one_transition() {
    let app = snap_app().await;
    let mut client = app.client_a().await;
    let pending = left_pending(&mut client, "qr-replayed").await;
    let captured = signed_success_notify(&app, &pending.provider_reference);
    let send = || send_captured(&captured, Duration::from_secs(10));

    let answers = futures::future::join_all((0..20).map(|_| send())).await;
    for answer in answers {
        let (status, text) = answer.expect("the receiver answers");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("2007900"), "{text}");
    }
    app.wait_for_status(&pending.id, "success", Duration::from_secs(10))
        .await;
    // The same capture again, after the payment settled.
    let (status, text) = send().await.expect("the receiver answers");
    assert_eq!((status, text.contains("2007900")), (200, true), "{text}");
    // Every copy was in the event stream before it was answered.
    wait_events_applied(&app, Duration::from_secs(10)).await;

    assert_eq!(app.transitions_into(&pending.id, "success").await, 1);
    assert_eq!(
        callback_events(&app, &pending.id).await,
        1,
        "twenty-one copies, recorded once"
    );
}

async fn callback_events(app: &TestApp, id: &str) -> usize {
    app.events(id)
        .await
        .into_iter()
        .filter(|(source, _, _)| source == "callback")
        .count()
}

/// RELIABILITY #4: the receiver made a notify durable and died before
/// answering it (a failpoint hangs it there; then it is killed and started
/// again). The issuer, never answered, sends the notify again: that copy is
/// answered as expected, and the payment moved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_notify_made_durable_but_never_answered_is_one_transition_after_the_retry() {
    let mut app = TestApp::spawn_with(TestOptions {
        snapqr: true,
        callback_failpoint: Some(loket_test_support::CallbackFailpoint::HangAfterPublish),
        ..Default::default()
    })
    .await;
    let mut client = app.client_a().await;
    let pending = left_pending(&mut client, "qr-unanswered").await;
    let captured = signed_success_notify(&app, &pending.provider_reference);
    let unanswered = send_captured(&captured, Duration::from_secs(1)).await;
    assert!(
        unanswered.as_ref().is_err_and(|error| error.is_timeout()),
        "{unanswered:?}"
    );
    // Durable before the answer: it is applied although never answered.
    app.wait_for_status(&pending.id, "success", Duration::from_secs(10))
        .await;

    app.restart_callback(None).await;
    let (status, text) = send_captured(&captured, Duration::from_secs(10))
        .await
        .expect("the restarted receiver answers");
    assert_eq!((status, text.contains("2007900")), (200, true), "{text}");
    // The retry was in the event stream before it was answered.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    assert_eq!(app.transitions_into(&pending.id, "success").await, 1);
    assert_eq!(
        callback_events(&app, &pending.id).await,
        1,
        "the retry was a duplicate"
    );
}

/// A payment cancelled before the issuer's (delayed) notify: the issuer
/// notifies `05`, cancelled, as the cancel made it (scenario 104: twice).
/// That is our own cancel, which is a transaction of its own: the payment
/// keeps `success` and is not parked in review, and the notify is in its
/// history with why nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_payments_late_notify_of_its_cancel_changes_nothing() {
    let app = snap_app().await;
    let sim = app.snapqr.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    let payment = client
        .qr_pay(qr_pay("qr-cancel-before-notify", 30_104, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payment.status(), pb::TransactionStatus::Success);
    let cancel = client
        .qr_cancel(qr_cancel("cancel-before-notify", &payment.id, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cancel.status(),
        pb::TransactionStatus::Success,
        "{cancel:?}"
    );

    eventually(
        "both notifies delivered",
        Duration::from_secs(10),
        || async { sim.notifies_for(&payment.provider_reference).acknowledged >= 2 },
    )
    .await;
    wait_events_applied(&app, Duration::from_secs(10)).await;
    let got = client
        .get_transaction(by_id(&payment.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status(), pb::TransactionStatus::Success, "{got:?}");
    assert_eq!(app.transitions_into(&payment.id, "needs_review").await, 0);
    assert_eq!(
        callback_events(&app, &payment.id).await,
        1,
        "one notify, sent twice"
    );
    let cancelled_by: Option<String> = sqlx::query_scalar(
        "SELECT detail->>'cancelled_by' FROM transaction_events \
         WHERE transaction_id = $1::uuid AND source = 'callback'",
    )
    .bind(&payment.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        cancelled_by,
        Some(cancel.id),
        "the notify's event names the cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_the_same_day_refund_after_the_window_and_never_over_refund() {
    let app = snap_app().await;
    let sim = app.snapqr.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;

    let first = client
        .qr_pay(qr_pay("qr-cancel-me", 30_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    let cancel = client
        .qr_cancel(qr_cancel("cancel-1", &first.id, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        cancel.status(),
        pb::TransactionStatus::Success,
        "{cancel:?}"
    );
    assert_eq!(cancel.original_id, first.id);

    // Yesterday's payment: the cancel window is closed → refund instead.
    let second = client
        .qr_pay(qr_pay("qr-refund-me", 50_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert!(sim.age_payment(&second.provider_reference, chrono::Duration::days(2)));
    let late_cancel = client
        .qr_cancel(qr_cancel("cancel-2", &second.id, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        late_cancel.status(),
        pb::TransactionStatus::Failed,
        "{late_cancel:?}"
    );
    assert_eq!(late_cancel.provider_code, "4056201");
    let refund = |client_ref: &str, amount: i64| qr_refund(client_ref, &second.id, amount, 10_000);
    let partial = client
        .qr_refund(refund("refund-1", 20_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        partial.status(),
        pb::TransactionStatus::Success,
        "{partial:?}"
    );
    assert_eq!(partial.original_id, second.id);
    let over = client
        .qr_refund(refund("refund-2", 30_001))
        .await
        .expect_err("over-refund");
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);
    assert!(over.message().contains("exceeds"), "{}", over.message());
    let rest = client
        .qr_refund(refund("refund-3", 30_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.status(), pb::TransactionStatus::Success, "{rest:?}");
    assert_eq!(sim.requests_for(&second.provider_reference).payments, 1);
}

/// Spec §2.6: a cancel aborts a payment whose outcome is still open. A
/// cancel command lost from the bus before any connector took it (purged here
/// while the connector was down) is dispatched again by the sweep; the
/// connector asks first and finds the payment still pending (`03`). That says
/// nothing about the cancel, and the journal shows it never left, so it is
/// sent: the issuer voids the payment and the cancel succeeds, sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_lost_from_the_bus_while_its_payment_is_pending_is_sent_once() {
    let mut app = TestApp::spawn_with(TestOptions {
        snapqr: true,
        snapqr_pending_resolve_ms: 600_000,
        ..Default::default()
    })
    .await;
    let sim = app.snapqr.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    let payment = left_pending(&mut client, "qr-cancel-lost").await;
    app.wait_for_status(&payment.id, "pending", Duration::from_secs(10))
        .await;

    app.snapqr.as_mut().unwrap().kill_connector();
    let cancel = client
        .qr_cancel(qr_cancel("cancel-lost-1", &payment.id, 0))
        .await
        .unwrap()
        .into_inner();
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let mut commands = js
        .get_stream(loket_protocol::subjects::COMMAND_STREAM)
        .await
        .unwrap();
    commands.purge().await.unwrap();
    assert_eq!(commands.info().await.unwrap().state.messages, 0, "lost");
    app.snapqr.as_mut().unwrap().restart_connector().await;

    let cancelled = app
        .wait_for_status(&cancel.id, "success", Duration::from_secs(30))
        .await;
    assert!(
        cancelled.dispatch_count >= 2,
        "dispatched again: {cancelled:?}"
    );
    let counts = sim.requests_for(&payment.provider_reference);
    assert_eq!(counts.cancels, 1, "{counts:?}");
    assert!(counts.queries >= 1, "asked first: {counts:?}");
    assert_eq!(counts.payments, 1, "{counts:?}");
}

/// Notify mode B (spec §4.3): the issuer first asks our callback receiver's
/// `/v1.0/access-token/b2b` for a token, signing with its RSA key, then signs
/// each notify with that token and the secret we issued. The receiver accepts
/// those notifies as verified (a 202 payment settles by its notify; a notify
/// sent before the payment's reply is acknowledged too), and neither the
/// issued secret nor our token key reaches a log line. No scheduled status
/// query runs within the test (the first is due after a minute), so only
/// the notifies can settle these payments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notify_mode_b_the_issuer_signs_in_at_our_token_endpoint_then_notifies() {
    let app = TestApp::spawn_with(TestOptions {
        snapqr: true,
        snapqr_notify_mode: loket_snapqr::NotifyMode::Hmac,
        first_check_ms: 60_000,
        ..Default::default()
    })
    .await;
    let sim = &app.snapqr.as_ref().unwrap().sim;
    let mut client = app.client_a().await;

    // 2026000, then notify 00 after a moment.
    let later = client
        .qr_pay(qr_pay("qr-b-later", 10_101, 0))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&later.id, "success", Duration::from_secs(15))
        .await;
    let log = event_log(&app, &later.id).await;
    let settled = transition_into(&log, "success");
    assert_eq!(
        (settled.source.as_str(), settled.from.as_deref()),
        ("callback", Some("pending")),
        "the verified mode-B notify took the payment out of pending: {log:#?}"
    );
    // 2026000 with notify 00 delivered before the reply (scenario 106): the
    // notify settles it, whichever of the two the reconciler applies first.
    let early = client
        .qr_pay(qr_pay("qr-b-early", 10_106, 10_000))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&early.id, "success", Duration::from_secs(15))
        .await;
    let log = event_log(&app, &early.id).await;
    assert_eq!(
        transition_into(&log, "success").source,
        "callback",
        "the verified mode-B notify settled it: {log:#?}"
    );
    for txn in [&later, &early] {
        assert_eq!(
            sim.requests_for(&txn.provider_reference).queries,
            0,
            "no status query ran"
        );
        // The issuer records our answer after the reconciler may already
        // have applied the notify.
        eventually(
            "the notify acknowledged",
            Duration::from_secs(15),
            || async { sim.notifies_for(&txn.provider_reference).acknowledged >= 1 },
        )
        .await;
        let log = sim.notifies_for(&txn.provider_reference);
        assert_eq!(log.last_http_status, Some(200), "{log:?}");
    }
    let logs = loket_test_support::logs::captured();
    for canary in [
        loket_test_support::snapqr::CANARY_NOTIFY_SECRET,
        loket_test_support::snapqr::CANARY_TOKEN_KEY,
    ] {
        assert!(!logs.contains(canary), "{canary} leaked into the logs");
    }
}
