//! The SNAP QR CPM connector worker: runs [`loket_snapqr::run`] until SIGTERM;
//! [`loket_runtime::binary`] does the rest (settings, telemetry, the admin
//! port).

use loket_runtime::binary;
use loket_snapqr::service::SERVICE_NAME;
use loket_snapqr::{run, ConnectorSettings};

fn main() -> anyhow::Result<()> {
    binary::serve(
        SERVICE_NAME,
        |settings: ConnectorSettings, admin, shutdown| async move {
            Ok(run(settings, admin, shutdown).await?)
        },
    )
}
