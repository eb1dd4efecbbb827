//! The PostgreSQL backend, for several keyward replicas on one database.
//! What differs from SQLite lives here (connection setup, migrations, how
//! transactions begin, start-up's advisory lock); the statements both run
//! are in [`super::sql`].

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{StartupLock, sql::KnownHead};
use crate::{Error, Result};

/// The advisory lock id start-up holds on PostgreSQL ("keyward" in ASCII).
const STARTUP_LOCK_ID: i64 = 0x006b_6579_7761_7264;

/// The PostgreSQL backend, for several keyward replicas on one database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    options: PgConnectOptions,
    pub(super) audit_head: KnownHead,
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
    pub(super) async fn acquire_startup_lock(&self) -> Result<StartupLock> {
        let mut conn =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(STARTUP_LOCK_ID)
            .execute(&mut conn)
            .await?;
        Ok(StartupLock::postgres(conn))
    }

    /// PostgreSQL keeps old row versions until VACUUM; nothing to do per write.
    pub(super) async fn purge_destroyed_now(&self) -> Result<()> {
        Ok(())
    }

    pub(super) async fn begin_read(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }

    pub(super) async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        // READ COMMITTED is enough: every contended write is a conditional UPDATE
        // whose row lock serialises the racers, and losers see zero rows.
        Ok(self.pool.begin().await?)
    }

    pub(super) fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("migrations/postgres")
    }

    pub(super) async fn run_migrations(&self) -> Result<()> {
        Self::migrator()
            .run(&self.pool)
            .await
            .map_err(Error::internal)
    }

    /// PostgreSQL's own tool takes consistent backups: `pg_dump`.
    #[allow(clippy::unused_async)]
    pub(super) async fn backup_now(&self, _path: &std::path::Path) -> Result<()> {
        Err(Error::FailedPrecondition(
            "keyward backup copies SQLite databases; back PostgreSQL up with pg_dump".into(),
        ))
    }

    /// Locks every live admin token's row until commit.
    pub(super) const LOCK_ADMIN_TOKENS: Option<&'static str> =
        Some("SELECT id FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL FOR UPDATE");

    pub(super) const NOW: &'static str = "SELECT CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)";

    pub(super) const TABLE_EXISTS: &'static str = "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1";

    /// `column` is one of the values `subquery` returns. As an array, the
    /// subquery runs first and the rows are fetched by their index whatever
    /// the planner's statistics say; as `IN (subquery)`, a planner with stale
    /// statistics (autovacuum off, right after a bulk load) hash-joins and
    /// reads the whole table on every refresh.
    pub(super) fn one_of(column: &str, subquery: &str) -> String {
        format!("{column} = ANY (ARRAY({subquery}))")
    }
}

impl PgStore {
    /// PostgreSQL keeps old row versions until VACUUM: nothing to purge
    /// after a write that destroyed sealed material.
    #[allow(clippy::unused_async)]
    pub(super) async fn purge_destroyed(&self) {}
}
