//! Bounding text that came from outside (a provider's reply, a client's
//! request) before it is stored or quoted back, never splitting a character.

/// At most the first `max` characters of `text`.
pub fn clip(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// At most the first `max` characters of `text`, with `…` when it was cut:
/// for quoting what was given in a message.
pub fn shortened(text: &str, max: usize) -> String {
    let clipped = clip(text, max);
    if clipped.len() == text.len() {
        text.to_string()
    } else {
        format!("{clipped}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_characters_not_bytes() {
        assert_eq!(clip("Rp 1.000 — lunas", 10), "Rp 1.000 —");
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abc", 0), "");
        assert_eq!(clip("", 5), "");
    }

    #[test]
    fn shortened_marks_a_cut() {
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
        assert_eq!(shortened("éé", 1), "é…");
    }
}
