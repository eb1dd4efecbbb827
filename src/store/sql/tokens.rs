//! The statements of API tokens, one text for both backends.

use async_trait::async_trait;
use tracing::instrument;

use super::tx::{pg as pg_tx, sqlite as sqlite_tx};
use crate::{
    Result,
    domain::event::{EventKind, NewEvent, Subject},
    store::{PgStore, Revocation, SqliteStore, TokenRow, TokenStore, unique_as_exists},
};

macro_rules! tokens_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl TokenStore for $store {
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

            #[instrument(skip_all)]
            async fn admin_token_hashes(&self) -> Result<Vec<Vec<u8>>> {
                Ok(sqlx::query_scalar("SELECT token_hash FROM admin_tokens")
                    .fetch_all(&self.pool)
                    .await?)
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
                let created =
                    NewEvent::new(EventKind::TokenCreated, token.created_at, Subject::token(&token.name))
                        .detail(format!("role {}", token.role.as_str()));
                $tx::insert_events(&mut tx, &[created]).await?;
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
            async fn revoke_token(
                &self,
                name: &str,
                now: i64,
                admin_kept_until: i64,
            ) -> Result<Revocation> {
                let mut tx = self.begin_write().await?;
                // Concurrent revocations of admin tokens queue here (SQLite's
                // write transactions already do), so each sees the others'.
                if let Some(lock) = Self::LOCK_ADMIN_TOKENS {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let done = sqlx::query(
                    "UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
                     AND (role <> 'admin' OR (expires_at IS NOT NULL AND expires_at <= $1) \
                     OR EXISTS (SELECT 1 FROM admin_tokens other WHERE other.role = 'admin' AND other.revoked_at IS NULL AND other.id <> $2 \
                     AND (other.expires_at IS NULL OR other.expires_at > $3)))",
                )
                .bind(now)
                .bind(name)
                .bind(admin_kept_until)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    $tx::bump_tokens_generation(&mut tx).await?;
                    let revoked = NewEvent::new(EventKind::TokenRevoked, now, Subject::token(name));
                    $tx::insert_events(&mut tx, &[revoked]).await?;
                    tx.commit().await?;
                    return Ok(Revocation::Revoked);
                }
                let live: Option<String> = sqlx::query_scalar(
                    "SELECT role FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
                Ok(match live {
                    Some(_) => Revocation::LastAdmin,
                    None => Revocation::Missing,
                })
            }

            #[instrument(skip_all)]
            async fn tokens_generation(&self) -> Result<i64> {
                Ok(
                    sqlx::query_scalar("SELECT tokens_generation FROM keyward_state WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?,
                )
            }
        }
    };
}

tokens_sql!(SqliteStore, sqlite_tx);
tokens_sql!(PgStore, pg_tx);
