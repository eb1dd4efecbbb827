//! Key sets: creating them (with an active and a pending key), their
//! policies, listing and deleting them, and their keys and JWKS as shown.

use std::{collections::HashMap, sync::Arc};

use super::{Page, PageRequest, Service};
use crate::{
    Error, Result,
    domain::{
        algorithm::Algorithm,
        model::{self, KeyState},
        rotation::{self, Policy, PolicyInput},
    },
    store::{KeyRow, KeySetChange, KeySetRow, NewKeySet},
    view::JwksDoc,
};

/// A key set as shown to callers.
#[derive(Debug, Clone)]
pub struct KeySetInfo {
    /// Its name.
    pub name: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size, for RSA algorithms.
    pub rsa_bits: Option<u32>,
    /// Creation time.
    pub created_at: i64,
    /// Its rotation policy.
    pub policy: Policy,
    /// When the next rotation is due.
    pub next_rotation_at: i64,
    /// The kid that signs now.
    pub active_kid: Option<String>,
    /// Keys currently published.
    pub published_keys: u32,
    /// The `Cache-Control: max-age` its JWKS is served with.
    pub jwks_max_age: u64,
}

/// A key as shown to callers: stored times plus planned ones.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint (or an imported key's kid).
    pub kid: String,
    /// Its key set's name.
    pub keyset: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// Its lifecycle state.
    pub state: KeyState,
    /// The published JWK, as JSON.
    pub public_jwk: String,
    /// Creation time.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// When it starts (or started) signing.
    pub activates_at: Option<i64>,
    /// When it stops (or stopped) signing.
    pub retires_at: Option<i64>,
    /// When it leaves (or left) the JWKS.
    pub expires_at: Option<i64>,
}

/// Keys grouped by the id of their key set.
pub(super) fn by_keyset(keys: Vec<KeyRow>) -> HashMap<i64, Vec<KeyRow>> {
    let mut grouped: HashMap<i64, Vec<KeyRow>> = HashMap::new();
    for key in keys {
        grouped.entry(key.keyset_id).or_default().push(key);
    }
    grouped
}

