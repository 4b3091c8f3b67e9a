//! [`Deployment`]: loket as an operator runs it, every service its own
//! process. The workspace's built binaries (`loket-sim`, `loket-callback`,
//! `loket-reconciler`, `loket-okebayar-connector`, `loket-ingress`) are
//! started with their settings in `LOKET_…` variables, as `make run` starts
//! them, on a private nats-server and a fresh database, with one tokio
//! worker thread each. A test can then do to a process what RELIABILITY's
//! table does: `kill -9` it at a failpoint or at any moment, pause it with
//! SIGSTOP past its ack deadline, and start it again (and stop nats-server,
//! or crash a PostgreSQL of the deployment's own, under it), which
//! [`crate::TestApp`] (every service a task of the test's own process) can
//! only approximate by aborting a task.
//!
//! [`Deployment::assert_four_invariants`] checks RELIABILITY's invariants
//! for every transaction in the database against the simulator's own
//! records, read over its HTTP admin routes. Each process writes its log to
//! a file of the deployment's (appended across restarts; its tail is printed
//! when a process does not become ready), which the leak check reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loket_simulators::common::{CallbackLog, RequestCounts};
use loket_simulators::okebayar::ledger::LedgerEntry;
use sqlx::PgPool;

use crate::admin;
use crate::app::{
    catalogue_and_clients, lazy_client, until_grpc_answers, workspace_root, Client, CANARY_PIN,
    USERID,
};
use crate::leaks::{canaries_found, Canaries};
use crate::nats::NatsServer;
use crate::ports::free_port;
use crate::postgres;

/// One kind of process of the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// `loket-sim`, playing OkeBayar only.
    Simulator,
    Callback,
    Reconciler,
    Connector,
    Ingress,
}

impl Part {
    /// Every part, in the order a deployment starts them (the receiver
    /// before the simulator sends it anything, the ingress last).
    pub const ALL: [Part; 5] = [
        Part::Simulator,
        Part::Callback,
        Part::Reconciler,
        Part::Connector,
        Part::Ingress,
    ];

    /// The package and the name of its binary.
    fn binary(self) -> (&'static str, &'static str) {
        match self {
            Part::Simulator => ("loket-simulators", "loket-sim"),
            Part::Callback => ("loket-callback", "loket-callback"),
            Part::Reconciler => ("loket-reconciler", "loket-reconciler"),
            Part::Connector => ("loket-okebayar", "loket-okebayar-connector"),
            Part::Ingress => ("loket-ingress", "loket-ingress"),
        }
    }
}

/// A process started by [`Deployment::start_process`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId(usize);

struct Process {
    part: Part,
    child: Child,
    /// How it ended, once it has.
    ended: Option<ExitStatus>,
}

/// How long the simulator's callbacks wait for the receiver's answer, and
/// between its attempts (three in all): short, so a test sees the retry that
/// follows a receiver killed before answering.
pub const CALLBACK_TIMEOUT_MS: u64 = 1_000;
pub const CALLBACK_RETRY_MS: u64 = 500;
/// The connector's wait for the simulator's answer.
pub const PROVIDER_TIMEOUT_MS: u64 = 1_500;
/// The connector's JetStream ack wait: past it, an unacked command goes to
/// another replica (or the restarted one).
pub const CONNECTOR_ACK_WAIT_MS: u64 = 4_000;
/// The reconciler's JetStream ack wait for its events.
pub const RECONCILER_ACK_WAIT_MS: u64 = 2_000;

/// The whole of loket as separate processes; every process is killed when
/// the deployment is dropped.
pub struct Deployment {
    pub nats: NatsServer,
    /// The PostgreSQL server of this deployment's own, when it was started
    /// with [`Deployment::start_on_private_postgres`] (to crash it);
    /// otherwise the database is on the tests' shared server.
    pub private_postgres: Option<postgres::PrivatePostgres>,
    /// The test's own pool (no canary password).
    pub pool: PgPool,
    /// The database URL the services are given, with the canary password.
    database_url: String,
    pub ingress_addr: SocketAddr,
    pub callback_addr: SocketAddr,
    /// The OkeBayar simulator's port (its `/_sim/…` routes included).
    pub sim_addr: SocketAddr,
    /// The API client's key.
    pub key: String,
    logs: tempfile::TempDir,
    processes: Vec<Process>,
}

