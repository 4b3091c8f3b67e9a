//! OkeBayar callbacks (spec §6): OkeBayar calls the registered URL by GET
//! (fields in the query string) or POST (an XML or JSON body, in the format
//! of the original request — sniffed, not trusted from `Content-Type`), with
//! at least `tracecode`, `referencecode`, `status` and `serialnumber`, several
//! times per transaction until final.
//!
//! Callbacks are **unsigned**, so a parsed callback is never `verified`
//! (money-safety rule 5): its `status` is only a claim, and the reconciler
//! answers it with a status check. Hostile input (DOCTYPE, entities, deep
//! nesting, oversize, control characters in identifiers) is refused as
//! [`CallbackError::Malformed`] before anything else looks at it.
//!
//! Acknowledgement (**ASSUMED**, spec §6: undocumented): HTTP 200 with a small
//! body in the callback's format (XML for GET and XML bodies, JSON for JSON
//! bodies); a refused callback gets HTTP 400 with a fixed reason that never
//! echoes the input.
//!
//! The receiver masks our PIN (alone, and glued to the userid as the
//! signature's input carries it) wherever a callback echoes it, given the
//! account in its `[okebayar]` settings ([`CallbackSettings`]). The stored
//! raw callback is masked whole before it is cut to [`MAX_RAW_CHARS`], so a
//! secret the cut would split leaves no part of itself behind.

use std::fmt;

use loket_connector::mask::Masker;
use loket_connector::report::clip;
use loket_connector::service::SettingError;
use loket_connector::{
    CallbackError, CallbackParser, CallbackReply, CallbackRequest, ParsedCallback,
};
use loket_protocol::Provider;
use loket_runtime::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codes;
use crate::wire::{self, Fields, Format, Place};

/// Bodies (and query strings) larger than this are refused.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;
/// The raw callback kept for the event log is cut to this many characters
/// (at most 64 KiB), once masked.
pub const MAX_RAW_CHARS: usize = 16 * 1024;
/// Longest accepted `referencecode` (ours are UUID-like).
pub const MAX_REFERENCE_LEN: usize = 64;

/// Field names whose values are masked in `raw_masked` should a callback
/// ever carry them.
const SECRET_FIELDS: [&str; 4] = ["userpin", "signature", "pin", "password"];
/// Longest value of a [`SECRET_FIELDS`] field accepted (an MD5 signature is
/// 32 hex characters, a PIN a few digits), and the most such values in one
/// callback. Each value is searched for in the whole body, in time its
/// length times the body's: a body planting one of 32,000 characters, or
/// thousands of short ones, would hold the receiver's thread for seconds.
const MAX_SECRET_FIELD_LEN: usize = 64;
const MAX_SECRET_FIELDS: usize = 8;

/// What the callback receiver knows of our OkeBayar account (`[okebayar]`
/// in its settings, `LOKET_OKEBAYAR__USERID` and `LOKET_OKEBAYAR__USERPIN`,
/// the connector's own values): only to mask the PIN should a callback echo
/// it. Callbacks are unsigned, so nothing is verified with them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct CallbackSettings {
    pub userid: String,
    pub userpin: Secret,
}

