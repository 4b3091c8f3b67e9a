//! The OkeBayar H2H simulator (`shared/protocols/okebayar.md` §8): one URL
//! (`POST /`, ASSUMED spec §1) taking XML or JSON and answering in the
//! request's format; signature, user id, PIN and source IP checked; lower-case
//! tags enforced; a [`ledger`] of the most recent referencecodes (reuse →
//! `208`, status checks answer from it); a deposit that purchases and
//! payments consume (`203` when short); postpaid inquiries with expiring
//! handles, each bill sold once (`401` once paid); callbacks by GET or POST;
//! and [`scenarios`] chosen by the account number.
//!
//! Introspection for operators and cross-process tests (JSON):
//! `GET /_sim/requests/{reference}`, `GET /_sim/ledger/{reference}`,
//! `GET /_sim/callbacks/{reference}`, `GET|PUT /_sim/balance`,
//! `GET /_sim/scenarios`.
//!
//! Everything kept per reference is bounded: see
//! [`OkeBayarSim::remembering`].

mod callbacks;
mod handlers;
pub mod ledger;
mod reply;
pub mod scenarios;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use loket_okebayar::settings::{ECHO_TRANSACTION_CODE_DEFAULT, STATUS_NOT_FOUND_CODE_DEFAULT};
use loket_runtime::allow::AllowList;
use loket_runtime::{Secret, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::common::{
    self, CallbackLog, CallbackMethod, CallbackSender, OutageSwitch, ReferenceRecords,
    RequestCounter, RequestCounts, DEFAULT_REMEMBERED_REFERENCES,
};
use ledger::Ledger;
pub use ledger::{LedgerEntry, LedgerOperation};

/// The simulator's settings (`[okebayar]` in the `loket-sim` config,
/// `LOKET_OKEBAYAR__…` in the environment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OkeBayarSimSettings {
    /// The partner account the simulator accepts (else `213`).
    pub userid: String,
    /// The simulator's own copy of the partner PIN (else `207`).
    pub userpin: Secret,
    /// Source addresses and CIDR blocks allowed (else `212`); empty = all.
    pub allowed_ips: AllowList,
    /// Deposit at start, whole rupiah.
    pub initial_balance: i64,
    /// loket's callback receiver, e.g. `http://127.0.0.1:PORT/callback/okebayar`;
    /// no callbacks are sent when absent (the ledger still moves).
    pub callback_url: Option<String>,
    /// `post` (body in the request's format) or `get` (query string).
    pub callback_method: CallbackMethod,
    /// One "step" of the asynchronous scenarios (pending → callback → final).
    pub callback_delay_ms: u64,
    /// Attempts per callback (a non-2xx answer or a connection error is
    /// retried; ASSUMED, retries are undocumented).
    pub callback_max_attempts: u32,
    pub callback_retry_ms: u64,
    pub callback_timeout_ms: u64,
    /// How long the "answer after the client's timeout" scenario waits.
    pub slow_reply_ms: u64,
    /// The status-check code for a reference the simulator never saw
    /// (undocumented, spec §8.2: configurable; ASSUMED, defaults to the
    /// connector's `loket_okebayar::settings::STATUS_NOT_FOUND_CODE_DEFAULT`).
    pub not_found_code: String,
    /// Lifetime of an inquiry handle (`403` after it).
    pub inquiry_ttl_secs: u64,
    /// Lifetime the biller really gives an inquiry in scenario `403`.
    pub short_inquiry_ttl_ms: u64,
    /// Accounts made of this prefix and three digits select a scenario.
    pub scenario_prefix: String,
    /// `harga` per productcode, whole rupiah.
    pub prices: BTreeMap<String, i64>,
    /// `harga` of a productcode not in `prices`.
    pub default_price: i64,
    /// A bill's `nominal` (a BPJS inquiry's is this times its months,
    /// `accnumber3`) and every bill's `adminfee`.
    pub bill_nominal: i64,
    pub bill_adminfee: i64,
    /// Extra `transactioncode`s treated as a bill payment (the doc's
    /// payment code is a copy error; `OkeBayar-inquiry` + `inquirycode` is
    /// always a payment, ASSUMED spec §3).
    pub payment_transactioncodes: Vec<String>,
    /// `transactioncode`s of the echo (connectivity) request. The doc gives
    /// none (ASSUMED, spec §3) and the connector's `echo_transaction_code`
    /// is configurable, so this must list whatever the connector sends.
    pub echo_transactioncodes: Vec<String>,
    /// A payment must carry the inquiry's `ref2`/`ref3` verbatim (else `402`),
    /// and a PLN prepaid purchase after an inquiry its `ref1..3` (`405`,
    /// `402`, `403`; see `pln_inquiry_named` in `handlers.rs`).
    pub check_payment_refs: bool,
    /// Wrap every XML reply and callback body in `{ … }`, as the doc's
    /// examples do (spec §8.7 and §9: "doc-literal" mode).
    pub doc_literal_xml: bool,
    /// Whether a referencecode whose purchase or payment failed may be used
    /// again. Spec §7: "Never reuse a referencecode (→208)", so by default
    /// it may not; `true` is a deviation for tests (whether the real
    /// provider allows it is spec §10's open question). Pending or
    /// succeeded ones never may (`208`).
    pub allow_reuse_after_failure: bool,
    pub body_limit_bytes: usize,
    pub body_read_timeout_ms: u64,
}

