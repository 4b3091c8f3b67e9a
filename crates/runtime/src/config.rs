//! Typed configuration: a service's settings struct's defaults, then an
//! optional TOML file (`LOKET_CONFIG`), then `LOKET_…` environment variables
//! (`__` separates nesting: `LOKET_OKEBAYAR__USERPIN`). A bad value names its
//! key. A key in the file that is no setting of the service (a typo such as
//! `nats_ur`) is refused, naming it; a `LOKET_…` variable that is none is
//! only reported ([`Loaded::ignored_variables`]), as every service of a
//! deployment gets the same environment.

use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// Settings as [`load`] found them.
#[derive(Debug)]
pub struct Loaded<T> {
    pub settings: T,
    /// The `LOKET_…` environment variables that name no setting of this
    /// service, by name (never their values), sorted. They are not refused:
    /// `make run` and deployments give every service the same environment
    /// (the database URL reaches the simulator, loketctl's `LOKET_API_KEY`
    /// every service), so the service logs them once at start instead.
    pub ignored_variables: Vec<String>,
}

/// Loads `T` from its defaults, the optional file named by `LOKET_CONFIG`,
/// and the `LOKET_` environment.
pub fn load<T: DeserializeOwned + Serialize + Default>() -> Result<Loaded<T>, ConfigError> {
    load_with(
        std::env::var("LOKET_CONFIG").ok().as_deref(),
        std::env::vars(),
    )
}

/// [`load`] with the settings file `file` instead of `LOKET_CONFIG`'s.
pub fn load_from<T: DeserializeOwned + Serialize + Default>(
    file: Option<&str>,
) -> Result<T, ConfigError> {
    load_with(file, std::env::vars()).map(|loaded| loaded.settings)
}