impl CallbackSettings {
    /// Both or neither: the PIN without the userid would leave the PIN glued
    /// to it unmasked (a numeric PIN right after a userid's digits is not
    /// found alone), and a userid without its PIN masks nothing. Errors name
    /// the key, never the PIN.
    pub fn validate(&self) -> Result<(), SettingError> {
        match (self.userid.trim().is_empty(), self.userpin.is_empty()) {
            (true, false) => Err(SettingError::new(
                "okebayar.userid",
                "must be set with okebayar.userpin (LOKET_OKEBAYAR__USERID, the connector's): \
                 the PIN glued to it is masked too",
            )),
            (false, true) => Err(SettingError::new(
                "okebayar.userpin",
                "must be set with okebayar.userid (LOKET_OKEBAYAR__USERPIN, the connector's): \
                 it is masked in every stored callback",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the PIN is configured (the receiver warns at start when not).
    pub fn is_set(&self) -> bool {
        !self.userpin.is_empty()
    }
}

/// The secrets our account reveals in a text: the PIN, and the PIN glued
/// to the userid as the signature's input carries it (spec §2), a secret of
/// its own since a numeric PIN glued to the userid's digits is not found
/// alone ([`Masker`]): the pair the connector masks in its exchanges
/// (`OkeBayarConnector::new`).
pub fn account_secrets(userid: &str, userpin: &Secret) -> [String; 2] {
    let pin = userpin.expose();
    [pin.to_string(), format!("{userid}{pin}")]
}

/// The parser the callback receiver registers for `okebayar`, masking the
/// account's PIN ([`account_secrets`]); an error names the key of a setting
/// that cannot work ([`CallbackSettings::validate`]). Nothing configured: a
/// parser that masks only the secret fields a callback names itself.
pub fn callback_parser(settings: &CallbackSettings) -> Result<OkeBayarCallbacks, SettingError> {
    settings.validate()?;
    if !settings.is_set() {
        return Ok(OkeBayarCallbacks::new());
    }
    Ok(OkeBayarCallbacks::with_secrets(account_secrets(
        &settings.userid,
        &settings.userpin,
    )))
}

/// Parses OkeBayar callbacks for the callback receiver.
#[derive(Clone, Default)]
pub struct OkeBayarCallbacks {
    masker: Masker,
}

impl fmt::Debug for OkeBayarCallbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OkeBayarCallbacks").finish_non_exhaustive()
    }
}

impl OkeBayarCallbacks {
    pub fn new() -> Self {
        OkeBayarCallbacks::default()
    }

    /// Also masks these values (e.g. the OkeBayar PIN) wherever they appear
    /// in the stored raw callback.
    pub fn with_secrets<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        OkeBayarCallbacks {
            masker: Masker::new(secrets),
        }
    }

    fn parse_inner(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        let (fields, raw) = read_fields(request)?;
        let reference = fields
            .non_empty("referencecode")
            .ok_or_else(|| malformed("referencecode is missing"))?;
        if reference.len() > MAX_REFERENCE_LEN || !reference.bytes().all(is_reference_byte) {
            return Err(malformed("referencecode is not a valid reference"));
        }
        let status = ["status", "transactionstatus", "responsecode"]
            .into_iter()
            .find_map(|name| fields.non_empty(name))
            .ok_or_else(|| malformed("status is missing"))?;
        if status.len() > 16 || !status.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("status is not a status code"));
        }
        let tracecode = bounded(&fields, "tracecode", 128)?;
        let serial = bounded(&fields, "serialnumber", 256)?;
        let claimed = codes::classify_callback(status);
        let secrets = secret_values(&fields)?;
        // The body's own PIN and signature and the configured secrets, in
        // the whole body before it is cut: a secret the cut splits is no
        // longer found whole. `masked` below masks the other texts.
        let raw = self.masker.mask(&Masker::new(secrets).mask(&raw));
        let raw_masked = clip(&raw, MAX_RAW_CHARS).to_string();
        Ok(ParsedCallback {
            provider_reference: reference.to_string(),
            provider_trace: tracecode.to_string(),
            provider_code: status.to_string(),
            serial_number: serial.to_string(),
            claimed_outcome: claimed.outcome,
            verified: false,
            provider_amount: None,
            provider_amount_unreadable: None,
            raw_masked,
            dedupe_key: dedupe_key(reference, status, tracecode, serial),
        }
        .masked(&self.masker))
    }
}

impl CallbackParser for OkeBayarCallbacks {
    fn provider(&self) -> Provider {
        Provider::OkeBayar
    }

