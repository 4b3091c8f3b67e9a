//! The ingress through its real `run`, over gRPC, against a private
//! nats-server and PostgreSQL. A tiny stand-in plays the reconciler (it marks
//! a row final and publishes the update) so waiting can be proven; the full
//! pipeline is the workspace's end-to-end suite.

mod support;

use futures::StreamExt as _;
use loket_ingress::{Listeners, Settings};
use loket_protocol::pb::{self, loket_client::LoketClient};
use loket_protocol::{subjects, Provider};
use loket_runtime::{Secret, Shutdown};
use prost::Message as _;
use sqlx::PgPool;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

const KEY_A: &str = "key-a-0123456789";
const KEY_B: &str = "key-b-0123456789";

fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

fn purchase(client_ref: &str, product: &str, account: &str, wait_ms: u32) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        client_ref: client_ref.into(),
        product_code: product.into(),
        account: account.into(),
        inquiry_id: String::new(),
        wait_ms,
    }
}

async fn seed(pool: &PgPool) -> anyhow::Result<(Uuid, Uuid)> {
    let a = Uuid::now_v7();
    let b = Uuid::now_v7();
    for (id, name, key) in [(a, "a", KEY_A), (b, "b", KEY_B)] {
        sqlx::query("INSERT INTO clients (id, name, api_key_hash) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(&loket_ingress::auth::hash_key(key)[..])
            .execute(pool)
            .await?;
    }
    sqlx::query(
        "INSERT INTO clients (id, name, api_key_hash, disabled) VALUES ($1, 'off', $2, TRUE)",
    )
    .bind(Uuid::now_v7())
    .bind(&loket_ingress::auth::hash_key("disabled-key")[..])
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO products (code, provider, provider_product_code, kind, price_minor, active) VALUES \
         ('PULSA10', 'okebayar', 'S10', 'prepaid', 10500, TRUE), \
         ('PLN20', 'okebayar', 'PLN20', 'pln_prepaid', 20000, TRUE), \
         ('PLNPOST', 'okebayar', 'PLNPASCA', 'postpaid', NULL, TRUE), \
         ('OFF5', 'okebayar', 'S5', 'prepaid', 5500, FALSE)",
    )
    .execute(pool)
    .await?;
    Ok((a, b))
}

