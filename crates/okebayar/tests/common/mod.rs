//! A fake OkeBayar and the bus plumbing shared by the connector's service
//! tests.
#![allow(dead_code)] // each test file uses its part

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use loket_okebayar::wire::{self, Format};
use loket_okebayar::ConnectorSettings;
use loket_protocol::pb::bus;
use loket_protocol::{subjects, Operation, Provider};
use loket_runtime::Secret;
use prost::Message as _;
use tokio::net::TcpListener;

/// Requests received per (transactioncode, referencecode).
pub type Hits = Arc<Mutex<HashMap<(String, String), u32>>>;

/// How many requests with `code` arrived for `reference`.
pub fn count(hits: &Hits, code: &str, reference: &str) -> u32 {
    hits.lock()
        .unwrap()
        .get(&(code.to_string(), reference.to_string()))
        .copied()
        .unwrap_or(0)
}

/// A fake OkeBayar that counts every request and answers each with success
/// (`000`, a serial number), a purchase only after `purchase_delay` (it is
/// counted, i.e. done, at once), and a status check of a reference never
/// purchased with "no record" (`199`). Returns its URL.
pub async fn fake_okebayar(hits: Hits, purchase_delay: Duration) -> String {
    fake(hits, purchase_delay, false).await
}

/// [`fake_okebayar`], except that it refuses each reference's first purchase
/// with "deposit insufficient" (`203`) and keeps no record of it: its status
/// check answers "no record" until a purchase went through.
pub async fn fake_okebayar_refusing_first_purchases(hits: Hits) -> String {
    fake(hits, Duration::ZERO, true).await
}

async fn fake(hits: Hits, purchase_delay: Duration, refuse_first_purchases: bool) -> String {
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
                    .entry((code.clone(), reference.clone()))
                    .or_default() += 1;
                let purchases = count(
                    &hits,
                    loket_okebayar::settings::PREPAID_TRANSACTION_CODE,
                    &reference,
                );
                let refused = u32::from(refuse_first_purchases).min(purchases);
                if code == loket_okebayar::settings::PREPAID_TRANSACTION_CODE {
                    if purchases == refused {
                        let reply = [
                            ("transactionstatus", "203"),
                            ("referencecode", reference.as_str()),
                        ];
                        return String::from_utf8(wire::encode(
                            Format::Xml,
                            wire::REPLY_ROOT,
                            reply,
                        ))
                        .unwrap();
                    }
                    tokio::time::sleep(purchase_delay).await;
                } else if code == loket_okebayar::settings::STATUS_TRANSACTION_CODE
                    && purchases == refused
                {
                    let reply = [
                        ("transactionstatus", "199"),
                        ("referencecode", reference.as_str()),
                    ];
                    return String::from_utf8(wire::encode(Format::Xml, wire::REPLY_ROOT, reply))
                        .unwrap();
                }
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
    let base = loket_simulators::common::serve_stub(app).await.unwrap();
    format!("{base}/okebayar")
}

pub const USERID: &str = "pcu00001";
/// A canary: it must never leave the connector unmasked.
pub const PIN: &str = "CANARY-PIN-7731";

/// A prepaid purchase command about `transaction` with our `reference`.
pub fn purchase(transaction: &str, reference: &str, first_dispatch: bool) -> bus::Command {
    bus::Command {
        transaction_id: transaction.into(),
        provider: "okebayar".into(),
        operation: bus::Operation::from(Operation::PrepaidPurchase) as i32,
        provider_reference: reference.into(),
        provider_product_code: "PULSA10".into(),
        account: "081234567890".into(),
        first_dispatch,
        transaction_created_at: Some(loket_protocol::conversions::timestamp(chrono::Utc::now())),
        ..Default::default()
    }
}

/// Publishes `command` with message id `msg_id`, as the ingress does.
pub async fn publish(js: &jetstream::Context, msg_id: &str, command: &bus::Command) {
    let headers = loket_runtime::bus::headers(
        msg_id,
        &loket_runtime::telemetry::TraceContext::new_root(),
        &command.transaction_id,
    );
    loket_runtime::bus::publish_durable(
        js,
        subjects::command(Provider::OkeBayar, Operation::PrepaidPurchase),
        headers,
        command.encode_to_vec(),
    )
    .await
    .unwrap();
}

/// The streams on `nats_url`, and a subscription to the result events the
/// connector publishes.
pub async fn bus(nats_url: &str) -> (jetstream::Context, async_nats::Subscriber) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = jetstream::new(client.clone());
    loket_runtime::bus::ensure_streams(&js).await.unwrap();
    let results = client
        .subscribe(subjects::result(Provider::OkeBayar))
        .await
        .unwrap();
    (js, results)
}

