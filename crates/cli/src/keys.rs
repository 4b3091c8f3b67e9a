//! API keys for internal clients. A key is `lk_` followed by 32 random bytes
//! from the operating system's generator, base64url without padding (43
//! characters). Only its SHA-256 (over the whole key text, `lk_` included, as
//! UTF-8) is stored in `clients.api_key_hash`; the key itself is shown once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

pub const KEY_PREFIX: &str = "lk_";
const KEY_BYTES: usize = 32;

/// A freshly generated key. `Debug` never shows it.
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ApiKey(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The key text, for the one line that shows it to the operator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        loket_store::api_key_hash(&self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// A client name: 1–64 characters, letters, digits, `-`, `_`, `.`.
pub fn validate_client_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("client name: must not be empty".into());
    }
    if name.chars().count() > 64 {
        return Err("client name: at most 64 characters".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "client name: {bad:?} not allowed (use letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_has_prefix_and_43_url_safe_characters() {
        let key = ApiKey::generate();
        let text = key.expose();
        let body = text.strip_prefix(KEY_PREFIX).expect("prefix");
        assert_eq!(body.len(), 43);
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
    }

    #[test]
    fn keys_are_distinct() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn the_stored_hash_is_of_the_whole_key_text() {
        let key = ApiKey::generate();
        assert_eq!(key.hash(), loket_store::api_key_hash(key.expose()));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(key.expose()));
        assert!(!shown.contains(KEY_PREFIX));
    }

    #[test]
    fn client_names() {
        assert!(validate_client_name("pos-backend_1.eu").is_ok());
        assert!(validate_client_name("").unwrap_err().contains("empty"));
        assert!(validate_client_name("a b").unwrap_err().contains("' '"));
        assert!(validate_client_name(&"x".repeat(65)).is_err());
    }
}
