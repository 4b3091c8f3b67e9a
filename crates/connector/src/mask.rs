//! Masking of secrets in text that will be stored or logged (provider
//! exchanges, callback bodies). Providers mask the fields they know (PIN,
//! signature) when they build the stored copy; [`Masker`] is the second
//! line of defence that removes any configured secret value wherever it
//! appears, however the text writes it.
//!
//! The text is read character by character, each character either as
//! written or through an escape that starts there, in any mix: XML/HTML
//! references (`&amp;` `&lt;` `&gt;` `&quot;` `&apos;`, `&#NNN;`, `&#xHH;`),
//! JSON escapes (`\"` `\\` `\/` `\b` `\f` `\n` `\r` `\t`, `\uXXXX` with
//! surrogate pairs), percent-escapes in either hex case (the UTF-8 bytes of
//! one character together), and `+` for a space. A provider that echoes a
//! PIN as `&#49;2&#x33;\u0034` therefore gets it masked just as `1234`, and
//! so does a secret that itself looks like an escape (`p%41ss` as written).
//! The raw text covering each occurrence is replaced by [`MASK`]
//! ([`Masker::occurrences`] tells where they are without replacing them, so
//! that a search for a leaked secret reads text the same way). A secret
//! is also found in upper and in lower case (a hex digest may come back in
//! the other case). A malformed escape (`&#;`, `\u12`, `%G1`, a lone
//! surrogate) is just the characters it is written with; an escape is not
//! read twice (`&amp;#49;` is `&#49;`, not `1`).
//!
//! A secret of digits only (a numeric PIN) is masked only where it stands
//! apart from other digits, written or escaped: `1234` inside the serial
//! number `5123412345` or the balance `1234000` (or `&#49;2340`) is part of a
//! longer number, not the PIN, and masking it there would falsify the stored
//! record of what the provider said (a PLN token, an amount). So is one
//! joined to other digits by a `-`, as a token written in groups has it
//! (`5678` in `1234-5678-9012-3456-7890`; masking it there delivered a
//! customer a token that does not work). Where such a
//! PIN may be glued to other digits in an echo (OkeBayar signs
//! `userid + PIN + referencecode`), the connector adds the glued form as a
//! secret of its own.

use std::ops::Range;

pub const MASK: &str = "***";

#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Each secret as given and in upper and lower case, one entry per
    /// distinct form.
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
            .flat_map(|secret| {
                [
                    secret.to_ascii_uppercase(),
                    secret.to_ascii_lowercase(),
                    secret,
                ]
            })
            .collect();
        secrets.sort_unstable();
        secrets.dedup();
        Masker { secrets }
    }

    /// `text` with the raw text of every occurrence of a secret replaced by
    /// [`MASK`]. Occurrences that overlap (of two secrets, one containing
    /// the other or sharing an end) are masked as one, so no part of either
    /// is left; occurrences that only touch are masked one by one.
    pub fn mask(&self, text: &str) -> String {
        replace(text, &self.occurrences(text))
    }

    /// The byte range of the raw text of every occurrence of a secret in
    /// `text`, however it is written (see the module's doc), in order of
    /// where they start (then end). Occurrences of different secrets, or of
    /// one secret in different letter cases, may overlap.
    pub fn occurrences(&self, text: &str) -> Vec<Range<usize>> {
        if self.secrets.is_empty() {
            return Vec::new();
        }
        // Where an occurrence can start: at a secret's first character as
        // written, or at an escape. One pass over the text finds them for
        // every secret, so each secret visits only those offsets.
        let mut could_start = [false; 256];
        for byte in self
            .secrets
            .iter()
            .map(|secret| secret.as_bytes()[0])
            .chain(ESCAPE_STARTS)
        {
            could_start[usize::from(byte)] = true;
        }
        let starts: Vec<usize> = text
            .bytes()
            .enumerate()
            .filter(|(_, byte)| could_start[usize::from(*byte)])
            .map(|(at, _)| at)
            .collect();
        let escaped_digit_ends = escaped_digit_ends(text, &starts);
        let mut matcher = Matcher::default();
        let mut occurrences = Vec::new();
        for secret in &self.secrets {
            find_occurrences(
                text,
                secret,
                &starts,
                &escaped_digit_ends,
                &mut matcher,
                &mut occurrences,
            );
        }
        occurrences.sort_unstable_by_key(|occurrence| (occurrence.start, occurrence.end));
        occurrences
    }
}

