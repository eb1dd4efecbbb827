//! OIDC clients and their secrets: sealed per version, verified in constant
//! time, superseded versions valid for a grace period.

use std::sync::Arc;

use super::Service;
use crate::{
    Error, Result,
    crypto::{aead::AeadContext, b64url, random, secrets_equal},
    domain::{
        client::{Client, ClientPatch, check_secret},
        model,
        secret::SecretString,
    },
    store::SecretRow,
    view::ClientEntry,
};

/// Grace period of a superseded client secret when the caller gives none.
pub const DEFAULT_SECRET_GRACE: u64 = 48 * 3600;
/// Longest grace period.
pub const MAX_SECRET_GRACE: u64 = 366 * 86_400;

const SECRETS_TABLE: &str = "client_secrets";

/// `PutClient`'s result.
#[derive(Debug)]
pub struct PutClientOutcome {
    /// The client as stored.
    pub client: Client,
    /// Whether this call created it.
    pub created: bool,
    /// The secret keyward generated, shown this once.
    pub generated_secret: Option<SecretString>,
}

/// A client secret as read back.
#[derive(Debug)]
pub struct ClientSecret {
    /// The secret.
    pub secret: SecretString,
    /// Its version.
    pub version: i64,
    /// End of its grace period, for a superseded version.
    pub valid_until: Option<i64>,
}

/// `RotateClientSecret`'s result.
#[derive(Debug)]
pub struct RotatedSecret {
    /// The new current version.
    pub version: i64,
    /// The secret keyward generated, shown this once.
    pub generated_secret: Option<SecretString>,
    /// When the previous version stops verifying.
    pub previous_valid_until: i64,
}

/// `RevokeClientSecret`'s result.
#[derive(Debug)]
pub struct RevokedSecret {
    /// The version revoked.
    pub version: i64,
    /// The current version, still valid.
    pub current_version: i64,
}

impl Service {
    /// A client's token key set must exist and allow its token lifetime.
    async fn check_token_settings(&self, client: &Client) -> Result<()> {
        let Some(name) = &client.token_keyset else {
            return Ok(());
        };
        let set = self.store.get_keyset(name).await?.ok_or_else(|| {
            Error::invalid("token_keyset", format!("key set {name:?} does not exist"))
        })?;
        if client.token_ttl > set.policy.max_token_ttl {
            return Err(Error::invalid(
                "token_ttl",
                format!(
                    "{} is above key set {name:?}'s max-token-ttl ({})",
                    model::format_duration(client.token_ttl),
                    model::format_duration(set.policy.max_token_ttl)
                ),
            ));
        }
        Ok(())
    }

