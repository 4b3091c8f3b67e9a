//! Notify (79), issuer → us, arriving at the callback receiver on
//! `POST /callback/snapqr`. The signature is verified over the path exactly
//! as the issuer sent it (a reverse proxy that rewrites the path breaks
//! verification, spec §4.3), in the mode the settings select:
//!
//! - **mode A** ([`NotifyMode::Rsa`]): SHA256withRSA by the issuer over
//!   `POST:path:lowerhex(sha256(minify(body))):X-TIMESTAMP`, verified with the
//!   issuer's public key;
//! - **mode B** ([`NotifyMode::Hmac`]): `Authorization: Bearer <token we
//!   issued>` and HMAC-SHA512 over `POST:path:token:hash:X-TIMESTAMP` with the
//!   secret we issued.
//!
//! The body is hashed from its exact bytes (whitespace outside strings
//! removed); only if that fails is an order-preserving re-serialization tried
//! (spec §4.3 fallback). A missing or wrong signature is
//! [`CallbackError::BadSignature`]; a verified notify whose `X-TIMESTAMP` is
//! outside the window (default ±5 min) is [`CallbackError::Stale`] (a
//! replay). A notify that verifies is `verified: true`: its
//! `latestTransactionStatus` may set the final state. Retries of the same
//! notify share the dedupe key of (`originalPartnerReferenceNo`,
//! `latestTransactionStatus`) (spec §2.5).

use std::fmt;

use chrono::{DateTime, Utc};
use loket_connector::mask::Masker;
use loket_connector::{
    CallbackError, CallbackParser, CallbackReply, CallbackRequest, ParsedCallback,
};
use loket_protocol::catalogue;
use loket_protocol::{Outcome, Provider};
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};

use crate::settings::{NotifyMode, NotifySettings};
use crate::sign::{self, KeyError};
use crate::wire::Body;

/// Bodies larger than this are refused.
pub const MAX_NOTIFY_BYTES: usize = 64 * 1024;
/// The raw notify kept for the event log is cut to this many bytes.
pub const MAX_RAW_BYTES: usize = 16 * 1024;
/// The path the callback receiver serves SNAP notifies on.
pub const NOTIFY_PATH: &str = "/callback/snapqr";

/// The settings cannot produce a parser (never contains a key).
#[derive(Debug, thiserror::Error)]
pub enum NotifySetupError {
    #[error("snapqr notify issuer_public_key: {0}")]
    Key(#[from] KeyError),
}

/// Verifies and parses SNAP notifies for the callback receiver.
#[derive(Clone)]
pub struct SnapQrCallbacks {
    settings: NotifySettings,
    issuer_key: Option<RsaPublicKey>,
    masker: Masker,
}

impl fmt::Debug for SnapQrCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapQrCallbacks")
            .field("mode", &self.settings.mode)
            .field("max_skew_secs", &self.settings.max_skew_secs)
            .finish_non_exhaustive()
    }
}

/// The parser the callback receiver registers for `snapqr`. Default settings
/// (nothing configured) give a parser that refuses every notify as
/// unverifiable.
pub fn callback_parser(settings: &NotifySettings) -> Result<SnapQrCallbacks, NotifySetupError> {
    let issuer_key = if settings.issuer_public_key.is_empty() {
        None
    } else {
        Some(sign::load_public_key(settings.issuer_public_key.expose())?)
    };
    let mut secrets = vec![settings.client_secret.expose().to_string()];
    secrets.extend(
        settings
            .accepted_tokens
            .iter()
            .map(|t| t.expose().to_string()),
    );
    Ok(SnapQrCallbacks {
        settings: settings.clone(),
        issuer_key,
        masker: Masker::new(secrets),
    })
}

fn header<'a>(request: &'a CallbackRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bad(why: &str) -> CallbackError {
    CallbackError::BadSignature(why.to_string())
}

fn malformed(why: &str) -> CallbackError {
    CallbackError::Malformed(why.to_string())
}

impl SnapQrCallbacks {
    fn signed_path(request: &CallbackRequest) -> String {
        match request.query.as_deref() {
            Some(query) if !query.is_empty() => format!("{}?{query}", request.path),
            _ => request.path.clone(),
        }
    }