impl Default for OkeBayarSimSettings {
    fn default() -> Self {
        OkeBayarSimSettings {
            userid: "loket".into(),
            userpin: Secret::new("123456"),
            allowed_ips: AllowList::default(),
            initial_balance: 1_000_000_000_000,
            callback_url: None,
            callback_method: CallbackMethod::Post,
            callback_delay_ms: 200,
            callback_max_attempts: 3,
            callback_retry_ms: 500,
            callback_timeout_ms: 5_000,
            slow_reply_ms: 60_000,
            not_found_code: STATUS_NOT_FOUND_CODE_DEFAULT.into(),
            inquiry_ttl_secs: 1_800,
            short_inquiry_ttl_ms: 0,
            scenario_prefix: "089900000".into(),
            prices: default_prices(),
            default_price: 11_000,
            bill_nominal: 150_000,
            bill_adminfee: 2_500,
            payment_transactioncodes: vec!["OkeBayar-payment".into()],
            echo_transactioncodes: vec![ECHO_TRANSACTION_CODE_DEFAULT.into()],
            check_payment_refs: true,
            doc_literal_xml: false,
            allow_reuse_after_failure: false,
            body_limit_bytes: 64 * 1024,
            body_read_timeout_ms: 10_000,
        }
    }
}

/// The simulator's price list (what `harga` debits), matching the product
/// catalogue seed in `deploy/products.toml`.
pub fn default_prices() -> BTreeMap<String, i64> {
    [
        ("S10", 10_500),
        ("S25", 25_500),
        ("S50", 50_500),
        ("D1GB", 15_000),
        ("PLN20", 20_500),
        ("PLN50", 50_500),
    ]
    .into_iter()
    .map(|(code, price)| (code.to_string(), price))
    .collect()
}

impl OkeBayarSimSettings {
    fn price_of(&self, productcode: &str) -> i64 {
        self.prices
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(productcode))
            .map_or(self.default_price, |(_, price)| *price)
    }
}

pub(crate) struct Inner {
    pub(crate) settings: OkeBayarSimSettings,
    pub(crate) ledger: Ledger,
    pub(crate) requests: RequestCounter,
    pub(crate) callbacks: CallbackSender,
    pub(crate) outage: Arc<OutageSwitch>,
    /// Stops the asynchronous scenario steps and slow replies.
    pub(crate) stop: Shutdown,
}

