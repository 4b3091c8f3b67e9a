//! The bodies of loket's fuzz targets: one function per parser that reads
//! what a provider (or anyone posing as one) sends us, each taking raw bytes
//! and checking what must hold for every input, not only that nothing
//! panics. Signed callbacks are signed here with keys made for the run, so
//! the fuzzer reaches the parsing behind the signature check.
//!
//! They run twice: `make test` runs each over seed inputs and random and
//! mutated bytes (`tests/targets.rs`, stable Rust), and the cargo-fuzz
//! harness in `crates/fuzz/fuzz` runs them under libFuzzer for as long as
//! one likes (nightly Rust). This crate only reads; it never does I/O.

use std::sync::OnceLock;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use loket_connector::signing::minify;
use loket_connector::{CallbackParser, CallbackRequest, ParsedCallback};
use loket_okebayar::wire::{self as okebayar_wire, Format};
use loket_okebayar::OkeBayarCallbacks;
use loket_runtime::Secret;

/// A secret configured for masking; it must never come out of a parser.
pub const CANARY: &str = "CANARY-SECRET-5150";

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

/// [`CANARY`] is configured as a secret of the parser that made `parsed`.
fn check_masked(parsed: &ParsedCallback) {
    assert!(
        !parsed.raw_masked.contains(CANARY),
        "a configured secret survived masking: {:?}",
        parsed.raw_masked
    );
}

/// An OkeBayar reply body, read as XML, as JSON and as sniffed: never a
/// panic, never more fields than the limit, and a sniffed read equals the
/// read in the format sniffed. Every value also goes through the time
/// readers.
pub fn okebayar_reply(data: &[u8]) {
    for format in [Format::Xml, Format::Json] {
        if let Ok(fields) = okebayar_wire::decode(format, data) {
            assert!(fields.len() <= okebayar_wire::MAX_FIELDS);
            for (_, value) in fields.iter() {
                let _ = okebayar_wire::parse_time(value);
                let _ = okebayar_wire::parse_expiry(value, now());
            }
        }
    }
    let sniffed = Format::sniff(data);
    assert_eq!(
        okebayar_wire::decode(sniffed, data),
        okebayar_wire::decode(sniffed, data),
        "decoding is deterministic"
    );
}

/// An OkeBayar callback (unsigned): the first byte picks GET with the rest
/// as query, POST with the rest as body, or a POST form. True when accepted
/// (so are the callback targets below).
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
    check_masked(&parsed);
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

/// A SNAP notify body, signed by the issuer (mode A) so the body itself is
/// what is tested: an accepted notify is verified and carries a status.
pub fn snapqr_notify(data: &[u8]) -> bool {
    let (issuer, issuer_public, _, _) = keys();
    static PARSER: OnceLock<loket_snapqr::SnapQrCallbacks> = OnceLock::new();
    let parser = PARSER.get_or_init(|| {
        loket_snapqr::callback_parser(&loket_snapqr::NotifySettings {
            issuer_public_key: Secret::new(issuer_public.clone()),
            merchant_id: "M1".into(),
            ..loket_snapqr::NotifySettings::default()
        })
        .expect("a notify parser")
    });
    let stamp = now()
        .with_timezone(&loket_snapqr::connector::wib())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let path = loket_snapqr::NOTIFY_PATH;
    let mut headers = http::HeaderMap::new();
    for (name, value) in loket_snapqr::callback::sign_notify_rsa(issuer, path, data, &stamp) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    let mut request = request(http::Method::POST, None, headers, data);
    request.path = path.into();
    let Ok(parsed) = parser.parse_at(&request, now()) else {
        return false;
    };
    check_accepted(&parsed);
    assert!(parsed.verified, "a notify is accepted only verified");
    assert!(
        !parsed.provider_code.is_empty(),
        "accepted without a status"
    );
    true
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
    check_masked(&parsed);
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

/// Replies from SNAP and Smilepayz, read the lenient way the connectors
/// read them.
pub fn json_replies(data: &[u8]) {
    if let Ok(body) = loket_snapqr::wire::Body::parse(data) {
        for field in [
            "responseCode",
            "responseMessage",
            "referenceNo",
            "latestTransactionStatus",
            "paidTime",
        ] {
            let _ = body.str(field);
        }
        for field in ["amount", "refundAmount", "feeAmount"] {
            let _ = body.amount(field);
        }
    }
    if let Ok(reply) = loket_smilepayz::wire::Reply::parse(data) {
        if let Some(money) = &reply.money {
            let _ = loket_smilepayz::wire::money_from_wire(money);
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
