//! End-to-end: the gRPC API's contract — idempotency by client_ref,
//! validation that names the field, isolation between clients, code
//! explanations, and that the canary PIN leaks nowhere.

mod common;

use common::*;
use futures::StreamExt;
use loket_protocol::catalogue::{self, CodeOperation};
use loket_protocol::{pb, Provider, TransactionKind};
use loket_test_support::leaks::{assert_no_secret_leaked, Canaries};
use loket_test_support::{logs, TestApp, CANARY_PIN};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_client_ref_returns_the_same_transaction_and_conflicts_are_named() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let first = bought(
        &mut client,
        purchase("idem-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    let again = bought(
        &mut client,
        purchase("idem-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    assert_eq!(first.id, again.id);
    assert_eq!(again.status(), pb::TransactionStatus::Success);
    let events_before = app.events(&first.id).await;

    let conflict = client
        .purchase(purchase("idem-1", "PULSA50", OK_ACCOUNT, 0))
        .await
        .expect_err("different parameters under the same client_ref");
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
    assert!(
        conflict.message().contains("product"),
        "names the conflict: {}",
        conflict.message()
    );
    assert_eq!(app.sim.money_requests_for(&first.provider_reference), 1);
    // Another account under the same client_ref: refused too.
    let other_account = client
        .purchase(purchase("idem-1", "PULSA10", "081298765432", 0))
        .await
        .expect_err("a different account under the same client_ref");
    assert_eq!(other_account.code(), tonic::Code::AlreadyExists);
    assert!(
        other_account.message().contains("account"),
        "{}",
        other_account.message()
    );
    // The original is untouched: same row, same events, nothing sent again.
    let row = app.row(&first.id).await;
    assert_eq!(
        (
            row.status.as_str(),
            row.product_code.as_str(),
            row.account.as_str()
        ),
        ("success", "PULSA10", OK_ACCOUNT)
    );
    assert_eq!(app.events(&first.id).await, events_before, "no event added");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions WHERE client_ref = 'idem-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);

    // A payment reusing its client_ref with a different amount.
    let inquiry = client
        .inquire(inquire("idem-inq", "PLNPOST", "531234567892", 10_000))
        .await
        .unwrap()
        .into_inner();
    let due = inquiry
        .bill
        .as_ref()
        .unwrap()
        .total_amount
        .as_ref()
        .unwrap()
        .minor;
    client
        .pay_bill(pay("idem-pay", &inquiry.id, due, 10_000))
        .await
        .unwrap();
    let changed = client
        .pay_bill(pay("idem-pay", &inquiry.id, due + 1000, 0))
        .await
        .expect_err("conflict");
    assert_eq!(changed.code(), tonic::Code::AlreadyExists);
    assert!(
        changed.message().contains("amount"),
        "{}",
        changed.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_purchases_make_one_transaction_and_one_provider_request() {
    let app = TestApp::spawn().await;
    // Fifty connections made first (RELIABILITY #21; the issue asks for
    // twenty), then every call released at once.
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(app.client_a().await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(clients.len()));
    let mut calls = Vec::new();
    for mut client in clients {
        let start = start.clone();
        calls.push(tokio::spawn(async move {
            start.wait().await;
            client
                .purchase(purchase("burst-1", "PULSA10", OK_ACCOUNT, 10_000))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for call in calls {
        ids.insert(call.await.unwrap().expect("every call answers").id);
    }
    assert_eq!(ids.len(), 1, "one transaction: {ids:?}");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transactions WHERE client_ref = 'burst-1'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
    let id = ids.into_iter().next().unwrap();
    let row = app
        .wait_for_status(&id, "success", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.sim.requests_for(&row.provider_reference).total,
        1,
        "one provider request"
    );
    assert_one_money_request_per_transaction(
        &app,
        "fifty identical purchases",
        &[TransactionKind::PrepaidPurchase],
        app.sim.money_requests_total(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_are_invalid_argument_naming_the_field() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let cases = [
        (purchase("", "PULSA10", OK_ACCOUNT, 0), "client_ref"),
        (
            purchase("bad account", "PULSA10", OK_ACCOUNT, 0),
            "client_ref",
        ),
        (purchase("r1", "", OK_ACCOUNT, 0), "product_code"),
        (purchase("r2", "PULSA10", "08123abc", 0), "account"),
        (purchase("r3", "PULSA10", OK_ACCOUNT, 10_000_000), "wait_ms"),
    ];
    for (request, field) in cases {
        let error = client.purchase(request).await.expect_err("refused");
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{field}: {error:?}"
        );
        assert!(
            error.message().starts_with(field),
            "names {field}: {}",
            error.message()
        );
    }
    let unknown = client
        .purchase(purchase("r4", "NOPE", OK_ACCOUNT, 0))
        .await
        .expect_err("refused");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad_id = client
        .pay_bill(pay("r5", "not-a-uuid", 1000, 0))
        .await
        .expect_err("refused");
    assert_eq!(bad_id.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_id.message().contains("inquiry_id"),
        "{}",
        bad_id.message()
    );
    let missing_amount = client
        .pay_bill(pb::PayBillRequest {
            client_ref: "r6".into(),
            inquiry_id: uuid::Uuid::nil().to_string(),
            amount: None,
            wait_ms: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(missing_amount.code(), tonic::Code::InvalidArgument);
    assert!(
        missing_amount.message().starts_with("amount"),
        "{}",
        missing_amount.message()
    );
    let unauthenticated = app
        .client_with_key("lk_not-a-real-key")
        .await
        .purchase(purchase("r7", "PULSA10", OK_ACCOUNT, 0))
        .await;
    assert_eq!(
        unauthenticated.expect_err("refused").code(),
        tonic::Code::Unauthenticated
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "bad input changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_never_sees_another_clients_transactions() {
    let app = TestApp::spawn().await;
    let mut a = app.client_a().await;
    let mut b = app.client_b().await;
    let mut a_watch = a
        .watch_transactions(pb::WatchTransactionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut b_watch = b
        .watch_transactions(pb::WatchTransactionsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let txn = bought(&mut a, purchase("private-1", "PULSA10", OK_ACCOUNT, 10_000)).await;
    assert_eq!(txn.status(), pb::TransactionStatus::Success);

    let seen = tokio::time::timeout(Duration::from_secs(5), a_watch.next()).await;
    assert!(
        matches!(seen, Ok(Some(Ok(ref update))) if update.id == txn.id),
        "A sees its update: {seen:?}"
    );
    // B buys after A's update went out: the first update on B's watch is
    // B's own, so the watch is alive and A's update never reached it.
    let b_txn = bought(&mut b, purchase("private-b", "PULSA10", OK_ACCOUNT, 10_000)).await;
    let first_on_b = tokio::time::timeout(Duration::from_secs(5), b_watch.next()).await;
    assert!(
        matches!(first_on_b, Ok(Some(Ok(ref update))) if update.id == b_txn.id),
        "B's watch carries B's own purchase first, never A's {}: {first_on_b:?}",
        txn.id
    );

    let by_id = b.get_transaction(by_id(&txn.id)).await.expect_err("hidden");
    assert_eq!(by_id.code(), tonic::Code::NotFound);
    let by_ref = b
        .get_transaction(pb::GetTransactionRequest {
            key: Some(pb::get_transaction_request::Key::ClientRef(
                "private-1".into(),
            )),
        })
        .await
        .expect_err("hidden");
    assert_eq!(by_ref.code(), tonic::Code::NotFound);
    let listed = b
        .list_transactions(pb::ListTransactionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<&str> = listed.transactions.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(listed, [b_txn.id.as_str()], "B lists only its own");
    let single = b
        .watch_transactions(pb::WatchTransactionsRequest {
            transaction_id: txn.id.clone(),
        })
        .await
        .expect_err("B cannot watch A's transaction");
    assert_eq!(single.code(), tonic::Code::NotFound, "{single:?}");
    // The same watch is A's to make: it opens with the current state.
    let mut own = a
        .watch_transactions(pb::WatchTransactionsRequest {
            transaction_id: txn.id.clone(),
        })
        .await
        .expect("A watches its own transaction")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), own.next())
        .await
        .expect("A's watch answers")
        .expect("an update")
        .expect("not an error");
    assert_eq!(first.id, txn.id);
    let mine = a
        .list_transactions(pb::ListTransactionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.transactions.len(), 1);
}

/// A client holds at most `max_watches_per_client` watch streams at once: one
/// more is refused with `RESOURCE_EXHAUSTED` naming the limit, another
/// client is not held back, and a watch the client closes frees its slot.
/// Refused watches still work once a slot is free, and a refused call left
/// nothing behind (the open count did not grow).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_holds_at_most_its_limit_of_watch_streams() {
    let app = TestApp::spawn_with(loket_test_support::TestOptions {
        max_watches_per_client: 2,
        ..Default::default()
    })
    .await;
    let mut a = app.client_a().await;
    let mut b = app.client_b().await;
    let all = pb::WatchTransactionsRequest::default;
    let first = a.watch_transactions(all()).await.unwrap().into_inner();
    let _second = a.watch_transactions(all()).await.unwrap().into_inner();
    for _ in 0..3 {
        let refused = a.watch_transactions(all()).await.expect_err("a third");
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(
            refused
                .message()
                .contains("already has 2 watch streams open")
                && refused.message().contains("max_watches_per_client"),
            "{refused:?}"
        );
    }
    let mut b_watch = b
        .watch_transactions(all())
        .await
        .expect("client B has slots of its own")
        .into_inner();

    // Closing a stream frees its slot once the ingress notices (at once,
    // or with the next update the closed stream would have carried).
    drop(first);
    let mut reopened = None;
    for n in 0..50 {
        match a.watch_transactions(all()).await {
            Ok(watch) => {
                reopened = Some(watch.into_inner());
                break;
            }
            Err(refused) => {
                assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
                if n % 10 == 0 {
                    // Something for the closed watch to notice.
                    bought(
                        &mut a,
                        purchase(&format!("slot-{n}"), "PULSA10", OK_ACCOUNT, 10_000),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut reopened = reopened.expect("the closed watch's slot was freed");
    let txn = bought(&mut b, purchase("slot-b", "PULSA10", OK_ACCOUNT, 10_000)).await;
    let seen = tokio::time::timeout(Duration::from_secs(5), b_watch.next()).await;
    assert!(
        matches!(seen, Ok(Some(Ok(ref update))) if update.id == txn.id),
        "B's watch works: {seen:?}"
    );
    let own = bought(&mut a, purchase("slot-a", "PULSA10", OK_ACCOUNT, 10_000)).await;
    let seen = loop {
        let next = tokio::time::timeout(Duration::from_secs(5), reopened.next())
            .await
            .expect("the reopened watch answers")
            .expect("an update")
            .expect("not an error");
        if next.id == own.id {
            break next;
        }
    };
    assert_eq!(seen.status(), pb::TransactionStatus::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_canary_pin_appears_in_no_log_line_and_no_row() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let ok = bought(
        &mut client,
        purchase("canary-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    let pending = bought(
        &mut client,
        purchase("canary-2", "PULSA10", &scenario("002"), 0),
    )
    .await;
    let slow = bought(
        &mut client,
        purchase("canary-3", "PULSA10", &scenario("901"), 0),
    )
    .await;
    let inquiry = client
        .inquire(inquire("canary-4", "PLNPOST", "531234567893", 10_000))
        .await
        .unwrap()
        .into_inner();
    let due = inquiry
        .bill
        .as_ref()
        .unwrap()
        .total_amount
        .as_ref()
        .unwrap()
        .minor;
    client
        .pay_bill(pay("canary-5", &inquiry.id, due, 10_000))
        .await
        .unwrap();
    client
        .get_balance(pb::GetBalanceRequest {
            provider: "okebayar".into(),
        })
        .await
        .unwrap();
    app.wait_for_status(&pending.id, "success", Duration::from_secs(20))
        .await;
    app.wait_for_status(&slow.id, "success", Duration::from_secs(20))
        .await;

    let logs = logs::captured();
    assert!(
        logs.contains(&ok.id),
        "the capture really holds the services' logs"
    );
    assert!(!logs.contains(CANARY_PIN), "the PIN leaked into the logs");
    let dump = app.dump_database().await;
    assert!(
        dump.contains("provider_exchanges"),
        "exchanges are stored (masked)"
    );
    assert!(
        !dump.contains(CANARY_PIN),
        "the PIN leaked into the database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_code_over_grpc_and_loketctl_match_the_library() {
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let cases = [
        ("okebayar", "208", "purchase"),
        ("okebayar", "208", "bill_inquiry"),
        ("okebayar", "401", "bill_payment"),
        ("doku", "5586", "bill_payment"),
        ("snapqr", "4046018", ""),
        ("snapqr", "4048018", ""),
        ("smilepayz", "4009103", ""),
    ];
    for (provider, code, operation) in cases {
        let over_grpc = client
            .explain_code(pb::ExplainCodeRequest {
                provider: provider.into(),
                code: code.into(),
                operation: operation.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{provider} {code}: {e:?}"))
            .into_inner();
        let library = catalogue::explain(
            Provider::parse(provider).unwrap(),
            code,
            CodeOperation::parse(operation),
        )
        .unwrap();
        assert_eq!(
            over_grpc,
            pb::CodeExplanation::from(&library),
            "{provider} {code} {operation}"
        );
    }

    for (provider, code) in [
        ("", "12"),
        ("okebayar", ""),
        ("okebayar", "2a8"),
        ("nobody", "208"),
        ("snapqr", "40460"),
    ] {
        let error = client
            .explain_code(pb::ExplainCodeRequest {
                provider: provider.into(),
                code: code.into(),
                operation: String::new(),
            })
            .await
            .expect_err("bad input");
        assert_eq!(
            error.code(),
            tonic::Code::InvalidArgument,
            "{provider:?} {code:?}: {error:?}"
        );
        assert!(!error.message().is_empty());
    }

    // The loketctl binary, against the real ingress, says the same.
    let loketctl = loketctl_binary();
    let output = std::process::Command::new(&loketctl)
        .args([
            "--addr",
            &format!("http://{}", app.ingress_addr),
            "--json",
            "explain",
            "okebayar",
            "208",
            "--operation",
            "purchase",
        ])
        .env("LOKET_API_KEY", &app.key_a)
        .output()
        .expect("loketctl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let library =
        catalogue::explain(Provider::OkeBayar, "208", Some(CodeOperation::Purchase)).unwrap();
    assert_eq!(printed["outcome"], library.outcome.as_str());
    assert_eq!(printed["operator_action"], library.operator_action.as_str());
    let guessed = std::process::Command::new(&loketctl)
        .args([
            "--addr",
            &format!("http://{}", app.ingress_addr),
            "--json",
            "explain",
            "4046018",
        ])
        .env("LOKET_API_KEY", &app.key_a)
        .output()
        .unwrap();
    assert!(
        guessed.status.success(),
        "{}",
        String::from_utf8_lossy(&guessed.stderr)
    );
    let guessed: serde_json::Value = serde_json::from_slice(&guessed.stdout).unwrap();
    assert_eq!(guessed["provider"], "snapqr");
}

/// The loketctl binary of this workspace (built by `make test`).
fn loketctl_binary() -> std::path::PathBuf {
    loket_test_support::deployment::binary("loket-cli", "loketctl")
}

/// A collector that keeps every OTLP/HTTP trace export it is sent.
#[derive(Clone, Default)]
struct Collector {
    exports: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    /// A started collector, and this process's telemetry exporting its
    /// spans to it.
    async fn receiving_this_process() -> (Collector, loket_runtime::telemetry::LogGuard) {
        let collector = Collector::default();
        let addr = collector.start().await;
        let telemetry = loket_runtime::telemetry::init(
            "loket-e2e",
            &loket_runtime::telemetry::LogSettings {
                json: false,
                otlp_endpoint: format!("http://{addr}"),
            },
        );
        (collector, telemetry)
    }

    async fn start(&self) -> std::net::SocketAddr {
        let exports = self.exports.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                exports.lock().unwrap().push(body.to_vec());
                axum::http::StatusCode::OK
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Every span received so far, with its service name.
    fn spans(&self) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message as _;
        let mut spans = Vec::new();
        for body in self.exports.lock().unwrap().iter() {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            for resource_spans in request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|resource| &resource.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|value| format!("{:?}", value.value))
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
                }
            }
        }
        spans
    }
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(Value::StringValue(text)) => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// With `otlp_endpoint` set, the services export their spans over OTLP/HTTP:
/// the gRPC call's span, the connector's and the reconciler's for one
/// purchase form one trace whose parent links follow the purchase through
/// the bus (ingress → connector → reconciler), under the trace id the logs
/// carry; and the canary PIN is in no exported byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spans_of_one_purchase_are_exported_as_one_linked_trace() {
    let (collector, telemetry) = Collector::receiving_this_process().await;
    let app = TestApp::spawn().await;
    let mut client = app.client_a().await;
    let bought = bought(
        &mut client,
        purchase("traced-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    assert_eq!(
        bought.status(),
        pb::TransactionStatus::Success,
        "{bought:?}"
    );

    let named = |name: &str| {
        collector
            .spans()
            .into_iter()
            .filter(|(_, span)| span.name == name && attribute(span, "transaction_id") == bought.id)
            .collect::<Vec<_>>()
    };
    let mut spans = (Vec::new(), Vec::new(), Vec::new());
    eventually(
        "the three services' spans exported",
        Duration::from_secs(15),
        || {
            tokio::task::block_in_place(|| telemetry.flush_spans());
            spans = (named("rpc"), named("command"), named("event"));
            let found = !spans.0.is_empty() && !spans.1.is_empty() && !spans.2.is_empty();
            async move { found }
        },
    )
    .await;
    let (rpc, command, event) = (&spans.0[0].1, &spans.1[0].1, &spans.2[0].1);
    assert!(
        spans.0[0].0.contains("loket-e2e"),
        "service.name: {}",
        spans.0[0].0
    );
    assert_eq!(rpc.trace_id, command.trace_id, "one trace");
    assert_eq!(rpc.trace_id, event.trace_id, "one trace");
    assert_eq!(
        command.parent_span_id, rpc.span_id,
        "the connector's span is the call's child"
    );
    assert_eq!(
        event.parent_span_id, command.span_id,
        "the reconciler's span is the connector's child"
    );
    assert_eq!(
        attribute(rpc, "trace_id"),
        hex(&rpc.trace_id),
        "the logs' trace id is the exported one"
    );
    for body in collector.exports.lock().unwrap().iter() {
        assert!(
            !String::from_utf8_lossy(body).contains(CANARY_PIN),
            "the PIN reached an exported span"
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Support finds a transaction by any reference a merchant or the provider
/// may quote, across clients, with its history; `loketctl find` prints the
/// same, and nothing secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn support_finds_a_transaction_by_any_of_its_references() {
    let app = TestApp::spawn().await;
    let txn = bought(
        &mut app.client_a().await,
        purchase("find-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    assert_eq!(txn.status(), pb::TransactionStatus::Success, "{txn:?}");
    // Another client's transaction with the same client reference.
    let other = bought(
        &mut app.client_b().await,
        purchase("find-1", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    let row = app.row(&txn.id).await;
    let trace = row.provider_trace.clone().expect("OkeBayar's tracecode");
    for (reference, on) in [
        (txn.id.as_str(), "transaction id"),
        (txn.provider_reference.as_str(), "our reference"),
        (trace.as_str(), "provider trace"),
        (txn.serial_number.as_str(), "serial number"),
    ] {
        let found = loket_cli::find::find(&app.pool, reference, 20)
            .await
            .unwrap();
        assert_eq!(found.matches.len(), 1, "{reference}: {found:?}");
        let only = &found.matches[0];
        assert_eq!(only.transaction.id, txn.id);
        assert_eq!(only.client, "client-a");
        assert!(only.matched_on.contains(&on), "{reference}: {only:?}");
        let first = only.events.first().expect("a history");
        assert_eq!(
            (first.source.as_str(), first.to_status.as_deref()),
            ("ingress", Some("received"))
        );
        assert_eq!(
            only.events.last().unwrap().to_status.as_deref(),
            Some("success")
        );
    }
    let by_client_ref = loket_cli::find::find(&app.pool, "find-1", 20)
        .await
        .unwrap();
    let mut clients: Vec<(&str, &str)> = by_client_ref
        .matches
        .iter()
        .map(|m| (m.client.as_str(), m.transaction.id.as_str()))
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        [
            ("client-a", txn.id.as_str()),
            ("client-b", other.id.as_str())
        ]
    );
    let nothing = loket_cli::find::find(&app.pool, "no-such-ref", 20)
        .await
        .unwrap();
    assert!(nothing.matches.is_empty());
    assert!(loket_cli::find::find(&app.pool, " ", 20).await.is_err());

    let output = std::process::Command::new(loketctl_binary())
        .args(["find", &trace])
        .env("LOKET_DATABASE_URL", &app.database_url)
        .output()
        .expect("loketctl runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "found by        provider trace",
        "client          client-a",
        &txn.id,
        "history:",
        "received -> ",
    ] {
        assert!(printed.contains(expected), "{expected:?} in {printed}");
    }
    assert!(!printed.contains(CANARY_PIN), "{printed}");
    let json = std::process::Command::new(loketctl_binary())
        .args(["--json", "find", &txn.serial_number])
        .env("LOKET_DATABASE_URL", &app.database_url)
        .output()
        .expect("loketctl runs");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(json["matches"][0]["transaction"]["id"], txn.id.as_str());
    assert_eq!(json["matches"][0]["matched_on"][0], "serial number");
}

/// Finance exports one provider's transactions of a period across clients,
/// as CSV or JSON lines, with totals per status to hold against the
/// provider's statement; `loketctl export` writes the rows to stdout and
/// the totals to stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finance_exports_a_providers_transactions_with_totals() {
    use loket_cli::export::{export, parse_bound, ExportQuery, RowFormat};
    let app = TestApp::spawn().await;
    let mut a = app.client_a().await;
    let ok = bought(&mut a, purchase("export-1", "PULSA10", OK_ACCOUNT, 10_000)).await;
    let failed = bought(
        &mut a,
        purchase("export-2", "PULSA10", &scenario("204"), 10_000),
    )
    .await;
    let other = bought(
        &mut app.client_b().await,
        purchase("export-3", "PULSA10", OK_ACCOUNT, 10_000),
    )
    .await;
    assert_eq!(
        (ok.status(), failed.status(), other.status()),
        (
            pb::TransactionStatus::Success,
            pb::TransactionStatus::Failed,
            pb::TransactionStatus::Success
        )
    );
    let now = chrono::Utc::now();
    let around_now = ExportQuery {
        provider: Provider::OkeBayar,
        from: now - chrono::Duration::hours(1),
        until: now + chrono::Duration::hours(1),
        status: None,
    };

    let mut csv = Vec::new();
    let summary = export(&app.pool, &around_now, RowFormat::Csv, &mut csv)
        .await
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("created_at,finalized_at,id,client,"),
        "{csv}"
    );
    assert_eq!(lines.len(), 4, "a header and three rows: {csv}");
    let row_of = |id: &str| lines.iter().find(|l| l.contains(id)).copied().unwrap();
    let ok_row: Vec<&str> = row_of(&ok.id).split(',').collect();
    assert_eq!(ok_row[3], "client-a");
    assert_eq!(ok_row[8], ok.provider_reference);
    assert_eq!(ok_row[11], "10500");
    assert_eq!(ok_row[15], "success");
    assert_eq!(ok_row[17], ok.serial_number);
    assert!(row_of(&other.id).contains(",client-b,"));
    assert_eq!(summary.rows, 3);
    let prepaid = &summary.by_kind["prepaid_purchase"];
    assert_eq!(prepaid["success"].count, 2);
    assert_eq!(prepaid["success"].amount_minor, 21_000);
    assert_eq!(prepaid["failed"].count, 1);
    assert_eq!(summary.amount_mismatches, 0);

    let only_failed = ExportQuery {
        status: Some(loket_protocol::TransactionStatus::Failed),
        ..around_now.clone()
    };
    let mut lines = Vec::new();
    let summary = export(&app.pool, &only_failed, RowFormat::JsonLines, &mut lines)
        .await
        .unwrap();
    let rows: Vec<serde_json::Value> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], failed.id.as_str());
    assert_eq!(rows[0]["provider_code"], "204");
    assert_eq!(summary.rows, 1);
    let before = ExportQuery {
        from: now - chrono::Duration::hours(3),
        until: now - chrono::Duration::hours(2),
        ..around_now.clone()
    };
    assert_eq!(
        export(&app.pool, &before, RowFormat::Csv, &mut Vec::new())
            .await
            .unwrap()
            .rows,
        0
    );
    let backwards = ExportQuery {
        from: around_now.until,
        until: around_now.from,
        ..around_now.clone()
    };
    assert!(
        export(&app.pool, &backwards, RowFormat::Csv, &mut Vec::new())
            .await
            .is_err()
    );

    // The binary, for the WIB day the purchases were made on (both days
    // when WIB midnight, 17:00 UTC, fell between them; `now` may already be
    // the next day).
    let mut created = Vec::new();
    for txn in [&ok, &failed, &other] {
        created.push(app.row(&txn.id).await.created_at);
    }
    let day =
        |at: &chrono::DateTime<chrono::Utc>| at.with_timezone(&loket_protocol::wib()).date_naive();
    let first_day = created.iter().map(day).min().unwrap();
    let last_day = created.iter().map(day).max().unwrap();
    let (from, until) = (
        first_day.to_string(),
        last_day.succ_opt().unwrap().to_string(),
    );
    for at in &created {
        assert!(parse_bound(&from).unwrap() <= *at && *at < parse_bound(&until).unwrap());
    }
    let output = std::process::Command::new(loketctl_binary())
        .args([
            "export",
            "--provider",
            "okebayar",
            "--from",
            &from,
            "--until",
            &until,
        ])
        .env("LOKET_DATABASE_URL", &app.database_url)
        .output()
        .expect("loketctl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stderr.contains("exported                   3 okebayar transactions"),
        "{stderr}"
    );
    assert!(
        stderr.contains("success") && stderr.contains("IDR 21,000"),
        "{stderr}"
    );
}

/// What the leak tests exercised: the transactions made (each waited for
/// until final), the refusals' messages, and the SNAP B2B tokens the issuer
/// had granted us before the test expired them (no longer in the
/// simulator's list, secrets all the same).
struct Exercised {
    ids: Vec<String>,
    errors: String,
    expired_tokens: Vec<String>,
}

impl Exercised {
    /// Every canary of `app` (see `Canaries::of`) and the expired tokens.
    fn canaries(&self, app: &TestApp) -> Canaries {
        let mut canaries = Canaries::of(app);
        for token in &self.expired_tokens {
            canaries.add(
                "a SNAP B2B access token the issuer granted us (expired)",
                token,
            );
        }
        canaries
    }
}

fn pay_in(client_ref: &str, amount: i64, wait_ms: u32) -> pb::PayInRequest {
    pb::PayInRequest {
        client_ref: client_ref.into(),
        amount: idr(amount),
        method: "QRIS".into(),
        wait_ms,
        ..Default::default()
    }
}

fn balance(provider: &str) -> pb::GetBalanceRequest {
    pb::GetBalanceRequest {
        provider: provider.into(),
    }
}

/// Every path the providers' secrets pass through, each waited for until
/// final and asserted:
///
/// - OkeBayar: an immediate success, a failure, a purchase settled by its
///   callbacks and a status check, a bill inquiry and its payment, the
///   balance;
/// - SNAP QR CPM: an immediate payment, a pending one settled by queries
///   (QrQuery and the reconciler's), a pending one the issuer notifies (in
///   mode B it first signs in at our receiver's token endpoint), a cancel, a
///   refund, a payment after the issuer expired our B2B token (refused
///   `401xx01`, a new token fetched, sent again), and the balance, which
///   SNAP does not offer (a refusal);
/// - Smilepayz: a pay-in paid (signed callback, confirmed by an inquiry), a
///   pay-out that settles, the balance;
/// - refusals: an over-refund, a conflicting client_ref, an unknown API key.
async fn exercise_every_provider(app: &TestApp) -> Exercised {
    let mut client = app.client_a().await;
    let snap = &app.snapqr.as_ref().unwrap().sim;
    let smilepayz = &app.smilepayz.as_ref().unwrap().sim;
    let mut ids = Vec::new();
    let mut errors = Vec::new();

    // Those that settle later first, so they run while the rest is done.
    let callback_settled = bought(
        &mut client,
        purchase("leak-pending", "PULSA10", &scenario("002"), 0),
    )
    .await;
    let queried = client
        .qr_pay(qr_pay("leak-qr-queried", 10_102, 0))
        .await
        .unwrap()
        .into_inner();
    let notified = client
        .qr_pay(qr_pay("leak-qr-notified", 10_101, 0))
        .await
        .unwrap()
        .into_inner();
    let paid_in = client
        .pay_in(pay_in("leak-in", 50_000, 0))
        .await
        .unwrap()
        .into_inner();
    let paid_out = client
        .pay_out(pay_out("leak-out", 100_000, 0))
        .await
        .unwrap()
        .into_inner();
    let asked = client
        .qr_query(pb::QrQueryRequest {
            transaction_id: queried.id.clone(),
            wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(asked.id, queried.id);

    // OkeBayar.
    for (client_ref, account, expected) in [
        (
            "leak-buy",
            OK_ACCOUNT.to_string(),
            pb::TransactionStatus::Success,
        ),
        ("leak-fail", scenario("204"), pb::TransactionStatus::Failed),
    ] {
        let txn = bought(
            &mut client,
            purchase(client_ref, "PULSA10", &account, 10_000),
        )
        .await;
        assert_eq!(txn.status(), expected, "{txn:?}");
        ids.push(txn.id);
    }
    let inquiry = client
        .inquire(inquire("leak-inquiry", "PLNPOST", "531234567894", 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inquiry.status(),
        pb::TransactionStatus::Success,
        "{inquiry:?}"
    );
    let due = inquiry
        .bill
        .as_ref()
        .unwrap()
        .total_amount
        .as_ref()
        .unwrap()
        .minor;
    let bill = client
        .pay_bill(pay("leak-bill", &inquiry.id, due, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bill.status(), pb::TransactionStatus::Success, "{bill:?}");
    ids.extend([inquiry.id, bill.id]);

    // SNAP: paid at once, voided, refunded.
    let paid = client
        .qr_pay(qr_pay("leak-qr", 10_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status(), pb::TransactionStatus::Success, "{paid:?}");
    let to_void = successful(
        client
            .qr_pay(qr_pay("leak-qr-void", 20_000, 10_000))
            .await
            .unwrap()
            .into_inner(),
    );
    let voided = client
        .qr_cancel(qr_cancel("leak-cancel", &to_void.id, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        voided.status(),
        pb::TransactionStatus::Success,
        "{voided:?}"
    );
    assert!(snap.requests_for(&to_void.provider_reference).cancels >= 1);
    let refunded = client
        .qr_refund(qr_refund("leak-refund", &paid.id, 4_000, 10_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        refunded.status(),
        pb::TransactionStatus::Success,
        "{refunded:?}"
    );
    assert!(snap.requests_for(&refunded.provider_reference).refunds >= 1);
    let over = client
        .qr_refund(qr_refund("leak-over-refund", &paid.id, 10_001, 0))
        .await
        .expect_err("more than was paid");
    errors.push(over.message().to_string());
    ids.extend([paid.id, to_void.id, voided.id, refunded.id]);

    // SNAP: the issuer expires our B2B token; the next payment is refused
    // 401xx01, and the connector fetches a new token and sends it again.
    let expired_tokens = snap.issued_tokens();
    assert!(!expired_tokens.is_empty(), "the issuer granted a token");
    let fetched_before = snap.token_requests();
    snap.expire_tokens();
    let after_expiry = successful(
        client
            .qr_pay(qr_pay("leak-qr-refreshed", 10_000, 10_000))
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(
        snap.token_requests() > fetched_before,
        "a new token was fetched after the refusal"
    );
    assert!(!snap.issued_tokens().is_empty());
    ids.push(after_expiry.id);

    // Balances: OkeBayar and Smilepayz answer; SNAP has no balance service.
    for provider in ["okebayar", "smilepayz"] {
        let answer = client.get_balance(balance(provider)).await;
        assert!(answer.is_ok(), "{provider}: {answer:?}");
    }
    let no_balance = client
        .get_balance(balance("snapqr"))
        .await
        .expect_err("SNAP QR CPM has no balance service");
    errors.push(no_balance.message().to_string());

    // Refusals.
    client
        .purchase(purchase("leak-conflict", "PULSA10", OK_ACCOUNT, 0))
        .await
        .unwrap();
    let conflict = client
        .purchase(purchase("leak-conflict", "PULSA50", OK_ACCOUNT, 0))
        .await
        .expect_err("a conflicting client_ref");
    errors.push(conflict.message().to_string());
    let unauthenticated = app
        .client_with_key("lk_not-a-real-key")
        .await
        .purchase(purchase("leak-auth", "PULSA10", OK_ACCOUNT, 0))
        .await
        .expect_err("unauthenticated");
    errors.push(unauthenticated.message().to_string());

    // Those started first, now final, each by the path it was meant to take
    // (a callback may arrive after the status check that settled its
    // transaction, hence the waits).
    let settle = Duration::from_secs(20);
    app.wait_for_status(&callback_settled.id, "success", settle)
        .await;
    eventually(
        "the pending and the success callback received",
        settle,
        || async {
            app.sim
                .callbacks_for(&callback_settled.provider_reference)
                .acknowledged
                >= 2
        },
    )
    .await;
    assert!(
        app.sim
            .requests_for(&callback_settled.provider_reference)
            .status_checks
            >= 1,
        "a status check confirmed the callback"
    );
    app.wait_for_status(&queried.id, "success", settle).await;
    assert!(
        snap.requests_for(&queried.provider_reference).queries >= 1,
        "settled by a query"
    );
    app.wait_for_status(&notified.id, "success", settle).await;
    eventually("the notify acknowledged", settle, || async {
        snap.notifies_for(&notified.provider_reference).acknowledged >= 1
    })
    .await;
    app.wait_for_status(&paid_in.id, "success", settle).await;
    eventually("the pay-in's signed callback received", settle, || async {
        smilepayz
            .callbacks_for(&paid_in.provider_reference)
            .acknowledged
            >= 1
    })
    .await;
    assert!(
        smilepayz
            .requests_for(&paid_in.provider_reference)
            .status_checks
            >= 1,
        "an inquiry confirmed the pay-in"
    );
    app.wait_for_status(&paid_out.id, "success", settle).await;
    eventually("the pay-out's signed callback received", settle, || async {
        smilepayz
            .callbacks_for(&paid_out.provider_reference)
            .acknowledged
            >= 1
    })
    .await;
    ids.extend([
        callback_settled.id,
        queried.id,
        notified.id,
        paid_in.id,
        paid_out.id,
    ]);

    let errors = errors.join("\n");
    assert!(errors.contains("leak-conflict"), "{errors}");
    Exercised {
        ids,
        errors,
        expired_tokens,
    }
}

/// OkeBayar in JSON with its callbacks by GET (the main run is XML with
/// POST callbacks): a purchase at once and one settled by its callbacks and
/// a status check, and the balance. Returns the transactions' ids.
async fn exercise_okebayar_json_with_get_callbacks(app: &TestApp) -> Vec<String> {
    let mut client = app.client_a().await;
    let at_once = successful(
        bought(
            &mut client,
            purchase("leak-json", "PULSA10", OK_ACCOUNT, 10_000),
        )
        .await,
    );
    let later = bought(
        &mut client,
        purchase("leak-json-pending", "PULSA10", &scenario("002"), 0),
    )
    .await;
    client.get_balance(balance("okebayar")).await.unwrap();
    app.wait_for_status(&later.id, "success", Duration::from_secs(20))
        .await;
    eventually(
        "the GET callbacks received",
        Duration::from_secs(20),
        || async {
            app.sim
                .callbacks_for(&later.provider_reference)
                .acknowledged
                >= 2
        },
    )
    .await;
    let sent: String = sqlx::query_scalar(
        "SELECT request FROM provider_exchanges WHERE transaction_id = $1 ORDER BY id LIMIT 1",
    )
    .bind(uuid::Uuid::parse_str(&at_once.id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&sent).is_ok(),
        "sent as JSON: {sent}"
    );
    vec![at_once.id, later.id]
}

async fn app_with_every_provider() -> TestApp {
    TestApp::spawn_with(loket_test_support::TestOptions {
        snapqr: true,
        snapqr_notify_mode: loket_snapqr::NotifyMode::Hmac,
        smilepayz: true,
        ..Default::default()
    })
    .await
}

async fn app_with_okebayar_json_and_get_callbacks() -> TestApp {
    TestApp::spawn_with(loket_test_support::TestOptions {
        format: loket_okebayar::wire::Format::Json,
        okebayar_callback_method: loket_simulators::common::CallbackMethod::Get,
        ..Default::default()
    })
    .await
}

/// Asks `app`'s callback receiver for a SNAP notify access token the way
/// the issuer does in mode B (RSA-signed with the issuer's key).
async fn notify_token_as_the_issuer(app: &TestApp) -> String {
    let fixture = app.snapqr.as_ref().unwrap();
    let issuer =
        loket_snapqr::sign::load_private_key(fixture.sim_settings.issuer_private_key.expose())
            .unwrap();
    let stamp = loket_protocol::wib::timestamp(chrono::Utc::now());
    let signed = loket_snapqr::b2b_token::signed_request(
        &issuer,
        loket_test_support::snapqr::NOTIFY_CLIENT_KEY,
        &stamp,
    );
    let answer: serde_json::Value = loket_simulators::snapqr::token_request(
        &reqwest::Client::new(),
        format!("http://{}/v1.0/access-token/b2b", app.callback_addr),
        signed,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    answer["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {answer}"))
        .to_string()
}

/// RELIABILITY's fourth invariant and money-safety rule 7, for every
/// provider and every path its secrets take (see `exercise_every_provider`,
/// and OkeBayar in JSON with GET callbacks beside it): no canary secret
/// (`Canaries::of`: the OkeBayar PIN and its signatures, every SNAP and
/// Smilepayz secret and key, the tokens granted either way) is in a log
/// line, a database row or an error message. The logs are captured at
/// every level of loket and the debug level of the HTTP, gRPC, bus and
/// database libraries, and they and the rows are first shown to hold this
/// run's transactions, so an absence means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_of_any_provider_reaches_a_log_a_row_or_an_error() {
    let _verbose = logs::verbose();
    let (app, json_app) = tokio::join!(
        app_with_every_provider(),
        app_with_okebayar_json_and_get_callbacks()
    );
    let (exercised, json_ids) = tokio::join!(
        exercise_every_provider(&app),
        exercise_okebayar_json_with_get_callbacks(&json_app)
    );
    // The tokens our receiver grants in mode B are what the check derives.
    let asked = notify_token_as_the_issuer(&app).await;
    let canaries = exercised.canaries(&app);
    assert!(
        canaries.iter().any(|canary| canary.value == asked),
        "the granted notify tokens are among the canaries"
    );
    let checked = assert_no_secret_leaked(&app, &exercised.ids, &exercised.errors, &canaries).await;
    eprintln!("every provider: {checked:?}");
    let checked = assert_no_secret_leaked(&json_app, &json_ids, "", &Canaries::of(&json_app)).await;
    eprintln!("OkeBayar JSON, GET callbacks: {checked:?}");
    for app in [&app, &json_app] {
        app.assert_services_alive();
    }
}

/// The same for the spans exported over OTLP (a process exports through one
/// global pipeline, so this is a test of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_of_any_provider_reaches_an_exported_span() {
    let (collector, telemetry) = Collector::receiving_this_process().await;
    let app = app_with_every_provider().await;
    let exercised = exercise_every_provider(&app).await;
    let mut spans = String::new();
    eventually(
        "every transaction's spans exported",
        Duration::from_secs(15),
        || {
            tokio::task::block_in_place(|| telemetry.flush_spans());
            spans = format!("{:?}", collector.spans());
            let found = exercised.ids.iter().all(|id| spans.contains(id.as_str()));
            async move { found }
        },
    )
    .await;
    let spans = spans.to_ascii_lowercase();
    for canary in exercised.canaries(&app).iter() {
        assert!(
            !spans.contains(&canary.value.to_ascii_lowercase()),
            "{} reached an exported span",
            canary.name
        );
    }
}
