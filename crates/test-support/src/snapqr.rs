//! [`SnapQrFixture`]: the SNAP QR CPM simulator and connector for end-to-end
//! tests. Keys are generated when the fixture is made (partner key pair for
//! the token signature, issuer key pair for notifies); none is committed.
//!
//! Use: `let mut f = SnapQrFixture::new();` → give the callback receiver
//! `f.callback_settings()` (it verifies notifies with the simulator's issuer
//! key, mode A) → `f.start(nats_url, &format!("http://{addr}/callback/snapqr"),
//! database_url).await?` → drive payments through gRPC → inspect `f.sim`
//! (`payments_for`, `ledger_state`, `notifies_for`, `token_requests`,
//! `expire_tokens`, `age_payment`).

use crate::service::{Failures, Service};
use loket_connector::worker::{Failpoint, WorkerSettings};
use loket_runtime::{Secret, Shutdown};
use loket_simulators::snapqr::{SnapQrSim, SnapQrSimSettings};
use loket_snapqr::service::ConnectorSettings;
use loket_snapqr::{NotifyMode, NotifySettings, SnapQrSettings};
use tokio::net::TcpListener;

/// Credentials shared by the connector and the simulator in tests.
pub const CLIENT_KEY: &str = "loket-test-snap";
/// A canary: it must never appear in a log line or a row.
pub const CANARY_CLIENT_SECRET: &str = "CANARY-SNAP-SECRET-5512";
pub const CUSTOMER_TOKEN: &str = "CANARY-SNAP-CUSTOMER-7781";
pub const MERCHANT_ID: &str = "00007100010926";
/// Notify mode B: the client key we issue the simulated issuer.
pub const NOTIFY_CLIENT_KEY: &str = "issuer-test-snap";
/// Notify mode B: the secret we issue the simulated issuer (a canary).
pub const CANARY_NOTIFY_SECRET: &str = "CANARY-SNAP-NOTIFY-SECRET-3391";
/// Notify mode B: the key our access tokens are tagged with (a canary).
pub const CANARY_TOKEN_KEY: &str = "CANARY-SNAP-TOKEN-KEY-6620";
/// How long the simulator keeps a scenario 102 payment pending, unless a
/// test asks for longer (`TestOptions::snapqr_pending_resolve_ms`).
pub const PENDING_RESOLVE_MS: u64 = 1_000;

pub struct SnapQrFixture {
    /// The simulator (replaced by `start`, which sets its notify URL).
    pub sim: SnapQrSim,
    pub sim_settings: SnapQrSimSettings,
    /// Our private key (PKCS#8 PEM) for the token signature.
    pub partner_private_pem: String,
    /// `http://127.0.0.1:PORT` once started.
    pub sim_url: Option<String>,
    /// The connector's HTTP timeout towards the simulator.
    pub provider_timeout_ms: u64,
    pub failpoint: Option<Failpoint>,
    connector_settings: Option<ConnectorSettings>,
    connector: Option<Service>,
    sim_shutdown: Shutdown,
    /// The connector's unexpected ends (shared with the TestApp that owns
    /// the fixture); the drop fails the test with them.
    pub(crate) failures: Failures,
}

impl Default for SnapQrFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapQrFixture {
    /// Generates the keys and the simulator settings (nothing started);
    /// notifies in mode A.
    pub fn new() -> Self {
        Self::with_notify_mode(NotifyMode::Rsa)
    }

    /// [`Self::new`] with the notify signature of `mode`: in mode B the
    /// simulator asks the callback receiver for an access token first.
    pub fn with_notify_mode(mode: NotifyMode) -> Self {
        let (partner_private_pem, partner_public_pem) = loket_snapqr::sign::generate_key_pair();
        let (issuer_private_pem, _) = loket_snapqr::sign::generate_key_pair();
        let sim_settings = SnapQrSimSettings {
            client_key: CLIENT_KEY.into(),
            client_secret: Secret::new(CANARY_CLIENT_SECRET),
            partner_public_key: Secret::new(partner_public_pem),
            issuer_private_key: Secret::new(issuer_private_pem),
            customer_token: Secret::new(CUSTOMER_TOKEN),
            merchant_id: MERCHANT_ID.into(),
            notify_delay_ms: 150,
            pending_resolve_ms: PENDING_RESOLVE_MS,
            slow_reply_ms: 3_000,
            notify_mode: mode,
            notify_client_key: NOTIFY_CLIENT_KEY.into(),
            notify_client_secret: Secret::new(CANARY_NOTIFY_SECRET),
            ..SnapQrSimSettings::default()
        };
        let sim = SnapQrSim::new(sim_settings.clone()).expect("simulator keys load");
        SnapQrFixture {
            sim,
            sim_settings,
            partner_private_pem,
            sim_url: None,
            provider_timeout_ms: 1_500,
            failpoint: None,
            connector_settings: None,
            connector: None,
            sim_shutdown: Shutdown::new(),
            failures: Failures::default(),
        }
    }