    /// The body variants to verify: the exact bytes, then (fallback) an
    /// order-preserving re-serialization.
    fn bodies(request: &CallbackRequest) -> Vec<Vec<u8>> {
        let mut bodies = vec![request.body.to_vec()];
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&request.body) {
            if let Ok(reserialized) = serde_json::to_vec(&value) {
                if reserialized != sign::minify(&request.body) {
                    bodies.push(reserialized);
                }
            }
        }
        bodies
    }

    fn verify(&self, request: &CallbackRequest, stamp: &str) -> Result<(), CallbackError> {
        let signature = header(request, "X-SIGNATURE").ok_or_else(|| bad("X-SIGNATURE missing"))?;
        let method = request.method.as_str();
        let path = Self::signed_path(request);
        let bodies = Self::bodies(request);
        match self.settings.mode {
            NotifyMode::Rsa => {
                let key = self
                    .issuer_key
                    .as_ref()
                    .ok_or_else(|| bad("issuer public key not configured"))?;
                let ok = bodies.iter().any(|body| {
                    sign::rsa_verify(
                        key,
                        &sign::notify_string_to_sign(method, &path, body, stamp),
                        signature,
                    )
                });
                if ok {
                    Ok(())
                } else {
                    Err(bad("signature does not verify"))
                }
            }
            NotifyMode::Hmac => {
                if self.settings.client_secret.is_empty() {
                    return Err(bad("notify client secret not configured"));
                }
                let token = header(request, "Authorization")
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad("Authorization bearer token missing"))?;
                if !self.settings.accepted_tokens.is_empty()
                    && !self
                        .settings
                        .accepted_tokens
                        .iter()
                        .any(|t| t.expose() == token)
                {
                    return Err(bad("access token not issued by us"));
                }
                let secret = self.settings.client_secret.expose();
                let ok = bodies.iter().any(|body| {
                    sign::verify_hmac(
                        secret,
                        &sign::transaction_string_to_sign(method, &path, token, body, stamp),
                        signature,
                    )
                });
                if ok {
                    Ok(())
                } else {
                    Err(bad("signature does not verify"))
                }
            }
        }
    }

    fn parse_inner(
        &self,
        request: &CallbackRequest,
        now: DateTime<Utc>,
    ) -> Result<ParsedCallback, CallbackError> {
        if request.body.len() > MAX_NOTIFY_BYTES {
            return Err(malformed("notify too large"));
        }
        if request.method != http::Method::POST {
            return Err(malformed("only POST is accepted"));
        }
        let stamp = header(request, "X-TIMESTAMP").ok_or_else(|| bad("X-TIMESTAMP missing"))?;
        self.verify(request, stamp)?;
        let at =
            DateTime::parse_from_rfc3339(stamp).map_err(|_| bad("X-TIMESTAMP is not ISO-8601"))?;
        let skew = (now - at.with_timezone(&Utc)).num_seconds().unsigned_abs();
        if skew > self.settings.max_skew_secs {
            return Err(CallbackError::Stale);
        }
        let body =
            Body::parse(&request.body).map_err(|e| CallbackError::Malformed(e.to_string()))?;
        let reference = body
            .str("originalPartnerReferenceNo")
            .ok_or_else(|| malformed("originalPartnerReferenceNo is missing"))?;
        if reference.len() > 64
            || !reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(malformed(
                "originalPartnerReferenceNo is not a valid reference",
            ));
        }
        let status = body
            .str("latestTransactionStatus")
            .ok_or_else(|| malformed("latestTransactionStatus is missing"))?;
        if status.len() != 2 || !status.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed("latestTransactionStatus is not 2 digits"));
        }
        let trace = body.str("originalReferenceNo").unwrap_or_default();
        if trace.len() > 64 || trace.chars().any(char::is_control) {
            return Err(malformed("originalReferenceNo is not acceptable"));
        }
        let provider_amount = body
            .money("amount")
            .map_err(|e| CallbackError::Malformed(e.to_string()))?;
        let claimed_outcome = match catalogue::explain_qr_status(&status) {
            Ok(explanation) if status != "07" => explanation.outcome,
            _ => Outcome::Unknown,
        };
        let raw = &request.body[..request.body.len().min(MAX_RAW_BYTES)];
        Ok(ParsedCallback {
            dedupe_key: dedupe_key(&reference, &status),
            provider_reference: reference,
            provider_trace: trace,
            provider_code: status,
            serial_number: String::new(),
            claimed_outcome,
            verified: true,
            provider_amount,
            raw_masked: self.masker.mask(&String::from_utf8_lossy(raw)),
        })
    }

    /// [`CallbackParser::parse`] at a given time (tests).
    pub fn parse_at(
        &self,
        request: &CallbackRequest,
        now: DateTime<Utc>,
    ) -> Result<ParsedCallback, CallbackError> {
        let result = self.parse_inner(request, now);
        metrics::counter!(
            crate::metrics::NOTIFIES,
            "result" => match &result {
                Ok(_) => "ok",
                Err(CallbackError::Malformed(_)) => "malformed",
                Err(CallbackError::BadSignature(_)) => "bad_signature",
                Err(CallbackError::Stale) => "stale",
            }
        )
        .increment(1);
        result
    }
}

