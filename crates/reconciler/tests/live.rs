//! The reconciler against a private nats-server and PostgreSQL (from
//! `loket-test-support`): an event applied twice changes state once,
//! conflicts park for review, unsigned callbacks only trigger a status
//! check, the scheduler and the sweep publish what is due exactly once
//! across replicas, `run` consumes the stream end to end, a draining `run`
//! hands back the events it has not started, an operator's decision
//! settles a transaction in review once and nothing else, and a result
//! PostgreSQL refuses for good parks its transaction instead of being
//! retried for ever. A missing server fails the test.

use anyhow::{Context, Result};
use futures::StreamExt;
use loket_protocol::pb::{self, bus};
use loket_protocol::subjects;
use loket_protocol::TransactionStatus;
use loket_reconciler::{Applied, ApplyError, Incoming, Reconciler, Settings};
use loket_runtime::telemetry::TraceContext;
use loket_runtime::{Secret, Shutdown};
use loket_test_support::backing::Backing;
use prost::Message as _;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn settings(env: &Env) -> Settings {
    let mut settings = Settings::default();
    settings.common.nats_url = env.nats_server.url();
    settings.common.database_url = Secret::new(env.database_url.clone());
    settings.schedules.insert(
        "okebayar".into(),
        loket_reconciler::schedule::ScheduleSettings {
            delays_ms: vec![1_000, 2_000],
            unknown_first_ms: 500,
            ..Default::default()
        },
    );
    settings.tick_ms = 100;
    settings
}

type Env = Backing;

async fn env() -> Result<Env> {
    Backing::start(8, "reconciler-test").await
}

/// Inserts a transaction as the ingress would; returns its id.
async fn insert(env: &Env, status: &str, kind: &str, extra: &str) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, provider_product_code, \
         account, amount_minor, request_hash, provider_reference, dispatched_at, dispatch_count) \
         VALUES ($1, $2, $3, $4, $5, 'okebayar', 'TSEL10', 'S10', '0812', 10500, '\\x00', $6, now(), 1)",
    )
    .bind(id)
    .bind(env.client_id)
    .bind(id.to_string())
    .bind(kind)
    .bind(status)
    .bind(format!("LKT{}", id.simple()))
    .execute(&env.pool)
    .await?;
    if !extra.is_empty() {
        sqlx::query(&format!("UPDATE transactions SET {extra} WHERE id = $1"))
            .bind(id)
            .execute(&env.pool)
            .await?;
    }
    Ok(id)
}

async fn status_of(pool: &PgPool, id: Uuid) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT status FROM transactions WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// The status of `id` once it is `expected`, or the last one seen when
/// `within` has passed.
async fn status_within(
    pool: &PgPool,
    id: Uuid,
    expected: &str,
    within: Duration,
) -> Result<String> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = status_of(pool, id).await?;
        if status == expected || std::time::Instant::now() >= deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> Result<i64> {
    Ok(sqlx::query_scalar(sql).bind(id).fetch_one(pool).await?)
}

fn result_event(id: Uuid, event_id: &str, outcome: pb::Outcome, code: &str) -> bus::ResultEvent {
    bus::ResultEvent {
        event_id: event_id.into(),
        transaction_id: id.to_string(),
        provider: "okebayar".into(),
        operation: bus::Operation::PrepaidPurchase as i32,
        outcome: outcome as i32,
        provider_code: code.into(),
        serial_number: if outcome == pb::Outcome::Success {
            "SN-1".into()
        } else {
            String::new()
        },
        provider_amount: Some(pb::Money {
            minor: 10_500,
            currency: "IDR".into(),
        }),
        exchanges: vec![bus::Exchange {
            operation: "purchase".into(),
            url: "http://sim/".into(),
            request: "<userpin>***</userpin>".into(),
            response: "<status>000</status>".into(),
            http_status: 200,
            duration_ms: 12,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Copy `copy` of an unsigned OkeBayar callback about `id` claiming
/// `claim` with status `code` (each copy its own event).
fn unsigned_callback(id: Uuid, copy: u32, claim: pb::Outcome, code: &str) -> bus::CallbackEvent {
    bus::CallbackEvent {
        event_id: format!("cb:okebayar:LKT{}:{code}:{copy}", id.simple()),
        provider: "okebayar".into(),
        provider_reference: format!("LKT{}", id.simple()),
        provider_code: code.into(),
        verified: false,
        claimed_outcome: claim as i32,
        raw: format!("<status>{code}</status><copy>{copy}</copy>"),
        source_ip: "10.0.0.9".into(),
        ..Default::default()
    }
}

fn reconciler(env: &Env) -> Reconciler {
    Reconciler::new(env.pool.clone(), env.js.clone(), &settings(env))
}

#[tokio::test]
async fn an_event_applied_twice_changes_state_once() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let id = insert(&env, "received", "prepaid_purchase", "").await?;
    let mut updates = env
        .nats
        .subscribe(subjects::update(&env.client_id.to_string()))
        .await?;
    let event = result_event(id, &format!("cmd:{id}:0"), pb::Outcome::Success, "000");
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let trace = TraceContext::new_root();

    let first = reconciler
        .apply_event(&subject, &event.encode_to_vec(), &trace)
        .await?;
    assert!(
        matches!(
            first,
            Applied::Applied {
                changed: true,
                to: loket_protocol::TransactionStatus::Success,
                ..
            }
        ),
        "{first:?}"
    );
    let second = reconciler
        .apply_event(&subject, &event.encode_to_vec(), &trace)
        .await?;
    assert_eq!(
        second,
        Applied::Duplicate {
            transaction_id: Some(id)
        }
    );

    assert_eq!(status_of(&env.pool, id).await?, "success");
    let sql_events = "SELECT count(*) FROM transaction_events WHERE transaction_id = $1";
    assert_eq!(count(&env.pool, sql_events, id).await?, 1, "one event row");
    assert_eq!(
        count(
            &env.pool,
            "SELECT count(*) FROM provider_exchanges WHERE transaction_id = $1",
            id
        )
        .await?,
        1
    );
    assert_eq!(
        count(
            &env.pool,
            "SELECT count(*) FROM applied_events WHERE transaction_id = $1",
            id
        )
        .await?,
        1
    );
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(row.serial_number.as_deref(), Some("SN-1"));
    assert!(row.finalized_at.is_some());
    assert!(!row.amount_mismatch);

    // The update was published (the duplicate's re-publish carries the same
    // message id; a core subscriber may see it again, with the same state).
    let update = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await?
        .context("update")?;
    assert_eq!(
        update
            .headers
            .as_ref()
            .and_then(|h| h.get(subjects::TRANSACTION_HEADER))
            .map(|v| v.to_string()),
        Some(id.to_string()),
        "published on the client's subject, the transaction in the header"
    );
    let txn = pb::Transaction::decode(update.payload)?;
    assert_eq!(txn.status, pb::TransactionStatus::Success as i32);
    assert_eq!(txn.serial_number, "SN-1");
    Ok(())
}

/// A pull batch is one database transaction, yet every event keeps its own
/// fate: two results for one transaction apply in stream order, the same
/// event twice in a batch applies once, a result for an unknown transaction
/// is dropped, an undecodable one is poison, an unsigned callback in the
/// batch only asks for a check, and a reply holding U+0000 (which
/// PostgreSQL cannot store) is written with U+FFFD instead of failing.
#[tokio::test]
async fn a_batch_applies_each_event_once_in_stream_order() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let a = insert(&env, "received", "prepaid_purchase", "").await?;
    let b = insert(&env, "received", "prepaid_purchase", "").await?;
    let c = insert(&env, "pending", "prepaid_purchase", "").await?;
    let mut updates_a = env
        .nats
        .subscribe(subjects::update(&env.client_id.to_string()))
        .await?;
    let mut checks = env.nats.subscribe("loket.cmd.okebayar.>").await?;
    loket_runtime::bus::confirm_subscriptions(&env.nats).await?;

    let pending_a = result_event(a, "evt-a-1", pb::Outcome::Pending, "002");
    let success_a = result_event(a, "evt-a-2", pb::Outcome::Success, "000");
    let mut failed_b = result_event(b, "evt-b-1", pb::Outcome::Failed, "204");
    failed_b.provider_message = "nomor salah\0".into();
    failed_b.exchanges[0].response = "<status>204</status>\0\0".into();
    let stray = result_event(Uuid::new_v4(), "evt-stray", pb::Outcome::Success, "000");
    let reference_c: String =
        sqlx::query_scalar("SELECT provider_reference FROM transactions WHERE id = $1")
            .bind(c)
            .fetch_one(&env.pool)
            .await?;
    let callback_c = bus::CallbackEvent {
        event_id: format!("cb:okebayar:{reference_c}:000"),
        provider: "okebayar".into(),
        provider_reference: reference_c,
        provider_code: "000".into(),
        verified: false,
        claimed_outcome: pb::Outcome::Success as i32,
        ..Default::default()
    };

    let result_subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let callback_subject = subjects::callback(loket_protocol::Provider::OkeBayar);
    let payloads = [
        (&result_subject, pending_a.encode_to_vec()),
        (&result_subject, success_a.encode_to_vec()),
        (&result_subject, success_a.encode_to_vec()),
        (&result_subject, failed_b.encode_to_vec()),
        (&result_subject, stray.encode_to_vec()),
        (&result_subject, b"\xff\xff garbage".to_vec()),
        (&callback_subject, callback_c.encode_to_vec()),
    ];
    let batch: Vec<Incoming<'_>> = payloads
        .iter()
        .map(|(subject, payload)| Incoming {
            subject: subject.as_str(),
            payload,
            trace: Some(TraceContext::new_root()),
        })
        .collect();
    let results = reconciler.apply_events(&batch).await;
    assert_eq!(results.len(), batch.len());
    let applied = |from, to| Applied::Applied {
        transaction_id: a,
        from,
        to,
        changed: true,
    };
    let mut results = results.into_iter();
    let mut next = || results.next().context("a result per event");
    assert_eq!(
        next()??,
        applied(TransactionStatus::Received, TransactionStatus::Pending)
    );
    assert_eq!(
        next()??,
        applied(TransactionStatus::Pending, TransactionStatus::Success)
    );
    assert_eq!(
        next()??,
        Applied::Duplicate {
            transaction_id: Some(a)
        }
    );
    assert_eq!(
        next()??,
        Applied::Applied {
            transaction_id: b,
            from: TransactionStatus::Received,
            to: TransactionStatus::Failed,
            changed: true,
        }
    );
    assert_eq!(next()??, Applied::UnknownTransaction);
    assert!(matches!(next()?, Err(ApplyError::Poison(_))));
    assert_eq!(next()??, Applied::CheckRequested { transaction_id: c });

    assert_eq!(status_of(&env.pool, a).await?, "success");
    assert_eq!(status_of(&env.pool, b).await?, "failed");
    assert_eq!(status_of(&env.pool, c).await?, "pending");
    let log: Vec<String> = sqlx::query_scalar(
        "SELECT to_status FROM transaction_events WHERE transaction_id = $1 ORDER BY id",
    )
    .bind(a)
    .fetch_all(&env.pool)
    .await?;
    assert_eq!(log, ["pending", "success"], "the log keeps stream order");
    let claims = "SELECT count(*) FROM applied_events WHERE transaction_id = $1";
    assert_eq!(count(&env.pool, claims, a).await?, 2);
    let row_b = loket_store::get(&env.pool, b).await?.context("row b")?;
    assert_eq!(
        row_b.provider_message.as_deref(),
        Some("nomor salah\u{FFFD}")
    );
    let response: String =
        sqlx::query_scalar("SELECT response FROM provider_exchanges WHERE transaction_id = $1")
            .bind(b)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(response, "<status>204</status>\u{FFFD}\u{FFFD}");

    let mut seen = Vec::new();
    while seen.last() != Some(&(pb::TransactionStatus::Success as i32)) {
        let update = tokio::time::timeout(Duration::from_secs(5), updates_a.next())
            .await?
            .context("update")?;
        let named = update
            .headers
            .as_ref()
            .and_then(|h| h.get(subjects::TRANSACTION_HEADER))
            .map(|v| v.to_string());
        let update = pb::Transaction::decode(update.payload)?;
        assert_eq!(
            named.as_deref(),
            Some(update.id.as_str()),
            "the header names the payload's transaction"
        );
        if update.id == a.to_string() {
            seen.push(update.status);
        }
    }
    assert_eq!(
        seen.first(),
        Some(&(pb::TransactionStatus::Pending as i32)),
        "updates of one transaction are published in order: {seen:?}"
    );
    let check = tokio::time::timeout(Duration::from_secs(5), checks.next())
        .await?
        .context("status check for the unsigned callback")?;
    assert_eq!(
        bus::Command::decode(check.payload)?.transaction_id,
        c.to_string()
    );
    Ok(())
}

#[tokio::test]
async fn conflicts_park_for_review_and_unsigned_callbacks_only_ask() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let trace = TraceContext::new_root();

    // A failed transaction and a spoofed success callback: a status check
    // is requested, the state does not move.
    let id = insert(&env, "received", "prepaid_purchase", "").await?;
    let failed = result_event(id, &format!("cmd:{id}:0"), pb::Outcome::Failed, "204");
    reconciler
        .apply_event(&subject, &failed.encode_to_vec(), &trace)
        .await?;
    assert_eq!(status_of(&env.pool, id).await?, "failed");

    let mut checks = env.nats.subscribe("loket.cmd.okebayar.status").await?;
    loket_runtime::bus::confirm_subscriptions(&env.nats).await?;
    let reference: String =
        sqlx::query_scalar("SELECT provider_reference FROM transactions WHERE id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await?;
    let callback = bus::CallbackEvent {
        event_id: format!("cb:okebayar:{reference}:000"),
        provider: "okebayar".into(),
        provider_reference: reference.clone(),
        provider_code: "000".into(),
        serial_number: "SPOOF".into(),
        verified: false,
        claimed_outcome: pb::Outcome::Success as i32,
        raw: "<status>000</status>".into(),
        source_ip: "10.0.0.9".into(),
        ..Default::default()
    };
    let callback_subject = subjects::callback(loket_protocol::Provider::OkeBayar);
    let applied = reconciler
        .apply_event(&callback_subject, &callback.encode_to_vec(), &trace)
        .await?;
    assert_eq!(applied, Applied::CheckRequested { transaction_id: id });
    assert_eq!(status_of(&env.pool, id).await?, "failed");
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(
        row.serial_number, None,
        "nothing from an unsigned callback is written"
    );
    let check = tokio::time::timeout(Duration::from_secs(5), checks.next())
        .await?
        .context("check")?;
    let command = bus::Command::decode(check.payload.clone())?;
    assert_eq!(command.operation, bus::Operation::StatusCheck as i32);
    assert_eq!(command.provider_reference, reference);
    let msg_id = check
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string());
    let msg_id = msg_id.context("message id")?;
    assert!(msg_id.starts_with(&format!("chk:{id}:cb:")), "{msg_id}");
    assert_eq!(
        loket_reconciler::plan::callback_of_check(&msg_id),
        Some(callback.event_id.as_str())
    );
    // The same callback again (provider retry outside the bus window):
    // nothing new is logged.
    let again = reconciler
        .apply_event(&callback_subject, &callback.encode_to_vec(), &trace)
        .await?;
    assert_eq!(
        again,
        Applied::Duplicate {
            transaction_id: Some(id)
        }
    );
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND source = 'callback'", id).await?,
        1
    );

    // The status check answers success: a real contradiction → review.
    let contradiction = result_event(
        id,
        &loket_reconciler::plan::callback_check_id(id, "x"),
        pb::Outcome::Success,
        "000",
    );
    reconciler
        .apply_event(&subject, &contradiction.encode_to_vec(), &trace)
        .await?;
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(row.status, "needs_review");
    assert!(row.review_reason.unwrap().contains("204"));
    assert_eq!(row.provider_code.as_deref(), Some("204"));

    // Unknown references and undecodable payloads.
    let stray = bus::CallbackEvent {
        provider_reference: "NOPE".into(),
        event_id: "cb:okebayar:nope".into(),
        ..callback.clone()
    };
    assert_eq!(
        reconciler
            .apply_event(&callback_subject, &stray.encode_to_vec(), &trace)
            .await?,
        Applied::UnknownTransaction
    );
    let poison = reconciler
        .apply_event(&subject, b"\xff\xff\xff garbage", &trace)
        .await;
    assert!(
        matches!(poison, Err(loket_reconciler::ApplyError::Poison(_))),
        "{poison:?}"
    );
    Ok(())
}

