//! Masking of secrets in text that will be stored or logged (provider
//! exchanges, callback bodies). Providers mask the fields they know (PIN,
//! signature) when they build the stored copy; [`Masker`] is the second
//! line of defence that removes any configured secret value wherever it
//! appears: as written, and in the encoded forms a provider may echo it in
//! (JSON-escaped, with or without `\/`; XML-escaped; percent-encoded, in
//! either hex case and with `+` for a space).
//!
//! A secret of digits only (a numeric PIN) is masked only where it stands
//! apart from other digits: `1234` inside the serial number `5123412345` or
//! the balance `1234000` is part of a longer number, not the PIN, and masking
//! it there would falsify the stored record of what the provider said (a PLN
//! token, an amount). Where such a PIN may be glued to other digits in an
//! echo (OkeBayar signs `userid + PIN + referencecode`), the connector adds
//! the glued form as a secret of its own.

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
                masked = mask_standalone(&masked, secret);
            }
        }
        masked
    }
}

/// `text` with every occurrence of `secret` replaced by [`MASK`], except,
/// for a secret of digits only, one that continues a run of digits.
fn mask_standalone(text: &str, secret: &str) -> String {
    let numeric = secret.bytes().all(|b| b.is_ascii_digit());
    let mut masked = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = text[from..].find(secret) {
        let start = from + found;
        let end = start + secret.len();
        let part_of_a_number = numeric
            && (text[..start].ends_with(|c: char| c.is_ascii_digit())
                || text[end..].starts_with(|c: char| c.is_ascii_digit()));
        if part_of_a_number {
            // An overlapping occurrence may still stand apart: go on one
            // character further, not past this one.
            from = start + text[start..].chars().next().map_or(1, char::len_utf8);
        } else {
            masked.push_str(&text[copied..start]);
            masked.push_str(MASK);
            copied = end;
            from = end;
        }
    }
    masked.push_str(&text[copied..]);
    masked
}

/// `secret` and each form of it a body may carry (duplicates removed by the
/// caller: a secret of plain letters and digits, a numeric PIN, has only
/// itself).
fn encoded_forms(secret: &str) -> Vec<String> {
    let json = json_escaped(secret);
    let percent = percent_encoded(secret, true);
    vec![
        secret.to_string(),
        // A hex digest (a signature) may come back in the other case.
        secret.to_ascii_uppercase(),
        secret.to_ascii_lowercase(),
        json.replace('/', "\\/"),
        xml_escaped(secret),
        // XML text content, where most writers leave quotes as they are.
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"),
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
    fn a_numeric_pin_inside_a_longer_number_is_left_whole() {
        let masker = Masker::new(["1234"]);
        let reply = "<serialnumber>5123412345</serialnumber><balance>1234000</balance>\
                     <harga>91234</harga><userpin>1234</userpin><info>PIN 1234, ref A1234B</info>";
        assert_eq!(
            masker.mask(reply),
            "<serialnumber>5123412345</serialnumber><balance>1234000</balance>\
             <harga>91234</harga><userpin>***</userpin><info>PIN ***, ref A***B</info>"
        );
        // Overlapping occurrences: one glued to a digit is skipped.
        assert_eq!(
            Masker::new(["1212"]).mask("121212 x121212y"),
            "121212 x121212y"
        );
        assert_eq!(Masker::new(["1212"]).mask("12 1212 12"), "12 *** 12");
        // A secret that is not all digits is masked wherever it appears,
        // digits around it or not.
        assert_eq!(Masker::new(["12a12"]).mask("12a12a12"), "***a12");
        assert_eq!(Masker::new(["a12a"]).mask("1a12a1 a12a"), "1***1 ***");
        assert_eq!(Masker::new(["PIN-77"]).mask("9PIN-779"), "9***9");
        assert_eq!(Masker::new(["secret01"]).mask("x9secret012"), "x9***2");
        assert_eq!(Masker::new(["pin"]).mask("pinpin"), "******");
        // A glued form given as a secret of its own is masked whole.
        let signing = Masker::new(["1234", "pcu000011234"]);
        assert_eq!(
            signing.mask("echo pcu000011234LKT0001 sn 5123412345"),
            "echo ***LKT0001 sn 5123412345"
        );
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
            "<pin>a/b\"c&amp;d e</pin>",
            "A/B\"C&D E",
        ] {
            let masked = masker.mask(stored);
            assert!(masked.contains(MASK), "{stored} -> {masked}");
            for part in ["a/b", "a\\/b", "a%2Fb", "a%2fb", "A/B"] {
                assert!(!masked.contains(part), "{stored} -> {masked}");
            }
        }
    }
}
