//! Every live key set in memory: its row, its published keys, the sealed
//! private half of its active key (parsed for signing on first use) and its
//! JWKS, rendered once per change.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, OnceLock, RwLock},
};

use serde_json::{Map, Value};

use crate::{
    Result,
    crypto::{b64url, keys::SigningKey, sha256},
    store::{KeyRow, KeySetRow, SealedKey, Store},
};

/// One key set's JWKS, ready to send.
#[derive(Debug)]
pub struct JwksDoc {
    /// `{"keys":[…]}`.
    pub body: String,
    /// Strong ETag, quoted.
    pub etag: String,
    /// `Cache-Control: max-age`, seconds.
    pub max_age: u64,
}

impl JwksDoc {
    fn render(keys: Vec<Value>, max_age: u64) -> Self {
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        let body = Value::Object(doc).to_string();
        let etag = format!("\"{}\"", b64url(&sha256(body.as_bytes())));
        Self {
            body,
            etag,
            max_age,
        }
    }
}

/// Every key that verifies a token an issuer mints, from several key sets.
#[derive(Debug)]
pub struct IssuerKeys {
    /// Their JWKS; its max-age is the smallest of its key sets'.
    pub jwks: Arc<JwksDoc>,
    /// The signing algorithms of those key sets, sorted, once each.
    pub algorithms: Vec<&'static str>,
}

impl IssuerKeys {
    /// No keys yet.
    pub fn empty(max_age: u64) -> Self {
        Self {
            jwks: Arc::new(JwksDoc::render(Vec::new(), max_age)),
            algorithms: Vec::new(),
        }
    }
}

/// One live key set as of the view's generation. Immutable: a change
/// replaces the entry.
#[derive(Debug)]
pub struct KeySetEntry {
    /// The key set.
    pub row: KeySetRow,
    /// Its published keys (pending, active, retired), oldest first.
    pub keys: Vec<KeyRow>,
    /// The sealed private half of its active key, if it has one.
    pub active: Option<SealedKey>,
    /// Its JWKS.
    pub jwks: Arc<JwksDoc>,
    /// The active key, opened and parsed by the first signer.
    signer: OnceLock<Arc<SigningKey>>,
}

impl KeySetEntry {
    /// The parsed active key, if a signer has loaded it.
    pub fn signer(&self) -> Option<Arc<SigningKey>> {
        self.signer.get().cloned()
    }

