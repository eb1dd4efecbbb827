//! keyward: a key and secret service for OpenMetadata.
//!
//! It keeps JWT signing keys and OIDC client secrets in a database, encrypted at
//! rest, hands them to servers over gRPC and publishes the public keys as a JWKS
//! over HTTP.
//!
//! The folders are the layers, from pure to I/O; each imports only those
//! below it (`tests/architecture.rs` checks it):
//!
//! - [`domain`]: the rules, pure: names and states, the key lifecycle and
//!   rotation policy as functions of `now`, cron, roles and scopes, audit
//!   events and the chain's rules, clients, claims, the failure throttle.
//! - [`crypto`]: sealing under the master key, signing keys, JWT signing, the
//!   audit chain's MAC, randomness. No I/O, no clock.
//! - [`store`]: persistence per aggregate (key sets, clients, tokens, audit,
//!   the database itself) on SQLite and PostgreSQL. SQL and domain types only.
//! - [`view`]: the in-memory views the hot paths read (JWKS, signers,
//!   clients), following the database by generation.
//! - [`service`]: the application. Every operation, and the one call
//!   pipeline ([`service::Service::audited`]) that authenticates, authorizes,
//!   runs and audits each call.
//! - [`transport`]: gRPC and HTTP, thin: conversions, the request-id layer,
//!   the caller interceptor; listeners and TLS.
//! - [`ops`]: metrics (a leaf the layers above feed) and `keyward doctor`.
//! - [`config`]: layered settings. [`server`]: start-up, serving, background
//!   tasks, backup. [`cli`]: the `keyward` command line. [`agent`]:
//!   `keyward agent`, a client that keeps files fresh from the gRPC API.
//!
//! [`error`] and [`files`] sit under all of them: the one error type, mapped
//! once to gRPC codes and HTTP statuses, and private files on disk.

pub mod agent;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod files;
pub mod ops;
pub mod seal;
pub mod server;
pub mod service;
pub mod store;
pub mod transport;
pub mod view;

pub use error::Error;

/// keyward's result type: every fallible operation fails with the one domain
/// [`Error`], so the gRPC and HTTP layers map failures in exactly one place.
pub type Result<T, E = Error> = std::result::Result<T, E>;
