//! Smilepayz settings: the connector's (`[smilepayz]` in its TOML,
//! `LOKET_SMILEPAYZ__…` in the environment) and the callback receiver's
//! ([`CallbackSettings`]). Keys and the merchant secret are
//! [`Secret`]s: never logged, never in an error.

use loket_connector::service::{check_http_timeouts, check_http_url, check_provider_url};
use loket_runtime::Secret;
use serde::{Deserialize, Serialize};

use crate::sign::{self, CallbackRecipe, TimestampStyle};

pub const TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// **ASSUMED** (spec §7, §9): an order an inquiry does not find is treated as
/// never received only after this long; before that the answer may be the
/// create/inquiry race (spec §8.12).
pub const NOT_FOUND_GRACE_MS_DEFAULT: u64 = 60_000;
/// Spec §5: pay-in expiry default 3600 s, maximum 86400 s.
pub const EXPIRY_SECONDS_DEFAULT: u64 = 3_600;
pub const EXPIRY_SECONDS_MAX: u64 = 86_400;
/// Spec §3: X-TIMESTAMP must be within ±5 min.
pub const MAX_SKEW_SECONDS_DEFAULT: i64 = 300;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct SmilepayzSettings {
    /// `https://gateway.smilepayz.com` (production) or
    /// `https://sandbox-gateway.smilepayz.com`; paths `/v2.0/…` are appended.
    pub base_url: String,
    /// Accept a plain `http://` base URL to a host other than this machine
    /// (a simulator elsewhere). Off: requests carry signatures and tokens.
    pub allow_plain_http: bool,
    /// Sent as `X-PARTNER-ID` and as `merchant.merchantId`.
    pub merchant_id: String,
    /// Optional `merchant.merchantName`.
    pub merchant_name: String,
    /// Part of every string to sign; never transmitted.
    pub merchant_secret: Secret,
    /// Our RSA private key: PKCS#8 PEM, base64 DER (as the SDKs load it),
    /// or a path to a file holding either.
    pub merchant_private_key: Secret,
    /// `+07:00` (`wib`) or `Z` (`utc`) timestamps.
    pub timestamp_style: TimestampStyle,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Sent as `callbackUrl` on pay-ins and pay-outs (empty: not sent, the
    /// URL registered in the Smilepayz admin applies). Otherwise an absolute
    /// `http://` or `https://` URL with a host, at most 256 characters.
    pub callback_url: String,
    /// Sent as `redirectUrl` on pay-ins when not empty; the same form.
    pub redirect_url: String,
    /// See [`NOT_FOUND_GRACE_MS_DEFAULT`].
    pub not_found_grace_ms: u64,
    /// Pay-in `expiryPeriod` when the command has no `expiry_seconds`.
    pub default_expiry_seconds: u64,
}

impl Default for SmilepayzSettings {
    fn default() -> Self {
        SmilepayzSettings {
            base_url: "http://127.0.0.1:8181".into(),
            allow_plain_http: false,
            merchant_id: String::new(),
            merchant_name: String::new(),
            merchant_secret: Secret::default(),
            merchant_private_key: Secret::default(),
            timestamp_style: TimestampStyle::Wib,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            callback_url: String::new(),
            redirect_url: String::new(),
            not_found_grace_ms: NOT_FOUND_GRACE_MS_DEFAULT,
            default_expiry_seconds: EXPIRY_SECONDS_DEFAULT,
        }
    }
}

/// The longest `callbackUrl` / `redirectUrl` Smilepayz takes (S256).
pub const URL_MAX_CHARS: usize = 256;

/// A setting that cannot work, naming its key (shared by every connector).
pub use loket_connector::service::SettingError as InvalidSetting;

impl SmilepayzSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |name: &str| format!("smilepayz.{name}");
        check_provider_url(&key("base_url"), &self.base_url, self.allow_plain_http)?;
        if self.merchant_id.trim().is_empty() {
            return Err(InvalidSetting::new(key("merchant_id"), "must be set"));
        }
        if self.merchant_secret.is_empty() {
            return Err(InvalidSetting::new(
                key("merchant_secret"),
                "must be set (LOKET_SMILEPAYZ__MERCHANT_SECRET)",
            ));
        }
        sign::load_private_key(self.merchant_private_key.expose())
            .map_err(|e| InvalidSetting::new(key("merchant_private_key"), e.to_string()))?;
        check_http_timeouts("smilepayz", self.timeout_ms, self.connect_timeout_ms)?;
        // Spec §2: both are S256 on the wire; longer, every pay-in is refused.
        // Both are optional (empty: not sent); one that is sent must be a URL
        // Smilepayz can call or send the payer to: `merchant.example/cb`,
        // without its scheme, would go out on every pay-in and never work.
        for (name, url) in [
            ("callback_url", &self.callback_url),
            ("redirect_url", &self.redirect_url),
        ] {
            if url.chars().count() > URL_MAX_CHARS {
                return Err(InvalidSetting::new(
                    key(name),
                    format!("must be at most {URL_MAX_CHARS} characters (spec S256)"),
                ));
            }
            if !url.trim().is_empty() {
                check_http_url(&key(name), url)?;
            }
        }
        if self.default_expiry_seconds == 0 || self.default_expiry_seconds > EXPIRY_SECONDS_MAX {
            return Err(InvalidSetting::new(
                key("default_expiry_seconds"),
                format!("must be between 1 and {EXPIRY_SECONDS_MAX}"),
            ));
        }
        Ok(())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim().trim_end_matches('/'))
    }
}

