//! Typed configuration: a service's settings struct's defaults, then an
//! optional TOML file (`LOKET_CONFIG`), then `LOKET_…` environment variables
//! (`__` separates nesting: `LOKET_OKEBAYAR__USERPIN`). A bad value names its
//! key.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// Loads `T` from its defaults, the optional file named by `LOKET_CONFIG`,
/// and the `LOKET_` environment.
pub fn load<T: DeserializeOwned + Serialize + Default>() -> Result<T, ConfigError> {
    load_from(std::env::var("LOKET_CONFIG").ok().as_deref())
}

pub fn load_from<T: DeserializeOwned + Serialize + Default>(file: Option<&str>) -> Result<T, ConfigError> {
    use figment::providers::{Env, Format, Serialized, Toml};
    let mut figment = figment::Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !std::path::Path::new(path).exists() {
            return Err(ConfigError(format!("LOKET_CONFIG: file {path} does not exist")));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed("LOKET_").ignore(&["CONFIG"]).split("__"));
    figment.extract().map_err(|error| {
        // figment's message names the key path; it never echoes a secret's
        // value because secrets deserialize as plain strings and type errors
        // report the type, not the content.
        ConfigError(error.to_string())
    })
}

/// A secret value: PIN, client secret, private key, token. `Debug` and
/// `Display` print a mask, so a secret cannot reach a log line by accident.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that signs with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Settings every service has.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Common {
    pub nats_url: String,
    pub database_url: Secret,
    /// Admin port: liveness, readiness, metrics.
    pub admin_addr: String,
    /// JSON log lines instead of human-readable ones.
    pub log_json: bool,
    /// How long a drain may take after SIGTERM before exiting anyway.
    pub shutdown_grace_ms: u64,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            nats_url: "nats://127.0.0.1:4222".into(),
            database_url: Secret::new("postgres://loket@127.0.0.1:5432/loket"),
            admin_addr: "127.0.0.1:0".into(),
            log_json: false,
            shutdown_grace_ms: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("canary-pin-4921");
        assert!(!format!("{secret:?} {secret}").contains("canary"));
        assert_eq!(secret.expose(), "canary-pin-4921");
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    struct Sample {
        port: u16,
    }

    #[test]
    fn bad_value_names_the_key() {
        let dir = std::env::temp_dir().join(format!("loket-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "port = \"not-a-number\"\n").unwrap();
        let error = load_from::<Sample>(Some(file.to_str().unwrap())).unwrap_err();
        assert!(error.to_string().contains("port"), "{error}");
        let missing = load_from::<Sample>(Some("/nonexistent/loket.toml")).unwrap_err();
        assert!(missing.to_string().contains("LOKET_CONFIG"), "{missing}");
    }
}
