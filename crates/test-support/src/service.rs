//! A service started in-process for a test: its shutdown signal and task,
//! stopped gracefully or killed like `kill -9`.

use std::time::Duration;

use loket_runtime::Shutdown;
use tokio::task::JoinHandle;

pub(crate) struct Service {
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Service {
    pub(crate) fn spawn<F>(name: &'static str, shutdown: Shutdown, future: F) -> Service
    where
        F: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let task = tokio::spawn(async move {
            if let Err(error) = future.await {
                eprintln!("service {name} stopped with an error: {error}");
            }
        });
        Service { shutdown, task }
    }

    /// Like `kill -9`: the task is dropped mid-flight, nothing is drained.
    pub(crate) fn kill(self) {
        self.task.abort();
    }

    /// Kills like [`Service::kill`] and waits until the task is gone (its
    /// sockets closed), so its address can be bound again.
    pub(crate) async fn kill_and_wait(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Drains: triggers the service's shutdown and waits (bounded) for it.
    pub(crate) async fn stop(self) {
        self.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}