pub async fn next_result(results: &mut async_nats::Subscriber) -> bus::ResultEvent {
    let message = tokio::time::timeout(Duration::from_secs(20), results.next())
        .await
        .expect("a result within 20 s")
        .unwrap();
    bus::ResultEvent::decode(message.payload).unwrap()
}

/// Messages a stream holds now.
pub async fn messages_in(js: &jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Connector settings towards the fake at `url`, with a fresh database for
/// the send journal.
pub async fn settings(
    nats_url: &str,
    url: &str,
    timeout_ms: u64,
    ack_wait_ms: u64,
) -> ConnectorSettings {
    let mut settings = ConnectorSettings::default();
    settings.common.nats_url = nats_url.to_string();
    settings.common.database_url = Secret::new(
        loket_test_support::postgres::fresh_database()
            .await
            .expect("a fresh database for the send journal"),
    );
    settings.worker.concurrency = 4;
    settings.worker.ack_wait_ms = ack_wait_ms;
    settings.okebayar.url = url.to_string();
    settings.okebayar.userid = USERID.into();
    settings.okebayar.userpin = Secret::new(PIN);
    settings.okebayar.timeout_ms = timeout_ms;
    settings.okebayar.connect_timeout_ms = 500;
    settings
}

/// The real connector binary, configured through the environment as an
/// operator would configure it, from `settings` (its log goes to the test's
/// stderr, which the runner shows when the test fails); killed when dropped.
pub struct Binary(pub std::process::Child);

impl Binary {
    pub fn spawn(settings: &ConnectorSettings, extra: &[(&str, &str)]) -> Binary {
        let mut command =
            std::process::Command::new(env!("CARGO_BIN_EXE_loket-okebayar-connector"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("LOKET_")) {
            command.env_remove(name);
        }
        let okebayar = &settings.okebayar;
        command.envs([
            ("LOKET_NATS_URL", settings.common.nats_url.clone()),
            (
                "LOKET_DATABASE_URL",
                settings.common.database_url.expose().to_string(),
            ),
            ("LOKET_ADMIN_ADDR", "127.0.0.1:0".to_string()),
            ("LOKET_OKEBAYAR__URL", okebayar.url.clone()),
            ("LOKET_OKEBAYAR__USERID", okebayar.userid.clone()),
            (
                "LOKET_OKEBAYAR__USERPIN",
                okebayar.userpin.expose().to_string(),
            ),
            (
                "LOKET_OKEBAYAR__TIMEOUT_MS",
                okebayar.timeout_ms.to_string(),
            ),
            (
                "LOKET_OKEBAYAR__CONNECT_TIMEOUT_MS",
                okebayar.connect_timeout_ms.to_string(),
            ),
            (
                "LOKET_WORKER__ACK_WAIT_MS",
                settings.worker.ack_wait_ms.to_string(),
            ),
            // One worker thread, as `make run` runs it: the current-thread
            // scheduler (`loket_runtime::runtime`).
            ("TOKIO_WORKER_THREADS", "1".to_string()),
        ]);
        for (name, value) in extra {
            command.env(name, value);
        }
        Binary(
            command
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .expect("the connector binary starts"),
        )
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A replica run in-process on the same durable consumer, taking over a
/// purchase of `reference` another replica sent and never answered for: its
/// first result (after the ack wait) is a success found by one status
/// check, with still one purchase at the provider. Returns that result, and
/// the replica with its shutdown.
pub async fn take_over_with_a_status_check(
    settings: ConnectorSettings,
    hits: &Hits,
    reference: &str,
    results: &mut async_nats::Subscriber,
) -> (
    bus::ResultEvent,
    loket_runtime::Shutdown,
    tokio::task::JoinHandle<Result<(), loket_okebayar::Error>>,
) {
    let shutdown = loket_runtime::Shutdown::new();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replica = tokio::spawn(loket_okebayar::run(settings, admin, shutdown.clone()));
    let result = next_result(results).await;
    assert_eq!(result.outcome, loket_protocol::pb::Outcome::Success as i32);
    assert_eq!(count(hits, "OkeBayar-cek-status", reference), 1, "{hits:?}");
    assert_eq!(count(hits, "OkeBayar-prabayar", reference), 1, "{hits:?}");
    (result, shutdown, replica)
}

/// Triggers `shutdown` and waits (at most `within`) for the connector
/// `running` to drain and return without an error.
pub async fn stop<E: std::fmt::Debug>(
    shutdown: &loket_runtime::Shutdown,
    running: tokio::task::JoinHandle<Result<(), E>>,
    within: Duration,
) {
    shutdown.trigger();
    tokio::time::timeout(within, running)
        .await
        .expect("drains after shutdown")
        .expect("the connector task")
        .expect("the connector stops without an error");
}
