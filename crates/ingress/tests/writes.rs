//! The ingress's batched writes against a private PostgreSQL.
//!
//! The group insert: concurrent calls share statements, yet each keeps its
//! own answer — a `client_ref` used twice in the same burst inserts once, and
//! a row breaking a constraint fails alone while the rest of its batch is
//! inserted. The `dispatched_at` marks: written only to unresolved
//! transactions, and never deadlocking with a reconciler batch that holds
//! some of the same rows. Connections the server ends under a slot cost a
//! retry, never a lost row, and one whose server goes silent (a host gone
//! without closing it) is given up after the work limit instead of holding
//! its slot for ever.

use futures::future::join_all;
use loket_ingress::errors::{to_status, ApiError};
use loket_ingress::group_insert::GroupInsert;
use loket_ingress::queries::{
    insert, insert_rows, mark_dispatched, provider_reference, Inserted, NewTransaction,
};
use loket_protocol::{Money, Provider, TransactionKind};
use loket_runtime::db::{BoundedPool, HeldConnection};
use loket_runtime::{Secret, Shutdown, Vital};
use loket_test_support::postgres;
use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

/// `pool` with the ingress's default bound on each piece of work.
fn bounded(pool: &PgPool) -> BoundedPool {
    BoundedPool::new(pool.clone(), std::time::Duration::from_secs(15))
}

async fn database() -> anyhow::Result<(PgPool, Uuid)> {
    let url = postgres::fresh_database().await?;
    let pool = loket_runtime::db::connect(&Secret::new(url), 8).await?;
    let client = postgres::new_client(&pool).await?;
    Ok((pool, client))
}

fn purchase(client: Uuid, client_ref: &str) -> NewTransaction {
    let id = Uuid::now_v7();
    NewTransaction {
        id,
        client_id: client,
        client_ref: client_ref.into(),
        kind: TransactionKind::PrepaidPurchase,
        provider: Provider::OkeBayar,
        product_code: "PULSA10".into(),
        provider_product_code: "S10".into(),
        account: "081200000001".into(),
        account2: String::new(),
        account3: String::new(),
        contact: String::new(),
        amount: Some(Money::idr(10_500)),
        request_hash: vec![7; 32],
        provider_reference: provider_reference(id),
        inquiry_id: None,
        inquiry_data: None,
        original_id: None,
        method: String::new(),
        details: None,
    }
}

async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

#[tokio::test]
async fn a_burst_inserts_each_client_ref_once_with_its_event() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let group = GroupInsert::start(bounded(&pool), &Vital::new(Shutdown::new()));
    let mut calls = Vec::new();
    for n in 0..40 {
        let client_ref = if n % 4 == 0 {
            "same-ref".to_string()
        } else {
            format!("ref-{n}")
        };
        let new = purchase(client, &client_ref);
        let group = group.clone();
        calls.push(async move {
            let id = new.id;
            (
                client_ref,
                id,
                group.insert(new, serde_json::json!({"n": n})).await,
            )
        });
    }
    let answers = join_all(calls).await;
    let mut same_ref_winners = 0;
    for (client_ref, id, answer) in answers {
        let row = answer?;
        if client_ref == "same-ref" {
            same_ref_winners += usize::from(row.is_some());
        } else {
            let row = row.expect("a distinct client_ref is inserted");
            assert_eq!((row.id, row.client_ref.as_str()), (id, client_ref.as_str()));
            assert_eq!(row.status, "received");
            assert_eq!(row.amount_minor, Some(10_500));
        }
    }
    assert_eq!(same_ref_winners, 1, "one of the ten same-ref calls inserts");
    assert_eq!(count(&pool, "SELECT count(*) FROM transactions").await?, 31);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM transactions t JOIN transaction_events e ON e.transaction_id = t.id \
             WHERE e.source = 'ingress' AND e.to_status = 'received'"
        )
        .await?,
        31,
        "every inserted row has its ingress event, and only those"
    );
    Ok(())
}

