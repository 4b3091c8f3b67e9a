//! The Smilepayz connector: builds one signed request per operation (spec
//! §4.1, §5), sends it once, and classifies the reply through
//! [`crate::codes`].
//!
//! - `orderNo` is always our reference (`command.provider_reference`), on
//!   creation and on inquiry (rule 3); the same orderNo is the idempotency
//!   key at Smilepayz, so a resubmission can never create a second order.
//! - An accepted pay-in (`00` + `INIT`/`PROCESSING`) and an accepted pay-out
//!   (`00 PROCESSING`: funds frozen) are **pending**; only an inquiry or a
//!   confirmed callback makes them final.
//! - An inquiry about a pay-in passes on the method Smilepayz names (its
//!   top-level `paymentMethod`, spec §5) as payment instructions holding
//!   that method alone: a hosted-page payer's choice shows nowhere else we
//!   can trust.
//! - A timeout, a reset, a 5xx, a non-JSON reply or a duplicate-order answer
//!   is **unknown**; the worker and the reconciler resolve it by inquiry. So
//!   is a reply whose `code` and `responseCode` disagree, or whose HTTP
//!   status is not the one its code goes with (spec §6: ASSUMED equal), e.g.
//!   `00 SUCCESS` on HTTP 404 or an acceptance on HTTP 400
//!   ([`codes::distrust`]).
//! - Inquiry "order not found" is reported as `not_found = true` only once
//!   the transaction is older than `not_found_grace_ms` (ASSUMED 60 s): an
//!   inquiry right after creation may not see the order yet (spec §8.12).
//!   The age comes from the transaction id (a UUIDv7); an id that is not a
//!   v7 UUID counts as past the grace — resubmitting the same orderNo is safe
//!   because Smilepayz rejects duplicates. The worker, too, sends again after
//!   "not found" only once its last recorded send is older than that grace
//!   ([`Connector::resend_grace`]): an inquiry can miss a request sent
//!   moments before, whatever the transaction's age.
//! - Stored exchanges carry the headers with `X-SIGNATURE` masked; the
//!   merchant secret is never sent, and a [`Masker`] removes it (and the
//!   signature) should either appear anywhere. A signature Smilepayz echoes
//!   is masked in its reply before the reply is read, so the report's texts
//!   (stored with the transaction) cannot carry it.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use loket_connector::http::{self, HttpClient, HttpReply, Transport};
use loket_connector::mask::{Masker, MASK};
use loket_connector::report::clip;
use loket_connector::{Command, Connector, ConnectorError, Report};
use loket_protocol::catalogue::CodeOperation;
use loket_protocol::conversions::timestamp;
use loket_protocol::pb::{self, bus};
use loket_protocol::{Money, Operation, Outcome, Provider};
use rsa::RsaPrivateKey;

use crate::codes::{self, Classification};
use crate::settings::{InvalidSetting, SmilepayzSettings, EXPIRY_SECONDS_MAX};
use crate::sign;
use crate::wire::{self, Reply};

/// One request, ready to sign and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Recorded on the exchange (`pay_in`, `pay_out`, `inquiry_status`, `balance`).
    pub operation: &'static str,
    pub path: &'static str,
    pub order_no: String,
    /// The exact bytes that are signed and sent.
    pub body: Vec<u8>,
    /// Pay-in: the expiry period asked for.
    pub expiry_seconds: Option<u64>,
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{0}: required for this operation but empty")]
    Missing(&'static str),
    #[error("provider_reference {0:?} is not a valid orderNo (alphanumeric, 6-32)")]
    BadOrderNo(String),
    #[error("amount must be a positive IDR amount")]
    BadAmount,
    #[error("{0} is not a Smilepayz operation")]
    Unsupported(Operation),
}

pub struct SmilepayzConnector {
    settings: SmilepayzSettings,
    key: RsaPrivateKey,
    http: HttpClient,
    masker: Masker,
}

impl fmt::Debug for SmilepayzConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmilepayzConnector")
            .field("base_url", &self.settings.base_url)
            .field("merchant_id", &self.settings.merchant_id)
            .finish_non_exhaustive()
    }
}

fn code_operation(operation: Operation) -> CodeOperation {
    match operation {
        Operation::PayOut => CodeOperation::PayOut,
        _ => CodeOperation::PayIn,
    }
}

impl SmilepayzConnector {
    pub fn new(settings: SmilepayzSettings) -> Result<Self, InvalidSetting> {
        settings.validate()?;
        let key = sign::load_private_key(settings.merchant_private_key.expose())
            .map_err(|e| InvalidSetting::new("smilepayz.merchant_private_key", e.to_string()))?;
        let http = HttpClient::new(settings.timeout(), settings.connect_timeout());
        let masker = Masker::new([settings.merchant_secret.expose().to_string()]);
        Ok(SmilepayzConnector {
            settings,
            key,
            http,
            masker,
        })
    }

    pub fn settings(&self) -> &SmilepayzSettings {
        &self.settings
    }

    fn merchant(&self) -> wire::Merchant {
        wire::Merchant {
            merchant_id: self.settings.merchant_id.clone(),
            merchant_name: self.settings.merchant_name.clone(),
        }
    }

    fn callback_url(&self) -> Option<String> {
        Some(self.settings.callback_url.trim().to_string()).filter(|u| !u.is_empty())
    }

