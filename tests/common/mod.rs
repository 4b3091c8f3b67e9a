//! Request builders shared by the end-to-end tests.
#![allow(dead_code)]

use loket_protocol::pb;

/// An account the OkeBayar simulator treats as scenario `suffix`
/// (see crates/simulators/SCENARIOS.md).
pub fn scenario(suffix: &str) -> String {
    format!("089900000{suffix}")
}

/// Any other account: immediate success.
pub const OK_ACCOUNT: &str = "081234567890";

pub fn purchase(
    client_ref: &str,
    product: &str,
    account: &str,
    wait_ms: u32,
) -> pb::PurchaseRequest {
    pb::PurchaseRequest {
        client_ref: client_ref.into(),
        product_code: product.into(),
        account: account.into(),
        inquiry_id: String::new(),
        wait_ms,
    }
}

/// A purchase the ingress accepted (whatever its outcome).
pub async fn bought(
    client: &mut loket_test_support::app::Client,
    request: pb::PurchaseRequest,
) -> pb::Transaction {
    client.purchase(request).await.unwrap().into_inner()
}

/// The transaction a purchase of `client_ref` created, asked for until the
/// ingress answers (what a client that met an error does: the same request
/// again, which returns the original).
pub async fn purchase_until_answered(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
    account: &str,
) -> pb::Transaction {
    order_counting_errors(client, client_ref, &Order::Purchase(account.into()))
        .await
        .0
}

/// A money-moving request of each provider loket has a connector for, as a
/// client makes it under a `client_ref`.
#[derive(Clone, Debug)]
pub enum Order {
    /// An OkeBayar prepaid purchase of `PULSA10` for the account (the
    /// simulator's scenario, see [`scenario`]).
    Purchase(String),
    /// A SNAP QR CPM payment of the amount with the demo customer token
    /// (the simulator's scenario is the amount modulo 1000).
    QrPayment(i64),
    /// A Smilepayz pay-out of the amount (the simulator's scenario is the
    /// amount modulo 1000).
    PayOut(i64),
}

impl Order {
    /// Makes the request once as `client_ref`, waiting at most `deadline`
    /// for the answer (not for the transaction to settle).
    pub async fn send(
        &self,
        client: &mut loket_test_support::app::Client,
        client_ref: &str,
        deadline: std::time::Duration,
    ) -> Result<pb::Transaction, tonic::Status> {
        fn within<T>(message: T, deadline: std::time::Duration) -> tonic::Request<T> {
            let mut request = tonic::Request::new(message);
            request.set_timeout(deadline);
            request
        }
        let answer = match self {
            Order::Purchase(account) => {
                let request = purchase(client_ref, "PULSA10", account, 0);
                client.purchase(within(request, deadline)).await
            }
            Order::QrPayment(amount) => {
                let request = qr_pay(client_ref, *amount, 0);
                client.qr_pay(within(request, deadline)).await
            }
            Order::PayOut(amount) => {
                let request = pay_out(client_ref, *amount, 0);
                client.pay_out(within(request, deadline)).await
            }
        };
        answer.map(tonic::Response::into_inner)
    }
}

/// The transaction `order` made as `client_ref` created, asked for until
/// the ingress answers, with how many of its calls met an error. Each call
/// waits at most 3 s (a service killed or a bus down may hold it); fails
/// after a minute.
pub async fn order_counting_errors(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
    order: &Order,
) -> (pb::Transaction, usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut errors = 0;
    loop {
        match order
            .send(client, client_ref, std::time::Duration::from_secs(3))
            .await
        {
            Ok(answer) => return (answer, errors),
            Err(status) => assert!(
                std::time::Instant::now() < deadline,
                "{client_ref}: the ingress never answered: {status:?}"
            ),
        }
        errors += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A purchase of `client_ref` made while the ingress's failpoint
/// `hang_before_publish` holds its command's publish: answered `received`
/// within the call's 2 s deadline all the same. Its transaction's id.
pub async fn received_while_the_publish_hangs(
    client: &mut loket_test_support::app::Client,
    client_ref: &str,
) -> uuid::Uuid {
    let mut request = tonic::Request::new(purchase(client_ref, "PULSA10", OK_ACCOUNT, 0));
    request.set_timeout(std::time::Duration::from_secs(2));
    let accepted = client
        .purchase(request)
        .await
        .expect("answered within the deadline while the publish hangs")
        .into_inner();
    assert_eq!(accepted.status(), pb::TransactionStatus::Received);
    accepted.id.parse().unwrap()
}

/// `transaction`, which must have ended `success`.
pub fn successful(transaction: pb::Transaction) -> pb::Transaction {
    assert_eq!(
        transaction.status(),
        pb::TransactionStatus::Success,
        "{transaction:?}"
    );
    transaction
}

pub fn inquire(client_ref: &str, product: &str, account: &str, wait_ms: u32) -> pb::InquireRequest {
    pb::InquireRequest {
        client_ref: client_ref.into(),
        product_code: product.into(),
        account: account.into(),
        wait_ms,
        ..Default::default()
    }
}

pub fn pay(client_ref: &str, inquiry_id: &str, amount: i64, wait_ms: u32) -> pb::PayBillRequest {
    pb::PayBillRequest {
        client_ref: client_ref.into(),
        inquiry_id: inquiry_id.into(),
        amount: Some(pb::Money {
            minor: amount,
            currency: "IDR".into(),
        }),
        wait_ms,
    }
}

pub fn by_id(id: &str) -> pb::GetTransactionRequest {
    pb::GetTransactionRequest {
        key: Some(pb::get_transaction_request::Key::Id(id.into())),
    }
}

pub fn idr(minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        minor,
        currency: "IDR".into(),
    })
}

