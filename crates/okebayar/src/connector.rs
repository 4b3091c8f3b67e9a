//! The OkeBayar connector: builds and signs one request per operation
//! (spec §3–§4), sends it once over the pooled HTTP client, and classifies the
//! reply through [`crate::codes`] into a [`Report`].
//!
//! Rules this module enforces:
//! - our reference (`command.provider_reference`) is the `referencecode` of
//!   every call, the status check included (money-safety rule 3);
//! - anything we cannot read with certainty — a timeout, a reset, a 5xx, an
//!   HTML error page, a garbled or empty body, a missing status field, status
//!   fields that contradict each other, a reply about another reference — is
//!   [`Outcome::Unknown`] (rule 1);
//! - a prepaid purchase's success without a serial number (the PLN token,
//!   the voucher code), in its reply or in a status check about it, is
//!   [`Outcome::Pending`]: `000` without `serialnumber` reads as `001`
//!   (spec §7: poll for the SN, never refund), never a final success
//!   nothing could be delivered on;
//! - the stored exchange is built from the fields with `userpin` and
//!   `signature` replaced by `***`, then passed through a [`Masker`] holding
//!   the PIN and the signature as a second line of defence (rule 7); the
//!   report's texts and the errors of the balance and the echo pass through
//!   the same masking. Neither value is ever logged nor put in a `Debug`
//!   output.
//! - money is parsed exactly ([`Money::parse_decimal`]); an unparseable amount
//!   never fails the operation: it is left out and named in `detail`;
//! - what a report takes from a reply (the status, the amounts, the serial
//!   number, the tracecode, an inquiry's data and bill) is read at the place
//!   the spec gives it: the reply's top level, or the `additionaldata`
//!   block for a bill's per-product details. One found only elsewhere is
//!   absent; one written there two ways is never settled by taking the
//!   first (what each then means is said where it is read);
//! - a report's texts and the errors quote a reply's free text (message,
//!   `info`, an unreadable amount or code) only in part, so a 1 MB reply
//!   cannot make a result event too large for the bus. Values that are data,
//!   not notes (the inquiry data a later call sends back, the serial number,
//!   the tracecode, the bill's details) are kept whole.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use loket_connector::http::{self, HttpClient, HttpReply, Transport};
use loket_connector::mask::{Masker, MASK};
use loket_connector::report::{clip, push_detail, quoted};
use loket_connector::{Command, Connector, ConnectorError, Report};
use loket_protocol::catalogue::CodeOperation;
use loket_protocol::conversions::timestamp;
use loket_protocol::pb::{self, bus};
use loket_protocol::{Currency, Money, Operation, Outcome, Provider};

use crate::codes::{self, Classification};
use crate::settings::{self, OkeBayarSettings, INQUIRY_EXPIRY_FALLBACK_MINUTES};
use crate::sign;
use crate::wire::{self, Disagreement, Fields, Format, Place};

/// Keys of [`Report::inquiry_data`] (and so of a later payment command's
/// `inquiry_data`): the inquiry reply's values as received text, echoed
/// verbatim by the purchase / payment that follows.
pub mod inquiry_keys {
    pub const INQUIRYCODE: &str = "inquirycode";
    pub const REF1: &str = "ref1";
    pub const REF2: &str = "ref2";
    pub const REF3: &str = "ref3";
    pub const NOMINAL: &str = "nominal";
    pub const ADMINFEE: &str = "adminfee";
    pub const TRACECODE: &str = "tracecode";
    /// Every key, in the order they are looked up in a reply.
    pub const ALL: [&str; 7] = [INQUIRYCODE, REF1, REF2, REF3, NOMINAL, ADMINFEE, TRACECODE];
}

/// Request field names that carry secrets; their values are masked in every
/// stored copy.
pub const SECRET_FIELDS: [&str; 2] = ["userpin", "signature"];

/// One request, ready to send. `Debug` masks the secret fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation name recorded on the exchange (`purchase`, `status`…).
    pub operation: &'static str,
    pub referencecode: String,
    pub fields: Vec<(&'static str, String)>,
}

impl Request {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as sent (contains the PIN and the signature).
    pub fn body(&self, format: Format) -> Vec<u8> {
        wire::encode(
            format,
            wire::REQUEST_ROOT,
            self.fields.iter().map(|(k, v)| (*k, v.as_str())),
        )
    }

    /// The body with `userpin` and `signature` replaced by `***`.
    pub fn masked_body(&self, format: Format) -> Vec<u8> {
        wire::encode(
            format,
            wire::REQUEST_ROOT,
            self.fields.iter().map(|(k, v)| {
                if SECRET_FIELDS.contains(k) {
                    (*k, MASK)
                } else {
                    (*k, v.as_str())
                }
            }),
        )
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        for (k, v) in &self.fields {
            if SECRET_FIELDS.contains(k) {
                list.entry(k, &MASK);
            } else {
                list.entry(k, v);
            }
        }
        list.finish()
    }
}

/// Why a command could not be turned into a request (nothing was sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{0}: required for this operation but empty")]
    Missing(&'static str),
    #[error("inquiry_data.{0}: required for a bill payment (echoed verbatim from the inquiry) but missing")]
    MissingInquiryData(&'static str),
    #[error("amount {asked} differs from the inquiry (nominal {nominal}, adminfee {adminfee})")]
    AmountMismatch {
        asked: i64,
        nominal: String,
        adminfee: String,
    },
    #[error("{0} cannot be sent as a command (use check_status)")]
    WrongOperation(Operation),
    #[error("{0} is not an OkeBayar operation")]
    Unsupported(Operation),
}

pub struct OkeBayarConnector {
    settings: OkeBayarSettings,
    http: HttpClient,
    masker: Masker,
}

impl fmt::Debug for OkeBayarConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkeBayarConnector")
            .field("url", &self.settings.url)
            .field("userid", &self.settings.userid)
            .field("format", &self.settings.format)
            .finish_non_exhaustive()
    }
}

impl OkeBayarConnector {
    /// One connector (and so one pooled HTTP client) per process.
    pub fn new(settings: OkeBayarSettings) -> Self {
        let http = HttpClient::new(settings.timeout(), settings.connect_timeout());
        let masker = Masker::new(crate::callback::account_secrets(
            &settings.userid,
            &settings.userpin,
        ));
        OkeBayarConnector {
            settings,
            http,
            masker,
        }
    }

    pub fn settings(&self) -> &OkeBayarSettings {
        &self.settings
    }