/// [`load`] from the settings file `file` and the environment `vars`.
fn load_with<T: DeserializeOwned + Serialize + Default>(
    file: Option<&str>,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Loaded<T>, ConfigError> {
    use figment::providers::{Format, Serialized, Toml};
    let mut figment = figment::Figment::from(Serialized::defaults(T::default()));
    let mut written = None;
    if let Some(path) = file {
        if !std::path::Path::new(path).exists() {
            return Err(ConfigError(format!(
                "LOKET_CONFIG: file {path} does not exist"
            )));
        }
        written = Some(read_toml(path)?);
        figment = figment.merge(Toml::file(path));
    }
    let variables = environment_layers(vars);
    for (name, layer) in &variables {
        figment = figment.merge(Variable { name, layer });
    }
    // Lossy: text from the environment becomes a number or a boolean where
    // the field wants one; a `Secret` keeps the exact text.
    let settings: T = figment.extract_lossy().map_err(without_values)?;
    // What a file or a variable may name. Taken from the loaded settings
    // rather than the defaults, so that what the defaults leave out is there
    // when it was given: an option set (`failpoint`), an entry of a map whose
    // keys are free (`schedules.doku`, `allowed_ips.okebayar`).
    let known = key_tree(&settings, "the service's settings")?;
    if let (Some(path), Some(written)) = (file, written) {
        let unknown = unknown_keys(&written, &known);
        if !unknown.is_empty() {
            return Err(ConfigError(format!(
                "LOKET_CONFIG: {path}: not settings of this service (a typo, or meant for \
                 another service?): {}",
                unknown.join(", ")
            )));
        }
    }
    let mut ignored_variables: Vec<String> = variables
        .into_iter()
        .filter(|(_, layer)| !unknown_keys(layer, &known).is_empty())
        .map(|(name, _)| name)
        .collect();
    ignored_variables.sort();
    Ok(Loaded {
        settings,
        ignored_variables,
    })
}

/// figment's message, naming the key and where it was given, without the
/// value found there: figment quotes a wrong-typed value (`found string
/// "…"`), and a secret given in the wrong shape (a single string where a list
/// of secrets is wanted) would be printed whole.
fn without_values(error: figment::Error) -> ConfigError {
    use figment::error::{Actual, Kind};
    let kind_of = |actual: &Actual| match actual {
        Actual::Bool(_) => "a boolean".to_string(),
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer".to_string(),
        Actual::Float(_) => "a number with a fraction".to_string(),
        Actual::Char(_) | Actual::Str(_) => "a string".to_string(),
        Actual::Bytes(_) => "bytes".to_string(),
        Actual::Other(_) => "a value".to_string(),
        // The rest name a shape and hold no value.
        shape => shape.to_string(),
    };
    let messages: Vec<String> = error
        .into_iter()
        .map(|mut error| {
            error.kind = match error.kind {
                Kind::InvalidType(actual, expected) => Kind::Message(format!(
                    "invalid type: found {}, expected {expected}",
                    kind_of(&actual)
                )),
                Kind::InvalidValue(actual, expected) => Kind::Message(format!(
                    "invalid value: found {}, expected {expected}",
                    kind_of(&actual)
                )),
                kind => kind,
            };
            error.to_string()
        })
        .collect();
    ConfigError(messages.join("\n"))
}

/// The keys of `value` as serialised, nested; `what` names it in the error.
fn key_tree(value: impl Serialize, what: &str) -> Result<Dict, ConfigError> {
    match Value::serialize(value) {
        Ok(Value::Dict(_, tree)) => Ok(tree),
        _ => Err(ConfigError(format!("{what} is not a table of keys"))),
    }
}

/// The key paths (`okebayar.status_not_found_cod`) of `given` that name
/// nothing in `known`, the keys of the loaded settings.
/// Below a key whose setting is not a table (a list, a number, an option
/// left unset) nothing is reported: serde has read what is there.
fn unknown_keys(given: &Dict, known: &Dict) -> Vec<String> {
    fn walk(given: &Dict, known: &Dict, prefix: &str, unknown: &mut Vec<String>) {
        for (key, value) in given {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match (known.get(key), value) {
                (None, _) => unknown.push(path),
                (Some(Value::Dict(_, known)), Value::Dict(_, given)) => {
                    walk(given, known, &path, unknown)
                }
                (Some(_), _) => {}
            }
        }
    }
    let mut unknown = Vec::new();
    walk(given, known, "", &mut unknown);
    unknown
}

/// The keys and values of the settings file at `path`. A file that is not
/// TOML is refused naming the place but never quoting it: the parser's own
/// message shows the offending line, which may be a secret's (an unquoted
/// `userpin = 012345` is such a line).
fn read_toml(path: &str) -> Result<Dict, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError(format!("LOKET_CONFIG: cannot read {path}: {error}")))?;
    let error = match text.parse::<toml::Table>() {
        Ok(table) => return key_tree(table, &format!("LOKET_CONFIG: {path}")),
        Err(error) => error,
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

/// One nested dictionary per `LOKET_…` variable (`__` nests), with the
/// variable's name. Scalars stay text, so a PIN like `012345` keeps its
/// leading zero; arrays and tables (`["10.0.0.0/8"]`) are parsed.
fn environment_layers(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, Dict)> {
    vars.filter_map(|(name, raw)| {
        let rest = name.strip_prefix("LOKET_")?;
        if rest.is_empty() || rest == "CONFIG" {
            return None;
        }
        let path = rest.to_ascii_lowercase().replace("__", ".");
        let parsed: Value = raw.parse().unwrap_or_else(|never| match never {});
        let value = match parsed {
            Value::Dict(..) | Value::Array(..) => parsed,
            _ => Value::from(raw),
        };
        let layer = figment::util::nest(&path, value).into_dict()?;
        Some((name, layer))
    })
    .collect()
}

/// One `LOKET_…` variable as a layer of settings, named after the variable,
/// so that an error about its value says which variable to fix.
struct Variable<'a> {
    name: &'a str,
    layer: &'a Dict,
}

impl figment::Provider for Variable<'_> {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        Ok(figment::Profile::Default.collect(self.layer.clone()))
    }
}

