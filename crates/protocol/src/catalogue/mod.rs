//! The provider code catalogue: for every code a provider can answer with, what
//! it means — did the money move, is it final, may we try again, who acts, the
//! first thing our operators do, and what we tell the merchant in English and
//! Indonesian. It is the one source of truth for the connectors (which classify
//! through it), the `ExplainCode` API and `loketctl explain` / `loketctl codes`.
//!
//! The tables are data, one reviewed TOML file per provider under
//! `crates/protocol/catalogue/`, embedded at compile time and parsed once; a
//! new code is one new line there. This module owns the lookup rules that the
//! data cannot express:
//!
//! * **Operation context.** A row may be limited to some operations; a row
//!   naming the asked operation beats a row for all operations. SNAP and
//!   Smilepayz 7-digit codes carry their operation in the service code
//!   (`404` + `60` + `18`), which decides over the operation the caller passed.
//!   Without an operation the most cautious reading of all rows wins
//!   (unknown, then pending, then failed, then success).
//! * **Message-level variants** (Smilepayz reuses one `responseCode` for
//!   different messages): a row with `match` patterns applies when the
//!   provider's message contains one of them (the most cautious of them when
//!   several match, whatever their order in the file); otherwise the row
//!   without patterns applies.
//! * **A rejected status request says nothing about the transaction.** When a
//!   status query (`status_check`, `advice`, `qr_query`, `inquiry_status`) is
//!   answered with a code that rejects the *request* (bad signature, bad field,
//!   outage), the transaction's outcome stays `unknown`, never `failed`.
//! * **Structural decoding** of codes not in a table, marked
//!   `in_catalogue = false`, always conservative: a 5xx, 504, 408, 409 or 429
//!   is never `failed`, nor is an unlisted rejection of a money-moving or
//!   status request, nor an unmapped DOKU code on a payment or advice.
//!
//! SNAP's `latestTransactionStatus` (`00`–`07`) is explained by passing the
//! 2-digit value as the code for [`Provider::SnapQr`] (any operation; it is
//! reported as `qr_query`/`qr_notify`), or with [`explain_qr_status`].
//! Smilepayz's 2-digit `code` values and its order statuses (`INIT`,
//! `PROCESSING`, `SUCCESS`, `FAILED`, `EXPIRED`) are explained by passing them
//! as the code for [`Provider::Smilepayz`].
//!
//! No I/O happens here: this is pure data and pure functions.

mod doku;
mod okebayar;
mod smilepayz;
mod snapqr;
mod table;

pub use smilepayz::code_http as smilepayz_code_http;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::{pb, Operation, Outcome, Provider};

/// What a code answered: the operation of the exchange the code came from.
///
/// Providers name their operations differently; the catalogue uses one list.
/// A provider accepts the operations in [`operations`]; a few generic ones are
/// mapped onto the provider's own (e.g. `status_check` is DOKU's `advice`,
/// SNAP's `qr_query` and Smilepayz's `inquiry_status`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CodeOperation {
    Purchase,
    PrepaidInquiry,
    BillInquiry,
    BillPayment,
    StatusCheck,
    Balance,
    Callback,
    Token,
    QrGenerate,
    QrPayment,
    QrQuery,
    QrCancel,
    QrRefund,
    QrNotify,
    PayIn,
    PayOut,
    InquiryStatus,
    Advice,
}

