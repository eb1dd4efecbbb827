//! Persistence: the [`Store`] trait and its SQLite and PostgreSQL
//! implementations ([`SqliteStore`], [`PgStore`]).
//!
//! The store knows SQL and nothing of transports or cryptography: it moves
//! sealed bytes it cannot read. Every write that changes what the JWKS publishes
//! bumps one generation counter in the same transaction, which is how other
//! keyward processes on the same database notice the change.

pub mod counting;
mod sql;

use std::{
    fmt::Debug,
    sync::atomic::{AtomicU64, Ordering},
};

use async_trait::async_trait;
pub use sql::{PgStore, SqliteStore};

use crate::{
    Error, Result,
    domain::{
        access::Role,
        algorithm::Algorithm,
        audit::{Action, AuditEvent, AuditFilter, AuditRecord, ChainBounds, Linker, Outcome},
        cron::Schedule,
        model::{KeyState, secs_i64, secs_u64},
        rotation::{self, Cadence, KeyUpdate, Policy},
    },
};

/// A live key set, its policy decoded.
#[derive(Debug, Clone)]
pub struct KeySetRow {
    /// Surrogate id; names can be reused after deletion, ids cannot.
    pub id: i64,
    /// The key set's name.
    pub name: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size, for RSA algorithms.
    pub rsa_bits: Option<i64>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Its rotation policy.
    pub policy: Policy,
    /// When the next rotation is due.
    pub next_rotation_at: i64,
    /// Optimistic-concurrency version of the set and its keys.
    pub version: i64,
}

/// The columns of a `keysets` row, as the database holds them.
#[derive(sqlx::FromRow)]
struct KeySetColumns {
    id: i64,
    name: String,
    #[sqlx(try_from = "String")]
    algorithm: Algorithm,
    rsa_bits: Option<i64>,
    created_at: i64,
    #[sqlx(flatten)]
    policy: PolicyColumns,
    next_rotation_at: i64,
    version: i64,
}

impl TryFrom<KeySetColumns> for KeySetRow {
    type Error = Error;

    fn try_from(c: KeySetColumns) -> Result<Self> {
        Ok(Self {
            policy: Policy::try_from(&c.policy)?,
            id: c.id,
            name: c.name,
            algorithm: c.algorithm,
            rsa_bits: c.rsa_bits,
            created_at: c.created_at,
            next_rotation_at: c.next_rotation_at,
            version: c.version,
        })
    }
}

/// A rotation policy in its stored columns: a period or a cron schedule, and
/// durations in seconds.
#[derive(sqlx::FromRow)]
struct PolicyColumns {
    rotate_every: Option<i64>,
    schedule: Option<String>,
    prepublish: i64,
    retain: i64,
    max_token_ttl: i64,
}

impl TryFrom<&PolicyColumns> for Policy {
    type Error = Error;

    fn try_from(c: &PolicyColumns) -> Result<Self> {
        let cadence = match (&c.schedule, c.rotate_every) {
            (Some(expr), _) => Cadence::Cron(Schedule::parse(expr).map_err(Error::internal)?),
            (None, Some(every)) => Cadence::Every(secs_u64(every)),
            (None, None) => Cadence::Every(rotation::DEFAULT_ROTATE_EVERY),
        };
        Ok(Self {
            cadence,
            prepublish: secs_u64(c.prepublish),
            retain: secs_u64(c.retain),
            max_token_ttl: secs_u64(c.max_token_ttl),
        })
    }
}

impl From<&Policy> for PolicyColumns {
    fn from(policy: &Policy) -> Self {
        let (rotate_every, schedule) = match &policy.cadence {
            Cadence::Every(p) => (Some(secs_i64(*p)), None),
            Cadence::Cron(s) => (None, Some(s.to_string())),
        };
        Self {
            rotate_every,
            schedule,
            prepublish: secs_i64(policy.prepublish),
            retain: secs_i64(policy.retain),
            max_token_ttl: secs_i64(policy.max_token_ttl),
        }
    }
}

/// A key set about to be inserted.
#[derive(Debug, Clone)]
pub struct NewKeySet {
    /// Its name.
    pub name: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size, for RSA algorithms.
    pub rsa_bits: Option<i64>,
    /// Rotation policy.
    pub policy: Policy,
    /// First due rotation.
    pub next_rotation_at: i64,
    /// Creation time.
    pub created_at: i64,
}

