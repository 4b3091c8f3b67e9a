//! Encoding of the simulator's replies and callbacks. `loket_okebayar::wire`
//! writes every JSON value as a string; the simulator must also reproduce
//! the documented quirks (amounts as JSON numbers such as `11000.00`,
//! a nested `additionaldata`), so it has its own small encoder. The
//! connector's decoder reads both.

use loket_okebayar::wire::{Format, REPLY_ROOT};

use super::scenarios::AmountStyle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    /// Written bare in JSON (exact text kept); as text in XML.
    Number(String),
    /// A nested element / object of leaves (`additionaldata`).
    Group(Vec<(String, String)>),
}

/// An ordered list of reply fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reply {
    items: Vec<(String, Value)>,
}

impl Reply {
    pub(crate) fn new() -> Self {
        Reply::default()
    }

    pub(crate) fn text(mut self, name: &str, value: impl Into<String>) -> Self {
        self.items
            .push((name.to_string(), Value::Text(value.into())));
        self
    }

    pub(crate) fn amount(mut self, name: &str, idr: i64, style: AmountStyle) -> Self {
        let value = match style {
            AmountStyle::Plain => Value::Text(idr.to_string()),
            AmountStyle::Decimal => Value::Number(format!("{idr}.00")),
            AmountStyle::Number => Value::Number(idr.to_string()),
        };
        self.items.push((name.to_string(), value));
        self
    }

    pub(crate) fn group(mut self, name: &str, leaves: Vec<(String, String)>) -> Self {
        self.items.push((name.to_string(), Value::Group(leaves)));
        self
    }

    /// Flat name/value pairs (groups flattened), for query strings.
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in &self.items {
            match value {
                Value::Text(v) | Value::Number(v) => out.push((name.clone(), v.clone())),
                Value::Group(leaves) => out.extend(leaves.iter().cloned()),
            }
        }
        out
    }

    pub(crate) fn encode(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Xml => self.encode_xml(),
            Format::Json => self.encode_json(),
        }
    }

    /// [`Self::encode`], XML wrapped in `{ … }` when `doc_literal` (the
    /// doc's examples).
    pub(crate) fn encode_as(&self, format: Format, doc_literal: bool) -> Vec<u8> {
        let body = self.encode(format);
        if doc_literal && format == Format::Xml {
            [b"{ ".as_slice(), &body, b" }"].concat()
        } else {
            body
        }
    }

    fn encode_xml(&self) -> Vec<u8> {
        fn leaf(out: &mut String, name: &str, value: &str) {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&quick_xml::escape::escape(value));
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
        out.push_str(&format!("<{REPLY_ROOT}>"));
        for (name, value) in &self.items {
            match value {
                Value::Text(v) | Value::Number(v) => leaf(&mut out, name, v),
                Value::Group(leaves) => {
                    out.push_str(&format!("<{name}>"));
                    for (n, v) in leaves {
                        leaf(&mut out, n, v);
                    }
                    out.push_str(&format!("</{name}>"));
                }
            }
        }
        out.push_str(&format!("</{REPLY_ROOT}>"));
        out.into_bytes()
    }

    fn encode_json(&self) -> Vec<u8> {
        use serde_json::{Map, Value as J};
        let mut object = Map::new();
        for (name, value) in &self.items {
            let json = match value {
                Value::Text(v) => J::String(v.clone()),
                // With `arbitrary_precision` the number keeps its text
                // (`11000.00` stays `11000.00`).
                Value::Number(v) => serde_json::from_str::<J>(v)
                    .ok()
                    .filter(J::is_number)
                    .unwrap_or_else(|| J::String(v.clone())),
                Value::Group(leaves) => J::Object(
                    leaves
                        .iter()
                        .map(|(n, v)| (n.clone(), J::String(v.clone())))
                        .collect(),
                ),
            };
            object.insert(name.clone(), json);
        }
        serde_json::to_vec(&J::Object(object)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loket_okebayar::wire::decode;

    #[test]
    fn json_numbers_keep_their_text_and_xml_groups_nest() {
        let reply = Reply::new()
            .text("transactionstatus", "000")
            .amount("harga", 11_000, AmountStyle::Decimal)
            .amount("balance", 50_590_000, AmountStyle::Number)
            .group("additionaldata", vec![("RPTAG1".into(), "150000".into())]);
        let json = String::from_utf8(reply.encode(Format::Json)).unwrap();
        assert!(json.contains("\"harga\":11000.00"), "{json}");
        assert!(json.contains("\"balance\":50590000"), "{json}");
        let xml = reply.encode(Format::Xml);
        let text = String::from_utf8(xml.clone()).unwrap();
        assert!(
            text.contains("<additionaldata><RPTAG1>150000</RPTAG1></additionaldata>"),
            "{text}"
        );
        for body in [json.into_bytes(), xml] {
            let format = Format::sniff(&body);
            let fields = decode(format, &body).unwrap();
            assert_eq!(fields.get("harga"), Some("11000.00"), "{format:?}");
            assert_eq!(fields.get("rptag1"), Some("150000"));
        }
    }

    #[test]
    fn values_are_escaped() {
        let xml = Reply::new().text("info", "<b>&</b>").encode(Format::Xml);
        let fields = decode(Format::Xml, &xml).unwrap();
        assert_eq!(fields.get("info"), Some("<b>&</b>"));
    }
}
