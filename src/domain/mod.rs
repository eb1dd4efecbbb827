//! The domain: keyward's rules as pure functions and values. Nothing here does
//! I/O or knows of a database, a transport or metrics; everything that depends
//! on time takes `now` or a [`clock::Clock`].
//!
//! - [`model`]: validated names, ids, kids, key states, auth methods, durations.
//! - [`algorithm`]: the JWS signing algorithms, by their JOSE names.
//! - [`secret`]: secrets as types (zeroized, redacted in `Debug`).
//! - [`clock`]: time as a parameter.
//! - [`cron`]: cron schedules in UTC.
//! - [`rotation`]: the key lifecycle as functions of `now`.
//! - [`access`]: API token roles, scope patterns and the method-by-role table.
//! - [`audit`]: audit events, their durability and the hash chain's rules.
//! - [`client`]: OIDC clients' metadata and the rules a change to it keeps.
//! - [`claims`]: claim rules: signing profiles (OpenMetadata's), subject and
//!   email, a client-credentials token's claims and scopes.
//! - [`oauth`]: the token endpoint's error vocabulary (RFC 6749).
//! - [`openmetadata`]: OpenMetadata's configuration formats (the key export's env file).
//! - [`throttle`]: failed-authentication limits.
//! - [`event`]: change events, their filters and their vocabulary.

pub mod access;
pub mod algorithm;
pub mod audit;
pub mod claims;
pub mod client;
pub mod clock;
pub mod cron;
pub mod event;
pub mod model;
pub mod oauth;
pub mod openmetadata;
pub mod rotation;
pub mod secret;
pub mod throttle;
