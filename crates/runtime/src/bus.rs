//! The JetStream layout (see [`loket_protocol::subjects`]) and the one way
//! loket publishes: with a `Nats-Msg-Id` so a re-publish is de-duplicated,
//! the trace context and the transaction id in headers, and waiting for the
//! stream's acknowledgement so "published" means "durable".

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use loket_protocol::subjects;
use std::time::Duration;

use crate::telemetry::TraceContext;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream setup failed: {0}")]
    Setup(String),
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("subscription not confirmed by the server: {0}")]
    Subscribe(String),
}

/// How long JetStream remembers a `Nats-Msg-Id` for de-duplication.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connects with unlimited reconnects, so a restarted nats-server is picked
/// up without restarting the service.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        })
        .connect(url)
        .await
        .map_err(|error| BusError::Connect {
            url: without_credentials(url),
            reason: error.to_string().replace(url, &without_credentials(url)),
        })
}

/// `url` (one NATS URL or a comma-separated list) with any user and
/// password replaced by `***`, for errors and logs.
pub fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***@{}", &one[..scheme], &one[at + 1..])
            }
            (None, Some(at)) => format!("***@{}", &one[at + 1..]),
            _ => one.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Creates (or finds) the three streams. Safe to call from every service at
/// start. Only features of nats-server 2.9 are used.
pub async fn ensure_streams(js: &jetstream::Context) -> Result<(), BusError> {
    let specs = [
        (
            subjects::COMMAND_STREAM,
            subjects::COMMAND_SUBJECTS,
            stream::RetentionPolicy::WorkQueue,
            Duration::ZERO,
        ),
        (
            subjects::EVENT_STREAM,
            subjects::EVENT_SUBJECTS,
            stream::RetentionPolicy::WorkQueue,
            Duration::ZERO,
        ),
        (
            subjects::UPDATE_STREAM,
            subjects::UPDATE_SUBJECTS,
            stream::RetentionPolicy::Limits,
            Duration::from_secs(7 * 24 * 3600),
        ),
    ];
    for (name, subject, retention, max_age) in specs {
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![subject.to_string()],
            retention,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_age,
            ..Default::default()
        };
        // Several services start at once and race to create the same
        // stream; the loser's create fails, and its next lookup finds it.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match js.get_or_create_stream(config.clone()).await {
                Ok(_) => break,
                Err(error) if attempt < 10 => {
                    tracing::debug!(%error, stream = name, attempt, "stream setup raced; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(error) => return Err(BusError::Setup(format!("stream {name}: {error}"))),
            }
        }
    }
    Ok(())
}

/// Headers for one published message.
pub fn headers(msg_id: &str, trace: &TraceContext, transaction_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    headers.insert(subjects::TRACEPARENT_HEADER, trace.to_header().as_str());
    if !transaction_id.is_empty() {
        headers.insert(subjects::TRANSACTION_HEADER, transaction_id);
    }
    headers
}

/// The trace context a received message was sent with (its `traceparent`),
/// if it carries a valid one; [`crate::telemetry::join`] continues it.
pub fn trace_of(message: &async_nats::Message) -> Option<TraceContext> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(subjects::TRACEPARENT_HEADER))
        .and_then(|value| TraceContext::parse(value.as_str()))
}

/// Publishes and waits for the stream's acknowledgement.
pub async fn publish_durable(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
) -> Result<(), BusError> {
    let ack = js
        .publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|error| BusError::Publish {
            subject: subject.clone(),
            reason: error.to_string(),
        })?;
    ack.await.map_err(|error| BusError::Publish {
        subject,
        reason: error.to_string(),
    })?;
    Ok(())
}

/// [`publish_durable`], tried up to `attempts` times while it fails, with a
/// pause that doubles from 100 ms: for a message that must outlast a brief
/// JetStream outage. The `Nats-Msg-Id` in `headers` keeps a retry of a
/// publish that did land from storing it twice.
pub async fn publish_durable_retrying(
    js: &jetstream::Context,
    subject: String,
    headers: HeaderMap,
    payload: Vec<u8>,
    attempts: u32,
) -> Result<(), BusError> {
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match publish_durable(js, subject.clone(), headers.clone(), payload.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < attempts => {
                tracing::warn!(%error, attempt, "publish failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Returns once nats-server has in place every subscription `client` made
/// before the call, so a message published anywhere afterwards reaches them.
///
/// `Client::flush` only writes the client's buffer out; it does not wait for
/// the server. nats-server handles one connection's operations in order, so
/// when a message this client sends to a fresh inbox of its own comes back,
/// every subscription made before it is registered.
pub async fn confirm_subscriptions(client: &async_nats::Client) -> Result<(), BusError> {
    use futures::StreamExt as _;
    let failed = |reason: String| BusError::Subscribe(reason);
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(SUBSCRIBE_CONFIRM_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(failed("the connection closed".into())),
        Err(_) => Err(failed(format!(
            "the server did not confirm within {SUBSCRIBE_CONFIRM_TIMEOUT:?}"
        ))),
    }
}

/// How long [`confirm_subscriptions`] waits for the server.
const SUBSCRIBE_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a draining service hands back from its pull buffer, so a drain
/// under a steady stream of new messages still ends.
const HAND_BACK_LIMIT: usize = 1_024;

/// Hands back (`nak`: redelivered at once, to any replica) the messages a
/// pull stream has already received but the service has not started, so a
/// draining replica does not keep them until their ack wait passes. Takes
/// only what has already arrived, never waits for more. Returns how many.
/// The stream is dropped afterwards, which ends its pull requests.
pub async fn hand_back_unstarted(messages: &mut jetstream::consumer::pull::Stream) -> usize {
    use futures::{FutureExt as _, StreamExt as _};
    let mut handed_back = 0;
    while handed_back < HAND_BACK_LIMIT {
        let Some(Some(Ok(message))) = messages.next().now_or_never() else {
            break;
        };
        match message.ack_with(jetstream::AckKind::Nak(None)).await {
            Ok(()) => handed_back += 1,
            Err(error) => {
                tracing::warn!(%error, "could not hand a message back; it returns after its ack wait");
            }
        }
    }
    handed_back
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_nats_urls_are_hidden() {
        assert_eq!(
            without_credentials("nats://loket:s3cret@10.0.0.1:4222,tls://a:b@n2:4222,n3:4222"),
            "nats://***@10.0.0.1:4222,tls://***@n2:4222,n3:4222"
        );
        assert_eq!(without_credentials("token@n1:4222"), "***@n1:4222");
        assert_eq!(
            without_credentials("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
    }

    #[tokio::test]
    async fn a_connect_error_names_the_server_but_not_its_password() {
        let url = "nats://loket:CANARY-NATS-PASSWORD@127.0.0.1:notaport";
        let error = connect(url, "test")
            .await
            .expect_err("a bad port")
            .to_string();
        assert!(error.contains("127.0.0.1"), "{error}");
        assert!(!error.contains("CANARY-NATS-PASSWORD"), "{error}");
    }
}