#[tokio::test]
async fn a_row_breaking_a_constraint_fails_alone() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    // A paid bill: its inquiry already has a live payment.
    let inquiry = Uuid::now_v7();
    for (id, kind, inquiry_id, client_ref) in [
        (inquiry, "bill_inquiry", None, "inq"),
        (Uuid::now_v7(), "bill_payment", Some(inquiry), "pay-1"),
    ] {
        sqlx::query(
            "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
             provider_product_code, account, request_hash, provider_reference, inquiry_id) \
             VALUES ($1, $2, $3, $4, 'success', 'okebayar', 'PLNPOST', 'PLNPOST', '5300', '\\x00', $5, $6)",
        )
        .bind(id)
        .bind(client)
        .bind(client_ref)
        .bind(kind)
        .bind(provider_reference(id))
        .bind(inquiry_id)
        .execute(&pool)
        .await?;
    }
    let group = GroupInsert::start(bounded(&pool), &Vital::new(Shutdown::new()));
    let mut second_payment = purchase(client, "pay-2");
    second_payment.kind = TransactionKind::BillPayment;
    second_payment.inquiry_id = Some(inquiry);
    let mut news = vec![second_payment];
    news.extend((0..10).map(|n| purchase(client, &format!("ok-{n}"))));
    let answers = join_all(news.into_iter().map(|new| {
        let group = group.clone();
        async move { group.insert(new, serde_json::json!({})).await }
    }))
    .await;
    let mut answers = answers.into_iter();
    match answers.next().expect("an answer per call") {
        Err(sqlx::Error::Database(error)) => {
            assert_eq!(error.constraint(), Some("one_live_payment_per_inquiry"))
        }
        other => panic!("the second payment of a bill must be refused, got {other:?}"),
    }
    for answer in answers {
        assert!(answer?.is_some(), "the rest of the burst is inserted");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM transactions WHERE client_ref LIKE 'ok-%'"
        )
        .await?,
        10
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM transactions WHERE client_ref = 'pay-2'"
        )
        .await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn the_schema_refuses_a_negative_amount() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let group = GroupInsert::start(bounded(&pool), &Vital::new(Shutdown::new()));
    let mut negative = purchase(client, "negative");
    negative.amount = Some(Money::idr(-5));
    match group.insert(negative, serde_json::json!({})).await {
        Err(sqlx::Error::Database(error)) => {
            assert_eq!(error.constraint(), Some("transactions_amount_not_negative"))
        }
        other => panic!("a negative amount must be refused, got {other:?}"),
    }
    let id = group
        .insert(purchase(client, "fine"), serde_json::json!({}))
        .await?
        .expect("inserted")
        .id;
    let refused = sqlx::query("UPDATE transactions SET provider_amount_minor = -1 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .expect_err("a negative provider amount must be refused");
    assert_eq!(
        refused.as_database_error().and_then(|e| e.constraint()),
        Some("transactions_provider_amount_not_negative")
    );
    Ok(())
}

/// Inserts `ids` as `received` purchases, in the order given (so their
/// physical order in the table is that order).
async fn insert_received(pool: &PgPool, client: Uuid, ids: &[Uuid]) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO transactions (id, client_id, client_ref, kind, status, provider, product_code, \
         provider_product_code, account, request_hash, provider_reference) \
         SELECT id, $2, id::text, 'prepaid_purchase', 'received', 'okebayar', 'PULSA10', 'S10', \
           '081200000001', '\\x00', replace(id::text, '-', '') \
         FROM UNNEST($1::uuid[]) WITH ORDINALITY AS i(id, position) ORDER BY position",
    )
    .bind(ids)
    .bind(client)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn dispatch_marks_skip_settled_transactions() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    insert_received(&pool, client, &ids).await?;
    sqlx::query("UPDATE transactions SET status = 'success' WHERE id = $1")
        .bind(ids[0])
        .execute(&pool)
        .await?;
    sqlx::query("UPDATE transactions SET status = 'pending' WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await?;
    assert_eq!(mark_dispatched(&bounded(&pool), &ids).await?, 3);
    // A second mark changes nothing: the first dispatch is recorded once.
    assert_eq!(mark_dispatched(&bounded(&pool), &ids).await?, 0);
    let marked: Vec<(Uuid, bool, i32)> = sqlx::query_as(
        "SELECT id, dispatched_at IS NOT NULL, dispatch_count FROM transactions ORDER BY id",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        marked,
        vec![
            (ids[0], false, 0),
            (ids[1], true, 1),
            (ids[2], true, 1),
            (ids[3], true, 1),
        ]
    );
    Ok(())
}

