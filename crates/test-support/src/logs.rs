//! Captures every log line the process writes (all in-process services log
//! through one global `tracing` subscriber), so tests can assert what an
//! operator would see — and that no secret is in it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

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

fn buffer() -> &'static Buffer {
    static BUFFER: OnceLock<Buffer> = OnceLock::new();
    BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        // Debug level everywhere in loket, so a leak at any level is caught.
        let filter = tracing_subscriber::EnvFilter::new("info,loket=debug");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .try_init();
        buffer
    })
}

/// Installs the capturing subscriber (once per process).
pub fn capture() {
    let _ = buffer();
}

/// Everything logged so far.
pub fn captured() -> String {
    String::from_utf8_lossy(&buffer().0.lock().expect("log buffer")).into_owned()
}