    /// The request for `command` (its own operation; for a status check the
    /// status request about `command.provider_reference`).
    pub fn build_request(&self, command: &Command) -> Result<Request, BuildError> {
        let required = |name: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(BuildError::Missing(name))
            } else {
                Ok(value.to_string())
            }
        };
        let mut fields: Vec<(&'static str, String)> = Vec::with_capacity(16);
        let operation = match command.operation {
            Operation::PrepaidPurchase => {
                fields.push(("transactioncode", settings::PREPAID_TRANSACTION_CODE.into()));
                fields.push((
                    "productcode",
                    required("provider_product_code", &command.provider_product_code)?,
                ));
                fields.push(("accnumber", required("account", &command.account)?));
                // PLN after an inquiry: ref1..ref3 verbatim, no inquirycode (spec §4).
                for key in [inquiry_keys::REF1, inquiry_keys::REF2, inquiry_keys::REF3] {
                    if let Some(value) = command.inquiry_data.get(key) {
                        fields.push((key, value.clone()));
                    }
                }
                "purchase"
            }
            Operation::PrepaidInquiry => {
                fields.push(("transactioncode", settings::PREPAID_TRANSACTION_CODE.into()));
                fields.push(("querycode", settings::PREPAID_INQUIRY_QUERY_CODE.into()));
                fields.push((
                    "productcode",
                    required("provider_product_code", &command.provider_product_code)?,
                ));
                fields.push(("accnumber", required("account", &command.account)?));
                "prepaid_inquiry"
            }
            Operation::BillInquiry => {
                fields.push((
                    "transactioncode",
                    settings::BILL_INQUIRY_TRANSACTION_CODE.into(),
                ));
                fields.push((
                    "productcode",
                    required("provider_product_code", &command.provider_product_code)?,
                ));
                push_bill_accounts(&mut fields, command, required("account", &command.account)?);
                "bill_inquiry"
            }
            Operation::BillPayment => {
                let data = |key: &'static str| {
                    command
                        .inquiry_data
                        .get(key)
                        .cloned()
                        .ok_or(BuildError::MissingInquiryData(key))
                };
                let inquirycode = data(inquiry_keys::INQUIRYCODE)?;
                if inquirycode.trim().is_empty() {
                    return Err(BuildError::MissingInquiryData(inquiry_keys::INQUIRYCODE));
                }
                let nominal = data(inquiry_keys::NOMINAL)?;
                let adminfee = data(inquiry_keys::ADMINFEE)?;
                check_payment_amount(command.amount, &nominal, &adminfee)?;
                fields.push((
                    "transactioncode",
                    self.settings.payment_transaction_code.clone(),
                ));
                fields.push((
                    "productcode",
                    required("provider_product_code", &command.provider_product_code)?,
                ));
                push_bill_accounts(&mut fields, command, required("account", &command.account)?);
                fields.push(("inquirycode", inquirycode));
                fields.push(("nominal", nominal));
                fields.push(("adminfee", adminfee));
                for key in [inquiry_keys::REF2, inquiry_keys::REF3] {
                    fields.push((
                        key,
                        command.inquiry_data.get(key).cloned().unwrap_or_default(),
                    ));
                }
                "bill_payment"
            }
            Operation::StatusCheck => {
                fields.push(("transactioncode", settings::STATUS_TRANSACTION_CODE.into()));
                if !command.provider_trace.trim().is_empty() {
                    fields.push(("tracecode", command.provider_trace.trim().to_string()));
                }
                "status"
            }
            other @ (Operation::QrPayment
            | Operation::QrCancel
            | Operation::QrRefund
            | Operation::PayIn
            | Operation::PayOut) => return Err(BuildError::Unsupported(other)),
        };
        Ok(self.finish(operation, fields, &command.provider_reference))
    }

    /// Appends the credentials, the signature and our reference.
    fn finish(
        &self,
        operation: &'static str,
        mut fields: Vec<(&'static str, String)>,
        referencecode: &str,
    ) -> Request {
        let userpin = self.settings.userpin.expose();
        fields.push(("userid", self.settings.userid.clone()));
        fields.push(("userpin", userpin.to_string()));
        fields.push((
            "signature",
            sign::signature(&self.settings.userid, userpin, referencecode),
        ));
        fields.push(("referencecode", referencecode.to_string()));
        Request {
            operation,
            referencecode: referencecode.to_string(),
            fields,
        }
    }

    pub fn balance_request(&self, referencecode: &str) -> Request {
        let fields = vec![(
            "transactioncode",
            settings::BALANCE_TRANSACTION_CODE.to_string(),
        )];
        self.finish("balance", fields, referencecode)
    }

    pub fn echo_request(&self, referencecode: &str, message: &str) -> Request {
        let fields = vec![
            (
                "transactioncode",
                self.settings.echo_transaction_code.clone(),
            ),
            ("message", message.to_string()),
        ];
        self.finish("echo", fields, referencecode)
    }

    /// Sends one request and records the exchange (masked).
    async fn send(&self, request: &Request) -> (Transport, bus::Exchange) {
        let format = self.settings.format;
        let at = Utc::now();
        let started = Instant::now();
        let result = self
            .http
            .post(
                &self.settings.url,
                format.content_type(),
                &[("accept", format.content_type().to_string())],
                request.body(format),
            )
            .await;
        let elapsed = started.elapsed();
        let mask = self.masking(request);
        let mut exchange = bus::Exchange {
            operation: request.operation.to_string(),
            url: mask(&self.settings.url),
            request: mask(&String::from_utf8_lossy(&request.masked_body(format))),
            response: String::new(),
            http_status: 0,
            duration_ms: u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX),
            error: String::new(),
            at: Some(timestamp(at)),
        };
        let outcome = http::record(&mut exchange, result, &mask);
        metrics::counter!(
            crate::metrics::REQUESTS,
            "operation" => request.operation,
            "transport" => outcome.label()
        )
        .increment(1);
        metrics::histogram!(crate::metrics::REQUEST_SECONDS, "operation" => request.operation)
            .record(elapsed.as_secs_f64());
        (outcome, exchange)
    }

    /// Sends `command` (its own operation, or a status check) and classifies.
    async fn run_command(&self, command: &Command) -> Report {
        let request = match self.build_request(command) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, operation = %command.operation, "request not built; nothing sent");
                return Report::not_built(command.operation, error);
            }
        };
        let (transport, exchange) = self.send(&request).await;
        let mut report = self.classify(command, &request, transport);
        report.exchanges.push(exchange);
        metrics::counter!(crate::metrics::OUTCOMES, "operation" => request.operation, "outcome" => report.outcome.as_str())
            .increment(1);
        // The worker logs the outcome once per command at INFO; this is the
        // per-exchange detail.
        tracing::debug!(
            operation = request.operation,
            referencecode = %command.provider_reference,
            outcome = %report.outcome,
            code = report.provider_code.as_deref().unwrap_or(""),
            not_found = report.not_found,
            "okebayar exchange classified"
        );
        report
    }

    /// Masks the secrets a text about `request`'s exchange may carry: the
    /// PIN (alone, or glued to the userid as the signature's input has it)
    /// and this request's signature. The one masking of everything a reply
    /// can fill: the stored exchange, the report, the errors of the balance
    /// and the echo (which reach gRPC clients and the log). A provider that
    /// echoes the request in its message must not carry them anywhere.
    fn masking(&self, request: &Request) -> impl Fn(&str) -> String + '_ {
        let signature = Masker::new([request.get("signature").unwrap_or_default()]);
        move |text| signature.mask(&self.masker.mask(text))
    }

    /// Classifies what the transport produced for `request` (pure: no I/O).
    /// [`Self::classify_reply`], with every text the report took from the
    /// reply passed through [`Self::masking`], as the exchanges are, and the
    /// provider's message then bounded ([`quoted`]; after masking, so a cut
    /// never leaves part of a secret).
    fn classify(&self, command: &Command, request: &Request, transport: Transport) -> Report {
        let mut report = self.classify_reply(command, request, transport);
        report.mask_texts(self.masking(request));
        report.provider_message = report.provider_message.as_deref().map(quoted);
        report
    }

    /// Sends a request that is no transaction (balance, echo) and reads its
    /// reply with `read`. Every text of the error, whether the transport,
    /// the decoder or `read` wrote it, passes through [`Self::masking`].
    async fn ask<T>(
        &self,
        request: &Request,
        read: impl FnOnce(&Fields) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let (transport, _exchange) = self.send(request).await;
        reply_fields(transport, &request.referencecode)
            .and_then(|fields| read(&fields))
            .map_err(|error| error.masked(self.masking(request)))
    }

    fn classify_reply(&self, command: &Command, request: &Request, transport: Transport) -> Report {
        let reply = match transport {
            Transport::Reply(reply) => reply,
            Transport::NotSent(error) => return not_sent(command.operation, error),
            Transport::MaybeSent(error) => return Report::unknown(error),
        };
        let fields = match decode_reply(&reply) {
            Ok(fields) => fields,
            Err(why) => return Report::unknown(why),
        };
        if let Some(why) = foreign_reference(&fields, &request.referencecode) {
            return Report::unknown(why);
        }
        if let Some(why) = foreign_inquiry(&fields, request) {
            return Report::unknown(why);
        }
        let is_status = command.operation == Operation::StatusCheck;
        let about = if is_status {
            command.original_operation
        } else {
            command.operation
        };
        let http_ok = (200..300).contains(&reply.status);
        let code = match reply_status(&fields) {
            ReplyStatus::Agreed(code) => code,
            ReplyStatus::Absent => {
                return Report::unknown(format!(
                    "HTTP {}: reply has no status field ({})",
                    reply.status,
                    STATUS_FIELDS.join(" / ")
                ))
            }
            ReplyStatus::Contradicting(why) => {
                let mut report = Report::unknown(format!("HTTP {}: {why}", reply.status));
                // A request's own reply is followed by a status check; when
                // the check, the provider's record, says two things at once,
                // no later check outranks it: a person settles it (the
                // reconciler parks the transaction in `needs_review`).
                if is_status && http_ok {
                    report.contradiction = Some(format!("status check: {why}"));
                }
                return report;
            }
        };
        // "No record" lets a money-moving request be sent again once the
        // grace has passed: only a 2xx reply may say it.
        if is_status && http_ok && code == self.settings.status_not_found_code.trim() {
            let mut report = Report::new(Outcome::Unknown);
            report.not_found = true;
            report.provider_code = Some(code.to_string());
            report.provider_message =
                Some("status check: OkeBayar has no record of this referencecode".into());
            report.detail = "not found at the provider".into();
            report.provider_trace = reply_trace(&fields, &mut report.detail);
            note_hit_trace("status check", &mut report);
            return report;
        }
        let classification = if is_status {
            codes::classify_status_check(code, about)
        } else if about.moves_money() {
            codes::classify_money_request(code, about, command.first_send)
        } else {
            codes::classify(code, CodeOperation::from(about))
        };
        let mut report = fill_report(&fields, code, &classification, about, is_status);
        if !http_ok {
            // The spec's table: an HTTP error is unknown (check status),
            // whatever code its body carries; the code is kept for the log.
            // An inquiry moves no money: its code is taken as it reads (a
            // success code still needs a 2xx), so a refused inquiry fails
            // at once with its reason.
            let distrusted = if is_status || about.moves_money() {
                report.outcome != Outcome::Unknown
            } else {
                report.outcome == Outcome::Success
            };
            if distrusted {
                push_detail(
                    &mut report.detail,
                    &format!(
                        "{} code {code} on HTTP {}: not trusted",
                        report.outcome.as_str(),
                        reply.status
                    ),
                );
                report.outcome = Outcome::Unknown;
            } else {
                push_detail(&mut report.detail, &format!("HTTP {}", reply.status));
            }
        }
        if is_status {
            note_hit_trace("status check", &mut report);
        } else if report.outcome == Outcome::Unknown {
            note_hit_trace("unresolved hit", &mut report);
        }
        report
    }

    /// Connectivity check (`OkeBayar-echo`, ASSUMED): sends `message` under a
    /// fresh reference and returns the message OkeBayar echoed, masked like
    /// any reply text (the probe quotes it in its error when it differs).
    pub async fn echo(&self, message: &str) -> Result<String, ConnectorError> {
        let request = self.echo_request(&fresh_reference("ECHO"), message);
        let echoed = self
            .ask(&request, |fields| {
                Ok(fields.get("message").unwrap_or_default().to_string())
            })
            .await?;
        Ok(self.masking(&request)(&echoed))
    }
}

