//! The statements of the outbox, webhooks and deliveries, one text for both
//! backends.

use async_trait::async_trait;
use tracing::instrument;

use super::tx::{pg as pg_tx, sqlite as sqlite_tx};
use crate::{
    Result,
    domain::event::{Event, NewEvent},
    store::{
        Attempt, Claimed, DeliveryCounts, DeliveryRow, DeliveryState, EventBounds, EventStore,
        PgStore, SqliteStore, WebhookRow,
        events::{EventColumns, WebhookColumns, filter_columns, webhook_secret_name},
        unique_as_exists,
    },
};

const EVENT_COLUMNS: &str = "id, at, kind, keyset, kid, client, token, detail";
const WEBHOOK_COLUMNS: &str = "name, url, kinds, keysets, clients, after_event, created_at";
const DELIVERY_COLUMNS: &str = "webhook, event_id, state, attempts, next_attempt_at, \
     last_attempt_at, last_status, last_error, delivered_at";

/// A claimed delivery's row: where it goes and the event.
#[derive(sqlx::FromRow)]
struct ClaimColumns {
    webhook: String,
    url: String,
    attempts: i64,
    #[sqlx(flatten)]
    event: EventColumns,
}

fn decode_events(rows: Vec<EventColumns>) -> Result<Vec<Event>> {
    rows.into_iter().map(Event::try_from).collect()
}

fn decode_webhooks(rows: Vec<WebhookColumns>) -> Result<Vec<WebhookRow>> {
    rows.into_iter().map(WebhookRow::try_from).collect()
}

