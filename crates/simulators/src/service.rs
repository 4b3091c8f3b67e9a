//! The `loket-sim` process: every simulator on its own port, plus the admin
//! port (liveness, readiness, metrics). The binary only loads [`Settings`],
//! binds [`Listeners`] and calls [`run`]; tests can call the same `run`.

use std::time::Duration;

use axum::Router;
use loket_runtime::admin::{self, Readiness};
use loket_runtime::http_server::Limits;
use loket_runtime::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::common::{self, DEFAULT_CONNECTION_LIMITS, DEFAULT_REMEMBERED_REFERENCES};
use crate::okebayar::{OkeBayarSim, OkeBayarSimSettings};
use crate::smilepayz::{SmilepayzSim, SmilepayzSimSettings};
use crate::snapqr::{SnapQrSim, SnapQrSimSettings};

/// `loket-sim` settings: defaults, then `LOKET_CONFIG`'s TOML, then
/// `LOKET_…` variables (e.g. `LOKET_OKEBAYAR__CALLBACK_URL`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub log_json: bool,
    /// Liveness, readiness and Prometheus metrics.
    pub admin_addr: String,
    /// Where the OkeBayar simulator listens.
    pub okebayar_addr: String,
    pub okebayar: OkeBayarSimSettings,
    /// Where the Smilepayz simulator listens (empty: not started).
    pub smilepayz_addr: String,
    pub smilepayz: SmilepayzSimSettings,
    /// Where the SNAP QR CPM simulator listens (empty: not started).
    pub snapqr_addr: String,
    pub snapqr: SnapQrSimSettings,
    /// How many references each simulator remembers (its ledger, request
    /// counts and callback logs; SNAP also issued qrContents and
    /// X-EXTERNAL-IDs): a new one beyond this forgets the oldest, which a
    /// status check then reports unknown and a new request may reuse. At
    /// least 1; the default, 1,000,000, is ≈ 1.3 GB per simulator under a
    /// purchase load (100,000 remembered OkeBayar purchases measured ≈ 127 MB).
    pub remembered_references: usize,
    /// How long a client may take to send a request head (line and headers),
    /// and a kept-alive connection may stay idle, before a simulator closes
    /// the connection. Default 5 s; at least 1.
    pub header_read_timeout_ms: u64,
    /// Open connections each simulator's port holds at most, from one source
    /// or many; one more is closed at accept. Default 4,096, far above what a
    /// load test opens; at least 1.
    pub max_connections: usize,
    /// How long a stopping simulator waits for the requests in flight before
    /// it stops regardless. Default 10 s.
    pub shutdown_grace_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log_json: false,
            admin_addr: "127.0.0.1:9180".into(),
            okebayar_addr: "127.0.0.1:8180".into(),
            okebayar: OkeBayarSimSettings::default(),
            smilepayz_addr: "127.0.0.1:8181".into(),
            smilepayz: SmilepayzSimSettings::default(),
            snapqr_addr: "127.0.0.1:8183".into(),
            snapqr: SnapQrSimSettings::default(),
            remembered_references: DEFAULT_REMEMBERED_REFERENCES,
            header_read_timeout_ms: DEFAULT_CONNECTION_LIMITS.header_read_timeout.as_millis()
                as u64,
            max_connections: DEFAULT_CONNECTION_LIMITS.max_connections,
            shutdown_grace_ms: DEFAULT_CONNECTION_LIMITS.drain_grace.as_millis() as u64,
        }
    }
}

impl loket_runtime::binary::ServiceSettings for Settings {
    fn log_settings(&self) -> loket_runtime::telemetry::LogSettings {
        loket_runtime::telemetry::LogSettings {
            json: self.log_json,
            ..Default::default()
        }
    }

    fn admin_addr(&self) -> &str {
        &self.admin_addr
    }
}

/// A setting `loket-sim` cannot work with, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub problem: &'static str,
}

impl Settings {
    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let must_be_positive = [
            ("remembered_references", self.remembered_references as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("max_connections", self.max_connections as u64),
        ];
        match must_be_positive.into_iter().find(|(_, value)| *value == 0) {
            Some((key, _)) => Err(InvalidSetting {
                key,
                problem: "must be greater than 0",
            }),
            None => Ok(()),
        }
    }

    /// Every simulator port's connection limits. One source may hold all of
    /// `max_connections`: a load test comes from one machine.
    pub fn connection_limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            stalled_write_timeout: Duration::from_millis(self.header_read_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections,
            max_header_bytes: DEFAULT_CONNECTION_LIMITS.max_header_bytes,
            drain_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }
}

pub struct Listeners {
    pub okebayar: TcpListener,
    pub admin: TcpListener,
    /// The Smilepayz simulator's listener, when started.
    pub smilepayz: Option<TcpListener>,
    /// The SNAP QR CPM simulator's listener, when started.
    pub snapqr: Option<TcpListener>,
}

/// Validates the settings, then serves every simulator until `shutdown`
/// fires, then drains.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), InvalidSetting> {
    settings.validate()?;
    let remembered = settings.remembered_references;
    let limits = settings.connection_limits();
    // What each simulator's own `serve` does, with the settings' limits;
    // `background` is the simulator's stop for its callbacks and timers.
    let serve = |router: Router, background: Shutdown, listener: TcpListener| {
        let served = common::serve_limited(router, listener, limits, shutdown.clone(), background);
        tokio::spawn(served)
    };
    let readiness = Readiness::default();
    let admin = admin::spawn(listeners.admin, readiness.clone(), shutdown.clone());
    let okebayar = OkeBayarSim::remembering(settings.okebayar, remembered);
    let served = serve(
        okebayar.router(),
        okebayar.inner.stop.clone(),
        listeners.okebayar,
    );
    let smilepayz = listeners.smilepayz.map(|listener| {
        let sim = SmilepayzSim::remembering(settings.smilepayz, remembered);
        tracing::info!(platform_public_key = %sim.platform_public_key_pem(), "smilepayz simulator: callbacks are signed with this platform key");
        serve(sim.router(), sim.inner.stop.clone(), listener)
    });
    let snapqr = listeners.snapqr.and_then(|listener| match SnapQrSim::remembering(
        settings.snapqr,
        remembered,
    ) {
        Ok(sim) => {
            tracing::info!(issuer_public_key = %sim.issuer_public_key_pem(), "snapqr simulator: notifies are signed with this issuer key");
            Some(serve(sim.router(), sim.inner.stop.clone(), listener))
        }
        Err(error) => {
            tracing::error!(%error, "snapqr simulator not started");
            None
        }
    });
    readiness.set(true);
    tracing::info!("simulators ready");
    let _ = served.await;
    if let Some(smilepayz) = smilepayz {
        let _ = smilepayz.await;
    }
    if let Some(snapqr) = snapqr {
        let _ = snapqr.await;
    }
    admin.stop().await;
    Ok(())
}
