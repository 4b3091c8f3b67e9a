//! A retried durable publish outlasts a brief JetStream outage: published
//! while its stream is missing, it lands once the stream is there, and only
//! once; without retries it fails at once.

use loket_protocol::subjects;
use loket_runtime::bus;
use loket_runtime::telemetry::TraceContext;
use loket_test_support::nats::NatsServer;
use std::time::Duration;

#[tokio::test]
async fn a_retried_publish_lands_once_the_stream_is_back() {
    let server = NatsServer::start().expect("nats-server");
    let client = bus::connect(&server.url(), "bus-retry-test").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let subject = subjects::update("client-1");
    let headers = || bus::headers("upd:t1:expired", &TraceContext::new_root(), "t1");

    // No stream yet: a single attempt fails.
    let once = bus::publish_durable(&js, subject.clone(), headers(), b"u".to_vec()).await;
    assert!(once.is_err(), "{once:?}");

    // Retried, it waits out the outage (the stream appears 300 ms later).
    let retried = tokio::spawn({
        let js = js.clone();
        let subject = subject.clone();
        async move { bus::publish_durable_retrying(&js, subject, headers(), b"u".to_vec(), 5).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    bus::ensure_streams(&js).await.unwrap();
    retried
        .await
        .unwrap()
        .expect("published once the stream was there");

    // Again under the same message id: stored once.
    bus::publish_durable_retrying(&js, subject, headers(), b"u".to_vec(), 5)
        .await
        .unwrap();
    let mut stream = js.get_stream(subjects::UPDATE_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}
