//! The database itself: reachability, migrations, start-up's lock, the
//! sealed values of `keyward_meta` (the master-key canary, the audit key),
//! every sealed value by master key (for a rewrap), and the change counters
//! replicas poll.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::Result;

/// A table that holds values sealed under a master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SealedTable {
    /// Private keys (`keys.private_key`).
    Keys,
    /// Client secret versions (`client_secrets.secret`).
    ClientSecrets,
    /// The canary and the audit chain key (`keyward_meta.value`).
    Meta,
}

impl SealedTable {
    /// Every sealed table, in the order a rewrap walks them.
    pub const ALL: [Self; 3] = [Self::Meta, Self::Keys, Self::ClientSecrets];

    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keys => "keys",
            Self::ClientSecrets => "client_secrets",
            Self::Meta => "keyward_meta",
        }
    }
}

/// The row a sealed value lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedAt {
    /// A key's private half.
    Key {
        /// Its kid (the primary key).
        kid: String,
        /// Its key set's id.
        keyset_id: i64,
        /// Its algorithm, as stored.
        algorithm: String,
    },
    /// One version of a client's secret.
    ClientSecret {
        /// The client.
        client_id: String,
        /// The version.
        version: i64,
    },
    /// A `keyward_meta` value.
    Meta {
        /// Its name.
        name: String,
    },
}

/// A sealed value and the master key id stored beside it.
#[derive(Clone)]
pub struct SealedValue {
    /// Its row.
    pub at: SealedAt,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
    /// The ciphertext.
    pub sealed: Vec<u8>,
}

impl Debug for SealedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedValue")
            .field("at", &self.at)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

/// A sealed value sealed again: replaces `old` only if the row still holds
/// exactly `old`'s ciphertext under `old`'s key.
#[derive(Debug, Clone)]
pub struct Resealed {
    /// The value as read.
    pub old: SealedValue,
    /// The key that sealed it again.
    pub master_key_id: String,
    /// The new ciphertext.
    pub sealed: Vec<u8>,
}

/// How many values of one table one master key seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedCount {
    /// The table.
    pub table: SealedTable,
    /// The master key id.
    pub master_key_id: String,
    /// Values it seals there.
    pub rows: i64,
}

/// The change counters of what each replica keeps in memory, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generations {
    /// Bumped by every key set change (what the JWKS and signing read).
    pub keysets: i64,
    /// Bumped by every API token change.
    pub tokens: i64,
    /// Bumped by every client or client secret change.
    pub clients: i64,
}

/// Held by the one process setting a database up (migrations, canary,
/// bootstrap); others wait for it. Released by [`StartupLock::release`], or
/// when dropped, or when the process dies.
pub struct StartupLock(LockInner);

enum LockInner {
    /// Nothing to serialise (an in-memory database).
    Nothing,
    /// An exclusive lock on a file beside the SQLite database.
    File(std::fs::File),
    /// A PostgreSQL session advisory lock, held by this dedicated connection.
    Postgres(sqlx::PgConnection),
}

impl Debug for StartupLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            LockInner::Nothing => "StartupLock(none)",
            LockInner::File(_) => "StartupLock(file)",
            LockInner::Postgres(_) => "StartupLock(postgres)",
        })
    }
}

impl StartupLock {
    pub(crate) fn nothing() -> Self {
        Self(LockInner::Nothing)
    }

    pub(crate) fn file(file: std::fs::File) -> Self {
        Self(LockInner::File(file))
    }

    pub(crate) fn postgres(conn: sqlx::PgConnection) -> Self {
        Self(LockInner::Postgres(conn))
    }

    /// Releases the lock now.
    pub async fn release(self) {
        match self.0 {
            LockInner::Nothing => {}
            LockInner::File(file) => {
                let _ = file.unlock();
            }
            LockInner::Postgres(mut conn) => {
                // Closing the session releases its advisory locks too; unlock
                // first so a failed close still frees the others at once.
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut conn)
                    .await;
                let _ = sqlx::Connection::close(conn).await;
            }
        }
    }
}

/// The database's migrations against this binary's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    /// Migrations applied.
    pub applied: usize,
    /// Versions this binary has that the database lacks.
    pub pending: Vec<i64>,
    /// Versions the database has that this binary does not know (a newer
    /// keyward migrated it).
    pub unknown: Vec<i64>,
}

/// The database itself, and the values sealed in it.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// The database server's clock, Unix seconds (SQLite: this machine's).
    async fn database_time(&self) -> Result<i64>;

    /// Which migrations the database has and this binary knows.
    async fn migration_state(&self) -> Result<MigrationState>;

    /// Writes a consistent copy of the database to `path` (a new or empty
    /// file), while it serves; checks the copy. SQLite only: PostgreSQL
    /// refuses with `FailedPrecondition` (use `pg_dump`).
    async fn backup_to(&self, path: &std::path::Path) -> Result<()>;

    /// Waits until no other process is setting this database up, then holds
    /// that right until the lock is released.
    async fn lock_startup(&self) -> Result<StartupLock>;

    /// The master-key canary `(key id, sealed)`, read without writing anything;
    /// `None` on a fresh (even unmigrated) database.
    async fn read_canary(&self) -> Result<Option<(String, Vec<u8>)>>;

    /// Stores the canary unless one exists; returns whether it wrote.
    async fn write_canary(&self, key_id: &str, sealed: &[u8]) -> Result<bool> {
        self.insert_meta("canary", key_id, sealed).await
    }

    /// A sealed value kept in `keyward_meta`: `(master key id, sealed)`.
    async fn meta(&self, name: &str) -> Result<Option<(String, Vec<u8>)>>;

    /// Stores a sealed value in `keyward_meta` unless one by that name
    /// exists; returns whether it wrote.
    async fn insert_meta(&self, name: &str, key_id: &str, sealed: &[u8]) -> Result<bool>;

    /// How many sealed values each master key seals, per table (an empty
    /// list before the first migration).
    async fn sealed_counts(&self) -> Result<Vec<SealedCount>>;

    /// Up to `limit` values of `table` after `after` (in primary-key order)
    /// that are sealed under a key other than `except_key_id`.
    async fn sealed_after(
        &self,
        table: SealedTable,
        after: Option<&SealedAt>,
        except_key_id: &str,
        limit: i64,
    ) -> Result<Vec<SealedValue>>;

    /// Stores resealed values in one transaction, each only where its row
    /// still holds the value it was read as; returns how many were stored.
    async fn reseal(&self, values: &[Resealed]) -> Result<u64>;

    /// After sealed values were overwritten: drops the old copies the
    /// database still keeps where it can (SQLite: a WAL checkpoint;
    /// PostgreSQL keeps old row versions until VACUUM).
    async fn purge_overwritten(&self) -> Result<()>;

    /// Every change counter, in one query: what replicas poll.
    async fn generations(&self) -> Result<Generations>;
}
