//! `loket-sim`: the provider simulators as one process (demos, `make run`,
//! load tests). Config: defaults → `LOKET_CONFIG` TOML → `LOKET_…` env.

use anyhow::Context;
use loket_runtime::Shutdown;
use loket_simulators::service::{self, Listeners, Settings};
use tokio::net::TcpListener;

fn main() -> anyhow::Result<()> {
    loket_runtime::runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings: Settings = loket_runtime::config::load()?;
    let _logs = loket_runtime::telemetry::init(
        "loket-sim",
        &loket_runtime::telemetry::LogSettings {
            json: settings.log_json,
            ..Default::default()
        },
    );
    let okebayar = TcpListener::bind(&settings.okebayar_addr)
        .await
        .with_context(|| format!("okebayar_addr: cannot bind {}", settings.okebayar_addr))?;
    let smilepayz = if settings.smilepayz_addr.trim().is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&settings.smilepayz_addr)
                .await
                .with_context(|| {
                    format!("smilepayz_addr: cannot bind {}", settings.smilepayz_addr)
                })?,
        )
    };
    let snapqr = if settings.snapqr_addr.trim().is_empty() {
        None
    } else {
        Some(
            TcpListener::bind(&settings.snapqr_addr)
                .await
                .with_context(|| format!("snapqr_addr: cannot bind {}", settings.snapqr_addr))?,
        )
    };
    let admin = TcpListener::bind(&settings.admin_addr)
        .await
        .with_context(|| format!("admin_addr: cannot bind {}", settings.admin_addr))?;
    tracing::info!(
        okebayar = %okebayar.local_addr()?,
        admin = %admin.local_addr()?,
        scenario_prefix = %settings.okebayar.scenario_prefix,
        callback_url = ?settings.okebayar.callback_url,
        remembered_references = settings.remembered_references,
        "loket-sim listening"
    );
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    loket_runtime::on_workers(service::run(
        settings,
        Listeners {
            okebayar,
            admin,
            smilepayz,
            snapqr,
        },
        shutdown,
    ))
    .await?;
    Ok(())
}
