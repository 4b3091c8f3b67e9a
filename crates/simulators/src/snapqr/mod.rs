//! The SNAP BI QR CPM issuer simulator (`shared/protocols/snap-qr-cpm.md`
//! §8): the B2B token endpoint (verifies our RSA signature with our public
//! key, issues tokens with a configurable lifetime), generate (59), payment
//! (60), query (61), cancel (62) and refund (80) under
//! `{path_prefix}/v1.0/…` (any other path, or a method other than POST,
//! answers `405xx00`), each checked for its mandatory headers (missing
//! `400xx02`, malformed `400xx01`), timestamp window, token, partner id and
//! HMAC signature (over the path as received), X-EXTERNAL-ID uniqueness per
//! WIB day, and its body fields' presence, `S<n>` lengths and amount forms
//! (spec §5); the QRs 59 issued, with their expiry
//! (paying any other QR answers 4046011, ASSUMED §8.6); the one merchant it
//! onboarded (a payment for another answers 4046008); a ledger per
//! partnerReferenceNo, indexed by referenceNo; partial refunds up to the
//! paid amount, each partnerRefundNo once per partner (a re-send answers
//! with the original refund and its time); cancels on the payment's WIB day
//! only (after it 4056201, spec §2.6); notify (79) sent to loket signed with
//! the simulator's issuer key (mode A) or with a token loket grants (mode
//! B, X-PARTNER-ID then the client key loket issued), every attempt
//! stamped, signed and numbered (X-EXTERNAL-ID) afresh; and scenario rules
//! chosen by the amount's last three digits or by `SCENARIO=NNN` in the
//! qrContent (see `SCENARIOS.md` and [`SCENARIOS`]).
//!
//! It reuses only the standard's parts of `loket_snapqr` (signatures, the
//! token grant, notify signing, amounts), never the connector's
//! classification.
//!
//! Introspection (JSON): `GET /_sim/requests/{reference}`,
//! `GET /_sim/ledger/{reference}`, `GET /_sim/callbacks/{reference}`,
//! `GET /_sim/scenarios`, `GET /_sim/issuer-public-key`,
//! `POST /_sim/tokens/expire`; `POST /_sim/qr[?scenario=NNN]` issues a QR as
//! 59 would, without a customer token (for demos: `loketctl qr pay --qr`).
//!
//! Everything kept per reference or per request is bounded: see
//! [`SnapQrSim::remembering`]; expired tokens are dropped as new ones are
//! issued.

mod handlers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use loket_runtime::{Secret, Shutdown};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::common::{
    self, lock, CallbackLog, CallbackSender, IndexedRecentMap, IndexedRecord, OutageSwitch,
    RecentMap, ReferenceRecords, DEFAULT_REMEMBERED_REFERENCES,
};

/// A B2B token request (service 73) as a POST to `url`, ready to send with
/// `client`: how the simulator asks loket's receiver for a notify token in
/// mode B, and how tests ask the simulator or the receiver for one.
pub fn token_request(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    signed: loket_snapqr::b2b_token::SignedRequest,
) -> reqwest::RequestBuilder {
    signed
        .headers
        .into_iter()
        .fold(
            client.post(url).header("Content-Type", "application/json"),
            |request, (name, value)| request.header(name, value),
        )
        .body(signed.body)
}

