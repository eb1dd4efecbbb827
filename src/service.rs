//! The application layer: every operation keyward offers, independent of
//! transport. gRPC and HTTP handlers translate to and from these methods.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use crate::{
    Error, Result,
    clock::Clock,
    crypto::{
        aead::{MasterKey, RowId},
        b64url, jwt,
        keys::{self, SigningKey},
        random, secrets_equal,
    },
    jwks::{JwksCache, JwksDoc},
    model::{self, Algorithm, AuthMethod, KeyState},
    secret::SecretString,
    store::{ClientRow, KeyRow, KeySetRow, NewKey, SecretRow, Store},
};

/// Largest accepted `claims_json`, in bytes.
pub const MAX_CLAIMS_BYTES: usize = 16 * 1024;
/// Token lifetime when the caller gives none.
pub const DEFAULT_TOKEN_TTL: u64 = 3600;
/// Longest token lifetime `SignJwt` accepts.
pub const MAX_TOKEN_TTL: u64 = 366 * 86_400;
/// Grace period of a superseded client secret when the caller gives none.
pub const DEFAULT_SECRET_GRACE: u64 = 48 * 3600;
/// Largest accepted client secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

const KEYS_TABLE: &str = "keys";
const SECRETS_TABLE: &str = "client_secrets";

/// A key set as shown to callers.
#[derive(Debug, Clone)]
pub struct KeySetInfo {
    /// The stored row.
    pub row: KeySetRow,
    /// The kid that signs now.
    pub active_kid: Option<String>,
    /// Keys currently published.
    pub published_keys: u32,
}

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

/// An OIDC client's metadata as shown to callers (never its secret).
#[derive(Debug, Clone)]
pub struct Client {
    /// Client id.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// Provider discovery URI.
    pub discovery_uri: String,
    /// Callback URL.
    pub callback_url: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Token endpoint auth method.
    pub auth_method: AuthMethod,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Current secret version.
    pub secret_version: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last update time.
    pub updated_at: i64,
}

/// `PutClient`'s input: `None` keeps the stored value (or takes the default on
/// create).
#[derive(Debug, Default)]
pub struct ClientPatch {
    /// Human-readable name.
    pub display_name: Option<String>,
    /// Provider discovery URI.
    pub discovery_uri: Option<String>,
    /// Callback URL.
    pub callback_url: Option<String>,
    /// Scopes (replaces all).
    pub scopes: Option<Vec<String>>,
    /// Auth method name.
    pub auth_method: Option<String>,
    /// Labels (replaces all).
    pub labels: Option<BTreeMap<String, String>>,
    /// Secret for a new client; `None` generates one.
    pub secret: Option<SecretString>,
}

/// `PutClient`'s result.
#[derive(Debug)]
pub struct PutClientOutcome {
    /// The client as stored.
    pub client: Client,
    /// Whether this call created it.
    pub created: bool,
    /// The secret keyward generated, shown this once.
    pub generated_secret: Option<SecretString>,
}

/// A client secret as read back.
#[derive(Debug)]
pub struct ClientSecret {
    /// The secret.
    pub secret: SecretString,
    /// Its version.
    pub version: i64,
    /// End of its grace period, for a superseded version.
    pub valid_until: Option<i64>,
}

/// `RotateClientSecret`'s result.
#[derive(Debug)]
pub struct RotatedSecret {
    /// The new current version.
    pub version: i64,
    /// The secret keyward generated, shown this once.
    pub generated_secret: Option<SecretString>,
    /// When the previous version stops verifying.
    pub previous_valid_until: i64,
}

/// keyward's application layer.
#[derive(Debug)]
pub struct Keyward {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    jwks: Arc<JwksCache>,
    /// Parsed active key per key set id, so signing skips decrypting and parsing.
    signers: Mutex<HashMap<i64, Arc<SigningKey>>>,
}

