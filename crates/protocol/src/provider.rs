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
            _ => Err(UnknownProvider(text.to_string())),
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
