//! The simulators' ports as `loket-sim` serves them: a connection that never
//! sends a whole request head is closed, open connections are capped, and a
//! stop ends within its grace period whatever the clients do. Without these
//! a client holding half-sent requests used up the process's file
//! descriptors and kept `loket-sim` (and a test's simulator) from stopping.

use std::net::SocketAddr;
use std::time::Duration;

use loket_runtime::Shutdown;
use loket_simulators::service::{self, InvalidSetting, Listeners, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request cut off in the middle of a header line, as a slow or hostile
/// client leaves it.
const HALF_SENT_HEAD: &[u8] = b"POST / HTTP/1.1\r\nHost: sim\r\nX-Slow: ";

/// `loket-sim` with every simulator on a loopback port.
struct Sims {
    okebayar: SocketAddr,
    smilepayz: SocketAddr,
    snapqr: SocketAddr,
    shutdown: Shutdown,
    running: JoinHandle<Result<(), InvalidSetting>>,
}

impl Drop for Sims {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Sims {
    async fn start(settings: Settings) -> Sims {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let (okebayar, smilepayz, snapqr) = (
            bind().await.unwrap(),
            bind().await.unwrap(),
            bind().await.unwrap(),
        );
        let addr = |listener: &TcpListener| listener.local_addr().unwrap();
        let (okebayar_addr, smilepayz_addr, snapqr_addr) =
            (addr(&okebayar), addr(&smilepayz), addr(&snapqr));
        let listeners = Listeners {
            okebayar,
            admin: bind().await.unwrap(),
            smilepayz: Some(smilepayz),
            snapqr: Some(snapqr),
        };
        let shutdown = Shutdown::new();
        let running = tokio::spawn(service::run(settings, listeners, shutdown.clone()));
        Sims {
            okebayar: okebayar_addr,
            smilepayz: smilepayz_addr,
            snapqr: snapqr_addr,
            shutdown,
            running,
        }
    }

    fn ports(&self) -> [(&'static str, SocketAddr); 3] {
        [
            ("okebayar", self.okebayar),
            ("smilepayz", self.smilepayz),
            ("snapqr", self.snapqr),
        ]
    }
}

/// A connection to `addr` that sent `bytes` and nothing more.
async fn connect_and_send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Whether the server closed `stream` within `wait` (end of stream or a
/// reset), after any reply it wrote.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let until_closed = async { while matches!(stream.read(&mut buf).await, Ok(1..)) {} };
    tokio::time::timeout(wait, until_closed).await.is_ok()
}

/// A kept-alive connection to `addr` that had one request answered, so the
/// port holds it open.
async fn answered_connection(addr: SocketAddr) -> TcpStream {
    let mut stream =
        connect_and_send(addr, b"GET /_sim/outage HTTP/1.1\r\nHost: sim\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    assert!(
        buf[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..read])
    );
    stream
}

/// Guards the header-read timeout of every simulator's port: a client that
/// sends part of a request head, or connects and sends nothing (as a
/// kept-alive connection idles), is disconnected once
/// `header_read_timeout_ms` passes, however long `body_read_timeout_ms`.
#[tokio::test]
async fn a_connection_that_never_finishes_its_request_head_is_closed_by_every_simulator() {
    let sims = Sims::start(Settings {
        header_read_timeout_ms: 300,
        ..Settings::default()
    })
    .await;
    for (simulator, addr) in sims.ports() {
        let mut half_sent = connect_and_send(addr, HALF_SENT_HEAD).await;
        let mut silent = connect_and_send(addr, b"").await;
        let wait = Duration::from_secs(5);
        assert!(
            closed_within(&mut half_sent, wait).await,
            "{simulator}: a half-sent request head still held its connection after {wait:?} \
             (header_read_timeout_ms = 300)"
        );
        assert!(
            closed_within(&mut silent, wait).await,
            "{simulator}: a connection that sent nothing was still open after {wait:?} \
             (header_read_timeout_ms = 300)"
        );
        answered_connection(addr).await;
    }
}

/// Guards the drain deadline: a connection stuck in its request head (here
/// with a header timeout far longer than the test) does not keep
/// `loket-sim` from stopping; `run` returns once `shutdown_grace_ms` has
/// passed.
#[tokio::test]
async fn a_half_open_connection_does_not_hold_loket_sims_stop() {
    let mut sims = Sims::start(Settings {
        header_read_timeout_ms: 600_000,
        shutdown_grace_ms: 200,
        ..Settings::default()
    })
    .await;
    let mut half_open = Vec::new();
    for (_, addr) in sims.ports() {
        // Serving already, so the half-sent head is on an accepted connection.
        answered_connection(addr).await;
        half_open.push(connect_and_send(addr, HALF_SENT_HEAD).await);
    }
    sims.shutdown.trigger();
    let wait = Duration::from_secs(5);
    let stopped = tokio::time::timeout(wait, &mut sims.running)
        .await
        .unwrap_or_else(|_| panic!("loket-sim had not stopped {wait:?} after its shutdown"));
    stopped.unwrap().unwrap();
}

/// Guards the connection cap: once a simulator's port holds
/// `max_connections`, one more connection is closed at accept, and a freed
/// slot takes connections again.
#[tokio::test]
async fn a_simulator_port_closes_connections_beyond_max_connections() {
    let sims = Sims::start(Settings {
        max_connections: 2,
        ..Settings::default()
    })
    .await;
    let first = answered_connection(sims.okebayar).await;
    let _second = answered_connection(sims.okebayar).await;
    let mut third = connect_and_send(sims.okebayar, b"").await;
    assert!(
        closed_within(&mut third, Duration::from_secs(5)).await,
        "a third connection was kept open with max_connections = 2"
    );

    drop(first);
    let served_again = async {
        loop {
            let mut probe = connect_and_send(
                sims.okebayar,
                b"GET /_sim/outage HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n",
            )
            .await;
            let mut reply = Vec::new();
            let _ = probe.read_to_end(&mut reply).await;
            if reply.starts_with(b"HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), served_again)
        .await
        .expect("a slot freed by a closed connection takes a new one within 5 s");
}

/// Guards the validation of the connection settings: a zero header timeout
/// would close every connection at once and a zero cap would refuse them
/// all, so `loket-sim` refuses to start, naming the key.
#[test]
fn zero_header_read_timeout_or_max_connections_is_refused_naming_the_key() {
    let zero_timeout = Settings {
        header_read_timeout_ms: 0,
        ..Settings::default()
    };
    let zero_cap = Settings {
        max_connections: 0,
        ..Settings::default()
    };
    for (settings, key) in [
        (zero_timeout, "header_read_timeout_ms"),
        (zero_cap, "max_connections"),
    ] {
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            format!("invalid configuration: {key}: must be greater than 0")
        );
    }
}
