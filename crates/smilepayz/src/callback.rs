//! Smilepayz callbacks (spec §4.2, §5): `POST /callback/smilepayz` with a
//! JSON body and `X-TIMESTAMP` / `X-SIGNATURE` headers. The signature is
//! SHA256withRSA over `tradeNo|X-TIMESTAMP` with Smilepayz's platform key
//! (or `X-TIMESTAMP|minify(body)`, the PayNodo variant, configurable).
//!
//! - A missing or wrong signature is [`CallbackError::BadSignature`]; an
//!   `X-TIMESTAMP` outside ±`max_skew_seconds` is [`CallbackError::Stale`].
//! - The Smilepayz signature does **not** cover the body, so the claimed
//!   status, amount and orderNo are unauthenticated: a parsed callback is
//!   always `verified = false` and the reconciler confirms it with an
//!   inquiry-status before any final state (issue 5; spec §4.2 ASSUMED
//!   policy). With the PayNodo recipe we keep the same policy (ASSUMED): the
//!   amount is still only checked through the inquiry.
//! - Retries of one callback share the dedupe key `tradeNo:STATUS:orderNo`
//!   (`orderNo` is not signed), whatever their timestamp and signature.
//! - Acknowledgement: HTTP 200 with the exact body `SUCCESS` (sent by the
//!   receiver only once the callback is durable). Refusals get 401 / 400 and
//!   a short body that is not `SUCCESS`, so Smilepayz retries.

use std::fmt;

use chrono::Utc;
use loket_connector::mask::Masker;
use loket_connector::report::clip;
use loket_connector::{
    CallbackError, CallbackParser, CallbackReply, CallbackRequest, ParsedCallback,
};
use loket_protocol::Provider;
use rsa::RsaPublicKey;

use crate::codes;
use crate::settings::{CallbackSettings, InvalidSetting};
use crate::sign::{self, CallbackRecipe};
use crate::wire::{self, text};
use loket_connector::service::check_callback_skew;

pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;
/// The raw callback kept for the event log is cut to this many characters
/// (at most 64 KiB), once masked.
pub const MAX_RAW_CHARS: usize = 16 * 1024;
/// The path the callback receiver routes to this parser.
pub const CALLBACK_PATH: &str = "/callback/smilepayz";

/// Verifies and parses Smilepayz callbacks for the callback receiver.
#[derive(Clone)]
pub struct SmilepayzCallbacks {
    key: Option<RsaPublicKey>,
    recipe: CallbackRecipe,
    max_skew_seconds: i64,
    masker: Masker,
}

impl fmt::Debug for SmilepayzCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmilepayzCallbacks")
            .field("configured", &self.key.is_some())
            .field("recipe", &self.recipe)
            .field("max_skew_seconds", &self.max_skew_seconds)
            .finish_non_exhaustive()
    }
}

/// The parser for `settings`. An empty `platform_public_key` gives a parser
/// that refuses every callback (provider not configured); a key that does
/// not load is an error naming the key.
pub fn callback_parser(settings: &CallbackSettings) -> Result<SmilepayzCallbacks, InvalidSetting> {
    let key = if settings.platform_public_key.trim().is_empty() {
        None
    } else {
        Some(
            sign::load_public_key(&settings.platform_public_key)
                .map_err(|e| InvalidSetting::new("smilepayz.platform_public_key", e.to_string()))?,
        )
    };
    check_callback_skew("smilepayz.max_skew_seconds", settings.max_skew_seconds)?;
    Ok(SmilepayzCallbacks {
        key,
        recipe: settings.recipe,
        max_skew_seconds: settings.max_skew_seconds,
        masker: Masker::new(settings.mask_secrets.iter().map(|s| s.expose().to_string())),
    })
}

fn malformed(why: &str) -> CallbackError {
    CallbackError::Malformed(why.to_string())
}