impl Connector for OkeBayarConnector {
    fn provider(&self) -> Provider {
        Provider::OkeBayar
    }

    /// One request, at most its timeout.
    fn longest_send(&self) -> Duration {
        self.settings.timeout()
    }

    async fn execute(&self, command: &Command) -> Report {
        if command.operation == Operation::StatusCheck {
            return self.check_status(command).await;
        }
        self.run_command(command).await
    }

    async fn check_status(&self, command: &Command) -> Report {
        let command = if command.operation == Operation::StatusCheck {
            std::borrow::Cow::Borrowed(command)
        } else {
            std::borrow::Cow::Owned(command.as_status_check())
        };
        self.run_command(&command).await
    }

    /// The echo: OkeBayar must answer with the message we sent.
    async fn probe(&self) -> Option<Result<(), ConnectorError>> {
        const MESSAGE: &str = "loket-probe";
        let echoed = match self.echo(MESSAGE).await {
            Ok(echoed) => echoed,
            Err(error) => return Some(Err(error)),
        };
        if echoed == MESSAGE {
            Some(Ok(()))
        } else {
            let shown = clip(&echoed, 64);
            Some(Err(ConnectorError::BadReply(format!(
                "echo answered {shown:?} instead of {MESSAGE:?}"
            ))))
        }
    }

    async fn balance(&self) -> Result<Money, ConnectorError> {
        let request = self.balance_request(&fresh_reference("BAL"));
        self.ask(&request, read_balance).await
    }
}

/// The deposit a balance reply reports, or the [`ConnectorError`] for it.
fn read_balance(fields: &Fields) -> Result<Money, ConnectorError> {
    let code = match reply_status(fields) {
        ReplyStatus::Agreed(code) => code,
        ReplyStatus::Absent => {
            return Err(ConnectorError::BadReply(
                "balance reply has no responsecode".into(),
            ))
        }
        ReplyStatus::Contradicting(why) => {
            return Err(ConnectorError::BadReply(format!("balance reply: {why}")))
        }
    };
    let classification = codes::classify(code, CodeOperation::Balance);
    if classification.outcome != Outcome::Success {
        let message = fields
            .non_empty("responsestatus")
            .map(str::to_string)
            .or(classification.meaning)
            .or(classification.problem)
            .unwrap_or_default();
        return Err(ConnectorError::Provider {
            code: clip(code, 16).to_string(),
            message,
        });
    }
    let text = fields
        .non_empty("balance")
        .ok_or_else(|| ConnectorError::BadReply("balance reply has no balance".into()))?;
    Money::parse_decimal(text, Currency::Idr)
        .map_err(|error| ConnectorError::BadReply(format!("balance: {error}")))
}

/// A fresh alphanumeric reference for calls that are not transactions
/// (balance, echo): the signature needs one.
fn fresh_reference(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Fields of a non-transactional reply, or the [`ConnectorError`] for it.
fn reply_fields(transport: Transport, referencecode: &str) -> Result<Fields, ConnectorError> {
    let reply = match transport {
        Transport::Reply(reply) => reply,
        Transport::NotSent(error) | Transport::MaybeSent(error) => {
            return Err(ConnectorError::Unavailable(error))
        }
    };
    if reply.status >= 500 {
        return Err(ConnectorError::Unavailable(format!(
            "HTTP {}",
            reply.status
        )));
    }
    let fields = decode_reply(&reply).map_err(ConnectorError::BadReply)?;
    if let Some(why) = foreign_reference(&fields, referencecode) {
        return Err(ConnectorError::BadReply(why));
    }
    Ok(fields)
}

/// Decodes a reply body, or says why the outcome is unknown.
fn decode_reply(reply: &HttpReply) -> Result<Fields, String> {
    if reply.status >= 500 {
        return Err(format!("HTTP {} from OkeBayar", reply.status));
    }
    let format = Format::sniff(&reply.body);
    wire::decode(format, &reply.body).map_err(|error| {
        if (200..300).contains(&reply.status) {
            format!("unparseable reply (HTTP {}): {error}", reply.status)
        } else {
            format!("HTTP {} without a parseable status: {error}", reply.status)
        }
    })
}

/// A reply naming another `referencecode` is not about our request; nor is
/// one that names ours and another too (a repeated tag or JSON key).
fn foreign_reference(fields: &Fields, ours: &str) -> Option<String> {
    another_than(fields.all("referencecode"), ours).map(|theirs| {
        format!(
            "reply is about referencecode {:?}, not ours",
            clip(theirs, 64)
        )
    })
}

/// The first of `values` that is set and is not `ours` (both trimmed).
fn another_than<'a>(values: impl Iterator<Item = &'a str>, ours: &str) -> Option<&'a str> {
    values
        .map(str::trim)
        .find(|theirs| !theirs.is_empty() && *theirs != ours.trim())
}

