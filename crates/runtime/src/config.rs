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

pub fn load_from<T: DeserializeOwned + Serialize + Default>(
    file: Option<&str>,
) -> Result<T, ConfigError> {
    use figment::providers::{Format, Serialized, Toml};
    let mut figment = figment::Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !std::path::Path::new(path).exists() {
            return Err(ConfigError(format!(
                "LOKET_CONFIG: file {path} does not exist"
            )));
        }
        check_toml_syntax(path)?;
        figment = figment.merge(Toml::file(path));
    }
    for layer in environment_layers(std::env::vars()) {
        figment = figment.merge(Serialized::defaults(layer));
    }
    // Lossy: text from the environment becomes a number or a boolean where
    // the field wants one; a `Secret` keeps the exact text.
    figment.extract_lossy().map_err(|error| {
        // figment's message names the key path; it never echoes a secret's
        // value because type errors report the type, not the content.
        ConfigError(error.to_string())
    })
}

/// Refuses a settings file that is not TOML, naming the place but never
/// quoting it: the parser's own message shows the offending line, which may
/// be a secret's (an unquoted `userpin = 012345` is such a line).
fn check_toml_syntax(path: &str) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError(format!("LOKET_CONFIG: cannot read {path}: {error}")))?;
    let Err(error) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let place = error
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!(" at line {line}, column {column}")
        })
        .unwrap_or_default();
    Err(ConfigError(format!(
        "LOKET_CONFIG: {path} is not valid TOML{place} (the line is not shown: it may hold a secret; \
         quote every PIN and key as a string)"
    )))
}

/// One nested dictionary per `LOKET_…` variable (`__` nests). Scalars stay
/// text, so a PIN like `012345` keeps its leading zero; arrays and tables
/// (`["10.0.0.0/8"]`) are parsed.
fn environment_layers(vars: impl Iterator<Item = (String, String)>) -> Vec<figment::value::Dict> {
    use figment::value::Value;
    vars.filter_map(|(key, raw)| {
        let rest = key.strip_prefix("LOKET_")?;
        if rest.is_empty() || rest == "CONFIG" {
            return None;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        let parsed: Value = raw.parse().unwrap_or_else(|never| match never {});
        let value = match parsed {
            Value::Dict(..) | Value::Array(..) => parsed,
            _ => Value::from(raw),
        };
        figment::util::nest(&path, value).into_dict()
    })
    .collect()
}

/// A secret value: PIN, client secret, private key, token. `Debug` and
/// `Display` print a mask, so a secret cannot reach a log line by accident.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

/// Why a secret written as a number with a fraction or as a boolean is
/// refused; it never repeats the value.
const NOT_TEXT: &str = "a secret must be written as text (in quotes in a TOML file)";

impl<'de> Deserialize<'de> for Secret {
    /// Accepts a string, or a number written without quotes (an environment
    /// variable `LOKET_…_USERPIN=123456` arrives as an integer).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;
        impl serde::de::Visitor<'_> for SecretVisitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
                Ok(Secret(value.to_string()))
            }
            // Any other type is refused without its value: serde's own
            // message would quote it (a float or a boolean).
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
        }
        deserializer.deserialize_any(SecretVisitor)
    }
}

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
    #[serde(deserialize_with = "flattened::log_json")]
    pub log_json: bool,
    /// OTLP/HTTP collector base URL (`http://host:4318`) the service exports
    /// its spans to; empty: none.
    #[serde(default)]
    pub otlp_endpoint: String,
    /// How long a drain may take after SIGTERM before exiting anyway.
    #[serde(deserialize_with = "flattened::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

/// Readers for the non-text fields of [`Common`]. Services `#[serde(flatten)]`
/// it into their settings, and serde hands a flattened field the
/// environment's text as text, past figment's lossy conversion: without
/// these, `LOKET_LOG_JSON=true` or `LOKET_SHUTDOWN_GRACE_MS=5000` stopped
/// every service. They take a real boolean or number (a TOML file) too.
mod flattened {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written<T> {
        Typed(T),
        Text(String),
    }

    /// `log_json`.
    pub fn log_json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        match Written::<bool>::deserialize(deserializer)? {
            Written::Typed(value) => Ok(value),
            Written::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(serde::de::Error::custom(format!(
                    "log_json: expected true or false, found {text:?}"
                ))),
            },
        }
    }

    /// `shutdown_grace_ms`.
    pub fn shutdown_grace_ms<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match Written::<u64>::deserialize(deserializer)? {
            Written::Typed(value) => Ok(value),
            Written::Text(text) => text.trim().parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "shutdown_grace_ms: expected a whole number of milliseconds, found {text:?}"
                ))
            }),
        }
    }
}