/// Retries of one notify share this key: (originalPartnerReferenceNo,
/// latestTransactionStatus), length-prefixed so no two tuples collide.
pub fn dedupe_key(reference: &str, status: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"snapqr-notify-v1");
    for part in [reference, status] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    format!("snapqr:{}", hex::encode(hasher.finalize()))
}

fn json_reply(status: u16, code: &str, message: &str) -> CallbackReply {
    CallbackReply {
        status,
        content_type: "application/json",
        body: serde_json::json!({ "responseCode": code, "responseMessage": message }).to_string(),
    }
}

impl CallbackParser for SnapQrCallbacks {
    fn provider(&self) -> Provider {
        Provider::SnapQr
    }

    fn parse(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        self.parse_at(request, Utc::now())
    }

    fn acknowledge(&self, _request: &CallbackRequest, _parsed: &ParsedCallback) -> CallbackReply {
        json_reply(200, "2007900", "Successful")
    }

    fn reject(&self, _request: &CallbackRequest, error: &CallbackError) -> CallbackReply {
        match error {
            CallbackError::BadSignature(_) => json_reply(401, "4017900", "Unauthorized. Signature"),
            CallbackError::Stale => json_reply(
                401,
                "4017900",
                "Unauthorized. Timestamp outside the accepted window",
            ),
            CallbackError::Malformed(_) => json_reply(400, "4007900", "Bad Request"),
        }
    }

    /// Spec §3: responses carry `X-TIMESTAMP` (ISO-8601 with offset, WIB).
    fn reply_headers(&self) -> Vec<(&'static str, String)> {
        vec![(
            "X-TIMESTAMP",
            crate::connector::format_timestamp(
                crate::settings::TimestampFormat::Offset,
                Utc::now(),
            ),
        )]
    }
}

