//! Statements several transactions share, generic over the backend through
//! a small macro (sqlx's executor bounds are verbose to spell generically).

use sqlx::{Postgres, Sqlite, Transaction};

use crate::{
    Result,
    domain::event::NewEvent,
    domain::model::KeyState,
    store::{NewKey, SecretRow, unique_as_exists},
};

macro_rules! tx_helpers {
    ($db:ty, $insert_key:ident, $insert_secret:ident, $bump:ident) => {
        pub(in crate::store) async fn $insert_key(
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

        pub(in crate::store) async fn $insert_secret(
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
        pub(in crate::store) async fn $bump(
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
        pub(in crate::store) async fn bump_client(
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

        /// Writes `events` with the change in `tx`. Their ids are taken from
        /// the state row, whose lock the transaction then holds to its
        /// commit: ids become visible in the order they were given. An event
        /// with a `once` key already stored is skipped.
        pub(in crate::store) async fn insert_events(
            tx: &mut Transaction<'static, $db>,
            events: &[NewEvent],
        ) -> Result<u64> {
            if events.is_empty() {
                return Ok(0);
            }
            let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
            let last: i64 = sqlx::query_scalar(
                "UPDATE keyward_state SET event_seq = event_seq + $1 WHERE id = 1 \
                 RETURNING event_seq",
            )
            .bind(count)
            .fetch_one(&mut **tx)
            .await?;
            let mut stored = 0;
            for (id, event) in (last - count + 1..).zip(events) {
                stored += sqlx::query(
                    "INSERT INTO events (id, at, kind, keyset, kid, client, token, detail, \
                     once_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                     ON CONFLICT (once_key) DO NOTHING",
                )
                .bind(id)
                .bind(event.at)
                .bind(event.kind.as_str())
                .bind(&event.subject.keyset)
                .bind(&event.subject.kid)
                .bind(&event.subject.client)
                .bind(&event.subject.token)
                .bind(&event.detail)
                .bind(&event.once)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            }
            Ok(stored)
        }

        /// Bumps the token generation, so every replica reloads its tokens.
        pub(in crate::store) async fn bump_tokens_generation(
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

pub(super) mod sqlite {
    use super::*;
    tx_helpers!(Sqlite, insert_key, insert_secret, bump_generation);
}

pub(super) mod pg {
    use super::*;
    tx_helpers!(Postgres, insert_key, insert_secret, bump_generation);
}
