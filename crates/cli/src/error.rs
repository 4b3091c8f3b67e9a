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
    /// The call ended without the server's decision: no answer before its
    /// deadline, or (for a call that creates a transaction) a connection cut
    /// or a failure after the request was sent. What was sent may still take
    /// effect.
    #[error(
        "{}; what was sent may still take effect: look it up (loketctl get --ref <your ref>) before sending it again",
        undecided(.0)
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

impl CliError {
    /// The error of a call that creates a transaction (a purchase, a
    /// payment, a cancel, …). Only a refusal the server makes before acting
    /// is one; any other status (UNKNOWN or INTERNAL for a connection cut
    /// mid-call, UNAVAILABLE from a proxy whose upstream went away or from a
    /// database failing at the commit) may come after the transaction was
    /// stored, and a script that read it as "nothing happened" and sent again
    /// under a new ref would pay twice.
    pub fn of_sent_call(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::Unimplemented => CliError::Grpc(status),
            _ => CliError::Unanswered(status),
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
    /// unreachable (or ended a watch), 4 when what was sent got no decision
    /// or did not take effect in time: a script must look it up, not resend.
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
            CliError::Catalogue(errors) => {
                error["code"] = USAGE_CODE.into();
                let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                error["details"] = problems.into();
            }
            // Every other bad usage: a bad value, a bad setting.
            _ if self.exit_code() == 2 => error["code"] = USAGE_CODE.into(),
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

/// How a call ended without the server's decision: its deadline passed, or
/// it ended with the status shown.
fn undecided(status: &tonic::Status) -> String {
    let code = code_name(status.code());
    match status.code() {
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            format!("{code}: no answer in time ({})", status.message())
        }
        _ => format!("{code}: {}", status.message()),
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

    /// Under `--json` every exit-2 error is `USAGE`: a bad value, a bad
    /// setting, a bad catalogue file (its problems listed in `details`).
    #[test]
    fn every_bad_usage_is_code_usage_under_json() {
        let catalogue = || {
            CliError::Catalogue(crate::products::CatalogueErrors(vec![
                crate::products::EntryError {
                    index: 2,
                    code: Some("PULSA10".into()),
                    field: "price".into(),
                    problem: "must be a whole number of rupiah".into(),
                },
            ]))
        };
        for error in [
            CliError::Explain("okebayar 12x: not a code".into()),
            CliError::Db(loket_runtime::db::DbError::BadUrl),
            CliError::Usage("--api-key: missing".into()),
            catalogue(),
        ] {
            assert_eq!(error.exit_code(), 2, "{error}");
            assert_eq!(error.to_json()["error"]["code"], USAGE_CODE, "{error}");
        }
        let details = &catalogue().to_json()["error"]["details"];
        assert_eq!(details.as_array().map(Vec::len), Some(1), "{details}");
        assert!(
            details[0].as_str().is_some_and(|d| d.contains("price")),
            "{details}"
        );
        let bad_url = CliError::Db(loket_runtime::db::DbError::BadUrl).to_string();
        assert!(bad_url.contains("LOKET_DATABASE_URL"), "{bad_url}");
    }

    /// A call that creates a transaction and ends without the server's
    /// decision (a cut connection, a proxy's UNAVAILABLE, a failure at the
    /// commit) may have been acted on: exit 4, look it up. A refusal made
    /// before acting stays exit 1; a read's UNAVAILABLE stays exit 3.
    #[test]
    fn a_sent_call_ended_without_a_decision_is_exit_4() {
        for status in [
            tonic::Status::unknown("h2 protocol error: connection reset"),
            tonic::Status::internal("internal error"),
            tonic::Status::unavailable("upstream connect error"),
            tonic::Status::aborted("aborted"),
            tonic::Status::cancelled("Timeout expired"),
        ] {
            let error = CliError::of_sent_call(status);
            assert_eq!(error.exit_code(), 4, "{error}");
            assert!(error.to_string().contains("look it up"), "{error}");
            assert!(error.to_json()["error"]["code"].is_string(), "{error}");
        }
        for status in [
            tonic::Status::invalid_argument("account: must be digits"),
            tonic::Status::already_exists("client_ref: used with another amount"),
            tonic::Status::not_found("product_code: PLN7: unknown"),
            tonic::Status::unauthenticated("bad key"),
        ] {
            let error = CliError::of_sent_call(status);
            assert_eq!(error.exit_code(), 1, "{error}");
        }
        let read = CliError::from(tonic::Status::unavailable("draining"));
        assert_eq!(read.exit_code(), 3);
    }
}
