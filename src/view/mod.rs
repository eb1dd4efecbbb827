//! In-memory views of what the hot paths read, so that serving a JWKS,
//! signing a token, checking a client secret or reading a client or key set
//! makes no database query.
//!
//! Each view is built from the database once at start and then follows it
//! through a generation counter: every write bumps the counter of what it
//! changed and records, per row, the generation of its latest change. A view
//! at generation G reads only what changed after G, so one change costs the
//! same with ten rows or a hundred thousand. Writes made by this process
//! refresh the view before they return; changes made by other replicas on the
//! same database are picked up by polling the counters.
//!
//! - [`keysets`]: every live key set, its published keys, its JWKS and the
//!   sealed active key (parsed for signing on first use).
//! - [`clients`]: every OIDC client with its secret versions, still sealed,
//!   and the key sets that sign client-credentials tokens.

pub mod clients;
pub mod keysets;

pub use clients::{ClientEntry, ClientView};
pub use keysets::{IssuerKeys, JwksDoc, KeySetEntry, KeySetView};