/// Scenario selectors: the amount's last three digits (or `SCENARIO=NNN` in
/// the qrContent) and what the simulator does.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "000 (any unlisted)",
        "success: 2006000 with referenceNo; ledger 00",
    ),
    (
        "101",
        "pending: 2026000, then notify 00 after notify_delay_ms (ledger 00)",
    ),
    (
        "102",
        "pending with NO notify: 2026000; query 61 shows 03 until pending_resolve_ms, then 00",
    ),
    (
        "103",
        "success, notify 00 delivered BEFORE the HTTP response",
    ),
    ("104", "success, notify 00 delivered twice (duplicate)"),
    ("105", "pending: 2026000, then notify 06 (failed)"),
    (
        "106",
        "pending: 2026000, ledger 00 and notify 00 delivered BEFORE the HTTP response",
    ),
    (
        "107",
        "pending: 2026000, then notify 00 delivered twice (duplicate)",
    ),
    ("108", "pending: 2026000, then notify 05 (canceled)"),
    (
        "109",
        "success, notify 00 after notify_delay_ms; every reply and notify about it in the lenient forms of spec §8.10",
    ),
    (
        "201",
        "timeout after debit: ledger 00, reply only after slow_reply_ms",
    ),
    ("202", "HTTP 500 with an empty body after debit (ledger 00)"),
    (
        "203",
        "HTTP 502 with an HTML body, not processed (query → 4046101)",
    ),
    ("204", "HTTP 504 5046000 after debit (ledger 00)"),
    ("301", "4036000 transaction expired (expired QR)"),
    ("302", "4046011 invalid card/account/customer (used QR)"),
    ("303", "4036014 insufficient funds"),
    ("304", "4036002 exceeds transaction amount limit"),
    ("305", "4036005 do not honor"),
    ("306", "4036003 suspected fraud"),
    ("307", "4046013 invalid amount"),
    ("308", "HTTP 429 4296000 too many requests (not processed)"),
    ("309", "4036019 merchant blacklisted"),
    ("310", "4036001 feature not allowed"),
];

/// The simulator's settings (`[snapqr]` in the `loket-sim` config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapQrSimSettings {
    /// The partner's client id (X-CLIENT-KEY / X-PARTNER-ID).
    pub client_key: String,
    /// The partner's client secret (HMAC key of every transaction call).
    pub client_secret: Secret,
    /// The partner's RSA public key (PEM or path), verifying token requests.
    pub partner_public_key: Secret,
    /// The issuer's RSA private key (PEM or path) signing notifies; empty =
    /// one is generated at start (its public key at `/_sim/issuer-public-key`).
    pub issuer_private_key: Secret,
    /// Expected `Authorization-Customer` bearer on 59; empty = any.
    pub customer_token: Secret,
    pub path_prefix: String,
    pub version: String,
    /// The merchantId the issuer onboarded: a payment (60) naming another is
    /// refused with 4046008 (spec §6); notifies (79) name this one. Empty =
    /// every payment is refused.
    pub merchant_id: String,
    pub token_ttl_secs: u64,
    /// Accepted |now − X-TIMESTAMP| (ASSUMED ±5 min, §8.2).
    pub max_skew_secs: u64,
    /// loket's notify URL, e.g. `http://127.0.0.1:PORT/callback/snapqr`;
    /// no notify is sent when absent.
    pub notify_url: Option<String>,
    /// How notifies are signed (spec §4.3): mode A (`rsa`, the default) with
    /// the issuer key; mode B (`hmac`) with an access token loket grants at
    /// `/{version}/access-token/b2b` on the notify URL's host (asked for with
    /// the issuer key, kept until shortly before it expires) and the secret
    /// loket issued.
    pub notify_mode: loket_snapqr::NotifyMode,
    /// Mode B: the client key loket issued to this issuer (X-CLIENT-KEY).
    pub notify_client_key: String,
    /// Mode B: the secret loket issued to this issuer (the HMAC key).
    pub notify_client_secret: Secret,
    pub notify_delay_ms: u64,
    pub notify_max_attempts: u32,
    pub notify_retry_ms: u64,
    pub notify_timeout_ms: u64,
    /// Scenario 102: how long the payment stays pending.
    pub pending_resolve_ms: u64,
    /// Scenario 201: how long the reply waits.
    pub slow_reply_ms: u64,
    /// Lifetime of a generated QR (59); paying it later answers 4036000.
    pub qr_ttl_secs: u64,
    pub body_limit_bytes: usize,
    pub body_read_timeout_ms: u64,
}

