//! The SNAP QR CPM connector worker as a service: settings, start-up checks
//! and [`run`], which the binary `loket-snapqr-connector` and the tests call
//! alike (CONVENTIONS #3).

use std::sync::Arc;

use loket_connector::service::{self as connector_service, ServiceError};
use loket_connector::worker::WorkerSettings;
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

impl loket_runtime::binary::ServiceSettings for ConnectorSettings {
    fn log_settings(&self) -> loket_runtime::telemetry::LogSettings {
        self.common.log_settings()
    }

    fn admin_addr(&self) -> &str {
        &self.common.admin_addr
    }
}

impl ConnectorSettings {
    /// Every check that can be made before connecting, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.snapqr.validate()?;
        connector_service::check_worker_settings(
            &self.common,
            &self.worker,
            "snapqr.timeout_ms",
            self.snapqr.timeout_ms,
        )?;
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
    Service(#[from] ServiceError),
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
    tracing::info!(
        base_url = %settings.snapqr.base_url,
        path_prefix = %settings.snapqr.path_prefix,
        client_key = %settings.snapqr.client_key,
        channel_id = %settings.snapqr.channel_id,
        timeout_ms = settings.snapqr.timeout_ms,
        "starting the SNAP QR CPM connector"
    );
    connector_service::serve(
        connector,
        SERVICE_NAME,
        &settings.common,
        settings.worker,
        admin,
        shutdown,
    )
    .await
    .map_err(Error::from)
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
