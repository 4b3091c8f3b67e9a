//! PostgreSQL for tests: one private server per test run, a fresh migrated
//! database per test.
//!
//! `make test` starts one server for the whole run and exports its admin URL
//! as `LOKET_TEST_DATABASE_URL`. Without it (a plain `cargo test`), the
//! first test of each process starts a private server in a temporary folder,
//! which a watchdog stops when the process exits. PostgreSQL refuses to run
//! as root, so as root the server runs as the `postgres` user.
//!
//! Test servers trust every local connection (`initdb -A trust`), so a
//! [`crate::app::TestApp`] gives its services a database URL holding the
//! canary [`CANARY_PASSWORD`] ([`with_canary_password`]) with nothing else
//! changing, and the canary check looks for it. What the shared server
//! writes in its log is read with a [`LogMark`]: `make test` exports the
//! log's path as `LOKET_TEST_POSTGRES_LOG`; a server this process started
//! writes its own; a server only named by `LOKET_TEST_DATABASE_URL` (a
//! developer's own) has none known.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The environment variable naming a running server's admin URL.
pub const ADMIN_URL_ENV: &str = "LOKET_TEST_DATABASE_URL";

/// The environment variable naming the log file of the server of
/// [`ADMIN_URL_ENV`] (scripts/test.sh exports both).
pub const SERVER_LOG_ENV: &str = "LOKET_TEST_POSTGRES_LOG";

/// The password a `TestApp`'s services find in their database URL: a
/// canary (it must never reach a log, a row or a message).
pub const CANARY_PASSWORD: &str = "CANARY-DB-PASSWORD-6158";

/// `url` with [`CANARY_PASSWORD`] as its password, unless it has a password
/// of its own (a developer's server may check it) or names no user (the
/// password needs one). A test server accepts any password.
pub fn with_canary_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user, host)) if !user.is_empty() && !user.contains(':') => {
            format!("{scheme}://{user}:{CANARY_PASSWORD}@{host}{path}")
        }
        _ => url.to_string(),
    }
}

/// Finds the newest installed PostgreSQL server's bin folder (as
/// scripts/postgres-bin.sh does): versions compared as numbers, so 15 is
/// newer than 9.6.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let version = |bin: &Path| -> Vec<u32> {
        let folder = bin.parent().and_then(Path::file_name);
        let text = folder.and_then(|name| name.to_str()).unwrap_or_default();
        text.split('.')
            .filter_map(|part| part.parse().ok())
            .collect()
    };
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| anyhow::anyhow!("PostgreSQL is not installed; run scripts/ensure-deps.sh"))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| version(bin));
    versions
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL initdb found under /usr/lib/postgresql"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// How a test server commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commits {
    /// Acknowledged before the WAL is written (`synchronous_commit=off`):
    /// fast, and safe while the server only ever stops cleanly.
    Fast,
    /// Acknowledged once the WAL is written, as in production: a server
    /// that is crashed (`pg_ctl stop -m immediate`) keeps every commit it
    /// acknowledged. `fsync` stays off: the machine does not crash, so what
    /// was written survives in the OS's cache.
    Durable,
}

/// Initialises a data folder and starts a server on `port`; the server stops
/// when the process with `watch_pid` exits (if given).
fn start_server(
    root: &Path,
    port: u16,
    watch_pid: Option<u32>,
    commits: Commits,
) -> anyhow::Result<String> {
    let bin = bin_dir()?;
    let data = root.join("data");
    std::fs::create_dir_all(root)?;
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(root)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "chown of {} to postgres failed",
            root.display()
        );
    }
    if !data.join("PG_VERSION").exists() {
        let out = pg_command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let synchronous_commit = match commits {
        Commits::Fast => "off",
        Commits::Durable => "on",
    };
    let server = format!(
        "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit={synchronous_commit} -c full_page_writes=off -c max_connections=400 \
         -c shared_buffers=128MB",
        bin.join("postgres").display(),
        data.display(),
        root.display()
    );
    let script = match watch_pid {
        // Stop the server when the test process is gone, and then remove
        // its folder (the process's own handle on it is never dropped).
        Some(pid) => format!(
            "{server} >{log} 2>&1 & pg=$!; while [ -d /proc/{pid} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done; \
             kill -INT $pg 2>/dev/null; wait $pg 2>/dev/null; [ -d /proc/{pid} ] || rm -rf {root}",
            log = root.join("postgres.log").display(),
            root = root.display()
        ),
        None => format!("exec {server} >{log} 2>&1", log = root.join("postgres.log").display()),
    };
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let log = root.join("postgres.log");
    // A log left by an earlier attempt in this folder must not be read as
    // this one's.
    let _ = std::fs::remove_file(&log);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_until_ready(&data, &log, port, Duration::from_secs(30))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

/// Another process took the port between choosing it and binding it.
#[derive(Debug)]
struct PortTaken(u16);

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port {} is taken", self.0)
    }
}

impl std::error::Error for PortTaken {}

