//! WIB (Waktu Indonesia Barat, UTC+7): the time zone every provider here
//! writes its times in, and the day Indonesian finance counts in.

use chrono::FixedOffset;

/// The UTC+7 offset.
pub fn wib() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

/// `at` as WIB wall time with its offset, to the second
/// (`2026-11-22T17:00:00+07:00`): the `X-TIMESTAMP` form SNAP and Smilepayz
/// sign and send.
pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&wib())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamp_is_wib_wall_time_with_its_offset() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00.750Z")
            .unwrap()
            .to_utc();
        assert_eq!(timestamp(at), "2026-11-22T17:00:00+07:00");
    }
}
