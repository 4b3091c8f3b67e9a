//! A connector worker as a service, the same for every provider: the
//! start-up checks every connector shares, then [`serve`] — the admin port,
//! NATS, the worker loop until shutdown, and the drain. A provider crate's
//! `run` validates its own settings, builds its [`Connector`] and calls
//! [`serve`].

use std::sync::Arc;

use loket_runtime::admin::{self, Readiness};
use loket_runtime::bus::{self, BusError};
use loket_runtime::config::Common;
use loket_runtime::db::{self, DbError};
use loket_runtime::{Shutdown, Vital};
use tokio::net::TcpListener;

use crate::journal::SendJournal;
use crate::worker::{self, WorkerError, WorkerSettings};
use crate::Connector;

/// A setting that cannot work, named by its key (never a secret's value).
/// Every connector's settings validation returns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct SettingError {
    pub key: String,
    pub problem: String,
}

impl SettingError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        SettingError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a provider's URL setting `key`: `http://` or `https://` with a
/// host and no user name or password in it ([`check_http_url`]). Requests
/// carry credentials (OkeBayar's PIN in the body, SNAP's bearer token,
/// signatures), so plain `http://` is accepted only to this machine (a
/// simulator on loopback) unless `allow_plain_http` is set.
pub fn check_provider_url(
    key: &str,
    url: &str,
    allow_plain_http: bool,
) -> Result<reqwest::Url, SettingError> {
    let parsed = check_http_url(key, url)?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    if parsed.scheme() == "http" && !loopback && !allow_plain_http {
        return Err(SettingError::new(
            key,
            format!(
                "is plain http:// to another host ({host:?}), and requests carry credentials: \
                 use https://, or set allow_plain_http = true for a simulator on another host"
            ),
        ));
    }
    Ok(parsed)
}

/// Checks the URL setting `key` (surrounding whitespace aside) and returns
/// it parsed: an absolute `http://` or `https://` URL with a host, and no
/// user name or password in it.
///
/// Settings' URLs are logged at start-up and sent to providers, so
/// credentials in one (`user:password@`) are refused; the errors never echo
/// the URL itself (at most its host), so a refused URL cannot leak its
/// userinfo, path or query either.
pub fn check_http_url(key: &str, url: &str) -> Result<reqwest::Url, SettingError> {
    // `url::ParseError`'s messages are fixed texts that never quote the input.
    let parsed = reqwest::Url::parse(url.trim()).map_err(|error| {
        SettingError::new(
            key,
            format!("is not an absolute http:// or https:// URL ({error})"),
        )
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SettingError::new(
            key,
            "must not carry a user name or password (user:password@host): \
             the URL is logged, and credentials belong in their own secret settings",
        ));
    }
    // Not even the scheme is echoed: in `user:password@host`, written
    // without `//`, the user name parses as the scheme.
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SettingError::new(
            key,
            "must start with http:// or https://",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(SettingError::new(key, "has no host"));
    }
    Ok(parsed)
}

/// The widest window a signed callback's timestamp may fall in (an hour):
/// wider, a captured callback or token request replays for that long.
pub const MAX_CALLBACK_SKEW_SECS: i64 = 3_600;

/// Checks the setting `key`, how far (seconds) a signed callback's
/// timestamp may be from our clock: 1 s to [`MAX_CALLBACK_SKEW_SECS`].
pub fn check_callback_skew(key: &str, seconds: i64) -> Result<(), SettingError> {
    if (1..=MAX_CALLBACK_SKEW_SECS).contains(&seconds) {
        return Ok(());
    }
    Err(SettingError::new(
        key,
        format!(
            "must be between 1 and {MAX_CALLBACK_SKEW_SECS} seconds (an hour; \
             0 refuses every callback, more lets a captured one replay), not {seconds}"
        ),
    ))
}

