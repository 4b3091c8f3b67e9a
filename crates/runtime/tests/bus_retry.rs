//! The bus against a real nats-server. A retried durable publish outlasts a
//! brief JetStream outage: published while its stream is missing, it lands
//! once the stream is there, and only once; without retries it fails at
//! once. The credentials in a NATS URL authenticate and never reach the
//! logs; credentials the server refuses are an error at once. A connection
//! loss is counted for the services that must know.

use loket_protocol::subjects;
use loket_runtime::bus;
use loket_runtime::telemetry::TraceContext;
use loket_test_support::nats::NatsServer;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
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

/// Log lines written while a test runs.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `RUST_LOG=debug` (what an operator sets in an incident) must not put the
/// bus password in the logs: async-nats logs the server address at DEBUG on
/// every connection attempt, so it must never hold the password in it.
#[tokio::test(flavor = "current_thread")]
async fn the_nats_password_never_reaches_the_logs_while_reconnecting() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    // This thread's subscriber; the client's tasks run on it too.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    // Port 1: nothing listens; the client keeps retrying in the background.
    let client = bus::connect("nats://loket:CANARY-NATS-PW-2@127.0.0.1:1", "log-leak-test")
        .await
        .expect("returns at once (retry_on_initial_connect)");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    drop(client);
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.contains("127.0.0.1"),
        "the attempts are logged: {logs}"
    );
    let leaked: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("CANARY-NATS-PW-2"))
        .take(2)
        .collect();
    assert!(leaked.is_empty(), "password in the logs: {leaked:#?}");
}

/// A nats-server (no JetStream) that accepts user `loket` with `password`
/// only, and its port.
fn nats_with_password(password: &str) -> (std::process::Child, u16) {
    let port = loket_test_support::ports::free_port();
    let server = Command::new(loket_test_support::nats::binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "loket", "--pass", password])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    (server, port)
}

/// The user and password of a NATS URL (percent-encoded where they hold
/// `@`, `:` or `,`) reach nats-server as credentials, though async-nats is
/// never given them in the URL.
#[tokio::test]
async fn credentials_in_the_nats_url_authenticate() {
    let (mut server, port) = nats_with_password("p@ss:w,rd");
    let url = format!("nats://loket:p%40ss%3Aw%2Crd@127.0.0.1:{port}");
    let client = bus::connect(&url, "auth-test").await.unwrap();
    let confirmed = bus::confirm_subscriptions(&client).await;
    // loketctl's one-shot connection, once the server is known to be up.
    let once = match &confirmed {
        Ok(()) => match bus::connect_once(&url, "auth-test-once").await {
            Ok(client) => bus::confirm_subscriptions(&client).await,
            Err(error) => Err(error),
        },
        Err(_) => Ok(()),
    };
    let _ = server.kill();
    let _ = server.wait();
    confirmed.expect("authenticated: the server answers");
    once.expect("connect_once authenticated too (loketctl review settle and baseline)");
}

/// A service given credentials the server refuses fails at start, saying
/// so, rather than retrying in the background while its first JetStream call
/// waits out its timeout. The password is not in the error.
#[tokio::test]
async fn credentials_the_server_refuses_are_an_error_at_once() {
    let (mut server, port) = nats_with_password("right-password");
    let url = format!("nats://loket:CANARY-WRONG-PW@127.0.0.1:{port}");
    // Until the server listens, a refusal cannot be told from a server not
    // up yet; the right credentials tell when it is up.
    let good = format!("nats://loket:right-password@127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if bus::connect_once(&good, "auth-probe").await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        bus::connect_observed(&url, "refused-test"),
    )
    .await;
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "nats-server never accepted the right credentials");
    let error = match refused.expect("answers within its connection timeout, not later") {
        Ok(_) => panic!("connected with a wrong password"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(!error.contains("CANARY-WRONG-PW"), "{error}");
}

/// `connect_observed` counts each loss of the connection, so a service
/// whose plain subscriptions missed what was published meanwhile learns of
/// it.
#[tokio::test]
async fn a_lost_connection_is_counted() {
    let mut server = NatsServer::start().expect("nats-server");
    let (client, mut gaps) = bus::connect_observed(&server.url(), "gap-test")
        .await
        .unwrap();
    bus::confirm_subscriptions(&client).await.unwrap();
    assert_eq!(*gaps.borrow_and_update(), 0);
    server.restart().unwrap();
    tokio::time::timeout(Duration::from_secs(10), gaps.changed())
        .await
        .expect("the loss is counted")
        .unwrap();
    assert!(*gaps.borrow() >= 1);
}
