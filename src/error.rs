//! The one domain error, mapped once to gRPC codes and once to HTTP statuses.
//!
//! Messages speak to the caller about *their* request. Internal failures carry
//! their cause for the log only: callers see a generic message.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// Everything that can go wrong in keyward.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is malformed; names the field and what is allowed.
    /// gRPC `INVALID_ARGUMENT`, HTTP 400.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field (or flag) at fault.
        field: &'static str,
        /// What was wrong and what is allowed.
        reason: String,
    },
    /// The named thing does not exist. gRPC `NOT_FOUND`, HTTP 404.
    #[error("{0}")]
    NotFound(String),
    /// The named thing exists already. gRPC `ALREADY_EXISTS`, HTTP 409.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well-formed but the system is not in a state that allows
    /// it. gRPC `FAILED_PRECONDITION`, HTTP 409.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Missing or wrong credentials. gRPC `UNAUTHENTICATED`, HTTP 401.
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// Stored ciphertext failed to decrypt (wrong key, tampering or a row copied
    /// elsewhere). The row is logged where this is raised; the caller gets a
    /// generic message. gRPC `DATA_LOSS`, HTTP 500.
    #[error("stored data could not be decrypted")]
    DataLoss,
    /// The database cannot be reached. gRPC `UNAVAILABLE`, HTTP 503.
    #[error("database unavailable")]
    Unavailable,
    /// Anything else; the cause is logged, never sent. gRPC `INTERNAL`, HTTP 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// Wraps any cause as [`Error::Internal`].
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }

    /// The gRPC status code this error maps to.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::InvalidArgument { .. } => tonic::Code::InvalidArgument,
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::AlreadyExists(_) => tonic::Code::AlreadyExists,
            Self::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Self::Unauthenticated => tonic::Code::Unauthenticated,
            Self::DataLoss => tonic::Code::DataLoss,
            Self::Unavailable => tonic::Code::Unavailable,
            Self::Internal(_) => tonic::Code::Internal,
        }
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::AlreadyExists(_) | Self::FailedPrecondition(_) => StatusCode::CONFLICT,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::DataLoss | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Logs causes the caller must not see; called once, where the error leaves
    /// keyward through a transport.
    fn log_cause(&self) {
        match self {
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            Self::Unavailable => tracing::warn!("database unavailable"),
            _ => {}
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %err, "database connection failed");
                Self::Unavailable
            }
            other => Self::internal(other),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        err.log_cause();
        tonic::Status::new(err.grpc_code(), err.to_string())
    }
}

/// An RFC 9457 problem document.
#[derive(serde::Serialize)]
struct Problem {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_cause();
        let status = self.http_status();
        let problem = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
