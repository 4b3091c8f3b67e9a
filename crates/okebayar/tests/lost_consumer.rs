//! The command consumer deleted under a running worker (an operator's
//! mistake, a stream recreated by hand): nothing is left to pull, so the
//! worker stops with an error that says so. Its process exits non-zero, the
//! supervisor restarts it, and the restart creates the consumer again.
//! Before, the worker returned as if asked to stop: a process that exits 0 is
//! not restarted, and commands piled up with nobody to send them.

mod common;

use std::time::Duration;

use common::{
    bus, count, fake_okebayar, messages_in, next_result, publish, purchase, settings, stop, Hits,
};
use loket_okebayar::run;
use loket_protocol::{pb, subjects, Provider};
use loket_runtime::Shutdown;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_command_consumer_stops_the_worker_with_an_error_and_a_restart_recovers() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, 2_000, 10_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let first = tokio::spawn(run(settings.clone(), admin, shutdown.clone()));
    publish(
        &js,
        "cmd:lost:0",
        &purchase("0190f0aa-0000-7000-8000-0000000000d1", "REFLOST1", true),
    )
    .await;
    assert_eq!(
        next_result(&mut results).await.outcome,
        pb::Outcome::Success as i32
    );
    // Acked (the result is published first), so the new consumer below has
    // nothing old to hand out.
    let mut left = u64::MAX;
    for _ in 0..100 {
        left = messages_in(&js, subjects::COMMAND_STREAM).await;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the purchase was acked");

    let consumer = subjects::connector_consumer(Provider::OkeBayar);
    js.get_stream(subjects::COMMAND_STREAM)
        .await
        .unwrap()
        .delete_consumer(&consumer)
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the worker stops on its own")
        .expect("without a panic");
    let error = ended.expect_err("an error, so the process exits non-zero");
    assert!(
        error.to_string().contains("command stream ended"),
        "{error}"
    );
    assert!(!shutdown.is_triggered(), "nobody asked it to stop");

    // The restart creates the consumer again and works.
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let restarted = tokio::spawn(run(settings, admin, shutdown.clone()));
    publish(
        &js,
        "cmd:lost:1",
        &purchase("0190f0aa-0000-7000-8000-0000000000d2", "REFLOST2", true),
    )
    .await;
    let event = next_result(&mut results).await;
    assert_eq!(event.transaction_id, "0190f0aa-0000-7000-8000-0000000000d2");
    assert_eq!(event.outcome, pb::Outcome::Success as i32);
    for reference in ["REFLOST1", "REFLOST2"] {
        assert_eq!(count(&hits, "OkeBayar-prabayar", reference), 1, "{hits:?}");
    }
    stop(&shutdown, restarted, Duration::from_secs(40)).await;
}
