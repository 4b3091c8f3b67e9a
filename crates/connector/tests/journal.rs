//! The send journal against a real PostgreSQL.

use loket_connector::journal::{JournalError, Recorded, SendJournal};
use loket_runtime::{db, Secret, Shutdown, Vital};
use std::time::Duration;

async fn journal() -> SendJournal {
    journal_and_pool().await.0
}

async fn journal_and_pool() -> (SendJournal, sqlx::PgPool) {
    let url = loket_test_support::postgres::fresh_database()
        .await
        .expect("database");
    let pool = db::connect(&Secret::new(url), 4).await.expect("pool");
    (
        SendJournal::start(pool.clone(), &Vital::new(Shutdown::new())),
        pool,
    )
}

/// A new `unknown` purchase of a new client.
async fn unresolved_transaction(pool: &sqlx::PgPool) -> uuid::Uuid {
    let client = loket_test_support::postgres::new_client(pool)
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
         provider_product_code, account, amount_minor, request_hash, provider_reference) \
         VALUES ($1, $2, 'ref', 'prepaid', 'unknown', 'okebayar', 'TSEL10', 'S10', '0812', 10500, '\\x00', $3)",
    )
    .bind(id)
    .bind(client)
    .bind(format!("LKT{}", id.simple()))
    .execute(pool)
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn the_first_record_of_a_transaction_is_first_and_every_later_one_is_before() {
    let journal = journal().await;
    let id = uuid::Uuid::now_v7().to_string();
    assert!(journal.record(&id).await.unwrap().is_first());
    assert_eq!(journal.record(&id).await.unwrap(), Recorded::Before);
    assert_eq!(journal.record(&id).await.unwrap(), Recorded::Before);
    let other = uuid::Uuid::now_v7().to_string();
    assert!(journal.record(&other).await.unwrap().is_first());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_of_one_transaction_let_exactly_one_send() {
    let journal = journal().await;
    let id = uuid::Uuid::now_v7().to_string();
    // Many at once: some share a batch (one statement), others race across
    // the two slots; either way exactly one is first.
    let records = futures::future::join_all((0..40).map(|_| journal.record(&id))).await;
    let first = records
        .iter()
        .filter(|record| matches!(record, Ok(Recorded::First { .. })))
        .count();
    assert_eq!(first, 1, "{records:?}");
    assert!(records.iter().all(Result::is_ok), "{records:?}");
}

#[tokio::test]
async fn a_transaction_id_that_is_not_a_uuid_is_refused_naming_it() {
    let journal = journal().await;
    let error = journal.record("not-a-uuid").await.unwrap_err();
    assert!(
        matches!(error, JournalError::BadTransactionId(_)),
        "{error}"
    );
    assert!(error.to_string().contains("not-a-uuid"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_again_is_allowed_once_per_grace_and_never_for_an_unrecorded_transaction() {
    let journal = journal().await;
    let id = uuid::Uuid::now_v7().to_string();
    let minute = Duration::from_secs(60);
    // Never recorded: nothing to renew, so no send on this path.
    assert!(!journal.renew_if_older(&id, Duration::ZERO).await.unwrap());
    journal.record(&id).await.unwrap();
    assert!(
        !journal.renew_if_older(&id, minute).await.unwrap(),
        "recorded just now: within a minute's grace"
    );
    // Workers racing past the grace: exactly one may send.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grace = Duration::from_secs(1);
    let racing =
        futures::future::join_all((0..8).map(|_| journal.renew_if_older(&id, grace))).await;
    let allowed = racing.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(allowed, 1, "{racing:?}");
    // The winner's renewal starts a new grace.
    assert!(!journal.renew_if_older(&id, minute).await.unwrap());
}

#[tokio::test]
async fn a_settled_transaction_is_recorded_as_settled_and_never_renewed() {
    let (journal, pool) = journal_and_pool().await;
    let id = unresolved_transaction(&pool).await;
    let id_text = id.to_string();
    assert!(journal.record(&id_text).await.unwrap().is_first());
    // Unresolved, past the grace: a send again is allowed.
    assert!(journal
        .renew_if_older(&id_text, Duration::ZERO)
        .await
        .unwrap());
    for status in ["success", "failed", "needs_review"] {
        sqlx::query("UPDATE transactions SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            journal.record(&id_text).await.unwrap(),
            Recorded::Settled,
            "{status}"
        );
        assert!(
            !journal
                .renew_if_older(&id_text, Duration::ZERO)
                .await
                .unwrap(),
            "{status}: renewed for a settled transaction"
        );
    }
}

/// A first record sent only after a status check is touched when it leaves:
/// only while the record is still its own (no other worker sent it again
/// meanwhile) and the transaction is unsettled.
#[tokio::test]
async fn a_first_record_is_touched_only_while_unchanged_and_unsettled() {
    let (journal, pool) = journal_and_pool().await;
    let id = uuid::Uuid::now_v7().to_string();
    let Recorded::First { at } = journal.record(&id).await.unwrap() else {
        panic!("a first record");
    };
    assert!(journal.touch(&id, at).await.unwrap(), "unchanged: touched");
    assert!(
        !journal.touch(&id, at).await.unwrap(),
        "the touch moved the record: the old time no longer matches"
    );
    // Another worker sends it again meanwhile: this one may not.
    let other = uuid::Uuid::now_v7().to_string();
    let Recorded::First { at } = journal.record(&other).await.unwrap() else {
        panic!("a first record");
    };
    assert!(journal
        .renew_if_older(&other, Duration::ZERO)
        .await
        .unwrap());
    assert!(!journal.touch(&other, at).await.unwrap());
    // Settled meanwhile: not touched either.
    let settled = unresolved_transaction(&pool).await;
    let Recorded::First { at } = journal.record(&settled.to_string()).await.unwrap() else {
        panic!("a first record");
    };
    sqlx::query("UPDATE transactions SET status = 'failed' WHERE id = $1")
        .bind(settled)
        .execute(&pool)
        .await
        .unwrap();
    assert!(!journal.touch(&settled.to_string(), at).await.unwrap());
}

/// A database gone silent without closing its connections (its host gone, a
/// cut network; here a relay that stops forwarding) fails every journal
/// statement at the journal's work limit, instead of holding the worker, and
/// its command with progress acks, for as long as the kernel keeps the
/// connection; once the database answers again, the journal works on fresh
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_journal_statement_on_a_database_gone_silent_fails_at_its_limit() {
    let url = loket_test_support::postgres::fresh_database()
        .await
        .expect("database");
    let direct = db::connect(&Secret::new(url.clone()), 2).await.unwrap();
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed = loket_test_support::postgres::through_silenceable_relay(&url, silence.clone())
        .await
        .unwrap();
    let pool = db::connect(&Secret::new(relayed), 8).await.unwrap();
    let limit = Duration::from_secs(3);
    let journal =
        SendJournal::start_with_work_limit(pool.clone(), &Vital::new(Shutdown::new()), limit);
    let id = unresolved_transaction(&direct).await.to_string();
    let Recorded::First { at } = journal.record(&id).await.unwrap() else {
        panic!("the first record")
    };
    let unrecorded = uuid::Uuid::now_v7().to_string();

    // Each statement reaches the server and waits there on a table lock the
    // test holds; then the database goes silent and the lock is let go.
    let mut holder = direct.begin().await.unwrap();
    sqlx::query("LOCK TABLE send_intents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let statements = {
        let journal = journal.clone();
        let (id, unrecorded) = (id.clone(), unrecorded.clone());
        tokio::spawn(async move {
            let (record, renew, within, mark, refused, touch) = tokio::join!(
                journal.record(&unrecorded),
                journal.renew_if_older(&id, Duration::ZERO),
                journal.sent_within(&id, Duration::from_secs(60)),
                journal.mark_refused(&id),
                journal.refused(&id),
                journal.touch(&id, at),
            );
            [
                ("record", record.map(|_| ())),
                ("renew_if_older", renew.map(|_| ())),
                ("sent_within", within.map(|_| ())),
                ("mark_refused", mark),
                ("refused", refused.map(|_| ())),
                ("touch", touch.map(|_| ())),
            ]
        })
    };
    let waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted \
                   AND relation = 'send_intents'::regclass";
    while sqlx::query_scalar::<_, i64>(waiting)
        .fetch_one(&direct)
        .await
        .unwrap()
        < 6
    {
        assert!(
            started.elapsed() < limit,
            "the statements never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.commit().await.unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), statements)
        .await
        .expect("the work limit ends every wait")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= limit && elapsed < limit * 3, "{elapsed:?}");
    for (statement, outcome) in outcomes {
        match outcome {
            Err(JournalError::Database(error)) => {
                assert!(error.contains("within 3000 ms"), "{statement}: {error}")
            }
            other => panic!("{statement} on a silent database: {other:?}"),
        }
    }

    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    // The statements waited at their preparation, which never reached the
    // test: none was carried out.
    assert!(journal.record(&unrecorded).await.unwrap().is_first());
    assert_eq!(journal.record(&id).await.unwrap(), Recorded::Before);
    assert!(!journal.refused(&id).await.unwrap());
    assert!(journal
        .sent_within(&id, Duration::from_secs(60))
        .await
        .unwrap());
    assert!(
        journal.touch(&id, at).await.unwrap(),
        "nothing renewed it meanwhile"
    );
}

/// A provider's refusal is marked even while the database cannot take the
/// mark at first (here its table is locked past the journal's work limit,
/// three times over): the worker tries again until it is written, and only
/// then reports the refusal, so a redelivered copy can never find the
/// journal open to a second send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_marked_once_the_database_takes_it_again() {
    let (_, pool) = journal_and_pool().await;
    let limit = Duration::from_millis(300);
    let journal =
        SendJournal::start_with_work_limit(pool.clone(), &Vital::new(Shutdown::new()), limit);
    let id = unresolved_transaction(&pool).await.to_string();
    assert!(journal.record(&id).await.unwrap().is_first());

    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE send_intents IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let marking = {
        let (journal, id) = (journal.clone(), id.clone());
        tokio::spawn(async move { journal.mark_refused_until_written(&id).await })
    };
    tokio::time::sleep(limit * 3).await;
    assert!(
        !marking.is_finished(),
        "still trying while the table is locked"
    );
    holder.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), marking)
        .await
        .expect("written once the lock is gone")
        .unwrap()
        .unwrap();
    assert!(journal.refused(&id).await.unwrap());
    assert!(
        !journal.renew_if_older(&id, Duration::ZERO).await.unwrap(),
        "no send allowed after the refusal"
    );
}
