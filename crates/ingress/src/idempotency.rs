//! Telling a replay from a conflicting reuse of a `client_ref`.
//!
//! The parameters a client sent ([`RequestParams`]) are hashed over a
//! canonical, length-prefixed encoding and stored in
//! `transactions.request_hash`. A second call with the same `client_ref`
//! and the same hash gets the existing transaction back; a different hash is
//! refused with a message naming each parameter that differs, rebuilt from
//! the stored row ([`RequestParams::from_row`]).
//!
//! Only what the *client* sent is hashed: a purchase's amount is the
//! product's price, not a request parameter, and a payment's product and
//! account come from its inquiry. So an operator changing a price does not
//! turn a client's retry into a conflict. Likewise a cancel's amount is the
//! original payment's, not a parameter. Defaults the ingress fills in (the
//! product code, a pay-in's expiry and purpose) are hashed as filled in, so
//! leaving them empty and sending the default are the same request.
//!
//! The wave-2 parameters (`original_id`, `method`, the request `details`)
//! are encoded only when present, after the original fields: the encoding of
//! every purchase, inquiry and bill payment is unchanged, so hashes already
//! stored keep matching.

use loket_protocol::{Money, TransactionKind};
use loket_store::TransactionRow;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::validate::{
    InquireInput, PayBillInput, PayInInput, PayOutInput, PurchaseInput, QrCancelInput, QrPayInput,
    QrRefundInput,
};

/// `details` keys: what the connector needs besides the columns.
pub mod detail {
    pub const QR_CONTENT: &str = "qr_content";
    pub const PAYER_NAME: &str = "payer_name";
    pub const PAYER_PHONE: &str = "payer_phone";
    pub const PAYER_EMAIL: &str = "payer_email";
    pub const EXPIRY_SECONDS: &str = "expiry_seconds";
    pub const PURPOSE: &str = "purpose";
    pub const RECEIVER_NAME: &str = "receiver_name";
    pub const REASON: &str = "reason";
}

/// Which API call created a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Purchase,
    Inquire,
    PayBill,
    QrPay,
    QrCancel,
    QrRefund,
    PayIn,
    PayOut,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Purchase => "purchase",
            Call::Inquire => "inquire",
            Call::PayBill => "pay_bill",
            Call::QrPay => "qr_pay",
            Call::QrCancel => "qr_cancel",
            Call::QrRefund => "qr_refund",
            Call::PayIn => "pay_in",
            Call::PayOut => "pay_out",
        }
    }

    /// The `details` keys that are this call's client parameters (others,
    /// such as a refund's `original_reference`, are derived by loket).
    fn detail_keys(self) -> &'static [&'static str] {
        match self {
            Call::Purchase | Call::Inquire | Call::PayBill => &[],
            Call::QrPay => &[detail::QR_CONTENT],
            Call::QrCancel | Call::QrRefund => &[detail::REASON],
            Call::PayIn => &[
                detail::PAYER_NAME,
                detail::PAYER_PHONE,
                detail::PAYER_EMAIL,
                detail::EXPIRY_SECONDS,
                detail::PURPOSE,
            ],
            Call::PayOut => &[detail::RECEIVER_NAME, detail::PURPOSE],
        }
    }

    fn of_kind(kind: TransactionKind) -> Call {
        match kind {
            TransactionKind::PrepaidPurchase => Call::Purchase,
            TransactionKind::PrepaidInquiry | TransactionKind::BillInquiry => Call::Inquire,
            TransactionKind::BillPayment => Call::PayBill,
            TransactionKind::QrPayment => Call::QrPay,
            TransactionKind::QrCancel => Call::QrCancel,
            TransactionKind::QrRefund => Call::QrRefund,
            TransactionKind::PayIn => Call::PayIn,
            TransactionKind::PayOut => Call::PayOut,
        }
    }
}

/// The parameters of one mutating call, as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParams {
    pub call: Call,
    pub product_code: String,
    pub account: String,
    pub account2: String,
    pub account3: String,
    pub contact: String,
    pub inquiry_id: Option<Uuid>,
    pub amount: Option<Money>,
    /// Cancels and refunds: the payment they act on.
    pub original_id: Option<Uuid>,
    pub method: String,
    /// The call's own `details` parameters; empty values are never stored.
    pub details: BTreeMap<String, String>,
}