/// Copies of an unsigned callback (each body a little different, so each a
/// new event) cost one status check in flight per claim, and none at all
/// when the transaction is final and the claim agrees; once that check has
/// answered, the next copy asks again; each copy is recorded in the event
/// log. A transaction failed for no record at the provider is asked again
/// by any callback about it.
#[tokio::test]
async fn unsigned_callback_copies_ask_for_one_status_check_per_claim() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let callback_subject = subjects::callback(loket_protocol::Provider::OkeBayar);
    let result_subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let trace = TraceContext::new_root();
    let mut checks = env.nats.subscribe("loket.cmd.okebayar.status").await?;
    loket_runtime::bus::confirm_subscriptions(&env.nats).await?;
    // The next check published: its transaction and its message id.
    let mut next_check = async || -> Result<(String, String)> {
        let check = tokio::time::timeout(Duration::from_secs(5), checks.next())
            .await?
            .context("check")?;
        let msg_id = check
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .context("message id")?;
        Ok((bus::Command::decode(check.payload)?.transaction_id, msg_id))
    };

    let pending = insert(&env, "pending", "prepaid_purchase", "").await?;
    let settled = insert(
        &env,
        "success",
        "prepaid_purchase",
        "serial_number = 'SN-1'",
    )
    .await?;
    let apply = async |event: bus::CallbackEvent| {
        reconciler
            .apply_event(&callback_subject, &event.encode_to_vec(), &trace)
            .await
    };
    let asked = |id| Applied::CheckRequested { transaction_id: id };
    let noted = |id| Applied::CallbackNoted { transaction_id: id };

    // The first copy claiming success asks; the next two do not; a copy
    // claiming something else asks again.
    assert_eq!(
        apply(unsigned_callback(pending, 1, pb::Outcome::Success, "000")).await?,
        asked(pending)
    );
    assert_eq!(next_check().await?.0, pending.to_string());
    assert_eq!(
        apply(unsigned_callback(pending, 2, pb::Outcome::Success, "000")).await?,
        noted(pending)
    );
    assert_eq!(
        apply(unsigned_callback(pending, 3, pb::Outcome::Success, "000")).await?,
        noted(pending)
    );
    assert_eq!(
        apply(unsigned_callback(pending, 4, pb::Outcome::Failed, "204")).await?,
        asked(pending)
    );
    assert_eq!(next_check().await?.0, pending.to_string());
    // A final transaction: an agreeing claim asks nothing, a reversal asks.
    assert_eq!(
        apply(unsigned_callback(settled, 1, pb::Outcome::Success, "000")).await?,
        noted(settled)
    );
    assert_eq!(
        apply(unsigned_callback(settled, 2, pb::Outcome::Pending, "002")).await?,
        noted(settled)
    );
    assert_eq!(
        apply(unsigned_callback(settled, 3, pb::Outcome::Failed, "204")).await?,
        asked(settled)
    );
    let (checked, reversal_check) = next_check().await?;
    assert_eq!(checked, settled.to_string());
    // A flood of that reversal costs no more checks than one copy while
    // the check is on its way.
    assert_eq!(
        apply(unsigned_callback(settled, 4, pb::Outcome::Failed, "204")).await?,
        noted(settled)
    );
    // The check answers success still (the provider's records behind its
    // callback): kept. The reversal claimed once more asks again, though
    // within the window: the answer it waited for came, and said nothing
    // of the reversal.
    let stale = result_event(settled, &reversal_check, pb::Outcome::Success, "000");
    reconciler
        .apply_event(&result_subject, &stale.encode_to_vec(), &trace)
        .await?;
    assert_eq!(status_of(&env.pool, settled).await?, "success");
    assert_eq!(
        apply(unsigned_callback(settled, 5, pb::Outcome::Failed, "204")).await?,
        asked(settled)
    );
    assert_eq!(next_check().await?.0, settled.to_string());

    // Failed for a definite reason, a late "pending" changes nothing; failed
    // for no record, the provider calling back at all shows it holds the
    // transaction, so it is asked.
    let refused = insert(&env, "failed", "prepaid_purchase", "provider_code = '204'").await?;
    let not_found = insert(
        &env,
        "failed",
        "prepaid_purchase",
        "provider_code = 'NOT_FOUND'",
    )
    .await?;
    assert_eq!(
        apply(unsigned_callback(refused, 1, pb::Outcome::Pending, "002")).await?,
        noted(refused)
    );
    assert_eq!(
        apply(unsigned_callback(not_found, 1, pb::Outcome::Pending, "002")).await?,
        asked(not_found)
    );
    assert_eq!(next_check().await?.0, not_found.to_string());

    // The same copy again (the provider retrying past the bus's window):
    // a duplicate, and still nothing to ask.
    assert_eq!(
        apply(unsigned_callback(settled, 1, pb::Outcome::Success, "000")).await?,
        Applied::Duplicate {
            transaction_id: Some(settled)
        }
    );

    let more = tokio::time::timeout(Duration::from_millis(500), next_check()).await;
    assert!(more.is_err(), "no other check asked: {more:?}");

    let actions: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT detail->>'action', detail->>'no_check_because' FROM transaction_events \
         WHERE transaction_id = $1 AND source = 'callback' ORDER BY id",
    )
    .bind(pending)
    .fetch_all(&env.pool)
    .await?;
    let kinds: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        kinds,
        ["status_check", "none", "none", "status_check"],
        "every copy recorded"
    );
    assert!(
        actions[1]
            .1
            .as_deref()
            .is_some_and(|why| why.contains("same claim (success)")),
        "{actions:?}"
    );
    assert_eq!(status_of(&env.pool, pending).await?, "pending");
    assert_eq!(status_of(&env.pool, settled).await?, "success");
    Ok(())
}