/// What the callback receiver needs for Smilepayz callbacks
/// (`POST /callback/smilepayz`). `Default` = unconfigured: every callback is
/// refused as unverifiable until a platform key is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CallbackSettings {
    /// Smilepayz's platform public key: SPKI PEM, base64 DER, or a path.
    pub platform_public_key: String,
    /// What the signature covers (spec §4.2; PayNodo variant configurable).
    pub recipe: CallbackRecipe,
    /// Callbacks whose X-TIMESTAMP is further than this from now are stale;
    /// from 1 s to an hour.
    pub max_skew_seconds: i64,
    /// Our merchant secret, only to mask it should it ever appear in a
    /// callback body (optional).
    pub mask_secrets: Vec<Secret>,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            platform_public_key: String::new(),
            recipe: CallbackRecipe::TradeNoTimestamp,
            max_skew_seconds: MAX_SKEW_SECONDS_DEFAULT,
            mask_secrets: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings that pass validation, with a canary merchant secret and a
    /// fresh key.
    fn valid_settings() -> SmilepayzSettings {
        let (private, _) = sign::generate_key_pair();
        SmilepayzSettings {
            merchant_id: "20001".into(),
            merchant_secret: Secret::new("CANARY-SECRET-0001"),
            merchant_private_key: Secret::new(private),
            ..SmilepayzSettings::default()
        }
    }

    #[test]
    fn validation_names_the_key_and_never_the_secret() {
        let valid = valid_settings();
        valid.validate().unwrap();
        let cases = [
            (
                "smilepayz.merchant_id",
                SmilepayzSettings {
                    merchant_id: "".into(),
                    ..valid.clone()
                },
            ),
            (
                "smilepayz.merchant_secret",
                SmilepayzSettings {
                    merchant_secret: Secret::default(),
                    ..valid.clone()
                },
            ),
            (
                "smilepayz.merchant_private_key",
                SmilepayzSettings {
                    merchant_private_key: Secret::new("garbage"),
                    ..valid.clone()
                },
            ),
            (
                "smilepayz.base_url",
                SmilepayzSettings {
                    base_url: "ftp://x".into(),
                    ..valid.clone()
                },
            ),
            (
                "smilepayz.callback_url",
                SmilepayzSettings {
                    callback_url: format!("https://loket.example/{}", "c".repeat(240)),
                    ..valid.clone()
                },
            ),
            (
                "smilepayz.redirect_url",
                SmilepayzSettings {
                    redirect_url: format!("https://shop.example/{}", "r".repeat(240)),
                    ..valid.clone()
                },
            ),
        ];
        for (key, settings) in cases {
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, key);
            assert!(!format!("{error} {settings:?}").contains("CANARY-SECRET-0001"));
            assert!(!format!("{error} {settings:?}").contains("PRIVATE KEY-----\nMII"));
        }
        assert_eq!(SmilepayzSettings::default().not_found_grace_ms, 60_000);
        assert_eq!(
            valid.url("/v2.0/inquiry-status"),
            "http://127.0.0.1:8181/v2.0/inquiry-status"
        );
    }

    #[test]
    fn callback_and_redirect_urls_must_be_absolute_http_urls_when_set() {
        let valid = valid_settings();
        // Optional: empty (or blank) is not sent.
        for url in ["", "  "] {
            SmilepayzSettings {
                callback_url: url.into(),
                redirect_url: url.into(),
                ..valid.clone()
            }
            .validate()
            .unwrap();
        }
        for url in [
            "https://merchant.example/cb/smilepayz",
            "http://127.0.0.1:8280/callback/smilepayz",
            "http://loket-callback:8280/callback/smilepayz",
        ] {
            SmilepayzSettings {
                callback_url: url.into(),
                redirect_url: url.into(),
                ..valid.clone()
            }
            .validate()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for url in [
            "merchant.example/cb",
            "/callback/smilepayz",
            "ftp://merchant.example/cb",
            "https://",
            "https://user:CANARY-PW-9@merchant.example/cb",
        ] {
            for name in ["callback_url", "redirect_url"] {
                let mut settings = valid.clone();
                match name {
                    "callback_url" => settings.callback_url = url.into(),
                    _ => settings.redirect_url = url.into(),
                }
                let error = settings.validate().unwrap_err();
                assert_eq!(error.key, format!("smilepayz.{name}"), "{url}: {error}");
                assert!(!error.to_string().contains("CANARY-PW-9"), "{error}");
            }
        }
    }
}
