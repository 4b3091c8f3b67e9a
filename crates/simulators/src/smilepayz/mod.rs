//! The Smilepayz v2.0 simulator (`shared/protocols/smilepayz.md` §8): the
//! four endpoints (`/v2.0/transaction/pay-in`, `/v2.0/disbursement/pay-out`,
//! `/v2.0/inquiry-status`, `/v2.0/inquiry-balance`; any other path, or a
//! method other than POST, answers `4049x01 Invalid Routing`) with the
//! request checks Smilepayz makes (IP allow-list, mandatory headers,
//! timestamp shape and window, SHA256withRSA signature with the merchant's
//! public key, X-PARTNER-ID vs `merchant.merchantId`, orderNo rules, field
//! lengths, duplicates), a ledger with the pay-in account and the pay-out
//! account's available and frozen balances, orders that settle after a
//! configurable delay according to a scenario chosen by the amount (see
//! `SCENARIOS.md`),
//! unpaid pay-ins that expire after their `expiryPeriod`, QRIS pay-ins
//! answered with a well-formed EMVCo QR string ([`qris`]), and callbacks
//! signed with the simulator's platform key over `tradeNo|X-TIMESTAMP`,
//! retried on a schedule until answered with exactly `SUCCESS`.
//!
//! Introspection (JSON): `GET /_sim/requests/{orderNo}`,
//! `GET /_sim/ledger/{orderNo}`, `GET /_sim/callbacks/{orderNo}`,
//! `GET|PUT /_sim/balance`, `GET /_sim/scenarios`,
//! `GET /_sim/platform-public-key` (PEM, for the callback receiver).
//!
//! Everything kept per orderNo is bounded, the orders' timers included: see
//! [`SmilepayzSim::remembering`].

mod callbacks;
mod handlers;
pub mod qris;
pub mod scenarios;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use loket_runtime::allow::AllowList;
use loket_runtime::{Secret, Shutdown};
use loket_smilepayz::sign::{self, TimestampStyle};
use loket_smilepayz::wire;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::common::{
    self, lock, IndexedRecentMap, IndexedRecord, OutageSwitch, ReferenceRecords, RequestCounter,
    RequestCounts, DEFAULT_REMEMBERED_REFERENCES,
};
pub use callbacks::{CallbackAttempt, SmilepayzCallbackLog};
pub use scenarios::Scenario;

/// The simulator's settings (`[smilepayz]` in the `loket-sim` config,
/// `LOKET_SMILEPAYZ__…` in the environment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SmilepayzSimSettings {
    /// The one merchant the simulator knows (`X-PARTNER-ID`).
    pub merchant_id: String,
    pub merchant_name: String,
    /// The simulator's copy of the merchant secret.
    pub merchant_secret: Secret,
    /// The merchant's uploaded public key (PEM, base64 DER or a path). Empty:
    /// every request is refused with 4019x00.
    pub merchant_public_key: String,
    /// The platform private key that signs callbacks (PEM, base64 DER or a
    /// path). Empty: one is generated at start
    /// ([`SmilepayzSim::platform_public_key_pem`]).
    pub platform_private_key: Secret,
    /// Source addresses and CIDR blocks allowed (else 403xx03); empty = all.
    pub allowed_ips: AllowList,
    /// X-TIMESTAMP window, either way (spec: ±5 min).
    pub max_skew_seconds: i64,
    /// Accept `-` and `_` in orderNo (spec §10 Q1; off = alphanumeric only).
    pub allow_order_no_separators: bool,
    /// The pay-in channels active for the merchant. A pay-in naming another
    /// `paymentMethod` is refused `4039x04` "no active channel", nothing
    /// created. ASSUMED list: spec §5 names `QRIS`, VA bank codes (`BCA`,
    /// `BRI`, …) and wallets (`W_DANA`, `W_OVO`); the full list is open (§10
    /// Q6).
    pub pay_in_methods: Vec<String>,
    /// Pay-out account, available balance at start (IDR).
    pub initial_payout_balance: i64,
    /// Pay-in account at start (IDR).
    pub initial_payin_balance: i64,
    /// Where callbacks go when the request carried no `callbackUrl`.
    pub callback_url: Option<String>,
    /// Timestamp style of callbacks.
    pub callback_timestamp_style: TimestampStyle,
    /// Delay between creation and the order's final state (and callback).
    pub settle_delay_ms: u64,
    /// When each callback attempt is made, from the first one (spec §9: "6
    /// tries at 0, 10 s, 1 min, 5 min, 30 min, 2 h"). Compress for tests.
    pub callback_schedule_ms: Vec<u64>,
    pub callback_timeout_ms: u64,
    /// An inquiry this soon after creation answers 5009200 "Order not found"
    /// (the race of spec §8.12); 0 = off.
    pub inquiry_race_ms: u64,
    /// Requests per second beyond which 429xx00 is answered; 0 = unlimited.
    pub rate_limit_per_second: u32,
    /// How long the "reply after the client's timeout" scenario waits.
    pub slow_reply_ms: u64,
    pub body_limit_bytes: usize,
    pub body_read_timeout_ms: u64,
}

