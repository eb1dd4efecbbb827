//! The transports: thin edges that turn wire requests into calls of the
//! [`crate::service`] and its results back into wire responses. No SQL, no
//! policy of their own.
//!
//! - [`grpc`]: `keyward.v1` over tonic.
//! - [`http`]: JWKS, OIDC discovery, the token endpoint, probes, `/metrics`.
//! - [`net`]: listeners: connection limits, timeouts, TLS handshakes, and
//!   deadlines on HTTP/2 prefaces and frames (`frames`); `timer`, the
//!   HTTP/1.1 header-read timeout without the runtime's shared timer lock.
//! - [`observe`]: request ids, shared by both; [`proxy`]: the client's
//!   address behind trusted proxies.
//! - [`tls`]: rustls settings, certificate reload, mutual TLS.
//! - `client`: the small outbound HTTP(S) client (doctor's probes, the
//!   Transit seal, webhook deliveries).

pub(crate) mod client;
mod frames;
pub mod grpc;
pub mod http;
pub mod net;
pub mod observe;
pub mod proxy;
mod timer;
pub mod tls;
