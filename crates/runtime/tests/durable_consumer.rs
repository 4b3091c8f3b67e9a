//! A service's durable pull consumer against a real nats-server: made with
//! the service's settings, and brought to them when it was made with others
//! (an ack wait raised since), keeping its place in the stream.

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt as _;
use loket_protocol::subjects;
use loket_runtime::bus;
use loket_runtime::telemetry::TraceContext;
use loket_test_support::nats::NatsServer;
use std::time::Duration;

fn config(ack_wait: Duration, max_ack_pending: i64) -> pull::Config {
    pull::Config {
        durable_name: Some("settings-test".to_string()),
        filter_subject: subjects::commands_of(loket_protocol::Provider::OkeBayar),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait,
        max_ack_pending,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_durable_consumer_made_with_other_settings_is_brought_to_the_services() {
    let server = NatsServer::start().expect("nats-server");
    let client = bus::connect(&server.url(), "consumer-test").await.unwrap();
    let js = jetstream::new(client);
    bus::ensure_streams(&js).await.unwrap();
    let stream = js.get_stream(subjects::COMMAND_STREAM).await.unwrap();
    let on_server = async || {
        let info = js
            .get_stream(subjects::COMMAND_STREAM)
            .await
            .unwrap()
            .consumer_info("settings-test")
            .await
            .unwrap();
        (info.config.ack_wait, info.config.max_ack_pending)
    };

    let first = bus::durable_pull_consumer(&stream, config(Duration::from_secs(30), 64))
        .await
        .unwrap();
    assert_eq!(on_server().await, (Duration::from_secs(30), 64));
    // Two commands; the first is handed out and acknowledged.
    for n in 1..=2 {
        bus::publish_durable(
            &js,
            format!("loket.cmd.okebayar.purchase_{n}"),
            bus::headers(&format!("cmd:{n}"), &TraceContext::new_root(), ""),
            format!("command {n}").into_bytes(),
        )
        .await
        .unwrap();
    }
    let mut messages = first.fetch().max_messages(1).messages().await.unwrap();
    let handed = messages.next().await.unwrap().unwrap();
    assert_eq!(&handed.payload[..], b"command 1");
    handed.ack_with(AckKind::Ack).await.unwrap();

    // The same settings again: unchanged.
    bus::durable_pull_consumer(&stream, config(Duration::from_secs(30), 64))
        .await
        .unwrap();
    assert_eq!(on_server().await, (Duration::from_secs(30), 64));

    // The service now runs with a longer ack wait and a higher limit.
    let updated = bus::durable_pull_consumer(&stream, config(Duration::from_secs(95), 128))
        .await
        .unwrap();
    assert_eq!(on_server().await, (Duration::from_secs(95), 128));
    let mut messages = updated.fetch().max_messages(1).messages().await.unwrap();
    let next = messages.next().await.unwrap().unwrap();
    assert_eq!(
        &next.payload[..],
        b"command 2",
        "the updated consumer keeps its place in the stream"
    );
}
