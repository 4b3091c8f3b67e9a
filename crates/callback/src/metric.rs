//! Every metric the callback receiver records, in one place, and the
//! callback counter's zero series registered when it starts
//! ([`register_at_zero`]).

use loket_protocol::Provider;

/// Callbacks by `provider` and `result` (the values in [`result`]).
pub const CALLBACKS: &str = "loket_callback_requests_total";
/// Time from the request to the answer, accepted callbacks only.
pub const HANDLE_SECONDS: &str = "loket_callback_handle_seconds";
/// Connections closed at accept, by `reason` (`source`: no allow-list admits
/// it; `source_full`: `max_connections_per_source`; `full`: `max_connections`).
pub const CONNECTIONS_REFUSED: &str = "loket_callback_connections_refused_total";
/// Open HTTP connections.
pub const CONNECTIONS_OPEN: &str = "loket_callback_connections_open";

/// The `result` label values of [`CALLBACKS`]: how the receiver answered.
pub mod result {
    /// Made durable on the bus and acknowledged.
    pub const ACCEPTED: &str = "accepted";
    /// The provider's parser refused it (signature, format).
    pub const REJECTED: &str = "rejected";
    /// From a source the provider's allow-list does not admit.
    pub const FORBIDDEN: &str = "forbidden";
    /// A body over `body_limit_bytes`, declared or read.
    pub const TOO_LARGE: &str = "too_large";
    /// The body still arriving after `request_timeout_ms`.
    pub const SLOW_BODY: &str = "slow_body";
    /// The body could not be read (the connection broke).
    pub const BROKEN_BODY: &str = "broken_body";
    /// Could not be made durable (JetStream did not acknowledge it).
    pub const UNAVAILABLE: &str = "unavailable";
    /// A path naming no provider the receiver has a parser for; counted
    /// under the provider [`super::NO_PROVIDER`].
    pub const UNKNOWN_PROVIDER: &str = "unknown_provider";
}

/// Every `result` a callback for a known provider can end with.
const PROVIDER_RESULTS: [&str; 7] = [
    result::ACCEPTED,
    result::REJECTED,
    result::FORBIDDEN,
    result::TOO_LARGE,
    result::SLOW_BODY,
    result::BROKEN_BODY,
    result::UNAVAILABLE,
];

/// The `provider` label of a callback naming no provider the receiver knows
/// (its name is the caller's text, which must not become a label value).
pub const NO_PROVIDER: &str = "unknown";

/// Puts [`CALLBACKS`] on `/metrics` at zero for each of `providers` (those
/// the receiver has a parser for) with each result, and for a callback
/// naming no known provider. A counter first seen at its first increment
/// leaves a dashboard or an alert on it with no data until then, and
/// Prometheus's `increase()` cannot count that first increment. The
/// connection counters are registered by the accept loop itself. Call it
/// once the recorder is installed; adding zero changes no value, so a
/// second receiver in one process (tests) changes nothing.
pub fn register_at_zero(providers: impl IntoIterator<Item = Provider>) {
    for provider in providers {
        for result in PROVIDER_RESULTS {
            metrics::counter!(CALLBACKS, "provider" => provider.as_str(), "result" => result)
                .increment(0);
        }
    }
    metrics::counter!(CALLBACKS, "provider" => NO_PROVIDER, "result" => result::UNKNOWN_PROVIDER)
        .increment(0);
}