/// A reply to a bill payment naming, at its top level, another
/// `inquirycode` than the one paid is not that payment's. The spec (§3)
/// leaves the payment's `transactioncode` an assumption (the document's is
/// the inquiry's, a copy error): a provider that took our payment for a
/// new inquiry would answer `000` with the same amounts and a fresh
/// `inquirycode`, and the bill, unpaid, must not read paid. So the reply is
/// unknown and a status check decides. A reply without `inquirycode` is
/// read as it says.
fn foreign_inquiry(fields: &Fields, request: &Request) -> Option<String> {
    let ours = request.get(inquiry_keys::INQUIRYCODE)?;
    let found = fields.at(Place::TopLevel, inquiry_keys::INQUIRYCODE);
    another_than(found, ours).map(|theirs| {
        format!(
            "payment reply is about inquirycode {:?}, not the one paid ({:?}): \
             the payment may have been taken for an inquiry",
            clip(theirs, 64),
            clip(ours.trim(), 64)
        )
    })
}

/// The names a reply's status field may have: `transactionstatus` for
/// prepaid and status replies, `responsecode` for postpaid and balance (spec
/// §3). Both are read whatever the operation.
const STATUS_FIELDS: [&str; 2] = ["transactionstatus", "responsecode"];

/// What a reply says its status is.
#[derive(Debug, PartialEq, Eq)]
enum ReplyStatus<'a> {
    /// Every status field at the reply's top level says this code.
    Agreed(&'a str),
    /// No status field, or only blank ones.
    Absent,
    /// The status fields disagree (a duplicated tag or JSON key, or
    /// `transactionstatus` against `responsecode`): why, naming each. Such a
    /// reply cannot be read with certainty (money-safety rule 1).
    Contradicting(String),
}

/// Reads every non-blank status field at the reply's top level, repeats
/// included: no single one may decide for the others. Leaves of
/// `additionaldata` are the biller's product data and may reuse a name.
fn reply_status(fields: &Fields) -> ReplyStatus<'_> {
    let statuses: Vec<(&str, &str)> = STATUS_FIELDS
        .into_iter()
        .flat_map(|name| {
            fields
                .at(Place::TopLevel, name)
                .map(move |value| (name, value.trim()))
        })
        .filter(|(_, value)| !value.is_empty())
        .collect();
    match statuses.split_first() {
        None => ReplyStatus::Absent,
        Some(((_, code), others)) if others.iter().all(|(_, other)| other == code) => {
            ReplyStatus::Agreed(code)
        }
        Some(_) => {
            let said: Vec<String> = statuses
                .iter()
                .map(|(name, code)| format!("{name} {}", clip(code, 16)))
                .collect();
            ReplyStatus::Contradicting(format!("the reply contradicts itself: {}", said.join(", ")))
        }
    }
}

/// The request never left. A money-moving operation's report says so
/// ([`Report::not_sent`]): the worker fails it when its journal holds no
/// earlier send, and leaves it unknown otherwise. An inquiry that was not
/// sent simply failed; a status check that was not sent found nothing out.
fn not_sent(operation: Operation, error: String) -> Report {
    if operation.moves_money() || operation == Operation::StatusCheck {
        Report::not_sent(error)
    } else {
        Report {
            detail: error,
            ..Report::new(Outcome::Failed)
        }
    }
}

/// A payment's amount, when given, must be the inquiry's nominal or its
/// nominal + adminfee: we never pay what the inquiry did not say.
fn check_payment_amount(
    amount: Option<Money>,
    nominal: &str,
    adminfee: &str,
) -> Result<(), BuildError> {
    let Some(amount) = amount else { return Ok(()) };
    let mismatch = || BuildError::AmountMismatch {
        asked: amount.minor,
        nominal: clip(nominal, 32).to_string(),
        adminfee: clip(adminfee, 32).to_string(),
    };
    let nominal_money = Money::parse_decimal(nominal, Currency::Idr).map_err(|_| mismatch())?;
    let fee = Money::parse_decimal(adminfee, Currency::Idr).map_err(|_| mismatch())?;
    let total = nominal_money.checked_add(fee).ok_or_else(mismatch)?;
    if amount == nominal_money || amount == total {
        Ok(())
    } else {
        Err(mismatch())
    }
}

fn push_bill_accounts(
    fields: &mut Vec<(&'static str, String)>,
    command: &Command,
    account: String,
) {
    fields.push(("accnumber1", account));
    let bpjs_payment =
        command.operation == Operation::BillPayment && !command.account3.trim().is_empty();
    if bpjs_payment {
        // A BPJS payment (a bill with a period) names the payer's phone
        // here (spec §4); the ingress makes the inquiry's contact one.
        fields.push(("accnumber2", command.contact.clone()));
    } else {
        // Present even when empty (spec §4, PSTN).
        fields.push(("accnumber2", command.account2.clone()));
    }
    if !command.account3.trim().is_empty() {
        fields.push(("accnumber3", command.account3.clone()));
    }
    fields.push(("contactnumber", command.contact.clone()));
}

/// Parses an amount field; an unparseable one is noted, never fatal.
fn amount(fields: &Fields, name: &str, detail: &mut String) -> Option<Money> {
    match read_amount(fields, name)? {
        Ok(money) => Some(money),
        Err(error) => {
            push_detail(detail, &format!("{name} not used: {error}"));
            None
        }
    }
}

/// The amount in field `name` at the reply's top level, when the reply
/// carries one; written twice, it must say the same both times
/// ([`Fields::one`]), else it cannot be read.
fn read_amount(fields: &Fields, name: &str) -> Option<Result<Money, String>> {
    match fields.one(Place::TopLevel, name) {
        Ok(text) => text.map(|text| {
            Money::parse_decimal(text, Currency::Idr).map_err(|error| error.to_string())
        }),
        Err(disagreement) => Some(Err(disagreement.to_string())),
    }
}

/// Why a reply cannot be read for `name`: it writes it two ways.
fn written_two_ways(name: &str, disagreement: Disagreement) -> String {
    format!("the reply's {name} is {disagreement}")
}

/// The value of `name` at `place`, for a value that has a fallback when
/// absent (an answer time, an expiry, a tracecode): written two ways, it is
/// noted in `detail` and taken as absent.
fn one_or_absent<'a>(
    fields: &'a Fields,
    place: Place<'a>,
    name: &'a str,
    detail: &mut String,
) -> Option<&'a str> {
    fields.one(place, name).unwrap_or_else(|disagreement| {
        let why = written_two_ways(name, disagreement);
        push_detail(detail, &format!("{why}; taken as absent"));
        None
    })
}

/// The reply's own `tracecode`, at its top level: OkeBayar's id for this
/// hit (spec §1), which later status checks send back. Two of them name no
/// one hit: neither is taken (the checks then go by our reference alone),
/// and the detail names both; the status code still decides.
fn reply_trace(fields: &Fields, detail: &mut String) -> Option<String> {
    one_or_absent(fields, Place::TopLevel, "tracecode", detail).map(str::to_string)
}

