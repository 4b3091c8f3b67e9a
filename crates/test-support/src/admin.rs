//! A service's admin port read the way an operator's scraper reads it: a
//! plain HTTP GET, no client library.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The whole HTTP response (status line, headers, body) to `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The value of one series of `/metrics` (`series` is the name with its
/// labels, as printed), if it is there.
pub async fn metric(addr: SocketAddr, series: &str) -> Option<String> {
    let page = get(addr, "/metrics").await.ok()?;
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().to_string())
}

/// Waits (at most 10 s) until `series` reads `expected`; panics with what it
/// read last.
pub async fn until_metric_is(addr: SocketAddr, series: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = metric(addr, series).await;
        if seen.as_deref() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} still {seen:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
