//! The one error type of loketctl, and how a gRPC status is shown:
//! `INVALID_ARGUMENT: account: must be digits`.

use crate::products::CatalogueErrors;

/// The `code` of a usage error (a command line refused, a setting missing)
/// under `--json`.
pub const USAGE_CODE: &str = "USAGE";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{}: {}{}", code_name(.0.code()), .0.message(), flag_hint(.0))]
    Grpc(tonic::Status),
    /// No answer came before the call's deadline (or the call was cancelled
    /// on the way): what was sent may still take effect.
    #[error(
        "{}: no answer in time ({}); what was sent may still take effect: look it up (loketctl get --ref <your ref>) before sending it again",
        code_name(.0.code()),
        .0.message()
    )]
    Unanswered(tonic::Status),
    /// The server ended a watch: it is restarting or draining.
    #[error("UNAVAILABLE: the server closed the stream (restarting or draining); watch again")]
    StreamClosed,
    /// No connection to the server could be made.
    #[error("UNAVAILABLE: cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{0}")]
    Db(#[from] loket_runtime::db::DbError),
    /// A query failed. The text is sqlx's, which never holds the URL.
    #[error("database: {0}")]
    Query(String),
    #[error(transparent)]
    Catalogue(#[from] CatalogueErrors),
    #[error("{0}")]
    Explain(String),
    /// Bad input the argument parser could not catch.
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not found: {0}")]
    NotFound(String),
    /// What is stored refuses what was asked: an operator's decision on a
    /// transaction not in needs_review, a client name already taken.
    #[error("{0}")]
    Refused(String),
    /// What was sent did not take effect within the wait; it may still.
    #[error("{0}")]
    TimedOut(String),
    /// A step of the bare pipeline's measurement failed (`loketctl baseline`).
    #[error("{0}")]
    Baseline(String),
    /// NATS could not be reached, or JetStream did not store a publish.
    #[error(transparent)]
    Bus(#[from] loket_runtime::bus::BusError),
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        // tonic reports its own deadline passing as CANCELLED ("Timeout
        // expired"); a server's as DEADLINE_EXCEEDED. Either way the request
        // may have been acted on.
        match status.code() {
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => CliError::Unanswered(status),
            _ => CliError::Grpc(status),
        }
    }
}

impl From<sqlx::Error> for CliError {
    fn from(error: sqlx::Error) -> Self {
        CliError::Query(error.to_string())
    }
}

impl CliError {
    /// Whoever read our output went away (`loketctl list | head`): the
    /// binary stops quietly, as Unix tools do.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// The process exit code: 1 for a server or database answer (an unknown
    /// transaction or a search that found nothing included), 2 for bad
    /// usage (as clap does), 3 when the server, the database or NATS is
    /// unreachable (or ended a watch), 4 when what was sent got no answer or
    /// did not take effect in time: a script must look it up, not resend.
    /// The error for a script that asked for `--json`: `{"error": {"message",
    /// "exit_code"}}`, plus the gRPC `code` and the server's own `details`
    /// (its message, e.g. `account: must be digits`) when the server answered
    /// with a status. Texts are exact, not escaped for a terminal.
    pub fn to_json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "message": self.to_string(),
            "exit_code": self.exit_code(),
        });
        match self {
            CliError::Grpc(status) | CliError::Unanswered(status) => {
                error["code"] = code_name(status.code()).into();
                error["details"] = status.message().into();
            }
            CliError::Usage(_) => error["code"] = USAGE_CODE.into(),
            _ => {}
        }
        serde_json::json!({ "error": error })
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) | CliError::Catalogue(_) | CliError::Explain(_) => 2,
            CliError::Connect { .. } | CliError::StreamClosed => 3,
            CliError::Grpc(status) if status.code() == tonic::Code::Unavailable => 3,
            CliError::Db(loket_runtime::db::DbError::Connect(_)) => 3,
            CliError::Db(loket_runtime::db::DbError::BadUrl) => 2,
            CliError::Bus(loket_runtime::bus::BusError::Connect { .. }) => 3,
            CliError::TimedOut(_) | CliError::Unanswered(_) => 4,
            // As if ended by SIGPIPE, like other tools in a pipeline.
            error if error.is_closed_output() => 141,
            _ => 1,
        }
    }
}

/// loketctl's flag for the request field an `INVALID_ARGUMENT` names first
/// (`account3: …`), where the two are called differently: the server speaks
/// the gRPC API's field names, a loketctl user typed flags.
fn flag_hint(status: &tonic::Status) -> String {
    if status.code() != tonic::Code::InvalidArgument {
        return String::new();
    }
    let flag = match status.message().split_once(':').map(|(field, _)| field) {
        Some("account3") => "--months",
        Some("client_ref") => "--ref",
        Some("product_code") => "--product",
        Some("inquiry_id") => "--inquiry",
        Some("wait_ms") => "--wait",
        Some("expiry_seconds") => "--expiry",
        _ => return String::new(),
    };
    format!(" (loketctl's {flag})")
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_errors_show_code_name_and_message() {
        let error = CliError::from(tonic::Status::invalid_argument("account: must be digits"));
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: account: must be digits"
        );
        assert_eq!(error.exit_code(), 1);
        let error = CliError::from(tonic::Status::unavailable("draining"));
        assert_eq!(error.to_string(), "UNAVAILABLE: draining");
        assert_eq!(error.exit_code(), 3);
        assert_eq!(code_name(tonic::Code::AlreadyExists), "ALREADY_EXISTS");
    }

    /// The server names the API's field; the user typed a flag called
    /// otherwise. `--json` keeps the server's own words in `details`.
    #[test]
    fn a_field_named_otherwise_than_its_flag_names_the_flag_too() {
        let status = tonic::Status::invalid_argument(
            "account3: a BPJS inquiry needs the number of months to pay, 1 to 12: required",
        );
        let error = CliError::from(status);
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: account3: a BPJS inquiry needs the number of months to pay, \
             1 to 12: required (loketctl's --months)"
        );
        assert_eq!(
            error.to_json()["error"]["details"],
            "account3: a BPJS inquiry needs the number of months to pay, 1 to 12: required"
        );
        let error = CliError::from(tonic::Status::invalid_argument("client_ref: required"));
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: client_ref: required (loketctl's --ref)"
        );
        let error = CliError::from(tonic::Status::not_found("account3: not a field here"));
        assert_eq!(error.to_string(), "NOT_FOUND: account3: not a field here");
    }

    /// A call whose deadline passed may still have been acted on: a script
    /// must not read it as a refusal (exit 1) and resend under a new ref.
    #[test]
    fn a_call_without_an_answer_is_exit_4_and_says_to_look_it_up() {
        for status in [
            tonic::Status::cancelled("Timeout expired"),
            tonic::Status::deadline_exceeded("deadline"),
        ] {
            let error = CliError::from(status);
            assert_eq!(error.exit_code(), 4, "{error}");
            assert!(
                error.to_string().contains("may still take effect"),
                "{error}"
            );
        }
    }
}
