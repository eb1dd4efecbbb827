//! The statements of key sets and their keys, one text for both backends.

use async_trait::async_trait;
use tracing::instrument;

use super::{
    KEY_COLUMNS, KEYSET_COLUMNS, decode_keysets,
    tx::{pg as pg_tx, sqlite as sqlite_tx},
};
use crate::{
    Result,
    domain::{
        event::{EventKind, NewEvent, Subject},
        model::KeyState,
    },
    store::{
        KeyRow, KeySetChange, KeySetColumns, KeySetRow, KeySetStore, NewKey, NewKeySet, PgStore,
        PolicyColumns, PublishedDelta, SealedKey, SqliteStore, unique_as_exists,
    },
};

macro_rules! keysets_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl KeySetStore for $store {
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
                let keys = keys(row.id);
                let mut events = vec![NewEvent::new(
                    EventKind::KeySetCreated,
                    now,
                    Subject::keyset(name),
                )
                .detail(set.algorithm.as_str())];
                for key in &keys {
                    $tx::insert_key(&mut tx, row.id, key, now).await?;
                    events.push(NewEvent::new(
                        EventKind::of_key_state(key.state),
                        now,
                        Subject::key(name, &key.kid),
                    ));
                }
                $tx::bump_generation(&mut tx, row.id).await?;
                $tx::insert_events(&mut tx, &events).await?;
                tx.commit().await?;
                Ok(row)
            }

            #[instrument(skip_all)]
            async fn any_keyset_ever(&self) -> Result<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT id FROM keysets LIMIT 1")
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(found.is_some())
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
                let deleted = NewEvent::new(EventKind::KeySetDeleted, now, Subject::keyset(name));
                $tx::insert_events(&mut tx, &[deleted]).await?;
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
                $tx::insert_events(&mut tx, &change.events()).await?;
                tx.commit().await?;
                if change.updates.iter().any(|u| u.destroy_private) {
                    self.purge_destroyed().await;
                }
                Ok(true)
            }
        }
    };
}

keysets_sql!(SqliteStore, sqlite_tx);
keysets_sql!(PgStore, pg_tx);
