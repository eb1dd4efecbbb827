//! The SQL behind [`Store`], for SQLite and PostgreSQL.
//!
//! Both backends run the same statements (`$1` placeholders work on both), so
//! the trait is implemented once, by a macro instantiated per backend. What
//! differs lives in the per-backend blocks: connection setup, migrations, how a
//! write transaction starts, and how to ask whether a table exists.

use std::{
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tracing::instrument;

use super::{
    AuditColumns, AuditScan, ChainColumns, ClientDelta, ClientRow, Generations, KeyRow,
    KeySetChange, KeySetColumns, KeySetRow, NewKey, NewKeySet, PolicyColumns, PublishedDelta,
    Resealed, SealedAt, SealedCount, SealedKey, SealedTable, SealedValue, SecretRow, StartupLock,
    Store, TokenRow, unique_as_exists,
};
use crate::{
    Error, Result,
    domain::{
        audit::{AuditEvent, AuditFilter, AuditRecord, Linker},
        model::KeyState,
    },
    files,
};

/// Key set rows decoded into domain types.
fn decode_keysets(rows: Vec<KeySetColumns>) -> Result<Vec<KeySetRow>> {
    rows.into_iter().map(KeySetRow::try_from).collect()
}

const KEY_COLUMNS: &str = "k.kid, k.keyset_id, s.name AS keyset, k.algorithm, k.state, \
     k.public_jwk, k.created_at, k.activated_at, k.retired_at, k.expires_at, k.revoked_at \
     FROM keys k JOIN keysets s ON s.id = k.keyset_id";

/// The advisory lock id start-up holds on PostgreSQL ("keyward" in ASCII).
const STARTUP_LOCK_ID: i64 = 0x006b_6579_7761_7264;

const KEYSET_COLUMNS: &str = "id, name, algorithm, rsa_bits, created_at, rotate_every, schedule, \
     prepublish, retain, max_token_ttl, next_rotation_at, version";

/// The audit chain's one row (a macro, so PostgreSQL's locking form can
/// extend it at compile time).
macro_rules! read_audit_chain {
    () => {
        "SELECT head_id, head_hash, first_id, first_prev FROM audit_chain WHERE id = 1"
    };
}
const READ_AUDIT_CHAIN: &str = read_audit_chain!();

/// The SQLite backend: one file, WAL journal, write transactions that take the
/// write lock up front so concurrent writers queue instead of failing.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file; `None` in memory.
    file: Option<std::path::PathBuf>,
    audit_head: KnownHead,
}

/// The database file `options` name; `None` in memory.
fn file_of(options: &SqliteConnectOptions) -> Option<std::path::PathBuf> {
    Some(options.get_filename().to_path_buf())
        .filter(|f| !f.as_os_str().is_empty() && f.as_os_str() != ":memory:")
}

impl SqliteStore {
    /// The database file a `sqlite:` URL names (`None` in memory), as
    /// [`Self::connect`] reads the URL.
    pub fn file_of_url(url: &str) -> Result<Option<std::path::PathBuf>> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", e.to_string()))?;
        Ok(file_of(&options))
    }

    /// Opens (creating if missing) the database a `sqlite:` URL names. The
    /// database file is created 0600 (SQLite gives its `-wal` and `-shm` files
    /// the same mode) and an existing one readable by others is tightened.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // SQLite's default, said outright: every commit syncs the WAL, so
            // a durable audit event is on disk before its call answers.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Deleted content (destroyed keys' ciphertext) is overwritten with
            // zeros instead of lingering in free pages.
            .pragma("secure_delete", "on");
        let file = file_of(&options);
        if let Some(file) = &file {
            files::touch_private(file)?;
            for companion in ["", "-wal", "-shm"] {
                let path = beside(file, companion);
                if files::tighten_file(&path)? {
                    tracing::warn!(file = %path.display(), "the database file was readable by others; made it 0600");
                }
            }
        }
        // Opening a new database switches it to WAL, which fails at once
        // (busy) while another process does the same: one opens at a time.
        let opening = match &file {
            Some(db) => Some(lock_beside(db).await?),
            None => None,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // An in-process connection has no peer that could have dropped
            // it: a ping before each use would only add a round trip to the
            // connection's thread.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::FailedPrecondition(format!("cannot open the SQLite database: {e}"))
            });
        if let Some(lock) = opening {
            lock.release().await;
        }
        Ok(Self {
            pool: pool?,
            file,
            audit_head: KnownHead::default(),
        })
    }

    async fn acquire_startup_lock(&self) -> Result<StartupLock> {
        match &self.file {
            Some(db) => lock_beside(db).await,
            None => Ok(StartupLock::nothing()),
        }
    }

    /// After key material was destroyed: copy the WAL into the database and
    /// truncate it, so no old page holding the ciphertext stays in the WAL.
    async fn purge_destroyed_now(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        // In WAL mode a read transaction sees one snapshot from its first read.
        Ok(self.pool.begin().await?)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        // IMMEDIATE takes the write lock now: a deferred transaction that later
        // upgrades can fail with SQLITE_BUSY regardless of busy_timeout.
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("migrations/sqlite")
    }

    async fn run_migrations(&self) -> Result<()> {
        Self::migrator()
            .run(&self.pool)
            .await
            .map_err(Error::internal)
    }

    /// `VACUUM INTO` `path` (a new or empty file): a consistent copy of the
    /// database as of one moment, taken while others read and write. The copy
    /// is then checked: it opens, passes `integrity_check` and holds the canary.
    async fn backup_now(&self, path: &std::path::Path) -> Result<()> {
        let target = path
            .to_str()
            .ok_or_else(|| Error::invalid("out", "the backup path must be valid UTF-8"))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::FailedPrecondition(format!("cannot sync {target}: {e}")))?;
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let mut copy = sqlx::ConnectOptions::connect(&options).await?;
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut copy)
            .await?;
        let canaries: i64 =
            sqlx::query_scalar("SELECT count(*) FROM keyward_meta WHERE name = 'canary'")
                .fetch_one(&mut copy)
                .await?;
        sqlx::Connection::close(copy).await?;
        if integrity != "ok" || canaries != 1 {
            return Err(Error::internal(format!(
                "the backup {target} failed its check: integrity {integrity:?}, {canaries} canary rows"
            )));
        }
        Ok(())
    }

    const TABLE_EXISTS: &'static str =
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1";

    const NOW: &'static str = "SELECT CAST(strftime('%s', 'now') AS INTEGER)";

    /// The write transaction already holds the database's write lock.
    const LOCK_AUDIT_CHAIN: &'static str = READ_AUDIT_CHAIN;

    /// `column` is one of the values `subquery` returns.
    fn one_of(column: &str, subquery: &str) -> String {
        format!("{column} IN ({subquery})")
    }

    /// Appends `events` to the chain; inserting an event moves the chain's
    /// head to it (a trigger). Every statement is a round trip to the
    /// connection's thread and back to the async workers, which costs more
    /// than the statement's own work under load, so a lone writer makes one:
    /// an INSERT, its own transaction, of the events on the condition that
    /// the head is still where this process left it. When that head is not
    /// known or another process has appended since, nothing was inserted,
    /// and the append runs in a transaction that reads the head under the
    /// database's write lock.
    async fn append_audit_events(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64> {
        if let Some(after) = self.audit_head.take()
            && !events.is_empty()
            && events.len() <= AUDIT_ROWS_PER_INSERT
        {
            let (rows, head) = chain_rows(events, link, after.clone());
            let sql = format!(
                "{} WHERE EXISTS (SELECT 1 FROM audit_chain \
                 WHERE id = 1 AND head_id = ? AND head_hash = ?)",
                insert_audit_rows(rows.len())
            );
            let done = bind_audit_rows(sqlx::query(sqlx::AssertSqlSafe(sql)), &rows)
                .bind(after.0)
                .bind(after.1.as_slice())
                .execute(&self.pool)
                .await?;
            if done.rows_affected() == rows.len() as u64 {
                return Ok(self.audit_head.keep(head));
            }
        }
        let mut tx = self.begin_write().await?;
        let chain: ChainColumns = sqlx::query_as(Self::LOCK_AUDIT_CHAIN)
            .fetch_one(&mut *tx)
            .await?;
        let (rows, head) = chain_rows(events, link, (chain.head_id, chain.head_hash));
        for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
            bind_audit_rows(
                sqlx::query(sqlx::AssertSqlSafe(insert_audit_rows(chunk.len()))),
                chunk,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(self.audit_head.keep(head))
    }
}

/// `INSERT INTO audit_events … SELECT * FROM (VALUES …)` of `rows` rows of
/// positional parameters.
fn insert_audit_rows(rows: usize) -> String {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) SELECT * FROM (VALUES {})",
        vec![ROW; rows].join(", ")
    )
}

