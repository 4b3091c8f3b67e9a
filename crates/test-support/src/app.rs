//! [`TestApp`]: the whole of loket for one test — a private nats-server, a
//! fresh database, the OkeBayar simulator, and every service started
//! in-process through the same `run` functions their binaries call. Two API
//! clients (A and B) are created and the product catalogue is loaded from
//! `deploy/products.toml`.
//!
//! The services are given canary credentials for the bus and the database
//! (see [`crate::nats`] and [`crate::postgres`]); the test's own pool and
//! bus connections go without them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use loket_connector::worker::{Failpoint, WorkerSettings};
use loket_okebayar::wire::Format;
use loket_protocol::pb;
use loket_protocol::pb::loket_client::LoketClient;
use loket_runtime::{Secret, Shutdown};
use loket_simulators::okebayar::{OkeBayarSim, OkeBayarSimSettings};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::admin::wait_ready;
use crate::nats::NatsServer;
use crate::postgres;
use crate::service::{Failures, Service};

/// The OkeBayar credential shared by the connector and the simulator in
/// tests. A canary: it must never appear in a log line or a row.
pub const CANARY_PIN: &str = "CANARY-PIN-7731";
/// A PIN of digits only, as real OkeBayar PINs are (see
/// [`TestOptions::okebayar_pin`]): a canary too, long enough not to stand
/// alone in a log line by chance.
pub const CANARY_NUMERIC_PIN: &str = "80461739";
pub const USERID: &str = "loket-test";

/// Knobs a test may turn; the defaults make every schedule run in seconds.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub format: Format,
    /// The OkeBayar PIN of the connector and the simulator: [`CANARY_PIN`],
    /// or [`CANARY_NUMERIC_PIN`] to run as with a real, numeric one (the
    /// masker and the canary check treat a PIN of digits only apart).
    pub okebayar_pin: &'static str,
    /// The connector's HTTP timeout towards the simulator.
    pub provider_timeout_ms: u64,
    /// How long the simulator's "answer after the timeout" scenarios wait.
    pub slow_reply_ms: u64,
    pub failpoint: Option<Failpoint>,
    /// The ingress's failpoint (`loket_ingress::dispatch::Failpoint`).
    pub ingress_failpoint: Option<loket_ingress::dispatch::Failpoint>,
    /// The ingress's `max_watches_per_client`.
    pub max_watches_per_client: usize,
    /// The callback receiver's failpoint (`loket_callback::Failpoint`).
    pub callback_failpoint: Option<loket_callback::Failpoint>,
    /// Delay before the first status check of a pending / unknown transaction.
    pub first_check_ms: u64,
    /// How long a transaction may stay undispatched before the reconciler's
    /// sweep dispatches it.
    pub dispatch_grace_ms: u64,
    pub not_found_grace_ms: u64,
    pub callback_delay_ms: u64,
    /// Also start the SNAP QR CPM simulator and connector.
    pub snapqr: bool,
    /// How the SNAP simulator signs its notifies (mode B: with a token the
    /// callback receiver grants it).
    pub snapqr_notify_mode: loket_snapqr::NotifyMode,
    /// How long the SNAP simulator's scenario 102 payment stays pending.
    pub snapqr_pending_resolve_ms: u64,
    /// Also start the Smilepayz simulator and connector.
    pub smilepayz: bool,
    /// How long after its creation the Smilepayz simulator settles an order.
    pub smilepayz_settle_delay_ms: u64,
    /// How the OkeBayar simulator sends its callbacks (POST in the
    /// request's format, or GET with the fields in the query string).
    pub okebayar_callback_method: loket_simulators::common::CallbackMethod,
    /// A migrated database to use instead of a fresh one on the shared
    /// server (a test that crashes its PostgreSQL brings its own).
    pub database_url: Option<String>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            format: Format::Xml,
            okebayar_pin: CANARY_PIN,
            provider_timeout_ms: 1_500,
            slow_reply_ms: 3_000,
            failpoint: None,
            ingress_failpoint: None,
            max_watches_per_client: loket_ingress::Settings::default().max_watches_per_client,
            callback_failpoint: None,
            first_check_ms: 700,
            dispatch_grace_ms: 1_000,
            not_found_grace_ms: 3_000,
            callback_delay_ms: 150,
            snapqr: false,
            snapqr_notify_mode: loket_snapqr::NotifyMode::Rsa,
            snapqr_pending_resolve_ms: crate::snapqr::PENDING_RESOLVE_MS,
            smilepayz: false,
            smilepayz_settle_delay_ms: crate::smilepayz::SETTLE_DELAY_MS,
            okebayar_callback_method: loket_simulators::common::CallbackMethod::Post,
            database_url: None,
        }
    }
}

