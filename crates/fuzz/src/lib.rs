//! The bodies of loket's fuzz targets: one function per parser that reads
//! what a provider (or anyone posing as one) sends us, each taking raw bytes
//! and checking what must hold for every input, not only that nothing
//! panics. Signed callbacks are signed here with keys made for the run, so
//! the fuzzer reaches the parsing behind the signature check.
//!
//! The checks are public functions of their own (`check_…`), so that tests
//! can show each one fails on the defect it is there to catch.
//!
//! They run twice: `make test` runs each over seed inputs and random and
//! mutated bytes (`tests/targets.rs`, stable Rust), and the cargo-fuzz
//! harness in `crates/fuzz/fuzz` runs them under libFuzzer for as long as
//! one likes (nightly Rust). This crate only reads; it never does I/O.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use loket_connector::http::{self as connector_http, HttpReply, Transport};
use loket_connector::mask::Masker;
use loket_connector::signing::minify;
use loket_connector::{CallbackParser, CallbackRequest, ParsedCallback};
use loket_okebayar::wire::{self as okebayar_wire, Format};
use loket_okebayar::OkeBayarCallbacks;
use loket_protocol::catalogue::{self, CodeOperation};
use loket_protocol::{Money, Outcome, Provider};
use loket_runtime::Secret;

/// A secret configured for masking; it must never come out of a parser.
pub const CANARY: &str = "CANARY-SECRET-5150";

/// A second secret, for the parser that has two: the SNAP notify parser's
/// token key ([`CANARY`] is its client secret).
pub const SECOND_CANARY: &str = "CANARY-TOKEN-KEY-6160";

/// What a field would hold had an XML parser expanded an entity the hostile
/// seeds declare: the start of `/etc/passwd`'s first line (an external
/// entity), and a text that two internal entities spell only together.
pub const ENTITY_MARKERS: [&str; 2] = ["root:", "LOKET-ENTITY-EXPANDED"];

/// A fixed clock, so a run is repeatable.
fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T10:00:00+07:00")
        .expect("a valid instant")
        .with_timezone(&Utc)
}

fn request(
    method: http::Method,
    query: Option<String>,
    headers: http::HeaderMap,
    body: &[u8],
) -> CallbackRequest {
    CallbackRequest {
        method,
        path: "/callback".into(),
        query,
        headers,
        body: Bytes::copy_from_slice(body),
        source_ip: None,
    }
}

/// What every accepted callback must look like, whichever the provider.
fn check_accepted(parsed: &ParsedCallback) {
    assert!(
        !parsed.provider_reference.is_empty(),
        "accepted without a reference"
    );
    assert!(
        !parsed.dedupe_key.is_empty(),
        "accepted without a de-duplication key"
    );
}

/// The texts of `parsed` that quote the callback and reach the bus, the
/// event log or the transaction's row, each named for an assertion's
/// message.
fn stored_texts(parsed: &ParsedCallback) -> impl Iterator<Item = (&'static str, &str)> {
    let texts = [
        ("the stored raw callback", &parsed.raw_masked),
        ("the reference", &parsed.provider_reference),
        ("the trace id", &parsed.provider_trace),
        ("the status code", &parsed.provider_code),
        ("the serial number", &parsed.serial_number),
        ("the de-duplication key", &parsed.dedupe_key),
    ];
    let why_unreadable = parsed
        .provider_amount_unreadable
        .as_ref()
        .map(|why| ("why the amount is unreadable", why));
    texts
        .into_iter()
        .chain(why_unreadable)
        .map(|(what, text)| (what, text.as_str()))
}

/// Every text of `parsed` that quotes the callback and is stored (the raw
/// body, the reference, trace id, status code, serial number, the
/// de-duplication key, why its amount could not be read) holds none of
/// `secrets`, the parser's configured secrets.
pub fn check_masked(parsed: &ParsedCallback, secrets: &[&str]) {
    for (what, text) in stored_texts(parsed) {
        check_secret_free(what, text, secrets);
    }
}

/// `text` holds none of `secrets`: not as written, and in no form the masker
/// finds (an escape, upper or lower case), which a masking that missed one
/// occurrence would leave behind.
pub fn check_secret_free(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} holds a configured secret: {text:?}"
        );
    }
    assert_eq!(
        Masker::new(secrets.iter().copied()).mask(text),
        text,
        "{what} holds a configured secret, escaped or in another case"
    );
}

