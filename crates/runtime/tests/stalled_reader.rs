//! The shared HTTP accept loop against a client that asks and never reads
//! the answers: its connection, and the place it holds among its source's,
//! is given up once the answer has made no progress for the port's
//! `stalled_write_timeout`, not held for ever.

use axum::body::Bytes;
use axum::routing::get;
use axum::Router;
use loket_runtime::http_server::{self, ConnectionMetrics, Limits, Port};
use loket_runtime::Shutdown;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const STALL_LIMIT: Duration = Duration::from_secs(1);

/// Larger than any socket buffers between the two ends on loopback, so the
/// answer cannot be written out while the client reads nothing.
const ANSWER_BYTES: usize = 32 << 20;

async fn port_with_one_place_per_source() -> (SocketAddr, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Bytes::from(vec![b'x'; ANSWER_BYTES]);
    let app = Router::new()
        .route("/large", get(move || async move { answer.clone() }))
        .route("/small", get(|| async { "ok" }));
    let port = Port {
        name: "test",
        limits: Limits {
            header_read_timeout: Duration::from_secs(5),
            stalled_write_timeout: STALL_LIMIT,
            max_connections: 8,
            max_connections_per_source: 1,
            max_header_bytes: 16 * 1024,
            drain_grace: Duration::from_secs(1),
        },
        admit: http_server::admit_all(),
        metrics: ConnectionMetrics {
            refused: "test_stalled_reader_refused_total",
            open: "test_stalled_reader_open",
        },
    };
    let stop = Shutdown::new();
    tokio::spawn(http_server::serve(listener, app, port, stop.clone()));
    (addr, stop)
}

/// Whether a new connection from 127.0.0.1 gets `/small` answered.
async fn served(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer));
    matches!(read.await, Ok(Ok(_))) && answer.starts_with(b"HTTP/1.1 200")
}

/// Guards the stalled-write timeout: hyper's header read timeout runs only
/// while it reads, so before it a client that pipelined requests and never
/// read an answer kept its connection, and its source's place, for ever.
#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_its_connection() {
    let (addr, stop) = port_with_one_place_per_source().await;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut never_reads = socket.connect(addr).await.unwrap();
    let pipelined = b"GET /large HTTP/1.1\r\nHost: t\r\n\r\n".repeat(4);
    never_reads.write_all(&pipelined).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The stalled connection holds the source's only place.
    assert!(
        !served(addr).await,
        "served while the stalled connection held the source's only place"
    );
    let started = Instant::now();
    let deadline = started + STALL_LIMIT + Duration::from_secs(5);
    while !served(addr).await {
        assert!(
            Instant::now() < deadline,
            "the stalled connection still held its place {:?} after it stalled",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(never_reads);
    stop.trigger();
}

/// A client that takes its answer in steadily, pausing between reads,
/// keeps its connection through a transfer longer than the limit: only a
/// write making no progress for the limit ends it, not a slow answer.
#[tokio::test]
async fn a_client_reading_with_pauses_gets_its_whole_answer() {
    let (addr, stop) = port_with_one_place_per_source().await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(256 * 1024).unwrap();
    let mut pausing = socket.connect(addr).await.unwrap();
    pausing
        .write_all(b"GET /large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut received = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        tokio::time::sleep(STALL_LIMIT / 20).await;
        match pausing.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(error) => panic!("the connection failed after {received} bytes: {error}"),
        }
    }
    assert!(
        received > ANSWER_BYTES,
        "the connection ended after {received} bytes"
    );
    assert!(
        started.elapsed() > STALL_LIMIT * 2,
        "the transfer took {:?}, too short to show anything",
        started.elapsed()
    );
    stop.trigger();
}
