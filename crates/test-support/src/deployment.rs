//! [`Deployment`]: loket as an operator runs it, every service its own
//! process. The workspace's built binaries (`loket-sim` playing OkeBayar,
//! SNAP QR CPM and Smilepayz, `loket-callback`, `loket-reconciler`, the
//! three connectors and `loket-ingress`) are started with their settings in
//! `LOKET_…` variables, as `make run` starts them, on a private nats-server
//! and a fresh database, with one tokio worker thread each; the SNAP and
//! Smilepayz key pairs are made for each deployment. A test can then do to a process what RELIABILITY's
//! table does: `kill -9` it at a failpoint or at any moment, pause it with
//! SIGSTOP past its ack deadline, and start it again (and stop nats-server,
//! or crash a PostgreSQL of the deployment's own, under it), which
//! [`crate::TestApp`] (every service a task of the test's own process) can
//! only approximate by aborting a task.
//!
//! [`Deployment::assert_four_invariants`] checks RELIABILITY's invariants
//! for every transaction in the database against its provider's simulator's
//! own records, read over its HTTP admin routes. Each process writes its log to
//! a file of the deployment's (appended across restarts; its tail is printed
//! when a process does not become ready), which the leak check reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use loket_protocol::Provider;
use loket_simulators::common::{CallbackLog, RequestCounts};
use loket_simulators::okebayar::ledger::LedgerEntry;
use loket_simulators::smilepayz::{Order, SmilepayzCallbackLog};
use loket_simulators::snapqr::{PaymentEntry, SnapCounts};
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
    /// `loket-sim`, playing the three providers loket has connectors for.
    Simulator,
    Callback,
    Reconciler,
    OkeBayarConnector,
    SnapQrConnector,
    SmilepayzConnector,
    Ingress,
}

impl Part {
    /// Every part, in the order a deployment starts them (the receiver
    /// before the simulator sends it anything, the ingress last).
    pub const ALL: [Part; 7] = [
        Part::Simulator,
        Part::Callback,
        Part::Reconciler,
        Part::OkeBayarConnector,
        Part::SnapQrConnector,
        Part::SmilepayzConnector,
        Part::Ingress,
    ];

    /// The connector of each provider a deployment runs.
    pub const CONNECTORS: [Part; 3] = [
        Part::OkeBayarConnector,
        Part::SnapQrConnector,
        Part::SmilepayzConnector,
    ];

