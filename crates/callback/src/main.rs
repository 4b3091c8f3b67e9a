//! `loket-callback`: binds the callback port and runs [`loket_callback::run`]
//! until SIGTERM/Ctrl-C; [`loket_runtime::binary`] does the rest (settings,
//! telemetry, the admin port).

use loket_callback::{run, Listeners, Settings};
use loket_runtime::binary;

fn main() -> anyhow::Result<()> {
    binary::serve(
        "loket-callback",
        |settings: Settings, admin, shutdown| async move {
            let main = binary::bind("listen_addr", &settings.listen_addr).await?;
            tracing::info!(callback = %main.local_addr()?, "loket-callback listening");
            Ok(run(settings, Listeners { main, admin }, shutdown).await?)
        },
    )
}
