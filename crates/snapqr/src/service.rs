//! The SNAP QR CPM connector worker as a service: settings, start-up checks
//! and [`run`], which the binary `loket-snapqr-connector` and the tests call
//! alike (CONVENTIONS #3).

use std::sync::Arc;
use std::time::Duration;

use loket_connector::worker::{self, WorkerError, WorkerSettings};
use loket_runtime::admin::{self, Readiness};
use loket_runtime::bus::{self, BusError};
use loket_runtime::config::Common;
use loket_runtime::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::connector::{BuildError, SnapQrConnector};
use crate::settings::{InvalidSetting, SnapQrSettings};

/// The name the connector gives itself on NATS and in telemetry.
pub const SERVICE_NAME: &str = "loket-snapqr-connector";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectorSettings {
    #[serde(flatten)]
    pub common: Common,
    pub worker: WorkerSettings,
    pub snapqr: SnapQrSettings,
}

impl ConnectorSettings {
    /// Every check that can be made before connecting, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.snapqr.validate()?;
        if self.worker.concurrency == 0 {
            return Err(InvalidSetting::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        // One operation may take a token fetch, a call, a 401 retry and a
        // query (409xx01): the ack deadline must cover two HTTP timeouts.
        let minimum = self.snapqr.timeout_ms.saturating_mul(2);
        if self.worker.ack_wait_ms <= minimum {
            return Err(InvalidSetting::new(
                "worker.ack_wait_ms",
                format!(
                    "{} must be greater than 2 × snapqr.timeout_ms ({} ms)",
                    self.worker.ack_wait_ms, minimum
                ),
            ));
        }
        if self.common.nats_url.trim().is_empty() {
            return Err(InvalidSetting::new("nats_url", "must be set"));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] InvalidSetting),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Validates the settings, connects NATS, serves the admin port and runs the
/// worker until `shutdown`, then drains.
pub async fn run(
    settings: ConnectorSettings,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), Error> {
    settings.validate()?;
    let connector = Arc::new(SnapQrConnector::new(settings.snapqr.clone())?);
    let readiness = Readiness::default();
    let admin_task = tokio::spawn(admin::serve(admin, readiness.clone(), shutdown.clone()));
    tracing::info!(
        base_url = %settings.snapqr.base_url,
        path_prefix = %settings.snapqr.path_prefix,
        client_key = %settings.snapqr.client_key,
        channel_id = %settings.snapqr.channel_id,
        timeout_ms = settings.snapqr.timeout_ms,
        "starting the SNAP QR CPM connector"
    );
    let nats = match bus::connect(&settings.common.nats_url, SERVICE_NAME).await {
        Ok(nats) => nats,
        Err(error) => {
            shutdown.trigger();
            let _ = admin_task.await;
            return Err(error.into());
        }
    };
    let result = worker::run(
        connector,
        settings.worker,
        nats.clone(),
        shutdown.clone(),
        readiness.clone(),
    )
    .await;
    readiness.set(false);
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let _ = nats.flush().await;
    result.map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_load_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "nats_url = \"nats://127.0.0.1:1\"\n[snapqr]\nclient_key = \"k\"\nclient_secret = \"s\"\nchannel_id = \"12345\"\ntimestamp_format = \"utc\"\n",
        )
        .unwrap();
        let settings: ConnectorSettings =
            loket_runtime::config::load_from(Some(file.to_str().unwrap())).unwrap();
        assert_eq!(settings.snapqr.client_key, "k");
        assert_eq!(settings.snapqr.client_secret.expose(), "s");
        assert_eq!(settings.snapqr.channel_id, "12345");
        assert_eq!(
            settings.snapqr.timestamp_format,
            crate::TimestampFormat::Utc
        );
        assert_eq!(settings.snapqr.path_prefix, "/snap");
    }

    #[tokio::test]
    async fn run_refuses_bad_config_naming_the_key() {
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = run(ConnectorSettings::default(), admin, Shutdown::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("snapqr.client_key"), "{error}");
    }
}