/// The shape of a deadlock seen under load: a reconciler batch locks its
/// rows in id order; a mark that locked rows in table order would hold the
/// highest id while waiting for the lowest, which the batch holds while
/// waiting for the highest. Marks lock in id order too, so the batch goes
/// through and the mark follows.
#[tokio::test]
async fn a_dispatch_mark_never_deadlocks_with_a_batch_locking_in_id_order() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let mut ids: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    let (lowest, highest) = (ids[0], ids[ids.len() - 1]);
    let reversed: Vec<Uuid> = ids.iter().rev().copied().collect();
    insert_received(&pool, client, &reversed).await?;
    sqlx::query("ANALYZE transactions").execute(&pool).await?;

    let lock =
        |id: Uuid| sqlx::query("SELECT id FROM transactions WHERE id = $1 FOR UPDATE").bind(id);
    let mut batch = pool.begin().await?;
    lock(lowest).execute(&mut *batch).await?;
    let mark = tokio::spawn({
        let pool = pool.clone();
        let ids = reversed.clone();
        async move { mark_dispatched(&bounded(&pool), &ids).await }
    });
    // Let the mark run into the lowest id's lock.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    lock(highest).execute(&mut *batch).await?;
    sqlx::query("UPDATE transactions SET status = 'success' WHERE id = ANY($1)")
        .bind(&[lowest, highest][..])
        .execute(&mut *batch)
        .await?;
    batch.commit().await?;

    assert_eq!(mark.await??, 298, "every still-unresolved row is marked");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM transactions WHERE dispatched_at IS NULL"
        )
        .await?,
        2,
        "the two rows the batch settled stay unmarked"
    );
    Ok(())
}

/// loket's connections keep one generic plan per statement; one made while
/// `transactions` is still nearly empty (a fresh install, analyzed after its
/// first purchase) must go by the primary key anyway, or it keeps scanning
/// the whole table as it grows.
#[tokio::test]
async fn plans_use_the_index_on_a_nearly_empty_table_and_are_never_jit_compiled(
) -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    insert_received(&pool, client, &[Uuid::now_v7()]).await?;
    sqlx::query("VACUUM ANALYZE transactions")
        .execute(&pool)
        .await?;
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (FORMAT JSON) SELECT id FROM transactions WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(vec![Uuid::now_v7()])
    .fetch_one(&pool)
    .await?;
    let plan = plan.to_string();
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("transactions_pkey"), "{plan}");
    // A statement that can only scan (the small product catalogue) now looks
    // costly to the planner; it must still not be JIT-compiled on each run.
    let plan: serde_json::Value = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT code, provider, price_minor FROM products",
    )
    .fetch_one(&pool)
    .await?;
    assert!(plan[0].get("JIT").is_none(), "{plan}");
    Ok(())
}

/// Ends every connection loket's pool holds, from a connection of its own
/// (what a server restart or an operator's `pg_terminate_backend` does).
async fn terminate_loket_connections(pool: &PgPool) -> anyhow::Result<i64> {
    let options = (*pool.connect_options())
        .clone()
        .application_name("test-terminator");
    let mut terminator = PgConnection::connect_with(&options).await?;
    // In the select list, so it runs only for the rows the filter keeps.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'loket' \
           AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut terminator)
    .await?;
    let ended = ended.into_iter().filter(|&ended| ended).count() as i64;
    Ok(ended)
}

