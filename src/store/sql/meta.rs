//! The statements of the database itself: reachability, migrations, the
//! sealed values of `keyward_meta`, every sealed value by master key, and
//! the change counters.

use async_trait::async_trait;
use tracing::instrument;

use crate::{
    Error, Result,
    store::{
        Generations, MetaStore, MigrationState, PgStore, Resealed, SealedAt, SealedCount,
        SealedTable, SealedValue, SqliteStore, StartupLock,
    },
};

macro_rules! meta_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl MetaStore for $store {
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
            async fn database_time(&self) -> Result<i64> {
                Ok(sqlx::query_scalar(Self::NOW).fetch_one(&self.pool).await?)
            }

            #[instrument(skip_all)]
            async fn migration_state(&self) -> Result<MigrationState> {
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
                Ok(MigrationState {
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
                Ok(
                    sqlx::query_as("SELECT key_id, value FROM keyward_meta WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?,
                )
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
                            .ok_or_else(|| {
                                Error::internal(format!("unknown sealed table {table}"))
                            })?;
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
                            .map(
                                |(kid, keyset_id, algorithm, master_key_id, sealed)| SealedValue {
                                    at: SealedAt::Key {
                                        kid,
                                        keyset_id,
                                        algorithm,
                                    },
                                    master_key_id,
                                    sealed,
                                },
                            )
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
        }
    };
}

meta_sql!(SqliteStore, sqlite_tx);
meta_sql!(PgStore, pg_tx);
