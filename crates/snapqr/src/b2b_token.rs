//! The B2B access-token grant (service 73, spec §3 and §4.1), both sides.
//! Two parties grant tokens: an issuer grants one to us (the simulator plays
//! that issuer), and in notify mode B we grant one to the issuer (spec §4.3),
//! which then signs its notifies with it. The asking side signs its request
//! with [`signed_request`]; the granting side checks it with
//! [`check_request`].
//!
//! The tokens we grant ([`NotifyTokens`]) carry their own expiry and an
//! HMAC-SHA256 tag under a key of ours, so any callback receiver replica
//! configured with the same key accepts them without shared state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use crate::sign;
use crate::wire::Body;

/// Why a token request was refused: the answer's HTTP status, the case of
/// its `responseCode` (`<status>73<case>`) and its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub http: u16,
    pub case: u8,
    pub message: &'static str,
}

impl Refusal {
    const fn new(http: u16, case: u8, message: &'static str) -> Self {
        Refusal {
            http,
            case,
            message,
        }
    }

    /// The `responseCode`, e.g. `4017300`.
    pub fn code(&self) -> String {
        format!("{}73{:02}", self.http, self.case)
    }
}

/// A token request as the asking side sends it.
pub struct SignedRequest {
    /// `X-TIMESTAMP`, `X-CLIENT-KEY` and `X-SIGNATURE`.
    pub headers: [(&'static str, String); 3],
    /// `{"grantType":"client_credentials","additionalInfo":{}}`.
    pub body: Vec<u8>,
    /// The signature alone, for masking where the request is recorded.
    pub signature: String,
}

/// Signs a token request for `client_key` at `stamp` (the exact
/// `X-TIMESTAMP` text sent): SHA256withRSA over `clientKey|timestamp`.
pub fn signed_request(key: &RsaPrivateKey, client_key: &str, stamp: &str) -> SignedRequest {
    let signature = sign::rsa_sign(key, &sign::token_string_to_sign(client_key, stamp));
    SignedRequest {
        headers: [
            ("X-TIMESTAMP", stamp.to_string()),
            ("X-CLIENT-KEY", client_key.to_string()),
            ("X-SIGNATURE", signature.clone()),
        ],
        body: crate::wire::to_bytes(&crate::wire::TokenRequest::default()),
        signature,
    }
}

/// Checks a token request: the headers `X-TIMESTAMP`, `X-CLIENT-KEY` and
/// `X-SIGNATURE` are present, the client key is `client_key`, the timestamp
/// is accepted by `timely`, the signature is SHA256withRSA over
/// `clientKey|timestamp` by the holder of `key`, and the body asks for
/// `client_credentials`. `header` looks a request header up by name.
pub fn check_request<'h>(
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    client_key: &str,
    key: Option<&RsaPublicKey>,
    timely: impl FnOnce(&str) -> bool,
) -> Result<(), Refusal> {
    let (Some(stamp), Some(presented_key), Some(signature)) = (
        header("X-TIMESTAMP"),
        header("X-CLIENT-KEY"),
        header("X-SIGNATURE"),
    ) else {
        return Err(Refusal::new(400, 2, "Invalid Mandatory Field"));
    };
    if client_key.is_empty() || presented_key != client_key || !timely(stamp) {
        return Err(Refusal::new(401, 0, "Unauthorized. Client or timestamp"));
    }
    let verified = key.is_some_and(|key| {
        sign::rsa_verify(
            key,
            &sign::token_string_to_sign(presented_key, stamp),
            signature,
        )
    });
    if !verified {
        return Err(Refusal::new(401, 0, "Unauthorized. Signature"));
    }
    let grant = Body::parse(body).ok().and_then(|b| b.str("grantType"));
    if grant.as_deref() != Some("client_credentials") {
        return Err(Refusal::new(400, 1, "Invalid Field Format grantType"));
    }
    Ok(())
}

/// Grants and checks the access tokens an issuer signs its mode-B notifies
/// with: `base64url(expiry seconds ‖ HMAC-SHA256(key, label ‖ expiry))`.
#[derive(Clone)]
pub struct NotifyTokens {
    key: Vec<u8>,
    ttl: chrono::Duration,
}

const TAG_LABEL: &[u8] = b"loket-snapqr-notify-token-v1";
const EXPIRY_BYTES: usize = 8;
const TAG_BYTES: usize = 32;

impl NotifyTokens {
    /// `key` empty: a random key of this process (tokens are then accepted
    /// only by the replica that granted them). `ttl_secs` is meant to be
    /// validated ([`crate::NotifySettings::validate`]: a minute to a day);
    /// one beyond chrono's range saturates instead of panicking.
    pub fn new(key: &[u8], ttl_secs: u64) -> Self {
        let key = if key.is_empty() {
            use rand::RngCore as _;
            let mut random = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut random);
            random
        } else {
            key.to_vec()
        };
        NotifyTokens {
            key,
            ttl: i64::try_from(ttl_secs)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    /// How long a granted token is valid, in seconds (`expiresIn`).
    pub fn ttl_secs(&self) -> i64 {
        self.ttl.num_seconds()
    }

    fn tag(&self, expiry: [u8; EXPIRY_BYTES]) -> [u8; TAG_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(TAG_LABEL);
        mac.update(&expiry);
        mac.finalize().into_bytes().into()
    }

    /// A token valid until `now` plus the validity.
    pub fn grant(&self, now: DateTime<Utc>) -> String {
        let expiry = now
            .checked_add_signed(self.ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .timestamp()
            .to_be_bytes();
        let mut token = expiry.to_vec();
        token.extend_from_slice(&self.tag(expiry));
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Whether `token` was granted with this key and is still valid at `now`.
    pub fn check(&self, token: &str, now: DateTime<Utc>) -> Result<(), &'static str> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .filter(|bytes| bytes.len() == EXPIRY_BYTES + TAG_BYTES)
            .ok_or("access token not granted by us")?;
        let (expiry, tag) = bytes.split_at(EXPIRY_BYTES);
        let expiry: [u8; EXPIRY_BYTES] = expiry.try_into().expect("split at its length");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(TAG_LABEL);
        mac.update(&expiry);
        mac.verify_slice(tag)
            .map_err(|_| "access token not granted by us")?;
        if i64::from_be_bytes(expiry) <= now.timestamp() {
            return Err("access token expired");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::format_timestamp;
    use crate::settings::TimestampFormat;

    #[test]
    fn granted_tokens_verify_until_they_expire_and_only_under_their_key() {
        let tokens = NotifyTokens::new(b"receiver-token-key", 900);
        let now = Utc::now();
        let token = tokens.grant(now);
        assert_eq!(tokens.check(&token, now), Ok(()));
        assert_eq!(
            tokens.check(&token, now + chrono::Duration::seconds(899)),
            Ok(())
        );
        assert_eq!(
            tokens.check(&token, now + chrono::Duration::seconds(900)),
            Err("access token expired")
        );
        let other = NotifyTokens::new(b"another-key", 900);
        assert!(other.check(&token, now).is_err());
        // A replica with the same key accepts it; a random key accepts none.
        assert_eq!(
            NotifyTokens::new(b"receiver-token-key", 60).check(&token, now),
            Ok(())
        );
        assert!(NotifyTokens::new(b"", 900).check(&token, now).is_err());
        // A longer validity written into the token breaks its tag.
        let mut forged = URL_SAFE_NO_PAD.decode(&token).unwrap();
        forged[7] = forged[7].wrapping_add(1);
        assert!(tokens.check(&URL_SAFE_NO_PAD.encode(forged), now).is_err());
        for junk in ["", "tok-1", "!!!", &token[..token.len() - 2]] {
            assert!(tokens.check(junk, now).is_err(), "{junk}");
        }
    }

    #[test]
    fn a_validity_beyond_chronos_range_saturates_instead_of_panicking() {
        let now = Utc::now();
        for ttl in [10u64.pow(17), i64::MAX as u64, u64::MAX] {
            let tokens = NotifyTokens::new(b"receiver-token-key", ttl);
            let token = tokens.grant(now);
            assert_eq!(tokens.check(&token, now), Ok(()), "{ttl}");
        }
    }

    #[test]
    fn token_requests_are_checked_field_by_field() {
        let (pem, public_pem) = sign::generate_key_pair();
        let private = sign::load_private_key(&pem).unwrap();
        let public = sign::load_public_key(&public_pem).unwrap();
        let stamp = format_timestamp(TimestampFormat::Offset, Utc::now());
        let signed = signed_request(&private, "ISSUER-1", &stamp);
        let signature = signed.signature.clone();
        let body = signed.body.as_slice();
        let headers = |drop: &str, client: &str| {
            let all = [
                ("X-TIMESTAMP", stamp.clone()),
                ("X-CLIENT-KEY", client.to_string()),
                ("X-SIGNATURE", signature.clone()),
            ];
            all.into_iter()
                .filter(|(name, _)| *name != drop)
                .collect::<Vec<_>>()
        };
        let check = |headers: &[(&str, String)], body: &[u8], key: Option<&RsaPublicKey>| {
            check_request(
                |name| {
                    headers
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.as_str())
                },
                body,
                "ISSUER-1",
                key,
                |_| true,
            )
            .map_err(|refusal| refusal.code())
        };
        assert_eq!(check(&headers("", "ISSUER-1"), body, Some(&public)), Ok(()));
        for drop in ["X-TIMESTAMP", "X-CLIENT-KEY", "X-SIGNATURE"] {
            assert_eq!(
                check(&headers(drop, "ISSUER-1"), body, Some(&public)),
                Err("4007302".into()),
                "{drop}"
            );
        }
        assert_eq!(
            check(&headers("", "SOMEONE-ELSE"), body, Some(&public)),
            Err("4017300".into())
        );
        let (_, other_public) = sign::generate_key_pair();
        let other = sign::load_public_key(&other_public).unwrap();
        assert_eq!(
            check(&headers("", "ISSUER-1"), body, Some(&other)),
            Err("4017300".into())
        );
        assert_eq!(
            check(&headers("", "ISSUER-1"), body, None),
            Err("4017300".into())
        );
        assert_eq!(
            check(
                &headers("", "ISSUER-1"),
                br#"{"grantType":"password"}"#,
                Some(&public)
            ),
            Err("4007301".into())
        );
        let stale = check_request(
            |name| match name {
                "X-TIMESTAMP" => Some(stamp.as_str()),
                "X-CLIENT-KEY" => Some("ISSUER-1"),
                "X-SIGNATURE" => Some(signature.as_str()),
                _ => None,
            },
            body,
            "ISSUER-1",
            Some(&public),
            |_| false,
        );
        assert_eq!(stale.map_err(|r| r.code()), Err("4017300".into()));
    }
}
