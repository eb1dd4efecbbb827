//! The application layer: every operation keyward offers, independent of
//! transport. gRPC and HTTP handlers translate to and from these methods, and
//! the CLI reaches them through gRPC.
//!
//! - [`keysets`]: key sets, signing, and the rotation lifecycle driven by
//!   [`crate::domain::rotation`].
//! - [`clients`]: OIDC clients and their secrets.
//! - [`oauth`]: the OAuth 2.0 client-credentials grant.
//! - [`openmetadata`]: OpenMetadata's key formats (it builds on [`keysets`]).
//! - [`tokens`]: named API tokens and the in-memory view requests are
//!   authenticated against.
//! - [`audit`]: the audit log's writer, listing, verification and pruning.
//! - `claims`: pure claim rules: subject and email, and signing profiles
//!   (OpenMetadata's token rules).

pub mod audit;
mod call;
mod clients;
mod keysets;
pub mod master;
mod material;
mod oauth;
mod openmetadata;
mod rotation;
mod signer_pool;
mod signing;
mod tokens;

use std::sync::{Arc, Mutex, RwLock};

pub use call::{CallError, Caller, Credential, Target};
pub use clients::*;
pub use keysets::*;
pub use oauth::*;
pub use openmetadata::*;
pub use rotation::Transition;
pub use signing::*;
pub use tokens::{NewToken, TOKEN_PREFIX, TokenInfo};

use crate::{
    Error, Result,
    crypto::aead::{AeadContext, Keyring, KeyringError},
    domain::{
        clock::Clock,
        model::KeyState,
        secret::SecretBytes,
        throttle::{FailureThrottle, ThrottleSettings},
    },
    ops::metrics::{KeySetGauge, KeySetStatus, Metrics},
    store::Store,
    view::{ClientView, IssuerKeys, KeySetView},
};

/// What the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The JWKS `Cache-Control: max-age` clients are told, which rotation
    /// policies are checked against.
    pub jwks_max_age: u64,
    /// keyward's issuer URL (`iss` of its OAuth tokens, base of its URLs).
    pub issuer: String,
    /// The key set `/.well-known/jwks.json` serves.
    pub default_keyset: String,
    /// Failed authentications allowed per peer (and client), over how long.
    pub auth_throttle: ThrottleSettings,
}

/// The most items one list call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Items per page when the caller names no size.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Which page of a listing a caller asks for (AIP-158 style).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Items wanted; 0 takes the default, more than the maximum the maximum.
    pub page_size: u32,
    /// `next_page_token` of the previous page; empty for the first.
    pub page_token: String,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl PageRequest {
    fn size(&self) -> usize {
        let size = match self.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        usize::try_from(size).unwrap_or(1)
    }

    /// Rows to fetch: one more than the page, to learn whether more follow.
    fn fetch_limit(&self) -> i64 {
        i64::try_from(self.size()).unwrap_or(i64::MAX) + 1
    }

    /// The page token of a page that starts after `key`.
    pub fn token_after(key: &str) -> String {
        crate::crypto::b64url(key.as_bytes())
    }

    /// The sort key the page starts after (`""` for the first page).
    fn after(&self) -> Result<String> {
        if self.page_token.is_empty() {
            return Ok(String::new());
        }
        crate::crypto::b64url_decode(&self.page_token)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "not a token this listing returned; start again without one",
                )
            })
    }

    /// Cuts `rows` (fetched with [`Self::fetch_limit`]) to the page and
    /// returns the token of the page after it, if any.
    fn next_token<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> &str) -> Option<String> {
        if rows.len() <= self.size() {
            return None;
        }
        rows.truncate(self.size());
        rows.last().map(|last| Self::token_after(key(last)))
    }

    /// The page of `items`, a whole listing in a stable order whose keys are
    /// unique and never reused, that starts after the item the token names.
    fn page_of<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str) -> Result<Page<T>> {
        let after = self.after()?;
        if !after.is_empty() {
            let at = items
                .iter()
                .position(|item| key(item) == after)
                .ok_or_else(|| {
                    Error::invalid(
                        "page_token",
                        "not a token this listing returned; start again without one",
                    )
                })?;
            items.drain(..=at);
        }
        let next_page_token = self.next_token(&mut items, key);
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

/// keyward's application layer.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Store>,
    /// The master keys: the current one seals, any opens what it sealed.
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    /// Every live key set with its JWKS and signer, in memory.
    keysets: KeySetView,
    /// Every client with its sealed secrets, in memory.
    clients: ClientView,
    /// Signs tokens, RSA off the async workers.
    jwt_signer: signer_pool::JwtSigner,
    /// The key set `/.well-known/jwks.json` serves.
    default_keyset: String,
    /// The keys of the default key set and of every client's token key set:
    /// what verifies any token this issuer mints. Rebuilt, one rebuild at a
    /// time, whenever either view changes.
    issuer_keys: RwLock<Arc<IssuerKeys>>,
    rebuilding_issuer_keys: Mutex<()>,
    /// The configured JWKS max-age, which rotation policies are checked against.
    jwks_max_age: u64,
    /// keyward's issuer URL (`iss` of its OAuth tokens, base of its URLs).
    issuer: String,
    /// A random value sealed at start: opened and compared in place of a
    /// client's secret when there is none to check, so that costs the same.
    decoy: Vec<u8>,
    /// The API tokens that authenticate, reloaded when they change.
    tokens: RwLock<tokens::TokenView>,
    /// Failed gRPC authentications, per peer address.
    grpc_throttle: FailureThrottle,
    /// Failed token-endpoint authentications, per peer address and client id.
    token_throttle: FailureThrottle,
    /// Where audit events go.
    audit: audit::AuditLog,
    /// What `/metrics` reports.
    metrics: Arc<Metrics>,
}

