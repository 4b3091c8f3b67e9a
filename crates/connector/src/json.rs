//! Reading a provider's JSON (a reply, a callback) as it was written.
//!
//! `serde_json::Value` keeps only the last of two members of one object that
//! share a key, so a reply saying `"status":"FAILED"` and then
//! `"status":"SUCCESS"` reads as a success, and the first claim is lost. Here
//! nothing written is lost:
//!
//! - [`read`] gives every member of every object in document order,
//!   duplicates included ([`Written`]), for a provider that judges repeats
//!   field by field (OkeBayar), and refuses nesting deeper than a bound as
//!   soon as it is reached, so no deeper part of the body is ever held;
//! - [`strict`] gives a `serde_json::Value` and refuses an object that names
//!   a key twice, at any depth: a reply that says two things cannot be read
//!   with certainty, so it is unknown (money-safety rule 1), and a callback
//!   that does is malformed. A body without repeats reads exactly as
//!   `serde_json::from_slice` reads it.
//!
//! Numbers keep their exact text (the workspace's `serde_json` is built with
//! `arbitrary_precision`): `11000.00` stays `11000.00`. Keys are compared as
//! written: `status` and `Status` are two keys (a provider's lenient lookup
//! may then still prefer one of them).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// A JSON value as written: an object keeps every member, duplicated keys
/// included, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Null,
    Bool(bool),
    /// The number's exact text.
    Number(Number),
    Text(String),
    Array(Vec<Written>),
    Object(Vec<(String, Written)>),
}

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or not one complete value: serde_json's message, which
    /// names a line and column but quotes nothing of the body.
    #[error("{0}")]
    Malformed(String),
    /// Objects and arrays nested deeper than the bound given to [`read`].
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
    /// An object names this key twice ([`strict`]); the key is cut to 64
    /// characters.
    #[error("key {0:?} is written twice in one object")]
    RepeatedKey(String),
}

/// The longest key quoted in [`JsonError::RepeatedKey`].
const QUOTED_KEY_CHARS: usize = 64;

/// `bytes` as written, or why not. Objects and arrays nested deeper than
/// `max_depth` (the outermost value is at depth 1) are refused when the
/// parser reaches them. serde_json's own recursion limit (128) applies too.
pub fn read(bytes: &[u8], max_depth: usize) -> Result<Written, JsonError> {
    let refusal = Cell::new(None);
    let seed = Seed {
        depth: 1,
        max_depth,
        refusal: &refusal,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|written| deserializer.end().map(|()| written));
    parsed.map_err(|error| {
        refusal
            .take()
            .unwrap_or_else(|| JsonError::Malformed(error.to_string()))
    })
}

/// `bytes` as a `serde_json::Value`, or why not: an object that names a key
/// twice, at any depth, is refused ([`JsonError::RepeatedKey`]). Nesting is
/// bounded by serde_json's recursion limit, as `serde_json::from_slice`'s is.
pub fn strict(bytes: &[u8]) -> Result<Value, JsonError> {
    read(bytes, usize::MAX)?.into_value()
}

impl Written {
    /// This value as a `serde_json::Value`; an object that names a key twice
    /// is refused.
    pub fn into_value(self) -> Result<Value, JsonError> {
        Ok(match self {
            Written::Null => Value::Null,
            Written::Bool(flag) => Value::Bool(flag),
            Written::Number(number) => Value::Number(number),
            Written::Text(text) => Value::String(text),
            Written::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(Written::into_value)
                    .collect::<Result<_, _>>()?,
            ),
            Written::Object(members) => {
                let mut object = Map::new();
                for (key, value) in members {
                    if object.contains_key(&key) {
                        let quoted = loket_protocol::text::clip(&key, QUOTED_KEY_CHARS);
                        return Err(JsonError::RepeatedKey(quoted.to_string()));
                    }
                    let value = value.into_value()?;
                    object.insert(key, value);
                }
                Value::Object(object)
            }
        })
    }
}

/// serde_json (with `arbitrary_precision`) hands a number to a visitor as a
/// one-member map under this key, the number's text its value.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Reads one value at `depth`. A refusal of ours is left in `refusal`: the
/// error serde_json returns for it is only a message.
#[derive(Clone, Copy)]
struct Seed<'a> {
    depth: usize,
    max_depth: usize,
    refusal: &'a Cell<Option<JsonError>>,
}

