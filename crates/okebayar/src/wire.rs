//! OkeBayar's wire format: a flat list of lower-case fields, as XML children
//! of one root element (`<transaction>` for requests, `<transaction-status>`
//! for replies) or as one flat JSON object (spec §1).
//!
//! Decoding is defensive because replies and callbacks are untrusted:
//! - a `DOCTYPE` is refused outright, so no external entity, no entity
//!   expansion, no file or network access can happen;
//! - only the five predefined XML entities and character references decode;
//! - nesting deeper than [`MAX_DEPTH`] (XML elements; JSON objects and
//!   arrays) is refused as the decoder reaches it, and more than
//!   [`MAX_FIELDS`] fields are refused;
//! - names are matched case-insensitively (replies mix `PLN_*`, `RPTAG1`,
//!   `Inquiryexpired`), while [`Fields::root`] and
//!   [`Fields::first_non_lowercase_name`] let the simulator enforce the
//!   `<transaction>` root and lower-case request names (code `206`);
//! - nested elements (`additionaldata`) are flattened to their leaf names,
//!   each knowing where it stood: directly under the root, directly inside
//!   a block under the root, or deeper. A field that decides is read at the
//!   [`Place`] the spec gives it ([`Fields::at`], [`Fields::one`]), so one
//!   planted elsewhere (`<x><tracecode>…</tracecode></x>`) is not taken;
//! - a repeated name is kept as often as it is written, in XML and in JSON
//!   alike (a JSON object's duplicated key is not collapsed to its last
//!   value), so a reply that contradicts itself can be seen to
//!   ([`Fields::all`], [`Fields::one`]);
//! - JSON numbers keep their exact text (`11000.00` stays `11000.00`).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use loket_connector::json::{self, JsonError, Written};
use quick_xml::events::Event;

pub const MAX_DEPTH: usize = 8;
pub const MAX_FIELDS: usize = 512;

pub const REQUEST_ROOT: &str = "transaction";
pub const REPLY_ROOT: &str = "transaction-status";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Xml => "application/xml",
            Format::Json => "application/json",
        }
    }

    /// Guesses the format of a body: a JSON object starts with `{` (after
    /// any whitespace) not followed by `<`; the doc-literal
    /// `{ <transaction>… }` is XML, and so is anything else. The whitespace
    /// is skipped however long it runs (the body's size is bounded before it
    /// gets here): a reply padded beyond some fixed look-ahead must not be
    /// read in the format that cannot read it.
    pub fn sniff(body: &[u8]) -> Format {
        fn after_whitespace(bytes: &[u8]) -> &[u8] {
            let start = bytes
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(bytes.len());
            &bytes[start..]
        }
        match after_whitespace(body).split_first() {
            Some((b'{', rest)) if !after_whitespace(rest).starts_with(b"<") => Format::Json,
            _ => Format::Xml,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("DOCTYPE declarations are not accepted")]
    DocType,
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("JSON body is not an object")]
    NotAnObject,
    #[error("empty body")]
    Empty,
}

/// The longest quick-xml error quoted in [`WireError::Xml`].
const QUOTED_XML_ERROR_CHARS: usize = 160;

/// A quick-xml error as [`WireError::Xml`]: some quote the document (an
/// unknown entity's name, a mismatched tag), which the sender chose, so the
/// text is cut short and its line breaks and control characters escaped
/// before it reaches a log line or a report.
fn xml_error(error: quick_xml::Error) -> WireError {
    let escaped = error.to_string().escape_debug().to_string();
    WireError::Xml(loket_protocol::text::clip(&escaped, QUOTED_XML_ERROR_CHARS).to_string())
}

/// Decoded fields in document order, looked up case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// The XML root element's name; `None` for JSON (a flat object, spec
    /// §1) and for fields not read from a body (a callback's query string).
    root: Option<String>,
    /// Names of the elements, or JSON keys, below the root that hold fields
    /// rather than a value (`additionaldata`).
    containers: Vec<String>,
    entries: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    name: String,
    value: String,
    position: Position,
}

/// Where a decoded field stood in its document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    /// Directly under the root (and every field of a query string).
    TopLevel,
    /// Directly inside the container of this name, itself directly under
    /// the root (`additionaldata`).
    Block(String),
    /// Anywhere deeper.
    Deeper,
}

/// Where the spec puts a field (§4): directly under the root, or directly
/// inside the named block under the root (`additionaldata`, the biller's
/// per-product data). Block names, like field names, ignore ASCII case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place<'a> {
    TopLevel,
    Block(&'a str),
}

