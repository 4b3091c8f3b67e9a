//! Smilepayz v2.0 signatures (spec §4).
//!
//! - **Request** (pay-in, pay-out, inquiry-status, inquiry-balance):
//!   `X-SIGNATURE = Base64(SHA256withRSA(merchantPrivateKey,
//!   X-TIMESTAMP + "|" + merchantSecret + "|" + minify(body)))`. The body is
//!   minified exactly as sent — keys are **not** sorted, `/` is not escaped —
//!   so the bytes we sign are the bytes we send ([`sign_request`]).
//! - **Callback**: `tradeNo + "|" + X-TIMESTAMP` verified with the platform's
//!   public key ([`CallbackRecipe::TradeNoTimestamp`]); the PayNodo variant
//!   `X-TIMESTAMP + "|" + minify(body)` is configurable
//!   ([`CallbackRecipe::TimestampBody`]).
//!
//! Keys are RSA (2048 bits at Smilepayz). They load from PKCS#8 / PKCS#1 PEM,
//! from base64 DER (how the SDKs load them), or from a file holding either
//! ([`load_private_key`], [`load_public_key`]). No function here logs, and no
//! error carries key material or the merchant secret.

use chrono::{DateTime, Utc};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

/// Keys, SHA256withRSA and the exact-bytes minifier are shared with every
/// provider (`loket_connector::signing`).
pub use loket_connector::signing::{
    generate_key_pair, load_private_key, load_public_key, minify, rsa_sha256_sign as sign,
    rsa_sha256_verify as verify, KeyError,
};

/// `yyyy-MM-ddTHH:mm:ss+07:00` (Python SDK) or `…Z` (Java SDK); spec §3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampStyle {
    /// Western Indonesia Time, `+07:00`.
    #[default]
    Wib,
    /// UTC with a `Z`.
    Utc,
}

/// What a callback's signature covers (spec §4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackRecipe {
    /// Smilepayz: `tradeNo|X-TIMESTAMP` (the body is NOT covered).
    #[default]
    TradeNoTimestamp,
    /// PayNodo variant: `X-TIMESTAMP|minify(body)`.
    TimestampBody,
}

impl CallbackRecipe {
    /// True when the signature authenticates the whole body.
    pub fn covers_body(self) -> bool {
        matches!(self, CallbackRecipe::TimestampBody)
    }
}