    /// The package and the name of its binary.
    fn binary(self) -> (&'static str, &'static str) {
        match self {
            Part::Simulator => ("loket-simulators", "loket-sim"),
            Part::Callback => ("loket-callback", "loket-callback"),
            Part::Reconciler => ("loket-reconciler", "loket-reconciler"),
            Part::OkeBayarConnector => ("loket-okebayar", "loket-okebayar-connector"),
            Part::SnapQrConnector => ("loket-snapqr", "loket-snapqr-connector"),
            Part::SmilepayzConnector => ("loket-smilepayz", "loket-smilepayz-connector"),
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

/// The RSA key pairs (private, public PEM) of the SNAP and Smilepayz
/// parties: given inline in the processes' settings (a key setting takes
/// PEM text or a path).
struct KeyPairs {
    /// Ours towards the SNAP issuer (its token request signature).
    snapqr_partner: (String, String),
    /// The SNAP issuer's (its notify signature).
    snapqr_issuer: (String, String),
    /// Ours towards Smilepayz (our request signatures).
    smilepayz_merchant: (String, String),
    /// Smilepayz's (its callback signature).
    smilepayz_platform: (String, String),
}

impl KeyPairs {
    fn new() -> Self {
        let pair = loket_connector::signing::generate_key_pair;
        KeyPairs {
            snapqr_partner: pair(),
            snapqr_issuer: pair(),
            smilepayz_merchant: pair(),
            smilepayz_platform: pair(),
        }
    }
}

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
    /// The SNAP QR CPM simulator's port.
    pub snapqr_sim_addr: SocketAddr,
    /// The Smilepayz simulator's port.
    pub smilepayz_sim_addr: SocketAddr,
    keys: KeyPairs,
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
            snapqr_sim_addr: loopback(free_port()),
            smilepayz_sim_addr: loopback(free_port()),
            keys: KeyPairs::new(),
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
        use crate::{smilepayz as smile, snapqr as snap};
        let keys = &self.keys;
        let okebayar_callback_url = format!("http://{}/callback/okebayar", self.callback_addr);
        let snapqr_notify_url = format!("http://{}/callback/snapqr", self.callback_addr);
        let smilepayz_callback_url = format!("http://{}/callback/smilepayz", self.callback_addr);
        let mut settings: Vec<(&str, String)> = match part {
            Part::Simulator => vec![
                ("LOKET_OKEBAYAR_ADDR", self.sim_addr.to_string()),
                ("LOKET_SNAPQR_ADDR", self.snapqr_sim_addr.to_string()),
                ("LOKET_SMILEPAYZ_ADDR", self.smilepayz_sim_addr.to_string()),
                ("LOKET_OKEBAYAR__USERID", USERID.into()),
                ("LOKET_OKEBAYAR__USERPIN", CANARY_PIN.into()),
                ("LOKET_OKEBAYAR__CALLBACK_URL", okebayar_callback_url),
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
                ("LOKET_SNAPQR__CLIENT_KEY", snap::CLIENT_KEY.into()),
                (
                    "LOKET_SNAPQR__CLIENT_SECRET",
                    snap::CANARY_CLIENT_SECRET.into(),
                ),
                (
                    "LOKET_SNAPQR__PARTNER_PUBLIC_KEY",
                    keys.snapqr_partner.1.clone(),
                ),
                (
                    "LOKET_SNAPQR__ISSUER_PRIVATE_KEY",
                    keys.snapqr_issuer.0.clone(),
                ),
                ("LOKET_SNAPQR__CUSTOMER_TOKEN", snap::CUSTOMER_TOKEN.into()),
                ("LOKET_SNAPQR__MERCHANT_ID", snap::MERCHANT_ID.into()),
                ("LOKET_SNAPQR__NOTIFY_URL", snapqr_notify_url),
                ("LOKET_SNAPQR__NOTIFY_DELAY_MS", "150".into()),
                (
                    "LOKET_SNAPQR__PENDING_RESOLVE_MS",
                    snap::PENDING_RESOLVE_MS.to_string(),
                ),
                ("LOKET_SNAPQR__SLOW_REPLY_MS", "3000".into()),
                ("LOKET_SMILEPAYZ__MERCHANT_ID", smile::MERCHANT_ID.into()),
                (
                    "LOKET_SMILEPAYZ__MERCHANT_SECRET",
                    smile::CANARY_MERCHANT_SECRET.into(),
                ),
                (
                    "LOKET_SMILEPAYZ__MERCHANT_PUBLIC_KEY",
                    keys.smilepayz_merchant.1.clone(),
                ),
                (
                    "LOKET_SMILEPAYZ__PLATFORM_PRIVATE_KEY",
                    keys.smilepayz_platform.0.clone(),
                ),
                ("LOKET_SMILEPAYZ__CALLBACK_URL", smilepayz_callback_url),
                (
                    "LOKET_SMILEPAYZ__SETTLE_DELAY_MS",
                    smile::SETTLE_DELAY_MS.to_string(),
                ),
                ("LOKET_SMILEPAYZ__SLOW_REPLY_MS", "3000".into()),
                (
                    "LOKET_SMILEPAYZ__CALLBACK_SCHEDULE_MS",
                    format!("[0, {CALLBACK_RETRY_MS}, {}]", CALLBACK_RETRY_MS * 2),
                ),
                (
                    "LOKET_SMILEPAYZ__CALLBACK_TIMEOUT_MS",
                    CALLBACK_TIMEOUT_MS.to_string(),
                ),
                ("LOKET_REMEMBERED_REFERENCES", "10000".into()),
            ],
            Part::Callback => vec![
                ("LOKET_LISTEN_ADDR", self.callback_addr.to_string()),
                // The connector's account: the receiver masks its PIN.
                ("LOKET_OKEBAYAR__USERID", USERID.into()),
                ("LOKET_OKEBAYAR__USERPIN", CANARY_PIN.into()),
                ("LOKET_SNAPQR__MODE", "rsa".into()),
                (
                    "LOKET_SNAPQR__ISSUER_PUBLIC_KEY",
                    keys.snapqr_issuer.1.clone(),
                ),
                ("LOKET_SNAPQR__MERCHANT_ID", snap::MERCHANT_ID.into()),
                (
                    "LOKET_SMILEPAYZ__PLATFORM_PUBLIC_KEY",
                    keys.smilepayz_platform.1.clone(),
                ),
                (
                    "LOKET_SMILEPAYZ__MASK_SECRETS",
                    format!("[\"{}\"]", smile::CANARY_MERCHANT_SECRET),
                ),
            ],
            Part::Reconciler => vec![
                ("LOKET_TICK_MS", "200".into()),
                ("LOKET_ACK_WAIT_MS", RECONCILER_ACK_WAIT_MS.to_string()),
                ("LOKET_NOT_FOUND_GRACE_MS", "3000".into()),
                ("LOKET_DISPATCH_GRACE_MS", "1000".into()),
                ("LOKET_REDISPATCH_AFTER_MS", "10000".into()),
                ("LOKET_SCHEDULES__OKEBAYAR__DELAYS_MS", "[700, 1000]".into()),
                ("LOKET_SCHEDULES__OKEBAYAR__UNKNOWN_FIRST_MS", "700".into()),
                ("LOKET_SCHEDULES__SNAPQR__DELAYS_MS", "[700, 1000]".into()),
                ("LOKET_SCHEDULES__SNAPQR__UNKNOWN_FIRST_MS", "700".into()),
                (
                    "LOKET_SCHEDULES__SMILEPAYZ__DELAYS_MS",
                    "[700, 1000]".into(),
                ),
                ("LOKET_SCHEDULES__SMILEPAYZ__UNKNOWN_FIRST_MS", "700".into()),
            ],
            Part::OkeBayarConnector => vec![
                ("LOKET_OKEBAYAR__URL", format!("http://{}/", self.sim_addr)),
                ("LOKET_OKEBAYAR__USERID", USERID.into()),
                ("LOKET_OKEBAYAR__USERPIN", CANARY_PIN.into()),
                ("LOKET_OKEBAYAR__CALLBACK_URL", okebayar_callback_url),
                (
                    "LOKET_OKEBAYAR__TIMEOUT_MS",
                    PROVIDER_TIMEOUT_MS.to_string(),
                ),
                ("LOKET_OKEBAYAR__CONNECT_TIMEOUT_MS", "500".into()),
            ],
            Part::SnapQrConnector => vec![
                (
                    "LOKET_SNAPQR__BASE_URL",
                    format!("http://{}", self.snapqr_sim_addr),
                ),
                ("LOKET_SNAPQR__CLIENT_KEY", snap::CLIENT_KEY.into()),
                (
                    "LOKET_SNAPQR__CLIENT_SECRET",
                    snap::CANARY_CLIENT_SECRET.into(),
                ),
                ("LOKET_SNAPQR__PRIVATE_KEY", keys.snapqr_partner.0.clone()),
                ("LOKET_SNAPQR__MERCHANT_ID", snap::MERCHANT_ID.into()),
                (
                    "LOKET_SNAPQR__DEMO_CUSTOMER_TOKEN",
                    snap::CUSTOMER_TOKEN.into(),
                ),
                ("LOKET_SNAPQR__TIMEOUT_MS", PROVIDER_TIMEOUT_MS.to_string()),
                ("LOKET_SNAPQR__CONNECT_TIMEOUT_MS", "500".into()),
            ],
            Part::SmilepayzConnector => vec![
                (
                    "LOKET_SMILEPAYZ__BASE_URL",
                    format!("http://{}", self.smilepayz_sim_addr),
                ),
                ("LOKET_SMILEPAYZ__MERCHANT_ID", smile::MERCHANT_ID.into()),
                ("LOKET_SMILEPAYZ__MERCHANT_NAME", "loket".into()),
                (
                    "LOKET_SMILEPAYZ__MERCHANT_SECRET",
                    smile::CANARY_MERCHANT_SECRET.into(),
                ),
                (
                    "LOKET_SMILEPAYZ__MERCHANT_PRIVATE_KEY",
                    keys.smilepayz_merchant.0.clone(),
                ),
                ("LOKET_SMILEPAYZ__CALLBACK_URL", smilepayz_callback_url),
                (
                    "LOKET_SMILEPAYZ__TIMEOUT_MS",
                    PROVIDER_TIMEOUT_MS.to_string(),
                ),
                ("LOKET_SMILEPAYZ__CONNECT_TIMEOUT_MS", "500".into()),
                ("LOKET_SMILEPAYZ__NOT_FOUND_GRACE_MS", "2000".into()),
            ],
            Part::Ingress => vec![("LOKET_GRPC_ADDR", self.ingress_addr.to_string())],
        };
        if Part::CONNECTORS.contains(&part) {
            settings.push(("LOKET_WORKER__CONCURRENCY", "16".into()));
            settings.push((
                "LOKET_WORKER__ACK_WAIT_MS",
                CONNECTOR_ACK_WAIT_MS.to_string(),
            ));
        }
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

    /// What the OkeBayar simulator received about `reference`.
    pub async fn sim_requests(&self, reference: &str) -> RequestCounts {
        self.simulator_record(Provider::OkeBayar, "requests", reference)
            .await
    }

    /// The OkeBayar simulator's ledger entry for `reference`, if it has one.
    pub async fn sim_ledger(&self, reference: &str) -> Option<LedgerEntry> {
        self.simulator_ledger(Provider::OkeBayar, reference).await
    }

    /// The OkeBayar simulator's callbacks about `reference`.
    pub async fn sim_callbacks(&self, reference: &str) -> CallbackLog {
        self.simulator_record(Provider::OkeBayar, "callbacks", reference)
            .await
    }

    /// What the SNAP QR CPM simulator received about `reference` (a
    /// partnerReferenceNo).
    pub async fn snapqr_requests(&self, reference: &str) -> SnapCounts {
        self.simulator_record(Provider::SnapQr, "requests", reference)
            .await
    }

    /// What the Smilepayz simulator received about `reference` (an
    /// orderNo).
    pub async fn smilepayz_requests(&self, reference: &str) -> RequestCounts {
        self.simulator_record(Provider::Smilepayz, "requests", reference)
            .await
    }

    /// The SNAP QR CPM simulator's notifies about `reference`.
    pub async fn snapqr_notifies(&self, reference: &str) -> CallbackLog {
        self.simulator_record(Provider::SnapQr, "callbacks", reference)
            .await
    }

    /// The Smilepayz simulator's callbacks about `reference`.
    pub async fn smilepayz_callbacks(&self, reference: &str) -> SmilepayzCallbackLog {
        self.simulator_record(Provider::Smilepayz, "callbacks", reference)
            .await
    }

    /// Sets the Smilepayz simulator's available pay-out balance: a pay-out
    /// above it is refused (`4009103`, no order made).
    pub async fn set_smilepayz_payout_balance(&self, available: i64) {
        let body = serde_json::json!({ "payout_available": available }).to_string();
        let answer = admin::put_json(self.smilepayz_sim_addr, "/_sim/balance", &body)
            .await
            .expect("PUT /_sim/balance of the Smilepayz simulator");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// Money-moving requests `provider`'s simulator received under every
    /// reference together (`GET /_sim/requests`).
    pub async fn money_requests_total(&self, provider: Provider) -> usize {
        #[derive(serde::Deserialize)]
        struct Total {
            money_requests: usize,
        }
        let total: Total = self.simulator_json(provider, "/_sim/requests").await;
        total.money_requests
    }

    /// `GET /_sim/{record}/{reference}` of `provider`'s simulator, read as
    /// a `T` (a failure shows what it answered instead).
    async fn simulator_record<T: serde::de::DeserializeOwned>(
        &self,
        provider: Provider,
        record: &str,
        reference: &str,
    ) -> T {
        self.simulator_json(provider, &format!("/_sim/{record}/{reference}"))
            .await
    }

    /// `GET path` of `provider`'s simulator, read as a `T` (a failure shows
    /// what it answered instead).
    async fn simulator_json<T: serde::de::DeserializeOwned>(
        &self,
        provider: Provider,
        path: &str,
    ) -> T {
        let body = self.simulator_get(provider, path).await;
        serde_json::from_str(&body).unwrap_or_else(|error| {
            panic!("GET {path} of the {provider} simulator answered {body}: {error}")
        })
    }

    /// `provider`'s simulator's ledger record of `reference`, if it has one
    /// (it answers a 404 otherwise).
    async fn simulator_ledger<T: serde::de::DeserializeOwned>(
        &self,
        provider: Provider,
        reference: &str,
    ) -> Option<T> {
        let body = self
            .simulator_get(provider, &format!("/_sim/ledger/{reference}"))
            .await;
        serde_json::from_str(&body).ok()
    }

    /// The body `provider`'s simulator answered `GET path` with.
    async fn simulator_get(&self, provider: Provider, path: &str) -> String {
        let addr = match provider {
            Provider::OkeBayar => self.sim_addr,
            Provider::SnapQr => self.snapqr_sim_addr,
            Provider::Smilepayz => self.smilepayz_sim_addr,
            Provider::Doku => panic!("no DOKU simulator"),
        };
        let answer = admin::get(addr, path)
            .await
            .unwrap_or_else(|error| panic!("GET {path} of the {provider} simulator: {error}"));
        let Some((_, body)) = answer.split_once("\r\n\r\n") else {
            panic!("GET {path} of the {provider} simulator answered {answer}");
        };
        body.to_string()
    }

    /// What `provider`'s simulator holds about the transaction it knows as
    /// `reference`.
    async fn provider_says(&self, provider: Provider, reference: &str) -> ProviderSays {
        match provider {
            Provider::OkeBayar => {
                let ledger = self.sim_ledger(reference).await;
                ProviderSays {
                    money_requests: self.sim_requests(reference).await.money(),
                    succeeded: ledger.as_ref().is_some_and(|entry| entry.code == "000"),
                    serial_number: ledger.as_ref().map(|entry| entry.serial_number.clone()),
                    ledger: format!("{ledger:?}"),
                }
            }
            Provider::SnapQr => {
                let requests = self.snapqr_requests(reference).await;
                let ledger: Option<PaymentEntry> = self.simulator_ledger(provider, reference).await;
                ProviderSays {
                    money_requests: requests.payments + requests.cancels + requests.refunds,
                    succeeded: ledger.as_ref().is_some_and(|entry| entry.status == "00"),
                    serial_number: None,
                    ledger: format!("{ledger:?}"),
                }
            }
            Provider::Smilepayz => {
                let ledger: Option<Order> = self.simulator_ledger(provider, reference).await;
                ProviderSays {
                    money_requests: self.smilepayz_requests(reference).await.money(),
                    succeeded: ledger
                        .as_ref()
                        .is_some_and(|order| order.status == "SUCCESS"),
                    serial_number: None,
                    ledger: format!("{ledger:?}"),
                }
            }
            Provider::Doku => panic!("no DOKU simulator"),
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
    /// - nothing twice: its provider's simulator received at most one
    ///   money-moving request for it;
    /// - nothing wrong: each is `success` exactly when its provider's ledger
    ///   holds a success (OkeBayar's with the ledger's serial number); none
    ///   is `needs_review` (no scenario here gives the provider's answer
    ///   reason to doubt);
    /// - nothing leaked: the bus and database passwords, the OkeBayar PIN,
    ///   the SNAP client secret and customer token, the Smilepayz merchant
    ///   secret and our SNAP and Smilepayz private keys (in every form
    ///   [`Canaries::add_key`] knows) are in no process's log and no row,
    ///   while the logs and the rows name every transaction (so the absence
    ///   means something).
    ///
    /// Returns the transactions' final statuses by id.
    pub async fn assert_four_invariants(
        &self,
        expected: usize,
        within: Duration,
    ) -> BTreeMap<uuid::Uuid, String> {
        type Row = (uuid::Uuid, String, String, String, Option<String>);
        let deadline = Instant::now() + within;
        let rows: Vec<Row> = loop {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, provider, status, provider_reference, serial_number \
                 FROM transactions ORDER BY id",
            )
            .fetch_all(&self.pool)
            .await
            .expect("transactions");
            let open: Vec<_> = rows
                .iter()
                .filter(|(_, _, status, _, _)| {
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
        assert_eq!(rows.len(), expected, "one transaction per request");
        let mut statuses = BTreeMap::new();
        let mut money_requests = BTreeMap::new();
        for (id, provider, status, reference, serial_number) in &rows {
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
            let provider: Provider = provider.parse().expect("a provider loket knows");
            let says = self.provider_says(provider, reference).await;
            assert!(
                says.money_requests <= 1,
                "nothing twice: {id} ({reference}) reached {provider} {} times",
                says.money_requests
            );
            money_requests.insert((provider, reference.as_str()), says.money_requests);
            assert_ne!(status, "needs_review", "{id}: {}", says.ledger);
            assert_eq!(
                status == "success",
                says.succeeded,
                "nothing wrong: {id} is {status}, {provider}'s ledger {}",
                says.ledger
            );
            if let Some(expected) = says.serial_number.filter(|_| says.succeeded) {
                assert_eq!(serial_number.as_deref(), Some(expected.as_str()), "{id}");
            }
            statuses.insert(*id, status.clone());
        }

        // A resend under a reference of its own leaves each transaction's
        // count at one: only the simulator's total shows it.
        for provider in [Provider::OkeBayar, Provider::SnapQr, Provider::Smilepayz] {
            let ours: usize = money_requests
                .iter()
                .filter(|((of, _), _)| *of == provider)
                .map(|(_, count)| count)
                .sum();
            assert_eq!(
                self.money_requests_total(provider).await,
                ours,
                "nothing twice: {provider}'s money-moving requests under any reference, against those under our transactions' references"
            );
        }

        let logs = self.logs();
        let database = postgres::dump(&self.pool).await;
        for (id, ..) in &rows {
            let id = id.to_string();
            assert!(logs.contains(&id), "the services' logs name {id}");
            assert!(database.contains(&id), "the database holds {id}");
        }
        let found = canaries_found(
            &self.canaries(),
            &[
                ("a process's log", logs.to_ascii_lowercase()),
                ("a database row", database.to_ascii_lowercase()),
            ],
        );
        assert!(found.is_empty(), "nothing leaked: {found:#?}");
        statuses
    }

    /// The secrets the processes are given (see
    /// [`Deployment::assert_four_invariants`]).
    fn canaries(&self) -> Canaries {
        let mut canaries = Canaries::default();
        canaries.add("the client's API key", self.key.as_str());
        canaries.add("the NATS password", crate::nats::CANARY_PASSWORD);
        canaries.add("the database password", crate::postgres::CANARY_PASSWORD);
        canaries.add("the OkeBayar PIN", CANARY_PIN);
        canaries.add(
            "the SNAP client secret",
            crate::snapqr::CANARY_CLIENT_SECRET,
        );
        canaries.add("the SNAP customer token", crate::snapqr::CUSTOMER_TOKEN);
        canaries.add(
            "the Smilepayz merchant secret",
            crate::smilepayz::CANARY_MERCHANT_SECRET,
        );
        canaries.add_key("our SNAP private key", &self.keys.snapqr_partner.0);
        canaries.add_key("our Smilepayz private key", &self.keys.smilepayz_merchant.0);
        canaries
    }
}

/// What a provider's simulator holds about one transaction.
struct ProviderSays {
    /// Money-moving requests it received under the transaction's reference.
    money_requests: usize,
    /// Whether its ledger holds a success.
    succeeded: bool,
    /// The serial number its ledger holds, for a provider that gives one.
    serial_number: Option<String>,
    /// Its ledger record, as a failure shows it.
    ledger: String,
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