fn header<'a>(request: &'a CallbackRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn is_id(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl SmilepayzCallbacks {
    fn parse_inner(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        if request.method != http::Method::POST {
            return Err(malformed("only POST is accepted"));
        }
        if request.body.len() > MAX_CALLBACK_BYTES {
            return Err(malformed("callback too large"));
        }
        let body = loket_connector::json::strict(&request.body)
            .map_err(|error| malformed(&format!("body is not readable JSON: {error}")))?;
        if !body.is_object() {
            return Err(malformed("body is not a JSON object"));
        }
        let trade_no = text(&body, "tradeNo").ok_or_else(|| malformed("tradeNo is missing"))?;
        if !is_id(&trade_no, 64) {
            return Err(malformed("tradeNo is not an identifier"));
        }
        let ts = header(request, wire::HEADER_TIMESTAMP)
            .ok_or_else(|| CallbackError::BadSignature("X-TIMESTAMP missing".into()))?;
        let signature = header(request, wire::HEADER_SIGNATURE)
            .ok_or_else(|| CallbackError::BadSignature("X-SIGNATURE missing".into()))?;
        let key = self.key.as_ref().ok_or_else(|| {
            CallbackError::BadSignature("smilepayz platform public key not configured".into())
        })?;
        let message = sign::callback_string_to_sign(self.recipe, &trade_no, ts, &request.body);
        if !sign::verify(key, &message, signature) {
            return Err(CallbackError::BadSignature(
                "X-SIGNATURE does not verify with the platform key".into(),
            ));
        }
        let at = sign::parse_timestamp(ts)
            .ok_or_else(|| CallbackError::BadSignature("X-TIMESTAMP unreadable".into()))?;
        if !sign::within_window(at, Utc::now(), self.max_skew_seconds) {
            return Err(CallbackError::Stale);
        }
        let order_no = text(&body, "orderNo").ok_or_else(|| malformed("orderNo is missing"))?;
        if !is_id(&order_no, 64) {
            return Err(malformed("orderNo is not an identifier"));
        }
        let status = text(&body, "status")
            .ok_or_else(|| malformed("status is missing"))?
            .to_ascii_uppercase();
        if status.len() > 24 || !status.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') {
            return Err(malformed("status is not a status"));
        }
        let claimed = codes::classify_callback(&status);
        // Masked whole before it is cut: a secret the cut splits is no
        // longer found whole, and its first part would be stored.
        let raw = self.masker.mask(&String::from_utf8_lossy(&request.body));
        let dedupe_key = dedupe_key(&trade_no, &status, &order_no);
        Ok(ParsedCallback {
            provider_reference: order_no,
            provider_trace: trade_no.clone(),
            provider_code: status.clone(),
            serial_number: String::new(),
            claimed_outcome: claimed,
            // The body is not covered by the signature: confirm by inquiry.
            verified: false,
            // Unverified: only the inquiry's amount counts.
            provider_amount: None,
            provider_amount_unreadable: None,
            raw_masked: clip(&raw, MAX_RAW_CHARS).to_string(),
            dedupe_key,
        }
        .masked(&self.masker))
    }
}

/// Retries of one callback share this key: `tradeNo:STATUS` (spec §7), then
/// the `orderNo`. Only the tradeNo is signed, so a captured signature replayed
/// with another orderNo must not share the genuine callback's key: its event
/// (about no transaction of ours) would make the genuine one a duplicate.
/// Neither tradeNo nor the status holds a `:`, so the key reads one way only.
pub fn dedupe_key(trade_no: &str, status: &str, order_no: &str) -> String {
    format!("{trade_no}:{}:{order_no}", status.to_ascii_uppercase())
}

impl CallbackParser for SmilepayzCallbacks {
    fn provider(&self) -> Provider {
        Provider::Smilepayz
    }

    fn parse(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        let result = self.parse_inner(request);
        let label = match &result {
            Ok(_) => "ok",
            Err(CallbackError::BadSignature(_) | CallbackError::BadToken(_)) => "bad_signature",
            Err(CallbackError::Stale) => "stale",
            Err(CallbackError::Malformed(_)) => "malformed",
        };
        metrics::counter!(crate::metrics::CALLBACKS, "result" => label).increment(1);
        result
    }

    fn acknowledge(&self, _request: &CallbackRequest, _parsed: &ParsedCallback) -> CallbackReply {
        CallbackReply {
            status: 200,
            content_type: "text/plain",
            body: wire::CALLBACK_ACK.to_string(),
        }
    }

