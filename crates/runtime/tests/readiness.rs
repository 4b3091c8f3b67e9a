//! `/readyz` follows the dependencies a service watches: not ready while its
//! NATS connection is down or its PostgreSQL does not answer, ready again
//! once they are back, with the reason in the body; a pool busy under load
//! is not a database lost.

use loket_runtime::admin::{spawn, AdminServer, NotReady, Readiness};
use loket_runtime::{bus, Shutdown};
use loket_test_support::admin::get;
use loket_test_support::nats::NatsServer;
use sqlx::postgres::PgPoolOptions;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// An admin port serving a readiness already started (`set(true)`), its
/// address and the server.
async fn started_admin() -> (Readiness, SocketAddr, AdminServer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let admin = spawn(listener, readiness.clone(), Shutdown::new());
    readiness.set(true);
    (readiness, addr, admin)
}

/// Polls `check` until it gives `expected`, for at most 10 s.
async fn until_check_is(readiness: &Readiness, expected: Result<(), NotReady>) {
    let mut last = readiness.check().await;
    for _ in 0..200 {
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = readiness.check().await;
    }
    assert_eq!(last, expected);
}

#[tokio::test]
async fn readyz_says_not_ready_while_nats_is_down_and_ready_once_it_is_back() {
    let mut server = NatsServer::start().expect("nats-server");
    let client = bus::connect(&server.url(), "readiness-test").await.unwrap();
    bus::confirm_subscriptions(&client).await.unwrap();
    let (readiness, addr, admin) = started_admin().await;
    readiness.watch_bus(&client);
    let serving = get(addr, "/readyz").await.unwrap();
    assert!(serving.starts_with("HTTP/1.1 200"), "{serving}");

    server.stop();
    until_check_is(&readiness, Err(NotReady::BusDown)).await;
    let down = get(addr, "/readyz").await.unwrap();
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.contains("NATS connection is down"), "{down}");
    let alive = get(addr, "/livez").await.unwrap();
    assert!(alive.starts_with("HTTP/1.1 200"), "{alive}");

    server.start_again().expect("nats-server again");
    until_check_is(&readiness, Ok(())).await;
    let back = get(addr, "/readyz").await.unwrap();
    assert!(back.starts_with("HTTP/1.1 200"), "{back}");
    admin.stop().await;
}

#[tokio::test]
async fn readyz_says_not_ready_while_postgres_does_not_answer() {
    let url = loket_test_support::postgres::fresh_database()
        .await
        .unwrap();
    let answering = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let readiness = Readiness::default();
    readiness.watch_database(&answering);
    readiness.set(true);
    assert_eq!(readiness.check().await, Ok(()));
    // A pool whose every connection is busy (batches under load) still has
    // a database that answers.
    let busy = answering.acquire().await.unwrap();
    assert_eq!(readiness.check().await, Ok(()));
    drop(busy);

    // A pool whose server is gone: nothing listens on the port.
    let port = loket_test_support::ports::free_port();
    let gone = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&format!("postgres://loket@127.0.0.1:{port}/loket"))
        .unwrap();
    let (unanswered, addr, admin) = started_admin().await;
    unanswered.watch_database(&gone);
    let down = get(addr, "/readyz").await.unwrap();
    assert!(down.starts_with("HTTP/1.1 503"), "{down}");
    assert!(down.contains("PostgreSQL does not answer"), "{down}");
    admin.stop().await;
}
