//! Validated request types. Every gRPC request becomes one of these through
//! `TryFrom`, and a refusal names the bad field ([`ValidationError`]), so
//! nothing unvalidated travels further in.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb;
use loket_protocol::{Currency, Money, Provider, TransactionStatus};
use std::fmt;
use std::time::Duration;
use uuid::Uuid;

/// The longest wait a client may ask for.
pub const MAX_WAIT_MS: u32 = 120_000;
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// A refused field: `"<field>: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ValidationError {
            field,
            reason: reason.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ValidationError>;

/// The client's own reference: 1–64 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientRef(String);

impl ClientRef {
    pub fn parse(text: &str) -> Result<Self> {
        const FIELD: &str = "client_ref";
        if text.is_empty() {
            return Err(ValidationError::new(FIELD, "required"));
        }
        if text.chars().count() > 64 {
            return Err(ValidationError::new(FIELD, "at most 64 characters"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(ValidationError::new(
                FIELD,
                "only letters, digits and . _ : - are allowed",
            ));
        }
        Ok(ClientRef(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Our product code: non-empty, at most 64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductCode(String);

impl ProductCode {
    pub fn parse(field: &'static str, text: &str) -> Result<Self> {
        if text.is_empty() {
            return Err(ValidationError::new(field, "required"));
        }
        if text.len() > 64 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                field,
                "at most 64 printable characters without spaces",
            ));
        }
        Ok(ProductCode(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn digits(field: &'static str, text: &str, min: usize, max: usize) -> Result<String> {
    if text.is_empty() {
        return Err(ValidationError::new(field, "required"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(field, "digits only"));
    }
    if text.len() < min || text.len() > max {
        return Err(ValidationError::new(
            field,
            format!("{min} to {max} digits"),
        ));
    }
    Ok(text.to_string())
}

/// Customer number (MSISDN, meter number, customer id): 4–24 digits.
pub fn account(text: &str) -> Result<String> {
    digits("account", text, 4, 24)
}

/// PSTN number without area code: digits, or empty.
pub fn account2(text: &str) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    digits("account2", text, 1, 24)
}

/// BPJS months: empty, or 1–12.
pub fn account3(text: &str) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    let months: u8 = text
        .parse()
        .ok()
        .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ValidationError::new("account3", "number of months, 1 to 12"))?;
    if !(1..=12).contains(&months) {
        return Err(ValidationError::new(
            "account3",
            "number of months, 1 to 12",
        ));
    }
    Ok(months.to_string())
}

/// Payer phone or e-mail: at most 64 characters, no control characters.
pub fn contact(text: &str) -> Result<String> {
    if text.chars().count() > 64 {
        return Err(ValidationError::new("contact", "at most 64 characters"));
    }
    if text.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "contact",
            "control characters are not allowed",
        ));
    }
    Ok(text.to_string())
}

pub fn wait(wait_ms: u32) -> Result<Duration> {
    if wait_ms > MAX_WAIT_MS {
        return Err(ValidationError::new(
            "wait_ms",
            format!("at most {MAX_WAIT_MS}"),
        ));
    }
    Ok(Duration::from_millis(u64::from(wait_ms)))
}

pub fn uuid(field: &'static str, text: &str) -> Result<Uuid> {
    if text.is_empty() {
        return Err(ValidationError::new(field, "required"));
    }
    Uuid::parse_str(text).map_err(|_| ValidationError::new(field, "not a UUID"))
}

fn optional_uuid(field: &'static str, text: &str) -> Result<Option<Uuid>> {
    if text.is_empty() {
        Ok(None)
    } else {
        uuid(field, text).map(Some)
    }
}

pub fn provider(text: &str) -> Result<Provider> {
    if text.is_empty() {
        return Err(ValidationError::new("provider", "required"));
    }
    Provider::parse(text).map_err(|error| ValidationError::new("provider", error.to_string()))
}

/// A validated `Purchase`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseInput {
    pub client_ref: ClientRef,
    pub product_code: ProductCode,
    pub account: String,
    pub inquiry_id: Option<Uuid>,
    pub wait: Duration,
}

impl TryFrom<&pb::PurchaseRequest> for PurchaseInput {
    type Error = ValidationError;
    fn try_from(request: &pb::PurchaseRequest) -> Result<Self> {
        Ok(PurchaseInput {
            client_ref: ClientRef::parse(&request.client_ref)?,
            product_code: ProductCode::parse("product_code", &request.product_code)?,
            account: account(&request.account)?,
            inquiry_id: optional_uuid("inquiry_id", &request.inquiry_id)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `Inquire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InquireInput {
    pub client_ref: ClientRef,
    pub product_code: ProductCode,
    pub account: String,
    pub account2: String,
    pub account3: String,
    pub contact: String,
    pub wait: Duration,
}

impl TryFrom<&pb::InquireRequest> for InquireInput {
    type Error = ValidationError;
    fn try_from(request: &pb::InquireRequest) -> Result<Self> {
        Ok(InquireInput {
            client_ref: ClientRef::parse(&request.client_ref)?,
            product_code: ProductCode::parse("product_code", &request.product_code)?,
            account: account(&request.account)?,
            account2: account2(&request.account2)?,
            account3: account3(&request.account3)?,
            contact: contact(&request.contact)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `PayBill`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayBillInput {
    pub client_ref: ClientRef,
    pub inquiry_id: Uuid,
    pub amount: Money,
    pub wait: Duration,
}

impl TryFrom<&pb::PayBillRequest> for PayBillInput {
    type Error = ValidationError;
    fn try_from(request: &pb::PayBillRequest) -> Result<Self> {
        const FIELD: &str = "amount";
        let client_ref = ClientRef::parse(&request.client_ref)?;
        let inquiry_id = uuid("inquiry_id", &request.inquiry_id)?;
        let money = request
            .amount
            .as_ref()
            .ok_or_else(|| ValidationError::new(FIELD, "required"))?;
        // An empty currency is IDR, as everywhere in loket's API.
        let currency = if money.currency.is_empty() {
            Currency::Idr
        } else {
            Currency::parse(&money.currency).map_err(|_| {
                ValidationError::new(
                    FIELD,
                    format!(
                        "currency must be IDR, not {:?}",
                        truncate(&money.currency, 8)
                    ),
                )
            })?
        };
        if money.minor <= 0 {
            return Err(ValidationError::new(FIELD, "must be greater than zero"));
        }
        Ok(PayBillInput {
            client_ref,
            inquiry_id,
            amount: Money {
                minor: money.minor,
                currency,
            },
            wait: wait(request.wait_ms)?,
        })
    }
}

/// Which transaction `GetTransaction` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionKey {
    Id(Uuid),
    ClientRef(ClientRef),
}

impl TryFrom<&pb::GetTransactionRequest> for TransactionKey {
    type Error = ValidationError;
    fn try_from(request: &pb::GetTransactionRequest) -> Result<Self> {
        use pb::get_transaction_request::Key;
        match &request.key {
            Some(Key::Id(id)) => Ok(TransactionKey::Id(uuid("id", id)?)),
            Some(Key::ClientRef(client_ref)) => {
                Ok(TransactionKey::ClientRef(ClientRef::parse(client_ref)?))
            }
            None => Err(ValidationError::new("key", "give id or client_ref")),
        }
    }
}

/// The keyset position after the last row of a page: `(created_at, id)`,
/// sent to the client as an opaque URL-safe base64 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(25);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Result<Self> {
        let bad = || ValidationError::new("page_token", "invalid page token");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        if bytes.len() != 25 || bytes[0] != CURSOR_VERSION {
            return Err(bad());
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = Uuid::from_slice(&bytes[9..25]).map_err(|_| bad())?;
        Ok(Cursor { created_at, id })
    }
}

/// A validated `ListTransactions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub status: Option<TransactionStatus>,
    pub provider: Option<Provider>,
    pub product_code: Option<ProductCode>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_to: Option<DateTime<Utc>>,
    pub page_size: u32,
    pub after: Option<Cursor>,
}

impl TryFrom<&pb::ListTransactionsRequest> for ListQuery {
    type Error = ValidationError;
    fn try_from(request: &pb::ListTransactionsRequest) -> Result<Self> {
        let status = match pb::TransactionStatus::try_from(request.status) {
            Ok(pb::TransactionStatus::Unspecified) => None,
            Ok(status) => Some(
                TransactionStatus::try_from(status)
                    .map_err(|_| ValidationError::new("status", "unknown status"))?,
            ),
            Err(_) => return Err(ValidationError::new("status", "unknown status")),
        };
        let provider = if request.provider.is_empty() {
            None
        } else {
            Some(provider(&request.provider)?)
        };
        let product_code = if request.product_code.is_empty() {
            None
        } else {
            Some(ProductCode::parse("product_code", &request.product_code)?)
        };
        let time = |field: &'static str,
                    at: &Option<prost_types::Timestamp>|
         -> Result<Option<DateTime<Utc>>> {
            at.as_ref()
                .map(|at| {
                    from_timestamp(at)
                        .ok_or_else(|| ValidationError::new(field, "timestamp out of range"))
                })
                .transpose()
        };
        let created_from = time("created_from", &request.created_from)?;
        let created_to = time("created_to", &request.created_to)?;
        if let (Some(from), Some(to)) = (created_from, created_to) {
            if from > to {
                return Err(ValidationError::new(
                    "created_to",
                    "must not be before created_from",
                ));
            }
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ValidationError::new(
                    "page_size",
                    format!("at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n,
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(Cursor::decode(&request.page_token)?)
        };
        Ok(ListQuery {
            status,
            provider,
            product_code,
            created_from,
            created_to,
            page_size,
            after,
        })
    }
}

/// A validated `WatchTransactions`: one transaction, or all of the caller's.
pub fn watch(request: &pb::WatchTransactionsRequest) -> Result<Option<Uuid>> {
    optional_uuid("transaction_id", &request.transaction_id)
}

/// At most `max` characters of client text, for echoing it in a message.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(max).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn purchase(client_ref: &str, product: &str, account: &str) -> pb::PurchaseRequest {
        pb::PurchaseRequest {
            client_ref: client_ref.into(),
            product_code: product.into(),
            account: account.into(),
            inquiry_id: String::new(),
            wait_ms: 0,
        }
    }

    fn field_of(result: Result<impl fmt::Debug>) -> &'static str {
        result.unwrap_err().field
    }

    #[test]
    fn purchase_accepts_a_good_request() {
        let input =
            PurchaseInput::try_from(&purchase("order-1:a.b_c", "PULSA10", "081234567890")).unwrap();
        assert_eq!(input.client_ref.as_str(), "order-1:a.b_c");
        assert_eq!(input.account, "081234567890");
        assert_eq!(input.inquiry_id, None);
    }

    #[test]
    fn client_ref_rules() {
        assert_eq!(
            field_of(PurchaseInput::try_from(&purchase("", "P", "0812345"))),
            "client_ref"
        );
        assert_eq!(
            field_of(PurchaseInput::try_from(&purchase("a b", "P", "0812345"))),
            "client_ref"
        );
        assert_eq!(
            field_of(PurchaseInput::try_from(&purchase("é", "P", "0812345"))),
            "client_ref"
        );
        assert_eq!(
            field_of(PurchaseInput::try_from(&purchase(
                &"x".repeat(65),
                "P",
                "0812345"
            ))),
            "client_ref"
        );
        assert!(PurchaseInput::try_from(&purchase(&"x".repeat(64), "P", "0812345")).is_ok());
    }

    #[test]
    fn account_rules() {
        for bad in ["", "123", "0812-345", "+62812345", &"1".repeat(25)] {
            let error = PurchaseInput::try_from(&purchase("r", "P", bad)).unwrap_err();
            assert_eq!(error.field, "account", "{bad}");
        }
        assert!(PurchaseInput::try_from(&purchase("r", "P", "1234")).is_ok());
        assert!(PurchaseInput::try_from(&purchase("r", "P", &"1".repeat(24))).is_ok());
    }

    #[test]
    fn product_wait_and_inquiry_rules() {
        assert_eq!(
            field_of(PurchaseInput::try_from(&purchase("r", "", "0812345"))),
            "product_code"
        );
        let mut request = purchase("r", "P", "0812345");
        request.wait_ms = MAX_WAIT_MS + 1;
        assert_eq!(field_of(PurchaseInput::try_from(&request)), "wait_ms");
        request.wait_ms = MAX_WAIT_MS;
        assert!(PurchaseInput::try_from(&request).is_ok());
        request.inquiry_id = "not-a-uuid".into();
        assert_eq!(field_of(PurchaseInput::try_from(&request)), "inquiry_id");
    }

    #[test]
    fn inquire_rules() {
        let request = |account2: &str, account3: &str, contact: &str| pb::InquireRequest {
            client_ref: "r".into(),
            product_code: "BPJS".into(),
            account: "8888801234567890".into(),
            account2: account2.into(),
            account3: account3.into(),
            contact: contact.into(),
            wait_ms: 0,
        };
        assert!(InquireInput::try_from(&request("", "", "")).is_ok());
        assert_eq!(
            InquireInput::try_from(&request("", "3", "a@b.c"))
                .unwrap()
                .account3,
            "3"
        );
        assert_eq!(
            field_of(InquireInput::try_from(&request("12a", "", ""))),
            "account2"
        );
        for bad in ["0", "13", "x", "-1", "1.5"] {
            assert_eq!(
                field_of(InquireInput::try_from(&request("", bad, ""))),
                "account3",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(InquireInput::try_from(&request("", "", &"c".repeat(65)))),
            "contact"
        );
    }

    #[test]
    fn pay_bill_rules() {
        let request = |inquiry: &str, amount: Option<(i64, &str)>| pb::PayBillRequest {
            client_ref: "r".into(),
            inquiry_id: inquiry.into(),
            amount: amount.map(|(minor, currency)| pb::Money {
                minor,
                currency: currency.into(),
            }),
            wait_ms: 0,
        };
        let id = Uuid::now_v7().to_string();
        assert_eq!(
            PayBillInput::try_from(&request(&id, Some((10_000, "IDR"))))
                .unwrap()
                .amount,
            Money::idr(10_000)
        );
        assert_eq!(
            PayBillInput::try_from(&request(&id, Some((10_000, ""))))
                .unwrap()
                .amount,
            Money::idr(10_000)
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request("", Some((1, "IDR"))))),
            "inquiry_id"
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request("xyz", Some((1, "IDR"))))),
            "inquiry_id"
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request(&id, None))),
            "amount"
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request(&id, Some((0, "IDR"))))),
            "amount"
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request(&id, Some((-5, "IDR"))))),
            "amount"
        );
        assert_eq!(
            field_of(PayBillInput::try_from(&request(&id, Some((5, "USD"))))),
            "amount"
        );
    }

    #[test]
    fn get_transaction_key() {
        use pb::get_transaction_request::Key;
        let get = |key: Option<Key>| pb::GetTransactionRequest { key };
        assert_eq!(field_of(TransactionKey::try_from(&get(None))), "key");
        assert_eq!(
            field_of(TransactionKey::try_from(&get(Some(Key::Id("nope".into()))))),
            "id"
        );
        assert_eq!(
            field_of(TransactionKey::try_from(&get(Some(Key::ClientRef(
                "a b".into()
            ))))),
            "client_ref"
        );
        assert!(matches!(
            TransactionKey::try_from(&get(Some(Key::ClientRef("r1".into())))),
            Ok(TransactionKey::ClientRef(_))
        ));
    }

    #[test]
    fn list_query_rules() {
        let mut request = pb::ListTransactionsRequest::default();
        let query = ListQuery::try_from(&request).unwrap();
        assert_eq!(query.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(query.status, None);
        request.page_size = MAX_PAGE_SIZE + 1;
        assert_eq!(field_of(ListQuery::try_from(&request)), "page_size");
        request.page_size = 10;
        request.status = 99;
        assert_eq!(field_of(ListQuery::try_from(&request)), "status");
        request.status = pb::TransactionStatus::Success as i32;
        assert_eq!(
            ListQuery::try_from(&request).unwrap().status,
            Some(TransactionStatus::Success)
        );
        request.provider = "nobody".into();
        assert_eq!(field_of(ListQuery::try_from(&request)), "provider");
        request.provider = "okebayar".into();
        request.page_token = "garbage!".into();
        assert_eq!(field_of(ListQuery::try_from(&request)), "page_token");
        request.page_token = String::new();
        request.created_from = Some(prost_types::Timestamp {
            seconds: 100,
            nanos: 0,
        });
        request.created_to = Some(prost_types::Timestamp {
            seconds: 50,
            nanos: 0,
        });
        assert_eq!(field_of(ListQuery::try_from(&request)), "created_to");
    }

    #[test]
    fn page_token_round_trips_and_rejects_tampering() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_732_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let token = cursor.encode();
        assert_eq!(Cursor::decode(&token).unwrap(), cursor);
        assert_eq!(Cursor::decode("").unwrap_err().field, "page_token");
        assert!(Cursor::decode(&token[..token.len() - 2]).is_err());
        // Another version byte.
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        bytes[0] = 9;
        assert!(
            Cursor::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn page_token_decode_never_panics(token in ".{0,64}") {
            let _ = Cursor::decode(&token);
        }

        #[test]
        fn client_ref_accepts_exactly_the_alphabet(text in "[A-Za-z0-9._:-]{1,64}") {
            prop_assert!(ClientRef::parse(&text).is_ok());
        }

        #[test]
        fn account_parse_never_panics_and_only_accepts_digits(text in ".{0,30}") {
            if let Ok(account) = account(&text) {
                prop_assert!(account.bytes().all(|b| b.is_ascii_digit()));
                prop_assert!((4..=24).contains(&account.len()));
            }
        }
    }
}
