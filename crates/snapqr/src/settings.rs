//! SNAP QR CPM settings: the connector's `[snapqr]` section
//! ([`SnapQrSettings`], `LOKET_SNAPQR__…`) and the notify receiver's
//! ([`NotifySettings`], used by the callback receiver through
//! [`crate::callback_parser`]). Keys and secrets are [`Secret`]s holding PEM
//! text or a file path (a value starting with `-----BEGIN` is PEM).

use loket_connector::service::{check_callback_skew, check_http_timeouts, check_provider_url};
use loket_runtime::Secret;
use serde::{Deserialize, Serialize};

use crate::sign::{self, KeyError};

/// Client timeout default (**ASSUMED**: SNAP issuers answer within ~30 s).
pub const TIMEOUT_MS_DEFAULT: u64 = 45_000;
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Refresh the B2B token this long before `expiresIn` runs out (spec §2.1).
pub const TOKEN_REFRESH_MARGIN_SECS_DEFAULT: u64 = 60;
/// Accepted clock skew of a notify's `X-TIMESTAMP` (**ASSUMED** ±5 min, §8.2).
pub const NOTIFY_MAX_SKEW_SECS_DEFAULT: u64 = 300;
/// Mode B: validity of the access tokens we grant issuers (the spec's `"900"`).
pub const NOTIFY_TOKEN_TTL_SECS_DEFAULT: u64 = 900;
/// The shortest token validity (a minute): issuers cache a token for
/// `expiresIn` minus 60 s (spec §2.1), so a shorter one is stale when granted.
pub const NOTIFY_TOKEN_TTL_SECS_MIN: u64 = 60;
/// The longest token validity (a day): a leaked token signs notifies for
/// that long, and a huge one overflows the expiry written into the token.
pub const NOTIFY_TOKEN_TTL_SECS_MAX: u64 = 86_400;
/// The shortest `payment_expiry_secs`: a minute, the spec's sample `"60"`
/// (§5), and the least the connector leaves a payer when a send is held up.
/// Under it the payer has no time to approve in the app; 0 sends every
/// payment already expired.
pub const PAYMENT_EXPIRY_SECS_MIN: u64 = 60;
/// The longest `payment_expiry_secs`: a day, the connectors' send horizon
/// ([`loket_protocol::horizon::SEND_HORIZON`]): a payment that may still be
/// paid past it could no longer be sent again unasked. Far above it the
/// expiry overflows chrono and every payment panics.
pub const PAYMENT_EXPIRY_SECS_MAX: u64 = loket_protocol::horizon::SEND_HORIZON.as_secs();
/// The sample channel id (spec §3).
pub const CHANNEL_ID_SAMPLE: &str = "95221";

/// How `X-TIMESTAMP` is written (spec §3: "some providers want `Z` or
/// milliseconds"; the exact string sent is the one signed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// `2020-12-23T07:50:11+07:00` (WIB offset, 25 chars).
    #[default]
    Offset,
    /// `2020-12-23T07:50:11.123+07:00`.
    OffsetMillis,
    /// `2020-12-23T00:50:11Z`.
    Utc,
}

