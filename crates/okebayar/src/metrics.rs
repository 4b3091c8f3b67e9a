//! Metric names of this crate, in one place (CONVENTIONS #10).

/// HTTP requests sent to OkeBayar, by `operation` and `transport`
/// (`reply`, `not_sent`, `maybe_sent`).
pub const REQUESTS: &str = "loket_okebayar_requests_total";
/// Time from send to reply (or transport error), by `operation`.
pub const REQUEST_SECONDS: &str = "loket_okebayar_request_seconds";
/// Classified outcomes, by `operation` and `outcome`.
pub const OUTCOMES: &str = "loket_okebayar_outcomes_total";
/// Callbacks parsed, by `result` (`ok`, `malformed`).
pub const CALLBACKS: &str = "loket_okebayar_callbacks_total";
