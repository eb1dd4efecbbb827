//! Where signatures are computed. ES256 and EdDSA take tens of microseconds
//! and run on the calling task. An RSA signature takes about 0.4 ms (2048
//! bits) to several ms (4096): those run on blocking threads, at most one per
//! core at a time, so a burst of RS256 tokens queues for a core instead of
//! holding the async workers that serve the JWKS and every other request.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::{
    Error, Result,
    crypto::{jwt, keys::SigningKey},
};

/// Signs JWTs, keeping RSA off the async workers.
#[derive(Debug)]
pub(super) struct JwtSigner {
    /// One permit per core: RSA signatures in flight.
    rsa_slots: Arc<Semaphore>,
}

impl JwtSigner {
    pub(super) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            rsa_slots: Arc::new(Semaphore::new(cores)),
        }
    }

    /// The compact JWS of `claims` with `iat` and `exp` set, signed by `key`.
    pub(super) async fn sign(
        &self,
        key: Arc<SigningKey>,
        claims: Map<String, Value>,
        iat: i64,
        exp: i64,
    ) -> Result<String> {
        if !key.algorithm().is_rsa() {
            return jwt::sign(&key, claims, iat, exp).map_err(Error::internal);
        }
        let slot = Arc::clone(&self.rsa_slots)
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            jwt::sign(&key, claims, iat, exp)
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)
    }
}
