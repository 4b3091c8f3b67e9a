//! Validated request types. Every gRPC request becomes one of these through
//! `TryFrom`, and a refusal names the bad field ([`ValidationError`]), so
//! nothing unvalidated travels further in.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use loket_protocol::conversions::from_timestamp;
use loket_protocol::pb;
use loket_protocol::product::bpjs_months;
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

/// A bill inquiry's `account`: the customer number, or, with `account2`
/// given (a phone line's number, OkeBayar spec §4 PSTN), the line's area
/// code, which is often 3 digits (`021`).
fn inquiry_account(account_text: &str, account2_text: &str) -> Result<String> {
    if account2_text.is_empty() {
        return account(account_text);
    }
    digits("account", account_text, 2, 24).map_err(|error| {
        ValidationError::new(
            "account",
            format!(
                "with account2 (a phone line's number), the line's area code: {}",
                error.reason
            ),
        )
    })
}

/// PSTN number without area code: digits, or empty.
pub fn account2(text: &str) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    digits("account2", text, 1, 24)
}

/// BPJS months: empty, or 1–12 (a BPJS product requires them, any other
/// refuses them: [`InquireInput::check_for_product`]).
pub fn account3(text: &str) -> Result<String> {
    if text.is_empty() {
        return Ok(String::new());
    }
    bpjs_months(text)
        .map(|months| months.to_string())
        .ok_or_else(|| ValidationError::new("account3", "number of months, 1 to 12"))
}

/// Payer phone or e-mail: at most 64 characters, nothing unseen.
pub fn contact(value: &str) -> Result<String> {
    text("contact", value, 64)
}

/// Whether `c` is a control character, or one that shows nothing yet hides
/// or reorders the text around it (zero-width spaces and joiners, bidi
/// marks, embeddings, overrides and isolates, line and paragraph
/// separators, the byte-order mark, the soft hyphen): in a receiver's name
/// or a refund's reason, `Siti\u{202E}Budi` would read otherwise to the
/// operator or the provider than it was written.
fn unseen(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
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
            account: inquiry_account(&request.account, &request.account2)?,
            account2: account2(&request.account2)?,
            account3: account3(&request.account3)?,
            contact: contact(&request.contact)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// Which of an inquiry's optional fields its product takes (OkeBayar spec
/// §4), known once the catalogue has named the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InquiryFields {
    /// A PLN prepaid inquiry: the meter number alone, as its request carries
    /// nothing else.
    MeterOnly,
    /// A BPJS bill: the months to pay and the payer's phone.
    Bpjs,
    /// Any other bill: a phone line's number under its area code
    /// (`account2`, PSTN) and the payer's contact.
    Bill,
}

impl InquireInput {
    /// The checks that depend on the product, once the catalogue told
    /// whether it is a BPJS bill ([`crate::products::Product::is_bpjs`]).
    ///
    /// A field the product does not take is refused by name rather than
    /// dropped or sent where it means something else:
    /// - a PLN prepaid inquiry takes the meter number alone (its request
    ///   carries no other field);
    /// - a BPJS inquiry names the months to pay (OkeBayar spec §4:
    ///   `accnumber3`, 1 to 12), without which the biller cannot price the
    ///   bill, and the payer's phone, which its payment carries in
    ///   `accnumber2` (taken from the inquiry's contact), so it takes no
    ///   `account2` (a phone line's number);
    /// - any other bill takes no months: the connector reads months as "a
    ///   BPJS bill" and would pay it with the contact in place of `account2`
    ///   (a PSTN line's number).
    pub fn check_for_product(&self, fields: InquiryFields) -> Result<()> {
        let product = &self.product_code;
        let unwanted = |field: &'static str, value: &str, reason: String| {
            if value.is_empty() {
                Ok(())
            } else {
                Err(ValidationError::new(field, reason))
            }
        };
        match fields {
            InquiryFields::MeterOnly => [
                ("account2", &self.account2),
                ("account3", &self.account3),
                ("contact", &self.contact),
            ]
            .into_iter()
            .try_for_each(|(field, value)| {
                unwanted(
                    field,
                    value,
                    format!(
                        "product {product} is a PLN prepaid inquiry, which takes the meter number in account and nothing else"
                    ),
                )
            }),
            InquiryFields::Bill => unwanted(
                "account3",
                &self.account3,
                format!("months to pay apply to a BPJS bill only, and product {product} is not one"),
            ),
            InquiryFields::Bpjs => {
                unwanted(
                    "account2",
                    &self.account2,
                    format!(
                        "product {product} is a BPJS bill, which takes no phone line's number; the payer's phone goes in contact"
                    ),
                )?;
                self.check_bpjs_period_and_payer()
            }
        }
    }

    fn check_bpjs_period_and_payer(&self) -> Result<()> {
        if self.account3.is_empty() {
            return Err(ValidationError::new(
                "account3",
                "a BPJS inquiry needs the number of months to pay, 1 to 12: required",
            ));
        }
        digits("contact", &self.contact, 8, 15).map_err(|error| {
            ValidationError::new(
                "contact",
                format!(
                    "a BPJS inquiry needs the payer's phone number, which its payment carries: {}",
                    error.reason
                ),
            )
        })?;
        Ok(())
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
        let client_ref = ClientRef::parse(&request.client_ref)?;
        let inquiry_id = uuid("inquiry_id", &request.inquiry_id)?;
        Ok(PayBillInput {
            client_ref,
            inquiry_id,
            amount: amount("amount", request.amount.as_ref())?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A required, positive amount. An empty currency is IDR, as everywhere in
/// loket's API; any other currency is refused.
pub fn amount(field: &'static str, money: Option<&pb::Money>) -> Result<Money> {
    let money = money.ok_or_else(|| ValidationError::new(field, "required"))?;
    let currency = if money.currency.is_empty() {
        Currency::Idr
    } else {
        Currency::parse(&money.currency).map_err(|_| {
            ValidationError::new(
                field,
                format!(
                    "currency must be IDR, not {:?}",
                    shortened(&money.currency, 8)
                ),
            )
        })?
    };
    if money.minor <= 0 {
        return Err(ValidationError::new(field, "must be greater than zero"));
    }
    Ok(Money {
        minor: money.minor,
        currency,
    })
}

/// A required, positive amount of at most `max` (in rupiah).
fn amount_at_most(field: &'static str, money: Option<&pb::Money>, max: i64) -> Result<Money> {
    let money = amount(field, money)?;
    if money.minor > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} IDR, not {}", money.minor),
        ));
    }
    Ok(money)
}

