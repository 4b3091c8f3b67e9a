//! The `loket-sim` process: every simulator on its own port, plus the admin
//! port (liveness, readiness, metrics). The binary only loads [`Settings`],
//! binds [`Listeners`] and calls [`run`]; tests can call the same `run`.

use loket_runtime::admin::{self, Readiness};
use loket_runtime::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::okebayar::{OkeBayarSim, OkeBayarSimSettings};

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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log_json: false,
            admin_addr: "127.0.0.1:9180".into(),
            okebayar_addr: "127.0.0.1:8180".into(),
            okebayar: OkeBayarSimSettings::default(),
        }
    }
}

pub struct Listeners {
    pub okebayar: TcpListener,
    pub admin: TcpListener,
}

/// Serves every simulator until `shutdown` fires, then drains.
pub async fn run(settings: Settings, listeners: Listeners, shutdown: Shutdown) {
    let readiness = Readiness::default();
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        readiness.clone(),
        shutdown.clone(),
    ));
    let okebayar = OkeBayarSim::new(settings.okebayar);
    let served = {
        let shutdown = shutdown.clone();
        let okebayar = okebayar.clone();
        tokio::spawn(async move { okebayar.serve(listeners.okebayar, shutdown).await })
    };
    readiness.set(true);
    tracing::info!("simulators ready");
    let _ = served.await;
    let _ = admin.await;
}
