//! The SNAP QR CPM connector: obtains the B2B token ([`crate::token`]),
//! signs and sends one service call per operation with every SNAP header
//! (spec §3), and classifies the reply through the code catalogue.
//!
//! Rules this module enforces:
//! - our reference is on every call: `partnerReferenceNo` (payment 60, the
//!   query 61 of a payment), `partnerRefundNo` (refund 80), and the original
//!   payment's `originalPartnerReferenceNo` on cancels and refunds;
//! - a timeout, a reset, a 5xx, a garbled or empty body, a success code on an
//!   HTTP error, or a reply about another reference is `unknown` (rule 1);
//!   `409xx00` (our X-EXTERNAL-ID reused) is `unknown` and resolved by query,
//!   never by a resend;
//! - `401xx01`/`401xx03` (B2B token invalid / not found) refresh the token
//!   once and resend the same body with a NEW X-EXTERNAL-ID: the issuer did
//!   not process a call it refused to authenticate (spec §6 "retry-safe: yes,
//!   refresh once");
//! - stored exchanges carry the headers and the body with `Authorization`,
//!   `Authorization-Customer` and `X-SIGNATURE` replaced by `***`, then pass
//!   through a [`Masker`] holding the client secret, the tokens and the
//!   signature (rule 7); a token or signature the issuer echoes is masked in
//!   its reply before the reply is read, so no text the report takes from it
//!   (a message stored with the transaction) carries one either.
//!
//! Status checks (**ASSUMED** where the standard is silent):
//! - payment: query 61 by `originalPartnerReferenceNo`; `4046101` or status
//!   `07` → `not_found` (the worker may then send the payment);
//! - cancel: query 61 of the original payment; `05` → the cancel succeeded,
//!   `00`/`04`/`07`/not found → the cancel was not applied (`not_found`),
//!   `01`–`03` → pending, `06` → failed (the payment failed; nothing to cancel);
//! - refund: SNAP has no refund query, so the refund is re-sent with the same
//!   `partnerRefundNo` and amount. §7 makes that idempotent (ASSUMED): a
//!   refund already done answers `409xx01` (success). Not trusting that
//!   alone, the worker lets such a check through at most once per
//!   `refund_resend_interval_ms` (5 min) after the journal's last send
//!   ([`Connector::status_check_resends`]), so checks on the reconciler's
//!   schedule do not become a refund every few seconds.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use loket_connector::http::{self, HttpClient, Transport};
use loket_connector::json::Written;
use loket_connector::mask::{Masker, MASK};
use loket_connector::report::{clip, push_detail};
use loket_connector::{Command, Connector, ConnectorError, Report};
use loket_protocol::catalogue::{self, CodeOperation, Explanation};
use loket_protocol::conversions::timestamp;
use loket_protocol::pb::{self, bus};
use loket_protocol::{Money, Operation, Outcome, Provider};
use rsa::RsaPrivateKey;

use crate::settings::{SnapQrSettings, TimestampFormat};
use crate::sign::{self, KeyError};
use crate::token::{AccessToken, FetchedToken, TokenCache};
use crate::wire::{self, Body, ResponseCode};

/// The SNAP services this connector calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Token,
    Generate,
    Payment,
    Query,
    Cancel,
    Refund,
}

impl Service {
    pub fn path(self) -> &'static str {
        match self {
            Service::Token => "access-token/b2b",
            Service::Generate => "qr/qr-cpm-generate",
            Service::Payment => "qr/qr-cpm-payment",
            Service::Query => "qr/qr-cpm-query",
            Service::Cancel => "qr/qr-cpm-cancel",
            Service::Refund => "qr/qr-cpm-refund",
        }
    }

    /// The 2-digit service code inside a `responseCode`.
    pub fn code(self) -> u8 {
        match self {
            Service::Token => 73,
            Service::Generate => 59,
            Service::Payment => 60,
            Service::Query => 61,
            Service::Cancel => 62,
            Service::Refund => 80,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Token => "token",
            Service::Generate => "qr_generate",
            Service::Payment => "qr_payment",
            Service::Query => "qr_query",
            Service::Cancel => "qr_cancel",
            Service::Refund => "qr_refund",
        }
    }

    pub fn code_operation(self) -> CodeOperation {
        match self {
            Service::Token => CodeOperation::Token,
            Service::Generate => CodeOperation::QrGenerate,
            Service::Payment => CodeOperation::QrPayment,
            Service::Query => CodeOperation::QrQuery,
            Service::Cancel => CodeOperation::QrCancel,
            Service::Refund => CodeOperation::QrRefund,
        }
    }
}

/// Numeric X-EXTERNAL-ID values, unique per partner per day: WIB time to the
/// second (14 digits) + a random instance number (6) + a counter (8) = 28
/// digits (≤ 36). Two replicas collide only if they draw the same instance
/// number and the same counter value in the same second.
#[derive(Debug)]
pub struct ExternalIds {
    instance: u32,
    counter: AtomicU64,
}

impl Default for ExternalIds {
    fn default() -> Self {
        use rand::Rng as _;
        let mut rng = rand::thread_rng();
        ExternalIds {
            instance: rng.gen_range(0..1_000_000),
            counter: AtomicU64::new(rng.gen_range(0..100_000_000)),
        }
    }
}

impl ExternalIds {
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % 100_000_000;
        format!(
            "{}{:06}{:08}",
            Utc::now().with_timezone(&wib()).format("%Y%m%d%H%M%S"),
            self.instance,
            n
        )
    }
}

pub use loket_protocol::wib;

/// `X-TIMESTAMP` now, in the configured format.
pub fn format_timestamp(format: TimestampFormat, at: chrono::DateTime<Utc>) -> String {
    match format {
        TimestampFormat::Offset => loket_protocol::wib::timestamp(at),
        TimestampFormat::OffsetMillis => at
            .with_timezone(&wib())
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        TimestampFormat::Utc => at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}

/// Why the connector could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("snapqr.private_key: {0}")]
    Key(#[from] KeyError),
}

/// Why no B2B token could be obtained (nothing else was sent).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("token request not sent: {0}")]
    NotSent(String),
    #[error("token request may have been processed: {0}")]
    MaybeSent(String),
    #[error("token refused with {code}: {message}")]
    Refused { code: String, message: String },
    #[error("token reply unreadable: {0}")]
    BadReply(String),
}

/// One service call: the final transport result and every exchange made
/// (token fetches and a 401 retry included).
struct Call {
    transport: Transport,
    exchanges: Vec<bus::Exchange>,
}

/// A reply whose `responseCode` was read.
#[derive(Debug)]
struct Answer {
    http: u16,
    body: Body,
    code: String,
    explanation: Explanation,
}

pub struct SnapQrConnector {
    settings: SnapQrSettings,
    http: HttpClient,
    private_key: RsaPrivateKey,
    tokens: TokenCache,
    external_ids: ExternalIds,
    masker: Masker,
}

impl fmt::Debug for SnapQrConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapQrConnector")
            .field("base_url", &self.settings.base_url)
            .field("client_key", &self.settings.client_key)
            .finish_non_exhaustive()
    }
}

impl SnapQrConnector {
    pub fn new(settings: SnapQrSettings) -> Result<Self, BuildError> {
        let private_key = settings.load_private_key()?;
        let http = HttpClient::new(settings.timeout(), settings.connect_timeout());
        let masker = Masker::new([
            settings.client_secret.expose().to_string(),
            settings.demo_customer_token.expose().to_string(),
        ]);
        Ok(SnapQrConnector {
            tokens: TokenCache::new(Duration::from_secs(settings.token_refresh_margin_secs)),
            settings,
            http,
            private_key,
            external_ids: ExternalIds::default(),
            masker,
        })
    }

    pub fn settings(&self) -> &SnapQrSettings {
        &self.settings
    }

    /// B2B tokens fetched since start (for tests and metrics).
    pub async fn tokens_fetched(&self) -> u64 {
        self.tokens.generation().await
    }

    fn now_timestamp(&self) -> String {
        format_timestamp(self.settings.timestamp_format, Utc::now())
    }

    fn exchange(
        &self,
        service: Service,
        url: &str,
        request: String,
        secrets: &[&str],
    ) -> bus::Exchange {
        let extra = Masker::new(secrets.iter().map(|s| s.to_string()));
        bus::Exchange {
            operation: service.name().to_string(),
            url: url.to_string(),
            request: http::stored(extra.mask(&self.masker.mask(&request))),
            response: String::new(),
            http_status: 0,
            duration_ms: 0,
            error: String::new(),
            at: Some(timestamp(Utc::now())),
        }
    }