pub type Client = LoketClient<InterceptedService<Channel, ApiKey>>;

/// Adds the `x-api-key` metadata entry.
#[derive(Clone)]
pub struct ApiKey(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl ApiKey {
    pub(crate) fn new(key: &str) -> ApiKey {
        ApiKey(key.parse().expect("an ASCII API key"))
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("x-api-key", self.0.clone());
        Ok(request)
    }
}

/// Every service's unexpected end (an error, a panic, an `Ok` before its
/// shutdown, a graceful stop past its bound) is recorded, and the app fails
/// the test with them when it is dropped (unless the test is already
/// failing); [`TestApp::assert_services_alive`] checks on demand. Services
/// the test kills on purpose record nothing.
pub struct TestApp {
    pub nats: NatsServer,
    /// The database URL the services are given: the test database's, with
    /// the canary password ([`postgres::with_canary_password`]).
    pub database_url: String,
    /// The test's own pool.
    pub pool: PgPool,
    pub sim: OkeBayarSim,
    pub sim_url: String,
    pub ingress_addr: SocketAddr,
    pub callback_addr: SocketAddr,
    /// The callback receiver's admin port (`/metrics`); a new one after
    /// [`TestApp::restart_callback`].
    pub callback_admin: SocketAddr,
    pub key_a: String,
    pub key_b: String,
    pub options: TestOptions,
    pub snapqr: Option<crate::snapqr::SnapQrFixture>,
    pub smilepayz: Option<crate::smilepayz::SmilepayzFixture>,
    connector: Option<Service>,
    callback: Option<Service>,
    callback_settings: loket_callback::Settings,
    services: Vec<Service>,
    sim_shutdown: Shutdown,
    failures: Failures,
    /// When the app started (before any service).
    pub started_at: sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc>,
    /// Where the shared PostgreSQL server's log stood when the app started;
    /// `None` when that log is not known, or the test brought its own
    /// database ([`TestOptions::database_url`]).
    pub(crate) postgres_log: Option<postgres::LogMark>,
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

/// The settings every service shares: the bus with the services'
/// credentials, and `database_url`.
fn common(nats: &NatsServer, database_url: &str) -> loket_runtime::config::Common {
    loket_runtime::config::Common {
        nats_url: nats.service_url(),
        database_url: Secret::new(database_url),
        admin_addr: "127.0.0.1:0".into(),
        log_json: false,
        otlp_endpoint: String::new(),
        shutdown_grace_ms: 5_000,
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(options: TestOptions) -> TestApp {
        crate::logs::capture();
        let started_at = sqlx::types::chrono::Utc::now();
        let failures = Failures::default();
        let nats = NatsServer::start().expect("nats-server");
        let (test_database_url, postgres_log) = match &options.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let log = postgres::LogMark::shared_server_now().expect("the PostgreSQL log");
                (postgres::fresh_database().await.expect("database"), log)
            }
        };
        let pool = PgPool::connect(&test_database_url).await.expect("pool");
        let database_url = postgres::with_canary_password(&test_database_url);

        let [key_a, key_b] = catalogue_and_clients(&pool, ["client-a", "client-b"]).await;

        let mut services = Vec::new();
        let mut snapqr = options.snapqr.then(|| {
            let mut fixture =
                crate::snapqr::SnapQrFixture::with_notify_mode(options.snapqr_notify_mode);
            fixture.failures = failures.clone();
            fixture.sim_settings.pending_resolve_ms = options.snapqr_pending_resolve_ms;
            fixture
        });
        let mut smilepayz = options.smilepayz.then(|| {
            let mut fixture = crate::smilepayz::SmilepayzFixture::settling_after(
                options.smilepayz_settle_delay_ms,
            );
            fixture.failures = failures.clone();
            fixture
        });

        // Callback receiver first: the simulators need its URL.
        let callback_main = bind().await;
        let callback_addr = callback_main.local_addr().unwrap();
        let mut callback_settings = loket_callback::Settings {
            common: common(&nats, &database_url),
            failpoint: options.callback_failpoint,
            // The connector's account: the receiver masks its PIN.
            okebayar: loket_okebayar::callback::CallbackSettings {
                userid: USERID.into(),
                userpin: Secret::new(options.okebayar_pin),
            },
            ..Default::default()
        };
        if let Some(fixture) = &snapqr {
            callback_settings.snapqr = fixture.callback_settings();
        }
        if let Some(fixture) = &smilepayz {
            callback_settings.smilepayz = fixture.callback_settings();
        }
        let (callback, callback_admin) =
            spawn_callback(callback_settings.clone(), callback_main, &failures).await;

        let sim = OkeBayarSim::new(OkeBayarSimSettings {
            userid: USERID.into(),
            userpin: Secret::new(options.okebayar_pin),
            callback_url: Some(format!("http://{callback_addr}/callback/okebayar")),
            callback_delay_ms: options.callback_delay_ms,
            callback_method: options.okebayar_callback_method,
            slow_reply_ms: options.slow_reply_ms,
            short_inquiry_ttl_ms: 100,
            ..Default::default()
        });
        let sim_listener = bind().await;
        let sim_url = format!("http://{}/", sim_listener.local_addr().unwrap());
        let sim_shutdown = Shutdown::new();
        {
            let sim = sim.clone();
            let shutdown = sim_shutdown.clone();
            tokio::spawn(async move { sim.serve(sim_listener, shutdown).await });
        }

        let reconciler_admin;
        {
            let mut settings = loket_reconciler::Settings {
                common: common(&nats, &database_url),
                tick_ms: 200,
                not_found_grace_ms: options.not_found_grace_ms,
                dispatch_grace_ms: options.dispatch_grace_ms,
                redispatch_after_ms: 10_000,
                ..Default::default()
            };
            for provider in loket_protocol::Provider::ALL {
                settings.schedules.insert(
                    provider.as_str().to_string(),
                    loket_reconciler::schedule::ScheduleSettings {
                        delays_ms: vec![options.first_check_ms, 1_000],
                        unknown_first_ms: options.first_check_ms,
                        ..Default::default()
                    },
                );
            }
            let admin = bind().await;
            reconciler_admin = admin.local_addr().expect("admin address");
            let listeners = loket_reconciler::Listeners { admin };
            let shutdown = Shutdown::new();
            let s = shutdown.clone();
            services.push(Service::spawn(
                "reconciler",
                shutdown,
                &failures,
                async move {
                    loket_reconciler::run(settings, listeners, s)
                        .await
                        .map_err(|e| e.to_string())
                },
            ));
        }

        let ingress_main = bind().await;
        let ingress_addr = ingress_main.local_addr().unwrap();
        {
            let settings = loket_ingress::Settings {
                common: common(&nats, &database_url),
                failpoint: options.ingress_failpoint,
                max_watches_per_client: options.max_watches_per_client,
                ..Default::default()
            };
            let listeners = loket_ingress::Listeners {
                main: ingress_main,
                admin: bind().await,
            };
            let shutdown = Shutdown::new();
            let s = shutdown.clone();
            services.push(Service::spawn("ingress", shutdown, &failures, async move {
                loket_ingress::run(settings, listeners, s)
                    .await
                    .map_err(|e| e.to_string())
            }));
        }

        // Ready once its event consumer exists: a test that stops the bus
        // right after the start must not catch it still setting that up
        // (a reconciler that cannot, exits, for its supervisor to restart).
        wait_ready(reconciler_admin).await;

        if let Some(fixture) = snapqr.as_mut() {
            let url = format!("http://{callback_addr}/callback/snapqr");
            fixture
                .start(&nats.service_url(), &url, &database_url)
                .await
                .expect("SNAP QR CPM fixture");
        }
        if let Some(fixture) = smilepayz.as_mut() {
            let url = format!("http://{callback_addr}/callback/smilepayz");
            fixture
                .start(&nats.service_url(), &url, &database_url)
                .await
                .expect("Smilepayz fixture");
        }

        let mut app = TestApp {
            nats,
            database_url,
            pool,
            sim,
            sim_url,
            ingress_addr,
            callback_addr,
            callback_admin,
            key_a,
            key_b,
            options,
            snapqr,
            smilepayz,
            connector: None,
            callback: Some(callback),
            callback_settings,
            services,
            sim_shutdown,
            failures,
            started_at,
            postgres_log,
        };
        app.start_connector(app.options.failpoint).await;
        app.wait_for_grpc().await;
        app
    }

    /// The OkeBayar connector's settings for this app.
    pub fn connector_settings(
        &self,
        failpoint: Option<Failpoint>,
    ) -> loket_okebayar::service::ConnectorSettings {
        let mut okebayar = loket_okebayar::settings::OkeBayarSettings {
            url: self.sim_url.clone(),
            userid: USERID.into(),
            userpin: Secret::new(self.options.okebayar_pin),
            format: self.options.format,
            timeout_ms: self.options.provider_timeout_ms,
            connect_timeout_ms: 500,
            ..Default::default()
        };
        okebayar.payment_transaction_code = self.sim.settings().payment_transactioncodes[0].clone();
        loket_okebayar::service::ConnectorSettings {
            common: common(&self.nats, &self.database_url),
            worker: WorkerSettings {
                concurrency: 16,
                ack_wait_ms: self.options.provider_timeout_ms * 2 + 1_000,
                failpoint,
                ..WorkerSettings::default()
            },
            okebayar,
        }
    }

    /// Starts (or restarts) the OkeBayar connector.
    pub async fn start_connector(&mut self, failpoint: Option<Failpoint>) {
        let settings = self.connector_settings(failpoint);
        let admin = bind().await;
        let admin_addr = admin.local_addr().expect("admin address");
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        self.connector = Some(Service::spawn(
            "okebayar-connector",
            shutdown,
            &self.failures,
            async move {
                loket_okebayar::service::run(settings, admin, s)
                    .await
                    .map_err(|e| e.to_string())
            },
        ));
        wait_ready(admin_addr).await;
    }

    /// Kills the callback receiver like `kill -9` and starts it again on the
    /// same address, with `failpoint` (see [`TestOptions::callback_failpoint`]).
    pub async fn restart_callback(&mut self, failpoint: Option<loket_callback::Failpoint>) {
        if let Some(callback) = self.callback.take() {
            callback.kill_and_wait().await;
        }
        let listener = TcpListener::bind(self.callback_addr)
            .await
            .expect("the callback address again");
        let settings = loket_callback::Settings {
            failpoint,
            ..self.callback_settings.clone()
        };
        let (callback, admin) = spawn_callback(settings, listener, &self.failures).await;
        self.callback = Some(callback);
        self.callback_admin = admin;
    }

    /// Kills the connector like `kill -9`: no drain, no ack.
    pub fn kill_connector(&mut self) {
        if let Some(connector) = self.connector.take() {
            connector.kill();
        }
    }

    /// What ended unexpectedly so far: a service that returned an error,
    /// panicked or returned before its shutdown, or did not stop in time.
    pub fn service_failures(&self) -> Vec<String> {
        self.failures.seen()
    }

    /// Fails the test now if any service ended unexpectedly (the drop does
    /// the same at the end): for a check such as "nothing was recorded",
    /// which a dead service would pass.
    pub fn assert_services_alive(&self) {
        self.failures.check("TestApp");
    }

    /// The callback receiver's settings (what it verifies with).
    pub fn callback_settings(&self) -> &loket_callback::Settings {
        &self.callback_settings
    }

    async fn wait_for_grpc(&self) {
        until_grpc_answers(&lazy_client(self.ingress_addr, &self.key_a)).await;
    }

    async fn try_client(&self, key: &str) -> Result<Client, tonic::transport::Error> {
        let channel = Channel::from_shared(format!("http://{}", self.ingress_addr))
            .expect("valid URI")
            .connect()
            .await?;
        Ok(LoketClient::with_interceptor(channel, ApiKey::new(key)))
    }

    /// A gRPC client authenticated as client A.
    pub async fn client_a(&self) -> Client {
        self.try_client(&self.key_a)
            .await
            .expect("connect to the ingress")
    }

    pub async fn client_b(&self) -> Client {
        self.try_client(&self.key_b)
            .await
            .expect("connect to the ingress")
    }

    pub async fn client_with_key(&self, key: &str) -> Client {
        self.try_client(key).await.expect("connect to the ingress")
    }

    /// The callback receiver's OkeBayar endpoint.
    pub fn callback_url(&self) -> String {
        format!("http://{}/callback/okebayar", self.callback_addr)
    }

    /// The transaction's row as stored.
    pub async fn row(&self, id: &str) -> loket_store::TransactionRow {
        let id = uuid::Uuid::parse_str(id).expect("a transaction id");
        loket_store::get(&self.pool, id)
            .await
            .expect("query")
            .expect("row exists")
    }

    /// Waits until the transaction's stored status is `status`.
    pub async fn wait_for_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> loket_store::TransactionRow {
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.row(id).await;
            if row.status == status {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "transaction {id} is {} (code {:?}), not {status}, after {timeout:?}",
                row.status,
                row.provider_code
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The transaction's event log as (source, from, to) rows.
    pub async fn events(&self, id: &str) -> Vec<(String, Option<String>, Option<String>)> {
        let id = uuid::Uuid::parse_str(id).expect("a transaction id");
        sqlx::query_as("SELECT source, from_status, to_status FROM transaction_events WHERE transaction_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .expect("events")
    }

    /// How many times the event log shows the transaction moving into
    /// `status` from another status (1 for a clean transition, whatever
    /// duplicates arrived).
    pub async fn transitions_into(&self, id: &str, status: &str) -> usize {
        self.events(id)
            .await
            .iter()
            .filter(|(_, from, to)| {
                to.as_deref() == Some(status) && from.as_deref() != Some(status)
            })
            .count()
    }

    /// Every row of every table, as JSON text (for leak checks).
    pub async fn dump_database(&self) -> String {
        postgres::dump(&self.pool).await
    }

    /// Every message still stored in every JetStream stream, one a line
    /// (for leak checks): its stream, sequence and subject, its headers, and
    /// its payload as UTF-8 (lossily, line breaks made spaces). The
    /// work-queue streams (commands, events) keep a message only until it
    /// is acked.
    pub async fn dump_streams(&self) -> String {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        use futures::TryStreamExt as _;
        let nats = async_nats::connect(self.nats.url())
            .await
            .expect("connect to nats-server");
        let js = async_nats::jetstream::new(nats);
        let names: Vec<String> = js.stream_names().try_collect().await.expect("stream names");
        let mut dump = String::new();
        for name in names {
            let stream = js.get_stream(&name).await.expect("the stream");
            let state = &stream.cached_info().state;
            if state.messages == 0 {
                continue;
            }
            for sequence in state.first_sequence..=state.last_sequence {
                let message = match stream.get_raw_message(sequence).await {
                    Ok(message) => message,
                    // Acked from a work queue, or deleted.
                    Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => continue,
                    Err(error) => panic!("message {sequence} of {name}: {error}"),
                };
                let headers: Vec<String> = message
                    .headers
                    .iter()
                    .flat_map(|(header, values)| {
                        values.iter().map(move |value| format!("{header}: {value}"))
                    })
                    .collect();
                let payload = String::from_utf8_lossy(&message.payload).replace(['\n', '\r'], " ");
                dump.push_str(&format!(
                    "{name} #{sequence} {}: [{}] {payload}\n",
                    message.subject,
                    headers.join("; ")
                ));
            }
        }
        dump
    }

    /// Stops every service gracefully.
    pub async fn shutdown(mut self) {
        if let Some(connector) = self.connector.take() {
            connector.stop().await;
        }
        if let Some(fixture) = self.snapqr.as_mut() {
            fixture.stop().await;
        }
        if let Some(fixture) = self.smilepayz.as_mut() {
            fixture.stop().await;
        }
        if let Some(callback) = self.callback.take() {
            callback.stop().await;
        }
        for service in self.services.drain(..) {
            service.stop().await;
        }
        self.sim_shutdown.trigger();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Taken before the kills below, so nothing the teardown causes
        // counts; reported once everything is killed.
        let failures = self.failures.take();
        if let Some(connector) = self.connector.take() {
            connector.kill();
        }
        if let Some(fixture) = self.snapqr.as_mut() {
            fixture.kill_connector();
        }
        if let Some(fixture) = self.smilepayz.as_mut() {
            fixture.kill_connector();
        }
        if let Some(callback) = self.callback.take() {
            callback.kill();
        }
        for service in self.services.drain(..) {
            service.kill();
        }
        self.sim_shutdown.trigger();
        crate::service::fail_with("TestApp", failures);
    }
}

/// Loads the product catalogue from `deploy/products.toml` into the
/// database `pool` reaches and creates an API client of each name; their
/// keys, in order.
pub(crate) async fn catalogue_and_clients<const N: usize>(
    pool: &PgPool,
    names: [&str; N],
) -> [String; N] {
    loket_cli::admin::load_products(pool, &workspace_root().join("deploy/products.toml"))
        .await
        .expect("products load");
    let mut keys = Vec::with_capacity(N);
    for name in names {
        let client = loket_cli::admin::create_client(pool, name, |_| Ok(()))
            .await
            .unwrap_or_else(|error| panic!("API client {name}: {error}"));
        keys.push(client.api_key);
    }
    keys.try_into().expect("one key per name")
}

/// A gRPC client of the ingress at `addr`, authenticated with `key`,
/// connecting lazily (so it may be made while the ingress is down).
pub(crate) fn lazy_client(addr: SocketAddr, key: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect_lazy();
    LoketClient::with_interceptor(channel, ApiKey::new(key))
}

/// Waits (at most 30 s) until the ingress `client` talks to answers a
/// call: looking up the nil id, which no transaction has.
pub(crate) async fn until_grpc_answers(client: &Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = pb::GetTransactionRequest {
            key: Some(pb::get_transaction_request::Key::Id(
                uuid::Uuid::nil().to_string(),
            )),
        };
        match client.clone().get_transaction(request).await {
            Err(status) if status.code() == tonic::Code::NotFound => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the ingress did not answer gRPC");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The callback receiver on `main`, once its admin port (returned) says it
/// is ready.
async fn spawn_callback(
    settings: loket_callback::Settings,
    main: TcpListener,
    failures: &Failures,
) -> (Service, SocketAddr) {
    let admin = bind().await;
    let admin_addr = admin.local_addr().expect("admin address");
    let listeners = loket_callback::Listeners { main, admin };
    let shutdown = Shutdown::new();
    let s = shutdown.clone();
    let service = Service::spawn("callback", shutdown, failures, async move {
        loket_callback::run(settings, listeners, s)
            .await
            .map_err(|e| e.to_string())
    });
    wait_ready(admin_addr).await;
    (service, admin_addr)
}

/// The workspace root (where `deploy/` lives).
pub fn workspace_root() -> std::path::PathBuf {
    let mut dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("deploy").exists() {
        if !dir.pop() {
            panic!("workspace root with deploy/ not found");
        }
    }
    dir
}
