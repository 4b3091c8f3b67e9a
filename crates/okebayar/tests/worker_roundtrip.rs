//! The connector service end to end on a private nats-server: a command on
//! `loket.cmd.okebayar.*` reaches a fake OkeBayar once, and its result event
//! comes back classified and masked; a re-dispatched command starts with a
//! status check and is not sent again. The send journal is in a fresh
//! database on the shared test PostgreSQL. The nats-server comes from
//! `loket-test-support`; a missing server fails the test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use loket_okebayar::wire::{self, Format};
use loket_okebayar::{run, ConnectorSettings};
use loket_protocol::pb::bus;
use loket_protocol::{subjects, Operation, Provider};
use loket_runtime::{Secret, Shutdown};
use loket_test_support::nats::NatsServer;
use prost::Message as _;
use tokio::net::TcpListener;

const PIN: &str = "CANARY-PIN-7731";

/// A fake OkeBayar that counts requests per (transactioncode, referencecode).
async fn fake_okebayar(hits: Arc<Mutex<HashMap<(String, String), u32>>>) -> String {
    let app = axum::Router::new().route(
        "/okebayar",
        axum::routing::post(move |body: Bytes| {
            let hits = hits.clone();
            async move {
                let fields = wire::decode(Format::sniff(&body), &body).unwrap();
                let code = fields
                    .get("transactioncode")
                    .unwrap_or_default()
                    .to_string();
                let reference = fields.get("referencecode").unwrap_or_default().to_string();
                *hits
                    .lock()
                    .unwrap()
                    .entry((code, reference.clone()))
                    .or_default() += 1;
                let reply = [
                    ("tracecode", "1234567890123456"),
                    ("transactionstatus", "000"),
                    ("serialnumber", "SN-ROUNDTRIP"),
                    ("harga", "11000.00"),
                    ("referencecode", reference.as_str()),
                ];
                String::from_utf8(wire::encode(Format::Xml, wire::REPLY_ROOT, reply)).unwrap()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/okebayar")
}

/// The transaction every command of this test is about.
const TRANSACTION: &str = "0190f0aa-0000-7000-8000-00000000000a";

fn purchase(reference: &str, first_dispatch: bool) -> bus::Command {
    bus::Command {
        transaction_id: TRANSACTION.into(),
        provider: "okebayar".into(),
        operation: bus::Operation::from(Operation::PrepaidPurchase) as i32,
        provider_reference: reference.into(),
        provider_product_code: "PULSA10".into(),
        account: "081234567890".into(),
        first_dispatch,
        ..Default::default()
    }
}

async fn next_result(results: &mut async_nats::Subscriber) -> bus::ResultEvent {
    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .unwrap();
    bus::ResultEvent::decode(message.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_flow_through_the_real_worker() {
    let nats = NatsServer::start().expect("a private nats-server");
    let nats_url = nats.url();
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let url = fake_okebayar(hits.clone()).await;

    let mut settings = ConnectorSettings::default();
    settings.common.nats_url = nats_url.clone();
    settings.common.database_url = Secret::new(
        loket_test_support::postgres::fresh_database()
            .await
            .expect("a fresh database for the send journal"),
    );
    settings.worker.concurrency = 4;
    settings.worker.ack_wait_ms = 10_000;
    settings.okebayar.url = url;
    settings.okebayar.userid = "pcu00001".into();
    settings.okebayar.userpin = Secret::new(PIN);
    settings.okebayar.timeout_ms = 2_000;
    settings.okebayar.connect_timeout_ms = 500;

    let client = async_nats::connect(&nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    loket_runtime::bus::ensure_streams(&js).await.unwrap();
    let mut results = client
        .subscribe(subjects::result(Provider::OkeBayar))
        .await
        .unwrap();

    let shutdown = Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = tokio::spawn(run(settings, admin, shutdown.clone()));

    let subject = subjects::command(Provider::OkeBayar, Operation::PrepaidPurchase);

    // First dispatch: sent once, classified, masked.
    let headers = loket_runtime::bus::headers(
        "cmd:A:0",
        &loket_runtime::telemetry::TraceContext::new_root(),
        TRANSACTION,
    );
    loket_runtime::bus::publish_durable(
        &js,
        subject.clone(),
        headers,
        purchase("REFA", true).encode_to_vec(),
    )
    .await
    .unwrap();
    let event = next_result(&mut results).await;
    assert_eq!(event.transaction_id, TRANSACTION);
    assert_eq!(event.outcome, loket_protocol::pb::Outcome::Success as i32);
    assert_eq!(event.serial_number, "SN-ROUNDTRIP");
    assert_eq!(
        event.provider_amount.as_ref().map(|m| m.minor),
        Some(11_000)
    );
    assert_eq!(event.exchanges.len(), 1);
    let raw = format!("{event:?}");
    assert!(!raw.contains(PIN), "PIN leaked into the result event");
    assert!(!raw.contains(&loket_okebayar::sign::signature("pcu00001", PIN, "REFA")));

    // Re-dispatch of the same purchase: a status check, not a second purchase.
    let headers = loket_runtime::bus::headers(
        "cmd:A:1",
        &loket_runtime::telemetry::TraceContext::new_root(),
        TRANSACTION,
    );
    loket_runtime::bus::publish_durable(
        &js,
        subject,
        headers,
        purchase("REFA", false).encode_to_vec(),
    )
    .await
    .unwrap();
    let event = next_result(&mut results).await;
    assert_eq!(event.outcome, loket_protocol::pb::Outcome::Success as i32);
    {
        let hits = hits.lock().unwrap();
        assert_eq!(
            hits.get(&("OkeBayar-prabayar".into(), "REFA".into())),
            Some(&1),
            "{hits:?}"
        );
        assert_eq!(
            hits.get(&("OkeBayar-cek-status".into(), "REFA".into())),
            Some(&1),
            "{hits:?}"
        );
    }

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(40), service)
        .await
        .expect("drains after shutdown")
        .unwrap()
        .unwrap();
}