macro_rules! events_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl EventStore for $store {
            #[instrument(skip_all, fields(events = events.len()))]
            async fn append_events(&self, events: &[NewEvent]) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let stored = $tx::insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(stored)
            }

            #[instrument(skip_all, fields(after))]
            async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>> {
                let rows: Vec<EventColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
                )))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                decode_events(rows)
            }

            #[instrument(skip_all)]
            async fn event_bounds(&self) -> Result<EventBounds> {
                Ok(sqlx::query_as(
                    "SELECT event_seq AS last, events_pruned_through AS pruned_through \
                     FROM keyward_state WHERE id = 1",
                )
                .fetch_one(&self.pool)
                .await?)
            }

            #[instrument(skip_all)]
            async fn prune_events(&self, before: i64) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let deliveries = sqlx::query(
                    "DELETE FROM webhook_deliveries WHERE state <> 'pending' \
                     AND COALESCE(last_attempt_at, next_attempt_at) < $1",
                )
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Oldest first and without holes: a watcher resuming after
                // a pruned event is told, and one after a kept event is not.
                let through: Option<i64> = sqlx::query_scalar(
                    "SELECT max(id) FROM events WHERE id < COALESCE((SELECT min(id) FROM events \
                     WHERE at >= $1 OR id > (SELECT webhook_cursor FROM keyward_state \
                     WHERE id = 1) OR EXISTS (SELECT 1 FROM webhook_deliveries d \
                     WHERE d.event_id = events.id AND d.state = 'pending')), \
                     (SELECT event_seq FROM keyward_state WHERE id = 1) + 1)",
                )
                .bind(before)
                .fetch_one(&mut *tx)
                .await?;
                let Some(through) = through else {
                    tx.commit().await?;
                    return Ok(deliveries);
                };
                let events = sqlx::query("DELETE FROM events WHERE id <= $1")
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "UPDATE keyward_state SET events_pruned_through = $1 \
                     WHERE id = 1 AND events_pruned_through < $1",
                )
                .bind(through)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(deliveries + events)
            }

            #[instrument(skip_all, fields(webhook = hook.name))]
            async fn insert_webhook(
                &self,
                hook: &WebhookRow,
                key_id: &str,
                sealed_secret: &[u8],
            ) -> Result<WebhookRow> {
                let mut tx = self.begin_write().await?;
                // It gets the events committed after it; none before.
                let after_event: i64 =
                    sqlx::query_scalar("SELECT event_seq FROM keyward_state WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                let [kinds, keysets, clients] = filter_columns(&hook.filter)?;
                sqlx::query(
                    "INSERT INTO webhooks (name, url, kinds, keysets, clients, after_event, \
                     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&hook.name)
                .bind(&hook.url)
                .bind(kinds)
                .bind(keysets)
                .bind(clients)
                .bind(after_event)
                .bind(hook.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_as_exists(e, || format!("a webhook named {:?} exists", hook.name))
                })?;
                let name = webhook_secret_name(&hook.name);
                sqlx::query("DELETE FROM keyward_meta WHERE name = $1")
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO keyward_meta (name, key_id, value) VALUES ($1, $2, $3)")
                    .bind(&name)
                    .bind(key_id)
                    .bind(sealed_secret)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(WebhookRow {
                    after_event,
                    ..hook.clone()
                })
            }

            #[instrument(skip_all)]
            async fn list_webhooks(&self) -> Result<Vec<WebhookRow>> {
                let rows: Vec<WebhookColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY name"
                )))
                .fetch_all(&self.pool)
                .await?;
                decode_webhooks(rows)
            }

            #[instrument(skip_all, fields(name))]
            async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRow>> {
                let row: Option<WebhookColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE name = $1"
                )))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(WebhookRow::try_from).transpose()
            }

            #[instrument(skip_all, fields(name))]
            async fn delete_webhook(&self, name: &str) -> Result<bool> {
                let mut tx = self.begin_write().await?;
                let gone = sqlx::query("DELETE FROM webhooks WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if gone == 0 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM webhook_deliveries WHERE webhook = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM keyward_meta WHERE name = $1")
                    .bind(webhook_secret_name(name))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            #[instrument(skip_all)]
            async fn delivery_work(&self, now: i64) -> Result<(bool, bool)> {
                Ok(sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM webhooks) AND \
                     (SELECT COALESCE(max(id), 0) FROM events) > \
                     (SELECT webhook_cursor FROM keyward_state WHERE id = 1), \
                     EXISTS (SELECT 1 FROM webhook_deliveries WHERE state = 'pending' \
                     AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1))",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await?)
            }

            #[instrument(skip_all)]
            async fn queue_deliveries(&self, now: i64, limit: i64) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let cursor: i64 =
                    sqlx::query_scalar("SELECT webhook_cursor FROM keyward_state WHERE id = 1")
                        .fetch_one(&mut *tx)
                        .await?;
                let rows: Vec<EventColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"
                )))
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = rows.last().map(|r| r.id) else {
                    return Ok(0);
                };
                // The conditional move is the claim: of racing replicas, the
                // one whose UPDATE lands queues; the others change nothing.
                let moved = sqlx::query(
                    "UPDATE keyward_state SET webhook_cursor = $1 \
                     WHERE id = 1 AND webhook_cursor = $2",
                )
                .bind(last)
                .bind(cursor)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if moved != 1 {
                    return Ok(0);
                }
                let hooks: Vec<WebhookColumns> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY name"
                )))
                .fetch_all(&mut *tx)
                .await?;
                let hooks = decode_webhooks(hooks)?;
                let mut queued = 0;
                for event in decode_events(rows)? {
                    for hook in &hooks {
                        if event.id <= hook.after_event || !hook.filter.matches(&event) {
                            continue;
                        }
                        queued += sqlx::query(
                            "INSERT INTO webhook_deliveries (webhook, event_id, state, \
                             next_attempt_at) VALUES ($1, $2, 'pending', $3) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(&hook.name)
                        .bind(event.id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                }
                tx.commit().await?;
                Ok(queued)
            }

            #[instrument(skip_all, fields(limit))]
            async fn claim_deliveries(
                &self,
                claim: &str,
                now: i64,
                until: i64,
                limit: i64,
            ) -> Result<Vec<Claimed>> {
                const DUE: &str = "state = 'pending' AND next_attempt_at <= $3 \
                     AND (claimed_until IS NULL OR claimed_until < $3)";
                // The outer condition is checked again on each row as it is
                // locked: of two replicas that picked the same rows, one
                // updates them and the other finds them claimed.
                let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2 \
                     WHERE {DUE} AND (webhook, event_id) IN (SELECT webhook, event_id \
                     FROM webhook_deliveries WHERE {DUE} ORDER BY event_id LIMIT $4)"
                )))
                .bind(claim)
                .bind(until)
                .bind(now)
                .bind(limit)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if claimed == 0 {
                    return Ok(Vec::new());
                }
                let rows: Vec<ClaimColumns> = sqlx::query_as(
                    "SELECT d.webhook, w.url, d.attempts, e.id, e.at, e.kind, e.keyset, e.kid, \
                     e.client, e.token, e.detail FROM webhook_deliveries d \
                     JOIN webhooks w ON w.name = d.webhook JOIN events e ON e.id = d.event_id \
                     WHERE d.claimed_by = $1 AND d.state = 'pending' ORDER BY e.id",
                )
                .bind(claim)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|c| {
                        Ok(Claimed {
                            webhook: c.webhook,
                            url: c.url,
                            attempts: c.attempts,
                            event: Event::try_from(c.event)?,
                        })
                    })
                    .collect()
            }

            #[instrument(skip_all, fields(webhook, event_id))]
            async fn record_attempt(
                &self,
                claim: &str,
                webhook: &str,
                event_id: i64,
                attempt: &Attempt,
            ) -> Result<bool> {
                let state = match (&attempt.error, attempt.retry_at) {
                    (None, _) => DeliveryState::Delivered,
                    (Some(_), Some(_)) => DeliveryState::Pending,
                    (Some(_), None) => DeliveryState::Failed,
                };
                let done = sqlx::query(
                    "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
                     last_attempt_at = $2, last_status = $3, last_error = $4, \
                     next_attempt_at = COALESCE($5, next_attempt_at), \
                     delivered_at = CASE WHEN $1 = 'delivered' THEN $2 ELSE NULL END, \
                     claimed_by = NULL, claimed_until = NULL \
                     WHERE webhook = $6 AND event_id = $7 AND claimed_by = $8",
                )
                .bind(state.as_str())
                .bind(attempt.at)
                .bind(attempt.status)
                .bind(&attempt.error)
                .bind(attempt.retry_at)
                .bind(webhook)
                .bind(event_id)
                .bind(claim)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            #[instrument(skip_all, fields(webhook))]
            async fn deliveries(&self, webhook: &str, limit: i64) -> Result<Vec<DeliveryRow>> {
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook = $1 \
                     ORDER BY event_id DESC LIMIT $2"
                )))
                .bind(webhook)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            #[instrument(skip_all)]
            async fn delivery_counts(&self) -> Result<DeliveryCounts> {
                let rows: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT state, count(*) FROM webhook_deliveries GROUP BY state",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut counts = DeliveryCounts::default();
                for (state, n) in rows {
                    match DeliveryState::try_from(state)? {
                        DeliveryState::Pending => counts.pending = n,
                        DeliveryState::Delivered => counts.delivered = n,
                        DeliveryState::Failed => counts.failed = n,
                    }
                }
                Ok(counts)
            }
        }
    };
}

events_sql!(SqliteStore, sqlite_tx);
events_sql!(PgStore, pg_tx);