impl Default for SnapQrSimSettings {
    fn default() -> Self {
        SnapQrSimSettings {
            client_key: "loket-snap".into(),
            client_secret: Secret::new("sim-client-secret-qrcpm-0001"),
            partner_public_key: Secret::default(),
            issuer_private_key: Secret::default(),
            customer_token: Secret::default(),
            path_prefix: "/snap".into(),
            version: "v1.0".into(),
            merchant_id: String::new(),
            token_ttl_secs: 900,
            max_skew_secs: 300,
            notify_url: None,
            notify_mode: loket_snapqr::NotifyMode::Rsa,
            notify_client_key: String::new(),
            notify_client_secret: Secret::default(),
            notify_delay_ms: 200,
            notify_max_attempts: 3,
            notify_retry_ms: 500,
            notify_timeout_ms: 5_000,
            pending_resolve_ms: 1_000,
            slow_reply_ms: 60_000,
            qr_ttl_secs: 600,
            body_limit_bytes: 64 * 1024,
            body_read_timeout_ms: 10_000,
        }
    }
}

/// Requests received about one reference (partnerReferenceNo for 59/60,
/// originalPartnerReferenceNo for 61/62, partnerRefundNo for 80), whatever
/// their outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapCounts {
    pub generates: usize,
    pub payments: usize,
    pub queries: usize,
    pub cancels: usize,
    pub refunds: usize,
    pub total: usize,
}

/// One refund in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundEntry {
    pub refund_no: String,
    pub amount: i64,
    /// When it was made: the `refundTime` of every answer about it, the
    /// idempotent re-send's included (it reports this refund, not a new one).
    pub refunded_at: DateTime<Utc>,
}

/// A QR the simulator issued (59, or [`SnapQrSim::issue_qr`]).
#[derive(Debug)]
pub(crate) struct IssuedQr {
    /// Paying it after this answers 4036000.
    pub(crate) expires_at: DateTime<Utc>,
    /// The partnerReferenceNo that paid it (cleared by a cancel): a payment
    /// by another reference answers 4046011.
    pub(crate) paid_by: Option<String>,
}

/// The simulator's record of one payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEntry {
    pub partner_reference_no: String,
    pub reference_no: String,
    /// The X-EXTERNAL-ID of its payment call (60), which a query (61)
    /// answers as `originalExternalId`.
    pub external_id: String,
    pub amount: i64,
    pub qr_content: String,
    /// latestTransactionStatus: 00 success, 01–03 pending, 04 refunded,
    /// 05 cancelled, 06 failed.
    pub status: String,
    pub scenario: u16,
    pub created_at: DateTime<Utc>,
    pub refunded: i64,
    pub refunds: BTreeMap<String, RefundEntry>,
    #[serde(skip)]
    pub(crate) resolve_at: Option<Instant>,
}

/// Kept by partnerReferenceNo, found by the referenceNo the issuer gave it
/// too: a query (61) may name a payment by either (spec §5). A referenceNo
/// is issued once; a payment recorded under a partnerReferenceNo still
/// remembered (one that failed or was cancelled: spec §7 lets the reference
/// be used again, ASSUMED there) replaces the earlier one, referenceNo and
/// all, and is the newest remembered.
impl IndexedRecord for PaymentEntry {
    fn key(&self) -> &str {
        &self.partner_reference_no
    }

    fn secondary_key(&self) -> &str {
        &self.reference_no
    }
}

pub(crate) struct Ledger {
    /// Issued token → its expiry (expired ones are dropped at each issue).
    pub(crate) tokens: HashMap<String, Instant>,
    /// X-EXTERNAL-IDs used, per WIB day.
    pub(crate) external_ids: RecentMap<(NaiveDate, Arc<str>), ()>,
    pub(crate) payments: IndexedRecentMap<PaymentEntry>,
    /// By partnerRefundNo: the partnerReferenceNo of the payment it refunded
    /// (the refund itself is in that payment's `refunds`). Spec §7: a
    /// partnerRefundNo is unique per partner, across payments.
    pub(crate) payment_by_refund_no: RecentMap<Arc<str>, String>,
    /// By qrContent: every QR issued, and who paid it.
    pub(crate) issued_qrs: RecentMap<Arc<str>, IssuedQr>,
    pub(crate) counts: RecentMap<Arc<str>, SnapCounts>,
}