impl Deployment {
    /// A private nats-server, a fresh database with the catalogue and one API
    /// client, and one process of every part, each ready. `extra` adds
    /// settings (`LOKET_…` variables) to the first start of a part, e.g. a
    /// failpoint.
    pub async fn start(extra: &[(Part, &str, &str)]) -> Deployment {
        let database_url = postgres::fresh_database().await.expect("database");
        Self::start_on(None, database_url, extra).await
    }

    /// [`Deployment::start`] on a PostgreSQL server of its own, which a
    /// test may crash (the shared one serves every other test).
    pub async fn start_on_private_postgres(extra: &[(Part, &str, &str)]) -> Deployment {
        let server = postgres::PrivatePostgres::start().expect("a private PostgreSQL");
        let database_url = server.database("loket").await.expect("database");
        Self::start_on(Some(server), database_url, extra).await
    }

    async fn start_on(
        private_postgres: Option<postgres::PrivatePostgres>,
        test_database_url: String,
        extra: &[(Part, &str, &str)],
    ) -> Deployment {
        let nats = NatsServer::start().expect("nats-server");
        let pool = PgPool::connect(&test_database_url).await.expect("pool");
        let [key] = catalogue_and_clients(&pool, ["client-a"]).await;
        let mut deployment = Deployment {
            nats,
            private_postgres,
            pool,
            database_url: postgres::with_canary_password(&test_database_url),
            ingress_addr: loopback(free_port()),
            callback_addr: loopback(free_port()),
            sim_addr: loopback(free_port()),
            key,
            logs: tempfile::tempdir().expect("a folder for the logs"),
            processes: Vec::new(),
        };
        for part in Part::ALL {
            let settings: Vec<(&str, &str)> = extra
                .iter()
                .filter(|(of, _, _)| *of == part)
                .map(|(_, name, value)| (*name, *value))
                .collect();
            deployment.start_process(part, &settings).await;
        }
        deployment
    }

