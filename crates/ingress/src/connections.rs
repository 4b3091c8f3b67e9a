//! The gRPC port's accept side. tonic serves any connection it is handed,
//! and until a client's HTTP/2 connection preface has arrived nothing times
//! it out: a client opening connections and sending nothing (or a byte a
//! minute) would hold them open, and with them the process's file
//! descriptors, which its PostgreSQL and NATS sockets need too. So here every
//! connection must send the preface within [`Limits::handshake_timeout`] or
//! is closed; open connections are capped in all and per source address, one
//! over either cap being closed at accept; and the server's HTTP/2 keep-alive
//! pings (`lib.rs`) close a connection whose peer stopped answering. Each
//! refusal is counted in [`CONNECTIONS_REFUSED`] by reason, the open ones in
//! [`CONNECTIONS_OPEN`].

use loket_runtime::http_server::{next_connection, Admission, ConnectionMetrics, Place};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// gRPC connections closed at accept or before their handshake, labelled
/// `reason`: `source_full` (`max_connections_per_source`), `full`
/// (`max_connections`), `handshake` (no HTTP/2 preface within
/// `handshake_timeout_ms`, or bytes that are not one).
pub const CONNECTIONS_REFUSED: &str = "loket_ingress_connections_refused_total";
/// Open gRPC connections, those still in their handshake included.
pub const CONNECTIONS_OPEN: &str = "loket_ingress_connections_open";

const REFUSED_HANDSHAKE: &str = "handshake";

/// The bytes every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const NAMES: ConnectionMetrics = ConnectionMetrics {
    refused: CONNECTIONS_REFUSED,
    open: CONNECTIONS_OPEN,
};

/// The gRPC port's connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

/// The connections of `listener` that keep to `limits`, for
/// `serve_with_incoming`. Accepting stops once the stream is dropped.
pub fn admitted(
    listener: TcpListener,
    limits: Limits,
) -> ReceiverStream<io::Result<AdmittedConnection>> {
    NAMES.register_at_zero(&[REFUSED_HANDSHAKE]);
    let (hand_over, connections) = mpsc::channel(64);
    tokio::spawn(accept(listener, limits, hand_over));
    ReceiverStream::new(connections)
}

async fn accept(
    listener: TcpListener,
    limits: Limits,
    hand_over: mpsc::Sender<io::Result<AdmittedConnection>>,
) {
    let admission = Admission::new(
        limits.max_connections,
        limits.max_connections_per_source,
        NAMES,
    );
    loop {
        let (stream, peer) = tokio::select! {
            _ = hand_over.closed() => return,
            accepted = next_connection(&listener, "grpc") => accepted,
        };
        let Some(place) = admission.admit(peer.ip()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut connection = AdmittedConnection {
            stream,
            preface: [0; PREFACE.len()],
            replayed: 0,
            _place: place,
        };
        let hand_over = hand_over.clone();
        tokio::spawn(async move {
            let refusal =
                match tokio::time::timeout(limits.handshake_timeout, connection.read_preface())
                    .await
                {
                    Ok(Ok(())) => {
                        let _ = hand_over.send(Ok(connection)).await;
                        return;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "no HTTP/2 preface in time".to_string(),
                };
            metrics::counter!(CONNECTIONS_REFUSED, "reason" => REFUSED_HANDSHAKE).increment(1);
            tracing::debug!(%peer, why = %refusal, "gRPC connection closed before its handshake");
        });
    }
}

/// A connection within the limits whose client sent the HTTP/2 preface;
/// the server reads the preface again first. Dropping it frees its place.
pub struct AdmittedConnection {
    stream: TcpStream,
    preface: [u8; PREFACE.len()],
    /// How much of `preface` the server has read.
    replayed: usize,
    _place: Place,
}

impl AdmittedConnection {
    async fn read_preface(&mut self) -> io::Result<()> {
        self.stream.read_exact(&mut self.preface).await?;
        if &self.preface != PREFACE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP/2 client (no connection preface)",
            ));
        }
        Ok(())
    }
}

impl Connected for AdmittedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for AdmittedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.preface.len() {
            let rest = &this.preface[this.replayed..];
            let taken = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..taken]);
            this.replayed += taken;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AdmittedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
