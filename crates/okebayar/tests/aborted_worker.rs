//! RELIABILITY #2 with a real `kill -9`-like death: the real connector
//! binary, run with the `abort_after_send` failpoint, aborts its own process
//! after OkeBayar answered a purchase and before the result is published or
//! the command acked. Another replica gets the command after the ack wait
//! and asks the provider first: a status check, no second purchase.

mod common;

use std::time::{Duration, Instant};

use common::{
    bus, count, fake_okebayar, messages_in, publish, purchase, settings, stop,
    take_over_with_a_status_check, Binary, Hits,
};
use loket_protocol::subjects;
use loket_test_support::nats::NatsServer;
use std::os::unix::process::ExitStatusExt;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000d1";
const REFERENCE: &str = "REFABORTED";
/// The signal `std::process::abort` ends a process with (Linux).
const SIGABRT: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_after_sending_leaves_a_status_check_not_a_second_purchase() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    let url = fake_okebayar(hits.clone(), Duration::ZERO).await;
    let settings = settings(&nats.url(), &url, 1_400, 3_000).await;
    let (js, mut results) = bus(&nats.url()).await;

    let mut dying = Binary::spawn(
        &settings,
        &[("LOKET_WORKER__FAILPOINT", "abort_after_send")],
    );
    publish(&js, "cmd:abort:0", &purchase(TRANSACTION, REFERENCE, true)).await;

    // It sends the purchase, gets the answer, and dies on SIGABRT.
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = dying.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the replica never died");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.signal(), Some(SIGABRT), "{exit:?}");
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    assert_eq!(
        messages_in(&js, subjects::EVENT_STREAM).await,
        0,
        "no result was published before it died"
    );

    // Another replica, on the same durable consumer.
    let (_, shutdown, replica) =
        take_over_with_a_status_check(settings, &hits, REFERENCE, &mut results).await;
    stop(&shutdown, replica, Duration::from_secs(40)).await;
    assert_eq!(
        messages_in(&js, subjects::COMMAND_STREAM).await,
        0,
        "the command was acked by the second replica"
    );
}