    /// POSTs and records the reply (masked) on `exchange`.
    async fn post(
        &self,
        service: Service,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        mut exchange: bus::Exchange,
        secrets: &[&str],
    ) -> (Transport, bus::Exchange) {
        let extra = Masker::new(secrets.iter().map(|s| s.to_string()));
        let mask = |text: &str| extra.mask(&self.masker.mask(text));
        let started = Instant::now();
        let result = self.http.post(url, "application/json", headers, body).await;
        let elapsed = started.elapsed();
        exchange.duration_ms = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
        let transport = http::without_echoes(http::record(&mut exchange, result, mask), &extra);
        metrics::counter!(
            crate::metrics::REQUESTS,
            "service" => service.name(),
            "transport" => transport.label()
        )
        .increment(1);
        metrics::histogram!(crate::metrics::REQUEST_SECONDS, "service" => service.name())
            .record(elapsed.as_secs_f64());
        (transport, exchange)
    }

    /// Service 73: a fresh B2B token.
    async fn fetch_token(
        &self,
        recorded: &Mutex<Vec<bus::Exchange>>,
    ) -> Result<FetchedToken, TokenError> {
        let path = self.settings.path(Service::Token.path());
        let url = self.settings.url(&path);
        let stamp = self.now_timestamp();
        let crate::b2b_token::SignedRequest {
            headers,
            body,
            signature,
        } = crate::b2b_token::signed_request(&self.private_key, &self.settings.client_key, &stamp);
        let shown = format!(
            "X-TIMESTAMP: {stamp}\nX-CLIENT-KEY: {}\nX-SIGNATURE: {MASK}\n\n{}",
            self.settings.client_key,
            String::from_utf8_lossy(&body)
        );
        let exchange = self.exchange(Service::Token, &url, shown, &[&signature]);
        let (transport, mut exchange) = self
            .post(
                Service::Token,
                &url,
                &headers,
                body,
                exchange,
                &[&signature],
            )
            .await;
        if let Transport::Reply(reply) = &transport {
            exchange.response = without_token(&exchange.response, &reply.body);
        }
        let result = read_token(transport);
        metrics::counter!(crate::metrics::TOKEN_FETCHES, "result" => if result.is_ok() { "ok" } else { "error" }).increment(1);
        recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(exchange);
        result
    }

    async fn token(&self, exchanges: &mut Vec<bus::Exchange>) -> Result<AccessToken, TokenError> {
        let recorded = Mutex::new(Vec::new());
        let result = self.tokens.get(|| self.fetch_token(&recorded)).await;
        exchanges.extend(recorded.into_inner().unwrap_or_else(|e| e.into_inner()));
        result
    }

    /// One signed service call; refreshes the token once on 401xx01/03.
    /// With `leave_by`, the request is not sent after that instant (a token
    /// wait held it up): it would still be on its way when the send journal
    /// no longer says so.
    async fn call(
        &self,
        service: Service,
        body: Vec<u8>,
        customer: bool,
        leave_by: Option<Instant>,
    ) -> Call {
        let mut exchanges = Vec::new();
        let mut token = match self.token(&mut exchanges).await {
            Ok(token) => token,
            Err(error) => {
                return Call {
                    transport: Transport::NotSent(format!("no B2B access token: {error}")),
                    exchanges,
                }
            }
        };
        let mut refreshed = false;
        loop {
            if leave_by.is_some_and(|by| Instant::now() > by) {
                tracing::warn!(
                    service = service.name(),
                    "request held up past its send window: not sent"
                );
                return Call {
                    transport: Transport::NotSent(format!(
                        "not sent: held up (a token wait, an earlier step) until it could no longer be over within {} ms of its send journal entry, the longest a send is taken to be on its way",
                        self.settings.longest_send().as_millis()
                    )),
                    exchanges,
                };
            }
            let (transport, exchange) = self.send_signed(service, &body, &token, customer).await;
            exchanges.push(exchange);
            let (code, http_status) = match &transport {
                Transport::Reply(reply) => (
                    Body::parse(&reply.body)
                        .ok()
                        .and_then(|b| b.str("responseCode"))
                        .and_then(|c| ResponseCode::parse(&c)),
                    reply.status,
                ),
                _ => (None, 0),
            };
            let rejected_token = code.is_some_and(|c| c.is(401, 1) || c.is(401, 3));
            // A 401 with a SNAP code of another case (`4016000`, a
            // signature or clock refused; `40159xx`, the customer's token)
            // says nothing against the B2B token.
            let unexplained_401 = http_status == 401 && code.is_none();
            let resend_with_new_token = rejected_token && http_status == 401 && !refreshed;
            if !resend_with_new_token && (rejected_token || unexplained_401) {
                // A refusal of the token this request is not sent again on:
                // the body's code under another HTTP status (a reply that
                // contradicts itself), the new token refused too, or an HTTP
                // 401 whose body is no SNAP reply (a gateway's page). The
                // reply is read as it stands, but the token is not used
                // again, or every call would meet the same refusal until the
                // token expired.
                tracing::warn!(
                    service = service.name(),
                    http_status,
                    refreshed,
                    "B2B token refused and this request not sent again; the next call gets a new token"
                );
                metrics::counter!(crate::metrics::TOKEN_REJECTED).increment(1);
                self.tokens.invalidate(&token).await;
            } else if resend_with_new_token {
                refreshed = true;
                tracing::info!(
                    service = service.name(),
                    "B2B token rejected; refreshing once"
                );
                metrics::counter!(crate::metrics::TOKEN_REJECTED).increment(1);
                self.tokens.invalidate(&token).await;
                token = match self.token(&mut exchanges).await {
                    Ok(token) => token,
                    Err(error) => {
                        // The refused call was not processed; nothing more was sent.
                        return Call {
                            transport: Transport::NotSent(format!("no B2B access token: {error}")),
                            exchanges,
                        };
                    }
                };
                continue;
            }
            return Call {
                transport,
                exchanges,
            };
        }
    }

    async fn send_signed(
        &self,
        service: Service,
        body: &[u8],
        token: &AccessToken,
        customer: bool,
    ) -> (Transport, bus::Exchange) {
        let path = self.settings.path(service.path());
        let url = self.settings.url(&path);
        let stamp = self.now_timestamp();
        let external_id = self.external_ids.next();
        let signature = sign::hmac_signature(
            self.settings.client_secret.expose(),
            &sign::transaction_string_to_sign("POST", &path, &token.value, body, &stamp),
        );
        let mut headers = vec![
            ("Authorization", format!("Bearer {}", token.value)),
            ("X-TIMESTAMP", stamp.clone()),
            ("X-SIGNATURE", signature.clone()),
            ("X-PARTNER-ID", self.settings.client_key.clone()),
            ("X-EXTERNAL-ID", external_id.clone()),
            ("CHANNEL-ID", self.settings.channel_id.clone()),
        ];
        let mut shown = format!(
            "Authorization: Bearer {MASK}\nX-TIMESTAMP: {stamp}\nX-SIGNATURE: {MASK}\nX-PARTNER-ID: {}\nX-EXTERNAL-ID: {external_id}\nCHANNEL-ID: {}\n",
            self.settings.client_key, self.settings.channel_id
        );
        if customer {
            headers.push((
                "Authorization-Customer",
                format!("Bearer {}", self.settings.demo_customer_token.expose()),
            ));
            shown.push_str(&format!("Authorization-Customer: Bearer {MASK}\n"));
        }
        shown.push('\n');
        shown.push_str(&String::from_utf8_lossy(body));
        let secrets = [token.value.as_str(), signature.as_str()];
        let exchange = self.exchange(service, &url, shown, &secrets);
        self.post(service, &url, &headers, body.to_vec(), exchange, &secrets)
            .await
    }

    /// The last instant a money-moving request of `command` may leave: one
    /// timeout before its send journal entry stops saying it may be on its
    /// way ([`SnapQrSettings::longest_send`] after it was recorded).
    fn leave_by(&self, command: &Command) -> Option<Instant> {
        command
            .journal_recorded
            .map(|recorded| recorded + self.settings.longest_send() - self.settings.timeout())
    }

    fn optional(text: &str) -> Option<String> {
        wire::non_empty(text)
    }

    fn sub_merchant(&self) -> Option<String> {
        Self::optional(&self.settings.sub_merchant_id)
    }

