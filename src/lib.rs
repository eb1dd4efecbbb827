//! keyward: a key and secret service for OpenMetadata.
//!
//! It keeps JWT signing keys and OIDC client secrets in a database, encrypted at
//! rest, hands them to servers over gRPC and publishes the public keys as a JWKS
//! over HTTP.
//!
//! The layout follows the layers, from pure to I/O:
//!
//! - [`crypto`]: pure cryptography — AES-256-GCM sealing under the master key,
//!   signing-key generation, JWK thumbprints and JWT signing. No I/O, no clock.
//! - [`model`]: validated names, algorithms, durations and key states.
//! - [`access`]: API token roles, scope patterns and the method-by-role table.
//! - [`audit`]: audit events, their durability and the keyed hash chain.
//! - [`rotation`] and [`cron`]: the key lifecycle as pure functions of `now`.
//! - [`store`]: the [`store::Store`] trait and its SQLite and PostgreSQL
//!   implementations. Knows SQL, knows nothing of transports.
//! - [`service`]: the application layer. Every operation the gRPC API, the HTTP
//!   API and the CLI offer is a method of [`service::Service`]; it takes time from
//!   an injectable [`clock::Clock`].
//! - [`view`]: in-memory views of key sets (with their JWKS) and clients,
//!   following the database by generation: what the hot paths read.
//! - [`grpc`] and [`http`]: thin transports over the service; no SQL.
//! - [`metrics`]: Prometheus counters, histograms and gauges read off the views.
//! - [`net`]: connection limits, idle and header timeouts, TLS handshakes,
//!   bounded shutdown.
//! - [`tls`]: rustls settings of both listeners, certificate reload, mutual TLS.
//! - [`server`]: start-up (keyring, migrations, bootstrap) and the lifecycle of
//!   both listeners until shutdown.
//! - [`doctor`]: the checks `keyward doctor` runs on a deployment.
//! - [`cli`] and [`config`]: the `keyward` command line and its layered settings.
//!
//! Errors are one type, [`Error`], mapped once to gRPC codes and HTTP statuses.

pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod files;
pub mod ops;
pub mod server;
pub mod service;
pub mod store;
pub mod transport;
pub mod view;

pub use error::Error;

/// keyward's result type: every fallible operation fails with the one domain
/// [`Error`], so the gRPC and HTTP layers map failures in exactly one place.
pub type Result<T, E = Error> = std::result::Result<T, E>;