impl Seed<'_> {
    /// The seed of a value inside this one's object or array, which is
    /// refused when it is nested too deep.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > self.max_depth {
            self.refusal.set(Some(JsonError::TooDeep(self.max_depth)));
            return Err(E::custom("nested too deep"));
        }
        Ok(Seed {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Written;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Written, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Written;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Written, E> {
        Ok(Written::Null)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Written, E> {
        Ok(Written::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Written, E> {
        Ok(Written::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Written, E> {
        Ok(Written::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Written, E> {
        Number::from_f64(number)
            .map(Written::Number)
            .ok_or_else(|| E::custom("not a JSON number"))
    }

    fn visit_str<E>(self, text: &str) -> Result<Written, E> {
        Ok(Written::Text(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Written, E> {
        Ok(Written::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Written, A::Error> {
        let inner = self.enter()?;
        let mut array = Vec::new();
        while let Some(item) = items.next_element_seed(inner)? {
            array.push(item);
        }
        Ok(Written::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Written, A::Error> {
        let Some(first) = members.next_key::<String>()? else {
            self.enter::<A::Error>()?;
            return Ok(Written::Object(Vec::new()));
        };
        if first == NUMBER_TOKEN {
            let text: String = members.next_value()?;
            return text
                .parse::<Number>()
                .map(Written::Number)
                .map_err(de::Error::custom);
        }
        let inner = self.enter()?;
        let mut object = vec![(first, members.next_value_seed(inner)?)];
        while let Some(key) = members.next_key::<String>()? {
            object.push((key, members.next_value_seed(inner)?));
        }
        Ok(Written::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_repeats_reads_as_serde_json_reads_it() {
        for body in [
            &br#"{"responseCode":"2006100","amount":{"value":"10000.00","currency":"IDR"},"list":[1,{"a":null},true,"x\u00e9\"y"],"empty":{},"none":[]}"#[..],
            br#"  {"a":-0.0,"b":1e400,"c":12345678901234567890123,"d":-7}  "#,
            br#"[{"a":1},{"a":2}]"#,
            br#""text""#,
            b"3.10",
        ] {
            assert_eq!(
                strict(body).unwrap(),
                serde_json::from_slice::<Value>(body).unwrap(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let body = br#"{"harga":11000.00,"big":9007199254740993,"n":-0,"e":1.5E+3}"#;
        let value = strict(body).unwrap();
        assert_eq!(value["harga"].to_string(), "11000.00");
        assert_eq!(value["big"].to_string(), "9007199254740993");
        assert_eq!(value["n"].to_string(), "-0");
        // As serde_json writes it (it lower-cases an exponent's `E`).
        let plain: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(value["e"].to_string(), plain["e"].to_string());
        let Ok(Written::Object(members)) = read(body, 2) else {
            panic!("an object")
        };
        assert_eq!(
            members[0],
            ("harga".into(), Written::Number("11000.00".parse().unwrap()))
        );
    }

    #[test]
    fn a_key_written_twice_is_refused_at_any_depth() {
        for (body, key) in [
            (&br#"{"status":"FAILED","status":"SUCCESS"}"#[..], "status"),
            (br#"{"status":"SUCCESS","status":"SUCCESS"}"#, "status"),
            (br#"{"a":1,"money":{"amount":1,"amount":2}}"#, "amount"),
            (br#"{"list":[{"x":{"y":[{"k":1,"k":1}]}}]}"#, "k"),
            (br#"[{"a":{},"a":[]}]"#, "a"),
        ] {
            assert_eq!(
                strict(body),
                Err(JsonError::RepeatedKey(key.into())),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Keys are compared as written.
        assert!(strict(br#"{"status":"FAILED","Status":"SUCCESS"}"#).is_ok());
        // A long key is quoted cut short.
        let long = "k".repeat(1000);
        let body = format!(r#"{{"{long}":1,"{long}":2}}"#);
        assert_eq!(
            strict(body.as_bytes()),
            Err(JsonError::RepeatedKey("k".repeat(QUOTED_KEY_CHARS)))
        );
    }

    #[test]
    fn read_keeps_every_member_in_order() {
        let written = read(br#"{"s":"203","s":"000","x":{"s":0}}"#, 8).unwrap();
        assert_eq!(
            written,
            Written::Object(vec![
                ("s".into(), Written::Text("203".into())),
                ("s".into(), Written::Text("000".into())),
                (
                    "x".into(),
                    Written::Object(vec![("s".into(), Written::Number(0.into()))])
                ),
            ])
        );
    }

    #[test]
    fn nesting_is_bounded_where_it_is_reached() {
        let nest =
            |depth: usize, tail: &str| format!("{}1{}{tail}", "[".repeat(depth), "]".repeat(depth));
        assert!(read(nest(3, "").as_bytes(), 3).is_ok());
        assert_eq!(read(nest(4, "").as_bytes(), 3), Err(JsonError::TooDeep(3)));
        let objects = r#"{"a":{"b":{"c":{}}}}"#;
        assert!(read(objects.as_bytes(), 4).is_ok());
        assert_eq!(read(objects.as_bytes(), 3), Err(JsonError::TooDeep(3)));
        // A number is not a level, though serde_json hands it over as a map.
        assert!(read(br#"{"a":{"b":1.5}}"#, 2).is_ok());
        // Refused where the bound is crossed: what follows is never read
        // (here, garbage that would otherwise be the error).
        assert_eq!(
            read(nest(4, "garbage").as_bytes(), 3),
            Err(JsonError::TooDeep(3))
        );
        // serde_json's own limit still holds for strict.
        assert!(matches!(
            strict(nest(200, "").as_bytes()),
            Err(JsonError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b""[..],
            b"{",
            b"{\"a\":1}x",
            b"{\"a\" 1}",
            b"<html>",
            b"\xff",
        ] {
            assert!(
                matches!(strict(body), Err(JsonError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
