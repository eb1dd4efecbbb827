//! Every OIDC client in memory, with its secret versions still sealed: a
//! secret is opened per call and never kept in the clear.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use crate::{
    Result,
    domain::client::Client,
    store::{ClientDelta, SecretRow, Store},
};

/// One client as of the view's generation. Immutable: a change replaces it.
#[derive(Debug)]
pub struct ClientEntry {
    /// The client.
    pub client: Client,
    /// Its secret versions, sealed, newest first.
    pub secrets: Vec<SecretRow>,
}

#[derive(Debug, Default)]
struct Snapshot {
    generation: Option<i64>,
    clients: HashMap<String, Arc<ClientEntry>>,
    /// How many clients name each key set as their token key set.
    token_keysets: BTreeMap<String, usize>,
}

impl Snapshot {
    fn remove(&mut self, id: &str) {
        let Some(old) = self.clients.remove(id) else {
            return;
        };
        if let Some(name) = &old.client.token_keyset
            && let Some(count) = self.token_keysets.get_mut(name)
        {
            *count -= 1;
            if *count == 0 {
                self.token_keysets.remove(name);
            }
        }
    }

    fn insert(&mut self, entry: ClientEntry) {
        self.remove(&entry.client.id);
        if let Some(name) = &entry.client.token_keyset {
            *self.token_keysets.entry(name.clone()).or_default() += 1;
        }
        self.clients
            .insert(entry.client.id.clone(), Arc::new(entry));
    }
}

/// The in-memory view of every client.
#[derive(Debug, Default)]
pub struct ClientView {
    snapshot: RwLock<Snapshot>,
    /// Serialises refreshes so an older read never overwrites a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl ClientView {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client `id`.
    pub fn get(&self, id: &str) -> Option<Arc<ClientEntry>> {
        self.read().clients.get(id).cloned()
    }

    /// Every client.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        self.read().clients.values().cloned().collect()
    }

    /// The key sets some client's tokens are signed by.
    pub fn token_keysets(&self) -> BTreeSet<String> {
        self.read().token_keysets.keys().cloned().collect()
    }

    /// The clients generation the view was built from.
    pub fn generation(&self) -> Option<i64> {
        self.read().generation
    }

    /// Brings the view up to the database: the first time every client,
    /// afterwards only the clients changed since the view's generation.
    /// `between` runs after the read and before the view changes: refreshing
    /// the key set view there means a client never shows before a key set it
    /// names (that key set existed when the clients were read).
    pub async fn refresh<R>(
        &self,
        store: &dyn Store,
        between: impl Future<Output = R>,
    ) -> (Result<()>, R) {
        let _one_at_a_time = self.refreshing.lock().await;
        let delta = store.clients_since(self.generation()).await;
        let between = between.await;
        (delta.map(|delta| self.apply(delta)), between)
    }

    /// [`Self::refresh`] when `current`, the database's clients generation,
    /// moved since the last refresh (returning whether it did); otherwise
    /// just `between`, which is told whether the clients were read.
    pub async fn refresh_if_changed<R, F>(
        &self,
        store: &dyn Store,
        current: i64,
        between: impl FnOnce(bool) -> F,
    ) -> (Result<bool>, R)
    where
        F: Future<Output = R>,
    {
        if self.generation() == Some(current) {
            return (Ok(false), between(false).await);
        }
        let (done, between) = self.refresh(store, between(true)).await;
        (done.map(|()| true), between)
    }

    fn apply(&self, delta: ClientDelta) {
        let mut secrets_of: HashMap<String, Vec<SecretRow>> = HashMap::new();
        for secret in delta.secrets {
            secrets_of
                .entry(secret.client_id.clone())
                .or_default()
                .push(secret);
        }
        let entries: Vec<ClientEntry> = delta
            .clients
            .into_iter()
            .map(|client| {
                let mut secrets = secrets_of.remove(&client.id).unwrap_or_default();
                secrets.sort_unstable_by_key(|s| std::cmp::Reverse(s.version));
                ClientEntry { client, secrets }
            })
            .collect();
        let mut snapshot = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if delta.full {
            snapshot.clients.clear();
            snapshot.token_keysets.clear();
        }
        for id in &delta.changed {
            snapshot.remove(id);
        }
        for entry in entries {
            snapshot.insert(entry);
        }
        snapshot.generation = Some(delta.generation);
    }
}
