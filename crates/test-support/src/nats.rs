//! A private nats-server with JetStream, for one test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::{free_port, wait_for_port};

pub struct NatsServer {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
}

/// Finds the nats-server binary (Debian installs it in /usr/sbin).
pub fn binary() -> String {
    for candidate in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(candidate).exists() {
            return candidate.to_string();
        }
    }
    "nats-server".to_string()
}

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir()?;
        Self::start_on(free_port(), store)
    }

    fn start_on(port: u16, store: tempfile::TempDir) -> anyhow::Result<Self> {
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start nats-server ({}): {e}; run scripts/ensure-deps.sh",
                    binary()
                )
            })?;
        wait_for_port(port, Duration::from_secs(10))?;
        Ok(NatsServer { child, port, store })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (like `kill -9`) and starts it again on the same port
    /// with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let store = std::mem::replace(&mut self.store, tempfile::tempdir()?);
        let restarted = Self::start_on(self.port, store)?;
        *self = restarted;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
