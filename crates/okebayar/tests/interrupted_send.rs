//! A replica that recorded a purchase in the send journal and died before
//! sending it: the command comes back, and OkeBayar has no record of it. The
//! recorded send might still be on its way, so the command is handed back
//! (not answered "unknown", which only status checks would follow, never
//! sending); once no send can be in flight any more, it is sent, once.

mod common;

use std::time::Duration;

use common::{
    bus, count, fake_okebayar, messages_in, next_result, publish, purchase, settings, stop, Hits,
};
use loket_connector::journal::SendJournal;
use loket_okebayar::run;
use loket_protocol::subjects;
use loket_runtime::{db, Shutdown, Vital};
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000c1";
const REFERENCE: &str = "REFINTERRUPTED";
/// The provider timeout, and so the time a recorded send may be on its way.
const TIMEOUT_MS: u64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_recorded_but_never_made_is_made_once_no_send_can_be_in_flight() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, TIMEOUT_MS, 10_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pool = db::connect(&settings.common.database_url, 2).await.unwrap();
    let service = tokio::spawn(run(settings, admin, shutdown.clone()));

    // What the dead replica left: its send on record, nothing at OkeBayar.
    db::migrate(&pool).await.unwrap();
    assert!(SendJournal::start(pool, &Vital::new(Shutdown::new()))
        .record(TRANSACTION)
        .await
        .unwrap()
        .is_first());
    publish(
        &js,
        "cmd:interrupted:0",
        &purchase(TRANSACTION, REFERENCE, true),
    )
    .await;

    let event = next_result(&mut results).await;
    assert_eq!(
        event.outcome,
        loket_protocol::pb::Outcome::Success as i32,
        "{event:?}"
    );
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    // One check found no record within the time a send may take and handed
    // the command back; the next found none after it, and sent. (On a very
    // slow machine the first may already be past it.)
    let checks = count(&hits, "OkeBayar-cek-status", REFERENCE);
    assert!((1..=2).contains(&checks), "{hits:?}");
    let again = tokio::time::timeout(Duration::from_millis(1_500), next_result(&mut results)).await;
    assert!(again.is_err(), "a second result: {again:?}");
    assert_eq!(messages_in(&js, subjects::COMMAND_STREAM).await, 0, "acked");

    stop(&shutdown, service, Duration::from_secs(40)).await;
}
