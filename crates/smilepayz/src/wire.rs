//! Smilepayz v2.0 bodies (spec §5). Requests are serde structs whose field
//! order is the SDKs' order (serialisation keeps declaration order, and the
//! signature covers the exact bytes sent). Replies and callbacks are read
//! leniently: a missing or oddly typed field is `None`, never a failed parse,
//! and an unknown status is [`OrderStatus::Unknown`]. But an object that names
//! a key twice is refused ([`loket_connector::json::strict`]): which value
//! Smilepayz meant cannot be told (a reply is then unknown, a callback
//! malformed).
//!
//! Money is `{currency: "IDR", amount: Number}` in whole rupiah; amounts are
//! converted exactly ([`money_to_wire`], [`money_from_wire`]) — never through
//! floating point (the workspace's `serde_json` keeps numbers as text).

use loket_connector::report::clip;
use loket_protocol::catalogue::smilepayz_code_http;
use loket_protocol::{Currency, Money, MoneyError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const PAY_IN_PATH: &str = "/v2.0/transaction/pay-in";
pub const PAY_OUT_PATH: &str = "/v2.0/disbursement/pay-out";
pub const INQUIRY_STATUS_PATH: &str = "/v2.0/inquiry-status";
pub const INQUIRY_BALANCE_PATH: &str = "/v2.0/inquiry-balance";

/// `tradeType` of inquiry-status.
pub const TRADE_TYPE_PAY_IN: u8 = 1;
pub const TRADE_TYPE_PAY_OUT: u8 = 2;

pub const HEADER_TIMESTAMP: &str = "X-TIMESTAMP";
pub const HEADER_SIGNATURE: &str = "X-SIGNATURE";
pub const HEADER_PARTNER_ID: &str = "X-PARTNER-ID";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The exact body that acknowledges a callback (spec §5).
pub const CALLBACK_ACK: &str = "SUCCESS";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Merchant {
    pub merchant_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub merchant_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMoney {
    pub currency: String,
    pub amount: serde_json::Number,
}

/// `payer` / `receiver` (spec §5); empty fields are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Party {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phone: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
}

impl Party {
    pub fn is_empty(&self) -> bool {
        self.name.is_empty() && self.phone.is_empty() && self.email.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayInRequest {
    pub order_no: String,
    pub purpose: String,
    pub merchant: Merchant,
    pub money: WireMoney,
    /// Absent: hosted checkout (`INIT` + `paymentUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Party>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayOutRequest {
    pub order_no: String,
    pub purpose: String,
    pub merchant: Merchant,
    pub money: WireMoney,
    pub payment_method: String,
    pub cash_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Party>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryStatusRequest {
    pub trade_type: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_no: Option<String>,
}

/// **ASSUMED** (spec §1: no body documented): the merchant only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InquiryBalanceRequest {
    pub merchant: Merchant,
}

/// Serialises a request: compact JSON, keys in declaration order, `/` not
/// escaped — exactly the bytes that are signed and sent.
pub fn to_body<T: Serialize>(request: &T) -> Vec<u8> {
    serde_json::to_vec(request).expect("request types always serialise")
}

pub fn money_to_wire(money: Money) -> WireMoney {
    WireMoney {
        currency: money.currency.code().to_string(),
        amount: serde_json::Number::from(money.minor),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("reply is not a JSON object")]
    NotJson,
    /// An object names a key twice: which one it means cannot be told.
    #[error("reply names key {0:?} twice in one object")]
    RepeatedKey(String),
    #[error("money: {0}")]
    Money(#[from] MoneyError),
    #[error("money: missing or malformed")]
    BadMoney,
}

/// `{currency, amount}` → exact [`Money`] (whole rupiah; `150000.00` is
/// accepted, a non-zero fraction is an error).
pub fn money_from_wire(value: &Value) -> Result<Money, WireError> {
    let currency = value
        .get("currency")
        .and_then(Value::as_str)
        .ok_or(WireError::BadMoney)?;
    let currency = Currency::parse(currency)?;
    let amount = match value.get("amount") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => return Err(WireError::BadMoney),
    };
    Ok(Money::parse_decimal(&amount, currency)?)
}

/// An order status (spec §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderStatus {
    Init,
    Processing,
    Success,
    Failed,
    Expired,
    Unknown(String),
}

impl OrderStatus {
    pub fn parse(text: &str) -> OrderStatus {
        match text.trim().to_ascii_uppercase().as_str() {
            "INIT" => OrderStatus::Init,
            "PROCESSING" => OrderStatus::Processing,
            "SUCCESS" => OrderStatus::Success,
            "FAILED" => OrderStatus::Failed,
            "EXPIRED" => OrderStatus::Expired,
            _ => OrderStatus::Unknown(text.trim().to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            OrderStatus::Init => "INIT",
            OrderStatus::Processing => "PROCESSING",
            OrderStatus::Success => "SUCCESS",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Unknown(s) => s,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(
            self,
            OrderStatus::Success | OrderStatus::Failed | OrderStatus::Expired
        )
    }
}

/// `channel` of a pay-in / pay-out reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Channel {
    pub payment_method: Option<String>,
    pub qr_string: Option<String>,
    pub va_number: Option<String>,
    pub payment_url: Option<String>,
    pub cash_account: Option<String>,
}

/// Any Smilepayz reply, read leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// 2-digit `code`.
    pub code: Option<String>,
    /// 7-digit `responseCode` (ASSUMED present in v2, spec §6).
    pub response_code: Option<String>,
    pub message: Option<String>,
    pub order_no: Option<String>,
    pub trade_no: Option<String>,
    pub status: Option<OrderStatus>,
    /// The order's method, named at the top level of an inquiry-status
    /// reply (spec §5); creation replies name it inside `channel` instead.
    /// The only place a hosted-page pay-in's method shows: its payer picks
    /// it on Smilepayz's page.
    pub payment_method: Option<String>,
    pub money: Option<Value>,
    pub channel: Channel,
    pub transaction_time: Option<String>,
    pub remark: Option<String>,
    pub raw: Value,
}

/// A string field, or a number written as a string.
pub fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Reply {
    pub fn parse(body: &[u8]) -> Result<Reply, WireError> {
        let raw = loket_connector::json::strict(body).map_err(|error| match error {
            loket_connector::json::JsonError::RepeatedKey(key) => WireError::RepeatedKey(key),
            _ => WireError::NotJson,
        })?;
        if !raw.is_object() {
            return Err(WireError::NotJson);
        }
        let channel = raw
            .get("channel")
            .map(|c| Channel {
                payment_method: text(c, "paymentMethod"),
                qr_string: text(c, "qrString"),
                va_number: text(c, "vaNumber"),
                payment_url: text(c, "paymentUrl"),
                cash_account: text(c, "cashAccount"),
            })
            .unwrap_or_default();
        Ok(Reply {
            code: text(&raw, "code"),
            response_code: text(&raw, "responseCode"),
            message: text(&raw, "message").or_else(|| text(&raw, "responseMessage")),
            order_no: text(&raw, "orderNo"),
            trade_no: text(&raw, "tradeNo"),
            status: text(&raw, "status").map(|s| OrderStatus::parse(&s)),
            payment_method: text(&raw, "paymentMethod"),
            money: raw.get("money").cloned(),
            channel,
            transaction_time: text(&raw, "transactionTime")
                .or_else(|| text(&raw, "disbursementTime")),
            remark: text(&raw, "remark"),
            raw,
        })
    }

    /// The 7-digit `responseCode`, when present and well-formed.
    fn response_code_7(&self) -> Option<&str> {
        self.response_code
            .as_deref()
            .filter(|c| c.len() == 7 && c.bytes().all(|b| b.is_ascii_digit()))
    }

    /// The code to classify: the 7-digit `responseCode` when present and
    /// well-formed, else the 2-digit `code`. Whether the two agree is
    /// [`Reply::code_conflict`]'s question: check it first.
    pub fn classification_code(&self) -> Option<&str> {
        self.response_code_7().or(self.code.as_deref())
    }

    /// The HTTP status the reply's code goes with (spec §6): the first three
    /// digits of a well-formed `responseCode`, else `code` mapped by the
    /// spec's table (`00`→200, `10`→400, `99`→500, …); `None` when neither
    /// says.
    pub fn code_http(&self) -> Option<u16> {
        match self.response_code_7() {
            Some(rc) => rc[..3].parse().ok(),
            None => self.code.as_deref().and_then(smilepayz_code_http),
        }
    }

    /// Why `code` and a well-formed `responseCode` cannot both be believed:
    /// `code`'s HTTP status (spec §6's table) is not `responseCode`'s first
    /// three digits, or `code` is none the table maps (so nothing confirms
    /// `responseCode`). Such a reply decides nothing (money-safety rule 1):
    /// `{"code":"00","responseCode":"4009103","status":"PROCESSING"}` may be
    /// an order with its funds frozen as much as a refused one. `None` when
    /// they agree or one of them is missing (or `responseCode` is malformed,
    /// and so not read at all).
    pub fn code_conflict(&self) -> Option<String> {
        let rc = self.response_code_7()?;
        let code = self.code.as_deref()?;
        let rc_http = &rc[..3];
        match smilepayz_code_http(code) {
            Some(http) if http.to_string() == rc_http => None,
            Some(http) => Some(format!(
                "code {code} (HTTP {http}) and responseCode {rc} (HTTP {rc_http}) disagree"
            )),
            None => Some(format!(
                "code {:?} is not a documented code, so responseCode {rc} is not confirmed",
                clip(code, 16)
            )),
        }
    }

    /// True when the call itself succeeded (`code` 00 / `200xx00`, the two
    /// agreeing when both are present).
    pub fn is_success(&self) -> bool {
        if self.code_conflict().is_some() {
            return false;
        }
        match self.classification_code() {
            Some(code) if code.len() == 7 => code.starts_with("200") && code.ends_with("00"),
            Some(code) => code == "00",
            None => false,
        }
    }
}

/// The callback body (spec §5). `transactionTime` is local time with no
/// offset (`yyyy-MM-ddTHH:mm:ss`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackBody {
    pub order_no: String,
    pub trade_no: String,
    pub merchant_id: String,
    #[serde(default)]
    pub merchant_name: String,
    #[serde(default)]
    pub payment_method: String,
    pub status: String,
    pub money: WireMoney,
    pub transaction_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Party>,
}

/// A valid `orderNo`: alphanumeric, 6–32 characters (spec §5, §10 Q1).
pub fn is_valid_order_no(order_no: &str) -> bool {
    (6..=32).contains(&order_no.len()) && order_no.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key written twice in one object, at the top or inside, makes the
    /// reply unreadable: serde_json's `Value` kept the last and hid the
    /// first, so `FAILED` then `SUCCESS` read as a success.
    #[test]
    fn a_reply_repeating_a_key_is_refused() {
        for body in [
            &br#"{"code":"00","status":"FAILED","status":"SUCCESS"}"#[..],
            br#"{"code":"00","status":"SUCCESS","money":{"currency":"IDR","amount":1,"amount":150000}}"#,
        ] {
            assert!(
                matches!(Reply::parse(body), Err(WireError::RepeatedKey(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// A signed callback that names its status twice is malformed (refused,
    /// for Smilepayz to send again), whichever status comes last.
    #[test]
    fn a_callback_repeating_a_key_is_malformed() {
        use crate::sign::{self, TimestampStyle};
        use loket_connector::{CallbackError, CallbackParser as _, CallbackRequest};
        let (private_pem, public_pem) = sign::generate_key_pair();
        let private = sign::load_private_key(&private_pem).unwrap();
        let parser = crate::callback_parser(&crate::CallbackSettings {
            platform_public_key: public_pem,
            ..Default::default()
        })
        .unwrap();
        let callback = |statuses: &str| {
            let body = format!(
                r#"{{"orderNo":"0123456789abcdef","tradeNo":"1012001924","merchantId":"20001",{statuses},"money":{{"currency":"IDR","amount":150000}},"transactionTime":"2024-07-03T08:56:33"}}"#
            );
            let ts = sign::timestamp(TimestampStyle::Wib, chrono::Utc::now());
            let signature = sign::sign(&private, format!("1012001924|{ts}").as_bytes());
            let mut headers = http::HeaderMap::new();
            headers.insert(HEADER_TIMESTAMP, ts.parse().unwrap());
            headers.insert(HEADER_SIGNATURE, signature.parse().unwrap());
            parser.parse(&CallbackRequest {
                method: http::Method::POST,
                path: crate::CALLBACK_PATH.into(),
                query: None,
                headers,
                body: bytes::Bytes::from(body),
                source_ip: None,
            })
        };
        assert_eq!(
            callback(r#""status":"SUCCESS""#).unwrap().provider_code,
            "SUCCESS"
        );
        for statuses in [
            r#""status":"FAILED","status":"SUCCESS""#,
            r#""status":"SUCCESS","status":"FAILED""#,
        ] {
            assert!(
                matches!(callback(statuses), Err(CallbackError::Malformed(_))),
                "{statuses}: {:?}",
                callback(statuses)
            );
        }
    }
    #[test]
    fn pay_in_body_keeps_the_sdk_order_and_whole_rupiah() {
        let request = PayInRequest {
            order_no: "S20001ORD20241230183036A1".into(),
            purpose: "Order 1001".into(),
            merchant: Merchant {
                merchant_id: "20001".into(),
                merchant_name: String::new(),
            },
            money: money_to_wire(Money::idr(150_000)),
            payment_method: Some("QRIS".into()),
            payer: None,
            expiry_period: Some(3600),
            redirect_url: None,
            callback_url: Some("https://merchant.example/cb/smilepayz".into()),
        };
        assert_eq!(
            String::from_utf8(to_body(&request)).unwrap(),
            r#"{"orderNo":"S20001ORD20241230183036A1","purpose":"Order 1001","merchant":{"merchantId":"20001"},"money":{"currency":"IDR","amount":150000},"paymentMethod":"QRIS","expiryPeriod":3600,"callbackUrl":"https://merchant.example/cb/smilepayz"}"#
        );
    }

    #[test]
    fn money_is_exact() {
        let v: Value = serde_json::from_str(r#"{"currency":"IDR","amount":150000}"#).unwrap();
        assert_eq!(money_from_wire(&v).unwrap(), Money::idr(150_000));
        let v: Value = serde_json::from_str(r#"{"currency":"IDR","amount":150000.00}"#).unwrap();
        assert_eq!(money_from_wire(&v).unwrap(), Money::idr(150_000));
        let v: Value =
            serde_json::from_str(r#"{"currency":"IDR","amount":9007199254740993}"#).unwrap();
        assert_eq!(
            money_from_wire(&v).unwrap(),
            Money::idr(9_007_199_254_740_993)
        );
        let v: Value = serde_json::from_str(r#"{"currency":"IDR","amount":1500.5}"#).unwrap();
        assert!(money_from_wire(&v).is_err());
        let v: Value = serde_json::from_str(r#"{"currency":"USD","amount":1}"#).unwrap();
        assert!(money_from_wire(&v).is_err());
    }

    #[test]
    fn replies_read_leniently() {
        let reply = Reply::parse(br#"{"code":"00","responseCode":"2009000","message":"Successful","orderNo":"abc123","tradeNo":"T1","status":"PROCESSING","channel":{"paymentMethod":"QRIS","qrString":"000201..."}}"#).unwrap();
        assert!(reply.is_success());
        assert_eq!(reply.classification_code(), Some("2009000"));
        assert_eq!(reply.status, Some(OrderStatus::Processing));
        assert_eq!(reply.channel.qr_string.as_deref(), Some("000201..."));
        let reply = Reply::parse(br#"{"code":10,"message":"Insufficient Balance"}"#).unwrap();
        assert_eq!(reply.classification_code(), Some("10"));
        assert!(!reply.is_success());
        assert_eq!(
            OrderStatus::parse("weird"),
            OrderStatus::Unknown("weird".into())
        );
        assert!(Reply::parse(b"<html>").is_err());
        assert!(Reply::parse(b"[1]").is_err());
    }

    #[test]
    fn an_inquiry_reply_names_the_method_at_its_top_level() {
        let reply = Reply::parse(br#"{"code":"00","responseCode":"2009200","message":"Successful","tradeNo":"T1","tradeType":1,"paymentMethod":"QRIS","status":"SUCCESS"}"#).unwrap();
        assert_eq!(reply.payment_method.as_deref(), Some("QRIS"));
        assert_eq!(reply.channel.payment_method, None);
        // A creation reply names it in `channel`: neither is read as the other.
        let reply = Reply::parse(br#"{"code":"00","status":"PROCESSING","channel":{"paymentMethod":"BCA","vaNumber":"8808"}}"#).unwrap();
        assert_eq!(reply.payment_method, None);
        assert_eq!(reply.channel.payment_method.as_deref(), Some("BCA"));
        // A blank method is none, not a method named "".
        let reply = Reply::parse(br#"{"code":"00","status":"INIT","paymentMethod":" "}"#).unwrap();
        assert_eq!(reply.payment_method, None);
    }

    #[test]
    fn order_numbers() {
        assert!(is_valid_order_no("0123456789abcdef0123456789abcdef"));
        assert!(!is_valid_order_no("abc12"));
        assert!(!is_valid_order_no("abc-123"));
        assert!(!is_valid_order_no(&"a".repeat(33)));
    }
}
