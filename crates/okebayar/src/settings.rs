//! OkeBayar connection settings (`[okebayar]` in the connector's TOML,
//! `LOKET_OKEBAYAR__…` in the environment) and the transaction codes of
//! spec §3, including the ones the spec leaves open (ASSUMED, configurable).

use loket_connector::service::{check_http_timeouts, check_http_url, check_provider_url};
use loket_runtime::Secret;
use serde::{Deserialize, Serialize};

use crate::wire::Format;

/// `transactioncode` of a prepaid purchase and of a prepaid inquiry (spec §3).
pub const PREPAID_TRANSACTION_CODE: &str = "OkeBayar-prabayar";
/// `querycode` that turns a prepaid request into an inquiry (spec §3).
pub const PREPAID_INQUIRY_QUERY_CODE: &str = "inquiry";
/// `transactioncode` of a postpaid bill inquiry (spec §3).
pub const BILL_INQUIRY_TRANSACTION_CODE: &str = "OkeBayar-inquiry";
/// `transactioncode` of a status check (spec §3, named in prose only).
pub const STATUS_TRANSACTION_CODE: &str = "OkeBayar-cek-status";
/// `transactioncode` of a balance request (spec §3).
pub const BALANCE_TRANSACTION_CODE: &str = "OkeBayar-cek-balance";

/// Default `transactioncode` of a postpaid payment. The spec's table repeats
/// `OkeBayar-inquiry` (a copy error, §3); **ASSUMED**: the same code, and the
/// presence of `inquirycode` makes it a payment. Configurable.
pub const PAYMENT_TRANSACTION_CODE_DEFAULT: &str = "OkeBayar-inquiry";
/// Default `transactioncode` of the echo request. Not in the spec
/// (**ASSUMED**, §3). Configurable.
pub const ECHO_TRANSACTION_CODE_DEFAULT: &str = "OkeBayar-echo";

/// The `transactionstatus` a status check answers when OkeBayar has no record
/// of the `referencecode` at all. The spec leaves this reply undocumented
/// (§8.2, §10); **ASSUMED** `199`, configurable, and the simulator answers it.
///
/// Why `199`: it is not in the spec's code table, and it lies in the `1xx`
/// band, which OkeBayar's own rule (and the code catalogue) reads as
/// *non-final*. If anything ever sees this code without knowing its meaning
/// (a misconfigured connector, a callback, an operator's `explain`), the
/// transaction keeps being polled instead of being failed. Only the connector,
/// on a status check, turns it into `not_found = true` (outcome unknown), which
/// is what allows the worker to send a never-received money-moving request.
pub const STATUS_NOT_FOUND_CODE_DEFAULT: &str = "199";

/// Client timeout default: the spec says OkeBayar answers synchronously for up
/// to ~30 s, so the client waits at least 45 s (**ASSUMED**, §1).
pub const TIMEOUT_MS_DEFAULT: u64 = 45_000;
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// When an inquiry's `inquiryexpired` cannot be parsed, or lies over a year
/// from the reply's answer time, the inquiry is taken to expire this long
/// after it was answered (**ASSUMED**, spec §9: code `403` says "≤ 30 min").
pub const INQUIRY_EXPIRY_FALLBACK_MINUTES: i64 = 30;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct OkeBayarSettings {
    /// The one H2H endpoint every operation is POSTed to (**ASSUMED** one URL
    /// for all operations, spec §1).
    pub url: String,
    /// Accept a plain `http://` URL to a host other than this machine (a
    /// simulator elsewhere). Off: the PIN travels in every body (spec §2).
    pub allow_plain_http: bool,
    /// The callback URL registered with OkeBayar out of band (spec §6). It is
    /// not sent on requests; kept here so operators see it next to the rest
    /// and the connector logs it at start. May be empty.
    pub callback_url: String,
    pub userid: String,
    /// Sent in every request body (spec §2); masked in every stored exchange.
    pub userpin: Secret,
    /// Request format; replies are sniffed (they may differ).
    pub format: Format,
    /// Total deadline of one HTTP request (including reading the reply).
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// See [`PAYMENT_TRANSACTION_CODE_DEFAULT`].
    pub payment_transaction_code: String,
    /// See [`STATUS_NOT_FOUND_CODE_DEFAULT`].
    pub status_not_found_code: String,
    /// See [`ECHO_TRANSACTION_CODE_DEFAULT`].
    pub echo_transaction_code: String,
}

impl Default for OkeBayarSettings {
    fn default() -> Self {
        OkeBayarSettings {
            url: "http://127.0.0.1:8180/".into(),
            allow_plain_http: false,
            callback_url: String::new(),
            userid: String::new(),
            userpin: Secret::default(),
            format: Format::Xml,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            payment_transaction_code: PAYMENT_TRANSACTION_CODE_DEFAULT.into(),
            status_not_found_code: STATUS_NOT_FOUND_CODE_DEFAULT.into(),
            echo_transaction_code: ECHO_TRANSACTION_CODE_DEFAULT.into(),
        }
    }
}