    async fn payment(&self, command: &Command) -> Report {
        let Some(amount) = command.amount else {
            return Report::not_built(command.operation, "amount: required for a QR payment");
        };
        let mut exchanges = Vec::new();
        let mut qr_content = command.detail("qr_content").trim().to_string();
        if qr_content.is_empty() {
            match self.generate(command, &mut exchanges).await {
                Ok(qr) => qr_content = qr,
                Err(mut report) => {
                    report.exchanges.splice(0..0, exchanges);
                    return report;
                }
            }
        }
        // Counted from the transaction's creation, not from this send: a copy
        // sent again after "no record" then carries the same expiryTime as
        // the first (an issuer that took the first reads it as a duplicate,
        // not an inconsistent request), and the expiry the reconciler keeps
        // is the one every copy was sent with. A request held up past that
        // (a backlog, a lost command re-dispatched) still leaves the payer
        // up to a minute: a delay must not turn into an expired payment.
        let validity = chrono::Duration::seconds(self.settings.payment_expiry_secs as i64);
        let expiry = (command.transaction_created_at.unwrap_or_else(Utc::now) + validity)
            .max(Utc::now() + validity.min(chrono::Duration::seconds(60)));
        let request = wire::PaymentRequest {
            partner_reference_no: command.provider_reference.clone(),
            qr_content: qr_content.clone(),
            amount: amount.into(),
            merchant_id: self.settings.merchant_id.clone(),
            sub_merchant_id: self.sub_merchant(),
            expiry_time: format_timestamp(TimestampFormat::Offset, expiry),
        };
        let call = self
            .call(
                Service::Payment,
                wire::to_bytes(&request),
                false,
                self.leave_by(command),
            )
            .await;
        exchanges.extend(call.exchanges);
        let mut report = match read_answer(Service::Payment, call.transport) {
            Err(report) => report,
            Ok(answer) => {
                if let Some(why) = foreign(
                    &answer.body,
                    "partnerReferenceNo",
                    &command.provider_reference,
                ) {
                    Report::unknown(why)
                } else {
                    let mut report = report_of(&answer);
                    report.provider_trace = answer.body.str("referenceNo");
                    let duplicate = ResponseCode::parse(&answer.code).is_some_and(|c| c.is(409, 1));
                    if duplicate && report.outcome == Outcome::Success {
                        // 409xx01: an earlier attempt succeeded; its referenceNo comes from 61.
                        let mut query = self.query(&command.provider_reference, "").await;
                        exchanges.append(&mut query.exchanges);
                        push_detail(
                            &mut report.detail,
                            "duplicate partnerReferenceNo: an earlier attempt succeeded",
                        );
                        if query.provider_trace.is_some() {
                            report.provider_trace = query.provider_trace;
                        }
                        if matches!(query.outcome, Outcome::Failed | Outcome::Pending)
                            || query.not_found
                        {
                            // The query contradicts "it succeeded": neither
                            // answer decides (rule 4), a person does.
                            let read = if query.not_found {
                                "no record"
                            } else {
                                query.outcome.as_str()
                            };
                            let why = format!(
                                "{} says an earlier attempt succeeded, but the query reads {} ({read})",
                                answer.code,
                                query.provider_code.as_deref().unwrap_or("no status"),
                            );
                            report.outcome = Outcome::Unknown;
                            push_detail(
                                &mut report.detail,
                                &format!("{why}: not taken as success"),
                            );
                            report.contradiction = Some(why);
                        }
                    } else {
                        doubt_bare_success(&mut report, &answer, &["referenceNo"]);
                    }
                    report
                }
            }
        };
        // The expiry goes with the instructions: "no record" of this payment
        // is final only after it (spec §2 step 4; the reconciler's plan).
        report.payment = Some(pb::PaymentInstructions {
            method: "QRCPM".into(),
            qr_string: qr_content,
            expires_at: Some(timestamp(expiry)),
            ..Default::default()
        });
        report.exchanges.splice(0..0, exchanges);
        report
    }

    /// Service 59 for a payment command without `qr_content`. Any failure
    /// means the payment was never sent: a definite failure.
    async fn generate(
        &self,
        command: &Command,
        exchanges: &mut Vec<bus::Exchange>,
    ) -> Result<String, Report> {
        if self.settings.demo_customer_token.is_empty() {
            return Err(Report::not_built(
                command.operation,
                "qr_content is empty and snapqr.demo_customer_token is not configured; nothing was sent",
            ));
        }
        let request = wire::GenerateRequest {
            partner_reference_no: command.provider_reference.clone(),
            merchant_id: Self::optional(&self.settings.merchant_id),
            sub_merchant_id: self.sub_merchant(),
            // S25 (spec §5): always the 25-character offset form, whatever
            // form X-TIMESTAMP takes.
            partner_trx_date: format_timestamp(TimestampFormat::Offset, Utc::now()),
        };
        let call = self
            .call(Service::Generate, wire::to_bytes(&request), true, None)
            .await;
        exchanges.extend(call.exchanges);
        // The payment never left: whatever generation answered, nothing
        // that moves money reached the issuer.
        let failed = |mut report: Report, why: &str| {
            report.outcome = Outcome::Failed;
            report.never_left = true;
            push_detail(&mut report.detail, why);
            report
        };
        match read_answer(Service::Generate, call.transport) {
            Err(report) => Err(failed(
                report,
                "QR generation (59) did not succeed; no payment was sent",
            )),
            Ok(answer) => {
                let qr = answer.body.str("qrContent");
                match (answer.explanation.outcome, qr) {
                    (Outcome::Success, Some(qr)) => Ok(qr),
                    _ => Err(failed(
                        report_of(&answer),
                        "QR generation (59) did not return a qrContent; no payment was sent",
                    )),
                }
            }
        }
    }

    async fn cancel(&self, command: &Command) -> Report {
        if command.original_reference.trim().is_empty() {
            return Report::not_built(
                command.operation,
                "original_reference: required for a QR cancel",
            );
        }
        let request = wire::CancelRequest {
            original_partner_reference_no: command.original_reference.clone(),
            original_reference_no: Self::optional(&command.original_provider_trace),
            merchant_id: self.settings.merchant_id.clone(),
            sub_merchant_id: self.sub_merchant(),
            amount: command.amount.map(Into::into),
            reason: Self::optional(command.detail("reason")),
        };
        let call = self
            .call(
                Service::Cancel,
                wire::to_bytes(&request),
                false,
                self.leave_by(command),
            )
            .await;
        let mut report = match read_answer(Service::Cancel, call.transport) {
            Err(report) => report,
            Ok(answer) => cancel_report(&answer, &command.original_reference),
        };
        report.exchanges.splice(0..0, call.exchanges);
        report
    }

    async fn refund(&self, command: &Command) -> Report {
        if command.original_reference.trim().is_empty() {
            return Report::not_built(
                command.operation,
                "original_reference: required for a QR refund",
            );
        }
        let Some(amount) = command.amount else {
            return Report::not_built(command.operation, "amount: required for a QR refund");
        };
        let request = wire::RefundRequest {
            original_partner_reference_no: command.original_reference.clone(),
            original_reference_no: Self::optional(&command.original_provider_trace),
            merchant_id: self.settings.merchant_id.clone(),
            partner_refund_no: command.provider_reference.clone(),
            refund_amount: amount.into(),
            reason: Self::optional(command.detail("reason")),
        };
        let call = self
            .call(
                Service::Refund,
                wire::to_bytes(&request),
                false,
                self.leave_by(command),
            )
            .await;
        let mut report = match read_answer(Service::Refund, call.transport) {
            Err(report) => report,
            Ok(answer) => {
                match foreign(&answer.body, "partnerRefundNo", &command.provider_reference) {
                    Some(why) => Report::unknown(why),
                    None => {
                        let mut report = report_of(&answer);
                        report.provider_trace = answer.body.str("refundNo");
                        match answer.body.money("refundAmount") {
                            Ok(Some(refunded)) => {
                                if refunded != amount {
                                    push_detail(
                                    &mut report.detail,
                                    &format!("refundAmount {refunded} differs from the {amount} asked"),
                                );
                                }
                                report.provider_amount = Some(refunded);
                            }
                            Ok(None) => {}
                            Err(error) => report.amount_unreadable("refundAmount", error),
                        }
                        doubt_bare_success(&mut report, &answer, &["refundNo", "refundTime"]);
                        doubt_a_duplicate(&mut report, &answer, command.first_send, amount);
                        report
                    }
                }
            }
        };
        report.exchanges.splice(0..0, call.exchanges);
        report
    }