impl CodeOperation {
    pub const ALL: [CodeOperation; 18] = [
        CodeOperation::Purchase,
        CodeOperation::PrepaidInquiry,
        CodeOperation::BillInquiry,
        CodeOperation::BillPayment,
        CodeOperation::StatusCheck,
        CodeOperation::Balance,
        CodeOperation::Callback,
        CodeOperation::Token,
        CodeOperation::QrGenerate,
        CodeOperation::QrPayment,
        CodeOperation::QrQuery,
        CodeOperation::QrCancel,
        CodeOperation::QrRefund,
        CodeOperation::QrNotify,
        CodeOperation::PayIn,
        CodeOperation::PayOut,
        CodeOperation::InquiryStatus,
        CodeOperation::Advice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CodeOperation::Purchase => "purchase",
            CodeOperation::PrepaidInquiry => "prepaid_inquiry",
            CodeOperation::BillInquiry => "bill_inquiry",
            CodeOperation::BillPayment => "bill_payment",
            CodeOperation::StatusCheck => "status_check",
            CodeOperation::Balance => "balance",
            CodeOperation::Callback => "callback",
            CodeOperation::Token => "token",
            CodeOperation::QrGenerate => "qr_generate",
            CodeOperation::QrPayment => "qr_payment",
            CodeOperation::QrQuery => "qr_query",
            CodeOperation::QrCancel => "qr_cancel",
            CodeOperation::QrRefund => "qr_refund",
            CodeOperation::QrNotify => "qr_notify",
            CodeOperation::PayIn => "pay_in",
            CodeOperation::PayOut => "pay_out",
            CodeOperation::InquiryStatus => "inquiry_status",
            CodeOperation::Advice => "advice",
        }
    }

    /// Accepts the snake_case names of [`CodeOperation::as_str`], case-insensitively
    /// and with `-` or spaces for `_`, plus the bus tokens of [`Operation`]
    /// (`status`, `prepaid_purchase`).
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        match text.as_str() {
            "status" => return Some(CodeOperation::StatusCheck),
            "prepaid_purchase" => return Some(CodeOperation::Purchase),
            _ => {}
        }
        CodeOperation::ALL
            .into_iter()
            .find(|op| op.as_str() == text)
    }

    /// The bus [`Operation`] this is, when it is one (the inverse of
    /// `From<Operation>`). Tokens, balances, callbacks, QR generation and
    /// notification, and the providers' own names for a status query are
    /// catalogue-only operations: `None`.
    pub fn operation(self) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|operation| CodeOperation::from(*operation) == self)
    }

    /// Operations after which money may have moved; an unclear answer to one
    /// of them is `unknown`, never `failed`. Derived from
    /// [`Operation::moves_money`] (a pay-in included), so the catalogue and
    /// the connectors cannot disagree; no catalogue-only operation moves money.
    pub fn moves_money(self) -> bool {
        self.operation().is_some_and(Operation::moves_money)
    }

    /// Operations that ask about an earlier transaction. A code rejecting such
    /// a request leaves the transaction's outcome unknown.
    pub fn is_status_query(self) -> bool {
        matches!(
            self,
            CodeOperation::StatusCheck
                | CodeOperation::QrQuery
                | CodeOperation::InquiryStatus
                | CodeOperation::Advice
        )
    }
}

impl From<Operation> for CodeOperation {
    fn from(operation: Operation) -> Self {
        match operation {
            Operation::PrepaidPurchase => CodeOperation::Purchase,
            Operation::PrepaidInquiry => CodeOperation::PrepaidInquiry,
            Operation::BillInquiry => CodeOperation::BillInquiry,
            Operation::BillPayment => CodeOperation::BillPayment,
            Operation::StatusCheck => CodeOperation::StatusCheck,
            Operation::QrPayment => CodeOperation::QrPayment,
            Operation::QrCancel => CodeOperation::QrCancel,
            Operation::QrRefund => CodeOperation::QrRefund,
            Operation::PayIn => CodeOperation::PayIn,
            Operation::PayOut => CodeOperation::PayOut,
        }
    }
}

impl fmt::Display for CodeOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CodeOperation {
    type Err = UnknownOperation;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CodeOperation::parse(s).ok_or_else(|| UnknownOperation(s.to_string()))
    }
}

/// An operation name [`CodeOperation::parse`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation {0:?} (expected one of {list})", list = operation_list(&CodeOperation::ALL))]
pub struct UnknownOperation(pub String);