/// OkeBayar's `tracecode` is new on every hit (spec §1): a status check's
/// names that check, and a reply whose outcome is unknown (a `208` refusing a
/// re-sent reference, a server fault) names a hit that may not be the
/// transaction at all. Such a tracecode (the report's, as [`reply_trace`]
/// read it) goes into the report's detail only, so the transaction keeps
/// the original's (the one later checks send back) and never takes another
/// hit's for it.
fn note_hit_trace(hit: &str, report: &mut Report) {
    if let Some(trace) = report.provider_trace.take() {
        push_detail(
            &mut report.detail,
            &format!("{hit} tracecode {}", clip(&trace, 64)),
        );
    }
}

/// Builds the report of a reply whose status code was read.
fn fill_report(
    fields: &Fields,
    code: &str,
    classification: &Classification,
    operation: Operation,
    is_status: bool,
) -> Report {
    let serial = fields.one(Place::TopLevel, "serialnumber");
    // Spec §7: `000` is "success, SN given"; a prepaid purchase's success
    // without one (absent, empty or blank), in its own reply or in a status
    // check about it, is read as `001` (poll for the SN, never refund).
    // Not a bill payment (its reply lists no SN, spec §4), nor an inquiry
    // (a PLN prepaid inquiry's `serialnumber` is empty by spec). Two
    // serial numbers are a contradiction (below), not a missing one.
    let serial_missing = operation == Operation::PrepaidPurchase
        && classification.outcome == Outcome::Success
        && matches!(serial, Ok(None));
    let as_missing_serial;
    let classification = if serial_missing {
        as_missing_serial = codes::success_without_serial_number();
        &as_missing_serial
    } else {
        classification
    };
    let mut report = Report::new(classification.outcome);
    report.provider_code = Some(clip(code, 16).to_string());
    if serial_missing {
        push_detail(
            &mut report.detail,
            &format!(
                "{} without serialnumber: read as {}, polling for the serial number",
                clip(code, 16),
                codes::SUCCESS_SERIAL_MISSING
            ),
        );
    }
    report.provider_message = fields
        .non_empty("responsestatus")
        .map(str::to_string)
        .or_else(|| classification.meaning.clone())
        .or_else(|| fields.non_empty("info").map(str::to_string));
    if let Some(problem) = &classification.problem {
        push_detail(&mut report.detail, problem);
    }
    if let Some(info) = fields.non_empty("info") {
        if report.provider_message.as_deref() != Some(info) {
            push_detail(&mut report.detail, &format!("info: {}", quoted(info)));
        }
    }
    report.provider_trace = reply_trace(fields, &mut report.detail);
    match serial {
        Ok(serial) => report.serial_number = serial.map(str::to_string),
        Err(serials) => {
            // Two serial numbers are two deliveries, or a garbled one:
            // neither is taken for the transaction's, and a person settles
            // it (the reconciler parks the transaction in `needs_review`).
            // The outcome stays what the status code says: on a transaction
            // already final, where a contradiction is not heard, it still
            // meets that state's rules.
            let why = written_two_ways("serialnumber", serials);
            push_detail(&mut report.detail, &why);
            report.contradiction = Some(why);
        }
    }
    // A success that moved money says what it charged, or the charge
    // cannot be checked against ours: flagged like an unreadable amount
    // (rule 8), never taken as matching.
    let unchecked = operation.moves_money() && report.outcome == Outcome::Success;
    const MISSING: &str = "missing, so the amount cannot be checked";
    match read_amount(fields, "harga") {
        Some(Ok(charged)) => report.provider_amount = Some(charged),
        Some(Err(error)) => report.amount_unreadable("harga", error),
        // No `harga` on a payment reply (spec §4): what it charged is
        // nominal + adminfee.
        None if operation == Operation::BillPayment => {
            match (
                read_amount(fields, "nominal"),
                read_amount(fields, "adminfee"),
            ) {
                (Some(Ok(nominal)), Some(Ok(fee))) => match nominal.checked_add(fee) {
                    Some(total) => report.provider_amount = Some(total),
                    None => report.amount_unreadable("nominal + adminfee", "too large"),
                },
                (Some(Err(error)), _) => report.amount_unreadable("nominal", error),
                (_, Some(Err(error))) => report.amount_unreadable("adminfee", error),
                (None, _) if unchecked => report.amount_unreadable("nominal", MISSING),
                (_, None) if unchecked => report.amount_unreadable("adminfee", MISSING),
                _ => {}
            }
        }
        None if unchecked => report.amount_unreadable("harga", MISSING),
        None => {}
    }
    if matches!(
        operation,
        Operation::PrepaidInquiry | Operation::BillInquiry
    ) {
        if is_status {
            inquiry_unrecoverable_by_a_check(&mut report);
        } else {
            match read_inquiry(fields, report.outcome, &mut report.detail) {
                Ok((data, bill)) => {
                    report.inquiry_data = data;
                    report.bill = bill;
                }
                Err(why) => {
                    // Which value the provider holds is not known: the inquiry
                    // can be neither shown nor paid, and what it found is
                    // unknown (never a success by guesswork). A refusal stays
                    // one: its code decides, and its data serves nothing.
                    push_detail(&mut report.detail, &why);
                    if report.outcome == Outcome::Success {
                        report.outcome = Outcome::Unknown;
                    }
                }
            }
        }
    }
    report
}

/// A status check about an inquiry. A cek-status reply carries none of an
/// inquiry's data (spec §4: no `inquirycode`, `ref1..3`, `nominal`,
/// `adminfee` or `PLN_*`), so what it says cannot stand for the inquiry's
/// lost reply: nothing of it is read as the inquiry's, and its success is
/// unknown. An inquiry answered but not received can be neither shown nor
/// paid (a PLN purchase must echo its refs); it stays unknown until the
/// reconciler expires it, and the customer inquires again. A failure is
/// still one (the provider refused the inquiry).
fn inquiry_unrecoverable_by_a_check(report: &mut Report) {
    if report.outcome == Outcome::Success {
        report.outcome = Outcome::Unknown;
        push_detail(
            &mut report.detail,
            "the provider answered the inquiry, but a status check carries none of its data \
             (inquirycode, ref1..3, amounts): its reply is lost, so it cannot be shown or paid; inquire again",
        );
    }
}

/// What an inquiry reply whose code says `outcome` hands on: the values a
/// later purchase / payment echoes and, on a success, the bill shown to the
/// customer. Err says which of those values the reply writes two ways.
fn read_inquiry(
    fields: &Fields,
    outcome: Outcome,
    detail: &mut String,
) -> Result<(BTreeMap<String, String>, Option<pb::BillDetails>), String> {
    let data = inquiry_data(fields)?;
    let bill = if outcome == Outcome::Success {
        Some(bill_details(fields, detail)?)
    } else {
        None
    };
    Ok((data, bill))
}

/// The values a later purchase / payment must echo, as received text, each
/// the reply's own (at its top level, spec §4); Err when one is written two
/// ways.
fn inquiry_data(fields: &Fields) -> Result<BTreeMap<String, String>, String> {
    let mut data = BTreeMap::new();
    for key in inquiry_keys::ALL {
        let value = fields
            .one_as_written(Place::TopLevel, key)
            .map_err(|disagreement| written_two_ways(key, disagreement))?;
        if let Some(value) = value {
            data.insert(key.to_string(), value.to_string());
        }
    }
    Ok(data)
}

/// Fields that are protocol plumbing, not bill details.
const NOT_EXTRA: [&str; 24] = [
    "transactioncode",
    "userid",
    "userpin",
    "signature",
    "referencecode",
    "tracecode",
    "transactionstatus",
    "transactiontime",
    "responsecode",
    "responsestatus",
    "responsetime",
    "inquirycode",
    "inquiryexpired",
    "ref1",
    "ref2",
    "ref3",
    "nominal",
    "adminfee",
    "serialnumber",
    "harga",
    "balance",
    "querycode",
    "info",
    "productcode",
];

/// The block of a bill inquiry reply holding the bill's per-product
/// details (spec §4).
const ADDITIONAL_DATA: &str = "additionaldata";