/// Sniffing loses nothing: when a body reads in some format (`readable`),
/// the format `sniffed` for it is one of them. Otherwise a reply the
/// connector could read becomes unknown, and a callback is refused.
pub fn check_sniffed(sniffed: Format, readable: &[Format]) {
    assert!(
        readable.is_empty() || readable.contains(&sniffed),
        "the body was sniffed as {sniffed:?}, but only {readable:?} reads it"
    );
}

/// No entity was expanded: none of `values` (what a parser read from
/// `input`) holds an [`ENTITY_MARKERS`] marker that `input` does not write
/// itself, as is or through a reference or escape (as the masker reads
/// them).
pub fn check_no_entity_expanded<'a>(input: &[u8], values: impl IntoIterator<Item = &'a str>) {
    let text = String::from_utf8_lossy(input);
    let unwritten: Vec<&str> = ENTITY_MARKERS
        .into_iter()
        .filter(|marker| Masker::new([*marker]).mask(&text) == text)
        .collect();
    if unwritten.is_empty() {
        return;
    }
    for value in values {
        for marker in &unwritten {
            assert!(
                !value.contains(marker),
                "an entity was expanded: {value:?} holds {marker:?}, which the input does not write"
            );
        }
    }
}

/// `money`, read from the provider's `written` amount, is exactly what it
/// says: its whole part digit for digit (leading zeros aside), nothing but
/// zeros after the point (a fraction is refused, never rounded away), and
/// no sign turned into another.
pub fn check_exact(written: &str, money: Money) {
    let text = written.trim();
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let whole = whole.trim_start_matches('0');
    let digits = if whole.is_empty() { "0" } else { whole };
    assert!(
        money.minor.to_string() == digits
            && fraction.bytes().all(|b| b == b'0')
            && (unsigned == text || money.minor == 0),
        "the amount {written:?} was read as {money}"
    );
}

/// An OkeBayar reply body, read as XML and as JSON: never a panic, never
/// more fields than the limit, never an expanded entity, and the format the
/// connector sniffs reads it whenever either format does. Every value also
/// goes through the time readers.
pub fn okebayar_reply(data: &[u8]) {
    let mut readable = Vec::new();
    for format in [Format::Xml, Format::Json] {
        if let Ok(fields) = okebayar_wire::decode(format, data) {
            assert!(fields.len() <= okebayar_wire::MAX_FIELDS);
            check_no_entity_expanded(data, fields.iter().map(|(_, value)| value));
            for (_, value) in fields.iter() {
                let _ = okebayar_wire::parse_time(value);
                let _ = okebayar_wire::parse_expiry(value, now());
            }
            readable.push(format);
        }
    }
    check_sniffed(Format::sniff(data), &readable);
}

/// An OkeBayar callback (unsigned): the first byte picks GET with the rest
/// as query, POST with the rest as body, or a POST form; accepted, it is
/// unverified, masked, and holds no expanded entity. True when accepted (so
/// are the callback targets below).
pub fn okebayar_callback(data: &[u8]) -> bool {
    let Some((&selector, rest)) = data.split_first() else {
        return false;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let mut headers = http::HeaderMap::new();
    let request = match selector % 3 {
        0 => request(http::Method::GET, Some(text), headers, b""),
        1 => request(http::Method::POST, None, headers, rest),
        _ => {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            request(http::Method::POST, None, headers, rest)
        }
    };
    let parser = OkeBayarCallbacks::with_secrets([CANARY]);
    let Ok(parsed) = parser.parse(&request) else {
        return false;
    };
    check_accepted(&parsed);
    check_masked(&parsed, &[CANARY]);
    check_no_entity_expanded(rest, stored_texts(&parsed).map(|(_, text)| text));
    assert!(!parsed.verified, "an unsigned callback is never verified");
    assert_eq!(
        parser.parse(&request).as_ref(),
        Ok(&parsed),
        "parsing is deterministic"
    );
    true
}

/// Keys made once per run: (SNAP issuer, Smilepayz platform).
fn keys() -> &'static (rsa::RsaPrivateKey, String, rsa::RsaPrivateKey, String) {
    static KEYS: OnceLock<(rsa::RsaPrivateKey, String, rsa::RsaPrivateKey, String)> =
        OnceLock::new();
    KEYS.get_or_init(|| {
        let (snap_private, snap_public) = loket_snapqr::sign::generate_key_pair();
        let (smile_private, smile_public) = loket_smilepayz::sign::generate_key_pair();
        (
            loket_snapqr::sign::load_private_key(&snap_private).expect("a generated key"),
            snap_public,
            loket_smilepayz::sign::load_private_key(&smile_private).expect("a generated key"),
            smile_public,
        )
    })
}

