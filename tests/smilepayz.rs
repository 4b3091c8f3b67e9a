//! End-to-end: Smilepayz v2.0 pay-ins and pay-outs through every real
//! service. Smilepayz signs callbacks over `tradeNo|timestamp` only, so a
//! callback's claimed status is confirmed by an inquiry before it can set a
//! final state. Scenarios are chosen by `amount % 1000`
//! (crates/simulators/SCENARIOS.md).

mod common;

use common::*;
use loket_protocol::{pb, TransactionKind};
use loket_test_support::{TestApp, TestOptions};
use std::time::Duration;

async fn smilepayz_app() -> TestApp {
    TestApp::spawn_with(TestOptions {
        smilepayz: true,
        ..Default::default()
    })
    .await
}

/// An app whose scheduled inquiries are a minute away: within a test, only
/// the inquiry a callback asks for can settle an order.
async fn smilepayz_app_checked_only_by_callbacks() -> TestApp {
    TestApp::spawn_with(TestOptions {
        smilepayz: true,
        first_check_ms: 60_000,
        ..Default::default()
    })
    .await
}

fn pay_in(client_ref: &str, amount: i64, method: &str, wait_ms: u32) -> pb::PayInRequest {
    pb::PayInRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        method: method.into(),
        wait_ms,
        ..Default::default()
    }
}

/// Issue 5 item 1. No scheduled inquiry runs within the test, so the
/// inquiry that settles the pay-in is the one its callback asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_in_paid_by_callback_confirmed_by_inquiry_and_pay_in_expiry() {
    let app = smilepayz_app_checked_only_by_callbacks().await;
    let sim = &app.smilepayz.as_ref().unwrap().sim;
    let mut client = app.client_a().await;

    let created = client
        .pay_in(pay_in("in-1", 50_000, "QRIS", 10_000))
        .await
        .unwrap()
        .into_inner();
    let payment = created.payment.clone().expect("instructions for the payer");
    assert!(!payment.qr_string.is_empty(), "a QRIS string: {payment:?}");
    assert!(payment.expires_at.is_some());
    app.wait_for_status(&created.id, "success", Duration::from_secs(15))
        .await;
    let log = event_log(&app, &created.id).await;
    let callbacks = callbacks_in(&log);
    assert_eq!(callbacks.len(), 1, "the callback arrived: {log:#?}");
    let callback = callbacks[0];
    assert_eq!(
        (callback.claimed.as_deref(), callback.action.as_deref()),
        (Some("success"), Some("status_check")),
        "it claimed success and only asked for an inquiry: {log:#?}"
    );
    assert!(
        callback.from == callback.to && callback.to.as_deref() != Some("success"),
        "the callback itself changed nothing: {log:#?}"
    );
    // The inquiry the callback asked for, answered after it, settled it.
    let settled = transition_into(&log, "success");
    assert!(
        settled.answers(&created.id, callback),
        "the inquiry the callback asked for made the transition: {log:#?}"
    );
    let position = |event: &LoggedEvent| log.iter().position(|e| e == event);
    assert!(position(callback) < position(settled), "{log:#?}");
    // Every inquiry made was one the callback asked for; none was scheduled.
    let inquiries: Vec<&LoggedEvent> = log.iter().filter(|e| e.source == "status_check").collect();
    assert!(
        inquiries.iter().all(|e| e.answers(&created.id, callback)),
        "{log:#?}"
    );
    assert!(
        sim.requests_for(&created.provider_reference).status_checks >= inquiries.len(),
        "the simulator answered those inquiries"
    );

    let expiring = client
        .pay_in(pay_in("in-2", 50_001, "BCA", 10_000))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !expiring.payment.as_ref().unwrap().va_number.is_empty(),
        "a VA number"
    );
    let expired = app
        .wait_for_status(&expiring.id, "failed", Duration::from_secs(15))
        .await;
    let reason =
        format!("{:?} {:?}", expired.provider_code, expired.provider_message).to_lowercase();
    assert!(
        reason.contains("expired"),
        "failed with reason expired: {reason}"
    );
}

