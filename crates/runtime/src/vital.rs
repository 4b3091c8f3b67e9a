//! Vital tasks: the loops a service cannot do its work without (the
//! reconciler's scheduler, the ingress's update feed, a connector's balance
//! server, a batch writer's slots). Spawned bare, a panic or an early end
//! kills only that task: the service stays up and ready while part of it is
//! gone, and pending transactions stop being checked with nothing in the
//! logs. [`Vital::guard`] wraps such a loop so that its panic, or its end
//! before the drain began, is logged, starts the service's drain and becomes
//! the service's error: the process exits non-zero and its supervisor
//! restarts it whole, which every part of loket is built to survive.

use crate::Shutdown;
use futures::FutureExt as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

/// Why a service stopped on its own: a vital task died.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vital task '{task}' {how}; the service stopped so it can be restarted whole")]
pub struct VitalTaskFailed {
    pub task: &'static str,
    pub how: String,
}

/// The vital tasks of one service run, sharing its drain signal.
#[derive(Clone, Debug)]
pub struct Vital {
    drain: Shutdown,
    failure: Arc<OnceLock<VitalTaskFailed>>,
}

impl Vital {
    /// Vital tasks whose failure triggers `drain`.
    pub fn new(drain: Shutdown) -> Self {
        Vital {
            drain,
            failure: Arc::default(),
        }
    }

    /// `work`, named `task`, wrapped for spawning: a panic, or an end before
    /// the drain began, is kept as the service's failure (the first one
    /// only), logged, and triggers the drain.
    pub fn guard<F>(&self, task: &'static str, work: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.wrap(task, work, true)
    }

    /// [`Self::guard`] for a task that may end by itself (a writer whose
    /// queue closed): only its panic is a failure.
    pub fn guard_against_panics<F>(
        &self,
        task: &'static str,
        work: F,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.wrap(task, work, false)
    }

    fn wrap<F>(
        &self,
        task: &'static str,
        work: F,
        runs_until_drain: bool,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let vital = self.clone();
        async move {
            let how = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(()) if !runs_until_drain || vital.drain.is_triggered() => return,
                Ok(()) => "ended before the service was asked to stop".to_string(),
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            tracing::error!(task, reason = %how, "vital task failed; draining the service");
            let _ = vital.failure.set(VitalTaskFailed { task, how });
            vital.drain.trigger();
        }
    }

    /// The first vital task that failed, if any.
    pub fn failure(&self) -> Option<VitalTaskFailed> {
        self.failure.get().cloned()
    }

    /// What the service returns once drained: `Ok`, or the first failure.
    pub fn outcome(&self) -> Result<(), VitalTaskFailed> {
        self.failure().map_or(Ok(()), Err)
    }
}

/// Makes every panic of the process a log line too (level error, with where
/// it was raised), not only text on stderr: a JSON log pipeline sees it, the
/// panic of a request's task included. The previous hook still runs after.
pub fn log_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        tracing::error!(panic = panic_message(info.payload()), %location, "panic");
        previous(info);
    }));
}

/// The text a panic was raised with (`panic!("...")` gives a `&str` or a
/// `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-text panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_is_kept_as_the_failure_and_starts_the_drain() {
        let drain = Shutdown::new();
        let vital = Vital::new(drain.clone());
        let number = 7;
        tokio::spawn(vital.guard("scheduler", async move {
            panic!("tick {number} broke");
        }))
        .await
        .expect("the guard itself does not panic");
        assert!(drain.is_triggered());
        let failure = vital.outcome().unwrap_err();
        assert_eq!(failure.task, "scheduler");
        assert_eq!(failure.how, "panicked: tick 7 broke");
        assert!(
            failure.to_string().contains("'scheduler' panicked"),
            "{failure}"
        );
    }

    #[tokio::test]
    async fn an_end_before_the_drain_is_a_failure() {
        let drain = Shutdown::new();
        let vital = Vital::new(drain.clone());
        vital.guard("update feed", async {}).await;
        assert!(drain.is_triggered());
        assert_eq!(
            vital.failure(),
            Some(VitalTaskFailed {
                task: "update feed",
                how: "ended before the service was asked to stop".into()
            })
        );
    }

    #[tokio::test]
    async fn a_task_that_may_end_fails_only_by_panicking() {
        let drain = Shutdown::new();
        let vital = Vital::new(drain.clone());
        vital.guard_against_panics("writer slot", async {}).await;
        assert!(!drain.is_triggered());
        assert_eq!(vital.outcome(), Ok(()));
        vital
            .guard_against_panics("writer slot", async { panic!("bad row") })
            .await;
        assert!(drain.is_triggered());
        assert_eq!(vital.failure().unwrap().how, "panicked: bad row");
    }

    #[tokio::test]
    async fn an_end_after_the_drain_began_is_no_failure() {
        let drain = Shutdown::new();
        let vital = Vital::new(drain.clone());
        let task = tokio::spawn(vital.guard("scheduler", {
            let drain = drain.clone();
            async move { drain.wait().await }
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!task.is_finished(), "runs until the drain");
        drain.trigger();
        task.await.unwrap();
        assert_eq!(vital.outcome(), Ok(()));
    }

    #[tokio::test]
    async fn only_the_first_failure_is_kept() {
        let vital = Vital::new(Shutdown::new());
        vital
            .guard("first", async { panic!("{}", String::from("one")) })
            .await;
        vital.guard("second", async { panic!("two") }).await;
        assert_eq!(vital.failure().unwrap().task, "first");
        assert_eq!(vital.failure().unwrap().how, "panicked: one");
    }
}
