//! Every metric the callback receiver records, in one place.

/// Callbacks by `provider` and `result` (accepted, rejected, forbidden,
/// too_large, timeout, unavailable, unknown_provider).
pub const CALLBACKS: &str = "loket_callback_requests_total";
/// Time from the request to the answer, accepted callbacks only.
pub const HANDLE_SECONDS: &str = "loket_callback_handle_seconds";
/// Connections closed at accept, by `reason` (`source`: no allow-list admits
/// it; `source_full`: `max_connections_per_source`; `full`: `max_connections`).
pub const CONNECTIONS_REFUSED: &str = "loket_callback_connections_refused_total";
/// Open HTTP connections.
pub const CONNECTIONS_OPEN: &str = "loket_callback_connections_open";