/// Binds `rows` in [`AUDIT_COLUMNS`] order.
fn bind_audit_rows<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    rows: &'q [AuditRow<'q>],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    for r in rows {
        let e = r.event;
        query = query
            .bind(r.id)
            .bind(e.at)
            .bind(e.principal.as_str())
            .bind(e.action.as_str())
            .bind(e.target.as_str())
            .bind(e.outcome.as_str())
            .bind(e.peer.as_str())
            .bind(e.request_id.as_str())
            .bind(r.hash.as_slice());
    }
    query
}

/// `<db><suffix>`: the files SQLite and keyward keep beside a database.
fn beside(db: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// An exclusive lock on `<db>-setup.lock`, waiting for another process that
/// holds it.
async fn lock_beside(db: &std::path::Path) -> Result<StartupLock> {
    let path = beside(db, "-setup.lock");
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        Error::FailedPrecondition(format!("cannot {what} {}: {e}", path.display()))
    };
    let file = files::open_private_file(&path)?;
    match file.try_lock() {
        Ok(()) => return Ok(StartupLock::file(file)),
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!("another keyward process is setting this database up; waiting for it");
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cannot("lock", &e)),
    }
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(Error::internal)?
        .map(StartupLock::file)
        .map_err(|e| cannot("lock", &e))
}

/// The PostgreSQL backend, for several keyward replicas on one database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    audit_head: KnownHead,
}

impl PgStore {
    /// Connects to the database a `postgres:` URL names.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid("database_url", e.to_string()))?;
        // One direct attempt first: the pool retries until its timeout and then
        // reports only "timed out", hiding the actual cause (refused, auth, …).
        sqlx::Connection::close(
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .map_err(|e| {
                    Error::FailedPrecondition(format!("cannot connect to PostgreSQL: {e}"))
                })?,
        )
        .await?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| Error::FailedPrecondition(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Self {
            pool,
            options,
            audit_head: KnownHead::default(),
        })
    }

    /// A session advisory lock on a connection of its own, so it outlives
    /// nothing but that session.
    async fn acquire_startup_lock(&self) -> Result<StartupLock> {
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(STARTUP_LOCK_ID)
            .execute(&mut conn)
            .await?;
        Ok(StartupLock::postgres(conn))
    }

    /// PostgreSQL keeps old row versions until VACUUM; nothing to do per write.
    async fn purge_destroyed_now(&self) -> Result<()> {
        Ok(())
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        // READ COMMITTED is enough: every contended write is a conditional UPDATE
        // whose row lock serialises the racers, and losers see zero rows.
        Ok(self.pool.begin().await?)
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("migrations/postgres")
    }

    async fn run_migrations(&self) -> Result<()> {
        Self::migrator()
            .run(&self.pool)
            .await
            .map_err(Error::internal)
    }

    /// PostgreSQL's own tool takes consistent backups: `pg_dump`.
    #[allow(clippy::unused_async)]
    async fn backup_now(&self, _path: &std::path::Path) -> Result<()> {
        Err(Error::FailedPrecondition(
            "keyward backup copies SQLite databases; back PostgreSQL up with pg_dump".into(),
        ))
    }

    const NOW: &'static str = "SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)";

    const TABLE_EXISTS: &'static str = "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1";

    /// The row lock queues other appenders (other replicas too) until commit.
    const LOCK_AUDIT_CHAIN: &'static str = concat!(read_audit_chain!(), " FOR UPDATE");

    /// `column` is one of the values `subquery` returns. As an array, the
    /// subquery runs first and the rows are fetched by their index whatever
    /// the planner's statistics say; as `IN (subquery)`, a planner with stale
    /// statistics (autovacuum off, right after a bulk load) hash-joins and
    /// reads the whole table on every refresh.
    fn one_of(column: &str, subquery: &str) -> String {
        format!("{column} = ANY (ARRAY({subquery}))")
    }

    /// Appends `events` to the chain. A lone writer makes one round trip per
    /// batch: one statement, with no explicit transaction, moves the chain's
    /// head on the condition that it is still the head this process last
    /// wrote, and inserts the events only if it moved. When that head is not
    /// known (first append, an error) or another replica has moved it since,
    /// the append runs in a transaction that locks the head first, which
    /// queues replicas fairly.
    async fn append_audit_events(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64> {
        let known = self.audit_head.take();
        if let Some(after) = known {
            let (rows, head) = chain_rows(events, link, after.clone());
            if Self::append_after(&rows, &head, &after)
                .fetch_optional(&self.pool)
                .await?
                .is_some()
            {
                return Ok(self.audit_head.keep(head));
            }
        }
        let mut tx = self.begin_write().await?;
        let chain: ChainColumns = sqlx::query_as(Self::LOCK_AUDIT_CHAIN)
            .fetch_one(&mut *tx)
            .await?;
        let after = (chain.head_id, chain.head_hash);
        let (rows, head) = chain_rows(events, link, after.clone());
        Self::append_after(&rows, &head, &after)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::internal("the locked audit chain head moved"))?;
        tx.commit().await?;
        Ok(self.audit_head.keep(head))
    }

    /// Inserts `rows` and moves the head from `after` to `head`, if the head
    /// is still `after`; returns the new head id, or no row.
    fn append_after<'q>(
        rows: &'q [AuditRow<'q>],
        head: &'q ChainHead,
        after: &'q ChainHead,
    ) -> sqlx::query::QueryScalar<'q, Postgres, i64, sqlx::postgres::PgArguments> {
        const APPEND: &str = "WITH moved AS (\
             UPDATE audit_chain SET head_id = $10, head_hash = $11 \
             WHERE id = 1 AND head_id = $12 AND head_hash = $13 RETURNING head_id), \
             added AS (INSERT INTO audit_events \
             (id, at, principal, action, target, outcome, peer, request_id, hash) \
             SELECT e.* FROM moved, UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[]) AS e) \
             SELECT head_id FROM moved";
        let column =
            |f: fn(&AuditEvent) -> &str| -> Vec<&str> { rows.iter().map(|r| f(r.event)).collect() };
        sqlx::query_scalar(APPEND)
            .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.at).collect::<Vec<_>>())
            .bind(column(|e| &e.principal))
            .bind(column(|e| e.action.as_str()))
            .bind(column(|e| &e.target))
            .bind(column(|e| e.outcome.as_str()))
            .bind(column(|e| &e.peer))
            .bind(column(|e| &e.request_id))
            .bind(rows.iter().map(|r| r.hash.as_slice()).collect::<Vec<_>>())
            .bind(head.0)
            .bind(head.1.as_slice())
            .bind(after.0)
            .bind(after.1.as_slice())
    }
}

