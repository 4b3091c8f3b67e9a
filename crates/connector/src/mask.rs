//! Masking of secrets in text that will be stored or logged (provider
//! exchanges, callback bodies). Providers mask the fields they know (PIN,
//! signature) when they build the stored copy; [`Masker`] is the second
//! line of defence that removes any configured secret value wherever it
//! appears.

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
            .collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_and_ignores_empty() {
        let masker = Masker::new(["pin-1234", ""]);
        assert_eq!(masker.mask("a pin-1234 b pin-1234"), "a *** b ***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }
}
