//! Logging, trace context and trace export. Every service logs through
//! `tracing`; spans carry `trace_id` and `transaction_id` so one purchase can
//! be followed across ingress → bus → connector → provider → callback →
//! reconciler.
//!
//! The trace context travels on the bus (and in gRPC metadata) as a W3C
//! `traceparent` header (`00-<32 hex trace id>-<16 hex parent id>-01`);
//! [`TraceContext`] creates, parses and continues it. With an OTLP endpoint
//! configured ([`init`]), the spans are also exported (OTLP over HTTP,
//! protobuf) to a collector: each unit of work's span is [`join`]ed to the
//! context it arrived with, so the services' spans of one purchase form one
//! trace with correct parent links, under the trace id the logs show. Span
//! fields are the log fields: nothing a log line may not carry is exported.

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rand::RngCore;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// How the logs are written and where spans go.
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// JSON log lines instead of human-readable ones.
    pub json: bool,
    /// OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`; spans go
    /// to `<base>/v1/traces`); empty: no export.
    pub otlp_endpoint: String,
}

/// Installs the global subscriber once per process (later calls, e.g. from
/// several services started in one test process, are no-ops). Keep the
/// returned guard until the process ends: dropping it writes out the lines
/// still buffered (see [`BatchedStdout`]) and the spans not yet exported.
/// An OTLP endpoint that cannot be used is reported on stderr and export
/// stays off; the service still starts.
pub fn init(service: &'static str, settings: &LogSettings) -> LogGuard {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        KeepSpans(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let out = BatchedStdout::default();
    let lines = if settings.json {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(out.clone())
            .boxed()
    } else {
        // Colours only on a terminal: a log file (`make run` writes one per
        // service) stays plain text an operator can grep.
        fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(out.clone())
            .boxed()
    };
    let provider = match otlp_provider(service, &settings.otlp_endpoint) {
        Ok(provider) => provider,
        Err(problem) => {
            eprintln!("otlp_endpoint: {problem}; spans are not exported");
            None
        }
    };
    let export = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
    });
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(export)
        .try_init();
    if result.is_err() {
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return LogGuard {
            out: None,
            provider: None,
        };
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
    tracing::info!(
        service,
        trace_export = provider.is_some(),
        "telemetry started"
    );
    LogGuard {
        out: Some(out),
        provider,
    }
}

/// The log filter (`RUST_LOG`) for events, with the spans at INFO and above
/// kept whatever it says. They carry the ids an operator follows a
/// transaction by (`transaction_id`, `trace_id`), and `RUST_LOG=warn` would
/// otherwise turn them off with the INFO lines, leaving every warning and
/// error without them. Every call still reaches the filter, so its span
/// directives (`[rpc]=debug`) work as before.
struct KeepSpans(tracing_subscriber::EnvFilter);

impl KeepSpans {
    fn keeps(metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_span() && *metadata.level() <= tracing::Level::INFO
    }
}

impl<S> tracing_subscriber::Layer<S> for KeepSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        let interest = tracing_subscriber::Layer::<S>::register_callsite(&self.0, metadata);
        if Self::keeps(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            interest
        }
    }

    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let enabled = tracing_subscriber::Layer::<S>::enabled(&self.0, metadata, ctx);
        enabled || Self::keeps(metadata)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        let info = tracing::level_filters::LevelFilter::INFO;
        Some(
            tracing_subscriber::Layer::<S>::max_level_hint(&self.0)
                .map_or(info, |hint| hint.max(info)),
        )
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        tracing_subscriber::Layer::<S>::on_new_span(&self.0, attrs, id, ctx)
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        tracing_subscriber::Layer::<S>::on_record(&self.0, id, values, ctx)
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_enter(&self.0, id, ctx)
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_exit(&self.0, id, ctx)
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::Layer::<S>::on_close(&self.0, id, ctx)
    }
}

