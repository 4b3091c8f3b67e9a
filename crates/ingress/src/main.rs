//! `loket-ingress`: loads settings, starts telemetry, binds the gRPC and
//! admin ports, and runs [`loket_ingress::run`] until SIGTERM/Ctrl-C.

use anyhow::Context as _;
use loket_ingress::{Listeners, Settings};

fn main() -> anyhow::Result<()> {
    loket_runtime::runtime()
        .context("starting the tokio runtime")?
        .block_on(serve())
}

async fn serve() -> anyhow::Result<()> {
    let settings: Settings = loket_runtime::config::load()?;
    let _logs = loket_runtime::telemetry::init("loket-ingress", &settings.common.log_settings());
    let main = tokio::net::TcpListener::bind(&settings.grpc_addr)
        .await
        .with_context(|| format!("grpc_addr: cannot bind {}", settings.grpc_addr))?;
    let admin = tokio::net::TcpListener::bind(&settings.common.admin_addr)
        .await
        .with_context(|| format!("admin_addr: cannot bind {}", settings.common.admin_addr))?;
    tracing::info!(grpc = %main.local_addr()?, admin = %admin.local_addr()?, "listening");
    let shutdown = loket_runtime::Shutdown::new();
    shutdown.on_signals();
    loket_runtime::on_workers(loket_ingress::run(
        settings,
        Listeners { main, admin },
        shutdown,
    ))
    .await?;
    Ok(())
}
