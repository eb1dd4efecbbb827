//! The statements of clients and their secret versions, one text for both
//! backends.

use async_trait::async_trait;
use tracing::instrument;

use super::tx::{pg as pg_tx, sqlite as sqlite_tx};
use crate::{
    Result,
    domain::{
        client::Client,
        event::{EventKind, NewEvent, Subject},
    },
    store::{
        ClientColumns, ClientDelta, ClientStore, PgStore, SecretRow, SqliteStore, decode_clients,
        unique_as_exists,
    },
};

macro_rules! clients_sql {
    ($store:ty, $tx:ident) => {
        #[async_trait]
        impl ClientStore for $store {
            #[instrument(skip_all, fields(client = client.id))]
            async fn insert_client(&self, client: &Client, secret: &SecretRow) -> Result<()> {
                let row = ClientColumns::of(client);
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO clients (id, display_name, discovery_uri, callback_url, scopes, \
                     auth_method, labels, secret_version, created_at, updated_at, token_keyset, \
                     token_ttl, audience, allowed_scopes, token_subject, token_email) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                )
                .bind(&row.id)
                .bind(&row.display_name)
                .bind(&row.discovery_uri)
                .bind(&row.callback_url)
                .bind(&row.scopes)
                .bind(&row.auth_method)
                .bind(&row.labels)
                .bind(row.secret_version)
                .bind(row.created_at)
                .bind(row.updated_at)
                .bind(&row.token_keyset)
                .bind(row.token_ttl)
                .bind(&row.audience)
                .bind(&row.allowed_scopes)
                .bind(&row.token_subject)
                .bind(&row.token_email)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    unique_as_exists(e, || format!("client {:?} already exists", client.id))
                })?;
                $tx::insert_secret(&mut tx, secret).await?;
                $tx::bump_client(&mut tx, &client.id).await?;
                let created =
                    NewEvent::new(EventKind::ClientCreated, secret.created_at, Subject::client(&client.id))
                        .detail(format!("version {}", secret.version));
                $tx::insert_events(&mut tx, &[created]).await?;
                tx.commit().await?;
                Ok(())
            }

            #[instrument(skip_all, fields(client = client.id))]
            async fn update_client(&self, client: &Client) -> Result<bool> {
                let row = ClientColumns::of(client);
                let mut tx = self.begin_write().await?;
                let done = sqlx::query(
                    "UPDATE clients SET display_name = $1, discovery_uri = $2, \
                     callback_url = $3, scopes = $4, auth_method = $5, labels = $6, \
                     updated_at = $7, token_keyset = $8, token_ttl = $9, audience = $10, \
                     allowed_scopes = $11, token_subject = $12, token_email = $13 WHERE id = $14",
                )
                .bind(&row.display_name)
                .bind(&row.discovery_uri)
                .bind(&row.callback_url)
                .bind(&row.scopes)
                .bind(&row.auth_method)
                .bind(&row.labels)
                .bind(row.updated_at)
                .bind(&row.token_keyset)
                .bind(row.token_ttl)
                .bind(&row.audience)
                .bind(&row.allowed_scopes)
                .bind(&row.token_subject)
                .bind(&row.token_email)
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                $tx::bump_client(&mut tx, &client.id).await?;
                let updated =
                    NewEvent::new(EventKind::ClientUpdated, client.updated_at, Subject::client(&client.id));
                $tx::insert_events(&mut tx, &[updated]).await?;
                tx.commit().await?;
                Ok(true)
            }

            #[instrument(skip_all, fields(client = id))]
            async fn get_client(&self, id: &str) -> Result<Option<Client>> {
                sqlx::query_as::<_, ClientColumns>("SELECT * FROM clients WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(Client::try_from)
                    .transpose()
            }

            #[instrument(skip_all)]
            async fn list_clients(&self, after: &str, limit: i64) -> Result<Vec<Client>> {
                decode_clients(
                    sqlx::query_as("SELECT * FROM clients WHERE id > $1 ORDER BY id LIMIT $2")
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            #[instrument(skip_all, fields(client = id))]
            async fn delete_client(&self, id: &str, now: i64) -> Result<bool> {
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
                let gone = NewEvent::new(EventKind::ClientDeleted, now, Subject::client(id));
                $tx::insert_events(&mut tx, &[gone]).await?;
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
                        clients: decode_clients(
                            sqlx::query_as("SELECT * FROM clients")
                                .fetch_all(&mut *tx)
                                .await?,
                        )?,
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
                            clients: decode_clients(
                                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                                    "SELECT * FROM clients WHERE {}",
                                    Self::one_of("id", CHANGED)
                                )))
                                .persistent(false)
                                .bind(since)
                                .bind(generation)
                                .fetch_all(&mut *tx)
                                .await?,
                            )?,
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
                let ended: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM client_secrets WHERE client_id = $1 \
                     AND valid_until IS NOT NULL AND valid_until <= $2 RETURNING version",
                )
                .bind(&new.client_id)
                .bind(new.created_at)
                .fetch_all(&mut *tx)
                .await?;
                $tx::insert_secret(&mut tx, new).await?;
                $tx::bump_client(&mut tx, &new.client_id).await?;
                let subject = || Subject::client(&new.client_id);
                let mut events: Vec<NewEvent> = ended
                    .iter()
                    .map(|version| {
                        NewEvent::new(EventKind::ClientSecretRemoved, new.created_at, subject())
                            .detail(format!("version {version} (its grace ended)"))
                    })
                    .collect();
                events.push(
                    NewEvent::new(EventKind::ClientSecretRotated, new.created_at, subject())
                        .detail(format!("version {}", new.version)),
                );
                $tx::insert_events(&mut tx, &events).await?;
                tx.commit().await?;
                if !ended.is_empty() {
                    self.purge_destroyed().await;
                }
                Ok(true)
            }

            #[instrument(skip_all, fields(client = id, version))]
            async fn delete_superseded_secret(
                &self,
                id: &str,
                version: i64,
                now: i64,
            ) -> Result<bool> {
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
                let removed = NewEvent::new(EventKind::ClientSecretRemoved, now, Subject::client(id))
                    .detail(format!("version {version} (revoked)"));
                $tx::insert_events(&mut tx, &[removed]).await?;
                tx.commit().await?;
                self.purge_destroyed().await;
                Ok(true)
            }

            #[instrument(skip_all, fields(keyset))]
            async fn clients_of_keyset(&self, keyset: &str) -> Result<Vec<Client>> {
                decode_clients(
                    sqlx::query_as("SELECT * FROM clients WHERE token_keyset = $1 ORDER BY id")
                        .bind(keyset)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }
        }
    };
}

clients_sql!(SqliteStore, sqlite_tx);
clients_sql!(PgStore, pg_tx);
