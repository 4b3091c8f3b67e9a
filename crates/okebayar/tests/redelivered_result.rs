//! A command whose result was published but whose ack was lost comes back.
//! Its status check may have learned something newer, so its result must
//! reach the event stream under an id of its own, not be dropped by
//! JetStream as a duplicate of the first delivery's result. OkeBayar still
//! gets one purchase. The same holds for a copy that resurfaced as a first
//! delivery, and for one that sent again because OkeBayar had no record of
//! the first send.

mod common;

use std::time::Duration;

use common::{
    bus, count, fake_okebayar, fake_okebayar_refusing_first_purchases, messages_in, next_result,
    publish, purchase, settings, Hits,
};
use loket_connector::worker::Failpoint;
use loket_okebayar::run;
use loket_protocol::subjects;
use loket_runtime::Shutdown;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000d1";
const REFERENCE: &str = "REFREDELIVERED";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_commands_result_is_not_dropped_as_a_duplicate() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let mut settings = settings(&nats.url(), &url, 500, 2_000).await;
    settings.worker.failpoint = Some(Failpoint::HangAfterResult);
    let (js, mut results) = bus(&nats.url()).await;

    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = tokio::spawn(run(settings, admin, shutdown.clone()));
    publish(
        &js,
        "cmd:redelivered:0",
        &purchase(TRANSACTION, REFERENCE, true),
    )
    .await;

    let first = next_result(&mut results).await;
    assert_eq!(first.event_id, "cmd:redelivered:0");
    // Not acked: after the ack wait the command comes back, is checked, and
    // its result is published again, now under the delivery's own id.
    let second = next_result(&mut results).await;
    assert!(
        second.event_id.starts_with("cmd:redelivered:0:d2:c"),
        "{}",
        second.event_id
    );
    assert_eq!(
        second.outcome,
        loket_protocol::pb::Outcome::Success as i32,
        "{second:?}"
    );
    assert_eq!(
        messages_in(&js, subjects::EVENT_STREAM).await,
        2,
        "both results are on the stream"
    );
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    assert_eq!(
        count(&hits, "OkeBayar-cek-status", REFERENCE),
        1,
        "{hits:?}"
    );
    service.abort();
}

/// A restarted nats-server can lose its consumers' state and hand out a
/// handled command as a first delivery (here: the consumer is deleted and
/// made again). The journal shows the send, so the copy is only checked; what
/// its check learned reaches the event stream under an id of its own (it
/// could contradict a settled state), not dropped as a duplicate of the
/// first handling's result. OkeBayar still gets one purchase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resurfaced_commands_check_is_reported_under_an_id_of_its_own() {
    const RESURFACED: &str = "0190f0aa-0000-7000-8000-0000000000d2";
    const RESURFACED_REFERENCE: &str = "REFRESURFACED";
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let mut settings = settings(&nats.url(), &url, 500, 10_000).await;
    settings.worker.failpoint = Some(Failpoint::HangAfterResult);
    let (js, mut results) = bus(&nats.url()).await;

    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_worker = tokio::spawn(run(settings.clone(), admin, Shutdown::new()));
    publish(
        &js,
        "cmd:resurfaced:0",
        &purchase(RESURFACED, RESURFACED_REFERENCE, true),
    )
    .await;
    let first = next_result(&mut results).await;
    assert_eq!(first.event_id, "cmd:resurfaced:0");
    let second_worker = resurface(&js, first_worker, settings, Duration::ZERO).await;
    let second = next_result(&mut results).await;
    assert!(
        second.event_id.starts_with("cmd:resurfaced:0:c"),
        "{}",
        second.event_id
    );
    assert_eq!(
        second.outcome,
        loket_protocol::pb::Outcome::Success as i32,
        "{second:?}"
    );
    assert_eq!(messages_in(&js, subjects::EVENT_STREAM).await, 2);
    assert_eq!(
        count(&hits, "OkeBayar-prabayar", RESURFACED_REFERENCE),
        1,
        "{hits:?}"
    );
    second_worker.abort();
}

/// The first send was refused (203, deposit insufficient) and OkeBayar kept
/// no record of it; before the reconciler applied that failure, the command
/// resurfaced as a first delivery (the consumer's state lost). Its status
/// check finds no record, and the journal's send is older than any send can
/// take, but the journal also holds the provider's refusal of it: it is not
/// sent again (were it, OkeBayar would take it now, the deposit topped up,
/// while the refusal's result tells the client it failed). Its answer is
/// the check's "no record": the refusal's own result might have been lost
/// with the first worker, and nothing else would end the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_is_not_sent_again_when_its_command_resurfaces() {
    const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000d3";
    const REFERENCE: &str = "REFSENTAGAIN";
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar_refusing_first_purchases(hits.clone()).await;
    let mut settings = settings(&nats.url(), &url, 500, 10_000).await;
    settings.worker.failpoint = Some(Failpoint::HangAfterResult);
    let (js, mut results) = bus(&nats.url()).await;

    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first_worker = tokio::spawn(run(settings.clone(), admin, Shutdown::new()));
    publish(&js, "cmd:again:0", &purchase(TRANSACTION, REFERENCE, true)).await;
    let first = next_result(&mut results).await;
    assert_eq!(first.event_id, "cmd:again:0");
    assert_eq!(first.provider_code, "203");
    assert_eq!(
        first.outcome,
        loket_protocol::pb::Outcome::Failed as i32,
        "{first:?}"
    );
    // Past the time the first send may have been on its way (the 500 ms
    // timeout and the 2 s margin): only the refusal holds a send back.
    let second_worker = resurface(&js, first_worker, settings, Duration::from_secs(3)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&hits, "OkeBayar-cek-status", REFERENCE) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the resurfaced command was checked: {hits:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = next_result(&mut results).await;
    assert!(answer.not_found, "{answer:?}");
    assert_eq!(
        answer.outcome,
        loket_protocol::pb::Outcome::Unknown as i32,
        "{answer:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&hits, "OkeBayar-prabayar", REFERENCE),
        1,
        "never sent again: {hits:?}"
    );
    assert_eq!(
        messages_in(&js, subjects::EVENT_STREAM).await,
        2,
        "the refusal and the no-record answer, nothing more"
    );
    second_worker.abort();
}

/// The worker `first` dies (it hung without acking its command), and the
/// consumer's state is lost with it, as a restarted nats-server can lose it:
/// the unacked command is a first delivery again. After `pause`, a worker
/// with `settings` (and no failpoint) takes over.
async fn resurface(
    js: &async_nats::jetstream::Context,
    first: tokio::task::JoinHandle<Result<(), loket_okebayar::Error>>,
    mut settings: loket_okebayar::ConnectorSettings,
    pause: Duration,
) -> tokio::task::JoinHandle<Result<(), loket_okebayar::Error>> {
    first.abort();
    let _ = first.await;
    js.get_stream(subjects::COMMAND_STREAM)
        .await
        .unwrap()
        .delete_consumer(&subjects::connector_consumer(
            loket_protocol::Provider::OkeBayar,
        ))
        .await
        .unwrap();
    tokio::time::sleep(pause).await;
    settings.worker.failpoint = None;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(run(settings, admin, Shutdown::new()))
}