/// A signing key's public record (never its private material).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// RFC 7638 thumbprint; unique forever.
    pub kid: String,
    /// Owning key set's id.
    pub keyset_id: i64,
    /// Owning key set's name.
    pub keyset: String,
    /// Its signing algorithm.
    #[sqlx(try_from = "String")]
    pub algorithm: Algorithm,
    /// Its lifecycle state.
    #[sqlx(try_from = "String")]
    pub state: KeyState,
    /// The published JWK, as JSON.
    pub public_jwk: String,
    /// Creation time.
    pub created_at: i64,
    /// When it started signing.
    pub activated_at: Option<i64>,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
    /// When it leaves (or left) the JWKS.
    pub expires_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// The sealed private half of a key, as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct SealedKey {
    /// The key's kid.
    pub kid: String,
    /// PKCS#8 DER sealed under the master key for row `keys/<kid>/1`.
    pub private_key: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
}

impl Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kid", &self.kid)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

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

/// A key about to be inserted.
pub struct NewKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Pending or active.
    pub state: KeyState,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// Published JWK as JSON.
    pub public_jwk: String,
    /// Sealed PKCS#8.
    pub private_key: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
    /// Creation time.
    pub created_at: i64,
}

/// A set of changes to one key set, applied in one transaction.
pub struct KeySetChange {
    /// Key state changes, in order.
    pub updates: Vec<KeyUpdate>,
    /// New keys.
    pub inserts: Vec<NewKey>,
    /// New due time, if it moves.
    pub next_rotation_at: Option<i64>,
    /// New policy, if it changes.
    pub policy: Option<Policy>,
}

/// Key sets and their published keys as of one generation.
#[derive(Debug, Clone, Default)]
pub struct PublishedDelta {
    /// The generation this was read at.
    pub generation: i64,
    /// Whether this is everything (no `since` was given).
    pub full: bool,
    /// Live key sets (changed ones, unless `full`).
    pub keysets: Vec<KeySetRow>,
    /// Names of key sets deleted since (never with `full`).
    pub deleted: Vec<String>,
    /// Published keys of `keysets`.
    pub keys: Vec<KeyRow>,
    /// The sealed private halves of the active keys among `keys`.
    pub active: Vec<SealedKey>,
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

/// Clients and their sealed secrets as of one clients generation.
#[derive(Debug, Clone, Default)]
pub struct ClientDelta {
    /// The clients generation this was read at.
    pub generation: i64,
    /// Whether this is every client (no `since` was given).
    pub full: bool,
    /// Ids changed since (never with `full`): each is in `clients` unless
    /// it was deleted.
    pub changed: Vec<String>,
    /// The clients read (changed ones, unless `full`).
    pub clients: Vec<ClientRow>,
    /// Every secret version of `clients`.
    pub secrets: Vec<SecretRow>,
}

/// An OIDC client's metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    /// Client id.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// OIDC discovery URI of the provider this client belongs to.
    pub discovery_uri: String,
    /// Redirect/callback URL.
    pub callback_url: String,
    /// Scopes, as a JSON array.
    pub scopes: String,
    /// Token endpoint auth method.
    pub auth_method: String,
    /// Labels, as a JSON object.
    pub labels: String,
    /// Current secret version.
    pub secret_version: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last update time.
    pub updated_at: i64,
    /// Key set signing its client-credentials tokens.
    pub token_keyset: Option<String>,
    /// Lifetime of its tokens, seconds.
    pub token_ttl: i64,
    /// `aud` of its tokens; empty for none.
    pub audience: String,
    /// Scopes it may request, as a JSON array.
    pub allowed_scopes: String,
    /// `sub` and `preferred_username` of its tokens; empty: the client id.
    pub token_subject: String,
    /// `email` of its tokens; empty for none.
    pub token_email: String,
}

/// An API token as stored: its name, role and scope, never the token itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// The token's name (`bootstrap` for the first admin token).
    #[sqlx(rename = "id")]
    pub name: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Its role.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Key set patterns, as a JSON array.
    pub keysets: String,
    /// Client patterns, as a JSON array.
    pub clients: String,
    /// What it is for.
    pub description: String,
    /// Creation time.
    pub created_at: i64,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// One version of a client secret, sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct SecretRow {
    /// Owning client.
    pub client_id: String,
    /// Version, from 1.
    pub version: i64,
    /// Secret sealed for row `client_secrets/<client_id>/<version>`.
    pub secret: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
    /// Creation time.
    pub created_at: i64,
    /// End of the grace period once superseded; `None` while current.
    pub valid_until: Option<i64>,
}