/// Which notify signature the issuer uses (spec §4.3, Q1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyMode {
    /// SHA256withRSA by the issuer over `METHOD:path:hash:timestamp`.
    #[default]
    Rsa,
    /// HMAC-SHA512 as in §4.2, with a token and a secret we issued.
    Hmac,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SnapQrSettings {
    /// Scheme, host and port of the issuer alone, e.g. `https://api.issuer.co.id`
    /// (a path is refused: it belongs in `path_prefix`).
    pub base_url: String,
    /// Accept a plain `http://` base URL to a host other than this machine
    /// (a simulator elsewhere). Off: requests carry signatures and tokens.
    pub allow_plain_http: bool,
    /// The issuer's prefix before `/v1.0/…` (e.g. `/snap`); part of the signed path.
    pub path_prefix: String,
    /// `v1.0`.
    pub version: String,
    /// Our client id: `X-CLIENT-KEY` on the token call, `X-PARTNER-ID` on the others.
    pub client_key: String,
    /// HMAC key of the transaction signature (§4.2).
    pub client_secret: Secret,
    /// Our RSA private key (PKCS#8 or PKCS#1 PEM, or a path to one) for the
    /// token signature (§4.1).
    pub private_key: Secret,
    /// `CHANNEL-ID`, 5 digits issued by the provider.
    pub channel_id: String,
    pub merchant_id: String,
    /// Sent on payments, queries and cancels (59–62); spec §5 lists none
    /// for refunds (80), so they go without it.
    pub sub_merchant_id: String,
    pub timestamp_format: TimestampFormat,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub token_refresh_margin_secs: u64,
    /// `expiryTime` of a payment (60): now + this many seconds, ISO-8601
    /// (**ASSUMED**, Q3: the standard types it ISO-8601; the sample says "60").
    /// From [`PAYMENT_EXPIRY_SECS_MIN`] (a minute) to
    /// [`PAYMENT_EXPIRY_SECS_MAX`] (a day).
    pub payment_expiry_secs: u64,
    /// `Authorization-Customer` for generate (59) when a payment command has
    /// no `qr_content`. **ASSUMED**: a merchant holds no customer tokens in
    /// production; this exists for demo and test flows only. Empty = such
    /// commands fail without sending anything.
    pub demo_customer_token: Secret,
    /// SNAP has no refund query, so a refund's status check sends the refund
    /// again under the same `partnerRefundNo` (idempotent, **ASSUMED** §7).
    /// It does so at most once per this interval after the last send (the
    /// worker's send journal), and it must exceed the longest a refund may
    /// take ([`SnapQrSettings::longest_send`]: four times `timeout_ms`), so
    /// two never overlap.
    pub refund_resend_interval_ms: u64,
}

impl Default for SnapQrSettings {
    fn default() -> Self {
        SnapQrSettings {
            base_url: "http://127.0.0.1:8183".into(),
            allow_plain_http: false,
            path_prefix: "/snap".into(),
            version: "v1.0".into(),
            client_key: String::new(),
            client_secret: Secret::default(),
            private_key: Secret::default(),
            channel_id: CHANNEL_ID_SAMPLE.into(),
            merchant_id: String::new(),
            sub_merchant_id: String::new(),
            timestamp_format: TimestampFormat::Offset,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            token_refresh_margin_secs: TOKEN_REFRESH_MARGIN_SECS_DEFAULT,
            payment_expiry_secs: 300,
            demo_customer_token: Secret::default(),
            refund_resend_interval_ms: 300_000,
        }
    }
}

/// HTTP requests one call may make: a token fetch and the call, both once
/// more when the token is refused (401xx01/03).
const SENDS_PER_CALL: u64 = 4;

/// The most characters of `merchantId` (spec §5: S64).
pub const MERCHANT_ID_MAX: usize = 64;
/// The most characters of `subMerchantId` (spec §5: S32).
pub const SUB_MERCHANT_ID_MAX: usize = 32;

/// A setting that cannot work, naming its key (shared by every connector).
pub use loket_connector::service::SettingError as InvalidSetting;

