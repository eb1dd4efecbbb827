//! Signing: `SignJwt`'s claim rules and lifetimes, and the active key of a
//! key set, opened and parsed once per key and kept with the view.

use std::sync::Arc;

use super::{Service, material::KeyBinding};
use crate::{
    Error, Result,
    crypto::keys::SigningKey,
    domain::claims::{self, SignProfile},
    domain::model::{self, secs_i64},
    view::KeySetEntry,
};

/// Largest accepted `claims_json`, in bytes.
pub const MAX_CLAIMS_BYTES: usize = 16 * 1024;
/// Token lifetime when the caller gives none (capped by the key set's max).
pub const DEFAULT_TOKEN_TTL: u64 = 3600;

/// A signed token.
#[derive(Debug, Clone)]
pub struct SignedJwt {
    /// Compact JWS.
    pub jwt: String,
    /// The signing key's kid.
    pub kid: String,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// A `SignJwt` request.
#[derive(Debug, Clone, Default)]
pub struct SignRequest {
    /// The key set that signs.
    pub keyset: String,
    /// Claims, a JSON object (empty means `{}`).
    pub claims_json: String,
    /// Lifetime in seconds.
    pub ttl_seconds: Option<u64>,
    /// Claim rules to apply.
    pub profile: SignProfile,
    /// Sets `sub`.
    pub subject: Option<String>,
    /// Sets `email`.
    pub email: Option<String>,
}

impl Service {
    /// A live key set from the in-memory view.
    pub(super) fn keyset_entry(&self, name: &str) -> Result<Arc<KeySetEntry>> {
        model::validate_keyset_name(name)?;
        self.keysets
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("key set {name:?} does not exist")))
    }

    /// The key set's active key, parsed for signing: opened and parsed once
    /// per active key, then kept with the key set's view entry.
    fn signer(&self, entry: &KeySetEntry) -> Result<Arc<SigningKey>> {
        if let Some(key) = entry.signer() {
            return Ok(key);
        }
        let row = &entry.row;
        let sealed = entry.active.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!("key set {:?} has no active key", row.name))
        })?;
        let alg = row.algorithm;
        let binding = KeyBinding {
            keyset_id: row.id,
            alg,
            kid: &sealed.kid,
        };
        let pkcs8 = self.open_key(&binding, sealed)?;
        let key = SigningKey::from_pkcs8(alg, pkcs8.expose()).map_err(|e| {
            tracing::error!(kid = %sealed.kid, error = %e, "stored private key does not parse");
            Error::DataLoss
        })?;
        // Imported keys keep the kid their tokens already carry.
        Ok(entry.keep_signer(Arc::new(key.with_kid(sealed.kid.clone()))))
    }

    /// Signs a token with the key set's active key, as `SignJwt` asks.
    pub async fn sign_jwt(&self, req: &SignRequest) -> Result<SignedJwt> {
        let claims_json = if req.claims_json.is_empty() {
            "{}"
        } else {
            &req.claims_json
        };
        if claims_json.len() > MAX_CLAIMS_BYTES {
            return Err(Error::invalid(
                "claims_json",
                format!(
                    "{} bytes is over the limit of {MAX_CLAIMS_BYTES} bytes",
                    claims_json.len()
                ),
            ));
        }
        let mut claims = match serde_json::from_str::<serde_json::Value>(claims_json) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => return Err(Error::invalid("claims_json", "must be a JSON object")),
            Err(e) => {
                return Err(Error::invalid(
                    "claims_json",
                    format!("not valid JSON: {e}"),
                ));
            }
        };
        for reserved in ["iat", "exp"] {
            if claims.contains_key(reserved) {
                return Err(Error::invalid(
                    "claims_json",
                    format!("{reserved:?} is set by keyward; use ttl to choose the lifetime"),
                ));
            }
        }
        claims::apply_subject_and_email(&mut claims, req.subject.as_deref(), req.email.as_deref())?;
        let entry = self.keyset_entry(&req.keyset)?;
        req.profile.apply(&mut claims, entry.row.algorithm)?;
        self.sign_claims(&entry, claims, req.ttl_seconds).await
    }

    /// Signs `claims` with the active key of `entry`, setting `iat` and `exp`.
    /// `ttl` defaults to an hour (capped by the key set's max-token-ttl).
    pub(super) async fn sign_claims(
        &self,
        entry: &KeySetEntry,
        claims: serde_json::Map<String, serde_json::Value>,
        ttl: Option<u64>,
    ) -> Result<SignedJwt> {
        let row = &entry.row;
        let max = row.policy.max_token_ttl;
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL.min(max));
        if ttl == 0 || ttl > max {
            return Err(Error::invalid(
                "ttl_seconds",
                format!(
                    "{} is out of range for key set {:?}: use 1s to its max-token-ttl ({})",
                    model::format_duration(ttl),
                    row.name,
                    model::format_duration(max)
                ),
            ));
        }
        let key = self.signer(entry)?;
        let now = self.clock.now();
        let exp = now.saturating_add(secs_i64(ttl));
        let kid = key.kid().to_string();
        let token = self.jwt_signer.sign(key, claims, now, exp).await?;
        self.metrics.token_issued(&row.name, row.algorithm.as_str());
        Ok(SignedJwt {
            jwt: token,
            kid,
            expires_at: exp,
        })
    }
}
