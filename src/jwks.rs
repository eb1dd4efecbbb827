//! The JWKS snapshot: every live key set's JWKS, rendered once per change and
//! served from memory. Local writes refresh it at once; [`watch`] polls the
//! database's generation counter so changes made by other keyward processes on
//! the same database show within the poll interval. Either way only the key
//! sets changed since the snapshot's generation are read and re-rendered.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use serde_json::{Map, Value};

use crate::{
    Result,
    crypto::{b64url, sha256},
    store::Store,
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

#[derive(Debug, Default)]
struct Snapshot {
    generation: Option<i64>,
    sets: HashMap<String, Arc<JwksDoc>>,
}

/// The in-memory JWKS of every live key set.
#[derive(Debug, Default)]
pub struct JwksCache {
    /// The configured max-age; each key set's is capped at half its pre-publication.
    max_age: u64,
    snapshot: RwLock<Snapshot>,
    /// Serialises refreshes so an older read never overwrites a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl JwksCache {
    /// An empty cache serving with at most `max_age` seconds of client caching.
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

    /// The JWKS of `keyset`, or `None` when no such live key set exists.
    pub fn get(&self, keyset: &str) -> Option<Arc<JwksDoc>> {
        self.read().sets.get(keyset).cloned()
    }

    /// The database generation the snapshot was built from.
    fn generation(&self) -> Option<i64> {
        self.read().generation
    }

    /// Brings the snapshot up to the database: the first time every key set,
    /// afterwards only the key sets changed since the snapshot's generation,
    /// so one change costs the same with ten key sets or ten thousand.
    pub async fn refresh(&self, store: &dyn Store) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        let delta = store.published_since(self.generation()).await?;
        let mut rendered: HashMap<String, (u64, Vec<Value>)> = delta
            .keysets
            .into_iter()
            .map(|set| {
                let prepublish = set.policy.prepublish;
                let max_age = crate::rotation::jwks_max_age(self.max_age, prepublish);
                (set.name, (max_age, Vec::new()))
            })
            .collect();
        for key in delta.keys {
            let jwk: Value = serde_json::from_str(&key.public_jwk)
                .map_err(|e| crate::Error::internal(format!("stored JWK of {}: {e}", key.kid)))?;
            if let Some((_, list)) = rendered.get_mut(&key.keyset) {
                list.push(jwk);
            }
        }
        let docs: Vec<(String, Arc<JwksDoc>)> = rendered
            .into_iter()
            .map(|(name, (max_age, keys))| (name, Arc::new(JwksDoc::render(keys, max_age))))
            .collect();
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
        snapshot.sets.extend(docs);
        snapshot.generation = Some(delta.generation);
        Ok(())
    }

    /// Refreshes when the database generation moved since the last refresh.
    pub async fn refresh_if_changed(&self, store: &dyn Store) -> Result<bool> {
        let current = store.generation().await?;
        if self.generation() == Some(current) {
            return Ok(false);
        }
        self.refresh(store).await?;
        Ok(true)
    }
}
