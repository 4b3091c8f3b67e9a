//! Logging and trace context. Every service logs through `tracing`; spans
//! carry `trace_id` and `transaction_id` so one purchase can be followed
//! across ingress → bus → connector → provider → callback → reconciler.
//!
//! The trace context travels on the bus as a W3C `traceparent` header
//! (`00-<32 hex trace id>-<16 hex parent id>-01`); [`TraceContext`] creates,
//! parses and continues it.

use rand::RngCore;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Installs the global subscriber once per process (later calls, e.g. from
/// several services started in one test process, are no-ops). Keep the
/// returned guard until the process ends: dropping it writes out the lines
/// still buffered (see [`BatchedStdout`]).
pub fn init(service: &'static str, json: bool) -> LogGuard {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = BatchedStdout::default();
    let result = if json {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_current_span(true)
            .with_writer(out.clone())
            .try_init()
    } else {
        // Colours only on a terminal: a log file (`make run` writes one per
        // service) stays plain text an operator can grep.
        fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(out.clone())
            .try_init()
    };
    if result.is_err() {
        return LogGuard(None);
    }
    let flusher = out.clone();
    let started = std::thread::Builder::new()
        .name("loket-log".into())
        .spawn(move || loop {
            std::thread::sleep(FLUSH_EVERY);
            flusher.write_out();
        });
    if let Err(error) = started {
        eprintln!(
            "log writer thread not started ({error}); logs are written when the buffer fills"
        );
    }
    tracing::info!(service, "telemetry started");
    LogGuard(Some(out))
}

/// How often buffered log lines are written to stdout.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this large is written out by the thread that filled it, so a
/// slow stdout slows logging down instead of growing memory.
const BUFFER_LIMIT: usize = 1 << 20;

/// Writes what is still buffered when dropped (at the end of `main`).
#[must_use = "dropping the guard writes out the buffered log lines; keep it until the process ends"]
pub struct LogGuard(Option<BatchedStdout>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(out) = &self.0 {
            out.write_out();
        }
    }
}

/// Stdout in batches: a log event appends its line to a buffer, and a
/// writer thread writes the buffer out every [`FLUSH_EVERY`] in one system
/// call. Logging therefore never blocks an async worker thread on I/O, and
/// a service logging thousands of lines a second makes a few dozen writes.
/// Lines stay in order; a process killed outright loses at most the last
/// [`FLUSH_EVERY`] of them.
#[derive(Clone, Default)]
pub struct BatchedStdout {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl BatchedStdout {
    fn write_out(&self) {
        // Stdout's lock first: two threads writing out at once keep the
        // lines in the order they were buffered.
        let mut stdout = std::io::stdout().lock();
        let lines = std::mem::take(&mut *self.lock());
        if !lines.is_empty() {
            let _ = stdout.write_all(&lines);
            let _ = stdout.flush();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A thread that panicked while appending left whole bytes behind;
        // the buffer is still usable.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Write for &BatchedStdout {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut buffer = self.lock();
            buffer.extend_from_slice(bytes);
            buffer.len() >= BUFFER_LIMIT
        };
        if full {
            self.write_out();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedStdout {
    type Writer = &'a BatchedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self
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
    fn log_lines_wait_in_order_and_a_full_buffer_is_written_out_by_its_writer() {
        let out = BatchedStdout::default();
        (&out).write_all(b"first line\n").unwrap();
        (&out).write_all(b"second line\n").unwrap();
        assert_eq!(out.lock().as_slice(), b"first line\nsecond line\n");

        out.write_out();
        assert!(out.lock().is_empty(), "written out, nothing left");

        // A writer that fills the buffer writes it out itself, so memory
        // stays bounded when the writer thread cannot keep up.
        let line = vec![b'x'; BUFFER_LIMIT / 4];
        for _ in 0..3 {
            (&out).write_all(&line).unwrap();
        }
        assert_eq!(out.lock().len(), 3 * line.len(), "below the limit: kept");
        (&out).write_all(&line).unwrap();
        assert!(out.lock().is_empty(), "at the limit: written out at once");
    }

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