    fn reject(&self, _request: &CallbackRequest, error: &CallbackError) -> CallbackReply {
        let (status, body) = match error {
            CallbackError::BadSignature(_) | CallbackError::BadToken(_) => {
                (401, "INVALID_SIGNATURE")
            }
            CallbackError::Stale => (400, "STALE_TIMESTAMP"),
            CallbackError::Malformed(_) => (400, "BAD_REQUEST"),
        };
        CallbackReply {
            status,
            content_type: "text/plain",
            body: body.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::TimestampStyle;
    use bytes::Bytes;
    use loket_protocol::Outcome;

    struct Keys {
        private: rsa::RsaPrivateKey,
        public_pem: String,
    }

    fn keys() -> Keys {
        let (private_pem, public_pem) = sign::generate_key_pair();
        Keys {
            private: sign::load_private_key(&private_pem).unwrap(),
            public_pem,
        }
    }

    fn body(status: &str) -> Vec<u8> {
        format!(r#"{{"orderNo":"0123456789abcdef0123456789abcdef","tradeNo":"10120019240703085983730","merchantId":"20001","merchantName":"loket","paymentMethod":"QRIS","status":"{status}","money":{{"currency":"IDR","amount":150000}},"transactionTime":"2024-07-03T08:56:33"}}"#).into_bytes()
    }

    fn request(body: Vec<u8>, ts: Option<&str>, signature: Option<&str>) -> CallbackRequest {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        if let Some(ts) = ts {
            headers.insert(wire::HEADER_TIMESTAMP, ts.parse().unwrap());
        }
        if let Some(sig) = signature {
            headers.insert(wire::HEADER_SIGNATURE, sig.parse().unwrap());
        }
        CallbackRequest {
            method: http::Method::POST,
            path: CALLBACK_PATH.into(),
            query: None,
            headers,
            body: Bytes::from(body),
            source_ip: None,
        }
    }

    fn signed(keys: &Keys, status: &str, at: chrono::DateTime<Utc>) -> CallbackRequest {
        let ts = sign::timestamp(TimestampStyle::Wib, at);
        let sig = sign::sign(
            &keys.private,
            format!("10120019240703085983730|{ts}").as_bytes(),
        );
        request(body(status), Some(&ts), Some(&sig))
    }

    fn parser(keys: &Keys) -> SmilepayzCallbacks {
        callback_parser(&CallbackSettings {
            platform_public_key: keys.public_pem.clone(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_signed_callback_parses_but_is_never_verified_and_is_acknowledged_with_success() {
        let keys = keys();
        let p = parser(&keys);
        let req = signed(&keys, "SUCCESS", Utc::now());
        let parsed = p.parse(&req).unwrap();
        assert_eq!(
            parsed.provider_reference,
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(parsed.provider_trace, "10120019240703085983730");
        assert_eq!(parsed.provider_code, "SUCCESS");
        assert_eq!(parsed.claimed_outcome, Outcome::Success);
        assert!(!parsed.verified, "the body is not signed: inquiry decides");
        assert_eq!(
            parsed.dedupe_key,
            "10120019240703085983730:SUCCESS:0123456789abcdef0123456789abcdef"
        );
        let ack = p.acknowledge(&req, &parsed);
        assert_eq!((ack.status, ack.body.as_str()), (200, "SUCCESS"));
        // A retry later (new timestamp, new signature) has the same key.
        let retry = p
            .parse(&signed(
                &keys,
                "SUCCESS",
                Utc::now() + chrono::Duration::seconds(10),
            ))
            .unwrap();
        assert_eq!(retry.dedupe_key, parsed.dedupe_key);
        let expired = p.parse(&signed(&keys, "EXPIRED", Utc::now())).unwrap();
        assert_eq!(expired.claimed_outcome, Outcome::Failed);
        assert_ne!(expired.dedupe_key, parsed.dedupe_key);
        // The signature covers only tradeNo and the timestamp: the captured
        // headers replayed on a body about another order parse, but must not
        // share the genuine callback's key (its event, about no transaction
        // of ours, would make the genuine one a duplicate).
        let ts = header(&req, wire::HEADER_TIMESTAMP).unwrap().to_string();
        let sig = header(&req, wire::HEADER_SIGNATURE).unwrap().to_string();
        let replayed_body = String::from_utf8(body("SUCCESS"))
            .unwrap()
            .replace("0123456789abcdef0123456789abcdef", "FORGED-ORDER");
        let replayed = p
            .parse(&request(replayed_body.into_bytes(), Some(&ts), Some(&sig)))
            .unwrap();
        assert_ne!(replayed.dedupe_key, parsed.dedupe_key);
    }

    #[test]
    fn bad_or_missing_signatures_and_stale_timestamps_are_rejected() {
        let keys = keys();
        let p = parser(&keys);
        let good = signed(&keys, "SUCCESS", Utc::now());
        let ts = header(&good, wire::HEADER_TIMESTAMP).unwrap().to_string();
        let sig = header(&good, wire::HEADER_SIGNATURE).unwrap().to_string();

        // Missing signature / timestamp.
        for req in [
            request(body("SUCCESS"), Some(&ts), None),
            request(body("SUCCESS"), None, Some(&sig)),
        ] {
            let error = p.parse(&req).unwrap_err();
            assert!(matches!(error, CallbackError::BadSignature(_)), "{error:?}");
            let reply = p.reject(&req, &error);
            assert_eq!(reply.status, 401);
            assert_ne!(reply.body, "SUCCESS");
        }
        // The signature cut in half.
        let req = request(body("SUCCESS"), Some(&ts), Some(&sig[..sig.len() / 2]));
        let error = p.parse(&req).unwrap_err();
        assert!(matches!(error, CallbackError::BadSignature(_)), "{error:?}");
        assert_eq!(p.reject(&req, &error).status, 401);
        // Signed by another key.
        let other = keys_other();
        let forged = signed(&other, "SUCCESS", Utc::now());
        assert!(matches!(
            p.parse(&forged),
            Err(CallbackError::BadSignature(_))
        ));
        // Another tradeNo under the same signature.
        let swapped = String::from_utf8(body("SUCCESS"))
            .unwrap()
            .replace("10120019240703085983730", "10120019240703085983731");
        let req = request(swapped.into_bytes(), Some(&ts), Some(&sig));
        assert!(matches!(p.parse(&req), Err(CallbackError::BadSignature(_))));
        // Stale: correctly signed six minutes ago, or dated six minutes
        // ahead (a skewed clock).
        for minutes in [-6, 6] {
            let stale = signed(
                &keys,
                "SUCCESS",
                Utc::now() + chrono::Duration::minutes(minutes),
            );
            let error = p.parse(&stale).unwrap_err();
            assert_eq!(error, CallbackError::Stale, "{minutes} min");
            let reply = p.reject(&stale, &error);
            assert_eq!(reply.status, 400);
            assert_ne!(reply.body, "SUCCESS");
        }
        let skewed = signed(&keys, "SUCCESS", Utc::now() + chrono::Duration::minutes(4));
        assert!(
            p.parse(&skewed).is_ok(),
            "four minutes ahead is inside the window"
        );
        // Unconfigured parser refuses everything.
        let unconfigured = callback_parser(&CallbackSettings::default()).unwrap();
        assert!(matches!(
            unconfigured.parse(&good),
            Err(CallbackError::BadSignature(_))
        ));
        // Malformed.
        let req = request(b"<xml/>".to_vec(), Some(&ts), Some(&sig));
        assert!(matches!(p.parse(&req), Err(CallbackError::Malformed(_))));
    }

    #[test]
    fn a_skew_window_outside_a_second_to_an_hour_is_refused_naming_the_key() {
        for skew in [i64::MIN, -1, 0, 3_601, i64::MAX] {
            let error = callback_parser(&CallbackSettings {
                max_skew_seconds: skew,
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(error.key, "smilepayz.max_skew_seconds", "{skew}: {error}");
            assert!(error.problem.contains("between 1 and 3600"), "{error}");
        }
        for skew in [1, 300, 3_600] {
            callback_parser(&CallbackSettings {
                max_skew_seconds: skew,
                ..Default::default()
            })
            .unwrap();
        }
    }

    /// Guards against a secret the cut of the stored raw callback splits
    /// being stored in part: the configured merchant secret starting 4 bytes
    /// before the cut, in a field of a callback over the cut's length,
    /// leaves no prefix of four or more of its characters in the stored
    /// text.
    #[test]
    fn a_secret_the_raw_cut_splits_leaves_no_part_behind() {
        const SECRET: &str = "CANARY-MERCHANT-SECRET-4410";
        let keys = keys();
        let p = callback_parser(&CallbackSettings {
            platform_public_key: keys.public_pem.clone(),
            mask_secrets: vec![loket_runtime::Secret::new(SECRET)],
            ..Default::default()
        })
        .unwrap();
        let start = MAX_RAW_CHARS - 4;
        let head = String::from_utf8(body("SUCCESS")).unwrap();
        let head = format!("{},\"note\":\"", head.strip_suffix('}').unwrap());
        let padded = format!(
            "{head}{}{SECRET} echoed\"}}",
            "x".repeat(start - head.len())
        );
        assert!(padded[start..].starts_with(SECRET));
        let mut req = signed(&keys, "SUCCESS", Utc::now());
        req.body = Bytes::from(padded);
        let parsed = p.parse(&req).unwrap();
        loket_test_support::masking::assert_masked_before_cut(
            &parsed.raw_masked,
            SECRET,
            MAX_RAW_CHARS,
        );
    }

    fn keys_other() -> Keys {
        keys()
    }

    #[test]
    fn the_paynodo_recipe_covers_the_body() {
        let keys = keys();
        let p = callback_parser(&CallbackSettings {
            platform_public_key: keys.public_pem.clone(),
            recipe: CallbackRecipe::TimestampBody,
            ..Default::default()
        })
        .unwrap();
        let ts = sign::timestamp(TimestampStyle::Utc, Utc::now());
        let b = body("SUCCESS");
        let sig = sign::sign(
            &keys.private,
            &sign::callback_string_to_sign(CallbackRecipe::TimestampBody, "", &ts, &b),
        );
        assert!(p.parse(&request(b.clone(), Some(&ts), Some(&sig))).is_ok());
        let tampered = String::from_utf8(b).unwrap().replace("150000", "150001");
        assert!(matches!(
            p.parse(&request(tampered.into_bytes(), Some(&ts), Some(&sig))),
            Err(CallbackError::BadSignature(_))
        ));
    }
}
