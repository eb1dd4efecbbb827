//! Key sets, signing, and the key lifecycle: creation with an active and a
//! pending key, scheduled rotation ([`Service::rotate_due`]), the manual
//! emergency rotation, and revocation. Every transition is planned by the pure
//! [`crate::domain::rotation`] functions and applied in one transaction conditional on
//! the key set's version, so racing replicas change a key set exactly once.

use std::sync::Arc;

use super::{
    Page, PageRequest, Service,
    claims::{self, SignProfile},
};
use crate::{
    Error, Result,
    crypto::{
        aead::AeadContext,
        keys::{self, SigningKey},
    },
    domain::model::{self, Algorithm, KeyState, secs_i64, secs_u64},
    domain::rotation::{self, KeyView, Plan, Policy},
    store::{KeyRow, KeySetChange, KeySetRow, KeyUpdate, NewKey, NewKeySet, SealedKey},
    view::{JwksDoc, KeySetEntry},
};

/// Largest accepted `claims_json`, in bytes.
pub const MAX_CLAIMS_BYTES: usize = 16 * 1024;
/// Token lifetime when the caller gives none (capped by the key set's max).
pub const DEFAULT_TOKEN_TTL: u64 = 3600;
pub use crate::domain::rotation::{MAX_TOKEN_TTL, PolicyInput};

pub(super) const KEYS_TABLE: &str = "keys";
/// The associated-data version of key ciphertext bound to its key set and
/// algorithm (`keys/<keyset id>/<alg>/<kid>`); version 1 named the kid only.
const BOUND_KEY_VERSION: i64 = 2;

/// What a key's private half is sealed for: moved to another key set, or
/// relabelled with another algorithm, its ciphertext no longer opens.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyBinding<'a> {
    /// The owning key set's id.
    pub keyset_id: i64,
    /// The key set's algorithm.
    pub alg: Algorithm,
    /// The key's kid.
    pub kid: &'a str,
}

impl KeyBinding<'_> {
    fn row_id(&self) -> String {
        format!("{}/{}/{}", self.keyset_id, self.alg.as_str(), self.kid)
    }
}

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

/// A signed token.
#[derive(Debug, Clone)]
pub struct SignedJwt {
    /// Compact JWS.
    pub jwt: String,
    /// The signing key's kid.
    pub kid: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// What a rotation sweep (or an operator's change) did to a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationAction {
    /// A key started signing.
    Activate,
    /// A key stopped signing; it stays published.
    Retire,
    /// A retired key left the JWKS.
    Expire,
    /// A key was revoked.
    Revoke,
    /// A new pending key was published.
    Publish,
    /// A due rotation waits (the pending key is too young).
    Wait,
    /// Another process changed the key set first.
    AlreadyRotated,
}

impl RotationAction {
    /// Its name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Retire => "retire",
            Self::Expire => "expire",
            Self::Revoke => "revoke",
            Self::Publish => "publish",
            Self::Wait => "wait",
            Self::AlreadyRotated => "already-rotated",
        }
    }
}

/// A `SignJwt` request.
#[derive(Debug, Clone, Default)]
pub struct SignRequest {
    /// The key set that signs.
    pub keyset: String,
    /// Claims, a JSON object (empty means `{}`).
    pub claims_json: String,
    /// Lifetime in seconds.
    pub ttl_seconds: Option<u64>,
    /// Claim rules to apply.
    pub profile: SignProfile,
    /// Sets `sub`.
    pub subject: Option<String>,
    /// Sets `email`.
    pub email: Option<String>,
}

/// One thing a rotation sweep did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    /// The key set.
    pub keyset: String,
    /// What happened.
    pub action: RotationAction,
    /// The key concerned (empty for `already-rotated`).
    pub kid: String,
    /// Human-readable detail.
    pub detail: String,
}

