//! WIB (Waktu Indonesia Barat, UTC+7): the time zone every provider here
//! writes its times in, and the day Indonesian finance counts in.

use chrono::FixedOffset;

/// The UTC+7 offset.
pub fn wib() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}
