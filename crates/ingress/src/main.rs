//! `loket-ingress`: binds the gRPC port and runs [`loket_ingress::run`] until
//! SIGTERM/Ctrl-C; [`loket_runtime::binary`] does the rest (settings,
//! telemetry, the admin port).

use loket_ingress::{run, Listeners, Settings};
use loket_runtime::binary;

fn main() -> anyhow::Result<()> {
    binary::serve(
        "loket-ingress",
        |settings: Settings, admin, shutdown| async move {
            let main = binary::bind("grpc_addr", &settings.grpc_addr).await?;
            tracing::info!(grpc = %main.local_addr()?, "loket-ingress listening");
            Ok(run(settings, Listeners { main, admin }, shutdown).await?)
        },
    )
}