/// A bill payment that failed frees its inquiry, and the client paid it
/// again; a late success for the failed payment must still reach review
/// (and its alert), although the second payment holds the inquiry.
#[tokio::test]
async fn a_failed_bill_payment_contradicted_after_a_second_payment_still_reaches_review(
) -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let trace = TraceContext::new_root();
    let payment_result = |id: Uuid, event: String, outcome, code| {
        let mut event = result_event(id, &event, outcome, code);
        event.operation = bus::Operation::BillPayment as i32;
        event.encode_to_vec()
    };
    let inquiry = insert(&env, "success", "bill_inquiry", "").await?;
    let paying = format!("inquiry_id = '{inquiry}'");

    let first = insert(&env, "received", "bill_payment", &paying).await?;
    let failed = payment_result(first, format!("cmd:{first}:0"), pb::Outcome::Failed, "203");
    reconciler.apply_event(&subject, &failed, &trace).await?;
    assert_eq!(status_of(&env.pool, first).await?, "failed");

    let second = insert(&env, "received", "bill_payment", &paying).await?;
    let paid = payment_result(
        second,
        format!("cmd:{second}:0"),
        pb::Outcome::Success,
        "000",
    );
    reconciler.apply_event(&subject, &paid, &trace).await?;
    assert_eq!(status_of(&env.pool, second).await?, "success");

    let late = payment_result(
        first,
        format!("chk:{first}:late"),
        pb::Outcome::Success,
        "000",
    );
    reconciler.apply_event(&subject, &late, &trace).await?;
    let row = loket_store::get(&env.pool, first).await?.context("row")?;
    assert_eq!(row.status, "needs_review");
    assert_eq!(row.reviewed_from.as_deref(), Some("failed"));
    assert!(row.review_reason.unwrap().contains("203"));
    assert_eq!(
        row.serial_number.as_deref(),
        Some("SN-1"),
        "the late success's serial number is kept for the review"
    );

    // The guard still holds for the payment that succeeded.
    let third = insert(&env, "received", "bill_payment", &paying).await;
    let refused = format!("{:#}", third.expect_err("a third live payment"));
    assert!(
        refused.contains("one_live_payment_per_inquiry"),
        "{refused}"
    );

    // An operator cannot settle the parked payment success while the second
    // one holds the inquiry (the update would break the guard on every
    // redelivery): refused, and recorded. Failed it may be, over the late
    // success's serial number only declared void.
    let applied = settle(&env, first, pb::TransactionStatus::Success, "").await?;
    assert_eq!(unchanged(&applied), Some(TransactionStatus::NeedsReview));
    let refusal = newest_refusal(&env, first).await?;
    assert!(refusal.contains(&second.to_string()), "{refusal}");
    let applied = settle(&env, first, pb::TransactionStatus::Failed, "").await?;
    assert_eq!(unchanged(&applied), Some(TransactionStatus::NeedsReview));
    let refusal = newest_refusal(&env, first).await?;
    assert!(refusal.contains("evidence of delivery"), "{refusal}");
    let mut void = decision(&env, first, pb::TransactionStatus::Failed, "").await?;
    void.void_serial_number = true;
    apply_decision(&reconciler, &void).await?;
    assert_eq!(status_of(&env.pool, first).await?, "failed");
    Ok(())
}

const DECISION_REASON: &str = "OkeBayar confirmed by phone: ticket 4711";

/// How many rows of `table` are about transaction `id`.
async fn rows_about(env: &Env, table: &str, id: Uuid) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {table} WHERE transaction_id = $1");
    count(&env.pool, &sql, id).await
}

/// A decision as `loketctl review settle` publishes it, taken on `id`'s
/// history as it stands now.
async fn decision(
    env: &Env,
    id: Uuid,
    status: pb::TransactionStatus,
    serial_number: &str,
) -> Result<bus::OperatorDecision> {
    Ok(bus::OperatorDecision {
        event_id: Uuid::new_v4().to_string(),
        transaction_id: id.to_string(),
        status: status as i32,
        reason: DECISION_REASON.into(),
        operator: "siti".into(),
        serial_number: serial_number.into(),
        void_serial_number: false,
        decided_at: Some(loket_protocol::conversions::timestamp(chrono::Utc::now())),
        // Rows these tests insert without a history take any event id.
        seen_event: loket_store::newest_event(&env.pool, id, i64::MAX)
            .await?
            .max(1),
    })
}

/// Applies `decision` as the reconciler's consumer would.
async fn apply_decision(
    reconciler: &Reconciler,
    decision: &bus::OperatorDecision,
) -> Result<Applied, ApplyError> {
    reconciler
        .apply_event(
            subjects::operator_decision(),
            &decision.encode_to_vec(),
            &TraceContext::new_root(),
        )
        .await
}

/// Applies a new decision `status` for `id`.
async fn settle(
    env: &Env,
    id: Uuid,
    status: pb::TransactionStatus,
    serial_number: &str,
) -> Result<Applied> {
    let decision = decision(env, id, status, serial_number).await?;
    Ok(apply_decision(&reconciler(env), &decision).await?)
}

/// The status an applied event left unchanged, if it changed nothing.
fn unchanged(applied: &Applied) -> Option<TransactionStatus> {
    match applied {
        Applied::Applied {
            from,
            to,
            changed: false,
            ..
        } if from == to => Some(*from),
        _ => None,
    }
}

/// One `source = operator` row of the event log.
#[derive(Debug)]
struct OperatorEvent {
    from: Option<String>,
    to: Option<String>,
    event_id: Option<String>,
    operator: Option<String>,
    reason: Option<String>,
    decided_at: Option<String>,
    serial_number: Option<String>,
    refused: Option<String>,
}

type OperatorEventRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The operator rows of `id`'s event log, newest first.
async fn operator_events(env: &Env, id: Uuid) -> Result<Vec<OperatorEvent>> {
    let rows: Vec<OperatorEventRow> = sqlx::query_as(
        "SELECT from_status, to_status, detail->>'event_id', detail->>'operator', \
           detail->>'reason', detail->>'decided_at', detail->>'serial_number', detail->>'refused' \
         FROM transaction_events WHERE transaction_id = $1 AND source = 'operator' ORDER BY id DESC",
    )
    .bind(id)
    .fetch_all(&env.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(from, to, event_id, operator, reason, decided_at, serial_number, refused)| {
                OperatorEvent {
                    from,
                    to,
                    event_id,
                    operator,
                    reason,
                    decided_at,
                    serial_number,
                    refused,
                }
            },
        )
        .collect())
}

/// Why the newest operator decision on `id` was refused (empty if it was
/// not).
async fn newest_refusal(env: &Env, id: Uuid) -> Result<String> {
    let events = operator_events(env, id).await?;
    let newest = events.first().context("an operator event")?;
    Ok(newest.refused.clone().unwrap_or_default())
}

/// A transaction parked in review (a success contradicted by a failure).
async fn parked(env: &Env, serial_number: Option<&str>) -> Result<Uuid> {
    let serial = serial_number.map_or("NULL".to_string(), |s| format!("'{s}'"));
    let id = insert(
        env,
        "needs_review",
        "prepaid_purchase",
        &format!(
            "reviewed_from = 'success', review_reason = 'conflicting final reports', \
             provider_code = '000', serial_number = {serial}, finalized_at = now() - interval '1 hour'"
        ),
    )
    .await?;
    // The event that parked it, as the reconciler writes one.
    sqlx::query(
        "INSERT INTO transaction_events (transaction_id, source, from_status, to_status) \
         VALUES ($1, 'result', 'success', 'needs_review')",
    )
    .bind(id)
    .execute(&env.pool)
    .await?;
    Ok(id)
}

/// Every update on `LOKET_UPD` (this test's own server): (message id, state).
async fn published_updates(env: &Env) -> Result<Vec<(String, pb::Transaction)>> {
    let mut stream = env.js.get_stream(subjects::UPDATE_STREAM).await?;
    let last = stream.info().await?.state.last_sequence;
    let mut updates = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await?;
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        updates.push((msg_id, pb::Transaction::decode(message.payload.as_ref())?));
    }
    Ok(updates)
}

/// An operator settles a transaction parked in review: the decided status,
/// `finalized_at` now, the serial number the provider confirmed, the case
/// (reason, parked from) kept, one `operator` event with who, why and when,
/// and the update published for the client's watchers. The same decision
/// delivered again is a duplicate: applied once.
#[tokio::test]
async fn an_operator_decision_settles_a_transaction_in_review_once() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let id = parked(&env, None).await?;
    let before = loket_store::get(&env.pool, id).await?.context("row")?;
    let decision = decision(&env, id, pb::TransactionStatus::Success, "5123-4123-4567").await?;

    let applied = apply_decision(&reconciler, &decision).await?;
    assert_eq!(
        applied,
        Applied::Applied {
            transaction_id: id,
            from: TransactionStatus::NeedsReview,
            to: TransactionStatus::Success,
            changed: true,
        }
    );
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(row.status, "success");
    assert_eq!(row.serial_number.as_deref(), Some("5123-4123-4567"));
    assert!(row.finalized_at > before.finalized_at, "finalized now");
    assert_eq!(row.review_reason, before.review_reason);
    assert_eq!(row.reviewed_from.as_deref(), Some("success"));
    assert_eq!(row.provider_code.as_deref(), Some("000"));
    // Published for the client's watchers before the event is acked.
    let updates = published_updates(&env).await?;
    assert_eq!(updates.len(), 1, "{updates:?}");
    let (msg_id, update) = &updates[0];
    assert_eq!(msg_id, &format!("upd:{id}:{}", decision.event_id));
    assert_eq!(update.id, id.to_string());
    assert_eq!(update.status(), pb::TransactionStatus::Success);
    assert_eq!(update.serial_number, "5123-4123-4567");

    let again = apply_decision(&reconciler, &decision).await?;
    assert_eq!(
        again,
        Applied::Duplicate {
            transaction_id: Some(id)
        }
    );
    let events = operator_events(&env, id).await?;
    assert_eq!(events.len(), 1, "applied once: {events:?}");
    let event = &events[0];
    assert_eq!(
        (event.from.as_deref(), event.to.as_deref()),
        (Some("needs_review"), Some("success"))
    );
    assert_eq!(event.event_id.as_deref(), Some(decision.event_id.as_str()));
    assert_eq!(event.operator.as_deref(), Some("siti"));
    assert_eq!(event.reason.as_deref(), Some(DECISION_REASON));
    assert!(event.decided_at.is_some());
    assert_eq!(event.serial_number.as_deref(), Some("5123-4123-4567"));
    assert_eq!(event.refused, None);
    assert_eq!(rows_about(&env, "applied_events", id).await?, 1);

    // Still one: the duplicate's re-publish has the same message id.
    assert_eq!(published_updates(&env).await?.len(), 1);
    Ok(())
}