impl Service {
    pub(super) async fn keyset_row(&self, name: &str) -> Result<KeySetRow> {
        model::validate_keyset_name(name)?;
        self.store
            .get_keyset(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key set {name:?} does not exist")))
    }

    pub(super) async fn keyset_info(&self, row: KeySetRow) -> Result<KeySetInfo> {
        let keys = self.store.list_keys(row.id).await?;
        self.summarise(row, &keys)
    }

    /// A key set as shown, from its row and (at least) its published keys.
    fn summarise(&self, row: KeySetRow, keys: &[KeyRow]) -> Result<KeySetInfo> {
        let policy = row.policy.clone();
        Ok(KeySetInfo {
            active_kid: keys
                .iter()
                .find(|k| k.state == KeyState::Active)
                .map(|k| k.kid.clone()),
            published_keys: u32::try_from(keys.iter().filter(|k| k.state.is_published()).count())
                .unwrap_or(u32::MAX),
            jwks_max_age: rotation::jwks_max_age(self.jwks_max_age, policy.prepublish),
            rsa_bits: Self::keyset_params(&row).1,
            name: row.name,
            algorithm: row.algorithm,
            created_at: row.created_at,
            next_rotation_at: row.next_rotation_at,
            policy,
        })
    }

    /// Stored times, completed with the planned ones for pending and active keys.
    pub(super) fn key_infos(row: &KeySetRow, keys: Vec<KeyRow>) -> Result<Vec<KeyInfo>> {
        let policy = row.policy.clone();
        let times: Vec<rotation::KeyTimes> = keys
            .iter()
            .map(|k| rotation::KeyTimes {
                state: k.state,
                created_at: k.created_at,
                activated_at: k.activated_at,
                retired_at: k.retired_at,
                expires_at: k.expires_at,
                revoked_at: k.revoked_at,
            })
            .collect();
        let planned = rotation::planned_times(&policy, row.next_rotation_at, &times);
        Ok(keys
            .into_iter()
            .zip(planned)
            .map(|(row, p)| KeyInfo {
                kid: row.kid,
                keyset: row.keyset,
                algorithm: row.algorithm,
                state: row.state,
                public_jwk: row.public_jwk,
                created_at: row.created_at,
                revoked_at: row.revoked_at,
                activates_at: p.activates_at,
                retires_at: p.retires_at,
                expires_at: p.expires_at,
            })
            .collect())
    }

    /// Creates a key set with an active and a pending key.
    pub async fn create_keyset(
        &self,
        name: &str,
        alg: Algorithm,
        rsa_bits: Option<u32>,
        policy: &PolicyInput,
    ) -> Result<KeySetInfo> {
        model::validate_keyset_name(name)?;
        let bits = model::resolve_rsa_bits(alg, rsa_bits)?;
        let now = self.clock.now();
        let policy = Policy::defaults_for(self.jwks_max_age).merged(policy)?;
        policy.validate(self.jwks_max_age, now)?;
        if self.store.get_keyset(name).await?.is_some() {
            // Checked up front to spare key generation; the unique index still
            // decides races.
            return Err(Error::AlreadyExists(format!(
                "key set {name:?} already exists"
            )));
        }
        let (active, pending) =
            tokio::try_join!(Self::generate_key(alg, bits), Self::generate_key(alg, bits))?;
        // Generation can take seconds (RSA): the set and both keys start now.
        let now = self.clock.now();
        // The keys are sealed for the key set's id, known once it is inserted.
        let seal = |keyset_id| {
            vec![
                self.stored_key(keyset_id, alg, &active, KeyState::Active, now),
                self.stored_key(keyset_id, alg, &pending, KeyState::Pending, now),
            ]
        };
        let row = self
            .store
            .insert_keyset(
                &NewKeySet {
                    name: name.to_string(),
                    algorithm: alg,
                    rsa_bits: bits.map(i64::from),
                    policy: policy.clone(),
                    next_rotation_at: policy.first_due(now, now),
                    created_at: now,
                },
                &seal,
            )
            .await?;
        tracing::info!(keyset = name, alg = %alg, "key set created");
        self.refresh_keysets().await;
        self.keyset_info(row).await
    }

    /// Changes a key set's rotation policy.
    pub async fn update_keyset(&self, name: &str, input: &PolicyInput) -> Result<KeySetInfo> {
        let row = self.keyset_row(name).await?;
        let now = self.clock.now();
        let current = row.policy.clone();
        let policy = current.clone().merged(input)?;
        policy.validate(self.jwks_max_age, now)?;
        if policy.max_token_ttl < current.max_token_ttl {
            self.check_client_token_ttls(name, policy.max_token_ttl)
                .await?;
        }
        let next_rotation_at = if policy.cadence == current.cadence {
            None
        } else {
            let keys = self.store.list_keys(row.id).await?;
            let anchor = keys
                .iter()
                .filter(|k| k.state == KeyState::Active)
                .find_map(|k| k.activated_at)
                .unwrap_or(now);
            Some(policy.first_due(anchor, now))
        };
        let change = KeySetChange {
            keyset: row.name.clone(),
            at: now,
            updates: Vec::new(),
            inserts: Vec::new(),
            next_rotation_at,
            policy: Some(policy.clone()),
        };
        self.commit_change(&row, &change).await?;
        tracing::info!(keyset = name, "key set policy updated");
        self.refresh_keysets().await;
        self.get_keyset(name)
    }

    /// Refuses a max-token-ttl below what clients already issue with this key set.
    async fn check_client_token_ttls(&self, name: &str, max_token_ttl: u64) -> Result<()> {
        let above: Vec<String> = self
            .store
            .clients_of_keyset(name)
            .await?
            .into_iter()
            .filter(|c| c.token_ttl > max_token_ttl)
            .map(|c| format!("{} ({})", c.id, model::format_duration(c.token_ttl)))
            .collect();
        if above.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "max-token-ttl {} is below the token-ttl of clients whose tokens key set {name:?} \
             signs: {}; lower theirs first (`keyward client put ID --token-ttl …`)",
            model::format_duration(max_token_ttl),
            above.join(", ")
        )))
    }

    /// A key set by name, from the in-memory view.
    pub fn get_keyset(&self, name: &str) -> Result<KeySetInfo> {
        let entry = self.keyset_entry(name)?;
        self.summarise(entry.row.clone(), &entry.keys)
    }

    /// One page of live key sets, by name: two queries whatever its size.
    pub async fn list_keysets(&self, page: &PageRequest) -> Result<Page<KeySetInfo>> {
        let after = page.after()?;
        let mut rows = self.store.list_keysets(&after, page.fetch_limit()).await?;
        let next = page.next_token(&mut rows, |r| &r.name);
        let keys = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => {
                self.store
                    .published_keys_between(&first.name, &last.name)
                    .await?
            }
            _ => Vec::new(),
        };
        let mut by_set = by_keyset(keys);
        let items = rows
            .into_iter()
            .map(|row| {
                let keys = by_set.remove(&row.id).unwrap_or_default();
                self.summarise(row, &keys)
            })
            .collect::<Result<_>>()?;
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Deletes a key set; its kids stay reserved.
    pub async fn delete_keyset(&self, name: &str) -> Result<()> {
        // An unknown name gets NotFound from the delete itself.
        model::validate_keyset_name(name)?;
        let users: Vec<String> = self
            .store
            .clients_of_keyset(name)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        if !users.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "key set {name:?} signs client-credentials tokens for {}; point them at another key set (`keyward client put ID --token-keyset …`) first",
                users.join(", ")
            )));
        }
        if !self.store.delete_keyset(name, self.clock.now()).await? {
            return Err(Error::NotFound(format!("key set {name:?} does not exist")));
        }
        tracing::info!(keyset = name, "key set deleted");
        self.refresh_keysets().await;
        Ok(())
    }

    /// One page of a key set's keys, oldest first, with planned times.
    pub async fn list_keys(&self, keyset: &str, page: &PageRequest) -> Result<Page<KeyInfo>> {
        let row = self.keyset_row(keyset).await?;
        let keys = self.store.list_keys(row.id).await?;
        page.page_of(Self::key_infos(&row, keys)?, |k| &k.kid)
    }

    /// The key set's JWKS from the in-memory view.
    pub fn jwks(&self, keyset: &str) -> Result<Arc<JwksDoc>> {
        model::validate_keyset_name(keyset)?;
        self.keysets
            .jwks(keyset)
            .ok_or_else(|| Error::NotFound(format!("key set {keyset:?} does not exist")))
    }
}