impl SnapQrSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |name: &str| format!("snapqr.{name}");
        let base_url = check_provider_url(&key("base_url"), &self.base_url, self.allow_plain_http)?;
        // Spec §4.2 signs the request line's path, and only `path_prefix`
        // goes into the signed path: a path in the base URL would be sent
        // but not signed, and every call refused (4016000).
        if !matches!(base_url.path(), "" | "/") || base_url.query().is_some() {
            return Err(InvalidSetting::new(
                key("base_url"),
                "must be scheme, host and port alone: the signature covers the request path, \
                 so the issuer's path (e.g. /openapi) belongs in path_prefix",
            ));
        }
        if !self.path_prefix.is_empty() && !self.path_prefix.starts_with('/') {
            return Err(InvalidSetting::new(key("path_prefix"), "must start with /"));
        }
        if self.client_key.trim().is_empty() {
            return Err(InvalidSetting::new(key("client_key"), "must be set"));
        }
        if self.client_secret.is_empty() {
            return Err(InvalidSetting::new(
                key("client_secret"),
                "must be set (LOKET_SNAPQR__CLIENT_SECRET)",
            ));
        }
        if self.private_key.is_empty() {
            return Err(InvalidSetting::new(
                key("private_key"),
                "must be set (PEM text or a file path)",
            ));
        }
        if let Err(error) = self.load_private_key() {
            return Err(InvalidSetting::new(key("private_key"), error.to_string()));
        }
        if self.channel_id.len() != 5 || !self.channel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSetting::new(key("channel_id"), "must be 5 digits"));
        }
        if self.merchant_id.trim().is_empty() {
            return Err(InvalidSetting::new(key("merchant_id"), "must be set"));
        }
        // Spec §5 bounds both (S64, S32); the issuer refuses a longer one
        // in every request (400xx01), so every payment would fail.
        for (name, value, max) in [
            ("merchant_id", &self.merchant_id, MERCHANT_ID_MAX),
            (
                "sub_merchant_id",
                &self.sub_merchant_id,
                SUB_MERCHANT_ID_MAX,
            ),
        ] {
            let length = value.chars().count();
            if length > max {
                return Err(InvalidSetting::new(
                    key(name),
                    format!("at most {max} characters (spec §5), not {length}"),
                ));
            }
        }
        check_http_timeouts("snapqr", self.timeout_ms, self.connect_timeout_ms)?;
        if !(PAYMENT_EXPIRY_SECS_MIN..=PAYMENT_EXPIRY_SECS_MAX).contains(&self.payment_expiry_secs)
        {
            return Err(InvalidSetting::new(
                key("payment_expiry_secs"),
                format!(
                    "must be between {PAYMENT_EXPIRY_SECS_MIN} and {PAYMENT_EXPIRY_SECS_MAX} seconds \
                     (a minute, the spec's sample, to a day, the send horizon), not {}",
                    self.payment_expiry_secs
                ),
            ));
        }
        let longest_send_ms = self.timeout_ms.saturating_mul(SENDS_PER_CALL);
        if self.refund_resend_interval_ms <= longest_send_ms {
            return Err(InvalidSetting::new(
                key("refund_resend_interval_ms"),
                format!(
                    "must exceed {SENDS_PER_CALL} times snapqr.timeout_ms ({longest_send_ms} ms: a token fetch and the refund, both once more when the token is refused), so a refund sent again never overlaps the last"
                ),
            ));
        }
        Ok(())
    }

    pub fn load_private_key(&self) -> Result<rsa::RsaPrivateKey, KeyError> {
        sign::load_private_key(self.private_key.expose())
    }

    /// `/snap/v1.0/qr/qr-cpm-payment` for `service = "qr/qr-cpm-payment"`.
    pub fn path(&self, service: &str) -> String {
        format!(
            "{}/{}/{}",
            self.path_prefix.trim_end_matches('/'),
            self.version,
            service
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url.trim_end_matches('/'), path)
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    /// The longest a money-moving request is taken to be on its way after
    /// its send journal entry: room for a token fetch and the call, and both
    /// once more when the token is refused, each at most `timeout_ms`. A
    /// request held up longer before it leaves (waiting for a token behind
    /// others, QR generation ahead of a payment) is not sent.
    pub fn longest_send(&self) -> std::time::Duration {
        self.timeout() * SENDS_PER_CALL as u32
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms)
    }
}

/// What the callback receiver needs to verify notify (79). `Default` is
/// "not configured": every notify is then refused as unverifiable.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct NotifySettings {
    pub mode: NotifyMode,
    /// The issuer's RSA public key (SPKI or PKCS#1 PEM, or a path). Mode A:
    /// verifies notifies; mode B: verifies the issuer's token requests.
    pub issuer_public_key: Secret,
    /// Mode B: the secret we issued to the issuer (HMAC key).
    pub client_secret: Secret,
    /// Mode B: the `X-CLIENT-KEY` the issuer presents when it asks our
    /// `/{version}/access-token/b2b` for a token (spec §4.3).
    pub issuer_client_key: String,
    /// Mode B: the key our access tokens are tagged with. Replicas of the
    /// callback receiver that share it accept each other's tokens; empty =
    /// a random key per process (one replica only).
    pub token_key: Secret,
    /// Mode B: how long an access token we grant is valid (`expiresIn`),
    /// from a minute to a day.
    pub token_ttl_secs: u64,
    /// Accepted |now − X-TIMESTAMP|, from 1 s to an hour.
    pub max_skew_secs: u64,
    /// Our `merchantId` at the issuer (the connector's `merchant_id`): a
    /// notify naming another merchant is about a payment that is not ours,
    /// whatever its `originalPartnerReferenceNo`, and is refused. Required
    /// once notifies can be verified (an issuer key or a client secret set).
    pub merchant_id: String,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            mode: NotifyMode::Rsa,
            issuer_public_key: Secret::default(),
            client_secret: Secret::default(),
            issuer_client_key: String::new(),
            token_key: Secret::default(),
            token_ttl_secs: NOTIFY_TOKEN_TTL_SECS_DEFAULT,
            max_skew_secs: NOTIFY_MAX_SKEW_SECS_DEFAULT,
            merchant_id: String::new(),
        }
    }
}

