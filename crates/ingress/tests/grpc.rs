//! The ingress through its real `run`, over gRPC, against a private
//! nats-server and PostgreSQL. A tiny stand-in plays the reconciler (it marks
//! a row final and publishes the update) so waiting can be proven; the full
//! pipeline is the workspace's end-to-end suite.

use futures::StreamExt as _;
use loket_ingress::{Listeners, Settings};
use loket_protocol::pb::{self, loket_client::LoketClient};
use loket_protocol::{subjects, Provider};
use loket_runtime::{Secret, Shutdown};
use loket_test_support::{nats::NatsServer, postgres};
use prost::Message as _;
use sqlx::{Connection as _, PgPool};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// A `GetTransaction` of transaction `id`, asked with `key`.
fn by_id(key: &str, id: &str) -> Request<pb::GetTransactionRequest> {
    with_key(
        key,
        pb::GetTransactionRequest {
            key: Some(pb::get_transaction_request::Key::Id(id.to_string())),
        },
    )
}

/// Opens `key`'s watch of `transaction_id` (empty: of all its transactions).
async fn open_watch(
    api: &mut LoketClient<Channel>,
    key: &str,
    transaction_id: &str,
) -> Result<tonic::Streaming<pb::Transaction>, tonic::Status> {
    let request = pb::WatchTransactionsRequest {
        transaction_id: transaction_id.to_string(),
    };
    Ok(api
        .watch_transactions(with_key(key, request))
        .await?
        .into_inner())
}

/// The transaction `key`'s purchase `request` answers with.
async fn bought(
    api: &mut LoketClient<Channel>,
    key: &str,
    request: pb::PurchaseRequest,
) -> Result<pb::Transaction, tonic::Status> {
    Ok(api.purchase(with_key(key, request)).await?.into_inner())
}

/// Sends `body` as the request message of the gRPC method at `path`, as
/// it is, with client A's key: for requests no generated client would encode.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc
        .unary(with_key(KEY_A, body), path, RawBytes)
        .await?
        .into_inner())
}

/// A codec that sends and receives message bytes untouched.
#[derive(Clone, Copy)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
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
            .bind(&loket_store::api_key_hash(key)[..])
            .execute(pool)
            .await?;
    }
    sqlx::query(
        "INSERT INTO clients (id, name, api_key_hash, disabled) VALUES ($1, 'off', $2, TRUE)",
    )
    .bind(Uuid::now_v7())
    .bind(&loket_store::api_key_hash("disabled-key")[..])
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO products (code, provider, provider_product_code, kind, price_minor, active) VALUES \
         ('PULSA10', 'okebayar', 'S10', 'prepaid', 10500, TRUE), \
         ('PLN20', 'okebayar', 'PLN20', 'pln_prepaid', 20000, TRUE), \
         ('PLNPOST', 'okebayar', 'PLNPASCA', 'postpaid', NULL, TRUE), \
         ('BPJS', 'okebayar', 'BPJSKS', 'postpaid', NULL, TRUE), \
         ('OFF5', 'okebayar', 'S5', 'prepaid', 5500, FALSE)",
    )
    .execute(pool)
    .await?;
    Ok((a, b))
}

/// A `QrQuery` of transaction `id` with `key`.
fn query(key: &str, id: &str, wait_ms: u32) -> Request<pb::QrQueryRequest> {
    with_key(
        key,
        pb::QrQueryRequest {
            transaction_id: id.into(),
            wait_ms,
        },
    )
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
/// the update on `loket.upd.<client>`.
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
    announce(nats, row.client_id, &row.to_pb()).await;
}

/// Publishes `transaction` of `client` on its update subject, as the
/// reconciler does (the transaction id in the `Loket-Transaction` header).
async fn announce(nats: &async_nats::Client, client: Uuid, transaction: &pb::Transaction) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(subjects::TRANSACTION_HEADER, transaction.id.as_str());
    nats.publish_with_headers(
        subjects::update(&client.to_string()),
        headers,
        transaction.encode_to_vec().into(),
    )
    .await
    .unwrap();
    nats.flush().await.unwrap();
}

/// A subscription to `subject` the server has in place (so the ingress's
/// next publish reaches it).
async fn subscribed(
    nats: &async_nats::Client,
    subject: impl async_nats::subject::ToSubject,
) -> anyhow::Result<async_nats::Subscriber> {
    let subscriber = nats.subscribe(subject).await?;
    loket_runtime::bus::confirm_subscriptions(nats).await?;
    Ok(subscriber)
}

