//! A private nats-server with JetStream, for one test.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ports::free_port;

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

/// Attempts at a free port: another test may take the one picked before
/// nats-server binds it.
const PORT_ATTEMPTS: usize = 5;

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let mut failure = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_on(free_port(), tempfile::tempdir()?) {
                Ok(server) => return Ok(server),
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.expect("at least one attempt"))
    }

    fn start_on(port: u16, store: tempfile::TempDir) -> anyhow::Result<Self> {
        // A name only this server has: the port answering is not proof it is
        // ours (another test's server may hold it), its INFO naming us is.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "loket-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let mut child = Command::new(binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-n",
                &name,
                "-sd",
            ])
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
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("nats-server on port {port} exited ({status}): port taken?");
            }
            if info_names(port, &name) {
                return Ok(NatsServer { child, port, store });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("nats-server {name} did not answer on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (like `kill -9`) and starts it again on the same port
    /// with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again()
    }

    /// Kills the server (like `kill -9`); [`start_again`] brings it back.
    ///
    /// [`start_again`]: NatsServer::start_again
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped server again on the same port with the same store.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let store = std::mem::replace(&mut self.store, tempfile::tempdir()?);
        let restarted = Self::start_on(self.port, store)?;
        *self = restarted;
        Ok(())
    }
}

/// Whether the server on `port` greets with an INFO naming `name`.
fn info_names(port: u16, name: &str) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = String::new();
    let _ = BufReader::new(stream).read_line(&mut greeting);
    greeting.contains(&format!("\"server_name\":\"{name}\""))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_held_by_someone_else_is_not_taken_for_our_server() {
        // Something else answers on the port: nats-server cannot bind it.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let error = NatsServer::start_on(port, tempfile::tempdir().unwrap())
            .err()
            .expect("started on a port another process holds");
        assert!(error.to_string().contains(&port.to_string()), "{error}");
        // A fresh start finds a port of its own.
        let server = NatsServer::start().unwrap();
        assert_ne!(server.port, port);
        assert!(
            !info_names(port, "anything"),
            "the other listener is no nats-server"
        );
    }
}
