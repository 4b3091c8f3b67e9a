//! The transactions table as Rust. [`TransactionRow`] is one row;
//! [`TransactionRow::to_pb`] is what clients see and [`TransactionRow::command`]
//! is what a connector is sent, so the ingress (first dispatch), the
//! reconciler (status checks, sweep re-dispatch) and `loketctl` all build
//! them the same way.
//!
//! State transitions are not written here: the ingress inserts, the reconciler
//! alone updates status.
//!
//! [`api_key_hash`] is how a client's API key is stored, so the key `loketctl`
//! creates and the key the ingress checks are hashed by one function.

use chrono::{DateTime, Utc};
use loket_protocol::conversions::timestamp;
use loket_protocol::pb::{self, bus};
use loket_protocol::state::NOT_FOUND_CODE;
use loket_protocol::{Operation, Provider, TransactionKind, TransactionStatus};
use sha2::{Digest as _, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Every column of `transactions`, in one place.
pub const COLUMNS: &str = "id, client_id, client_ref, kind, status, provider, product_code, \
    provider_product_code, account, account2, account3, contact, amount_minor, currency, request_hash, \
    provider_reference, provider_trace, provider_code, provider_message, serial_number, \
    provider_amount_minor, amount_mismatch, inquiry_id, bill, inquiry_data, expires_at, dispatched_at, \
    dispatch_count, next_check_at, check_count, not_found_since, review_reason, reviewed_from, created_at, \
    updated_at, finalized_at, original_id, method, details, payment";

/// `clients.api_key_hash`: SHA-256 of the whole key text. Only the hash is
/// stored; the key is shown once, when `loketctl client create` makes it.
pub fn api_key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransactionRow {
    pub id: Uuid,
    pub client_id: Uuid,
    pub client_ref: String,
    pub kind: String,
    pub status: String,
    pub provider: String,
    pub product_code: String,
    pub provider_product_code: String,
    pub account: String,
    pub account2: String,
    pub account3: String,
    pub contact: String,
    pub amount_minor: Option<i64>,
    pub currency: String,
    pub request_hash: Vec<u8>,
    pub provider_reference: String,
    pub provider_trace: Option<String>,
    pub provider_code: Option<String>,
    pub provider_message: Option<String>,
    pub serial_number: Option<String>,
    pub provider_amount_minor: Option<i64>,
    pub amount_mismatch: bool,
    pub inquiry_id: Option<Uuid>,
    /// A serialized [`pb::BillDetails`] as JSON (see [`bill_to_json`]).
    pub bill: Option<serde_json::Value>,
    /// Values a payment must echo verbatim: `{"inquirycode": "...", ...}`.
    pub inquiry_data: Option<serde_json::Value>,
    pub expires_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub dispatch_count: i32,
    pub next_check_at: Option<DateTime<Utc>>,
    pub check_count: i32,
    pub not_found_since: Option<DateTime<Utc>>,
    pub review_reason: Option<String>,
    /// The status it had when it was parked in `needs_review`.
    pub reviewed_from: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finalized_at: Option<DateTime<Utc>>,
    /// Cancels and refunds: the payment they act on.
    pub original_id: Option<Uuid>,
    pub method: String,
    /// Non-secret provider parameters (the Command's `details`), plus
    /// `original_reference` / `original_provider_trace` for cancels and
    /// refunds.
    pub details: Option<serde_json::Value>,
    /// Pay-ins: a serialized [`pb::PaymentInstructions`] (see [`payment_to_json`]).
    pub payment: Option<serde_json::Value>,
}

impl TransactionRow {
    pub fn status(&self) -> Option<TransactionStatus> {
        TransactionStatus::parse(&self.status)
    }

    pub fn kind(&self) -> Option<TransactionKind> {
        TransactionKind::parse(&self.kind)
    }

    pub fn provider(&self) -> Option<Provider> {
        Provider::parse(&self.provider).ok()
    }

    /// What the client sees. A hosted-page pay-in requested no method: its
    /// `method` is the one the provider reported the payer chose, once the
    /// payment instructions record it.
    pub fn to_pb(&self) -> pb::Transaction {
        let payment = self.payment.as_ref().and_then(payment_from_json);
        let method = match (&self.method, &payment) {
            (requested, Some(payment)) if requested.is_empty() => payment.method.clone(),
            (requested, _) => requested.clone(),
        };
        let money = |minor: Option<i64>| {
            minor.map(|minor| pb::Money {
                minor,
                currency: self.currency.clone(),
            })
        };
        pb::Transaction {
            id: self.id.to_string(),
            client_ref: self.client_ref.clone(),
            kind: self
                .kind()
                .map(pb::TransactionKind::from)
                .unwrap_or_default() as i32,
            status: self
                .status()
                .map(pb::TransactionStatus::from)
                .unwrap_or_default() as i32,
            product_code: self.product_code.clone(),
            provider: self.provider.clone(),
            account: self.account.clone(),
            amount: money(self.amount_minor),
            provider_reference: self.provider_reference.clone(),
            provider_trace: self.provider_trace.clone().unwrap_or_default(),
            provider_code: self.provider_code.clone().unwrap_or_default(),
            provider_message: self.provider_message.clone().unwrap_or_default(),
            serial_number: self.serial_number.clone().unwrap_or_default(),
            bill: self.bill.as_ref().and_then(bill_from_json),
            inquiry_id: self.inquiry_id.map(|id| id.to_string()).unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            explanation: self.explanation(),
            amount_mismatch: self.amount_mismatch,
            provider_amount: money(self.provider_amount_minor),
            original_id: self
                .original_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            payment,
            method,
        }
    }

    /// What the provider code means, from the code catalogue, for this
    /// transaction's operation. [`NOT_FOUND_CODE`], which the reconciler
    /// writes when the provider had no record, is not a provider code and gets
    /// no explanation (Smilepayz's catalogue would read it as an unlisted
    /// order status, "outcome unknown", next to `failed`).
    /// [`EXPIRED_CODE`](loket_protocol::state::EXPIRED_CODE) is
    /// explained only where the provider has an `EXPIRED` status of its own
    /// (Smilepayz), which means the same. A code whose outcome disagrees
    /// with the transaction's status gets none either
    /// ([`TransactionStatus::is_explained_by`]).
    pub fn explanation(&self) -> Option<pb::CodeExplanation> {
        let code = self
            .provider_code
            .as_deref()
            .filter(|code| *code != NOT_FOUND_CODE)?;
        let provider = self.provider()?;
        let operation = self.kind()?.operation();
        let status = self.status()?;
        loket_protocol::catalogue::explain(provider, code, Some(operation.into()))
            .ok()
            .filter(|explanation| status.is_explained_by(explanation.outcome))
            .map(|explanation| pb::CodeExplanation::from(&explanation))
    }

    fn inquiry_data_map(&self) -> std::collections::HashMap<String, String> {
        string_map(self.inquiry_data.as_ref())
    }

    fn details_map(&self) -> std::collections::HashMap<String, String> {
        string_map(self.details.as_ref())
    }

    /// The command that performs this transaction's own operation.
    /// `first_dispatch` is true only for the ingress's first publish.
    pub fn command(&self, first_dispatch: bool) -> bus::Command {
        let operation = self
            .kind()
            .map(TransactionKind::operation)
            .unwrap_or(Operation::StatusCheck);
        let mut details = self.details_map();
        if !self.method.is_empty() {
            details.insert("method".into(), self.method.clone());
        }
        bus::Command {
            transaction_id: self.id.to_string(),
            provider: self.provider.clone(),
            operation: bus::Operation::from(operation) as i32,
            provider_reference: self.provider_reference.clone(),
            provider_product_code: self.provider_product_code.clone(),
            account: self.account.clone(),
            account2: self.account2.clone(),
            account3: self.account3.clone(),
            contact: self.contact.clone(),
            amount: self.amount_minor.map(|minor| pb::Money {
                minor,
                currency: self.currency.clone(),
            }),
            inquiry_data: self.inquiry_data_map(),
            original_operation: bus::Operation::Unspecified as i32,
            provider_trace: self.provider_trace.clone().unwrap_or_default(),
            first_dispatch,
            issued_at: Some(timestamp(Utc::now())),
            transaction_created_at: Some(timestamp(self.created_at)),
            kind: self
                .kind()
                .map(pb::TransactionKind::from)
                .unwrap_or_default() as i32,
            original_reference: details.remove(ORIGINAL_REFERENCE).unwrap_or_default(),
            original_provider_trace: details.remove(ORIGINAL_PROVIDER_TRACE).unwrap_or_default(),
            details,
        }
    }

    /// A status check about this transaction's own operation.
    pub fn status_check(&self) -> bus::Command {
        let mut command = self.command(false);
        command.original_operation = command.operation;
        command.operation = bus::Operation::StatusCheck as i32;
        command
    }

    /// The `Nats-Msg-Id` of this transaction's command; the same id for the
    /// ingress's publish and a re-publish within the duplicate window.
    pub fn command_msg_id(&self, dispatch_count: i32) -> String {
        format!("cmd:{}:{}", self.id, dispatch_count)
    }
}

/// `details` keys under which the ingress records a cancel's or refund's
/// original payment references.
pub const ORIGINAL_REFERENCE: &str = "original_reference";
pub const ORIGINAL_PROVIDER_TRACE: &str = "original_provider_trace";

fn string_map(value: Option<&serde_json::Value>) -> std::collections::HashMap<String, String> {
    value
        .and_then(|value| value.as_object())
        .map(|object| {
            object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn payment_to_json(payment: &pb::PaymentInstructions) -> serde_json::Value {
    serde_json::json!({
        "method": payment.method,
        "qr_string": payment.qr_string,
        "va_number": payment.va_number,
        "payment_url": payment.payment_url,
        "expires_at": payment.expires_at.as_ref().and_then(loket_protocol::conversions::from_timestamp).map(|t| t.to_rfc3339()),
    })
}

pub fn payment_from_json(value: &serde_json::Value) -> Option<pb::PaymentInstructions> {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(pb::PaymentInstructions {
        method: text("method"),
        qr_string: text("qr_string"),
        va_number: text("va_number"),
        payment_url: text("payment_url"),
        expires_at: value
            .get("expires_at")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| timestamp(t.with_timezone(&Utc))),
    })
}

pub fn bill_to_json(bill: &pb::BillDetails) -> serde_json::Value {
    let money = |m: &Option<pb::Money>| m.as_ref().map(|m| m.minor);
    serde_json::json!({
        "customer_name": bill.customer_name,
        "bill_amount": money(&bill.bill_amount),
        "admin_fee": money(&bill.admin_fee),
        "total_amount": money(&bill.total_amount),
        "expires_at": bill.expires_at.as_ref().and_then(loket_protocol::conversions::from_timestamp).map(|t| t.to_rfc3339()),
        "extra": bill.extra,
    })
}

pub fn bill_from_json(value: &serde_json::Value) -> Option<pb::BillDetails> {
    let money = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_i64())
            .map(|minor| pb::Money {
                minor,
                currency: "IDR".into(),
            })
    };
    Some(pb::BillDetails {
        customer_name: value
            .get("customer_name")?
            .as_str()
            .unwrap_or_default()
            .to_string(),
        bill_amount: money("bill_amount"),
        admin_fee: money("admin_fee"),
        total_amount: money("total_amount"),
        expires_at: value
            .get("expires_at")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| timestamp(t.with_timezone(&Utc))),
        extra: value
            .get("extra")
            .and_then(|v| v.as_object())
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

pub async fn get(
    executor: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(executor)
    .await
}

pub async fn get_by_reference(
    executor: impl PgExecutor<'_>,
    provider: Provider,
    provider_reference: &str,
) -> Result<Option<TransactionRow>, sqlx::Error> {
    sqlx::query_as::<_, TransactionRow>(&format!(
        "SELECT {COLUMNS} FROM transactions WHERE provider_reference = $1 AND provider = $2"
    ))
    .bind(provider_reference)
    .bind(provider.as_str())
    .fetch_optional(executor)
    .await
}

/// The id of the newest event in transaction `id`'s history (0 when it has
/// none) that a decision taken on `seen_event` must find there
/// (`loket_protocol::review::Refusal::ChangedSince`; `i64::MAX`: the newest
/// of all). An unverified callback recorded after `seen_event` that asked
/// for nothing (`action` `none`: it changes nothing and claims nothing an
/// operator could believe) does not count, or a sender repeating one every
/// few seconds would make the case impossible to settle.
pub async fn newest_event(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    seen_event: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(max(id), 0) FROM transaction_events WHERE transaction_id = $1 \
         AND (id <= $2 OR source <> 'callback' OR detail->>'action' IS DISTINCT FROM 'none')",
    )
    .bind(id)
    .bind(seen_event)
    .fetch_one(executor)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_is_sha256_of_the_key_text() {
        // `printf lk_test | sha256sum`
        let hex: String = api_key_hash("lk_test")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "261b46e608d87c826b7fcecf64cd163422257f85f2b38b863043ced7ee009016"
        );
    }
}
