//! RELIABILITY #24: a connector replica (the real binary) is paused with
//! SIGSTOP while its purchase is at the provider, past the ack deadline.
//! The command goes to another replica, which asks the provider first and
//! sends nothing; resumed with SIGCONT, the paused one finishes late, and
//! its late result and ack change nothing: one purchase, one result.

mod common;

use std::time::{Duration, Instant};

use common::{
    bus, count, fake_okebayar, messages_in, next_result, publish, purchase, settings, stop,
    take_over_with_a_status_check, Binary, Hits,
};
use loket_protocol::subjects;
use loket_test_support::nats::NatsServer;

const TRANSACTION: &str = "0190f0aa-0000-7000-8000-0000000000b1";
const REFERENCE: &str = "REFPAUSE";
const ACK_WAIT_MS: u64 = 3_000;
const TIMEOUT_MS: u64 = 1_400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_ack_deadline_causes_no_second_purchase() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    // The purchase is done at once and answered 1 s later: time to pause
    // the replica while it waits for the answer.
    let url = fake_okebayar(hits.clone(), Duration::from_millis(1_000)).await;
    let settings = settings(&nats.url(), &url, TIMEOUT_MS, ACK_WAIT_MS).await;
    let (js, mut results) = bus(&nats.url()).await;

    // Replica A: the real binary, configured as an operator would.
    let mut paused = Binary::spawn(&settings, &[]);

    publish(&js, "cmd:pause:0", &purchase(TRANSACTION, REFERENCE, true)).await;

    // A sends the purchase; pause it before the answer comes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&hits, "OkeBayar-prabayar", REFERENCE) == 0 {
        assert!(
            Instant::now() < deadline,
            "replica A never sent the purchase"
        );
        if let Some(exit) = paused.0.try_wait().unwrap() {
            panic!("replica A exited: {exit} (its log is above)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    loket_test_support::signal::send(&paused.0, "STOP").unwrap();

    // Replica B, in-process, on the same durable consumer. After the ack
    // wait the command is B's: a status check, no purchase.
    let (result, shutdown, replica_b) =
        take_over_with_a_status_check(settings, &hits, REFERENCE, &mut results).await;

    // A resumes: its wait for the answer has timed out meanwhile, so it
    // publishes the first delivery's result (most often unknown: the
    // reconciler keeps B's success, a final state) and acks a message that
    // is no longer its own. Nothing is sent again.
    loket_test_support::signal::send(&paused.0, "CONT").unwrap();
    let late = next_result(&mut results).await;
    assert_eq!(late.event_id, "cmd:pause:0");
    // B's is a later delivery's (which one depends on where the ones
    // between went: A's pull buffer, or handed back).
    assert!(
        result.event_id.starts_with("cmd:pause:0:d"),
        "{}",
        result.event_id
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(count(&hits, "OkeBayar-prabayar", REFERENCE), 1, "{hits:?}");
    // One result per delivery handled, each under its own id: the first
    // delivery's, B's, and any copies A then found in its pull buffer
    // (each a status check).
    let events = messages_in(&js, subjects::EVENT_STREAM).await;
    assert!(events >= 2, "{events} result events in the stream");
    let commands = messages_in(&js, subjects::COMMAND_STREAM).await;
    assert_eq!(commands, 0, "the command was acked and left the work queue");

    stop(&shutdown, replica_b, Duration::from_secs(40)).await;
}