/// Builds a signed notify the way an issuer does (mode A), for simulators
/// and tests: returns the headers to send with `body` to `path`.
pub fn sign_notify_rsa(
    issuer_key: &rsa::RsaPrivateKey,
    path: &str,
    body: &[u8],
    timestamp: &str,
) -> Vec<(String, String)> {
    let signature = sign::rsa_sign(
        issuer_key,
        &sign::notify_string_to_sign("POST", path, body, timestamp),
    );
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-TIMESTAMP".into(), timestamp.to_string()),
        ("X-SIGNATURE".into(), signature),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::format_timestamp;
    use crate::settings::TimestampFormat;
    use loket_runtime::Secret;

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

    const BODY: &str = r#"{"originalPartnerReferenceNo":"0123456789abcdef0123456789abcdef","originalReferenceNo":"SIMREF1","merchantId":"M1","amount":{"value":"10000.00","currency":"IDR"},"latestTransactionStatus":"00","transactionStatusDesc":"Success","additionalInfo":null}"#;

    fn request(headers: &[(String, String)], body: &str) -> CallbackRequest {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        CallbackRequest {
            method: http::Method::POST,
            path: NOTIFY_PATH.into(),
            query: None,
            headers: map,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            source_ip: None,
        }
    }

    fn parser(keys: &Keys) -> SnapQrCallbacks {
        callback_parser(&NotifySettings {
            issuer_public_key: Secret::new(keys.public_pem.clone()),
            ..NotifySettings::default()
        })
        .unwrap()
    }

    #[test]
    fn mode_a_good_signature_is_verified_and_claims_the_status() {
        let keys = keys();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
        let parser = parser(&keys);
        let parsed = parser.parse_at(&request(&headers, BODY), now).unwrap();
        assert!(parsed.verified);
        assert_eq!(parsed.claimed_outcome, Outcome::Success);
        assert_eq!(
            parsed.provider_reference,
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(parsed.provider_trace, "SIMREF1");
        assert_eq!(parsed.provider_code, "00");
        assert_eq!(
            parsed.provider_amount.map(|m| m.minor),
            Some(10_000),
            "the notified amount, for the reconciler to compare"
        );
        let ack = parser.acknowledge(&request(&headers, BODY), &parsed);
        assert_eq!(ack.status, 200);
        assert!(ack.body.contains("2007900"));
        // A duplicate (another timestamp, same status) has the same key.
        let later = now + chrono::Duration::seconds(30);
        let stamp2 = format_timestamp(TimestampFormat::Offset, later);
        let headers2 = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp2);
        let again = parser.parse_at(&request(&headers2, BODY), later).unwrap();
        assert_eq!(again.dedupe_key, parsed.dedupe_key);
        let failed_body = BODY.replace(
            r#""latestTransactionStatus":"00""#,
            r#""latestTransactionStatus":"06""#,
        );
        let headers3 = sign_notify_rsa(&keys.private, NOTIFY_PATH, failed_body.as_bytes(), &stamp);
        let failed = parser
            .parse_at(&request(&headers3, &failed_body), now)
            .unwrap();
        assert_eq!(failed.claimed_outcome, Outcome::Failed);
        assert_ne!(failed.dedupe_key, parsed.dedupe_key);
        // An amount that is not one is a malformed notify, named.
        let bad_amount = BODY.replace(r#""value":"10000.00""#, r#""value":"ten""#);
        let headers4 = sign_notify_rsa(&keys.private, NOTIFY_PATH, bad_amount.as_bytes(), &stamp);
        let error = parser
            .parse_at(&request(&headers4, &bad_amount), now)
            .unwrap_err();
        assert!(
            matches!(&error, CallbackError::Malformed(why) if why.contains("amount")),
            "{error}"
        );
    }

    #[test]
    fn bad_flipped_or_missing_signatures_are_rejected_with_401() {
        let keys = keys();
        let other = self::keys();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let parser = parser(&keys);
        // Signed by someone else.
        let headers = sign_notify_rsa(&other.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
        let error = parser.parse_at(&request(&headers, BODY), now).unwrap_err();
        assert!(matches!(error, CallbackError::BadSignature(_)), "{error:?}");
        let reply = parser.reject(&request(&headers, BODY), &error);
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("4017900"));
        // One byte of the body changed after signing.
        let good = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
        let tampered = BODY.replace("10000.00", "90000.00");
        assert!(matches!(
            parser.parse_at(&request(&good, &tampered), now),
            Err(CallbackError::BadSignature(_))
        ));
        // Another path than the one signed.
        let mut elsewhere = request(&good, BODY);
        elsewhere.path = "/callback/other".into();
        assert!(matches!(
            parser.parse_at(&elsewhere, now),
            Err(CallbackError::BadSignature(_))
        ));
        // Missing signature or timestamp.
        for drop in ["X-SIGNATURE", "X-TIMESTAMP"] {
            let headers: Vec<_> = good.iter().filter(|(n, _)| n != drop).cloned().collect();
            assert!(
                matches!(
                    parser.parse_at(&request(&headers, BODY), now),
                    Err(CallbackError::BadSignature(_))
                ),
                "{drop}"
            );
        }
        // Unconfigured parser refuses everything.
        let unconfigured = callback_parser(&NotifySettings::default()).unwrap();
        assert!(matches!(
            unconfigured.parse_at(&request(&good, BODY), now),
            Err(CallbackError::BadSignature(_))
        ));
    }

    #[test]
    fn a_replay_outside_the_window_is_stale() {
        let keys = keys();
        let then = Utc::now() - chrono::Duration::minutes(6);
        let stamp = format_timestamp(TimestampFormat::Offset, then);
        let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
        let parser = parser(&keys);
        let error = parser
            .parse_at(&request(&headers, BODY), Utc::now())
            .unwrap_err();
        assert_eq!(error, CallbackError::Stale);
        assert_eq!(parser.reject(&request(&headers, BODY), &error).status, 401);
    }

    #[test]
    fn mode_b_hmac_with_our_token_and_secret() {
        let settings = NotifySettings {
            mode: NotifyMode::Hmac,
            client_secret: Secret::new("issued-secret"),
            accepted_tokens: vec![Secret::new("tok-1")],
            ..NotifySettings::default()
        };
        let parser = callback_parser(&settings).unwrap();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let sign_with = |token: &str, secret: &str| {
            let signature = sign::hmac_signature(
                secret,
                &sign::transaction_string_to_sign(
                    "POST",
                    NOTIFY_PATH,
                    token,
                    BODY.as_bytes(),
                    &stamp,
                ),
            );
            vec![
                ("X-TIMESTAMP".to_string(), stamp.clone()),
                ("X-SIGNATURE".to_string(), signature),
                ("Authorization".to_string(), format!("Bearer {token}")),
            ]
        };
        assert!(
            parser
                .parse_at(&request(&sign_with("tok-1", "issued-secret"), BODY), now)
                .unwrap()
                .verified
        );
        assert!(matches!(
            parser.parse_at(&request(&sign_with("tok-1", "wrong"), BODY), now),
            Err(CallbackError::BadSignature(_))
        ));
        assert!(matches!(
            parser.parse_at(&request(&sign_with("tok-2", "issued-secret"), BODY), now),
            Err(CallbackError::BadSignature(_))
        ));
    }

    #[test]
    fn malformed_bodies_get_400() {
        let keys = keys();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let body = r#"{"merchantId":"M1","latestTransactionStatus":"00"}"#;
        let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, body.as_bytes(), &stamp);
        let parser = parser(&keys);
        let error = parser.parse_at(&request(&headers, body), now).unwrap_err();
        assert!(matches!(error, CallbackError::Malformed(_)));
        assert_eq!(parser.reject(&request(&headers, body), &error).status, 400);
    }
}