/// The tracer provider exporting to `<endpoint>/v1/traces`, batched on its
/// own thread; `None` when no endpoint is set.
fn otlp_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<Option<SdkTracerProvider>, String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return Ok(None);
    }
    // What a problem may show of the endpoint: it can carry credentials
    // (`http://user:password@collector:4318`).
    let shown = crate::bus::without_credentials(endpoint);
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "{shown:?} must be an http:// URL (a collector or agent next to the service)"
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| error.to_string().replace(endpoint, &shown))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// Joins `span` to the trace its unit of work belongs to and returns the
/// context of that work: the one it `received` (from a `traceparent`), or a
/// new trace. The returned context is what the work sends on (as the next
/// hop's `traceparent`, unchanged). With export on, `span` is exported as a
/// child of the sender's span (or as the root of a new trace) and the
/// context carries the span's own ids; without, it is a new hop of the same
/// trace (a child of `received`). The trace id is recorded in the span's
/// `trace_id` field (declare it `tracing::field::Empty`), so log lines carry
/// the id the exported spans have.
pub fn join(span: &tracing::Span, received: Option<TraceContext>) -> TraceContext {
    let trace = joined(span, received);
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    trace
}

fn joined(span: &tracing::Span, received: Option<TraceContext>) -> TraceContext {
    if let Some(parent) = received {
        // Fails only when no exporting layer is installed (then nothing is
        // exported and the ids below come from `received`).
        let _ = span.set_parent(parent.to_otel());
    }
    let exported = span.context().span().span_context().clone();
    if exported.is_valid() {
        TraceContext {
            trace_id: exported.trace_id().to_bytes(),
            span_id: exported.span_id().to_bytes(),
        }
    } else {
        received.map_or_else(TraceContext::new_root, |parent| parent.child())
    }
}

/// How often buffered log lines are written to stdout.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// A buffer this large is written out by the thread that filled it, so a
/// slow stdout slows logging down instead of growing memory.
const BUFFER_LIMIT: usize = 1 << 20;

/// Writes what is still buffered when dropped (at the end of `main`), log
/// lines and spans.
#[must_use = "dropping the guard writes out the buffered log lines; keep it until the process ends"]
pub struct LogGuard {
    out: Option<BatchedStdout>,
    provider: Option<SdkTracerProvider>,
}

impl LogGuard {
    /// Exports the spans ended so far now, instead of with the next batch
    /// (tests; a drain before exit).
    pub fn flush_spans(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
        if let Some(out) = &self.out {
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

    /// This context as the remote parent of an exported span.
    fn to_otel(self) -> opentelemetry::Context {
        opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
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

    /// With the log level at warn, a warning still carries the ids of the
    /// INFO span it was logged in; INFO lines stay out.
    #[test]
    fn a_warning_keeps_its_span_ids_whatever_the_log_level() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let out = BatchedStdout::default();
        let subscriber = tracing_subscriber::registry()
            .with(KeepSpans(tracing_subscriber::EnvFilter::new("warn")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(out.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", transaction_id = "t-4711");
            let _entered = span.enter();
            tracing::info!("an info line");
            tracing::warn!("a warning");
        });
        let written = String::from_utf8(std::mem::take(&mut *out.lock())).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1, "{written}");
        assert!(
            lines[0].contains("a warning") && lines[0].contains("t-4711"),
            "{written}"
        );
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
    fn without_export_a_joined_span_is_a_new_hop_of_the_received_trace() {
        let received = TraceContext::new_root();
        let joined = join(&tracing::Span::none(), Some(received));
        assert_eq!(joined.trace_id(), received.trace_id());
        assert_ne!(joined, received);
    }

    /// An OTLP endpoint that cannot be used is reported on stderr; the
    /// credentials it may carry are not.
    #[test]
    fn an_unusable_otlp_endpoint_is_reported_without_its_credentials() {
        for endpoint in [
            "https://otel:CANARY-OTLP-PW@collector:4318",
            "http://otel:CANARY-OTLP-PW@collector:4318/a path",
        ] {
            let problem = otlp_provider("test", endpoint).expect_err("refused");
            assert!(problem.contains("collector"), "{problem}");
            assert!(!problem.contains("CANARY-OTLP-PW"), "{problem}");
        }
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
        let fresh = join(&tracing::Span::none(), TraceContext::parse("nope"));
        assert_eq!(fresh.trace_id().len(), 32);
    }
}