/// What kind of problem (or non-problem) a code reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The provider did (or accepted) the work.
    Success,
    /// Accepted and still in progress.
    Processing,
    /// The customer's input is wrong or the customer's account cannot do this.
    UserInput,
    /// Credentials, signature, token or source IP.
    Authentication,
    /// Our deposit or pay-out balance at the provider is short.
    Balance,
    /// The provider, the biller or a channel behind them is down or refusing.
    ProviderOutage,
    /// A repeat of something already sent or already paid.
    Duplicate,
    /// Our request is malformed or sent to the wrong place (our code).
    Integration,
    /// Product, channel or merchant set-up at the provider (our configuration).
    Configuration,
    /// A business rule: limits, expiry, declines, cut-off.
    Business,
    /// Fraud, risk or blacklist decisions.
    Risk,
    /// Too many requests.
    RateLimit,
    /// The provider or a channel behind it timed out.
    Timeout,
    /// A system error we cannot attribute more precisely.
    System,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Success => "success",
            Category::Processing => "processing",
            Category::UserInput => "user_input",
            Category::Authentication => "authentication",
            Category::Balance => "balance",
            Category::ProviderOutage => "provider_outage",
            Category::Duplicate => "duplicate",
            Category::Integration => "integration",
            Category::Configuration => "configuration",
            Category::Business => "business",
            Category::Risk => "risk",
            Category::RateLimit => "rate_limit",
            Category::Timeout => "timeout",
            Category::System => "system",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who has to do something about a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhoActs {
    /// Nobody: success, or loket resolves it by itself (waits, polls).
    None,
    /// The end customer fixes it (re-enters a number, pays another way).
    SelfService,
    /// The merchant (our client) decides or acts.
    Merchant,
    /// Our operations staff (check status, top up, reroute, call the provider).
    Operations,
    /// Our engineers (code, configuration, credentials, keys).
    TechSupport,
    /// The security / risk team.
    SecurityRisk,
}

impl WhoActs {
    pub fn as_str(self) -> &'static str {
        match self {
            WhoActs::None => "none",
            WhoActs::SelfService => "self_service",
            WhoActs::Merchant => "merchant",
            WhoActs::Operations => "operations",
            WhoActs::TechSupport => "tech_support",
            WhoActs::SecurityRisk => "security_risk",
        }
    }
}

impl fmt::Display for WhoActs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a new attempt of the same business request (under a new reference
/// where the provider requires one) is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Nothing to retry (success).
    NotApplicable,
    /// A new attempt is safe now.
    Yes,
    /// Safe, but useless until the named problem is fixed (input, config, credentials, deposit).
    AfterFix,
    /// Safe after waiting (cut-off, outage, rate limit).
    Later,
    /// Not yet: query the status first; retry only if it shows nothing happened.
    QueryFirst,
    /// Never resubmit: it may have happened, or it can never work.
    No,
}

impl Retry {
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::NotApplicable => "not_applicable",
            Retry::Yes => "yes",
            Retry::AfterFix => "after_fix",
            Retry::Later => "later",
            Retry::QueryFirst => "query_first",
            Retry::No => "no",
        }
    }

    /// True when a new attempt cannot cause a double debit.
    pub fn is_safe(self) -> bool {
        matches!(self, Retry::Yes | Retry::AfterFix | Retry::Later)
    }
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one provider code means, for one operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    pub provider: Provider,
    /// The code as looked up (trimmed, DOKU/Smilepayz-status upper-cased). In
    /// [`codes`] it is the table key: SNAP and Smilepayz rows are written
    /// `HTTPxxCC` (e.g. `404xx18`), `xx` standing for the service code.
    pub code: String,
    /// The operation this answer is for: the service of a 7-digit code, else
    /// the asked operation mapped onto the provider's own; `None` when not given.
    pub operation: Option<CodeOperation>,
    /// The operations for which the catalogue gives this same answer.
    pub operations: Vec<CodeOperation>,
    pub provider_message: String,
    pub outcome: Outcome,
    pub retry: Retry,
    pub retry_safe: bool,
    pub category: Category,
    pub who_acts: WhoActs,
    /// The first thing our operators do.
    pub operator_action: String,
    pub merchant_message_en: String,
    pub merchant_message_id: String,
    /// False when the code is not in the catalogue and the answer was derived
    /// from the code's structure.
    pub in_catalogue: bool,
}

impl From<&Explanation> for pb::CodeExplanation {
    fn from(e: &Explanation) -> Self {
        pb::CodeExplanation {
            provider: e.provider.as_str().to_string(),
            code: e.code.clone(),
            operation: e
                .operation
                .map(|op| op.as_str().to_string())
                .unwrap_or_default(),
            provider_message: e.provider_message.clone(),
            outcome: pb::Outcome::from(e.outcome) as i32,
            retry_safe: e.retry_safe,
            category: e.category.as_str().to_string(),
            who_acts: e.who_acts.as_str().to_string(),
            operator_action: e.operator_action.clone(),
            merchant_message_en: e.merchant_message_en.clone(),
            merchant_message_id: e.merchant_message_id.clone(),
            in_catalogue: e.in_catalogue,
            retry: e.retry.as_str().to_string(),
            operations: e
                .operations
                .iter()
                .map(|op| op.as_str().to_string())
                .collect(),
        }
    }
}