#[tokio::test]
async fn inserts_go_on_when_the_server_ends_the_connections_the_slots_keep() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let group = GroupInsert::start(bounded(&pool), &Vital::new(Shutdown::new()));
    let burst = |tag: &'static str| {
        let group = group.clone();
        join_all((0..8).map(move |n| {
            let group = group.clone();
            async move {
                let new = purchase(client, &format!("{tag}-{n}"));
                group.insert(new, serde_json::json!({})).await
            }
        }))
    };
    for answer in burst("before").await {
        answer?.expect("inserted");
    }
    assert!(terminate_loket_connections(&pool).await? >= 1);
    // The slots' next batches find their connections ended: their rows are
    // inserted again one at a time on fresh connections, and every call
    // still gets its row.
    for answer in burst("after").await {
        answer?.expect("inserted after the connections ended");
    }
    for answer in burst("later").await {
        answer?.expect("inserted on the slots' fresh connections");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM transactions").await?, 24);
    Ok(())
}

#[tokio::test]
async fn a_held_connection_the_server_ended_is_unavailable_once_then_replaced() -> anyhow::Result<()>
{
    let (pool, _) = database().await?;
    let mut held = HeldConnection::new(pool.clone());
    let backend_pid = async |connection: &mut PgConnection| {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(connection)
            .await
    };
    let pid = held.with(backend_pid).await?;
    assert!(terminate_loket_connections(&pool).await? >= 1);

    let error = held
        .with(async |connection| sqlx::query("SELECT 1").execute(connection).await)
        .await
        .expect_err("the ended connection cannot run a statement");
    let status = to_status(&ApiError::from(error));
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // The failed statement gave the connection back; the next one is fresh.
    let fresh = held.with(backend_pid).await?;
    assert_ne!(fresh, pid, "a fresh connection replaced the ended one");
    Ok(())
}

#[tokio::test]
async fn work_on_a_connection_whose_server_went_silent_is_given_up_and_the_next_is_fresh(
) -> anyhow::Result<()> {
    let url = postgres::fresh_database().await?;
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed = Secret::new(postgres::through_silenceable_relay(&url, silence.clone()).await?);
    let pool = loket_runtime::db::connect(&relayed, 2).await?;
    let mut held = HeldConnection::with_work_limit(pool.clone(), std::time::Duration::from_secs(2));
    let select_one = async |connection: &mut PgConnection| {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(connection)
            .await
    };
    assert_eq!(held.with(select_one).await?, 1);

    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let error = tokio::time::timeout(std::time::Duration::from_secs(30), held.with(select_one))
        .await
        .expect("the work limit ends the wait")
        .expect_err("a silent server answers nothing");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let sqlx::Error::Io(io) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut, "{error}");
    assert!(error.to_string().contains("within 2000 ms"), "{error}");
    // Unavailable to a gRPC caller, who may retry.
    assert_eq!(
        to_status(&ApiError::from(error)).code(),
        tonic::Code::Unavailable
    );

    // The server is back: the next work takes a fresh connection (the
    // silent one was closed, not given back to wait in the pool).
    silence.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(held.with(select_one).await?, 1);
    Ok(())
}

