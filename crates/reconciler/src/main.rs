//! `loket-reconciler`: runs [`loket_reconciler::run`] until SIGTERM/Ctrl-C;
//! [`loket_runtime::binary`] does the rest (settings, telemetry, the admin
//! port).

use loket_reconciler::{run, Listeners, Settings};
use loket_runtime::binary;

fn main() -> anyhow::Result<()> {
    binary::serve(
        "loket-reconciler",
        |settings: Settings, admin, shutdown| async move {
            Ok(run(settings, Listeners { admin }, shutdown).await?)
        },
    )
}
