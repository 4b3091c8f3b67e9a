//! SNAP QR CPM bodies (spec §5). Requests are structs serialized in field
//! order (the bytes sent are the bytes signed). Replies and notifies are read
//! leniently (§8.10) through [`Body`]: a key is matched exactly first, then
//! ignoring ASCII case and surrounding spaces (`externalStoreID` /
//! `externalStoreId`, `Value` / `value`, `" originalExternalId"`), and
//! `"additionalInfo": null` is accepted. Amounts are `{"value":"10000.00",
//! "currency":"IDR"}` and convert to [`Money`] exactly (a fraction is refused).

use loket_protocol::{Currency, Money, MoneyError};
use serde::Serialize;
use serde_json::{Map, Value};

/// `{"value":"10000.00","currency":"IDR"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub value: String,
    pub currency: String,
}

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Amount {
            value: money.to_decimal_2(),
            currency: money.currency.code().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl Amount {
    /// Exact conversion; a fraction (`"10000.50"`) or another currency is refused.
    pub fn to_money(&self) -> Result<Money, MoneyError> {
        let currency = Currency::parse(self.currency.trim())?;
        Money::parse_decimal(&self.value, currency)
    }
}

/// A 7-digit `responseCode`: HTTP (3) + service (2) + case (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCode {
    pub http: u16,
    pub service: u8,
    pub case: u8,
}

impl ResponseCode {
    pub fn parse(code: &str) -> Option<Self> {
        let code = code.trim();
        if code.len() != 7 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ResponseCode {
            http: code[..3].parse().ok()?,
            service: code[3..5].parse().ok()?,
            case: code[5..].parse().ok()?,
        })
    }

    pub fn is(&self, http: u16, case: u8) -> bool {
        self.http == http && self.case == case
    }

    /// `409xx01` (a duplicate reference) or `404xx18` (an inconsistent
    /// request): the codes the spec's table reads as success on an HTTP
    /// error, by its duplicate rule (§6, ASSUMED, Q7).
    pub fn is_success_by_duplicate_rule(&self) -> bool {
        self.is(409, 1) || self.is(404, 18)
    }
}

impl std::fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:03}{:02}{:02}", self.http, self.service, self.case)
    }
}

/// A received JSON object, read leniently. An object (at any depth) that
/// names a key twice is refused ([`loket_connector::json::strict`]): which
/// of its values the issuer meant cannot be told, so such a reply is
/// unknown and such a notify malformed.
#[derive(Debug, Clone, PartialEq)]
pub struct Body(pub Map<String, Value>);

impl Body {
    pub fn parse(bytes: &[u8]) -> Result<Body, WireError> {
        match loket_connector::json::strict(bytes) {
            Ok(Value::Object(map)) => Ok(Body(map)),
            Ok(_) => Err(WireError::NotJson("not an object".into())),
            // serde_json's message (a line and column) or the repeated key,
            // never a quote of the body.
            Err(error) => Err(WireError::NotJson(error.to_string())),
        }
    }

    /// The field `name` of `map`, matched leniently as a body's own fields
    /// are: for an object inside a body (an amount, a nested record), read
    /// where it lies.
    pub fn lookup<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
        map.get(name).or_else(|| {
            map.iter()
                .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                .map(|(_, value)| value)
        })
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        Self::lookup(&self.0, name)
    }

    /// A string (or number) field, trimmed; `None` when absent, null or blank.
    pub fn str(&self, name: &str) -> Option<String> {
        scalar(self.value(name)?)
    }

    pub fn amount(&self, name: &'static str) -> Result<Option<Amount>, WireError> {
        let Some(value) = self.value(name) else {
            return Ok(None);
        };
        let Value::Object(map) = value else {
            if value.is_null() {
                return Ok(None);
            }
            return Err(WireError::Invalid {
                field: name,
                problem: "not an amount object".into(),
            });
        };
        let part = |key: &str| Self::lookup(map, key).and_then(scalar);
        let value = part("value").ok_or(WireError::Invalid {
            field: name,
            problem: "value missing".into(),
        })?;
        let currency = part("currency").unwrap_or_else(|| "IDR".into());
        Ok(Some(Amount { value, currency }))
    }

    pub fn money(&self, name: &'static str) -> Result<Option<Money>, WireError> {
        match self.amount(name)? {
            None => Ok(None),
            Some(amount) => amount
                .to_money()
                .map(Some)
                .map_err(|error| WireError::Invalid {
                    field: name,
                    problem: error.to_string(),
                }),
        }
    }
}

