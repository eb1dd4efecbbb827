//! OpenMetadata integration: exporting a key in the formats OM reads
//! (PKCS#8 and SPKI DER), importing OM's existing key under its existing kid,
//! and the claim rules of tokens OM accepts.

use rsa::{
    RsaPrivateKey, RsaPublicKey,
    pkcs1::{DecodeRsaPrivateKey as _, DecodeRsaPublicKey as _},
    pkcs8::{
        DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
    },
    traits::PublicKeyParts as _,
};
use serde_json::Value;

use super::{KeyInfo, Service, material::KeyBinding};
use crate::{
    Error, Result,
    crypto::keys::SigningKey,
    domain::{
        model::{self, KeyState},
        rotation::{KeyChange, Plan, RotationEvent},
        secret::SecretBytes,
    },
    store::{KeySetRow, NewKey},
};

/// Smallest RSA modulus accepted on import.
pub const MIN_IMPORT_RSA_BITS: usize = 2048;
/// Largest RSA modulus ring signs with.
pub const MAX_IMPORT_RSA_BITS: usize = 8192;

/// A key exported for OpenMetadata.
#[derive(Debug)]
pub struct ExportedKey {
    /// The kid (OM's `JWT_KEY_ID`).
    pub kid: String,
    /// JOSE algorithm name.
    pub algorithm: String,
    /// Unencrypted PKCS#8 DER of the private key.
    pub private_pkcs8_der: SecretBytes,
    /// X.509 SubjectPublicKeyInfo DER of the public key.
    pub public_spki_der: Vec<u8>,
    /// `active` or `pending`.
    pub state: KeyState,
    /// keyward's issuer URL.
    pub issuer: String,
    /// The key set's JWKS URL.
    pub jwks_uri: String,
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The imported key.
    pub key: KeyInfo,
    /// What changed.
    pub events: Vec<RotationEvent>,
    /// The key set's keys afterwards.
    pub keys: Vec<KeyInfo>,
}

fn require_rsa(row: &KeySetRow) -> Result<model::Algorithm> {
    let alg = row.algorithm;
    if !alg.is_rsa() {
        return Err(Error::FailedPrecondition(format!(
            "key set {:?} signs with {alg}; OpenMetadata reads RSA keys only (create one with --alg RS256)",
            row.name
        )));
    }
    Ok(alg)
}

/// Whether `bytes` look like PEM text.
fn pem_text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN"))
}

/// Parses an RSA private key: PKCS#8 or PKCS#1, DER or PEM.
fn parse_private(bytes: &[u8]) -> Result<RsaPrivateKey> {
    let bad = |why: &str| Error::invalid("private_key", why.to_string());
    if let Some(text) = pem_text(bytes) {
        if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(bad(
                "the key is encrypted; decrypt it first (openssl pkcs8 -topk8 -nocrypt)",
            ));
        }
        if text.contains("BEGIN RSA PRIVATE KEY") {
            return RsaPrivateKey::from_pkcs1_pem(text)
                .map_err(|_| bad("malformed PKCS#1 PEM RSA private key"));
        }
        if text.contains("BEGIN PRIVATE KEY") {
            return RsaPrivateKey::from_pkcs8_pem(text).map_err(|_| {
                bad("not an RSA private key (a PKCS#8 key of another type, or malformed)")
            });
        }
        return Err(bad(
            "unrecognised PEM; give a PKCS#8 (BEGIN PRIVATE KEY) or PKCS#1 (BEGIN RSA PRIVATE KEY) key",
        ));
    }
    if let Ok(key) = RsaPrivateKey::from_pkcs8_der(bytes) {
        return Ok(key);
    }
    if let Ok(key) = RsaPrivateKey::from_pkcs1_der(bytes) {
        return Ok(key);
    }
    if rsa::pkcs8::PrivateKeyInfo::try_from(bytes).is_ok() {
        return Err(bad(
            "not an RSA private key: OpenMetadata reads RSA keys only",
        ));
    }
    Err(bad(
        "not a PKCS#8 or PKCS#1 RSA private key (DER or PEM); OpenMetadata's private_key.der is PKCS#8 DER",
    ))
}

/// Parses an RSA public key: SPKI or PKCS#1, DER or PEM.
fn parse_public(bytes: &[u8]) -> Result<RsaPublicKey> {
    let parsed = match pem_text(bytes) {
        Some(text) if text.contains("BEGIN RSA PUBLIC KEY") => {
            RsaPublicKey::from_pkcs1_pem(text).ok()
        }
        Some(text) => RsaPublicKey::from_public_key_pem(text).ok(),
        None => RsaPublicKey::from_public_key_der(bytes)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(bytes))
            .ok(),
    };
    parsed.ok_or_else(|| {
        Error::invalid(
            "public_key",
            "not an X.509 SubjectPublicKeyInfo or PKCS#1 RSA public key (DER or PEM)",
        )
    })
}

/// Which key of a key set to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportWhich {
    /// The key that signs now.
    Active,
    /// The next one, so OpenMetadata can be moved onto it before it signs.
    Pending,
}