impl Default for SmilepayzSimSettings {
    fn default() -> Self {
        SmilepayzSimSettings {
            merchant_id: "20001".into(),
            merchant_name: "loket".into(),
            merchant_secret: Secret::new("sim-merchant-secret-0001"),
            merchant_public_key: String::new(),
            platform_private_key: Secret::default(),
            allowed_ips: AllowList::default(),
            max_skew_seconds: 300,
            allow_order_no_separators: false,
            pay_in_methods: [
                "QRIS", "BCA", "BRI", "BNI", "MANDIRI", "PERMATA", "CIMB", "W_DANA", "W_OVO",
            ]
            .map(String::from)
            .to_vec(),
            initial_payout_balance: 1_000_000_000,
            initial_payin_balance: 0,
            callback_url: None,
            callback_timestamp_style: TimestampStyle::Wib,
            settle_delay_ms: 500,
            callback_schedule_ms: vec![0, 10_000, 60_000, 300_000, 1_800_000, 7_200_000],
            callback_timeout_ms: 5_000,
            inquiry_race_ms: 300,
            rate_limit_per_second: 0,
            slow_reply_ms: 60_000,
            body_limit_bytes: 64 * 1024,
            body_read_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradeType {
    PayIn,
    PayOut,
}

impl TradeType {
    pub fn code(self) -> u8 {
        match self {
            TradeType::PayIn => wire::TRADE_TYPE_PAY_IN,
            TradeType::PayOut => wire::TRADE_TYPE_PAY_OUT,
        }
    }
}

/// One order in the simulator's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_no: String,
    pub trade_no: String,
    pub trade_type: TradeType,
    pub amount: i64,
    /// Empty for a hosted-page pay-in until it is final, when it takes the
    /// method its simulated customer chose on the page (QRIS, ASSUMED).
    pub payment_method: String,
    pub cash_account: String,
    pub payer_name: String,
    /// INIT, PROCESSING, SUCCESS, FAILED, EXPIRED.
    pub status: String,
    pub scenario: Scenario,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub callback_url: Option<String>,
    /// Pay-outs: whether the amount is still frozen.
    pub frozen: bool,
    /// Pay-ins: when the order expires if still unpaid (`expiryPeriod`
    /// after creation, spec §2.7). Pay-outs have no expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Order {
    /// How long after creation the order becomes final, and with which
    /// status: its scenario's after `settle_delay` (at once for 006, whose
    /// callback comes before the create reply), unless the pay-in is still
    /// unpaid at its expiry, when it becomes EXPIRED. `None`: it stays as it
    /// is (a pay-out of scenario 003).
    pub(crate) fn settlement(&self, settle_delay: Duration) -> Option<(Duration, &'static str)> {
        let pay_in = self.trade_type == TradeType::PayIn;
        let scenario_delay = if self.scenario == Scenario::CallbackFirst {
            Duration::ZERO
        } else {
            settle_delay
        };
        let by_scenario = self
            .scenario
            .final_status(pay_in)
            .map(|status| (scenario_delay, status));
        let by_expiry = self
            .expires_at
            .and_then(|at| (at - self.created_at).to_std().ok())
            .map(|after| (after, "EXPIRED"));
        // The earlier wins; on a tie the scenario (paid in the last moment).
        [by_scenario, by_expiry]
            .into_iter()
            .flatten()
            .min_by_key(|(after, _)| *after)
    }
}

/// The merchant's balances at the simulated Smilepayz.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balances {
    pub payin_available: i64,
    pub payout_available: i64,
    pub payout_frozen: i64,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    /// Pay-ins and pay-outs together, by orderNo: one orderNo namespace
    /// shared by both, so reusing a pay-in's orderNo for a pay-out is a
    /// duplicate (ASSUMED, spec §7/§9: the docs are silent; the stricter
    /// choice). Indexed by tradeNo, so an inquiry that names only the
    /// tradeNo finds its order without reading every order under the
    /// ledger's lock.
    pub(crate) orders: IndexedRecentMap<RememberedOrder>,
    /// orderNos whose first request is still being processed (see
    /// `handlers::FirstRequestInFlight`); as many as requests in flight.
    pub(crate) in_flight: HashSet<String>,
    pub(crate) balances: Balances,
}

/// A remembered order with its timer.
///
/// An order's timer (the task that settles it and sends its callbacks) may
/// sleep up to a day, the longest `expiryPeriod`: it is kept with the order
/// and ends when the order is forgotten, so it neither acts on an order the
/// simulator no longer knows nor holds memory for it until it wakes.
#[derive(Debug)]
pub(crate) struct RememberedOrder {
    pub(crate) order: Order,
    /// Never read: held only so that forgetting the order drops it.
    pub(crate) _timer: Option<Timer>,
}

/// Kept by orderNo, found by tradeNo too. The handlers refuse an orderNo
/// still remembered before they record an order, and a tradeNo is issued
/// once.
impl IndexedRecord for RememberedOrder {
    fn key(&self) -> &str {
        &self.order.order_no
    }

