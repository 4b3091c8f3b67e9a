//! End-to-end: duplicate, out-of-order, late and spoofed OkeBayar callbacks.
//! OkeBayar callbacks are unsigned: they only ever trigger a status check.

mod common;

use common::*;
use loket_protocol::pb;
use loket_test_support::{TestApp, TestOptions};
use std::time::{Duration, Instant};

/// No scheduled status check runs within the test (the first is due after a
/// minute), so every pending purchase here can only reach `success` through
/// its callbacks: each distinct one received is logged once (identical
/// copies share one event id, so the event stream and the reconciler keep
/// one of them) and asks for a status check, and the repeated, stale and
/// late ones change nothing after the first transition. The simulator's
/// callback steps are a second apart, so the stale and the late callback
/// surely reach a transaction already `success` (the test asserts it did).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_out_of_order_and_late_callbacks_make_one_transition() {
    let app = TestApp::spawn_with(TestOptions {
        first_check_ms: 60_000,
        callback_delay_ms: 1_000,
        ..TestOptions::default()
    })
    .await;
    let mut client = app.client_a().await;
    let mut txns = Vec::new();
    // (scenario, the simulator's scenario suffix, callbacks it delivers,
    // distinct ones among them, the outcome claimed by the callback that
    // comes after the final state, if one does)
    for (name, suffix, deliveries, distinct, after_final) in [
        ("duplicate", "905", 3, 1, None),
        ("out-of-order", "906", 2, 2, Some("pending")),
        ("late", "907", 1, 1, Some("success")),
        ("before-reply", "908", 1, 1, None),
    ] {
        let txn = bought(&mut client, purchase(name, "PULSA10", &scenario(suffix), 0)).await;
        txns.push((name, deliveries, distinct, after_final, txn));
    }
    for (_name, _, _, _, txn) in &txns {
        app.wait_for_status(&txn.id, "success", Duration::from_secs(20))
            .await;
    }
    // Every delivery acknowledged, so every one is in the event stream.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (name, deliveries, _, _, txn) in &txns {
        loop {
            let sent = app.sim.callbacks_for(&txn.provider_reference);
            if sent.acknowledged >= *deliveries {
                assert_eq!(
                    (sent.deliveries, sent.acknowledged),
                    (*deliveries, *deliveries),
                    "{name}: {sent:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {sent:?}; expected {deliveries} acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Once the event stream is drained every delivery has been applied:
    // each distinct callback logged once, identical copies not again.
    wait_events_applied(&app, Duration::from_secs(15)).await;
    for (name, _, distinct, _, txn) in &txns {
        let logged = callbacks_in(&event_log(&app, &txn.id).await).len();
        assert_eq!(
            logged, *distinct,
            "{name}: {distinct} distinct callbacks, each logged once"
        );
    }
    // The status checks those callbacks asked for have been answered and
    // applied too; nothing they reported moved a final state.
    for (name, _, distinct, after_final, txn) in &txns {
        let log = wait_callback_checks_answered(&app, &txn.id, Duration::from_secs(15)).await;
        let callbacks = callbacks_in(&log);
        assert_eq!(callbacks.len(), *distinct, "{name}: {log:#?}");
        if let Some(claimed) = after_final {
            let late = callbacks
                .iter()
                .find(|c| c.claimed.as_deref() == Some(*claimed))
                .unwrap_or_else(|| panic!("{name}: a callback claiming {claimed}: {log:#?}"));
            assert_eq!(
                late.from.as_deref(),
                Some("success"),
                "{name}: the {claimed} callback came after the final state: {log:#?}"
            );
        }
        // A callback reaching the transaction already `success` claims
        // nothing against it (these scenarios claim success or pending), so
        // it asks for no check; one reaching it before, asks.
        for callback in &callbacks {
            let expected = if callback.from.as_deref() == Some("success") {
                "none"
            } else {
                "status_check"
            };
            assert_eq!(
                callback.action.as_deref(),
                Some(expected),
                "{name}: {log:#?}"
            );
        }
        let asked = callbacks
            .iter()
            .filter(|c| c.action.as_deref() == Some("status_check"))
            .count();
        let checks = app.sim.requests_for(&txn.provider_reference).status_checks;
        assert!(
            checks >= asked,
            "{name}: {checks} status checks for {asked} callbacks that asked for one"
        );
        let row = app.row(&txn.id).await;
        assert_eq!(row.status, "success", "{name}: final unchanged");
        assert_eq!(
            app.transitions_into(&txn.id, "success").await,
            1,
            "{name}: one transition to success"
        );
        assert!(
            log.iter()
                .all(|e| e.from.as_deref() != Some("success") || e.to.as_deref() == Some("success")),
            "{name}: nothing moved out of success: {log:#?}"
        );
        assert_eq!(
            app.sim.money_requests_for(&txn.provider_reference),
            1,
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spoofed_success_callback_for_a_failed_transaction_changes_nothing() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let txn = bought(
        &mut client,
        purchase("spoof-1", "PULSA10", &scenario("204"), 10_000),
    )
    .await;
    assert_eq!(txn.status(), pb::TransactionStatus::Failed);
    let checks_before = app.sim.requests_for(&txn.provider_reference).status_checks;

    let forged = format!(
        "<transaction-status><tracecode>FORGED1</tracecode><referencecode>{}</referencecode><status>000</status><serialnumber>9999-FREE-TOKEN</serialnumber></transaction-status>",
        txn.provider_reference
    );
    let response = reqwest::Client::new()
        .post(app.callback_url())
        .header("content-type", "application/xml")
        .body(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "answered as OkeBayar expects"
    );

    // The callback triggers a status check, which the provider answers with
    // the truth: the transaction failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.sim.requests_for(&txn.provider_reference).status_checks <= checks_before {
        assert!(
            Instant::now() < deadline,
            "the spoofed callback did not trigger a status check"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // That check's answer is applied after the callback is logged.
    let log = wait_callback_checks_answered(&app, &txn.id, Duration::from_secs(10)).await;
    assert_eq!(
        callbacks_in(&log).len(),
        1,
        "the callback is in the log: {log:#?}"
    );
    let row = app.row(&txn.id).await;
    assert_eq!(row.status, "failed");
    assert_eq!(
        row.provider_code.as_deref(),
        Some("204"),
        "the failure stands"
    );
    assert_ne!(row.serial_number.as_deref(), Some("9999-FREE-TOKEN"));
    assert_eq!(app.transitions_into(&txn.id, "success").await, 0);
}

/// A callback the receiver refuses is logged with why, where from and how
/// large, and nothing of its body: a body may carry a secret (a PIN echoed
/// back, say) the receiver does not know to mask, since it failed to parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_callback_is_logged_without_its_body() {
    let app = TestApp::spawn().await;
    let canary = "CANARY-CALLBACK-PIN-5521";
    let response = reqwest::Client::new()
        .post(app.callback_url())
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"userpin":"{canary}","referencecode":"not a reference!","status":"000"}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let logs = loket_test_support::logs::captured();
    let refusal = logs
        .lines()
        .find(|line| line.contains("callback rejected"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(
        refusal.contains("referencecode is not a valid reference"),
        "{refusal}"
    );
    assert!(!logs.contains(canary), "{logs}");
}
