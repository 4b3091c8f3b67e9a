//! Free loopback ports.

use std::net::TcpListener;

/// A port that was free a moment ago (for servers that bind by number).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
