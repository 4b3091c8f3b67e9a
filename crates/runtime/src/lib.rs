//! What every loket service shares and none should write twice: typed
//! configuration with masked secrets ([`config`]), logging and trace context
//! ([`telemetry`]), the admin port with liveness, readiness and Prometheus
//! metrics ([`admin`]), graceful shutdown ([`shutdown`]), the JetStream layout
//! ([`bus`]) and the Postgres pool with migrations ([`db`]).
//!
//! It owns no business rule: no state transition, no provider protocol.
//!
//! It also chooses the memory allocator of every loket binary (they all link
//! this crate): mimalloc. The services allocate and free many small buffers
//! per message (protobuf, HTTP, JSON, SQL arguments); under load glibc's
//! malloc was about a fifth of their CPU time in `perf`.

pub mod admin;
pub mod bus;
pub mod config;
pub mod db;
pub mod shutdown;
pub mod telemetry;

pub use config::Secret;

use std::future::Future;

/// Runs a service's main loop as a task on the runtime's worker threads and
/// waits for it. `#[tokio::main]` polls `main`'s own future on the process's
/// main thread, outside the worker pool: a loop left there (a consumer
/// pulling messages and spawning their handlers) hands every message across
/// threads, a wake-up each way. Spawned, it shares the workers with the
/// tasks it starts. A panic in the loop is raised again here.
pub async fn on_workers<F>(service: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::spawn(service).await {
        Ok(output) => output,
        Err(error) => match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("service task did not finish: {error}"),
        },
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use shutdown::Shutdown;