    fn secondary_key(&self) -> &str {
        &self.order.trade_no
    }
}

/// An order's timer task, ended when this is dropped.
#[derive(Debug)]
pub(crate) struct Timer(pub(crate) AbortHandle);

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct Inner {
    pub(crate) settings: SmilepayzSimSettings,
    pub(crate) merchant_key: Option<RsaPublicKey>,
    pub(crate) platform_key: RsaPrivateKey,
    pub(crate) platform_public_pem: String,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) requests: RequestCounter,
    pub(crate) callbacks: callbacks::Sender,
    pub(crate) trade_seq: AtomicU64,
    pub(crate) rate: Mutex<(i64, u32)>,
    pub(crate) outage: Arc<OutageSwitch>,
    pub(crate) stop: Shutdown,
}

/// The Smilepayz simulator. Cheap to clone.
#[derive(Clone)]
pub struct SmilepayzSim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SmilepayzSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmilepayzSim")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl SmilepayzSim {
    /// [`remembering`](Self::remembering) [`DEFAULT_REMEMBERED_REFERENCES`]
    /// orderNos.
    pub fn new(settings: SmilepayzSimSettings) -> Self {
        Self::remembering(settings, DEFAULT_REMEMBERED_REFERENCES)
    }

    /// Builds the simulator, remembering the `references` most recent
    /// orderNos (orders, request counts, callback logs): an inquiry about an
    /// older one answers "Order not found", its timer ends (no settlement, no
    /// callback), and a new order may reuse it. A
    /// merchant public key that does not load is logged and every request is
    /// then refused (4019x00); a platform key that is empty or does not load
    /// is replaced by a generated one.
    pub fn remembering(settings: SmilepayzSimSettings, references: usize) -> Self {
        let merchant_key = match sign::load_public_key(&settings.merchant_public_key) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%error, "smilepayz simulator: merchant public key not usable; every request will get 4019x00");
                None
            }
        };
        let platform_key = match sign::load_private_key(settings.platform_private_key.expose()) {
            Ok(key) => key,
            Err(error) => {
                // Left empty it is expected; given and unusable (a mistyped
                // path), every callback would fail verification unexplained.
                if !settings.platform_private_key.is_empty() {
                    tracing::warn!(%error, "smilepayz simulator: platform private key not usable; a generated one signs its replies and callbacks, which the receiver will refuse");
                }
                let (private, _) = sign::generate_key_pair();
                sign::load_private_key(&private).expect("generated key loads")
            }
        };
        let platform_public_pem = {
            use rsa::pkcs8::{EncodePublicKey, LineEnding};
            RsaPublicKey::from(&platform_key)
                .to_public_key_pem(LineEnding::LF)
                .expect("SPKI encoding")
        };
        let callbacks = callbacks::Sender::new(
            Duration::from_millis(settings.callback_timeout_ms),
            settings.callback_schedule_ms.clone(),
            references,
        );
        let balances = Balances {
            payin_available: settings.initial_payin_balance,
            payout_available: settings.initial_payout_balance,
            payout_frozen: 0,
        };
        SmilepayzSim {
            inner: Arc::new(Inner {
                merchant_key,
                platform_key,
                platform_public_pem,
                ledger: Mutex::new(Ledger {
                    orders: IndexedRecentMap::new(references, "smilepayz", "orders", "trade_nos"),
                    in_flight: HashSet::new(),
                    balances,
                }),
                requests: RequestCounter::new("smilepayz", references),
                callbacks,
                trade_seq: AtomicU64::new(1),
                rate: Mutex::new((0, 0)),
                outage: Arc::default(),
                stop: Shutdown::new(),
                settings,
            }),
        }
    }

    pub fn settings(&self) -> &SmilepayzSimSettings {
        &self.inner.settings
    }

    /// The public half of the platform key that signs callbacks (SPKI PEM):
    /// what loket's callback receiver verifies with.
    pub fn platform_public_key_pem(&self) -> String {
        self.inner.platform_public_pem.clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(wire::PAY_IN_PATH, post(handlers::pay_in))
            .route(wire::PAY_OUT_PATH, post(handlers::pay_out))
            .route(wire::INQUIRY_STATUS_PATH, post(handlers::inquiry_status))
            .route(wire::INQUIRY_BALANCE_PATH, post(handlers::inquiry_balance))
            .method_not_allowed_fallback(handlers::invalid_routing)
            .route_layer(axum::middleware::from_fn_with_state(
                self.inner.outage.clone(),
                common::outage_gate,
            ))
            .merge(common::reference_routes())
            .route("/_sim/balance", get(admin_balance).put(admin_set_balance))
            .route("/_sim/scenarios", get(admin_scenarios))
            .route("/_sim/platform-public-key", get(admin_platform_key))
            .fallback(handlers::invalid_routing)
            .with_state(self.clone())
            .merge(common::outage_routes(self.inner.outage.clone()))
    }

    /// The outage switch: a provider outage (every API request answered
    /// with an HTTP error page by the front proxy) is started, ended and
    /// shown through it.
    pub fn outage(&self) -> &OutageSwitch {
        &self.inner.outage
    }

    /// Serves [`Self::router`] until `shutdown` (connection resets and the
    /// IP allow-list need this, not a bare router).
    pub async fn serve(&self, listener: TcpListener, shutdown: Shutdown) {
        common::serve(self.router(), listener, shutdown, self.inner.stop.clone()).await;
    }

    /// Requests received for `order_no`: `purchases` = pay-ins, `payments` =
    /// pay-outs, `status_checks` = inquiries (refused ones included once
    /// their signature verified; the others count only in
    /// [`total_requests`](Self::total_requests)).
    pub fn requests_for(&self, order_no: &str) -> RequestCounts {
        self.inner.requests.get(order_no)
    }

    /// Money-moving requests (pay-ins + pay-outs) received for `order_no`.
    pub fn money_requests_for(&self, order_no: &str) -> usize {
        self.requests_for(order_no).money()
    }

    pub fn total_requests(&self) -> u64 {
        self.inner.requests.total()
    }

    /// Pay-ins + pay-outs received under any remembered orderNo.
    pub fn money_requests_total(&self) -> usize {
        self.inner.requests.money_total()
    }

    pub fn order(&self, order_no: &str) -> Option<Order> {
        lock(&self.inner.ledger)
            .orders
            .get(order_no)
            .map(|kept| kept.order.clone())
    }

    pub fn callbacks_for(&self, order_no: &str) -> SmilepayzCallbackLog {
        self.inner.callbacks.log_for(order_no)
    }

    pub fn balances(&self) -> Balances {
        lock(&self.inner.ledger).balances
    }

    /// Sets the pay-out account's available balance (frozen is kept).
    pub fn set_payout_balance(&self, available: i64) {
        lock(&self.inner.ledger).balances.payout_available = available;
    }

    pub(crate) fn next_trade_no(&self, trade_type: TradeType) -> String {
        let seq = self.inner.trade_seq.fetch_add(1, Ordering::SeqCst);
        let prefix = match trade_type {
            TradeType::PayIn => "101",
            TradeType::PayOut => "102",
        };
        format!(
            "{prefix}{}{:08}",
            Utc::now().format("%y%m%d%H%M%S"),
            seq % 100_000_000
        )
    }
}