/// The first bytes of the escapes [`escape_at`] reads.
const ESCAPE_STARTS: [u8; 4] = [b'&', b'\\', b'%', b'+'];

/// Adds to `occurrences` the raw byte range of each occurrence of `secret`
/// in `text` that starts at one of `starts` (in order), scanning on from
/// the end of each; except, for a secret of digits only, one that continues
/// a run of digits, written or escaped (`escaped_digit_ends`), directly or
/// across a [`GROUP_SEPARATOR`].
fn find_occurrences(
    text: &str,
    secret: &str,
    starts: &[usize],
    escaped_digit_ends: &[usize],
    matcher: &mut Matcher,
    occurrences: &mut Vec<Range<usize>>,
) {
    let numeric = secret.bytes().all(|b| b.is_ascii_digit());
    let first_byte = secret.as_bytes()[0];
    // The end of the last occurrence found.
    let mut scanned = 0;
    for &start in starts {
        let byte = text.as_bytes()[start];
        if start < scanned || !(byte == first_byte || ESCAPE_STARTS.contains(&byte)) {
            continue;
        }
        let Some(end) = matcher.longest_end(text, start, secret) else {
            continue;
        };
        // An occurrence skipped as part of a number does not move `scanned`:
        // an overlapping one may still stand apart.
        let part_of_a_number = numeric
            && (digits_end_at(text, start, escaped_digit_ends)
                || text[..start]
                    .strip_suffix(GROUP_SEPARATOR)
                    .is_some_and(|before| digits_end_at(text, before.len(), escaped_digit_ends))
                || digits_start_at(text, end)
                || readings_at(text, end).any(|reading| {
                    reading.char == GROUP_SEPARATOR && digits_start_at(text, reading.end)
                }));
        if !part_of_a_number {
            occurrences.push(start..end);
            scanned = end;
        }
    }
}

/// What joins the digit groups of a number written in groups (a PLN token
/// `1234-5678-9012-3456-7890`): a numeric secret joined by it to other
/// digits is one of those groups.
const GROUP_SEPARATOR: char = '-';

/// Whether a digit, written or escaped, ends at byte offset `at` of `text`.
fn digits_end_at(text: &str, at: usize, escaped_digit_ends: &[usize]) -> bool {
    text[..at].ends_with(|c: char| c.is_ascii_digit())
        || escaped_digit_ends.binary_search(&at).is_ok()
}

/// Whether a digit, written or escaped, starts at byte offset `at` of `text`.
fn digits_start_at(text: &str, at: usize) -> bool {
    readings_at(text, at).any(|reading| reading.char.is_ascii_digit())
}

/// The offsets in `text` where an escape that encodes a digit ends, in
/// order (escapes start at some of `starts`): a numeric secret right after
/// one continues a number.
fn escaped_digit_ends(text: &str, starts: &[usize]) -> Vec<usize> {
    let mut ends: Vec<usize> = starts
        .iter()
        .filter_map(|&at| escape_at(text, at))
        .filter(|reading| reading.char.is_ascii_digit())
        .map(|reading| reading.end)
        .collect();
    ends.sort_unstable();
    ends
}

/// `text` with each of `occurrences` (in order of their starts) replaced by
/// [`MASK`], overlapping ones as one.
fn replace(text: &str, occurrences: &[Range<usize>]) -> String {
    let mut masked = String::with_capacity(text.len());
    // Where the text not yet copied starts: the end of the last mask.
    let mut copied = 0;
    for occurrence in occurrences {
        if occurrence.start >= copied {
            masked.push_str(&text[copied..occurrence.start]);
            masked.push_str(MASK);
            copied = occurrence.end;
        } else {
            copied = copied.max(occurrence.end);
        }
    }
    masked.push_str(&text[copied..]);
    masked
}

/// Finds where a secret's characters, each written as such or as an
/// escape, run from a given offset. It keeps its two sets of offsets
/// between calls, so a scan over a long text does not allocate at each
/// offset it tries.
#[derive(Default)]
struct Matcher {
    reached: Vec<usize>,
    next: Vec<usize>,
}