    /// The settings of `part`, as `make run` gives them (with test timings).
    fn settings(&self, part: Part) -> Vec<(String, String)> {
        let callback_url = format!("http://{}/callback/okebayar", self.callback_addr);
        let mut settings: Vec<(&str, String)> = match part {
            Part::Simulator => vec![
                ("LOKET_OKEBAYAR_ADDR", self.sim_addr.to_string()),
                ("LOKET_SMILEPAYZ_ADDR", String::new()),
                ("LOKET_SNAPQR_ADDR", String::new()),
                ("LOKET_OKEBAYAR__USERID", USERID.into()),
                ("LOKET_OKEBAYAR__USERPIN", CANARY_PIN.into()),
                ("LOKET_OKEBAYAR__CALLBACK_URL", callback_url),
                ("LOKET_OKEBAYAR__CALLBACK_DELAY_MS", "150".into()),
                (
                    "LOKET_OKEBAYAR__CALLBACK_TIMEOUT_MS",
                    CALLBACK_TIMEOUT_MS.to_string(),
                ),
                (
                    "LOKET_OKEBAYAR__CALLBACK_RETRY_MS",
                    CALLBACK_RETRY_MS.to_string(),
                ),
                ("LOKET_OKEBAYAR__SLOW_REPLY_MS", "3000".into()),
                ("LOKET_REMEMBERED_REFERENCES", "10000".into()),
            ],
            Part::Callback => vec![("LOKET_LISTEN_ADDR", self.callback_addr.to_string())],
            Part::Reconciler => vec![
                ("LOKET_TICK_MS", "200".into()),
                ("LOKET_ACK_WAIT_MS", RECONCILER_ACK_WAIT_MS.to_string()),
                ("LOKET_NOT_FOUND_GRACE_MS", "3000".into()),
                ("LOKET_DISPATCH_GRACE_MS", "1000".into()),
                ("LOKET_REDISPATCH_AFTER_MS", "10000".into()),
                ("LOKET_SCHEDULES__OKEBAYAR__DELAYS_MS", "[700, 1000]".into()),
                ("LOKET_SCHEDULES__OKEBAYAR__UNKNOWN_FIRST_MS", "700".into()),
            ],
            Part::Connector => vec![
                ("LOKET_OKEBAYAR__URL", format!("http://{}/", self.sim_addr)),
                ("LOKET_OKEBAYAR__USERID", USERID.into()),
                ("LOKET_OKEBAYAR__USERPIN", CANARY_PIN.into()),
                ("LOKET_OKEBAYAR__CALLBACK_URL", callback_url),
                (
                    "LOKET_OKEBAYAR__TIMEOUT_MS",
                    PROVIDER_TIMEOUT_MS.to_string(),
                ),
                ("LOKET_OKEBAYAR__CONNECT_TIMEOUT_MS", "500".into()),
                ("LOKET_WORKER__CONCURRENCY", "16".into()),
                (
                    "LOKET_WORKER__ACK_WAIT_MS",
                    CONNECTOR_ACK_WAIT_MS.to_string(),
                ),
            ],
            Part::Ingress => vec![("LOKET_GRPC_ADDR", self.ingress_addr.to_string())],
        };
        if part != Part::Simulator {
            settings.push(("LOKET_NATS_URL", self.nats.service_url()));
            settings.push(("LOKET_DATABASE_URL", self.database_url.clone()));
        }
        settings
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
    }