/// The result of a manual rotation or a revocation.
#[derive(Debug, Clone)]
pub struct Transition {
    /// What changed.
    pub events: Vec<RotationEvent>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
    /// The key set's keys afterwards.
    pub keys: Vec<KeyInfo>,
}

/// What the pure planner needs of stored keys.
fn views_of(keys: &[KeyRow]) -> Vec<KeyView> {
    keys.iter()
        .map(|k| KeyView {
            kid: k.kid.clone(),
            state: k.state,
            created_at: k.created_at,
            expires_at: k.expires_at,
        })
        .collect()
}

/// Keys grouped by the id of their key set.
fn by_keyset(keys: Vec<KeyRow>) -> std::collections::HashMap<i64, Vec<KeyRow>> {
    let mut grouped: std::collections::HashMap<i64, Vec<KeyRow>> = std::collections::HashMap::new();
    for key in keys {
        grouped.entry(key.keyset_id).or_default().push(key);
    }
    grouped
}

impl Service {
    /// Generates a key off the async workers.
    async fn generate_key(alg: Algorithm, rsa_bits: Option<u32>) -> Result<keys::GeneratedKey> {
        tokio::task::spawn_blocking(move || keys::generate(alg, rsa_bits.unwrap_or(2048)))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// A generated key as stored in key set `keyset_id`, its private half sealed.
    fn stored_key(
        &self,
        keyset_id: i64,
        alg: Algorithm,
        generated: &keys::GeneratedKey,
        state: KeyState,
        created_at: i64,
    ) -> NewKey {
        let kid = generated.key.kid().to_string();
        let binding = KeyBinding {
            keyset_id,
            alg,
            kid: &kid,
        };
        let private_key = self.seal_key(&binding, generated.pkcs8.expose());
        let public_jwk =
            serde_json::Value::Object(generated.key.public_jwk().to_published(&kid, alg))
                .to_string();
        NewKey {
            kid,
            state,
            algorithm: alg,
            public_jwk,
            private_key,
            master_key_id: self.keyring.id().to_string(),
            created_at,
        }
    }

    /// Generates a key for the existing key set `row` and seals its private half.
    async fn new_key(&self, row: &KeySetRow, state: KeyState) -> Result<NewKey> {
        let (alg, bits) = Self::keyset_params(row);
        let generated = Self::generate_key(alg, bits).await?;
        Ok(self.stored_key(row.id, alg, &generated, state, self.clock.now()))
    }

    /// Seals a private key (PKCS#8) for the key row `binding` names.
    pub(super) fn seal_key(&self, binding: &KeyBinding<'_>, pkcs8: &[u8]) -> Vec<u8> {
        let id = binding.row_id();
        self.keyring.seal(
            &AeadContext {
                table: KEYS_TABLE,
                id: &id,
                version: BOUND_KEY_VERSION,
            },
            pkcs8,
        )
    }

    /// Opens a key's sealed private half: bound to its key set and algorithm,
    /// or, for a key sealed before that binding existed, to its kid alone.
    pub(super) fn open_key(
        &self,
        binding: &KeyBinding<'_>,
        sealed: &SealedKey,
    ) -> Result<crate::domain::secret::SecretBytes> {
        self.open_key_as(binding, &sealed.master_key_id, &sealed.private_key)
            .map(|(pkcs8, _)| pkcs8)
    }

    /// Seals a key's private half again under the current master key, for
    /// the same row binding it was sealed for.
    pub(super) fn reseal_key(
        &self,
        binding: &KeyBinding<'_>,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let (pkcs8, legacy) = self.open_key_as(binding, key_id, sealed)?;
        Ok(if legacy {
            self.keyring
                .seal(&Self::legacy_row(binding), pkcs8.expose())
        } else {
            self.seal_key(binding, pkcs8.expose())
        })
    }

    /// The legacy row a key was sealed for before the binding: its kid.
    fn legacy_row<'a>(binding: &KeyBinding<'a>) -> AeadContext<'a> {
        AeadContext {
            table: KEYS_TABLE,
            id: binding.kid,
            version: 1,
        }
    }

    /// Opens a private half, saying whether it was sealed for the legacy row.
    fn open_key_as(
        &self,
        binding: &KeyBinding<'_>,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<(crate::domain::secret::SecretBytes, bool)> {
        let id = binding.row_id();
        let bound = AeadContext {
            table: KEYS_TABLE,
            id: &id,
            version: BOUND_KEY_VERSION,
        };
        if let Ok(pkcs8) = self.keyring.open(&bound, key_id, sealed) {
            return Ok((pkcs8, false));
        }
        let pkcs8 = self.open(&Self::legacy_row(binding), key_id, sealed)?;
        Ok((pkcs8, true))
    }

    fn keyset_params(row: &KeySetRow) -> (Algorithm, Option<u32>) {
        (
            row.algorithm,
            row.rsa_bits.and_then(|b| u32::try_from(b).ok()),
        )
    }

    pub(super) async fn keyset_row(&self, name: &str) -> Result<KeySetRow> {
        model::validate_keyset_name(name)?;
        self.store
            .get_keyset(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key set {name:?} does not exist")))
    }

    async fn keyset_info(&self, row: KeySetRow) -> Result<KeySetInfo> {
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
            .filter(|c| secs_u64(c.token_ttl) > max_token_ttl)
            .map(|c| {
                format!(
                    "{} ({})",
                    c.id,
                    model::format_duration(secs_u64(c.token_ttl))
                )
            })
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

    /// Turns a plan into stored changes, generating the keys it needs (outside
    /// any transaction, off the async workers).
    async fn prepare_change(
        &self,
        row: &KeySetRow,
        plan: &Plan,
        policy: &Policy,
        now: i64,
    ) -> Result<KeySetChange> {
        let mut inserts = Vec::new();
        if plan.add_active {
            inserts.push(self.new_key(row, KeyState::Active).await?);
        }
        if plan.add_pending {
            inserts.push(self.new_key(row, KeyState::Pending).await?);
        }
        let updates = plan
            .changes
            .iter()
            .map(|c| {
                let mut u = KeyUpdate {
                    kid: c.kid.clone(),
                    from: c.from,
                    to: c.to,
                    activated_at: None,
                    retired_at: None,
                    expires_at: None,
                    revoked_at: None,
                    destroy_private: !matches!(c.to, KeyState::Active | KeyState::Pending),
                };
                match c.to {
                    KeyState::Active => u.activated_at = Some(now),
                    KeyState::Retired => {
                        u.retired_at = Some(now);
                        u.expires_at = Some(now.saturating_add(secs_i64(policy.retain)));
                    }
                    KeyState::Revoked => u.revoked_at = Some(now),
                    KeyState::Expired | KeyState::Pending => {}
                }
                u
            })
            .collect();
        Ok(KeySetChange {
            updates,
            inserts,
            next_rotation_at: plan.next_rotation_at,
            policy: None,
        })
    }

    fn events_of(keyset: &str, plan: &Plan, change: Option<&KeySetChange>) -> Vec<RotationEvent> {
        let mut events: Vec<RotationEvent> = plan
            .changes
            .iter()
            .map(|c| RotationEvent {
                keyset: keyset.to_string(),
                action: match c.to {
                    KeyState::Active => RotationAction::Activate,
                    KeyState::Retired => RotationAction::Retire,
                    KeyState::Expired => RotationAction::Expire,
                    KeyState::Revoked => RotationAction::Revoke,
                    KeyState::Pending => RotationAction::Publish,
                },
                kid: c.kid.clone(),
                detail: format!("{} -> {}", c.from, c.to),
            })
            .collect();
        let inserted = change.map(|c| c.inserts.as_slice()).unwrap_or_default();
        for key in inserted {
            events.push(RotationEvent {
                keyset: keyset.to_string(),
                action: if key.state == KeyState::Active {
                    RotationAction::Activate
                } else {
                    RotationAction::Publish
                },
                kid: key.kid.clone(),
                detail: format!("new {} key", key.state),
            });
        }
        if change.is_none() && (plan.add_pending || plan.add_active) {
            events.push(RotationEvent {
                keyset: keyset.to_string(),
                action: RotationAction::Publish,
                kid: String::new(),
                detail: "a new pending key would be generated".into(),
            });
        }
        if let Some(next) = plan.next_rotation_at
            && let Some(e) = events
                .iter_mut()
                .find(|e| e.action == RotationAction::Activate)
        {
            e.detail
                .push_str(&format!("; next rotation {}", model::format_time(next)));
        }
        if let Some(reason) = &plan.waiting {
            events.push(RotationEvent {
                keyset: keyset.to_string(),
                action: RotationAction::Wait,
                kid: String::new(),
                detail: reason.clone(),
            });
        }
        events
    }

    /// Applies an operator's change, or says the key set moved under it.
    pub(super) async fn commit_change(&self, row: &KeySetRow, change: &KeySetChange) -> Result<()> {
        if self
            .store
            .apply_keyset_change(row.id, row.version, change)
            .await?
        {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "key set {:?} changed concurrently; nothing was changed, check `keys list` and retry if needed",
                row.name
            )))
        }
    }

    fn raced(keyset: &str) -> RotationEvent {
        RotationEvent {
            keyset: keyset.to_string(),
            action: RotationAction::AlreadyRotated,
            kid: String::new(),
            detail: "another keyward process changed this key set first; nothing changed here"
                .into(),
        }
    }

    /// Performs (or, with `dry_run`, reports) every transition due now, for one
    /// key set or all. Racing callers change each key set once: the others
    /// report `already-rotated` and change nothing.
    pub async fn rotate_due(
        &self,
        keyset: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<RotationEvent>> {
        // Every key set and its published keys, from one consistent snapshot
        // (two queries whatever the number of key sets). Expired and revoked
        // keys play no part in planning.
        let (rows, keys) = match keyset {
            Some(name) => {
                let row = self.keyset_row(name).await?;
                let keys = self.store.list_keys(row.id).await?;
                // Read separately: if another process changed the set in
                // between, this view is torn and its change is made already.
                let reread = self.store.get_keyset(name).await?;
                if reread.as_ref().map(|r| r.version) != Some(row.version) {
                    return Ok(vec![Self::raced(name)]);
                }
                (vec![row], keys)
            }
            None => {
                let snapshot = self.store.published_since(None).await?;
                (snapshot.keysets, snapshot.keys)
            }
        };
        let mut by_set = by_keyset(keys);
        let mut events = Vec::new();
        let mut changed = false;
        for row in rows {
            let now = self.clock.now();
            let keys = by_set.remove(&row.id).unwrap_or_default();
            let views = views_of(&keys);
            let policy = row.policy.clone();
            let plan = rotation::plan(now, &policy, row.next_rotation_at, &views);
            if plan.is_empty() || dry_run {
                events.extend(Self::events_of(&row.name, &plan, None));
                continue;
            }
            let change = self.prepare_change(&row, &plan, &policy, now).await?;
            if self
                .store
                .apply_keyset_change(row.id, row.version, &change)
                .await?
            {
                changed = true;
                if plan.rotates {
                    self.metrics
                        .rotated(&row.name, crate::ops::metrics::Trigger::Schedule);
                }
                let done = Self::events_of(&row.name, &plan, Some(&change));
                for e in &done {
                    tracing::info!(keyset = %e.keyset, action = e.action.as_str(), kid = %e.kid, detail = %e.detail, "rotation");
                }
                events.extend(done);
            } else {
                events.push(Self::raced(&row.name));
            }
        }
        if changed {
            self.refresh_keysets().await;
        }
        Ok(events)
    }

    async fn forced_rotation(&self, row: &KeySetRow, revoke_active: bool) -> Result<Transition> {
        let now = self.clock.now();
        let keys = self.store.list_keys(row.id).await?;
        let plan = rotation::force_rotation(
            now,
            &row.policy,
            self.jwks_max_age,
            row.next_rotation_at,
            &views_of(&keys),
            revoke_active,
        );
        self.apply_plan(row, &plan, now, Vec::new()).await
    }

    /// Applies an operator's plan (plus `extra` keys to insert) in one
    /// conditional transaction, then refreshes the JWKS and reports the set's
    /// keys as they now are.
    pub(super) async fn apply_plan(
        &self,
        row: &KeySetRow,
        plan: &Plan,
        now: i64,
        extra: Vec<NewKey>,
    ) -> Result<Transition> {
        let mut change = self.prepare_change(row, plan, &row.policy, now).await?;
        change.inserts.extend(extra);
        self.commit_change(row, &change).await?;
        for w in &plan.warnings {
            tracing::warn!(keyset = %row.name, "{w}");
        }
        self.refresh_keysets().await;
        let fresh = self.keyset_row(&row.name).await?;
        let keys = Self::key_infos(&fresh, self.store.list_keys(fresh.id).await?)?;
        Ok(Transition {
            events: Self::events_of(&row.name, plan, Some(&change)),
            warnings: plan.warnings.clone(),
            keys,
        })
    }

    /// Emergency rotation now: the pending key signs at once, the active key
    /// retires, a new pending key is published.
    pub async fn rotate_keyset(&self, name: &str) -> Result<Transition> {
        let row = self.keyset_row(name).await?;
        let t = self.forced_rotation(&row, false).await?;
        self.metrics
            .rotated(name, crate::ops::metrics::Trigger::Manual);
        tracing::info!(keyset = name, "key set rotated manually");
        Ok(t)
    }

    /// Revokes a key: it leaves the JWKS at once and never signs again.
    /// Revoking the active key promotes a successor at once.
    pub async fn revoke_key(&self, kid: &str) -> Result<Transition> {
        model::validate_kid(kid)?;
        let key = self
            .store
            .find_key(kid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no key has kid {kid:?}")))?;
        let row = self.keyset_row(&key.keyset).await.map_err(|e| match e {
            Error::NotFound(_) => Error::FailedPrecondition(format!(
                "key {kid:?} belonged to a deleted key set; it is already unpublished"
            )),
            other => other,
        })?;
        let state = key.state;
        let t = match state {
            KeyState::Active => {
                let mut t = self.forced_rotation(&row, true).await?;
                self.metrics
                    .rotated(&row.name, crate::ops::metrics::Trigger::Revocation);
                t.warnings.insert(
                    0,
                    format!("revoked the active key {kid}; a successor signs from now on"),
                );
                t
            }
            KeyState::Pending | KeyState::Retired => {
                let plan = Plan {
                    changes: vec![rotation::KeyChange {
                        kid: kid.to_string(),
                        from: state,
                        to: KeyState::Revoked,
                    }],
                    add_pending: state == KeyState::Pending,
                    ..Plan::default()
                };
                self.apply_plan(&row, &plan, self.clock.now(), Vec::new())
                    .await?
            }
            KeyState::Expired | KeyState::Revoked => {
                return Err(Error::FailedPrecondition(format!(
                    "key {kid:?} is already {state} and unpublished"
                )));
            }
        };
        self.metrics.revoked(&row.name);
        tracing::warn!(keyset = %row.name, kid, "key revoked");
        Ok(t)
    }

    /// A live key set from the in-memory view.
    pub(super) fn keyset_entry(&self, name: &str) -> Result<Arc<KeySetEntry>> {
        model::validate_keyset_name(name)?;
        self.keysets
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("key set {name:?} does not exist")))
    }

    /// The key set's active key, parsed for signing: opened and parsed once
    /// per active key, then kept with the key set's view entry.
    fn signer(&self, entry: &KeySetEntry) -> Result<Arc<SigningKey>> {
        if let Some(key) = entry.signer() {
            return Ok(key);
        }
        let row = &entry.row;
        let sealed = entry.active.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!("key set {:?} has no active key", row.name))
        })?;
        let alg = row.algorithm;
        let binding = KeyBinding {
            keyset_id: row.id,
            alg,
            kid: &sealed.kid,
        };
        let pkcs8 = self.open_key(&binding, sealed)?;
        let key = SigningKey::from_pkcs8(alg, pkcs8.expose()).map_err(|e| {
            tracing::error!(kid = %sealed.kid, error = %e, "stored private key does not parse");
            Error::DataLoss
        })?;
        // Imported keys keep the kid their tokens already carry.
        Ok(entry.keep_signer(Arc::new(key.with_kid(sealed.kid.clone()))))
    }

    /// Signs a token with the key set's active key, as `SignJwt` asks.
    pub async fn sign_jwt(&self, req: &SignRequest) -> Result<SignedJwt> {
        let claims_json = if req.claims_json.is_empty() {
            "{}"
        } else {
            &req.claims_json
        };
        if claims_json.len() > MAX_CLAIMS_BYTES {
            return Err(Error::invalid(
                "claims_json",
                format!(
                    "{} bytes is over the limit of {MAX_CLAIMS_BYTES} bytes",
                    claims_json.len()
                ),
            ));
        }
        let mut claims = match serde_json::from_str::<serde_json::Value>(claims_json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(Error::invalid("claims_json", "must be a JSON object")),
            Err(e) => {
                return Err(Error::invalid(
                    "claims_json",
                    format!("not valid JSON: {e}"),
                ));
            }
        };
        for reserved in ["iat", "exp"] {
            if claims.contains_key(reserved) {
                return Err(Error::invalid(
                    "claims_json",
                    format!("{reserved:?} is set by keyward; use ttl to choose the lifetime"),
                ));
            }
        }
        claims::apply_subject_and_email(&mut claims, req.subject.as_deref(), req.email.as_deref())?;
        let entry = self.keyset_entry(&req.keyset)?;
        req.profile.apply(&mut claims, entry.row.algorithm)?;
        self.sign_claims(&entry, claims, req.ttl_seconds).await
    }

    /// Signs `claims` with the active key of `entry`, setting `iat` and `exp`.
    /// `ttl` defaults to an hour (capped by the key set's max-token-ttl).
    pub(super) async fn sign_claims(
        &self,
        entry: &KeySetEntry,
        claims: serde_json::Map<String, serde_json::Value>,
        ttl: Option<u64>,
    ) -> Result<SignedJwt> {
        let row = &entry.row;
        let max = row.policy.max_token_ttl;
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL.min(max));
        if ttl == 0 || ttl > max {
            return Err(Error::invalid(
                "ttl_seconds",
                format!(
                    "{} is out of range for key set {:?}: use 1s to its max-token-ttl ({})",
                    model::format_duration(ttl),
                    row.name,
                    model::format_duration(max)
                ),
            ));
        }
        let key = self.signer(entry)?;
        let now = self.clock.now();
        let exp = now.saturating_add(secs_i64(ttl));
        let kid = key.kid().to_string();
        let token = self.jwt_signer.sign(key, claims, now, exp).await?;
        self.metrics.token_issued(&row.name, row.algorithm.as_str());
        Ok(SignedJwt {
            jwt: token,
            kid,
            expires_at: exp,
        })
    }

    /// The key set's JWKS from the in-memory view.
    pub fn jwks(&self, keyset: &str) -> Result<Arc<JwksDoc>> {
        model::validate_keyset_name(keyset)?;
        self.keysets
            .jwks(keyset)
            .ok_or_else(|| Error::NotFound(format!("key set {keyset:?} does not exist")))
    }
}
