//! The `main` every loket service binary shares: build the runtime, load the
//! settings (defaults → `LOKET_CONFIG` TOML → `LOKET_…` environment), start
//! telemetry under the service's name (panics logged too), warn once of the
//! `LOKET_…` variables that are no setting of the service, wire SIGTERM and Ctrl-C to a
//! [`Shutdown`], and run the service on the runtime's workers. A binary adds
//! only what is its own: the ports it binds and the service it runs.

use std::future::Future;

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config;
use crate::telemetry::{self, LogSettings};
use crate::Shutdown;

/// Settings a service binary loads: how it logs and where its admin port is
/// (for most services both come from [`Common`](crate::config::Common)).
pub trait ServiceSettings: DeserializeOwned + Serialize + Default {
    fn log_settings(&self) -> LogSettings;
    /// The `admin_addr` setting.
    fn admin_addr(&self) -> &str;
}

/// Runs the binary `name`: loads `S`, starts telemetry, binds the admin port,
/// then `serve(settings, admin, shutdown)` until it returns. An error names
/// what failed (the setting, the port) and ends the process with a non-zero
/// status.
pub fn serve<S, Serve, Fut>(name: &'static str, serve: Serve) -> anyhow::Result<()>
where
    S: ServiceSettings,
    Serve: FnOnce(S, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    crate::runtime()
        .context("starting the tokio runtime")?
        .block_on(async move {
            let config::Loaded {
                settings,
                ignored_variables,
            } = config::load::<S>().with_context(|| format!("loading the {name} configuration"))?;
            let _logs = telemetry::init(name, &settings.log_settings());
            if !ignored_variables.is_empty() {
                tracing::warn!(
                    variables = %ignored_variables.join(" "),
                    "ignoring LOKET_ environment variables that name no setting of this service \
                     (a typo, or meant for another service)"
                );
            }
            crate::vital::log_panics();
            let admin = bind("admin_addr", settings.admin_addr()).await?;
            tracing::info!(admin = %admin.local_addr()?, "admin port bound");
            let shutdown = Shutdown::new();
            shutdown.on_signals();
            crate::on_workers(serve(settings, admin, shutdown)).await
        })
}

/// Binds the listener the setting `key` names, or says which one could not
/// be bound.
pub async fn bind(key: &str, addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot bind {addr}"))
}