impl From<Explanation> for pb::CodeExplanation {
    fn from(e: Explanation) -> Self {
        pb::CodeExplanation::from(&e)
    }
}

/// How many characters of a malformed code an [`ExplainError`] quotes. The
/// code may be a whole field of a provider's reply (up to 1 MB), and the
/// message goes into a report's detail; no real code is longer.
const QUOTED_CODE_CHARS: usize = 32;

/// Why a code could not be explained. Every message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("code is empty: give the provider's response code")]
    EmptyCode,
    #[error(
        "code {:?}: {expected}",
        crate::text::shortened(code, QUOTED_CODE_CHARS)
    )]
    BadFormat {
        provider: Provider,
        code: String,
        expected: &'static str,
    },
    #[error(
        "operation {operation} does not apply to {provider} codes (expected one of {list})",
        list = operation_list(operations(*.provider))
    )]
    UnsupportedOperation {
        provider: Provider,
        operation: CodeOperation,
    },
}

/// The operations a provider's codes are described for (after mapping, see
/// [`CodeOperation`]).
pub fn operations(provider: Provider) -> &'static [CodeOperation] {
    match provider {
        Provider::OkeBayar => okebayar::OPERATIONS,
        Provider::Doku => doku::OPERATIONS,
        Provider::SnapQr => snapqr::OPERATIONS,
        Provider::Smilepayz => smilepayz::OPERATIONS,
    }
}

/// Maps a generic operation onto the provider's own, or says it does not apply.
fn provider_operation(
    provider: Provider,
    op: CodeOperation,
) -> Result<CodeOperation, ExplainError> {
    let mapped = match provider {
        Provider::OkeBayar => okebayar::map_operation(op),
        Provider::Doku => doku::map_operation(op),
        Provider::SnapQr => snapqr::map_operation(op),
        Provider::Smilepayz => smilepayz::map_operation(op),
    };
    mapped.ok_or(ExplainError::UnsupportedOperation {
        provider,
        operation: op,
    })
}

/// Explains `code` from `provider`, answered to `operation` (pass `None` when
/// not known: the answer is then the most cautious reading).
pub fn explain(
    provider: Provider,
    code: &str,
    operation: Option<CodeOperation>,
) -> Result<Explanation, ExplainError> {
    explain_with_message(provider, code, operation, "")
}

/// Like [`explain`], with the provider's message text, which selects
/// message-level variants (Smilepayz reuses e.g. `5009x00` for "Payment method
/// inactive" and "Order not found"). An empty message means "not known".
pub fn explain_with_message(
    provider: Provider,
    code: &str,
    operation: Option<CodeOperation>,
    provider_message: &str,
) -> Result<Explanation, ExplainError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ExplainError::EmptyCode);
    }
    let operation = operation
        .map(|op| provider_operation(provider, op))
        .transpose()?;
    let message = provider_message.trim();
    match provider {
        Provider::OkeBayar => okebayar::explain(code, operation),
        Provider::Doku => doku::explain(code, operation),
        Provider::SnapQr => snapqr::explain(code, operation),
        Provider::Smilepayz => smilepayz::explain(code, operation, message),
    }
}

/// Explains a SNAP QR CPM `latestTransactionStatus` (`00`–`07`) as reported by
/// a query (61) or a notify (79).
pub fn explain_qr_status(status: &str) -> Result<Explanation, ExplainError> {
    snapqr::explain_status(status.trim())
}

/// The provider's whole table, in the order of its data file, one entry per
/// row (SNAP and Smilepayz keys written `HTTPxxCC`), for `loketctl codes`.
pub fn codes(provider: Provider) -> Vec<Explanation> {
    let table = match provider {
        Provider::OkeBayar => okebayar::table(),
        Provider::Doku => doku::table(),
        Provider::SnapQr => snapqr::table(),
        Provider::Smilepayz => smilepayz::table(),
    };
    table
        .rows
        .iter()
        .map(|row| table.explanation(row, &row.code, None))
        .collect()
}