/// A decision never touches a transaction outside review, nor replaces a
/// serial number the provider reported: the row stays as it was, nothing is
/// published, and the event log shows the attempt and why it was refused.
#[tokio::test]
async fn an_operator_decision_outside_review_or_against_the_providers_serial_is_refused(
) -> Result<()> {
    let env = env().await?;
    let done = insert(
        &env,
        "success",
        "prepaid_purchase",
        "serial_number = 'SN-1'",
    )
    .await?;
    let before = loket_store::get(&env.pool, done).await?.context("row")?;
    let applied = settle(&env, done, pb::TransactionStatus::Failed, "").await?;
    assert_eq!(
        unchanged(&applied),
        Some(TransactionStatus::Success),
        "{applied:?}"
    );
    let row = loket_store::get(&env.pool, done).await?.context("row")?;
    assert_eq!(format!("{row:?}"), format!("{before:?}"), "nothing changed");
    let events = operator_events(&env, done).await?;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].from.as_deref(), events[0].to.as_deref()),
        (Some("success"), Some("success"))
    );
    assert_eq!(
        events[0].refused.as_deref(),
        Some("not in needs_review (status success)")
    );
    assert_eq!(events[0].operator.as_deref(), Some("siti"));

    let with_serial = parked(&env, Some("SN-PROVIDER")).await?;
    let before = loket_store::get(&env.pool, with_serial)
        .await?
        .context("row")?;
    let applied = settle(
        &env,
        with_serial,
        pb::TransactionStatus::Success,
        "SN-OTHER",
    )
    .await?;
    assert_eq!(
        unchanged(&applied),
        Some(TransactionStatus::NeedsReview),
        "{applied:?}"
    );
    let row = loket_store::get(&env.pool, with_serial)
        .await?
        .context("row")?;
    assert_eq!(format!("{row:?}"), format!("{before:?}"), "nothing changed");
    let refusal = newest_refusal(&env, with_serial).await?;
    assert!(refusal.contains("serial number"), "{refusal}");
    assert!(
        published_updates(&env).await?.is_empty(),
        "nothing to publish"
    );

    // Failed over the provider's serial number, its evidence of delivery:
    // refused, unless the operator declares it void.
    let applied = settle(&env, with_serial, pb::TransactionStatus::Failed, "").await?;
    assert_eq!(
        unchanged(&applied),
        Some(TransactionStatus::NeedsReview),
        "{applied:?}"
    );
    let refusal = newest_refusal(&env, with_serial).await?;
    assert!(refusal.contains("evidence of delivery"), "{refusal}");
    let voided = parked(&env, Some("SN-REVERSED")).await?;
    let mut void = decision(&env, voided, pb::TransactionStatus::Failed, "").await?;
    void.void_serial_number = true;
    apply_decision(&reconciler(&env), &void).await?;
    let row = loket_store::get(&env.pool, voided).await?.context("row")?;
    assert_eq!((row.status.as_str(), row.serial_number), ("failed", None));
    let kept: Option<String> = sqlx::query_scalar(
        "SELECT detail->>'voided_serial_number' FROM transaction_events \
         WHERE transaction_id = $1 AND source = 'operator'",
    )
    .bind(voided)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(kept.as_deref(), Some("SN-REVERSED"), "the history keeps it");

    // With the provider's own serial number, or none, it settles.
    settle(
        &env,
        with_serial,
        pb::TransactionStatus::Success,
        "SN-PROVIDER",
    )
    .await?;
    assert_eq!(status_of(&env.pool, with_serial).await?, "success");
    Ok(())
}

/// A status check's answer for `id`: success, serial number `SN-1`.
async fn provider_reports_success(env: &Env, id: Uuid, check: u32) -> Result<Applied> {
    let mut report = result_event(
        id,
        &format!("chk:{id}:{check}"),
        pb::Outcome::Success,
        "000",
    );
    report.operation = bus::Operation::StatusCheck as i32;
    Ok(reconciler(env)
        .apply_event(
            &subjects::result(loket_protocol::Provider::OkeBayar),
            &report.encode_to_vec(),
            &TraceContext::new_root(),
        )
        .await?)
}

/// A decision is about the case as the operator saw it. A provider's report
/// that came in after the operator looked (kept in review: nothing
/// automatic moves a transaction out) refuses it, and so does a case that
/// was settled and opened again since: neither was seen. A decision taken
/// on the history as it stands then applies.
#[tokio::test]
async fn a_decision_taken_before_the_newest_event_is_refused() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);

    // The operator looks and decides "never charged"; meanwhile the
    // provider's status check answers success.
    let id = parked(&env, None).await?;
    let stale = decision(&env, id, pb::TransactionStatus::Failed, "").await?;
    provider_reports_success(&env, id, 1).await?;
    let before = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(
        (before.status.as_str(), before.serial_number.as_deref()),
        ("needs_review", Some("SN-1"))
    );
    let applied = apply_decision(&reconciler, &stale).await?;
    assert_eq!(
        unchanged(&applied),
        Some(TransactionStatus::NeedsReview),
        "{applied:?}"
    );
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(format!("{row:?}"), format!("{before:?}"), "nothing changed");
    let refusal = newest_refusal(&env, id).await?;
    assert!(refusal.contains("history changed"), "{refusal}");
    // Looked at again, with the provider's success in view.
    settle(&env, id, pb::TransactionStatus::Success, "").await?;
    assert_eq!(status_of(&env.pool, id).await?, "success");

    // Two decisions on one case: the first settles it, the provider then
    // contradicts it and the case opens again; the second was taken on
    // the first case.
    let reopened = parked(&env, None).await?;
    let first = decision(&env, reopened, pb::TransactionStatus::Failed, "").await?;
    let second = decision(&env, reopened, pb::TransactionStatus::Failed, "").await?;
    apply_decision(&reconciler, &first).await?;
    assert_eq!(status_of(&env.pool, reopened).await?, "failed");
    provider_reports_success(&env, reopened, 1).await?;
    assert_eq!(status_of(&env.pool, reopened).await?, "needs_review");
    let applied = apply_decision(&reconciler, &second).await?;
    assert_eq!(
        unchanged(&applied),
        Some(TransactionStatus::NeedsReview),
        "{applied:?}"
    );
    assert!(newest_refusal(&env, reopened)
        .await?
        .contains("history changed"));
    Ok(())
}

/// An unsigned callback copy recorded without asking anything (a check
/// for its claim is still unanswered) does not count as a change of the
/// case: a sender repeating its callback cannot keep an operator from
/// settling it. The copy that asked for a check still counts.
#[tokio::test]
async fn a_callback_copy_that_asked_nothing_does_not_stale_an_operators_decision() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let id = parked(&env, None).await?;
    let subject = subjects::callback(loket_protocol::Provider::OkeBayar);
    let copy = |n: u32| unsigned_callback(id, n, pb::Outcome::Success, "000");
    let trace = TraceContext::new_root();
    let first = reconciler
        .apply_event(&subject, &copy(1).encode_to_vec(), &trace)
        .await?;
    assert_eq!(first, Applied::CheckRequested { transaction_id: id });
    let stale = decision(&env, id, pb::TransactionStatus::Failed, "").await?;
    let asked_first = stale.seen_event;

    // A copy recorded only, after the operator looked: no news.
    let second = reconciler
        .apply_event(&subject, &copy(2).encode_to_vec(), &trace)
        .await?;
    assert_eq!(second, Applied::CallbackNoted { transaction_id: id });
    let newest = loket_store::newest_event(&env.pool, id, i64::MAX).await?;
    assert!(newest > asked_first, "the copy is in the history");
    assert_eq!(
        loket_store::newest_event(&env.pool, id, asked_first).await?,
        asked_first
    );
    // Seen before the copy that asked, the case has changed: that copy
    // is news.
    assert_eq!(
        loket_store::newest_event(&env.pool, id, asked_first - 1).await?,
        asked_first
    );
    let applied = apply_decision(&reconciler, &stale).await?;
    assert_eq!(unchanged(&applied), None, "{applied:?}");
    assert_eq!(status_of(&env.pool, id).await?, "failed");
    Ok(())
}

/// Spoils one field of a decision.
type Spoil = fn(&mut bus::OperatorDecision);

