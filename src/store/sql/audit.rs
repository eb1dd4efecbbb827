//! The statements of the audit chain: appends (each backend's own fast
//! path for a lone writer), listing, the snapshot scan and pruning.

use async_trait::async_trait;
use tracing::instrument;

use std::sync::{Arc, Mutex};

use sqlx::{Postgres, Sqlite, Transaction};

use crate::{
    Error, Result,
    domain::audit::{AuditEvent, AuditFilter, AuditRecord, Linker},
    store::{AuditColumns, AuditScan, AuditStore, ChainColumns, PgStore, SqliteStore},
};

/// The audit chain's one row (a macro, so PostgreSQL's locking form can
/// extend it at compile time).
macro_rules! read_audit_chain {
    () => {
        "SELECT head_id, head_hash, first_id, first_prev FROM audit_chain WHERE id = 1"
    };
}
const READ_AUDIT_CHAIN: &str = read_audit_chain!();

/// The last event retention deletes (every event up to it goes): the newest
/// event older than the cutoff `$1`, ties by id, at or before the head `$2`.
/// Found through the `at` index, so it reads about one index entry however
/// long the log. Asked for `max(id)` of the old events instead, both
/// databases walked the primary key down from the head and tested each row's
/// time: the whole kept log every hour, under the write lock that every
/// durable audit event waits for (9.6 s on a 10-million-event SQLite log,
/// 0.23 s on 3 million in PostgreSQL). `+id` keeps SQLite's planner off the
/// primary key. Where clocks disagreed (replicas) it may stop before an older
/// event that came later; that one goes at a later pass.
const LAST_PAST_RETENTION: &str = "SELECT id, hash FROM audit_events \
     WHERE at < $1 AND +id <= $2 ORDER BY at DESC, id DESC LIMIT 1";

macro_rules! audit_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl AuditStore for $store {
            #[instrument(skip_all, fields(events = events.len()))]
            async fn append_audit(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64> {
                if let Some(last) = self.append_after_known_head(events, link).await? {
                    return Ok(last);
                }
                let mut tx = self.begin_append().await?;
                let chain: ChainColumns = sqlx::query_as(Self::LOCK_AUDIT_CHAIN)
                    .fetch_one(&mut *tx)
                    .await?;
                let head =
                    Self::append_locked(&mut tx, events, link, (chain.head_id, chain.head_hash))
                        .await?;
                tx.commit().await?;
                Ok(self.audit_head.keep(head))
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
            async fn prune_audit(
                &self,
                before: i64,
                link: &dyn Linker,
                record: &(dyn Fn(i64, i64) -> AuditEvent + Sync),
            ) -> Result<Option<(i64, i64)>> {
                let mut tx = self.begin_write().await?;
                let chain: ChainColumns = sqlx::query_as(Self::LOCK_AUDIT_CHAIN)
                    .fetch_one(&mut *tx)
                    .await?;
                let last: Option<(i64, Vec<u8>)> = sqlx::query_as(LAST_PAST_RETENTION)
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
                // The chain's start moves only with the event that says so, in
                // the same transaction: verify refuses a start no prune
                // event accounts for.
                let pruned = (chain.first_id, last);
                let event = record(pruned.0, pruned.1);
                let head = Self::append_locked(
                    &mut tx,
                    std::slice::from_ref(&event),
                    link,
                    (chain.head_id, chain.head_hash),
                )
                .await?;
                tx.commit().await?;
                self.audit_head.keep(head);
                Ok(Some(pruned))
            }
        }
    };
}

audit_sql!(SqliteStore, sqlite_tx);
audit_sql!(PgStore, pg_tx);

impl SqliteStore {
    /// The write transaction already holds the database's write lock.
    const LOCK_AUDIT_CHAIN: &'static str = READ_AUDIT_CHAIN;