impl Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("client_id", &self.client_id)
            .field("version", &self.version)
            .field("master_key_id", &self.master_key_id)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// What a scan of the audit chain visits: its bounds, then every kept event
/// from the first, in id order, all from one consistent snapshot.
#[derive(Debug)]
pub enum AuditScan {
    /// Where the chain starts and ends.
    Bounds(ChainBounds),
    /// The next stored event.
    Event(AuditRecord),
}

/// An `audit_events` row.
#[derive(sqlx::FromRow)]
struct AuditColumns {
    id: i64,
    at: i64,
    principal: String,
    action: String,
    target: String,
    outcome: String,
    peer: String,
    request_id: String,
    hash: Vec<u8>,
}

impl From<AuditColumns> for AuditRecord {
    fn from(c: AuditColumns) -> Self {
        Self {
            id: c.id,
            event: AuditEvent {
                at: c.at,
                principal: c.principal,
                action: Action::parse(&c.action),
                target: c.target,
                outcome: Outcome::parse(&c.outcome),
                peer: c.peer,
                request_id: c.request_id,
            },
            hash: c.hash,
        }
    }
}

/// The `audit_chain` row.
#[derive(sqlx::FromRow)]
struct ChainColumns {
    head_id: i64,
    head_hash: Vec<u8>,
    first_id: i64,
    first_prev: Vec<u8>,
}

impl From<ChainColumns> for ChainBounds {
    fn from(c: ChainColumns) -> Self {
        Self {
            first_id: c.first_id,
            first_prev: c.first_prev,
            head_id: c.head_id,
            head_hash: c.head_hash,
        }
    }
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

/// keyward's persistence. One implementation per database backend.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
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
    /// Stores the first admin token's hash unless an admin token exists; returns
    /// whether it wrote (exactly one of several racing processes does).
    async fn insert_first_admin_token(&self, hash: &[u8], now: i64) -> Result<bool>;
    /// Hashes of every admin token.
    async fn admin_token_hashes(&self) -> Result<Vec<Vec<u8>>>;
    /// Stores a new API token; `AlreadyExists` if its name is taken.
    async fn insert_token(&self, token: &TokenRow) -> Result<()>;
    /// Every API token, revoked and expired ones too, by name.
    async fn list_tokens(&self) -> Result<Vec<TokenRow>>;
    /// Revokes a token at `now`; false if there is none by that name (or it
    /// was revoked already).
    async fn revoke_token(&self, name: &str, now: i64) -> Result<bool>;
    /// The counter bumped by every token change.
    async fn tokens_generation(&self) -> Result<i64>;
    /// Every change counter, in one query: what replicas poll.
    async fn generations(&self) -> Result<Generations>;

    /// Creates a key set with its first keys, in one transaction: `keys` gets
    /// the new key set's id (their ciphertext is bound to it) and returns the
    /// keys to insert. `AlreadyExists` on a taken name.
    async fn insert_keyset(
        &self,
        set: &NewKeySet,
        keys: &(dyn Fn(i64) -> Vec<NewKey> + Sync),
    ) -> Result<KeySetRow>;
    /// A live key set by name.
    async fn get_keyset(&self, name: &str) -> Result<Option<KeySetRow>>;
    /// Up to `limit` live key sets whose names sort after `after`, by name.
    async fn list_keysets(&self, after: &str, limit: i64) -> Result<Vec<KeySetRow>>;
    /// What the JWKS and the rotation sweep read, as of one consistent
    /// snapshot: with `since`, only the key sets changed after that
    /// generation; without, every live key set.
    async fn published_since(&self, since: Option<i64>) -> Result<PublishedDelta>;
    /// The published keys of the live key sets named `first..=last`.
    async fn published_keys_between(&self, first: &str, last: &str) -> Result<Vec<KeyRow>>;
    /// Deletes a key set: its keys become expired and lose their private
    /// material; their kids stay taken. Returns whether it existed.
    async fn delete_keyset(&self, name: &str, now: i64) -> Result<bool>;
    /// A key set's keys, oldest first.
    async fn list_keys(&self, keyset_id: i64) -> Result<Vec<KeyRow>>;
    /// The sealed private half of a key (pending or active keys have one).
    async fn sealed_key(&self, kid: &str) -> Result<Option<SealedKey>>;
    /// A key by kid, whatever its key set's state.
    async fn find_key(&self, kid: &str) -> Result<Option<KeyRow>>;
    /// Applies `change` in one transaction conditional on the key set still
    /// being at `version` (and every updated key still in its `from` state).
    /// Returns `false`, changing nothing, when another writer got there first.
    async fn apply_keyset_change(
        &self,
        keyset_id: i64,
        version: i64,
        change: &KeySetChange,
    ) -> Result<bool>;

