//! [`SmilepayzFixture`]: the Smilepayz simulator and connector for one test.
//! `new` generates the merchant RSA pair (the simulator generates its
//! platform pair) and builds the simulator (nothing started); `start` serves
//! the simulator on `127.0.0.1:0` and runs the connector's real `run` with
//! fast test timeouts; the callback receiver verifies with
//! [`SmilepayzFixture::callback_settings`].

use crate::service::{Failures, Service};
use loket_connector::worker::{Failpoint, WorkerSettings};
use loket_runtime::{Secret, Shutdown};
use loket_simulators::smilepayz::{SmilepayzSim, SmilepayzSimSettings};
use loket_smilepayz::{CallbackSettings, ConnectorSettings, SmilepayzSettings};

pub const MERCHANT_ID: &str = "20001";
/// A canary: must never appear in a log line, a row or an exchange.
pub const CANARY_MERCHANT_SECRET: &str = "CANARY-SMILEPAYZ-SECRET-5521";
/// Connector HTTP timeout towards the simulator.
pub const PROVIDER_TIMEOUT_MS: u64 = 1_500;
/// How long after its creation the simulator settles an order (unless a
/// test asks for another delay, see [`SmilepayzFixture::settling_after`]).
pub const SETTLE_DELAY_MS: u64 = 300;

pub struct SmilepayzFixture {
    pub sim: SmilepayzSim,
    /// `http://127.0.0.1:PORT` once started.
    pub sim_url: String,
    pub merchant_private_key_pem: String,
    pub merchant_public_key_pem: String,
    /// The platform key the simulator signs callbacks with (tests forge
    /// genuine-but-stale callbacks with it).
    pub platform_private_key_pem: String,
    /// Applied to the next connector start.
    pub failpoint: Option<Failpoint>,
    /// The connector's not-found grace (short in tests).
    pub not_found_grace_ms: u64,
    /// Applied to the next connector start (`worker.probe_interval_ms`).
    pub probe_interval_ms: u64,
    /// The running connector's admin port.
    pub connector_admin: Option<std::net::SocketAddr>,
    nats_url: String,
    database_url: String,
    callback_url: String,
    connector: Option<Service>,
    sim_shutdown: Shutdown,
    /// The connector's unexpected ends (shared with the TestApp that owns
    /// the fixture); the drop fails the test with them.
    pub(crate) failures: Failures,
}

impl Default for SmilepayzFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl SmilepayzFixture {
    /// [`settling_after`](Self::settling_after) [`SETTLE_DELAY_MS`].
    pub fn new() -> Self {
        Self::settling_after(SETTLE_DELAY_MS)
    }

    /// Generates keys and builds the simulator, which settles an order
    /// `settle_delay_ms` after creating it; nothing is started.
    pub fn settling_after(settle_delay_ms: u64) -> Self {
        let (private, public) = loket_smilepayz::sign::generate_key_pair();
        let (platform_private, _) = loket_smilepayz::sign::generate_key_pair();
        let sim = SmilepayzSim::new(SmilepayzSimSettings {
            platform_private_key: Secret::new(platform_private.clone()),
            merchant_id: MERCHANT_ID.into(),
            merchant_secret: Secret::new(CANARY_MERCHANT_SECRET),
            merchant_public_key: public.clone(),
            settle_delay_ms,
            callback_schedule_ms: vec![0, 300, 600, 1_200, 2_200],
            callback_timeout_ms: 2_000,
            inquiry_race_ms: 200,
            slow_reply_ms: PROVIDER_TIMEOUT_MS * 2,
            ..Default::default()
        });
        SmilepayzFixture {
            sim,
            sim_url: String::new(),
            merchant_private_key_pem: private,
            merchant_public_key_pem: public,
            platform_private_key_pem: platform_private,
            failpoint: None,
            not_found_grace_ms: 2_000,
            probe_interval_ms: WorkerSettings::default().probe_interval_ms,
            connector_admin: None,
            nats_url: String::new(),
            database_url: String::new(),
            callback_url: String::new(),
            connector: None,
            sim_shutdown: Shutdown::new(),
            failures: Failures::default(),
        }
    }

    /// What the callback receiver needs: the simulator's platform public key.
    pub fn callback_settings(&self) -> CallbackSettings {
        CallbackSettings {
            platform_public_key: self.sim.platform_public_key_pem(),
            mask_secrets: vec![Secret::new(CANARY_MERCHANT_SECRET)],
            ..Default::default()
        }
    }

    /// The connector's settings (valid once [`Self::start`] ran).
    pub fn connector_settings(&self) -> ConnectorSettings {
        ConnectorSettings {
            common: loket_runtime::config::Common {
                nats_url: self.nats_url.clone(),
                database_url: Secret::new(self.database_url.clone()),
                admin_addr: "127.0.0.1:0".into(),
                log_json: false,
                otlp_endpoint: String::new(),
                shutdown_grace_ms: 5_000,
            },
            worker: WorkerSettings {
                concurrency: 16,
                ack_wait_ms: PROVIDER_TIMEOUT_MS * 2 + 1_000,
                failpoint: self.failpoint,
                probe_interval_ms: self.probe_interval_ms,
            },
            smilepayz: SmilepayzSettings {
                base_url: self.sim_url.clone(),
                merchant_id: MERCHANT_ID.into(),
                merchant_name: "loket".into(),
                merchant_secret: Secret::new(CANARY_MERCHANT_SECRET),
                merchant_private_key: Secret::new(self.merchant_private_key_pem.clone()),
                timeout_ms: PROVIDER_TIMEOUT_MS,
                connect_timeout_ms: 500,
                callback_url: self.callback_url.clone(),
                not_found_grace_ms: self.not_found_grace_ms,
                ..Default::default()
            },
        }
    }

    /// Serves the simulator (its callbacks go to `callback_url`, sent as
    /// `callbackUrl` on every request) and starts the connector.
    pub async fn start(
        &mut self,
        nats_url: &str,
        callback_url: &str,
        database_url: &str,
    ) -> anyhow::Result<()> {
        self.nats_url = nats_url.to_string();
        self.callback_url = callback_url.to_string();
        self.database_url = database_url.to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.sim_url = format!("http://{}", listener.local_addr()?);
        {
            let sim = self.sim.clone();
            let shutdown = self.sim_shutdown.clone();
            tokio::spawn(async move { sim.serve(listener, shutdown).await });
        }
        self.start_connector().await
    }

    async fn start_connector(&mut self) -> anyhow::Result<()> {
        let settings = self.connector_settings();
        settings.validate()?;
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        self.connector_admin = Some(admin.local_addr()?);
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        self.connector = Some(Service::spawn(
            "smilepayz-connector",
            shutdown,
            &self.failures,
            async move {
                loket_smilepayz::run(settings, admin, s)
                    .await
                    .map_err(|e| e.to_string())
            },
        ));
        Ok(())
    }

    /// Like `kill -9`: the connector task is dropped mid-flight.
    pub fn kill_connector(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.kill();
        }
    }

    /// Kills the connector (if running) and starts a new one.
    pub async fn restart_connector(&mut self) {
        self.kill_connector();
        self.start_connector()
            .await
            .expect("smilepayz connector restarts");
    }

    /// Drains the connector and stops the simulator.
    pub async fn stop(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.stop().await;
        }
        self.sim_shutdown.trigger();
    }
}

impl Drop for SmilepayzFixture {
    fn drop(&mut self) {
        let failures = self.failures.take();
        self.kill_connector();
        self.sim_shutdown.trigger();
        crate::service::fail_with("SmilepayzFixture", failures);
    }
}
