//! The application layer: every operation keyward offers, independent of
//! transport. gRPC and HTTP handlers translate to and from these methods, and
//! the CLI reaches them through gRPC.
//!
//! - [`keysets`]: key sets, signing, and the rotation lifecycle driven by
//!   [`crate::rotation`].
//! - [`clients`]: OIDC clients and their secrets.
//! - [`oauth`]: the OAuth 2.0 client-credentials grant.
//! - [`openmetadata`]: OpenMetadata's key formats and token rules.

mod clients;
mod keysets;
mod oauth;
mod openmetadata;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use clients::*;
pub use keysets::*;
pub use oauth::*;
pub use openmetadata::*;

use crate::{
    Error, Result,
    clock::Clock,
    crypto::{
        aead::{MasterKey, RowId},
        keys::SigningKey,
    },
    jwks::JwksCache,
    secret::SecretBytes,
    store::Store,
};

/// keyward's application layer.
#[derive(Debug)]
pub struct Keyward {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    jwks: Arc<JwksCache>,
    /// The configured JWKS max-age, which rotation policies are checked against.
    jwks_max_age: u64,
    /// keyward's issuer URL (`iss` of its OAuth tokens, base of its URLs).
    issuer: String,
    /// Parsed active key per key set id, so signing skips decrypting and parsing.
    signers: Mutex<HashMap<i64, Arc<SigningKey>>>,
    /// A random value sealed at start: opened and compared in place of a
    /// client's secret when there is none to check, so that costs the same.
    decoy: Vec<u8>,
}

const DECOY_ROW: RowId<'static> = RowId {
    table: "decoy",
    id: "",
    version: 0,
};

impl Keyward {
    /// Assembles the service. The JWKS cache should already be loaded.
    pub fn new(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        jwks: Arc<JwksCache>,
        jwks_max_age: u64,
        issuer: String,
    ) -> Self {
        Self {
            store,
            clock,
            jwks,
            jwks_max_age,
            issuer: issuer.trim_end_matches('/').to_string(),
            signers: Mutex::new(HashMap::new()),
            decoy: master.seal(&DECOY_ROW, &crate::crypto::random::bytes::<32>()),
            master,
        }
    }

    /// The work of checking one secret, with no secret to check.
    fn decoy_secret_check(&self, presented: &crate::secret::SecretString) {
        if let Ok(decoy) = self.master.open(&DECOY_ROW, &self.decoy) {
            let _ = std::hint::black_box(crate::crypto::secrets_equal(
                decoy.expose(),
                presented.expose().as_bytes(),
            ));
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// keyward's issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS snapshot.
    pub fn jwks_cache(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    /// Refreshes the JWKS after a local change. The change is committed; a
    /// failed refresh is logged and the watcher retries within its interval.
    async fn published_changed(&self) {
        if let Err(err) = self.jwks.refresh(self.store.as_ref()).await {
            tracing::warn!(error = %err, "JWKS refresh after a local change failed");
        }
    }

    /// Opens a sealed value, logging the row on failure.
    fn open(&self, row: &RowId<'_>, key_id: &str, sealed: &[u8]) -> Result<SecretBytes> {
        self.master.open(row, sealed).map_err(|_| {
            tracing::error!(
                row = %row,
                sealed_with = key_id,
                master_key = self.master.id(),
                "stored ciphertext failed to decrypt"
            );
            Error::DataLoss
        })
    }
}