    /// Starts one more process of `part` with its settings and `extra`, and
    /// waits until its admin port says it is ready.
    pub async fn start_process(&mut self, part: Part, extra: &[(&str, &str)]) -> ProcessId {
        let (package, name) = part.binary();
        let admin = loopback(free_port());
        let log_path = self.log_path(part);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("the process's log file");
        let mut command = Command::new(binary(package, name));
        for (variable, _) in std::env::vars().filter(|(name, _)| name.starts_with("LOKET_")) {
            command.env_remove(variable);
        }
        command
            .envs(self.settings(part))
            .envs(extra.iter().copied())
            .env("LOKET_ADMIN_ADDR", admin.to_string())
            .env("TOKIO_WORKER_THREADS", "1")
            // An error that ends a process is logged without anyhow's
            // backtrace, so the log's tail shows the error itself; panics
            // keep theirs (RUST_BACKTRACE).
            .env("RUST_LIB_BACKTRACE", "0")
            .env("RUST_LOG", crate::logs::DEFAULT_FILTER)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file again"))
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("{name} does not start: {error}"));
        self.processes.push(Process {
            part,
            child,
            ended: None,
        });
        let id = ProcessId(self.processes.len() - 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !admin::get(admin, "/readyz")
            .await
            .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
        {
            if let Some(exit) = self.exited(id) {
                panic!("{name} exited at start ({exit}):\n{}", self.log_tail(part));
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not become ready:\n{}",
                self.log_tail(part)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if part == Part::Ingress {
            until_grpc_answers(&self.client().await).await;
        }
        id
    }

    /// The running processes of `part`.
    pub fn running(&mut self, part: Part) -> Vec<ProcessId> {
        (0..self.processes.len())
            .map(ProcessId)
            .filter(|id| self.processes[id.0].part == part && self.exited(*id).is_none())
            .collect()
    }

    /// The one running process of `part`.
    pub fn only(&mut self, part: Part) -> ProcessId {
        let running = self.running(part);
        assert_eq!(running.len(), 1, "one {part:?} running");
        running[0]
    }

    /// `kill -9`: the process ends at once, without draining or acking.
    pub fn kill9(&mut self, id: ProcessId) {
        let process = &mut self.processes[id.0];
        if process.ended.is_none() {
            let _ = process.child.kill(); // SIGKILL
            process.ended = Some(process.child.wait().expect("the killed process's status"));
        }
    }

    /// Sends `SIGSTOP` (`pause`) or `SIGCONT` (resume).
    pub fn pause(&self, id: ProcessId, pause: bool) {
        let signal = if pause { "STOP" } else { "CONT" };
        crate::signal::send(&self.processes[id.0].child, signal).expect("the signal is sent");
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self, id: ProcessId) -> Option<ExitStatus> {
        let process = &mut self.processes[id.0];
        if process.ended.is_none() {
            process.ended = process.child.try_wait().expect("the process's status");
        }
        process.ended
    }

    /// Waits (at most `within`) until the process has ended by itself.
    pub async fn until_exited(&mut self, id: ProcessId, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.exited(id) {
                return exit;
            }
            assert!(Instant::now() < deadline, "{id:?} still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self, part: Part) -> PathBuf {
        self.logs.path().join(format!("{}.log", part.binary().1))
    }

    /// Everything every process has logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for part in Part::ALL {
            if let Ok(text) = std::fs::read_to_string(self.log_path(part)) {
                all.push_str(&text);
            }
        }
        all
    }

    fn log_tail(&self, part: Part) -> String {
        let text = std::fs::read_to_string(self.log_path(part)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A gRPC client of the ingress, authenticated as the deployment's API
    /// client (connecting lazily, so it may be made while the ingress is
    /// down).
    pub async fn client(&self) -> Client {
        lazy_client(self.ingress_addr, &self.key)
    }

    /// What the simulator received about `reference`.
    pub async fn sim_requests(&self, reference: &str) -> RequestCounts {
        let body = self.sim_get(&format!("/_sim/requests/{reference}")).await;
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"))
    }

    /// The simulator's ledger entry for `reference`, if it has one.
    pub async fn sim_ledger(&self, reference: &str) -> Option<LedgerEntry> {
        let body = self.sim_get(&format!("/_sim/ledger/{reference}")).await;
        serde_json::from_str::<LedgerEntry>(&body).ok()
    }

    /// The simulator's callbacks about `reference`.
    pub async fn sim_callbacks(&self, reference: &str) -> CallbackLog {
        let body = self.sim_get(&format!("/_sim/callbacks/{reference}")).await;
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"))
    }

    async fn sim_get(&self, path: &str) -> String {
        let answer = admin::get(self.sim_addr, path)
            .await
            .unwrap_or_else(|error| panic!("GET {path} of the simulator: {error}"));
        match answer.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => panic!("GET {path} of the simulator answered {answer}"),
        }
    }

    /// How many events of `source` (`result`, `callback`, …) the
    /// transaction's log holds.
    pub async fn events_from(&self, id: uuid::Uuid, source: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM transaction_events WHERE transaction_id = $1 AND source = $2",
        )
        .bind(id)
        .bind(source)
        .fetch_one(&self.pool)
        .await
        .expect("events")
    }

    /// How many times the event log shows the transaction moving into
    /// `status` from another status.
    pub async fn transitions_into(&self, id: uuid::Uuid, status: &str) -> usize {
        let events: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT from_status, to_status FROM transaction_events WHERE transaction_id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("events");
        events
            .iter()
            .filter(|(from, to)| to.as_deref() == Some(status) && from.as_deref() != Some(status))
            .count()
    }

    /// RELIABILITY's four invariants for every transaction in the database,
    /// which must number `expected`:
    /// - nothing lost: each reaches `success`, `failed` or `needs_review`
    ///   within `within`, was created whole (its row with the ingress's
    ///   event), and enters its final state exactly once;
    /// - nothing twice: the simulator received at most one money-moving
    ///   request for each;
    /// - nothing wrong: each is `success` exactly when the simulator's
    ///   ledger holds a success, with the ledger's serial number; none is
    ///   `needs_review` (no scenario here gives the provider's answer
    ///   reason to doubt);
    /// - nothing leaked: the OkeBayar PIN and the bus and database
    ///   passwords are in no process's log and no row, while the logs and
    ///   the rows name every transaction (so the absence means something).
    ///
    /// Returns the transactions' final statuses by id.
    pub async fn assert_four_invariants(
        &self,
        expected: usize,
        within: Duration,
    ) -> BTreeMap<uuid::Uuid, String> {
        let deadline = Instant::now() + within;
        let rows = loop {
            let rows: Vec<(uuid::Uuid, String, String, Option<String>)> = sqlx::query_as(
                "SELECT id, status, provider_reference, serial_number FROM transactions ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await
            .expect("transactions");
            let open: Vec<_> = rows
                .iter()
                .filter(|(_, status, _, _)| {
                    !["success", "failed", "needs_review"].contains(&status.as_str())
                })
                .collect();
            if open.is_empty() {
                break rows;
            }
            assert!(
                Instant::now() < deadline,
                "nothing lost: still open after {within:?}: {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(rows.len(), expected, "one transaction per purchase");
        let mut statuses = BTreeMap::new();
        for (id, status, reference, serial_number) in &rows {
            assert_eq!(
                self.events_from(*id, "ingress").await,
                1,
                "no partial rows: {id} was created whole, with its ingress event"
            );
            assert_eq!(
                self.transitions_into(*id, status).await,
                1,
                "{id} entered {status} once"
            );
            let requests = self.sim_requests(reference).await;
            assert!(
                requests.money() <= 1,
                "nothing twice: {id} ({reference}) reached the provider {requests:?}"
            );
            let ledger = self.sim_ledger(reference).await;
            let provider_succeeded = ledger.as_ref().is_some_and(|entry| entry.code == "000");
            assert_ne!(status, "needs_review", "{id}: {ledger:?}");
            assert_eq!(
                status == "success",
                provider_succeeded,
                "nothing wrong: {id} is {status}, the provider's ledger {ledger:?}"
            );
            if let Some(entry) = ledger.filter(|_| provider_succeeded) {
                assert_eq!(
                    serial_number.as_deref(),
                    Some(entry.serial_number.as_str()),
                    "{id}"
                );
            }
            statuses.insert(*id, status.clone());
        }

        let logs = self.logs();
        let database = postgres::dump(&self.pool).await;
        for (id, ..) in &rows {
            let id = id.to_string();
            assert!(logs.contains(&id), "the services' logs name {id}");
            assert!(database.contains(&id), "the database holds {id}");
        }
        let mut canaries = Canaries::default();
        canaries.add("the NATS password", crate::nats::CANARY_PASSWORD);
        canaries.add("the database password", crate::postgres::CANARY_PASSWORD);
        canaries.add("the OkeBayar PIN", CANARY_PIN);
        let found = canaries_found(
            &canaries,
            &[
                ("a process's log", logs.to_ascii_lowercase()),
                ("a database row", database.to_ascii_lowercase()),
            ],
        );
        assert!(found.is_empty(), "nothing leaked: {found:#?}");
        statuses
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for id in 0..self.processes.len() {
            self.kill9(ProcessId(id));
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The binary `name` of this workspace's `package`, next to the test's own
/// executable (`target/<profile>/deps/<test>-…` → `target/<profile>/<name>`):
/// `make test` builds every binary before it runs a test; when a test is run
/// on its own and the binary is missing, it is built here.
pub fn binary(package: &str, name: &str) -> PathBuf {
    let this = std::env::current_exe().expect("the test executable's path");
    let profile_dir = this
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let binary = profile_dir.join(name);
    if !binary.exists() {
        eprintln!("{name} is not built yet; building it (make test builds it up front)");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", package, "--bin", name])
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name} failed");
    }
    binary
}