    /// Query 61 about `partner_reference` (a payment); the report's code is
    /// the `latestTransactionStatus`, its outcome that status's meaning.
    pub async fn query(&self, partner_reference: &str, reference_no: &str) -> Report {
        let request = wire::QueryRequest {
            original_partner_reference_no: partner_reference.to_string(),
            original_reference_no: Self::optional(reference_no),
            merchant_id: self.settings.merchant_id.clone(),
            sub_merchant_id: self.sub_merchant(),
        };
        let call = self
            .call(Service::Query, wire::to_bytes(&request), false, None)
            .await;
        let mut report = match read_answer(Service::Query, call.transport) {
            Err(mut report) => {
                // A query that was not sent found nothing out.
                report.outcome = Outcome::Unknown;
                report
            }
            Ok(answer) => classify_query(&answer, partner_reference),
        };
        report.exchanges.splice(0..0, call.exchanges);
        report
    }

    async fn status(&self, command: &Command) -> Report {
        match command.original_operation {
            Operation::QrCancel => {
                let mut report = self
                    .query(
                        &command.original_reference,
                        &command.original_provider_trace,
                    )
                    .await;
                cancel_from_query(&mut report);
                report
            }
            Operation::QrRefund => {
                let mut report = self.refund(command).await;
                push_detail(
                    &mut report.detail,
                    "refund status by idempotent re-send of the same partnerRefundNo (ASSUMED, spec §7)",
                );
                distrust_refusal_of_resent_refund(&mut report);
                report
            }
            _ => {
                self.query(&command.provider_reference, &command.provider_trace)
                    .await
            }
        }
    }

    async fn run(&self, command: &Command) -> Report {
        let mut report = match command.operation {
            Operation::QrPayment => self.payment(command).await,
            Operation::QrCancel => self.cancel(command).await,
            Operation::QrRefund => self.refund(command).await,
            Operation::StatusCheck => self.status(command).await,
            other => Report::not_built(other, format!("{other} is not a SNAP QR CPM operation")),
        };
        // What the replies filled in is masked as the exchanges are.
        report.mask_texts(|text| self.masker.mask(text));
        metrics::counter!(crate::metrics::OUTCOMES, "operation" => command.operation.as_str(), "outcome" => report.outcome.as_str())
            .increment(1);
        tracing::info!(
            operation = %command.operation,
            reference = %command.provider_reference,
            outcome = %report.outcome,
            code = report.provider_code.as_deref().unwrap_or(""),
            not_found = report.not_found,
            "snapqr exchange classified"
        );
        report
    }
}

impl Connector for SnapQrConnector {
    fn provider(&self) -> Provider {
        Provider::SnapQr
    }

    fn longest_send(&self) -> Duration {
        self.settings.longest_send()
    }

    async fn execute(&self, command: &Command) -> Report {
        self.run(command).await
    }

    async fn check_status(&self, command: &Command) -> Report {
        let command = if command.operation == Operation::StatusCheck {
            std::borrow::Cow::Borrowed(command)
        } else {
            std::borrow::Cow::Owned(command.as_status_check())
        };
        self.run(&command).await
    }

    /// A refund's status check sends the refund again (no refund query).
    fn status_check_resends(&self, command: &Command) -> Option<Duration> {
        (command.original_operation == Operation::QrRefund)
            .then(|| Duration::from_millis(self.settings.refund_resend_interval_ms))
    }

    async fn balance(&self) -> Result<Money, ConnectorError> {
        Err(ConnectorError::Unavailable(
            "SNAP QR CPM has no balance service".into(),
        ))
    }
}

/// A 2xx success carries the fields spec §5 makes mandatory on success: a
/// payment's `referenceNo` (§3: it succeeded on 2006000 *with* it), a
/// cancel's `cancelTime`, a refund's `refundNo` and `refundTime`. Without
/// them the code alone is no proof that the money moved: unknown, and the
/// status check (a query, or the refund sent again) will tell. A 409xx01
/// duplicate is not judged here: it confirms an earlier answer.
fn doubt_bare_success(report: &mut Report, answer: &Answer, required: &[&str]) {
    if report.outcome != Outcome::Success || !(200..300).contains(&answer.http) {
        return;
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|field| answer.body.str(field).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    report.outcome = Outcome::Unknown;
    push_detail(
        &mut report.detail,
        &format!(
            "success code without {}: not proof; a status check will tell",
            missing.join(" and ")
        ),
    );
}

/// `stored` (the token reply as stored) with every `accessToken` the reply
/// `body` carries masked, as sent and as JSON may escape it (`\/`): a token
/// is a secret whether or not the rest of its reply is usable, a reply that
/// writes the key twice (which [`Body::parse`] refuses) included.
fn without_token(stored: &str, body: &[u8]) -> String {
    let Ok(Written::Object(members)) = loket_connector::json::read(body, usize::MAX) else {
        return stored.to_string();
    };
    let tokens: Vec<String> = members
        .into_iter()
        .filter(|(key, _)| key.trim().eq_ignore_ascii_case("accessToken"))
        .filter_map(|(_, value)| match value {
            Written::Text(token) => Some(token.trim().to_string()),
            Written::Number(number) => Some(number.to_string()),
            _ => None,
        })
        .filter(|token| !token.is_empty())
        .collect();
    if tokens.is_empty() {
        stored.to_string()
    } else {
        Masker::new(tokens).mask(stored)
    }
}

/// The longest a B2B token is believed to live (spec §2.1: `"900"`). A
/// longer `expiresIn` (an issuer's bug, or u64::MAX) is capped rather than
/// refused: the token itself is good, refusing it would stop every call, and
/// a token the issuer drops sooner is answered `401xx01` and refreshed once
/// ([`SnapQrConnector::call`]).
const LONGEST_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

fn read_token(transport: Transport) -> Result<FetchedToken, TokenError> {
    let reply = match transport {
        Transport::Reply(reply) => reply,
        Transport::NotSent(error) => return Err(TokenError::NotSent(error)),
        Transport::MaybeSent(error) => return Err(TokenError::MaybeSent(error)),
    };
    let body = Body::parse(&reply.body)
        .map_err(|e| TokenError::BadReply(format!("HTTP {}: {e}", reply.status)))?;
    let code = body.str("responseCode").unwrap_or_default();
    let ok = ResponseCode::parse(&code).is_some_and(|c| c.http == 200) && reply.status == 200;
    if !ok {
        return Err(TokenError::Refused {
            code: clip(&code, 16).to_string(),
            message: clip(&body.str("responseMessage").unwrap_or_default(), 150).to_string(),
        });
    }
    let value = body
        .str("accessToken")
        .ok_or_else(|| TokenError::BadReply("accessToken missing".into()))?;
    let expires_in = body
        .str("expiresIn")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| TokenError::BadReply("expiresIn missing or not a number".into()))?;
    let expires_in = Duration::from_secs(expires_in);
    if expires_in > LONGEST_TOKEN_LIFETIME {
        tracing::warn!(
            expires_in_secs = expires_in.as_secs(),
            capped_at_secs = LONGEST_TOKEN_LIFETIME.as_secs(),
            "B2B token lifetime beyond belief: capped"
        );
    }
    Ok(FetchedToken {
        value,
        expires_in: expires_in.min(LONGEST_TOKEN_LIFETIME),
    })
}