    /// The request for `command` (a status check becomes inquiry-status).
    pub fn build_request(&self, command: &Command) -> Result<Request, BuildError> {
        let order_no = command.provider_reference.trim().to_string();
        if !wire::is_valid_order_no(&order_no) {
            return Err(BuildError::BadOrderNo(order_no));
        }
        let amount = || match command.amount {
            Some(money) if money.minor > 0 => Ok(wire::money_to_wire(money)),
            _ => Err(BuildError::BadAmount),
        };
        let purpose = |default: &str| {
            let p = command.detail("purpose").trim();
            let p = if p.is_empty() { default } else { p };
            clip(p, 64).to_string()
        };
        match command.operation {
            Operation::PayIn => {
                let method = command.detail("method").trim().to_string();
                let payer = wire::Party {
                    name: command.detail("payer_name").trim().to_string(),
                    phone: command.detail("payer_phone").trim().to_string(),
                    email: command.detail("payer_email").trim().to_string(),
                };
                let expiry = command
                    .detail("expiry_seconds")
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=EXPIRY_SECONDS_MAX).contains(s))
                    .unwrap_or(self.settings.default_expiry_seconds);
                let request = wire::PayInRequest {
                    order_no: order_no.clone(),
                    purpose: purpose("Payment"),
                    merchant: self.merchant(),
                    money: amount()?,
                    payment_method: Some(method.clone()).filter(|m| !m.is_empty()),
                    payer: Some(payer).filter(|p| !p.is_empty()),
                    expiry_period: Some(expiry),
                    redirect_url: Some(self.settings.redirect_url.trim().to_string())
                        .filter(|u| !u.is_empty()),
                    callback_url: self.callback_url(),
                };
                Ok(Request {
                    operation: "pay_in",
                    path: wire::PAY_IN_PATH,
                    order_no,
                    body: wire::to_body(&request),
                    expiry_seconds: Some(expiry),
                    method,
                })
            }
            Operation::PayOut => {
                let method = command.detail("method").trim().to_string();
                if method.is_empty() {
                    return Err(BuildError::Missing("method"));
                }
                let account = command.account.trim().to_string();
                if account.is_empty() {
                    return Err(BuildError::Missing("account"));
                }
                let receiver = wire::Party {
                    name: command.detail("receiver_name").trim().to_string(),
                    ..Default::default()
                };
                let request = wire::PayOutRequest {
                    order_no: order_no.clone(),
                    purpose: purpose("Disbursement"),
                    merchant: self.merchant(),
                    money: amount()?,
                    payment_method: method.clone(),
                    cash_account: account,
                    receiver: Some(receiver).filter(|r| !r.is_empty()),
                    callback_url: self.callback_url(),
                };
                Ok(Request {
                    operation: "pay_out",
                    path: wire::PAY_OUT_PATH,
                    order_no,
                    body: wire::to_body(&request),
                    expiry_seconds: None,
                    method,
                })
            }
            Operation::StatusCheck => {
                let trade_type = match command.original_operation {
                    Operation::PayOut => wire::TRADE_TYPE_PAY_OUT,
                    _ => wire::TRADE_TYPE_PAY_IN,
                };
                let request = wire::InquiryStatusRequest {
                    trade_type,
                    order_no: Some(order_no.clone()),
                    trade_no: None,
                };
                Ok(Request {
                    operation: "inquiry_status",
                    path: wire::INQUIRY_STATUS_PATH,
                    order_no,
                    body: wire::to_body(&request),
                    expiry_seconds: None,
                    method: String::new(),
                })
            }
            other => Err(BuildError::Unsupported(other)),
        }
    }

    /// Signs and sends one request; records the exchange (masked).
    async fn send(
        &self,
        operation: &'static str,
        path: &str,
        body: &[u8],
    ) -> (Transport, bus::Exchange) {
        let ts = sign::timestamp(self.settings.timestamp_style, Utc::now());
        let signature =
            sign::sign_request(&self.key, &ts, self.settings.merchant_secret.expose(), body);
        let url = self.settings.url(path);
        let headers = [
            (wire::HEADER_TIMESTAMP, ts.clone()),
            (wire::HEADER_SIGNATURE, signature.clone()),
            (wire::HEADER_PARTNER_ID, self.settings.merchant_id.clone()),
        ];
        let at = Utc::now();
        let started = Instant::now();
        let result = self
            .http
            .post(&url, wire::CONTENT_TYPE_JSON, &headers, body.to_vec())
            .await;
        let elapsed = started.elapsed();
        let masker = Masker::new([signature.as_str()]);
        let mask = |text: &str| masker.mask(&self.masker.mask(text));
        let stored_request = format!(
            "{}: {ts}\n{}: {MASK}\n{}: {}\n\n{}",
            wire::HEADER_TIMESTAMP,
            wire::HEADER_SIGNATURE,
            wire::HEADER_PARTNER_ID,
            self.settings.merchant_id,
            String::from_utf8_lossy(body)
        );
        let mut exchange = bus::Exchange {
            operation: operation.to_string(),
            url: mask(&url),
            request: http::stored(mask(&stored_request)),
            response: String::new(),
            http_status: 0,
            duration_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            error: String::new(),
            at: Some(timestamp(at)),
        };
        let transport = http::without_echoes(http::record(&mut exchange, result, mask), &masker);
        metrics::counter!(
            crate::metrics::REQUESTS,
            "operation" => operation,
            "transport" => transport.label()
        )
        .increment(1);
        metrics::histogram!(crate::metrics::REQUEST_SECONDS, "operation" => operation)
            .record(elapsed.as_secs_f64());
        (transport, exchange)
    }

    async fn run_command(&self, command: &Command) -> Report {
        let request = match self.build_request(command) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, operation = %command.operation, "request not built; nothing sent");
                return Report::not_built(command.operation, error);
            }
        };
        let (transport, exchange) = self
            .send(request.operation, request.path, &request.body)
            .await;
        let mut report = match transport {
            Transport::NotSent(error) => Report::not_sent(error),
            Transport::MaybeSent(error) => Report::unknown(error),
            Transport::Reply(reply) => match command.operation {
                Operation::StatusCheck => self.classify_inquiry(command, &request, &reply),
                _ => classify_creation(command, &request, &reply),
            },
        };
        // What the reply filled in is masked as the exchange is.
        report.mask_texts(|text| self.masker.mask(text));
        report.exchanges.push(exchange);
        metrics::counter!(
            crate::metrics::OUTCOMES,
            "operation" => request.operation,
            "outcome" => report.outcome.as_str()
        )
        .increment(1);
        report
    }

    fn classify_inquiry(&self, command: &Command, request: &Request, reply: &HttpReply) -> Report {
        let parsed = match Reply::parse(&reply.body) {
            Ok(parsed) => parsed,
            Err(error) => {
                return Report::unknown(format!(
                    "inquiry reply unreadable (HTTP {}): {error}",
                    reply.status
                ))
            }
        };
        if let Some(problem) = codes::distrust(&parsed, reply.status) {
            // Fields that disagree, or a `00 SUCCESS` / `FAILED` / "order not
            // found" on a status its code does not go with: nothing is
            // decided, not even `not_found`; the next inquiry will.
            let mut report =
                Report::unknown(format!("inquiry {problem}: the reply decides nothing"));
            report.provider_code = parsed
                .classification_code()
                .map(|c| clip(c, 16).to_string());
            report.provider_message = parsed.message.clone();
            return report;
        }
        if codes::is_not_found(&parsed) {
            let mut report = Report::unknown("");
            report.provider_code = parsed.classification_code().map(str::to_string);
            report.provider_message = parsed.message.clone();
            let grace = Duration::from_millis(self.settings.not_found_grace_ms);
            match transaction_age(&command.transaction_id) {
                Some(age) if age < grace => {
                    report.detail = format!(
                        "order not found yet; within the {} ms grace (ASSUMED) it may still appear",
                        self.settings.not_found_grace_ms
                    );
                }
                _ => {
                    report.not_found = true;
                    report.detail = "Smilepayz has no order with this orderNo".into();
                }
            }
            return report;
        }
        if let Some(theirs) = parsed.order_no.as_deref() {
            if parsed.is_success() && theirs != request.order_no {
                return Report::unknown(format!(
                    "inquiry answered about orderNo {:?}, not ours",
                    clip(theirs, 40)
                ));
            }
        }
        // The spec's inquiry reply names the order by tradeNo only (§5): once
        // the creation told us ours, a reply about another decides nothing.
        if let Some(theirs) = parsed.trade_no.as_deref() {
            let ours = command.provider_trace.as_str();
            if parsed.is_success() && !ours.is_empty() && theirs != ours {
                return Report::unknown(format!(
                    "inquiry answered about tradeNo {:?}, not ours ({ours:?})",
                    clip(theirs, 40)
                ));
            }
        }
        let original = code_operation(command.original_operation);
        let classification = codes::classify_inquiry(&parsed, original);
        let mut report = fill(&parsed, &classification);
        if reply.status >= 500 && matches!(report.outcome, Outcome::Failed | Outcome::Success) {
            // The server failed: whatever its body claims decides nothing;
            // the next inquiry will.
            report.detail = format!(
                "{} claimed on HTTP {}: not trusted",
                report.outcome.as_str(),
                reply.status
            );
            report.outcome = Outcome::Unknown;
        }
        if command.original_operation == Operation::PayIn
            && parsed.is_success()
            && reply.status < 500
        {
            // A hosted-page payer picks the method on Smilepayz's page, so
            // only the inquiry (about our order, checked above) can tell
            // which. It travels as instructions naming nothing but the
            // method: the stored ones (the page's URL) stay. A callback names
            // it too, but its body is not signed (spec §4.2).
            if let Some(method) = parsed.payment_method.clone() {
                report.payment = Some(pb::PaymentInstructions {
                    method,
                    ..Default::default()
                });
            }
        }
        report
    }

    /// The pay-out balance. Every text of an error passes through the
    /// secret masker: the ingress passes it on to its client, and a provider
    /// may echo the merchant secret in its message.
    async fn read_balance(&self) -> Result<Money, ConnectorError> {
        self.ask_balance()
            .await
            .map_err(|error| error.masked(|text| self.masker.mask(text)))
    }

    async fn ask_balance(&self) -> Result<Money, ConnectorError> {
        let body = wire::to_body(&wire::InquiryBalanceRequest {
            merchant: self.merchant(),
        });
        let (transport, _exchange) = self
            .send("balance", wire::INQUIRY_BALANCE_PATH, &body)
            .await;
        let reply = match transport {
            Transport::Reply(reply) => reply,
            Transport::NotSent(e) | Transport::MaybeSent(e) => {
                return Err(ConnectorError::Unavailable(e))
            }
        };
        let parsed = Reply::parse(&reply.body)
            .map_err(|e| ConnectorError::BadReply(format!("HTTP {}: {e}", reply.status)))?;
        if let Some(problem) = codes::distrust(&parsed, reply.status) {
            return Err(ConnectorError::BadReply(problem));
        }
        if !parsed.is_success() {
            return Err(ConnectorError::Provider {
                code: parsed.classification_code().unwrap_or_default().to_string(),
                message: parsed.message.unwrap_or_default(),
            });
        }
        // ASSUMED reply shape (spec §1 documents none):
        // {"balance":{"payOut":{"currency":"IDR","available":N,"frozen":N},"payIn":{…}}}
        let account = parsed
            .raw
            .get("balance")
            .and_then(|b| b.get("payOut"))
            .ok_or_else(|| ConnectorError::BadReply("balance.payOut missing".into()))?;
        let money = serde_json::json!({
            "currency": account.get("currency").cloned().unwrap_or_default(),
            "amount": account.get("available").cloned().unwrap_or_default(),
        });
        wire::money_from_wire(&money).map_err(|e| ConnectorError::BadReply(e.to_string()))
    }
}