impl Keyward {
    /// Assembles the service. The JWKS cache should already be loaded.
    pub fn new(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        jwks: Arc<JwksCache>,
    ) -> Self {
        Self {
            store,
            master,
            clock,
            jwks,
            signers: Mutex::new(HashMap::new()),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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

    // ----- key sets -----

    /// Generates a key off the async workers and seals its private half.
    async fn new_key(&self, alg: Algorithm, rsa_bits: Option<u32>) -> Result<NewKey> {
        let generated =
            tokio::task::spawn_blocking(move || keys::generate(alg, rsa_bits.unwrap_or(2048)))
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)?;
        let kid = generated.key.kid().to_string();
        let row = RowId {
            table: KEYS_TABLE,
            id: &kid,
            version: 1,
        };
        let private_key = self.master.seal(&row, generated.pkcs8.expose());
        let public_jwk =
            serde_json::Value::Object(generated.key.public_jwk().to_published(&kid, alg))
                .to_string();
        Ok(NewKey {
            kid,
            algorithm: alg.as_str().to_string(),
            public_jwk,
            private_key,
            master_key_id: self.master.id().to_string(),
            created_at: self.clock.now(),
        })
    }

    async fn keyset_row(&self, name: &str) -> Result<KeySetRow> {
        model::validate_keyset_name(name)?;
        self.store
            .get_keyset(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key set {name:?} does not exist")))
    }

    async fn keyset_info(&self, row: KeySetRow) -> Result<KeySetInfo> {
        let keys = self.store.list_keys(row.id).await?;
        Ok(Self::info_from_keys(row, &keys))
    }

    fn info_from_keys(row: KeySetRow, keys: &[KeyRow]) -> KeySetInfo {
        let state = |k: &KeyRow| k.state.parse::<KeyState>().ok();
        KeySetInfo {
            active_kid: keys
                .iter()
                .find(|k| state(k) == Some(KeyState::Active))
                .map(|k| k.kid.clone()),
            published_keys: u32::try_from(
                keys.iter()
                    .filter(|k| state(k).is_some_and(KeyState::is_published))
                    .count(),
            )
            .unwrap_or(u32::MAX),
            row,
        }
    }

    /// Creates a key set and its first active key.
    pub async fn create_keyset(
        &self,
        name: &str,
        algorithm: &str,
        rsa_bits: u32,
    ) -> Result<KeySetInfo> {
        model::validate_keyset_name(name)?;
        let alg = model::parse_algorithm(algorithm)?;
        let bits = model::resolve_rsa_bits(alg, rsa_bits)?;
        if self.store.get_keyset(name).await?.is_some() {
            // Checked up front to spare an RSA generation; the unique index
            // still decides races.
            return Err(Error::AlreadyExists(format!(
                "key set {name:?} already exists"
            )));
        }
        let key = self.new_key(alg, bits).await?;
        let now = self.clock.now();
        let row = self
            .store
            .insert_keyset(name, alg.as_str(), bits.map(i64::from), now, &key)
            .await?;
        tracing::info!(keyset = name, alg = %alg, kid = %key.kid, "key set created");
        self.published_changed().await;
        self.keyset_info(row).await
    }

    /// A key set by name.
    pub async fn get_keyset(&self, name: &str) -> Result<KeySetInfo> {
        let row = self.keyset_row(name).await?;
        self.keyset_info(row).await
    }

    /// Every live key set.
    pub async fn list_keysets(&self) -> Result<Vec<KeySetInfo>> {
        let mut out = Vec::new();
        for row in self.store.list_keysets().await? {
            out.push(self.keyset_info(row).await?);
        }
        Ok(out)
    }

    /// Deletes a key set; its kids stay reserved.
    pub async fn delete_keyset(&self, name: &str) -> Result<()> {
        let row = self.keyset_row(name).await?;
        if !self.store.delete_keyset(name, self.clock.now()).await? {
            return Err(Error::NotFound(format!("key set {name:?} does not exist")));
        }
        self.forget_signer(row.id);
        tracing::info!(keyset = name, "key set deleted");
        self.published_changed().await;
        Ok(())
    }

    /// A key set's keys, oldest first.
    pub async fn list_keys(&self, keyset: &str) -> Result<Vec<KeyRow>> {
        let row = self.keyset_row(keyset).await?;
        self.store.list_keys(row.id).await
    }

    /// Manual rotation: a new key becomes active, the active one retires.
    pub async fn rotate_keyset(&self, name: &str) -> Result<(KeyRow, KeyRow)> {
        let row = self.keyset_row(name).await?;
        let current = self.store.active_key(row.id).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!("key set {name:?} has no active key"))
        })?;
        let alg = model::parse_algorithm(&row.algorithm)?;
        let bits = row.rsa_bits.and_then(|b| u32::try_from(b).ok());
        let key = self.new_key(alg, bits).await?;
        let now = self.clock.now();
        if !self
            .store
            .rotate_keyset(row.id, &current.kid, &key, now)
            .await?
        {
            return Err(Error::FailedPrecondition(format!(
                "key set {name:?} was rotated concurrently; nothing was changed, check `keys list` and retry if needed"
            )));
        }
        self.forget_signer(row.id);
        tracing::info!(keyset = name, retired = %current.kid, activated = %key.kid, "key set rotated");
        self.published_changed().await;
        let keys = self.store.list_keys(row.id).await?;
        let find = |kid: &str| {
            keys.iter()
                .find(|k| k.kid == kid)
                .cloned()
                .ok_or_else(|| Error::internal(format!("key {kid} missing after rotation")))
        };
        Ok((find(&key.kid)?, find(&current.kid)?))
    }

    fn forget_signer(&self, keyset_id: i64) {
        if let Ok(mut signers) = self.signers.lock() {
            signers.remove(&keyset_id);
        }
    }

    /// The key set's active key, loaded for signing.
    async fn signer(&self, row: &KeySetRow) -> Result<Arc<SigningKey>> {
        let sealed = self.store.active_key(row.id).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!("key set {:?} has no active key", row.name))
        })?;
        if let Ok(signers) = self.signers.lock()
            && let Some(key) = signers.get(&row.id).filter(|k| k.kid() == sealed.kid)
        {
            return Ok(Arc::clone(key));
        }
        let row_id = RowId {
            table: KEYS_TABLE,
            id: &sealed.kid,
            version: 1,
        };
        let pkcs8 = self.open(&row_id, &sealed.master_key_id, &sealed.private_key)?;
        let alg = model::parse_algorithm(&row.algorithm)?;
        let key = Arc::new(SigningKey::from_pkcs8(alg, pkcs8.expose()).map_err(|e| {
            tracing::error!(row = %row_id, error = %e, "stored private key does not parse");
            Error::DataLoss
        })?);
        if let Ok(mut signers) = self.signers.lock() {
            signers.insert(row.id, Arc::clone(&key));
        }
        Ok(key)
    }

    /// Opens a sealed value, logging the row on failure.
    fn open(
        &self,
        row: &RowId<'_>,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<crate::secret::SecretBytes> {
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

    /// Signs `claims_json` with the key set's active key.
    pub async fn sign_jwt(
        &self,
        keyset: &str,
        claims_json: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<SignedJwt> {
        if claims_json.len() > MAX_CLAIMS_BYTES {
            return Err(Error::invalid(
                "claims_json",
                format!(
                    "{} bytes is over the limit of {MAX_CLAIMS_BYTES} bytes",
                    claims_json.len()
                ),
            ));
        }
        let claims = match serde_json::from_str::<serde_json::Value>(claims_json) {
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
        let ttl = ttl_seconds.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl == 0 || ttl > MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "ttl_seconds",
                format!("{ttl} is out of range; use 1 to {MAX_TOKEN_TTL} seconds (366 days)"),
            ));
        }
        let row = self.keyset_row(keyset).await?;
        let key = self.signer(&row).await?;
        let now = self.clock.now();
        let exp = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        let token = jwt::sign(&key, claims, now, exp).map_err(Error::internal)?;
        Ok(SignedJwt {
            jwt: token,
            kid: key.kid().to_string(),
            expires_at: exp,
        })
    }

    /// The key set's JWKS from the in-memory snapshot.
    pub fn jwks(&self, keyset: &str) -> Result<Arc<JwksDoc>> {
        self.jwks
            .get(keyset)
            .ok_or_else(|| Error::NotFound(format!("key set {keyset:?} does not exist")))
    }

    // ----- clients -----

    fn client_from_row(row: ClientRow) -> Result<Client> {
        let scopes = serde_json::from_str(&row.scopes).map_err(Error::internal)?;
        let labels = serde_json::from_str(&row.labels).map_err(Error::internal)?;
        Ok(Client {
            auth_method: AuthMethod::parse(&row.auth_method)?,
            id: row.id,
            display_name: row.display_name,
            discovery_uri: row.discovery_uri,
            callback_url: row.callback_url,
            scopes,
            labels,
            secret_version: row.secret_version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    async fn client_row(&self, id: &str) -> Result<ClientRow> {
        model::validate_client_id(id)?;
        self.store
            .get_client(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("client {id:?} does not exist")))
    }

    fn generate_secret() -> SecretString {
        SecretString::new(b64url(&random::bytes::<32>()))
    }

    fn check_secret(secret: &SecretString) -> Result<()> {
        let len = secret.expose().len();
        if len == 0 || len > MAX_SECRET_BYTES {
            return Err(Error::invalid(
                "secret",
                format!("must be 1 to {MAX_SECRET_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn seal_secret(&self, client_id: &str, version: i64, secret: &SecretString) -> Vec<u8> {
        let row = RowId {
            table: SECRETS_TABLE,
            id: client_id,
            version,
        };
        self.master.seal(&row, secret.expose().as_bytes())
    }

    /// Creates a client, or updates an existing client's metadata.
    pub async fn put_client(&self, id: &str, patch: ClientPatch) -> Result<PutClientOutcome> {
        model::validate_client_id(id)?;
        let patch = validate_patch(patch)?;
        let now = self.clock.now();
        if let Some(existing) = self.store.get_client(id).await? {
            if patch.secret.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "client {id:?} exists; change its secret with RotateClientSecret (`keyward client rotate`)"
                )));
            }
            let updated = apply_patch(existing, patch, now)?;
            if !self.store.update_client(&updated).await? {
                return Err(Error::NotFound(format!("client {id:?} does not exist")));
            }
            tracing::info!(client = id, "client updated");
            return Ok(PutClientOutcome {
                client: Self::client_from_row(updated)?,
                created: false,
                generated_secret: None,
            });
        }
        let blank = ClientRow {
            id: id.to_string(),
            display_name: String::new(),
            discovery_uri: String::new(),
            callback_url: String::new(),
            scopes: "[]".into(),
            auth_method: AuthMethod::ClientSecretBasic.as_str().into(),
            labels: "{}".into(),
            secret_version: 1,
            created_at: now,
            updated_at: now,
        };
        let (secret, generated) = match &patch.secret {
            Some(given) => (given.clone(), false),
            None => (Self::generate_secret(), true),
        };
        let row = apply_patch(blank, patch, now)?;
        let secret_row = SecretRow {
            client_id: id.to_string(),
            version: 1,
            secret: self.seal_secret(id, 1, &secret),
            master_key_id: self.master.id().to_string(),
            created_at: now,
            valid_until: None,
        };
        self.store.insert_client(&row, &secret_row).await?;
        tracing::info!(client = id, generated_secret = generated, "client created");
        Ok(PutClientOutcome {
            client: Self::client_from_row(row)?,
            created: true,
            generated_secret: generated.then_some(secret),
        })
    }

    /// A client's metadata.
    pub async fn get_client(&self, id: &str) -> Result<Client> {
        Self::client_from_row(self.client_row(id).await?)
    }

    /// Every client.
    pub async fn list_clients(&self) -> Result<Vec<Client>> {
        self.store
            .list_clients()
            .await?
            .into_iter()
            .map(Self::client_from_row)
            .collect()
    }

    /// Deletes a client and all its secrets.
    pub async fn delete_client(&self, id: &str) -> Result<()> {
        model::validate_client_id(id)?;
        if !self.store.delete_client(id).await? {
            return Err(Error::NotFound(format!("client {id:?} does not exist")));
        }
        tracing::info!(client = id, "client deleted");
        Ok(())
    }

    fn open_secret(&self, row: &SecretRow) -> Result<SecretString> {
        let row_id = RowId {
            table: SECRETS_TABLE,
            id: &row.client_id,
            version: row.version,
        };
        let bytes = self.open(&row_id, &row.master_key_id, &row.secret)?;
        String::from_utf8(bytes.expose().to_vec())
            .map(SecretString::new)
            .map_err(|_| Error::DataLoss)
    }

    /// The current secret, or version `version`.
    pub async fn get_client_secret(&self, id: &str, version: Option<i64>) -> Result<ClientSecret> {
        let client = self.client_row(id).await?;
        let wanted = version.unwrap_or(client.secret_version);
        let secrets = self.store.client_secrets(id).await?;
        let row = secrets.iter().find(|s| s.version == wanted).ok_or_else(|| {
            Error::NotFound(format!(
                "client {id:?} has no secret version {wanted} (current is {}; superseded versions are deleted once their grace period ends)",
                client.secret_version
            ))
        })?;
        tracing::info!(client = id, version = wanted, "client secret read");
        Ok(ClientSecret {
            secret: self.open_secret(row)?,
            version: row.version,
            valid_until: row.valid_until,
        })
    }

    /// Makes a new secret current; the previous stays valid for `grace_seconds`.
    pub async fn rotate_client_secret(
        &self,
        id: &str,
        grace_seconds: Option<u64>,
        secret: Option<SecretString>,
    ) -> Result<RotatedSecret> {
        let client = self.client_row(id).await?;
        if let Some(given) = &secret {
            Self::check_secret(given)?;
        }
        let grace = grace_seconds.unwrap_or(DEFAULT_SECRET_GRACE);
        if grace > MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "grace_seconds",
                format!("{grace} is over the limit of {MAX_TOKEN_TTL} seconds (366 days)"),
            ));
        }
        let (secret, generated) = match secret {
            Some(given) => (given, false),
            None => (Self::generate_secret(), true),
        };
        let now = self.clock.now();
        let version = client.secret_version + 1;
        let previous_valid_until = now.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
        let row = SecretRow {
            client_id: id.to_string(),
            version,
            secret: self.seal_secret(id, version, &secret),
            master_key_id: self.master.id().to_string(),
            created_at: now,
            valid_until: None,
        };
        if !self
            .store
            .add_client_secret(&row, previous_valid_until)
            .await?
        {
            return Err(Error::FailedPrecondition(format!(
                "client {id:?} secret was rotated concurrently; nothing was changed, retry if needed"
            )));
        }
        tracing::info!(client = id, version, "client secret rotated");
        Ok(RotatedSecret {
            version,
            generated_secret: generated.then_some(secret),
            previous_valid_until,
        })
    }

    /// Checks `presented` against the current secret and every superseded one
    /// still in its grace period. Every candidate is compared, in constant time.
    pub async fn verify_client_secret(
        &self,
        id: &str,
        presented: &SecretString,
    ) -> Result<Option<i64>> {
        self.client_row(id).await?;
        let now = self.clock.now();
        let mut matched = None;
        for row in self.store.client_secrets(id).await? {
            if row.valid_until.is_some_and(|until| until <= now) {
                continue;
            }
            let stored = self.open_secret(&row)?;
            if secrets_equal(stored.expose().as_bytes(), presented.expose().as_bytes())
                && matched.is_none()
            {
                matched = Some(row.version);
            }
        }
        Ok(matched)
    }
}

