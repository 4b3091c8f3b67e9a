//! The Smilepayz connector worker as a service: settings, start-up checks
//! and [`run`], which the binary `loket-smilepayz-connector` and the tests
//! call alike (CONVENTIONS #3).

use std::sync::Arc;

use loket_connector::service::{self as connector_service, ServiceError};
use loket_connector::worker::WorkerSettings;
use loket_runtime::config::Common;
use loket_runtime::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::connector::SmilepayzConnector;
use crate::settings::{InvalidSetting, SmilepayzSettings};

pub const SERVICE_NAME: &str = "loket-smilepayz-connector";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ConnectorSettings {
    #[serde(flatten)]
    pub common: Common,
    pub worker: WorkerSettings,
    pub smilepayz: SmilepayzSettings,
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
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.smilepayz.validate()?;
        connector_service::check_worker_settings(
            &self.common,
            &self.worker,
            "smilepayz.timeout_ms",
            self.smilepayz.timeout_ms,
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
    let connector = Arc::new(SmilepayzConnector::new(settings.smilepayz.clone())?);
    tracing::info!(
        base_url = %settings.smilepayz.base_url,
        merchant_id = %settings.smilepayz.merchant_id,
        callback_url = %settings.smilepayz.callback_url,
        timeout_ms = settings.smilepayz.timeout_ms,
        "starting the Smilepayz connector"
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

    #[test]
    fn ack_wait_must_exceed_twice_the_http_timeout() {
        let (private, _) = crate::sign::generate_key_pair();
        let mut settings = ConnectorSettings::default();
        settings.smilepayz.merchant_id = "20001".into();
        settings.smilepayz.merchant_secret = Secret::new("s");
        settings.smilepayz.merchant_private_key = Secret::new(private);
        settings.worker.ack_wait_ms = 60_000;
        assert_eq!(settings.validate().unwrap_err().key, "worker.ack_wait_ms");
        settings.worker.ack_wait_ms = 61_000;
        settings.validate().unwrap();
        assert_eq!(
            ConnectorSettings::default().validate().unwrap_err().key,
            "smilepayz.merchant_id"
        );
    }
}