    /// Keeps `key` (the active key, parsed) for the next signer; returns the
    /// one kept, which is an earlier racer's if there was one.
    pub fn keep_signer(&self, key: Arc<SigningKey>) -> Arc<SigningKey> {
        Arc::clone(self.signer.get_or_init(|| key))
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    generation: Option<i64>,
    sets: HashMap<String, Arc<KeySetEntry>>,
}

/// The in-memory view of every live key set.
#[derive(Debug, Default)]
pub struct KeySetView {
    /// The configured max-age; each key set's is capped at half its pre-publication.
    max_age: u64,
    snapshot: RwLock<Snapshot>,
    /// Serialises refreshes so an older read never overwrites a newer one.
    refreshing: tokio::sync::Mutex<()>,
    /// When the view last matched the database (refreshed, or found current).
    synced: std::sync::Mutex<Option<std::time::Instant>>,
    /// Refreshes that read from the database.
    rebuilds: std::sync::atomic::AtomicU64,
    /// Moves after every change of the snapshot, once the change is in place.
    version: std::sync::atomic::AtomicU64,
}

impl KeySetView {
    /// An empty view whose JWKS allow at most `max_age` seconds of caching.
    pub fn new(max_age: u64) -> Self {
        Self {
            max_age,
            ..Self::default()
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live key set named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<KeySetEntry>> {
        self.read().sets.get(name).cloned()
    }

    /// The JWKS of `keyset`, or `None` when no such live key set exists.
    pub fn jwks(&self, keyset: &str) -> Option<Arc<JwksDoc>> {
        self.read().sets.get(keyset).map(|e| Arc::clone(&e.jwks))
    }

    /// One JWKS holding the published keys of every live key set named in
    /// `names` (names of no live key set are left out).
    pub fn issuer_keys(&self, names: &BTreeSet<String>) -> Result<IssuerKeys> {
        let snapshot = self.read();
        let mut keys = Vec::new();
        let mut algorithms = BTreeSet::new();
        let mut max_age = self.max_age;
        for entry in names.iter().filter_map(|name| snapshot.sets.get(name)) {
            algorithms.insert(entry.row.algorithm.as_str());
            max_age = max_age.min(entry.jwks.max_age);
            for key in &entry.keys {
                keys.push(serde_json::from_str(&key.public_jwk).map_err(|e| {
                    crate::Error::internal(format!("stored JWK of {}: {e}", key.kid))
                })?);
            }
        }
        Ok(IssuerKeys {
            jwks: Arc::new(JwksDoc::render(keys, max_age)),
            algorithms: algorithms.into_iter().collect(),
        })
    }

    /// A number that moves after every change of the view: read it before
    /// reading the view, and a copy taken then is current while it holds.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The keyset generation the view was built from.
    pub fn generation(&self) -> Option<i64> {
        self.read().generation
    }

    /// Every live key set, and the generation they are of.
    pub fn entries(&self) -> (Vec<Arc<KeySetEntry>>, Option<i64>) {
        let snapshot = self.read();
        (
            snapshot.sets.values().cloned().collect(),
            snapshot.generation,
        )
    }

    /// How long ago the view last matched the database; `None` before the
    /// first load.
    pub fn synced_ago(&self) -> Option<std::time::Duration> {
        self.synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|at| at.elapsed())
    }

    /// How many times the view was read from the database.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_synced(&self) {
        *self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    /// Brings the view up to the database: the first time every key set,
    /// afterwards only the key sets changed since the view's generation, so
    /// one change costs the same with ten key sets or ten thousand.
    pub async fn refresh(&self, store: &dyn Store) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let delta = store.published_since(self.generation()).await?;
        let mut keys_of: HashMap<i64, Vec<KeyRow>> = HashMap::new();
        for key in delta.keys {
            keys_of.entry(key.keyset_id).or_default().push(key);
        }
        let mut active: HashMap<String, SealedKey> = delta
            .active
            .into_iter()
            .map(|sealed| (sealed.kid.clone(), sealed))
            .collect();
        let mut entries = Vec::with_capacity(delta.keysets.len());
        for row in delta.keysets {
            let keys = keys_of.remove(&row.id).unwrap_or_default();
            let jwks = keys
                .iter()
                .map(|key| {
                    serde_json::from_str(&key.public_jwk).map_err(|e| {
                        crate::Error::internal(format!("stored JWK of {}: {e}", key.kid))
                    })
                })
                .collect::<Result<Vec<Value>>>()?;
            let max_age =
                crate::domain::rotation::jwks_max_age(self.max_age, row.policy.prepublish);
            let active = keys
                .iter()
                .find(|k| k.state == crate::domain::model::KeyState::Active)
                .and_then(|k| active.remove(&k.kid));
            entries.push(KeySetEntry {
                jwks: Arc::new(JwksDoc::render(jwks, max_age)),
                row,
                keys,
                active,
                signer: OnceLock::new(),
            });
        }
        let mut snapshot = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if delta.full {
            snapshot.sets.clear();
        }
        // A name deleted and created again since: the deletion came first.
        for name in &delta.deleted {
            snapshot.sets.remove(name);
        }
        for entry in entries {
            // A change that left the active key alone keeps its parsed form.
            if let Some(kept) = snapshot
                .sets
                .get(&entry.row.name)
                .filter(|old| old.row.id == entry.row.id)
                .and_then(|old| old.signer())
                .filter(|key| entry.active.as_ref().is_some_and(|a| a.kid == key.kid()))
            {
                entry.keep_signer(kept);
            }
            snapshot
                .sets
                .insert(entry.row.name.clone(), Arc::new(entry));
        }
        snapshot.generation = Some(delta.generation);
        drop(snapshot);
        // After the write: whoever reads this version and then the snapshot
        // sees the change (or a newer one), never an older snapshot.
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.rebuilds
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.mark_synced();
        Ok(())
    }

    /// Refreshes when `current`, the database's keyset generation, moved
    /// since the last refresh; returns whether it did.
    pub async fn refresh_if_changed(&self, store: &dyn Store, current: i64) -> Result<bool> {
        if self.generation() == Some(current) {
            self.mark_synced();
            return Ok(false);
        }
        self.refresh(store).await?;
        Ok(true)
    }
}
