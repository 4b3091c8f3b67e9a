//! The connectivity probe against the real OkeBayar simulator: the worker
//! echoes every `probe_interval_ms`, and the admin port's
//! `loket_connector_provider_reachable` gauge follows the simulator into an
//! outage and out of it.

mod common;

use std::time::Duration;

use common::{settings, stop, PIN, USERID};
use loket_okebayar::run;
use loket_runtime::{Secret, Shutdown};
use loket_simulators::common::Outage;
use loket_simulators::okebayar::{OkeBayarSim, OkeBayarSimSettings};
use loket_test_support::admin::until_metric_is;
use loket_test_support::nats::NatsServer;
use tokio::net::TcpListener;

const REACHABLE: &str = "loket_connector_provider_reachable{provider=\"okebayar\"}";

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

    until_metric_is(admin_addr, REACHABLE, "1").await;
    sim.outage()
        .start(Outage {
            status: 503,
            for_ms: 60_000,
            after_commit: false,
        })
        .unwrap();
    until_metric_is(admin_addr, REACHABLE, "0").await;
    sim.outage().end();
    until_metric_is(admin_addr, REACHABLE, "1").await;

    stop(&shutdown, service, Duration::from_secs(20)).await;
    sim_shutdown.trigger();
}