/// The next command published on `commands`, and its transaction id.
async fn next_command(commands: &mut async_nats::Subscriber) -> (pb::bus::Command, Uuid) {
    let message = commands.next().await.unwrap();
    let command = pb::bus::Command::decode(message.payload.as_ref()).unwrap();
    let id = Uuid::parse_str(&command.transaction_id).unwrap();
    (command, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingress_against_real_nats_and_postgres() -> anyhow::Result<()> {
    let App {
        _nats_server,
        addr: _,
        admin_addr: _,
        pool,
        mut api,
        nats,
        js,
        shutdown,
        server,
        channel,
        client_a,
        bus_link: _bus_link,
    } = App::start().await?;

    // Health reports SERVING (wait until the service has started).
    assert!(
        until_health_is(
            &channel,
            tonic_health::pb::health_check_response::ServingStatus::Serving
        )
        .await,
        "health never reported SERVING"
    );

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
    // Bytes that are not a valid request (a string field that is not UTF-8;
    // a field cut short) are the caller's bad input, not INTERNAL, and
    // create nothing.
    let created_before: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await?;
    let not_utf8 = raw_call(&channel, "/loket.v1.Loket/Purchase", vec![0x0a, 0x01, 0xff])
        .await
        .unwrap_err();
    assert_eq!(not_utf8.code(), Code::InvalidArgument, "{not_utf8:?}");
    assert!(
        not_utf8.message().contains("client_ref"),
        "{}",
        not_utf8.message()
    );
    let cut_short = raw_call(&channel, "/loket.v1.Loket/Purchase", vec![0x0a, 0x05, b'r'])
        .await
        .unwrap_err();
    assert_eq!(cut_short.code(), Code::InvalidArgument, "{cut_short:?}");
    let created_after: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&pool)
        .await?;
    assert_eq!(created_after, created_before);
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
    let first = bought(
        &mut api,
        KEY_A,
        purchase("r1", "PULSA10", "081234567890", 0),
    )
    .await?;
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
    for _ in 0..150 {
        let row = loket_store::get(&pool, id).await?.unwrap();
        if row.dispatched_at.is_some() && row.dispatch_count == 1 {
            dispatched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dispatched, "dispatched_at never recorded");

    // --- idempotency
    let again = bought(
        &mut api,
        KEY_A,
        purchase("r1", "PULSA10", "081234567890", 0),
    )
    .await?;
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
        .get_transaction(by_id(KEY_B, &first.id))
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
    let mut commands = subscribed(&nats, "loket.cmd.okebayar.>").await?;
    let reconciler = {
        let pool = pool.clone();
        let nats = nats.clone();
        tokio::spawn(async move {
            let (_, id) = next_command(&mut commands).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            settle(&pool, &nats, id, "success").await;
        })
    };
    let started = std::time::Instant::now();
    let waited = bought(
        &mut api,
        KEY_A,
        purchase("r-wait", "PULSA10", "081211111111", 10_000),
    )
    .await?;
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
    // 2 s: the ingress answers 200 ms before it, room enough for a loaded
    // test machine (800 ms left only 80 ms and once timed out under load).
    request.set_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let pending = api.purchase(request).await?.into_inner();
    assert_eq!(pending.status, pb::TransactionStatus::Received as i32);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // --- wait: an update lost on its way does not leave the caller with a
    // stale state; at the end of its wait it gets what Postgres holds.
    let mut commands = subscribed(&nats, "loket.cmd.okebayar.>").await?;
    let silent = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let (_, id) = next_command(&mut commands).await;
            sqlx::query(
                "UPDATE transactions SET status = 'success', serial_number = 'SN-SILENT', updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        })
    };
    let unannounced = bought(
        &mut api,
        KEY_A,
        purchase("r-update-lost", "PULSA10", "081244444444", 1_000),
    )
    .await?;
    silent.await?;
    assert_eq!(
        (unannounced.status, unannounced.serial_number.as_str()),
        (pb::TransactionStatus::Success as i32, "SN-SILENT")
    );

    // --- dispatched_at: recorded for a transaction still unresolved after the
    // linger (r-deadline), spared for one the call saw settle. The stand-in
    // only publishes the update and leaves the row `received`, so only the
    // dispatcher dropping the mark keeps dispatched_at empty.
    let mut commands = subscribed(&nats, "loket.cmd.okebayar.>").await?;
    let announcer = {
        let pool = pool.clone();
        let nats = nats.clone();
        tokio::spawn(async move {
            let (_, id) = next_command(&mut commands).await;
            let row = loket_store::get(&pool, id).await.unwrap().unwrap();
            let mut update = row.to_pb();
            update.status = pb::TransactionStatus::Success as i32;
            announce(&nats, row.client_id, &update).await;
        })
    };
    let seen_settled = bought(
        &mut api,
        KEY_A,
        purchase("r-seen-settled", "PULSA10", "081233333333", 10_000),
    )
    .await?;
    announcer.await?;
    assert_eq!(seen_settled.status, pb::TransactionStatus::Success as i32);
    let dispatched_at = |id: Uuid| {
        let pool = pool.clone();
        async move {
            let row = loket_store::get(&pool, id).await.unwrap().unwrap();
            (row.status, row.dispatched_at.is_some())
        }
    };
    let mut deadline_marked = false;
    for _ in 0..150 {
        if dispatched_at(Uuid::parse_str(&pending.id)?).await.1 {
            deadline_marked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        deadline_marked,
        "an unresolved transaction's dispatched_at was never recorded"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        dispatched_at(Uuid::parse_str(&seen_settled.id)?).await,
        ("received".to_string(), false),
        "the mark of a transaction the call saw settle reached the database"
    );

    // --- watch: A receives its update; B's watch gets nothing of A's
    let mut watch_a = open_watch(&mut api, KEY_A, "").await?;
    let mut watch_b = open_watch(&mut api, KEY_B, "").await?;
    let mut watch_one = open_watch(&mut api, KEY_A, &pending.id).await?;
    let current = tokio::time::timeout(Duration::from_secs(5), watch_one.message())
        .await??
        .unwrap();
    assert_eq!(
        (current.id.as_str(), current.status),
        (pending.id.as_str(), pb::TransactionStatus::Received as i32),
        "a watch of one transaction starts with its current state"
    );
    let pending_id = Uuid::parse_str(&pending.id)?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another of A's transactions is announced first (same client subject):
    // the watch of all of A's sees it, the watch of `pending` skips it.
    announce(&nats, client_a, &waited).await;
    settle(&pool, &nats, pending_id, "failed").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        let update = tokio::time::timeout(Duration::from_secs(5), watch_a.message())
            .await??
            .unwrap();
        seen.push((update.id, update.status));
    }
    assert_eq!(
        seen,
        [
            (waited.id.clone(), pb::TransactionStatus::Success as i32),
            (pending.id.clone(), pb::TransactionStatus::Failed as i32)
        ]
    );
    let update = tokio::time::timeout(Duration::from_secs(5), watch_one.message())
        .await??
        .unwrap();
    assert_eq!(
        (update.id.as_str(), update.status),
        (pending.id.as_str(), pb::TransactionStatus::Failed as i32),
        "the watch of one transaction got its update and nothing of the other"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch_b.message())
            .await
            .is_err()
    );
    let status = open_watch(&mut api, KEY_B, &pending.id).await.unwrap_err();
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
    // A product taken off sale after its inquiry: its bill is not paid
    // (nothing inserted), until the product is on sale again. Whether the
    // ingress has read the catalogue again shows without a side effect: a
    // purchase of the postpaid product is FAILED_PRECONDITION while it is on
    // sale, NOT_FOUND once it is not.
    let mut probe_api = api.clone();
    let mut catalogue_reads_plnpost = async |active: bool| -> anyhow::Result<()> {
        sqlx::query("UPDATE products SET active = $1 WHERE code = 'PLNPOST'")
            .bind(active)
            .execute(&pool)
            .await?;
        let expected = if active {
            Code::FailedPrecondition
        } else {
            Code::NotFound
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = probe_api
                .purchase(with_key(
                    KEY_A,
                    purchase("probe", "PLNPOST", "512345678901", 0),
                ))
                .await
                .expect_err("a postpaid product was purchased");
            if probe.code() == expected {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the catalogue was not read again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    catalogue_reads_plnpost(false).await?;
    let status = api
        .pay_bill(with_key(KEY_A, pay("pay-1", 12_500)))
        .await
        .expect_err("a bill of a product off sale was paid");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("PLNPOST is not active"),
        "{}",
        status.message()
    );
    let payments: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transactions WHERE inquiry_id = $1 AND kind = 'bill_payment'",
    )
    .bind(inquiry_id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(payments, 0);
    catalogue_reads_plnpost(true).await?;
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
    // A field the product does not take, named like any invalid field.
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "inquiry_id on a plain prepaid product"
    );
    assert!(
        status
            .message()
            .starts_with("inquiry_id: product PULSA10 has no inquiry"),
        "{}",
        status.message()
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
    // A token continues only the listing that gave it: with a status filter
    // added it is refused, naming it; with another page size it continues.
    let first = api
        .list_transactions(with_key(
            KEY_A,
            pb::ListTransactionsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    let status = api
        .list_transactions(with_key(
            KEY_A,
            pb::ListTransactionsRequest {
                status: pb::TransactionStatus::Success as i32,
                page_token: first.next_page_token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("page_token: from a listing with other filters"),
        "{}",
        status.message()
    );
    let second = api
        .list_transactions(with_key(
            KEY_A,
            pb::ListTransactionsRequest {
                page_size: 3,
                page_token: first.next_page_token,
                ..Default::default()
            },
        ))
        .await?
        .into_inner();
    assert_eq!(
        second.transactions.first().map(|t| &t.id),
        seen.get(1).map(|(_, id)| id),
        "the second newest follows the first page"
    );

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
    let mut queries = subscribed(&nats, subjects::balance_rpc(Provider::OkeBayar)).await?;
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
    // The stand-in responder subscribed on another connection a moment ago;
    // under a loaded machine the first query may still find no responder.
    let mut attempts = 0;
    let balance = loop {
        attempts += 1;
        match api.get_balance(balance_request()).await {
            Ok(reply) => break reply.into_inner(),
            Err(status) if status.code() == Code::Unavailable && attempts < 20 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
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
    // A provider with no balance service (SNAP QR CPM) or no connector at all
    // (DOKU) is refused at once as UNIMPLEMENTED, naming why, not sent on the
    // bus to end as a retryable UNAVAILABLE; a stand-in responder proves
    // nothing was asked.
    let mut snapqr_queries = subscribed(&nats, subjects::balance_rpc(Provider::SnapQr)).await?;
    for (provider, why) in [
        ("snapqr", "no balance service"),
        ("doku", "no DOKU connector"),
    ] {
        let status = api
            .get_balance(with_key(
                KEY_A,
                pb::GetBalanceRequest {
                    provider: provider.into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{provider}: {status:?}");
        assert!(
            status.message().contains(provider) && status.message().contains(why),
            "{provider}: {}",
            status.message()
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), snapqr_queries.next())
            .await
            .is_err(),
        "a snapqr balance query reached the bus"
    );

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

    // --- graceful shutdown: an open watch ends UNAVAILABLE (watch again),
    // run returns
    shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch_a.message()).await?;
    let status = ended.expect_err("a drain ends the watch with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}

/// The ingress's TCP path to nats-server, which a test can cut (a network
/// blip between the ingress and the bus while everything else stays
/// connected) and restore.
struct BusLink {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl BusLink {
    async fn start(nats_url: &str) -> anyhow::Result<Self> {
        let port: u16 = nats_url.rsplit(':').next().unwrap_or_default().parse()?;
        let upstream = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let link = BusLink {
            addr: listener.local_addr()?,
            up: Arc::new(AtomicBool::new(true)),
            connections: Arc::default(),
        };
        let (up, connections) = (Arc::clone(&link.up), Arc::clone(&link.connections));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                if !up.load(Ordering::SeqCst) {
                    continue;
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut socket, &mut server).await;
                    }
                });
                connections.lock().unwrap().push(relay.abort_handle());
            }
        });
        Ok(link)
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops the open connections and refuses new ones until [`Self::restore`].
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// The ingress and its private NATS and PostgreSQL, for one test.
struct App {
    _nats_server: NatsServer,
    /// The gRPC port.
    addr: SocketAddr,
    /// `/readyz` and the other admin endpoints.
    admin_addr: SocketAddr,
    /// The ingress reaches nats-server through this; the test's own
    /// connection (`nats`, `js`) does not.
    bus_link: BusLink,
    pool: PgPool,
    api: LoketClient<Channel>,
    channel: Channel,
    client_a: Uuid,
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<Result<(), loket_ingress::Error>>,
}

/// The database an [`App`]'s ingress works on.
enum Database {
    Plain,
    /// Whose default for a setting is a value (`ALTER DATABASE … SET`), as
    /// a DBA or a managed service may set it.
    WithDefault(&'static str, &'static str),
    /// Reached through a relay that goes silent while the flag is set.
    ThroughRelay(Arc<AtomicBool>),
}

impl App {
    async fn start() -> anyhow::Result<Self> {
        Self::start_with(Database::Plain, |_| {}).await
    }

    /// [`App::start`] on a database set up as `database` says, with the
    /// ingress's settings changed by `configure`.
    async fn start_with(
        database: Database,
        configure: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        let nats_server = NatsServer::start()?;
        let bus_link = BusLink::start(&nats_server.url()).await?;
        let db_url = Secret::new(postgres::fresh_database().await?);
        let ingress_db_url = match &database {
            Database::ThroughRelay(silence) => Secret::new(
                postgres::through_silenceable_relay(db_url.expose(), silence.clone()).await?,
            ),
            _ => db_url.clone(),
        };
        if let Database::WithDefault(setting, value) = database {
            let mut admin = sqlx::PgConnection::connect(db_url.expose()).await?;
            let database: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut admin)
                .await?;
            sqlx::query(&format!(
                "ALTER DATABASE \"{database}\" SET {setting} = '{value}'"
            ))
            .execute(&mut admin)
            .await?;
            admin.close().await?;
        }
        // fresh_database() hands back an already-migrated database.
        let pool = loket_runtime::db::connect(&db_url, 8).await?;
        let (client_a, _client_b) = seed(&pool).await?;
        sqlx::query(
            "INSERT INTO products (code, provider, provider_product_code, kind, price_minor, active) VALUES \
             ('QRCPM', 'snapqr', 'QRCPM', 'qr_cpm', NULL, TRUE), \
             ('PAYIN', 'smilepayz', 'PAYIN', 'pay_in', NULL, TRUE), \
             ('PAYOUT', 'smilepayz', 'PAYOUT', 'pay_out', NULL, TRUE)",
        )
        .execute(&pool)
        .await?;
        let mut settings = Settings::default();
        settings.common.nats_url = bus_link.url();
        settings.common.database_url = ingress_db_url;
        settings.common.shutdown_grace_ms = 5_000;
        configure(&mut settings);
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = main.local_addr()?;
        let admin_addr = admin.local_addr()?;
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
        let nats = async_nats::connect(nats_server.url()).await?;
        let js = async_nats::jetstream::new(nats.clone());
        let app = App {
            _nats_server: nats_server,
            addr,
            admin_addr,
            bus_link,
            pool,
            api: LoketClient::new(channel.clone()),
            channel,
            client_a,
            nats,
            js,
            shutdown,
            server,
        };
        // Serving once an authenticated call gets past authentication.
        for _ in 0..100 {
            let mut api = app.api.clone();
            let probe = api
                .get_transaction(with_key(
                    KEY_A,
                    pb::GetTransactionRequest {
                        key: Some(pb::get_transaction_request::Key::ClientRef("probe".into())),
                    },
                ))
                .await;
            if matches!(&probe, Err(status) if status.code() == Code::NotFound) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(app)
    }

    async fn last_command(&self, subject: &str) -> pb::bus::Command {
        let stream = self.js.get_stream(subjects::COMMAND_STREAM).await.unwrap();
        let stored = stream
            .get_last_raw_message_by_subject(subject)
            .await
            .unwrap();
        pb::bus::Command::decode(stored.payload.as_ref()).unwrap()
    }

    /// Plays the reconciler: `sql` (with `$1` = the id) changes the row,
    /// then the row is published on its update subject.
    async fn change(&self, id: &str, sql: &str) {
        let id = Uuid::parse_str(id).unwrap();
        sqlx::query(sql).bind(id).execute(&self.pool).await.unwrap();
        let row = loket_store::get(&self.pool, id).await.unwrap().unwrap();
        announce(&self.nats, row.client_id, &row.to_pb()).await;
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.server).await???;
        Ok(())
    }
}

fn idr(minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        minor,
        currency: "IDR".into(),
    })
}

fn qr_pay(client_ref: &str, amount: i64) -> pb::QrPayRequest {
    pb::QrPayRequest {
        client_ref: client_ref.into(),
        product_code: String::new(),
        amount: idr(amount),
        qr_content: String::new(),
        wait_ms: 0,
    }
}

fn qr_refund(client_ref: &str, original: &str, amount: i64) -> pb::QrRefundRequest {
    pb::QrRefundRequest {
        client_ref: client_ref.into(),
        transaction_id: original.into(),
        amount: idr(amount),
        reason: "returned goods".into(),
        wait_ms: 0,
    }
}

fn qr_cancel(client_ref: &str, original: &str) -> pb::QrCancelRequest {
    pb::QrCancelRequest {
        client_ref: client_ref.into(),
        transaction_id: original.into(),
        reason: "wrong amount".into(),
        wait_ms: 0,
    }
}

const MARK_SUCCESS: &str = "UPDATE transactions SET status = 'success', provider_code = '2006000', \
     provider_trace = 'ISSUER-' || left(provider_reference, 8), finalized_at = now(), updated_at = now() WHERE id = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_pay_idempotency_query_and_isolation() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();

    // --- QrPay: inserted with the default product, dispatched once
    let before = stream_messages(&app.js).await;
    let mut request = qr_pay("qr-1", 10_000);
    request.qr_content = "hQVDUFYwMWEXAMPLE".into();
    let paid = api
        .qr_pay(with_key(KEY_A, request.clone()))
        .await?
        .into_inner();
    assert_eq!(paid.kind, pb::TransactionKind::QrPayment as i32);
    assert_eq!(paid.status, pb::TransactionStatus::Received as i32);
    assert_eq!(
        (paid.product_code.as_str(), paid.provider.as_str()),
        ("QRCPM", "snapqr")
    );
    assert_eq!(paid.amount.as_ref().map(|m| m.minor), Some(10_000));
    assert_eq!(paid.account, "");
    assert_eq!(stream_messages(&app.js).await, before + 1);
    let command = app.last_command("loket.cmd.snapqr.qr_payment").await;
    assert_eq!(command.transaction_id, paid.id);
    assert!(command.first_dispatch);
    assert_eq!(command.operation, pb::bus::Operation::QrPayment as i32);
    assert_eq!(command.amount.map(|m| m.minor), Some(10_000));
    assert_eq!(command.provider_reference, paid.id.replace('-', ""));
    assert_eq!(
        command.details.get("qr_content").map(String::as_str),
        Some("hQVDUFYwMWEXAMPLE")
    );
    let events = app
        .count(&format!(
            "SELECT count(*) FROM transaction_events WHERE transaction_id = '{}' AND source = 'ingress'",
            paid.id
        ))
        .await;
    assert_eq!(events, 1);

    // --- idempotency: a replay returns it without publishing; a conflict names the parameter
    let again = api
        .qr_pay(with_key(KEY_A, request.clone()))
        .await?
        .into_inner();
    assert_eq!(again.id, paid.id);
    assert_eq!(stream_messages(&app.js).await, before + 1);
    let status = api
        .qr_pay(with_key(
            KEY_A,
            pb::QrPayRequest {
                amount: idr(12_000),
                ..request.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("amount (existing 10000 vs requested 12000)"),
        "{}",
        status.message()
    );
    let status = api
        .qr_pay(with_key(
            KEY_A,
            pb::QrPayRequest {
                qr_content: String::new(),
                ..request.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status.message().contains("qr_content"),
        "{}",
        status.message()
    );
    // The same client_ref of another client is another transaction.
    let other = api
        .qr_pay(with_key(KEY_B, request.clone()))
        .await?
        .into_inner();
    assert_ne!(other.id, paid.id);
    // A product of another kind is refused, naming the call to use.
    let status = api
        .qr_pay(with_key(
            KEY_A,
            pb::QrPayRequest {
                product_code: "PULSA10".into(),
                ..qr_pay("qr-2", 10_000)
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("use Purchase"),
        "{}",
        status.message()
    );
    let status = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-2", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("amount:"),
        "{}",
        status.message()
    );

    // --- QrQuery: a status check about the payment, then the next update
    let mut checks = subscribed(&app.nats, "loket.cmd.snapqr.status").await?;
    let reconciler = {
        let app_pool = app.pool.clone();
        let nats = app.nats.clone();
        tokio::spawn(async move {
            let message = checks.next().await.unwrap();
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let command = pb::bus::Command::decode(message.payload.as_ref()).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let id = Uuid::parse_str(&command.transaction_id).unwrap();
            sqlx::query(
                "UPDATE transactions SET status = 'pending', updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&app_pool)
            .await
            .unwrap();
            let row = loket_store::get(&app_pool, id).await.unwrap().unwrap();
            announce(&nats, row.client_id, &row.to_pb()).await;
            (command, msg_id)
        })
    };
    let queried = api
        .qr_query(query(KEY_A, &paid.id, 5_000))
        .await?
        .into_inner();
    let (check, msg_id) = reconciler.await?;
    assert_eq!(check.transaction_id, paid.id);
    assert_eq!(check.operation, pb::bus::Operation::StatusCheck as i32);
    assert_eq!(
        check.original_operation,
        pb::bus::Operation::QrPayment as i32
    );
    assert!(
        msg_id.starts_with(&format!("chk:{}:q:", paid.id)),
        "{msg_id}"
    );
    assert_eq!(
        queried.status,
        pb::TransactionStatus::Pending as i32,
        "the update that followed the check"
    );
    // A query in a later window asks again; without a wait it answers at
    // once. Calls in one window share its check: a client polling in a loop
    // does not flood the issuer.
    let window = loket_ingress::service::QR_QUERY_WINDOW.as_millis();
    let into_window = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        % window;
    tokio::time::sleep(Duration::from_millis((window - into_window) as u64 + 20)).await;
    let stream_before = stream_messages(&app.js).await;
    for _ in 0..5 {
        let at_once = api.qr_query(query(KEY_A, &paid.id, 0)).await?.into_inner();
        assert_eq!(at_once.status, pb::TransactionStatus::Pending as i32);
    }
    assert_eq!(stream_messages(&app.js).await, stream_before + 1);
    // A final payment is answered at once, without asking the issuer.
    app.change(&paid.id, MARK_SUCCESS).await;
    let started = std::time::Instant::now();
    let final_state = api
        .qr_query(query(KEY_A, &paid.id, 10_000))
        .await?
        .into_inner();
    assert_eq!(final_state.status, pb::TransactionStatus::Success as i32);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stream_messages(&app.js).await, stream_before + 1);
    // Only QR payments, only the caller's.
    let status = api.qr_query(query(KEY_B, &paid.id, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let pulsa = bought(
        &mut api,
        KEY_A,
        purchase("p-1", "PULSA10", "081234567890", 0),
    )
    .await?;
    let status = api.qr_query(query(KEY_A, &pulsa.id, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not a QR payment"));
    app.stop().await
}

/// Refunds and cancels racing on one payment, each under its own
/// `client_ref`, never reverse more than was paid, on a database whose
/// default isolation is REPEATABLE READ: loket's connections run at READ
/// COMMITTED, so the guard's read after its row lock sees the reversals
/// committed while it waited. (At REPEATABLE READ all six refunds passed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refunds_and_cancels_never_exceed_the_payment_whatever_the_default_isolation(
) -> anyhow::Result<()> {
    let app = App::start_with(
        Database::WithDefault("default_transaction_isolation", "repeatable read"),
        |_| {},
    )
    .await?;
    let database_default: String = sqlx::query_scalar(
        "SELECT setconfig::text FROM pg_db_role_setting s \
         JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()",
    )
    .fetch_one(&app.pool)
    .await?;
    assert!(
        database_default.contains("default_transaction_isolation=repeatable read"),
        "{database_default}"
    );
    let ours: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(ours, "read committed");

    let mut api = app.api.clone();
    let paid = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-race", 10_000)))
        .await?
        .into_inner();
    app.change(&paid.id, MARK_SUCCESS).await;
    let mut calls = Vec::new();
    for n in 0..6 {
        let mut api = app.api.clone();
        let refund = qr_refund(&format!("rf-{n}"), &paid.id, 3_000);
        calls.push(tokio::spawn(async move {
            api.qr_refund(with_key(KEY_A, refund))
                .await
                .map(|_| "refund")
        }));
    }
    for n in 0..2 {
        let mut api = app.api.clone();
        let cancel = qr_cancel(&format!("cx-{n}"), &paid.id);
        calls.push(tokio::spawn(async move {
            api.qr_cancel(with_key(KEY_A, cancel))
                .await
                .map(|_| "cancel")
        }));
    }
    let mut accepted = Vec::new();
    for call in calls {
        match call.await? {
            Ok(kind) => accepted.push(kind),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    let refunds = accepted.iter().filter(|&&kind| kind == "refund").count();
    let cancels = accepted.len() - refunds;
    assert!(
        (cancels == 1 && refunds == 0) || (cancels == 0 && refunds == 3),
        "accepted {accepted:?}"
    );
    let (reversals, reversed): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(amount_minor)::bigint FROM transactions WHERE original_id = $1",
    )
    .bind(Uuid::parse_str(&paid.id)?)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(reversals as usize, accepted.len());
    assert!(reversed.unwrap_or(0) <= 10_000, "{reversed:?}");
    app.stop().await
}

/// A refund whose client gave up while it waited on the payment's row is
/// inserted and dispatched once the row is free, as a new purchase is: the
/// call's insert and first dispatch run on in a task of their own, so the
/// refund does not wait for the sweep (not running here), and the client's
/// retry with its client_ref answers with it. Before, the given-up call
/// took its insert down with it (or, given up during the commit, left the
/// refund committed and unpublished until the sweep's grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_its_client_gave_up_on_is_still_created_and_dispatched_at_once(
) -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let paid = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-given-up", 10_000)))
        .await?
        .into_inner();
    app.change(&paid.id, MARK_SUCCESS).await;
    let refunds = "SELECT count(*) FROM transactions WHERE kind = 'qr_refund'";

    let mut holder = app.pool.begin().await?;
    sqlx::query("SELECT id FROM transactions WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(&paid.id)?)
        .execute(&mut *holder)
        .await?;
    let mut request = with_key(KEY_A, qr_refund("rf-given-up", &paid.id, 1_000));
    request.set_timeout(Duration::from_millis(500));
    let status = api.qr_refund(request).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert_eq!(app.count(refunds).await, 0, "the row is still locked");
    holder.rollback().await?;

    let mut dispatched = None;
    for _ in 0..100 {
        let row: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, dispatch_count FROM transactions \
             WHERE kind = 'qr_refund' AND dispatched_at IS NOT NULL",
        )
        .fetch_optional(&app.pool)
        .await?;
        if row.is_some() {
            dispatched = row;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, dispatch_count) = dispatched.expect("the given-up refund was created and dispatched");
    assert_eq!(dispatch_count, 1);
    let command = app.last_command("loket.cmd.snapqr.qr_refund").await;
    assert_eq!(command.transaction_id, id.to_string());
    assert!(command.first_dispatch);

    let again = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-given-up", &paid.id, 1_000)))
        .await?
        .into_inner();
    assert_eq!(again.id, id.to_string());
    assert_eq!(app.count(refunds).await, 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qr_refunds_never_exceed_the_payment_and_cancels_need_a_live_one() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let paid = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-1", 10_000)))
        .await?
        .into_inner();

    // Not successful yet: no refund.
    let status = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-0", &paid.id, 1_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("not successful"),
        "{}",
        status.message()
    );
    app.change(&paid.id, MARK_SUCCESS).await;
    let paid_row = loket_store::get(&app.pool, Uuid::parse_str(&paid.id)?)
        .await?
        .unwrap();

    // Two partial refunds: each its own transaction, linked to the payment.
    let first = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-1", &paid.id, 3_000)))
        .await?
        .into_inner();
    assert_eq!(first.kind, pb::TransactionKind::QrRefund as i32);
    assert_eq!(first.original_id, paid.id);
    assert_eq!(first.amount.as_ref().map(|m| m.minor), Some(3_000));
    assert_eq!(first.provider, "snapqr");
    assert_ne!(first.provider_reference, paid.provider_reference);
    let command = app.last_command("loket.cmd.snapqr.qr_refund").await;
    assert_eq!(command.transaction_id, first.id);
    assert_eq!(command.operation, pb::bus::Operation::QrRefund as i32);
    assert_eq!(command.original_reference, paid_row.provider_reference);
    assert_eq!(
        Some(command.original_provider_trace.clone()),
        paid_row.provider_trace
    );
    assert_eq!(
        command.details.get("reason").map(String::as_str),
        Some("returned goods")
    );
    assert!(!command.details.contains_key("original_reference"));
    let second = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-2", &paid.id, 4_000)))
        .await?
        .into_inner();
    assert_eq!(second.original_id, paid.id);

    // A third exceeding what is left: refused, nothing inserted.
    let refunds = "SELECT count(*) FROM transactions WHERE kind = 'qr_refund'";
    assert_eq!(app.count(refunds).await, 2);
    let status = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-3", &paid.id, 3_001)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .starts_with("refund of IDR 3001 exceeds the refundable IDR 3000"),
        "{}",
        status.message()
    );
    assert_eq!(app.count(refunds).await, 2);
    // A failed refund gives its amount back.
    app.change(
        &second.id,
        "UPDATE transactions SET status = 'failed', updated_at = now() WHERE id = $1",
    )
    .await;
    let third = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-3", &paid.id, 7_000)))
        .await?
        .into_inner();
    assert_eq!(third.amount.as_ref().map(|m| m.minor), Some(7_000));
    // A replay answers even though nothing is refundable any more; a
    // conflicting reuse names the amount.
    let replay = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-1", &paid.id, 3_000)))
        .await?
        .into_inner();
    assert_eq!(replay.id, first.id);
    let status = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-1", &paid.id, 2_000)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("amount (existing 3000 vs requested 2000)"),
        "{}",
        status.message()
    );

    // Concurrent refunds of one payment are decided one after the other.
    let fresh = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-2", 10_000)))
        .await?
        .into_inner();
    app.change(&fresh.id, MARK_SUCCESS).await;
    let calls = (0..6).map(|i| {
        let mut api = api.clone();
        let id = fresh.id.clone();
        async move {
            api.qr_refund(with_key(KEY_A, qr_refund(&format!("race-{i}"), &id, 3_000)))
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 3, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|s| s.code() == Code::FailedPrecondition));
    let refunded: i64 = sqlx::query_scalar(
        "SELECT sum(amount_minor)::bigint FROM transactions WHERE original_id = $1",
    )
    .bind(Uuid::parse_str(&fresh.id)?)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(refunded, 9_000);

    // Another client cannot refund or cancel it: it does not exist for B.
    for status in [
        api.qr_refund(with_key(KEY_B, qr_refund("b-1", &fresh.id, 1)))
            .await
            .unwrap_err(),
        api.qr_cancel(with_key(KEY_B, qr_cancel("b-2", &fresh.id)))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            format!("transaction {} not found", fresh.id)
        );
    }

    // Cancel: refused for a failed payment (nothing inserted) ...
    let failed = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-3", 5_000)))
        .await?
        .into_inner();
    app.change(
        &failed.id,
        "UPDATE transactions SET status = 'failed', updated_at = now() WHERE id = $1",
    )
    .await;
    let cancels = "SELECT count(*) FROM transactions WHERE kind = 'qr_cancel'";
    let status = api
        .qr_cancel(with_key(KEY_A, qr_cancel("cx-1", &failed.id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("nothing to cancel"),
        "{}",
        status.message()
    );
    assert_eq!(app.count(cancels).await, 0);
    // ... and for a refunded one; accepted for a successful one, for its
    // whole amount, once.
    let status = api
        .qr_cancel(with_key(KEY_A, qr_cancel("cx-1", &fresh.id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let whole = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-4", 25_000)))
        .await?
        .into_inner();
    app.change(&whole.id, MARK_SUCCESS).await;
    let cancel = api
        .qr_cancel(with_key(KEY_A, qr_cancel("cx-1", &whole.id)))
        .await?
        .into_inner();
    assert_eq!(cancel.kind, pb::TransactionKind::QrCancel as i32);
    assert_eq!(cancel.original_id, whole.id);
    assert_eq!(cancel.amount.as_ref().map(|m| m.minor), Some(25_000));
    let command = app.last_command("loket.cmd.snapqr.qr_cancel").await;
    assert_eq!(command.transaction_id, cancel.id);
    assert_eq!(command.original_reference, whole.provider_reference);
    assert_eq!(
        command.details.get("reason").map(String::as_str),
        Some("wrong amount")
    );
    let status = api
        .qr_cancel(with_key(KEY_A, qr_cancel("cx-2", &whole.id)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("already has cancel"),
        "{}",
        status.message()
    );
    let status = api
        .qr_refund(with_key(KEY_A, qr_refund("rf-9", &whole.id, 1)))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("nothing is left to refund"),
        "{}",
        status.message()
    );
    assert_eq!(
        api.qr_cancel(with_key(KEY_A, qr_cancel("cx-1", &whole.id)))
            .await?
            .into_inner()
            .id,
        cancel.id
    );
    assert_eq!(app.count(cancels).await, 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_in_waits_for_instructions_and_pay_out_validates() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let pay_in = |client_ref: &str, method: &str, phone: &str, wait_ms: u32| pb::PayInRequest {
        client_ref: client_ref.into(),
        product_code: String::new(),
        amount: idr(150_000),
        method: method.into(),
        payer: Some(pb::Payer {
            name: "Budi".into(),
            phone: phone.into(),
            email: String::new(),
        }),
        expiry_seconds: 0,
        purpose: String::new(),
        wait_ms,
    };

    // W_OVO needs the payer's phone.
    let status = api
        .pay_in(with_key(KEY_A, pay_in("in-0", "W_OVO", "", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("payer.phone:"),
        "{}",
        status.message()
    );
    assert_eq!(
        app.count("SELECT count(*) FROM transactions WHERE kind = 'pay_in'")
            .await,
        0
    );

    // A pay-in with a wait returns once the instructions are known, while
    // still pending.
    let mut commands = subscribed(&app.nats, "loket.cmd.smilepayz.pay_in").await?;
    let connector = {
        let app_pool = app.pool.clone();
        let nats = app.nats.clone();
        tokio::spawn(async move {
            let (command, id) = next_command(&mut commands).await;
            for (status, payment) in [
                ("pending", None),
                (
                    "pending",
                    Some(serde_json::json!({
                        "method": "QRIS", "qr_string": "00020101021226...6304ABCD",
                        "va_number": "", "payment_url": "",
                        "expires_at": "2030-01-01T01:00:00+00:00",
                    })),
                ),
            ] {
                tokio::time::sleep(Duration::from_millis(100)).await;
                sqlx::query(
                    "UPDATE transactions SET status = $2, payment = $3, updated_at = now() WHERE id = $1",
                )
                .bind(id)
                .bind(status)
                .bind(payment)
                .execute(&app_pool)
                .await
                .unwrap();
                let row = loket_store::get(&app_pool, id).await.unwrap().unwrap();
                announce(&nats, row.client_id, &row.to_pb()).await;
            }
            command
        })
    };
    let started = std::time::Instant::now();
    let created = api
        .pay_in(with_key(
            KEY_A,
            pay_in("in-1", "QRIS", "081234567890", 10_000),
        ))
        .await?
        .into_inner();
    let command = connector.await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(created.kind, pb::TransactionKind::PayIn as i32);
    assert_eq!(created.status, pb::TransactionStatus::Pending as i32);
    assert_eq!(created.method, "QRIS");
    let payment = created.payment.clone().expect("instructions");
    assert_eq!(payment.qr_string, "00020101021226...6304ABCD");
    assert!(payment.expires_at.is_some());
    assert_eq!(command.transaction_id, created.id);
    assert_eq!(command.operation, pb::bus::Operation::PayIn as i32);
    for (key, value) in [
        ("method", "QRIS"),
        ("payer_name", "Budi"),
        ("payer_phone", "081234567890"),
        ("expiry_seconds", "3600"),
        ("purpose", "loket pay-in"),
    ] {
        assert_eq!(
            command.details.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    // A replay with a wait answers at once: the instructions are there.
    let started = std::time::Instant::now();
    let replay = api
        .pay_in(with_key(
            KEY_A,
            pay_in("in-1", "QRIS", "081234567890", 10_000),
        ))
        .await?
        .into_inner();
    assert_eq!(replay.id, created.id);
    assert!(started.elapsed() < Duration::from_secs(2));
    let status = api
        .pay_in(with_key(KEY_A, pay_in("in-1", "BCA", "081234567890", 0)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(
        status
            .message()
            .contains("method (existing QRIS vs requested BCA)"),
        "{}",
        status.message()
    );

    // Pay-out: validation names the field; a valid one carries the account.
    let pay_out = |client_ref: &str, amount: i64, method: &str, account: &str| pb::PayOutRequest {
        client_ref: client_ref.into(),
        product_code: String::new(),
        amount: idr(amount),
        method: method.into(),
        account: account.into(),
        receiver_name: "Siti".into(),
        purpose: String::new(),
        wait_ms: 0,
    };
    for (request, field) in [
        (pay_out("out-1", 9_999, "BCA", "1234567890"), "amount:"),
        (
            pay_out("out-1", 1_000_000_000, "BCA", "1234567890"),
            "amount:",
        ),
        (pay_out("out-1", 50_000, "", "1234567890"), "method:"),
        (pay_out("out-1", 50_000, "bca", "1234567890"), "method:"),
        (pay_out("out-1", 50_000, "BCA", ""), "account:"),
        (pay_out("out-1", 50_000, "BCA", "1234-5678"), "account:"),
    ] {
        let status = api.pay_out(with_key(KEY_A, request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let out = api
        .pay_out(with_key(
            KEY_A,
            pay_out("out-1", 50_000, "BCA", "1234567890"),
        ))
        .await?
        .into_inner();
    assert_eq!(out.kind, pb::TransactionKind::PayOut as i32);
    assert_eq!(
        (
            out.account.as_str(),
            out.method.as_str(),
            out.provider.as_str()
        ),
        ("1234567890", "BCA", "smilepayz")
    );
    let command = app.last_command("loket.cmd.smilepayz.pay_out").await;
    assert_eq!(command.transaction_id, out.id);
    assert_eq!(command.account, "1234567890");
    assert_eq!(command.amount.map(|m| m.minor), Some(50_000));
    assert_eq!(
        command.details.get("receiver_name").map(String::as_str),
        Some("Siti")
    );
    assert_eq!(
        command.details.get("purpose").map(String::as_str),
        Some("loket pay-out")
    );
    let status = api
        .pay_out(with_key(
            KEY_A,
            pay_out("out-1", 50_000, "BRI", "1234567890"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    // A pay-in product is not a pay-out product.
    let status = api
        .pay_out(with_key(
            KEY_A,
            pb::PayOutRequest {
                product_code: "PAYIN".into(),
                ..pay_out("out-2", 50_000, "BCA", "1234567890")
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("use PayIn"),
        "{}",
        status.message()
    );
    app.stop().await
}

/// A watch whose client stops reading is closed with RESOURCE_EXHAUSTED once
/// its buffer is full, rather than dropping updates unseen (the subscription
/// behind it would overflow) or holding them without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_that_falls_behind_its_client_is_closed_with_an_error() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let mut watch = open_watch(&mut api, KEY_A, "").await?;
    // Far more updates than the watch's buffer and the HTTP/2 windows hold
    // (hyper's client takes 2 MB a stream and 5 MB a connection before
    // anyone reads), while the client reads nothing: 30,000 updates of
    // about 400 bytes. Small ones (1.8 MB) fitted in the window when the
    // ingress sent them faster than it read the bus, and the watch never
    // fell behind.
    const UPDATES: usize = 30_000;
    let subject = subjects::update(&app.client_a.to_string());
    let bulky_ref = "r".repeat(320);
    for n in 0..UPDATES {
        let update = pb::Transaction {
            id: Uuid::now_v7().to_string(),
            client_ref: bulky_ref.clone(),
            status: pb::TransactionStatus::Pending as i32,
            updated_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 + n as i64,
                nanos: 0,
            }),
            ..Default::default()
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subjects::TRANSACTION_HEADER, update.id.as_str());
        app.nats
            .publish_with_headers(subject.clone(), headers, update.encode_to_vec().into())
            .await?;
    }
    app.nats.flush().await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let mut received = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.message()).await? {
            Ok(Some(_)) => received += 1,
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    let status = ended.expect("the watch ends with an error, not silently");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("watch again"), "{status:?}");
    assert!(received < UPDATES, "{received}");
    app.shutdown.trigger();
    Ok(())
}

/// A BPJS inquiry (a product whose provider product code is a BPJS one)
/// names the months to pay and the payer's phone (OkeBayar spec §4), and
/// months on any other bill are refused: each INVALID_ARGUMENT naming the
/// field, before anything is stored. A BPJS inquiry with neither used to be
/// taken, and billed as one month.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bpjs_inquiry_needs_its_months_and_the_payers_phone() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let inquiry = |client_ref: &str, product: &str, months: &str, contact: &str| {
        with_key(
            KEY_A,
            pb::InquireRequest {
                client_ref: client_ref.into(),
                product_code: product.into(),
                account: "8888801234567890".into(),
                account3: months.into(),
                contact: contact.into(),
                ..Default::default()
            },
        )
    };
    for (request, field) in [
        (
            inquiry("no-months", "BPJS", "", "081299990000"),
            "account3:",
        ),
        (inquiry("no-phone", "BPJS", "3", ""), "contact:"),
        (
            inquiry("mail", "BPJS", "3", "payer@example.com"),
            "contact:",
        ),
        (
            inquiry("too-many", "BPJS", "13", "081299990000"),
            "account3:",
        ),
        (
            inquiry("not-bpjs", "PLNPOST", "3", "081299990000"),
            "account3:",
        ),
    ] {
        let client_ref = request.get_ref().client_ref.clone();
        let status = api.inquire(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{client_ref}: {status:?}"
        );
        assert!(
            status.message().starts_with(field),
            "{client_ref}: {}",
            status.message()
        );
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 0, "a refused inquiry leaves nothing behind");

    let accepted = api
        .inquire(inquiry("bpjs", "BPJS", "3", "081299990000"))
        .await?
        .into_inner();
    assert_eq!(accepted.kind, pb::TransactionKind::BillInquiry as i32);
    let plain_bill = api
        .inquire(inquiry("plnpost", "PLNPOST", "", ""))
        .await?
        .into_inner();
    assert_eq!(plain_bill.kind, pb::TransactionKind::BillInquiry as i32);
    app.shutdown.trigger();
    Ok(())
}

/// A key disabled while its watch is open (revoked because it leaked) ends
/// the watch with UNAUTHENTICATED within the auth cache's TTL, as it stops
/// new calls: the holder does not go on streaming serial numbers and tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_ends_once_its_key_is_disabled() -> anyhow::Result<()> {
    let app = App::start_with(Database::Plain, |settings| settings.auth_cache_ttl_ms = 200).await?;
    let mut api = app.api.clone();
    let bought = bought(
        &mut api,
        KEY_A,
        purchase("revoked", "PULSA10", "081234567890", 0),
    )
    .await?;
    let mut watch = open_watch(&mut api, KEY_A, &bought.id).await?;
    let current = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await??
        .expect("the current state");
    assert_eq!(current.id, bought.id);

    sqlx::query("UPDATE clients SET disabled = TRUE WHERE id = $1")
        .bind(app.client_a)
        .execute(&app.pool)
        .await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refused = api
        .get_transaction(by_id(KEY_A, &bought.id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "the key is disabled");

    settle(
        &app.pool,
        &app.nats,
        Uuid::parse_str(&bought.id)?,
        "success",
    )
    .await;
    match tokio::time::timeout(Duration::from_secs(3), watch.message()).await? {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("the disabled key's watch went on: {other:?}"),
    }
    app.stop().await
}

/// gRPC reflection is on and shows the API, and only the API: a caller of
/// the client port, key or not, finds `loket.v1.Loket` and its messages,
/// not the bus's (commands, results, operator decisions), whose shapes
/// would only help someone forging them on the bus.
#[tokio::test]
async fn reflection_shows_the_api_and_not_the_bus_messages() -> anyhow::Result<()> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let app = App::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let mut reflection = ServerReflectionClient::new(channel);
    let mut ask = async |request: MessageRequest| -> Result<MessageResponse, tonic::Status> {
        let question = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter([question]))
            .await?
            .into_inner();
        let answer = answers.message().await?.expect("an answer");
        Ok(answer.message_response.expect("a response"))
    };

    let MessageResponse::ListServicesResponse(listed) =
        ask(MessageRequest::ListServices(String::new())).await?
    else {
        panic!("not a service list");
    };
    let services: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
    assert!(
        services.contains(&"loket.v1.Loket".to_string()),
        "{services:?}"
    );
    let found = ask(MessageRequest::FileContainingSymbol(
        "loket.v1.PurchaseRequest".into(),
    ))
    .await?;
    assert!(
        matches!(found, MessageResponse::FileDescriptorResponse(_)),
        "{found:?}"
    );
    for internal in [
        "loket.v1.bus.Command",
        "loket.v1.bus.ResultEvent",
        "loket.v1.bus.OperatorDecision",
    ] {
        match ask(MessageRequest::FileContainingSymbol(internal.into())).await {
            Err(status) if status.code() == Code::NotFound => {}
            Ok(MessageResponse::ErrorResponse(_)) => {}
            shown => panic!("{internal} is shown: {shown:?}"),
        }
    }
    app.stop().await
}

/// A `QrQuery` while the bus does not acknowledge (the ingress cut off it)
/// answers the state it read within the client's deadline: the status
/// check it asks for is published in the background, not awaited for the
/// publish timeout (3 s) past a 1 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_qr_query_answers_within_its_deadline_while_the_bus_is_away() -> anyhow::Result<()> {
    let app = App::start().await?;
    let mut api = app.api.clone();
    let paid = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-bus-away", 10_000)))
        .await?
        .into_inner();
    app.bus_link.cut();
    let mut request = query(KEY_A, &paid.id, 0);
    request.set_timeout(Duration::from_secs(1));
    let answered = api.qr_query(request).await?.into_inner();
    assert_eq!(answered.id, paid.id);
    assert_eq!(answered.status, paid.status, "{answered:?}");
    app.bus_link.restore();
    app.stop().await
}

/// Updates published while the ingress is off the bus never reach a watch's
/// subscription (they are kept in LOKET_UPD, not redelivered to it): the
/// watch ends with UNAVAILABLE telling the client to re-read and watch
/// again, instead of going on as if nothing was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_open_while_the_ingress_loses_the_bus_ends_with_unavailable() -> anyhow::Result<()>
{
    let app = App::start().await?;
    let mut api = app.api.clone();
    let bought = bought(
        &mut api,
        KEY_A,
        purchase("gap", "PULSA10", "081234567890", 0),
    )
    .await?;
    let mut watch = open_watch(&mut api, KEY_A, "").await?;

    // The ingress loses the bus for a moment; meanwhile the purchase succeeds.
    app.bus_link.cut();
    settle(
        &app.pool,
        &app.nats,
        Uuid::parse_str(&bought.id)?,
        "success",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.bus_link.restore();

    let status = match tokio::time::timeout(Duration::from_secs(10), watch.message()).await? {
        Err(status) => status,
        other => panic!("the watch went on after missing an update: {other:?}"),
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("watch again"), "{status:?}");
    // Re-reading, as told, shows the success the watch missed.
    let reread = api
        .get_transaction(by_id(KEY_A, &bought.id))
        .await?
        .into_inner();
    assert_eq!(reread.status, pb::TransactionStatus::Success as i32);
    app.stop().await
}

/// A call waiting for its purchase, which settles while the ingress is off
/// the bus, is answered once the bus is back, not at its deadline: the
/// update it waited for never reaches its subscription, so after the gap it
/// reads the row again (RELIABILITY #6).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_across_a_bus_gap_is_answered_once_the_bus_is_back() -> anyhow::Result<()> {
    const WAIT_MS: u32 = 30_000;
    let app = App::start().await?;
    let waiting = tokio::spawn({
        let mut api = app.api.clone();
        async move {
            let started = std::time::Instant::now();
            let request = purchase("gap-wait", "PULSA10", "081234567890", WAIT_MS);
            let answer = bought(&mut api, KEY_A, request).await;
            (answer, started.elapsed())
        }
    });
    let id = loop {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM transactions WHERE client_ref = 'gap-wait'")
                .fetch_optional(&app.pool)
                .await?;
        match found {
            Some(id) => break id,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // Its command is published and the call waits for the update.
    tokio::time::sleep(Duration::from_millis(500)).await;

    app.bus_link.cut();
    settle(&app.pool, &app.nats, id, "success").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.bus_link.restore();

    let (answer, took) =
        tokio::time::timeout(Duration::from_millis(u64::from(WAIT_MS) + 10_000), waiting).await??;
    let answer = answer?;
    assert_eq!(answer.status, pb::TransactionStatus::Success as i32);
    assert!(
        took < Duration::from_millis(u64::from(WAIT_MS / 2)),
        "answered only after {took:?}, the deadline's re-read"
    );
    app.stop().await
}

/// Polls the gRPC health service (the whole server, `""`) until it reports
/// `expected`, for at most 15 s; returns whether it did.
async fn until_health_is(
    channel: &Channel,
    expected: tonic_health::pb::health_check_response::ServingStatus,
) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for _ in 0..150 {
        let check = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(&check, Ok(r) if r.get_ref().status == expected as i32) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// gRPC health follows readiness: an ingress cut off from the bus says
/// NOT_SERVING, so a gRPC health probe or a client-side balancer sends its
/// calls elsewhere, and SERVING again once the bus is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_health_is_not_serving_while_the_ingress_is_off_the_bus() -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let app = App::start().await?;
    assert!(until_health_is(&app.channel, ServingStatus::Serving).await);
    app.bus_link.cut();
    assert!(
        until_health_is(&app.channel, ServingStatus::NotServing).await,
        "health stayed SERVING without the bus"
    );
    app.bus_link.restore();
    assert!(
        until_health_is(&app.channel, ServingStatus::Serving).await,
        "health never came back once the bus was"
    );
    app.stop().await
}

/// Whether the server closed `stream` within `within`: reads (and drops
/// whatever the server sends, its HTTP/2 frames) until the end.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// RELIABILITY #19 on the gRPC port. Connections that never send the
/// HTTP/2 preface are closed after `handshake_timeout_ms`; one that sends
/// it and then stops answering (its client vanished) is closed by the
/// keep-alive ping it does not answer; one over the per-source cap is closed
/// at once. Calls are served throughout, on a channel kept open and idle
/// across the pings (a live client answers them) and on new connections
/// once the silent ones are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_vanished_grpc_clients_are_closed_and_calls_still_served() -> anyhow::Result<()>
{
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    const PER_SOURCE: usize = 40;
    let app = App::start_with(Database::Plain, |settings| {
        settings.handshake_timeout_ms = 3_000;
        settings.keepalive_interval_ms = 300;
        settings.keepalive_timeout_ms = 300;
        settings.max_connections_per_source = PER_SOURCE;
    })
    .await?;
    let mut api = app.api.clone();
    let unknown = || by_id(KEY_A, &Uuid::now_v7().to_string());
    assert_eq!(
        api.get_transaction(unknown()).await.unwrap_err().code(),
        Code::NotFound
    );

    let started = std::time::Instant::now();
    let mut vanished = TcpStream::connect(app.addr).await?;
    vanished
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    // An empty SETTINGS frame; then it reads nothing and answers nothing.
    vanished.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
    // The test's channel holds one connection, the vanished client one.
    let mut silent = Vec::new();
    for _ in 0..PER_SOURCE - 2 {
        silent.push(TcpStream::connect(app.addr).await?);
    }
    let mut over_the_cap = TcpStream::connect(app.addr).await?;
    assert!(
        closed_within(&mut over_the_cap, Duration::from_secs(2)).await,
        "a connection over the per-source cap is closed at accept"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "checked before any handshake timed out"
    );
    assert!(
        closed_within(&mut vanished, Duration::from_secs(10)).await,
        "a client that stopped answering pings is closed"
    );
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a client that never sent the preface is closed"
        );
    }
    // The channel kept open (idle across many pings) still serves, and the
    // places the silent clients held are free again.
    assert_eq!(
        api.get_transaction(unknown()).await.unwrap_err().code(),
        Code::NotFound
    );
    let fresh = Channel::from_shared(format!("http://{}", app.addr))?
        .connect()
        .await?;
    let mut fresh = LoketClient::new(fresh);
    assert_eq!(
        fresh.get_transaction(unknown()).await.unwrap_err().code(),
        Code::NotFound
    );
    app.stop().await
}

/// A PostgreSQL gone silent without closing its connections (a crashed
/// host, a cut network) fails calls `UNAVAILABLE` at the ingress's work
/// limit, instead of holding them, and their connections, for as long as
/// the kernel keeps a connection: work under way when it went silent,
/// reads, a key not yet cached, an unknown product. Calls their clients
/// gave up midway leave no connection taken either, so once the database
/// answers again so do calls, and readiness comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_database_gone_silent_fail_at_the_work_limit_and_work_again_once_it_is_back(
) -> anyhow::Result<()> {
    const WORK_LIMIT: Duration = Duration::from_millis(2_000);
    let silence = Arc::new(AtomicBool::new(false));
    let app = App::start_with(Database::ThroughRelay(silence.clone()), |settings| {
        settings.db_work_limit_ms = WORK_LIMIT.as_millis() as u64;
        settings.db_max_connections = 6;
        // No reload of its own while the test runs.
        settings.products_refresh_ms = 600_000;
    })
    .await?;
    loket_test_support::admin::wait_ready(app.admin_addr).await;
    let mut api = app.api.clone();
    let paid = api
        .qr_pay(with_key(KEY_A, qr_pay("qr-1", 10_000)))
        .await?
        .into_inner();
    app.change(&paid.id, MARK_SUCCESS).await;

    // Refunds wait on the payment's row, which another session holds
    // locked. Five are given up by their clients meanwhile, and the
    // database goes silent while the sixth still waits.
    let mut holder = app.pool.begin().await?;
    sqlx::query("SELECT id FROM transactions WHERE id = $1 FOR UPDATE")
        .bind(Uuid::parse_str(&paid.id)?)
        .execute(&mut *holder)
        .await?;
    let refund = |n: usize, deadline: Option<Duration>| {
        let mut api = api.clone();
        let mut request = with_key(KEY_A, qr_refund(&format!("rf-{n}"), &paid.id, 1_000));
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let answer = api.qr_refund(request).await;
            (answer, started.elapsed())
        })
    };
    let waiting = refund(0, None);
    let given_up: Vec<_> = (1..=5)
        .map(|n| refund(n, Some(Duration::from_millis(600))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    silence.store(true, Ordering::SeqCst);
    for call in given_up {
        let (answer, _) = call.await?;
        let status = answer.unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    let (answer, took) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the refund under way is given up at the work limit")?;
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        took >= WORK_LIMIT && took < Duration::from_secs(10),
        "{took:?}"
    );

    // New work: a read with a cached key (A, used above), a key not yet
    // cached (B), each given up at the work limit.
    let by_client_ref = |key: &str| {
        with_key(
            key,
            pb::GetTransactionRequest {
                key: Some(pb::get_transaction_request::Key::ClientRef("gone".into())),
            },
        )
    };
    for key in [KEY_A, KEY_B] {
        let started = std::time::Instant::now();
        let status = api.get_transaction(by_client_ref(key)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{key}: {status:?}");
        let took = started.elapsed();
        assert!(
            took >= WORK_LIMIT && took < Duration::from_secs(10),
            "{key}: {took:?}"
        );
    }
    // An unknown product: the catalogue's reload is given up, and so is
    // the look for an earlier call with its client_ref (which would be
    // replayed, product or not).
    let started = std::time::Instant::now();
    let status = bought(
        &mut api,
        KEY_A,
        purchase("r-1", "NOSUCH", "081234567890", 0),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    let readyz = loket_test_support::admin::get(app.admin_addr, "/readyz").await?;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");

    // Back: calls are served, with no connection left taken by the work
    // given up, and nothing was refunded.
    silence.store(false, Ordering::SeqCst);
    holder.rollback().await?;
    for key in [KEY_A, KEY_B] {
        let status = tokio::time::timeout(
            Duration::from_secs(20),
            api.get_transaction(by_client_ref(key)),
        )
        .await
        .expect("answered")
        .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{key}: {status:?}");
    }
    loket_test_support::admin::wait_ready(app.admin_addr).await;
    assert_eq!(
        app.count("SELECT count(*) FROM transactions WHERE kind = 'qr_refund'")
            .await,
        0
    );
    app.stop().await
}