    /// A lone writer's append, where the chain ends where this process
    /// left it: the id of the last event, or `None` when nothing was
    /// appended (the head is not known, another process has appended since,
    /// or the batch is larger than one statement) and the append must read
    /// the head under the write lock ([`AuditStore::append_audit`]).
    ///
    /// Every statement is a round trip to the connection's thread and back
    /// to the async workers, which costs more than the statement's own work
    /// under load, so this is one: an INSERT, its own transaction, of the
    /// events on the condition that the head is still the one expected;
    /// inserting an event moves the chain's head to it (a trigger). It runs
    /// on the store's appender connection, as the locked append does, which
    /// keeps its page cache from one append to the next. The trigger's
    /// migration, which cannot change once applied, calls this
    /// `SqliteStore::append_audit_events`, its name then.
    async fn append_after_known_head(
        &self,
        events: &[AuditEvent],
        link: &dyn Linker,
    ) -> Result<Option<i64>> {
        let Some(after) = self.audit_head.take() else {
            return Ok(None);
        };
        if events.is_empty() || events.len() > AUDIT_ROWS_PER_INSERT {
            return Ok(None);
        }
        let (rows, head) = chain_rows(events, link, after.clone());
        let sql = format!(
            "{} AND EXISTS (SELECT 1 FROM audit_chain \
             WHERE id = 1 AND head_id = ? AND head_hash = ?)",
            insert_audit_rows(rows.len())
        );
        let done = bind_audit_rows(sqlx::query(sqlx::AssertSqlSafe(sql)), &rows)
            .bind(after.0)
            .bind(after.1.as_slice())
            .execute(&self.appender)
            .await?;
        Ok((done.rows_affected() == rows.len() as u64).then(|| self.audit_head.keep(head)))
    }

    /// Appends `events` after `after`, the head `tx` holds locked; returns
    /// the new head.
    async fn append_locked(
        tx: &mut Transaction<'static, Sqlite>,
        events: &[AuditEvent],
        link: &dyn Linker,
        after: ChainHead,
    ) -> Result<ChainHead> {
        let (rows, head) = chain_rows(events, link, after);
        for chunk in rows.chunks(AUDIT_ROWS_PER_INSERT) {
            bind_audit_rows(
                sqlx::query(sqlx::AssertSqlSafe(insert_audit_rows(chunk.len()))),
                chunk,
            )
            .execute(&mut **tx)
            .await?;
        }
        Ok(head)
    }
}

/// `INSERT INTO audit_events … SELECT * FROM (VALUES …) WHERE …` of `rows`
/// rows of positional parameters, made for the next power of two rows:
/// [`bind_audit_rows`] fills the rows past `rows` with NULLs, which the
/// `WHERE` leaves out. Each size is its own SQL text, and the connection
/// keeps a prepared statement per text; with the sizes a loaded writer's
/// batches come in (anything up to the number of calls in flight) no
/// statement cache held them all, and more than half the appends under load
/// parsed and planned their insert again. A dozen sizes stay prepared.
fn insert_audit_rows(rows: usize) -> String {
    let row = format!("({})", ["?"; AUDIT_COLUMN_COUNT].join(", "));
    format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) SELECT * FROM (VALUES {}) \
         WHERE column1 IS NOT NULL",
        vec![row.as_str(); rows.next_power_of_two()].join(", ")
    )
}

/// Binds `rows` in [`AUDIT_COLUMNS`] order, then NULL rows up to the next
/// power of two (see [`insert_audit_rows`]).
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
    for _ in rows.len()..rows.len().next_power_of_two() {
        for _ in 0..AUDIT_COLUMN_COUNT {
            query = query.bind(None::<i64>);
        }
    }
    query
}

impl PgStore {
    /// The row lock queues other appenders (other replicas too) until commit.
    const LOCK_AUDIT_CHAIN: &'static str = concat!(read_audit_chain!(), " FOR UPDATE");

    /// A lone writer's append, where the chain ends where this process
    /// last wrote it: the id of the last event, or `None` when nothing was
    /// appended (the head is not known: first append, an error; or another
    /// replica has moved it since) and the append must lock the head first
    /// ([`AuditStore::append_audit`]), which queues replicas fairly.
    ///
    /// One round trip: one statement, with no explicit transaction, moves
    /// the chain's head on the condition that it is still the head expected,
    /// and inserts the events only if it moved.
    async fn append_after_known_head(
        &self,
        events: &[AuditEvent],
        link: &dyn Linker,
    ) -> Result<Option<i64>> {
        let Some(after) = self.audit_head.take() else {
            return Ok(None);
        };
        let (rows, head) = chain_rows(events, link, after.clone());
        let moved = Self::append_after(&rows, &head, &after)
            .fetch_optional(&self.pool)
            .await?;
        Ok(moved.map(|_| self.audit_head.keep(head)))
    }

