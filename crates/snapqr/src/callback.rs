//! Notify (79), issuer → us, arriving at the callback receiver on
//! `POST /callback/snapqr`. The signature is verified over the path exactly
//! as the issuer sent it (a reverse proxy that rewrites the path breaks
//! verification, spec §4.3), in the mode the settings select:
//!
//! - **mode A** ([`NotifyMode::Rsa`]): SHA256withRSA by the issuer over
//!   `POST:path:lowerhex(sha256(minify(body))):X-TIMESTAMP`, verified with the
//!   issuer's public key;
//! - **mode B** ([`NotifyMode::Hmac`]): `Authorization: Bearer <token we
//!   granted>` and HMAC-SHA512 over `POST:path:token:hash:X-TIMESTAMP` with the
//!   secret we issued. The issuer gets the token from our
//!   `/{version}/access-token/b2b` ([`SnapQrCallbacks::grant_token`]), signing
//!   `clientKey|X-TIMESTAMP` with its RSA key; a token we did not grant, or
//!   one past its `expiresIn`, is refused ([`crate::b2b_token`]).
//!
//! The body is hashed from its exact bytes (whitespace outside strings
//! removed); only if that fails is an order-preserving re-serialization tried
//! (spec §4.3 fallback). A missing or wrong signature is
//! [`CallbackError::BadSignature`], a missing, unknown or expired mode-B
//! token [`CallbackError::BadToken`] (`4017901`); a verified notify whose `X-TIMESTAMP` is
//! outside the window (default ±5 min) is [`CallbackError::Stale`] (a
//! replay). A notify that verifies is `verified: true`: its
//! `latestTransactionStatus` may set the final state. Retries of the same
//! notify share the dedupe key of (`originalPartnerReferenceNo`,
//! `latestTransactionStatus`) (spec §2.5).

use std::fmt;

use chrono::{DateTime, Utc};
use loket_connector::mask::Masker;
use loket_connector::report::clip;
use loket_connector::{
    CallbackError, CallbackParser, CallbackReply, CallbackRequest, ParsedCallback, Refusal,
};
use loket_protocol::catalogue;
use loket_protocol::{Outcome, Provider};
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};

use crate::b2b_token::{self, NotifyTokens};
use crate::settings::{NotifyMode, NotifySettings};
use crate::sign::{self, KeyError};
use crate::wire::Body;

/// Bodies larger than this are refused.
pub const MAX_NOTIFY_BYTES: usize = 64 * 1024;
/// The raw notify kept for the event log is cut to this many characters
/// (at most 64 KiB), once masked.
pub const MAX_RAW_CHARS: usize = 16 * 1024;
/// The path the callback receiver serves SNAP notifies on.
pub const NOTIFY_PATH: &str = "/callback/snapqr";

