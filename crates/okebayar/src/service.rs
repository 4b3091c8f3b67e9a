//! The OkeBayar connector worker as a service: settings, start-up checks and
//! [`run`], which the binary `loket-okebayar-connector` and the tests call
//! alike (CONVENTIONS #3).

use std::sync::Arc;

use loket_connector::service::{self as connector_service, ServiceError};
use loket_connector::worker::WorkerSettings;
use loket_runtime::config::Common;
use loket_runtime::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::connector::OkeBayarConnector;
use crate::settings::{InvalidSetting, OkeBayarSettings};

/// The name the connector gives itself on NATS and in telemetry.
pub const SERVICE_NAME: &str = "loket-okebayar-connector";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectorSettings {
    #[serde(flatten)]
    pub common: Common,
    pub worker: WorkerSettings,
    pub okebayar: OkeBayarSettings,
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
        self.okebayar.validate()?;
        connector_service::check_worker_settings(
            &self.common,
            &self.worker,
            "okebayar.timeout_ms",
            self.okebayar.timeout_ms,
        )?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] InvalidSetting),
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
    let connector = Arc::new(OkeBayarConnector::new(settings.okebayar.clone()));
    tracing::info!(
        url = %settings.okebayar.url,
        userid = %settings.okebayar.userid,
        format = ?settings.okebayar.format,
        callback_url = %settings.okebayar.callback_url,
        timeout_ms = settings.okebayar.timeout_ms,
        "starting the OkeBayar connector"
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
    use loket_runtime::Secret;

    fn valid() -> ConnectorSettings {
        let mut settings = ConnectorSettings::default();
        settings.okebayar.userid = "pcu00001".into();
        settings.okebayar.userpin = Secret::new("CANARY-PIN-7731");
        settings
    }

    #[test]
    fn defaults_are_consistent_once_credentials_are_set() {
        valid().validate().unwrap();
        assert_eq!(
            ConnectorSettings::default().validate().unwrap_err().key,
            "okebayar.userid"
        );
    }

    #[test]
    fn ack_wait_must_exceed_twice_the_http_timeout() {
        let mut settings = valid();
        settings.worker.ack_wait_ms = 90_000;
        let error = settings.validate().unwrap_err();
        assert_eq!(error.key, "worker.ack_wait_ms");
        assert!(error.to_string().contains("okebayar.timeout_ms"), "{error}");
        settings.okebayar.timeout_ms = 1_000;
        settings.okebayar.connect_timeout_ms = 500;
        settings.validate().unwrap();
    }

    #[test]
    fn settings_load_from_toml_and_env_shape() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "nats_url = \"nats://127.0.0.1:1\"\n[worker]\nconcurrency = 3\n[okebayar]\nuserid = \"u1\"\nuserpin = \"p\"\nformat = \"json\"\n",
        )
        .unwrap();
        let settings: ConnectorSettings =
            loket_runtime::config::load_from(Some(file.to_str().unwrap())).unwrap();
        assert_eq!(settings.common.nats_url, "nats://127.0.0.1:1");
        assert_eq!(settings.worker.concurrency, 3);
        assert_eq!(settings.okebayar.format, crate::wire::Format::Json);
        assert_eq!(settings.okebayar.userpin.expose(), "p");
        assert_eq!(
            settings.okebayar.timeout_ms,
            crate::settings::TIMEOUT_MS_DEFAULT
        );
    }

    #[tokio::test]
    async fn run_refuses_bad_config_naming_the_key() {
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = run(ConnectorSettings::default(), admin, Shutdown::new())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("okebayar.userid"), "{error}");
    }
}