impl ReferenceRecords for SmilepayzSim {
    type Requests = RequestCounts;
    type Entry = Order;
    type Callbacks = SmilepayzCallbackLog;
    const NOT_IN_LEDGER: &'static str = "orderNo not in the ledger";

    fn requests_about(&self, order_no: &str) -> RequestCounts {
        self.requests_for(order_no)
    }

    fn ledger_entry(&self, order_no: &str) -> Option<Order> {
        self.order(order_no)
    }

    fn callbacks_about(&self, order_no: &str) -> SmilepayzCallbackLog {
        self.callbacks_for(order_no)
    }
    fn money_requests_total(&self) -> usize {
        SmilepayzSim::money_requests_total(self)
    }
}

async fn admin_balance(State(sim): State<SmilepayzSim>) -> Json<Balances> {
    Json(sim.balances())
}

#[derive(Debug, Deserialize)]
struct SetBalance {
    payout_available: i64,
}

async fn admin_set_balance(
    State(sim): State<SmilepayzSim>,
    Json(body): Json<SetBalance>,
) -> Json<Balances> {
    sim.set_payout_balance(body.payout_available);
    Json(sim.balances())
}

async fn admin_scenarios() -> Json<serde_json::Value> {
    let rows: Vec<_> = scenarios::TABLE
        .iter()
        .map(|(selector, behaviour)| serde_json::json!({ "amount_ends_with": selector, "behaviour": behaviour }))
        .collect();
    Json(
        serde_json::json!({ "selector": "amount % 1000 (or payer/receiver name SIM-NNN)", "scenarios": rows }),
    )
}

async fn admin_platform_key(State(sim): State<SmilepayzSim>) -> String {
    sim.platform_public_key_pem()
}