    async fn stored_client(&self, id: &str) -> Result<Client> {
        model::validate_client_id(id)?;
        self.store
            .get_client(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("client {id:?} does not exist")))
    }

    fn generate_secret() -> SecretString {
        SecretString::new(b64url(&random::bytes::<32>()))
    }

    fn seal_secret(&self, client_id: &str, version: i64, secret: &SecretString) -> Vec<u8> {
        let row = AeadContext {
            table: SECRETS_TABLE,
            id: client_id,
            version,
        };
        self.keyring.seal(&row, secret.expose().as_bytes())
    }

    /// Creates a client, or updates an existing client's metadata.
    pub async fn put_client(&self, id: &str, patch: ClientPatch) -> Result<PutClientOutcome> {
        model::validate_client_id(id)?;
        let patch = patch.validate()?;
        let now = self.clock.now();
        if let Some(existing) = self.store.get_client(id).await? {
            if patch.secret.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "client {id:?} exists; change its secret with RotateClientSecret (`keyward client rotate`)"
                )));
            }
            let updated = existing.patched(patch, now)?;
            self.check_token_settings(&updated).await?;
            if !self.store.update_client(&updated).await? {
                return Err(Error::NotFound(format!("client {id:?} does not exist")));
            }
            tracing::info!(client = id, "client updated");
            self.refresh_clients().await;
            return Ok(PutClientOutcome {
                client: updated,
                created: false,
                generated_secret: None,
            });
        }
        let (secret, generated) = match &patch.secret {
            Some(given) => (given.clone(), false),
            None => (Self::generate_secret(), true),
        };
        let client = Client::new(id, now).patched(patch, now)?;
        self.check_token_settings(&client).await?;
        let secret_row = SecretRow {
            client_id: id.to_string(),
            version: 1,
            secret: self.seal_secret(id, 1, &secret),
            master_key_id: self.keyring.id().to_string(),
            created_at: now,
            valid_until: None,
        };
        self.store.insert_client(&client, &secret_row).await?;
        tracing::info!(client = id, generated_secret = generated, "client created");
        self.refresh_clients().await;
        Ok(PutClientOutcome {
            client,
            created: true,
            generated_secret: generated.then_some(secret),
        })
    }

    /// A client from the in-memory view.
    pub(super) fn client_entry(&self, id: &str) -> Result<Arc<ClientEntry>> {
        model::validate_client_id(id)?;
        self.clients
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("client {id:?} does not exist")))
    }

    /// A client's metadata.
    pub fn get_client(&self, id: &str) -> Result<Client> {
        Ok(self.client_entry(id)?.client.clone())
    }

    /// One page of clients, by id.
    pub async fn list_clients(&self, page: &super::PageRequest) -> Result<super::Page<Client>> {
        let after = page.after()?;
        let mut rows = self.store.list_clients(&after, page.fetch_limit()).await?;
        let next_page_token = page.next_token(&mut rows, |r| &r.id);
        Ok(super::Page {
            items: rows,
            next_page_token,
        })
    }

    /// Deletes a client and all its secrets.
    pub async fn delete_client(&self, id: &str) -> Result<()> {
        model::validate_client_id(id)?;
        if !self.store.delete_client(id, self.clock.now()).await? {
            return Err(Error::NotFound(format!("client {id:?} does not exist")));
        }
        tracing::info!(client = id, "client deleted");
        self.refresh_clients().await;
        Ok(())
    }

    /// Seals a secret version again under the current master key.
    pub(super) fn reseal_secret(
        &self,
        client_id: &str,
        version: i64,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let row = AeadContext {
            table: SECRETS_TABLE,
            id: client_id,
            version,
        };
        let plain = self.open(&row, key_id, sealed)?;
        Ok(self.keyring.seal(&row, plain.expose()))
    }

    fn open_secret(&self, row: &SecretRow) -> Result<SecretString> {
        let row_id = AeadContext {
            table: SECRETS_TABLE,
            id: &row.client_id,
            version: row.version,
        };
        let bytes = self.open(&row_id, &row.master_key_id, &row.secret)?;
        String::from_utf8(bytes.expose().to_vec())
            .map(SecretString::new)
            .map_err(|_| Error::DataLoss)
    }

    /// The current secret, or version `version`. The audit log records
    /// every read.
    pub fn get_client_secret(&self, id: &str, version: Option<i64>) -> Result<ClientSecret> {
        let client = self.client_entry(id)?;
        let current = client.client.secret_version;
        let wanted = version.unwrap_or(current);
        let row = client.secrets.iter().find(|s| s.version == wanted).ok_or_else(|| {
            Error::NotFound(format!(
                "client {id:?} has no secret version {wanted} (current is {current}; superseded versions are deleted once their grace period ends)"
            ))
        })?;
        // The audit log has every read; this line is for debugging only.
        tracing::debug!(client = id, version = wanted, "client secret read");
        Ok(ClientSecret {
            secret: self.open_secret(row)?,
            version: row.version,
            valid_until: row.valid_until,
        })
    }

    /// Makes a new secret current; the previous stays valid for `grace_seconds`.
    pub async fn rotate_client_secret(
        &self,
        id: &str,
        grace_seconds: Option<u64>,
        secret: Option<SecretString>,
    ) -> Result<RotatedSecret> {
        let client = self.stored_client(id).await?;
        if let Some(given) = &secret {
            check_secret(given)?;
        }
        let grace = grace_seconds.unwrap_or(DEFAULT_SECRET_GRACE);
        if grace > MAX_SECRET_GRACE {
            return Err(Error::invalid(
                "grace_seconds",
                format!("{grace} is over the limit of {MAX_SECRET_GRACE} seconds (366 days)"),
            ));
        }
        let (secret, generated) = match secret {
            Some(given) => (given, false),
            None => (Self::generate_secret(), true),
        };
        let now = self.clock.now();
        let version = client.secret_version + 1;
        let previous_valid_until = now.saturating_add(model::secs_i64(grace));
        let row = SecretRow {
            client_id: id.to_string(),
            version,
            secret: self.seal_secret(id, version, &secret),
            master_key_id: self.keyring.id().to_string(),
            created_at: now,
            valid_until: None,
        };
        if !self
            .store
            .add_client_secret(&row, previous_valid_until)
            .await?
        {
            return Err(Error::FailedPrecondition(format!(
                "client {id:?} secret was rotated concurrently; nothing was changed, retry if needed"
            )));
        }
        tracing::info!(client = id, version, "client secret rotated");
        self.refresh_clients().await;
        Ok(RotatedSecret {
            version,
            generated_secret: generated.then_some(secret),
            previous_valid_until,
        })
    }

    /// Ends superseded secret version `version` now (a leaked previous secret).
    /// The current version cannot be revoked: rotating with a zero grace
    /// replaces it and ends every older one.
    pub async fn revoke_client_secret(&self, id: &str, version: i64) -> Result<RevokedSecret> {
        let client = self.stored_client(id).await?;
        if version < 1 {
            return Err(Error::invalid("version", "secret versions start at 1"));
        }
        if version == client.secret_version {
            return Err(Error::FailedPrecondition(format!(
                "version {version} is client {id:?}'s current secret; replace it with \
                 `keyward client rotate {id} --grace 0s`, which also ends every older version"
            )));
        }
        let now = self.clock.now();
        let live = self
            .store
            .client_secrets(id)
            .await?
            .into_iter()
            .any(|s| s.version == version && s.valid_until.is_none_or(|until| until > now));
        if !live
            || !self
                .store
                .delete_superseded_secret(id, version, now)
                .await?
        {
            return Err(Error::NotFound(format!(
                "client {id:?} has no valid secret version {version} (current is {}; \
                 superseded versions end with their grace period)",
                client.secret_version
            )));
        }
        tracing::warn!(client = id, version, "client secret version revoked");
        self.refresh_clients().await;
        Ok(RevokedSecret {
            version,
            current_version: client.secret_version,
        })
    }

    /// Checks `presented` against the current secret and every superseded one
    /// still in its grace period. Every candidate is compared, in constant time.
    pub fn verify_client_secret(&self, id: &str, presented: &SecretString) -> Result<Option<i64>> {
        let client = self.client_entry(id)?;
        self.matching_secret_version(&client, presented)
    }

    /// The version of the client's secret that `presented` matches, if any
    /// is current or in its grace period.
    pub(super) fn matching_secret_version(
        &self,
        client: &ClientEntry,
        presented: &SecretString,
    ) -> Result<Option<i64>> {
        let now = self.clock.now();
        let mut matched = None;
        for row in &client.secrets {
            if row.valid_until.is_some_and(|until| until <= now) {
                continue;
            }
            let stored = self.open_secret(row)?;
            if secrets_equal(stored.expose().as_bytes(), presented.expose().as_bytes())
                && matched.is_none()
            {
                matched = Some(row.version);
            }
        }
        Ok(matched)
    }
}