/// How long ago the transaction was created, from its UUIDv7 id.
fn transaction_age(transaction_id: &str) -> Option<Duration> {
    let id = uuid::Uuid::parse_str(transaction_id).ok()?;
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    let created = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
    Some(
        std::time::SystemTime::now()
            .duration_since(created)
            .unwrap_or_default(),
    )
}

fn fill(parsed: &Reply, classification: &Classification) -> Report {
    let mut report = Report::new(classification.outcome);
    report.provider_code = classification.code.clone();
    report.provider_message = classification
        .message
        .clone()
        .or_else(|| parsed.message.clone());
    report.provider_trace = parsed.trade_no.clone();
    if let Some(problem) = &classification.problem {
        report.detail = problem.clone();
    }
    match &parsed.money {
        Some(money) => match wire::money_from_wire(money) {
            Ok(money) => report.provider_amount = Some(money),
            Err(error) => report.amount_unreadable("money", error),
        },
        // Spec §4.2: a SUCCESS is credited only after its amount is checked
        // against ours; without one it is flagged like an unreadable one.
        None if report.outcome == Outcome::Success => {
            report.amount_unreadable("money", "missing, so the amount cannot be checked")
        }
        None => {}
    }
    report
}

fn classify_creation(command: &Command, request: &Request, reply: &HttpReply) -> Report {
    let parsed = match Reply::parse(&reply.body) {
        Ok(parsed) => parsed,
        Err(error) => {
            return Report::unknown(format!("reply unreadable (HTTP {}): {error}", reply.status))
        }
    };
    if let Some(theirs) = parsed.order_no.as_deref() {
        if theirs != request.order_no {
            return Report::unknown(format!(
                "reply is about orderNo {:?}, not ours",
                clip(theirs, 40)
            ));
        }
    }
    let classification =
        codes::classify_create(&parsed, code_operation(command.operation), reply.status);
    let mut report = fill(&parsed, &classification);
    // Instructions only from an acceptance that is one (read as pending):
    // not from a `00` on a 4xx, nor from a `00` whose responseCode refuses
    // (read as unknown, `codes::distrust`).
    if command.operation == Operation::PayIn
        && parsed.is_success()
        && classification.outcome == Outcome::Pending
    {
        let expires_at =
            Utc::now() + chrono::Duration::seconds(request.expiry_seconds.unwrap_or(3_600) as i64);
        report.payment = Some(pb::PaymentInstructions {
            method: parsed
                .channel
                .payment_method
                .clone()
                .unwrap_or_else(|| request.method.clone()),
            qr_string: parsed.channel.qr_string.clone().unwrap_or_default(),
            va_number: parsed.channel.va_number.clone().unwrap_or_default(),
            payment_url: parsed.channel.payment_url.clone().unwrap_or_default(),
            expires_at: Some(timestamp(expires_at)),
        });
    }
    report
}