impl Matcher {
    /// The end of the longest run of raw text from `start` that reads as
    /// `secret`, `None` where `secret` does not start there. A character
    /// can be read two ways where an escape starts (`%25` is `%` then `25`,
    /// or one `%`), so every offset reached so far is followed; there are
    /// few, as a secret is short.
    fn longest_end(&mut self, text: &str, start: usize, secret: &str) -> Option<usize> {
        self.reached.clear();
        self.reached.push(start);
        for wanted in secret.chars() {
            self.next.clear();
            for &at in &self.reached {
                self.next.extend(
                    readings_at(text, at)
                        .filter(|reading| reading.char == wanted)
                        .map(|reading| reading.end),
                );
            }
            self.next.sort_unstable();
            self.next.dedup();
            std::mem::swap(&mut self.reached, &mut self.next);
            if self.reached.is_empty() {
                return None;
            }
        }
        self.reached.last().copied()
    }
}

/// A character read at some offset of a text, and the offset where the
/// raw text that writes it ends.
#[derive(Debug, Clone, Copy)]
struct Reading {
    char: char,
    end: usize,
}

/// The characters `text` may mean at byte offset `at`: the one written
/// there and, where an escape starts there, the one it encodes. None at
/// the end of the text.
fn readings_at(text: &str, at: usize) -> impl Iterator<Item = Reading> {
    let written = text[at..].chars().next().map(|char| Reading {
        char,
        end: at + char.len_utf8(),
    });
    written.into_iter().chain(escape_at(text, at))
}

/// The character encoded by an escape starting at byte offset `at` of
/// `text`, if a well-formed one starts there.
fn escape_at(text: &str, at: usize) -> Option<Reading> {
    let escape = &text.as_bytes()[at..];
    let (char, len) = match escape.first()? {
        b'&' => character_reference(escape)?,
        b'\\' => json_escape(escape)?,
        b'%' => percent_escape(escape)?,
        b'+' => (' ', 1),
        _ => return None,
    };
    Some(Reading {
        char,
        end: at + len,
    })
}

/// An XML/HTML reference at the start of `escape` (which starts with `&`):
/// one of XML's five named entities, or a decimal or hex character
/// reference with any number of leading zeros.
fn character_reference(escape: &[u8]) -> Option<(char, usize)> {
    const NAMED: [(&[u8], char); 5] = [
        (b"&amp;", '&'),
        (b"&lt;", '<'),
        (b"&gt;", '>'),
        (b"&quot;", '"'),
        (b"&apos;", '\''),
    ];
    if let Some((name, char)) = NAMED.iter().find(|(name, _)| escape.starts_with(name)) {
        return Some((*char, name.len()));
    }
    let (digits_from, radix) = match escape.get(1..3)? {
        b"#x" | b"#X" => (3, 16),
        [b'#', _] => (2, 10),
        _ => return None,
    };
    let digits = escape[digits_from..]
        .iter()
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    let semicolon = digits_from + digits;
    if escape.get(semicolon) != Some(&b';') {
        return None;
    }
    let char = char::from_u32(number(&escape[digits_from..semicolon], radix)?)?;
    Some((char, semicolon + 1))
}

/// A JSON escape at the start of `escape` (which starts with `\`); a
/// `\uXXXX` high surrogate only with the low one that follows it.
fn json_escape(escape: &[u8]) -> Option<(char, usize)> {
    let short = match escape.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let unit = number(escape.get(2..6)?, 16)?;
            if !(0xD800..0xDC00).contains(&unit) {
                // A lone low surrogate is no character: from_u32 refuses it.
                return Some((char::from_u32(unit)?, 6));
            }
            if escape.get(6..8)? != b"\\u" {
                return None;
            }
            let low = number(escape.get(8..12)?, 16)?;
            if !(0xDC00..0xE000).contains(&low) {
                return None;
            }
            let char = char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?;
            return Some((char, 12));
        }
        _ => return None,
    };
    Some((short, 2))
}

/// A percent-escape at the start of `escape` (which starts with `%`): the
/// `%HH` escapes of all the UTF-8 bytes of one character.
fn percent_escape(escape: &[u8]) -> Option<(char, usize)> {
    let byte_at = |index: usize| -> Option<u8> {
        let at = 3 * index;
        if escape.get(at) != Some(&b'%') {
            return None;
        }
        u8::try_from(number(escape.get(at + 1..at + 3)?, 16)?).ok()
    };
    let width = match byte_at(0)? {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return None,
    };
    let mut bytes = [0; 4];
    for (index, byte) in bytes[..width].iter_mut().enumerate() {
        *byte = byte_at(index)?;
    }
    let char = std::str::from_utf8(&bytes[..width]).ok()?.chars().next()?;
    Some((char, 3 * width))
}

