//! The canary check (team rule: secrets never reach logs, traces, the
//! database or error messages): every secret a [`TestApp`] is configured
//! with ([`Canaries::of`]), looked for in the captured log lines, every row
//! of every table and the error messages a test collected
//! ([`assert_no_secret_leaked`]).
//!
//! The search ignores letter case (a secret echoed in capitals is still
//! out) and also looks for the forms a secret takes when JSON-escaped or
//! percent-encoded. OkeBayar's signature, `md5(userid + PIN + reference)`,
//! is a secret too (a numeric PIN is brute-forced back from one signature
//! and its reference): the check computes it for every reference it can
//! see and looks for each.

use std::collections::HashSet;

use sqlx::types::chrono::{DateTime, Utc};

use crate::app::{TestApp, CANARY_PIN, USERID};

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
    /// - OkeBayar: the PIN (its signatures are checked separately, see
    ///   [`assert_no_secret_leaked`]);
    /// - SNAP: our client secret, the customer token, three body lines of our
    ///   private key, the B2B access tokens the issuer granted us and still
    ///   holds (a test that expires them adds the earlier ones with
    ///   [`Canaries::add`]), the notify secret we issued the issuer, the key
    ///   our notify tokens are tagged with, and, in notify mode B, every
    ///   access token our receiver could have granted the issuer since the app
    ///   started (they are derived from that key and their expiry second);
    /// - Smilepayz: the merchant secret and three body lines of our private
    ///   key.
    pub fn of(app: &TestApp) -> Canaries {
        let mut canaries = Canaries::default();
        canaries.add("the OkeBayar PIN", CANARY_PIN);
        if let Some(snap) = &app.snapqr {
            use crate::snapqr::{CANARY_CLIENT_SECRET, CANARY_NOTIFY_SECRET, CANARY_TOKEN_KEY};
            canaries.add("the SNAP client secret", CANARY_CLIENT_SECRET);
            canaries.add("the SNAP customer token", crate::snapqr::CUSTOMER_TOKEN);
            canaries.add_key("our SNAP private key", &snap.partner_private_pem);
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

    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 8, "a canary too short to mean anything");
        self.0.push(Canary {
            name: name.into(),
            value,
        });
    }

    /// Three lines of a PEM key's body (the first, the middle and the last
    /// full one): any of them in a text is part of the key.
    fn add_key(&mut self, name: &str, pem: &str) {
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

/// What [`assert_no_secret_leaked`] looked at.
#[derive(Debug)]
pub struct Checked {
    pub canaries: usize,
    /// OkeBayar references whose signature was looked for.
    pub references: usize,
    pub log_bytes: usize,
    pub database_bytes: usize,
}

/// Asserts that no canary, and no OkeBayar signature of a reference seen in
/// the database or the texts, is in the captured logs, the database (every
/// row of every table) or `errors`. The logs and the database must first be
/// shown to hold every transaction of `ids`, so an absence means something.
/// A failure names the secret and the place, with the line it was found in
/// (the secret itself replaced by its name).
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
    let places = [
        ("a log line", logs.to_ascii_lowercase()),
        ("a database row", database.to_ascii_lowercase()),
        ("an error message", errors.to_ascii_lowercase()),
    ];
    let mut found = Vec::new();
    for canary in canaries.iter() {
        for form in forms(&canary.value) {
            for (place, text) in &places {
                if let Some(at) = text.find(&form) {
                    found.push(format!(
                        "{} reached {place}: {}",
                        canary.name,
                        line_around(text, at, &form, &canary.name)
                    ));
                }
            }
        }
    }

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
        let signature = loket_okebayar::sign::signature(USERID, CANARY_PIN, reference);
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
    }
}

/// `value` lower-cased, and as JSON escapes it (`/` as `\/`) and as
/// percent-encoding writes it, where those differ.
fn forms(value: &str) -> Vec<String> {
    let value = value.to_ascii_lowercase();
    let mut forms = vec![value.clone()];
    let escaped = value.replace('/', "\\/");
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02x}"),
        })
        .collect();
    for form in [escaped, encoded] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
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