/// Validates the fields a patch sets.
fn validate_patch(patch: ClientPatch) -> Result<ClientPatch> {
    if let Some(secret) = &patch.secret {
        Keyward::check_secret(secret)?;
    }
    if let Some(method) = &patch.auth_method {
        AuthMethod::parse(method)?;
    }
    for (field, value) in [
        ("discovery_uri", &patch.discovery_uri),
        ("callback_url", &patch.callback_url),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
            && (!(v.starts_with("https://") || v.starts_with("http://")) || v.len() > 2048)
        {
            return Err(Error::invalid(
                field,
                "must be an http:// or https:// URL of at most 2048 characters",
            ));
        }
    }
    if patch.display_name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(Error::invalid("display_name", "at most 256 characters"));
    }
    if let Some(scopes) = &patch.scopes {
        for scope in scopes {
            // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            let ok = !scope.is_empty()
                && scope.len() <= 256
                && scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !ok {
                return Err(Error::invalid(
                    "scopes",
                    format!(
                        "{scope:?} is not a scope token (RFC 6749 §3.3: printable ASCII, no spaces, quotes or backslashes)"
                    ),
                ));
            }
        }
    }
    if let Some(labels) = &patch.labels
        && (labels.len() > 64
            || labels
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024))
    {
        return Err(Error::invalid(
            "labels",
            "at most 64 labels; keys 1 to 128 characters, values at most 1024",
        ));
    }
    Ok(patch)
}

fn apply_patch(mut row: ClientRow, patch: ClientPatch, now: i64) -> Result<ClientRow> {
    if let Some(v) = patch.display_name {
        row.display_name = v;
    }
    if let Some(v) = patch.discovery_uri {
        row.discovery_uri = v;
    }
    if let Some(v) = patch.callback_url {
        row.callback_url = v;
    }
    if let Some(v) = patch.scopes {
        row.scopes = serde_json::to_string(&v).map_err(Error::internal)?;
    }
    if let Some(v) = patch.auth_method {
        row.auth_method = AuthMethod::parse(&v)?.as_str().to_string();
    }
    if let Some(v) = patch.labels {
        row.labels = serde_json::to_string(&v).map_err(Error::internal)?;
    }
    row.updated_at = now;
    Ok(row)
}