/// The product code, or `default` when the request leaves it empty.
fn product_or(text: &str, default: &str) -> Result<ProductCode> {
    ProductCode::parse("product_code", if text.is_empty() { default } else { text })
}

/// Optional free text: at most `max` characters, nothing [`unseen`].
fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    if value.chars().count() > max {
        return Err(ValidationError::new(
            field,
            format!("at most {max} characters"),
        ));
    }
    if let Some(c) = value.chars().find(|c| unseen(*c)) {
        return Err(ValidationError::new(
            field,
            format!(
                "character U+{:04X} is not allowed: control characters, and characters that show nothing yet hide or reorder text, are refused",
                u32::from(c)
            ),
        ));
    }
    Ok(value.to_string())
}

/// The longest pay-in method code. Smilepayz gives no length for a
/// pay-in's `paymentMethod` (spec §5); this only bounds the input.
const MAX_PAY_IN_METHOD: usize = 16;

/// The longest pay-out method code: Smilepayz' `paymentMethod` of a pay-out
/// is S6 (spec §5), so a longer one would be refused by the provider after
/// the transaction was stored and sent.
const MAX_PAY_OUT_METHOD: usize = 6;

/// A pay-in / pay-out method code: `[A-Z0-9_]` (`QRIS`, `BCA`, `W_DANA`)
/// of a length in `lengths`; empty when that range starts at 0.
fn method(value: &str, lengths: std::ops::RangeInclusive<usize>) -> Result<String> {
    const FIELD: &str = "method";
    if value.is_empty() {
        return if *lengths.start() == 0 {
            Ok(String::new())
        } else {
            Err(ValidationError::new(FIELD, "required"))
        };
    }
    if !lengths.contains(&value.len()) {
        return Err(ValidationError::new(
            FIELD,
            format!(
                "{} to {} characters",
                lengths.start().max(&1),
                lengths.end()
            ),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ValidationError::new(
            FIELD,
            "only upper-case letters, digits and _ (e.g. QRIS, BCA, W_DANA)",
        ));
    }
    Ok(value.to_string())
}

/// The longest QR content SNAP carries (`qrContent` S512).
pub const MAX_QR_CONTENT: usize = 512;
/// SNAP `reason` S256 (cancel and refund).
pub const MAX_REASON: usize = 256;
/// Smilepayz `purpose` S64 (mandatory: loket fills a default).
pub const MAX_PURPOSE: usize = 64;
pub const DEFAULT_PAY_IN_PURPOSE: &str = "loket pay-in";
pub const DEFAULT_PAY_OUT_PURPOSE: &str = "loket pay-out";
/// Pay-in expiry when the request leaves it 0 (Smilepayz' own default).
pub const DEFAULT_EXPIRY_SECONDS: u32 = 3_600;
pub const MIN_EXPIRY_SECONDS: u32 = 60;
pub const MAX_EXPIRY_SECONDS: u32 = 86_400;
/// Smilepayz pay-out amount limits (`money` 10000–999999999 IDR).
pub const MIN_PAY_OUT: i64 = 10_000;
pub const MAX_PAY_OUT: i64 = 999_999_999;
/// The largest QR payment: SNAP's `amount.value` is a String(16,2), so
/// `9999999999999.00` is the longest it carries.
pub const MAX_QR_AMOUNT: i64 = 9_999_999_999_999;
/// The largest pay-in: Smilepayz' `money.amount` is a JSON number, exact up
/// to 2^53 − 1 in common readers. Its per-method limits are still an open
/// question of the spec (Q6), so only this bound is checked here.
pub const MAX_PAY_IN: i64 = (1 << 53) - 1;
/// The wallet that cannot collect without the payer's phone.
pub const PHONE_REQUIRED_METHOD: &str = "W_OVO";

/// A validated `QrPay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrPayInput {
    pub client_ref: ClientRef,
    pub product_code: ProductCode,
    pub amount: Money,
    /// Empty: the connector has the issuer generate a QR first (service 59).
    pub qr_content: String,
    pub wait: Duration,
}

pub const DEFAULT_QR_PRODUCT: &str = "QRCPM";
pub const DEFAULT_PAY_IN_PRODUCT: &str = "PAYIN";
pub const DEFAULT_PAY_OUT_PRODUCT: &str = "PAYOUT";