impl NotifySettings {
    /// Checks the windows the callback receiver works with; errors name the
    /// key under `snapqr.` (the callback receiver's section).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        check_callback_skew(
            "snapqr.max_skew_secs",
            i64::try_from(self.max_skew_secs).unwrap_or(i64::MAX),
        )?;
        if !(NOTIFY_TOKEN_TTL_SECS_MIN..=NOTIFY_TOKEN_TTL_SECS_MAX).contains(&self.token_ttl_secs) {
            return Err(InvalidSetting::new(
                "snapqr.token_ttl_secs",
                format!(
                    "must be between {NOTIFY_TOKEN_TTL_SECS_MIN} and {NOTIFY_TOKEN_TTL_SECS_MAX} \
                     seconds (a minute, as issuers cache a token for expiresIn minus 60 s, \
                     to a day), not {}",
                    self.token_ttl_secs
                ),
            ));
        }
        // Settings of the other mode would be ignored, and every notify (or,
        // in mode B, every token request) refused.
        match self.mode {
            NotifyMode::Rsa if !self.issuer_client_key.trim().is_empty() => {
                return Err(InvalidSetting::new(
                    "snapqr.issuer_client_key",
                    "belongs to notify mode B, but snapqr.mode is rsa (mode A): set \
                     LOKET_SNAPQR__MODE=hmac, or leave issuer_client_key out",
                ));
            }
            NotifyMode::Hmac => {
                let missing = [
                    ("snapqr.client_secret", self.client_secret.is_empty()),
                    (
                        "snapqr.issuer_public_key",
                        self.issuer_public_key.is_empty(),
                    ),
                    (
                        "snapqr.issuer_client_key",
                        self.issuer_client_key.trim().is_empty(),
                    ),
                ];
                if let Some((key, _)) = missing.iter().find(|(_, missing)| *missing) {
                    return Err(InvalidSetting::new(
                        *key,
                        "must be set in notify mode B (snapqr.mode = hmac): the issuer gets its \
                         token with issuer_client_key and issuer_public_key, and signs notifies \
                         with client_secret",
                    ));
                }
            }
            NotifyMode::Rsa => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_include_the_prefix_and_version() {
        let settings = SnapQrSettings::default();
        assert_eq!(
            settings.path("qr/qr-cpm-payment"),
            "/snap/v1.0/qr/qr-cpm-payment"
        );
        let bare = SnapQrSettings {
            path_prefix: String::new(),
            ..SnapQrSettings::default()
        };
        assert_eq!(bare.path("access-token/b2b"), "/v1.0/access-token/b2b");
    }

    /// A receiver whose notify settings belong to the other mode, or whose
    /// mode B lacks one of its three keys, would refuse every notify (or
    /// token request): it is refused at start, naming the key.
    #[test]
    fn notify_settings_of_the_other_mode_or_half_of_mode_b_are_refused() {
        let mode_b = NotifySettings {
            mode: NotifyMode::Hmac,
            issuer_public_key: Secret::new("issuer.pub.pem"),
            client_secret: Secret::new("CANARY-ISSUED-SECRET"),
            issuer_client_key: "ISSUER-1".into(),
            ..NotifySettings::default()
        };
        assert_eq!(mode_b.validate(), Ok(()));
        let left_at_rsa = NotifySettings {
            mode: NotifyMode::Rsa,
            ..mode_b.clone()
        };
        assert_eq!(
            left_at_rsa.validate().unwrap_err().key,
            "snapqr.issuer_client_key"
        );
        for (half, key) in [
            (
                NotifySettings {
                    issuer_public_key: Secret::default(),
                    ..mode_b.clone()
                },
                "snapqr.issuer_public_key",
            ),
            (
                NotifySettings {
                    issuer_client_key: String::new(),
                    ..mode_b.clone()
                },
                "snapqr.issuer_client_key",
            ),
            (
                NotifySettings {
                    client_secret: Secret::default(),
                    ..mode_b.clone()
                },
                "snapqr.client_secret",
            ),
        ] {
            let error = half.validate().unwrap_err();
            assert_eq!(error.key, key);
            assert!(!error.to_string().contains("CANARY-ISSUED-SECRET"));
        }
        // Mode A with the connector's secret in a shared environment, or
        // nothing configured at all, is fine.
        let mode_a = NotifySettings {
            issuer_client_key: String::new(),
            ..left_at_rsa
        };
        assert_eq!(mode_a.validate(), Ok(()));
        assert_eq!(NotifySettings::default().validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_key_and_never_the_secret() {
        let settings = SnapQrSettings {
            client_key: "partner".into(),
            client_secret: Secret::new("CANARY-SECRET-1"),
            private_key: Secret::new("/nonexistent/key.pem"),
            merchant_id: "m".into(),
            ..SnapQrSettings::default()
        };
        let error = settings.validate().unwrap_err();
        assert_eq!(error.key, "snapqr.private_key");
        assert!(!format!("{error} {settings:?}").contains("CANARY-SECRET-1"));
        assert_eq!(
            SnapQrSettings::default().validate().unwrap_err().key,
            "snapqr.client_key"
        );
    }

    /// Settings that pass validation, with a fresh key.
    fn valid_settings() -> SnapQrSettings {
        let (private, _) = sign::generate_key_pair();
        SnapQrSettings {
            client_key: "partner".into(),
            client_secret: Secret::new("s"),
            private_key: Secret::new(private),
            merchant_id: "m".into(),
            ..SnapQrSettings::default()
        }
    }

    /// A base URL with a path would send a path the signature does not
    /// cover (spec §4.2): refused, pointing at `path_prefix`.
    #[test]
    fn a_base_url_with_a_path_or_query_is_refused() {
        let valid = valid_settings();
        for url in ["https://api.issuer.co.id", "https://api.issuer.co.id:8443/"] {
            let settings = SnapQrSettings {
                base_url: url.into(),
                ..valid.clone()
            };
            settings.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for url in [
            "https://api.issuer.co.id/openapi",
            "https://api.issuer.co.id/snap/",
            "https://api.issuer.co.id/?tenant=1",
        ] {
            let settings = SnapQrSettings {
                base_url: url.into(),
                ..valid.clone()
            };
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, "snapqr.base_url", "{url}: {error}");
            assert!(error.problem.contains("path_prefix"), "{url}: {error}");
            assert!(!error.to_string().contains("issuer.co.id"), "{error}");
        }
    }

    #[test]
    fn a_refund_resend_interval_within_the_longest_send_is_refused() {
        let valid = valid_settings();
        assert!(valid.validate().is_ok());
        let overlapping = SnapQrSettings {
            refund_resend_interval_ms: 4 * valid.timeout_ms,
            ..valid
        };
        let error = overlapping.validate().unwrap_err();
        assert_eq!(error.key, "snapqr.refund_resend_interval_ms", "{error}");
    }

    #[test]
    fn a_payment_expiry_outside_a_minute_to_a_day_is_refused() {
        let valid = valid_settings();
        for secs in [60, 300, 86_400] {
            let settings = SnapQrSettings {
                payment_expiry_secs: secs,
                ..valid.clone()
            };
            settings
                .validate()
                .unwrap_or_else(|e| panic!("{secs}: {e}"));
        }
        // 0: every payment sent already expired; 10^15: chrono overflows
        // and every payment panics.
        for secs in [0, 1, 59, 86_401, 10u64.pow(15), u64::MAX] {
            let settings = SnapQrSettings {
                payment_expiry_secs: secs,
                ..valid.clone()
            };
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, "snapqr.payment_expiry_secs", "{secs}: {error}");
            assert!(
                error.problem.contains("between 60 and 86400 seconds"),
                "{error}"
            );
        }
    }

    #[test]
    fn merchant_ids_longer_than_the_spec_allows_are_refused() {
        let (private, _) = sign::generate_key_pair();
        let valid = SnapQrSettings {
            client_key: "partner".into(),
            client_secret: Secret::new("s"),
            private_key: Secret::new(private),
            merchant_id: "m".repeat(64),
            sub_merchant_id: "s".repeat(32),
            ..SnapQrSettings::default()
        };
        assert!(valid.validate().is_ok());
        for (settings, key) in [
            (
                SnapQrSettings {
                    merchant_id: "m".repeat(65),
                    ..valid.clone()
                },
                "snapqr.merchant_id",
            ),
            (
                SnapQrSettings {
                    sub_merchant_id: "s".repeat(33),
                    ..valid.clone()
                },
                "snapqr.sub_merchant_id",
            ),
        ] {
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, key, "{error}");
            assert!(error.to_string().contains("at most"), "{error}");
        }
    }
}
