//! The in-memory views the hot paths read: loaded at start, refreshed after
//! each local change, and following what other replicas change through the
//! database's generation counters.

use std::sync::Arc;

use super::Service;
use crate::{Result, view::IssuerKeys};

impl Service {
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
            }
            Err(err) => {
                tracing::warn!(error = %err, "issuer JWKS rebuild failed; serving the last one");
            }
        }
    }

    /// Loads the in-memory views (key sets, clients, API tokens) from the
    /// database: at start, before serving.
    pub async fn load_views(&self) -> Result<()> {
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
        self.load_tokens().await
    }

    /// Picks up changes other keyward processes made to the database: one
    /// query reads every generation, and each view whose generation moved
    /// reads just what changed. Run every few hundred milliseconds; a failure
    /// keeps the last view and is retried on the next run.
    pub async fn follow_other_replicas(&self) {
        let store = self.store.as_ref();
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
        for (view, outcome) in outcomes {
            match outcome {
                Ok(true) => tracing::debug!(view, "view reloaded after a change elsewhere"),
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(view, error = %err, "view refresh failed; serving the last one")
                }
            }
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
    }
}
