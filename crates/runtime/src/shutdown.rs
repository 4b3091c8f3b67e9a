//! Graceful shutdown: the first SIGTERM or Ctrl-C starts a drain (readiness
//! turns false, loops stop taking new work and finish what is in flight); a
//! second signal exits at once.

use tokio_util::sync::CancellationToken;

/// A cloneable drain signal shared by every task of a service.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Shutdown(CancellationToken::new())
    }

    /// Starts the drain.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the drain has started.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    /// A child that is triggered with this one but can also be triggered on its own.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }

    /// Triggers on the first SIGTERM/SIGINT; exits the process on the second.
    pub fn on_signals(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining (send again to exit at once)");
            shutdown.trigger();
            wait_for_signal().await;
            tracing::warn!("second shutdown signal, exiting now");
            std::process::exit(130);
        });
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
