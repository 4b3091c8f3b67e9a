//! Logging and trace context. Every service logs through `tracing`; spans
//! carry `trace_id` and `transaction_id` so one purchase can be followed
//! across ingress → bus → connector → provider → callback → reconciler.
//!
//! The trace context travels on the bus as a W3C `traceparent` header
//! (`00-<32 hex trace id>-<16 hex parent id>-01`); [`TraceContext`] creates,
//! parses and continues it.

use rand::RngCore;
use std::fmt;

/// Installs the global subscriber once per process (later calls, e.g. from
/// several services started in one test process, are no-ops).
pub fn init(service: &'static str, json: bool) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .try_init()
    } else {
        // Colours only on a terminal: a log file (`make run` writes one per
        // service) stays plain text an operator can grep.
        fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
    if result.is_ok() {
        tracing::info!(service, "telemetry started");
    }
}

/// A W3C trace context.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

impl TraceContext {
    /// A new trace (the ingress starts one per request).
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        rng.fill_bytes(&mut trace_id);
        rng.fill_bytes(&mut span_id);
        TraceContext { trace_id, span_id }
    }

    /// The same trace with a new span id, for the next hop.
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut span_id);
        TraceContext {
            trace_id: self.trace_id,
            span_id,
        }
    }

    /// Parses a `traceparent` header; `None` when malformed.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let _flags = parts.next()?;
        if version != "00" || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id })
    }

    /// Continues the trace named by a header, or starts a new one.
    pub fn continue_or_new(header: Option<&str>) -> Self {
        header
            .and_then(Self::parse)
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn to_header(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace_id),
            hex::encode(self.span_id)
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::parse(&root.to_header()).unwrap();
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.to_header(), root.to_header());
    }

    #[test]
    fn malformed_headers_start_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "01-00000000000000000000000000000000-0000000000000000-01",
            "00-xyz-abc-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let fresh = TraceContext::continue_or_new(Some("nope"));
        assert_eq!(fresh.trace_id().len(), 32);
    }
}