impl Service {
    /// Exports a key set's active (or pending) RSA key for OpenMetadata.
    pub async fn export_key(&self, keyset: &str, which: ExportWhich) -> Result<ExportedKey> {
        let state = match which {
            ExportWhich::Active => KeyState::Active,
            ExportWhich::Pending => KeyState::Pending,
        };
        let row = self.keyset_row(keyset).await?;
        let alg = require_rsa(&row)?;
        let keys = self.store.list_keys(row.id).await?;
        let key = keys.iter().find(|k| k.state == state).ok_or_else(|| {
            Error::FailedPrecondition(format!("key set {keyset:?} has no {state} key"))
        })?;
        let sealed = self.store.sealed_key(&key.kid).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!("key {} has no private material", key.kid))
        })?;
        let binding = KeyBinding {
            keyset_id: row.id,
            alg,
            kid: &sealed.kid,
        };
        let pkcs8 = self.open_key(&binding, &sealed)?;
        let private = RsaPrivateKey::from_pkcs8_der(pkcs8.expose()).map_err(|_| {
            tracing::error!(kid = %sealed.kid, "stored RSA key does not parse");
            Error::DataLoss
        })?;
        let public_spki_der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(Error::internal)?
            .as_bytes()
            .to_vec();
        tracing::warn!(
            keyset,
            kid = %key.kid,
            state = %state,
            "private key exported (PKCS#8) for OpenMetadata"
        );
        Ok(ExportedKey {
            kid: key.kid.clone(),
            algorithm: alg.as_str().to_string(),
            private_pkcs8_der: pkcs8,
            public_spki_der,
            state,
            issuer: self.issuer.clone(),
            jwks_uri: self.jwks_uri(keyset),
        })
    }

    /// keyward's JWKS URL for `keyset`.
    pub fn jwks_uri(&self, keyset: &str) -> String {
        format!("{}/keysets/{keyset}/jwks.json", self.issuer)
    }

    /// Installs an existing RSA key as the active key under `kid`; the active
    /// key retires (still published), the pending key is kept.
    pub async fn import_key(
        &self,
        keyset: &str,
        private_key: &[u8],
        public_key: Option<&[u8]>,
        kid: &str,
    ) -> Result<Imported> {
        model::validate_kid(kid)?;
        let row = self.keyset_row(keyset).await?;
        let alg = require_rsa(&row)?;
        let private = parse_private(private_key)?;
        let bits = private.size() * 8;
        if bits < MIN_IMPORT_RSA_BITS {
            return Err(Error::invalid(
                "private_key",
                format!(
                    "a {bits}-bit RSA key is too weak; use at least {MIN_IMPORT_RSA_BITS} bits"
                ),
            ));
        }
        if bits > MAX_IMPORT_RSA_BITS {
            return Err(Error::invalid(
                "private_key",
                format!(
                    "a {bits}-bit RSA key is larger than the {MAX_IMPORT_RSA_BITS} bits keyward signs with"
                ),
            ));
        }
        if let Some(public) = public_key {
            let public = parse_public(public)?;
            if public.n() != private.n() || public.e() != private.e() {
                return Err(Error::invalid(
                    "public_key",
                    "does not match private_key: they are halves of different keys",
                ));
            }
        }
        if let Some(existing) = self.store.find_key(kid).await? {
            return Err(Error::AlreadyExists(format!(
                "kid {kid:?} is already used (key set {:?}); a kid is never reused",
                existing.keyset
            )));
        }
        let der = private.to_pkcs8_der().map_err(Error::internal)?;
        let pkcs8 = SecretBytes::new(der.as_bytes().to_vec());
        let signing = SigningKey::from_pkcs8(alg, pkcs8.expose())
            .map_err(|e| Error::invalid("private_key", format!("rejected for signing: {e}")))?;
        let binding = KeyBinding {
            keyset_id: row.id,
            alg,
            kid,
        };
        let now = self.clock.now();
        let imported = NewKey {
            kid: kid.to_string(),
            state: KeyState::Active,
            algorithm: alg,
            public_jwk: Value::Object(signing.public_jwk().to_published(kid, alg)).to_string(),
            private_key: self.seal_key(&binding, pkcs8.expose()),
            master_key_id: self.keyring.id().to_string(),
            created_at: now,
        };
        let policy = row.policy.clone();
        let active: Vec<_> = self
            .store
            .list_keys(row.id)
            .await?
            .into_iter()
            .filter(|k| k.state == KeyState::Active)
            .map(|k| KeyChange {
                kid: k.kid,
                from: KeyState::Active,
                to: KeyState::Retired,
            })
            .collect();
        // The imported key signs at once and gets a full period before the
        // next scheduled rotation, as after a manual rotation.
        let plan = Plan {
            changes: active,
            rotates: true,
            next_rotation_at: Some(policy.next_due(row.next_rotation_at.min(now), now)),
            ..Plan::default()
        };
        let mut t = self.apply_plan(&row, &plan, now, vec![imported]).await?;
        if let Some(e) = t.events.iter_mut().find(|e| e.kid == kid) {
            e.detail = format!("imported {bits}-bit RSA key signs from now on");
        }
        tracing::warn!(keyset, kid, bits, "key imported and active");
        let key = t
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or_else(|| Error::internal("imported key missing after import"))?;
        let (events, keys) = (t.events, t.keys);
        Ok(Imported { key, events, keys })
    }
}