/// The `X-TIMESTAMP` value for `now` in `style` (second precision).
pub fn timestamp(style: TimestampStyle, now: DateTime<Utc>) -> String {
    match style {
        TimestampStyle::Wib => loket_protocol::wib::timestamp(now),
        TimestampStyle::Utc => now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}

/// Parses an `X-TIMESTAMP` (any offset, or `Z`; fractional seconds allowed).
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// True when `ts` is within `max_skew_seconds` of `now`, either way.
pub fn within_window(ts: DateTime<Utc>, now: DateTime<Utc>, max_skew_seconds: i64) -> bool {
    (now - ts).num_seconds().abs() <= max_skew_seconds
}

/// `timestamp|merchantSecret|minify(body)` (spec §4.1).
pub fn request_string_to_sign(timestamp: &str, merchant_secret: &str, body: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(timestamp.len() + merchant_secret.len() + body.len() + 2);
    s.extend_from_slice(timestamp.as_bytes());
    s.push(b'|');
    s.extend_from_slice(merchant_secret.as_bytes());
    s.push(b'|');
    s.extend_from_slice(&minify(body));
    s
}

/// The callback's string to sign under `recipe` (spec §4.2).
pub fn callback_string_to_sign(
    recipe: CallbackRecipe,
    trade_no: &str,
    timestamp: &str,
    body: &[u8],
) -> Vec<u8> {
    match recipe {
        CallbackRecipe::TradeNoTimestamp => format!("{trade_no}|{timestamp}").into_bytes(),
        CallbackRecipe::TimestampBody => {
            let mut s = format!("{timestamp}|").into_bytes();
            s.extend_from_slice(&minify(body));
            s
        }
    }
}

/// The `X-SIGNATURE` of a request whose body is `body` (sent as is).
pub fn sign_request(
    key: &RsaPrivateKey,
    timestamp: &str,
    merchant_secret: &str,
    body: &[u8],
) -> String {
    sign(
        key,
        &request_string_to_sign(timestamp, merchant_secret, body),
    )
}

pub fn verify_request(
    key: &RsaPublicKey,
    timestamp: &str,
    merchant_secret: &str,
    body: &[u8],
    signature_b64: &str,
) -> bool {
    verify(
        key,
        &request_string_to_sign(timestamp, merchant_secret, body),
        signature_b64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};

    const TS: &str = "2024-12-30T18:30:36+07:00";
    const SECRET: &str = "sim-merchant-secret-0001";
    const BODY: &str = r#"{"orderNo":"S20001ORD20241230183036A1","purpose":"Order 1001","merchant":{"merchantId":"20001"},"money":{"currency":"IDR","amount":150000},"paymentMethod":"QRIS","expiryPeriod":3600,"callbackUrl":"https://merchant.example/cb/smilepayz"}"#;

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn worked_example_pins_the_string_to_sign() {
        let s = request_string_to_sign(TS, SECRET, BODY.as_bytes());
        assert_eq!(
            sha256_hex(&s),
            "41e597370b83c0f0fc078db36bd02553a5d1114886e0ebec5938a69b91624dca"
        );
        // A pretty-printed copy of the same bytes minifies to the same string.
        let pretty =
            serde_json::to_vec_pretty(&serde_json::from_str::<serde_json::Value>(BODY).unwrap())
                .unwrap();
        assert_eq!(request_string_to_sign(TS, SECRET, &pretty), s);
    }

    #[test]
    fn callback_input_of_the_worked_example() {
        let s = callback_string_to_sign(
            CallbackRecipe::TradeNoTimestamp,
            "10120019240703085983730",
            "2024-07-03T08:56:33+07:00",
            b"{}",
        );
        assert_eq!(
            sha256_hex(&s),
            "fc19c47cb83676a37a8a08adc6c674a87303109f35a46b2c73d45d8630d87f78"
        );
    }

    #[test]
    fn rsa_2048_signature_verifies_and_detects_reserialised_bodies() {
        let (private_pem, public_pem) = generate_key_pair();
        let private = load_private_key(&private_pem).unwrap();
        let public = load_public_key(&public_pem).unwrap();
        let signature = sign_request(&private, TS, SECRET, BODY.as_bytes());
        assert_eq!(B64.decode(&signature).unwrap().len(), 256);
        assert_eq!(signature.len(), 344);
        assert!(verify_request(
            &public,
            TS,
            SECRET,
            BODY.as_bytes(),
            &signature
        ));

        // Same body with sorted keys (what a re-serialising client sends).
        let value: serde_json::Value = serde_json::from_str(BODY).unwrap();
        let sorted = sort_keys(&value).to_string();
        assert_ne!(sorted, BODY);
        assert!(!verify_request(
            &public,
            TS,
            SECRET,
            sorted.as_bytes(),
            &signature
        ));
        // Same body with `/` escaped as `\/` (PHP / some Java encoders).
        let escaped = BODY.replace('/', "\\/");
        assert!(!verify_request(
            &public,
            TS,
            SECRET,
            escaped.as_bytes(),
            &signature
        ));
        // Wrong secret, wrong timestamp, garbage.
        assert!(!verify_request(
            &public,
            TS,
            "other",
            BODY.as_bytes(),
            &signature
        ));
        assert!(!verify_request(
            &public,
            "2024-12-30T18:30:37+07:00",
            SECRET,
            BODY.as_bytes(),
            &signature
        ));
        assert!(!verify_request(
            &public,
            TS,
            SECRET,
            BODY.as_bytes(),
            "not base64!"
        ));
    }

    fn sort_keys(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<_> = map.keys().cloned().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort_keys(&map[&k]));
                }
                serde_json::Value::Object(out)
            }
            other => other.clone(),
        }
    }

    #[test]
    fn keys_load_from_pem_base64_der_and_paths() {
        let (private_pem, public_pem) = generate_key_pair();
        let key = load_private_key(&private_pem).unwrap();
        // Base64 DER (the SDKs' form): the PEM body without its armour.
        let b64: String = private_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(load_private_key(&b64).unwrap(), key);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merchant.pem");
        std::fs::write(&path, &private_pem).unwrap();
        assert_eq!(load_private_key(path.to_str().unwrap()).unwrap(), key);
        let pub_b64: String = public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(load_public_key(&pub_b64).unwrap(), RsaPublicKey::from(&key));
        assert_eq!(load_private_key(""), Err(KeyError::Missing));
        let error = load_private_key("/no/such/key.pem").unwrap_err();
        assert!(!error.to_string().contains("/no/such"));
    }

    #[test]
    fn minify_keeps_strings_and_order() {
        let body = b"{ \"b\" : \"x y\\\" z\" ,\n \"a\": [1, 2] /* c */ // d\n}";
        assert_eq!(minify(body), br#"{"b":"x y\" z","a":[1,2]}"#.to_vec());
    }

    #[test]
    fn timestamps_in_both_styles() {
        let now = DateTime::parse_from_rfc3339("2024-12-30T11:30:36Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(timestamp(TimestampStyle::Wib, now), TS);
        assert_eq!(timestamp(TimestampStyle::Utc, now), "2024-12-30T11:30:36Z");
        assert_eq!(parse_timestamp(TS), Some(now));
        assert!(within_window(
            now,
            now + chrono::Duration::seconds(300),
            300
        ));
        assert!(!within_window(
            now,
            now + chrono::Duration::seconds(301),
            300
        ));
    }
}
