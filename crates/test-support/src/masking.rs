//! Checks on the texts loket stores masked.

/// Asserts that `raw`, a stored text cut to at most `max_chars` characters,
/// keeps no part of `secret` (none of its first four characters together):
/// the text was masked whole and only then cut, so a secret the cut splits
/// leaves nothing behind.
pub fn assert_masked_before_cut(raw: &str, secret: &str, max_chars: usize) {
    let kept = raw.chars().count();
    assert!(kept <= max_chars, "not cut: {kept} characters");
    let tail: String = raw.chars().skip(kept.saturating_sub(24)).collect();
    assert!(
        !raw.contains(&secret[..4]),
        "a part of the secret is stored: …{tail}"
    );
}