macro_rules! impl_store {
    ($store:ty, $backend:literal, $tx:ident) => {
        impl $store {
            /// Best effort after a committed write that destroyed sealed
            /// material: the write stands even if the purge fails.
            async fn purge_destroyed(&self) {
                if let Err(err) = self.purge_destroyed_now().await {
                    tracing::warn!(error = %err, "could not purge destroyed key material from the WAL");
                }
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            #[instrument(skip_all)]
            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(|_| Error::Unavailable)?;
                Ok(())
            }

            #[instrument(skip_all)]
            async fn migrate(&self) -> Result<()> {
                self.run_migrations().await
            }

            #[instrument(skip_all)]
            async fn migration_state(&self) -> Result<super::MigrationState> {
                let exists: i64 = sqlx::query_scalar(Self::TABLE_EXISTS)
                    .bind("_sqlx_migrations")
                    .fetch_one(&self.pool)
                    .await?;
                let applied: Vec<i64> = if exists > 0 {
                    sqlx::query_scalar(
                        "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
                    )
                    .fetch_all(&self.pool)
                    .await?
                } else {
                    Vec::new()
                };
                let migrator = Self::migrator();
                let known: Vec<i64> = migrator
                    .iter()
                    .filter(|m| !m.migration_type.is_down_migration())
                    .map(|m| m.version)
                    .collect();
                Ok(super::MigrationState {
                    pending: known
                        .iter()
                        .filter(|v| !applied.contains(v))
                        .copied()
                        .collect(),
                    unknown: applied
                        .iter()
                        .filter(|v| !known.contains(v))
                        .copied()
                        .collect(),
                    applied: applied.len(),
                })
            }

            #[instrument(skip_all)]
            async fn database_time(&self) -> Result<i64> {
                Ok(sqlx::query_scalar(Self::NOW).fetch_one(&self.pool).await?)
            }

            #[instrument(skip_all)]
            async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
                self.backup_now(path).await
            }

            #[instrument(skip_all)]
            async fn lock_startup(&self) -> Result<StartupLock> {
                self.acquire_startup_lock().await
            }

            #[instrument(skip_all)]
            async fn read_canary(&self) -> Result<Option<(String, Vec<u8>)>> {
                let tables: i64 = sqlx::query_scalar(Self::TABLE_EXISTS)
                    .bind("keyward_meta")
                    .fetch_one(&self.pool)
                    .await?;
                if tables == 0 {
                    return Ok(None);
                }
                Ok(
                    sqlx::query_as("SELECT key_id, value FROM keyward_meta WHERE name = 'canary'")
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            #[instrument(skip_all, fields(name))]
            async fn meta(&self, name: &str) -> Result<Option<(String, Vec<u8>)>> {
                Ok(sqlx::query_as("SELECT key_id, value FROM keyward_meta WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            #[instrument(skip_all, fields(name))]
            async fn insert_meta(&self, name: &str, key_id: &str, sealed: &[u8]) -> Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO keyward_meta (name, key_id, value) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(name)
                .bind(key_id)
                .bind(sealed)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[instrument(skip_all)]
            async fn sealed_counts(&self) -> Result<Vec<SealedCount>> {
                let tables: i64 = sqlx::query_scalar(Self::TABLE_EXISTS)
                    .bind("keyward_meta")
                    .fetch_one(&self.pool)
                    .await?;
                if tables == 0 {
                    return Ok(Vec::new());
                }
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT 'keys', master_key_id, count(*) FROM keys \
                     WHERE private_key IS NOT NULL AND master_key_id IS NOT NULL \
                     GROUP BY master_key_id \
                     UNION ALL SELECT 'client_secrets', master_key_id, count(*) \
                     FROM client_secrets GROUP BY master_key_id \
                     UNION ALL SELECT 'keyward_meta', key_id, count(*) \
                     FROM keyward_meta GROUP BY key_id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(table, master_key_id, rows)| {
                        let table = SealedTable::ALL
                            .into_iter()
                            .find(|t| t.as_str() == table)
                            .ok_or_else(|| Error::internal(format!("unknown sealed table {table}")))?;
                        Ok(SealedCount {
                            table,
                            master_key_id,
                            rows,
                        })
                    })
                    .collect()
            }

            #[instrument(skip_all, fields(table = table.as_str()))]
            async fn sealed_after(
                &self,
                table: SealedTable,
                after: Option<&SealedAt>,
                except_key_id: &str,
                limit: i64,
            ) -> Result<Vec<SealedValue>> {
                let values = match (table, after) {
                    (SealedTable::Keys, None | Some(SealedAt::Key { .. })) => {
                        let after = match after {
                            Some(SealedAt::Key { kid, .. }) => kid.as_str(),
                            _ => "",
                        };
                        let rows: Vec<(String, i64, String, String, Vec<u8>)> = sqlx::query_as(
                            "SELECT kid, keyset_id, algorithm, master_key_id, private_key \
                             FROM keys WHERE kid > $1 AND private_key IS NOT NULL \
                             AND master_key_id <> $2 ORDER BY kid LIMIT $3",
                        )
                        .bind(after)
                        .bind(except_key_id)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.into_iter()
                            .map(|(kid, keyset_id, algorithm, master_key_id, sealed)| SealedValue {
                                at: SealedAt::Key {
                                    kid,
                                    keyset_id,
                                    algorithm,
                                },
                                master_key_id,
                                sealed,
                            })
                            .collect()
                    }
                    (SealedTable::ClientSecrets, None | Some(SealedAt::ClientSecret { .. })) => {
                        let (after_id, after_version) = match after {
                            Some(SealedAt::ClientSecret { client_id, version }) => {
                                (client_id.as_str(), *version)
                            }
                            _ => ("", i64::MIN),
                        };
                        let rows: Vec<(String, i64, String, Vec<u8>)> = sqlx::query_as(
                            "SELECT client_id, version, master_key_id, secret FROM client_secrets \
                             WHERE (client_id, version) > ($1, $2) AND master_key_id <> $3 \
                             ORDER BY client_id, version LIMIT $4",
                        )
                        .bind(after_id)
                        .bind(after_version)
                        .bind(except_key_id)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.into_iter()
                            .map(|(client_id, version, master_key_id, sealed)| SealedValue {
                                at: SealedAt::ClientSecret { client_id, version },
                                master_key_id,
                                sealed,
                            })
                            .collect()
                    }
                    (SealedTable::Meta, None | Some(SealedAt::Meta { .. })) => {
                        let after = match after {
                            Some(SealedAt::Meta { name }) => name.as_str(),
                            _ => "",
                        };
                        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
                            "SELECT name, key_id, value FROM keyward_meta \
                             WHERE name > $1 AND key_id <> $2 ORDER BY name LIMIT $3",
                        )
                        .bind(after)
                        .bind(except_key_id)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                        rows.into_iter()
                            .map(|(name, master_key_id, sealed)| SealedValue {
                                at: SealedAt::Meta { name },
                                master_key_id,
                                sealed,
                            })
                            .collect()
                    }
                    (table, Some(at)) => {
                        return Err(Error::internal(format!(
                            "a {} cursor cannot page {}",
                            match at {
                                SealedAt::Key { .. } => "keys",
                                SealedAt::ClientSecret { .. } => "client_secrets",
                                SealedAt::Meta { .. } => "keyward_meta",
                            },
                            table.as_str()
                        )));
                    }
                };
                Ok(values)
            }

            #[instrument(skip_all, fields(values = values.len()))]
            async fn reseal(&self, values: &[Resealed]) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let mut stored = 0;
                for value in values {
                    let old = &value.old;
                    // Each UPDATE replaces the value only where the row still
                    // holds it as read: a racing write or erasure wins.
                    let query = match &old.at {
                        SealedAt::Key { .. } => sqlx::query(
                            "UPDATE keys SET private_key = $1, master_key_id = $2 \
                             WHERE master_key_id = $3 AND private_key = $4 AND kid = $5",
                        ),
                        SealedAt::ClientSecret { .. } => sqlx::query(
                            "UPDATE client_secrets SET secret = $1, master_key_id = $2 \
                             WHERE master_key_id = $3 AND secret = $4 \
                             AND client_id = $5 AND version = $6",
                        ),
                        SealedAt::Meta { .. } => sqlx::query(
                            "UPDATE keyward_meta SET value = $1, key_id = $2 \
                             WHERE key_id = $3 AND value = $4 AND name = $5",
                        ),
                    }
                    .bind(&value.sealed)
                    .bind(&value.master_key_id)
                    .bind(&old.master_key_id)
                    .bind(&old.sealed);
                    let query = match &old.at {
                        SealedAt::Key { kid, .. } => query.bind(kid),
                        SealedAt::ClientSecret { client_id, version } => {
                            query.bind(client_id).bind(*version)
                        }
                        SealedAt::Meta { name } => query.bind(name),
                    };
                    stored += query.execute(&mut *tx).await?.rows_affected();
                }
                tx.commit().await?;
                Ok(stored)
            }

            #[instrument(skip_all)]
            async fn purge_overwritten(&self) -> Result<()> {
                self.purge_destroyed_now().await
            }

            #[instrument(skip_all)]
            async fn insert_first_admin_token(&self, hash: &[u8], now: i64) -> Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO admin_tokens (id, token_hash, role, created_at) \
                     SELECT 'bootstrap', $1, 'admin', $2 \
                     WHERE NOT EXISTS (SELECT 1 FROM admin_tokens) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[instrument(skip_all, fields(token = token.name))]
            async fn insert_token(&self, token: &TokenRow) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO admin_tokens (id, token_hash, role, keysets, clients, \
                     description, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&token.name)
                .bind(&token.token_hash)
                .bind(token.role.as_str())
                .bind(&token.keysets)
                .bind(&token.clients)
                .bind(&token.description)
                .bind(token.created_at)
                .bind(token.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_as_exists(e, || format!("a token named {:?} exists", token.name))
                })?;
                $tx::bump_tokens_generation(&mut tx).await?;
                tx.commit().await?;
                Ok(())
            }

            #[instrument(skip_all)]
            async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
                Ok(sqlx::query_as(
                    "SELECT id, token_hash, role, keysets, clients, description, created_at, \
                     expires_at, revoked_at FROM admin_tokens ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(token = name))]
            async fn revoke_token(&self, name: &str, now: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                $tx::bump_tokens_generation(&mut tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            #[instrument(skip_all)]
            async fn tokens_generation(&self) -> Result<i64> {
                Ok(sqlx::query_scalar("SELECT tokens_generation FROM keyward_state WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?)
            }

            #[instrument(skip_all)]
            async fn admin_token_hashes(&self) -> Result<Vec<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT token_hash FROM admin_tokens")
                    .fetch_all(&self.pool)
                    .await?)
            }

            #[instrument(skip_all)]
            async fn generations(&self) -> Result<Generations> {
                let (keysets, tokens, clients) = sqlx::query_as(
                    "SELECT generation, tokens_generation, clients_generation \
                     FROM keyward_state WHERE id = 1",
                )
                .fetch_one(&self.pool)
                .await?;
                Ok(Generations {
                    keysets,
                    tokens,
                    clients,
                })
            }

            #[instrument(skip_all, fields(keyset = set.name))]
            async fn insert_keyset(
                &self,
                set: &NewKeySet,
                keys: &(dyn Fn(i64) -> Vec<NewKey> + Sync),
            ) -> Result<KeySetRow> {
                let (name, now) = (&set.name, set.created_at);
                let policy = PolicyColumns::from(&set.policy);
                let mut tx = self.begin_write().await?;
                let row: KeySetColumns = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO keysets (name, algorithm, rsa_bits, created_at, rotate_every, \
                     schedule, prepublish, retain, max_token_ttl, next_rotation_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {KEYSET_COLUMNS}"
                )))
                .bind(name)
                .bind(set.algorithm.as_str())
                .bind(set.rsa_bits)
                .bind(now)
                .bind(policy.rotate_every)
                .bind(&policy.schedule)
                .bind(policy.prepublish)
                .bind(policy.retain)
                .bind(policy.max_token_ttl)
                .bind(set.next_rotation_at)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| unique_as_exists(e, || format!("key set {name:?} already exists")))?;
                let row = KeySetRow::try_from(row)?;
                for key in keys(row.id) {
                    $tx::insert_key(&mut tx, row.id, &key, now).await?;
                }
                $tx::bump_generation(&mut tx, row.id).await?;
                tx.commit().await?;
                Ok(row)
            }

            #[instrument(skip_all, fields(keyset = name))]
            async fn get_keyset(&self, name: &str) -> Result<Option<KeySetRow>> {
                sqlx::query_as::<_, KeySetColumns>(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEYSET_COLUMNS} FROM keysets WHERE name = $1 AND deleted_at IS NULL"
                )))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .map(KeySetRow::try_from)
                .transpose()
            }

            #[instrument(skip_all)]
            async fn list_keysets(&self, after: &str, limit: i64) -> Result<Vec<KeySetRow>> {
                decode_keysets(
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {KEYSET_COLUMNS} FROM keysets WHERE deleted_at IS NULL \
                         AND name > $1 ORDER BY name LIMIT $2"
                    )))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                )
            }

            #[instrument(skip_all)]
            async fn published_since(&self, since: Option<i64>) -> Result<PublishedDelta> {
                // One read transaction: the generation, the sets and their
                // keys are one snapshot, never a torn mix.
                let mut tx = self.begin_read().await?;
                let generation: i64 =
                    sqlx::query_scalar("SELECT generation FROM keyward_state WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                // -1 reads every live key set (changed_generation is >= 0),
                // in name order. A delta is read through the changed-generation
                // index alone: the range is bounded above (it is, in this
                // snapshot) and not ordered by name, which would walk every key
                // set. These reads are planned per call with their values, not
                // kept prepared: PostgreSQL keeps a prepared statement's plan
                // until an ANALYZE, so a plan made while the tables were small
                // (a scan of the whole table) would stay as they grow.
                let after = since.unwrap_or(-1);
                let (set_order, key_order) = if since.is_some() {
                    ("", "")
                } else {
                    ("ORDER BY name", "s.name,")
                };
                let keysets = decode_keysets(
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {KEYSET_COLUMNS} FROM keysets WHERE deleted_at IS NULL \
                         AND changed_generation > $1 AND changed_generation <= $2 {set_order}"
                    )))
                    .persistent(false)
                    .bind(after)
                    .bind(generation)
                    .fetch_all(&mut *tx)
                    .await?,
                )?;
                let deleted: Vec<String> = if since.is_some() {
                    sqlx::query_scalar(
                        "SELECT name FROM keysets WHERE deleted_at IS NOT NULL \
                         AND changed_generation > $1 AND changed_generation <= $2",
                    )
                    .persistent(false)
                    .bind(after)
                    .bind(generation)
                    .fetch_all(&mut *tx)
                    .await?
                } else {
                    Vec::new()
                };
                let keys: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} WHERE s.deleted_at IS NULL \
                     AND s.changed_generation > $1 AND s.changed_generation <= $2 \
                     AND k.state IN ($3, $4, $5) ORDER BY {key_order} k.created_at, k.kid"
                )))
                .persistent(false)
                .bind(after)
                .bind(generation)
                .bind(KeyState::Pending.as_str())
                .bind(KeyState::Active.as_str())
                .bind(KeyState::Retired.as_str())
                .fetch_all(&mut *tx)
                .await?;
                let active: Vec<SealedKey> = sqlx::query_as(
                    "SELECT k.kid, k.private_key, k.master_key_id \
                     FROM keys k JOIN keysets s ON s.id = k.keyset_id \
                     WHERE s.deleted_at IS NULL \
                     AND s.changed_generation > $1 AND s.changed_generation <= $2 \
                     AND k.state = $3 \
                     AND k.private_key IS NOT NULL AND k.master_key_id IS NOT NULL",
                )
                .persistent(false)
                .bind(after)
                .bind(generation)
                .bind(KeyState::Active.as_str())
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(PublishedDelta {
                    generation,
                    full: since.is_none(),
                    keysets,
                    deleted,
                    keys,
                    active,
                })
            }

            #[instrument(skip_all)]
            async fn published_keys_between(&self, first: &str, last: &str) -> Result<Vec<KeyRow>> {
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} WHERE s.deleted_at IS NULL \
                     AND s.name >= $1 AND s.name <= $2 AND k.state IN ($3, $4, $5) \
                     ORDER BY s.name, k.created_at, k.kid"
                )))
                .bind(first)
                .bind(last)
                .bind(KeyState::Pending.as_str())
                .bind(KeyState::Active.as_str())
                .bind(KeyState::Retired.as_str())
                .fetch_all(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(keyset = name))]
            async fn delete_keyset(&self, name: &str, now: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let id: Option<i64> = sqlx::query_scalar(
                    "UPDATE keysets SET deleted_at = $1 \
                     WHERE name = $2 AND deleted_at IS NULL RETURNING id",
                )
                .bind(now)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    return Ok(false);
                };
                sqlx::query(
                    "UPDATE keys SET \
                     state = CASE WHEN state = $3 THEN state ELSE $4 END, \
                     private_key = NULL, master_key_id = NULL, \
                     expires_at = COALESCE(expires_at, $1) \
                     WHERE keyset_id = $2",
                )
                .bind(now)
                .bind(id)
                .bind(KeyState::Revoked.as_str())
                .bind(KeyState::Expired.as_str())
                .execute(&mut *tx)
                .await?;
                $tx::bump_generation(&mut tx, id).await?;
                tx.commit().await?;
                self.purge_destroyed().await;
                Ok(true)
            }

            #[instrument(skip_all)]
            async fn list_keys(&self, keyset_id: i64) -> Result<Vec<KeyRow>> {
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} WHERE k.keyset_id = $1 ORDER BY k.created_at, k.kid"
                )))
                .bind(keyset_id)
                .fetch_all(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(kid))]
            async fn sealed_key(&self, kid: &str) -> Result<Option<SealedKey>> {
                Ok(sqlx::query_as(
                    "SELECT kid, private_key, master_key_id FROM keys WHERE kid = $1 \
                     AND private_key IS NOT NULL AND master_key_id IS NOT NULL",
                )
                .bind(kid)
                .fetch_optional(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(kid))]
            async fn find_key(&self, kid: &str) -> Result<Option<KeyRow>> {
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} WHERE k.kid = $1"
                )))
                .bind(kid)
                .fetch_optional(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(keyset_id, version))]
            async fn apply_keyset_change(
                &self,
                keyset_id: i64,
                version: i64,
                change: &KeySetChange,
            ) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let policy = change.policy.as_ref().map(PolicyColumns::from);
                let claimed = sqlx::query(
                    "UPDATE keysets SET version = version + 1, \
                     next_rotation_at = COALESCE($1, next_rotation_at), \
                     rotate_every = CASE WHEN $2 THEN $3 ELSE rotate_every END, \
                     schedule = CASE WHEN $2 THEN $4 ELSE schedule END, \
                     prepublish = COALESCE($5, prepublish), retain = COALESCE($6, retain), \
                     max_token_ttl = COALESCE($7, max_token_ttl) \
                     WHERE id = $8 AND version = $9 AND deleted_at IS NULL",
                )
                .bind(change.next_rotation_at)
                .bind(policy.is_some())
                .bind(policy.as_ref().and_then(|p| p.rotate_every))
                .bind(policy.as_ref().and_then(|p| p.schedule.clone()))
                .bind(policy.as_ref().map(|p| p.prepublish))
                .bind(policy.as_ref().map(|p| p.retain))
                .bind(policy.as_ref().map(|p| p.max_token_ttl))
                .bind(keyset_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                if claimed.rows_affected() != 1 {
                    return Ok(false);
                }
                for u in &change.updates {
                    let done = sqlx::query(
                        "UPDATE keys SET state = $1, \
                         activated_at = COALESCE($2, activated_at), \
                         retired_at = COALESCE($3, retired_at), \
                         expires_at = COALESCE($4, expires_at), \
                         revoked_at = COALESCE($5, revoked_at), \
                         private_key = CASE WHEN $6 THEN NULL ELSE private_key END, \
                         master_key_id = CASE WHEN $6 THEN NULL ELSE master_key_id END \
                         WHERE kid = $7 AND keyset_id = $8 AND state = $9",
                    )
                    .bind(u.to.as_str())
                    .bind(u.activated_at)
                    .bind(u.retired_at)
                    .bind(u.expires_at)
                    .bind(u.revoked_at)
                    .bind(u.destroy_private)
                    .bind(&u.kid)
                    .bind(keyset_id)
                    .bind(u.from.as_str())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Ok(false);
                    }
                }
                for key in &change.inserts {
                    $tx::insert_key(&mut tx, keyset_id, key, key.created_at).await?;
                }
                $tx::bump_generation(&mut tx, keyset_id).await?;
                tx.commit().await?;
                if change.updates.iter().any(|u| u.destroy_private) {
                    self.purge_destroyed().await;
                }
                Ok(true)
            }

            #[instrument(skip_all, fields(client = client.id))]
            async fn insert_client(&self, client: &ClientRow, secret: &SecretRow) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO clients (id, display_name, discovery_uri, callback_url, scopes, \
                     auth_method, labels, secret_version, created_at, updated_at, token_keyset, \
                     token_ttl, audience, allowed_scopes, token_subject, token_email) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(&client.id)
                .bind(&client.display_name)
                .bind(&client.discovery_uri)
                .bind(&client.callback_url)
                .bind(&client.scopes)
                .bind(&client.auth_method)
                .bind(&client.labels)
                .bind(client.secret_version)
                .bind(client.created_at)
                .bind(client.updated_at)
                .bind(&client.token_keyset)
                .bind(client.token_ttl)
                .bind(&client.audience)
                .bind(&client.allowed_scopes)
                .bind(&client.token_subject)
                .bind(&client.token_email)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_as_exists(e, || format!("client {:?} already exists", client.id))
                })?;
                $tx::insert_secret(&mut tx, secret).await?;
                $tx::bump_client(&mut tx, &client.id).await?;
                tx.commit().await?;
                Ok(())
            }

            #[instrument(skip_all, fields(client = client.id))]
            async fn update_client(&self, client: &ClientRow) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE clients SET display_name = $1, discovery_uri = $2, \
                     callback_url = $3, scopes = $4, auth_method = $5, labels = $6, \
                     updated_at = $7, token_keyset = $8, token_ttl = $9, audience = $10, \
                     allowed_scopes = $11, token_subject = $12, token_email = $13 WHERE id = $14",
                )
                .bind(&client.display_name)
                .bind(&client.discovery_uri)
                .bind(&client.callback_url)
                .bind(&client.scopes)
                .bind(&client.auth_method)
                .bind(&client.labels)
                .bind(client.updated_at)
                .bind(&client.token_keyset)
                .bind(client.token_ttl)
                .bind(&client.audience)
                .bind(&client.allowed_scopes)
                .bind(&client.token_subject)
                .bind(&client.token_email)
                .bind(&client.id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                $tx::bump_client(&mut tx, &client.id).await?;
                tx.commit().await?;
                Ok(true)
            }

            #[instrument(skip_all, fields(client = id))]
            async fn get_client(&self, id: &str) -> Result<Option<ClientRow>> {
                Ok(sqlx::query_as("SELECT * FROM clients WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            #[instrument(skip_all)]
            async fn list_clients(&self, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
                Ok(
                    sqlx::query_as("SELECT * FROM clients WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            #[instrument(skip_all, fields(client = id))]
            async fn delete_client(&self, id: &str) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM client_secrets WHERE client_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query("DELETE FROM clients WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let deleted = done.rows_affected() == 1;
                if !deleted {
                    return Ok(false);
                }
                $tx::bump_client(&mut tx, id).await?;
                tx.commit().await?;
                if deleted {
                    self.purge_destroyed().await;
                }
                Ok(deleted)
            }

            #[instrument(skip_all, fields(client = id))]
            async fn client_secrets(&self, id: &str) -> Result<Vec<SecretRow>> {
                Ok(sqlx::query_as(
                    "SELECT * FROM client_secrets WHERE client_id = $1 ORDER BY version DESC",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?)
            }

            #[instrument(skip_all, fields(client = new.client_id, version = new.version))]
            async fn add_client_secret(
                &self,
                new: &SecretRow,
                previous_valid_until: i64,
            ) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let bumped = sqlx::query(
                    "UPDATE clients SET secret_version = $1, updated_at = $2 \
                     WHERE id = $3 AND secret_version = $4",
                )
                .bind(new.version)
                .bind(new.created_at)
                .bind(&new.client_id)
                .bind(new.version - 1)
                .execute(&mut *tx)
                .await?;
                if bumped.rows_affected() != 1 {
                    return Ok(false);
                }
                // A rotation never extends an older version and caps every
                // one at the new grace: `--grace 0s` ends them all now.
                sqlx::query(
                    "UPDATE client_secrets SET valid_until = $1 \
                     WHERE client_id = $2 AND version < $3 \
                     AND (valid_until IS NULL OR valid_until > $1)",
                )
                .bind(previous_valid_until)
                .bind(&new.client_id)
                .bind(new.version)
                .execute(&mut *tx)
                .await?;
                let ended = sqlx::query(
                    "DELETE FROM client_secrets WHERE client_id = $1 \
                     AND valid_until IS NOT NULL AND valid_until <= $2",
                )
                .bind(&new.client_id)
                .bind(new.created_at)
                .execute(&mut *tx)
                .await?;
                $tx::insert_secret(&mut tx, new).await?;
                $tx::bump_client(&mut tx, &new.client_id).await?;
                tx.commit().await?;
                if ended.rows_affected() > 0 {
                    self.purge_destroyed().await;
                }
                Ok(true)
            }

            #[instrument(skip_all, fields(client = id, version))]
            async fn delete_superseded_secret(&self, id: &str, version: i64) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "DELETE FROM client_secrets WHERE client_id = $1 AND version = $2 \
                     AND version <> (SELECT secret_version FROM clients WHERE id = $1)",
                )
                .bind(id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                $tx::bump_client(&mut tx, id).await?;
                tx.commit().await?;
                self.purge_destroyed().await;
                Ok(true)
            }

            #[instrument(skip_all)]
            async fn clients_since(&self, since: Option<i64>) -> Result<ClientDelta> {
                let mut tx = self.begin_read().await?;
                let generation: i64 = sqlx::query_scalar(
                    "SELECT clients_generation FROM keyward_state WHERE id = 1",
                )
                .fetch_one(&mut *tx)
                .await?;
                let delta = match since {
                    None => ClientDelta {
                        generation,
                        full: true,
                        changed: Vec::new(),
                        clients: sqlx::query_as("SELECT * FROM clients")
                            .fetch_all(&mut *tx)
                            .await?,
                        secrets: sqlx::query_as("SELECT * FROM client_secrets")
                            .fetch_all(&mut *tx)
                            .await?,
                    },
                    Some(since) => {
                        // Bounded above, and planned per call (see
                        // published_since).
                        const CHANGED: &str = "SELECT client_id FROM client_changes \
                             WHERE generation > $1 AND generation <= $2";
                        ClientDelta {
                            generation,
                            full: false,
                            changed: sqlx::query_scalar(CHANGED)
                                .persistent(false)
                                .bind(since)
                                .bind(generation)
                                .fetch_all(&mut *tx)
                                .await?,
                            clients: sqlx::query_as(sqlx::AssertSqlSafe(format!(
                                "SELECT * FROM clients WHERE {}",
                                Self::one_of("id", CHANGED)
                            )))
                            .persistent(false)
                            .bind(since)
                            .bind(generation)
                            .fetch_all(&mut *tx)
                            .await?,
                            secrets: sqlx::query_as(sqlx::AssertSqlSafe(format!(
                                "SELECT * FROM client_secrets WHERE {}",
                                Self::one_of("client_id", CHANGED)
                            )))
                            .persistent(false)
                            .bind(since)
                            .bind(generation)
                            .fetch_all(&mut *tx)
                            .await?,
                        }
                    }
                };
                tx.commit().await?;
                Ok(delta)
            }

            #[instrument(skip_all, fields(keyset))]
            async fn clients_of_keyset(&self, keyset: &str) -> Result<Vec<ClientRow>> {
                Ok(
                    sqlx::query_as("SELECT * FROM clients WHERE token_keyset = $1 ORDER BY id")
                        .bind(keyset)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            #[instrument(skip_all, fields(events = events.len()))]
            async fn append_audit(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64> {
                self.append_audit_events(events, link).await
            }

            #[instrument(skip_all)]
            async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>> {
                let mut query = sqlx::QueryBuilder::new(format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1"
                ));
                if let Some(since) = filter.since {
                    query.push(" AND at >= ").push_bind(since);
                }
                for (column, value) in [
                    (" AND principal = ", &filter.principal),
                    (" AND action = ", &filter.action),
                    (" AND target = ", &filter.target),
                ] {
                    if let Some(value) = value {
                        query.push(column).push_bind(value.as_str());
                    }
                }
                if let Some(before) = filter.before_id {
                    query.push(" AND id < ").push_bind(before);
                }
                query.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
                let rows: Vec<AuditColumns> =
                    query.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(AuditRecord::from).collect())
            }

            #[instrument(skip_all)]
            async fn scan_audit(
                &self,
                visit: &mut (dyn FnMut(AuditScan) -> bool + Send),
            ) -> Result<()> {
                const PAGE: i64 = 1000;
                let mut tx = self.begin_read().await?;
                let chain: ChainColumns = sqlx::query_as(READ_AUDIT_CHAIN)
                    .fetch_one(&mut *tx)
                    .await?;
                let mut after = chain.first_id - 1;
                if !visit(AuditScan::Bounds(chain.into())) {
                    return Ok(());
                }
                loop {
                    let rows: Vec<AuditColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2"
                    )))
                    .bind(after)
                    .bind(PAGE)
                    .fetch_all(&mut *tx)
                    .await?;
                    let full = i64::try_from(rows.len()).unwrap_or(0) == PAGE;
                    for row in rows {
                        after = row.id;
                        if !visit(AuditScan::Event(row.into())) {
                            return Ok(());
                        }
                    }
                    if !full {
                        return Ok(());
                    }
                }
            }

            #[instrument(skip_all)]
            async fn prune_audit(&self, before: i64) -> Result<Option<(i64, i64)>> {
                let mut tx = self.begin_write().await?;
                let chain: ChainColumns = sqlx::query_as(Self::LOCK_AUDIT_CHAIN)
                    .fetch_one(&mut *tx)
                    .await?;
                let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT id, hash FROM audit_events WHERE id = \
                     (SELECT max(id) FROM audit_events WHERE at < $1 AND id <= $2)",
                )
                .bind(before)
                .bind(chain.head_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((last, hash)) = last else {
                    return Ok(None);
                };
                sqlx::query("DELETE FROM audit_events WHERE id <= $1")
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE audit_chain SET first_id = $1, first_prev = $2 WHERE id = 1")
                    .bind(last + 1)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some((chain.first_id, last)))
            }
        }
    };
}