    /// Creates a client with its first secret. `AlreadyExists` on a taken id.
    async fn insert_client(&self, client: &ClientRow, secret: &SecretRow) -> Result<()>;
    /// Updates a client's metadata (not its secret version). Returns whether it existed.
    async fn update_client(&self, client: &ClientRow) -> Result<bool>;
    /// A client by id.
    async fn get_client(&self, id: &str) -> Result<Option<ClientRow>>;
    /// Up to `limit` clients whose ids sort after `after`, by id.
    async fn list_clients(&self, after: &str, limit: i64) -> Result<Vec<ClientRow>>;
    /// Deletes a client and all its secrets. Returns whether it existed.
    async fn delete_client(&self, id: &str) -> Result<bool>;
    /// A client's secret versions, newest first.
    async fn client_secrets(&self, id: &str) -> Result<Vec<SecretRow>>;
    /// What the client view reads, as of one consistent snapshot: with
    /// `since`, only the clients changed after that clients generation;
    /// without, every client.
    async fn clients_since(&self, since: Option<i64>) -> Result<ClientDelta>;
    /// Adds `new` as the current secret, in one transaction conditional on the
    /// current version being `new.version - 1`: every older version stays valid
    /// until `previous_valid_until` at the latest (never longer than it already
    /// was), versions whose grace has ended by `new.created_at` are deleted.
    /// Returns `false`, changing nothing, when another rotation won.
    async fn add_client_secret(&self, new: &SecretRow, previous_valid_until: i64) -> Result<bool>;
    /// Deletes secret version `version` of client `id` unless it is the
    /// current one. Returns whether a row was deleted.
    async fn delete_superseded_secret(&self, id: &str, version: i64) -> Result<bool>;
    /// The clients whose client-credentials tokens key set `keyset` signs, by id.
    async fn clients_of_keyset(&self, keyset: &str) -> Result<Vec<ClientRow>>;

    /// Appends `events` to the audit chain in one transaction, holding the
    /// chain's row lock so concurrent writers (other replicas too) append one
    /// after another; each event's hash is `link(previous hash, id, event)`.
    /// Returns the id of the last one.
    async fn append_audit(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64>;
    /// Audit events matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// Visits the chain's bounds and then its kept events in id order, from
    /// one snapshot, until `visit` returns false.
    async fn scan_audit(&self, visit: &mut (dyn FnMut(AuditScan) -> bool + Send)) -> Result<()>;
    /// Deletes the oldest events, up to the newest one before `before` (Unix
    /// seconds), and moves the chain's start past them. Returns the ids
    /// deleted, if any.
    async fn prune_audit(&self, before: i64) -> Result<Option<(i64, i64)>>;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(policy: &Policy) -> Policy {
        Policy::try_from(&PolicyColumns::from(policy)).expect("decodes")
    }

    #[test]
    fn policies_round_trip_through_their_columns() {
        let every = Policy {
            cadence: Cadence::Every(7 * 86_400),
            prepublish: 3600,
            retain: 2 * 86_400,
            max_token_ttl: 900,
        };
        assert_eq!(round_trip(&every), every);
        let cron = Policy {
            cadence: Cadence::Cron(Schedule::parse("0 3 * * 1").expect("cron")),
            ..Policy::default()
        };
        let columns = PolicyColumns::from(&cron);
        assert_eq!(
            (columns.rotate_every, columns.schedule.as_deref()),
            (None, Some("0 3 * * 1"))
        );
        assert_eq!(round_trip(&cron), cron);
    }

    #[test]
    fn a_policy_without_a_cadence_reads_as_the_default_period() {
        let columns = PolicyColumns {
            rotate_every: None,
            schedule: None,
            prepublish: 60,
            retain: 60,
            max_token_ttl: 60,
        };
        let policy = Policy::try_from(&columns).expect("decodes");
        assert_eq!(
            policy.cadence,
            Cadence::Every(rotation::DEFAULT_ROTATE_EVERY)
        );
    }

    #[test]
    fn a_corrupt_stored_schedule_is_an_internal_error_not_a_panic() {
        let columns = PolicyColumns {
            rotate_every: None,
            schedule: Some("not cron".into()),
            prepublish: 60,
            retain: 60,
            max_token_ttl: 60,
        };
        let err = Policy::try_from(&columns).expect_err("refused");
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
    }
}