/// Checks a provider's HTTP timeouts, the settings `{section}.timeout_ms`
/// (the whole request) and `{section}.connect_timeout_ms` (part of it).
pub fn check_http_timeouts(
    section: &str,
    timeout_ms: u64,
    connect_timeout_ms: u64,
) -> Result<(), SettingError> {
    if timeout_ms == 0 {
        return Err(SettingError::new(
            format!("{section}.timeout_ms"),
            "must be greater than 0",
        ));
    }
    if connect_timeout_ms == 0 || connect_timeout_ms > timeout_ms {
        return Err(SettingError::new(
            format!("{section}.connect_timeout_ms"),
            format!("must be between 1 and {section}.timeout_ms ({timeout_ms})"),
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// Connections for the send journal: its two batch slots and one for the
/// rare renewal before a send again ([`SendJournal::renew_if_older`]).
const JOURNAL_CONNECTIONS: u32 = 3;

/// The checks every connector shares. `timeout_key` names the provider's
/// HTTP timeout setting (e.g. `okebayar.timeout_ms`): a command not acked
/// within `worker.ack_wait_ms` is redelivered to another replica, so the
/// provider call must finish well before that.
pub fn check_worker_settings(
    common: &Common,
    worker: &WorkerSettings,
    timeout_key: &str,
    timeout_ms: u64,
) -> Result<(), SettingError> {
    let error = SettingError::new;
    if worker.concurrency == 0 {
        return Err(error("worker.concurrency", "must be at least 1".into()));
    }
    let minimum = timeout_ms.saturating_mul(2);
    if worker.ack_wait_ms <= minimum {
        return Err(error(
            "worker.ack_wait_ms",
            format!(
                "{} must be greater than 2 × {timeout_key} ({minimum} ms)",
                worker.ack_wait_ms
            ),
        ));
    }
    if common.nats_url.trim().is_empty() {
        return Err(error("nats_url", "must be set".into()));
    }
    if common.database_url.expose().trim().is_empty() {
        return Err(error(
            "database_url",
            "must be set: the send journal is kept in PostgreSQL".into(),
        ));
    }
    Ok(())
}

/// Serves the admin port, connects PostgreSQL (the send journal; migrations
/// applied) and NATS, and runs the worker until `shutdown`, then drains and
/// stops the admin server.
pub async fn serve<C: Connector>(
    connector: Arc<C>,
    service_name: &str,
    common: &Common,
    worker_settings: WorkerSettings,
    admin: TcpListener,
    shutdown: Shutdown,
) -> Result<(), ServiceError> {
    let readiness = Readiness::default();
    let admin_server = admin::spawn(admin, readiness.clone(), shutdown.clone());
    worker::metric::register_at_zero(connector.provider());
    let connected = async {
        let pool = db::connect(&common.database_url, JOURNAL_CONNECTIONS).await?;
        db::migrate(&pool).await?;
        let nats = bus::connect(&common.nats_url, service_name).await?;
        Ok::<_, ServiceError>((pool, nats))
    };
    let (pool, nats) = match connected.await {
        Ok(connected) => connected,
        Err(error) => {
            admin_server.stop().await;
            return Err(error);
        }
    };
    readiness.watch_bus(&nats);
    readiness.watch_database(&pool);
    let vital = Vital::new(shutdown.clone());
    let result = worker::run(
        connector,
        worker_settings,
        nats.clone(),
        SendJournal::start(pool, &vital),
        vital,
        shutdown.clone(),
        readiness.clone(),
    )
    .await;
    readiness.set(false);
    // The worker returns on shutdown or on a setup error; either way the
    // admin port closes last.
    admin_server.stop().await;
    let _ = nats.flush().await;
    result.map_err(ServiceError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_need_tls_unless_on_this_machine_or_allowed() {
        for url in [
            "https://h2h.okebayar.example/api",
            "http://127.0.0.1:8180/",
            "http://localhost:8180",
            "http://[::1]:8180",
        ] {
            check_provider_url("p.url", url, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let error = check_provider_url("p.url", "http://loket-sim:8180/", false).unwrap_err();
        assert_eq!(error.key, "p.url");
        assert!(error.problem.contains("allow_plain_http"), "{error}");
        check_provider_url("p.url", "http://loket-sim:8180/", true).unwrap();
        for bad in ["ftp://h/", "h2h.example/api", "http://"] {
            let error = check_provider_url("p.url", bad, true).unwrap_err();
            assert_eq!(error.key, "p.url", "{bad}: {error}");
        }
    }

    #[test]
    fn http_urls_need_a_scheme_and_a_host_but_may_be_plain_http_anywhere() {
        for url in [
            "https://merchant.example/cb",
            " http://loket-callback:8280/callback/smilepayz ",
        ] {
            check_http_url("p.callback_url", url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        for bad in [
            "merchant.example/cb",
            "//merchant.example/cb",
            "ftp://merchant.example/cb",
            "mailto:ops@merchant.example",
            "https://",
            "https://u:p@merchant.example/cb",
            "",
        ] {
            let error = check_http_url("p.callback_url", bad).unwrap_err();
            assert_eq!(error.key, "p.callback_url", "{bad}: {error}");
        }
    }

    #[test]
    fn provider_urls_with_credentials_are_refused_without_echoing_them() {
        const CANARY: &str = "CANARY-PW-5521";
        for url in [
            "https://user:CANARY-PW-5521@h2h.example/api",
            "http://user:CANARY-PW-5521@127.0.0.1:8180/",
            "https://CANARY-PW-5521@h2h.example/api",
            "https://CANARY-PW-5521:@h2h.example/api",
        ] {
            for allow_plain_http in [false, true] {
                let error = check_provider_url("p.url", url, allow_plain_http).unwrap_err();
                assert_eq!(error.key, "p.url", "{error}");
                assert!(error.problem.contains("user name or password"), "{error}");
                assert!(!error.to_string().contains(CANARY), "{error}");
            }
        }
        // The other refusals do not echo userinfo (nor the rest of the URL) either.
        for url in [
            "ftp://canaryuser:CANARY-PW-5521@h2h.example/",
            "http://canaryuser:CANARY-PW-5521@loket sim:8180/",
            "http://canaryuser:CANARY-PW-5521@",
            "canaryuser:CANARY-PW-5521@h2h.example",
            "CANARY-PW-5521://h2h.example/",
            "http://h2h.example/?key=CANARY-PW-5521",
        ] {
            let error = check_provider_url("p.url", url, false).unwrap_err();
            assert_eq!(error.key, "p.url", "{url}: {error}");
            let shown = error.to_string().to_ascii_lowercase();
            assert!(!shown.contains("canary"), "{url}: {error}");
        }
    }

    #[test]
    fn ack_wait_must_exceed_twice_the_provider_timeout_and_the_journal_needs_a_database() {
        let common = Common::default();
        let mut worker = WorkerSettings {
            ack_wait_ms: 90_000,
            ..Default::default()
        };
        let error = check_worker_settings(&common, &worker, "x.timeout_ms", 45_000).unwrap_err();
        assert_eq!(error.key, "worker.ack_wait_ms");
        assert!(error.problem.contains("x.timeout_ms"), "{error}");
        worker.ack_wait_ms = 90_001;
        check_worker_settings(&common, &worker, "x.timeout_ms", 45_000).unwrap();
        let no_database = Common {
            database_url: loket_runtime::Secret::new(""),
            ..Common::default()
        };
        assert_eq!(
            check_worker_settings(&no_database, &worker, "x.timeout_ms", 45_000)
                .unwrap_err()
                .key,
            "database_url"
        );
        worker.concurrency = 0;
        assert_eq!(
            check_worker_settings(&common, &worker, "x.timeout_ms", 45_000)
                .unwrap_err()
                .key,
            "worker.concurrency"
        );
    }
}
