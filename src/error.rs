//! The one domain error and its code table. Each transport maps an
//! [`ErrorKind`] once, in its own module: gRPC codes in
//! [`crate::transport::grpc`], HTTP statuses in [`crate::transport::http`]; the
//! store converts database errors in [`crate::store`]. This module names no
//! transport's or database's types.
//!
//! Messages speak to the caller about *their* request. Internal failures carry
//! their cause for the log only: callers see a generic message.

/// What kind of failure an error is, whatever transport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input. gRPC `INVALID_ARGUMENT`, HTTP 400.
    InvalidArgument,
    /// No such thing. gRPC `NOT_FOUND`, HTTP 404.
    NotFound,
    /// Taken already. gRPC `ALREADY_EXISTS`, HTTP 409.
    AlreadyExists,
    /// Not in a state that allows it. gRPC `FAILED_PRECONDITION`, HTTP 409.
    FailedPrecondition,
    /// Missing or wrong credentials. gRPC `UNAUTHENTICATED`, HTTP 401.
    Unauthenticated,
    /// Valid credentials without the right. gRPC `PERMISSION_DENIED`, HTTP 403.
    PermissionDenied,
    /// Too many failed attempts; retry later. gRPC `RESOURCE_EXHAUSTED`, HTTP 429.
    ResourceExhausted,
    /// Stored ciphertext does not open. gRPC `DATA_LOSS`, HTTP 500.
    DataLoss,
    /// The database cannot be reached. gRPC `UNAVAILABLE`, HTTP 503.
    Unavailable,
    /// Anything else. gRPC `INTERNAL`, HTTP 500.
    Internal,
}

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
    /// Missing or wrong credentials; says which. gRPC `UNAUTHENTICATED`,
    /// HTTP 401.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid token without the right for this call; says which role or scope
    /// it would need. gRPC `PERMISSION_DENIED`, HTTP 403.
    #[error("{0}")]
    PermissionDenied(String),
    /// Too many failed authentications from this caller; names when to retry.
    /// gRPC `RESOURCE_EXHAUSTED`, HTTP 429 with `Retry-After`.
    #[error("too many failed authentications from this address; retry in {retry_after}s")]
    Throttled {
        /// Seconds until an attempt is accepted again.
        retry_after: u64,
    },
    /// Stored ciphertext failed to decrypt (wrong key, tampering or a row copied
    /// elsewhere). The row is logged where this is raised; the caller gets a
    /// generic message. gRPC `DATA_LOSS`, HTTP 500.
    #[error("stored data could not be decrypted")]
    DataLoss,
    /// The database cannot be reached. gRPC `UNAVAILABLE`, HTTP 503.
    #[error("database unavailable")]
    Unavailable,
    /// The call's audit event could not be stored, so the call was refused
    /// and returned nothing. gRPC `UNAVAILABLE`, HTTP 503.
    #[error("the audit log could not be written, so the call returned nothing; retry")]
    AuditUnavailable,
    /// Anything else; the cause is logged, never sent. gRPC `INTERNAL`, HTTP 500.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ErrorKind {
    /// Every kind, in the table's order.
    pub const ALL: [Self; 10] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::FailedPrecondition,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::DataLoss,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The canonical status name (`PERMISSION_DENIED`): how gRPC spells it,
    /// how the audit log records a call that failed this way.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::DataLoss => "DATA_LOSS",
            Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }
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

    /// The kind of failure: one row of the code table every transport maps.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::Throttled { .. } => ErrorKind::ResourceExhausted,
            Self::DataLoss => ErrorKind::DataLoss,
            Self::Unavailable | Self::AuditUnavailable => ErrorKind::Unavailable,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Logs causes the caller must not see; called once, where the error leaves
    /// keyward through a transport.
    pub fn log_cause(&self) {
        match self {
            Self::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            Self::Unavailable => tracing::warn!("database unavailable"),
            _ => {}
        }
    }
}