/// The settings cannot produce a parser (never contains a key).
#[derive(Debug, thiserror::Error)]
pub enum NotifySetupError {
    #[error("snapqr notify issuer_public_key: {0}")]
    Key(#[from] KeyError),
    #[error("snapqr merchant_id: required to check the merchantId of the notifies an issuer key or client secret can verify")]
    NoMerchantId,
    /// A window that cannot work (`snapqr.max_skew_secs`,
    /// `snapqr.token_ttl_secs`), [`NotifySettings::validate`].
    #[error(transparent)]
    Setting(#[from] crate::settings::InvalidSetting),
}

/// Verifies and parses SNAP notifies for the callback receiver.
#[derive(Clone)]
pub struct SnapQrCallbacks {
    settings: NotifySettings,
    issuer_key: Option<RsaPublicKey>,
    tokens: NotifyTokens,
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
/// unverifiable; a skew window or token validity that cannot work is an
/// error naming its key.
pub fn callback_parser(settings: &NotifySettings) -> Result<SnapQrCallbacks, NotifySetupError> {
    settings.validate()?;
    let can_verify = !settings.issuer_public_key.is_empty() || !settings.client_secret.is_empty();
    if can_verify && settings.merchant_id.trim().is_empty() {
        return Err(NotifySetupError::NoMerchantId);
    }
    let issuer_key = if settings.issuer_public_key.is_empty() {
        None
    } else {
        Some(sign::load_public_key(settings.issuer_public_key.expose())?)
    };
    let secrets: Vec<String> = [&settings.client_secret, &settings.token_key]
        .into_iter()
        .map(|secret| secret.expose().to_string())
        .collect();
    Ok(SnapQrCallbacks {
        settings: settings.clone(),
        issuer_key,
        tokens: NotifyTokens::new(
            settings.token_key.expose().as_bytes(),
            settings.token_ttl_secs,
        ),
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

    fn verify(
        &self,
        request: &CallbackRequest,
        stamp: &str,
        now: DateTime<Utc>,
    ) -> Result<(), CallbackError> {
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
                    .ok_or_else(|| {
                        CallbackError::BadToken("Authorization bearer token missing".into())
                    })?;
                self.tokens
                    .check(token, now)
                    .map_err(|why| CallbackError::BadToken(why.into()))?;
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
        self.verify(request, stamp, now)?;
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
        let merchant = body
            .str("merchantId")
            .ok_or_else(|| malformed("merchantId is missing"))?;
        if merchant != self.settings.merchant_id.trim() {
            return Err(malformed(
                "merchantId is not ours: the notify is about another merchant's payment",
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
        // The issuer signed this notify: an amount that cannot be read (a
        // fraction of a rupiah, not a number) does not void the status it
        // reports; the reconciler flags the amount (rule 8).
        let (provider_amount, provider_amount_unreadable) = match body.money("amount") {
            Ok(amount) => (amount, None),
            Err(error) => (
                None,
                // Masked before it is cut, so no part of a secret is left.
                Some(clip(&self.masker.mask(&format!("amount: {error}")), 200).to_string()),
            ),
        };
        let claimed_outcome = match catalogue::explain_qr_status(&status) {
            Ok(explanation) if status != "07" => explanation.outcome,
            _ => Outcome::Unknown,
        };
        // Masked whole before it is cut: a secret the cut splits is no
        // longer found whole, and its first part would be stored.
        let raw = self.masker.mask(&String::from_utf8_lossy(&request.body));
        Ok(ParsedCallback {
            dedupe_key: dedupe_key(&reference, &status),
            provider_reference: reference,
            provider_trace: trace,
            provider_code: status,
            serial_number: String::new(),
            claimed_outcome,
            verified: true,
            provider_amount,
            provider_amount_unreadable,
            raw_masked: clip(&raw, MAX_RAW_CHARS).to_string(),
        }
        .masked(&self.masker))
    }

    /// Our `/{version}/access-token/b2b` in notify mode B (spec §4.3): the
    /// issuer's token request is checked like any B2B grant (its
    /// `X-CLIENT-KEY`, the timestamp window, SHA256withRSA by the issuer's key)
    /// and answered with an access token it signs its notifies with. `None`
    /// in mode A, where we grant nothing.
    pub fn grant_token_at(
        &self,
        request: &CallbackRequest,
        now: DateTime<Utc>,
    ) -> Option<CallbackReply> {
        if self.settings.mode != NotifyMode::Hmac {
            return None;
        }
        let timely = |stamp: &str| {
            DateTime::parse_from_rfc3339(stamp).is_ok_and(|at| {
                (now - at.with_timezone(&Utc)).num_seconds().unsigned_abs()
                    <= self.settings.max_skew_secs
            })
        };
        let checked = if request.method == http::Method::POST {
            b2b_token::check_request(
                |name| header(request, name),
                &request.body,
                &self.settings.issuer_client_key,
                self.issuer_key.as_ref(),
                timely,
            )
        } else {
            Err(b2b_token::Refusal {
                http: 400,
                case: 0,
                message: "Bad Request",
            })
        };
        let result = if checked.is_ok() {
            "granted"
        } else {
            "refused"
        };
        metrics::counter!(crate::metrics::NOTIFY_TOKENS, "result" => result).increment(1);
        Some(match checked {
            Ok(()) => CallbackReply {
                status: 200,
                content_type: "application/json",
                body: serde_json::json!({
                    "responseCode": "2007300",
                    "responseMessage": "Successful",
                    "accessToken": self.tokens.grant(now),
                    "tokenType": "Bearer",
                    "expiresIn": self.tokens.ttl_secs().to_string(),
                })
                .to_string(),
            },
            Err(refusal) => json_reply(refusal.http, &refusal.code(), refusal.message),
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
                Err(CallbackError::BadToken(_)) => "bad_token",
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

    fn grant_token(&self, request: &CallbackRequest) -> Option<CallbackReply> {
        self.grant_token_at(request, Utc::now())
    }

    fn reject(&self, _request: &CallbackRequest, error: &CallbackError) -> CallbackReply {
        match error {
            CallbackError::BadSignature(_) => json_reply(401, "4017900", "Unauthorized. Signature"),
            // Spec §6: 401xx01 is the code an issuer refreshes its token on.
            CallbackError::BadToken(_) => json_reply(401, "4017901", "Invalid Token (B2B)"),
            CallbackError::Stale => json_reply(
                401,
                "4017900",
                "Unauthorized. Timestamp outside the accepted window",
            ),
            CallbackError::Malformed(_) => json_reply(400, "4007900", "Bad Request"),
        }
    }

    /// SNAP answers in its own JSON form (spec §5) even when the receiver
    /// refuses a notify before reading it. A refused source is an
    /// authentication failure (401xx00), an oversized or broken body a bad
    /// request (400xx00), and a notify that could not be made durable an
    /// internal error (500xx01), which the issuer retries.
    fn refuse(&self, refusal: Refusal) -> CallbackReply {
        match refusal {
            Refusal::Forbidden => json_reply(401, "4017900", "Unauthorized. Source address"),
            Refusal::TooLarge => json_reply(400, "4007900", "Bad Request. Body too large"),
            Refusal::Unreadable => json_reply(400, "4007900", "Bad Request"),
            Refusal::Unavailable => json_reply(500, "5007901", "Internal Server Error"),
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

/// Builds a signed notify the way an issuer does in mode B, for simulators
/// and tests: HMAC-SHA512 with `client_secret` (the secret we issued) over
/// `token` (the access token we granted); returns the headers to send with
/// `body` to `path`.
pub fn sign_notify_hmac(
    client_secret: &str,
    token: &str,
    path: &str,
    body: &[u8],
    timestamp: &str,
) -> Vec<(String, String)> {
    let signature = sign::hmac_signature(
        client_secret,
        &sign::transaction_string_to_sign("POST", path, token, body, timestamp),
    );
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("X-TIMESTAMP".into(), timestamp.to_string()),
        ("X-SIGNATURE".into(), signature),
        ("Authorization".into(), format!("Bearer {token}")),
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
            merchant_id: "M1".into(),
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
        // An amount that cannot be read does not void the signed status: it
        // is reported unreadable, for the reconciler to flag.
        for value in ["ten", "10000.50"] {
            let bad_amount =
                BODY.replace(r#""value":"10000.00""#, &format!(r#""value":"{value}""#));
            let headers4 =
                sign_notify_rsa(&keys.private, NOTIFY_PATH, bad_amount.as_bytes(), &stamp);
            let parsed = parser
                .parse_at(&request(&headers4, &bad_amount), now)
                .unwrap();
            assert_eq!(parsed.claimed_outcome, Outcome::Success, "{value}");
            assert_eq!(parsed.provider_amount, None, "{value}");
            assert!(
                parsed
                    .provider_amount_unreadable
                    .as_deref()
                    .is_some_and(|why| why.starts_with("amount")),
                "{value}: {parsed:?}"
            );
        }
    }

    /// Guards against a secret the cut of the stored raw notify splits
    /// being stored in part: the client secret starting 4 bytes before the
    /// cut, in a field of a signed notify over the cut's length, leaves no
    /// prefix of four or more of its characters in the stored text.
    #[test]
    fn a_secret_the_raw_cut_splits_leaves_no_part_behind() {
        const SECRET: &str = "CANARY-CLIENT-SECRET-3350";
        let keys = keys();
        let parser = callback_parser(&NotifySettings {
            issuer_public_key: Secret::new(keys.public_pem.clone()),
            merchant_id: "M1".into(),
            client_secret: Secret::new(SECRET),
            ..NotifySettings::default()
        })
        .unwrap();
        let start = MAX_RAW_CHARS - 4;
        let head = format!("{},\"note\":\"", BODY.strip_suffix('}').unwrap());
        let body = format!(
            "{head}{}{SECRET} echoed\"}}",
            "x".repeat(start - head.len())
        );
        assert!(body[start..].starts_with(SECRET));
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, body.as_bytes(), &stamp);
        let parsed = parser.parse_at(&request(&headers, &body), now).unwrap();
        loket_test_support::masking::assert_masked_before_cut(
            &parsed.raw_masked,
            SECRET,
            MAX_RAW_CHARS,
        );
    }

    #[test]
    fn a_signed_notify_about_another_merchant_or_none_is_refused_400() {
        let keys = keys();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let parser = parser(&keys);
        for body in [
            BODY.replace(r#""merchantId":"M1""#, r#""merchantId":"M2""#),
            BODY.replace(r#""merchantId":"M1","#, ""),
            BODY.replace(r#""merchantId":"M1""#, r#""merchantId":"""#),
        ] {
            let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, body.as_bytes(), &stamp);
            let error = parser.parse_at(&request(&headers, &body), now).unwrap_err();
            assert!(
                matches!(&error, CallbackError::Malformed(why) if why.contains("merchantId")),
                "{body}: {error}"
            );
            let reply = parser.reject(&request(&headers, &body), &error);
            assert_eq!(reply.status, 400, "{}", reply.body);
            assert!(reply.body.contains("4007900"), "{}", reply.body);
        }
    }

    #[test]
    fn a_parser_that_can_verify_needs_our_merchant_id() {
        let keys = keys();
        for settings in [
            NotifySettings {
                issuer_public_key: Secret::new(keys.public_pem.clone()),
                ..NotifySettings::default()
            },
            NotifySettings {
                merchant_id: " ".into(),
                ..mode_b(&keys)
            },
        ] {
            let error = callback_parser(&settings).unwrap_err();
            assert!(error.to_string().contains("merchant_id"), "{error}");
        }
        // Nothing configured: a parser that refuses every notify, no id needed.
        assert!(callback_parser(&NotifySettings::default()).is_ok());
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
        // The signature cut in half.
        let truncated: Vec<_> = good
            .iter()
            .map(|(name, value)| {
                let value = if name == "X-SIGNATURE" {
                    value[..value.len() / 2].to_string()
                } else {
                    value.clone()
                };
                (name.clone(), value)
            })
            .collect();
        let error = parser
            .parse_at(&request(&truncated, BODY), now)
            .unwrap_err();
        assert!(matches!(error, CallbackError::BadSignature(_)), "{error:?}");
        assert_eq!(
            parser.reject(&request(&truncated, BODY), &error).status,
            401
        );
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
        let parser = parser(&keys);
        // Six minutes old, or dated six minutes ahead (a skewed clock).
        for minutes in [-6, 6] {
            let then = Utc::now() + chrono::Duration::minutes(minutes);
            let stamp = format_timestamp(TimestampFormat::Offset, then);
            let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
            let error = parser
                .parse_at(&request(&headers, BODY), Utc::now())
                .unwrap_err();
            assert_eq!(error, CallbackError::Stale, "{minutes} min");
            assert_eq!(parser.reject(&request(&headers, BODY), &error).status, 401);
        }
        // Four minutes off either way is inside the window.
        for minutes in [-4, 4] {
            let then = Utc::now() + chrono::Duration::minutes(minutes);
            let stamp = format_timestamp(TimestampFormat::Offset, then);
            let headers = sign_notify_rsa(&keys.private, NOTIFY_PATH, BODY.as_bytes(), &stamp);
            assert!(
                parser
                    .parse_at(&request(&headers, BODY), Utc::now())
                    .is_ok(),
                "{minutes} min"
            );
        }
    }

    /// Mode B settings: the issuer's key verifies its token requests.
    fn mode_b(keys: &Keys) -> NotifySettings {
        NotifySettings {
            mode: NotifyMode::Hmac,
            issuer_public_key: Secret::new(keys.public_pem.clone()),
            client_secret: Secret::new("issued-secret"),
            issuer_client_key: "ISSUER-1".into(),
            token_key: Secret::new("receiver-token-key"),
            merchant_id: "M1".into(),
            ..NotifySettings::default()
        }
    }

    /// A token request as the issuer sends it, signed with `key`.
    fn token_request(key: &rsa::RsaPrivateKey, client_key: &str, stamp: &str) -> CallbackRequest {
        let signed = b2b_token::signed_request(key, client_key, stamp);
        let headers: Vec<(String, String)> = signed
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect();
        let mut request = request(&headers, &String::from_utf8(signed.body).unwrap());
        request.path = "/v1.0/access-token/b2b".into();
        request
    }

    fn granted_token(reply: &CallbackReply) -> String {
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["responseCode"], "2007300", "{}", reply.body);
        assert_eq!(body["tokenType"], "Bearer");
        assert_eq!(body["expiresIn"], "900");
        body["accessToken"].as_str().unwrap().to_string()
    }

    #[test]
    fn mode_b_grants_tokens_to_the_issuer_and_verifies_notifies_signed_with_them() {
        let keys = keys();
        let parser = callback_parser(&mode_b(&keys)).unwrap();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let reply = parser
            .grant_token_at(&token_request(&keys.private, "ISSUER-1", &stamp), now)
            .expect("mode B grants tokens");
        assert_eq!(reply.status, 200);
        let token = granted_token(&reply);

        let sign_with = |token: &str, secret: &str, stamp: &str| {
            sign_notify_hmac(secret, token, NOTIFY_PATH, BODY.as_bytes(), stamp)
        };
        let parsed = parser
            .parse_at(
                &request(&sign_with(&token, "issued-secret", &stamp), BODY),
                now,
            )
            .unwrap();
        assert!(parsed.verified);
        // The wrong secret is refused as a signature (4017900); a token we
        // never granted, and ours once it has expired, as a token
        // (4017901, spec §6: the code an issuer signs in again on).
        let signed = request(&sign_with(&token, "wrong", &stamp), BODY);
        let error = parser.parse_at(&signed, now).unwrap_err();
        assert!(matches!(error, CallbackError::BadSignature(_)), "{error:?}");
        assert!(parser.reject(&signed, &error).body.contains("4017900"));
        let later = now + chrono::Duration::seconds(901);
        let later_stamp = format_timestamp(TimestampFormat::Offset, later);
        for (signed, at) in [
            (
                request(&sign_with("tok-1", "issued-secret", &stamp), BODY),
                now,
            ),
            (
                request(&sign_with(&token, "issued-secret", &later_stamp), BODY),
                later,
            ),
        ] {
            let error = parser.parse_at(&signed, at).unwrap_err();
            assert!(matches!(error, CallbackError::BadToken(_)), "{error:?}");
            let reply = parser.reject(&signed, &error);
            assert_eq!(reply.status, 401);
            assert!(reply.body.contains("4017901"), "{}", reply.body);
        }
        // A replica with the same token key accepts the token.
        let replica = callback_parser(&mode_b(&keys)).unwrap();
        assert!(replica
            .parse_at(
                &request(&sign_with(&token, "issued-secret", &stamp), BODY),
                now
            )
            .is_ok());
    }

    #[test]
    fn skew_windows_and_token_validities_that_cannot_work_are_refused_naming_the_key() {
        let keys = keys();
        let with = |max_skew_secs, token_ttl_secs| NotifySettings {
            max_skew_secs,
            token_ttl_secs,
            ..mode_b(&keys)
        };
        // 0 refuses every notify; the huge values used to panic at grant
        // ("TimeDelta::seconds out of bounds") or open a replay window of
        // years.
        for (settings, key) in [
            (with(0, 900), "snapqr.max_skew_secs"),
            (with(3_601, 900), "snapqr.max_skew_secs"),
            (with(u64::MAX, 900), "snapqr.max_skew_secs"),
            (with(300, 0), "snapqr.token_ttl_secs"),
            (with(300, 59), "snapqr.token_ttl_secs"),
            (with(300, 86_401), "snapqr.token_ttl_secs"),
            (with(300, 10u64.pow(17)), "snapqr.token_ttl_secs"),
            (with(300, u64::MAX), "snapqr.token_ttl_secs"),
        ] {
            let error = callback_parser(&settings).unwrap_err();
            let NotifySetupError::Setting(setting) = &error else {
                panic!("{error}");
            };
            assert_eq!(setting.key, key, "{error}");
            assert!(setting.problem.contains("must be between"), "{error}");
            assert!(!error.to_string().contains("issued-secret"), "{error}");
        }
        // The bounds themselves; the mode A default is checked alike.
        for (skew, ttl) in [(1, 60), (3_600, 86_400)] {
            let parser = callback_parser(&with(skew, ttl)).unwrap();
            let now = Utc::now();
            let stamp = format_timestamp(TimestampFormat::Offset, now);
            let reply = parser
                .grant_token_at(&token_request(&keys.private, "ISSUER-1", &stamp), now)
                .unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
        let error = callback_parser(&NotifySettings {
            max_skew_secs: 0,
            ..NotifySettings::default()
        })
        .unwrap_err();
        assert!(
            error.to_string().contains("snapqr.max_skew_secs"),
            "{error}"
        );
    }

    #[test]
    fn token_requests_from_anyone_but_the_issuer_are_refused() {
        let keys = keys();
        let parser = callback_parser(&mode_b(&keys)).unwrap();
        let now = Utc::now();
        let stamp = format_timestamp(TimestampFormat::Offset, now);
        let (other_pem, _) = sign::generate_key_pair();
        let other = sign::load_private_key(&other_pem).unwrap();
        let stale = format_timestamp(TimestampFormat::Offset, now - chrono::Duration::minutes(6));
        for (request, code) in [
            (token_request(&other, "ISSUER-1", &stamp), "4017300"),
            (token_request(&keys.private, "ISSUER-2", &stamp), "4017300"),
            (token_request(&keys.private, "ISSUER-1", &stale), "4017300"),
        ] {
            let reply = parser.grant_token_at(&request, now).unwrap();
            assert_eq!(reply.status, 401, "{}", reply.body);
            assert!(reply.body.contains(code), "{}", reply.body);
            assert!(!reply.body.contains("accessToken"), "{}", reply.body);
        }
        let mut get = token_request(&keys.private, "ISSUER-1", &stamp);
        get.method = http::Method::GET;
        assert_eq!(parser.grant_token_at(&get, now).unwrap().status, 400);
        // Mode A grants nothing: the receiver answers 404.
        let mode_a = callback_parser(&NotifySettings {
            issuer_public_key: Secret::new(keys.public_pem.clone()),
            merchant_id: "M1".into(),
            ..NotifySettings::default()
        })
        .unwrap();
        assert!(mode_a
            .grant_token_at(&token_request(&keys.private, "ISSUER-1", &stamp), now)
            .is_none());
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
