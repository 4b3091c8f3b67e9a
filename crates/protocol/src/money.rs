//! Exact money. Amounts are integers in the currency's smallest unit as loket
//! counts it; for IDR that is the whole rupiah (no sen circulate, and every
//! provider settles whole rupiah). Provider formats (`11000.00`, `"10000.00"`,
//! `150000`) are converted at the connector's edge with [`Money::parse_decimal`]
//! and [`Money::to_decimal_2`]; floating point is never involved.

use std::fmt;

use crate::text::shortened;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Currency {
    #[serde(rename = "IDR")]
    Idr,
}

impl Currency {
    pub fn code(self) -> &'static str {
        match self {
            Currency::Idr => "IDR",
        }
    }

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code {
            "IDR" => Ok(Currency::Idr),
            other => Err(MoneyError::UnsupportedCurrency(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

/// How many characters of the given text a [`MoneyError`] message quotes.
/// The text is often a provider's field, up to a whole reply (1 MB): quoted
/// whole, it would swell the report detail it is noted in past what the bus
/// carries (a result event that can never be published). Any real amount or
/// currency is far shorter.
const QUOTED_CHARS: usize = 40;

/// Why a text is not an amount. Each variant holds the text as given; its
/// message quotes at most [`QUOTED_CHARS`] characters of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unsupported currency {:?}", shortened(.0, QUOTED_CHARS))]
    UnsupportedCurrency(String),
    #[error("amount {:?} is not a decimal number", shortened(.0, QUOTED_CHARS))]
    NotANumber(String),
    #[error(
        "amount {:?} has a fractional part; IDR amounts must be whole rupiah",
        shortened(.0, QUOTED_CHARS)
    )]
    Fractional(String),
    #[error(
        "amount {:?} has more than two decimal places; it may be a thousands separator",
        shortened(.0, QUOTED_CHARS)
    )]
    AmbiguousDecimals(String),
    #[error("amount {:?} is out of range", shortened(.0, QUOTED_CHARS))]
    OutOfRange(String),
    #[error("amount must not be negative")]
    Negative,
}

impl Money {
    pub const fn idr(minor: i64) -> Self {
        Money {
            minor,
            currency: Currency::Idr,
        }
    }

    /// Parses a provider's decimal text exactly: `"11000"`, `"11000.00"`,
    /// `"11000.0"`, with optional surrounding whitespace. A non-zero fraction
    /// is an error rather than silently rounded, and so is a fraction of three
    /// or more digits even when they are zeros: no provider sends more than
    /// two decimals, and `"50.000"` in Indonesian notation is fifty thousand.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let trimmed = text.trim();
        let err = || MoneyError::NotANumber(text.to_string());
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if let Some(f) = fraction {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            if f.len() > 2 {
                return Err(MoneyError::AmbiguousDecimals(text.to_string()));
            }
            if f.bytes().any(|b| b != b'0') {
                return Err(MoneyError::Fractional(text.to_string()));
            }
        }
        let value: i64 = whole
            .parse()
            .map_err(|_| MoneyError::OutOfRange(text.to_string()))?;
        if negative && value != 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Money {
            minor: value,
            currency,
        })
    }

    /// `10000` → `"10000.00"` (SNAP's and OkeBayar's two-decimal form).
    pub fn to_decimal_2(self) -> String {
        format!("{}.00", self.minor)
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Some(Money {
            minor: self.minor.checked_add(other.minor)?,
            currency: self.currency,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency.code(), self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_provider_formats_exactly() {
        for (text, want) in [
            ("11000.00", 11000),
            ("110000", 110000),
            (" 150000 ", 150000),
            ("0.0", 0),
        ] {
            assert_eq!(
                Money::parse_decimal(text, Currency::Idr).unwrap().minor,
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_fractions_and_garbage() {
        assert_eq!(
            Money::parse_decimal("11000.50", Currency::Idr),
            Err(MoneyError::Fractional("11000.50".into()))
        );
        for grouped in ["50.000", "10.000", "1.000.000", "11000.000"] {
            assert!(
                Money::parse_decimal(grouped, Currency::Idr).is_err(),
                "{grouped} must not be read as {}",
                grouped.split('.').next().unwrap()
            );
        }
        assert_eq!(
            Money::parse_decimal("50.000", Currency::Idr),
            Err(MoneyError::AmbiguousDecimals("50.000".into()))
        );
        for bad in [
            "",
            "abc",
            "1e5",
            "12.",
            ".5",
            "1,000",
            "-5",
            "99999999999999999999",
        ] {
            assert!(Money::parse_decimal(bad, Currency::Idr).is_err(), "{bad}");
        }
    }

    /// A provider's amount field can be as long as its reply (1 MB); the
    /// error's message, noted in a report, quotes only its start.
    #[test]
    fn an_error_quotes_only_the_start_of_a_huge_input() {
        let digits = "9".repeat(100_000);
        let spaces = " ".repeat(100_000);
        let errors = [
            Money::parse_decimal(&format!("{digits}x"), Currency::Idr).unwrap_err(),
            Money::parse_decimal(&format!("1.5{spaces}"), Currency::Idr).unwrap_err(),
            Money::parse_decimal(&format!("1.{digits}"), Currency::Idr).unwrap_err(),
            Money::parse_decimal(&digits, Currency::Idr).unwrap_err(),
            Currency::parse(&digits).unwrap_err(),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                message.chars().count() <= 200 && message.contains('…'),
                "{} characters: {}",
                message.chars().count(),
                crate::text::clip(&message, 120)
            );
        }
    }

    proptest! {
        #[test]
        fn decimal_round_trip(value in 0i64..=i64::MAX / 2) {
            let money = Money::idr(value);
            prop_assert_eq!(Money::parse_decimal(&money.to_decimal_2(), Currency::Idr), Ok(money));
            prop_assert_eq!(Money::parse_decimal(&value.to_string(), Currency::Idr), Ok(money));
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = Money::parse_decimal(&text, Currency::Idr);
        }
    }
}
