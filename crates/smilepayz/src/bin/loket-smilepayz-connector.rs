//! The Smilepayz connector worker: runs [`loket_smilepayz::run`] until SIGTERM;
//! [`loket_runtime::binary`] does the rest (settings, telemetry, the admin
//! port).

use loket_runtime::binary;
use loket_smilepayz::service::SERVICE_NAME;
use loket_smilepayz::{run, ConnectorSettings};

fn main() -> anyhow::Result<()> {
    binary::serve(
        SERVICE_NAME,
        |settings: ConnectorSettings, admin, shutdown| async move {
            Ok(run(settings, admin, shutdown).await?)
        },
    )
}
