//! A private nats-server with JetStream, for one test.
//!
//! It asks for a password: loket's services connect as [`SERVICE_USER`] with
//! [`CANARY_PASSWORD`], which [`NatsServer::service_url`] carries and the
//! canary check looks for (it must never reach a log, a row or a message). A
//! wrong password is refused. A connection without credentials, to
//! [`NatsServer::url`], is let in as [`TEST_USER`]: the tests' own
//! connections to inspect or feed the bus, and the services a crate's own
//! tests start. The server's list of connections
//! ([`NatsServer::users_by_connection`]) tells the two apart, so a service of
//! a `TestApp` that connected without the password is seen.
//!
//! The server writes its own log to a file in its store
//! ([`NatsServer::log`]), which the canary check reads too: it names a user
//! whose login failed, for one.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The user loket's services authenticate as.
pub const SERVICE_USER: &str = "loket";

/// [`SERVICE_USER`]'s password: a canary.
pub const CANARY_PASSWORD: &str = "CANARY-NATS-PASSWORD-5083";

/// The user a connection without credentials is let in as (the tests' own).
pub const TEST_USER: &str = "test";

pub struct NatsServer {
    child: Child,
    port: u16,
    /// The HTTP monitoring port (`/connz`).
    monitor_port: u16,
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

/// The server's log file, in its store (kept across a restart).
const LOG_FILE: &str = "nats-server.log";

/// Attempts at a free port: another test may take the one picked before
/// nats-server binds it.
const PORT_ATTEMPTS: usize = 5;

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let mut failure = None;
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_on(free_port(), free_port(), tempfile::tempdir()?) {
                Ok(server) => return Ok(server),
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.expect("at least one attempt"))
    }

    fn start_on(port: u16, monitor_port: u16, store: tempfile::TempDir) -> anyhow::Result<Self> {
        // A name only this server has: the port answering is not proof it is
        // ours (another test's server may hold it), its INFO naming us is.
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "loket-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        // Users and `no_auth_user` can only be set in a configuration file.
        let config = store.path().join("auth.conf");
        std::fs::write(
            &config,
            format!(
                "authorization {{ users = [\n\
                 {{ user: \"{SERVICE_USER}\", password: \"{CANARY_PASSWORD}\" }}\n\
                 {{ user: \"{TEST_USER}\", password: \"{TEST_USER}-is-not-a-secret\" }}\n\
                 ] }}\n\
                 no_auth_user: \"{TEST_USER}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n"
            ),
        )?;
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(&config)
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
            .arg("-l")
            .arg(store.path().join(LOG_FILE))
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
                return Ok(NatsServer {
                    child,
                    port,
                    monitor_port,
                    store,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("nats-server {name} did not answer on port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The server's URL, without credentials (a connection to it is
    /// [`TEST_USER`]'s).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's URL with the services' credentials, for loket's
    /// `bus::connect`, which hands them to async-nats apart. async-nats's
    /// own `connect` would ignore them, and log them at DEBUG with the
    /// server's address.
    pub fn service_url(&self) -> String {
        format!(
            "nats://{SERVICE_USER}:{CANARY_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// What the server has logged since it first started.
    pub fn log(&self) -> std::io::Result<String> {
        let bytes = std::fs::read(self.store.path().join(LOG_FILE))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The name and the authenticated user of every client connection the
    /// server holds now, from its monitoring endpoint (`/connz?auth=1`).
    pub async fn users_by_connection(&self) -> anyhow::Result<Vec<(String, String)>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor_port)).await?;
        stream
            .write_all(b"GET /connz?auth=1 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .ok_or_else(|| anyhow::anyhow!("no body in the /connz answer: {answer}"))?;
        let connz: sqlx::types::JsonValue = body.parse()?;
        let field = |connection: &sqlx::types::JsonValue, name: &str| {
            connection[name].as_str().unwrap_or_default().to_string()
        };
        Ok(connz["connections"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no connection list in /connz: {body}"))?
            .iter()
            .map(|connection| {
                (
                    field(connection, "name"),
                    field(connection, "authorized_user"),
                )
            })
            .collect())
    }

    /// Kills the server (like `kill -9`) and starts it again on the same port
    /// with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start_again()
    }

    /// Stops the server the way an operator (or systemd) does: SIGTERM, on
    /// which it closes its client connections and its store, then exits by
    /// itself (with status 1, in Debian's 2.9);
    /// [`start_again`] brings it back.
    ///
    /// [`start_again`]: NatsServer::start_again
    pub fn stop_gracefully(&mut self) -> anyhow::Result<()> {
        crate::signal::send(&self.child, "TERM")?;
        let exit = self.child.wait()?;
        anyhow::ensure!(
            exit.code().is_some(),
            "nats-server did not exit by itself: {exit}"
        );
        Ok(())
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
        let restarted = Self::start_on(self.port, self.monitor_port, store)?;
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
        let error = NatsServer::start_on(port, free_port(), tempfile::tempdir().unwrap())
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

    /// The password is asked for: a wrong one is refused; the right one
    /// lets a client in as the services' user; a connection without
    /// credentials (a test's own, async-nats's plain `connect`) gets in as
    /// the test user, and the server's connection list tells them apart.
    #[tokio::test]
    async fn a_wrong_password_is_refused_and_who_gave_the_right_one_is_seen() {
        let server = NatsServer::start().unwrap();
        let wrong = server
            .service_url()
            .replace(CANARY_PASSWORD, "not-the-password");
        let refused = loket_runtime::bus::connect_once(&wrong, "loket-wrong").await;
        assert!(refused.is_err(), "a wrong password is refused");
        let service = loket_runtime::bus::connect_once(&server.service_url(), "loket-right")
            .await
            .unwrap();
        let own = async_nats::connect(server.url()).await.unwrap();
        service.flush().await.unwrap();
        own.flush().await.unwrap();
        let users = server.users_by_connection().await.unwrap();
        assert!(
            users.contains(&("loket-right".to_string(), SERVICE_USER.to_string())),
            "{users:?}"
        );
        assert!(
            users.contains(&(String::new(), TEST_USER.to_string())),
            "{users:?}"
        );
        assert_eq!(users.len(), 2, "the refused one is not there: {users:?}");
    }
}