/// The SNAP notify parser in each notify mode, both with [`CANARY`] as the
/// client secret and [`SECOND_CANARY`] as the token key, and an access token
/// it granted for mode B.
struct SnapNotify {
    by_issuer_signature: loket_snapqr::SnapQrCallbacks,
    by_granted_token: loket_snapqr::SnapQrCallbacks,
    token: String,
}

fn snap_notify() -> &'static SnapNotify {
    static SNAP_NOTIFY: OnceLock<SnapNotify> = OnceLock::new();
    SNAP_NOTIFY.get_or_init(|| {
        let (_, issuer_public, _, _) = keys();
        let settings = loket_snapqr::NotifySettings {
            issuer_public_key: Secret::new(issuer_public.clone()),
            client_secret: Secret::new(CANARY),
            token_key: Secret::new(SECOND_CANARY),
            issuer_client_key: "ISSUER-1".into(),
            merchant_id: "M1".into(),
            ..loket_snapqr::NotifySettings::default()
        };
        let parser = |mode| {
            // The issuer's client key is mode B's alone.
            let issuer_client_key = match mode {
                loket_snapqr::NotifyMode::Hmac => settings.issuer_client_key.clone(),
                loket_snapqr::NotifyMode::Rsa => String::new(),
            };
            loket_snapqr::callback_parser(&loket_snapqr::NotifySettings {
                mode,
                issuer_client_key,
                ..settings.clone()
            })
            .expect("a notify parser")
        };
        // A replica with the same token key accepts the tokens another
        // granted: this one stands for the replica the issuer asked.
        let token = loket_snapqr::b2b_token::NotifyTokens::new(
            SECOND_CANARY.as_bytes(),
            settings.token_ttl_secs,
        )
        .grant(now());
        SnapNotify {
            by_issuer_signature: parser(loket_snapqr::NotifyMode::Rsa),
            by_granted_token: parser(loket_snapqr::NotifyMode::Hmac),
            token,
        }
    })
}

/// A SNAP notify body, signed the way each notify mode wants (mode A:
/// SHA256withRSA by the issuer; mode B: HMAC-SHA512 with the client secret
/// over a token we granted), so the body itself is what is tested. Both
/// modes read it alike (the mode decides how a notify is authenticated, not
/// what it says); an accepted notify is verified, carries a status, and
/// quotes neither configured secret.
pub fn snapqr_notify(data: &[u8]) -> bool {
    let (issuer, _, _, _) = keys();
    let notify = snap_notify();
    let stamp = loket_protocol::wib::timestamp(now());
    let path = loket_snapqr::NOTIFY_PATH;
    let signed_by_issuer = loket_snapqr::callback::sign_notify_rsa(issuer, path, data, &stamp);
    let signed_with_token =
        loket_snapqr::callback::sign_notify_hmac(CANARY, &notify.token, path, data, &stamp);
    let read_by_issuer_signature = notify
        .by_issuer_signature
        .parse_at(&notify_request(data, signed_by_issuer), now());
    let read_by_granted_token = notify
        .by_granted_token
        .parse_at(&notify_request(data, signed_with_token), now());
    assert_eq!(
        read_by_issuer_signature, read_by_granted_token,
        "notify modes A and B read one body differently"
    );
    let Ok(parsed) = read_by_issuer_signature else {
        return false;
    };
    check_accepted(&parsed);
    assert!(parsed.verified, "a notify is accepted only verified");
    assert!(
        !parsed.provider_code.is_empty(),
        "accepted without a status"
    );
    check_masked(&parsed, &[CANARY, SECOND_CANARY]);
    true
}