/// `details` from `(key, value)` pairs, leaving out empty values.
fn details_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

impl RequestParams {
    fn empty(call: Call) -> Self {
        RequestParams {
            call,
            product_code: String::new(),
            account: String::new(),
            account2: String::new(),
            account3: String::new(),
            contact: String::new(),
            inquiry_id: None,
            amount: None,
            original_id: None,
            method: String::new(),
            details: BTreeMap::new(),
        }
    }

    /// The `details` column of a transaction created with these parameters.
    pub fn details_json(&self) -> Option<serde_json::Value> {
        (!self.details.is_empty()).then(|| {
            serde_json::Value::Object(
                self.details
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
        })
    }

    pub fn qr_pay(input: &QrPayInput) -> Self {
        RequestParams {
            product_code: input.product_code.as_str().to_string(),
            amount: Some(input.amount),
            details: details_of(&[(detail::QR_CONTENT, &input.qr_content)]),
            ..Self::empty(Call::QrPay)
        }
    }

    pub fn qr_cancel(input: &QrCancelInput) -> Self {
        RequestParams {
            original_id: Some(input.transaction_id),
            details: details_of(&[(detail::REASON, &input.reason)]),
            ..Self::empty(Call::QrCancel)
        }
    }

    pub fn qr_refund(input: &QrRefundInput) -> Self {
        RequestParams {
            original_id: Some(input.transaction_id),
            amount: Some(input.amount),
            details: details_of(&[(detail::REASON, &input.reason)]),
            ..Self::empty(Call::QrRefund)
        }
    }

    pub fn pay_in(input: &PayInInput) -> Self {
        RequestParams {
            product_code: input.product_code.as_str().to_string(),
            amount: Some(input.amount),
            method: input.method.clone(),
            details: details_of(&[
                (detail::PAYER_NAME, &input.payer_name),
                (detail::PAYER_PHONE, &input.payer_phone),
                (detail::PAYER_EMAIL, &input.payer_email),
                (detail::EXPIRY_SECONDS, &input.expiry_seconds.to_string()),
                (detail::PURPOSE, &input.purpose),
            ]),
            ..Self::empty(Call::PayIn)
        }
    }

    pub fn pay_out(input: &PayOutInput) -> Self {
        RequestParams {
            product_code: input.product_code.as_str().to_string(),
            amount: Some(input.amount),
            method: input.method.clone(),
            account: input.account.clone(),
            details: details_of(&[
                (detail::RECEIVER_NAME, &input.receiver_name),
                (detail::PURPOSE, &input.purpose),
            ]),
            ..Self::empty(Call::PayOut)
        }
    }

    pub fn purchase(input: &PurchaseInput) -> Self {
        RequestParams {
            product_code: input.product_code.as_str().to_string(),
            account: input.account.clone(),
            inquiry_id: input.inquiry_id,
            ..Self::empty(Call::Purchase)
        }
    }

    pub fn inquire(input: &InquireInput) -> Self {
        RequestParams {
            product_code: input.product_code.as_str().to_string(),
            account: input.account.clone(),
            account2: input.account2.clone(),
            account3: input.account3.clone(),
            contact: input.contact.clone(),
            ..Self::empty(Call::Inquire)
        }
    }

    pub fn pay_bill(input: &PayBillInput) -> Self {
        RequestParams {
            inquiry_id: Some(input.inquiry_id),
            amount: Some(input.amount),
            ..Self::empty(Call::PayBill)
        }
    }

    /// The parameters the stored row was created with (`None` for a row
    /// whose kind this version does not know).
    pub fn from_row(row: &TransactionRow) -> Option<Self> {
        let call = Call::of_kind(row.kind()?);
        let stored = row.details.as_ref().and_then(|value| value.as_object());
        let details: BTreeMap<String, String> = call
            .detail_keys()
            .iter()
            .filter_map(|key| {
                let value = stored?.get(*key)?.as_str()?;
                (!value.is_empty()).then(|| (key.to_string(), value.to_string()))
            })
            .collect();
        Some(match call {
            Call::Purchase => RequestParams {
                product_code: row.product_code.clone(),
                account: row.account.clone(),
                inquiry_id: row.inquiry_id,
                ..Self::empty(call)
            },
            Call::Inquire => RequestParams {
                product_code: row.product_code.clone(),
                account: row.account.clone(),
                account2: row.account2.clone(),
                account3: row.account3.clone(),
                contact: row.contact.clone(),
                ..Self::empty(call)
            },
            Call::PayBill => RequestParams {
                inquiry_id: row.inquiry_id,
                amount: row.amount_minor.map(Money::idr),
                ..Self::empty(call)
            },
            Call::QrPay => RequestParams {
                product_code: row.product_code.clone(),
                amount: row.amount_minor.map(Money::idr),
                details,
                ..Self::empty(call)
            },
            Call::QrCancel => RequestParams {
                original_id: row.original_id,
                details,
                ..Self::empty(call)
            },
            Call::QrRefund => RequestParams {
                original_id: row.original_id,
                amount: row.amount_minor.map(Money::idr),
                details,
                ..Self::empty(call)
            },
            Call::PayIn => RequestParams {
                product_code: row.product_code.clone(),
                amount: row.amount_minor.map(Money::idr),
                method: row.method.clone(),
                details,
                ..Self::empty(call)
            },
            Call::PayOut => RequestParams {
                product_code: row.product_code.clone(),
                amount: row.amount_minor.map(Money::idr),
                method: row.method.clone(),
                account: row.account.clone(),
                details,
                ..Self::empty(call)
            },
        })
    }

    /// The canonical encoding: a version line, then `name=<len>:<value>\n`
    /// for every parameter in a fixed order, so no two different parameter
    /// sets encode the same.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = b"loket.request.v1\n".to_vec();
        let mut field = |name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        };
        field("call", self.call.as_str());
        field("product_code", &self.product_code);
        field("account", &self.account);
        field("account2", &self.account2);
        field("account3", &self.account3);
        field("contact", &self.contact);
        field(
            "inquiry_id",
            &self.inquiry_id.map(|id| id.to_string()).unwrap_or_default(),
        );
        field(
            "amount",
            &self
                .amount
                .map(|m| format!("{}:{}", m.currency.code(), m.minor))
                .unwrap_or_default(),
        );
        // Wave-2 parameters: only when present (see the module comment).
        if let Some(original) = self.original_id {
            field("original_id", &original.to_string());
        }
        if !self.method.is_empty() {
            field("method", &self.method);
        }
        for (key, value) in &self.details {
            if !value.is_empty() {
                field(&format!("detail.{key}"), value);
            }
        }
        out
    }

    /// SHA-256 of [`Self::canonical`], stored as `request_hash`.
    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.canonical()).to_vec()
    }

    /// `name (existing X vs requested Y)` for every parameter that differs.
    pub fn differences(&self, existing: &RequestParams) -> Vec<String> {
        fn show(value: &str) -> String {
            if value.is_empty() {
                "empty".into()
            } else {
                crate::validate::shortened(value, 40)
            }
        }
        let mut out = Vec::new();
        let mut compare = |name: &str, old: String, new: String| {
            if old != new {
                out.push(format!(
                    "{name} (existing {} vs requested {})",
                    show(&old),
                    show(&new)
                ));
            }
        };
        compare(
            "operation",
            existing.call.as_str().into(),
            self.call.as_str().into(),
        );
        compare(
            "product_code",
            existing.product_code.clone(),
            self.product_code.clone(),
        );
        compare("account", existing.account.clone(), self.account.clone());
        compare("account2", existing.account2.clone(), self.account2.clone());
        compare("account3", existing.account3.clone(), self.account3.clone());
        compare("contact", existing.contact.clone(), self.contact.clone());
        let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
        compare("inquiry_id", id(existing.inquiry_id), id(self.inquiry_id));
        let amount = |m: Option<Money>| m.map(|m| m.minor.to_string()).unwrap_or_default();
        compare("amount", amount(existing.amount), amount(self.amount));
        compare(
            "transaction_id",
            id(existing.original_id),
            id(self.original_id),
        );
        compare("method", existing.method.clone(), self.method.clone());
        let keys: std::collections::BTreeSet<&String> =
            existing.details.keys().chain(self.details.keys()).collect();
        for key in keys {
            let value =
                |details: &BTreeMap<String, String>| details.get(key).cloned().unwrap_or_default();
            let name = match key.as_str() {
                detail::PAYER_NAME => "payer.name",
                detail::PAYER_PHONE => "payer.phone",
                detail::PAYER_EMAIL => "payer.email",
                other => other,
            };
            compare(name, value(&existing.details), value(&self.details));
        }
        out
    }
}

