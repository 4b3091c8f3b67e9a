//! The OkeBayar connector worker as a service: settings, start-up checks and
//! [`run`], which the binary `loket-okebayar-connector` and the tests call
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

impl ConnectorSettings {
    /// Every check that can be made before connecting, naming the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.okebayar.validate()?;
        if self.worker.concurrency == 0 {
            return Err(InvalidSetting::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        // A command not acked within ack_wait is redelivered to another
        // replica; the provider call must finish well before that.
        let minimum = self.okebayar.timeout_ms.saturating_mul(2);
        if self.worker.ack_wait_ms <= minimum {
            return Err(InvalidSetting::new(
                "worker.ack_wait_ms",
                format!(
                    "{} must be greater than 2 × okebayar.timeout_ms ({} ms)",
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
    let readiness = Readiness::default();
    let admin_task = tokio::spawn(admin::serve(admin, readiness.clone(), shutdown.clone()));
    tracing::info!(
        url = %settings.okebayar.url,
        userid = %settings.okebayar.userid,
        format = ?settings.okebayar.format,
        callback_url = %settings.okebayar.callback_url,
        timeout_ms = settings.okebayar.timeout_ms,
        "starting the OkeBayar connector"
    );
    let nats = match bus::connect(&settings.common.nats_url, SERVICE_NAME).await {
        Ok(nats) => nats,
        Err(error) => {
            shutdown.trigger();
            let _ = admin_task.await;
            return Err(error.into());
        }
    };
    let connector = Arc::new(OkeBayarConnector::new(settings.okebayar));
    let result = worker::run(
        connector,
        settings.worker,
        nats.clone(),
        shutdown.clone(),
        readiness.clone(),
    )
    .await;
    readiness.set(false);
    // The worker returns on shutdown or on a setup error; either way stop the
    // admin server too.
    shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
    let _ = nats.flush().await;
    result.map_err(Error::from)
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