/// A notify POSTed to the notify path with `headers`.
fn notify_request(
    data: &[u8],
    headers: impl IntoIterator<Item = (String, String)>,
) -> CallbackRequest {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            map.insert(name, value);
        }
    }
    let mut request = request(http::Method::POST, None, map, data);
    request.path = loket_snapqr::NOTIFY_PATH.into();
    request
}

/// A Smilepayz callback body, signed by the platform over its own `tradeNo`
/// (the spec's recipe) so the body is what is tested: accepted, it is still
/// unverified (the signature does not cover it) and masked.
pub fn smilepayz_callback(data: &[u8]) -> bool {
    use loket_smilepayz::sign;
    let (_, _, platform, platform_public) = keys();
    static PARSER: OnceLock<loket_smilepayz::SmilepayzCallbacks> = OnceLock::new();
    let parser = PARSER.get_or_init(|| {
        loket_smilepayz::callback_parser(&loket_smilepayz::CallbackSettings {
            platform_public_key: platform_public.clone(),
            mask_secrets: vec![Secret::new(CANARY)],
            ..loket_smilepayz::CallbackSettings::default()
        })
        .expect("a callback parser")
    });
    let trade_no = trade_no(data).unwrap_or_default();
    // Signed "now" by the parser's own clock: its window check reads the
    // real time.
    let stamp = sign::timestamp(loket_smilepayz::TimestampStyle::default(), Utc::now());
    let signature = sign::sign(
        platform,
        &sign::callback_string_to_sign(
            loket_smilepayz::CallbackRecipe::TradeNoTimestamp,
            &trade_no,
            &stamp,
            data,
        ),
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let (Ok(stamp), Ok(signature)) = (
        http::HeaderValue::from_str(&stamp),
        http::HeaderValue::from_str(&signature),
    ) {
        headers.insert("X-TIMESTAMP", stamp);
        headers.insert("X-SIGNATURE", signature);
    }
    let request = request(http::Method::POST, None, headers, data);
    let Ok(parsed) = parser.parse(&request) else {
        return false;
    };
    check_accepted(&parsed);
    check_masked(&parsed, &[CANARY]);
    // The spec's signature covers `tradeNo` and the time, not the body: an
    // inquiry must confirm what it says.
    assert!(
        !parsed.verified,
        "a body no signature covers counts as verified"
    );
    true
}

/// The `tradeNo` a body names, as the platform would sign it.
fn trade_no(data: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(data).ok()?;
    loket_smilepayz::wire::text(&body, "tradeNo")
}

/// Replies from SNAP and Smilepayz, recorded and read the way the
/// connectors record and read them: the stored copy and every text read
/// from a reply hold no secret; an amount is read exactly or not at all; a
/// SNAP `responseCode` is read as written; and the classification is total
/// and never `failed` where the reply cannot tell (money-safety rule 1),
/// for every money-moving operation.
pub fn json_replies(data: &[u8]) {
    let body = as_recorded(data);
    if let Ok(body) = loket_snapqr::wire::Body::parse(&body) {
        snapqr_reply(&body);
    }
    if let Ok(reply) = loket_smilepayz::wire::Reply::parse(&body) {
        smilepayz_reply(&reply);
    }
}

/// A reply body as a connector hands it to its parser: recorded for the
/// audit trail with [`CANARY`] masked, and rid of [`CANARY`] as of a
/// per-request secret (a signature, a token) the provider may echo. The
/// stored copy holds none of it.
fn as_recorded(data: &[u8]) -> Bytes {
    let masker = Masker::new([CANARY]);
    let mut exchange = loket_protocol::pb::bus::Exchange::default();
    let reply = HttpReply {
        status: 200,
        content_type: "application/json".into(),
        body: Bytes::copy_from_slice(data),
        elapsed: Duration::ZERO,
    };
    let recorded = connector_http::record(&mut exchange, Ok(reply), |text| masker.mask(text));
    check_secret_free("the stored reply", &exchange.response, &[CANARY]);
    match connector_http::without_echoes(recorded, &masker) {
        Transport::Reply(reply) => reply.body,
        other => unreachable!("a reply recorded as {}", other.label()),
    }
}

/// The operations of `provider` that move money: where reading a failure
/// that did not happen would let a transaction be sent again.
fn money_moving(provider: Provider) -> impl Iterator<Item = CodeOperation> {
    catalogue::operations(provider)
        .iter()
        .copied()
        .filter(|operation| operation.moves_money())
}

fn snapqr_reply(body: &loket_snapqr::wire::Body) {
    for field in [
        "responseCode",
        "responseMessage",
        "referenceNo",
        "latestTransactionStatus",
        "paidTime",
    ] {
        if let Some(text) = body.str(field) {
            check_secret_free(field, &text, &[CANARY]);
        }
    }
    for field in ["amount", "refundAmount", "feeAmount"] {
        if let (Ok(Some(amount)), Ok(Some(money))) = (body.amount(field), body.money(field)) {
            check_exact(&amount.value, money);
        }
    }
    let Some(code) = body.str("responseCode") else {
        return;
    };
    let Some(read) = loket_snapqr::wire::ResponseCode::parse(&code) else {
        return;
    };
    assert_eq!(read.to_string(), code, "a responseCode read as another");
    let server_error = read.http >= 500;
    for operation in money_moving(Provider::SnapQr) {
        if let Ok(explanation) = catalogue::explain(Provider::SnapQr, &code, Some(operation)) {
            assert!(
                !(server_error && explanation.outcome == Outcome::Failed),
                "{code}, a server error, failed a {operation}"
            );
        }
    }
}

/// HTTP statuses a Smilepayz creation reply is classified with.
const HTTP_STATUSES: [u16; 7] = [200, 400, 401, 404, 500, 502, 504];

fn smilepayz_reply(reply: &loket_smilepayz::wire::Reply) {
    use loket_smilepayz::codes;
    use loket_smilepayz::wire::OrderStatus;
    let channel = &reply.channel;
    for text in [
        &reply.code,
        &reply.response_code,
        &reply.message,
        &reply.order_no,
        &reply.trade_no,
        &reply.transaction_time,
        &reply.remark,
        &channel.payment_method,
        &channel.qr_string,
        &channel.va_number,
        &channel.payment_url,
        &channel.cash_account,
    ]
    .into_iter()
    .flatten()
    .map(String::as_str)
    .chain(reply.status.as_ref().map(OrderStatus::as_str))
    {
        check_secret_free("a text of the reply", text, &[CANARY]);
    }
    if let Some(money) = &reply.money {
        if let Ok(read) = loket_smilepayz::wire::money_from_wire(money) {
            let written = match &money["amount"] {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            check_exact(&written, read);
        }
    }
    let has_status = reply
        .status
        .as_ref()
        .is_some_and(|status| !matches!(status, OrderStatus::Unknown(_)));
    for operation in money_moving(Provider::Smilepayz) {
        for http in HTTP_STATUSES {
            let outcome = codes::classify_create(reply, operation, http).outcome;
            let why = format!("a {operation} creation reply on HTTP {http} read as {outcome:?}");
            assert_ne!(
                outcome,
                Outcome::Success,
                "{why}: only an inquiry or a callback decides"
            );
            if reply.classification_code().is_none() {
                assert_eq!(outcome, Outcome::Unknown, "{why} without a code");
            }
            if http >= 500 {
                assert_ne!(outcome, Outcome::Failed, "{why}");
            }
        }
        if !reply.is_success() || !has_status {
            assert_eq!(
                codes::classify_inquiry(reply, operation).outcome,
                Outcome::Unknown,
                "an inquiry not answered, or answered without a known status, decided a {operation}"
            );
        }
    }
}

/// The exact-bytes JSON minifier signatures are computed over: never a
/// panic; a valid document keeps its meaning and minifies to itself once
/// minified. (Not so for any bytes: removing whitespace can join `/ /` into
/// a comment. Sender and receiver each minify the bytes sent once, so only
/// determinism matters there.)
pub fn minifier(data: &[u8]) {
    let once = minify(data);
    assert_eq!(minify(data), once, "minify is deterministic");
    if let Ok(original) = serde_json::from_slice::<serde_json::Value>(data) {
        assert_eq!(
            minify(&once),
            once,
            "a minified document minifies to itself"
        );
        let kept: serde_json::Value =
            serde_json::from_slice(&once).expect("a minified valid document is still valid");
        assert_eq!(kept, original, "minify changed what the document says");
    }
}