/// A batch given up on a server gone silent answers every one of its calls
/// at once, each `UNAVAILABLE`: its rows are not inserted again one by one,
/// which would keep the last caller waiting a work limit per row before it
/// (16 minutes for a batch of 64 at the ingress's 15 s).
#[tokio::test]
async fn a_batch_given_up_on_a_silent_server_answers_all_its_calls_at_once() -> anyhow::Result<()> {
    let url = postgres::fresh_database().await?;
    let client =
        postgres::new_client(&loket_runtime::db::connect(&Secret::new(url.clone()), 1).await?)
            .await?;
    let silence = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relayed = Secret::new(postgres::through_silenceable_relay(&url, silence.clone()).await?);
    let pool = loket_runtime::db::connect(&relayed, 4).await?;
    let limit = std::time::Duration::from_secs(1);
    let group = GroupInsert::start(
        BoundedPool::new(pool.clone(), limit),
        &Vital::new(Shutdown::new()),
    );
    let insert = |client_ref: String| {
        let group = group.clone();
        async move {
            let started = std::time::Instant::now();
            let answer = group
                .insert(purchase(client, &client_ref), serde_json::json!({}))
                .await;
            (answer, started.elapsed())
        }
    };
    let (first, _) = insert("before".into()).await;
    first?.expect("inserted while the server answers");

    silence.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = join_all((0..30).map(|n| insert(format!("silent-{n}")))).await;
    for (answer, waited) in answers {
        let error = answer.expect_err("a silent server inserts nothing");
        assert_eq!(
            to_status(&ApiError::from(error)).code(),
            tonic::Code::Unavailable
        );
        // Two rounds of batches at most (the slots were busy when the
        // rest queued), each given up after the limit; one row after
        // another would take a limit per row.
        assert!(
            waited < limit * 6,
            "a call waited {waited:?} with a work limit of {limit:?}"
        );
    }
    Ok(())
}

/// A call's row its retry finds already there, under the call's own id (a
/// batch whose commit went through though its connection failed before the
/// answer), was created by this call: the call dispatches it, rather than
/// answering it as a replay left for the reconciler's sweep. A row of
/// another call with the same `client_ref` is a replay.
#[tokio::test]
async fn a_calls_own_row_found_on_retry_is_created_by_it() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let group = GroupInsert::start(bounded(&pool), &Vital::new(Shutdown::new()));
    let new = purchase(client, "committed-before-the-error");
    insert_rows(&pool, &[(&new, &serde_json::json!({}))]).await?;

    let again = insert(&bounded(&pool), &group, &new, serde_json::json!({})).await?;
    let Inserted::Created(row) = again else {
        panic!("the call's own row must be its to dispatch, got {again:?}")
    };
    assert_eq!(row.id, new.id);

    let other_call = purchase(client, "committed-before-the-error");
    let replay = insert(&bounded(&pool), &group, &other_call, serde_json::json!({})).await?;
    let Inserted::Existing(row) = replay else {
        panic!("another call's row is a replay, got {replay:?}")
    };
    assert_eq!(row.id, new.id);
    Ok(())
}

/// Two batches holding the same new `client_ref`s in opposite orders (a
/// client's retries spread over two replicas) never deadlock: each takes its
/// rows in key order, not in arrival order. Forced here: a third session
/// holds one of the first batch's keys, so that batch stops midway while the
/// second runs; in arrival order the first would hold `k1` and wait for `k2`
/// while the second held `k2` and waited for `k1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_inserting_the_same_refs_in_opposite_orders_never_deadlock() -> anyhow::Result<()> {
    let (pool, client) = database().await?;
    let [k0, k1, k2] = ["k0", "k1", "k2"].map(|client_ref| purchase(client, client_ref));
    let event = serde_json::json!({});
    let mut holder = pool.begin().await?;
    insert_rows(&mut *holder, &[(&k0, &event)]).await?;

    let first = {
        let pool = pool.clone();
        let (k0, k1, k2, event) = (k0.clone(), k1.clone(), k2.clone(), event.clone());
        tokio::spawn(async move {
            insert_rows(&pool, &[(&k1, &event), (&k0, &event), (&k2, &event)]).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = {
        let pool = pool.clone();
        let (k1, k2, event) = (k1.clone(), k2.clone(), event.clone());
        tokio::spawn(async move { insert_rows(&pool, &[(&k2, &event), (&k1, &event)]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    holder.rollback().await?;

    let first = first
        .await?
        .map_err(|e| anyhow::anyhow!("first batch: {e}"))?;
    let second = second
        .await?
        .map_err(|e| anyhow::anyhow!("second batch: {e}"))?;
    let mut inserted: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|row| row.client_ref.clone())
        .collect();
    inserted.sort();
    assert_eq!(inserted, ["k0", "k1", "k2"], "each ref inserted once");
    Ok(())
}