const DECOY_ROW: AeadContext<'static> = AeadContext {
    table: "decoy",
    id: "",
    version: 0,
};

impl Service {
    /// Assembles the service; [`Self::load_views`] readies it to serve.
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        audit: audit::AuditLog,
    ) -> Self {
        let throttle = || FailureThrottle::new(settings.auth_throttle, Arc::clone(&clock));
        let jwks_max_age = settings.jwks_max_age;
        Self {
            grpc_throttle: throttle(),
            token_throttle: throttle(),
            store,
            keysets: KeySetView::new(jwks_max_age),
            clients: ClientView::default(),
            jwt_signer: signer_pool::JwtSigner::new(),
            default_keyset: settings.default_keyset,
            issuer_keys: RwLock::new(Arc::new(IssuerKeys::empty(jwks_max_age))),
            rebuilding_issuer_keys: Mutex::new(()),
            jwks_max_age,
            issuer: settings.issuer.trim_end_matches('/').to_string(),
            decoy: keyring.seal(&DECOY_ROW, &crate::crypto::random::bytes::<32>()),
            keyring,
            tokens: RwLock::new(tokens::TokenView::default()),
            audit,
            metrics: Arc::new(Metrics::new()),
            clock,
        }
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The key sets' gauges and the JWKS snapshot's state, read off the view.
    pub fn keyset_status(&self) -> KeySetStatus {
        let (entries, generation) = self.keysets.entries();
        let mut keysets: Vec<KeySetGauge> = entries
            .iter()
            .map(|entry| KeySetGauge {
                name: entry.row.name.clone(),
                next_rotation_at: entry.row.next_rotation_at,
                active_since: entry
                    .keys
                    .iter()
                    .find(|k| k.state == KeyState::Active)
                    .map(|k| k.activated_at.unwrap_or(k.created_at)),
                published: entry.keys.len(),
            })
            .collect();
        keysets.sort_by(|a, b| a.name.cmp(&b.name));
        KeySetStatus {
            now: self.clock.now(),
            keysets,
            generation,
            synced_ago: self.keysets.synced_ago(),
            rebuilds: self.keysets.rebuilds(),
        }
    }

    /// The key set `/.well-known/jwks.json` serves.
    pub fn default_keyset(&self) -> &str {
        &self.default_keyset
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
    fn rebuild_issuer_keys(&self) {
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

    /// The work of checking one secret, with no secret to check.
    fn decoy_secret_check(&self, presented: &crate::domain::secret::SecretString) {
        if let Ok(decoy) = self.keyring.current().open(&DECOY_ROW, &self.decoy) {
            let _ = std::hint::black_box(crate::crypto::secrets_equal(
                decoy.expose(),
                presented.expose().as_bytes(),
            ));
        }
    }

    /// The current time, Unix seconds, from the service's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// keyward's issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The database backend's name, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Whether keyward can serve: its database answers.
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
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
    async fn refresh_keysets(&self) {
        if let Err(err) = self.keysets.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %err, "key set view refresh after a local change failed");
        }
        self.rebuild_issuer_keys();
    }

    /// Refreshes the client view after a local change, as
    /// [`Self::refresh_keysets`] does key sets (and the key set view with it:
    /// the client may name a key set another replica just created).
    async fn refresh_clients(&self) {
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

    /// Opens a sealed value under the key its row names, logging the row on
    /// failure.
    fn open(&self, row: &AeadContext<'_>, key_id: &str, sealed: &[u8]) -> Result<SecretBytes> {
        self.keyring
            .open(row, key_id, sealed)
            .map_err(|err| opening_failed(row, key_id, &err))
    }
}

/// The error (and log line) for a sealed value that did not open.
fn opening_failed(row: &AeadContext<'_>, key_id: &str, err: &KeyringError) -> Error {
    match err {
        KeyringError::MissingKey(_) => {
            tracing::error!(row = %row, sealed_with = key_id, "a stored value is sealed under a master key this process does not hold");
            Error::FailedPrecondition(format!(
                "a stored value is sealed under master key id {key_id}, which this keyward does not hold; \
                 restart it with that key in --previous-master-key-file"
            ))
        }
        KeyringError::Open => {
            tracing::error!(row = %row, sealed_with = key_id, "stored ciphertext failed to decrypt");
            Error::DataLoss
        }
    }
}
