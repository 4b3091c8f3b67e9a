//! A provider call that outlasts the JetStream ack wait stays with the
//! worker making it: progress acks keep the command from being handed out
//! again, so it is neither checked nor sent a second time. So does a result
//! JetStream does not store for a while: the worker keeps publishing it,
//! rather than leaving its command to a redelivery whose status check could
//! not rebuild what only the answer carried. The settings check forbids
//! such an ack wait in service (it must exceed twice the HTTP timeout), so
//! the worker runs here directly with one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    bus, count, fake_okebayar, messages_in, next_result, publish, purchase, settings, stop, Hits,
};
use loket_connector::journal::SendJournal;
use loket_connector::worker;
use loket_okebayar::connector::OkeBayarConnector;
use loket_protocol::{pb, subjects};
use loket_runtime::{admin::Readiness, db, Shutdown, Vital};
use loket_test_support::nats::NatsServer;
use prost::Message as _;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000c1";
const REFERENCE: &str = "REFSLOW";

/// The worker of `settings` running on `nats`, with a migrated database
/// for its send journal: its shutdown and its task.
async fn start_worker(
    nats: &NatsServer,
    settings: &loket_okebayar::ConnectorSettings,
    readiness: Readiness,
) -> (
    Shutdown,
    tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
) {
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
        readiness,
    ));
    (shutdown, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_ack_wait_keeps_its_command_and_sends_once() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::from_millis(2_500)).await;
    let settings = settings(&nats.url(), &url, 4_000, 1_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let (shutdown, running) = start_worker(&nats, &settings, Readiness::default()).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_jetstream_does_not_store_for_a_while_is_published_once_it_does() {
    const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000c2";
    const REFERENCE: &str = "REFNOSTORE";
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, 4_000, 1_500).await;
    // No subscriber on the result subject: a publish with no stream to
    // store it fails at once ("no responders").
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let readiness = Readiness::default();
    let (shutdown, running) = start_worker(&nats, &settings, readiness.clone()).await;
    // Once the worker has made sure of the streams, the events stream goes.
    for _ in 0..100 {
        if readiness.check().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readiness.check().await.expect("the worker started");
    js.delete_stream(subjects::EVENT_STREAM).await.unwrap();
    publish(
        &js,
        "cmd:nostore:0",
        &purchase(TRANSACTION, REFERENCE, true),
    )
    .await;

    // Past several ack waits, the result still not stored.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    loket_runtime::bus::ensure_streams(&js).await.unwrap();
    let mut stored = 0;
    for _ in 0..100 {
        stored = messages_in(&js, subjects::EVENT_STREAM).await;
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1, "the purchase's result is stored");
    let events = js.get_stream(subjects::EVENT_STREAM).await.unwrap();
    let event = events.get_raw_message(1).await.unwrap();
    let event = pb::bus::ResultEvent::decode(event.payload).unwrap();
    assert_eq!(event.outcome, pb::Outcome::Success as i32);
    assert!(
        event.sent,
        "the purchase's own answer, not a status check's"
    );

    // The command was kept all along: never handed out again, so never
    // checked, and acked once its result was stored.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        count(&hits, "OkeBayar-cek-status", REFERENCE),
        0,
        "{hits:?}"
    );
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    assert_eq!(messages_in(&js, subjects::EVENT_STREAM).await, 1);
    assert_eq!(messages_in(&js, subjects::COMMAND_STREAM).await, 0, "acked");

    stop(&shutdown, running, Duration::from_secs(20)).await;
}