    /// Appends run on the pool, in a transaction that locks the chain's row.
    async fn begin_append(&self) -> Result<Transaction<'static, Postgres>> {
        self.begin_write().await
    }

    /// Appends `events` after `after`, the head `tx` holds locked; returns
    /// the new head.
    async fn append_locked(
        tx: &mut Transaction<'static, Postgres>,
        events: &[AuditEvent],
        link: &dyn Linker,
        after: ChainHead,
    ) -> Result<ChainHead> {
        let (rows, head) = chain_rows(events, link, after.clone());
        Self::append_after(&rows, &head, &after)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| Error::internal("the locked audit chain head moved"))?;
        Ok(head)
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

/// Events per INSERT statement on SQLite: as many as the audit writer's
/// largest batch, so a batch is one statement; padded to 2,048 rows of nine
/// parameters, under SQLite's limit of 32,766 per statement.
const AUDIT_ROWS_PER_INSERT: usize = 2000;
const _: () = assert!(AUDIT_ROWS_PER_INSERT.next_power_of_two() * AUDIT_COLUMN_COUNT + 2 <= 32_766);

/// Where the audit chain ends: the last event's id and hash.
type ChainHead = (i64, Vec<u8>);

/// The audit chain head this process last wrote: where its next append
/// expects the chain to end. Only a guess (a wrong one costs the append that
/// reads the head first), so it is taken for the append and kept again only
/// once the append has committed.
#[derive(Debug, Clone, Default)]
pub(in crate::store) struct KnownHead(Arc<Mutex<Option<ChainHead>>>);

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
/// How many [`AUDIT_COLUMNS`] name.
const AUDIT_COLUMN_COUNT: usize = 9;

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use futures_util::FutureExt as _;
    use sqlx::{Connection as _, Row as _};

    use super::*;

    /// The plan each database makes for [`LAST_PAST_RETENTION`], one line
    /// per step, with half of `rows` events past the cutoff.
    async fn plan<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, explain: &str, rows: i64) -> String
    where
        for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        sqlx::query(
            "WITH RECURSIVE n (value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n \
             WHERE value < $1) INSERT INTO audit_events (id, at, principal, action, target, \
             outcome, peer, request_id, hash) SELECT value, 1000 + value, 'p', 'a', 't', 'o', \
             '', '', $2 FROM n",
        )
        .bind(rows)
        .bind(vec![0_u8; 32])
        .execute(pool)
        .await
        .expect("events");
        sqlx::query("ANALYZE").execute(pool).await.expect("analyze");
        let steps = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{explain} {LAST_PAST_RETENTION}"
        )))
        .bind(1000 + rows / 2)
        .bind(rows)
        .fetch_all(pool)
        .await
        .expect("plan");
        steps
            .iter()
            .map(|row| row.get::<String, _>(row.len() - 1))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn retention_finds_its_cut_through_the_time_index_on_sqlite() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url).await.expect("open");
        store.run_migrations().await.expect("migrate");
        let plan = plan(&store.pool, "EXPLAIN QUERY PLAN", 20_000).await;
        assert!(plan.contains("INDEX audit_events_at (at<?)"), "{plan}");
        assert!(!plan.contains("PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "a sort: {plan}");
    }

    #[tokio::test]
    async fn retention_finds_its_cut_through_the_time_index_on_postgres() {
        let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("CI").is_err(),
                "CI sets KEYWARD_TEST_DATABASE_URL"
            );
            // Past the harness's capture, which hides a passing test's output.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED retention plan on PostgreSQL: KEYWARD_TEST_DATABASE_URL is not set"
            );
            return;
        };
        let name: String = crate::crypto::random::bytes::<8>()
            .iter()
            .fold("keyward_plan_".into(), |name, b| format!("{name}{b:02x}"));
        let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create");
        let (server, rest) = base.rsplit_once('/').expect("a database in the URL");
        let options = rest.split_once('?').map_or("", |(_, o)| o);
        let url = format!("{server}/{name}?{options}");
        // The database goes whatever happens in between, a panic included.
        let planned = std::panic::AssertUnwindSafe(async {
            let store = PgStore::connect(&url).await.expect("open");
            store.run_migrations().await.expect("migrate");
            let plan = plan(&store.pool, "EXPLAIN", 50_000).await;
            store.pool.close().await;
            plan
        })
        .catch_unwind()
        .await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .expect("drop");
        let plan = planned.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        assert!(plan.contains("using audit_events_at"), "{plan}");
        assert!(!plan.contains("audit_events_pkey"), "{plan}");
    }
}
