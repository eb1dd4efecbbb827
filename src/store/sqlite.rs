//! The SQLite backend: one file, WAL journal, write transactions that take
//! the write lock up front so concurrent writers queue instead of failing.
//! What differs from PostgreSQL lives here (connection setup, migrations,
//! how transactions begin, backups, start-up's lock); the statements both
//! run are in [`super::sql`].

use std::{str::FromStr, time::Duration};

use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{StartupLock, sql::KnownHead};
use crate::{Error, Result, files};

/// The SQLite backend: one file, WAL journal, write transactions that take the
/// write lock up front so concurrent writers queue instead of failing.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// The database file; `None` in memory.
    file: Option<std::path::PathBuf>,
    pub(super) audit_head: KnownHead,
    /// One connection that appends audit events, and nothing else: SQLite
    /// discards a connection's page cache whenever another connection has
    /// written since its last transaction, so appends passed round a pool
    /// re-read the chain's pages from disk at every commit.
    pub(super) appender: SqlitePool,
}

/// A write transaction on `pool`. IMMEDIATE takes the write lock now: a
/// deferred transaction that later upgrades can fail with SQLITE_BUSY
/// regardless of busy_timeout.
async fn begin_immediate(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
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
        let open = |connections| {
            SqlitePoolOptions::new()
                .max_connections(connections)
                // An in-process connection has no peer that could have
                // dropped it: a ping before each use would only add a round
                // trip to the connection's thread.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone())
        };
        let pools = async { Ok::<_, sqlx::Error>((open(8).await?, open(1).await?)) }
            .await
            .map_err(|e| {
                Error::FailedPrecondition(format!("cannot open the SQLite database: {e}"))
            });
        if let Some(lock) = opening {
            lock.release().await;
        }
        let (pool, appender) = pools?;
        Ok(Self {
            pool,
            file,
            audit_head: KnownHead::default(),
            appender,
        })
    }

    pub(super) async fn acquire_startup_lock(&self) -> Result<StartupLock> {
        match &self.file {
            Some(db) => lock_beside(db).await,
            None => Ok(StartupLock::nothing()),
        }
    }

    /// After key material was destroyed: copy the WAL into the database and
    /// truncate it, so no old page holding the ciphertext stays in the WAL.
    pub(super) async fn purge_destroyed_now(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        // In WAL mode a read transaction sees one snapshot from its first read.
        Ok(self.pool.begin().await?)
    }

    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        begin_immediate(&self.pool).await
    }

    /// A write transaction on the appender connection (see [`Self::appender`]).
    pub(super) async fn begin_append(&self) -> Result<Transaction<'static, Sqlite>> {
        begin_immediate(&self.appender).await
    }

    pub(super) fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("migrations/sqlite")
    }

    pub(super) async fn run_migrations(&self) -> Result<()> {
        Self::migrator()
            .run(&self.pool)
            .await
            .map_err(Error::internal)
    }

    /// `VACUUM INTO` `path` (a new or empty file): a consistent copy of the
    /// database as of one moment, taken while others read and write. The copy
    /// is then checked: it opens, passes `integrity_check` and holds the canary.
    pub(super) async fn backup_now(&self, path: &std::path::Path) -> Result<()> {
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

    pub(super) const TABLE_EXISTS: &'static str =
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1";

    /// The write transaction already holds the database's write lock.
    pub(super) const LOCK_ADMIN_TOKENS: Option<&'static str> = None;

    pub(super) const NOW: &'static str = "SELECT CAST(strftime('%s', 'now') AS INTEGER)";

    /// `column` is one of the values `subquery` returns.
    pub(super) fn one_of(column: &str, subquery: &str) -> String {
        format!("{column} IN ({subquery})")
    }
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

impl SqliteStore {
    /// Best effort after a committed write that destroyed sealed material:
    /// the write stands even if the purge fails.
    pub(super) async fn purge_destroyed(&self) {
        if let Err(err) = self.purge_destroyed_now().await {
            tracing::warn!(error = %err, "could not purge destroyed key material from the WAL");
        }
    }
}
