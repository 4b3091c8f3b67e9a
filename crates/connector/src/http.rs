//! The HTTP client every connector uses. Its one job beyond sending is to say
//! whether a failed request may have reached the provider: a refused
//! connection never left ([`SendError::NotSent`]); a timeout, a reset or a
//! broken reply may have been processed ([`SendError::MaybeSent`]), which the
//! connector must classify as unknown (money-safety rule 1).

use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The request never left: connection refused, DNS failure, TLS handshake.
    #[error("request not sent: {0}")]
    NotSent(String),
    /// The request may have been processed: timeout, reset, truncated reply.
    #[error("request may have been processed: {0}")]
    MaybeSent(String),
}

#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl HttpReply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    max_reply_bytes: usize,
}

/// Replies bigger than this are not read: the outcome becomes unknown.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;

/// How long a kept-alive connection may wait unused in the pool. A server
/// closes an idle connection on its own timer (5 s is common: Apache's
/// default, and the simulators'); a request written to a connection the
/// server is closing at that moment may or may not have been read, so its
/// outcome is unknown and the transaction waits for a status check. Dropping
/// our side first, below the shortest server timeout usual in the field,
/// keeps that race away from every send after a quiet spell. Under load a
/// connection is never idle that long, so it costs nothing there.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

impl HttpClient {
    /// One pooled client per connector: keep-alive connections, a total
    /// deadline per request and a shorter connect deadline.
    pub fn new(timeout: Duration, connect_timeout: Duration) -> Self {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("static HTTP client configuration is valid");
        HttpClient {
            inner,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }

    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<HttpReply, SendError> {
        let mut request = self
            .inner
            .post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<HttpReply, SendError> {
        let started = Instant::now();
        let response = request.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if let Some(length) = response.content_length() {
            if length as usize > self.max_reply_bytes {
                return Err(SendError::MaybeSent(format!(
                    "reply of {length} bytes exceeds the limit"
                )));
            }
        }
        let mut response = response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| SendError::MaybeSent(format!("reading reply: {error}")))?
        {
            if body.len() + chunk.len() > self.max_reply_bytes {
                return Err(SendError::MaybeSent("reply exceeds the size limit".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpReply {
            status,
            content_type,
            body: body.into(),
            elapsed: started.elapsed(),
        })
    }
}

fn classify(error: reqwest::Error) -> SendError {
    // reqwest's messages name the URL, never headers or bodies, so no secret
    // reaches the error text.
    let never_left = (error.is_connect() && !error.is_timeout()) || error.is_builder();
    if never_left {
        SendError::NotSent(error.to_string())
    } else {
        SendError::MaybeSent(error.to_string())
    }
}

/// Reply bodies kept in the audit trail are cut to this size.
pub const MAX_STORED_BODY: usize = 64 * 1024;

/// `masked` (a request or reply already passed through the masker) cut to
/// [`MAX_STORED_BODY`] bytes at a character boundary, for the audit trail.
/// Masking comes first: a secret the cut would split is otherwise no longer
/// found whole, and its first part would be stored.
pub fn stored(mut masked: String) -> String {
    if masked.len() > MAX_STORED_BODY {
        let mut cut = MAX_STORED_BODY;
        while !masked.is_char_boundary(cut) {
            cut -= 1;
        }
        masked.truncate(cut);
    }
    masked
}

/// One HTTP exchange as a connector classifies it: a reply to read, a request
/// that never left, or one that may have been processed (unknown outcome).
#[derive(Debug)]
pub enum Transport {
    Reply(HttpReply),
    NotSent(String),
    MaybeSent(String),
}

impl Transport {
    /// The metric label of this result.
    pub fn label(&self) -> &'static str {
        match self {
            Transport::Reply(_) => "reply",
            Transport::NotSent(_) => "not_sent",
            Transport::MaybeSent(_) => "maybe_sent",
        }
    }
}

/// Records the result of a send into the audit `exchange` (HTTP status, the
/// reply body masked, then cut to [`MAX_STORED_BODY`], or the error), every
/// text passed through `mask`, and returns it as a [`Transport`].
pub fn record(
    exchange: &mut loket_protocol::pb::bus::Exchange,
    result: Result<HttpReply, SendError>,
    mask: impl Fn(&str) -> String,
) -> Transport {
    match result {
        Ok(reply) => {
            exchange.http_status = i32::from(reply.status);
            exchange.response = stored(mask(&String::from_utf8_lossy(&reply.body)));
            Transport::Reply(reply)
        }
        Err(SendError::NotSent(error)) => {
            exchange.error = mask(&format!("not sent: {error}"));
            Transport::NotSent(exchange.error.clone())
        }
        Err(SendError::MaybeSent(error)) => {
            exchange.error = mask(&format!("may have been processed: {error}"));
            Transport::MaybeSent(exchange.error.clone())
        }
    }
}

/// `transport` with any per-request secret of `echoes` (an access token, the
/// request's signature) that the provider echoed in its reply body replaced
/// by the mask, before the connector reads the reply: a message, serial or
/// name taken from it then cannot carry the secret into the database. Only
/// secrets that cannot be mistaken for a field's value belong in `echoes`
/// (long random strings, not a numeric PIN, which could equal an amount). A
/// body that is not UTF-8 is left as it is; no text is read from it.
pub fn without_echoes(transport: Transport, echoes: &crate::mask::Masker) -> Transport {
    match transport {
        Transport::Reply(mut reply) => {
            if let Ok(text) = std::str::from_utf8(&reply.body) {
                let masked = echoes.mask(text);
                if masked != text {
                    reply.body = Bytes::from(masked);
                }
            }
            Transport::Reply(reply)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Masker;

    #[test]
    fn a_secret_across_the_stored_length_is_masked_before_the_cut() {
        let secret = "CANARY-SECRET-0123456789";
        // The secret starts 10 bytes before the cut: cut first, its first
        // part would have been stored.
        let mut body = "x".repeat(MAX_STORED_BODY - 10);
        body.push_str(secret);
        body.push_str("tail");
        let reply = HttpReply {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from(body),
            elapsed: Duration::ZERO,
        };
        let masker = Masker::new([secret]);
        let mut exchange = loket_protocol::pb::bus::Exchange::default();
        record(&mut exchange, Ok(reply), |text| masker.mask(text));
        assert!(exchange.response.len() <= MAX_STORED_BODY);
        assert!(
            !exchange.response.contains("CANARY"),
            "a part of the secret was stored"
        );
    }

    /// A server that answers every request on a connection with an empty
    /// 200 and counts the connections it accepted.
    async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    // Each test request fits one read; answer each one.
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if socket.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_pool_timeout_is_not_reused() {
        use std::sync::atomic::Ordering;
        let (url, accepted) = counting_server().await;
        let client = HttpClient::new(Duration::from_secs(5), Duration::from_secs(1));
        client
            .post(&url, "text/plain", &[], Vec::new())
            .await
            .unwrap();
        client
            .post(&url, "text/plain", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a busy connection is reused"
        );
        tokio::time::sleep(POOL_IDLE_TIMEOUT + Duration::from_millis(700)).await;
        client
            .post(&url, "text/plain", &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a connection idle past the pool timeout must be dropped, not written to"
        );
    }

    #[test]
    fn the_stored_cut_never_splits_a_character() {
        let text = format!("{}é", "x".repeat(MAX_STORED_BODY - 1));
        let cut = stored(text);
        assert_eq!(cut.len(), MAX_STORED_BODY - 1);
    }
}
