//! The connector service end to end on a private nats-server: a command on
//! `loket.cmd.okebayar.*` reaches a fake OkeBayar once, and its result event
//! comes back classified and masked; a re-dispatched command starts with a
//! status check and is not sent again. The send journal is in a fresh
//! database on the shared test PostgreSQL. The nats-server comes from
//! `loket-test-support`; a missing server fails the test.

mod common;

use std::time::Duration;

use common::{
    bus, count, fake_okebayar, next_result, publish, purchase, settings, stop, Hits, PIN, USERID,
};
use loket_okebayar::run;
use loket_runtime::Shutdown;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

/// The transaction every command of this test is about.
const TRANSACTION: &str = "0190f0aa-0000-7000-8000-00000000000a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_flow_through_the_real_worker() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, 2_000, 10_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = tokio::spawn(run(settings, admin, shutdown.clone()));

    // First dispatch: sent once, classified, masked.
    publish(&js, "cmd:A:0", &purchase(TRANSACTION, "REFA", true)).await;
    let event = next_result(&mut results).await;
    assert_eq!(event.transaction_id, TRANSACTION);
    assert_eq!(event.outcome, loket_protocol::pb::Outcome::Success as i32);
    assert_eq!(event.serial_number, "SN-ROUNDTRIP");
    assert_eq!(
        event.provider_amount.as_ref().map(|m| m.minor),
        Some(11_000)
    );
    assert_eq!(event.exchanges.len(), 1);
    let raw = format!("{event:?}");
    assert!(!raw.contains(PIN), "PIN leaked into the result event");
    assert!(!raw.contains(&loket_okebayar::sign::signature(USERID, PIN, "REFA")));

    // Re-dispatch of the same purchase: a status check, not a second purchase.
    publish(&js, "cmd:A:1", &purchase(TRANSACTION, "REFA", false)).await;
    let event = next_result(&mut results).await;
    assert_eq!(event.outcome, loket_protocol::pb::Outcome::Success as i32);
    assert_eq!(count(&hits, "OkeBayar-prabayar", "REFA"), 1, "{hits:?}");
    assert_eq!(count(&hits, "OkeBayar-cek-status", "REFA"), 1, "{hits:?}");

    stop(&shutdown, service, Duration::from_secs(40)).await;
}
