//! Masking of secrets in text that will be stored or logged (provider
//! exchanges, callback bodies). Providers mask the fields they know (PIN,
//! signature) when they build the stored copy; [`Masker`] is the second
//! line of defence that removes any configured secret value wherever it
//! appears: as written, and in the encoded forms a provider may echo it in
//! (JSON-escaped, with or without `\/`; XML-escaped; percent-encoded, in
//! either hex case and with `+` for a space).

pub const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
}

impl Masker {
    /// Secrets shorter than 4 characters are masked too, but an empty one is
    /// ignored (it would match everywhere).
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .flat_map(|secret| encoded_forms(&secret))
            .collect();
        // Longest first, so a secret containing another is masked whole;
        // one entry per distinct form.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_string();
        for secret in &self.secrets {
            if masked.contains(secret.as_str()) {
                masked = masked.replace(secret.as_str(), MASK);
            }
        }
        masked
    }
}

/// `secret` and each form of it a body may carry (duplicates removed by the
/// caller: a secret of plain letters and digits, a numeric PIN, has only
/// itself).
fn encoded_forms(secret: &str) -> Vec<String> {
    let json = json_escaped(secret);
    let percent = percent_encoded(secret, true);
    vec![
        secret.to_string(),
        json.replace('/', "\\/"),
        xml_escaped(secret),
        percent_encoded(secret, false),
        percent.replace("%20", "+"),
        json,
        percent,
    ]
}

fn json_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn xml_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Every byte outside RFC 3986's unreserved set as `%XX`, in upper- or
/// lower-case hex.
fn percent_encoded(text: &str, upper: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else if upper {
            out.push_str(&format!("%{byte:02X}"));
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_ignores_empty() {
        let masker = Masker::new(["pin-1234", ""]);
        assert_eq!(masker.mask("a pin-1234 b pin-1234"), "a *** b ***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_numeric_pin_has_no_other_form() {
        assert_eq!(Masker::new(["123456"]).secrets, ["123456"]);
    }

    #[test]
    fn encoded_forms_of_a_secret_are_masked_too() {
        let masker = Masker::new(["a/b\"c&d e"]);
        for stored in [
            "a/b\"c&d e",
            r#"{"pin":"a/b\"c&d e"}"#,
            r#"{"pin":"a\/b\"c&d e"}"#,
            "<pin>a/b&quot;c&amp;d e</pin>",
            "pin=a%2Fb%22c%26d%20e",
            "pin=a%2fb%22c%26d%20e",
            "pin=a%2Fb%22c%26d+e",
        ] {
            let masked = masker.mask(stored);
            assert!(masked.contains(MASK), "{stored} -> {masked}");
            for part in ["a/b", "a\\/b", "a%2Fb", "a%2fb"] {
                assert!(!masked.contains(part), "{stored} -> {masked}");
            }
        }
    }
}