/// The value of `digits` in `radix`; `None` if there are none, one is not a
/// digit, or the value does not fit in a `u32`.
fn number(digits: &[u8], radix: u32) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |value, digit| {
        value
            .checked_mul(radix)?
            .checked_add(char::from(*digit).to_digit(radix)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
        // A group of a number written in groups is part of that number;
        // a dash with no digit across it joins nothing.
        for grouped in ["1234-5678-9012", "5678-9012", "1234-5678", "12-5678/ANI"] {
            assert_eq!(Masker::new(["5678"]).mask(grouped), grouped);
        }
        assert_eq!(
            Masker::new(["5678"]).mask("PIN-5678 x-5678- 5678-y &#49;-5678"),
            "PIN-*** x-***- ***-y &#49;-5678"
        );
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

    /// Guards against a secret echoed as XML/HTML character references
    /// (decimal or hex, either case, leading zeros, mixed with characters
    /// as written) being stored in the clear.
    #[test]
    fn character_references_of_a_secret_are_masked() {
        let masker = Masker::new(["1234", "s3cr3t!"]);
        for pin in [
            "&#49;&#50;&#51;&#52;",
            "&#x31;&#x32;&#X33;&#x34;",
            "1&#50;34",
            "&#0049;2&#x0033;4",
        ] {
            let stored = format!("<userpin>{pin}</userpin>");
            assert_eq!(masker.mask(&stored), "<userpin>***</userpin>", "{stored}");
        }
        assert_eq!(
            masker.mask("<info>&#115;3&#x63;r3t&#33; or &#x53;3CR3T&#x21;</info>"),
            "<info>*** or ***</info>"
        );
    }

    /// Guards against a secret echoed as JSON `\uXXXX` escapes (hex digits
    /// in either case, mixed with characters as written) being stored in
    /// the clear.
    #[test]
    fn json_unicode_escapes_of_a_secret_are_masked() {
        let masker = Masker::new(["1234", "key/on"]);
        for stored in [
            r#"{"pin":"\u0031\u0032\u0033\u0034"}"#,
            r#"{"pin":"\u0031234"}"#,
            r#"{"pin":"12\u00334"}"#,
            r#"{"pin":"\u006b\u0065\u0079\u002f\u006f\u006e"}"#,
            r#"{"pin":"\u006B\u0065y\u002F\u006Fn"}"#,
            r#"{"pin":"KEY\/\u004fN"}"#,
        ] {
            assert_eq!(masker.mask(stored), r#"{"pin":"***"}"#, "{stored}");
        }
    }

    /// Guards against a secret with a character outside the Basic
    /// Multilingual Plane escaping the mask when JSON writes that character
    /// as a surrogate pair (or XML as one reference).
    #[test]
    fn a_secret_outside_the_basic_plane_is_masked_in_every_writing() {
        let masker = Masker::new(["kunci\u{1F511}"]);
        for written in [
            "kunci\u{1F511}",
            r"kunci\ud83d\udd11",
            r"kunci\uD83D\uDD11",
            r"\u006bunci\uD83D\udd11",
            "kunci&#x1F511;",
            "kunci&#128273;",
            "kunci%F0%9F%94%91",
            "kunci%f0%9f%94%91",
        ] {
            let stored = format!(r#"{{"key":"{written}"}}"#);
            assert_eq!(masker.mask(&stored), r#"{"key":"***"}"#, "{stored}");
        }
    }

    /// Guards against a secret slipping through when its characters are
    /// written with different kinds of escape in one occurrence (percent,
    /// JSON, XML), and `+` read only as a space or only as itself.
    #[test]
    fn a_secret_written_with_mixed_escapes_is_masked() {
        let masker = Masker::new(["p@ss w/rd&", "a b+c"]);
        for written in [
            r"p%40ss+w\/rd\u0026",
            "p%40ss%20w%2frd&amp;",
            r"p\u0040ss w%2Frd&#38;",
            "a+b+c",
            "a%20b%2Bc",
            r"a\u0020b&#43;c",
        ] {
            let stored = format!("x={written}&y=1");
            assert_eq!(masker.mask(&stored), "x=***&y=1", "{stored}");
        }
    }

    /// Guards against a secret that itself looks like escapes being missed
    /// as written (a reader that only decoded would read `%41` as `A`) or
    /// when its escape-like characters are themselves escaped.
    #[test]
    fn a_secret_that_looks_like_escapes_is_masked_as_written_and_escaped() {
        let masker = Masker::new([r"a%41\u0031&#49;+b"]);
        for written in [
            r"a%41\u0031&#49;+b",
            r"a%41\\u0031&#49;+b",
            r"a%41\u0031&amp;#49;+b",
            "a%2541%5Cu0031%26%2349%3B%2Bb",
            "a&#37;41&#92;u0031&#38;#49;&#43;b",
        ] {
            let stored = format!("<x>{written}</x>");
            assert_eq!(masker.mask(&stored), "<x>***</x>", "{stored}");
        }
    }

    /// Guards the numeric-PIN rule through escapes: a PIN whose digits, or
    /// whose neighbours' digits, are escaped is still part of a longer
    /// number when it continues one, and still masked when it stands apart.
    #[test]
    fn a_numeric_pin_inside_an_escaped_longer_number_is_left_whole() {
        let masker = Masker::new(["1234"]);
        for number in [
            "&#49;2345",
            "9&#49;234",
            "&#x39;1234",
            r"1234\u0035",
            "%31234%30",
            r"\u0039&#49;234",
        ] {
            let stored = format!("<sn>{number}</sn>");
            assert_eq!(masker.mask(&stored), stored);
        }
        assert_eq!(
            masker.mask(r"<pin>&#49;234</pin><info>PIN \u0031234.</info>"),
            "<pin>***</pin><info>PIN ***.</info>"
        );
    }

    /// Guards the reader against malformed escapes: they must not panic,
    /// are left as they were, and do not hide an escaped secret right after
    /// them.
    #[test]
    fn malformed_escapes_are_read_as_written() {
        let masker = Masker::new(["key"]);
        for malformed in [
            "&#;",
            "&#99999999999;",
            "&#x110000;",
            "&#xD800;",
            "&#x;",
            "&am",
            "&#",
            "&",
            r"\u12",
            r"\uD800",
            r"\uDC00",
            r"\uD83D\u0041",
            r"\u",
            r"\q",
            r"\",
            "%G1",
            "%C3",
            "%C3%28",
            "%FF",
            "%",
        ] {
            assert_eq!(masker.mask(malformed), malformed);
            assert_eq!(
                masker.mask(&format!("{malformed}&#x6b;ey")),
                format!("{malformed}***")
            );
        }
    }

    /// Guards the general rule: whichever way each character of a secret
    /// is written (as such, or with any escape for it, chosen at random),
    /// the whole occurrence is masked.
    #[test]
    fn a_secret_written_with_any_escapes_is_masked_whole() {
        let mut rng = StdRng::seed_from_u64(0x6c6f6b6574);
        for _ in 0..2_000 {
            let secret: String = (0..rng.gen_range(1..=12))
                .map(|_| char::from(rng.gen_range(b' '..=b'~')))
                .collect();
            let written: String = secret
                .chars()
                .map(|c| write_randomly(c, &mut rng))
                .collect();
            // A neighbour that is neither in the secret nor a digit.
            let stored = format!("\u{e9}{written}\u{e9}");
            assert_eq!(
                Masker::new([secret.as_str()]).mask(&stored),
                format!("\u{e9}{MASK}\u{e9}"),
                "{secret:?} written as {written:?}"
            );
        }
    }

    /// `c` as written or escaped, one of the ways chosen at random.
    fn write_randomly(c: char, rng: &mut StdRng) -> String {
        let code = u32::from(c);
        let upper: bool = rng.gen();
        let hex = |width: usize| {
            let hex = format!("{code:0width$x}");
            if upper {
                hex.to_ascii_uppercase()
            } else {
                hex
            }
        };
        let mut ways = vec![
            c.to_string(),
            format!("&#{}{code};", "0".repeat(rng.gen_range(0..3))),
            format!("&#{}{};", if upper { 'X' } else { 'x' }, hex(1)),
            format!("\\u{}", hex(4)),
            format!("%{}", hex(2)),
        ];
        let named = match c {
            '&' => Some("&amp;"),
            '<' => Some("&lt;"),
            '>' => Some("&gt;"),
            '"' => Some("&quot;"),
            '\'' => Some("&apos;"),
            _ => None,
        };
        let json = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            _ => None,
        };
        let plus = (c == ' ').then_some("+");
        ways.extend([named, json, plus].into_iter().flatten().map(String::from));
        ways.swap_remove(rng.gen_range(0..ways.len()))
    }
}