impl Ledger {
    /// The QR `reference` paid with may be paid again, by any reference: its
    /// payment was cancelled or failed (a failed payment never holds a QR).
    pub(crate) fn free_qr(&mut self, qr_content: &str, reference: &str) {
        if let Some(issued) = self.issued_qrs.get_mut(qr_content) {
            if issued.paid_by.as_deref() == Some(reference) {
                issued.paid_by = None;
            }
        }
    }
}

impl Ledger {
    fn new(remembered: usize) -> Self {
        Ledger {
            tokens: HashMap::new(),
            external_ids: RecentMap::new(remembered, "snapqr", "external_ids"),
            payments: IndexedRecentMap::new(
                remembered,
                "snapqr",
                "payments",
                "payment_reference_nos",
            ),
            payment_by_refund_no: RecentMap::new(remembered, "snapqr", "refunds"),
            issued_qrs: RecentMap::new(remembered, "snapqr", "issued_qrs"),
            counts: RecentMap::new(remembered, "snapqr", "requests"),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) settings: SnapQrSimSettings,
    pub(crate) partner_key: Option<rsa::RsaPublicKey>,
    pub(crate) issuer_key: rsa::RsaPrivateKey,
    pub(crate) issuer_public_pem: String,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) token_requests: AtomicU64,
    pub(crate) sequence: AtomicU64,
    pub(crate) notifies: CallbackSender,
    /// Notify mode B: the access token loket granted, and when it expires.
    pub(crate) notify_token: tokio::sync::Mutex<Option<(String, Instant)>>,
    pub(crate) outage: Arc<OutageSwitch>,
    pub(crate) stop: Shutdown,
}

/// The SNAP QR CPM issuer simulator. Cheap to clone.
#[derive(Clone)]
pub struct SnapQrSim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for SnapQrSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapQrSim")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// Why the simulator could not start (never contains a key).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("snapqr.{key}: {problem}")]
    Key { key: &'static str, problem: String },
}

impl SnapQrSim {
    /// [`remembering`](Self::remembering) [`DEFAULT_REMEMBERED_REFERENCES`]
    /// references.
    pub fn new(settings: SnapQrSimSettings) -> Result<Self, SimError> {
        Self::remembering(settings, DEFAULT_REMEMBERED_REFERENCES)
    }

    /// Builds the simulator, remembering the `references` most recent
    /// partnerReferenceNos (payments, request counts, notify logs), issued
    /// qrContents, X-EXTERNAL-IDs and partnerRefundNos: a query about an
    /// older payment answers 4046101 (not found), a payment of an older
    /// qrContent 4046011 (unknown QR), an older X-EXTERNAL-ID may be used
    /// again, and an older partnerRefundNo is known only to the payment it
    /// refunded.
    pub fn remembering(settings: SnapQrSimSettings, references: usize) -> Result<Self, SimError> {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let partner_key = if settings.partner_public_key.is_empty() {
            tracing::warn!(
                "snapqr simulator: partner_public_key not set; every token request is refused"
            );
            None
        } else {
            Some(
                loket_snapqr::sign::load_public_key(settings.partner_public_key.expose()).map_err(
                    |e| SimError::Key {
                        key: "partner_public_key",
                        problem: e.to_string(),
                    },
                )?,
            )
        };
        if settings.merchant_id.trim().is_empty() {
            tracing::warn!(
                "snapqr simulator: merchant_id not set; every payment is refused (4046008)"
            );
        }
        let issuer_key = if settings.issuer_private_key.is_empty() {
            let (private, _) = loket_snapqr::sign::generate_key_pair();
            loket_snapqr::sign::load_private_key(&private).expect("generated key loads")
        } else {
            loket_snapqr::sign::load_private_key(settings.issuer_private_key.expose()).map_err(
                |e| SimError::Key {
                    key: "issuer_private_key",
                    problem: e.to_string(),
                },
            )?
        };
        let issuer_public_pem = rsa::RsaPublicKey::from(&issuer_key)
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI encoding");
        let notifies = CallbackSender::new(
            "snapqr",
            Duration::from_millis(settings.notify_timeout_ms),
            settings.notify_max_attempts,
            Duration::from_millis(settings.notify_retry_ms),
            references,
        );
        Ok(SnapQrSim {
            inner: Arc::new(Inner {
                settings,
                partner_key,
                issuer_key,
                issuer_public_pem,
                ledger: Mutex::new(Ledger::new(references)),
                token_requests: AtomicU64::new(0),
                sequence: AtomicU64::new(1),
                notifies,
                notify_token: tokio::sync::Mutex::new(None),
                outage: Arc::default(),
                stop: Shutdown::new(),
            }),
        })
    }

