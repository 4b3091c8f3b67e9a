//! Metric names of this crate, in one place (CONVENTIONS #10).

/// HTTP requests sent to the issuer, by `service` and `transport`
/// (`reply`, `not_sent`, `maybe_sent`).
pub const REQUESTS: &str = "loket_snapqr_requests_total";
/// Time from send to reply (or transport error), by `service`.
pub const REQUEST_SECONDS: &str = "loket_snapqr_request_seconds";
/// Classified outcomes, by `operation` and `outcome`.
pub const OUTCOMES: &str = "loket_snapqr_outcomes_total";
/// B2B token fetches, by `result` (`ok`, `error`).
pub const TOKEN_FETCHES: &str = "loket_snapqr_token_fetches_total";
/// Calls whose B2B token was refused (401xx01/03, or HTTP 401 with a body
/// that is no SNAP reply): the token is dropped, and on a SNAP 401xx01/03
/// at HTTP 401 refreshed and the call sent again, once.
pub const TOKEN_REJECTED: &str = "loket_snapqr_token_rejected_total";
/// Notifies parsed, by `result` (`ok`, `malformed`, `bad_signature`, `stale`).
pub const NOTIFIES: &str = "loket_snapqr_notifies_total";
/// Access tokens asked of us by the issuer (notify mode B), by `result`
/// (`granted`, `refused`).
pub const NOTIFY_TOKENS: &str = "loket_snapqr_notify_tokens_total";