    fn parse(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError> {
        let result = self.parse_inner(request);
        metrics::counter!(
            crate::metrics::CALLBACKS,
            "result" => if result.is_ok() { "ok" } else { "malformed" }
        )
        .increment(1);
        result
    }

    fn acknowledge(&self, request: &CallbackRequest, parsed: &ParsedCallback) -> CallbackReply {
        let format = reply_format(request);
        let body = wire::encode(
            format,
            wire::REPLY_ROOT,
            [
                ("status", "OK"),
                ("referencecode", parsed.provider_reference.as_str()),
            ],
        );
        CallbackReply {
            status: 200,
            content_type: format.content_type(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn reject(&self, request: &CallbackRequest, error: &CallbackError) -> CallbackReply {
        let format = reply_format(request);
        let reason = match error {
            CallbackError::Malformed(_) => "malformed callback",
            CallbackError::BadSignature(_) | CallbackError::BadToken(_) => "signature rejected",
            CallbackError::Stale => "stale callback",
        };
        let body = wire::encode(
            format,
            wire::REPLY_ROOT,
            [("status", "REJECTED"), ("reason", reason)],
        );
        CallbackReply {
            status: 400,
            content_type: format.content_type(),
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Every non-blank value of a [`SECRET_FIELDS`] field, wherever and however
/// often it is written (a blank first `signature` hides no later one), to
/// be masked in the body; refused past [`MAX_SECRET_FIELD_LEN`] or
/// [`MAX_SECRET_FIELDS`].
fn secret_values(fields: &Fields) -> Result<Vec<&str>, CallbackError> {
    let values: Vec<&str> = SECRET_FIELDS
        .iter()
        .flat_map(|name| fields.all(name))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    if values.len() > MAX_SECRET_FIELDS {
        return Err(malformed(
            "too many userpin, signature, pin or password fields",
        ));
    }
    if values
        .iter()
        .any(|value| value.len() > MAX_SECRET_FIELD_LEN)
    {
        return Err(malformed(
            "a userpin, signature, pin or password field is too long",
        ));
    }
    Ok(values)
}

fn malformed(why: &str) -> CallbackError {
    CallbackError::Malformed(why.to_string())
}

fn is_reference_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
}

/// An optional field, directly under the callback's root (spec §6: a flat
/// list of fields), at most `max` bytes of printable text. One found only
/// elsewhere is absent. Written there two ways (two serial numbers, two
/// tracecodes), the callback contradicts itself: neither is taken, and its
/// claim stands, checked by a status check like any unverified one, whose
/// reply carries the provider's own.
fn bounded<'a>(
    fields: &'a Fields,
    name: &'static str,
    max: usize,
) -> Result<&'a str, CallbackError> {
    let value = fields
        .one(Place::TopLevel, name)
        .ok()
        .flatten()
        .unwrap_or_default();
    if value.len() > max || value.chars().any(char::is_control) {
        return Err(CallbackError::Malformed(format!(
            "{name} is not acceptable"
        )));
    }
    Ok(value)
}

/// Retries of the same callback (same reference, status, trace and serial)
/// share this key; any difference makes a new one. Length-prefixed so no two
/// different tuples collide by concatenation.
pub fn dedupe_key(reference: &str, status: &str, tracecode: &str, serial: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"okebayar-callback-v1");
    for part in [reference, status, tracecode, serial] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    format!("okebayar:{}", hex::encode(hasher.finalize()))
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

fn is_form(request: &CallbackRequest) -> bool {
    request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// The callback's fields and its raw text, whole (the body or query, at
/// most [`MAX_CALLBACK_BYTES`]).
fn read_fields(request: &CallbackRequest) -> Result<(Fields, String), CallbackError> {
    let query = request.query.as_deref().unwrap_or_default();
    if request.body.len() > MAX_CALLBACK_BYTES || query.len() > MAX_CALLBACK_BYTES {
        return Err(malformed("callback too large"));
    }
    let use_body = match request.method {
        http::Method::GET => false,
        http::Method::POST => !is_blank(&request.body),
        _ => return Err(malformed("only GET and POST are accepted")),
    };
    if !use_body {
        let fields = parse_query(query)?;
        return Ok((fields, query.to_string()));
    }
    if is_form(request) {
        let text =
            std::str::from_utf8(&request.body).map_err(|_| malformed("form body is not UTF-8"))?;
        return Ok((parse_query(text)?, raw_text(&request.body)));
    }
    let format = Format::sniff(&request.body);
    let fields = wire::decode(format, &request.body)
        .map_err(|error| CallbackError::Malformed(error.to_string()))?;
    Ok((fields, raw_text(&request.body)))
}

fn raw_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The reply format: JSON when the callback body was JSON, else XML.
fn reply_format(request: &CallbackRequest) -> Format {
    if request.method == http::Method::POST && !is_blank(&request.body) && !is_form(request) {
        Format::sniff(&request.body)
    } else {
        Format::Xml
    }
}

/// `a=1&b=x%20y+z` → fields (percent- and `+`-decoded, UTF-8 required).
fn parse_query(query: &str) -> Result<Fields, CallbackError> {
    let mut fields = Fields::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if fields.len() >= wire::MAX_FIELDS {
            return Err(malformed("too many fields"));
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        fields.push(percent_decode(name)?, percent_decode(value)?);
    }
    Ok(fields)
}

fn percent_decode(text: &str) -> Result<String, CallbackError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .ok_or_else(|| malformed("bad percent-encoding"))?;
                let hex =
                    std::str::from_utf8(hex).map_err(|_| malformed("bad percent-encoding"))?;
                out.push(
                    u8::from_str_radix(hex, 16).map_err(|_| malformed("bad percent-encoding"))?,
                );
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| malformed("query is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use loket_protocol::Outcome;

    fn request(
        method: http::Method,
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> CallbackRequest {
        let mut headers = http::HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
        }
        CallbackRequest {
            method,
            path: "/callback/okebayar".into(),
            query: query.map(str::to_string),
            headers,
            body: Bytes::copy_from_slice(body),
            source_ip: Some("127.0.0.1".parse().unwrap()),
        }
    }

    fn parser() -> OkeBayarCallbacks {
        OkeBayarCallbacks::with_secrets(["CANARY-PIN-7731"])
    }

    #[test]
    fn get_query_string() {
        let req = request(
            http::Method::GET,
            Some("tracecode=1234567890123456&referencecode=LKT-01J9ABC&status=000&serialnumber=5512%2B3344+7788"),
            None,
            b"",
        );
        let parsed = parser().parse(&req).unwrap();
        assert_eq!(parsed.provider_reference, "LKT-01J9ABC");
        assert_eq!(parsed.provider_trace, "1234567890123456");
        assert_eq!(parsed.provider_code, "000");
        assert_eq!(parsed.serial_number, "5512+3344 7788");
        assert_eq!(parsed.claimed_outcome, Outcome::Success);
        assert!(!parsed.verified);
        let ack = parser().acknowledge(&req, &parsed);
        assert_eq!(ack.status, 200);
        assert_eq!(ack.content_type, "application/xml");
        assert!(ack
            .body
            .contains("<referencecode>LKT-01J9ABC</referencecode>"));
    }

    #[test]
    fn post_xml_and_json_bodies() {
        let xml = b"<transaction-status><tracecode>T1</tracecode><referencecode>REF1</referencecode><status>002</status><serialnumber></serialnumber></transaction-status>";
        let req = request(http::Method::POST, None, Some("text/plain"), xml);
        let parsed = parser().parse(&req).unwrap();
        assert_eq!(
            (parsed.provider_code.as_str(), parsed.claimed_outcome),
            ("002", Outcome::Pending)
        );
        assert_eq!(parsed.serial_number, "");
        assert!(!parsed.verified);
        assert_eq!(
            parser().acknowledge(&req, &parsed).content_type,
            "application/xml"
        );

        let json = br#"{"tracecode":"T2","referencecode":"REF1","status":"204","serialnumber":""}"#;
        let req = request(http::Method::POST, None, Some("application/xml"), json);
        let parsed = parser().parse(&req).unwrap();
        assert_eq!(
            (parsed.provider_code.as_str(), parsed.claimed_outcome),
            ("204", Outcome::Failed)
        );
        assert!(!parsed.verified);
        let ack = parser().acknowledge(&req, &parsed);
        assert_eq!((ack.status, ack.content_type), (200, "application/json"));
        assert!(ack.body.contains("\"referencecode\":\"REF1\""));

        // Form-encoded POST is accepted too; POST without a body reads the query.
        let req = request(
            http::Method::POST,
            None,
            Some("application/x-www-form-urlencoded"),
            b"referencecode=R9&status=000",
        );
        assert_eq!(parser().parse(&req).unwrap().provider_reference, "R9");
        let req = request(
            http::Method::POST,
            Some("referencecode=R8&status=001"),
            None,
            b"",
        );
        assert_eq!(
            parser().parse(&req).unwrap().claimed_outcome,
            Outcome::Pending
        );
    }

    #[test]
    fn verified_is_always_false_even_with_a_signature_field_and_secrets_are_masked() {
        let q = "referencecode=R1&status=000&signature=c684d40b4e003ffaf56407fb73624383&userpin=CANARY-PIN-7731";
        let parsed = parser()
            .parse(&request(http::Method::GET, Some(q), None, b""))
            .unwrap();
        assert!(!parsed.verified);
        assert!(!parsed.raw_masked.contains("CANARY-PIN-7731"));
        assert!(!parsed
            .raw_masked
            .contains("c684d40b4e003ffaf56407fb73624383"));
        assert!(!format!("{:?}", parser()).contains("CANARY"));
    }

    /// Every value of a secret field is masked, not only the first (here
    /// blank, or a duplicate); an over-long or repeated one is refused
    /// before the body is searched for it.
    #[test]
    fn every_secret_field_is_masked_and_hostile_ones_are_refused() {
        let q = "referencecode=R1&status=000&signature=&signature=c684d40b4e003ffaf56407fb73624383\
                 &pin=CANARY-PIN-1&pin=CANARY-PIN-2";
        let parsed = parser()
            .parse(&request(http::Method::GET, Some(q), None, b""))
            .unwrap();
        for secret in [
            "c684d40b4e003ffaf56407fb73624383",
            "CANARY-PIN-1",
            "CANARY-PIN-2",
        ] {
            assert!(!parsed.raw_masked.contains(secret), "{}", parsed.raw_masked);
        }

        let long = format!(
            "<transaction-status><referencecode>R1</referencecode><status>000</status>\
             <userpin>{}b</userpin><info>{}</info></transaction-status>",
            "a".repeat(30_000),
            "a".repeat(30_000)
        );
        let many: String = (0..9).map(|n| format!("&pin=p{n}")).collect();
        for request in [
            request(
                http::Method::POST,
                None,
                Some("application/xml"),
                long.as_bytes(),
            ),
            request(
                http::Method::GET,
                Some(&format!("referencecode=R1&status=000{many}")),
                None,
                b"",
            ),
        ] {
            match parser().parse(&request) {
                Err(CallbackError::Malformed(why)) => assert!(why.contains("pin"), "{why}"),
                other => panic!("a hostile secret field must be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn retries_share_a_dedupe_key_and_differences_do_not() {
        let a = parser()
            .parse(&request(
                http::Method::GET,
                Some("referencecode=R1&status=000&tracecode=T&serialnumber=S"),
                None,
                b"",
            ))
            .unwrap();
        let json = br#"{"serialnumber":"S","status":"000","tracecode":"T","referencecode":"R1"}"#;
        let b = parser()
            .parse(&request(http::Method::POST, None, None, json))
            .unwrap();
        assert_eq!(
            a.dedupe_key, b.dedupe_key,
            "same callback by GET and POST collapses"
        );
        let c = parser()
            .parse(&request(
                http::Method::GET,
                Some("referencecode=R1&status=002&tracecode=T&serialnumber=S"),
                None,
                b"",
            ))
            .unwrap();
        assert_ne!(a.dedupe_key, c.dedupe_key);
        assert_ne!(dedupe_key("ab", "c", "", ""), dedupe_key("a", "bc", "", ""));
    }

    #[test]
    fn hostile_or_incomplete_callbacks_are_malformed() {
        // The external entity names a file holding a canary: were it ever
        // expanded, the canary would show in a reply.
        let canary = "XXE-CANARY-5521";
        let file = std::env::temp_dir().join(format!("loket-xxe-{}", std::process::id()));
        std::fs::write(&file, canary).unwrap();
        let xxe = format!(
            r#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file://{}">]><transaction-status><referencecode>&x;</referencecode><status>000</status></transaction-status>"#,
            file.display()
        );
        let bomb = br#"<!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><t><referencecode>&c;</referencecode><status>000</status></t>"#;
        let deep = format!(
            "<t>{}<referencecode>R</referencecode><status>000</status>{}</t>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        let deep_json = format!(
            "{}{}",
            "{\"a\":".repeat(100),
            "1".to_string() + &"}".repeat(100)
        );
        let big = vec![b' '; MAX_CALLBACK_BYTES + 1];
        let mut big_body = b"<t><referencecode>R</referencecode><status>000</status>".to_vec();
        big_body.extend_from_slice(&big);
        big_body.extend_from_slice(b"</t>");
        let bodies: Vec<&[u8]> = vec![
            xxe.as_bytes(),
            bomb,
            deep.as_bytes(),
            deep_json.as_bytes(),
            b"<html><body>hello</body></html>",
            b"{\"referencecode\":",
            b"<t><status>000</status></t>",
            b"<t><referencecode>R1</referencecode></t>",
            b"<t><referencecode>R1 OR 1=1</referencecode><status>000</status></t>",
            b"<t><referencecode>R1</referencecode><status>000 and a very long status text</status></t>",
            &big_body,
            b"\xff\xfe\x00",
        ];
        let p = parser();
        for body in bodies {
            let req = request(http::Method::POST, None, Some("application/xml"), body);
            let error = p.parse(&req).unwrap_err();
            assert!(matches!(error, CallbackError::Malformed(_)), "{error:?}");
            let reply = p.reject(&req, &error);
            assert_eq!(reply.status, 400);
            assert!(!reply.body.contains(canary), "{}", reply.body);
            assert!(!error.to_string().contains(canary), "{error}");
        }
        std::fs::remove_file(&file).unwrap();
        for query in [
            "status=000",
            "referencecode=R1",
            "referencecode=%ZZ&status=000",
            "referencecode=%FF&status=000",
            "",
        ] {
            let req = request(http::Method::GET, Some(query), None, b"");
            assert!(
                matches!(p.parse(&req), Err(CallbackError::Malformed(_))),
                "{query}"
            );
        }
        let put = request(
            http::Method::PUT,
            Some("referencecode=R1&status=000"),
            None,
            b"",
        );
        assert!(matches!(p.parse(&put), Err(CallbackError::Malformed(_))));
    }

    /// A callback's serial number and tracecode are its own, directly under
    /// its root (spec §6): ones planted inside another element are not
    /// taken, before its own or without one.
    #[test]
    fn a_serial_or_trace_inside_another_element_is_not_the_callback_s() {
        let own = (
            "<x><serialnumber>6666</serialnumber><tracecode>T6</tracecode></x>\
             <serialnumber>5512</serialnumber><tracecode>T1</tracecode>",
            r#""x":{"serialnumber":"6666","tracecode":"T6"},"serialnumber":"5512","tracecode":"T1""#,
        );
        let planted_only = (
            "<x><serialnumber>6666</serialnumber><tracecode>T6</tracecode></x>",
            r#""x":{"serialnumber":"6666","tracecode":"T6"}"#,
        );
        for ((xml, json), serial, trace) in [(own, "5512", "T1"), (planted_only, "", "")] {
            for parsed in successes(xml, json) {
                assert_eq!(parsed.serial_number, serial, "{}", parsed.raw_masked);
                assert_eq!(parsed.provider_trace, trace, "{}", parsed.raw_masked);
                assert_eq!(parsed.claimed_outcome, Outcome::Success);
            }
        }
    }

    /// Two serial numbers (or tracecodes) in one callback contradict each
    /// other: neither is taken, and the claim stands, to be checked like any
    /// unverified one (the status check's reply carries the provider's own
    /// serial number). The same one twice is it.
    #[test]
    fn two_serial_numbers_in_a_callback_are_neither_taken() {
        for parsed in successes(
            "<serialnumber>1111</serialnumber><tracecode>T1</tracecode>\
             <serialnumber>2222</serialnumber><tracecode>T2</tracecode>",
            r#""serialnumber":"1111","tracecode":"T1","SERIALNUMBER":"2222","tracecode":"T2""#,
        ) {
            assert_eq!(parsed.serial_number, "", "{}", parsed.raw_masked);
            assert_eq!(parsed.provider_trace, "", "{}", parsed.raw_masked);
            assert_eq!(parsed.claimed_outcome, Outcome::Success);
        }
        for parsed in successes(
            "<serialnumber>1111</serialnumber><serialnumber> 1111 </serialnumber>",
            r#""serialnumber":"1111","serialnumber":1111"#,
        ) {
            assert_eq!(parsed.serial_number, "1111", "{}", parsed.raw_masked);
        }
    }

    /// A success callback for `R1` posted as XML, with `xml` inside its
    /// root, and as JSON, with `json` among its members, each parsed.
    fn successes(xml: &str, json: &str) -> [ParsedCallback; 2] {
        [
            format!(
                "<transaction-status><referencecode>R1</referencecode><status>000</status>\
                 {xml}</transaction-status>"
            ),
            format!(r#"{{"referencecode":"R1","status":"000",{json}}}"#),
        ]
        .map(|body| {
            parser()
                .parse(&request(http::Method::POST, None, None, body.as_bytes()))
                .unwrap()
        })
    }

    /// Guards against a secret the cut of the stored raw callback splits
    /// being stored in part: the PIN (configured, or the body's own
    /// `userpin`) starting 4 bytes before the cut, in an `info` field of an
    /// XML body, a JSON body and a query string, leaves no prefix of four or
    /// more of its characters in the stored text.
    #[test]
    fn a_secret_the_raw_cut_splits_leaves_no_part_behind() {
        const PIN: &str = "CANARY-PIN-7731";
        const OWN_PIN: &str = "OWN-PIN-90210";
        let start = MAX_RAW_CHARS - 4;
        // `head`, padding, then `tail` from byte `start`.
        let padded =
            |head: &str, tail: &str| format!("{head}{}{tail}", "x".repeat(start - head.len()));
        let xml = padded(
            "<transaction-status><referencecode>R1</referencecode><status>000</status><info>",
            &format!("{PIN} was sent</info></transaction-status>"),
        );
        let json = padded(
            r#"{"referencecode":"R1","status":"000","info":""#,
            &format!(r#"{PIN} was sent"}}"#),
        );
        let query = padded(
            "referencecode=R1&status=000&info=",
            &format!("{PIN}+was+sent"),
        );
        let own = padded(
            &format!("referencecode=R1&status=000&userpin={OWN_PIN}&info="),
            &format!("{OWN_PIN}+again"),
        );
        let cases = [
            (
                request(http::Method::POST, None, None, xml.as_bytes()),
                &xml,
                PIN,
            ),
            (
                request(http::Method::POST, None, None, json.as_bytes()),
                &json,
                PIN,
            ),
            (
                request(http::Method::GET, Some(&query), None, b""),
                &query,
                PIN,
            ),
            (
                request(http::Method::GET, Some(&own), None, b""),
                &own,
                OWN_PIN,
            ),
        ];
        for (request, text, secret) in cases {
            assert!(text[start..].starts_with(secret));
            let parsed = parser().parse(&request).unwrap();
            loket_test_support::masking::assert_masked_before_cut(
                &parsed.raw_masked,
                secret,
                MAX_RAW_CHARS,
            );
        }
    }

    #[test]
    fn garbled_status_claims_unknown() {
        let parsed = parser()
            .parse(&request(
                http::Method::GET,
                Some("referencecode=R1&status=OK"),
                None,
                b"",
            ))
            .unwrap();
        assert_eq!(parsed.claimed_outcome, Outcome::Unknown);
    }
}