/// Guesses the provider of a bare code: a 7-digit code by its service code
/// (59, 60, 61, 62, 73, 74, 79, 80 → SNAP QR; 90, 91, 92 → Smilepayz), a
/// Smilepayz order status by name, a 4-character `XXYY` code → DOKU, 3 digits →
/// OkeBayar. 2-digit codes are ambiguous (SNAP status or Smilepayz `code`).
pub fn guess_provider(code: &str) -> Option<Provider> {
    let code = code.trim();
    let digits = !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit());
    if digits && code.len() == 7 {
        return service(&code[3..5]).map(|s| s.provider);
    }
    if digits && code.len() == 3 {
        return Some(Provider::OkeBayar);
    }
    if smilepayz::is_status_word(code) {
        return Some(Provider::Smilepayz);
    }
    if code.len() == 4 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some(Provider::Doku);
    }
    None
}

/// A service code of a 7-digit SNAP-style `responseCode`.
#[derive(Debug, Clone, Copy)]
struct Service {
    provider: Provider,
    name: &'static str,
    operation: CodeOperation,
}

fn service(code: &str) -> Option<Service> {
    let (provider, name, operation) = match code {
        "73" => (Provider::SnapQr, "B2B access token", CodeOperation::Token),
        "74" => (Provider::SnapQr, "B2B2C access token", CodeOperation::Token),
        "59" => (
            Provider::SnapQr,
            "QR CPM generate",
            CodeOperation::QrGenerate,
        ),
        "60" => (Provider::SnapQr, "QR CPM payment", CodeOperation::QrPayment),
        "61" => (Provider::SnapQr, "QR CPM query", CodeOperation::QrQuery),
        "62" => (Provider::SnapQr, "QR CPM cancel", CodeOperation::QrCancel),
        "79" => (Provider::SnapQr, "QR CPM notify", CodeOperation::QrNotify),
        "80" => (Provider::SnapQr, "QR CPM refund", CodeOperation::QrRefund),
        "90" => (Provider::Smilepayz, "pay-in", CodeOperation::PayIn),
        "91" => (Provider::Smilepayz, "pay-out", CodeOperation::PayOut),
        "92" => (
            Provider::Smilepayz,
            "inquiry-status",
            CodeOperation::InquiryStatus,
        ),
        _ => return None,
    };
    Some(Service {
        provider,
        name,
        operation,
    })
}

/// A 7-digit `responseCode` split into HTTP status, service code and case code.
#[derive(Debug, Clone, Copy)]
struct ResponseCode<'a> {
    http: u16,
    service: &'a str,
    case: &'a str,
}

impl<'a> ResponseCode<'a> {
    fn split(code: &'a str) -> Option<Self> {
        if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ResponseCode {
            http: code[..3].parse().ok()?,
            service: &code[3..5],
            case: &code[5..],
        })
    }

    /// The table key of this code: `HTTPxxCC`.
    fn key(&self) -> String {
        format!("{}xx{}", self.http, self.case)
    }
}

fn http_phrase(http: u16) -> &'static str {
    let named = match http {
        200 => Some("OK"),
        201 => Some("Created"),
        202 => Some("Accepted"),
        400 => Some("Bad Request"),
        401 => Some("Unauthorized"),
        403 => Some("Forbidden"),
        404 => Some("Not Found"),
        405 => Some("Method Not Allowed"),
        408 => Some("Request Timeout"),
        409 => Some("Conflict"),
        429 => Some("Too Many Requests"),
        500 => Some("Internal Server Error"),
        502 => Some("Bad Gateway"),
        503 => Some("Service Unavailable"),
        504 => Some("Gateway Timeout"),
        _ => None,
    };
    named.unwrap_or(match http {
        100..=199 => "informational",
        200..=299 => "success class",
        300..=399 => "redirection",
        400..=499 => "client error",
        500..=599 => "server error",
        _ => "not an HTTP status",
    })
}

