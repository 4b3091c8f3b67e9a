//! A provider call that outlasts the JetStream ack wait stays with the
//! worker making it: progress acks keep the command from being handed out
//! again, so it is neither checked nor sent a second time. The settings
//! check forbids such an ack wait in service (it must exceed twice the HTTP
//! timeout), so the worker runs here directly with one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    bus, count, fake_okebayar, messages_in, next_result, publish, purchase, settings, stop, Hits,
};
use loket_connector::journal::SendJournal;
use loket_connector::worker;
use loket_okebayar::connector::OkeBayarConnector;
use loket_protocol::subjects;
use loket_runtime::{admin::Readiness, db, Shutdown, Vital};
use loket_test_support::nats::NatsServer;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000c1";
const REFERENCE: &str = "REFSLOW";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_ack_wait_keeps_its_command_and_sends_once() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::from_millis(2_500)).await;
    let settings = settings(&nats.url(), &url, 4_000, 1_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let pool = db::connect(&settings.common.database_url, 2).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let shutdown = Shutdown::new();
    let vital = Vital::new(shutdown.clone());
    let running = tokio::spawn(worker::run(
        Arc::new(OkeBayarConnector::new(settings.okebayar.clone())),
        settings.worker.clone(),
        client,
        SendJournal::start(pool, &vital),
        vital,
        shutdown.clone(),
        Readiness::default(),
    ));

    publish(&js, "cmd:slow:0", &purchase(TRANSACTION, REFERENCE, true)).await;
    let event = next_result(&mut results).await;
    assert_eq!(event.outcome, loket_protocol::pb::Outcome::Success as i32);
    // A command handed out again would start a status check and publish a
    // second result; give it the time to.
    let again = tokio::time::timeout(Duration::from_millis(1_500), next_result(&mut results)).await;
    assert!(again.is_err(), "a second result: {again:?}");
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    assert_eq!(
        count(&hits, "OkeBayar-cek-status", REFERENCE),
        0,
        "{hits:?}"
    );
    assert_eq!(messages_in(&js, subjects::COMMAND_STREAM).await, 0, "acked");

    stop(&shutdown, running, Duration::from_secs(20)).await;
}