/// Events per INSERT statement on SQLite: nine parameters each, under its
/// limit of 32,766 per statement, and as many as the audit writer's largest
/// batch, so a batch is one statement.
const AUDIT_ROWS_PER_INSERT: usize = 2000;

/// Where the audit chain ends: the last event's id and hash.
type ChainHead = (i64, Vec<u8>);

/// The audit chain head this process last wrote: where its next append
/// expects the chain to end. Only a guess (a wrong one costs the append that
/// reads the head first), so it is taken for the append and kept again only
/// once the append has committed.
#[derive(Debug, Clone, Default)]
struct KnownHead(Arc<Mutex<Option<ChainHead>>>);

impl KnownHead {
    fn take(&self) -> Option<ChainHead> {
        self.lock().take()
    }

    /// Keeps `head` for the next append; its id.
    fn keep(&self, head: ChainHead) -> i64 {
        let id = head.0;
        *self.lock() = Some(head);
        id
    }

    /// A poisoned lock is taken back as it is: the value is only a guess.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChainHead>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An audit event with its place in the chain, ready to insert.
struct AuditRow<'a> {
    id: i64,
    event: &'a AuditEvent,
    hash: Vec<u8>,
}

/// `events` linked after the head `(id, hash)`: their rows, and the new head.
fn chain_rows<'a>(
    events: &'a [AuditEvent],
    link: &dyn Linker,
    (mut id, mut prev): ChainHead,
) -> (Vec<AuditRow<'a>>, ChainHead) {
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        id += 1;
        let hash = link.link(&prev, id, event);
        prev.clone_from(&hash);
        rows.push(AuditRow { id, event, hash });
    }
    (rows, (id, prev))
}

