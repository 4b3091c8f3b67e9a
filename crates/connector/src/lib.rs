//! The shared connector runtime. A provider crate implements [`Connector`]
//! (send an operation, check a status, read the balance) and
//! [`CallbackParser`] (verify and parse a callback, answer it the provider's
//! way); this crate does everything else the same way for every provider:
//!
//! - [`worker`]: pulls the provider's commands from its durable JetStream
//!   consumer with bounded concurrency, enforces money-safety rule 2 (a
//!   redelivered or re-dispatched money-moving command starts with a status
//!   check, never a resend), publishes the result event, then acks; answers
//!   balance queries and probes the provider's connectivity;
//! - [`http`]: one HTTP client whose errors say whether the request may have
//!   reached the provider (rule 1: "maybe sent" is unknown, never failed);
//! - [`journal`]: the send journal in Postgres, written before every
//!   money-moving request, so a command nats-server hands out again as a
//!   first delivery after a restart still starts with a status check;
//! - [`mask`]: secret masking for the stored provider exchanges (rule 7);
//! - [`json`]: a provider's JSON read as written, a key written twice in one
//!   object never silently reduced to one of its values.
//!
//! It must not know any provider's wire format or code table.

pub mod callback;
pub mod command;
pub mod http;
pub mod journal;
pub mod json;
pub mod mask;
pub mod report;
pub mod service;
pub mod signing;
pub mod worker;

pub use callback::{
    CallbackError, CallbackParser, CallbackReply, CallbackRequest, ParsedCallback, Refusal,
};
pub use command::{Command, CommandError};
pub use report::Report;

use loket_protocol::Money;
use std::future::Future;

/// Errors of a non-transactional call (balance, echo).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("provider unreachable: {0}")]
    Unavailable(String),
    #[error("provider answered with code {code}: {message}")]
    Provider { code: String, message: String },
    #[error("provider reply could not be parsed: {0}")]
    BadReply(String),
}

impl ConnectorError {
    /// This error with every text in it passed through `mask` (a provider
    /// may echo a secret in its message), then bounded
    /// ([`report::quoted`]; after masking, so a cut never leaves part of a
    /// secret). The ingress passes a balance error on to its client.
    pub fn masked(self, mask: impl Fn(&str) -> String) -> Self {
        let clean = |text: &str| report::quoted(&mask(text));
        match self {
            ConnectorError::Unavailable(why) => ConnectorError::Unavailable(clean(&why)),
            ConnectorError::Provider { code, message } => ConnectorError::Provider {
                code: clean(&code),
                message: clean(&message),
            },
            ConnectorError::BadReply(why) => ConnectorError::BadReply(clean(&why)),
        }
    }
}

/// One provider's protocol, as the worker sees it.
pub trait Connector: Send + Sync + 'static {
    fn provider(&self) -> loket_protocol::Provider;

    /// Sends `command.operation` to the provider once and classifies the
    /// answer. Transport failures after the request may have left, 5xx and
    /// unparseable replies must come back as [`loket_protocol::Outcome::Unknown`].
    fn execute(&self, command: &Command) -> impl Future<Output = Report> + Send;

    /// Asks the provider what happened to `command.provider_reference`
    /// (the original operation is `command.original_operation`). When the
    /// provider definitely has no record of it, the report has
    /// `not_found = true` and outcome `Unknown`.
    fn check_status(&self, command: &Command) -> impl Future<Output = Report> + Send;

    /// The longest a money-moving request may be on its way after its send
    /// was recorded ([`Command::journal_recorded`]): every HTTP call one
    /// [`Connector::execute`] may make (a token fetch included) at its
    /// timeout. A connector whose request can be held up before it leaves
    /// does not send it when it could still be in flight after this. A send
    /// recorded less than this long ago may still be on its way, so within it
    /// the worker never sends again, whatever a status check says.
    fn longest_send(&self) -> std::time::Duration;

    /// How long after a request the provider may still answer a status check
    /// with "no record" while the request is on its way in (Smilepayz:
    /// inquiry right after create). Within it, or within
    /// [`Connector::longest_send`] if longer, after the last recorded send
    /// the worker does not take "no record" as leave to send again.
    fn resend_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// `Some(interval)` when a status check of `command` sends its
    /// money-moving request again, because the provider has no way to ask
    /// (SNAP refunds: re-sent under the same reference). The worker then lets
    /// such a check reach the provider at most once per `interval` after the
    /// journal's last send, and never while an earlier one may be in flight.
    fn status_check_resends(&self, _command: &Command) -> Option<std::time::Duration> {
        None
    }

    /// The deposit balance at the provider.
    fn balance(&self) -> impl Future<Output = Result<Money, ConnectorError>> + Send;

    /// A connectivity check that moves no money (OkeBayar's echo), or `None`
    /// when the provider has none. The worker runs it every
    /// `worker.probe_interval_ms` and reports whether the provider answered.
    fn probe(&self) -> impl Future<Output = Option<Result<(), ConnectorError>>> + Send {
        async { None }
    }
}
