//! The Smilepayz connector worker: loads configuration, starts telemetry,
//! binds the admin port and runs [`loket_smilepayz::run`] until SIGTERM.

use anyhow::Context as _;
use loket_runtime::{config, telemetry, Shutdown};
use loket_smilepayz::{run, ConnectorSettings};

fn main() -> anyhow::Result<()> {
    loket_runtime::runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings: ConnectorSettings =
        config::load().context("loading the Smilepayz connector configuration")?;
    let _logs = telemetry::init(
        loket_smilepayz::service::SERVICE_NAME,
        &settings.common.log_settings(),
    );
    let admin = tokio::net::TcpListener::bind(&settings.common.admin_addr)
        .await
        .with_context(|| format!("binding admin_addr {}", settings.common.admin_addr))?;
    tracing::info!(admin = %admin.local_addr()?, "admin port bound");
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    loket_runtime::on_workers(run(settings, admin, shutdown)).await?;
    Ok(())
}