    pub fn settings(&self) -> &SnapQrSimSettings {
        &self.inner.settings
    }

    /// `{prefix}/{version}/{service}`.
    pub fn path(&self, service: &str) -> String {
        let s = &self.inner.settings;
        format!(
            "{}/{}/{}",
            s.path_prefix.trim_end_matches('/'),
            s.version,
            service
        )
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route(&self.path("access-token/b2b"), post(handlers::token))
            .route(&self.path("qr/qr-cpm-generate"), post(handlers::generate))
            .route(&self.path("qr/qr-cpm-payment"), post(handlers::payment))
            .route(&self.path("qr/qr-cpm-query"), post(handlers::query))
            .route(&self.path("qr/qr-cpm-cancel"), post(handlers::cancel))
            .route(&self.path("qr/qr-cpm-refund"), post(handlers::refund))
            .method_not_allowed_fallback(handlers::not_supported)
            .route_layer(axum::middleware::from_fn_with_state(
                self.inner.outage.clone(),
                common::outage_gate,
            ))
            .merge(common::reference_routes())
            .route("/_sim/scenarios", get(admin_scenarios))
            .route("/_sim/issuer-public-key", get(admin_issuer_key))
            .route("/_sim/tokens/expire", post(admin_expire_tokens))
            .route("/_sim/qr", post(admin_issue_qr))
            .fallback(handlers::not_supported)
            .with_state(self.clone())
            .merge(common::outage_routes(self.inner.outage.clone()))
    }

    /// The outage switch: a provider outage (every API request answered
    /// with an HTTP error page by the front proxy) is started, ended and
    /// shown through it.
    pub fn outage(&self) -> &OutageSwitch {
        &self.inner.outage
    }

    /// Serves [`Self::router`] until `shutdown` fires.
    pub async fn serve(&self, listener: TcpListener, shutdown: Shutdown) {
        common::serve(self.router(), listener, shutdown, self.inner.stop.clone()).await;
    }

    /// The issuer's public key (SPKI PEM): what loket's notify verifier needs.
    pub fn issuer_public_key_pem(&self) -> &str {
        &self.inner.issuer_public_pem
    }

    /// Requests received about `reference`.
    pub fn requests_for(&self, reference: &str) -> SnapCounts {
        lock(&self.inner.ledger)
            .counts
            .get(reference)
            .copied()
            .unwrap_or_default()
    }

    /// Payment (60) requests received for `partner_reference_no`.
    pub fn payments_for(&self, partner_reference_no: &str) -> usize {
        self.requests_for(partner_reference_no).payments
    }

    /// Payment (60) requests received under any remembered
    /// partnerReferenceNo: a test compares it with the payments it made,
    /// which a resend under a new reference would exceed.
    pub fn payments_total(&self) -> usize {
        lock(&self.inner.ledger)
            .counts
            .values()
            .map(|counts| counts.payments)
            .sum()
    }

    /// Token requests received (accepted or not).
    pub fn token_requests(&self) -> u64 {
        self.inner.token_requests.load(Ordering::SeqCst)
    }

