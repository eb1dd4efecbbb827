//! The OAuth 2.0 error vocabulary (RFC 6749 §5.2) of the token endpoint, and
//! where each error sits in keyward's code table.

use crate::{Error, error::ErrorKind};

/// An RFC 6749 §5.2 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthCode {
    /// `invalid_request`.
    InvalidRequest,
    /// `invalid_client`.
    InvalidClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`.
    InvalidScope,
    /// `temporarily_unavailable`.
    TemporarilyUnavailable,
    /// `server_error`.
    ServerError,
}

impl OAuthCode {
    /// Every code.
    pub const ALL: [Self; 6] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::TemporarilyUnavailable,
        Self::ServerError,
    ];

    /// The code as RFC 6749 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
        }
    }
}

/// RFC 6749 §5.2 errors.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// Malformed request.
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed.
    #[error("{0}")]
    InvalidClient(String),
    /// Grant type not supported.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// Scope not allowed.
    #[error("{0}")]
    InvalidScope(String),
    /// Too many failed authentications for this client from this address.
    #[error("too many failed authentications for this client from this address; retry in {0}s")]
    Throttled(u64),
    /// keyward failed; logged, never detailed to the caller.
    #[error("internal error")]
    Server(#[source] Error),
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub fn code(&self) -> OAuthCode {
        match self {
            Self::InvalidRequest(_) => OAuthCode::InvalidRequest,
            Self::InvalidClient(_) => OAuthCode::InvalidClient,
            Self::UnsupportedGrantType(_) => OAuthCode::UnsupportedGrantType,
            Self::InvalidScope(_) => OAuthCode::InvalidScope,
            Self::Throttled(_) | Self::Server(Error::AuditUnavailable | Error::Unavailable) => {
                OAuthCode::TemporarilyUnavailable
            }
            Self::Server(_) => OAuthCode::ServerError,
        }
    }

    /// Its row in keyward's error code table (RFC 6749 §5.2: 401 for a
    /// failed client authentication, 400 for the rest, 500 for keyward's own).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidClient(_) => ErrorKind::Unauthenticated,
            Self::Throttled(_) => ErrorKind::ResourceExhausted,
            Self::Server(inner) => match inner.kind() {
                ErrorKind::Unavailable => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Self::InvalidRequest(_) | Self::UnsupportedGrantType(_) | Self::InvalidScope(_) => {
                ErrorKind::InvalidArgument
            }
        }
    }
}
