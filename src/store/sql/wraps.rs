//! The statements of the wrapped keyring.

use async_trait::async_trait;
use tracing::instrument;

use crate::{
    Result,
    store::{MasterWrap, PgStore, SealStore, SqliteStore, WrappedKeyring},
};

macro_rules! wraps_sql {
    ($store:ty) => {
        #[async_trait]
        impl SealStore for $store {
            #[instrument(skip_all)]
            async fn wrapped_keyring(&self) -> Result<WrappedKeyring> {
                let tables: i64 = sqlx::query_scalar(Self::TABLE_EXISTS)
                    .bind("master_key_wraps")
                    .fetch_one(&self.pool)
                    .await?;
                if tables == 0 {
                    return Ok(WrappedKeyring::default());
                }
                let mut tx = self.begin_read().await?;
                let current: Option<String> =
                    sqlx::query_scalar("SELECT current FROM sealed_keyring WHERE id = 1")
                        .fetch_optional(&mut *tx)
                        .await?;
                let rows: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT master_key_id, seal, wrapped, created_at FROM master_key_wraps \
                     ORDER BY master_key_id, seal",
                )
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(WrappedKeyring {
                    current,
                    wraps: rows
                        .into_iter()
                        .map(|(master_key_id, seal, wrapped, created_at)| MasterWrap {
                            master_key_id,
                            seal,
                            wrapped,
                            created_at,
                        })
                        .collect(),
                })
            }

            #[instrument(skip_all, fields(wraps = wraps.len()))]
            async fn store_wraps(
                &self,
                wraps: &[MasterWrap],
                current: &str,
                now: i64,
            ) -> Result<()> {
                let mut tx = self.begin_write().await?;
                for wrap in wraps {
                    sqlx::query(
                        "INSERT INTO master_key_wraps (master_key_id, seal, wrapped, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    )
                    .bind(&wrap.master_key_id)
                    .bind(&wrap.seal)
                    .bind(&wrap.wrapped)
                    .bind(wrap.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO sealed_keyring (id, current, changed_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET current = excluded.current, \
                     changed_at = excluded.changed_at \
                     WHERE sealed_keyring.current <> excluded.current",
                )
                .bind(current)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            #[instrument(skip_all)]
            async fn delete_wraps_of(&self, ids: &[String]) -> Result<u64> {
                let mut tx = self.begin_write().await?;
                let mut gone = 0;
                for id in ids {
                    gone += sqlx::query("DELETE FROM master_key_wraps WHERE master_key_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(gone)
            }

            #[instrument(skip_all)]
            async fn delete_wraps_by(&self, seal: &str) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM master_key_wraps WHERE seal = $1")
                    .bind(seal)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }
        }
    };
}

wraps_sql!(SqliteStore);
wraps_sql!(PgStore);
