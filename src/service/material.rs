//! Key material: generating signing keys (off the async workers) and
//! sealing their private halves under the master key for the row they
//! belong to, opening and resealing them.

use super::Service;
use crate::{
    Error, Result,
    crypto::{aead::AeadContext, keys},
    domain::{algorithm::Algorithm, model::KeyState, secret::SecretBytes},
    store::{KeySetRow, NewKey, SealedKey},
};

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

impl Service {
    /// Generates a key off the async workers.
    pub(super) async fn generate_key(
        alg: Algorithm,
        rsa_bits: Option<u32>,
    ) -> Result<keys::GeneratedKey> {
        tokio::task::spawn_blocking(move || keys::generate(alg, rsa_bits.unwrap_or(2048)))
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)
    }

    /// A generated key as stored in key set `keyset_id`, its private half sealed.
    pub(super) fn stored_key(
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
    pub(super) async fn new_key(&self, row: &KeySetRow, state: KeyState) -> Result<NewKey> {
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
    ) -> Result<SecretBytes> {
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
    ) -> Result<(SecretBytes, bool)> {
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

    pub(super) fn keyset_params(row: &KeySetRow) -> (Algorithm, Option<u32>) {
        (
            row.algorithm,
            row.rsa_bits.and_then(|b| u32::try_from(b).ok()),
        )
    }
}