impl Field {
    /// Names are compared ignoring ASCII case (replies mix cases, spec §1).
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Whether the field stood exactly at `place`.
    fn is_at(&self, place: Place) -> bool {
        match (place, &self.position) {
            (Place::TopLevel, Position::TopLevel) => true,
            (Place::Block(wanted), Position::Block(block)) => block.eq_ignore_ascii_case(wanted),
            _ => false,
        }
    }
}

impl Fields {
    pub fn new() -> Self {
        Fields::default()
    }

    /// Adds a field directly under the root.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push(Field {
            name: name.into(),
            value: value.into(),
            position: Position::TopLevel,
        });
    }

    /// The first field with this name, ignoring ASCII case, at any depth. A
    /// reply may repeat a name (a duplicated tag or JSON key, or an
    /// `additionaldata` leaf named like a field of the reply itself): a
    /// value that decides anything, or that the customer is shown, is read
    /// at its place with [`Fields::one`] or [`Fields::at`], so that one
    /// planted elsewhere is not taken and repeats which disagree are seen.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|field| field.is(name))
            .map(|field| field.value.as_str())
    }

    /// The first field's value trimmed, `None` when absent or blank. Like
    /// [`Fields::get`], for what decides nothing (a message, a bill's
    /// details); a value that decides is read with [`Fields::one`].
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// The value of the fields with this name at `place`, trimmed, for a
    /// value that decides (what was charged, what was delivered, which hit
    /// it was): `Ok(None)` when absent or blank; a name written more than
    /// once there must say the same each time (blank ones aside), else
    /// [`Disagreement`]. A field anywhere else never counts: one inside
    /// `additionaldata` is the biller's product data, not the reply's, and
    /// one deeper or in another element is not where the spec puts it.
    pub fn one<'a>(
        &'a self,
        place: Place<'a>,
        name: &'a str,
    ) -> Result<Option<&'a str>, Disagreement<'a>> {
        let value = self.one_as_written(place, name)?;
        Ok(value.map(str::trim).filter(|value| !value.is_empty()))
    }

    /// Like [`Fields::one`], but the value as written, for one sent back
    /// verbatim (an inquiry's `ref1..3`, spec §4): the first non-blank one,
    /// or when all are blank the first (`Some("")` for a field present but
    /// empty). Repeats agree when they say the same trimmed.
    pub fn one_as_written<'a>(
        &'a self,
        place: Place<'a>,
        name: &'a str,
    ) -> Result<Option<&'a str>, Disagreement<'a>> {
        let mut first_blank = None;
        let mut said: Vec<(&str, &str)> = Vec::new();
        for written in self.at(place, name) {
            let value = written.trim();
            if value.is_empty() {
                first_blank.get_or_insert(written);
            } else if !said.iter().any(|(_, other)| *other == value) {
                said.push((written, value));
            }
        }
        match said.as_slice() {
            [] => Ok(first_blank),
            [(written, _)] => Ok(Some(written)),
            _ => Err(Disagreement(
                said.into_iter().map(|(_, value)| value).collect(),
            )),
        }
    }

    /// Every value of fields with this name, ignoring ASCII case, at any
    /// depth, in document order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |field| field.is(name))
            .map(|field| field.value.as_str())
    }

    /// Every value of fields with this name at `place` (so, at the top
    /// level, not inside `additionaldata`, whose per-product fields may
    /// reuse a name), in document order.
    pub fn at<'a>(&'a self, place: Place<'a>, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |field| field.is_at(place) && field.is(name))
            .map(|field| field.value.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|field| (field.name.as_str(), field.value.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The XML root element's name as written; `None` for JSON.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// A name in the document (the root, a container or a field) that is not
    /// all lower-case, if any (OkeBayar answers `206`).
    pub fn first_non_lowercase_name(&self) -> Option<&str> {
        self.root
            .iter()
            .chain(&self.containers)
            .map(String::as_str)
            .chain(self.entries.iter().map(|field| field.name.as_str()))
            .find(|name| name.chars().any(|c| c.is_ascii_uppercase()))
    }
}

/// The different values a reply gives one field ([`Fields::one`]), in
/// document order. Shown, each is cut to [`Disagreement::QUOTED_CHARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement<'a>(pub Vec<&'a str>);

impl Disagreement<'_> {
    pub const QUOTED_CHARS: usize = 64;
}

