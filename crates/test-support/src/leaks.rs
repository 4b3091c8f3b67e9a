//! The canary check (team rule: secrets never reach logs, traces, the
//! database or error messages): every secret a [`TestApp`] is configured
//! with ([`Canaries::of`]), looked for ([`assert_no_secret_leaked`]) in
//!
//! - the captured log lines;
//! - every row of every table;
//! - the error messages a test collected;
//! - every message still stored in every JetStream stream of the app's
//!   server, headers and payload ([`TestApp::dump_streams`]). The command
//!   and event streams are work queues: a message leaves them once acked,
//!   so what passed through them and was handled is no longer there to
//!   see (the update stream keeps its messages);
//! - what the app's nats-server logged ([`crate::nats::NatsServer::log`]);
//! - what the shared PostgreSQL server logged since the app started (its
//!   errors, with the values they quote). Other tests' lines are in it too,
//!   but every test's app has the same canaries, so any hit is a leak.
//!   Skipped when the server's log is not known (a developer's own server
//!   named by `LOKET_TEST_DATABASE_URL` without `LOKET_TEST_POSTGRES_LOG`)
//!   or the test brought its own database ([`crate::TestOptions::database_url`]).
//!
//! The search ignores letter case (a secret echoed in capitals is still
//! out) and reads the texts as the masker (`loket_connector::mask::Masker`)
//! does: a secret is found however it is escaped (JSON, percent-encoding,
//! XML references, in any mix), and one of digits only (a numeric PIN)
//! only where it stands alone (see [`Canaries::add`]). A private key of
//! ours is looked for in every form it could be written in (PEM lines, its
//! private parts in decimal, hex and as `Debug` prints them, its DER as
//! base64), not only as configured ([`Canaries::add_key`]). OkeBayar's
//! signature, `md5(userid + PIN + reference)`, is a secret too (a numeric
//! PIN is brute-forced back from one signature and its reference): the
//! check computes it for every reference it can see and looks for each. So is SNAP's B2B token request signature (it
//! gets a token when replayed): one for every second the app ran.

use std::collections::HashSet;

use loket_connector::mask::Masker;
use sqlx::types::chrono::{DateTime, Utc};

use crate::app::{TestApp, USERID};

/// One secret: what it is (a failure names it) and its value.
#[derive(Clone, Debug)]
pub struct Canary {
    pub name: String,
    pub value: String,
}

/// The secrets to look for.
#[derive(Clone, Debug, Default)]
pub struct Canaries(Vec<Canary>);

