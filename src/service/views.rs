//! The in-memory views the hot paths read: loaded at start, refreshed after
//! each local change, and following what other replicas change through the
//! database's generation counters.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::Service;
use crate::{Result, view::IssuerKeys};

/// Which state a service's public documents (each key set's JWKS, the
/// issuer's) are in: equal values, equal documents. Read it before reading
/// the documents, and a copy of them taken then stays current while it is
/// unchanged; a cache on each thread keeps its own copy this way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentsVersion {
    instance: u64,
    keysets: u64,
    issuer_keys: u64,
}

/// A number for each service the process makes.
pub(super) fn next_instance() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Service {
    /// The state of the public documents (see [`DocumentsVersion`]): two
    /// loads of counters that move only on a change, so every request may
    /// read it.
    pub fn documents_version(&self) -> DocumentsVersion {
        DocumentsVersion {
            instance: self.instance,
            keysets: self.keysets.version(),
            issuer_keys: self.issuer_keys_version.load(Ordering::Acquire),
        }
    }

    /// The keys that verify every token this issuer mints, and their
    /// algorithms: OIDC discovery's `jwks_uri`.
    pub fn issuer_keys(&self) -> Arc<IssuerKeys> {
        Arc::clone(
            &self
                .issuer_keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Rebuilds [`Self::issuer_keys`] from the views; a failure keeps the
    /// last document.
    pub(super) fn rebuild_issuer_keys(&self) {
        let _one_at_a_time = self
            .rebuilding_issuer_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names = self.clients.token_keysets();
        names.insert(self.default_keyset.clone());
        match self.keysets.issuer_keys(&names) {
            Ok(keys) => {
                *self
                    .issuer_keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                self.issuer_keys_version.fetch_add(1, Ordering::Release);
            }
            Err(err) => {
                tracing::warn!(error = %err, "issuer JWKS rebuild failed; serving the last one");
            }
        }
    }

    /// Loads the in-memory views (key sets, clients, API tokens) from the
    /// database: at start, before serving.
    pub async fn load_views(&self) -> Result<()> {
        let read_at = self.freshness.now_ms();
        // Key sets are read after the clients and shown before them: every
        // key set a client names existed when the clients were read.
        let store = self.store.as_ref();
        let (clients, keysets) = self
            .clients
            .refresh(store, self.keysets.refresh(store))
            .await;
        keysets?;
        clients?;
        self.rebuild_issuer_keys();
        self.load_tokens().await?;
        self.start_event_feed().await?;
        self.freshness.synced(read_at);
        Ok(())
    }

    /// Whether the views are recent enough to authenticate and authorize
    /// with: found to match the database within the maximum view age. A
    /// replica cut off from its database stops honouring what it can no
    /// longer check (a token revoked elsewhere, a key rotated out).
    pub(super) fn views_fresh(&self) -> Result<()> {
        let age = self.freshness.age();
        if age <= self.max_view_age {
            return Ok(());
        }
        tracing::warn!(
            age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            "views older than their maximum age (the database has not been read): refusing privileged calls"
        );
        Err(crate::Error::Unavailable)
    }

    /// Picks up changes other keyward processes made to the database: one
    /// query reads every generation, and each view whose generation moved
    /// reads just what changed. Run every few hundred milliseconds; a failure
    /// keeps the last view and is retried on the next run.
    pub async fn follow_other_replicas(&self) {
        let store = self.store.as_ref();
        // The views match the database as of this read, however long
        // applying what changed takes.
        let read_at = self.freshness.now_ms();
        let current = match store.generations().await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(error = %err, "reading the change counters failed; serving the last views");
                return;
            }
        };
        // Key sets read after the clients and shown before them, as at start
        // (read whatever their counter said, when clients changed).
        let (clients, keysets) = self
            .clients
            .refresh_if_changed(store, current.clients, |clients_read| async move {
                if clients_read {
                    self.keysets.refresh(store).await.map(|()| true)
                } else {
                    self.keysets
                        .refresh_if_changed(store, current.keysets)
                        .await
                }
            })
            .await;
        let outcomes = [
            ("key sets", keysets),
            ("clients", clients),
            ("API tokens", self.refresh_tokens_if(current.tokens).await),
        ];
        if outcomes[..2]
            .iter()
            .any(|(_, outcome)| matches!(outcome, Ok(true)))
        {
            self.rebuild_issuer_keys();
        }
        let mut all_read = true;
        for (view, outcome) in outcomes {
            match outcome {
                Ok(true) => tracing::debug!(view, "view reloaded after a change elsewhere"),
                Ok(false) => {}
                Err(err) => {
                    all_read = false;
                    tracing::warn!(view, error = %err, "view refresh failed; serving the last one");
                }
            }
        }
        if all_read {
            self.freshness.synced(read_at);
        }
    }

    /// Refreshes the key set view after a local change. The change is
    /// committed; a failed refresh is logged and the follower retries it
    /// within its interval.
    pub(super) async fn refresh_keysets(&self) {
        if let Err(err) = self.keysets.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %err, "key set view refresh after a local change failed");
        }
        self.rebuild_issuer_keys();
        self.events_written();
    }

    /// Refreshes the client view after a local change, as
    /// [`Self::refresh_keysets`] does key sets (and the key set view with it:
    /// the client may name a key set another replica just created).
    pub(super) async fn refresh_clients(&self) {
        let store = self.store.as_ref();
        let (clients, keysets) = self
            .clients
            .refresh(store, self.keysets.refresh(store))
            .await;
        for (view, outcome) in [("client", clients), ("key set", keysets)] {
            if let Err(err) = outcome {
                tracing::warn!(view, error = %err, "view refresh after a local change failed");
            }
        }
        self.rebuild_issuer_keys();
        self.events_written();
    }
}

/// When the views last matched the database, as milliseconds since the
/// service started (read on every authenticated call: one atomic load).
#[derive(Debug)]
pub(super) struct Freshness {
    started: Instant,
    synced_ms: AtomicU64,
}

impl Freshness {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            synced_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The views match the database as it was at `read_at` (from
    /// [`Self::now_ms`]).
    fn synced(&self, read_at: u64) {
        self.synced_ms.fetch_max(read_at, Ordering::Relaxed);
    }

    /// How long since they last did.
    fn age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.synced_ms.load(Ordering::Relaxed)),
        )
    }
}