/// What an existing row with the same `client_ref` means for this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Same parameters: return the existing transaction.
    Same,
    /// Different parameters: the `ALREADY_EXISTS` message.
    Conflict(String),
}

pub fn compare(client_ref: &str, requested: &RequestParams, existing: &TransactionRow) -> Replay {
    if existing.request_hash == requested.hash() {
        return Replay::Same;
    }
    let differences = RequestParams::from_row(existing)
        .map(|stored| requested.differences(&stored))
        .unwrap_or_default();
    let detail = if differences.is_empty() {
        "parameters differ".to_string()
    } else {
        differences.join(", ")
    };
    Replay::Conflict(format!(
        "client_ref {client_ref} already used with different parameters: {detail}"
    ))
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn row(params: &RequestParams, kind: TransactionKind) -> TransactionRow {
        let now = chrono::Utc::now();
        TransactionRow {
            id: Uuid::now_v7(),
            client_id: Uuid::now_v7(),
            client_ref: "r1".into(),
            kind: kind.as_str().into(),
            status: "received".into(),
            provider: "okebayar".into(),
            product_code: params.product_code.clone(),
            provider_product_code: "X".into(),
            account: params.account.clone(),
            account2: params.account2.clone(),
            account3: params.account3.clone(),
            contact: params.contact.clone(),
            amount_minor: params.amount.map(|m| m.minor),
            currency: "IDR".into(),
            request_hash: params.hash(),
            provider_reference: "ref".into(),
            provider_trace: None,
            provider_code: None,
            provider_message: None,
            serial_number: None,
            provider_amount_minor: None,
            amount_mismatch: false,
            inquiry_id: params.inquiry_id,
            bill: None,
            inquiry_data: None,
            expires_at: None,
            dispatched_at: None,
            dispatch_count: 0,
            next_check_at: None,
            check_count: 0,
            not_found_since: None,
            review_reason: None,
            reviewed_from: None,
            created_at: now,
            updated_at: now,
            finalized_at: None,
            original_id: params.original_id,
            method: params.method.clone(),
            details: params.details_json(),
            payment: None,
        }
    }

    /// A row of `kind` with plausible parameters.
    pub(crate) fn row_of_kind(kind: TransactionKind) -> TransactionRow {
        let params = RequestParams {
            product_code: "P1".into(),
            account: "0812345678".into(),
            ..RequestParams::empty(Call::of_kind(kind))
        };
        row(&params, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::row;
    use super::*;
    use crate::validate::{ClientRef, ProductCode};
    use std::time::Duration;
    use uuid::Uuid;

    fn pay(amount: i64) -> PayBillInput {
        PayBillInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            inquiry_id: Uuid::from_u128(7),
            amount: Money::idr(amount),
            wait: Duration::ZERO,
        }
    }

    fn buy(account: &str) -> PurchaseInput {
        PurchaseInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            product_code: ProductCode::parse("product_code", "PULSA10").unwrap(),
            account: account.into(),
            inquiry_id: None,
            wait: Duration::from_secs(5),
        }
    }

    #[test]
    fn same_parameters_replay_and_wait_is_not_a_parameter() {
        let first = RequestParams::purchase(&buy("0812345678"));
        let mut again = buy("0812345678");
        again.wait = Duration::ZERO;
        let stored = row(&first, TransactionKind::PrepaidPurchase);
        assert_eq!(
            compare("r1", &RequestParams::purchase(&again), &stored),
            Replay::Same
        );
    }

    #[test]
    fn a_different_amount_is_named_with_both_values() {
        let stored = row(
            &RequestParams::pay_bill(&pay(10_000)),
            TransactionKind::BillPayment,
        );
        let Replay::Conflict(message) =
            compare("r1", &RequestParams::pay_bill(&pay(20_000)), &stored)
        else {
            panic!("expected a conflict");
        };
        assert_eq!(
            message,
            "client_ref r1 already used with different parameters: amount (existing 10000 vs requested 20000)"
        );
    }

    #[test]
    fn several_differences_are_all_named() {
        let stored = row(
            &RequestParams::purchase(&buy("0812345678")),
            TransactionKind::PrepaidPurchase,
        );
        let mut other = RequestParams::purchase(&buy("0899999999"));
        other.product_code = "DATA1".into();
        let Replay::Conflict(message) = compare("r1", &other, &stored) else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("product_code (existing PULSA10 vs requested DATA1)"),
            "{message}"
        );
        assert!(
            message.contains("account (existing 0812345678 vs requested 0899999999)"),
            "{message}"
        );
        assert!(!message.contains("amount"), "{message}");
    }

    #[test]
    fn another_call_with_the_same_ref_conflicts() {
        let stored = row(
            &RequestParams::purchase(&buy("0812345678")),
            TransactionKind::PrepaidPurchase,
        );
        let Replay::Conflict(message) = compare("r1", &RequestParams::pay_bill(&pay(5)), &stored)
        else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("operation (existing purchase vs requested pay_bill)"),
            "{message}"
        );
    }

    #[test]
    fn canonical_encoding_is_unambiguous() {
        // Moving characters between adjacent fields changes the hash.
        let mut a = RequestParams::purchase(&buy("1234567"));
        a.account2 = "89".into();
        let mut b = RequestParams::purchase(&buy("123456"));
        b.account2 = "789".into();
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 32);
        assert_eq!(a.hash(), a.clone().hash());
    }

    #[test]
    fn stored_row_parameters_round_trip_for_every_call() {
        let inquire = InquireInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            product_code: ProductCode::parse("product_code", "BPJS").unwrap(),
            account: "8888801234".into(),
            account2: String::new(),
            account3: "3".into(),
            contact: "a@b.c".into(),
            wait: Duration::ZERO,
        };
        for (params, kind) in [
            (
                RequestParams::purchase(&buy("0812345678")),
                TransactionKind::PrepaidPurchase,
            ),
            (
                RequestParams::inquire(&inquire),
                TransactionKind::BillInquiry,
            ),
            (
                RequestParams::inquire(&inquire),
                TransactionKind::PrepaidInquiry,
            ),
            (
                RequestParams::pay_bill(&pay(12_500)),
                TransactionKind::BillPayment,
            ),
        ] {
            let stored = row(&params, kind);
            assert_eq!(RequestParams::from_row(&stored).as_ref(), Some(&params));
        }
    }

    fn qr(amount: i64, qr_content: &str) -> QrPayInput {
        QrPayInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            product_code: ProductCode::parse("product_code", "QRCPM").unwrap(),
            amount: Money::idr(amount),
            qr_content: qr_content.into(),
            wait: Duration::ZERO,
        }
    }

    fn refund(original: Uuid, amount: i64, reason: &str) -> QrRefundInput {
        QrRefundInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            transaction_id: original,
            amount: Money::idr(amount),
            reason: reason.into(),
            wait: Duration::ZERO,
        }
    }

    fn payin(phone: &str, expiry_seconds: u32) -> PayInInput {
        PayInInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            product_code: ProductCode::parse("product_code", "PAYIN").unwrap(),
            amount: Money::idr(150_000),
            method: "QRIS".into(),
            payer_name: "Budi".into(),
            payer_phone: phone.into(),
            payer_email: String::new(),
            expiry_seconds,
            purpose: "loket pay-in".into(),
            wait: Duration::ZERO,
        }
    }

    fn payout(account: &str) -> PayOutInput {
        PayOutInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            product_code: ProductCode::parse("product_code", "PAYOUT").unwrap(),
            amount: Money::idr(50_000),
            method: "BCA".into(),
            account: account.into(),
            receiver_name: String::new(),
            purpose: "loket pay-out".into(),
            wait: Duration::ZERO,
        }
    }

    #[test]
    fn the_encoding_of_earlier_calls_is_unchanged() {
        // Hashes stored before wave 2 must keep matching their replays.
        let canonical = RequestParams::purchase(&buy("0812345678")).canonical();
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            "loket.request.v1\ncall=8:purchase\nproduct_code=7:PULSA10\naccount=10:0812345678\n\
             account2=0:\naccount3=0:\ncontact=0:\ninquiry_id=0:\namount=0:\n"
        );
    }

    #[test]
    fn wave_two_parameters_round_trip_through_the_stored_row() {
        let original = Uuid::from_u128(42);
        let cancel = QrCancelInput {
            client_ref: ClientRef::parse("r1").unwrap(),
            transaction_id: original,
            reason: "customer changed mind".into(),
            wait: Duration::ZERO,
        };
        for (params, kind) in [
            (
                RequestParams::qr_pay(&qr(10_000, "")),
                TransactionKind::QrPayment,
            ),
            (
                RequestParams::qr_pay(&qr(10_000, "hQVDUFYwMQ")),
                TransactionKind::QrPayment,
            ),
            (RequestParams::qr_cancel(&cancel), TransactionKind::QrCancel),
            (
                RequestParams::qr_refund(&refund(original, 2_500, "")),
                TransactionKind::QrRefund,
            ),
            (
                RequestParams::pay_in(&payin("081234567890", 3_600)),
                TransactionKind::PayIn,
            ),
            (
                RequestParams::pay_out(&payout("1234567890")),
                TransactionKind::PayOut,
            ),
        ] {
            let mut stored = row(&params, kind);
            // loket's own additions to `details` are not client parameters.
            if let Some(serde_json::Value::Object(details)) = stored.details.as_mut() {
                details.insert(
                    loket_store::ORIGINAL_REFERENCE.into(),
                    serde_json::json!("abc"),
                );
            }
            assert_eq!(
                RequestParams::from_row(&stored).as_ref(),
                Some(&params),
                "{kind:?}"
            );
            assert_eq!(compare("r1", &params, &stored), Replay::Same);
        }
    }

    #[test]
    fn wave_two_conflicts_name_the_differing_parameters() {
        let original = Uuid::from_u128(42);
        let stored = row(
            &RequestParams::qr_refund(&refund(original, 2_500, "damaged")),
            TransactionKind::QrRefund,
        );
        let Replay::Conflict(message) = compare(
            "r1",
            &RequestParams::qr_refund(&refund(Uuid::from_u128(43), 3_000, "damaged")),
            &stored,
        ) else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("amount (existing 2500 vs requested 3000)"),
            "{message}"
        );
        assert!(
            message.contains(&format!(
                "transaction_id (existing {original} vs requested {})",
                Uuid::from_u128(43)
            )),
            "{message}"
        );
        assert!(!message.contains("reason"), "{message}");

        let stored = row(
            &RequestParams::pay_in(&payin("081234567890", 3_600)),
            TransactionKind::PayIn,
        );
        let Replay::Conflict(message) =
            compare("r1", &RequestParams::pay_in(&payin("", 600)), &stored)
        else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("payer.phone (existing 081234567890 vs requested empty)"),
            "{message}"
        );
        assert!(
            message.contains("expiry_seconds (existing 3600 vs requested 600)"),
            "{message}"
        );

        let stored = row(
            &RequestParams::pay_out(&payout("1234567890")),
            TransactionKind::PayOut,
        );
        let Replay::Conflict(message) =
            compare("r1", &RequestParams::qr_pay(&qr(50_000, "")), &stored)
        else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("operation (existing pay_out vs requested qr_pay)"),
            "{message}"
        );
        assert!(
            message.contains("method (existing BCA vs requested empty)"),
            "{message}"
        );
    }

    #[test]
    fn present_and_absent_optional_parameters_hash_differently() {
        assert_ne!(
            RequestParams::qr_pay(&qr(10_000, "")).hash(),
            RequestParams::qr_pay(&qr(10_000, "x")).hash()
        );
        // A value cannot move between a detail and the next field.
        let mut a = RequestParams::pay_out(&payout("12"));
        a.details.insert("purpose".into(), "ab".into());
        let mut b = RequestParams::pay_out(&payout("12"));
        b.details.insert("purpose".into(), "a".into());
        b.details.insert("receiver_name".into(), "b".into());
        assert_ne!(a.hash(), b.hash());
    }
}
