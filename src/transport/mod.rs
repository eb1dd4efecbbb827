//! The transports: thin edges that turn wire requests into calls of the
//! [`crate::service`] and its results back into wire responses. No SQL, no
//! policy of their own.
//!
//! - [`grpc`]: `keyward.v1` over tonic.
//! - [`http`]: JWKS, OIDC discovery, the token endpoint, probes, `/metrics`.
//! - [`net`]: listeners: connection limits, timeouts, TLS handshakes.
//! - [`observe`]: request ids, shared by both.
//! - [`tls`]: rustls settings, certificate reload, mutual TLS.

pub mod grpc;
pub mod http;
pub mod net;
pub mod observe;
pub mod tls;
