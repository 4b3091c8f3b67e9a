//! The admin port through a service's drain: `/readyz` says "not ready" while
//! `/livez` and `/metrics` still answer, and the port closes only at the stop.

use loket_runtime::admin::{spawn, Readiness};
use loket_runtime::Shutdown;
use loket_test_support::admin::get;
use std::time::Duration;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_port_stays_open_through_a_drain_saying_not_ready() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let shutdown = Shutdown::new();
    let server = spawn(listener, readiness.clone(), shutdown.clone());

    let starting = get(addr, "/readyz").await.unwrap();
    assert!(starting.starts_with("HTTP/1.1 503"), "{starting}");
    readiness.set(true);
    let serving = get(addr, "/readyz").await.unwrap();
    assert!(serving.starts_with("HTTP/1.1 200"), "{serving}");

    shutdown.trigger();
    // Readiness turns false from a task woken by the drain.
    let mut draining = String::new();
    for _ in 0..100 {
        draining = get(addr, "/readyz").await.unwrap();
        if draining.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining.starts_with("HTTP/1.1 503"), "{draining}");
    let alive = get(addr, "/livez").await.unwrap();
    assert!(alive.starts_with("HTTP/1.1 200"), "{alive}");
    let metrics = get(addr, "/metrics").await.unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");

    server.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port closes once the service has stopped"
    );
}