/// Where the customer's name is looked for, in this order: a PLN prepaid
/// inquiry's own `PLN_NAMAPELANGGAN`, or a bill's per-product block, where
/// spec §4 puts PLN postpaid's `subscribername` (the other products' names
/// are looked for there too: the reply's own fields name no customer).
const CUSTOMER_NAME_FIELDS: [(Place, &str); 5] = [
    (Place::TopLevel, "pln_namapelanggan"),
    (Place::Block(ADDITIONAL_DATA), "subscribername"),
    (Place::Block(ADDITIONAL_DATA), "customername"),
    (Place::Block(ADDITIONAL_DATA), "namapelanggan"),
    (Place::Block(ADDITIONAL_DATA), "nama"),
];

/// The customer's name: the first of [`CUSTOMER_NAME_FIELDS`] the reply
/// fills, "" when none; Err when that one is written two ways (what the
/// customer checks before paying cannot then be shown).
fn customer_name(fields: &Fields) -> Result<&str, String> {
    for (place, name) in CUSTOMER_NAME_FIELDS {
        let value = fields
            .one(place, name)
            .map_err(|disagreement| written_two_ways(name, disagreement))?;
        if let Some(value) = value {
            return Ok(value);
        }
    }
    Ok("")
}

/// The bill an inquiry found; Err as [`customer_name`].
fn bill_details(fields: &Fields, detail: &mut String) -> Result<pb::BillDetails, String> {
    let customer_name = customer_name(fields)?.to_string();
    let bill_amount = amount(fields, "nominal", detail);
    let admin_fee = amount(fields, "adminfee", detail);
    // Due = nominal + adminfee (spec §4): without a readable fee the total
    // is not known (not the nominal alone, which its payment could never
    // match), and paying the inquiry is refused for want of one.
    let total = match (bill_amount, admin_fee) {
        (Some(bill), Some(fee)) => bill.checked_add(fee),
        _ => None,
    };
    if bill_amount.is_some() && read_amount(fields, "adminfee").is_none() {
        push_detail(detail, "adminfee missing: the total due is not known");
    }
    let expires_at = expiry_on_our_clock(fields, Utc::now(), detail);
    let extra = fields
        .iter()
        .filter(|(name, value)| {
            !value.trim().is_empty() && !NOT_EXTRA.iter().any(|n| n.eq_ignore_ascii_case(name))
        })
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(pb::BillDetails {
        customer_name,
        bill_amount: bill_amount.map(Into::into),
        admin_fee: admin_fee.map(Into::into),
        total_amount: total.map(Into::into),
        expires_at: Some(timestamp(expires_at)),
        extra,
    })
}

/// How far from its answer time an inquiry's expiry may lie and still be
/// believed. An inquiry is held for minutes to a day (spec §9); an expiry
/// further away, either way, is garbage, and adding it to our clock may
/// leave chrono's range (±262 000 years) and panic.
const BELIEVABLE_INQUIRY_EXPIRY: chrono::TimeDelta = chrono::TimeDelta::days(365);

/// When an inquiry answered at `received_at` (our clock) expires, on our
/// clock. `inquiryexpired` is a time on the provider's clock, in a zone the
/// spec only assumes (WIB). So when the reply also says when it was
/// answered (`transactiontime` or `responsetime`, the same clock), the
/// inquiry is given the time the provider leaves it from there: a provider
/// clock minutes off, or in another zone, moves none of our scheduling
/// (RELIABILITY #22). A difference of more than a minute is noted in
/// `detail`. Without an answer time, `inquiryexpired` is read as it stands.
///
/// A reply is untrusted: both times are the reply's own (at its top level),
/// and one written two ways is taken as absent (noted in `detail`); an
/// expiry that cannot be read, or that lies more than
/// [`BELIEVABLE_INQUIRY_EXPIRY`] from the answer time (from our clock
/// without one), is not believed, and the inquiry is left
/// [`INQUIRY_EXPIRY_FALLBACK_MINUTES`] (noted in `detail`). So what the
/// reconciler schedules by is always within a year of now, and no sum of
/// the provider's times can leave chrono's range.
fn expiry_on_our_clock(
    fields: &Fields,
    received_at: DateTime<Utc>,
    detail: &mut String,
) -> DateTime<Utc> {
    let answered_at = ["transactiontime", "responsetime"]
        .into_iter()
        .find_map(|name| {
            one_or_absent(fields, Place::TopLevel, name, detail).and_then(wire::parse_time)
        });
    let answered_at = match answered_at {
        Some(at) => {
            // Cannot overflow: any two times chrono holds are less than a
            // `TimeDelta`'s range apart.
            let ahead = at.signed_duration_since(received_at);
            if ahead.num_seconds().abs() > 60 {
                push_detail(
                    detail,
                    &format!(
                        "the provider's clock reads {}s {} ours; the inquiry's expiry is taken from its answer time",
                        ahead.num_seconds().abs(),
                        if ahead > chrono::Duration::zero() { "ahead of" } else { "behind" }
                    ),
                );
            }
            at
        }
        None => received_at,
    };
    // Our own clock's reading plus half an hour cannot overflow.
    let fallback = received_at + chrono::Duration::minutes(INQUIRY_EXPIRY_FALLBACK_MINUTES);
    let Some(text) = one_or_absent(fields, Place::TopLevel, "inquiryexpired", detail) else {
        return fallback;
    };
    let expires = wire::parse_expiry(text, answered_at)
        .map(|expires| expires.signed_duration_since(answered_at))
        .filter(|left| left.abs() <= BELIEVABLE_INQUIRY_EXPIRY)
        .and_then(|left| received_at.checked_add_signed(left));
    expires.unwrap_or_else(|| {
        push_detail(
            detail,
            &format!(
                "inquiryexpired {:?} unparseable or over a year from the answer; assumed {INQUIRY_EXPIRY_FALLBACK_MINUTES} min",
                clip(text, 32)
            ),
        );
        fallback
    })
}

#[cfg(test)]
#[path = "connector_tests.rs"]
mod tests;

/// Each field is read at the place the spec gives it (the reply's own top
/// level, or the `additionaldata` block), every repeat of it there with it
/// (the rule of [`wire`]): one found elsewhere is absent, and a repeat that
/// disagrees is never settled by taking the first.
#[cfg(test)]
mod repeated_field_tests {
    use super::*;

    const REF: &str = "LKT0001ABC";