/// The OkeBayar simulator. Cheap to clone.
#[derive(Clone)]
pub struct OkeBayarSim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for OkeBayarSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OkeBayarSim")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl OkeBayarSim {
    /// A simulator remembering [`DEFAULT_REMEMBERED_REFERENCES`] references.
    pub fn new(settings: OkeBayarSimSettings) -> Self {
        Self::remembering(settings, DEFAULT_REMEMBERED_REFERENCES)
    }

    /// A simulator remembering the `references` most recent referencecodes
    /// (ledger entries, request counts, callback logs; inquiries and paid
    /// bills likewise): older ones are forgotten, so a status check answers
    /// `not_found_code` for them, a purchase under one executes as new, and a
    /// forgotten paid bill can be paid again.
    pub fn remembering(settings: OkeBayarSimSettings, references: usize) -> Self {
        let callbacks = CallbackSender::new(
            "okebayar",
            Duration::from_millis(settings.callback_timeout_ms),
            settings.callback_max_attempts,
            Duration::from_millis(settings.callback_retry_ms),
            references,
        );
        OkeBayarSim {
            inner: Arc::new(Inner {
                ledger: Ledger::new(settings.initial_balance, references),
                requests: RequestCounter::new("okebayar", references),
                callbacks,
                outage: Arc::default(),
                stop: Shutdown::new(),
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &OkeBayarSimSettings {
        &self.inner.settings
    }

    /// `POST /` for every operation plus the `/_sim/…` introspection routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", post(handlers::transaction))
            .merge(common::reference_routes())
            .route("/_sim/balance", get(admin_balance).put(admin_set_balance))
            .route("/_sim/scenarios", get(admin_scenarios))
            .with_state(self.clone())
            .merge(common::outage_routes(self.inner.outage.clone()))
    }

    /// Serves [`Self::router`] until `shutdown` fires. Served this way, the
    /// "connection reset" scenario really resets the TCP connection and the
    /// IP allow-list sees the peer address.
    pub async fn serve(&self, listener: TcpListener, shutdown: Shutdown) {
        common::serve(self.router(), listener, shutdown, self.inner.stop.clone()).await;
    }

    /// Requests received for `reference`, duplicates and refusals included,
    /// once they passed the request checks (tag names, source IP, userid,
    /// referencecode, PIN, signature); the others count only in
    /// [`total_requests`](Self::total_requests).
    pub fn requests_for(&self, reference: &str) -> RequestCounts {
        self.inner.requests.get(reference)
    }

    /// Purchases + payments received for `reference` (each duplicate counts).
    pub fn money_requests_for(&self, reference: &str) -> usize {
        self.requests_for(reference).money()
    }

    /// Every request received.
    pub fn total_requests(&self) -> u64 {
        self.inner.requests.total()
    }

    /// Purchases + payments received under any remembered reference.
    pub fn money_requests_total(&self) -> usize {
        self.inner.requests.money_total()
    }

    /// The state the simulator decided for `reference`.
    pub fn ledger_state(&self, reference: &str) -> Option<LedgerEntry> {
        self.inner.ledger.get(reference)
    }

    /// Callbacks sent about `reference`.
    pub fn callbacks_for(&self, reference: &str) -> CallbackLog {
        self.inner.callbacks.log_for(reference)
    }

    pub fn balance(&self) -> i64 {
        self.inner.ledger.balance()
    }

    pub fn set_balance(&self, idr: i64) {
        self.inner.ledger.set_balance(idr);
    }

    /// The outage switch: a provider outage (every request answered with
    /// an HTTP error page) is started, ended and shown through it.
    pub fn outage(&self) -> &OutageSwitch {
        &self.inner.outage
    }
}

impl ReferenceRecords for OkeBayarSim {
    type Requests = RequestCounts;
    type Entry = LedgerEntry;
    type Callbacks = CallbackLog;
    const NOT_IN_LEDGER: &'static str = "reference not in the ledger";

    fn requests_about(&self, reference: &str) -> RequestCounts {
        self.requests_for(reference)
    }

    fn ledger_entry(&self, reference: &str) -> Option<LedgerEntry> {
        self.ledger_state(reference)
    }

    fn callbacks_about(&self, reference: &str) -> CallbackLog {
        self.callbacks_for(reference)
    }
    fn money_requests_total(&self) -> usize {
        OkeBayarSim::money_requests_total(self)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct BalanceBody {
    balance: i64,
}

async fn admin_balance(State(sim): State<OkeBayarSim>) -> Json<BalanceBody> {
    Json(BalanceBody {
        balance: sim.balance(),
    })
}

async fn admin_set_balance(
    State(sim): State<OkeBayarSim>,
    Json(body): Json<BalanceBody>,
) -> Json<BalanceBody> {
    sim.set_balance(body.balance);
    Json(BalanceBody {
        balance: sim.balance(),
    })
}

async fn admin_scenarios(State(sim): State<OkeBayarSim>) -> Json<serde_json::Value> {
    let prefix = &sim.inner.settings.scenario_prefix;
    let rows: Vec<_> = scenarios::TABLE
        .iter()
        .map(|(selector, behaviour)| serde_json::json!({ "selector": selector, "behaviour": behaviour }))
        .collect();
    Json(
        serde_json::json!({ "prefix": prefix, "account": format!("{prefix}NNN"), "scenarios": rows }),
    )
}
