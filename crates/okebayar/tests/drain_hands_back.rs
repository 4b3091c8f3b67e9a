//! A replica that drains hands the commands it has received but not started
//! back to JetStream at once, so another replica takes them now rather than
//! after their ack wait; what it had in flight it finishes. Each purchase is
//! still sent exactly once.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{bus, count, fake_okebayar, next_result, publish, purchase, settings, stop, Hits};
use loket_okebayar::run;
use loket_runtime::Shutdown;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

/// Far longer than the test may take: a command left to its ack wait would
/// fail it.
const ACK_WAIT_MS: u64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_replica_hands_back_what_it_has_not_started() {
    let nats = NatsServer::start().expect("a private nats-server");
    let hits = Hits::default();
    // Each purchase takes a while, so the replica holds two in flight and
    // has received the next ones behind them (its pull asks for more as it
    // takes the second).
    let url = fake_okebayar(hits.clone(), Duration::from_millis(1_500)).await;
    let mut settings = settings(&nats.url(), &url, 5_000, ACK_WAIT_MS).await;
    settings.worker.concurrency = 2;
    let (js, mut results) = bus(&nats.url()).await;

    let shutdown_a = Shutdown::new();
    let replica_a = tokio::spawn(run(
        settings.clone(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        shutdown_a.clone(),
    ));
    let purchases: Vec<(String, String)> = (1..=5)
        .map(|n| {
            (
                format!("0190f0aa-0000-7000-8000-0000000000e{n}"),
                format!("REFDRAIN{n}"),
            )
        })
        .collect();
    for (n, (transaction, reference)) in purchases.iter().enumerate() {
        publish(
            &js,
            &format!("cmd:drain:{n}"),
            &purchase(transaction, reference, true),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let sent = || {
        (1..=5)
            .map(|n| count(&hits, "OkeBayar-prabayar", &format!("REFDRAIN{n}")))
            .sum::<u32>()
    };
    while sent() < 2 {
        assert!(
            Instant::now() < deadline,
            "replica A never sent two purchases"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the next commands arrive in A's pull buffer, then drain A.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown_a.trigger();
    let drained = Instant::now();
    let shutdown_b = Shutdown::new();
    let replica_b = tokio::spawn(run(
        settings,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        shutdown_b.clone(),
    ));

    let mut settled = BTreeSet::new();
    while settled.len() < purchases.len() {
        let event = next_result(&mut results).await;
        assert_eq!(
            event.outcome,
            loket_protocol::pb::Outcome::Success as i32,
            "{event:?}"
        );
        settled.insert(event.transaction_id);
    }
    let waited = drained.elapsed();
    assert!(
        waited < Duration::from_millis(ACK_WAIT_MS / 2),
        "the last purchase settled {waited:?} after the drain began: it waited for its ack wait"
    );
    for (_, reference) in &purchases {
        assert_eq!(count(&hits, "OkeBayar-prabayar", reference), 1, "{hits:?}");
    }
    tokio::time::timeout(Duration::from_secs(20), replica_a)
        .await
        .expect("A drains")
        .unwrap()
        .unwrap();
    stop(&shutdown_b, replica_b, Duration::from_secs(20)).await;
}