async fn stream_messages(js: &async_nats::jetstream::Context) -> u64 {
    js.get_stream(subjects::COMMAND_STREAM)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// Plays the reconciler for one transaction: final state in the row, then
/// the update on `loket.upd.<client>.<id>`.
async fn settle(pool: &PgPool, nats: &async_nats::Client, id: Uuid, status: &str) {
    sqlx::query(
        "UPDATE transactions SET status = $2, provider_code = '000', serial_number = 'SN-1', updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .execute(pool)
    .await
    .unwrap();
    let row = loket_store::get(pool, id).await.unwrap().unwrap();
    nats.publish(
        subjects::update(&row.client_id.to_string(), &id.to_string()),
        row.to_pb().encode_to_vec().into(),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_against_real_nats_and_postgres() -> anyhow::Result<()> {
    let nats_server = support::Nats::start()?;
    let postgres = support::Postgres::start()?;
    let db_url = Secret::new(postgres.url.clone());
    let pool = loket_runtime::db::connect(&db_url, 4).await?;
    loket_runtime::db::migrate(&pool).await?;
    let (client_a, _client_b) = seed(&pool).await?;

    let mut settings = Settings::default();
    settings.common.nats_url = nats_server.url.clone();
    settings.common.database_url = db_url;
    settings.common.shutdown_grace_ms = 5_000;
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = main.local_addr()?;
    let shutdown = Shutdown::new();
    let server = tokio::spawn(loket_ingress::run(
        settings,
        Listeners { main, admin },
        shutdown.clone(),
    ));

    let channel = loop {
        match Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut api = LoketClient::new(channel.clone());
    let nats = async_nats::connect(&nats_server.url).await?;
    let js = async_nats::jetstream::new(nats.clone());

    // Health reports SERVING (wait until the service has started).
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut serving = false;
    for _ in 0..100 {
        let check = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(&check, Ok(r) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
        {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serving, "health never reported SERVING");

    // --- authentication: every refusal looks the same
    for key in [None, Some("wrong-key"), Some("disabled-key")] {
        let mut request = Request::new(purchase("r0", "PULSA10", "081234567890", 0));
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("x-api-key", key.parse().unwrap());
        }
        let status = api.purchase(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{key:?}");
        assert_eq!(status.message(), "missing or invalid API key");
    }

    // --- validation and routing errors
    let status = api
        .purchase(with_key(KEY_A, purchase("r0", "PULSA10", "08-12", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("account:"),
        "{}",
        status.message()
    );
    let status = api
        .purchase(with_key(KEY_A, purchase("r 0", "PULSA10", "0812345", 0)))
        .await
        .unwrap_err();
    assert!(status.code() == Code::InvalidArgument && status.message().starts_with("client_ref:"));
    let status = api
        .purchase(with_key(KEY_A, purchase("r0", "NOPE", "0812345", 0)))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "product NOPE not found")
    );
    let status = api
        .purchase(with_key(KEY_A, purchase("r0", "OFF5", "0812345", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("OFF5"));
    let status = api
        .purchase(with_key(KEY_A, purchase("r0", "PLNPOST", "0812345", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = api
        .inquire(with_key(
            KEY_A,
            pb::InquireRequest {
                client_ref: "r0".into(),
                product_code: "PULSA10".into(),
                account: "0812345".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // --- a purchase: inserted, dispatched once, recorded
    let before = stream_messages(&js).await;
    let first = api
        .purchase(with_key(
            KEY_A,
            purchase("r1", "PULSA10", "081234567890", 0),
        ))
        .await?
        .into_inner();
    assert_eq!(first.status, pb::TransactionStatus::Received as i32);
    assert_eq!(first.kind, pb::TransactionKind::PrepaidPurchase as i32);
    assert_eq!(first.amount.as_ref().map(|m| m.minor), Some(10_500));
    assert_eq!(first.provider, "okebayar");
    assert_eq!(first.provider_reference, first.id.replace('-', ""));
    assert_eq!(stream_messages(&js).await, before + 1);
    let id = Uuid::parse_str(&first.id)?;
    let (source, count): (String, i64) = sqlx::query_as(
        "SELECT min(source), count(*) FROM transaction_events WHERE transaction_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!((source.as_str(), count), ("ingress", 1));
    // The command on the stream is the row's first dispatch.
    let stream = js.get_stream(subjects::COMMAND_STREAM).await?;
    let stored = stream
        .get_last_raw_message_by_subject("loket.cmd.okebayar.purchase")
        .await?;
    let command = pb::bus::Command::decode(stored.payload.as_ref())?;
    assert_eq!(command.transaction_id, first.id);
    assert!(command.first_dispatch);
    assert_eq!(command.provider_product_code, "S10");
    assert_eq!(command.amount.map(|m| m.minor), Some(10_500));
    // dispatched_at is recorded (batched, so allow a moment).
    let mut dispatched = false;
    for _ in 0..50 {
        let row = loket_store::get(&pool, id).await?.unwrap();
        if row.dispatched_at.is_some() && row.dispatch_count == 1 {
            dispatched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dispatched, "dispatched_at never recorded");

    // --- idempotency
    let again = api
        .purchase(with_key(
            KEY_A,
            purchase("r1", "PULSA10", "081234567890", 0),
        ))
        .await?
        .into_inner();
    assert_eq!(again.id, first.id);
    assert_eq!(
        stream_messages(&js).await,
        before + 1,
        "a replay must not publish"
    );
    let status = api
        .purchase(with_key(
            KEY_A,
            purchase("r1", "PULSA10", "089999999999", 0),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("account (existing 081234567890 vs requested 089999999999)"),
        "{}",
        status.message()
    );
    // 20 concurrent identical calls: one row, one publish.
    let calls = (0..20).map(|_| {
        let mut api = api.clone();
        async move {
            api.purchase(with_key(
                KEY_A,
                purchase("r-many", "PULSA10", "081200000000", 0),
            ))
            .await
            .map(|r| r.into_inner().id)
        }
    });
    let ids: Vec<String> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions WHERE client_ref = 'r-many'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(rows, 1);
    assert_eq!(stream_messages(&js).await, before + 2);

    // --- client isolation: B sees nothing of A's
    let status = api
        .get_transaction(with_key(
            KEY_B,
            pb::GetTransactionRequest {
                key: Some(pb::get_transaction_request::Key::Id(first.id.clone())),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let listed = api
        .list_transactions(with_key(KEY_B, pb::ListTransactionsRequest::default()))
        .await?
        .into_inner();
    assert!(listed.transactions.is_empty());
    let by_ref = api
        .get_transaction(with_key(
            KEY_A,
            pb::GetTransactionRequest {
                key: Some(pb::get_transaction_request::Key::ClientRef("r1".into())),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(by_ref.id, first.id);

    // --- wait: returns once settled (a stand-in reconciler settles it)
    let mut commands = nats.subscribe("loket.cmd.okebayar.>").await?;
    nats.flush().await?;
    let reconciler = {
        let pool = pool.clone();
        let nats = nats.clone();
        tokio::spawn(async move {
            let message = commands.next().await.unwrap();
            let command = pb::bus::Command::decode(message.payload.as_ref()).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            settle(
                &pool,
                &nats,
                Uuid::parse_str(&command.transaction_id).unwrap(),
                "success",
            )
            .await;
        })
    };
    let started = std::time::Instant::now();
    let waited = api
        .purchase(with_key(
            KEY_A,
            purchase("r-wait", "PULSA10", "081211111111", 10_000),
        ))
        .await?
        .into_inner();
    reconciler.await?;
    assert_eq!(waited.status, pb::TransactionStatus::Success as i32);
    assert_eq!(waited.serial_number, "SN-1");
    assert!(
        waited.explanation.is_some(),
        "a transaction with a provider code is explained"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // --- wait: the client's deadline wins over wait_ms, with the current state
    let mut request = with_key(
        KEY_A,
        purchase("r-deadline", "PULSA10", "081222222222", 60_000),
    );
    request.set_timeout(Duration::from_millis(800));
    let started = std::time::Instant::now();
    let pending = api.purchase(request).await?.into_inner();
    assert_eq!(pending.status, pb::TransactionStatus::Received as i32);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // --- watch: A receives its update; B's watch gets nothing of A's
    let mut watch_a = api
        .watch_transactions(with_key(KEY_A, pb::WatchTransactionsRequest::default()))
        .await?
        .into_inner();
    let mut watch_b = api
        .watch_transactions(with_key(KEY_B, pb::WatchTransactionsRequest::default()))
        .await?
        .into_inner();
    let pending_id = Uuid::parse_str(&pending.id)?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    settle(&pool, &nats, pending_id, "failed").await;
    let update = tokio::time::timeout(Duration::from_secs(5), watch_a.message())
        .await??
        .unwrap();
    assert_eq!(
        (update.id.as_str(), update.status),
        (pending.id.as_str(), pb::TransactionStatus::Failed as i32)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch_b.message())
            .await
            .is_err()
    );
    let status = api
        .watch_transactions(with_key(
            KEY_B,
            pb::WatchTransactionsRequest {
                transaction_id: pending.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // --- postpaid: inquiry, then payment checks
    let inquiry = api
        .inquire(with_key(
            KEY_A,
            pb::InquireRequest {
                client_ref: "inq-1".into(),
                product_code: "PLNPOST".into(),
                account: "512345678901".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(inquiry.kind, pb::TransactionKind::BillInquiry as i32);
    assert!(inquiry.amount.is_none());
    let inquiry_id = Uuid::parse_str(&inquiry.id)?;
    let pay = |client_ref: &str, amount: i64| pb::PayBillRequest {
        client_ref: client_ref.into(),
        inquiry_id: inquiry.id.clone(),
        amount: Some(pb::Money {
            minor: amount,
            currency: "IDR".into(),
        }),
        wait_ms: 0,
    };
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-1", 12_500)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not successful"),
        "{}",
        status.message()
    );
    let bill = loket_store::bill_to_json(&pb::BillDetails {
        customer_name: "BUDI".into(),
        total_amount: Some(pb::Money {
            minor: 12_500,
            currency: "IDR".into(),
        }),
        ..Default::default()
    });
    sqlx::query(
        "UPDATE transactions SET status = 'success', bill = $2, inquiry_data = $3, expires_at = now() + interval '1 hour' \
         WHERE id = $1",
    )
    .bind(inquiry_id)
    .bind(&bill)
    .bind(serde_json::json!({"ref1": "R1"}))
    .execute(&pool)
    .await?;
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-1", 12_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("12000") && status.message().contains("12500"),
        "{}",
        status.message()
    );
    let status = api
        .pay_bill(with_key(KEY_B, pay("pay-1", 12_500)))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "another client's inquiry does not exist for B"
    );
    let payment = api
        .pay_bill(with_key(KEY_A, pay("pay-1", 12_500)))
        .await?
        .into_inner();
    assert_eq!(payment.kind, pb::TransactionKind::BillPayment as i32);
    assert_eq!(payment.account, "512345678901");
    assert_eq!(payment.inquiry_id, inquiry.id);
    let payment_command = stream
        .get_last_raw_message_by_subject("loket.cmd.okebayar.bill_payment")
        .await?;
    let payment_command = pb::bus::Command::decode(payment_command.payload.as_ref())?;
    assert_eq!(
        payment_command.inquiry_data.get("ref1").map(String::as_str),
        Some("R1")
    );
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-2", 12_500)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains(&format!("already has a payment {}", payment.id)),
        "{}",
        status.message()
    );
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-1", 13_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("amount (existing 12500 vs requested 13000)"),
        "{}",
        status.message()
    );
    // A replay after the inquiry expired still returns the payment.
    sqlx::query("UPDATE transactions SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(inquiry_id)
        .execute(&pool)
        .await?;
    assert_eq!(
        api.pay_bill(with_key(KEY_A, pay("pay-1", 12_500)))
            .await?
            .into_inner()
            .id,
        payment.id
    );
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-3", 12_500)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("expired"), "{}", status.message());

    // --- PLN prepaid: inquiry, then a purchase against it
    let pln_inquiry = api
        .inquire(with_key(
            KEY_A,
            pb::InquireRequest {
                client_ref: "pln-inq".into(),
                product_code: "PLN20".into(),
                account: "14234567890".into(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(pln_inquiry.kind, pb::TransactionKind::PrepaidInquiry as i32);
    let buy_pln = |client_ref: &str, account: &str| pb::PurchaseRequest {
        inquiry_id: pln_inquiry.id.clone(),
        ..purchase(client_ref, "PLN20", account, 0)
    };
    let status = api
        .purchase(with_key(KEY_A, buy_pln("pln-1", "14234567890")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    sqlx::query(
        "UPDATE transactions SET status = 'success', inquiry_data = $2, expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(Uuid::parse_str(&pln_inquiry.id)?)
    .bind(serde_json::json!({"ref1": "MTR", "ref2": "NAME"}))
    .execute(&pool)
    .await?;
    let status = api
        .purchase(with_key(KEY_A, buy_pln("pln-1", "14999999999")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("account"), "{}", status.message());
    let status = api
        .purchase(with_key(
            KEY_A,
            pb::PurchaseRequest {
                inquiry_id: pln_inquiry.id.clone(),
                ..purchase("pln-1", "PULSA10", "14234567890", 0)
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "inquiry_id on a plain prepaid product"
    );
    let pln = api
        .purchase(with_key(KEY_A, buy_pln("pln-1", "14234567890")))
        .await?
        .into_inner();
    assert_eq!(
        (pln.inquiry_id.as_str(), pln.amount.map(|m| m.minor)),
        (pln_inquiry.id.as_str(), Some(20_000))
    );
    let pln_command = stream
        .get_last_raw_message_by_subject("loket.cmd.okebayar.purchase")
        .await?;
    let pln_command = pb::bus::Command::decode(pln_command.payload.as_ref())?;
    assert_eq!(pln_command.transaction_id, pln.id);
    assert_eq!(
        pln_command.inquiry_data.get("ref2").map(String::as_str),
        Some("NAME")
    );

    // --- list: keyset pages cover everything once, newest first
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_transactions(with_key(
                KEY_A,
                pb::ListTransactionsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        assert!(page.transactions.len() <= 2);
        seen.extend(
            page.transactions
                .into_iter()
                .map(|t| (t.created_at.unwrap(), t.id)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions WHERE client_id = $1")
        .bind(client_a)
        .fetch_one(&pool)
        .await?;
    assert_eq!(seen.len() as i64, total);
    let mut unique: Vec<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
    assert!(seen
        .windows(2)
        .all(|w| (w[0].0.seconds, w[0].0.nanos) >= (w[1].0.seconds, w[1].0.nanos)));
    let filtered = api
        .list_transactions(with_key(
            KEY_A,
            pb::ListTransactionsRequest {
                status: pb::TransactionStatus::Success as i32,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert!(filtered
        .transactions
        .iter()
        .all(|t| t.status == pb::TransactionStatus::Success as i32));
    assert!(!filtered.transactions.is_empty());
    let status = api
        .list_transactions(with_key(
            KEY_A,
            pb::ListTransactionsRequest {
                page_token: "bm90LWEtdG9rZW4".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("page_token"));

    // --- balance: no connector → UNAVAILABLE; a responder → its balance
    let balance_request = || {
        with_key(
            KEY_A,
            pb::GetBalanceRequest {
                provider: "okebayar".into(),
            },
        )
    };
    let status = api.get_balance(balance_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let mut queries = nats
        .subscribe(subjects::balance_rpc(Provider::OkeBayar))
        .await?;
    nats.flush().await?;
    let responder = {
        let nats = nats.clone();
        tokio::spawn(async move {
            let query = queries.next().await.unwrap();
            let reply = pb::bus::BalanceReply {
                balance: Some(pb::Money {
                    minor: 1_000_000,
                    currency: "IDR".into(),
                }),
                ..Default::default()
            };
            nats.publish(query.reply.unwrap(), reply.encode_to_vec().into())
                .await
                .unwrap();
        })
    };
    let balance = api.get_balance(balance_request()).await?.into_inner();
    responder.await?;
    assert_eq!(balance.balance.map(|m| m.minor), Some(1_000_000));
    let status = api
        .get_balance(with_key(
            KEY_A,
            pb::GetBalanceRequest {
                provider: "acme".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // --- codes
    let explained = api
        .explain_code(with_key(
            KEY_A,
            pb::ExplainCodeRequest {
                provider: "okebayar".into(),
                code: "204".into(),
                operation: String::new(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(explained.code, "204");

    // --- graceful shutdown: an open watch ends, run returns
    shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch_a.message()).await?;
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}