/// Refuses the first of `settings` (name, value) that is zero, naming it:
/// a zero timeout, limit or size is a typo, never a way to turn something
/// off, and served with it a service fails every request instead of
/// refusing to start.
pub fn all_positive(settings: &[(&str, u64)]) -> Result<(), String> {
    match settings.iter().find(|(_, value)| *value == 0) {
        Some((key, _)) => Err(format!("{key} must be greater than zero")),
        None => Ok(()),
    }
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

/// Settings every service has. `Debug` masks the credentials a URL may
/// carry (`nats://user:password@host`), as [`Secret`] masks a whole value.
#[derive(Clone, Deserialize, Serialize)]
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

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::bus::without_credentials;
        // Taken apart so that a new field cannot be printed unmasked by
        // omission: it fails to compile until it is listed here.
        let Common {
            nats_url,
            database_url,
            admin_addr,
            log_json,
            otlp_endpoint,
            shutdown_grace_ms,
        } = self;
        f.debug_struct("Common")
            .field("nats_url", &without_credentials(nats_url))
            .field("database_url", database_url)
            .field("admin_addr", admin_addr)
            .field("log_json", log_json)
            .field("otlp_endpoint", &without_credentials(otlp_endpoint))
            .field("shutdown_grace_ms", shutdown_grace_ms)
            .finish()
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

    /// Settings shaped like a service's: `Common` flattened in, a nested
    /// table, a map whose keys are free (empty by default, as
    /// `allowed_ips`, and with entries, as `schedules`), and an option.
    #[derive(Debug, Default, Deserialize, Serialize)]
    #[serde(default)]
    struct ServiceLike {
        #[serde(flatten)]
        common: Common,
        review_after_ms: u64,
        worker: Sample,
        allowed_ips: std::collections::BTreeMap<String, Vec<String>>,
        schedules: std::collections::BTreeMap<String, Sample>,
        failpoint: Option<Sample>,
    }

    fn settings_file(name: &str, text: &str) -> String {
        let dir = std::env::temp_dir().join(format!("loket-config-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file.to_str().unwrap().to_string()
    }

    /// A mistyped key in the settings file (`nats_ur`, `review_after_mss`,
    /// one inside a table) stops the service naming every such key, instead
    /// of running it on the default the operator meant to replace.
    #[test]
    fn a_mistyped_settings_key_is_refused_naming_it() {
        let file = settings_file(
            "typos.toml",
            "nats_ur = \"nats://10.0.0.9:4222\"\nreview_after_mss = 60000\n\
             [worker]\nprt = 1\n[schedules.doku]\nport = 2\nportt = 3\n[okebayr]\nurl = \"x\"\n",
        );
        let error = load_from::<ServiceLike>(Some(&file))
            .expect_err("unknown keys are refused")
            .to_string();
        for key in [
            "nats_ur",
            "review_after_mss",
            "worker.prt",
            "schedules.doku.portt",
            "okebayr",
        ] {
            assert!(error.contains(key), "{key} is not named: {error}");
        }
        assert!(!error.contains("okebayr.url"), "{error}");
        assert!(!error.contains("doku.port,"), "{error}");
    }

    /// What the defaults leave out is still a setting: an entry of a map
    /// whose keys are free, an option. None of them may be refused.
    #[test]
    fn keys_the_defaults_leave_out_are_accepted() {
        let file = settings_file(
            "valid.toml",
            "nats_url = \"nats://10.0.0.9:4222\"\nreview_after_ms = 5\n\
             [allowed_ips]\nokebayar = [\"10.0.0.0/8\"]\n\
             [schedules.doku]\nport = 2\n[failpoint]\nport = 3\n",
        );
        let loaded = load_from::<ServiceLike>(Some(&file)).unwrap();
        assert_eq!(loaded.common.nats_url, "nats://10.0.0.9:4222");
        assert_eq!(loaded.review_after_ms, 5);
        assert_eq!(loaded.allowed_ips["okebayar"], ["10.0.0.0/8"]);
        assert_eq!(loaded.schedules["doku"].port, 2);
        assert_eq!(loaded.failpoint.map(|set| set.port), Some(3));
    }

    /// The bus password in `nats://user:password@host` (and credentials in
    /// the OTLP endpoint) never show in the settings' `Debug`, which every
    /// service's settings derive.
    #[test]
    fn url_credentials_never_show_in_the_settings_debug_output() {
        let common = Common {
            nats_url: "nats://loket:CANARY-NATS-PW-1@10.0.0.9:4222".into(),
            database_url: Secret::new("postgres://loket:CANARY-DB-PW-1@db/loket"),
            otlp_endpoint: "http://otel:CANARY-OTLP-PW-1@collector:4318".into(),
            ..Common::default()
        };
        let shown = format!("{common:?}");
        for canary in ["CANARY-NATS-PW-1", "CANARY-DB-PW-1", "CANARY-OTLP-PW-1"] {
            assert!(!shown.contains(canary), "{canary} in Debug: {shown}");
        }
        assert!(shown.contains("10.0.0.9:4222"), "{shown}");
        assert!(shown.contains("collector:4318"), "{shown}");
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn from_env<T: DeserializeOwned + Serialize + Default>(
        vars: &[(&str, &str)],
    ) -> Result<Loaded<T>, ConfigError> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load_with(None, vars)
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    struct EnvPin {
        envtestpin: Secret,
    }

    #[derive(Debug, Default, Deserialize, Serialize)]
    struct EnvSecrets {
        envtestsecrets: Vec<Secret>,
        envtestport: u16,
    }

    /// A list of secrets given as one string (the brackets forgotten), or a
    /// secret given to a number setting, is refused naming the key and the
    /// shape wanted, never quoting what was given.
    #[test]
    fn a_secret_in_the_wrong_shape_is_refused_without_its_value() {
        for (name, value) in [
            ("LOKET_ENVTESTSECRETS", "CANARY-SECRET-77"),
            ("LOKET_ENVTESTSECRETS", "4921"),
            ("LOKET_ENVTESTPORT", "CANARY-SECRET-77"),
        ] {
            let error = from_env::<EnvSecrets>(&[(name, value)])
                .expect_err("refused")
                .to_string();
            assert!(!error.contains(value), "{value} repeated: {error}");
            let key = name.trim_start_matches("LOKET_").to_lowercase();
            assert!(error.contains(&key), "the key is named: {error}");
            assert!(
                error.contains(&format!("environment variable {name}")),
                "the variable is named: {error}"
            );
            assert!(error.contains("invalid type: found"), "{error}");
        }
    }

    #[test]
    fn a_pin_with_a_leading_zero_from_the_environment_keeps_it() {
        let loaded: EnvPin = from_env(&[("LOKET_ENVTESTPIN", "012345"), ("OTHER_VAR", "ignored")])
            .unwrap()
            .settings;
        assert_eq!(loaded.envtestpin.expose(), "012345");
    }

    /// Settings shaped like a service's: `Common` flattened in.
    #[derive(Debug, Default, Deserialize, Serialize)]
    struct ServiceLike {
        #[serde(flatten)]
        common: Common,
        concurrency: u32,
        schedules: std::collections::BTreeMap<String, u64>,
    }

    fn service_from_env(vars: &[(&str, &str)]) -> Result<ServiceLike, String> {
        from_env(vars)
            .map(|loaded| loaded.settings)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn flattened_common_settings_read_booleans_and_numbers_from_the_environment() {
        let loaded = service_from_env(&[
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
            !service_from_env(&[("LOKET_LOG_JSON", "false")])
                .unwrap()
                .common
                .log_json
        );
        let defaults = service_from_env(&[]).unwrap();
        assert_eq!(defaults.common.shutdown_grace_ms, 10_000);

        let error = service_from_env(&[("LOKET_LOG_JSON", "maybe")]).unwrap_err();
        assert!(
            error.contains("log_json") && error.contains("maybe"),
            "{error}"
        );
        let error = service_from_env(&[("LOKET_SHUTDOWN_GRACE_MS", "soon")]).unwrap_err();
        assert!(error.contains("shutdown_grace_ms"), "{error}");
    }

    /// Every service gets the same `LOKET_…` environment (`make run`,
    /// loketctl's own variables), so a variable that names no setting of
    /// this service is reported by name for the start-up warning, never
    /// refused and never quoted with its value; one that names a setting,
    /// an entry of a free map included, is not reported.
    #[test]
    fn variables_naming_no_setting_are_reported_by_name_not_refused() {
        let loaded: Loaded<ServiceLike> = from_env(&[
            ("LOKET_NATS_UR", "nats://CANARY-VALUE@n1:4222"),
            ("LOKET_API_KEY", "CANARY-VALUE"),
            ("LOKET_CONCURRENCY", "3"),
            ("LOKET_SCHEDULES__DOKU", "7"),
            ("LOKET_CONFIG", "/not/read/here.toml"),
            ("PATH", "/usr/bin"),
        ])
        .expect("variables are never refused");
        assert_eq!(loaded.settings.concurrency, 3);
        assert_eq!(loaded.settings.schedules.get("doku"), Some(&7));
        assert_eq!(loaded.ignored_variables, ["LOKET_API_KEY", "LOKET_NATS_UR"]);
    }
}