/// A pay-in created without a method sends its payer to Smilepayz's hosted
/// page, where the payer picks one. Once paid, the method Smilepayz's
/// inquiry names is recorded beside the page's URL, and the API (and with
/// it `loketctl get`) shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hosted_page_pay_in_records_the_method_its_payer_chose() {
    let app = smilepayz_app_checked_only_by_callbacks().await;
    let sim = &app.smilepayz.as_ref().unwrap().sim;
    let mut client = app.client_a().await;

    let created = client
        .pay_in(pay_in("in-hosted", 50_000, "", 10_000))
        .await
        .unwrap()
        .into_inner();
    let page = created.payment.clone().expect("the hosted page");
    assert!(!page.payment_url.is_empty(), "{page:?}");
    assert!(page.method.is_empty(), "no method chosen yet: {page:?}");
    assert!(created.method.is_empty(), "none requested: {created:?}");
    app.wait_for_status(&created.id, "success", Duration::from_secs(15))
        .await;
    let chosen = sim
        .order(&created.provider_reference)
        .expect("the simulator's order")
        .payment_method;
    assert!(!chosen.is_empty(), "the simulated payer chose a method");
    // Only an inquiry names the method: the one that settled the pay-in.
    let log = event_log(&app, &created.id).await;
    assert_eq!(transition_into(&log, "success").source, "status_check");

    let paid = client
        .get_transaction(by_id(&created.id))
        .await
        .unwrap()
        .into_inner();
    let payment = paid.payment.clone().expect("the payment instructions");
    assert_eq!(payment.method, chosen, "{paid:?}");
    assert_eq!(paid.method, chosen, "the transaction's method too");
    assert_eq!(
        payment.payment_url, page.payment_url,
        "the page's URL stays"
    );
    assert_eq!(payment.expires_at, page.expires_at);
    let view = loket_cli::output::TransactionView::from_pb(&paid);
    assert_eq!(view.method.as_deref(), Some(chosen.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_out_success_failure_insufficient_balance_and_idempotency() {
    let app = smilepayz_app().await;
    let sim = app.smilepayz.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;

    let ok = client
        .pay_out(pay_out("out-1", 100_000, 0))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .pay_out(pay_out("out-1", 100_000, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.id, again.id, "same client_ref → same transaction");
    app.wait_for_status(&ok.id, "success", Duration::from_secs(15))
        .await;
    assert_eq!(sim.money_requests_for(&ok.provider_reference), 1);

    let refused = client
        .pay_out(pay_out("out-2", 100_002, 0))
        .await
        .unwrap()
        .into_inner();
    let refused_row = app
        .wait_for_status(&refused.id, "failed", Duration::from_secs(15))
        .await;
    // The inquiry reports the order's status word: FAILED, with its meaning.
    assert_eq!(refused_row.provider_code.as_deref(), Some("FAILED"));
    let shown = client
        .get_transaction(by_id(&refused.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.provider_code, "FAILED");
    let meaning = shown.explanation.expect("explained");
    assert!(meaning.in_catalogue, "{meaning:?}");
    assert_eq!(meaning.code, "FAILED", "{meaning:?}");
    assert_eq!(meaning.outcome(), pb::Outcome::Failed, "{meaning:?}");
    assert_eq!(meaning.category, "business", "{meaning:?}");
    assert!(!meaning.merchant_message_en.is_empty(), "{meaning:?}");
    assert!(!meaning.merchant_message_id.is_empty(), "{meaning:?}");
    assert_eq!(sim.money_requests_for(&refused.provider_reference), 1);

    sim.set_payout_balance(0);
    let broke = client
        .pay_out(pay_out("out-3", 100_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    let broke = app
        .wait_for_status(&broke.id, "failed", Duration::from_secs(15))
        .await;
    assert_eq!(broke.provider_code.as_deref(), Some("4009103"));
    let shown = client
        .get_transaction(by_id(&broke.id.to_string()))
        .await
        .unwrap()
        .into_inner();
    let explanation = shown.explanation.expect("explained");
    assert_eq!(explanation.category, "balance", "{explanation:?}");
}

/// Issue 5 item 3. No scheduled inquiry runs within the test, so the
/// inquiry that fails the pay-out is the one the lying callback asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_callback_claiming_success_for_a_failed_order_stays_failed() {
    let app = smilepayz_app_checked_only_by_callbacks().await;
    let sim = app.smilepayz.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    let txn = client
        .pay_out(pay_out("out-lie", 100_004, 0))
        .await
        .unwrap()
        .into_inner();
    eventually(
        "the lying callback was delivered",
        Duration::from_secs(10),
        || async { sim.callbacks_for(&txn.provider_reference).acknowledged >= 1 },
    )
    .await;
    let delivered = sim.callbacks_for(&txn.provider_reference);
    assert!(
        delivered.attempts.iter().all(|a| a.status == "SUCCESS"),
        "the callback claimed SUCCESS: {delivered:?}"
    );
    // The callback is logged, and the inquiry it asked for is answered
    // and applied after it.
    let log = wait_callback_checks_answered(&app, &txn.id, Duration::from_secs(15)).await;
    let callbacks = callbacks_in(&log);
    assert_eq!(callbacks.len(), 1, "{log:#?}");
    let callback = callbacks[0];
    assert_eq!(
        (callback.claimed.as_deref(), callback.action.as_deref()),
        (Some("success"), Some("status_check")),
        "{log:#?}"
    );
    let failed = transition_into(&log, "failed");
    assert!(
        failed.answers(&txn.id, callback),
        "the inquiry decides: {log:#?}"
    );
    assert_eq!(
        app.transitions_into(&txn.id, "success").await,
        0,
        "{log:#?}"
    );
    let row = app.row(&txn.id).await;
    assert_eq!(row.status, "failed", "the inquiry decides");
    assert_eq!(row.provider_code.as_deref(), Some("FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_and_stale_callback_signatures_are_rejected_and_duplicates_collapse() {
    let app = smilepayz_app().await;
    let fixture = app.smilepayz.as_ref().unwrap();
    let mut client = app.client_a().await;

    // Delivered twice (scenario 005), each copy with a fresh timestamp and
    // signature: both are acknowledged, the second is recognised as a
    // duplicate: one callback row, one transition.
    let twice = client
        .pay_in(pay_in("in-dup", 60_005, "QRIS", 0))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&twice.id, "success", Duration::from_secs(15))
        .await;
    eventually(
        "both deliveries answered",
        Duration::from_secs(10),
        || async {
            fixture
                .sim
                .callbacks_for(&twice.provider_reference)
                .acknowledged
                >= 2
        },
    )
    .await;
    let sent = fixture.sim.callbacks_for(&twice.provider_reference);
    assert_eq!(
        (sent.deliveries, sent.acknowledged),
        (2, 2),
        "the simulator sent the callback twice: {sent:?}"
    );
    // Both copies were in the event stream before they were answered.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    let log = event_log(&app, &twice.id).await;
    assert_eq!(
        callbacks_in(&log).len(),
        1,
        "two deliveries of one callback, recorded once: {log:#?}"
    );
    assert_eq!(app.transitions_into(&twice.id, "success").await, 1);

    // A pending pay-in (scenario 003 never settles) and forged callbacks for it.
    let pending = client
        .pay_in(pay_in("in-forged", 60_003, "QRIS", 10_000))
        .await
        .unwrap()
        .into_inner();
    let trade_no = pending.provider_trace.clone();
    assert!(!trade_no.is_empty(), "the provider's tradeNo");
    let body = format!(
        r#"{{"orderNo":"{}","tradeNo":"{trade_no}","merchantId":"{}","merchantName":"loket","paymentMethod":"QRIS","status":"SUCCESS","money":{{"currency":"IDR","amount":60003}},"transactionTime":"2026-11-21T10:00:00"}}"#,
        pending.provider_reference,
        loket_test_support::smilepayz::MERCHANT_ID
    );
    let url = app.callback_url().replace("/okebayar", "/smilepayz");
    let http = reqwest::Client::new();
    let post = |timestamp: String, signature: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .header("X-TIMESTAMP", timestamp)
            .header("X-SIGNATURE", signature)
            .body(body.clone())
            .send()
    };
    let style = loket_smilepayz::TimestampStyle::default();
    let now = chrono::Utc::now();
    let platform =
        loket_smilepayz::sign::load_private_key(&fixture.platform_private_key_pem).unwrap();
    let (other_pem, _) = loket_smilepayz::sign::generate_key_pair();
    let other = loket_smilepayz::sign::load_private_key(&other_pem).unwrap();
    let sign_with = |key, timestamp: &str| {
        let message = loket_smilepayz::sign::callback_string_to_sign(
            loket_smilepayz::CallbackRecipe::TradeNoTimestamp,
            &trade_no,
            timestamp,
            body.as_bytes(),
        );
        loket_smilepayz::sign::sign(key, &message)
    };
    let fresh = loket_smilepayz::sign::timestamp(style, now);
    let forged = post(fresh.clone(), sign_with(&other, &fresh))
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    assert_ne!(
        forged.text().await.unwrap(),
        "SUCCESS",
        "Smilepayz retries anything but SUCCESS"
    );
    let old = loket_smilepayz::sign::timestamp(style, now - chrono::Duration::minutes(10));
    let stale = post(old.clone(), sign_with(&platform, &old)).await.unwrap();
    assert_eq!(stale.status().as_u16(), 400);
    let ahead = loket_smilepayz::sign::timestamp(style, now + chrono::Duration::minutes(10));
    let early = post(ahead.clone(), sign_with(&platform, &ahead))
        .await
        .unwrap();
    assert_eq!(early.status().as_u16(), 400, "stamped 10 minutes ahead");

    // Had the receiver published either before refusing it, that event
    // would be applied once the event stream is drained.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    let row = app.row(&pending.id).await;
    assert_eq!(row.status, "pending", "nothing changed");
    assert!(!app
        .events(&pending.id)
        .await
        .iter()
        .any(|(s, _, _)| s == "callback"));
}

/// Issue 5 item 4, the simulator's retry after a wrong answer: the receiver
/// made the callback durable and then never answered it (a failpoint hangs
/// it there), so the simulator, without its `SUCCESS`, sends the callback
/// again (a fresh timestamp and signature); the restarted receiver answers
/// that retry `SUCCESS`, and it is recognised as a duplicate: one callback
/// row, one inquiry asked for, one transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulators_retry_after_an_unanswered_callback_is_a_duplicate() {
    let mut app = TestApp::spawn_with(TestOptions {
        smilepayz: true,
        first_check_ms: 60_000,
        callback_failpoint: Some(loket_test_support::CallbackFailpoint::HangAfterPublish),
        ..Default::default()
    })
    .await;
    let sim = app.smilepayz.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    let txn = client
        .pay_in(pay_in("in-retried", 70_000, "QRIS", 10_000))
        .await
        .unwrap()
        .into_inner();
    // Durable before the answer: applied although never answered.
    wait_callback_checks_answered(&app, &txn.id, Duration::from_secs(15)).await;
    app.wait_for_status(&txn.id, "success", Duration::from_secs(15))
        .await;
    assert_eq!(
        sim.callbacks_for(&txn.provider_reference).acknowledged,
        0,
        "the hung receiver answered nothing"
    );

    app.restart_callback(None).await;
    eventually(
        "a retry answered SUCCESS",
        Duration::from_secs(15),
        || async { sim.callbacks_for(&txn.provider_reference).acknowledged >= 1 },
    )
    .await;
    let sent = sim.callbacks_for(&txn.provider_reference);
    assert_eq!(sent.deliveries, 1, "one callback: {sent:?}");
    assert!(sent.attempts.len() >= 2, "sent more than once: {sent:?}");
    assert!(!sent.attempts[0].acknowledged, "{sent:?}");
    assert!(
        sent.attempts.iter().all(|a| a.trade_no == sent.attempts[0].trade_no
            && a.status == sent.attempts[0].status),
        "every attempt is the same callback: {sent:?}"
    );

    // The acknowledged retry was in the event stream before it was answered.
    wait_events_applied(&app, Duration::from_secs(10)).await;
    let log = event_log(&app, &txn.id).await;
    assert_eq!(
        callbacks_in(&log).len(),
        1,
        "{} attempts, recorded once: {log:#?}",
        sent.attempts.len()
    );
    assert_eq!(
        log.iter().filter(|e| e.source == "status_check").count(),
        1,
        "one inquiry asked for: {log:#?}"
    );
    assert_eq!(app.transitions_into(&txn.id, "success").await, 1);
}

/// Pay-outs the platform accepted and whose answer we never read: `010`
/// answers 502 (channel timeout), `011` only after our timeout. The
/// platform settles them well after our timeout has fired, so no callback
/// and no inquiry can settle them first: each goes `unknown` (never
/// `failed`), an inquiry settles it, and the platform saw one pay-out per
/// pay-out made, under its orderNo and in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_out_timeout_after_acceptance_is_unknown_then_inquiry_final_with_one_pay_out() {
    use loket_test_support::smilepayz::PROVIDER_TIMEOUT_MS;

    let app = TestApp::spawn_with(TestOptions {
        smilepayz: true,
        smilepayz_settle_delay_ms: PROVIDER_TIMEOUT_MS * 2,
        ..Default::default()
    })
    .await;
    let sim = app.smilepayz.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    for (name, amount) in [("out-502", 100_010), ("out-slow", 100_011)] {
        let txn = client
            .pay_out(pay_out(name, amount, 0))
            .await
            .unwrap()
            .into_inner();
        app.wait_for_status(&txn.id, "success", Duration::from_secs(20))
            .await;
        let log = event_log(&app, &txn.id).await;
        assert_unknown_then_settled_by_a_check(&log, name);
        commands_all_handled(&app).await;
        let counts = sim.requests_for(&txn.provider_reference);
        assert_eq!(
            counts.payments, 1,
            "{name}: exactly one pay-out: {counts:?}"
        );
        assert!(counts.status_checks >= 1, "{name}: inquired: {counts:?}");
    }
    assert_one_money_request_per_transaction(
        &app,
        "pay-outs whose answer we never read",
        &[TransactionKind::PayOut],
        sim.money_requests_total(),
    )
    .await;
}

/// RELIABILITY #9 for pay-outs: during a 5xx storm (the platform's front
/// proxy answers every call with an error page) a pay-out goes `unknown`,
/// never `failed`, and is never sent again; after the storm the inquiry
/// settles it from the platform's ledger: `failed` (order not found, once
/// that has lasted past the grace period) when nothing was carried out,
/// `success` when the platform carried it out behind the error page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5xx_storm_leaves_pay_outs_unknown_until_the_inquiry_settles_them() {
    let app = smilepayz_app().await;
    let sim = app.smilepayz.as_ref().unwrap().sim.clone();
    let mut client = app.client_a().await;
    for (name, after_commit, settles_as, pay_outs) in [
        ("storm-lost", false, "failed", 0),
        ("storm-done", true, "success", 1),
    ] {
        sim.outage()
            .start(loket_simulators::Outage {
                status: 503,
                // Longer than the 5 s the test may wait for `unknown`, so
                // the storm is still on when it looks.
                for_ms: 6_000,
                after_commit,
            })
            .unwrap();
        let txn = client
            .pay_out(pay_out(name, 100_000, 0))
            .await
            .unwrap()
            .into_inner();
        app.wait_for_status(&txn.id, "unknown", Duration::from_secs(5))
            .await;
        assert!(
            sim.outage().state().active,
            "{name}: unknown during the storm"
        );
        app.wait_for_status(&txn.id, settles_as, Duration::from_secs(30))
            .await;
        let events = app.events(&txn.id).await;
        let reached: Vec<_> = events.iter().filter_map(|(_, _, to)| to.clone()).collect();
        assert_eq!(
            reached.iter().filter(|to| to.as_str() == "failed").count(),
            usize::from(settles_as == "failed"),
            "{name}: failed only at the end, from the ledger: {reached:?}"
        );
        assert_eq!(
            sim.money_requests_for(&txn.provider_reference),
            pay_outs,
            "{name}: never sent again"
        );
    }
}

/// Money-safety rules 1 and 4 for a settled transaction. loket failed a
/// pay-out for "no record" (its request met a 502 from Smilepayz's front
/// proxy, and the inquiries found no order past the grace); then Smilepayz
/// did take an order under that orderNo (its "no record" was wrong), paid it
/// out and sent its signed SUCCESS callback. The one inquiry that callback
/// asks for meets another 502. The callback was acknowledged, so Smilepayz
/// will not send it again, and a settled transaction has no scheduled
/// inquiries: the pay-out is parked for review, naming the callback's claim,
/// instead of staying `failed` while the money went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_claiming_success_for_a_failed_pay_out_goes_to_review_when_its_inquiry_cannot_answer(
) {
    use loket_simulators::common::Outage;
    use loket_smilepayz::{sign, wire};
    use loket_test_support::smilepayz::{CANARY_MERCHANT_SECRET, MERCHANT_ID};
    let proxy_502 = Outage {
        status: 502,
        for_ms: 60_000,
        after_commit: false,
    };
    let app = smilepayz_app().await;
    let fixture = app.smilepayz.as_ref().unwrap();
    let sim = fixture.sim.clone();
    let mut client = app.client_a().await;

    sim.outage().start(proxy_502).unwrap();
    let txn = client
        .pay_out(pay_out("out-disputed", 100_000, 0))
        .await
        .unwrap()
        .into_inner();
    app.wait_for_status(&txn.id, "unknown", Duration::from_secs(10))
        .await;
    sim.outage().end();
    let failed = app
        .wait_for_status(&txn.id, "failed", Duration::from_secs(40))
        .await;
    assert_eq!(failed.provider_code.as_deref(), Some("NOT_FOUND"));

    // Smilepayz takes an order under loket's orderNo after all and pays it.
    let order_no = txn.provider_reference.clone();
    let body = wire::to_body(&wire::PayOutRequest {
        order_no: order_no.clone(),
        purpose: "Disbursement".into(),
        merchant: wire::Merchant {
            merchant_id: MERCHANT_ID.into(),
            merchant_name: "loket".into(),
        },
        money: wire::money_to_wire(loket_protocol::Money::idr(100_000)),
        payment_method: "BCA".into(),
        cash_account: "1234567890".into(),
        receiver: None,
        callback_url: Some(app.callback_url().replace("/okebayar", "/smilepayz")),
    });
    let key = sign::load_private_key(&fixture.merchant_private_key_pem).unwrap();
    let ts = sign::timestamp(Default::default(), chrono::Utc::now());
    let signature = sign::sign_request(&key, &ts, CANARY_MERCHANT_SECRET, &body);
    let reply = reqwest::Client::new()
        .post(format!("{}{}", fixture.sim_url, wire::PAY_OUT_PATH))
        .header("content-type", wire::CONTENT_TYPE_JSON)
        .header(wire::HEADER_TIMESTAMP, ts)
        .header(wire::HEADER_SIGNATURE, signature)
        .header(wire::HEADER_PARTNER_ID, MERCHANT_ID)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // The front proxy fails again, over the callback's one inquiry.
    sim.outage().start(proxy_502).unwrap();
    let parked = app
        .wait_for_status(&txn.id, "needs_review", Duration::from_secs(20))
        .await;
    sim.outage().end();
    assert_eq!(
        sim.order(&order_no).map(|order| order.status).as_deref(),
        Some("SUCCESS")
    );
    assert!(sim.callbacks_for(&order_no).acknowledged >= 1);
    let reason = parked.review_reason.unwrap_or_default();
    assert!(
        reason.contains("a callback claimed success for this failed transaction"),
        "{reason}"
    );
    let events = app.events(&txn.id).await;
    let callback = events
        .iter()
        .position(|(source, _, _)| source == "callback")
        .expect("the callback is in the event log");
    assert!(
        events[callback..].iter().any(
            |(source, _, to)| source == "status_check" && to.as_deref() == Some("needs_review")
        ),
        "{events:?}"
    );
}
