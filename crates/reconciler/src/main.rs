//! `loket-reconciler`: loads the settings, starts telemetry, binds the admin
//! port and runs [`loket_reconciler::run`] until SIGTERM/Ctrl-C.

use anyhow::Context as _;
use loket_reconciler::{run, Listeners, Settings};
use loket_runtime::{config, telemetry, Shutdown};

fn main() -> anyhow::Result<()> {
    loket_runtime::runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings: Settings = config::load()?;
    let _logs = telemetry::init("loket-reconciler", &settings.common.log_settings());
    let admin = tokio::net::TcpListener::bind(&settings.common.admin_addr)
        .await
        .with_context(|| format!("binding admin_addr {}", settings.common.admin_addr))?;
    tracing::info!(admin = %admin.local_addr()?, "loket-reconciler listening");
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    loket_runtime::on_workers(run(settings, Listeners { admin }, shutdown)).await?;
    Ok(())
}
