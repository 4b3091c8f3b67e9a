//! The provider side of the callback receiver: each provider crate implements
//! [`CallbackParser`]; the receiver (crate `loket-callback`) does the HTTP,
//! size limits, de-duplication and durability the same way for all.

use bytes::Bytes;
use loket_protocol::{Outcome, Provider};

use crate::mask::Masker;

/// One callback as it arrived.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub method: http::Method,
    /// The request-line path as received (signatures may cover it).
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub source_ip: Option<std::net::IpAddr>,
}

/// A parsed callback, before it becomes a bus event.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCallback {
    pub provider_reference: String,
    pub provider_trace: String,
    pub provider_code: String,
    pub serial_number: String,
    pub claimed_outcome: Outcome,
    /// Whether the callback's authenticity was verified. OkeBayar callbacks
    /// are unsigned: always false, so they only trigger a status check.
    pub verified: bool,
    /// The amount the callback reports, if it carries one.
    pub provider_amount: Option<loket_protocol::Money>,
    /// The callback carried an amount that could not be read: why.
    pub provider_amount_unreadable: Option<String>,
    /// The callback body, secrets masked, for the event log.
    pub raw_masked: String,
    /// A key that is equal for retries of the same callback (used as the
    /// bus de-duplication id).
    pub dedupe_key: String,
}

impl ParsedCallback {
    /// The callback with `masker`'s secrets masked in every text it carries,
    /// not only its raw body: the reference, trace id, status code, serial
    /// number, why its amount was unreadable and the de-duplication key all
    /// quote the provider, and all reach the bus and the event log. A
    /// provider echoing one of our secrets there (or a forger writing one)
    /// leaves it in none of them. Every parser returns its callback through
    /// this, the raw body included: `raw_masked` holds the secrets `masker`
    /// knows only until this call (a parser may first mask what only the
    /// body itself reveals, as OkeBayar's PIN field).
    pub fn masked(mut self, masker: &Masker) -> Self {
        let texts = [
            &mut self.provider_reference,
            &mut self.provider_trace,
            &mut self.provider_code,
            &mut self.serial_number,
            &mut self.raw_masked,
            &mut self.dedupe_key,
        ];
        for text in texts
            .into_iter()
            .chain(self.provider_amount_unreadable.as_mut())
        {
            *text = masker.mask(text);
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("malformed callback: {0}")]
    Malformed(String),
    #[error("callback signature rejected: {0}")]
    BadSignature(String),
    /// The access token a callback is signed with (one we issued) is
    /// missing, unknown or expired: its sender should fetch a new one.
    #[error("callback token refused: {0}")]
    BadToken(String),
    #[error("callback outside the accepted time window")]
    Stale,
}

/// The HTTP answer a provider expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Why the receiver refuses a request before any parser reads it, or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source address is on none of the provider's allow-list entries.
    Forbidden,
    /// The body is over the receiver's limit.
    TooLarge,
    /// The body broke off or could not be read.
    Unreadable,
    /// The callback could not be made durable; the provider should retry.
    Unavailable,
}

impl Refusal {
    /// The plain-text answer every provider gets unless its protocol has
    /// its own form ([`CallbackParser::refuse`]).
    pub fn plain(self) -> CallbackReply {
        let (status, body) = match self {
            Refusal::Forbidden => (403, "forbidden\n"),
            Refusal::TooLarge => (413, "callback too large\n"),
            Refusal::Unreadable => (400, "unreadable body\n"),
            Refusal::Unavailable => (503, "temporarily unavailable, retry later\n"),
        };
        CallbackReply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }
}

pub trait CallbackParser: Send + Sync + 'static {
    fn provider(&self) -> Provider;

    /// Verifies (where the provider signs) and parses one callback.
    fn parse(&self, request: &CallbackRequest) -> Result<ParsedCallback, CallbackError>;

    /// The answer once the callback is durable.
    fn acknowledge(&self, request: &CallbackRequest, parsed: &ParsedCallback) -> CallbackReply;

    /// The answer to a callback we refuse.
    fn reject(&self, request: &CallbackRequest, error: &CallbackError) -> CallbackReply;

    /// The answer to a request the receiver refuses on its own (source,
    /// size, unreadable body, or not durable). Default: [`Refusal::plain`].
    fn refuse(&self, refusal: Refusal) -> CallbackReply {
        refusal.plain()
    }

    /// A provider that has its callers authenticate with an access token we
    /// grant (SNAP notify mode B) answers the token request here; `None`
    /// (the default): we grant no tokens.
    fn grant_token(&self, _request: &CallbackRequest) -> Option<CallbackReply> {
        None
    }

    /// Headers the provider's protocol wants on every answer, besides
    /// `Content-Type` (SNAP: `X-TIMESTAMP`).
    fn reply_headers(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}