impl std::fmt::Display for Disagreement<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "written {} ways:", self.0.len())?;
        for (i, value) in self.0.iter().enumerate() {
            let value = loket_protocol::text::clip(value, Self::QUOTED_CHARS);
            write!(f, "{} {value:?}", if i == 0 { "" } else { "," })?;
        }
        Ok(())
    }
}

/// Encodes fields under `root` (XML) or as a flat object (JSON).
pub fn encode<'a>(
    format: Format,
    root: &str,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<u8> {
    match format {
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
            out.push('<');
            out.push_str(root);
            out.push('>');
            for (name, value) in fields {
                out.push('<');
                out.push_str(name);
                out.push('>');
                out.push_str(&quick_xml::escape::escape(value));
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            out.push_str("</");
            out.push_str(root);
            out.push('>');
            out.into_bytes()
        }
        Format::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), json_value(k, v)))
                .collect();
            serde_json::to_vec(&object).expect("a map of strings and numbers always serializes")
        }
    }
}

/// Request fields the spec types as numbers (§4: the payment's `nominal` and
/// `adminfee` are Double).
const NUMBER_FIELDS: [&str; 2] = ["nominal", "adminfee"];

/// A field's JSON value: a number for [`NUMBER_FIELDS`], written with the
/// digits as received from the inquiry (exact, no float), else a string.
fn json_value(name: &str, value: &str) -> serde_json::Value {
    if NUMBER_FIELDS.contains(&name) {
        if let Ok(number) = value.trim().parse::<serde_json::Number>() {
            return serde_json::Value::Number(number);
        }
    }
    serde_json::Value::String(value.to_string())
}

pub fn decode(format: Format, body: &[u8]) -> Result<Fields, WireError> {
    match format {
        Format::Xml => decode_xml(body),
        Format::Json => decode_json(body),
    }
}

fn decode_xml(body: &[u8]) -> Result<Fields, WireError> {
    let text = std::str::from_utf8(body).map_err(|_| WireError::NotUtf8)?;
    let mut text = text.trim();
    // Doc-literal quirk: XML wrapped in `{ … }`.
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        if inner.trim_start().starts_with('<') {
            text = inner.trim();
        }
    }
    if text.is_empty() {
        return Err(WireError::Empty);
    }
    // Leaf text is kept exactly as sent: ref1..ref3 must go back verbatim
    // (spec §4). Readers trim where they need to ([`Fields::non_empty`]).
    let mut reader = quick_xml::Reader::from_str(text);
    let mut fields = Fields::new();
    // Open elements: name and whether a child element was seen.
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut current_text = String::new();
    let mut saw_root = false;
    loop {
        let event = reader.read_event().map_err(xml_error)?;
        match event {
            Event::DocType(_) => return Err(WireError::DocType),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::PI(_) => {
                return Err(WireError::Xml(
                    "processing instructions are not accepted".into(),
                ))
            }
            Event::Start(start) => {
                if stack.is_empty() && saw_root {
                    return Err(WireError::Xml("more than one root element".into()));
                }
                saw_root = true;
                if stack.len() >= MAX_DEPTH {
                    return Err(WireError::TooDeep);
                }
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(|_| WireError::NotUtf8)?
                    .to_string();
                match stack.last_mut() {
                    Some(parent) => parent.1 = true,
                    None => fields.root = Some(name.clone()),
                }
                stack.push((name, false));
                current_text.clear();
            }
            Event::Empty(start) => {
                let name = start.name();
                let name = std::str::from_utf8(name.as_ref()).map_err(|_| WireError::NotUtf8)?;
                let Some(parent) = stack.last_mut() else {
                    if saw_root {
                        return Err(WireError::Xml("more than one root element".into()));
                    }
                    saw_root = true;
                    fields.root = Some(name.to_string());
                    continue;
                };
                parent.1 = true;
                fields.push_decoded(name, "", leaf_position(&stack))?;
            }
            Event::Text(text) => {
                let value = text.unescape().map_err(xml_error)?;
                if stack.is_empty() {
                    if value.trim().is_empty() {
                        continue;
                    }
                    return Err(WireError::Xml("text outside the root element".into()));
                }
                current_text.push_str(&value);
            }
            Event::CData(data) => {
                let value = std::str::from_utf8(&data).map_err(|_| WireError::NotUtf8)?;
                current_text.push_str(value);
            }
            Event::End(_) => {
                let (name, had_child) = stack
                    .pop()
                    .ok_or_else(|| WireError::Xml("unbalanced end tag".into()))?;
                // A leaf below the root becomes a field; containers (the
                // root, `additionaldata`) contribute only their leaves.
                if !stack.is_empty() {
                    if had_child {
                        fields.containers.push(name);
                    } else {
                        fields.push_decoded(&name, &current_text, leaf_position(&stack))?;
                    }
                }
                current_text.clear();
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(WireError::Xml("unexpected end of document".into()));
    }
    if !saw_root {
        return Err(WireError::Empty);
    }
    Ok(fields)
}

/// The position of an XML leaf whose open elements, the root first, are
/// `ancestors` (each with whether it has a child).
fn leaf_position(ancestors: &[(String, bool)]) -> Position {
    match ancestors {
        [_root] => Position::TopLevel,
        [_root, (block, _)] => Position::Block(block.clone()),
        _ => Position::Deeper,
    }
}

impl Fields {
    /// Adds a decoded field, within [`MAX_FIELDS`].
    fn push_decoded(
        &mut self,
        name: &str,
        value: &str,
        position: Position,
    ) -> Result<(), WireError> {
        if self.len() >= MAX_FIELDS {
            return Err(WireError::TooManyFields);
        }
        self.entries.push(Field {
            name: name.to_string(),
            value: value.to_string(),
            position,
        });
        Ok(())
    }
}

fn decode_json(body: &[u8]) -> Result<Fields, WireError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(WireError::Empty);
    }
    // Read as written: every member of an object in document order, a
    // duplicated key included (`serde_json::Value` keeps only the last, so a
    // reply saying `"transactionstatus":"000"` and then `"203"` would read
    // as the second). Nesting past MAX_DEPTH is refused where the parser
    // reaches it, so no deeper part of a body is held (a 1 MB reply nested
    // 120 deep once cost over 1 GB buffered level by level).
    let value = json::read(body, MAX_DEPTH).map_err(|error| match error {
        JsonError::TooDeep(_) => WireError::TooDeep,
        other => WireError::Json(other.to_string()),
    })?;
    let Written::Object(object) = value else {
        return Err(WireError::NotAnObject);
    };
    let mut fields = Fields::new();
    flatten_json(&object, &mut fields, &Position::TopLevel)?;
    Ok(fields)
}

