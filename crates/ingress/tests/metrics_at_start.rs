//! The ingress's `/metrics` right after it started, before any call: every
//! counter is already there at zero (the labelled ones with each label value
//! known up front), so a dashboard or an alert on them has a series from the
//! start; and the calls then counted land on those series, not on new ones
//! named apart. Runs the real `run` against a private nats-server and
//! PostgreSQL (from `loket-test-support`).

use anyhow::{Context, Result};
use loket_ingress::{metrics, Listeners, Settings};
use loket_protocol::pb::{self, loket_client::LoketClient};
use loket_protocol::TransactionKind;
use loket_runtime::{Secret, Shutdown};
use loket_test_support::admin;
use loket_test_support::backing::Backing;
use std::net::SocketAddr;
use std::time::Duration;

/// A started ingress: its gRPC and admin addresses and how to stop it.
struct Running {
    main: SocketAddr,
    admin: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), loket_ingress::Error>>,
}

async fn start(env: &Backing) -> Result<Running> {
    let mut settings = Settings::default();
    settings.common.nats_url = env.nats_server.url();
    settings.common.database_url = Secret::new(env.database_url.clone());
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = Shutdown::new();
    Ok(Running {
        main: main.local_addr()?,
        admin: admin_listener.local_addr()?,
        shutdown: shutdown.clone(),
        task: tokio::spawn(loket_ingress::run(
            settings,
            Listeners {
                main,
                admin: admin_listener,
            },
            shutdown,
        )),
    })
}

impl Running {
    async fn stop(self) -> Result<()> {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("the ingress did not stop within 15 s")???;
        Ok(())
    }
}

/// `loket_ingress_requests_total` of `method` answered with `code`.
fn requests(method: &str, code: &str) -> String {
    format!(
        r#"{}{{method="{method}",code="{code}"}}"#,
        metrics::REQUESTS
    )
}

#[tokio::test]
async fn every_counter_reads_zero_right_after_start() -> Result<()> {
    let env = Backing::start(2, "ingress-metrics-test").await?;
    let ingress = start(&env).await?;
    admin::wait_ready(ingress.admin).await;

    let methods = metrics::methods();
    assert!(methods.contains(&"Purchase".to_string()), "{methods:?}");
    let mut series: Vec<String> = methods
        .iter()
        .flat_map(|method| {
            ["ok", "invalid_argument", "unauthenticated", "unavailable"]
                .map(|code| requests(method, code))
        })
        .collect();
    series.extend(TransactionKind::ALL.map(|kind| {
        format!(
            r#"{}{{kind="{}"}}"#,
            metrics::TRANSACTIONS_CREATED,
            kind.as_str()
        )
    }));
    series.extend([
        metrics::IDEMPOTENT_REPLAYS.to_string(),
        metrics::DISPATCH_FAILURES.to_string(),
        metrics::WATCH_STREAMS.to_string(),
    ]);
    // The admin port's own connection counters, registered by the shared
    // accept loop when the port opens.
    series.extend(["source", "source_full", "full"].map(|reason| {
        format!(
            r#"{}{{reason="{reason}"}}"#,
            loket_runtime::admin::CONNECTIONS_REFUSED
        )
    }));
    admin::assert_series_at(ingress.admin, &series, "0").await;

    ingress.stop().await
}

#[tokio::test]
async fn each_method_is_counted_on_the_series_registered_at_start() -> Result<()> {
    let env = Backing::start(2, "ingress-metrics-test").await?;
    let ingress = start(&env).await?;
    admin::wait_ready(ingress.admin).await;
    let before = admin::get(ingress.admin, "/metrics").await?;

    // Every method, once, without an API key: each answers UNAUTHENTICATED
    // before it reads its request.
    let mut api = LoketClient::connect(format!("http://{}", ingress.main)).await?;
    let codes = [
        api.purchase(pb::PurchaseRequest::default()).await.err(),
        api.inquire(pb::InquireRequest::default()).await.err(),
        api.pay_bill(pb::PayBillRequest::default()).await.err(),
        api.get_balance(pb::GetBalanceRequest::default())
            .await
            .err(),
        api.get_transaction(pb::GetTransactionRequest::default())
            .await
            .err(),
        api.list_transactions(pb::ListTransactionsRequest::default())
            .await
            .err(),
        api.watch_transactions(pb::WatchTransactionsRequest::default())
            .await
            .err(),
        api.qr_pay(pb::QrPayRequest::default()).await.err(),
        api.qr_query(pb::QrQueryRequest::default()).await.err(),
        api.qr_cancel(pb::QrCancelRequest::default()).await.err(),
        api.qr_refund(pb::QrRefundRequest::default()).await.err(),
        api.pay_in(pb::PayInRequest::default()).await.err(),
        api.pay_out(pb::PayOutRequest::default()).await.err(),
        api.explain_code(pb::ExplainCodeRequest::default())
            .await
            .err(),
        api.list_codes(pb::ListCodesRequest::default()).await.err(),
    ]
    .map(|status| status.map(|status| status.code()));
    assert!(
        codes
            .iter()
            .all(|code| *code == Some(tonic::Code::Unauthenticated)),
        "{codes:?}"
    );

    // Each call landed on its method's series registered at start (a method
    // counted under a name the descriptor does not give would leave its
    // series at 0), and no series appeared that was not there at start.
    let counted: Vec<String> = metrics::methods()
        .iter()
        .map(|method| requests(method, "unauthenticated"))
        .collect();
    admin::assert_series_at(ingress.admin, &counted, "1").await;
    let after = admin::get(ingress.admin, "/metrics").await?;
    assert_eq!(
        admin::labelled_series(&after, &[metrics::REQUESTS]).len(),
        admin::labelled_series(&before, &[metrics::REQUESTS]).len(),
        "series added by the calls:\n{after}"
    );

    ingress.stop().await
}
