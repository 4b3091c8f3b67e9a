//! The connectivity probe against the real OkeBayar simulator: the worker
//! echoes every `probe_interval_ms`, and the admin port's
//! `loket_connector_provider_reachable` gauge follows the simulator into an
//! outage and out of it.

mod common;

use std::time::{Duration, Instant};

use common::{settings, stop, PIN, USERID};
use loket_okebayar::run;
use loket_runtime::{Secret, Shutdown};
use loket_simulators::common::Outage;
use loket_simulators::okebayar::{OkeBayarSim, OkeBayarSimSettings};
use loket_test_support::nats::NatsServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// The gauge's value in the admin port's `/metrics`, if it is there yet.
async fn reachable(admin: std::net::SocketAddr) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await.ok()?;
    page.lines()
        .find(|line| line.starts_with("loket_connector_provider_reachable{provider=\"okebayar\"}"))
        .and_then(|line| line.split_whitespace().last())
        .map(str::to_string)
}

async fn until_reachable_is(admin: std::net::SocketAddr, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = reachable(admin).await;
        if seen.as_deref() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reachable gauge still {seen:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_probe_reports_the_provider_down_in_an_outage_and_up_after() {
    let nats = NatsServer::start().expect("a private nats-server");
    let sim = OkeBayarSim::new(OkeBayarSimSettings {
        userid: USERID.into(),
        userpin: Secret::new(PIN),
        ..Default::default()
    });
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}/", sim_listener.local_addr().unwrap());
    let sim_shutdown = Shutdown::new();
    tokio::spawn({
        let (sim, shutdown) = (sim.clone(), sim_shutdown.clone());
        async move { sim.serve(sim_listener, shutdown).await }
    });

    let mut settings = settings(&nats.url(), &sim_url, 1_000, 10_000).await;
    settings.worker.probe_interval_ms = 100;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let service = tokio::spawn(run(settings, admin, shutdown.clone()));

    until_reachable_is(admin_addr, "1").await;
    sim.outage()
        .start(Outage {
            status: 503,
            for_ms: 60_000,
            after_commit: false,
        })
        .unwrap();
    until_reachable_is(admin_addr, "0").await;
    sim.outage().end();
    until_reachable_is(admin_addr, "1").await;

    stop(&shutdown, service, Duration::from_secs(20)).await;
    sim_shutdown.trigger();
}