/// Adds an object's members to `fields`, each value as a field at
/// `position` (the object's members' own), and each object, or the objects
/// of an array, as a container: an object directly in the body is a block,
/// as an XML element under the root would be; the leaves of anything
/// deeper, an array's objects included, are deeper.
fn flatten_json(
    object: &[(String, Written)],
    fields: &mut Fields,
    position: &Position,
) -> Result<(), WireError> {
    for (name, value) in object {
        let mut push = |value: &str| fields.push_decoded(name, value, position.clone());
        match value {
            Written::Text(text) => push(text)?,
            Written::Number(number) => push(&number.to_string())?,
            Written::Bool(flag) => push(&flag.to_string())?,
            Written::Null => push("")?,
            Written::Object(inner) => {
                fields.containers.push(name.clone());
                let inner_position = match position {
                    Position::TopLevel => Position::Block(name.clone()),
                    Position::Block(_) | Position::Deeper => Position::Deeper,
                };
                flatten_json(inner, fields, &inner_position)?;
            }
            Written::Array(items) => {
                fields.containers.push(name.clone());
                for item in items {
                    if let Written::Object(inner) = item {
                        flatten_json(inner, fields, &Position::Deeper)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// OkeBayar's time zone: WIB, UTC+7 (ASSUMED, spec §1).
pub use loket_protocol::wib;

/// Formats `YYMMDDHHmmssSSS` in WIB.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&wib())
        .format("%y%m%d%H%M%S%3f")
        .to_string()
}

/// Parses the three time formats the spec shows (§9): `YYMMDDHHmmssSSS`
/// (15 digits), `yyMMddhhmmss` (12 digits, read here with a 24-hour clock;
/// for `Inquiryexpired`, whose `hh` is 12-hour, see [`parse_expiry`]) and
/// `2020-03-25 20:09:12.374`, all in WIB.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let naive = if text.len() == 15 && text.bytes().all(|b| b.is_ascii_digit()) {
        NaiveDateTime::parse_from_str(
            &format!("20{}.{}", &text[..12], &text[12..]),
            "%Y%m%d%H%M%S%.3f",
        )
        .ok()?
    } else if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
        NaiveDateTime::parse_from_str(&format!("20{text}"), "%Y%m%d%H%M%S").ok()?
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S"))
            .ok()?
    };
    wib()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses `Inquiryexpired` (spec §9), answered at `answered_at`. Its
/// 12-digit form is `yyMMddhhmmss` with Java's 12-hour `hh` (01–12) and no
/// AM/PM, so `08` may be 08 or 20 o'clock: of the two, the earliest not
/// before the answer is taken (an inquiry cannot expire before it was
/// answered), else the later one. An hour of 00 or 13–23 can only be
/// 24-hour and is read as such. The other formats go to [`parse_time`].
pub fn parse_expiry(text: &str, answered_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return parse_time(text);
    }
    let as_read = parse_time(text)?;
    let hour: u32 = text[6..8].parse().ok()?;
    if !(1..=12).contains(&hour) {
        return Some(as_read);
    }
    // as_read took `hh` as 24-hour: 01–11 in the morning, 12 at noon.
    let shift = chrono::Duration::hours(12);
    let (morning, evening) = if hour == 12 {
        (as_read - shift, as_read)
    } else {
        (as_read, as_read + shift)
    };
    Some(if morning >= answered_at {
        morning
    } else {
        evening
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_twelve_digit_expiry_is_read_with_a_12_hour_clock_after_the_answer() {
        // WIB is UTC+7.
        let wib = |d, h, m| {
            Utc.with_ymd_and_hms(2020, 3, d, h, m, 12).unwrap() - chrono::Duration::hours(7)
        };
        let answered = wib(25, 19, 39);
        // 08 after a 19:39 answer is 20:09 the same day.
        assert_eq!(parse_expiry("200325080912", answered), Some(wib(25, 20, 9)));
        // Next day: both readings are after the answer, the earlier is taken.
        assert_eq!(parse_expiry("200326080912", answered), Some(wib(26, 8, 9)));
        // 12 is 00 or 12 o'clock.
        assert_eq!(parse_expiry("200326120912", answered), Some(wib(26, 0, 9)));
        assert_eq!(
            parse_expiry("200325120912", wib(25, 11, 0)),
            Some(wib(25, 12, 9))
        );
        // Both before the answer: the later (already expired).
        assert_eq!(parse_expiry("200325050912", answered), Some(wib(25, 17, 9)));
        // 20 can only be 24-hour; the other formats are not ambiguous.
        assert_eq!(parse_expiry("200325200912", answered), Some(wib(25, 20, 9)));
        assert_eq!(
            parse_expiry("2020-03-25 08:09:12", answered),
            Some(wib(25, 8, 9))
        );
        assert_eq!(parse_expiry("tomorrow", answered), None);
    }

    #[test]
    fn xml_round_trip_keeps_order_and_escapes() {
        let body = encode(Format::Xml, REQUEST_ROOT, [("a", "1 < 2 & 3"), ("b", "")]);
        let fields = decode(Format::Xml, &body).unwrap();
        assert_eq!(fields.get("a"), Some("1 < 2 & 3"));
        assert_eq!(fields.get("b"), Some(""));
        assert_eq!(
            fields.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn leaf_text_is_kept_verbatim_and_layout_between_tags_is_ignored() {
        let xml = b"\n<transaction-status>\n  <ref2>  R2 </ref2>\n  <status>000</status>\n  <ref3></ref3>\n</transaction-status>\n";
        let fields = decode(Format::Xml, xml).unwrap();
        assert_eq!(fields.get("ref2"), Some("  R2 "));
        assert_eq!(fields.non_empty("ref2"), Some("R2"));
        assert_eq!(fields.get("status"), Some("000"));
        assert_eq!(fields.get("ref3"), Some(""));
        assert_eq!(fields.len(), 3, "{fields:?}");
        // Text outside the root is still refused.
        assert!(decode(Format::Xml, b"<a><b>1</b></a>junk").is_err());
    }

    #[test]
    fn json_payment_amounts_are_numbers_with_the_inquiry_s_digits() {
        let body = encode(
            Format::Json,
            REQUEST_ROOT,
            [
                ("nominal", "11000.00"),
                ("adminfee", "2500"),
                ("ref2", "0012"),
            ],
        );
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"nominal":11000.00,"adminfee":2500,"ref2":"0012"}"#
        );
        // Not a number: kept as text rather than lost.
        let body = encode(Format::Json, REQUEST_ROOT, [("nominal", "n/a")]);
        assert_eq!(String::from_utf8(body).unwrap(), r#"{"nominal":"n/a"}"#);
    }

    #[test]
    fn names_match_case_insensitively_and_uppercase_is_detectable() {
        let xml = b"<transaction-status><PLN_NOMETER>123</PLN_NOMETER><Inquiryexpired>x</Inquiryexpired></transaction-status>";
        let fields = decode(Format::Xml, xml).unwrap();
        assert_eq!(fields.get("pln_nometer"), Some("123"));
        assert_eq!(fields.get("inquiryexpired"), Some("x"));
        assert_eq!(fields.first_non_lowercase_name(), Some("PLN_NOMETER"));
    }

    #[test]
    fn nested_additionaldata_is_flattened() {
        let xml = b"<transaction-status><responsecode>000</responsecode><additionaldata><caid>9</caid><blth1>202401</blth1></additionaldata></transaction-status>";
        let fields = decode(Format::Xml, xml).unwrap();
        assert_eq!(fields.get("caid"), Some("9"));
        assert_eq!(fields.get("blth1"), Some("202401"));
        assert_eq!(fields.get("responsecode"), Some("000"));
    }

    #[test]
    fn doc_literal_braces_are_tolerated() {
        let fields = decode(Format::Xml, b"{ <transaction><a>1</a></transaction> }").unwrap();
        assert_eq!(fields.get("a"), Some("1"));
        assert_eq!(Format::sniff(b"{ <transaction>"), Format::Xml);
        assert_eq!(Format::sniff(b" {\"a\":1}"), Format::Json);
    }

    /// Guards the sniff's look-ahead: whitespace of any length before a
    /// JSON object, or between a doc-literal's brace and its XML, leaves
    /// the body read in the format that can read it (a 64-byte look-ahead
    /// read the first as XML, the second as JSON: a reply turned unknown,
    /// a callback refused).
    #[test]
    fn a_body_is_sniffed_past_whitespace_of_any_length() {
        let padding = " \r\n\t".repeat(50);
        let json = format!("{padding}{{{padding}\"responsecode\":\"000\"}}");
        assert_eq!(Format::sniff(json.as_bytes()), Format::Json);
        assert!(decode(Format::sniff(json.as_bytes()), json.as_bytes()).is_ok());
        let literal = format!("{{{padding}<transaction><a>1</a></transaction> }}");
        assert_eq!(Format::sniff(literal.as_bytes()), Format::Xml);
        assert!(decode(Format::sniff(literal.as_bytes()), literal.as_bytes()).is_ok());
        assert_eq!(Format::sniff(padding.as_bytes()), Format::Xml);
        assert_eq!(Format::sniff(b""), Format::Xml);
    }

    /// An error quoting the document (an unknown entity, a mismatched
    /// tag) quotes it cut short, on one line: the text reaches log lines.
    #[test]
    fn an_xml_error_quotes_the_document_short_and_on_one_line() {
        let name = format!("x{}\nforged log line", "y".repeat(60_000));
        for body in [
            format!("<transaction><a>&{name};</a></transaction>"),
            format!("<transaction><{name}>1</a></transaction>"),
        ] {
            let Err(WireError::Xml(error)) = decode(Format::Xml, body.as_bytes()) else {
                panic!("must be refused")
            };
            assert!(error.chars().count() <= QUOTED_XML_ERROR_CHARS, "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn hostile_xml_is_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]><transaction><a>&x;</a></transaction>"#;
        assert_eq!(decode(Format::Xml, xxe), Err(WireError::DocType));
        let bomb = br#"<!DOCTYPE t [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><t><a>&b;</a></t>"#;
        assert_eq!(decode(Format::Xml, bomb), Err(WireError::DocType));
        let undeclared = b"<transaction><a>&x;</a></transaction>";
        assert!(matches!(
            decode(Format::Xml, undeclared),
            Err(WireError::Xml(_))
        ));
        let deep = format!("{}{}", "<a>".repeat(50), "</a>".repeat(50));
        assert_eq!(
            decode(Format::Xml, deep.as_bytes()),
            Err(WireError::TooDeep)
        );
        for garbled in [
            &b"<transaction><a>1</transaction>"[..],
            b"<html><body>502 Bad Gateway",
            b"",
            b"\xff\xfe",
        ] {
            assert!(decode(Format::Xml, garbled).is_err());
        }
    }

    #[test]
    fn json_keeps_exact_numbers_and_flattens() {
        let fields = decode(
            Format::Json,
            br#"{"harga":11000.00,"balance":50590000,"x":{"caid":"7"},"ok":true}"#,
        )
        .unwrap();
        assert_eq!(fields.get("harga"), Some("11000.00"));
        assert_eq!(fields.get("balance"), Some("50590000"));
        assert_eq!(fields.get("caid"), Some("7"));
        assert!(matches!(
            decode(Format::Json, b"[1,2]"),
            Err(WireError::NotAnObject)
        ));
        assert!(matches!(
            decode(Format::Json, b"{\"a\":"),
            Err(WireError::Json(_))
        ));
        let deep = format!("{}{}", "{\"a\":".repeat(40), "}".repeat(40));
        assert!(decode(Format::Json, deep.as_bytes()).is_err());
    }

    /// JSON nested past MAX_DEPTH is refused where the decoder reaches it:
    /// nothing deeper is read, let alone held. serde's untagged enum, which
    /// read it before, buffered every level's subtree anew before the bound
    /// was checked: a 1 MB reply nested 120 deep peaked at 121 MB (an
    /// escaped string at the bottom) to 1.3 GB (166 000 members there).
    #[test]
    fn json_nested_too_deep_is_refused_before_the_rest_is_read() {
        let open = |levels: usize| "{\"a\":".repeat(levels);
        let close = |levels: usize| "}".repeat(levels);
        // Past the bound lies what is not even JSON: it is never reached.
        let body = format!("{}{{\"k\":\"\\n\",\"k\":2}} not JSON", open(MAX_DEPTH));
        assert_eq!(
            decode(Format::Json, body.as_bytes()),
            Err(WireError::TooDeep)
        );
        let members = vec![r#""k":"\n""#; 100_000].join(",");
        let body = format!("{}{{{members}}}{}", open(120), close(120));
        assert_eq!(
            decode(Format::Json, body.as_bytes()),
            Err(WireError::TooDeep)
        );
        // At the bound, a body is read.
        let body = format!(
            "{}{{\"k\":\"v\"}}{}",
            open(MAX_DEPTH - 1),
            close(MAX_DEPTH - 1)
        );
        let fields = decode(Format::Json, body.as_bytes()).unwrap();
        assert_eq!(fields.at(Place::TopLevel, "k").count(), 0);
        assert_eq!(fields.get("k"), Some("v"));
    }

    /// A repeated name is kept as often as it is written, in XML and JSON
    /// alike: serde_json's `Value` keeps only the last of a JSON object's
    /// duplicated keys, so a reply could hide one of two contradicting
    /// statuses. Leaves of a container are told apart from the reply's own.
    #[test]
    fn repeated_names_are_all_kept_and_nested_ones_told_apart() {
        let xml = b"<transaction-status><responsecode>203</responsecode>\
            <responsecode>000</responsecode><additionaldata><responsecode>00</responsecode>\
            </additionaldata></transaction-status>";
        let json = br#"{"responsecode":"203","responsecode":"000","additionaldata":{"responsecode":"00"}}"#;
        for (format, body) in [(Format::Xml, &xml[..]), (Format::Json, &json[..])] {
            let fields = decode(format, body).unwrap();
            assert_eq!(
                fields.all("responsecode").collect::<Vec<_>>(),
                ["203", "000", "00"],
                "{format:?}"
            );
            assert_eq!(
                fields
                    .at(Place::TopLevel, "RESPONSECODE")
                    .collect::<Vec<_>>(),
                ["203", "000"],
                "{format:?}"
            );
            assert_eq!(fields.get("responsecode"), Some("203"), "{format:?}");
        }
    }

    /// A leaf knows where it stood: directly under the root, directly in a
    /// block under the root (its name in any case), or deeper; an array's
    /// objects, in JSON, are deeper. Each is found only at its own place.
    #[test]
    fn a_field_is_found_only_at_its_place() {
        let xml = b"<transaction-status><x><t>block</t><y><t>deeper</t></y></x>            <t>top</t></transaction-status>";
        let json = br#"{"x":{"t":"block","y":{"t":"deeper"}},"list":[{"t":"item"}],"t":"top"}"#;
        for (format, body) in [(Format::Xml, &xml[..]), (Format::Json, &json[..])] {
            let fields = decode(format, body).unwrap();
            let at = |place| fields.at(place, "T").collect::<Vec<_>>();
            assert_eq!(at(Place::TopLevel), ["top"], "{format:?}");
            assert_eq!(at(Place::Block("X")), ["block"], "{format:?}");
            assert!(at(Place::Block("y")).is_empty(), "{format:?}");
            assert!(at(Place::Block("list")).is_empty(), "{format:?}");
            assert_eq!(fields.get("t"), Some("block"), "{format:?}");
        }
    }

    /// One value at a place: blank repeats aside, repeats must agree
    /// (trimmed); as written, the first non-blank one is kept verbatim, and
    /// a field present only blank reads as empty rather than absent.
    #[test]
    fn one_value_is_read_at_its_place_and_repeats_must_agree() {
        let read = |body: &str| decode(Format::Xml, body.as_bytes()).unwrap();
        let fields = read("<r><a></a><a> A1 </a><a>A1</a><b> </b><c>1</c><c>2</c></r>");
        assert_eq!(fields.one(Place::TopLevel, "a"), Ok(Some("A1")));
        assert_eq!(
            fields.one_as_written(Place::TopLevel, "a"),
            Ok(Some(" A1 "))
        );
        assert_eq!(fields.one(Place::TopLevel, "b"), Ok(None));
        assert_eq!(fields.one_as_written(Place::TopLevel, "b"), Ok(Some(" ")));
        assert_eq!(fields.one_as_written(Place::TopLevel, "z"), Ok(None));
        let disagreement = Disagreement(vec!["1", "2"]);
        assert_eq!(fields.one(Place::TopLevel, "c"), Err(disagreement.clone()));
        assert_eq!(
            fields.one_as_written(Place::TopLevel, "c"),
            Err(disagreement)
        );
        // Elsewhere than asked, a value is absent.
        let fields = read("<r><x><a>A1</a></x><x><y><b>B</b></y></x></r>");
        assert_eq!(fields.one(Place::TopLevel, "a"), Ok(None));
        assert_eq!(fields.one(Place::Block("x"), "a"), Ok(Some("A1")));
        assert_eq!(fields.one(Place::Block("x"), "b"), Ok(None));
    }

    /// Spec §1 / §8.6: a request's root is `<transaction>` and every name is
    /// lower-case, else `206`; the decoder names the root and the containers
    /// so that the simulator can check them too, not only the leaves.
    #[test]
    fn the_root_and_container_names_are_exposed() {
        let fields = decode(Format::Xml, b"<TRANSACTION><a>1</a></TRANSACTION>").unwrap();
        assert_eq!(fields.root(), Some("TRANSACTION"));
        assert_eq!(fields.first_non_lowercase_name(), Some("TRANSACTION"));
        let fields = decode(
            Format::Xml,
            b"<transaction><AdditionalData><a>1</a></AdditionalData></transaction>",
        )
        .unwrap();
        assert_eq!(fields.root(), Some("transaction"));
        assert_eq!(fields.first_non_lowercase_name(), Some("AdditionalData"));
        let empty = decode(Format::Xml, b"<transaction/>").unwrap();
        assert_eq!(empty.root(), Some("transaction"));
        let fields = decode(Format::Json, br#"{"a":"1","Extra":{"b":"2"}}"#).unwrap();
        assert_eq!(fields.root(), None);
        assert_eq!(fields.first_non_lowercase_name(), Some("Extra"));
    }

    #[test]
    fn three_time_formats_parse_as_wib() {
        let expected = Utc.with_ymd_and_hms(2020, 3, 24, 13, 9, 11).unwrap()
            + chrono::Duration::milliseconds(377);
        assert_eq!(parse_time("200324200911377"), Some(expected));
        assert_eq!(format_time(expected), "200324200911377");
        assert_eq!(
            parse_time("200325200912"),
            Some(Utc.with_ymd_and_hms(2020, 3, 25, 13, 9, 12).unwrap())
        );
        assert_eq!(
            parse_time("2020-03-25 20:09:12.374"),
            Some(
                Utc.with_ymd_and_hms(2020, 3, 25, 13, 9, 12).unwrap()
                    + chrono::Duration::milliseconds(374)
            )
        );
        assert_eq!(parse_time("yesterday"), None);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(Format::Xml, &body);
            let _ = decode(Format::Json, &body);
        }

        #[test]
        fn round_trip_any_values(values in proptest::collection::vec("[ -~]{0,20}", 1..6)) {
            let names: Vec<String> = (0..values.len()).map(|i| format!("f{i}")).collect();
            for format in [Format::Xml, Format::Json] {
                let body = encode(format, REQUEST_ROOT, names.iter().map(String::as_str).zip(values.iter().map(String::as_str)));
                let fields = decode(format, &body).unwrap();
                for (name, value) in names.iter().zip(&values) {
                    // Exactly as sent, surrounding spaces included (spec §4:
                    // refs go back verbatim).
                    prop_assert_eq!(fields.get(name), Some(value.as_str()));
                }
            }
        }
    }
}
