//! The Smilepayz connector worker as a service: settings, start-up checks
//! and [`run`], which the binary `loket-smilepayz-connector` and the tests
//! call alike (CONVENTIONS #3).

use std::sync::Arc;
use std::time::Duration;

use loket_connector::worker::{self, WorkerError, WorkerSettings};
use loket_runtime::admin::{self, Readiness};
use loket_runtime::bus::{self, BusError};
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

impl ConnectorSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.smilepayz.validate()?;
        if self.worker.concurrency == 0 {
            return Err(InvalidSetting::new(
                "worker.concurrency",
                "must be at least 1",
            ));
        }
        let minimum = self.smilepayz.timeout_ms.saturating_mul(2);
        if self.worker.ack_wait_ms <= minimum {
            return Err(InvalidSetting::new(
                "worker.ack_wait_ms",
                format!(
                    "{} must be greater than 2 × smilepayz.timeout_ms ({minimum} ms)",
                    self.worker.ack_wait_ms
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
    let connector = Arc::new(SmilepayzConnector::new(settings.smilepayz.clone())?);
    let readiness = Readiness::default();
    let admin_task = tokio::spawn(admin::serve(admin, readiness.clone(), shutdown.clone()));
    tracing::info!(
        base_url = %settings.smilepayz.base_url,
        merchant_id = %settings.smilepayz.merchant_id,
        callback_url = %settings.smilepayz.callback_url,
        timeout_ms = settings.smilepayz.timeout_ms,
        "starting the Smilepayz connector"
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