/// A decision with a missing or invalid field is poison: terminated, never
/// claimed, the row untouched; another subject under `loket.evt.operator`
/// is poison too.
#[tokio::test]
async fn a_malformed_operator_decision_is_poison_and_touches_nothing() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let id = parked(&env, None).await?;
    let cases: [(&str, Spoil); 6] = [
        ("reason", |d| d.reason = "  ".into()),
        ("status", |d| {
            d.status = pb::TransactionStatus::Received as i32
        }),
        ("status", |d| {
            d.status = pb::TransactionStatus::NeedsReview as i32
        }),
        ("operator", |d| d.operator.clear()),
        ("event_id", |d| d.event_id = "not-a-uuid".into()),
        ("decided_at", |d| d.decided_at = None),
    ];
    for (field, spoil) in cases {
        let mut bad = decision(&env, id, pb::TransactionStatus::Success, "").await?;
        spoil(&mut bad);
        match apply_decision(&reconciler, &bad).await {
            Err(ApplyError::Poison(why)) => assert!(why.contains(field), "{field}: {why}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    let garbage = reconciler
        .apply_event(
            subjects::operator_decision(),
            b"\xff\xff garbage",
            &TraceContext::new_root(),
        )
        .await;
    assert!(matches!(garbage, Err(ApplyError::Poison(_))), "{garbage:?}");
    let elsewhere = reconciler
        .apply_event(
            "loket.evt.operator.other",
            &decision(&env, id, pb::TransactionStatus::Success, "")
                .await?
                .encode_to_vec(),
            &TraceContext::new_root(),
        )
        .await;
    assert!(
        matches!(elsewhere, Err(ApplyError::Poison(_))),
        "{elsewhere:?}"
    );

    assert_eq!(status_of(&env.pool, id).await?, "needs_review");
    assert_eq!(
        rows_about(&env, "transaction_events", id).await?,
        1,
        "only the event that parked it"
    );
    assert_eq!(rows_about(&env, "applied_events", id).await?, 0);
    Ok(())
}

#[tokio::test]
async fn due_checks_and_the_sweep_are_published_once_across_replicas() -> Result<()> {
    let env = env().await?;
    let mut due = Vec::new();
    for _ in 0..40 {
        due.push(
            insert(
                &env,
                "pending",
                "prepaid_purchase",
                "next_check_at = now() - interval '1 second'",
            )
            .await?,
        );
    }
    let not_due = insert(
        &env,
        "pending",
        "prepaid_purchase",
        "next_check_at = now() + interval '1 hour'",
    )
    .await?;
    let lost = insert(
        &env,
        "received",
        "prepaid_purchase",
        "dispatched_at = NULL, dispatch_count = 0, created_at = now() - interval '1 hour'",
    )
    .await?;
    // Moved to unknown by a status check ("no record") before its command
    // was handled, and the command lost: never sent, so sent now. The same
    // with a send on record is only checked, never re-dispatched.
    let no_record_for_an_hour = "not_found_since = now() - interval '1 hour', \
        next_check_at = now() + interval '1 hour', dispatched_at = now() - interval '1 hour'";
    let never_sent = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    let sent = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    sqlx::query("INSERT INTO send_intents (transaction_id) VALUES ($1)")
        .bind(sent)
        .execute(&env.pool)
        .await?;
    // An inquiry's sends are not journalled: the journal's silence about
    // one proves nothing, and it is not sent again on it.
    insert(&env, "unknown", "prepaid_inquiry", no_record_for_an_hour).await?;
    let mut commands = env.nats.subscribe("loket.cmd.>").await?;
    loket_runtime::bus::confirm_subscriptions(&env.nats).await?;

    let one = reconciler(&env);
    let two = reconciler(&env);
    let (a, b) = tokio::join!(one.tick(), two.tick());
    let (a, b) = (a?, b?);
    assert_eq!(a.checks + b.checks, 40, "{a:?} {b:?}");
    assert_eq!(a.redispatched + b.redispatched, 2);

    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), commands.next()).await
    {
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap();
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(seen.len(), 42, "40 checks and two dispatches: {seen:?}");
    assert!(
        seen.contains_key(&format!("cmd:{never_sent}:2")),
        "{seen:?}"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "nothing published twice: {seen:?}"
    );
    assert!(seen.contains_key(&format!("cmd:{lost}:1")));
    for id in &due {
        assert!(seen.contains_key(&format!("chk:{id}:0")));
        let row = loket_store::get(&env.pool, *id).await?.context("row")?;
        assert_eq!(row.check_count, 1);
        assert!(row.next_check_at.unwrap() > chrono::Utc::now());
    }
    let row = loket_store::get(&env.pool, not_due).await?.context("row")?;
    assert_eq!(row.check_count, 0);
    let row = loket_store::get(&env.pool, lost).await?.context("row")?;
    assert_eq!((row.status.as_str(), row.dispatch_count), ("received", 1));
    assert!(row.dispatched_at.is_some());
    let row = loket_store::get(&env.pool, sent).await?.context("row")?;
    assert_eq!(
        row.dispatch_count, 1,
        "a transaction sent before is only checked"
    );

    // Nothing is due any more.
    let again = one.tick().await?;
    assert_eq!((again.checks, again.redispatched), (0, 0));
    Ok(())
}

/// The ingress published `cmd:<id>:0` and died before recording the
/// dispatch: the sweep's command must not reuse that message id, or
/// JetStream drops it as a duplicate (and, after its window, the reconciler
/// drops its result as one). Sweep dispatches are numbered from 1, one more
/// each time.
#[tokio::test]
async fn a_sweep_after_the_ingress_died_before_marking_its_dispatch_is_not_a_duplicate(
) -> Result<()> {
    let env = env().await?;
    let id = insert(
        &env,
        "received",
        "prepaid_purchase",
        "dispatched_at = NULL, dispatch_count = 0, created_at = now() - interval '1 minute'",
    )
    .await?;
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    let subject = subjects::command(
        loket_protocol::Provider::OkeBayar,
        loket_protocol::Operation::PrepaidPurchase,
    );
    loket_runtime::bus::publish_durable(
        &env.js,
        subject.clone(),
        loket_runtime::bus::headers(&row.command_msg_id(0), &TraceContext::new_root(), ""),
        row.command(true).encode_to_vec(),
    )
    .await?;
    let stream = env.js.get_stream(subjects::COMMAND_STREAM).await?;
    let reconciler = reconciler(&env);
    let mut conn = env.pool.acquire().await?;
    let mut now = chrono::Utc::now();
    for expected in [1, 2] {
        assert_eq!(reconciler.sweep(&mut conn, now).await?, 1);
        let last = stream.get_last_raw_message_by_subject(&subject).await?;
        assert_eq!(
            last.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some(format!("cmd:{id}:{expected}").as_str()),
            "the sweep's command reached the stream under a new id"
        );
        assert!(!bus::Command::decode(last.payload.as_ref())?.first_dispatch);
        let row = loket_store::get(&env.pool, id).await?.context("row")?;
        assert_eq!(row.dispatch_count, expected);
        // Past the re-dispatch limit, with still no result.
        now += chrono::Duration::minutes(11);
    }
    Ok(())
}

/// RELIABILITY #22, the reconciler's own host: one whose clock runs two days
/// ahead of PostgreSQL's still keeps PostgreSQL's time. A purchase just
/// dispatched is neither re-dispatched nor parked as unresolved, an inquiry
/// just made does not expire, and a pending purchase's check due in an hour
/// is not published; a result applied then schedules its next check by
/// PostgreSQL's time too.
#[tokio::test]
async fn a_reconciler_host_clock_days_ahead_keeps_postgresql_time() -> Result<()> {
    fn two_days_ahead() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::days(2)
    }
    let env = env().await?;
    let reconciler = reconciler(&env).with_clock(
        loket_reconciler::clock::DbClock::with_host_clock(two_days_ahead),
    );
    let received = insert(&env, "received", "prepaid_purchase", "").await?;
    let inquiry = insert(&env, "received", "prepaid_inquiry", "").await?;
    let pending = insert(
        &env,
        "pending",
        "prepaid_purchase",
        "next_check_at = now() + interval '1 hour'",
    )
    .await?;

    let report = reconciler.tick().await?;
    assert_eq!(
        (
            report.expired,
            report.reviewed,
            report.redispatched,
            report.checks
        ),
        (0, 0, 0, 0),
        "{report:?}"
    );
    for (id, status) in [
        (received, "received"),
        (inquiry, "received"),
        (pending, "pending"),
    ] {
        assert_eq!(status_of(&env.pool, id).await?, status);
    }

    // A pending result applied now: its first check is due within the
    // schedule's first wait of PostgreSQL's now, not two days on.
    let event = result_event(
        received,
        &format!("cmd:{received}:0"),
        pb::Outcome::Pending,
        "002",
    );
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    reconciler
        .apply_event(&subject, &event.encode_to_vec(), &TraceContext::new_root())
        .await?;
    let (status, due_in): (String, f64) = sqlx::query_as(
        "SELECT status, EXTRACT(EPOCH FROM next_check_at - now())::float8 \
         FROM transactions WHERE id = $1",
    )
    .bind(received)
    .fetch_one(&env.pool)
    .await?;
    assert_eq!(status, "pending");
    assert!((0.0..60.0).contains(&due_in), "next check in {due_in} s");
    Ok(())
}

/// A command that gets no result is dispatched again after
/// `redispatch_after` (10 minutes), then after 20, 40, 80 and 160 minutes,
/// and every 160 minutes from then on: while a provider's connectors are
/// down, each copy waits in the command stream and costs a status check
/// once they are back.
#[tokio::test]
async fn a_command_that_gets_no_result_is_dispatched_again_less_and_less_often() -> Result<()> {
    let env = env().await?;
    let id = insert(&env, "received", "prepaid_purchase", "").await?;
    let reconciler = reconciler(&env);
    let mut conn = env.pool.acquire().await?;
    let dispatched_at = |count| {
        let pool = env.pool.clone();
        async move {
            let row = loket_store::get(&pool, id).await?.context("row")?;
            assert_eq!(row.dispatch_count, count);
            row.dispatched_at.context("dispatched")
        }
    };
    let mut last = dispatched_at(1).await?;
    for (count, wait_minutes) in [(2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 160)] {
        let early = last + chrono::Duration::minutes(wait_minutes) - chrono::Duration::seconds(5);
        assert_eq!(
            reconciler.sweep(&mut conn, early).await?,
            0,
            "dispatch {count} not before {wait_minutes} minutes"
        );
        let due = last + chrono::Duration::minutes(wait_minutes) + chrono::Duration::seconds(5);
        assert_eq!(
            reconciler.sweep(&mut conn, due).await?,
            1,
            "dispatch {count} after {wait_minutes} minutes"
        );
        last = dispatched_at(count).await?;
        assert!(
            (last - due).abs() < chrono::Duration::milliseconds(1),
            "{last} {due}"
        );
    }
    Ok(())
}

/// A success result for `id` whose data PostgreSQL refuses for good: a bill
/// expiry before 4713 BC, out of `timestamptz`'s range (SQLSTATE 22008).
fn unwritable_result(id: Uuid) -> Vec<u8> {
    let mut event = result_event(id, &format!("cmd:{id}:0"), pb::Outcome::Success, "000");
    event.bill = Some(pb::BillDetails {
        customer_name: "BUDI".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: -300_000_000_000,
            nanos: 0,
        }),
        ..Default::default()
    });
    event.encode_to_vec()
}

/// A result whose data PostgreSQL refuses for good (here a bill expiry
/// before 4713 BC, out of `timestamptz`'s range: SQLSTATE 22008) is not
/// left to be retried every second for ever: on its own, after its batch
/// failed, it parks its transaction in `needs_review`, naming the refusal,
/// in a write without the refused data, and is acked (a redelivery is a
/// duplicate). The rest of its batch applies as usual. A final transaction
/// it does not contradict is not parked.
#[tokio::test]
async fn a_result_postgresql_refuses_for_good_parks_its_transaction_instead_of_retrying(
) -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let unwritable = unwritable_result;
    let (bad, good, alone) = (
        insert(&env, "pending", "prepaid_purchase", "").await?,
        insert(&env, "pending", "prepaid_purchase", "").await?,
        insert(&env, "pending", "prepaid_purchase", "").await?,
    );
    let good_event =
        result_event(good, &format!("cmd:{good}:0"), pb::Outcome::Success, "000").encode_to_vec();
    let bad_event = unwritable(bad);
    let batch = [
        Incoming {
            subject: &subject,
            payload: &bad_event,
            trace: None,
        },
        Incoming {
            subject: &subject,
            payload: &good_event,
            trace: None,
        },
    ];
    let results = reconciler.apply_events(&batch).await;
    assert!(
        matches!(
            results[0],
            Ok(Applied::Applied {
                to: TransactionStatus::NeedsReview,
                ..
            })
        ),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(
            results[1],
            Ok(Applied::Applied {
                to: TransactionStatus::Success,
                ..
            })
        ),
        "{:?}",
        results[1]
    );
    // A batch of one takes the same way.
    let alone_applied = reconciler
        .apply_event(&subject, &unwritable(alone), &TraceContext::new_root())
        .await;
    assert!(
        matches!(
            alone_applied,
            Ok(Applied::Applied {
                to: TransactionStatus::NeedsReview,
                ..
            })
        ),
        "{alone_applied:?}"
    );

    for id in [bad, alone] {
        let row = loket_store::get(&env.pool, id).await?.context("row")?;
        assert_eq!(row.status, "needs_review");
        assert_eq!(row.reviewed_from.as_deref(), Some("pending"));
        let reason = row.review_reason.unwrap_or_default();
        assert!(reason.contains("22008"), "{reason}");
        assert_eq!((row.bill, row.expires_at), (None, None), "none of its data");
        assert_eq!(rows_about(&env, "applied_events", id).await?, 1);
        assert_eq!(rows_about(&env, "provider_exchanges", id).await?, 0);
        assert_eq!(
            count(
                &env.pool,
                "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 \
                 AND detail->>'action' = 'unwritable' AND to_status = 'needs_review'",
                id
            )
            .await?,
            1
        );
    }
    assert_eq!(status_of(&env.pool, good).await?, "success");

    // A final transaction the refused report does not contradict stays as
    // it is (rule 4); only the event, naming the refusal, is recorded.
    let settled = insert(&env, "success", "prepaid_purchase", "").await?;
    let kept = reconciler
        .apply_event(&subject, &unwritable(settled), &TraceContext::new_root())
        .await;
    assert!(
        matches!(
            kept,
            Ok(Applied::Applied {
                from: TransactionStatus::Success,
                to: TransactionStatus::Success,
                changed: false,
                ..
            })
        ),
        "{kept:?}"
    );
    let row = loket_store::get(&env.pool, settled).await?.context("row")?;
    assert_eq!(
        (row.status.as_str(), row.review_reason, row.bill),
        ("success", None, None)
    );
    assert_eq!(rows_about(&env, "applied_events", settled).await?, 1);
    assert_eq!(
        count(
            &env.pool,
            "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 \
             AND detail->>'action' = 'unwritable' AND to_status = 'success'",
            settled
        )
        .await?,
        1
    );

    let again = reconciler
        .apply_event(&subject, &bad_event, &TraceContext::new_root())
        .await?;
    assert_eq!(
        again,
        Applied::Duplicate {
            transaction_id: Some(bad)
        }
    );
    Ok(())
}