    fn command(operation: bus::Operation) -> Command {
        Command::try_from(bus::Command {
            transaction_id: uuid::Uuid::now_v7().to_string(),
            provider: Provider::OkeBayar.as_str().into(),
            operation: operation as i32,
            provider_reference: REF.into(),
            provider_product_code: "PLNPRA20".into(),
            account: "081234567890".into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// The purchase's report on a 200 reply of `body`.
    fn classify(body: &str) -> Report {
        answer(bus::Operation::PrepaidPurchase, body)
    }

    /// The report of a command of `operation` on a 200 reply of `body`.
    fn answer(operation: bus::Operation, body: &str) -> Report {
        let connector = OkeBayarConnector::new(OkeBayarSettings {
            url: "http://127.0.0.1:9/okebayar".into(),
            userid: "pcu00001".into(),
            userpin: loket_runtime::Secret::new("PIN-7731"),
            ..OkeBayarSettings::default()
        });
        let command = command(operation);
        let request = connector.build_request(&command).unwrap();
        let reply = HttpReply {
            status: 200,
            content_type: String::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            elapsed: Duration::ZERO,
        };
        connector.classify(&command, &request, Transport::Reply(reply))
    }

    /// A successful reply as XML, with `xml` between its status and its
    /// reference, and as JSON, with `json` there.
    fn replies(xml: &str, json: &str) -> [String; 2] {
        [
            format!(
                "<transaction-status><transactionstatus>000</transactionstatus>{xml}\
                 <referencecode>{REF}</referencecode></transaction-status>"
            ),
            format!(r#"{{"transactionstatus":"000",{json},"referencecode":"{REF}"}}"#),
        ]
    }

    #[test]
    fn a_price_said_twice_differently_is_unreadable() {
        for body in replies(
            "<harga>10000</harga><harga>250000</harga>",
            r#""harga":"10000","harga":"250000""#,
        )
        .into_iter()
        .chain(replies(
            "<harga>250000</harga><HARGA> 10000 </HARGA>",
            r#""harga":250000,"HARGA":"10000""#,
        )) {
            let report = classify(&body);
            assert_eq!(report.provider_amount, None, "{body}");
            let why = report.provider_amount_unreadable.unwrap_or_default();
            assert!(
                why.starts_with("harga") && why.contains("10000") && why.contains("250000"),
                "{body}: {why}"
            );
        }
        // The same price twice is the price.
        for body in replies(
            "<harga>10000</harga><harga>10000</harga>",
            r#""harga":"10000","harga":10000"#,
        ) {
            let report = classify(&body);
            assert_eq!(report.provider_amount, Some(Money::idr(10_000)), "{body}");
            assert_eq!(report.provider_amount_unreadable, None, "{body}");
        }
    }

    /// `additionaldata` holds the biller's product data: a price there is
    /// not what OkeBayar charged, before or without the reply's own.
    #[test]
    fn a_price_inside_another_element_is_not_the_reply_s() {
        for body in replies(
            "<additionaldata><harga>10000</harga></additionaldata><harga>250000</harga>",
            r#""additionaldata":{"harga":"10000"},"harga":"250000""#,
        ) {
            let report = classify(&body);
            assert_eq!(report.provider_amount, Some(Money::idr(250_000)), "{body}");
            assert_eq!(report.provider_amount_unreadable, None, "{body}");
        }
        for body in replies(
            "<additionaldata><harga>10000</harga></additionaldata>",
            r#""additionaldata":{"harga":"10000"}"#,
        ) {
            let report = classify(&body);
            assert_eq!(report.provider_amount, None, "{body}");
            assert_eq!(report.provider_amount_unreadable, None, "{body}");
        }
    }

    /// Two serial numbers (a PLN token is one) are two deliveries, or
    /// none: the report says the reply contradicts itself, for a person to
    /// settle, and takes neither. The same one twice is the serial number.
    #[test]
    fn two_serial_numbers_are_a_contradiction() {
        for body in replies(
            "<serialnumber>1111-2222</serialnumber><harga>10000</harga><serialnumber>3333-4444</serialnumber>",
            r#""serialnumber":"1111-2222","harga":"10000","serialnumber":"3333-4444""#,
        ) {
            let report = classify(&body);
            assert_eq!(report.serial_number, None, "{body}");
            let why = report.contradiction.unwrap_or_default();
            assert!(
                why.contains("1111-2222") && why.contains("3333-4444"),
                "{body}: {why}"
            );
        }
        for (xml, json) in [
            (
                "<serialnumber>1111-2222</serialnumber><serialnumber> 1111-2222 </serialnumber>",
                r#""serialnumber":"1111-2222","serialnumber":" 1111-2222 ""#,
            ),
            (
                "<additionaldata><serialnumber>9999</serialnumber></additionaldata><serialnumber>1111-2222</serialnumber>",
                r#""additionaldata":{"serialnumber":"9999"},"serialnumber":"1111-2222""#,
            ),
        ] {
            for body in replies(xml, json) {
                let report = classify(&body);
                assert_eq!(report.outcome, Outcome::Success, "{body}");
                assert_eq!(report.serial_number.as_deref(), Some("1111-2222"), "{body}");
                assert_eq!(report.contradiction, None, "{body}");
            }
        }
    }

    /// OkeBayar's id for the hit is the reply's own `tracecode`: one planted
    /// inside another element, or in `additionaldata`, is not it.
    #[test]
    fn a_tracecode_inside_another_element_is_not_the_reply_s() {
        for body in replies(
            "<x><tracecode>6666</tracecode></x><additionaldata><tracecode>7777</tracecode>\
             </additionaldata><tracecode>1234</tracecode>",
            r#""x":{"tracecode":"6666"},"additionaldata":{"tracecode":"7777"},"tracecode":"1234""#,
        ) {
            let report = classify(&body);
            assert_eq!(report.provider_trace.as_deref(), Some("1234"), "{body}");
        }
        // With the serial number a purchase's success needs (without it
        // the reply reads as `001`, pending).
        for body in replies(
            "<x><tracecode>6666</tracecode></x><serialnumber>SN-1</serialnumber>",
            r#""x":{"tracecode":"6666"},"serialnumber":"SN-1""#,
        ) {
            let report = classify(&body);
            assert_eq!(report.outcome, Outcome::Success, "{body}");
            assert_eq!(report.provider_trace, None, "{body}");
        }
    }

    /// Two tracecodes name two hits, or a garbled one: neither is taken
    /// (later checks then ask by our reference alone), the detail names
    /// both, and the status code still decides. The same one twice is it.
    #[test]
    fn two_tracecodes_are_neither_taken() {
        for body in replies(
            "<tracecode>1234</tracecode><tracecode>5678</tracecode><serialnumber>SN-1</serialnumber>",
            r#""tracecode":"1234","TRACECODE":5678,"serialnumber":"SN-1""#,
        ) {
            let report = classify(&body);
            assert_eq!(report.outcome, Outcome::Success, "{body}");
            assert_eq!(report.provider_trace, None, "{body}");
            assert!(
                report.detail.contains("1234") && report.detail.contains("5678"),
                "{body}: {}",
                report.detail
            );
        }
        for body in replies(
            "<tracecode>1234</tracecode><tracecode> 1234 </tracecode>",
            r#""tracecode":"1234","tracecode":1234"#,
        ) {
            let report = classify(&body);
            assert_eq!(report.provider_trace.as_deref(), Some("1234"), "{body}");
        }
    }

    /// What a later payment echoes (spec §4: the inquiry reply's own
    /// `inquirycode`, `ref1..3`, `nominal`, `adminfee`) is read at the
    /// reply's top level only: not from another element, nor from
    /// `additionaldata`, whichever comes first.
    #[test]
    fn inquiry_data_inside_another_element_is_not_the_reply_s() {
        for body in replies(
            "<x><inquirycode>PLANTED</inquirycode><ref2>PLANTED</ref2><nominal>1</nominal>\
             <tracecode>6666</tracecode></x><inquirycode>INQ-1</inquirycode>\
             <nominal>11000</nominal><adminfee>2500</adminfee><ref2>R2</ref2><tracecode>1234</tracecode>",
            r#""x":{"inquirycode":"PLANTED","ref2":"PLANTED","nominal":"1","tracecode":"6666"},
               "inquirycode":"INQ-1","nominal":"11000","adminfee":"2500","ref2":"R2","tracecode":"1234""#,
        ) {
            let report = answer(bus::Operation::BillInquiry, &body);
            assert_eq!(report.outcome, Outcome::Success, "{body}");
            let expected: BTreeMap<String, String> = [
                ("inquirycode", "INQ-1"),
                ("nominal", "11000"),
                ("adminfee", "2500"),
                ("ref2", "R2"),
                ("tracecode", "1234"),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
            assert_eq!(report.inquiry_data, expected, "{body}");
        }
        for body in replies(
            "<additionaldata><inquirycode>PLANTED</inquirycode><ref2>PLANTED</ref2>\
             </additionaldata><nominal>11000</nominal>",
            r#""additionaldata":{"inquirycode":"PLANTED","ref2":"PLANTED"},"nominal":"11000""#,
        ) {
            let report = answer(bus::Operation::BillInquiry, &body);
            assert_eq!(
                report.inquiry_data.keys().collect::<Vec<_>>(),
                ["nominal"],
                "{body}"
            );
        }
    }

    /// The customer's name is the prepaid reply's own `PLN_NAMAPELANGGAN`,
    /// or a bill's `subscribername` in `additionaldata` (spec §4): not one
    /// planted in another element, deeper in `additionaldata`, or at a
    /// level where the spec does not put it.
    #[test]
    fn the_customer_s_name_is_read_where_the_spec_puts_it() {
        let name = |operation, (xml, json): (&str, &str)| {
            replies(xml, json).map(|body| {
                let report = answer(operation, &body);
                assert_eq!(report.outcome, Outcome::Success, "{body}");
                report.bill.expect("a bill").customer_name
            })
        };
        let prepaid = bus::Operation::PrepaidInquiry;
        let bill = bus::Operation::BillInquiry;
        assert_eq!(
            name(
                prepaid,
                (
                    "<x><PLN_NAMAPELANGGAN>EVIL</PLN_NAMAPELANGGAN></x>\
                     <PLN_NAMAPELANGGAN>BUDI</PLN_NAMAPELANGGAN>",
                    r#""x":{"PLN_NAMAPELANGGAN":"EVIL"},"PLN_NAMAPELANGGAN":"BUDI""#,
                )
            ),
            ["BUDI", "BUDI"]
        );
        assert_eq!(
            name(
                bill,
                (
                    "<x><subscribername>EVIL</subscribername></x>\
                     <additionaldata><subscribername>SITI</subscribername></additionaldata>",
                    r#""x":{"subscribername":"EVIL"},"additionaldata":{"subscribername":"SITI"}"#,
                )
            ),
            ["SITI", "SITI"]
        );
        for misplaced in [
            (
                "<x><subscribername>EVIL</subscribername></x>",
                r#""x":{"subscribername":"EVIL"}"#,
            ),
            (
                "<additionaldata><x><subscribername>EVIL</subscribername></x></additionaldata>",
                r#""additionaldata":{"x":{"subscribername":"EVIL"}}"#,
            ),
            (
                "<subscribername>EVIL</subscribername>",
                r#""subscribername":"EVIL""#,
            ),
            (
                "<additionaldata><PLN_NAMAPELANGGAN>EVIL</PLN_NAMAPELANGGAN></additionaldata>",
                r#""additionaldata":{"PLN_NAMAPELANGGAN":"EVIL"}"#,
            ),
        ] {
            assert_eq!(name(bill, misplaced), ["", ""], "{misplaced:?}");
        }
    }

    /// Minutes from now until the inquiry `report` gives expires.
    fn minutes_left(report: &Report) -> i64 {
        let bill = report.bill.as_ref().expect("a bill");
        let expires = bill
            .expires_at
            .as_ref()
            .and_then(loket_protocol::conversions::from_timestamp)
            .expect("an expiry");
        // Rounded: the classification read the clock a moment earlier.
        (expires - Utc::now() + chrono::Duration::seconds(30)).num_minutes()
    }

    /// The inquiry's expiry and its answer time are the reply's own: ones
    /// planted inside another element move neither. An expiry found only
    /// there is absent, and the inquiry is left the 30 minutes assumed.
    #[test]
    fn the_inquiry_s_times_are_read_at_the_reply_s_top_level() {
        // Answered 20:09, expiring an hour later; the planted answer time
        // an hour earlier, the planted expiry a day later.
        for body in replies(
            "<x><transactiontime>200324190911377</transactiontime>\
             <inquiryexpired>200325200911377</inquiryexpired></x>\
             <transactiontime>200324200911377</transactiontime>\
             <inquiryexpired>200324210911377</inquiryexpired>",
            r#""x":{"transactiontime":"200324190911377","inquiryexpired":"200325200911377"},
               "transactiontime":"200324200911377","inquiryexpired":"200324210911377""#,
        ) {
            let report = answer(bus::Operation::PrepaidInquiry, &body);
            assert_eq!(minutes_left(&report), 60, "{body}");
        }
        for body in replies(
            "<x><inquiryexpired>200325200911377</inquiryexpired></x>\
             <transactiontime>200324200911377</transactiontime>",
            r#""x":{"inquiryexpired":"200325200911377"},"transactiontime":"200324200911377""#,
        ) {
            let report = answer(bus::Operation::PrepaidInquiry, &body);
            assert_eq!(minutes_left(&report), 30, "{body}");
        }
    }

    /// An inquiry whose echoed data or customer's name reads two ways
    /// cannot be shown nor paid: which the provider holds is unknown, so is
    /// the inquiry, and the detail names both. The same value twice is it.
    #[test]
    fn an_inquiry_whose_data_reads_two_ways_is_unknown() {
        for (xml, json, values) in [
            (
                "<inquirycode>INQ-1</inquirycode><inquirycode>INQ-2</inquirycode>",
                r#""inquirycode":"INQ-1","inquirycode":"INQ-2""#,
                ["INQ-1", "INQ-2"],
            ),
            (
                "<ref2>R2</ref2><REF2>R9</REF2>",
                r#""ref2":"R2","REF2":"R9""#,
                ["R2", "R9"],
            ),
            (
                "<nominal>11000</nominal><nominal>12000</nominal>",
                r#""nominal":11000,"nominal":"12000""#,
                ["11000", "12000"],
            ),
            (
                "<additionaldata><subscribername>SITI</subscribername>\
                 <subscribername>BUDI</subscribername></additionaldata>",
                r#""additionaldata":{"subscribername":"SITI","subscribername":"BUDI"}"#,
                ["SITI", "BUDI"],
            ),
        ] {
            for body in replies(xml, json) {
                let report = answer(bus::Operation::BillInquiry, &body);
                assert_eq!(report.outcome, Outcome::Unknown, "{body}");
                assert_eq!(report.bill, None, "{body}");
                assert!(
                    values.iter().all(|value| report.detail.contains(value)),
                    "{body}: {}",
                    report.detail
                );
            }
        }
        for body in replies(
            "<inquirycode>INQ-1</inquirycode><inquirycode>INQ-1</inquirycode>\
             <additionaldata><subscribername>SITI</subscribername>\
             <subscribername>SITI</subscribername></additionaldata>",
            r#""inquirycode":"INQ-1","inquirycode":"INQ-1",
               "additionaldata":{"subscribername":"SITI","subscribername":"SITI"}"#,
        ) {
            let report = answer(bus::Operation::BillInquiry, &body);
            assert_eq!(report.outcome, Outcome::Success, "{body}");
            assert_eq!(report.bill.expect("a bill").customer_name, "SITI");
            assert_eq!(report.inquiry_data["inquirycode"], "INQ-1");
        }
    }

    /// An expiry written two ways cannot be read: like any unreadable one,
    /// the inquiry is left the 30 minutes assumed (spec §9), and the detail
    /// names both.
    #[test]
    fn an_expiry_written_two_ways_falls_back_to_30_minutes() {
        for body in replies(
            "<transactiontime>200324200911377</transactiontime>\
             <inquiryexpired>200324210911377</inquiryexpired>\
             <Inquiryexpired>200325200911377</Inquiryexpired>",
            r#""transactiontime":"200324200911377","inquiryexpired":"200324210911377",
               "Inquiryexpired":"200325200911377""#,
        ) {
            let report = answer(bus::Operation::PrepaidInquiry, &body);
            assert_eq!(report.outcome, Outcome::Success, "{body}");
            assert_eq!(minutes_left(&report), 30, "{body}");
            assert!(
                report.detail.contains("200324210911377")
                    && report.detail.contains("200325200911377"),
                "{body}: {}",
                report.detail
            );
        }
    }
}
