//! Persistence, split by aggregate: key sets and their keys ([`KeySetStore`]),
//! clients and their secrets ([`ClientStore`]), API tokens ([`TokenStore`]),
//! the audit chain ([`AuditStore`]), the database itself ([`MetaStore`]),
//! the master keys seals wrapped ([`SealStore`]) and change events with their
//! webhooks ([`EventStore`]).
//! [`Store`] is all of them, implemented for SQLite ([`SqliteStore`]) and
//! PostgreSQL ([`PgStore`]) by the statements in `sql/`.
//!
//! The store knows SQL and the domain's types, nothing of transports or
//! cryptography: it moves sealed bytes it cannot read. Every write that
//! changes what a view holds bumps that view's generation counter in the
//! same transaction, which is how other keyward processes on the same
//! database notice the change.

mod audit;
mod clients;
pub mod counting;
mod events;
mod keysets;
mod meta;
mod postgres;
mod sql;
mod sqlite;
mod tokens;
mod wraps;

use std::{
    fmt::Debug,
    sync::atomic::{AtomicU64, Ordering},
};

pub use audit::*;
pub use clients::*;
pub use events::*;
pub use keysets::*;
pub use meta::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tokens::*;
pub use wraps::*;

use crate::{Error, Result};

/// keyward's persistence: every aggregate's store, on one database.
pub trait Store:
    MetaStore
    + KeySetStore
    + ClientStore
    + TokenStore
    + AuditStore
    + SealStore
    + EventStore
    + Send
    + Sync
    + Debug
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

/// Opens the store a database URL names: `sqlite:` or `postgres:`/`postgresql:`.
pub async fn open(url: &str) -> Result<Box<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Box::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Box::new(PgStore::connect(url).await?))
    } else {
        Err(Error::invalid(
            "database_url",
            "use a sqlite:// or postgres:// URL",
        ))
    }
}

/// Database errors this process met, whatever store met them: counted where
/// a database error becomes a domain error, read by the metrics at scrape.
static UNAVAILABLE: AtomicU64 = AtomicU64::new(0);
static QUERY_FAILED: AtomicU64 = AtomicU64::new(0);

/// How many database errors this process has met so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// No connection could be had.
    pub unavailable: u64,
    /// Anything else.
    pub query: u64,
}

/// The database errors met so far.
pub fn error_counts() -> ErrorCounts {
    ErrorCounts {
        unavailable: UNAVAILABLE.load(Ordering::Relaxed),
        query: QUERY_FAILED.load(Ordering::Relaxed),
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::warn!(error = %err, "database connection failed");
                UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
                Self::Unavailable
            }
            other => {
                QUERY_FAILED.fetch_add(1, Ordering::Relaxed);
                Self::internal(other)
            }
        }
    }
}

/// Maps a unique-constraint violation to `AlreadyExists(message)`, anything
/// else through the usual conversion.
fn unique_as_exists(err: sqlx::Error, message: impl FnOnce() -> String) -> Error {
    match err.as_database_error() {
        Some(db) if db.is_unique_violation() => Error::AlreadyExists(message()),
        _ => err.into(),
    }
}