pub fn qr_pay(client_ref: &str, amount: i64, wait_ms: u32) -> pb::QrPayRequest {
    pb::QrPayRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        wait_ms,
        ..Default::default()
    }
}

/// A cancel of the QR payment `payment_id`.
pub fn qr_cancel(client_ref: &str, payment_id: &str, wait_ms: u32) -> pb::QrCancelRequest {
    pb::QrCancelRequest {
        client_ref: client_ref.into(),
        transaction_id: payment_id.into(),
        reason: "the customer changed their mind".into(),
        wait_ms,
    }
}

/// A refund of `amount` of the QR payment `payment_id`.
pub fn qr_refund(
    client_ref: &str,
    payment_id: &str,
    amount: i64,
    wait_ms: u32,
) -> pb::QrRefundRequest {
    pb::QrRefundRequest {
        client_ref: client_ref.into(),
        transaction_id: payment_id.into(),
        amount: idr(amount),
        reason: "goods returned".into(),
        wait_ms,
    }
}

/// A Smilepayz pay-out to a BCA account (the simulator's scenario is the
/// amount modulo 1000).
pub fn pay_out(client_ref: &str, amount: i64, wait_ms: u32) -> pb::PayOutRequest {
    pb::PayOutRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        method: "BCA".into(),
        account: "1234567890".into(),
        receiver_name: "Budi".into(),
        wait_ms,
        ..Default::default()
    }
}

/// Asserts that the provider `what` names received, under every reference
/// together, exactly one money-moving request (`received`, its simulator's
/// total) per transaction of `kinds` the test made (each test has its own
/// database). A resend under a new reference leaves each transaction's own
/// count at one; only this total shows it.
pub async fn assert_one_money_request_per_transaction(
    app: &loket_test_support::TestApp,
    what: &str,
    kinds: &[loket_protocol::TransactionKind],
    received: usize,
) {
    let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions WHERE kind = ANY($1)")
        .bind(&kinds)
        .fetch_one(&app.pool)
        .await
        .expect("count the transactions");
    assert_eq!(
        received, made as usize,
        "{what}: money-moving requests under any reference, against the {kinds:?} transactions made"
    );
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not after {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// One row of a transaction's event log, with the bus event it applied
/// (`detail.event_id`) and, for an unverified callback, what it asked for
/// (`detail.action`, `status_check`) and the outcome it claimed
/// (`detail.claimed_outcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub source: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub event_id: Option<String>,
    pub action: Option<String>,
    pub claimed: Option<String>,
}

impl LoggedEvent {
    /// Whether this row is the answer to the status check that `callback`
    /// (a callback row of transaction `transaction_id`) asked for: the
    /// reconciler publishes that check as `chk:<transaction>:cb:<the
    /// callback's event id>`, and the connector answers under the same id
    /// (`:d<n>` added on a redelivery).
    pub fn answers(&self, transaction_id: &str, callback: &LoggedEvent) -> bool {
        let (Some(own), Some(asked_by)) = (&self.event_id, &callback.event_id) else {
            return false;
        };
        self.source == "status_check"
            && own.starts_with(&format!("chk:{transaction_id}:"))
            && loket_reconciler::plan::callback_of_check(own) == Some(asked_by.as_str())
    }

    /// Whether this row moved the transaction into `status` from another.
    pub fn moved_into(&self, status: &str) -> bool {
        self.to.as_deref() == Some(status) && self.from.as_deref() != Some(status)
    }
}

/// A `transaction_events` row as [`event_log`] reads it.
type EventRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The transaction's event log, oldest first.
pub async fn event_log(app: &loket_test_support::TestApp, id: &str) -> Vec<LoggedEvent> {
    let id = uuid::Uuid::parse_str(id).expect("a transaction id");
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT source, from_status, to_status, detail->>'event_id', detail->>'action', \
             detail->>'claimed_outcome' \
             FROM transaction_events WHERE transaction_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .expect("events");
    rows.into_iter()
        .map(
            |(source, from, to, event_id, action, claimed)| LoggedEvent {
                source,
                from,
                to,
                event_id,
                action,
                claimed,
            },
        )
        .collect()
}

/// The callback rows of a log.
pub fn callbacks_in(log: &[LoggedEvent]) -> Vec<&LoggedEvent> {
    log.iter().filter(|e| e.source == "callback").collect()
}

/// The one row of the log that moved the transaction into `status` from
/// another status (panics unless there is exactly one).
pub fn transition_into<'a>(log: &'a [LoggedEvent], status: &str) -> &'a LoggedEvent {
    let moves: Vec<&LoggedEvent> = log.iter().filter(|e| e.moved_into(status)).collect();
    assert_eq!(moves.len(), 1, "one transition into {status}: {log:#?}");
    moves[0]
}

