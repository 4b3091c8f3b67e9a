//! The connector worker's `/metrics` (the shared runtime of
//! `loket-connector`, run here as the OkeBayar connector service): right
//! after it started, before any command, every worker counter is already
//! there at zero with each label value known up front; the commands then
//! handled land on those series, not on new ones named apart; and the
//! probe's two series are there from its first answer. Runs against a
//! private nats-server, a fresh send-journal database and a fake OkeBayar
//! (whose echo never answers the probe's message, so every probe fails).

mod common;

use std::time::Duration;

use common::{bus, fake_okebayar, next_result, publish, purchase, settings, stop, Hits};
use loket_connector::worker::metric;
use loket_okebayar::run;
use loket_protocol::Operation;
use loket_runtime::Shutdown;
use loket_test_support::admin;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

/// The transaction the commands of this test are about.
const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000b1";

fn commands(operation: &str, outcome: &str) -> String {
    format!(
        r#"{}{{provider="okebayar",operation="{operation}",outcome="{outcome}"}}"#,
        metric::COMMANDS
    )
}

fn check_first(reason: &str) -> String {
    format!(
        r#"{}{{provider="okebayar",reason="{reason}"}}"#,
        metric::CHECK_FIRST
    )
}

fn probes(result: &str) -> String {
    format!(
        r#"{}{{provider="okebayar",result="{result}"}}"#,
        metric::PROBES
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_counter_reads_zero_right_after_start() {
    let nats = NatsServer::start().expect("a private nats-server");
    let url = fake_okebayar(Hits::default(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, 2_000, 10_000).await;
    let (js, mut results) = bus(&nats.url()).await;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let service = tokio::spawn(run(settings, admin_listener, shutdown.clone()));
    admin::wait_ready(admin_addr).await;

    let mut zero: Vec<String> = Operation::ALL
        .iter()
        .flat_map(|operation| {
            ["success", "pending", "failed", "unknown"]
                .map(|outcome| commands(operation.as_str(), outcome))
        })
        .collect();
    zero.extend(
        [
            "already settled",
            "past the send horizon",
            "redelivered",
            "held past the ack deadline",
            "re-dispatched",
            "already recorded",
        ]
        .map(check_first),
    );
    zero.push(metric::POISON.to_string());
    admin::assert_series_at(admin_addr, &zero, "0").await;
    let before = admin::get(admin_addr, "/metrics").await.unwrap();

    // A purchase, then its re-dispatch (a status check first): both answered
    // success by the fake.
    publish(&js, "cmd:M:0", &purchase(TRANSACTION, "REFM", true)).await;
    next_result(&mut results).await;
    publish(&js, "cmd:M:1", &purchase(TRANSACTION, "REFM", false)).await;
    next_result(&mut results).await;
    admin::assert_series_at(admin_addr, &[commands("purchase", "success")], "2").await;
    admin::assert_series_at(admin_addr, &[check_first("re-dispatched")], "1").await;
    let after = admin::get(admin_addr, "/metrics").await.unwrap();
    let labelled = [metric::COMMANDS, metric::CHECK_FIRST];
    assert_eq!(
        admin::labelled_series(&after, &labelled).len(),
        admin::labelled_series(&before, &labelled).len(),
        "series added by the commands:\n{after}"
    );

    // The probe's first answer (a failure: the fake echoes nothing back)
    // brings both of its series.
    admin::until_metric_is(
        admin_addr,
        &format!(r#"{}{{provider="okebayar"}}"#, metric::PROVIDER_REACHABLE),
        "0",
    )
    .await;
    admin::assert_series_at(admin_addr, &[probes("ok")], "0").await;
    admin::assert_series_at(admin_addr, &[probes("failed")], "1").await;

    stop(&shutdown, service, Duration::from_secs(40)).await;
}