impl Common {
    /// What [`crate::telemetry::init`] needs.
    pub fn log_settings(&self) -> crate::telemetry::LogSettings {
        crate::telemetry::LogSettings {
            json: self.log_json,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }
}

impl Default for Common {
    fn default() -> Self {
        Common {
            nats_url: "nats://127.0.0.1:4222".into(),
            database_url: Secret::new("postgres://loket@127.0.0.1:5432/loket"),
            admin_addr: "127.0.0.1:0".into(),
            log_json: false,
            otlp_endpoint: String::new(),
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
    struct WithPin {
        pin: Secret,
    }

    #[test]
    fn a_numeric_secret_is_read_as_text() {
        let dir = std::env::temp_dir().join(format!("loket-config-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pin.toml");
        std::fs::write(&file, "pin = 123456\n").unwrap();
        let loaded = load_from::<WithPin>(Some(file.to_str().unwrap())).unwrap();
        assert_eq!(loaded.pin.expose(), "123456");
        // A leading zero survives when quoted, as PINs must be.
        std::fs::write(&file, "pin = \"012345\"\n").unwrap();
        assert_eq!(
            load_from::<WithPin>(Some(file.to_str().unwrap()))
                .unwrap()
                .pin
                .expose(),
            "012345"
        );
    }

    #[test]
    fn a_secret_written_as_a_fraction_or_a_boolean_is_refused_without_its_value() {
        let dir = std::env::temp_dir().join(format!("loket-config-float-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pin.toml");
        for (written, shown) in [
            ("987654.25", "987654"),
            ("1e9", "1000000000"),
            ("true", "true"),
        ] {
            std::fs::write(&file, format!("pin = {written}\n")).unwrap();
            let error = load_from::<WithPin>(Some(file.to_str().unwrap()))
                .expect_err("refused")
                .to_string();
            assert!(error.contains("must be written as text"), "{error}");
            assert!(error.contains("pin"), "the key is named: {error}");
            assert!(!error.contains(shown), "the value is repeated: {error}");
        }
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_by_place_without_quoting_its_line() {
        let dir = std::env::temp_dir().join(format!("loket-config-syntax-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        // Unquoted with a leading zero: not TOML. The line is the secret's.
        std::fs::write(&file, "# settings\npin = 0123456789CANARY\n").unwrap();
        let error = load_from::<WithPin>(Some(file.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("0123456789"), "{error}");
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("bad.toml"), "{error}");
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

#[cfg(test)]
mod env_tests {
    use super::*;

    #[derive(Debug, Default, Deserialize, Serialize)]
    struct EnvPin {
        envtestpin: Secret,
    }

    #[test]
    fn a_pin_with_a_leading_zero_from_the_environment_keeps_it() {
        use figment::providers::Serialized;
        let vars = [
            ("LOKET_ENVTESTPIN".to_string(), "012345".to_string()),
            ("OTHER_VAR".to_string(), "ignored".to_string()),
        ];
        let layers = environment_layers(vars.into_iter());
        assert_eq!(layers.len(), 1);
        let mut figment = figment::Figment::from(Serialized::defaults(EnvPin::default()));
        for layer in layers {
            figment = figment.merge(Serialized::defaults(layer));
        }
        let loaded: EnvPin = figment.extract_lossy().unwrap();
        assert_eq!(loaded.envtestpin.expose(), "012345");
    }

    /// Settings shaped like a service's: `Common` flattened in.
    #[derive(Debug, Default, Deserialize, Serialize)]
    struct ServiceLike {
        #[serde(flatten)]
        common: Common,
        concurrency: u32,
    }

    fn from_env(vars: &[(&str, &str)]) -> Result<ServiceLike, String> {
        use figment::providers::Serialized;
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let mut figment = figment::Figment::from(Serialized::defaults(ServiceLike::default()));
        for layer in environment_layers(vars) {
            figment = figment.merge(Serialized::defaults(layer));
        }
        figment.extract_lossy().map_err(|error| error.to_string())
    }

    #[test]
    fn flattened_common_settings_read_booleans_and_numbers_from_the_environment() {
        let loaded = from_env(&[
            ("LOKET_LOG_JSON", "true"),
            ("LOKET_SHUTDOWN_GRACE_MS", "5000"),
            ("LOKET_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("LOKET_CONCURRENCY", "8"),
        ])
        .unwrap();
        assert!(loaded.common.log_json);
        assert_eq!(loaded.common.shutdown_grace_ms, 5_000);
        assert_eq!(loaded.common.otlp_endpoint, "http://127.0.0.1:4318");
        assert_eq!(loaded.concurrency, 8);
        assert!(
            !from_env(&[("LOKET_LOG_JSON", "false")])
                .unwrap()
                .common
                .log_json
        );
        let defaults = from_env(&[]).unwrap();
        assert_eq!(defaults.common.shutdown_grace_ms, 10_000);

        let error = from_env(&[("LOKET_LOG_JSON", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("log_json") && error.contains("maybe"),
            "{error}"
        );
        let error = from_env(&[("LOKET_SHUTDOWN_GRACE_MS", "soon")]).unwrap_err();
        assert!(error.contains("shutdown_grace_ms"), "{error}");
    }
}
