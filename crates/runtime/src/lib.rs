//! What every loket service shares and none should write twice: typed
//! configuration with masked secrets ([`config`]), logging and trace context
//! ([`telemetry`]), the admin port with liveness, readiness and Prometheus
//! metrics ([`admin`]), the HTTP/1 accept loop with connection limits that
//! the admin port and the callback receiver share ([`http_server`]), source
//! allow-lists of addresses and CIDR blocks ([`allow`]),
//! graceful shutdown ([`shutdown`]), the JetStream layout
//! ([`bus`]), the Postgres pool with migrations ([`db`]), the guard that
//! stops a service whose vital task died ([`vital`]) and the `main` of every
//! service binary ([`binary`]).
//!
//! It owns no business rule: no state transition, no provider protocol.
//!
//! It also chooses the memory allocator of every loket binary (they all link
//! this crate): mimalloc. The services allocate and free many small buffers
//! per message (protobuf, HTTP, JSON, SQL arguments); under load glibc's
//! malloc was about a fifth of their CPU time in `perf`.

pub mod admin;
pub mod allow;
pub mod binary;
pub mod bus;
pub mod config;
pub mod db;
pub mod http_server;
pub mod shutdown;
pub mod telemetry;
pub mod vital;

pub use config::Secret;
pub use vital::Vital;

use std::future::Future;

/// The tokio runtime every loket binary runs on. With one worker thread
/// (`TOKIO_WORKER_THREADS=1`, what `make run` gives each service, as a dozen
/// busy processes share the cores) it is the current-thread scheduler;
/// otherwise the multi-thread one, sized by `TOKIO_WORKER_THREADS` or the
/// cores.
///
/// Why not a one-thread multi-thread scheduler: it runs a task woken by
/// the running one next (its LIFO slot). Publishing to nats-server or
/// queueing a statement wakes the connection's task, which then writes that
/// one message before the other handlers that are ready run, so every
/// message costs a `write` here and a wake-up and a `read` at the other
/// end. The current-thread scheduler runs ready tasks in order: the
/// connection's task runs after them and writes what they all queued at
/// once. Under `make bench` that took a purchase from 45–47 to 26–27 system
/// calls across the machine (README, Benchmark).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    runtime_for(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref())
}

/// [`runtime`] for a given `TOKIO_WORKER_THREADS` value.
fn runtime_for(worker_threads: Option<&str>) -> std::io::Result<tokio::runtime::Runtime> {
    let one_thread = worker_threads.is_some_and(|threads| threads.trim() == "1");
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

/// Runs a service's main loop as a task on the runtime's worker threads and
/// waits for it. A multi-thread [`runtime`] polls `main`'s own future on the
/// process's main thread, outside the worker pool: a loop left there (a
/// consumer pulling messages and spawning their handlers) hands every
/// message across threads, a wake-up each way. Spawned, it shares the
/// workers with the tasks it starts. A panic in the loop is raised again
/// here.
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

#[cfg(test)]
mod tests {
    use super::runtime_for;
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_worker_thread_means_the_current_thread_scheduler() {
        let flavor = |threads| runtime_for(threads).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(Some("1")), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some(" 1 ")), RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(Some("2")), RuntimeFlavor::MultiThread);
        assert_eq!(flavor(None), RuntimeFlavor::MultiThread);
    }
}