/// Reads the `responseCode` of a reply and explains it, or answers the
/// report for a reply we cannot read (unknown).
// The error is the finished report (built once, rarely): boxing buys nothing.
#[allow(clippy::result_large_err)]
fn read_answer(service: Service, transport: Transport) -> Result<Answer, Report> {
    let reply = match transport {
        Transport::Reply(reply) => reply,
        Transport::NotSent(error) => return Err(Report::not_sent(error)),
        Transport::MaybeSent(error) => return Err(Report::unknown(error)),
    };
    let body = match Body::parse(&reply.body) {
        Ok(body) => body,
        Err(error) => {
            return Err(Report::unknown(format!(
                "HTTP {} with an unreadable body ({error})",
                reply.status
            )))
        }
    };
    let Some(code) = body.str("responseCode") else {
        return Err(Report::unknown(format!(
            "HTTP {}: no responseCode",
            reply.status
        )));
    };
    let Some(parsed) = ResponseCode::parse(&code) else {
        return Err(Report::unknown(format!(
            "HTTP {}: responseCode {:?} is not 7 digits",
            reply.status,
            clip(&code, 16)
        )));
    };
    let explanation =
        match catalogue::explain(Provider::SnapQr, &code, Some(service.code_operation())) {
            Ok(explanation) => explanation,
            Err(error) => return Err(Report::unknown(format!("responseCode {code}: {error}"))),
        };
    let answer = Answer {
        http: reply.status,
        body,
        code,
        explanation,
    };
    let token_refused = parsed.service == Service::Token.code() && parsed.http == 401;
    if parsed.service != service.code() && !token_refused {
        // A code of another service is not an answer to this call; a token
        // code answers one only to say the token was refused (401).
        return Err(not_an_answer(
            &answer,
            &format!(
                "responseCode of service {:02}, not {:02}",
                parsed.service,
                service.code()
            ),
        ));
    }
    let http_ok = (200..300).contains(&answer.http);
    if answer.explanation.outcome == Outcome::Success
        && (!http_ok || parsed.http >= 300)
        && !parsed.is_success_by_duplicate_rule()
    {
        return Err(not_an_answer(
            &answer,
            &format!("success code on HTTP {}", answer.http),
        ));
    }
    if answer.http >= 500 && answer.explanation.outcome != Outcome::Unknown {
        // The server failed; whatever its body says decides nothing (a
        // status check will).
        return Err(not_an_answer(
            &answer,
            &format!(
                "{} code on HTTP {}: not trusted",
                answer.explanation.outcome.as_str(),
                answer.http
            ),
        ));
    }
    Ok(answer)
}

/// The report of a reply whose code cannot decide anything: unknown, with
/// the code, its message and why.
fn not_an_answer(answer: &Answer, why: &str) -> Report {
    let mut report = report_of(answer);
    report.outcome = Outcome::Unknown;
    push_detail(&mut report.detail, why);
    report
}

fn report_of(answer: &Answer) -> Report {
    let mut report = Report::new(answer.explanation.outcome);
    report.provider_code = Some(clip(&answer.code, 16).to_string());
    report.provider_message = answer
        .body
        .str("responseMessage")
        .map(|m| clip(&m, 150).to_string())
        .or_else(|| Some(answer.explanation.provider_message.clone()));
    if !(200..300).contains(&answer.http) {
        push_detail(&mut report.detail, &format!("HTTP {}", answer.http));
    }
    report
}

fn classify_query(answer: &Answer, partner_reference: &str) -> Report {
    let code = ResponseCode::parse(&answer.code);
    let http_ok = (200..300).contains(&answer.http);
    if let Some(code) = code.filter(|c| c.http != answer.http && !http_ok) {
        // A responseCode carries its reply's HTTP status (spec §6). One on
        // another, failed status (a 2006100 or 4046101 behind a 502 from a
        // proxy) is no answer: it must neither settle the payment nor
        // declare it unknown to the issuer, which would let it fail or be
        // sent again. (A 4046101 on HTTP 200, a common deviation, counts.)
        let mut report = report_of(answer);
        report.outcome = Outcome::Unknown;
        push_detail(
            &mut report.detail,
            &format!(
                "query: responseCode of HTTP {} on HTTP {}: decides nothing",
                code.http, answer.http
            ),
        );
        return report;
    }
    if code.is_some_and(|c| c.is(404, 1)) {
        let mut report = report_of(answer);
        report.outcome = Outcome::Unknown;
        report.not_found = true;
        report.detail = "query: the issuer has no record of this partnerReferenceNo".into();
        return report;
    }
    if code.is_none_or(|c| c.http != 200) {
        // The query itself was refused: it says nothing about the payment.
        let mut report = report_of(answer);
        report.outcome = Outcome::Unknown;
        push_detail(&mut report.detail, "query refused");
        return report;
    }
    if let Some(why) = foreign(
        &answer.body,
        "originalPartnerReferenceNo",
        partner_reference,
    ) {
        return Report::unknown(why);
    }
    let Some(status) = answer.body.str("latestTransactionStatus") else {
        return Report::unknown("query answered without latestTransactionStatus");
    };
    let mut report = match catalogue::explain_qr_status(&status) {
        Ok(explanation) => {
            let mut report = Report::new(explanation.outcome);
            report.provider_message = answer
                .body
                .str("transactionStatusDesc")
                .or(Some(explanation.provider_message));
            report
        }
        Err(error) => Report::unknown(format!("latestTransactionStatus: {error}")),
    };
    report.provider_code = Some(clip(&status, 16).to_string());
    report.provider_trace = answer.body.str("originalReferenceNo");
    if status == "07" {
        report.outcome = Outcome::Unknown;
        report.not_found = true;
    }
    push_detail(
        &mut report.detail,
        &format!(
            "query {}: latestTransactionStatus {}",
            answer.code,
            clip(&status, 8)
        ),
    );
    report
}

/// A refund answered as a duplicate whose success cannot be taken, an
/// operator deciding instead (`needs_review`). Spec §7 reads `409xx01` as
/// an earlier refund under our `partnerRefundNo`, and `404xx18` as one under
/// it "with a different amount" (both success by its table, ASSUMED, Q7):
/// - on the refund's first send ever, the send journal shows no earlier
///   send, so what the issuer holds is not ours (another refund of the
///   payment, or the number used elsewhere): taken as success it would
///   report a refund the payer may never get;
/// - on a send again (the status check), `404xx18` says the issuer holds our
///   refund at another amount than the one every send of it carried, so
///   what was refunded is not known. A re-send's `409xx01` is the
///   idempotent answer the status check relies on: a success.
fn doubt_a_duplicate(report: &mut Report, answer: &Answer, first_send: bool, asked: Money) {
    if report.outcome != Outcome::Success {
        return;
    }
    let Some(code) = ResponseCode::parse(&answer.code) else {
        return;
    };
    let shown = clip(&answer.code, 16);
    let why = if first_send && code.is_success_by_duplicate_rule() {
        format!(
            "{shown} says this refund was made before, but it was never sent before: the issuer may hold another refund"
        )
    } else if !first_send && code.is(404, 18) {
        format!(
            "{shown} says the issuer holds a refund under this partnerRefundNo for another amount than the {asked} every send of it asked: what was refunded is not known"
        )
    } else {
        return;
    };
    report.outcome = Outcome::Unknown;
    report.contradiction = Some(why);
}

/// What a cancel's answer says about the cancel of the payment
/// `original_reference`. A success the table reads from a duplicate
/// (`409xx01`) or an inconsistent request (`404xx18`, spec §6, ASSUMED, Q7)
/// says the issuer holds something under that payment, not that it is
/// cancelled (a cancel whose amount or `originalReferenceNo` the issuer does
/// not match gets `404xx18`): unknown, so the cancel's status check, a
/// query of the payment, decides (`05`: cancelled).
fn cancel_report(answer: &Answer, original_reference: &str) -> Report {
    if let Some(why) = foreign(
        &answer.body,
        "originalPartnerReferenceNo",
        original_reference,
    ) {
        return Report::unknown(why);
    }
    let mut report = report_of(answer);
    report.provider_trace = answer.body.str("originalReferenceNo");
    doubt_bare_success(&mut report, answer, &["cancelTime"]);
    let by_duplicate =
        ResponseCode::parse(&answer.code).is_some_and(|code| code.is_success_by_duplicate_rule());
    if report.outcome == Outcome::Success && by_duplicate {
        report.outcome = Outcome::Unknown;
        push_detail(
            &mut report.detail,
            &format!(
                "{} reads success only by the table's duplicate rule: the payment's query decides whether it is cancelled",
                clip(&answer.code, 16)
            ),
        );
    }
    report
}

/// A refund's status is asked by sending it again (spec §7, ASSUMED: a
/// duplicate `partnerRefundNo` answers 409xx01, success; 404xx18, another
/// amount, goes to review: [`doubt_a_duplicate`]).
/// An issuer that checks the amount or the payment's state before the
/// duplicate would refuse the copy of a refund it already made (404xx13
/// "exceeds", 404xx00 once the payment reads `04`); failing the refund on
/// that would invite a second refund under a new number. So a refusal of
/// the re-send decides nothing: the refund stays unknown, is checked again
/// on schedule and, unresolved, reaches `needs_review`. (A refusal of any
/// request the worker sends again is likewise unknown; this check is not
/// such a send.)
fn distrust_refusal_of_resent_refund(report: &mut Report) {
    if report.outcome != Outcome::Failed {
        return;
    }
    report.outcome = Outcome::Unknown;
    let code = report.provider_code.clone().unwrap_or_default();
    push_detail(
        &mut report.detail,
        &format!(
            "re-sent refund refused ({code}): the first send may have been taken, so not failed"
        ),
    );
}

