//! A setting a flag or its environment variable gives (`--api-key` or
//! `LOKET_API_KEY`, `--database-url`, `--nats-url`): clap lets both be
//! missing, so the usage line never demands a flag the environment may
//! give, and a command that cannot do without one asks for it here, before
//! it connects anywhere, naming both.

use loket_runtime::Secret;

use crate::CliError;

/// A setting's value as text, only to tell a blank one from a given one.
pub trait SettingText {
    fn setting_text(&self) -> &str;
}

impl SettingText for str {
    fn setting_text(&self) -> &str {
        self
    }
}

impl SettingText for String {
    fn setting_text(&self) -> &str {
        self
    }
}

impl SettingText for Secret {
    fn setting_text(&self) -> &str {
        self.expose()
    }
}

/// `value` when given and not blank; else bad usage (exit code 2) that
/// says what is missing and where to set it, never the value:
/// `{missing}: set {variable} (or {flag})`, e.g. `no API key: set
/// LOKET_API_KEY (or --api-key)`.
pub fn required<'a, T: SettingText + ?Sized>(
    value: Option<&'a T>,
    missing: &str,
    variable: &str,
    flag: &str,
) -> Result<&'a T, CliError> {
    value
        .filter(|value| !value.setting_text().trim().is_empty())
        .ok_or_else(|| CliError::Usage(format!("{missing}: set {variable} (or {flag})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_blank_setting_is_bad_usage_naming_variable_and_flag() {
        let secret = Secret::new("lk_abc");
        let given = required(Some(&secret), "no API key", "LOKET_API_KEY", "--api-key");
        assert_eq!(given.expect("given").expose(), "lk_abc");
        for value in [None, Some(Secret::new("")), Some(Secret::new(" \t"))] {
            let error = required(value.as_ref(), "no API key", "LOKET_API_KEY", "--api-key")
                .expect_err("missing");
            assert_eq!(
                error.to_string(),
                "no API key: set LOKET_API_KEY (or --api-key)"
            );
            assert_eq!(error.exit_code(), 2);
        }
        let url = "nats://127.0.0.1:4222".to_string();
        assert_eq!(
            required(Some(&url), "needs NATS", "LOKET_NATS_URL", "--nats-url").expect("given"),
            &url
        );
        assert!(required(Some(""), "needs NATS", "LOKET_NATS_URL", "--nats-url").is_err());
    }
}
