//! Smilepayz callbacks: POST the callback body with a fresh `X-TIMESTAMP`
//! and `X-SIGNATURE` (platform key over `tradeNo|X-TIMESTAMP`) per attempt
//! ([`platform_signed`], an [`AttemptHeaders`]), retried on the configured
//! schedule until the answer is HTTP 200 with the exact body `SUCCESS`
//! (spec §5). Every attempt is logged per orderNo (for the most recent
//! orderNos).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use loket_smilepayz::sign::{self, CallbackRecipe, TimestampStyle};
use loket_smilepayz::wire;
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::common::{lock, AttemptHeaders, RecentMap};
use crate::metrics as names;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAttempt {
    pub trade_no: String,
    pub status: String,
    pub timestamp: String,
    pub http_status: Option<u16>,
    /// The first 64 bytes of the answer.
    pub answer: String,
    pub acknowledged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmilepayzCallbackLog {
    /// Callbacks the simulator decided to send.
    pub deliveries: usize,
    /// Every HTTP attempt, in order.
    pub attempts: Vec<CallbackAttempt>,
    /// Deliveries that ended with an exact `SUCCESS`.
    pub acknowledged: usize,
}

#[derive(Debug)]
pub(crate) struct Sender {
    client: reqwest::Client,
    schedule: Vec<u64>,
    log: Mutex<RecentMap<Arc<str>, SmilepayzCallbackLog>>,
}

impl Sender {
    pub(crate) fn new(timeout: Duration, schedule: Vec<u64>, remembered: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let schedule = if schedule.is_empty() {
            vec![0]
        } else {
            schedule
        };
        Sender {
            client,
            schedule,
            log: Mutex::new(RecentMap::new(remembered, "smilepayz", "callbacks")),
        }
    }

    pub(crate) fn log_for(&self, order_no: &str) -> SmilepayzCallbackLog {
        lock(&self.log).get(order_no).cloned().unwrap_or_default()
    }

    /// Delivers one callback, each attempt with the headers
    /// `attempt_headers` builds for it ([`platform_signed`]); returns true
    /// once acknowledged with `SUCCESS`. `first_attempt_done` hears when the
    /// first attempt is over (logged), so a caller can wait for it without
    /// waiting for the retries.
    pub(crate) async fn deliver(
        &self,
        url: &str,
        body: &wire::CallbackBody,
        attempt_headers: &AttemptHeaders<'_>,
        mut first_attempt_done: Option<oneshot::Sender<()>>,
    ) -> bool {
        let order_no: Arc<str> = body.order_no.as_str().into();
        lock(&self.log)
            .get_or_insert_default(order_no.clone())
            .deliveries += 1;
        let bytes = serde_json::to_vec(body).expect("callback body serialises");
        let first = tokio::time::Instant::now();
        for at in &self.schedule {
            tokio::time::sleep_until(first + Duration::from_millis(*at)).await;
            let headers = attempt_headers();
            let timestamp = headers
                .iter()
                .find(|(name, _)| name == wire::HEADER_TIMESTAMP)
                .map(|(_, value)| value.clone())
                .unwrap_or_default();
            let result = headers
                .into_iter()
                .fold(
                    self.client
                        .post(url)
                        .header(reqwest::header::CONTENT_TYPE, wire::CONTENT_TYPE_JSON),
                    |request, (name, value)| request.header(name, value),
                )
                .body(bytes.clone())
                .send()
                .await;
            let (http_status, answer) = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    (Some(status), text)
                }
                Err(error) => (None, error.without_url().to_string()),
            };
            let acknowledged = http_status == Some(200) && answer == wire::CALLBACK_ACK;
            {
                let mut log = lock(&self.log);
                let entry = log.get_or_insert_default(order_no.clone());
                entry.attempts.push(CallbackAttempt {
                    trade_no: body.trade_no.clone(),
                    status: body.status.clone(),
                    timestamp,
                    http_status,
                    answer: answer.chars().take(64).collect(),
                    acknowledged,
                });
                if acknowledged {
                    entry.acknowledged += 1;
                }
            }
            if let Some(done) = first_attempt_done.take() {
                // Nobody listening (the caller did not wait) is fine.
                let _ = done.send(());
            }
            metrics::counter!(
                names::CALLBACK_ATTEMPTS_TOTAL,
                "provider" => "smilepayz",
                "result" => if acknowledged { "ok" } else { "error" }
            )
            .increment(1);
            if acknowledged {
                return true;
            }
        }
        false
    }
}

/// The headers of each attempt of the callback `body` (spec §4.2), made
/// when the attempt is: `X-TIMESTAMP` now in `style`, and `X-SIGNATURE`
/// with the platform `key` over `tradeNo|X-TIMESTAMP`.
pub(crate) fn platform_signed<'a>(
    key: &'a RsaPrivateKey,
    style: TimestampStyle,
    body: &'a wire::CallbackBody,
) -> impl Fn() -> Vec<(String, String)> + Send + Sync + 'a {
    let bytes = serde_json::to_vec(body).expect("callback body serialises");
    move || {
        let timestamp = sign::timestamp(style, Utc::now());
        let signature = sign::sign(
            key,
            &sign::callback_string_to_sign(
                CallbackRecipe::TradeNoTimestamp,
                &body.trade_no,
                &timestamp,
                &bytes,
            ),
        );
        vec![
            (wire::HEADER_TIMESTAMP.to_string(), timestamp),
            (wire::HEADER_SIGNATURE.to_string(), signature),
        ]
    }
}