const AUDIT_COLUMNS: &str = "id, at, principal, action, target, outcome, peer, request_id, hash";

impl_store!(SqliteStore, "sqlite", sqlite_tx);
impl_store!(PgStore, "postgres", pg_tx);

/// Statements shared by several transactions, generic over the backend through
/// a second small macro (sqlx's executor bounds are verbose to spell generically).
macro_rules! tx_helpers {
    ($db:ty, $insert_key:ident, $insert_secret:ident, $bump:ident) => {
        pub(super) async fn $insert_key(
            tx: &mut Transaction<'static, $db>,
            keyset_id: i64,
            key: &NewKey,
            now: i64,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO keys (kid, keyset_id, algorithm, state, public_jwk, private_key, \
                 master_key_id, created_at, activated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&key.kid)
            .bind(keyset_id)
            .bind(key.algorithm.as_str())
            .bind(key.state.as_str())
            .bind(&key.public_jwk)
            .bind(&key.private_key)
            .bind(&key.master_key_id)
            .bind(key.created_at)
            .bind((key.state == KeyState::Active).then_some(now))
            .execute(&mut **tx)
            .await
            .map_err(|e| unique_as_exists(e, || format!("kid {:?} is already taken", key.kid)))?;
            Ok(())
        }

        pub(super) async fn $insert_secret(
            tx: &mut Transaction<'static, $db>,
            s: &SecretRow,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO client_secrets (client_id, version, secret, master_key_id, \
                 created_at, valid_until) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&s.client_id)
            .bind(s.version)
            .bind(&s.secret)
            .bind(&s.master_key_id)
            .bind(s.created_at)
            .bind(s.valid_until)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Bumps the generation and records it as key set `keyset_id`'s
        /// latest change, so refreshes elsewhere read just that key set.
        pub(super) async fn $bump(
            tx: &mut Transaction<'static, $db>,
            keyset_id: i64,
        ) -> Result<()> {
            let generation: i64 = sqlx::query_scalar(
                "UPDATE keyward_state SET generation = generation + 1 WHERE id = 1 \
                 RETURNING generation",
            )
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query("UPDATE keysets SET changed_generation = $1 WHERE id = $2")
                .bind(generation)
                .bind(keyset_id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        /// Bumps the clients generation and records it as client `id`'s latest
        /// change, so other replicas re-read just that client.
        pub(super) async fn bump_client(
            tx: &mut Transaction<'static, $db>,
            id: &str,
        ) -> Result<()> {
            let generation: i64 = sqlx::query_scalar(
                "UPDATE keyward_state SET clients_generation = clients_generation + 1 \
                 WHERE id = 1 RETURNING clients_generation",
            )
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO client_changes (client_id, generation) VALUES ($1, $2) \
                 ON CONFLICT (client_id) DO UPDATE SET generation = excluded.generation",
            )
            .bind(id)
            .bind(generation)
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Bumps the token generation, so every replica reloads its tokens.
        pub(super) async fn bump_tokens_generation(
            tx: &mut Transaction<'static, $db>,
        ) -> Result<()> {
            sqlx::query(
                "UPDATE keyward_state SET tokens_generation = tokens_generation + 1 WHERE id = 1",
            )
            .execute(&mut **tx)
            .await?;
            Ok(())
        }
    };
}

mod sqlite_tx {
    use super::*;
    tx_helpers!(Sqlite, insert_key, insert_secret, bump_generation);
}

mod pg_tx {
    use super::*;
    tx_helpers!(Postgres, insert_key, insert_secret, bump_generation);
}
