//! The connectivity probe against the real Smilepayz simulator: with no
//! echo in the protocol, the worker probes with the balance inquiry, and the
//! admin port's `loket_connector_provider_reachable` gauge follows the
//! simulator into an outage and out of it.

use loket_simulators::common::Outage;
use loket_test_support::admin::until_metric_is;
use loket_test_support::nats::NatsServer;
use loket_test_support::smilepayz::SmilepayzFixture;

const REACHABLE: &str = "loket_connector_provider_reachable{provider=\"smilepayz\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balance_probe_reports_the_provider_down_in_an_outage_and_up_after() {
    let nats = NatsServer::start().expect("a private nats-server");
    let database = loket_test_support::postgres::fresh_database()
        .await
        .expect("a fresh database for the send journal");
    let mut smilepayz = SmilepayzFixture::new();
    smilepayz.probe_interval_ms = 100;
    smilepayz
        .start(
            &nats.url(),
            "http://127.0.0.1:9/callback/smilepayz",
            &database,
        )
        .await
        .expect("simulator and connector");
    let admin = smilepayz
        .connector_admin
        .expect("the connector's admin port");

    until_metric_is(admin, REACHABLE, "1").await;
    smilepayz
        .sim
        .outage()
        .start(Outage {
            status: 502,
            for_ms: 60_000,
            after_commit: false,
        })
        .unwrap();
    until_metric_is(admin, REACHABLE, "0").await;
    smilepayz.sim.outage().end();
    until_metric_is(admin, REACHABLE, "1").await;
}
