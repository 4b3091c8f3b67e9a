//! Metric names of the ingress, in one place, and the counters' zero series
//! registered when it starts ([`register_at_zero`]).

use loket_protocol::{pb, TransactionKind};
use prost::Message as _;
use std::time::Instant;
use tonic::Code;

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

/// The codes a call is counted with: `OK`, and each code
/// [`crate::errors::ApiError::code`] gives an error (every failed call goes
/// through it). Codes tonic answers on its own, before a method runs, are not
/// counted here.
const ANSWERED_CODES: [Code; 10] = [
    Code::Ok,
    Code::Unauthenticated,
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::AlreadyExists,
    Code::Unavailable,
    Code::Internal,
    Code::Unimplemented,
    Code::ResourceExhausted,
];

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

/// The `method` label values of [`REQUESTS`]: the methods of the `Loket`
/// service, as its compiled-in descriptor names them (the gRPC method names
/// each call is counted under), so a method added to the API is counted from
/// the start without a list to keep in step here.
pub fn methods() -> Vec<String> {
    let service =
        <pb::loket_server::LoketServer<crate::LoketService> as tonic::server::NamedService>::NAME;
    // The descriptor is compiled in; one that did not decode would leave
    // only the `method` series unregistered, and the ingress's tests fail.
    let descriptors =
        prost_types::FileDescriptorSet::decode(pb::API_FILE_DESCRIPTOR_SET).unwrap_or_default();
    descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .filter(|candidate| format!("{}.{}", file.package(), candidate.name()) == service)
        })
        .flat_map(|service| {
            service
                .method
                .iter()
                .map(|method| method.name().to_string())
        })
        .collect()
}

/// Puts every counter above on `/metrics` at zero, each labelled one with the
/// label values known before any call: [`REQUESTS`] for each method and
/// answered code, [`TRANSACTIONS_CREATED`] for each transaction kind. A
/// counter first seen at its first increment leaves a dashboard or an alert
/// on it with no data until then, and Prometheus's `increase()` cannot count
/// that first increment. The [`WATCH_STREAMS`] gauge starts at 0 too (none is
/// open yet). Call it once the recorder is installed; adding zero changes no
/// value, so a second ingress in one process (tests) changes nothing.
pub fn register_at_zero() {
    for method in methods() {
        for code in ANSWERED_CODES.map(code_label) {
            metrics::counter!(REQUESTS, "method" => method.clone(), "code" => code).increment(0);
        }
    }
    for kind in TransactionKind::ALL.map(TransactionKind::as_str) {
        metrics::counter!(TRANSACTIONS_CREATED, "kind" => kind).increment(0);
    }
    metrics::counter!(IDEMPOTENT_REPLAYS).increment(0);
    metrics::counter!(DISPATCH_FAILURES).increment(0);
    metrics::gauge!(WATCH_STREAMS).increment(0.0);
}