/// Turns a query of the original payment into the status of a cancel.
fn cancel_from_query(report: &mut Report) {
    if report.not_found {
        return;
    }
    let status = report.provider_code.clone().unwrap_or_default();
    match status.as_str() {
        "05" => report.outcome = Outcome::Success,
        "01" | "02" | "03" => {
            // Not `pending`: that would say the issuer has our cancel, and a
            // cancel the journal shows was never sent would then be left
            // unsent. Whether the cancel reached the issuer is unknown: the
            // worker sends one that never left, and a sent one stays unknown
            // until the payment reads cancelled (05) or settled (00/04).
            report.outcome = Outcome::Unknown;
            push_detail(
                &mut report.detail,
                "the payment is still in progress: the cancel is not applied yet",
            );
        }
        "06" => {
            report.outcome = Outcome::Failed;
            push_detail(&mut report.detail, "the payment failed: nothing to cancel");
        }
        "00" | "04" => {
            report.outcome = Outcome::Unknown;
            report.not_found = true;
            push_detail(
                &mut report.detail,
                "the payment is not cancelled: the cancel was not applied",
            );
        }
        _ => {}
    }
}

/// A reply naming another reference in `field` is not about our request.
fn foreign(body: &Body, field: &str, ours: &str) -> Option<String> {
    match body.str(field) {
        Some(theirs) if theirs != ours => Some(format!(
            "reply is about {field} {:?}, not ours",
            clip(&theirs, 64)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loket_connector::http::HttpReply;

    #[test]
    fn a_token_is_masked_in_its_stored_reply_even_when_the_reply_is_unusable() {
        // expiresIn is not an integer, so the reply is refused; the token
        // has a '/', which PHP's json_encode writes as '\/'.
        let body =
            br#"{"responseCode":"2007300","accessToken":"ab\/cd-CANARY","expiresIn":"900.0"}"#;
        let stored = String::from_utf8_lossy(body).into_owned();
        assert!(read_token(Transport::Reply(HttpReply {
            status: 200,
            content_type: "application/json".into(),
            body: bytes::Bytes::copy_from_slice(body),
            elapsed: Duration::ZERO,
        }))
        .is_err());
        let kept = without_token(&stored, body);
        assert!(!kept.contains("CANARY"), "{kept}");
        assert!(kept.contains("2007300"), "the rest stays: {kept}");
        let plain = br#"{"accessToken":"xyz-CANARY"}"#;
        assert!(!without_token(&String::from_utf8_lossy(plain), plain).contains("CANARY"));
        // A reply that writes the token twice is unreadable, and both are
        // still masked.
        let twice = br#"{"responseCode":"2007300","accessToken":"one-CANARY","accessToken":"two-CANARY","expiresIn":"900"}"#;
        assert!(read_token(Transport::Reply(HttpReply {
            status: 200,
            content_type: "application/json".into(),
            body: bytes::Bytes::copy_from_slice(twice),
            elapsed: Duration::ZERO,
        }))
        .is_err());
        let kept = without_token(&String::from_utf8_lossy(twice), twice);
        assert!(!kept.contains("CANARY"), "{kept}");
    }

    /// An issuer's `expiresIn` of u64::MAX made the token cache compute
    /// `Instant::now() + lifetime`, which overflows: every command task
    /// panicked, and its command was redelivered for ever. The lifetime is
    /// capped, and the cache takes the token.
    #[tokio::test]
    async fn an_absurd_token_lifetime_is_capped_and_the_token_cached() {
        let body =
            br#"{"responseCode":"2007300","accessToken":"t","expiresIn":"18446744073709551615"}"#;
        let fetched = read_token(Transport::Reply(HttpReply {
            status: 200,
            content_type: "application/json".into(),
            body: bytes::Bytes::copy_from_slice(body),
            elapsed: Duration::ZERO,
        }))
        .unwrap();
        assert_eq!(fetched.expires_in, LONGEST_TOKEN_LIFETIME);
        let cache = TokenCache::new(Duration::from_secs(60));
        let token = cache
            .get(|| async { Ok::<_, TokenError>(fetched) })
            .await
            .unwrap();
        assert_eq!(token.value, "t");
        // Cached: no second fetch.
        let again = cache
            .get(|| async { Err::<FetchedToken, _>(TokenError::BadReply("fetched".into())) })
            .await
            .unwrap();
        assert_eq!(again.generation, token.generation);
    }

    #[test]
    fn external_ids_are_numeric_unique_and_short_enough() {
        let ids = ExternalIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(
            a.len() <= 36 && a.bytes().all(|c| c.is_ascii_digit()),
            "{a}"
        );
    }

    #[test]
    fn timestamps_in_each_format() {
        let at = chrono::DateTime::parse_from_rfc3339("2020-12-23T00:50:11.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_timestamp(TimestampFormat::Offset, at),
            "2020-12-23T07:50:11+07:00"
        );
        assert_eq!(
            format_timestamp(TimestampFormat::OffsetMillis, at),
            "2020-12-23T07:50:11.123+07:00"
        );
        assert_eq!(
            format_timestamp(TimestampFormat::Utc, at),
            "2020-12-23T00:50:11Z"
        );
    }

    #[allow(clippy::result_large_err)]
    fn answer(service: Service, http: u16, body: &str) -> Result<Answer, Report> {
        read_answer(
            service,
            Transport::Reply(HttpReply {
                status: http,
                content_type: "application/json".into(),
                body: bytes::Bytes::copy_from_slice(body.as_bytes()),
                elapsed: Duration::ZERO,
            }),
        )
    }

    fn outcome(service: Service, http: u16, body: &str) -> Outcome {
        match answer(service, http, body) {
            Ok(answer) => answer.explanation.outcome,
            Err(report) => report.outcome,
        }
    }

    /// An issuer that echoes the request's access token and `X-SIGNATURE`
    /// in its message: the report (stored with the transaction) carries the
    /// mask, not them, as the stored exchanges do.
    #[tokio::test]
    async fn a_token_or_signature_echoed_in_a_reply_reaches_neither_the_report_nor_the_exchange() {
        const TOKEN: &str = "TOKEN-CANARY-5521";
        async fn issuer(
            uri: axum::http::Uri,
            headers: axum::http::HeaderMap,
        ) -> (axum::http::StatusCode, String) {
            if uri.path().ends_with(Service::Token.path()) {
                let token = format!(
                    r#"{{"responseCode":"2007300","accessToken":"{TOKEN}","tokenType":"Bearer","expiresIn":"900"}}"#
                );
                return (axum::http::StatusCode::OK, token);
            }
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let echo = format!(
                "Funds; {} {}",
                header("Authorization"),
                header("X-SIGNATURE")
            );
            let reply = serde_json::json!({"responseCode": "4036014", "responseMessage": echo});
            (axum::http::StatusCode::FORBIDDEN, reply.to_string())
        }
        let connector = connector_to(axum::Router::new().fallback(issuer)).await;
        let report = connector.execute(&qr_payment("LKT0001PAY")).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        assert_eq!(
            report.provider_message.as_deref(),
            Some(format!("Funds; Bearer {MASK} {MASK}").as_str())
        );
        let everything = format!("{report:?}");
        assert!(!everything.contains(TOKEN), "{everything}");
    }

    /// A connector to the issuer `issuer` serves.
    async fn connector_to(issuer: axum::Router) -> SnapQrConnector {
        let base_url = loket_simulators::common::serve_stub(issuer).await.unwrap();
        let (private_pem, _) = sign::generate_key_pair();
        SnapQrConnector::new(SnapQrSettings {
            base_url,
            client_key: "partner".into(),
            client_secret: loket_runtime::Secret::new("client-secret"),
            private_key: loket_runtime::Secret::new(private_pem),
            merchant_id: "M0001".into(),
            ..SnapQrSettings::default()
        })
        .unwrap()
    }

    /// A first send of a QR payment under `reference`.
    fn qr_payment(reference: &str) -> Command {
        Command {
            transaction_id: "0190f0aa-0000-7000-8000-000000000001".into(),
            provider: Provider::SnapQr,
            operation: Operation::QrPayment,
            provider_reference: reference.into(),
            provider_product_code: "QRCPM".into(),
            account: String::new(),
            account2: String::new(),
            account3: String::new(),
            contact: String::new(),
            amount: Some(Money::idr(10_000)),
            inquiry_data: Default::default(),
            original_operation: Operation::QrPayment,
            provider_trace: String::new(),
            first_dispatch: true,
            first_send: true,
            journal_recorded: None,
            original_reference: String::new(),
            original_provider_trace: String::new(),
            details: [("qr_content".to_string(), "QR-1".to_string())].into(),
            transaction_created_at: Some(Utc::now()),
        }
    }

    /// Guards dropping a refused token that is not refreshed in the call:
    /// an HTTP 401 whose body is a gateway's page, and the refreshed token
    /// refused too. Each reply is read as it stands (nothing is sent again
    /// on it), and the next call starts with a new token rather than the
    /// refused one, which was kept until it expired, its every call refused.
    #[tokio::test]
    async fn a_refused_token_is_not_used_again_even_when_not_refreshed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        /// The HTTP status and body a payment sent with a token gets, by
        /// the token and the payment's number (from 1).
        type Answer = fn(&str, usize) -> (u16, &'static str);
        /// Tokens `TOKEN-1`, `TOKEN-2`, … in order; what the payment with
        /// each gets.
        #[derive(Clone)]
        struct Issuer {
            issued: Arc<AtomicUsize>,
            payments: Arc<AtomicUsize>,
            answer: Answer,
        }
        async fn serve(
            axum::extract::State(issuer): axum::extract::State<Issuer>,
            uri: axum::http::Uri,
            headers: axum::http::HeaderMap,
        ) -> (axum::http::StatusCode, String) {
            if uri.path().ends_with(Service::Token.path()) {
                let n = issuer.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!(
                    r#"{{"responseCode":"2007300","accessToken":"TOKEN-{n}","tokenType":"Bearer","expiresIn":"900"}}"#
                );
                return (axum::http::StatusCode::OK, token);
            }
            let payment = issuer.payments.fetch_add(1, Ordering::SeqCst) + 1;
            let bearer = headers
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_string();
            let (status, body) = (issuer.answer)(&bearer, payment);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                body.to_string(),
            )
        }
        const PAID: &str = r#"{"responseCode":"2006000","responseMessage":"Successful","referenceNo":"R1","partnerReferenceNo":"LKT0002PAY","transactionDate":"2026-11-24T10:00:00+07:00","amount":{"value":"10000.00","currency":"IDR"}}"#;
        // The case, the answers, and how many tokens the two payments took.
        let cases: [(&str, Answer, usize); 3] = [
            (
                "a gateway's 401 page",
                |token, _| match token {
                    "TOKEN-1" => (401, "<html>401 Unauthorized</html>"),
                    _ => (200, PAID),
                },
                2,
            ),
            (
                "the new token refused too",
                |token, _| match token {
                    "TOKEN-1" | "TOKEN-2" => (
                        401,
                        r#"{"responseCode":"4016001","responseMessage":"Invalid Token (B2B)"}"#,
                    ),
                    _ => (200, PAID),
                },
                3,
            ),
            (
                "a signature refused, which is no refusal of the token",
                |_, payment| match payment {
                    1 => (
                        401,
                        r#"{"responseCode":"4016000","responseMessage":"Unauthorized. Signature"}"#,
                    ),
                    _ => (200, PAID),
                },
                1,
            ),
        ];
        for (case, answer, tokens) in cases {
            let issuer = Issuer {
                issued: Arc::default(),
                payments: Arc::default(),
                answer,
            };
            let connector = connector_to(
                axum::Router::new()
                    .fallback(serve)
                    .with_state(issuer.clone()),
            )
            .await;
            let refused = connector.execute(&qr_payment("LKT0001PAY")).await;
            assert_ne!(refused.outcome, Outcome::Success, "{case}: {refused:?}");
            let payments_before = issuer.payments.load(Ordering::SeqCst);
            let paid = connector.execute(&qr_payment("LKT0002PAY")).await;
            assert_eq!(paid.outcome, Outcome::Success, "{case}: {paid:?}");
            assert_eq!(
                issuer.payments.load(Ordering::SeqCst) - payments_before,
                1,
                "{case}: the next call sent its payment on the refused token first"
            );
            assert_eq!(issuer.issued.load(Ordering::SeqCst), tokens, "{case}");
        }
    }

    /// Guards the cancel's duplicate rule: a `409xx01` or `404xx18`, which
    /// the table reads as success (spec §6, Q7), leaves the cancel unknown
    /// for the payment's query to decide; a plain success is a success.
    #[test]
    fn a_cancel_answered_by_a_duplicate_code_is_confirmed_by_a_query() {
        let cancel = |http: u16, code: &str| {
            let body = format!(
                r#"{{"responseCode":"{code}","responseMessage":"m","originalPartnerReferenceNo":"LKT0001PAY","originalReferenceNo":"R1","cancelTime":"2026-11-24T10:00:00+07:00"}}"#
            );
            cancel_report(&answer(Service::Cancel, http, &body).unwrap(), "LKT0001PAY")
        };
        for (http, code) in [(404, "4046218"), (409, "4096201")] {
            let report = cancel(http, code);
            assert_eq!(report.outcome, Outcome::Unknown, "{code}: {report:?}");
            assert!(report.detail.contains("query decides"), "{}", report.detail);
        }
        let done = cancel(200, "2006200");
        assert_eq!(done.outcome, Outcome::Success, "{done:?}");
        assert_eq!(done.provider_trace.as_deref(), Some("R1"));
    }

    #[test]
    fn payment_codes_through_the_catalogue() {
        let pay = Service::Payment;
        assert_eq!(
            outcome(
                pay,
                200,
                r#"{"responseCode":"2006000","responseMessage":"Successful","referenceNo":"r"}"#
            ),
            Outcome::Success
        );
        assert_eq!(
            outcome(
                pay,
                202,
                r#"{"responseCode":"2026000","responseMessage":"In progress"}"#
            ),
            Outcome::Pending
        );
        assert_eq!(
            outcome(
                pay,
                403,
                r#"{"responseCode":"4036000","responseMessage":"Expired"}"#
            ),
            Outcome::Failed
        );
        assert_eq!(
            outcome(
                pay,
                404,
                r#"{"responseCode":"4046011","responseMessage":"Invalid"}"#
            ),
            Outcome::Failed
        );
        assert_eq!(
            outcome(
                pay,
                403,
                r#"{"responseCode":"4036014","responseMessage":"Funds"}"#
            ),
            Outcome::Failed
        );
        assert_eq!(
            outcome(
                pay,
                409,
                r#"{"responseCode":"4096000","responseMessage":"Conflict"}"#
            ),
            Outcome::Unknown
        );
        assert_eq!(
            outcome(
                pay,
                409,
                r#"{"responseCode":"4096001","responseMessage":"Duplicate"}"#
            ),
            Outcome::Success
        );
        assert_eq!(
            outcome(
                pay,
                504,
                r#"{"responseCode":"5046000","responseMessage":"Timeout"}"#
            ),
            Outcome::Unknown
        );
        assert_eq!(outcome(pay, 500, ""), Outcome::Unknown);
        assert_eq!(
            outcome(pay, 502, "<html>bad gateway</html>"),
            Outcome::Unknown
        );
        assert_eq!(
            outcome(pay, 200, r#"{"responseCode":"20060"}"#),
            Outcome::Unknown
        );
        // A success code on an HTTP error is a contradiction.
        assert_eq!(
            outcome(pay, 500, r#"{"responseCode":"2006000"}"#),
            Outcome::Unknown
        );
        // A code of another service is not an answer to the payment, nor is
        // the token service's success; its 401 (token refused) is.
        assert_eq!(
            outcome(pay, 200, r#"{"responseCode":"2006200"}"#),
            Outcome::Unknown
        );
        assert_eq!(
            outcome(pay, 200, r#"{"responseCode":"2007300","referenceNo":"r"}"#),
            Outcome::Unknown
        );
        assert!(answer(pay, 401, r#"{"responseCode":"4017301"}"#).is_ok());
    }

    #[test]
    fn a_success_without_its_mandatory_fields_is_unknown() {
        let reported = |service, http, body: &str, required: &[&str]| {
            let answer = answer(service, http, body).unwrap();
            let mut report = report_of(&answer);
            doubt_bare_success(&mut report, &answer, required);
            (report.outcome, report.detail)
        };
        let pay = |body: &str| reported(Service::Payment, 200, body, &["referenceNo"]).0;
        assert_eq!(
            pay(r#"{"responseCode":"2006000","referenceNo":"R1"}"#),
            Outcome::Success
        );
        assert_eq!(pay(r#"{"responseCode":"2006000"}"#), Outcome::Unknown);
        assert_eq!(
            pay(r#"{"responseCode":"2006000","referenceNo":"  "}"#),
            Outcome::Unknown
        );

        let cancel = |body: &str| reported(Service::Cancel, 200, body, &["cancelTime"]).0;
        assert_eq!(
            cancel(r#"{"responseCode":"2006200","cancelTime":"2026-11-22T10:00:00+07:00"}"#),
            Outcome::Success
        );
        assert_eq!(cancel(r#"{"responseCode":"2006200"}"#), Outcome::Unknown);

        let refund =
            |http, body: &str| reported(Service::Refund, http, body, &["refundNo", "refundTime"]);
        assert_eq!(
            refund(
                200,
                r#"{"responseCode":"2008000","refundNo":"RF1","refundTime":"2026-11-22T10:00:00+07:00"}"#
            )
            .0,
            Outcome::Success
        );
        let (outcome, detail) = refund(200, r#"{"responseCode":"2008000","refundNo":"RF1"}"#);
        assert_eq!(outcome, Outcome::Unknown);
        assert!(detail.contains("without refundTime"), "{detail}");
        let (outcome, detail) = refund(200, r#"{"responseCode":"2008000"}"#);
        assert_eq!(outcome, Outcome::Unknown);
        assert!(
            detail.contains("without refundNo and refundTime"),
            "{detail}"
        );
        // A duplicate confirms an earlier refund; it is not judged by its fields.
        assert_eq!(
            refund(409, r#"{"responseCode":"4098001"}"#).0,
            Outcome::Success
        );
        // A refusal stays a refusal.
        assert_eq!(
            refund(404, r#"{"responseCode":"4048013"}"#).0,
            Outcome::Failed
        );
    }

    /// serde_json's `Value` keeps the last of two members with one key, so
    /// "06" (failed) then "00" read as a success. A reply that says two
    /// things decides nothing: it is unknown, never success nor failed.
    #[test]
    fn a_query_reply_repeating_a_key_is_unknown() {
        let query = |body: &str| match answer(Service::Query, 200, body) {
            Ok(answer) => classify_query(&answer, "p1").outcome,
            Err(report) => report.outcome,
        };
        let once = r#"{"responseCode":"2006100","originalPartnerReferenceNo":"p1","latestTransactionStatus":"00"}"#;
        assert_eq!(query(once), Outcome::Success);
        for (first, last) in [("06", "00"), ("00", "06"), ("00", "00")] {
            let body = format!(
                r#"{{"responseCode":"2006100","originalPartnerReferenceNo":"p1","latestTransactionStatus":"{first}","latestTransactionStatus":"{last}"}}"#
            );
            assert_eq!(query(&body), Outcome::Unknown, "{body}");
        }
        let nested = r#"{"responseCode":"2006100","originalPartnerReferenceNo":"p1","latestTransactionStatus":"00","amount":{"value":"1.00","value":"9.00"}}"#;
        assert_eq!(query(nested), Outcome::Unknown);
    }

    #[test]
    fn query_statuses_and_not_found() {
        let q =
            |http, body: &str| classify_query(&answer(Service::Query, http, body).unwrap(), "p1");
        let ok = q(
            200,
            r#"{"responseCode":"2006100","originalPartnerReferenceNo":"p1","originalReferenceNo":"R9","latestTransactionStatus":"00"}"#,
        );
        assert_eq!(ok.outcome, Outcome::Success);
        assert_eq!(ok.provider_trace.as_deref(), Some("R9"));
        assert_eq!(
            q(
                200,
                r#"{"responseCode":"2006100","latestTransactionStatus":"03"}"#
            )
            .outcome,
            Outcome::Pending
        );
        assert_eq!(
            q(
                200,
                r#"{"responseCode":"2006100","latestTransactionStatus":"06"}"#
            )
            .outcome,
            Outcome::Failed
        );
        let missing = q(
            404,
            r#"{"responseCode":"4046101","responseMessage":"Transaction Not Found"}"#,
        );
        assert!(missing.not_found);
        assert_eq!(missing.outcome, Outcome::Unknown);
        let other = q(
            200,
            r#"{"responseCode":"2006100","originalPartnerReferenceNo":"p2","latestTransactionStatus":"00"}"#,
        );
        assert_eq!(other.outcome, Outcome::Unknown);
        assert_eq!(
            q(401, r#"{"responseCode":"4016100"}"#).outcome,
            Outcome::Unknown
        );
        // A body whose code names another HTTP status than the reply's
        // decides nothing: no status, no "no record".
        for http in [500, 502, 504] {
            for status in ["00", "05", "06", "07"] {
                let body = format!(
                    r#"{{"responseCode":"2006100","originalPartnerReferenceNo":"p1","latestTransactionStatus":"{status}"}}"#
                );
                let report = q(http, &body);
                assert_eq!(
                    (report.outcome, report.not_found),
                    (Outcome::Unknown, false),
                    "HTTP {http}, {status}"
                );
                assert!(
                    report.detail.contains("decides nothing"),
                    "{}",
                    report.detail
                );
            }
            let report = q(http, r#"{"responseCode":"4046101"}"#);
            assert_eq!(
                (report.outcome, report.not_found),
                (Outcome::Unknown, false),
                "HTTP {http}"
            );
        }
        let report = q(200, r#"{"responseCode":"4046101"}"#);
        assert!(report.not_found, "4046101 on HTTP 200 (a common deviation)");
    }

    /// A reply body: arbitrary bytes, or a JSON object whose fields are the
    /// ones SNAP answers carry, each of any JSON type, codes drawn both from
    /// the real ones and from noise.
    fn reply_body() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // HTTP class, service and case: mostly real services (ours and
        // the token's), sometimes noise.
        let code = prop_oneof![
            4 => (
                proptest::sample::select(vec![200u16, 202, 400, 401, 403, 404, 409, 429, 500, 503, 504]),
                proptest::sample::select(vec![60u8, 61, 62, 73, 80, 47, 99]),
                0u8..30,
            )
                .prop_map(|(http, service, case)| format!("{http}{service:02}{case:02}")),
            1 => ".{0,9}",
        ];
        let value = prop_oneof![
            code.clone().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
            Just(serde_json::json!({"value": "10000.00", "currency": "IDR"})),
        ];
        let field = prop_oneof![
            4 => Just("responseCode"),
            1 => Just("responseMessage"),
            1 => Just("referenceNo"),
            1 => Just("partnerReferenceNo"),
            1 => Just("originalPartnerReferenceNo"),
            1 => Just("latestTransactionStatus"),
            1 => Just("amount"),
        ];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec((field, value), 0..7).prop_map(|fields| {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect();
                serde_json::to_vec(&object).unwrap()
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Any reply to any call: no panic, and no state by guesswork. A
        /// reply that is not a JSON object with a known 7-digit code, or
        /// whose code names another service, or a success code on an HTTP
        /// status that is not 2xx, is unknown; an answer it does give has
        /// a code the catalogue explains.
        #[test]
        fn any_reply_is_read_without_guessing(
            status in 100u16..600,
            body in reply_body(),
            service in proptest::sample::select(vec![
                Service::Payment, Service::Query, Service::Cancel, Service::Refund,
            ]),
        ) {
            let reply = HttpReply {
                status,
                content_type: "application/json".into(),
                body: body.clone().into(),
                elapsed: std::time::Duration::ZERO,
            };
            match read_answer(service, Transport::Reply(reply)) {
                Err(report) => proptest::prop_assert_eq!(report.outcome, Outcome::Unknown),
                Ok(answer) => {
                    let code = ResponseCode::parse(&answer.code).expect("a 7-digit code");
                    proptest::prop_assert!(
                        code.service == service.code() || code.service == Service::Token.code()
                    );
                    if answer.explanation.outcome == Outcome::Success {
                        proptest::prop_assert!((200..300).contains(&status) || code.is(409, 1) || code.is(404, 18));
                    }
                    if status >= 500 {
                        proptest::prop_assert_ne!(
                            answer.explanation.outcome,
                            Outcome::Failed,
                            "HTTP {} decided failed: {}",
                            status,
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
            }
        }
    }
}
