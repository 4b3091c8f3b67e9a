//! Metric names of this crate, in one place (CONVENTIONS #10).

/// HTTP requests sent to Smilepayz, by `operation` and `transport`.
pub const REQUESTS: &str = "loket_smilepayz_requests_total";
/// Time from send to reply (or transport error), by `operation`.
pub const REQUEST_SECONDS: &str = "loket_smilepayz_request_seconds";
/// Classified outcomes, by `operation` and `outcome`.
pub const OUTCOMES: &str = "loket_smilepayz_outcomes_total";
/// Callbacks parsed, by `result` (`ok`, `bad_signature`, `stale`, `malformed`).
pub const CALLBACKS: &str = "loket_smilepayz_callbacks_total";
