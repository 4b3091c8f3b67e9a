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

/// The whole HTTP response to `PUT path` with the JSON `body` (a
/// simulator's settings, `/_sim/balance`).
pub async fn put_json(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "PUT {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Waits (at most 30 s) until the admin port answers `/readyz` with 200.
pub async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(addr, "/readyz")
        .await
        .is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
    {
        assert!(
            Instant::now() < deadline,
            "the service on {addr} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series of `/metrics` (`series` is the name with its
/// labels, as printed), if it is there.
pub async fn metric(addr: SocketAddr, series: &str) -> Option<String> {
    let page = get(addr, "/metrics").await.ok()?;
    value_on(&page, series)
}

/// The value of `series` on a `/metrics` page.
fn value_on(page: &str, series: &str) -> Option<String> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().to_string())
}

/// Reads `/metrics` once and checks that each of `series` (as [`metric`]
/// takes it) reads `expected`; panics naming every one that does not, with
/// the page it read.
pub async fn assert_series_at(addr: SocketAddr, series: &[String], expected: &str) {
    let page = get(addr, "/metrics").await.expect("/metrics answers");
    let wrong: Vec<String> = series
        .iter()
        .filter_map(|series| {
            let seen = value_on(&page, series);
            (seen.as_deref() != Some(expected)).then(|| format!("{series} is {seen:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "expected {expected}, but:\n{}\nin\n{page}",
        wrong.join("\n")
    );
}

/// The lines of a `/metrics` page that are labelled series (`name{…} value`)
/// of any of the metrics `names`: counting them before and after some calls
/// tells whether the calls added a series that was not registered at start.
pub fn labelled_series<'p>(page: &'p str, names: &[&str]) -> Vec<&'p str> {
    page.lines()
        .filter(|line| {
            names.iter().any(|name| {
                line.strip_prefix(name)
                    .is_some_and(|labels| labels.starts_with('{'))
            })
        })
        .collect()
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