impl TryFrom<&pb::QrPayRequest> for QrPayInput {
    type Error = ValidationError;
    fn try_from(request: &pb::QrPayRequest) -> Result<Self> {
        let qr_content = text("qr_content", request.qr_content.trim(), MAX_QR_CONTENT)?;
        Ok(QrPayInput {
            client_ref: ClientRef::parse(&request.client_ref)?,
            product_code: product_or(&request.product_code, DEFAULT_QR_PRODUCT)?,
            amount: amount_at_most("amount", request.amount.as_ref(), MAX_QR_AMOUNT)?,
            qr_content,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `QrQuery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrQueryInput {
    pub transaction_id: Uuid,
    pub wait: Duration,
}

impl TryFrom<&pb::QrQueryRequest> for QrQueryInput {
    type Error = ValidationError;
    fn try_from(request: &pb::QrQueryRequest) -> Result<Self> {
        Ok(QrQueryInput {
            transaction_id: uuid("transaction_id", &request.transaction_id)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `QrCancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCancelInput {
    pub client_ref: ClientRef,
    /// The QR payment to void.
    pub transaction_id: Uuid,
    pub reason: String,
    pub wait: Duration,
}

impl TryFrom<&pb::QrCancelRequest> for QrCancelInput {
    type Error = ValidationError;
    fn try_from(request: &pb::QrCancelRequest) -> Result<Self> {
        Ok(QrCancelInput {
            client_ref: ClientRef::parse(&request.client_ref)?,
            transaction_id: uuid("transaction_id", &request.transaction_id)?,
            reason: text("reason", request.reason.trim(), MAX_REASON)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `QrRefund`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrRefundInput {
    pub client_ref: ClientRef,
    /// The QR payment to refund.
    pub transaction_id: Uuid,
    pub amount: Money,
    pub reason: String,
    pub wait: Duration,
}

impl TryFrom<&pb::QrRefundRequest> for QrRefundInput {
    type Error = ValidationError;
    fn try_from(request: &pb::QrRefundRequest) -> Result<Self> {
        Ok(QrRefundInput {
            client_ref: ClientRef::parse(&request.client_ref)?,
            transaction_id: uuid("transaction_id", &request.transaction_id)?,
            amount: amount("amount", request.amount.as_ref())?,
            reason: text("reason", request.reason.trim(), MAX_REASON)?,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `PayIn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayInInput {
    pub client_ref: ClientRef,
    pub product_code: ProductCode,
    pub amount: Money,
    /// Empty: a hosted payment page.
    pub method: String,
    pub payer_name: String,
    pub payer_phone: String,
    pub payer_email: String,
    /// Effective expiry (a request's 0 is [`DEFAULT_EXPIRY_SECONDS`]).
    pub expiry_seconds: u32,
    /// Effective purpose (empty is [`DEFAULT_PAY_IN_PURPOSE`]).
    pub purpose: String,
    pub wait: Duration,
}

/// A payer's phone: digits with an optional leading `+`, 8–16 digits.
fn phone(field: &'static str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::new(
            field,
            "digits only, with an optional leading +",
        ));
    }
    if !(8..=16).contains(&digits.len()) {
        return Err(ValidationError::new(field, "8 to 16 digits"));
    }
    Ok(value.to_string())
}

/// A payer's e-mail: at most 64 characters, one `@` with text on both sides.
fn email(field: &'static str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    let value = text(field, value, 64)?;
    let valid = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !value.chars().any(char::is_whitespace);
    if !valid {
        return Err(ValidationError::new(field, "not an e-mail address"));
    }
    Ok(value)
}

impl TryFrom<&pb::PayInRequest> for PayInInput {
    type Error = ValidationError;
    fn try_from(request: &pb::PayInRequest) -> Result<Self> {
        let client_ref = ClientRef::parse(&request.client_ref)?;
        let product_code = product_or(&request.product_code, DEFAULT_PAY_IN_PRODUCT)?;
        let amount = amount_at_most("amount", request.amount.as_ref(), MAX_PAY_IN)?;
        let method = method(request.method.trim(), 0..=MAX_PAY_IN_METHOD)?;
        let payer = request.payer.clone().unwrap_or_default();
        let payer_name = text("payer.name", payer.name.trim(), 64)?;
        let payer_phone = phone("payer.phone", payer.phone.trim())?;
        let payer_email = email("payer.email", payer.email.trim())?;
        if method == PHONE_REQUIRED_METHOD && payer_phone.is_empty() {
            return Err(ValidationError::new(
                "payer.phone",
                format!("required for method {PHONE_REQUIRED_METHOD}"),
            ));
        }
        let expiry_seconds = match request.expiry_seconds {
            0 => DEFAULT_EXPIRY_SECONDS,
            seconds if (MIN_EXPIRY_SECONDS..=MAX_EXPIRY_SECONDS).contains(&seconds) => seconds,
            _ => {
                return Err(ValidationError::new(
                    "expiry_seconds",
                    format!(
                        "0 (default {DEFAULT_EXPIRY_SECONDS}) or {MIN_EXPIRY_SECONDS} to {MAX_EXPIRY_SECONDS}"
                    ),
                ))
            }
        };
        let purpose = match text("purpose", request.purpose.trim(), MAX_PURPOSE)? {
            purpose if purpose.is_empty() => DEFAULT_PAY_IN_PURPOSE.to_string(),
            purpose => purpose,
        };
        Ok(PayInInput {
            client_ref,
            product_code,
            amount,
            method,
            payer_name,
            payer_phone,
            payer_email,
            expiry_seconds,
            purpose,
            wait: wait(request.wait_ms)?,
        })
    }
}

/// A validated `PayOut`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayOutInput {
    pub client_ref: ClientRef,
    pub product_code: ProductCode,
    pub amount: Money,
    pub method: String,
    /// The receiver's bank account, VA or wallet id (Smilepayz `cashAccount`).
    pub account: String,
    pub receiver_name: String,
    /// Effective purpose (empty is [`DEFAULT_PAY_OUT_PURPOSE`]).
    pub purpose: String,
    pub wait: Duration,
}

impl TryFrom<&pb::PayOutRequest> for PayOutInput {
    type Error = ValidationError;
    fn try_from(request: &pb::PayOutRequest) -> Result<Self> {
        let client_ref = ClientRef::parse(&request.client_ref)?;
        let product_code = product_or(&request.product_code, DEFAULT_PAY_OUT_PRODUCT)?;
        let amount = amount("amount", request.amount.as_ref())?;
        if !(MIN_PAY_OUT..=MAX_PAY_OUT).contains(&amount.minor) {
            return Err(ValidationError::new(
                "amount",
                format!("a pay-out is {MIN_PAY_OUT} to {MAX_PAY_OUT} IDR"),
            ));
        }
        let method = method(request.method.trim(), 2..=MAX_PAY_OUT_METHOD)?;
        let account = request.account.trim();
        if account.is_empty() {
            return Err(ValidationError::new("account", "required"));
        }
        if account.len() > 32 || !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "account",
                "at most 32 letters and digits",
            ));
        }
        let receiver_name = text("receiver_name", request.receiver_name.trim(), 64)?;
        let purpose = match text("purpose", request.purpose.trim(), MAX_PURPOSE)? {
            purpose if purpose.is_empty() => DEFAULT_PAY_OUT_PURPOSE.to_string(),
            purpose => purpose,
        };
        Ok(PayOutInput {
            client_ref,
            product_code,
            amount,
            method,
            account: account.to_string(),
            receiver_name,
            purpose,
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
/// and the filters of the listing that gave it, sent to the client as an
/// opaque URL-safe base64 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
    /// The listing's filters ([`ListQuery::filters`]): a token continues
    /// only the listing that gave it. `None` in a token of version 1, made
    /// before tokens carried them, which is still taken as it was.
    pub filters: Option<ListFilters>,
}

/// A fingerprint of a listing's filters (the first 8 bytes of a SHA-256 of
/// them), so a page token used with other filters is refused instead of
/// continuing one listing's position in another's results.
pub type ListFilters = [u8; 8];

/// Tokens without the listing's filters, from before version 2; read only.
const CURSOR_VERSION_WITHOUT_FILTERS: u8 = 1;
const CURSOR_VERSION: u8 = 2;

/// Whether PostgreSQL can hold `at` and RFC 3339 can write it: years 1 to
/// 9999 (chrono reaches far beyond `timestamptz`'s 4713 BC).
fn storable(at: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&chrono::Datelike::year(at))
}

impl Cursor {
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(33);
        bytes.push(match self.filters {
            Some(_) => CURSOR_VERSION,
            None => CURSOR_VERSION_WITHOUT_FILTERS,
        });
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        if let Some(filters) = self.filters {
            bytes.extend_from_slice(&filters);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(token: &str) -> Result<Self> {
        let bad = || ValidationError::new("page_token", "invalid page token");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let filters = match (bytes.first(), bytes.len()) {
            (Some(&CURSOR_VERSION), 33) => Some(bytes[25..33].try_into().map_err(|_| bad())?),
            (Some(&CURSOR_VERSION_WITHOUT_FILTERS), 25) => None,
            _ => return Err(bad()),
        };
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| bad())?);
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(storable)
            .ok_or_else(bad)?;
        let id = Uuid::from_slice(&bytes[9..25]).map_err(|_| bad())?;
        Ok(Cursor {
            created_at,
            id,
            filters,
        })
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
                    from_timestamp(at).filter(storable).ok_or_else(|| {
                        ValidationError::new(field, "timestamp out of range (years 1 to 9999)")
                    })
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
        let query = ListQuery {
            status,
            provider,
            product_code,
            created_from,
            created_to,
            page_size,
            after,
        };
        if let Some(given) = after.and_then(|cursor| cursor.filters) {
            if given != query.filters() {
                return Err(ValidationError::new(
                    "page_token",
                    "from a listing with other filters (status, provider, product_code, created_from or created_to): list again without it, or with that listing's filters",
                ));
            }
        }
        Ok(query)
    }
}

impl ListQuery {
    /// The fingerprint of this listing's filters, which its page tokens
    /// carry (the page size may change between pages).
    pub fn filters(&self) -> ListFilters {
        use sha2::Digest as _;
        let micros = |at: Option<DateTime<Utc>>| {
            at.map_or(String::new(), |at| at.timestamp_micros().to_string())
        };
        let fields = [
            self.status
                .map_or("", TransactionStatus::as_str)
                .to_string(),
            self.provider.map_or("", Provider::as_str).to_string(),
            self.product_code
                .as_ref()
                .map_or("", |code| code.as_str())
                .to_string(),
            micros(self.created_from),
            micros(self.created_to),
        ];
        let mut hash = sha2::Sha256::new();
        for field in fields {
            // Length first, so no two lists of fields hash alike.
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        let digest = hash.finalize();
        let mut filters = [0; 8];
        filters.copy_from_slice(&digest[..8]);
        filters
    }
}

/// A validated `WatchTransactions`: one transaction, or all of the caller's.
pub fn watch(request: &pb::WatchTransactionsRequest) -> Result<Option<Uuid>> {
    optional_uuid("transaction_id", &request.transaction_id)
}

/// At most `max` characters of client text, for echoing it in a message.
pub use loket_protocol::text::shortened;

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
            InquireInput::try_from(&request("", "3", "081299990000"))
                .unwrap()
                .account3,
            "3"
        );
        assert!(InquireInput::try_from(&request("", "", "a@b.c")).is_ok());
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

    /// A BPJS inquiry names the months to pay and the payer's phone (spec
    /// §4), each refused by name when missing or malformed; months on any
    /// other product are refused, since the connector would pay that bill
    /// as a BPJS one (the contact in place of `account2`).
    #[test]
    fn a_bpjs_inquiry_needs_its_months_and_the_payers_phone_and_no_other_takes_months() {
        let checked = |account3: &str, contact: &str, bpjs: bool| {
            let input = InquireInput::try_from(&pb::InquireRequest {
                client_ref: "r".into(),
                product_code: "BILL".into(),
                account: "8888801234567890".into(),
                account3: account3.into(),
                contact: contact.into(),
                ..Default::default()
            })?;
            input.check_for_product(if bpjs {
                InquiryFields::Bpjs
            } else {
                InquiryFields::Bill
            })
        };
        assert_eq!(checked("3", "081299990000", true), Ok(()));
        assert_eq!(checked("12", "081299990000", true), Ok(()));
        assert_eq!(checked("", "", false), Ok(()));
        assert_eq!(checked("", "a@b.c", false), Ok(()));

        let refused = checked("", "081299990000", true).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "account3: a BPJS inquiry needs the number of months to pay, 1 to 12: required"
        );
        for bad in ["0", "13"] {
            assert_eq!(
                checked(bad, "081299990000", true).unwrap_err().field,
                "account3",
                "{bad}"
            );
        }
        // BPJS is paid with the payer's phone: the inquiry's contact.
        for not_a_phone in ["", "a@b.c", "0812", "+6281299990000", "0812 9999 0000"] {
            let refused = checked("3", not_a_phone, true).unwrap_err();
            assert_eq!(refused.field, "contact", "{not_a_phone}");
            assert!(
                refused.reason.contains("payer's phone"),
                "{}",
                refused.reason
            );
        }
        let refused = checked("3", "081299990000", false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "account3: months to pay apply to a BPJS bill only, and product BILL is not one"
        );
    }

    fn inquiry(account: &str, account2: &str, account3: &str, contact: &str) -> pb::InquireRequest {
        pb::InquireRequest {
            client_ref: "r".into(),
            product_code: "X".into(),
            account: account.into(),
            account2: account2.into(),
            account3: account3.into(),
            contact: contact.into(),
            wait_ms: 0,
        }
    }

    /// A phone line (OkeBayar spec §4, PSTN) is inquired by its area code
    /// in `account` and its number in `account2`; an area code is often 3
    /// digits (`021`), fewer than any customer number's 4.
    #[test]
    fn a_phone_lines_area_code_may_be_shorter_than_a_customer_number() {
        let line = InquireInput::try_from(&inquiry("021", "5550001", "", "")).unwrap();
        assert_eq!(
            (line.account.as_str(), line.account2.as_str()),
            ("021", "5550001")
        );
        assert_eq!(line.check_for_product(InquiryFields::Bill), Ok(()));
        assert!(InquireInput::try_from(&inquiry("21", "5550001", "", "")).is_ok());

        // Without a line number, account is a customer number again.
        let refused = InquireInput::try_from(&inquiry("021", "", "", "")).unwrap_err();
        assert_eq!(refused.to_string(), "account: 4 to 24 digits");
        let refused = InquireInput::try_from(&inquiry("2", "5550001", "", "")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "account: with account2 (a phone line's number), the line's area code: 2 to 24 digits"
        );
        for bad in ["02a", ""] {
            let refused = InquireInput::try_from(&inquiry(bad, "5550001", "", "")).unwrap_err();
            assert_eq!(refused.field, "account", "{bad}");
        }
    }

    /// A field the product does not take is refused by name, never dropped
    /// (a PLN prepaid inquiry's request carries the meter number alone) or
    /// sent where it means something else (a BPJS inquiry's `accnumber2` is
    /// the payer's phone at payment, not a phone line's number).
    #[test]
    fn an_inquiry_field_its_product_does_not_take_is_refused_by_name() {
        let meter = "512345678901";
        let checked = |request: pb::InquireRequest, fields| {
            InquireInput::try_from(&request)
                .unwrap()
                .check_for_product(fields)
        };
        assert_eq!(
            checked(inquiry(meter, "", "", ""), InquiryFields::MeterOnly),
            Ok(())
        );
        for (request, field) in [
            (inquiry(meter, "999", "", ""), "account2"),
            (inquiry(meter, "", "3", ""), "account3"),
            (inquiry(meter, "", "", "hello"), "contact"),
        ] {
            let refused = checked(request, InquiryFields::MeterOnly).unwrap_err();
            assert_eq!(refused.field, field);
            assert_eq!(
                refused.reason,
                "product X is a PLN prepaid inquiry, which takes the meter number in account and nothing else"
            );
        }
        let refused = checked(
            inquiry("8888801234567890", "12345", "3", "081299990000"),
            InquiryFields::Bpjs,
        )
        .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "account2: product X is a BPJS bill, which takes no phone line's number; the payer's phone goes in contact"
        );
        assert_eq!(
            checked(
                inquiry("8888801234567890", "", "3", "081299990000"),
                InquiryFields::Bpjs
            ),
            Ok(())
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
        // Before the year 1 (chrono can, PostgreSQL cannot): the field, not
        // a database error.
        request.created_from = Some(prost_types::Timestamp {
            seconds: -1_000_000_000_000,
            nanos: 0,
        });
        assert_eq!(field_of(ListQuery::try_from(&request)), "created_from");
    }

    #[test]
    fn page_token_round_trips_and_rejects_tampering() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_732_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
            filters: Some(*b"filters!"),
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
            Cursor::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes))
                .is_err()
        );
        // A forged time PostgreSQL cannot hold.
        bytes[0] = CURSOR_VERSION;
        bytes[1..9].copy_from_slice(&(-1_000_000_000_000_000_000_i64).to_be_bytes());
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(Cursor::decode(&forged).unwrap_err().field, "page_token");
    }

    /// A page token carries its listing's filters: used with others it is
    /// refused, naming `page_token`; the page size may change. A token of
    /// version 1, made before tokens carried filters, is taken as it was.
    #[test]
    fn a_page_token_continues_only_the_listing_that_gave_it() {
        let listing = |status: pb::TransactionStatus, page_size: u32, page_token: String| {
            ListQuery::try_from(&pb::ListTransactionsRequest {
                status: status as i32,
                provider: "okebayar".into(),
                page_size,
                page_token,
                ..Default::default()
            })
        };
        let first = listing(pb::TransactionStatus::Success, 10, String::new()).unwrap();
        let token = |filters| {
            Cursor {
                created_at: DateTime::from_timestamp_micros(1_732_000_000_123_456).unwrap(),
                id: Uuid::now_v7(),
                filters,
            }
            .encode()
        };
        let given = token(Some(first.filters()));
        assert!(listing(pb::TransactionStatus::Success, 50, given.clone()).is_ok());
        let refused = listing(pb::TransactionStatus::Failed, 10, given.clone()).unwrap_err();
        assert_eq!(refused.field, "page_token");
        assert!(refused
            .reason
            .starts_with("from a listing with other filters"));
        let without_provider = ListQuery::try_from(&pb::ListTransactionsRequest {
            status: pb::TransactionStatus::Success as i32,
            page_token: given,
            ..Default::default()
        });
        assert_eq!(field_of(without_provider), "page_token");

        let old = token(None);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&old)
                .unwrap()
                .len(),
            25,
            "version 1's layout"
        );
        assert!(listing(pb::TransactionStatus::Failed, 10, old).is_ok());
    }

    fn idr(minor: i64) -> Option<pb::Money> {
        Some(pb::Money {
            minor,
            currency: "IDR".into(),
        })
    }

    fn qr_pay() -> pb::QrPayRequest {
        pb::QrPayRequest {
            client_ref: "qr-1".into(),
            product_code: String::new(),
            amount: idr(10_000),
            qr_content: String::new(),
            wait_ms: 0,
        }
    }

    #[test]
    fn qr_pay_defaults_and_rules() {
        let input = QrPayInput::try_from(&qr_pay()).unwrap();
        assert_eq!(input.product_code.as_str(), "QRCPM");
        assert_eq!(input.amount, Money::idr(10_000));
        assert_eq!(input.qr_content, "");
        let mut request = qr_pay();
        request.product_code = "QRCPM2".into();
        request.qr_content = format!(" {} ", "q".repeat(MAX_QR_CONTENT));
        let input = QrPayInput::try_from(&request).unwrap();
        assert_eq!(input.product_code.as_str(), "QRCPM2");
        assert_eq!(input.qr_content.len(), MAX_QR_CONTENT, "trimmed");
        request.qr_content = "q".repeat(MAX_QR_CONTENT + 1);
        assert_eq!(field_of(QrPayInput::try_from(&request)), "qr_content");
        request.qr_content = "abc\u{0}".into();
        assert_eq!(field_of(QrPayInput::try_from(&request)), "qr_content");
        let largest = pb::QrPayRequest {
            amount: idr(MAX_QR_AMOUNT),
            ..qr_pay()
        };
        assert!(QrPayInput::try_from(&largest).is_ok());
        for amount in [None, idr(0), idr(-1), idr(MAX_QR_AMOUNT + 1), idr(i64::MAX)] {
            let request = pb::QrPayRequest {
                amount: amount.clone(),
                ..qr_pay()
            };
            assert_eq!(
                field_of(QrPayInput::try_from(&request)),
                "amount",
                "{amount:?}"
            );
        }
        let request = pb::QrPayRequest {
            amount: Some(pb::Money {
                minor: 5,
                currency: "USD".into(),
            }),
            ..qr_pay()
        };
        assert_eq!(field_of(QrPayInput::try_from(&request)), "amount");
        let request = pb::QrPayRequest {
            client_ref: String::new(),
            ..qr_pay()
        };
        assert_eq!(field_of(QrPayInput::try_from(&request)), "client_ref");
        let request = pb::QrPayRequest {
            wait_ms: MAX_WAIT_MS + 1,
            ..qr_pay()
        };
        assert_eq!(field_of(QrPayInput::try_from(&request)), "wait_ms");
    }

    #[test]
    fn qr_query_cancel_and_refund_rules() {
        let id = Uuid::now_v7();
        let query = |id: &str| pb::QrQueryRequest {
            transaction_id: id.into(),
            wait_ms: 100,
        };
        let input = QrQueryInput::try_from(&query(&id.to_string())).unwrap();
        assert_eq!(
            (input.transaction_id, input.wait),
            (id, Duration::from_millis(100))
        );
        assert_eq!(
            field_of(QrQueryInput::try_from(&query(""))),
            "transaction_id"
        );
        assert_eq!(
            field_of(QrQueryInput::try_from(&query("x"))),
            "transaction_id"
        );

        let cancel = |id: &str, reason: &str| pb::QrCancelRequest {
            client_ref: "c-1".into(),
            transaction_id: id.into(),
            reason: reason.into(),
            wait_ms: 0,
        };
        let input = QrCancelInput::try_from(&cancel(&id.to_string(), " wrong item ")).unwrap();
        assert_eq!(input.reason, "wrong item");
        assert_eq!(
            field_of(QrCancelInput::try_from(&cancel("", ""))),
            "transaction_id"
        );
        assert_eq!(
            field_of(QrCancelInput::try_from(&cancel(
                &id.to_string(),
                &"r".repeat(MAX_REASON + 1)
            ))),
            "reason"
        );
        let mut bad_ref = cancel(&id.to_string(), "");
        bad_ref.client_ref = "a b".into();
        assert_eq!(field_of(QrCancelInput::try_from(&bad_ref)), "client_ref");

        let refund = |amount: Option<pb::Money>| pb::QrRefundRequest {
            client_ref: "r-1".into(),
            transaction_id: id.to_string(),
            amount,
            reason: String::new(),
            wait_ms: 0,
        };
        assert_eq!(
            QrRefundInput::try_from(&refund(idr(2_500))).unwrap().amount,
            Money::idr(2_500)
        );
        for amount in [None, idr(0), idr(-10)] {
            assert_eq!(
                field_of(QrRefundInput::try_from(&refund(amount.clone()))),
                "amount",
                "{amount:?}"
            );
        }
        let mut request = refund(idr(1));
        request.reason = "a\nb".into();
        assert_eq!(field_of(QrRefundInput::try_from(&request)), "reason");
    }

    fn pay_in() -> pb::PayInRequest {
        pb::PayInRequest {
            client_ref: "in-1".into(),
            product_code: String::new(),
            amount: idr(150_000),
            method: String::new(),
            payer: None,
            expiry_seconds: 0,
            purpose: String::new(),
            wait_ms: 0,
        }
    }

    fn payer(name: &str, phone: &str, email: &str) -> Option<pb::Payer> {
        Some(pb::Payer {
            name: name.into(),
            phone: phone.into(),
            email: email.into(),
        })
    }

    #[test]
    fn pay_in_defaults() {
        let input = PayInInput::try_from(&pay_in()).unwrap();
        assert_eq!(input.product_code.as_str(), "PAYIN");
        assert_eq!(input.method, "");
        assert_eq!(input.expiry_seconds, DEFAULT_EXPIRY_SECONDS);
        assert_eq!(input.purpose, DEFAULT_PAY_IN_PURPOSE);
        assert_eq!(
            (input.payer_name.as_str(), input.payer_phone.as_str()),
            ("", "")
        );
        let input = PayInInput::try_from(&pb::PayInRequest {
            method: "W_OVO".into(),
            payer: payer("Budi", "+6281234567890", "budi@example.com"),
            expiry_seconds: 60,
            purpose: "Order 1001".into(),
            ..pay_in()
        })
        .unwrap();
        assert_eq!(input.payer_phone, "+6281234567890");
        assert_eq!(input.payer_email, "budi@example.com");
        assert_eq!(input.expiry_seconds, 60);
        assert_eq!(input.purpose, "Order 1001");
    }

    #[test]
    fn a_pay_in_amount_is_positive_and_exact_as_a_json_number() {
        let with = |amount| PayInInput::try_from(&pb::PayInRequest { amount, ..pay_in() });
        assert!(with(idr(MAX_PAY_IN)).is_ok());
        for bad in [None, idr(0), idr(MAX_PAY_IN + 1), idr(i64::MAX)] {
            assert_eq!(field_of(with(bad.clone())), "amount", "{bad:?}");
        }
        let error = with(idr(MAX_PAY_IN + 1)).unwrap_err();
        assert!(
            error.to_string().contains("at most 9007199254740991 IDR"),
            "{error}"
        );
    }

    #[test]
    fn pay_in_rules_name_the_field() {
        let with = |change: &dyn Fn(&mut pb::PayInRequest)| {
            let mut request = pay_in();
            change(&mut request);
            PayInInput::try_from(&request)
        };
        assert_eq!(field_of(with(&|r| r.amount = None)), "amount");
        assert_eq!(field_of(with(&|r| r.amount = idr(0))), "amount");
        for bad in ["qris", "W-OVO", "ABCDEFGHIJKLMNOPQ", "B C"] {
            assert_eq!(
                field_of(with(&|r| r.method = bad.into())),
                "method",
                "{bad}"
            );
        }
        assert!(with(&|r| r.method = "QRIS".into()).is_ok());
        assert!(with(&|r| r.method = "BCA".into()).is_ok());
        // The pay-out's 6-character limit is not a pay-in's.
        assert!(with(&|r| r.method = "PERMATA".into()).is_ok());
        // W_OVO cannot collect without the payer's phone.
        let error = with(&|r| r.method = "W_OVO".into()).unwrap_err();
        assert_eq!(error.field, "payer.phone");
        assert!(error.reason.contains("W_OVO"), "{error}");
        let error = with(&|r| {
            r.method = "W_OVO".into();
            r.payer = payer("Budi", "", "b@x.id");
        })
        .unwrap_err();
        assert_eq!(error.field, "payer.phone");
        for bad in ["0812-3456", "+", "1234567", "12345678901234567", "phone"] {
            assert_eq!(
                field_of(with(&|r| r.payer = payer("", bad, ""))),
                "payer.phone",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(with(&|r| r.payer = payer(&"n".repeat(65), "", ""))),
            "payer.name"
        );
        for bad in ["budi", "@x.id", "budi@", "a b@x.id", "a@b@c"] {
            assert_eq!(
                field_of(with(&|r| r.payer = payer("", "", bad))),
                "payer.email",
                "{bad}"
            );
        }
        for bad in [1, 59, 86_401, u32::MAX] {
            assert_eq!(
                field_of(with(&|r| r.expiry_seconds = bad)),
                "expiry_seconds",
                "{bad}"
            );
        }
        assert!(with(&|r| r.expiry_seconds = 86_400).is_ok());
        assert_eq!(
            field_of(with(&|r| r.purpose = "p".repeat(MAX_PURPOSE + 1))),
            "purpose"
        );
        assert_eq!(
            field_of(with(&|r| r.product_code = "A B".into())),
            "product_code"
        );
    }

    /// Free text (a receiver's or payer's name, a purpose, a reason, a
    /// contact) refuses, naming the field and the character, what shows
    /// nothing yet hides or reorders the text: `Siti\u{202E}Budi` would
    /// read `SitiiduB` to whoever looks at the pay-out. Letters of any
    /// script, accents and emoji pass.
    #[test]
    fn free_text_refuses_characters_that_hide_or_reorder_it() {
        let named = |receiver_name: &str| {
            PayOutInput::try_from(&pb::PayOutRequest {
                receiver_name: receiver_name.into(),
                ..pay_out()
            })
        };
        for (bad, code) in [
            ("Siti\u{202E}Budi", "U+202E"),
            ("Siti\u{200B}Budi", "U+200B"),
            ("Siti\u{2066}Budi", "U+2066"),
            ("\u{FEFF}Siti", "U+FEFF"),
            ("Siti\u{2028}Budi", "U+2028"),
            ("Siti\u{00AD}Budi", "U+00AD"),
            ("Siti\u{0}Budi", "U+0000"),
            ("Siti\tBudi", "U+0009"),
        ] {
            let refused = named(bad).unwrap_err();
            assert_eq!(refused.field, "receiver_name", "{bad:?}");
            assert!(
                refused
                    .reason
                    .starts_with(&format!("character {code} is not allowed")),
                "{bad:?}: {}",
                refused.reason
            );
        }
        for good in [
            "Siti Budi",
            "Ñoño Pérez",
            "渡辺 さん",
            "Budi 😀",
            "O'Brien-Smith",
        ] {
            assert!(named(good).is_ok(), "{good:?}");
        }
        assert_eq!(contact("a\u{202E}@b.c").unwrap_err().field, "contact");
        assert!(contact("budi@example.com").is_ok());
    }

    fn pay_out() -> pb::PayOutRequest {
        pb::PayOutRequest {
            client_ref: "out-1".into(),
            product_code: String::new(),
            amount: idr(50_000),
            method: "BCA".into(),
            account: "1234567890".into(),
            receiver_name: "Siti".into(),
            purpose: String::new(),
            wait_ms: 0,
        }
    }

    #[test]
    fn pay_out_defaults_and_rules() {
        let input = PayOutInput::try_from(&pay_out()).unwrap();
        assert_eq!(input.product_code.as_str(), "PAYOUT");
        assert_eq!(input.purpose, DEFAULT_PAY_OUT_PURPOSE);
        assert_eq!(input.account, "1234567890");
        let with = |change: &dyn Fn(&mut pb::PayOutRequest)| {
            let mut request = pay_out();
            change(&mut request);
            PayOutInput::try_from(&request)
        };
        assert!(with(&|r| r.amount = idr(MIN_PAY_OUT)).is_ok());
        assert!(with(&|r| r.amount = idr(MAX_PAY_OUT)).is_ok());
        for bad in [None, idr(0), idr(MIN_PAY_OUT - 1), idr(MAX_PAY_OUT + 1)] {
            assert_eq!(
                field_of(with(&|r| r.amount = bad.clone())),
                "amount",
                "{bad:?}"
            );
        }
        for bad in ["", "B", "bca", "W-DANA", &"X".repeat(17)] {
            assert_eq!(
                field_of(with(&|r| r.method = bad.into())),
                "method",
                "{bad}"
            );
        }
        assert!(with(&|r| r.method = "W_DANA".into()).is_ok());
        // Smilepayz' pay-out `paymentMethod` is S6 (spec §5): a longer code
        // would be stored, sent and refused by the provider, not by us.
        let error = with(&|r| r.method = "PERMATA".into()).unwrap_err();
        assert_eq!(error.field, "method");
        assert!(error.reason.contains("2 to 6 characters"), "{error}");
        for bad in ["", "1234-5678", "12 34", &"1".repeat(33), "ÄB"] {
            assert_eq!(
                field_of(with(&|r| r.account = bad.into())),
                "account",
                "{bad}"
            );
        }
        assert!(with(&|r| r.account = "OVO0812ab".into()).is_ok());
        assert_eq!(
            field_of(with(&|r| r.receiver_name = "n".repeat(65))),
            "receiver_name"
        );
        assert_eq!(
            field_of(with(&|r| r.purpose = "p".repeat(MAX_PURPOSE + 1))),
            "purpose"
        );
        assert_eq!(
            field_of(with(&|r| r.client_ref = String::new())),
            "client_ref"
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

        /// Inputs mostly of ASCII digits, some with a sign, a space, a
        /// letter or a non-ASCII digit among them, so both sides of the
        /// rule are drawn often.
        #[test]
        fn account_accepts_exactly_4_to_24_ascii_digits(
            text in prop_oneof![
                "[0-9]{0,30}",
                "[0-9]{0,12}[ +a\\-\u{0663}\u{FF11}][0-9]{0,12}",
                ".{0,30}",
            ]
        ) {
            let is_account = text.bytes().all(|b| b.is_ascii_digit()) && (4..=24).contains(&text.len());
            match account(&text) {
                Ok(parsed) => {
                    prop_assert!(is_account, "{text:?} accepted");
                    prop_assert_eq!(parsed, text);
                }
                Err(error) => {
                    prop_assert!(!is_account, "{text:?} refused: {error:?}");
                    prop_assert_eq!(error.field, "account");
                }
            }
        }
    }
}
