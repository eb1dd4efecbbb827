//! The application layer: every operation keyward offers, independent of
//! transport. gRPC and HTTP handlers translate to and from these methods, and
//! the CLI reaches them through gRPC (or, for local commands, directly).
//!
//! - `call`: the one call pipeline, [`Service::audited`].
//! - `keysets`: key sets, their policies, keys and JWKS as shown.
//! - `rotation`: the scheduled sweep, manual rotation and revocation,
//!   planned by [`crate::domain::rotation`].
//! - `signing`: `SignJwt` and the active key's signer (`signer_pool`: the
//!   RSA signing threads).
//! - `material`: generating keys and sealing their private halves.
//! - `openmetadata`: OpenMetadata's key formats (export and import).
//! - `clients`: OIDC clients and their secrets; `oauth`: the
//!   client-credentials grant.
//! - `tokens`: named API tokens and the in-memory view callers are
//!   authenticated against.
//! - [`audit`]: the audit log's writer, listing, verification and pruning.
//! - [`master`]: which master key seals what, and the rewrap.
//! - `views`: loading and following the in-memory views; `paging`: listings
//!   a page at a time.

pub mod alerts;
pub mod audit;
mod call;
mod clients;
pub mod events;
mod keysets;
pub mod master;
mod material;
mod oauth;
mod openmetadata;
mod paging;
mod rotation;
mod signer_pool;
mod signing;
mod tokens;
mod views;

use std::sync::{Arc, Mutex, RwLock};

pub use call::{CallError, Caller, Credential, Target};
pub use clients::*;
pub use keysets::*;
pub use oauth::*;
pub use openmetadata::*;
pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, PageRequest};
pub use rotation::Transition;
pub use signing::*;
pub use tokens::{NewToken, TOKEN_PREFIX, TokenInfo};
pub use views::DocumentsVersion;

use crate::{
    Error, Result,
    crypto::aead::{AeadContext, Keyring, KeyringError},
    domain::{
        clock::Clock,
        model::KeyState,
        secret::SecretBytes,
        throttle::{AuditBudget, FailureThrottle, ThrottleSettings},
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
    /// How old the in-memory views may get (the database unread) before
    /// authenticated calls are refused with `UNAVAILABLE`.
    pub max_view_age: std::time::Duration,
}

/// keyward's application layer.
#[derive(Debug)]
pub struct Service {
    store: Arc<dyn Store>,
    /// The master keys: the current one seals, any opens what it sealed.
    keyring: Arc<Keyring>,
    /// The configured seals and how they answered at start.
    seals: std::sync::OnceLock<Vec<master::SealStatus>>,
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
    /// Moves after every rebuild of the issuer keys, once it is in place.
    issuer_keys_version: std::sync::atomic::AtomicU64,
    /// This service among those of the process (tests and benches run
    /// several): with the versions, what names its public documents' state.
    instance: u64,
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
    /// Refusals of unauthenticated callers recorded, per peer address.
    audit_budget: AuditBudget,
    /// Where audit events go.
    audit: audit::AuditLog,
    /// What `/metrics` reports.
    metrics: Arc<Metrics>,
    /// When the views last matched the database.
    freshness: views::Freshness,
    /// The change events this process has read, for its watchers.
    events: events::EventFeed,
    /// How old they may get before authenticated calls are refused.
    max_view_age: std::time::Duration,
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
            audit_budget: AuditBudget::new(settings.auth_throttle.window, Arc::clone(&clock)),
            store,
            keysets: KeySetView::new(jwks_max_age),
            clients: ClientView::default(),
            jwt_signer: signer_pool::JwtSigner::new(),
            default_keyset: settings.default_keyset,
            issuer_keys: RwLock::new(Arc::new(IssuerKeys::empty(jwks_max_age))),
            rebuilding_issuer_keys: Mutex::new(()),
            issuer_keys_version: std::sync::atomic::AtomicU64::new(0),
            instance: views::next_instance(),
            jwks_max_age,
            issuer: settings.issuer.trim_end_matches('/').to_string(),
            decoy: keyring.seal(&DECOY_ROW, &crate::crypto::random::bytes::<32>()),
            keyring,
            seals: std::sync::OnceLock::new(),
            tokens: RwLock::new(tokens::TokenView::default()),
            audit,
            metrics: Arc::new(Metrics::new()),
            freshness: views::Freshness::new(),
            events: events::EventFeed::new(),
            max_view_age: settings.max_view_age,
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
