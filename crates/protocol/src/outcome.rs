//! The unified outcome of one provider exchange, the same for every provider.
//! Rule 1 of the money-safety rules lives here: anything we cannot classify
//! with certainty is [`Outcome::Unknown`], never [`Outcome::Failed`].

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider did the work (money moved, bill found).
    Success,
    /// The provider accepted the request and will finish it later.
    Pending,
    /// The provider definitely did not and will not do the work.
    Failed,
    /// We do not know: timeout, connection error after send, 5xx, garbled
    /// reply, or a code that says "check status". Resolved by a status check.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Pending => "pending",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "success" => Some(Outcome::Success),
            "pending" => Some(Outcome::Pending),
            "failed" => Some(Outcome::Failed),
            "unknown" => Some(Outcome::Unknown),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Outcome::Success | Outcome::Failed)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