/// Waits until the server started on `data` says it is ready on `port`.
/// Its lock file names the port it holds and its state, so a server of
/// another test that happens to answer on the port is never taken for ours.
fn wait_until_ready(data: &Path, log: &Path, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let lock = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
        let lines: Vec<&str> = lock.lines().map(str::trim).collect();
        if lines.get(3) == Some(&port.to_string().as_str()) && lines.get(7) == Some(&"ready") {
            return Ok(());
        }
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if said.contains("could not bind") || said.contains("could not create any TCP/IP sockets") {
            // That server is on its way out, and its lock file goes with it.
            // A next attempt in the same folder before then would race it:
            // its files vanish under the next `chown -R`, or its lock file
            // refuses the next server.
            let gone_by = Instant::now() + Duration::from_secs(10);
            while data.join("postmaster.pid").exists() && Instant::now() < gone_by {
                std::thread::sleep(Duration::from_millis(25));
            }
            return Err(PortTaken(port).into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    anyhow::bail!(
        "PostgreSQL is not ready on port {port} after {timeout:?}; see {}",
        log.display()
    )
}

/// Starts a server in `root` on a free port, trying other ports while the
/// chosen one turns out to be taken. Returns the port and the admin URL.
fn start_on_free_port(
    root: &Path,
    watch_pid: Option<u32>,
    commits: Commits,
) -> anyhow::Result<(u16, String)> {
    let mut attempts = 0;
    loop {
        let port = free_port();
        match start_server(root, port, watch_pid, commits) {
            Ok(url) => return Ok((port, url)),
            Err(error) if attempts < 5 && error.is::<PortTaken>() => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

struct SharedServer {
    admin_url: String,
    /// Its log file, where known.
    log: Option<PathBuf>,
    // Keeps the folder alive for the process's lifetime.
    _dir: Option<tempfile::TempDir>,
}

fn shared_server() -> anyhow::Result<&'static SharedServer> {
    static SERVER: OnceLock<Result<SharedServer, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var(ADMIN_URL_ENV) {
                return Ok(SharedServer {
                    admin_url: url,
                    log: std::env::var_os(SERVER_LOG_ENV).map(PathBuf::from),
                    _dir: None,
                });
            }
            let dir = tempfile::Builder::new()
                .prefix("loket-pg-")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let (_, url) = start_on_free_port(dir.path(), Some(std::process::id()), Commits::Fast)
                .map_err(|e| e.to_string())?;
            Ok(SharedServer {
                admin_url: url,
                log: Some(dir.path().join("postgres.log")),
                _dir: Some(dir),
            })
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// A place in a server's log file, to read what the server wrote after it.
#[derive(Debug, Clone)]
pub struct LogMark {
    path: PathBuf,
    offset: u64,
}

impl LogMark {
    /// The end of the shared server's log now; `None` when its log is not
    /// known (see the module's doc).
    pub fn shared_server_now() -> anyhow::Result<Option<LogMark>> {
        let Some(path) = &shared_server()?.log else {
            return Ok(None);
        };
        let offset = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("the PostgreSQL log {}: {e}", path.display()))?
            .len();
        Ok(Some(LogMark {
            path: path.clone(),
            offset,
        }))
    }

    /// Everything the server wrote since the mark (lossily as UTF-8): the
    /// lines of every test using the server then, not only one's own.
    pub fn written_since(&self) -> anyhow::Result<String> {
        use std::io::{Read as _, Seek as _};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut written = Vec::new();
        file.read_to_end(&mut written)?;
        Ok(String::from_utf8_lossy(&written).into_owned())
    }
}

/// A fresh database on the shared server, migrated. Returns its URL.
///
/// Its name carries this test process's id, so that a later test can drop
/// it once the process is gone: every database is a copy of `template1`
/// (several MB), and a whole `make test` makes hundreds of them.
pub async fn fresh_database() -> anyhow::Result<String> {
    let server = shared_server()?;
    let name = format!("t_{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
    create_database(&server.admin_url, &name).await
}

/// Drops the test databases ([`fresh_database`]'s) whose test process has
/// exited. Another test may be dropping the same one at once, so a failed
/// drop is left for the next call.
async fn drop_databases_of_finished_tests(admin: &sqlx::PgPool) -> anyhow::Result<()> {
    let names: Vec<String> =
        sqlx::query_scalar(r"SELECT datname FROM pg_database WHERE datname LIKE 't\_%\_%'")
            .fetch_all(admin)
            .await?;
    for name in names {
        let finished = name
            .split('_')
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if finished {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin)
                .await;
        }
    }
    Ok(())
}

/// Creates database `name` on the server of `admin_url` and migrates it,
/// after dropping those of finished tests. Returns its URL.
async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(admin_url).await?;
    drop_databases_of_finished_tests(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let url = admin_url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{name}"))
        .unwrap_or_default();
    let secret = loket_runtime::Secret::new(url.clone());
    let pool = loket_runtime::db::connect(&secret, 2).await?;
    loket_runtime::db::migrate(&pool).await?;
    pool.close().await;
    Ok(url)
}

/// A PostgreSQL server of one test's own, for a test that crashes it (the
/// shared server serves every other test and must stay up). It commits
/// durably, so a crash loses no acknowledged commit, as in production.
/// Stopped when dropped.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    admin_url: String,
}

impl PrivatePostgres {
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("loket-pg-private-")
            .tempdir()?;
        let (port, admin_url) =
            start_on_free_port(dir.path(), Some(std::process::id()), Commits::Durable)?;
        Ok(PrivatePostgres {
            dir,
            port,
            admin_url,
        })
    }

    /// A new, migrated database on this server; its URL.
    pub async fn database(&self, name: &str) -> anyhow::Result<String> {
        create_database(&self.admin_url, name).await
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint, every connection cut, open transactions lost)
    /// and starts it again on the same port and data.
    pub fn crash_and_restart(&self) -> anyhow::Result<()> {
        self.crash()?;
        self.start_again()
    }

    /// Starts the server again on its port and data, after [`Self::crash`].
    pub fn start_again(&self) -> anyhow::Result<()> {
        start_server(
            self.dir.path(),
            self.port,
            Some(std::process::id()),
            Commits::Durable,
        )?;
        Ok(())
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`).
    pub fn crash(&self) -> anyhow::Result<()> {
        let out = pg_command(&bin_dir()?.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.crash();
    }
}

/// `url` (`postgres://user@host:port/database`) reached through a
/// [`silenceable_relay`] instead: its URL.
pub async fn through_silenceable_relay(
    url: &str,
    silence: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<String> {
    let (user, rest) = url
        .split_once('@')
        .ok_or_else(|| anyhow::anyhow!("a URL with a user and host: {url}"))?;
    let (host_port, database) = rest
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("a URL with a database: {url}"))?;
    let relay = silenceable_relay(host_port.parse()?, silence).await?;
    Ok(format!("{user}@{relay}/{database}"))
}

/// A TCP relay to PostgreSQL that can go silent: once `silence` is set it
/// forwards nothing more either way, yet keeps both sockets open, as a
/// database host that crashed (or a cut network) leaves a client's socket.
async fn silenceable_relay(
    to: std::net::SocketAddr,
    silence: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            for (mut from, mut into) in [(client_read, server_write), (server_read, client_write)] {
                let silence = silence.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 8192];
                    while let Ok(read) = from.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        if silence.load(std::sync::atomic::Ordering::SeqCst) {
                            // Hold both sockets, answer nothing.
                            std::future::pending::<()>().await;
                        }
                        if into.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    Ok(addr)
}

/// A new API client in `pool`'s database (name `test`, its id's bytes as the
/// key hash), for tests that need transactions to belong to someone.
pub async fn new_client(pool: &sqlx::PgPool) -> anyhow::Result<uuid::Uuid> {
    let id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO clients (id, name, api_key_hash) VALUES ($1, 'test', $2)")
        .bind(id)
        .bind(id.as_bytes().to_vec())
        .execute(pool)
        .await?;
    Ok(id)
}

/// Every row of every table of the database `pool` reaches, as JSON text, a
/// line each prefixed with its table (for leak checks).
pub async fn dump(pool: &sqlx::PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                .fetch_all(pool)
                .await
                .expect("rows");
        for row in rows {
            dump.push_str(&table);
            dump.push_str(": ");
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    dump
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canary password goes where a test server ignores it, and only
    /// there: a URL with a password of its own keeps it (a developer's
    /// server may check it), one without a user stays as it is.
    #[test]
    fn the_canary_password_is_added_only_where_no_password_is() {
        assert_eq!(
            with_canary_password("postgres://postgres@127.0.0.1:5432/t_1?sslmode=disable"),
            format!("postgres://postgres:{CANARY_PASSWORD}@127.0.0.1:5432/t_1?sslmode=disable")
        );
        for kept in [
            "postgres://me:my-own@db.local/loket",
            "postgres://127.0.0.1:5432/t_1",
            "postgres:///t_1",
        ] {
            assert_eq!(with_canary_password(kept), kept);
        }
    }

    #[test]
    fn a_server_that_cannot_bind_is_not_taken_for_the_one_listening() -> anyhow::Result<()> {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = taken.local_addr()?.port();
        let dir = tempfile::Builder::new()
            .prefix("loket-pg-taken-")
            .tempdir()?;
        let error = start_server(dir.path(), port, Some(std::process::id()), Commits::Fast)
            .expect_err("the port answers, but not as our server");
        assert!(error.is::<PortTaken>(), "{error:#}");
        // Reported once that server has gone, so the next attempt in this
        // folder does not race its exit.
        assert!(!dir.path().join("data/postmaster.pid").exists());

        // The same folder then starts on a port that is free.
        let (port, url) = start_on_free_port(dir.path(), Some(std::process::id()), Commits::Fast)?;
        assert!(url.ends_with(&format!(":{port}/postgres")), "{url}");
        let lock = std::fs::read_to_string(dir.path().join("data/postmaster.pid"))?;
        assert_eq!(lock.lines().nth(3), Some(port.to_string().as_str()));
        let stopped = pg_command(&bin_dir()?.join("pg_ctl"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output()?;
        assert!(stopped.status.success());
        Ok(())
    }
}
