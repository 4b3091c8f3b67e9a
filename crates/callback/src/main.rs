//! `loket-callback`: loads the settings, starts telemetry, binds the callback
//! and admin ports and runs [`loket_callback::run`] until SIGTERM/Ctrl-C.

use anyhow::Context as _;
use loket_callback::{run, Listeners, Settings};
use loket_runtime::{config, telemetry, Shutdown};

fn main() -> anyhow::Result<()> {
    loket_runtime::runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings: Settings = config::load()?;
    let _logs = telemetry::init("loket-callback", &settings.common.log_settings());
    let main = tokio::net::TcpListener::bind(&settings.listen_addr)
        .await
        .with_context(|| format!("binding listen_addr {}", settings.listen_addr))?;
    let admin = tokio::net::TcpListener::bind(&settings.common.admin_addr)
        .await
        .with_context(|| format!("binding admin_addr {}", settings.common.admin_addr))?;
    tracing::info!(callback = %main.local_addr()?, admin = %admin.local_addr()?, "loket-callback listening");
    let shutdown = Shutdown::new();
    shutdown.on_signals();
    loket_runtime::on_workers(run(settings, Listeners { main, admin }, shutdown)).await?;
    Ok(())
}
