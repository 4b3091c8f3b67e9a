//! The admin port's connection limits ([`admin::LIMITS`]): a client holding
//! connections open to it (sending nothing, or headers byte by byte) can
//! take neither the port nor the file descriptors the rest of the service
//! needs.

use loket_runtime::admin::{self, AdminServer, Readiness};
use loket_runtime::Shutdown;
use loket_test_support::admin::{get, metric};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A started service's admin port: its address and the server.
async fn admin_port() -> (SocketAddr, AdminServer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let readiness = Readiness::default();
    let server = admin::spawn(listener, readiness.clone(), Shutdown::new());
    readiness.set(true);
    (addr, server)
}

/// A connection from `source` (a loopback address of its own).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether the server ends the connection (closes or resets it, whatever it
/// writes first) within `within`.
async fn ended_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .is_ok()
}

/// Whether `path` answers 200 on a new connection from 127.0.0.1.
async fn answers(addr: SocketAddr, path: &str) -> bool {
    get(addr, path)
        .await
        .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
}

/// Guards the header read timeout: a connection that sends nothing and one
/// that sends its headers a byte at a time, never finishing them, are both
/// closed once `header_read_timeout` has passed (with plain `axum::serve`
/// both stayed open for ever).
#[tokio::test]
async fn connections_sending_no_complete_header_are_closed_after_the_timeout() {
    let (addr, server) = admin_port().await;
    let deadline = admin::LIMITS.header_read_timeout + Duration::from_secs(3);

    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (mut trickling_reader, mut trickling_writer) =
        TcpStream::connect(addr).await.unwrap().into_split();
    let trickle = tokio::spawn(async move {
        let request_line = b"GET /livez HTTP/1.1\r\n".iter();
        let endless_headers = b"X-Slow: y\r\n".iter().cycle();
        for byte in request_line.chain(endless_headers) {
            if trickling_writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    assert!(
        ended_within(&mut silent, deadline).await,
        "a connection sending nothing stays open"
    );
    assert!(
        ended_within(&mut trickling_reader, deadline).await,
        "a connection sending its headers byte by byte stays open"
    );
    trickle.abort();
    assert!(answers(addr, "/livez").await);
    server.stop().await;
}

/// Guards the connection caps: one source holding its
/// `max_connections_per_source` gets its next connection closed at once
/// while another source is served; with `max_connections` open every further
/// connection is closed at once, counted by reason; `/livez`, `/readyz` and
/// `/metrics` answer again as soon as the held connections close (with plain
/// `axum::serve` every connection was taken).
#[tokio::test]
async fn connections_beyond_the_caps_are_refused_until_the_held_ones_close() {
    let (addr, server) = admin_port().await;
    let per_source = admin::LIMITS.max_connections_per_source;
    let at_once = Duration::from_secs(2);
    // Idle connections, each open until the header read timeout: what
    // follows must happen within it.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..per_source {
        held.push(connect_from("127.0.0.3", addr).await);
    }
    let mut one_more = connect_from("127.0.0.3", addr).await;
    assert!(
        ended_within(&mut one_more, at_once).await,
        "a source got more than its share"
    );
    assert!(answers(addr, "/livez").await, "another source is refused");

    // The other slots, filled by sources holding their share each.
    for filled in per_source..admin::LIMITS.max_connections {
        let source = format!("127.0.0.{}", 3 + filled / per_source);
        held.push(connect_from(&source, addr).await);
    }
    let mut beyond = connect_from("127.0.0.2", addr).await;
    assert!(
        ended_within(&mut beyond, at_once).await,
        "a connection beyond max_connections stays open"
    );
    assert!(
        !answers(addr, "/livez").await,
        "served beyond max_connections"
    );
    assert!(
        started.elapsed() < admin::LIMITS.header_read_timeout,
        "too slow to tell the caps from the header read timeout"
    );

    drop(held);
    let mut live = false;
    for _ in 0..50 {
        live = answers(addr, "/livez").await;
        if live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live, "/livez does not answer once the connections closed");
    assert!(answers(addr, "/readyz").await);
    assert!(answers(addr, "/metrics").await);
    // Each series is there at 0 from the start: the refusals must count.
    for reason in ["source_full", "full"] {
        let series = format!("{}{{reason=\"{reason}\"}}", admin::CONNECTIONS_REFUSED);
        let refused = metric(addr, &series).await;
        assert!(
            refused
                .as_deref()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0),
            "{series} is {refused:?}, not counted"
        );
    }
    server.stop().await;
}
