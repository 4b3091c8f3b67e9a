//! Metric names of the ingress, in one place.

use std::time::Instant;

/// Counter: calls by `method` and gRPC `code` (`ok`, `invalid_argument`, …).
pub const REQUESTS: &str = "loket_ingress_requests_total";
/// Histogram (seconds): call latency by `method`.
pub const REQUEST_DURATION: &str = "loket_ingress_request_duration_seconds";
/// Counter: transactions inserted, by `kind`.
pub const TRANSACTIONS_CREATED: &str = "loket_ingress_transactions_created_total";
/// Counter: mutating calls answered with an existing transaction (replays).
pub const IDEMPOTENT_REPLAYS: &str = "loket_ingress_idempotent_replays_total";
/// Counter: first-dispatch publishes that failed (the sweep will re-dispatch).
pub const DISPATCH_FAILURES: &str = "loket_ingress_dispatch_failures_total";
/// Gauge: open `WatchTransactions` streams.
pub const WATCH_STREAMS: &str = "loket_ingress_watch_streams";

pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Records one finished call.
pub fn record(method: &'static str, code: tonic::Code, started: Instant) {
    metrics::counter!(REQUESTS, "method" => method, "code" => code_label(code)).increment(1);
    metrics::histogram!(REQUEST_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
}