    /// Issues a QR exactly as generate (59) does, without a customer token
    /// (tests and demos): a payment (60) may pay it until `qr_ttl_secs` have
    /// passed. `scenario` puts `SCENARIO=NNN` in it, which chooses the
    /// scenario whatever the amount.
    pub fn issue_qr(&self, scenario: Option<u16>) -> String {
        let scenario = scenario.map(|n| n.to_string());
        handlers::issue_qr(self, scenario.as_deref()).0
    }

    /// The access tokens issued and not yet expired (for leak checks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.inner.ledger).tokens.keys().cloned().collect()
    }

    /// Invalidates every issued token (a token "expiring mid-flow").
    pub fn expire_tokens(&self) {
        lock(&self.inner.ledger).tokens.clear();
    }

    pub fn ledger_state(&self, partner_reference_no: &str) -> Option<PaymentEntry> {
        let mut ledger = lock(&self.inner.ledger);
        let entry = ledger.payments.get_mut(partner_reference_no)?;
        handlers::resolve_pending(entry);
        Some(entry.clone())
    }

    /// Notifies sent about `partner_reference_no`.
    pub fn notifies_for(&self, partner_reference_no: &str) -> CallbackLog {
        self.inner.notifies.log_for(partner_reference_no)
    }

    /// Moves a payment's creation time back (in tests: to a previous WIB
    /// day, past its cancel window).
    pub fn age_payment(&self, partner_reference_no: &str, by: chrono::Duration) -> bool {
        let mut ledger = lock(&self.inner.ledger);
        match ledger.payments.get_mut(partner_reference_no) {
            Some(entry) => {
                entry.created_at -= by;
                true
            }
            None => false,
        }
    }
}

impl ReferenceRecords for SnapQrSim {
    type Requests = SnapCounts;
    type Entry = PaymentEntry;
    type Callbacks = CallbackLog;
    const NOT_IN_LEDGER: &'static str = "reference not in the ledger";

    fn requests_about(&self, reference: &str) -> SnapCounts {
        self.requests_for(reference)
    }

    fn ledger_entry(&self, reference: &str) -> Option<PaymentEntry> {
        self.ledger_state(reference)
    }

    fn callbacks_about(&self, reference: &str) -> CallbackLog {
        self.notifies_for(reference)
    }
    /// Payments, cancels and refunds.
    fn money_requests_total(&self) -> usize {
        lock(&self.inner.ledger)
            .counts
            .values()
            .map(|counts| counts.payments + counts.cancels + counts.refunds)
            .sum()
    }
}

async fn admin_scenarios() -> Json<serde_json::Value> {
    let rows: Vec<_> = SCENARIOS
        .iter()
        .map(|(selector, behaviour)| serde_json::json!({ "selector": selector, "behaviour": behaviour }))
        .collect();
    Json(
        serde_json::json!({ "select_by": "amount % 1000, or SCENARIO=NNN in qrContent", "scenarios": rows }),
    )
}

async fn admin_issuer_key(State(sim): State<SnapQrSim>) -> String {
    sim.issuer_public_key_pem().to_string()
}

#[derive(Deserialize)]
struct IssueQrQuery {
    scenario: Option<u16>,
}

/// `POST /_sim/qr[?scenario=NNN]`: a QR a payment may pay, as 59 issues it.
async fn admin_issue_qr(
    State(sim): State<SnapQrSim>,
    Query(query): Query<IssueQrQuery>,
) -> Response {
    if query.scenario.is_some_and(|n| n > 999) {
        return (StatusCode::BAD_REQUEST, "scenario: three digits at most\n").into_response();
    }
    let qr = sim.issue_qr(query.scenario);
    Json(serde_json::json!({ "qrContent": qr, "validForSeconds": sim.inner.settings.qr_ttl_secs }))
        .into_response()
}

async fn admin_expire_tokens(State(sim): State<SnapQrSim>) -> StatusCode {
    sim.expire_tokens();
    StatusCode::NO_CONTENT
}
