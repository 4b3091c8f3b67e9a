//! End-to-end: an operator settles a transaction parked in `needs_review`
//! with `loketctl review settle`. The decision goes over the bus to the
//! reconciler, which applies it once and publishes it, so the client's
//! `GetTransaction` and `WatchTransactions` see the new state; `loketctl
//! review list` shows the transaction while it waits and not after.

mod common;

use common::*;
use futures::StreamExt as _;
use loket_cli::cli::SettleArgs;
use loket_cli::review;
use loket_cli::CliError;
use loket_protocol::pb::{self, bus};
use loket_protocol::{subjects, Provider, TransactionStatus};
use loket_test_support::TestApp;
use prost::Message as _;
use std::time::Duration;

const REASON: &str = "OkeBayar confirmed by phone: never charged (204), ticket 4711";

/// A status check answering success for `id`, which failed: two final
/// reports contradict each other, so the reconciler parks it for review.
async fn contradict_with_success(app: &TestApp, id: &str) {
    let event_id = format!("chk:{id}:late");
    let event = bus::ResultEvent {
        event_id: event_id.clone(),
        transaction_id: id.into(),
        provider: Provider::OkeBayar.as_str().into(),
        operation: bus::Operation::StatusCheck as i32,
        outcome: pb::Outcome::Success as i32,
        provider_code: "000".into(),
        serial_number: "SN-LATE".into(),
        ..Default::default()
    };
    let nats = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    loket_runtime::bus::publish_durable(
        &js,
        subjects::result(Provider::OkeBayar),
        loket_runtime::bus::headers(
            &format!("res:{event_id}"),
            &loket_runtime::telemetry::TraceContext::new_root(),
            id,
        ),
        event.encode_to_vec(),
    )
    .await
    .unwrap();
}

/// `loketctl review settle <id> --status <status>` as the binary runs it,
/// taken on the history as it stands: checked, then settled.
async fn settle(
    app: &TestApp,
    id: &str,
    status: TransactionStatus,
) -> Result<review::SettledView, CliError> {
    settle_declaring(app, id, status, false).await
}

/// [`settle`], declaring the serial number the transaction holds void
/// (`--void-serial-number`) when `void_serial_number`.
async fn settle_declaring(
    app: &TestApp,
    id: &str,
    status: TransactionStatus,
    void_serial_number: bool,
) -> Result<review::SettledView, CliError> {
    let transaction_id = id.parse().unwrap();
    let args = SettleArgs {
        transaction_id,
        // An unknown id has no history: any event id, it is not found.
        seen_event: loket_store::newest_event(&app.pool, transaction_id, i64::MAX)
            .await
            .unwrap()
            .max(1),
        status,
        reason: REASON.into(),
        operator: "siti".into(),
        serial_number: None,
        void_serial_number,
        wait: Duration::from_secs(10),
        nats_url: Some(app.nats.url()),
    };
    let decision = review::decision(&args)?;
    review::settle(&app.pool, review::nats_url(&args)?, &decision, args.wait).await
}

/// Why settling `id` as `status` is refused (it must be).
async fn refusal(app: &TestApp, id: &str, status: TransactionStatus) -> String {
    match settle(app, id, status).await {
        Err(CliError::Refused(why)) => why,
        other => panic!("settling {id} {status} was not refused: {other:?}"),
    }
}

/// Whether `loketctl review list` shows `id`.
async fn listed(app: &TestApp, id: &str) -> Option<review::InReviewView> {
    review::list(&app.pool, 1000)
        .await
        .unwrap()
        .transactions
        .into_iter()
        .find(|t| t.id == id)
}