/// Should PostgreSQL refuse the park too (here a trigger refuses to move
/// this one transaction to `needs_review`, SQLSTATE 23514), the event is
/// given up, [`ApplyError::Unwritable`] naming both refusals (the consumer
/// terminates it with an ALERT), rather than retried every second for
/// ever; and nothing of it is written: the row stays as it was, the event
/// unclaimed, the history without it.
#[tokio::test]
async fn a_result_whose_park_is_refused_too_is_given_up_naming_both_refusals() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let id = insert(&env, "pending", "prepaid_purchase", "").await?;
    sqlx::query(
        "CREATE FUNCTION refuse_the_park() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN RAISE EXCEPTION 'no park for this one' USING ERRCODE = '23514'; END $$",
    )
    .execute(&env.pool)
    .await?;
    sqlx::query(&format!(
        "CREATE TRIGGER refuse_the_park BEFORE UPDATE ON transactions FOR EACH ROW \
         WHEN (NEW.id = '{id}' AND NEW.status = 'needs_review') EXECUTE FUNCTION refuse_the_park()"
    ))
    .execute(&env.pool)
    .await?;
    let events_before = rows_about(&env, "transaction_events", id).await?;

    let applied = reconciler
        .apply_event(&subject, &unwritable_result(id), &TraceContext::new_root())
        .await;
    match &applied {
        Err(ApplyError::Unwritable { refusal, park }) => {
            assert!(refusal.contains("22008"), "{refusal}");
            assert!(park.contains("no park for this one"), "{park}");
        }
        other => panic!("expected the event given up as unwritable, got {other:?}"),
    }
    let row = loket_store::get(&env.pool, id).await?.context("row")?;
    assert_eq!(row.status, "pending");
    assert_eq!((row.review_reason, row.bill), (None, None));
    assert_eq!(rows_about(&env, "applied_events", id).await?, 0);
    assert_eq!(
        rows_about(&env, "transaction_events", id).await?,
        events_before
    );
    Ok(())
}

#[tokio::test]
async fn limits_expire_inquiries_and_park_stale_transactions() -> Result<()> {
    let env = env().await?;
    let inquiry = insert(
        &env,
        "unknown",
        "bill_inquiry",
        "created_at = now() - interval '2 hours'",
    )
    .await?;
    let stale = insert(
        &env,
        "pending",
        "prepaid_purchase",
        "created_at = now() - interval '3 days'",
    )
    .await?;
    let fresh = insert(
        &env,
        "pending",
        "prepaid_purchase",
        "next_check_at = now() + interval '1 hour'",
    )
    .await?;
    // Pay-ins three days old: one whose order is live for another hour (the
    // payer may still pay) and one that expired two days ago.
    let payment_expiring = |at: &str| {
        format!(
            "created_at = now() - interval '3 days', \
             payment = jsonb_build_object('method', 'QRIS', 'expires_at', to_char(({at}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'))"
        )
    };
    let live_order = insert(
        &env,
        "pending",
        "pay_in",
        &payment_expiring("now() + interval '1 hour'"),
    )
    .await?;
    let expired_order = insert(
        &env,
        "pending",
        "pay_in",
        &payment_expiring("now() - interval '2 days'"),
    )
    .await?;
    let report = reconciler(&env).tick().await?;
    assert_eq!((report.expired, report.reviewed), (1, 2));
    assert_eq!(status_of(&env.pool, live_order).await?, "pending");
    assert_eq!(status_of(&env.pool, expired_order).await?, "needs_review");
    let row = loket_store::get(&env.pool, inquiry).await?.context("row")?;
    assert_eq!(
        (row.status.as_str(), row.provider_code.as_deref()),
        ("failed", Some("EXPIRED"))
    );
    let row = loket_store::get(&env.pool, stale).await?.context("row")?;
    assert_eq!(row.status, "needs_review");
    assert!(row.review_reason.is_some());
    assert_eq!(status_of(&env.pool, fresh).await?, "pending");
    let left = "SELECT count(*) FROM unpublished_updates WHERE transaction_id = $1";
    for published in [inquiry, stale] {
        assert_eq!(
            count(&env.pool, left, published).await?,
            0,
            "published right after the commit, so not left for a later tick"
        );
    }
    Ok(())
}

/// An update the scheduler committed but could not publish (here the
/// update stream is missing for longer than its retries; a crash between
/// commit and publish leaves the same record) is published by a later tick,
/// once, and its record is then gone; a fresh one is left to the publish
/// right after its commit.
#[tokio::test]
async fn a_scheduler_update_left_unpublished_is_published_by_a_later_tick() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let inquiry = insert(
        &env,
        "pending",
        "bill_inquiry",
        "created_at = now() - interval '2 hours'",
    )
    .await?;
    let left = "SELECT count(*) FROM unpublished_updates WHERE transaction_id = $1";
    env.js.delete_stream(subjects::UPDATE_STREAM).await?;

    let mut conn = env.pool.acquire().await?;
    assert_eq!(
        reconciler
            .expire_inquiries(&mut conn, chrono::Utc::now())
            .await?,
        1
    );
    assert_eq!(status_of(&env.pool, inquiry).await?, "failed");
    assert_eq!(
        count(&env.pool, left, inquiry).await?,
        1,
        "recorded as unpublished"
    );

    loket_runtime::bus::ensure_streams(&env.js).await?;
    assert_eq!(
        reconciler
            .publish_left_updates(&mut conn, chrono::Utc::now())
            .await?,
        0,
        "too young: the publish after its commit may still be trying"
    );
    let later = chrono::Utc::now() + chrono::TimeDelta::minutes(2);
    assert_eq!(reconciler.publish_left_updates(&mut conn, later).await?, 1);
    assert_eq!(count(&env.pool, left, inquiry).await?, 0);
    assert_eq!(reconciler.publish_left_updates(&mut conn, later).await?, 0);

    let mut stream = env.js.get_stream(subjects::UPDATE_STREAM).await?;
    assert_eq!(stream.info().await?.state.messages, 1);
    let message = stream
        .get_last_raw_message_by_subject(&subjects::update(&env.client_id.to_string()))
        .await?;
    let update = pb::Transaction::decode(message.payload.as_ref())?;
    assert_eq!(update.id, inquiry.to_string());
    assert_eq!(update.status, pb::TransactionStatus::Failed as i32);
    assert_eq!(update.provider_code, "EXPIRED");
    Ok(())
}

/// Bookkeeping stays bounded: send records and applied-event claims older
/// than their retention are deleted, at most `prune_batch` per table and
/// tick, oldest first; younger ones stay.
#[tokio::test]
async fn old_send_records_and_event_claims_are_pruned_in_batches() -> Result<()> {
    let env = env().await?;
    let mut settings = settings(&env);
    settings.prune_batch = 3;
    let reconciler = Reconciler::new(env.pool.clone(), env.js.clone(), &settings);
    // Retention is a week by default: 8 days old goes, 6 days old stays.
    for (age, sends, claims) in [("8 days", 5, 4), ("6 days", 2, 2)] {
        sqlx::query(
            "INSERT INTO send_intents (transaction_id, recorded_at) \
             SELECT gen_random_uuid(), now() - $1::interval FROM generate_series(1, $2)",
        )
        .bind(age)
        .bind(sends)
        .execute(&env.pool)
        .await?;
        sqlx::query(
            "INSERT INTO applied_events (event_id, applied_at) \
             SELECT 'ev:' || gen_random_uuid(), now() - $1::interval FROM generate_series(1, $2)",
        )
        .bind(age)
        .bind(claims)
        .execute(&env.pool)
        .await?;
    }
    let left = || async {
        let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM send_intents")
            .fetch_one(&env.pool)
            .await?;
        let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM applied_events")
            .fetch_one(&env.pool)
            .await?;
        anyhow::Ok((sends, claims))
    };
    let now = chrono::Utc::now();
    let mut conn = env.pool.acquire().await?;
    assert_eq!(
        reconciler.prune(&mut conn, now).await?,
        6,
        "three of each table"
    );
    assert_eq!(left().await?, (4, 3));
    assert_eq!(reconciler.prune(&mut conn, now).await?, 3);
    assert_eq!(left().await?, (2, 2), "the six-day-old rows stay");
    assert_eq!(reconciler.prune(&mut conn, now).await?, 0);
    // The tick runs the step too.
    sqlx::query("UPDATE applied_events SET applied_at = now() - interval '30 days'")
        .execute(&env.pool)
        .await?;
    assert_eq!(reconciler.tick().await?.pruned, 2);
    assert_eq!(left().await?, (2, 0));
    Ok(())
}

/// A pool of two connections to `env`'s database through a relay that goes
/// silent (forwards nothing, closes nothing) while the flag is set.
async fn through_a_silenceable_relay(
    env: &Env,
) -> Result<(PgPool, std::sync::Arc<std::sync::atomic::AtomicBool>)> {
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed =
        loket_test_support::postgres::through_silenceable_relay(&env.database_url, silence.clone())
            .await?;
    let pool = loket_runtime::db::connect(&Secret::new(relayed), 2).await?;
    Ok((pool, silence))
}

