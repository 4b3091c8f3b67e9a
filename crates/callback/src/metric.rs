//! Every metric the callback receiver records, in one place.

/// Callbacks by `provider` and `result` (accepted, rejected, forbidden,
/// too_large, timeout, unavailable, unknown_provider).
pub const CALLBACKS: &str = "loket_callback_requests_total";
/// Time from the request to the answer, accepted callbacks only.
pub const HANDLE_SECONDS: &str = "loket_callback_handle_seconds";
/// Connections closed at once because `max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "loket_callback_connections_refused_total";
/// Open HTTP connections.
pub const CONNECTIONS_OPEN: &str = "loket_callback_connections_open";
