//! Captures every log line the process writes (all in-process services log
//! through one global `tracing` subscriber), so tests can assert what an
//! operator would see — and that no secret is in it.
//!
//! The capture keeps loket's debug lines and everyone's info lines
//! ([`DEFAULT_FILTER`]). A leak test can widen it with [`verbose`] to every
//! level of loket and the debug lines of the libraries secrets pass
//! through ([`VERBOSE_FILTER`]), for as long as it holds the guard; the
//! other tests keep the cheaper default.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Debug level everywhere in loket, so a leak at any level it normally
/// logs at is caught.
pub const DEFAULT_FILTER: &str = "info,loket=debug";

/// Every level of loket (its crates and simulators), and the debug lines of
/// the HTTP, gRPC, bus and database libraries requests and secrets pass
/// through (`log` records, as reqwest and rustls write, included).
pub const VERBOSE_FILTER: &str = "info,loket=trace,hyper=debug,hyper_util=debug,reqwest=debug,\
     tower_http=debug,tower=debug,h2=debug,tonic=debug,async_nats=debug,sqlx=debug,rustls=debug";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(data);
        if echo_enabled() {
            std::io::stderr().write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `LOKET_TEST_LOG=1` also prints the captured lines (for debugging a test).
fn echo_enabled() -> bool {
    static ECHO: OnceLock<bool> = OnceLock::new();
    *ECHO.get_or_init(|| std::env::var_os("LOKET_TEST_LOG").is_some())
}

struct Capture {
    buffer: Buffer,
    /// `None` when another subscriber was installed first (this process
    /// then logs elsewhere, and the filter is not ours to change).
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    /// How many [`Verbose`] guards are alive.
    verbose: Mutex<usize>,
}

fn state() -> &'static Capture {
    static STATE: OnceLock<Capture> = OnceLock::new();
    STATE.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let (filter, handle) = reload::Layer::new(EnvFilter::new(DEFAULT_FILTER));
        let installed = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_ansi(false),
            )
            .try_init()
            .is_ok();
        Capture {
            buffer,
            filter: installed.then_some(handle),
            verbose: Mutex::new(0),
        }
    })
}

/// Installs the capturing subscriber (once per process).
pub fn capture() {
    let _ = state();
}

/// Everything logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&state().buffer.0.lock().expect("log buffer")).into_owned()
}

/// While alive, the capture uses [`VERBOSE_FILTER`]; see [`verbose`].
#[must_use = "the capture is verbose only while the guard lives"]
pub struct Verbose(());

impl Drop for Verbose {
    fn drop(&mut self) {
        let capture = state();
        let mut count = capture.verbose.lock().unwrap_or_else(|e| e.into_inner());
        *count -= 1;
        if *count == 0 {
            if let Some(handle) = &capture.filter {
                let _ = handle.reload(EnvFilter::new(DEFAULT_FILTER));
            }
        }
    }
}

/// Widens the capture to [`VERBOSE_FILTER`] until the guard is dropped.
/// Panics when the capture is not this process's subscriber (another one
/// was installed first), as the leak check would then look at nothing.
pub fn verbose() -> Verbose {
    let capture = state();
    let handle = capture
        .filter
        .as_ref()
        .expect("the log capture is this process's subscriber");
    let mut count = capture.verbose.lock().unwrap_or_else(|e| e.into_inner());
    if *count == 0 {
        handle
            .reload(EnvFilter::new(VERBOSE_FILTER))
            .expect("the capture's filter reloads");
    }
    *count += 1;
    Verbose(())
}
