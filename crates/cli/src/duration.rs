//! Durations on the command line: an integer and a unit, `500ms`, `30s`, `2m`,
//! `1h`. A bare number is refused: `--wait 30` could mean seconds or
//! milliseconds, and guessing wrong makes a client wait 1000 times too long or
//! too short.

use std::time::Duration;

/// Parses `500ms`, `30s`, `2m` or `1h` (whitespace around is ignored).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: missing unit (write e.g. 500ms, 30s or 2m)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "{text:?}: expected a whole number followed by ms, s, m or h (e.g. 30s)"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: number too large"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h, e.g. 30s)"
            ))
        }
    };
    let millis = value
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("{text:?}: duration too large"))?;
    Ok(Duration::from_millis(millis))
}

/// A duration as the `wait_ms` of a request: at most `u32::MAX` milliseconds.
pub fn wait_ms(wait: Option<Duration>) -> Result<u32, String> {
    match wait {
        None => Ok(0),
        Some(wait) => u32::try_from(wait.as_millis())
            .map_err(|_| format!("--wait {}ms is too long", wait.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_input() {
        for bad in [
            "30", "", "s", "1.5s", "-1s", "10 s", "3d", "5sec", "ms500", "1m30s",
        ] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(
                error.contains(&format!("{:?}", bad.trim())),
                "{bad}: {error}"
            );
        }
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn refuses_overflow() {
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn wait_ms_fits_u32() {
        assert_eq!(wait_ms(None), Ok(0));
        assert_eq!(wait_ms(Some(Duration::from_secs(30))), Ok(30_000));
        assert!(wait_ms(Some(Duration::from_secs(5_000_000))).is_err());
    }
}