    /// What the callback receiver needs: the simulator's issuer key, and in
    /// mode B the client key and secret we issued it (the secret is set in
    /// mode A too, where it is ignored, as an environment shared by every
    /// service would give it).
    pub fn callback_settings(&self) -> NotifySettings {
        let mode = self.sim_settings.notify_mode;
        NotifySettings {
            mode,
            issuer_public_key: Secret::new(self.sim.issuer_public_key_pem()),
            client_secret: Secret::new(CANARY_NOTIFY_SECRET),
            issuer_client_key: match mode {
                NotifyMode::Hmac => NOTIFY_CLIENT_KEY.into(),
                NotifyMode::Rsa => String::new(),
            },
            token_key: Secret::new(CANARY_TOKEN_KEY),
            merchant_id: MERCHANT_ID.into(),
            ..NotifySettings::default()
        }
    }

    /// The connector settings (after `start`).
    pub fn connector_settings(&self) -> Option<&ConnectorSettings> {
        self.connector_settings.as_ref()
    }

    /// Starts the simulator (notifies to `callback_url`) and the connector.
    pub async fn start(
        &mut self,
        nats_url: &str,
        callback_url: &str,
        database_url: &str,
    ) -> anyhow::Result<()> {
        self.sim_settings.notify_url = Some(callback_url.to_string());
        self.sim = SnapQrSim::new(self.sim_settings.clone())?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sim_url = format!("http://{}", listener.local_addr()?);
        {
            let sim = self.sim.clone();
            let shutdown = self.sim_shutdown.clone();
            tokio::spawn(async move { sim.serve(listener, shutdown).await });
        }
        let snapqr = SnapQrSettings {
            base_url: sim_url.clone(),
            path_prefix: self.sim_settings.path_prefix.clone(),
            client_key: CLIENT_KEY.into(),
            client_secret: Secret::new(CANARY_CLIENT_SECRET),
            private_key: Secret::new(self.partner_private_pem.clone()),
            merchant_id: MERCHANT_ID.into(),
            timeout_ms: self.provider_timeout_ms,
            connect_timeout_ms: 500,
            demo_customer_token: Secret::new(CUSTOMER_TOKEN),
            ..SnapQrSettings::default()
        };
        self.connector_settings = Some(ConnectorSettings {
            common: loket_runtime::config::Common {
                nats_url: nats_url.to_string(),
                database_url: Secret::new(database_url),
                admin_addr: "127.0.0.1:0".into(),
                log_json: false,
                otlp_endpoint: String::new(),
                shutdown_grace_ms: 5_000,
            },
            worker: WorkerSettings {
                concurrency: 16,
                ack_wait_ms: self.provider_timeout_ms * 2 + 1_000,
                failpoint: self.failpoint,
                ..WorkerSettings::default()
            },
            snapqr,
        });
        self.sim_url = Some(sim_url);
        self.restart_connector().await;
        Ok(())
    }

    /// Kills the connector like `kill -9`: no drain, no ack.
    pub fn kill_connector(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.kill();
        }
    }

    /// (Re)starts the connector with the settings of `start`.
    pub async fn restart_connector(&mut self) {
        self.kill_connector();
        let Some(settings) = self.connector_settings.clone() else {
            panic!("SnapQrFixture::start must run before restart_connector");
        };
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        self.connector = Some(Service::spawn(
            "snapqr-connector",
            shutdown,
            &self.failures,
            async move {
                loket_snapqr::run(settings, admin, s)
                    .await
                    .map_err(|e| e.to_string())
            },
        ));
    }

    /// Stops the connector gracefully and the simulator.
    pub async fn stop(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.stop().await;
        }
        self.sim_shutdown.trigger();
    }
}

impl Drop for SnapQrFixture {
    fn drop(&mut self) {
        let failures = self.failures.take();
        self.kill_connector();
        self.sim_shutdown.trigger();
        crate::service::fail_with("SnapQrFixture", failures);
    }
}