impl Connector for SmilepayzConnector {
    fn provider(&self) -> Provider {
        Provider::Smilepayz
    }

    /// One request, at most its timeout.
    fn longest_send(&self) -> Duration {
        self.settings.timeout()
    }

    async fn execute(&self, command: &Command) -> Report {
        self.run_command(command).await
    }

    async fn check_status(&self, command: &Command) -> Report {
        let check = if command.operation == Operation::StatusCheck {
            command.clone()
        } else {
            command.as_status_check()
        };
        self.run_command(&check).await
    }

    /// Inquiry right after create can answer "order not found" (spec §8):
    /// the same grace as for reporting `not_found`.
    fn resend_grace(&self) -> Duration {
        Duration::from_millis(self.settings.not_found_grace_ms)
    }

    async fn balance(&self) -> Result<Money, ConnectorError> {
        self.read_balance().await
    }

    /// Smilepayz has no echo; the balance inquiry moves no money and proves
    /// the endpoint, the signature and the credentials at once.
    async fn probe(&self) -> Option<Result<(), ConnectorError>> {
        Some(self.read_balance().await.map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loket_runtime::Secret;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const ORDER_NO: &str = "LKT0001ORDER0001";

    fn connector() -> &'static SmilepayzConnector {
        static CONNECTOR: OnceLock<SmilepayzConnector> = OnceLock::new();
        CONNECTOR.get_or_init(|| {
            let (private, _) = sign::generate_key_pair();
            SmilepayzConnector::new(SmilepayzSettings {
                merchant_id: "20001".into(),
                merchant_secret: Secret::new("s"),
                merchant_private_key: Secret::new(private),
                ..SmilepayzSettings::default()
            })
            .unwrap()
        })
    }

    /// A connector of its own talking to `base_url`, which it gives up on
    /// after half a second.
    fn connector_at(base_url: String) -> SmilepayzConnector {
        let (private, _) = sign::generate_key_pair();
        SmilepayzConnector::new(SmilepayzSettings {
            base_url,
            merchant_id: "20001".into(),
            merchant_secret: Secret::new("merchant-secret-0001"),
            merchant_private_key: Secret::new(private),
            timeout_ms: 500,
            connect_timeout_ms: 250,
            ..SmilepayzSettings::default()
        })
        .unwrap()
    }

    fn command(operation: Operation) -> Command {
        Command {
            transaction_id: uuid::Uuid::now_v7().to_string(),
            provider: Provider::Smilepayz,
            operation,
            provider_reference: ORDER_NO.into(),
            provider_product_code: String::new(),
            account: "1234567890".into(),
            account2: String::new(),
            account3: String::new(),
            contact: String::new(),
            amount: Some(Money::idr(100_000)),
            inquiry_data: Default::default(),
            original_operation: Operation::PayOut,
            provider_trace: String::new(),
            first_dispatch: true,
            first_send: false,
            journal_recorded: None,
            original_reference: String::new(),
            original_provider_trace: String::new(),
            details: [
                ("method".to_string(), "BCA".to_string()),
                ("receiver_name".to_string(), "Budi".to_string()),
            ]
            .into(),
            transaction_created_at: Some(chrono::Utc::now()),
        }
    }

    /// A reply body: arbitrary bytes, or a JSON object with the fields
    /// Smilepayz answers carry, each drawn from real values and noise.
    fn reply_body() -> impl Strategy<Value = Vec<u8>> {
        let value = |real: Vec<&'static str>| {
            prop_oneof![
                4 => proptest::sample::select(real).prop_map(serde_json::Value::from),
                1 => ".{0,12}".prop_map(serde_json::Value::from),
                1 => any::<i64>().prop_map(serde_json::Value::from),
                1 => Just(serde_json::Value::Null),
            ]
        };
        let object = (
            value(vec!["00", "01", "10", "12", "20", "99"]),
            value(vec![
                "2009100", "2009200", "4009100", "4019100", "5009100", "5009200", "5029100",
            ]),
            value(vec![
                "Successful",
                "Order not found",
                "Internal error",
                "Bad request",
            ]),
            value(vec![ORDER_NO, "SOMEONEELSE0001"]),
            value(vec![
                "SUCCESS",
                "FAILED",
                "EXPIRED",
                "PROCESSING",
                "PENDING",
                "REFUND",
            ]),
            proptest::collection::vec(any::<bool>(), 5),
        )
            .prop_map(
                |(code, response_code, message, order_no, status, present)| {
                    let mut object = serde_json::Map::new();
                    for (name, value, keep) in [
                        ("code", code, present[0]),
                        ("responseCode", response_code, present[1]),
                        ("message", message, present[2]),
                        ("orderNo", order_no, present[3]),
                        ("status", status, present[4]),
                    ] {
                        if keep {
                            object.insert(name.to_string(), value);
                        }
                    }
                    object.insert("tradeNo".into(), "T1".into());
                    serde_json::to_vec(&object).unwrap()
                },
            );
        prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..200),
            4 => object,
        ]
    }

    /// An HTTP status: mostly one a Smilepayz code goes with.
    fn http_status() -> impl Strategy<Value = u16> {
        prop_oneof![
            3 => proptest::sample::select(vec![200u16, 202, 400, 401, 404, 429, 500, 502]),
            1 => 100u16..600,
        ]
    }

    /// True when `body`'s `code` and `responseCode` (each when present)
    /// both go with HTTP `status` (spec §6's table for `code`).
    fn codes_go_with(body: &[u8], status: u16) -> bool {
        let Ok(parsed) = Reply::parse(body) else {
            return false;
        };
        let rc_ok = match parsed.response_code.as_deref() {
            Some(rc) if rc.len() == 7 && rc.bytes().all(|b| b.is_ascii_digit()) => {
                rc[..3] == status.to_string()
            }
            _ => true,
        };
        let code_ok = parsed.code.as_deref().is_none_or(|code| {
            loket_protocol::catalogue::smilepayz_code_http(code) == Some(status)
        });
        rc_ok && code_ok
    }

    fn reply(status: u16, body: Vec<u8>) -> HttpReply {
        HttpReply {
            status,
            content_type: "application/json".into(),
            body: body.into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn an_inquiry_about_another_trade_no_decides_nothing() {
        let mut command = command(Operation::StatusCheck);
        command.provider_trace = "T-OURS".into();
        let request = connector().build_request(&command).unwrap();
        let answer = |trade_no: &str| {
            let body = format!(
                r#"{{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"{trade_no}","tradeType":2,"status":"SUCCESS"}}"#
            );
            connector()
                .classify_inquiry(&command, &request, &reply(200, body.into_bytes()))
                .outcome
        };
        assert_eq!(answer("T-OURS"), Outcome::Success);
        assert_eq!(answer("T-THEIRS"), Outcome::Unknown);
        // Before the creation told us its tradeNo, the reply's is taken.
        command.provider_trace.clear();
        let body = br#"{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T-ANY","tradeType":2,"status":"SUCCESS"}"#;
        assert_eq!(
            connector()
                .classify_inquiry(&command, &request, &reply(200, body.to_vec()))
                .outcome,
            Outcome::Success
        );
    }

    /// serde_json's `Value` keeps the last of two members with one key, so
    /// "FAILED" then "SUCCESS" read as a success. A reply that says two
    /// things decides nothing: it is unknown, never success nor failed.
    #[test]
    fn an_inquiry_reply_repeating_a_key_is_unknown() {
        let command = command(Operation::StatusCheck);
        let request = connector().build_request(&command).unwrap();
        for (first, last) in [
            ("FAILED", "SUCCESS"),
            ("SUCCESS", "FAILED"),
            ("SUCCESS", "SUCCESS"),
        ] {
            let body = format!(
                r#"{{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":2,"status":"{first}","status":"{last}"}}"#
            );
            let report = connector().classify_inquiry(
                &command,
                &request,
                &reply(200, body.clone().into_bytes()),
            );
            assert_eq!(report.outcome, Outcome::Unknown, "{body}");
        }
    }

    /// An inquiry's `00 SUCCESS` / `FAILED` on a status other than 200
    /// (spec §6 ASSUMES the HTTP status is the code's) decides nothing.
    #[test]
    fn an_inquiry_on_an_http_status_its_code_does_not_go_with_is_unknown() {
        let command = command(Operation::StatusCheck);
        let request = connector().build_request(&command).unwrap();
        let answer = |http: u16, body: &str| {
            connector().classify_inquiry(&command, &request, &reply(http, body.as_bytes().to_vec()))
        };
        for status in ["SUCCESS", "FAILED"] {
            for fields in [r#""code":"00","responseCode":"2009200""#, r#""code":"00""#] {
                let body = format!(
                    r#"{{{fields},"message":"Successful","tradeNo":"T1","tradeType":2,"status":"{status}","money":{{"currency":"IDR","amount":100000}}}}"#
                );
                assert_ne!(answer(200, &body).outcome, Outcome::Unknown, "{body}");
                for http in [202, 400, 404, 429] {
                    let report = answer(http, &body);
                    assert_eq!(report.outcome, Outcome::Unknown, "HTTP {http}: {body}");
                    assert!(
                        report.detail.contains(&format!("HTTP {http}"))
                            && report.detail.contains("goes with HTTP 200"),
                        "HTTP {http}: {}",
                        report.detail
                    );
                    assert!(!report.not_found);
                }
            }
        }
    }

    #[test]
    fn an_inquiry_whose_code_and_response_code_disagree_is_unknown() {
        let command = command(Operation::StatusCheck);
        let request = connector().build_request(&command).unwrap();
        for (code, rc) in [("00", "4009203"), ("10", "2009200"), ("00", "5009200")] {
            let body = format!(
                r#"{{"code":"{code}","responseCode":"{rc}","message":"Successful","tradeNo":"T1","tradeType":2,"status":"SUCCESS","money":{{"currency":"IDR","amount":100000}}}}"#
            );
            for http in [200, 400, 500] {
                let report = connector().classify_inquiry(
                    &command,
                    &request,
                    &reply(http, body.clone().into_bytes()),
                );
                assert_eq!(report.outcome, Outcome::Unknown, "HTTP {http}: {body}");
                assert!(
                    report.detail.contains(&format!("code {code}")) && report.detail.contains(rc),
                    "HTTP {http}: {}",
                    report.detail
                );
            }
        }
    }

    /// "Order not found" arrives on HTTP 500 with 5009x00 (spec §6), whose
    /// prefix agrees: still `not_found` past the grace. The same body on a
    /// status its code does not go with is no "not found".
    #[test]
    fn order_not_found_is_recognised_on_its_own_status_only() {
        let mut command = command(Operation::StatusCheck);
        // Not a UUIDv7: counts as past the grace.
        command.transaction_id = uuid::Uuid::new_v4().to_string();
        let request = connector().build_request(&command).unwrap();
        for body in [
            r#"{"code":"99","responseCode":"5009100","message":"Payout order not found"}"#,
            r#"{"code":"99","message":"Order not found"}"#,
        ] {
            let answer = |http: u16| {
                connector().classify_inquiry(
                    &command,
                    &request,
                    &reply(http, body.as_bytes().to_vec()),
                )
            };
            let found = answer(500);
            assert_eq!(found.outcome, Outcome::Unknown, "{body}");
            assert!(found.not_found, "{body}: {found:?}");
            for http in [200, 404] {
                let report = answer(http);
                assert_eq!(report.outcome, Outcome::Unknown, "HTTP {http}: {body}");
                assert!(!report.not_found, "HTTP {http}: {body}: {report:?}");
            }
        }
    }

    /// A creation answered `00 PROCESSING` with a refusing responseCode: the
    /// funds may be frozen, so it is not failed (nor pending).
    #[test]
    fn a_creation_whose_code_and_response_code_disagree_is_unknown() {
        let command = command(Operation::PayOut);
        let request = connector().build_request(&command).unwrap();
        for body in [
            format!(
                r#"{{"code":"00","responseCode":"4009103","message":"Insufficient Balance","orderNo":"{ORDER_NO}","tradeNo":"T1","status":"PROCESSING"}}"#
            ),
            format!(
                r#"{{"code":"10","responseCode":"2009100","message":"Successful","orderNo":"{ORDER_NO}","tradeNo":"T1","status":"PROCESSING"}}"#
            ),
        ] {
            for http in [200, 400] {
                let report =
                    classify_creation(&command, &request, &reply(http, body.clone().into_bytes()));
                assert_eq!(report.outcome, Outcome::Unknown, "HTTP {http}: {body}");
                assert!(
                    report.detail.contains("disagree"),
                    "HTTP {http}: {}",
                    report.detail
                );
            }
        }
    }

    /// An acceptance on a 4xx is no acceptance (nor a refusal), and brings no
    /// payment instructions; a refusal on its own 4xx is still failed.
    #[test]
    fn a_creation_on_an_http_status_its_code_does_not_go_with_is_unknown() {
        for operation in [Operation::PayIn, Operation::PayOut] {
            let command = command(operation);
            let request = connector().build_request(&command).unwrap();
            let rc = if operation == Operation::PayIn {
                "2009000"
            } else {
                "2009100"
            };
            let accepted = format!(
                r#"{{"code":"00","responseCode":"{rc}","message":"Successful","orderNo":"{ORDER_NO}","tradeNo":"T1","status":"PROCESSING","channel":{{"paymentMethod":"QRIS","qrString":"000201"}}}}"#
            );
            let on = |http: u16, body: &str| {
                classify_creation(&command, &request, &reply(http, body.as_bytes().to_vec()))
            };
            let ok = on(200, &accepted);
            assert_eq!(ok.outcome, Outcome::Pending, "{accepted}");
            assert_eq!(ok.payment.is_some(), operation == Operation::PayIn);
            for http in [400, 404, 429] {
                let report = on(http, &accepted);
                assert_eq!(report.outcome, Outcome::Unknown, "HTTP {http}: {accepted}");
                assert_eq!(report.payment, None, "HTTP {http}");
                assert!(
                    report.detail.contains(&format!("HTTP {http}")),
                    "{}",
                    report.detail
                );
            }
        }
        let command = command(Operation::PayOut);
        let request = connector().build_request(&command).unwrap();
        let refused = br#"{"code":"10","responseCode":"4009103","message":"Insufficient Balance"}"#;
        let report = classify_creation(&command, &request, &reply(400, refused.to_vec()));
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        let report = classify_creation(&command, &request, &reply(200, refused.to_vec()));
        assert_eq!(report.outcome, Outcome::Unknown, "{report:?}");
    }

    /// A balance whose reply's code is not its HTTP status' is not read.
    #[tokio::test]
    async fn a_balance_on_an_http_status_its_code_does_not_go_with_is_refused() {
        async fn answer(status: axum::http::StatusCode) -> (axum::http::StatusCode, &'static str) {
            (
                status,
                r#"{"code":"00","responseCode":"2009300","message":"Successful","balance":{"payOut":{"currency":"IDR","available":500000,"frozen":0}}}"#,
            )
        }
        let ok = loket_simulators::common::serve_stub(
            axum::Router::new().fallback(|| answer(axum::http::StatusCode::OK)),
        )
        .await
        .unwrap();
        assert_eq!(
            connector_at(ok).balance().await.unwrap(),
            Money::idr(500_000)
        );
        let not_found = loket_simulators::common::serve_stub(
            axum::Router::new().fallback(|| answer(axum::http::StatusCode::NOT_FOUND)),
        )
        .await
        .unwrap();
        let result = connector_at(not_found).balance().await;
        assert!(
            matches!(result, Err(ConnectorError::BadReply(_))),
            "{result:?}"
        );
    }

    /// A balance error's texts reach the ingress's client: the merchant
    /// secret echoed in the provider's message is masked out of them.
    #[tokio::test]
    async fn a_balance_error_echoing_the_merchant_secret_is_masked() {
        let echoing = loket_simulators::common::serve_stub(axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                r#"{"code":"12","responseCode":"4019300","message":"bad signature for secret merchant-secret-0001"}"#,
            )
        }))
        .await
        .unwrap();
        let error = connector_at(echoing).balance().await.unwrap_err();
        let ConnectorError::Provider { code, message } = &error else {
            panic!("a provider refusal: {error:?}");
        };
        assert_eq!(code, "4019300");
        assert_eq!(
            message,
            &format!("bad signature for secret {}", loket_connector::mask::MASK)
        );
        assert!(
            !error.to_string().contains("merchant-secret-0001"),
            "{error}"
        );
    }

    /// A hosted-page pay-in: the method its payer picked on Smilepayz's page
    /// comes back from the inquiry as instructions naming only that method.
    #[test]
    fn a_pay_in_inquiry_passes_on_the_method_smilepayz_reports() {
        let mut command = command(Operation::StatusCheck);
        command.original_operation = Operation::PayIn;
        let request = connector().build_request(&command).unwrap();
        let answer = |command: &Command, status: u16, fields: &str| {
            let body = format!(
                r#"{{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":1,"money":{{"currency":"IDR","amount":100000}},{fields}}}"#
            );
            connector().classify_inquiry(command, &request, &reply(status, body.into_bytes()))
        };
        let paid = answer(
            &command,
            200,
            r#""paymentMethod":"QRIS","status":"SUCCESS""#,
        );
        assert_eq!(paid.outcome, Outcome::Success);
        assert_eq!(
            paid.payment,
            Some(pb::PaymentInstructions {
                method: "QRIS".into(),
                ..Default::default()
            })
        );
        // Still awaiting its method: nothing to pass on.
        let waiting = answer(&command, 200, r#""status":"INIT""#);
        assert_eq!(waiting.outcome, Outcome::Pending);
        assert_eq!(waiting.payment, None);
        // A reply the server failed on decides nothing, the method included.
        let failed_server = answer(
            &command,
            500,
            r#""paymentMethod":"QRIS","status":"SUCCESS""#,
        );
        assert_eq!(failed_server.outcome, Outcome::Unknown);
        assert_eq!(failed_server.payment, None);
        // A pay-out's method is the bank it was sent to: no payment instructions.
        command.original_operation = Operation::PayOut;
        let pay_out = answer(&command, 200, r#""paymentMethod":"BCA","status":"SUCCESS""#);
        assert_eq!(pay_out.outcome, Outcome::Success);
        assert_eq!(pay_out.payment, None);
    }

    /// Money-safety rule 8: a successful order's amount that cannot be read,
    /// or is missing, is not passed over in silence; the reconciler flags it.
    #[test]
    fn an_unreadable_or_missing_amount_on_a_success_is_reported_unreadable() {
        let command = command(Operation::StatusCheck);
        let request = connector().build_request(&command).unwrap();
        let answer = |money: &str| {
            let body = format!(
                r#"{{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":2,"status":"SUCCESS","money":{money}}}"#
            );
            connector().classify_inquiry(&command, &request, &reply(200, body.into_bytes()))
        };
        let readable = answer(r#"{"currency":"IDR","amount":100000}"#);
        assert_eq!(readable.provider_amount, Some(Money::idr(100_000)));
        assert_eq!(readable.provider_amount_unreadable, None);
        for money in [
            r#"{"currency":"IDR","amount":100000.5}"#,
            r#"{"currency":"USD","amount":100000}"#,
            r#"{"currency":"IDR","amount":"lots"}"#,
        ] {
            let report = answer(money);
            assert_eq!(report.outcome, Outcome::Success, "{money}");
            assert_eq!(report.provider_amount, None, "{money}");
            assert!(
                report
                    .provider_amount_unreadable
                    .as_deref()
                    .is_some_and(|why| why.starts_with("money")),
                "{money}: {report:?}"
            );
        }
        // A success that names no amount cannot be checked either.
        let body = br#"{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":2,"status":"SUCCESS"}"#;
        let report = connector().classify_inquiry(&command, &request, &reply(200, body.to_vec()));
        assert_eq!(report.outcome, Outcome::Success);
        assert_eq!(
            report.provider_amount_unreadable.as_deref(),
            Some("money: missing, so the amount cannot be checked")
        );
        // A failure moved no money: its missing amount is nothing to flag.
        let body = br#"{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":2,"status":"FAILED"}"#;
        let report = connector().classify_inquiry(&command, &request, &reply(200, body.to_vec()));
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.provider_amount_unreadable, None);
    }

    /// A provider that echoes the request's `X-SIGNATURE` in its message:
    /// the report (stored with the transaction) carries the mask, not the
    /// signature, as the stored exchange does.
    #[tokio::test]
    async fn a_signature_echoed_in_a_reply_reaches_neither_the_report_nor_the_exchange() {
        async fn echo(headers: axum::http::HeaderMap) -> (axum::http::StatusCode, String) {
            let signature = headers
                .get(wire::HEADER_SIGNATURE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let reply = serde_json::json!({
                "code": "10",
                "responseCode": "4009103",
                "message": format!("Insufficient Balance; you signed {signature}"),
                "orderNo": ORDER_NO,
            });
            (axum::http::StatusCode::BAD_REQUEST, reply.to_string())
        }
        let base_url = loket_simulators::common::serve_stub(axum::Router::new().fallback(echo))
            .await
            .unwrap();
        let report = connector_at(base_url)
            .execute(&command(Operation::PayOut))
            .await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        let message = report.provider_message.clone().unwrap_or_default();
        assert_eq!(message, format!("Insufficient Balance; you signed {MASK}"));
        let exchange = &report.exchanges[0];
        assert!(exchange.response.contains(&message), "{exchange:?}");
    }

    /// A pay-out to a port nothing listens on never left, and the report
    /// says so (the worker fails a first send of it); one the provider may
    /// have received (a reply it never finished) did not.
    #[tokio::test]
    async fn a_pay_out_refused_a_connection_never_left() {
        let refused = connector_at("http://127.0.0.1:9".into())
            .execute(&command(Operation::PayOut))
            .await;
        assert_eq!(refused.outcome, Outcome::Unknown, "{refused:?}");
        assert!(refused.never_left, "{refused:?}");
        let silent = loket_simulators::common::serve_stub(axum::Router::new().fallback(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            "late"
        }))
        .await
        .unwrap();
        let timed_out = connector_at(silent)
            .execute(&command(Operation::PayOut))
            .await;
        assert_eq!(timed_out.outcome, Outcome::Unknown, "{timed_out:?}");
        assert!(!timed_out.never_left, "{timed_out:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Any reply to a pay-out or pay-in: no panic, never `success` (a
        /// creation is accepted at best), never `failed` on a 5xx, nothing
        /// but `unknown` unless its codes go with each other and with the
        /// HTTP status.
        #[test]
        fn any_creation_reply_is_classified_without_guessing(
            status in http_status(),
            body in reply_body(),
            operation in proptest::sample::select(vec![Operation::PayOut, Operation::PayIn]),
        ) {
            let command = command(operation);
            let request = connector().build_request(&command).unwrap();
            let report = classify_creation(&command, &request, &reply(status, body.clone()));
            prop_assert_ne!(report.outcome, Outcome::Success, "{}", String::from_utf8_lossy(&body));
            if status >= 500 {
                prop_assert_ne!(report.outcome, Outcome::Failed, "HTTP {}: {}", status, String::from_utf8_lossy(&body));
            }
            // Pending or failed only from codes that agree with each other
            // and with the HTTP status.
            if report.outcome != Outcome::Unknown {
                prop_assert!(
                    codes_go_with(&body, status),
                    "HTTP {} decided {:?}: {}", status, report.outcome, String::from_utf8_lossy(&body)
                );
            }
        }

        /// Any reply to an inquiry: no panic; on a 5xx neither `success`
        /// nor `failed` (an "order not found" may still count as such);
        /// a reply about another order decides nothing, nor one whose codes
        /// do not go with each other and with the HTTP status.
        #[test]
        fn any_inquiry_reply_is_classified_without_guessing(
            status in http_status(),
            body in reply_body(),
        ) {
            let command = command(Operation::StatusCheck);
            let request = connector().build_request(&command).unwrap();
            let report = connector().classify_inquiry(&command, &request, &reply(status, body.clone()));
            let text = String::from_utf8_lossy(&body);
            if status >= 500 {
                prop_assert!(
                    !matches!(report.outcome, Outcome::Success | Outcome::Failed),
                    "HTTP {} decided {:?}: {}", status, report.outcome, text
                );
            }
            if report.outcome != Outcome::Unknown || report.not_found {
                prop_assert!(
                    codes_go_with(&body, status),
                    "HTTP {} decided {:?} (not_found {}): {}", status, report.outcome, report.not_found, text
                );
            }
            if text.contains("SOMEONEELSE0001") && !text.contains(ORDER_NO) {
                prop_assert!(
                    !matches!(report.outcome, Outcome::Success | Outcome::Failed),
                    "decided {:?} from a reply about another order: {}", report.outcome, text
                );
            }
        }
    }
}