/// A setting that cannot work, naming its key (shared by every connector).
pub use loket_connector::service::SettingError as InvalidSetting;

impl OkeBayarSettings {
    /// Checks what can be checked without a network; every error names the
    /// key under `okebayar.` (never its value when it is a secret).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let key = |name: &str| format!("okebayar.{name}");
        let url = self.url.trim();
        if url.is_empty() {
            return Err(InvalidSetting::new(key("url"), "must be set"));
        }
        check_provider_url(&key("url"), url, self.allow_plain_http)?;
        if !self.callback_url.trim().is_empty() {
            check_http_url(&key("callback_url"), &self.callback_url)?;
        }
        if self.userid.trim().is_empty() {
            return Err(InvalidSetting::new(key("userid"), "must be set"));
        }
        if self.userpin.is_empty() {
            return Err(InvalidSetting::new(
                key("userpin"),
                "must be set (LOKET_OKEBAYAR__USERPIN)",
            ));
        }
        check_http_timeouts("okebayar", self.timeout_ms, self.connect_timeout_ms)?;
        for (name, value) in [
            ("payment_transaction_code", &self.payment_transaction_code),
            ("status_not_found_code", &self.status_not_found_code),
            ("echo_transaction_code", &self.echo_transaction_code),
        ] {
            if value.trim().is_empty() {
                return Err(InvalidSetting::new(key(name), "must not be empty"));
            }
        }
        Ok(())
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }

    pub fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.connect_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> OkeBayarSettings {
        OkeBayarSettings {
            userid: "pcu00001".into(),
            userpin: Secret::new("CANARY-PIN-7731"),
            ..OkeBayarSettings::default()
        }
    }

    /// The callback URL is logged at start, so it must be a URL and carry
    /// no credentials; empty is fine (it is registered out of band).
    #[test]
    fn a_callback_url_is_an_http_url_without_credentials_or_empty() {
        for fine in ["", "https://loket.example/callback/okebayar"] {
            let settings = OkeBayarSettings {
                callback_url: fine.into(),
                ..valid()
            };
            settings
                .validate()
                .unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        for bad in [
            "loket.example/callback",
            "https://ops:CANARY-CB-PW@loket.example/callback",
        ] {
            let settings = OkeBayarSettings {
                callback_url: bad.into(),
                ..valid()
            };
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, "okebayar.callback_url", "{error}");
            assert!(!error.to_string().contains("CANARY"), "{error}");
        }
    }

    #[test]
    fn defaults_follow_the_spec_and_its_assumptions() {
        let settings = OkeBayarSettings::default();
        assert_eq!(settings.format, Format::Xml);
        assert_eq!(settings.timeout_ms, 45_000);
        assert_eq!(settings.payment_transaction_code, "OkeBayar-inquiry");
        assert_eq!(settings.echo_transaction_code, "OkeBayar-echo");
        assert_eq!(
            settings.status_not_found_code,
            STATUS_NOT_FOUND_CODE_DEFAULT
        );
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn validation_names_the_key_and_never_the_pin() {
        let cases: [(&str, OkeBayarSettings); 5] = [
            (
                "okebayar.userid",
                OkeBayarSettings {
                    userid: " ".into(),
                    ..valid()
                },
            ),
            (
                "okebayar.userpin",
                OkeBayarSettings {
                    userpin: Secret::default(),
                    ..valid()
                },
            ),
            (
                "okebayar.url",
                OkeBayarSettings {
                    url: "ftp://x".into(),
                    ..valid()
                },
            ),
            (
                "okebayar.timeout_ms",
                OkeBayarSettings {
                    timeout_ms: 0,
                    ..valid()
                },
            ),
            (
                "okebayar.status_not_found_code",
                OkeBayarSettings {
                    status_not_found_code: "".into(),
                    ..valid()
                },
            ),
        ];
        for (key, settings) in cases {
            let error = settings.validate().unwrap_err();
            assert_eq!(error.key, key);
            assert!(error.to_string().contains(key));
            assert!(!format!("{error} {settings:?}").contains("CANARY-PIN-7731"));
        }
    }

    #[test]
    fn format_deserializes_lowercase() {
        let settings: OkeBayarSettings =
            serde_json::from_str(r#"{"format":"json","userid":"u"}"#).unwrap();
        assert_eq!(settings.format, Format::Json);
        assert_eq!(settings.timeout_ms, TIMEOUT_MS_DEFAULT);
    }
}
