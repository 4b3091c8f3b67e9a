//! The ingress's error type and the one function that turns it into a gRPC
//! status ([`to_status`]). Bad input is never `INTERNAL`; database and bus
//! failures reach the client as a generic message (the detail is logged here,
//! never sent: no SQL, no database URL).

use tonic::{Code, Status};

use crate::validate::ValidationError;

/// Everything a call can fail with, already classified for the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No key, or a key that is unknown or disabled. The message is the same
    /// in every case so it never tells whether a key exists.
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("{0}")]
    InvalidArgument(#[from] ValidationError),
    /// Unknown product, unknown transaction, or another client's transaction.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A dependency (database, bus, provider connector) is not answering.
    /// The text is safe for the client.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected dependency error; the detail is logged only.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Unimplemented(String),
    /// The client holds as much of a limited resource as it may (watch
    /// streams); the text names the limit.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl ApiError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ApiError::InvalidArgument(ValidationError::new(field, reason))
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Unauthenticated => Code::Unauthenticated,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Unimplemented(_) => Code::Unimplemented,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
        }
    }
}

/// Database failures: a pool or connection problem is `UNAVAILABLE` (retry
/// later), anything else `INTERNAL`. The message a client sees is generic.
/// A server shutting down or restarting (SQLSTATE class 57, e.g. `57P01`
/// on a connection it terminated) or a connection exception (class 08) is a
/// connection problem too.
impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        let server_unavailable = error
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code.starts_with("57") || code.starts_with("08"))
            // A lock held elsewhere longer than `lock_timeout` (`db::connect`):
            // transient, the call may be retried.
            || loket_runtime::db::is_lock_timeout(&error);
        match &error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::Unavailable("database unavailable, try again".into())
            }
            _ if server_unavailable => {
                tracing::warn!(error = %error, "database unavailable");
                ApiError::Unavailable("database unavailable, try again".into())
            }
            _ => {
                tracing::error!(error = %error, "database error");
                ApiError::Internal("database error".into())
            }
        }
    }
}

/// THE mapping from [`ApiError`] to `tonic::Status`:
///
/// | error | code | message |
/// |---|---|---|
/// | `Unauthenticated` | `UNAUTHENTICATED` | "missing or invalid API key" |
/// | `InvalidArgument` | `INVALID_ARGUMENT` | "`<field>`: `<reason>`" |
/// | `NotFound` | `NOT_FOUND` | names the product / transaction |
/// | `FailedPrecondition` | `FAILED_PRECONDITION` | what is wrong with the product or inquiry |
/// | `AlreadyExists` | `ALREADY_EXISTS` | the conflicting parameters or payment |
/// | `Unavailable` | `UNAVAILABLE` | generic ("database unavailable, try again") |
/// | `Internal` | `INTERNAL` | always "internal error" (detail logged only) |
/// | `Unimplemented` | `UNIMPLEMENTED` | what is missing |
/// | `ResourceExhausted` | `RESOURCE_EXHAUSTED` | the limit reached |
pub fn to_status(error: &ApiError) -> Status {
    let message = match error {
        ApiError::Internal(detail) => {
            tracing::error!(detail = %detail, "internal error");
            "internal error".to_string()
        }
        other => other.to_string(),
    };
    Status::new(error.code(), message)
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        to_status(&error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_code_and_internal_detail_is_hidden() {
        let cases = [
            (
                ApiError::Unauthenticated,
                Code::Unauthenticated,
                "missing or invalid API key",
            ),
            (
                ApiError::invalid("account", "digits only"),
                Code::InvalidArgument,
                "account: digits only",
            ),
            (
                ApiError::NotFound("product X not found".into()),
                Code::NotFound,
                "product X not found",
            ),
            (
                ApiError::FailedPrecondition("expired".into()),
                Code::FailedPrecondition,
                "expired",
            ),
            (
                ApiError::AlreadyExists("dup".into()),
                Code::AlreadyExists,
                "dup",
            ),
            (
                ApiError::Unavailable("database unavailable, try again".into()),
                Code::Unavailable,
                "database unavailable, try again",
            ),
            (
                ApiError::Internal("SELECT secret FROM x".into()),
                Code::Internal,
                "internal error",
            ),
            (
                ApiError::Unimplemented("nope".into()),
                Code::Unimplemented,
                "nope",
            ),
            (
                ApiError::ResourceExhausted("too many watches".into()),
                Code::ResourceExhausted,
                "too many watches",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }

    #[test]
    fn database_errors_never_leak_detail() {
        let status = to_status(&ApiError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), Code::Unavailable);
        let status = to_status(&ApiError::from(sqlx::Error::Protocol(
            "postgres://loket:hunter2@db/loket said no".into(),
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
        assert!(!status.message().contains("postgres://"));
    }
}
