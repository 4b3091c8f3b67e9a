//! `loket-sim`: the provider simulators as one process (demos, `make run`,
//! load tests). Config: defaults → `LOKET_CONFIG` TOML → `LOKET_…` env;
//! [`loket_runtime::binary`] loads it, starts telemetry and binds the admin
//! port.

use loket_runtime::binary::{self, bind};
use loket_simulators::service::{self, Listeners, Settings};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    binary::serve(
        "loket-sim",
        |settings: Settings, admin, shutdown| async move {
            let okebayar = bind("okebayar_addr", &settings.okebayar_addr).await?;
            let smilepayz = bind_unless_blank("smilepayz_addr", &settings.smilepayz_addr).await?;
            let snapqr = bind_unless_blank("snapqr_addr", &settings.snapqr_addr).await?;
            tracing::info!(
                okebayar = %okebayar.local_addr()?,
                scenario_prefix = %settings.okebayar.scenario_prefix,
                callback_url = ?settings.okebayar.callback_url,
                remembered_references = settings.remembered_references,
                "loket-sim listening"
            );
            let listeners = Listeners {
                okebayar,
                admin,
                smilepayz,
                snapqr,
            };
            Ok(service::run(settings, listeners, shutdown).await?)
        },
    )
}

/// [`bind`], or `None` when `addr` is blank (that simulator is off).
async fn bind_unless_blank(setting: &str, addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.trim().is_empty() {
        return Ok(None);
    }
    bind(setting, addr).await.map(Some)
}
