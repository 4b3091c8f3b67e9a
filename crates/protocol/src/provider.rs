//! The providers loket speaks to. The name is the token used in bus subjects,
//! configuration keys, database rows and the API.

use std::fmt;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    OkeBayar,
    Doku,
    SnapQr,
    Smilepayz,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected one of okebayar, doku, snapqr, smilepayz)")]
pub struct UnknownProvider(pub String);

impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::OkeBayar,
        Provider::Doku,
        Provider::SnapQr,
        Provider::Smilepayz,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OkeBayar => "okebayar",
            Provider::Doku => "doku",
            Provider::SnapQr => "snapqr",
            Provider::Smilepayz => "smilepayz",
        }
    }

    /// Whether loket has a connector for the provider, so a transaction
    /// routed to it is ever sent. DOKU has only its code catalogue (for
    /// `loketctl explain`): a product routed to it would be accepted and
    /// never sent.
    pub fn has_connector(self) -> bool {
        !matches!(self, Provider::Doku)
    }

    /// Accepts the canonical name and a few common spellings, case-insensitively.
    pub fn parse(text: &str) -> Result<Self, UnknownProvider> {
        match text
            .trim()
            .to_ascii_lowercase()
            .replace(['-', '_', ' '], "")
            .as_str()
        {
            "okebayar" => Ok(Provider::OkeBayar),
            "doku" | "dokubiller" => Ok(Provider::Doku),
            "snapqr" | "snap" | "snapqrcpm" | "qrcpm" => Ok(Provider::SnapQr),
            "smilepayz" | "smilepay" => Ok(Provider::Smilepayz),
            // The error quotes what it was given; a caller may send megabytes.
            _ => Err(UnknownProvider(crate::text::shortened(text, 32))),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = UnknownProvider;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_is_quoted_at_most_32_characters_long() {
        let error = Provider::parse(&"x".repeat(4 << 20)).unwrap_err();
        assert_eq!(error.0, format!("{}…", "x".repeat(32)));
        assert!(error.to_string().len() < 150, "{error}");
        assert_eq!(Provider::parse("paypal").unwrap_err().0, "paypal");
        assert_eq!(
            Provider::parse(" Smile-Payz ").unwrap(),
            Provider::Smilepayz
        );
    }
}