/// The simulator's `…911` scenario, the README's quick way to see a case
/// for an operator: the provider answers `201` (failed), then its callback
/// and the status check it asks for say `000` with a serial number. The
/// contradiction parks the failed purchase for review, through the real
/// callback receiver and check, and `review list` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_the_provider_contradicts_is_listed_for_review() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let txn = bought(
        &mut client,
        purchase("review-911", "PULSA10", &scenario("911"), 10_000),
    )
    .await;
    assert_eq!(txn.status(), pb::TransactionStatus::Failed, "{txn:?}");
    assert_eq!(txn.provider_code, "201");
    let parked = app
        .wait_for_status(&txn.id, "needs_review", Duration::from_secs(15))
        .await;
    assert_eq!(parked.reviewed_from.as_deref(), Some("failed"));
    assert!(
        parked.serial_number.is_some(),
        "the check's serial number is kept as evidence: {parked:?}"
    );
    let counts = app.sim.requests_for(&txn.provider_reference);
    assert_eq!(counts.purchases, 1, "{counts:?}");
    assert!(counts.status_checks >= 1, "{counts:?}");
    let waiting = listed(&app, &txn.id).await.expect("listed while in review");
    assert_eq!(waiting.reviewed_from.as_deref(), Some("failed"));
    assert!(
        waiting
            .review_reason
            .as_deref()
            .is_some_and(|why| !why.is_empty()),
        "{waiting:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_settles_a_transaction_in_review_and_the_client_sees_it() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    // The provider refuses the number (204); then a status check reports
    // success for it.
    let txn = bought(
        &mut client,
        purchase("review-1", "PULSA10", &scenario("204"), 10_000),
    )
    .await;
    assert_eq!(txn.status(), pb::TransactionStatus::Failed, "{txn:?}");
    contradict_with_success(&app, &txn.id).await;
    let parked = app
        .wait_for_status(&txn.id, "needs_review", Duration::from_secs(10))
        .await;
    let waiting = listed(&app, &txn.id).await.expect("listed while in review");
    assert_eq!(
        (
            waiting.client.as_str(),
            waiting.kind.as_str(),
            waiting.provider.as_str()
        ),
        ("client-a", "prepaid_purchase", "okebayar")
    );
    assert_eq!(waiting.reviewed_from.as_deref(), Some("failed"));
    assert_eq!(waiting.review_reason, parked.review_reason);
    // The queue is read through its partial index, not by scanning every
    // transaction (with sequential scans off, as on loketctl's connections).
    let mut connection = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *connection)
        .await
        .unwrap();
    let plan: serde_json::Value = sqlx::query_scalar(&format!(
        "EXPLAIN (FORMAT JSON) {}",
        review::IN_REVIEW_QUERY
    ))
    .bind(1000_i64)
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    assert!(
        plan.to_string().contains("transactions_in_review"),
        "{plan}"
    );
    connection.rollback().await.unwrap();

    let mut watch = client
        .watch_transactions(pb::WatchTransactionsRequest {
            transaction_id: txn.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), pb::TransactionStatus::NeedsReview);
    // Under review, the last provider code's advice (here: the number is
    // wrong, tell the merchant it failed) is not offered: the provider also
    // reported success, and which holds is the operator's to find out.
    assert_eq!(first.provider_code, "204", "{first:?}");
    assert!(first.explanation.is_none(), "{first:?}");

    // Mistakes are named before anything is published: a transaction not in
    // review, an unknown id.
    let done = bought(
        &mut client,
        purchase("review-2", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    let refused = refusal(&app, &done.id, TransactionStatus::Failed).await;
    assert!(
        refused.ends_with("not in needs_review (status success)"),
        "{refused}"
    );
    wait_events_applied(&app, Duration::from_secs(5)).await;
    let log = event_log(&app, &done.id).await;
    assert!(
        log.iter().all(|e| e.source != "operator"),
        "nothing reached the reconciler: {log:#?}"
    );
    let unknown = settle(
        &app,
        &uuid::Uuid::new_v4().to_string(),
        TransactionStatus::Failed,
    )
    .await
    .unwrap_err();
    assert!(matches!(unknown, CliError::NotFound(_)), "{unknown}");

    // The late success's serial number is on the parked transaction, the
    // provider's evidence of delivery: failed over it is refused.
    assert_eq!(parked.serial_number.as_deref(), Some("SN-LATE"));
    let refused = refusal(&app, &txn.id, TransactionStatus::Failed).await;
    assert!(refused.contains("evidence of delivery"), "{refused}");

    // The operator confirmed with OkeBayar that nothing was delivered or
    // charged, and declares the serial number void.
    let settled = settle_declaring(&app, &txn.id, TransactionStatus::Failed, true)
        .await
        .unwrap();
    assert_eq!(settled.found.transaction.id, txn.id);
    assert_eq!(settled.found.transaction.status, "failed");
    assert_eq!(settled.found.transaction.serial_number, None);
    assert_eq!(settled.found.reviewed_from.as_deref(), Some("failed"));
    let last = settled.found.events.last().unwrap();
    assert_eq!(
        (
            last.source.as_str(),
            last.from_status.as_deref(),
            last.to_status.as_deref()
        ),
        ("operator", Some("needs_review"), Some("failed"))
    );
    assert_eq!(
        (last.operator.as_deref(), last.reason.as_deref()),
        (Some("siti"), Some(REASON))
    );

    // The client hears it and reads it.
    let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch hears the decision")
        .unwrap()
        .unwrap();
    assert_eq!(update.status(), pb::TransactionStatus::Failed, "{update:?}");
    let read = client
        .get_transaction(by_id(&txn.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.status(), pb::TransactionStatus::Failed);
    // Settled as the kept code says (204, failed): its explanation is back.
    let explained = |explanation: Option<&pb::CodeExplanation>| {
        explanation.map(|e| (e.code.clone(), e.outcome))
    };
    let failed_204 = Some(("204".to_string(), pb::Outcome::Failed as i32));
    assert_eq!(explained(read.explanation.as_ref()), failed_204, "{read:?}");
    assert_eq!(explained(update.explanation.as_ref()), failed_204);
    assert_eq!(listed(&app, &txn.id).await, None, "no longer in review");

    // Once settled, nothing an operator decides moves it again.
    let again = refusal(&app, &txn.id, TransactionStatus::Success).await;
    assert!(
        again.ends_with("not in needs_review (status failed)"),
        "{again}"
    );
    assert_eq!(app.transitions_into(&txn.id, "failed").await, 2);
    app.assert_services_alive();
}
