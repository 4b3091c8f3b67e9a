//! The OkeBayar connector worker: runs [`loket_okebayar::run`] until SIGTERM;
//! [`loket_runtime::binary`] does the rest (settings, telemetry, the admin
//! port).

use loket_okebayar::service::SERVICE_NAME;
use loket_okebayar::{run, ConnectorSettings};
use loket_runtime::binary;

fn main() -> anyhow::Result<()> {
    binary::serve(
        SERVICE_NAME,
        |settings: ConnectorSettings, admin, shutdown| async move {
            Ok(run(settings, admin, shutdown).await?)
        },
    )
}