/// Asserts that `log` (a transaction's event log) went through `unknown`,
/// never `failed`, and that a status check moved it into `success`: what an
/// answer we never read (our timeout, a 5xx) must lead to.
pub fn assert_unknown_then_settled_by_a_check(log: &[LoggedEvent], what: &str) {
    assert!(
        log.iter().any(|e| e.moved_into("unknown")),
        "{what}: unknown before it settled: {log:#?}"
    );
    assert!(
        !log.iter().any(|e| e.to.as_deref() == Some("failed")),
        "{what}: never failed: {log:#?}"
    );
    assert_eq!(
        transition_into(log, "success").source,
        "status_check",
        "{what}: a status check settled it: {log:#?}"
    );
}

/// Waits until the transaction has at least one callback row and every
/// callback row that asked for a status check (an unverified callback) has
/// that check's answer applied after it; returns the log then.
pub async fn wait_callback_checks_answered(
    app: &loket_test_support::TestApp,
    id: &str,
    timeout: std::time::Duration,
) -> Vec<LoggedEvent> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let log = event_log(app, id).await;
        let callbacks: Vec<(usize, &LoggedEvent)> = log
            .iter()
            .enumerate()
            .filter(|(_, e)| e.source == "callback")
            .collect();
        let answered = !callbacks.is_empty()
            && callbacks.iter().all(|(at, callback)| {
                callback.action.as_deref() != Some("status_check")
                    || log[at + 1..].iter().any(|e| e.answers(id, callback))
            });
        if answered {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "transaction {id}: not every callback's status check answered after {timeout:?}: {log:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until every event published to `LOKET_EVT` so far (results and
/// callbacks) has been applied: the stream is a work queue, so an event
/// leaves it only once the reconciler has acked it, after committing what it
/// did. A receiver answers a provider only after its callback is in the
/// stream, so once a provider has its answer, this is the point after which
/// everything that callback did (or did not do) is in the database.
pub async fn wait_events_applied(app: &loket_test_support::TestApp, timeout: std::time::Duration) {
    until_work_queue_empty(
        app,
        loket_protocol::subjects::EVENT_STREAM,
        "events still not applied by the reconciler",
        timeout,
    )
    .await;
}

/// JetStream stream `name` on `app`'s nats-server, opened once so that a
/// test can read its state as often as it likes over one connection.
pub async fn open_stream(
    app: &loket_test_support::TestApp,
    name: &str,
) -> async_nats::jetstream::stream::Stream {
    let nats = async_nats::connect(app.nats.url())
        .await
        .expect("connect to nats-server");
    async_nats::jetstream::new(nats)
        .get_stream(name)
        .await
        .expect("the stream")
}

/// The state of `stream` now: how many messages it holds, its last sequence
/// number.
pub async fn stream_state(
    stream: &mut async_nats::jetstream::stream::Stream,
) -> async_nats::jetstream::stream::State {
    stream.info().await.expect("stream info").state.clone()
}

/// Waits until the work-queue stream `stream` holds no message (each leaves
/// it only once its consumer has acked it), for at most `timeout`; `left`
/// says what the messages still there are waiting for.
async fn until_work_queue_empty(
    app: &loket_test_support::TestApp,
    stream: &str,
    left: &str,
    timeout: std::time::Duration,
) {
    let mut stream = open_stream(app, stream).await;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let count = stream_state(&mut stream).await.messages;
        if count == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} {left} after {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the connector is done with every command handed to it: the
/// command stream is a work queue, so a command leaves it only when acked.
pub async fn commands_all_handled(app: &loket_test_support::TestApp) {
    until_work_queue_empty(
        app,
        loket_protocol::subjects::COMMAND_STREAM,
        "commands still not acked by the connector",
        std::time::Duration::from_secs(15),
    )
    .await;
}

/// Waits (up to 20 s) for transaction `id` to end `failed` for want of a
/// record at the provider (the reconciler's not-found code); its row.
pub async fn failed_for_want_of_a_record(
    app: &loket_test_support::TestApp,
    id: &str,
) -> loket_store::TransactionRow {
    let row = app
        .wait_for_status(id, "failed", std::time::Duration::from_secs(20))
        .await;
    assert_eq!(
        row.provider_code.as_deref(),
        Some(loket_reconciler::plan::NOT_FOUND_CODE)
    );
    row
}
