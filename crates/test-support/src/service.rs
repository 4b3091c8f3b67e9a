//! A service started in-process for a test: its shutdown signal and task,
//! stopped gracefully or killed like `kill -9`.
//!
//! A service that ends by itself (its `run` returns an error, panics, or
//! returns `Ok` before its shutdown was triggered), or that does not stop
//! within [`STOP_BOUND`] when asked to, is recorded in the [`Failures`] it
//! was spawned with; the owner ([`crate::TestApp`], or a provider fixture
//! used on its own) fails the test with them when it is dropped
//! ([`Failures::check`]). A service the test kills ([`Service::kill`],
//! [`Service::kill_and_wait`]) records nothing: its end was asked for.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;

use loket_runtime::Shutdown;
use tokio::task::JoinHandle;

/// How long a graceful stop may take before it is reported.
pub(crate) const STOP_BOUND: Duration = Duration::from_secs(10);

/// What went wrong with the services of one owner, in the order it
/// happened; shared by their tasks.
#[derive(Clone, Default)]
pub(crate) struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    fn record(&self, what: String) {
        eprintln!("test-support: {what}");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(what);
    }

    /// Everything recorded so far (and forgets it).
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Everything recorded so far, left in place.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fails the test (panics) with what was recorded, unless the thread is
    /// already panicking (a test that failed for its own reason: the
    /// services' ends are then only printed, as a second panic in a drop
    /// would abort the process).
    pub(crate) fn check(&self, owner: &str) {
        fail_with(owner, self.take());
    }
}

/// Panics with `failures` (see [`Failures::check`]); nothing when empty.
pub(crate) fn fail_with(owner: &str, failures: Vec<String>) {
    if failures.is_empty() {
        return;
    }
    let report = format!(
        "{owner}: {} service failure(s) during the test:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    if std::thread::panicking() {
        eprintln!("{report}");
    } else {
        panic!("{report}");
    }
}

pub(crate) struct Service {
    name: &'static str,
    shutdown: Shutdown,
    task: JoinHandle<()>,
    failures: Failures,
}

impl Service {
    pub(crate) fn spawn<F>(
        name: &'static str,
        shutdown: Shutdown,
        failures: &Failures,
        future: F,
    ) -> Service
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let recorder = failures.clone();
        let triggered = shutdown.clone();
        let task = tokio::spawn(async move {
            // Caught here, not by tokio, so the panic is recorded before the
            // task counts as finished.
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(Ok(())) if triggered.is_triggered() => {}
                Ok(Ok(())) => recorder.record(format!(
                    "service {name} ended by itself (Ok) before its shutdown was triggered"
                )),
                Ok(Err(error)) => {
                    recorder.record(format!("service {name} stopped with an error: {error}"))
                }
                Err(panic) => recorder.record(format!(
                    "service {name} panicked: {}",
                    panic_message(panic.as_ref())
                )),
            }
        });
        Service {
            name,
            shutdown,
            task,
            failures: failures.clone(),
        }
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

    /// Drains: triggers the service's shutdown and waits (at most
    /// [`STOP_BOUND`]) for it. A service still running then is recorded as a
    /// failure and killed; an error or panic on the way out is recorded by
    /// its task.
    pub(crate) async fn stop(self) {
        self.stop_within(STOP_BOUND).await
    }

    async fn stop_within(self, bound: Duration) {
        self.shutdown.trigger();
        let mut task = self.task;
        match tokio::time::timeout(bound, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.failures.record(format!(
                "service {} did not stop cleanly: {error}",
                self.name
            )),
            Err(_) => {
                task.abort();
                self.failures.record(format!(
                    "service {} did not stop within {bound:?} of its shutdown; killed",
                    self.name
                ));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that runs until its shutdown, then `then` (its way out).
    fn until_shutdown(
        failures: &Failures,
        then: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> Service {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        Service::spawn("drains", shutdown, failures, async move {
            s.wait().await;
            then.await
        })
    }

    async fn settled(failures: &Failures, count: usize) -> Vec<String> {
        for _ in 0..200 {
            if failures.seen().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failures.take()
    }

    #[tokio::test]
    async fn a_service_ending_by_itself_is_recorded_however_it_ends() {
        let failures = Failures::default();
        let _error = Service::spawn("fails", Shutdown::new(), &failures, async {
            Err("the bus went away".to_string())
        });
        let _panic = Service::spawn("panics", Shutdown::new(), &failures, async {
            panic!("a bug in the batch loop")
        });
        let _early = Service::spawn("returns", Shutdown::new(), &failures, async { Ok(()) });
        let mut seen = settled(&failures, 3).await;
        seen.sort();
        assert_eq!(
            seen,
            [
                "service fails stopped with an error: the bus went away",
                "service panics panicked: a bug in the batch loop",
                "service returns ended by itself (Ok) before its shutdown was triggered",
            ]
        );
    }

    #[tokio::test]
    async fn a_stop_past_its_bound_or_failing_on_the_way_out_is_recorded() {
        let failures = Failures::default();
        until_shutdown(&failures, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .stop_within(Duration::from_millis(100))
        .await;
        until_shutdown(&failures, async { Err("drain failed".to_string()) })
            .stop()
            .await;
        assert_eq!(
            failures.take(),
            [
                "service drains did not stop within 100ms of its shutdown; killed",
                "service drains stopped with an error: drain failed",
            ]
        );
    }

    #[tokio::test]
    async fn a_clean_stop_and_a_kill_record_nothing() {
        let failures = Failures::default();
        until_shutdown(&failures, async { Ok(()) }).stop().await;
        until_shutdown(&failures, async { Ok(()) }).kill();
        until_shutdown(&failures, async { Ok(()) })
            .kill_and_wait()
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(failures.take().is_empty());
    }

    #[test]
    fn the_check_panics_with_what_was_recorded_unless_already_panicking() {
        let failures = Failures::default();
        failures.check("nothing recorded");
        failures.record("service x panicked: boom".into());
        let caught = std::panic::catch_unwind(|| failures.check("TestApp"));
        let message = caught.expect_err("the check fails the test");
        assert!(panic_message(message.as_ref()).contains("service x panicked: boom"));
        assert!(failures.take().is_empty(), "reported once");

        // While a test is already failing, a drop's check only prints (a
        // second panic would abort the process).
        struct ChecksOnDrop(Failures);
        impl Drop for ChecksOnDrop {
            fn drop(&mut self) {
                self.0.check("TestApp");
            }
        }
        failures.record("service y panicked: boom".into());
        let guard = ChecksOnDrop(failures.clone());
        let caught = std::panic::catch_unwind(move || {
            let _guard = guard;
            panic!("the test's own failure");
        });
        let message = caught.expect_err("the test's own panic");
        assert_eq!(panic_message(message.as_ref()), "the test's own failure");
    }
}