/// The conservative answer for a 7-digit code whose HTTP status and case are
/// not in the table, derived from the HTTP status alone.
fn structural_response_code(
    provider: Provider,
    code: &str,
    rc: ResponseCode<'_>,
    operation: Option<CodeOperation>,
    provider_message: &str,
) -> Explanation {
    let svc = service(rc.service).filter(|s| s.provider == provider);
    let svc_text = match svc {
        Some(s) => format!("service {} ({})", rc.service, s.name),
        None => format!("service {} (not a {} service)", rc.service, provider),
    };
    let op = svc.map(|s| s.operation).or(operation);
    let http = rc.http;
    let cautious = op.is_none_or(|op| op.moves_money() || op.is_status_query());
    let (outcome, retry, category, who, rule) = match http {
        202 => (
            Outcome::Pending,
            Retry::QueryFirst,
            Category::Processing,
            WhoActs::None,
            "Accepted and in progress: wait for the callback or query the status; do not resubmit.",
        ),
        200..=299 => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::Success,
            WhoActs::Operations,
            "A success-class reply with a case we do not know: confirm by a status query before trusting it.",
        ),
        408 | 504 => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::Timeout,
            WhoActs::Operations,
            "Timeout class: the request may have been processed. Query the status; never fail it automatically.",
        ),
        409 => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::Duplicate,
            WhoActs::Operations,
            "Conflict class: an earlier attempt may exist. Query the status; never resubmit blindly.",
        ),
        429 => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::RateLimit,
            WhoActs::Operations,
            "Rate-limited: a concurrent attempt may be in flight. Slow down and query the status.",
        ),
        400..=499 if cautious => (
            Outcome::Unknown,
            Retry::QueryFirst,
            client_error_category(http),
            WhoActs::TechSupport,
            "An unlisted rejection of a money-moving or status request: confirm by a status query before treating it as failed; ask the provider what the case means.",
        ),
        400..=499 => (
            Outcome::Failed,
            Retry::AfterFix,
            client_error_category(http),
            WhoActs::TechSupport,
            "An unlisted rejection (client-error class): the request was not processed. Ask the provider what the case means and fix the request.",
        ),
        500..=599 => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::System,
            WhoActs::Operations,
            "Server-error class: the request may have been processed. Query the status; never fail it automatically.",
        ),
        _ => (
            Outcome::Unknown,
            Retry::QueryFirst,
            Category::System,
            WhoActs::TechSupport,
            "Not a valid HTTP status prefix: treat as a garbled reply and query the status.",
        ),
    };
    let mut message = format!(
        "not in catalogue: HTTP {http} ({}), {svc_text}, case {}",
        http_phrase(http),
        rc.case
    );
    if !provider_message.is_empty() {
        message = format!("{provider_message} ({message})");
    }
    structural(
        provider,
        code,
        op,
        message,
        outcome,
        retry,
        category,
        who,
        rule.to_string(),
    )
}

fn client_error_category(http: u16) -> Category {
    match http {
        400 | 405 => Category::Integration,
        401 => Category::Authentication,
        403 | 404 => Category::Business,
        _ => Category::System,
    }
}

/// Builds a not-in-catalogue explanation with the generic merchant message for
/// its outcome.
#[allow(clippy::too_many_arguments)]
fn structural(
    provider: Provider,
    code: &str,
    operation: Option<CodeOperation>,
    provider_message: String,
    outcome: Outcome,
    retry: Retry,
    category: Category,
    who_acts: WhoActs,
    operator_action: String,
) -> Explanation {
    let (en, id) = generic_merchant_message(outcome);
    Explanation {
        provider,
        code: code.to_string(),
        operation,
        operations: operation.into_iter().collect(),
        provider_message,
        outcome,
        retry,
        retry_safe: retry.is_safe(),
        category,
        who_acts,
        operator_action,
        merchant_message_en: en.to_string(),
        merchant_message_id: id.to_string(),
        in_catalogue: false,
    }
}

fn generic_merchant_message(outcome: Outcome) -> (&'static str, &'static str) {
    match outcome {
        Outcome::Success => ("The transaction was successful.", "Transaksi berhasil."),
        Outcome::Pending => (
            "The transaction is being processed. We will let you know the result.",
            "Transaksi sedang diproses. Kami akan mengabarkan hasilnya.",
        ),
        Outcome::Failed => (
            "The transaction could not be processed. Please contact support if this keeps happening.",
            "Transaksi tidak dapat diproses. Silakan hubungi tim dukungan jika ini terus terjadi.",
        ),
        Outcome::Unknown => (
            "We are confirming the status of this transaction with the provider. Please do not repeat it until we confirm.",
            "Kami sedang memastikan status transaksi ini ke penyedia. Mohon jangan mengulanginya sampai ada konfirmasi dari kami.",
        ),
    }
}

fn operation_list(ops: &[CodeOperation]) -> String {
    ops.iter()
        .map(|op| op.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How cautious an outcome is, for choosing among readings: unknown beats
/// pending beats failed beats success.
fn caution(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Unknown => 3,
        Outcome::Pending => 2,
        Outcome::Failed => 1,
        Outcome::Success => 0,
    }
}