fn scalar(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.trim().to_string(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// Token request (73).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub grant_type: &'static str,
    pub additional_info: Map<String, Value>,
}

impl Default for TokenRequest {
    fn default() -> Self {
        TokenRequest {
            grant_type: "client_credentials",
            additional_info: Map::new(),
        }
    }
}

/// Generate QR (59).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateRequest {
    pub partner_reference_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<String>,
    pub partner_trx_date: String,
}

/// CPM payment (60).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    pub partner_reference_no: String,
    pub qr_content: String,
    pub amount: Amount,
    pub merchant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<String>,
    pub expiry_time: String,
}

/// Query (61).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRequest {
    pub original_partner_reference_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_reference_no: Option<String>,
    pub merchant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<String>,
}

/// Cancel (62).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub original_partner_reference_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_reference_no: Option<String>,
    pub merchant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_merchant_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Refund (80). Spec §5 lists no `subMerchantId` for it (as it does for
/// 59–62), so none is sent, whatever the settings: an issuer strict about
/// its fields could refuse it (`400xx01`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundRequest {
    pub original_partner_reference_no: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_reference_no: Option<String>,
    pub merchant_id: String,
    pub partner_refund_no: String,
    pub refund_amount: Amount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Serializes a request in declaration order (these are the bytes signed).
pub fn to_bytes<T: Serialize>(request: &T) -> Vec<u8> {
    serde_json::to_vec(request).expect("request structs always serialize")
}

/// `Some(text)` unless blank.
pub fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refund carries only the fields spec §5 lists for service 80.
    #[test]
    fn a_refund_request_carries_only_the_fields_of_service_80() {
        const SERVICE_80_FIELDS: [&str; 7] = [
            "originalPartnerReferenceNo",
            "originalReferenceNo",
            "originalExternalId",
            "merchantId",
            "partnerRefundNo",
            "refundAmount",
            "reason",
        ];
        let request = RefundRequest {
            original_partner_reference_no: "LKT0001PAY".into(),
            original_reference_no: Some("R1".into()),
            merchant_id: "M0001".into(),
            partner_refund_no: "LKT0002REF".into(),
            refund_amount: Money::idr(1_000).into(),
            reason: Some("customer asked".into()),
        };
        let sent: serde_json::Value = serde_json::from_slice(&to_bytes(&request)).unwrap();
        for key in sent.as_object().unwrap().keys() {
            assert!(SERVICE_80_FIELDS.contains(&key.as_str()), "{key} sent");
        }
    }

    #[test]
    fn amounts_convert_exactly_and_refuse_fractions() {
        let amount = Amount::from(Money::idr(10_000));
        assert_eq!(amount.value, "10000.00");
        assert_eq!(
            String::from_utf8(to_bytes(&amount)).unwrap(),
            r#"{"value":"10000.00","currency":"IDR"}"#
        );
        assert_eq!(amount.to_money().unwrap(), Money::idr(10_000));
        let half = Amount {
            value: "10000.50".into(),
            currency: "IDR".into(),
        };
        assert!(half.to_money().is_err());
        let usd = Amount {
            value: "1.00".into(),
            currency: "USD".into(),
        };
        assert!(usd.to_money().is_err());
    }

    #[test]
    fn response_codes_split_by_position() {
        let code = ResponseCode::parse("4046018").unwrap();
        assert_eq!((code.http, code.service, code.case), (404, 60, 18));
        assert_eq!(code.to_string(), "4046018");
        assert!(ResponseCode::parse("404601").is_none());
        assert!(ResponseCode::parse("40460a8").is_none());
    }

    #[test]
    fn lenient_reading_of_spec_8_10() {
        let body = Body::parse(
            br#"{"responseCode":"2006100"," originalExternalId":"123","externalStoreID":"S1",
                "amount":{"Value":"15000.00","Currency":"IDR"},"additionalInfo":null}"#,
        )
        .unwrap();
        assert_eq!(body.str("originalExternalId").as_deref(), Some("123"));
        assert_eq!(body.str("externalStoreId").as_deref(), Some("S1"));
        assert_eq!(body.money("amount").unwrap(), Some(Money::idr(15_000)));
        assert_eq!(body.str("additionalInfo"), None);
        assert!(Body::parse(b"<html>").is_err());
        assert!(Body::parse(b"").is_err());
    }

    /// A key written twice in one object, at the top or inside, makes the
    /// body unreadable: serde_json's `Value` kept the last and hid the
    /// first, so `06` then `00` read as a success.
    #[test]
    fn a_body_repeating_a_key_is_refused() {
        for body in [
            &br#"{"responseCode":"2006100","latestTransactionStatus":"06","latestTransactionStatus":"00"}"#[..],
            br#"{"responseCode":"2006100","amount":{"value":"1.00","currency":"IDR","value":"9.00"}}"#,
        ] {
            assert!(
                Body::parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Keys told apart only by the lenient reading are not a repeat.
        let body = Body::parse(br#"{"externalStoreID":"S1","externalStoreId":"S1"}"#).unwrap();
        assert_eq!(body.str("externalStoreId").as_deref(), Some("S1"));
    }

    /// A signed notify that names its status twice is malformed (refused,
    /// for the issuer to send again), whichever status comes last.
    #[test]
    fn a_notify_repeating_a_key_is_malformed() {
        use crate::callback::{callback_parser, sign_notify_rsa, NOTIFY_PATH};
        use loket_connector::{CallbackError, CallbackParser as _, CallbackRequest};
        let (private_pem, public_pem) = crate::sign::generate_key_pair();
        let private = crate::sign::load_private_key(&private_pem).unwrap();
        let parser = callback_parser(&crate::NotifySettings {
            issuer_public_key: loket_runtime::Secret::new(public_pem),
            merchant_id: "M1".into(),
            ..crate::NotifySettings::default()
        })
        .unwrap();
        let stamp =
            crate::connector::format_timestamp(crate::TimestampFormat::Offset, chrono::Utc::now());
        let notify = |statuses: &str| {
            let body = format!(
                r#"{{"originalPartnerReferenceNo":"0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{{"value":"10000.00","currency":"IDR"}},{statuses}}}"#
            );
            let mut headers = http::HeaderMap::new();
            for (name, value) in sign_notify_rsa(&private, NOTIFY_PATH, body.as_bytes(), &stamp) {
                headers.insert(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            parser.parse(&CallbackRequest {
                method: http::Method::POST,
                path: NOTIFY_PATH.into(),
                query: None,
                headers,
                body: bytes::Bytes::from(body),
                source_ip: None,
            })
        };
        let once = notify(r#""latestTransactionStatus":"00""#).unwrap();
        assert_eq!(once.provider_code, "00");
        for statuses in [
            r#""latestTransactionStatus":"06","latestTransactionStatus":"00""#,
            r#""latestTransactionStatus":"00","latestTransactionStatus":"06""#,
        ] {
            assert!(
                matches!(notify(statuses), Err(CallbackError::Malformed(_))),
                "{statuses}: {:?}",
                notify(statuses)
            );
        }
    }

    #[test]
    fn requests_serialize_in_spec_order() {
        let request = PaymentRequest {
            partner_reference_no: "p1".into(),
            qr_content: "q".into(),
            amount: Money::idr(10_000).into(),
            merchant_id: "m".into(),
            sub_merchant_id: None,
            expiry_time: "2020-12-23T08:04:11+07:00".into(),
        };
        assert_eq!(
            String::from_utf8(to_bytes(&request)).unwrap(),
            r#"{"partnerReferenceNo":"p1","qrContent":"q","amount":{"value":"10000.00","currency":"IDR"},"merchantId":"m","expiryTime":"2020-12-23T08:04:11+07:00"}"#
        );
    }
}