/// A tick on a database that goes silent mid-tick (its host gone without
/// closing the connection: here a relay that stops forwarding) is given up
/// at the tick's limit instead of waiting for the kernel to drop the
/// connection; what it committed before stays; once the database answers
/// again, the next tick works on a fresh connection.
#[tokio::test]
async fn a_tick_on_a_database_gone_silent_is_given_up_and_the_next_is_fresh() -> Result<()> {
    let env = env().await?;
    let (pool, silence) = through_a_silenceable_relay(&env).await?;
    let limit = Duration::from_secs(3);
    let reconciler = Reconciler::new(pool, env.js.clone(), &settings(&env)).with_tick_limit(limit);
    let due = insert(&env, "pending", "prepaid_purchase", "next_check_at = now()").await?;

    // The tick's last step (pruning event claims) waits on a table lock the
    // test holds, which nothing before it touches; meanwhile the database
    // goes silent and the lock is let go.
    let mut holder = env.pool.begin().await?;
    sqlx::query("LOCK TABLE applied_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await?;
    let started = std::time::Instant::now();
    let tick = tokio::spawn(async move {
        let outcome = reconciler.tick().await;
        (reconciler, outcome)
    });
    until_a_lock_is_awaited(
        &env.pool,
        "relation = 'applied_events'::regclass",
        started + limit,
    )
    .await
    .context("the tick never reached the prune")?;
    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.commit().await?;
    let (reconciler, outcome) = tokio::time::timeout(Duration::from_secs(30), tick)
        .await
        .expect("the tick's limit ends the wait")?;
    let elapsed = started.elapsed();
    assert!(elapsed >= limit && elapsed < limit * 3, "{elapsed:?}");
    let Err(ApplyError::Db(sqlx::Error::Io(io))) = &outcome else {
        panic!("a timed-out tick: {outcome:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{io}");
    assert!(io.to_string().contains("within 3000 ms"), "{io}");
    assert_eq!(
        count(
            &env.pool,
            "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND source = 'status_check'",
            due
        )
        .await?,
        1,
        "the status check published before the silence stays committed"
    );

    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    let again = insert(&env, "pending", "prepaid_purchase", "next_check_at = now()").await?;
    let report = tokio::time::timeout(Duration::from_secs(30), reconciler.tick())
        .await
        .expect("the next tick is not stuck")?;
    assert!(report.checks >= 1, "{report:?}");
    assert_eq!(
        count(
            &env.pool,
            "SELECT check_count::int8 FROM transactions WHERE id = $1",
            again
        )
        .await?,
        1,
        "the next tick checked the transaction that came due meanwhile"
    );
    Ok(())
}

/// Waits until some session waits for a lock `pg_locks` describes by
/// `which` (a condition on its columns), failing past `deadline`.
async fn until_a_lock_is_awaited(
    pool: &PgPool,
    which: &str,
    deadline: std::time::Instant,
) -> Result<()> {
    let waiting = format!("SELECT count(*) FROM pg_locks WHERE NOT granted AND {which}");
    while sqlx::query_scalar::<_, i64>(&waiting)
        .fetch_one(pool)
        .await?
        == 0
    {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no such lock awaited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A callback applied while the database goes silent is given up at its
/// slot's work limit, like a batch of results, instead of holding the slot
/// (and the events behind it) for as long as the kernel keeps the
/// connection; it is left for redelivery, and applied once the database
/// answers again.
#[tokio::test]
async fn a_callback_on_a_database_gone_silent_is_given_up_and_applied_once_it_is_back() -> Result<()>
{
    let env = env().await?;
    let (pool, silence) = through_a_silenceable_relay(&env).await?;
    let limit = Duration::from_secs(3);
    let reconciler = Reconciler::new(pool.clone(), env.js.clone(), &settings(&env));
    let mut slot = loket_runtime::db::HeldConnection::with_work_limit(pool, limit);
    let id = insert(&env, "pending", "prepaid_purchase", "").await?;
    let payload = unsigned_callback(id, 1, pb::Outcome::Success, "000").encode_to_vec();
    let subject = subjects::callback(loket_protocol::Provider::OkeBayar);

    // The callback waits on its transaction's row, which the test holds
    // locked; meanwhile the database goes silent and the lock is let go.
    let mut holder = env.pool.begin().await?;
    sqlx::query("SELECT id FROM transactions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await?;
    let started = std::time::Instant::now();
    let applying = tokio::spawn({
        let (subject, payload) = (subject.clone(), payload.clone());
        async move {
            let callback = [Incoming {
                subject: subject.as_str(),
                payload: &payload,
                trace: Some(TraceContext::new_root()),
            }];
            let outcome = reconciler.apply_events_on(&mut slot, &callback).await;
            (reconciler, slot, outcome)
        }
    });
    until_a_lock_is_awaited(&env.pool, "locktype = 'transactionid'", started + limit)
        .await
        .context("the callback never reached the row lock")?;
    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.rollback().await?;
    let (reconciler, mut slot, mut outcome) =
        tokio::time::timeout(Duration::from_secs(30), applying)
            .await
            .expect("the slot's work limit ends the wait")?;
    let elapsed = started.elapsed();
    assert!(elapsed >= limit && elapsed < limit * 3, "{elapsed:?}");
    let Some(Err(ApplyError::Db(sqlx::Error::Io(io)))) = outcome.pop() else {
        panic!("a timed-out callback: {outcome:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{io}");
    assert_eq!(
        count(
            &env.pool,
            "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND source = 'callback'",
            id
        )
        .await?,
        0,
        "nothing of the callback was written"
    );

    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    let callback = [Incoming {
        subject: subject.as_str(),
        payload: &payload,
        trace: Some(TraceContext::new_root()),
    }];
    let mut outcome = tokio::time::timeout(
        Duration::from_secs(30),
        reconciler.apply_events_on(&mut slot, &callback),
    )
    .await
    .expect("the slot is not stuck");
    assert!(
        matches!(
            outcome.pop(),
            Some(Ok(Applied::CheckRequested { transaction_id })) if transaction_id == id
        ),
        "{outcome:?}"
    );
    Ok(())
}

#[tokio::test]
async fn run_consumes_the_event_stream_and_drains() -> Result<()> {
    let env = env().await?;
    let id = insert(&env, "received", "prepaid_purchase", "").await?;
    let shutdown = Shutdown::new();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin_addr = admin.local_addr()?;
    let mut settings = settings(&env);
    // Long enough that a drain waiting it out fails the stop below.
    settings.common.shutdown_grace_ms = 60_000;
    let task = tokio::spawn(loket_reconciler::run(
        settings,
        loket_reconciler::Listeners { admin },
        shutdown.clone(),
    ));
    // A pending result, published as a connector would (twice).
    let event = result_event(id, &format!("cmd:{id}:0"), pb::Outcome::Pending, "002");
    for n in 0..2 {
        let headers = loket_runtime::bus::headers(
            &format!("res:cmd:{id}:0:{n}"),
            &TraceContext::new_root(),
            "",
        );
        loket_runtime::bus::publish_durable(
            &env.js,
            subjects::result(loket_protocol::Provider::OkeBayar),
            headers,
            event.encode_to_vec(),
        )
        .await?;
    }
    let mut status = String::new();
    for _ in 0..100 {
        status = status_of(&env.pool, id).await?;
        if status == "pending" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "pending");
    // The scheduler (1 s first check for pending) publishes a check.
    let mut checks = 0;
    for _ in 0..50 {
        checks = loket_store::get(&env.pool, id)
            .await?
            .context("row")?
            .check_count;
        if checks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(checks >= 1, "a status check was scheduled");
    let stream = env.js.get_stream(subjects::COMMAND_STREAM).await?;
    let check = stream
        .get_last_raw_message_by_subject("loket.cmd.okebayar.status")
        .await
        .context("a status check was published")?;
    let command = bus::Command::decode(check.payload.as_ref())?;
    assert_eq!(command.transaction_id, id.to_string());
    assert_eq!(
        check.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(format!("chk:{id}:0").as_str())
    );
    assert_eq!(
        count(&env.pool, "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND source = 'result'", id).await?,
        1,
        "the second copy was a duplicate"
    );
    let ready = loket_test_support::admin::get(admin_addr, "/readyz").await?;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // Idle now (its batch slots free, one waiting for the next event):
    // nothing is in flight, so it stops without waiting out the grace.
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .context("an idle reconciler did not stop within 15 s")???;
    Ok(())
}

#[tokio::test]
async fn a_verified_callback_reporting_another_amount_is_flagged() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let trace = TraceContext::new_root();
    let subject = subjects::callback(loket_protocol::Provider::SnapQr);
    let mut flagged = Vec::new();
    for (n, reported) in [10_500, 9_000].into_iter().enumerate() {
        let id = insert(&env, "pending", "qr_payment", "provider = 'snapqr'").await?;
        let reference: String =
            sqlx::query_scalar("SELECT provider_reference FROM transactions WHERE id = $1")
                .bind(id)
                .fetch_one(&env.pool)
                .await?;
        let notify = bus::CallbackEvent {
            event_id: format!("cb:snapqr:{reference}:00:{n}"),
            provider: "snapqr".into(),
            provider_reference: reference,
            provider_code: "00".into(),
            verified: true,
            claimed_outcome: pb::Outcome::Success as i32,
            provider_amount: Some(pb::Money {
                minor: reported,
                currency: "IDR".into(),
            }),
            ..Default::default()
        };
        reconciler
            .apply_event(&subject, &notify.encode_to_vec(), &trace)
            .await?;
        let (status, mismatch, amount): (String, bool, Option<i64>) = sqlx::query_as(
            "SELECT status, amount_mismatch, provider_amount_minor FROM transactions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.pool)
        .await?;
        assert_eq!((status.as_str(), amount), ("success", Some(reported)));
        flagged.push(mismatch);
    }
    assert_eq!(
        flagged,
        [false, true],
        "10,500 asked: 10,500 reported is fine, 9,000 is flagged"
    );
    Ok(())
}

/// Four `received` purchases; the first two are held locked by the
/// returned database transaction, so a batch about them waits.
async fn four_with_two_held(
    env: &Env,
) -> Result<(Vec<Uuid>, sqlx::Transaction<'static, sqlx::Postgres>)> {
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(insert(env, "received", "prepaid_purchase", "").await?);
    }
    let mut holder = env.pool.begin().await?;
    sqlx::query("SELECT 1 FROM transactions WHERE id = ANY($1) FOR UPDATE")
        .bind(&ids[..2])
        .execute(&mut *holder)
        .await?;
    Ok((ids, holder))
}

/// Publishes a success result for each of `ids`, as a connector would
/// (event id `cmd:<id>:0`); returns the event ids.
async fn publish_successes(env: &Env, ids: &[Uuid]) -> Result<Vec<String>> {
    let mut event_ids = Vec::new();
    for id in ids {
        let event_id = format!("cmd:{id}:0");
        let event = result_event(*id, &event_id, pb::Outcome::Success, "000");
        loket_runtime::bus::publish_durable(
            &env.js,
            subjects::result(loket_protocol::Provider::OkeBayar),
            loket_runtime::bus::headers(&format!("res:{event_id}"), &TraceContext::new_root(), ""),
            event.encode_to_vec(),
        )
        .await?;
        event_ids.push(event_id);
    }
    Ok(event_ids)
}

/// A status check's "no record at the provider" about `id`, as the
/// OkeBayar connector publishes it.
fn no_record(id: Uuid, check: u32) -> bus::ResultEvent {
    bus::ResultEvent {
        not_found: true,
        provider_code: "199".into(),
        exchanges: Vec::new(),
        ..result_event(id, &format!("chk:{id}:{check}"), pb::Outcome::Unknown, "")
    }
}

/// A transaction failed for "no record at the provider" is closed to
/// sending in the same database transaction, so the connector's journal
/// allows no send of it afterwards (one never sent gets a closed record),
/// and one whose send the journal allowed first (recorded within the
/// grace, or being recorded while the failure is written) is not failed:
/// the provider may hold that request now. Without this, a command
/// redelivered while the failure was written sent the request again after
/// the client was told it failed.
#[tokio::test]
async fn no_record_fails_a_transaction_only_with_its_sends_closed() -> Result<()> {
    let env = env().await?;
    let reconciler = reconciler(&env);
    let journal = loket_connector::journal::SendJournal::start(
        env.pool.clone(),
        &loket_runtime::Vital::new(Shutdown::new()),
    );
    let subject = subjects::result(loket_protocol::Provider::OkeBayar);
    let trace = TraceContext::new_root();
    let no_record_for_an_hour = "not_found_since = now() - interval '1 hour'";
    let record_send = |id: Uuid, ago: &'static str| {
        let pool = env.pool.clone();
        async move {
            sqlx::query(&format!(
                "INSERT INTO send_intents (transaction_id, recorded_at) VALUES ($1, now() - interval '{ago}')"
            ))
            .bind(id)
            .execute(&pool)
            .await
        }
    };
    let closed = |id: Uuid| {
        let pool = env.pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT refused_at IS NOT NULL FROM send_intents WHERE transaction_id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
        }
    };

    let never_sent = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    let sent_long_ago = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    record_send(sent_long_ago, "1 hour").await?;
    let sent_lately = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    record_send(sent_lately, "1 second").await?;
    for (check, id) in [never_sent, sent_long_ago, sent_lately]
        .into_iter()
        .enumerate()
    {
        reconciler
            .apply_event(
                &subject,
                &no_record(id, check as u32).encode_to_vec(),
                &trace,
            )
            .await?;
    }

    for id in [never_sent, sent_long_ago] {
        let row = loket_store::get(&env.pool, id).await?.context("row")?;
        assert_eq!(row.status, "failed");
        assert_eq!(
            row.provider_code.as_deref(),
            Some(loket_reconciler::plan::NOT_FOUND_CODE)
        );
        assert_eq!(closed(id).await?, Some(true), "closed to sending");
        assert!(
            !journal
                .renew_if_older(&id.to_string(), Duration::ZERO)
                .await?,
            "the connector may not send it again"
        );
    }
    let row = loket_store::get(&env.pool, sent_lately)
        .await?
        .context("row")?;
    assert_eq!(
        row.status, "unknown",
        "a send within the grace may show yet"
    );
    assert_eq!(row.not_found_since, None, "counted afresh from the next");
    assert!(row.next_check_at.is_some());
    assert_eq!(closed(sent_lately).await?, Some(false));

    // A connector's journal allows a send (its statement holds the record's
    // row lock, uncommitted) while the failure is being written.
    let racing = insert(&env, "unknown", "prepaid_purchase", no_record_for_an_hour).await?;
    record_send(racing, "1 hour").await?;
    let mut connector = env.pool.begin().await?;
    let allowed = sqlx::query(
        "UPDATE send_intents SET recorded_at = now() WHERE transaction_id = $1 AND refused_at IS NULL",
    )
    .bind(racing)
    .execute(&mut *connector)
    .await?;
    assert_eq!(allowed.rows_affected(), 1);
    let applying = tokio::spawn({
        let reconciler = reconciler.clone();
        let subject = subject.clone();
        async move {
            reconciler
                .apply_event(&subject, &no_record(racing, 9).encode_to_vec(), &trace)
                .await
        }
    });
    assert_eq!(
        backends_waiting_on_locks(&env, 1).await?,
        1,
        "the failure waits for the send record"
    );
    connector.commit().await?;
    applying.await??;
    assert_eq!(
        status_of(&env.pool, racing).await?,
        "unknown",
        "the send came first"
    );
    assert_eq!(closed(racing).await?, Some(false));
    Ok(())
}

/// How many backends wait on a row lock, once `expected` do (or after 5 s).
async fn backends_waiting_on_locks(env: &Env, expected: i64) -> Result<i64> {
    let mut waiting = 0;
    for _ in 0..100 {
        waiting = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&env.pool)
        .await?;
        if waiting >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(waiting)
}

/// `loket_reconciler::run` with `settings` as a task, until `shutdown`.
/// Its event consumer deleted (an operator's mistake), a reconciler has
/// nothing left to pull: it stops with an error that says so, and its
/// process exits non-zero for the supervisor to restart it (which creates
/// the consumer again). Returning as if asked to stop would leave a process
/// that exits 0 and is not restarted, with results piling up unapplied.
#[tokio::test]
async fn a_deleted_event_consumer_stops_the_reconciler_with_an_error() -> Result<()> {
    let env = env().await?;
    let shutdown = Shutdown::new();
    let running = start_reconciler(settings(&env), shutdown.clone()).await?;
    let stream = env.js.get_stream(subjects::EVENT_STREAM).await?;
    let mut deleted = false;
    for _ in 0..100 {
        // Created by the reconciler as it starts.
        if stream
            .delete_consumer(subjects::RECONCILER_CONSUMER)
            .await
            .is_ok()
        {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted, "the reconciler's consumer was never created");
    let ended = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .context("the reconciler did not stop on its own")??;
    let error = ended.expect_err("an error, so the process exits non-zero");
    assert!(
        matches!(error, loket_reconciler::Error::StreamEnded),
        "{error}"
    );
    assert!(!shutdown.is_triggered(), "nobody asked it to stop");
    Ok(())
}

async fn start_reconciler(
    settings: Settings,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<Result<(), loket_reconciler::Error>>> {
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(tokio::spawn(loket_reconciler::run(
        settings,
        loket_reconciler::Listeners { admin },
        shutdown,
    )))
}

/// RELIABILITY #5: a reconciler killed mid-batch (its task aborted, which
/// ends its batches with it; their database transactions roll back) leaves
/// every event to a replica started after it, and each is applied exactly
/// once: one transition per transaction, one claim per event.
#[tokio::test]
async fn a_reconciler_killed_mid_batch_applies_every_event_once_after_restart() -> Result<()> {
    let env = env().await?;
    // Two of the rows are held, so the batch stops half-way, inside its
    // database transaction.
    let (ids, holder) = four_with_two_held(&env).await?;
    let mut settings = settings(&env);
    settings.concurrency = 1;
    settings.ack_wait_ms = 2_000;
    let killed = start_reconciler(settings.clone(), Shutdown::new()).await?;
    let event_ids = publish_successes(&env, &ids).await?;
    assert_eq!(
        backends_waiting_on_locks(&env, 1).await?,
        1,
        "the batch waits on the held rows"
    );
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    holder.rollback().await?;
    // The killed batch died with its task: the rows it waited for are free
    // now, and still nothing is applied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(
            status_of(&env.pool, *id).await?,
            "received",
            "nothing applied yet"
        );
    }

    let restarted = start_reconciler(settings, Shutdown::new()).await?;
    for id in &ids {
        let status = status_within(&env.pool, *id, "success", Duration::from_secs(20)).await?;
        assert_eq!(status, "success", "{id}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in &ids {
        assert_eq!(
            count(
                &env.pool,
                "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND to_status = 'success'",
                *id
            )
            .await?,
            1,
            "{id}: one transition"
        );
    }
    let claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM applied_events WHERE event_id = ANY($1)")
            .bind(&event_ids)
            .fetch_one(&env.pool)
            .await?;
    assert_eq!(claims, 4, "each event claimed once");
    restarted.abort();
    Ok(())
}

/// A draining reconciler hands the events it has received but not started
/// back at once, so another replica applies them now rather than after
/// their ack wait. Here both of A's batch slots wait on rows a test
/// transaction holds locked, and the next two events sit in A's pull buffer
/// when it drains.
#[tokio::test]
async fn a_draining_reconciler_hands_back_what_it_has_not_started() -> Result<()> {
    let env = env().await?;
    let (ids, holder) = four_with_two_held(&env).await?;
    let mut settings = settings(&env);
    settings.concurrency = 2;
    settings.event_batch_max = 1;
    // Far longer than the test may take: an event left to its ack wait
    // would fail it.
    settings.ack_wait_ms = 60_000;
    settings.common.shutdown_grace_ms = 1_000;
    let shutdown_a = Shutdown::new();
    let replica_a = start_reconciler(settings.clone(), shutdown_a.clone()).await?;
    publish_successes(&env, &ids).await?;
    // Both slots are taken once two of A's backends wait on the locks.
    assert_eq!(
        backends_waiting_on_locks(&env, 2).await?,
        2,
        "A's two batches wait on the locked rows"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown_a.trigger();
    let replica_b = start_reconciler(settings, Shutdown::new()).await?;

    for id in &ids[2..] {
        let status = status_within(&env.pool, *id, "success", Duration::from_secs(15)).await?;
        assert_eq!(status, "success", "{id} was handed back and applied by B");
    }
    holder.rollback().await?;
    for id in &ids[..2] {
        let status = status_within(&env.pool, *id, "success", Duration::from_secs(15)).await?;
        assert_eq!(
            status, "success",
            "{id}, in flight at A, applied once unlocked"
        );
    }
    tokio::time::timeout(Duration::from_secs(15), replica_a)
        .await
        .context("A did not stop")???;
    replica_b.abort();
    Ok(())
}

/// Each tick step reads an index holding little more than the rows it
/// wants (migration 0015), not every unresolved transaction: with a backlog
/// of long-lived pending ones (QR payments and pay-ins live for up to a
/// day), every tick on every replica read them all to find the few received
/// ones, open inquiries or never-sent transactions. Planned as the
/// reconciler's connections plan (generic plans, sequential scans off) over
/// a backlog of 2,000 pending purchases.
#[tokio::test]
async fn tick_steps_read_indexes_holding_only_their_rows() -> Result<()> {
    use loket_reconciler::scheduler::{
        lock_batch_query, EXPIRING_INQUIRIES, SWEEP_NEVER_SENT_QUERY, SWEEP_RECEIVED_QUERY,
    };
    let env = env().await?;
    sqlx::query(
        "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
         provider_product_code, account, amount_minor, request_hash, provider_reference, created_at) \
         SELECT gen_random_uuid(), $1, 'backlog-' || n, 'prepaid_purchase', 'pending', 'okebayar', \
           'TSEL10', 'S10', '0812', 10500, '\\x00', 'LKTBACKLOG' || n, now() - interval '2 hours' \
         FROM generate_series(1, 2000) AS n",
    )
    .bind(env.client_id)
    .execute(&env.pool)
    .await?;
    sqlx::query("ANALYZE transactions")
        .execute(&env.pool)
        .await?;

    let now = chrono::Utc::now();
    let mut tx = env.pool.begin().await?;
    let mut plans = Vec::new();
    let received: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {}", *SWEEP_RECEIVED_QUERY))
            .bind(now)
            .bind(now)
            .bind(60.0_f64)
            .bind(4_i32)
            .bind(256_i64)
            .fetch_one(&mut *tx)
            .await?;
    plans.push((
        "the sweep's received",
        received,
        "transactions_unresolved_by_status",
    ));
    let never_sent: serde_json::Value = sqlx::query_scalar(&format!(
        "EXPLAIN (FORMAT JSON) {}",
        *SWEEP_NEVER_SENT_QUERY
    ))
    .bind(now)
    .bind(256_i64)
    .bind(vec!["prepaid_purchase"])
    .fetch_one(&mut *tx)
    .await?;
    plans.push((
        "the sweep's never sent",
        never_sent,
        "transactions_not_found",
    ));
    for condition in EXPIRING_INQUIRIES.iter() {
        let inquiries: serde_json::Value = sqlx::query_scalar(&format!(
            "EXPLAIN (FORMAT JSON) {}",
            lock_batch_query(condition)
        ))
        .bind(now)
        .bind(256_i64)
        .fetch_one(&mut *tx)
        .await?;
        plans.push((
            "the inquiry expiry's",
            inquiries,
            "transactions_open_inquiries",
        ));
    }
    tx.rollback().await?;
    let received_conditions = index_conditions(&plans[0].1);
    assert!(
        received_conditions.contains("status = 'received'"),
        "the received ones are a range of the index, not a filter over it: {received_conditions}"
    );
    for (step, plan, index) in plans {
        let plan = plan.to_string();
        assert!(plan.contains(index), "{step} rows through {index}: {plan}");
    }
    Ok(())
}

/// Every `Index Cond` of an `EXPLAIN (FORMAT JSON)` plan.
fn index_conditions(plan: &serde_json::Value) -> String {
    fn find(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(condition) = map.get("Index Cond").and_then(|c| c.as_str()) {
                    out.push(condition.to_string());
                }
                map.values().for_each(|v| find(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| find(v, out)),
            _ => {}
        }
    }
    let mut conditions = Vec::new();
    find(plan, &mut conditions);
    conditions.join(" | ")
}