impl Canaries {
    /// Every secret `app` is configured with, for the providers it runs:
    ///
    /// - the passwords the services are given for the bus and the database
    ///   ([`crate::nats::CANARY_PASSWORD`], [`crate::postgres::CANARY_PASSWORD`]);
    /// - OkeBayar: the PIN, numeric or not (its signatures are checked
    ///   separately, see [`assert_no_secret_leaked`]);
    /// - SNAP: our client secret, the customer token, our private key in
    ///   every form of [`Canaries::add_key`], the signature of every B2B
    ///   token request we could have sent since the app started (see
    ///   [`snap_token_signatures_between`]), the B2B access tokens the issuer granted us and still
    ///   holds (a test that expires them adds the earlier ones with
    ///   [`Canaries::add`]), the notify secret we issued the issuer, the key
    ///   our notify tokens are tagged with, and, in notify mode B, every
    ///   access token our receiver could have granted the issuer since the app
    ///   started (they are derived from that key and their expiry second);
    /// - Smilepayz: the merchant secret and our private key in every form
    ///   of [`Canaries::add_key`];
    /// - the API keys of the app's two clients, sent with every call.
    pub fn of(app: &TestApp) -> Canaries {
        let mut canaries = Canaries::default();
        canaries.add("client A's API key", app.key_a.as_str());
        canaries.add("client B's API key", app.key_b.as_str());
        canaries.add("the NATS password", crate::nats::CANARY_PASSWORD);
        canaries.add("the database password", crate::postgres::CANARY_PASSWORD);
        canaries.add("the OkeBayar PIN", app.options.okebayar_pin);
        if let Some(snap) = &app.snapqr {
            use crate::snapqr::{CANARY_CLIENT_SECRET, CANARY_NOTIFY_SECRET, CANARY_TOKEN_KEY};
            canaries.add("the SNAP client secret", CANARY_CLIENT_SECRET);
            canaries.add("the SNAP customer token", crate::snapqr::CUSTOMER_TOKEN);
            canaries.add_key("our SNAP private key", &snap.partner_private_pem);
            if let Some(settings) = snap.connector_settings() {
                for signature in
                    snap_token_signatures_between(&settings.snapqr, app.started_at, Utc::now())
                {
                    canaries.add("a SNAP token request signature of ours", signature);
                }
            }
            for token in snap.sim.issued_tokens() {
                canaries.add("a SNAP B2B access token the issuer granted us", token);
            }
            canaries.add("the SNAP notify secret we issued", CANARY_NOTIFY_SECRET);
            canaries.add("our SNAP notify token key", CANARY_TOKEN_KEY);
            if snap.sim_settings.notify_mode == loket_snapqr::NotifyMode::Hmac {
                let until = Utc::now();
                for token in notify_tokens_granted_between(app, app.started_at, until) {
                    canaries.add("a SNAP notify access token our receiver granted", token);
                }
            }
        }
        if let Some(smilepayz) = &app.smilepayz {
            canaries.add(
                "the Smilepayz merchant secret",
                crate::smilepayz::CANARY_MERCHANT_SECRET,
            );
            canaries.add_key(
                "our Smilepayz private key",
                &smilepayz.merchant_private_key_pem,
            );
        }
        canaries
    }

    /// Adds a secret. One of digits only (a numeric PIN) is found only
    /// where it stands alone, not glued to other digits (written or
    /// escaped): that is how the masker (`loket_connector::mask`) defines
    /// its leak, as inside a longer number (a serial number, an amount, a
    /// timestamp) it may be chance.
    /// The form OkeBayar signs, glued to the user id and the reference, is
    /// covered by the signature canaries.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 8, "a canary too short to mean anything");
        self.0.push(Canary {
            name: name.into(),
            value,
        });
    }

    /// Our private key in every form a leak could take, so that a key
    /// written out any way is found, not only as the PEM we configured:
    ///
    /// - three lines of the PEM's body (the first, the middle and the last
    ///   full one);
    /// - its private exponent d and primes p and q in decimal (`Display`) and
    ///   in hex (`{:x}`); the hex of each is also part of any hex dump of the
    ///   key's DER (PKCS#8 or PKCS#1, which hold them big-endian), so these
    ///   cover the DER in hex too;
    /// - the largest 64-bit limb of each of d, p and q in decimal: how
    ///   `{:?}` of an `rsa::RsaPrivateKey` (rsa 0.9, with num-bigint-dig's
    ///   `u64_digit`) writes them, `BigUint { data: [limb, …] }`, least
    ///   significant first, one limb a line under `{:#?}` (what a
    ///   `#[derive(Debug)]` on a struct holding the loaded key prints);
    /// - 64 characters from the middle of the PKCS#8 and of the PKCS#1 DER
    ///   as one-line base64 (the PEM's lines fall elsewhere in it).
    pub(crate) fn add_key(&mut self, name: &str, pem: &str) {
        use base64::Engine as _;
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::EncodePrivateKey as _;
        use rsa::traits::PrivateKeyParts as _;

        let body: Vec<&str> = pem
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() == 64)
            .collect();
        assert!(body.len() >= 3, "a PEM key with a body: {name}");
        for (which, line) in [
            ("first", body[0]),
            ("middle", body[body.len() / 2]),
            ("last", body[body.len() - 1]),
        ] {
            self.add(format!("{name} ({which} body line)"), line);
        }

        let key = loket_connector::signing::load_private_key(pem)
            .unwrap_or_else(|error| panic!("{name} loads: {error}"));
        let primes = key.primes();
        for (part, value) in [
            ("private exponent d", key.d()),
            ("prime p", &primes[0]),
            ("prime q", &primes[1]),
        ] {
            self.add(format!("{name} ({part} in decimal)"), value.to_string());
            self.add(format!("{name} ({part} in hex)"), format!("{value:x}"));
            let largest_limb = value
                .to_bytes_le()
                .chunks(8)
                .map(|limb| {
                    let mut bytes = [0; 8];
                    bytes[..limb.len()].copy_from_slice(limb);
                    u64::from_le_bytes(bytes)
                })
                .max()
                .expect("a key part has limbs");
            self.add(
                format!("{name} ({part}, a limb as Debug writes it)"),
                largest_limb.to_string(),
            );
        }
        let pkcs8 = key.to_pkcs8_der().expect("PKCS#8 encoding");
        let pkcs1 = key.to_pkcs1_der().expect("PKCS#1 encoding");
        for (encoding, der) in [("PKCS#8", pkcs8.as_bytes()), ("PKCS#1", pkcs1.as_bytes())] {
            let one_line = base64::engine::general_purpose::STANDARD.encode(der);
            let middle = one_line.len() / 2;
            self.add(
                format!("{name} ({encoding} DER as one-line base64)"),
                &one_line[middle - 32..middle + 32],
            );
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Canary> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every access token a SNAP notify receiver with `app`'s settings grants
/// in `[from, until]` (one per second: a token is its expiry second and a
/// tag under our token key).
pub fn notify_tokens_granted_between(
    app: &TestApp,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<String> {
    let settings = &app.callback_settings().snapqr;
    let tokens = loket_snapqr::b2b_token::NotifyTokens::new(
        settings.token_key.expose().as_bytes(),
        settings.token_ttl_secs,
    );
    let mut granted = Vec::new();
    for second in from.timestamp() - 2..=until.timestamp() + 2 {
        let at = DateTime::from_timestamp(second, 0).expect("a time in range");
        granted.push(tokens.grant(at));
    }
    granted
}

/// Every `X-SIGNATURE` our SNAP connector with `settings` could have sent
/// on a B2B token request in `[from, until]`: SHA256withRSA over
/// `clientKey|X-TIMESTAMP` is deterministic and its timestamp has second
/// precision, so there is one a second (replayed within the issuer's skew
/// window, one gets a token). Under the millisecond timestamp format there
/// would be a thousand a second, too many to compute: none then.
///
/// The transaction signatures (HMAC-SHA512) and Smilepayz's request
/// signatures cover the request body and its access token or timestamp, so
/// no canary can be computed for them from the configuration.
pub fn snap_token_signatures_between(
    settings: &loket_snapqr::SnapQrSettings,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<String> {
    if settings.timestamp_format == loket_snapqr::TimestampFormat::OffsetMillis {
        return Vec::new();
    }
    let key = loket_connector::signing::load_private_key(settings.private_key.expose())
        .expect("our SNAP private key loads");
    (from.timestamp() - 2..=until.timestamp() + 2)
        .map(|second| {
            let at = DateTime::from_timestamp(second, 0).expect("a time in range");
            let stamp = loket_snapqr::connector::format_timestamp(settings.timestamp_format, at);
            loket_snapqr::b2b_token::signed_request(&key, &settings.client_key, &stamp).signature
        })
        .collect()
}

/// What [`assert_no_secret_leaked`] looked at.
#[derive(Debug)]
pub struct Checked {
    pub canaries: usize,
    /// OkeBayar references whose signature was looked for.
    pub references: usize,
    pub log_bytes: usize,
    pub database_bytes: usize,
    pub stream_bytes: usize,
    pub nats_log_bytes: usize,
    /// `None` when the PostgreSQL server's log was not read (see the
    /// module's doc).
    pub postgres_log_bytes: Option<usize>,
}

/// Asserts that no canary, and no OkeBayar signature of a reference seen in
/// the database or the texts, is in the captured logs, the database (every
/// row of every table), `errors`, the JetStream streams, the nats-server's
/// log or the PostgreSQL server's log (see the module's doc). The logs and the database must
/// first be shown to hold every transaction of `ids`, and the services to
/// have connected to the bus with its password, so an absence means
/// something. A failure names the secret and the place, with the line it
/// was found in (the secret itself replaced by its name).
pub async fn assert_no_secret_leaked(
    app: &TestApp,
    ids: &[String],
    errors: &str,
    canaries: &Canaries,
) -> Checked {
    let logs = crate::logs::captured();
    let database = app.dump_database().await;
    for id in ids {
        assert!(logs.contains(id.as_str()), "the logs hold {id}");
        assert!(database.contains(id.as_str()), "the database holds {id}");
    }
    assert_services_used_the_nats_password(app).await;
    let streams = app.dump_streams().await;
    let nats_log = app
        .nats
        .log()
        .unwrap_or_else(|error| panic!("the nats-server log: {error}"));
    assert!(
        nats_log.contains("Server is ready"),
        "the nats-server log is the server's: {nats_log}"
    );
    let postgres_log = app.postgres_log.as_ref().map(|mark| {
        mark.written_since()
            .unwrap_or_else(|error| panic!("the PostgreSQL log: {error}"))
    });
    let mut places = vec![
        ("a log line", logs.to_ascii_lowercase()),
        ("a database row", database.to_ascii_lowercase()),
        ("an error message", errors.to_ascii_lowercase()),
        ("a JetStream message", streams.to_ascii_lowercase()),
        ("the nats-server log", nats_log.to_ascii_lowercase()),
    ];
    if let Some(postgres_log) = &postgres_log {
        places.push(("the PostgreSQL log", postgres_log.to_ascii_lowercase()));
    }
    let mut found = canaries_found(canaries, &places);

    // OkeBayar signatures: of every reference the database knows and every
    // reference-shaped string in the texts, looked for among every 32-hex
    // window of the texts.
    let mut references: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT provider_reference FROM transactions WHERE provider = 'okebayar'",
    )
    .fetch_all(&app.pool)
    .await
    .expect("OkeBayar references")
    .into_iter()
    .collect();
    let mut windows = HashSet::new();
    for (_, text) in &places {
        hex_windows(text, &mut windows);
        // The references of balance queries and echoes (`BAL`/`ECHO` and
        // 32 hex digits), which no row holds.
        for prefix in ["bal", "echo"] {
            for (at, _) in text.match_indices(prefix) {
                let digits = text.get(at + prefix.len()..at + prefix.len() + 32);
                if let Some(digits) = digits.filter(|digits| is_hex(digits)) {
                    references.insert(format!("{}{digits}", prefix.to_ascii_uppercase()));
                }
            }
        }
    }
    references.extend(windows.iter().cloned());
    for reference in &references {
        let signature =
            loket_okebayar::sign::signature(USERID, app.options.okebayar_pin, reference);
        if windows.contains(&signature) {
            for (place, text) in &places {
                if let Some(at) = text.find(&signature) {
                    found.push(format!(
                        "the OkeBayar signature of {reference} reached {place}: {}",
                        line_around(text, at, &signature, "<signature>")
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} secret(s) leaked:\n{}",
        found.len(),
        found.join("\n")
    );
    Checked {
        canaries: canaries.len(),
        references: references.len(),
        log_bytes: logs.len(),
        database_bytes: database.len(),
        stream_bytes: streams.len(),
        nats_log_bytes: nats_log.len(),
        postgres_log_bytes: postgres_log.as_ref().map(String::len),
    }
}

/// Asserts that every connection of a service (named `loket-…`) to the
/// app's nats-server authenticated with the NATS password, so that the
/// password was in the services' hands and its absence from what the check
/// reads means something (the server also lets in connections without
/// credentials, as the tests' own).
async fn assert_services_used_the_nats_password(app: &TestApp) {
    let users = app
        .nats
        .users_by_connection()
        .await
        .expect("nats-server's connection list");
    let services: Vec<&(String, String)> = users
        .iter()
        .filter(|(name, _)| name.starts_with("loket-"))
        .collect();
    assert!(
        !services.is_empty()
            && services
                .iter()
                .all(|(_, user)| user == crate::nats::SERVICE_USER),
        "every service connected to the bus with the NATS password: {users:?}"
    );
}

/// Every canary of `canaries` found in one of the `places` (a name and its
/// text, lower-cased), read the way the masker reads text, so that the check
/// and the masker agree on what a leak is: what it is, where, and the line
/// of its first occurrence (the secret, as written there, replaced by its
/// name).
pub(crate) fn canaries_found(canaries: &Canaries, places: &[(&str, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for canary in canaries.iter() {
        let masker = Masker::new([canary.value.as_str()]);
        for (place, text) in places {
            if let Some(occurrence) = masker.occurrences(text).first() {
                found.push(format!(
                    "{} reached {place}: {}",
                    canary.name,
                    line_around(
                        text,
                        occurrence.start,
                        &text[occurrence.clone()],
                        &canary.name
                    )
                ));
            }
        }
    }
    found
}

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every 32-character window of every run of hex digits in `text` (which
/// is lower-case): where an MD5 in hex may hide, glued to other digits or
/// not.
fn hex_windows(text: &str, windows: &mut HashSet<String>) {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let Some(first) = bytes[start..].iter().position(u8::is_ascii_hexdigit) else {
            break;
        };
        let run_start = start + first;
        let run_len = bytes[run_start..]
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(bytes.len() - run_start);
        if run_len >= 32 {
            for at in run_start..=run_start + run_len - 32 {
                windows.insert(text[at..at + 32].to_string());
            }
        }
        start = run_start + run_len;
    }
}

/// The line of `text` around `at`, with the secret replaced by `name`.
fn line_around(text: &str, at: usize, secret: &str, name: &str) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[start..end].replace(secret, &format!("<{name}>"));
    let mut shown: String = line.chars().take(600).collect();
    if shown.len() < line.len() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;
    use rsa::traits::PrivateKeyParts as _;

    /// What a service holding the loaded key would print with a
    /// `#[derive(Debug)]`.
    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug only.
    struct Signer {
        key: rsa::RsaPrivateKey,
    }

    /// The private key of `pem` written out the ways a careless line of
    /// code would write it: what each is, and the text.
    fn written_out(pem: &str) -> Vec<(&'static str, String)> {
        let key = loket_connector::signing::load_private_key(pem).expect("the key loads");
        let pkcs8 = key.to_pkcs8_der().expect("PKCS#8").as_bytes().to_vec();
        let pkcs1 = key.to_pkcs1_der().expect("PKCS#1").as_bytes().to_vec();
        let base64 = base64::engine::general_purpose::STANDARD;
        vec![
            ("as its PEM", pem.to_string()),
            ("as {:?} prints it", format!("{key:?}")),
            ("as {:#?} prints it", format!("{key:#?}")),
            (
                "as a #[derive(Debug)] struct holding it prints it",
                format!("{:?}", Signer { key: key.clone() }),
            ),
            ("its private exponent in decimal", key.d().to_string()),
            ("its first prime in hex", format!("{:x}", key.primes()[0])),
            ("its PKCS#8 DER in hex", hex::encode(&pkcs8)),
            (
                "its PKCS#1 DER in upper-case hex",
                hex::encode_upper(&pkcs1),
            ),
            ("its PKCS#8 DER as one-line base64", base64.encode(&pkcs8)),
            ("its PKCS#1 DER as one-line base64", base64.encode(&pkcs1)),
        ]
    }

    /// A private key is a secret in whatever encoding it leaks: the
    /// canaries of our key find it in a row however it was written there
    /// (a `#[derive(Debug)]` on a struct holding the loaded key prints its
    /// private exponent and primes as numbers, which no line of the PEM
    /// matches), and those of another key find none of these texts.
    #[test]
    fn the_canary_check_finds_our_private_key_in_a_row_whatever_its_encoding() {
        let (ours, _) = loket_connector::signing::generate_key_pair();
        let (another, _) = loket_connector::signing::generate_key_pair();
        let canaries_of = |pem: &str| {
            let mut canaries = Canaries::default();
            canaries.add_key("the key", pem);
            canaries
        };
        let (our_canaries, other_canaries) = (canaries_of(&ours), canaries_of(&another));
        for (how, text) in written_out(&ours) {
            let row = [("a database row", text.to_ascii_lowercase())];
            assert!(
                !canaries_found(&our_canaries, &row).is_empty(),
                "our private key written {how} is not found by its canaries"
            );
            let mistaken = canaries_found(&other_canaries, &row);
            assert!(mistaken.is_empty(), "another key's canaries: {mistaken:?}");
        }
    }

    /// A numeric PIN leaks where it stands alone, as the masker defines a
    /// leak (a field, a JSON string, a query string, beside a longer number
    /// it does not continue), and not where it is part of a longer number
    /// (a serial number, a timestamp), which may be chance.
    #[test]
    fn a_numeric_canary_is_found_only_where_it_stands_alone() {
        let mut canaries = Canaries::default();
        canaries.add("the PIN", "80461739");
        for leaked in [
            "userpin=80461739&userid=loket-test",
            r#"{"userpin":"80461739"}"#,
            "<userpin>80461739</userpin>",
            "serial 1180461739, then the pin 80461739",
            // Overlapping: the second occurrence stands alone.
            "8046173980461739 80461739",
        ] {
            let line = [("a log line", leaked.to_string())];
            assert_eq!(canaries_found(&canaries, &line).len(), 1, "{leaked}");
        }
        for chance in [
            "serial number 1180461739",
            "at 250804617390001",
            "balance 804617390",
            "8046173980461739",
        ] {
            let line = [("a log line", chance.to_string())];
            let found = canaries_found(&canaries, &line);
            assert!(found.is_empty(), "{chance}: {found:?}");
        }
    }

    /// The check reads the bus and the servers' logs: a secret in a header
    /// or the payload of a message stored in any stream, quoted by
    /// PostgreSQL in its log (here in a statement it refused) or by
    /// nats-server in its own (here as the user of a refused login), is
    /// found there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_canary_check_finds_a_secret_on_the_bus_and_in_the_servers_logs() {
        use futures::FutureExt as _;

        let app = TestApp::spawn().await;
        // Of this test only: the server's log is shared with other tests.
        let planted = |place: &str| format!("PLANTED-{place}-{}", uuid::Uuid::new_v4().simple());
        let (in_header, in_payload, in_statement, in_login) = (
            planted("header"),
            planted("payload"),
            planted("statement"),
            planted("login"),
        );
        let mut canaries = Canaries::default();
        canaries.add("the secret in a header", &in_header);
        canaries.add("the secret in a payload", &in_payload);
        canaries.add("the secret in a statement", &in_statement);
        canaries.add("the secret in a login", &in_login);

        let js =
            async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.expect("nats"));
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "PLANTED".into(),
            subjects: vec!["planted.>".into()],
            ..Default::default()
        })
        .await
        .expect("a stream");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("x-planted", in_header.as_str());
        js.publish_with_headers("planted.header", headers, "nothing".into())
            .await
            .expect("published")
            .await
            .expect("stored");
        js.publish(
            "planted.payload",
            format!(r#"{{"pin":"{in_payload}"}}"#).into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
        sqlx::query(&format!("SELECT '{in_statement}'::int"))
            .execute(&app.pool)
            .await
            .expect_err("not a number");
        async_nats::ConnectOptions::with_user_and_password(in_login.clone(), "wrong".into())
            .connect(app.nats.url())
            .await
            .expect_err("an unknown user is refused");

        let failure =
            std::panic::AssertUnwindSafe(assert_no_secret_leaked(&app, &[], "", &canaries))
                .catch_unwind()
                .await
                .expect_err("the planted secrets are found");
        let failure = failure
            .downcast_ref::<String>()
            .expect("a formatted failure");
        for expected in [
            "the secret in a header reached a JetStream message",
            "the secret in a payload reached a JetStream message",
            "the secret in a login reached the nats-server log",
        ] {
            assert!(failure.contains(expected), "{expected}: {failure}");
        }
        if app.postgres_log.is_some() {
            let expected = "the secret in a statement reached the PostgreSQL log";
            assert!(failure.contains(expected), "{expected}: {failure}");
        }
    }
}
