//! OIDC clients and their secrets: sealed per version, verified in constant
//! time, superseded versions valid for a grace period.

use std::{collections::BTreeMap, sync::Arc};

use super::{Service, claims::om_user_name};
use crate::{
    Error, Result,
    crypto::{aead::AeadContext, b64url, random, secrets_equal},
    domain::{
        model::{self, AuthMethod},
        secret::SecretString,
    },
    store::{ClientRow, SecretRow},
    view::ClientEntry,
};

/// Grace period of a superseded client secret when the caller gives none.
pub const DEFAULT_SECRET_GRACE: u64 = 48 * 3600;
/// Longest grace period.
pub const MAX_SECRET_GRACE: u64 = 366 * 86_400;
/// Largest accepted client secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

const SECRETS_TABLE: &str = "client_secrets";

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
    /// Key set signing its client-credentials tokens; `None`: no tokens issued.
    pub token_keyset: Option<String>,
    /// Lifetime of its tokens, seconds.
    pub token_ttl: u64,
    /// `aud` of its tokens; empty for none.
    pub audience: String,
    /// Scopes it may request at the token endpoint.
    pub allowed_scopes: Vec<String>,
    /// `sub` and `preferred_username` of its tokens; empty: the client id.
    pub token_subject: String,
    /// `email` of its tokens; empty for none.
    pub token_email: String,
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
    /// Key set signing its tokens; empty clears it.
    pub token_keyset: Option<String>,
    /// Lifetime of its tokens, seconds.
    pub token_ttl: Option<u64>,
    /// `aud` of its tokens; empty clears it.
    pub audience: Option<String>,
    /// Scopes it may request (replaces all).
    pub allowed_scopes: Option<Vec<String>>,
    /// `sub` and `preferred_username` of its tokens; empty clears it.
    pub token_subject: Option<String>,
    /// `email` of its tokens; empty clears it.
    pub token_email: Option<String>,
}

/// Default lifetime of client-credentials tokens.
pub const DEFAULT_CLIENT_TOKEN_TTL: u64 = 15 * 60;

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

/// `RevokeClientSecret`'s result.
#[derive(Debug)]
pub struct RevokedSecret {
    /// The version revoked.
    pub version: i64,
    /// The current version, still valid.
    pub current_version: i64,
}

impl Service {
    pub(super) fn client_from_row(row: ClientRow) -> Result<Client> {
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
            token_keyset: row.token_keyset,
            token_ttl: model::secs_u64(row.token_ttl),
            audience: row.audience,
            allowed_scopes: serde_json::from_str(&row.allowed_scopes).map_err(Error::internal)?,
            token_subject: row.token_subject,
            token_email: row.token_email,
        })
    }

    /// A client's token key set must exist and allow its token lifetime.
    async fn check_token_settings(&self, row: &ClientRow) -> Result<()> {
        let Some(name) = &row.token_keyset else {
            return Ok(());
        };
        let set = self.store.get_keyset(name).await?.ok_or_else(|| {
            Error::invalid("token_keyset", format!("key set {name:?} does not exist"))
        })?;
        if model::secs_u64(row.token_ttl) > set.policy.max_token_ttl {
            return Err(Error::invalid(
                "token_ttl",
                format!(
                    "{} is above key set {name:?}'s max-token-ttl ({})",
                    model::format_duration(model::secs_u64(row.token_ttl)),
                    model::format_duration(set.policy.max_token_ttl)
                ),
            ));
        }
        Ok(())
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
        let row = AeadContext {
            table: SECRETS_TABLE,
            id: client_id,
            version,
        };
        self.keyring.seal(&row, secret.expose().as_bytes())
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
            self.check_token_settings(&updated).await?;
            if !self.store.update_client(&updated).await? {
                return Err(Error::NotFound(format!("client {id:?} does not exist")));
            }
            tracing::info!(client = id, "client updated");
            self.refresh_clients().await;
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
            token_keyset: None,
            token_ttl: model::secs_i64(DEFAULT_CLIENT_TOKEN_TTL),
            audience: String::new(),
            allowed_scopes: "[]".into(),
            token_subject: String::new(),
            token_email: String::new(),
        };
        let (secret, generated) = match &patch.secret {
            Some(given) => (given.clone(), false),
            None => (Self::generate_secret(), true),
        };
        let row = apply_patch(blank, patch, now)?;
        self.check_token_settings(&row).await?;
        let secret_row = SecretRow {
            client_id: id.to_string(),
            version: 1,
            secret: self.seal_secret(id, 1, &secret),
            master_key_id: self.keyring.id().to_string(),
            created_at: now,
            valid_until: None,
        };
        self.store.insert_client(&row, &secret_row).await?;
        tracing::info!(client = id, generated_secret = generated, "client created");
        self.refresh_clients().await;
        Ok(PutClientOutcome {
            client: Self::client_from_row(row)?,
            created: true,
            generated_secret: generated.then_some(secret),
        })
    }

    /// A client from the in-memory view.
    pub(super) fn client_entry(&self, id: &str) -> Result<Arc<ClientEntry>> {
        model::validate_client_id(id)?;
        self.clients
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("client {id:?} does not exist")))
    }

    /// A client's metadata.
    pub fn get_client(&self, id: &str) -> Result<Client> {
        Self::client_from_row(self.client_entry(id)?.row.clone())
    }

    /// One page of clients, by id.
    pub async fn list_clients(&self, page: &super::PageRequest) -> Result<super::Page<Client>> {
        let after = page.after()?;
        let mut rows = self.store.list_clients(&after, page.fetch_limit()).await?;
        let next_page_token = page.next_token(&mut rows, |r| &r.id);
        Ok(super::Page {
            items: rows
                .into_iter()
                .map(Self::client_from_row)
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }

    /// Deletes a client and all its secrets.
    pub async fn delete_client(&self, id: &str) -> Result<()> {
        model::validate_client_id(id)?;
        if !self.store.delete_client(id).await? {
            return Err(Error::NotFound(format!("client {id:?} does not exist")));
        }
        tracing::info!(client = id, "client deleted");
        self.refresh_clients().await;
        Ok(())
    }

    /// Seals a secret version again under the current master key.
    pub(super) fn reseal_secret(
        &self,
        client_id: &str,
        version: i64,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let row = AeadContext {
            table: SECRETS_TABLE,
            id: client_id,
            version,
        };
        let plain = self.open(&row, key_id, sealed)?;
        Ok(self.keyring.seal(&row, plain.expose()))
    }

    fn open_secret(&self, row: &SecretRow) -> Result<SecretString> {
        let row_id = AeadContext {
            table: SECRETS_TABLE,
            id: &row.client_id,
            version: row.version,
        };
        let bytes = self.open(&row_id, &row.master_key_id, &row.secret)?;
        String::from_utf8(bytes.expose().to_vec())
            .map(SecretString::new)
            .map_err(|_| Error::DataLoss)
    }

    /// The current secret, or version `version`. The audit log records
    /// every read.
    pub fn get_client_secret(&self, id: &str, version: Option<i64>) -> Result<ClientSecret> {
        let client = self.client_entry(id)?;
        let current = client.row.secret_version;
        let wanted = version.unwrap_or(current);
        let row = client.secrets.iter().find(|s| s.version == wanted).ok_or_else(|| {
            Error::NotFound(format!(
                "client {id:?} has no secret version {wanted} (current is {current}; superseded versions are deleted once their grace period ends)"
            ))
        })?;
        // The audit log has every read; this line is for debugging only.
        tracing::debug!(client = id, version = wanted, "client secret read");
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
        if grace > MAX_SECRET_GRACE {
            return Err(Error::invalid(
                "grace_seconds",
                format!("{grace} is over the limit of {MAX_SECRET_GRACE} seconds (366 days)"),
            ));
        }
        let (secret, generated) = match secret {
            Some(given) => (given, false),
            None => (Self::generate_secret(), true),
        };
        let now = self.clock.now();
        let version = client.secret_version + 1;
        let previous_valid_until = now.saturating_add(model::secs_i64(grace));
        let row = SecretRow {
            client_id: id.to_string(),
            version,
            secret: self.seal_secret(id, version, &secret),
            master_key_id: self.keyring.id().to_string(),
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
        self.refresh_clients().await;
        Ok(RotatedSecret {
            version,
            generated_secret: generated.then_some(secret),
            previous_valid_until,
        })
    }

    /// Ends superseded secret version `version` now (a leaked previous secret).
    /// The current version cannot be revoked: rotating with a zero grace
    /// replaces it and ends every older one.
    pub async fn revoke_client_secret(&self, id: &str, version: i64) -> Result<RevokedSecret> {
        let client = self.client_row(id).await?;
        if version < 1 {
            return Err(Error::invalid("version", "secret versions start at 1"));
        }
        if version == client.secret_version {
            return Err(Error::FailedPrecondition(format!(
                "version {version} is client {id:?}'s current secret; replace it with \
                 `keyward client rotate {id} --grace 0s`, which also ends every older version"
            )));
        }
        let now = self.clock.now();
        let live = self
            .store
            .client_secrets(id)
            .await?
            .into_iter()
            .any(|s| s.version == version && s.valid_until.is_none_or(|until| until > now));
        if !live || !self.store.delete_superseded_secret(id, version).await? {
            return Err(Error::NotFound(format!(
                "client {id:?} has no valid secret version {version} (current is {}; \
                 superseded versions end with their grace period)",
                client.secret_version
            )));
        }
        tracing::warn!(client = id, version, "client secret version revoked");
        self.refresh_clients().await;
        Ok(RevokedSecret {
            version,
            current_version: client.secret_version,
        })
    }

    /// Checks `presented` against the current secret and every superseded one
    /// still in its grace period. Every candidate is compared, in constant time.
    pub fn verify_client_secret(&self, id: &str, presented: &SecretString) -> Result<Option<i64>> {
        let client = self.client_entry(id)?;
        self.matching_secret_version(&client, presented)
    }

    /// The version of the client's secret that `presented` matches, if any
    /// is current or in its grace period.
    pub(super) fn matching_secret_version(
        &self,
        client: &ClientEntry,
        presented: &SecretString,
    ) -> Result<Option<i64>> {
        let now = self.clock.now();
        let mut matched = None;
        for row in &client.secrets {
            if row.valid_until.is_some_and(|until| until <= now) {
                continue;
            }
            let stored = self.open_secret(row)?;
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
        Service::check_secret(secret)?;
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
    for (field, scopes) in [
        ("scopes", &patch.scopes),
        ("allowed_scopes", &patch.allowed_scopes),
    ] {
        if let Some(scopes) = scopes {
            validate_scopes(field, scopes)?;
        }
    }
    if let Some(name) = patch.token_keyset.as_deref().filter(|n| !n.is_empty()) {
        model::validate_keyset_name(name).map_err(|_| {
            Error::invalid("token_keyset", format!("{name:?} is not a key set name"))
        })?;
    }
    if let Some(ttl) = patch.token_ttl
        && (ttl == 0 || ttl > crate::domain::rotation::MAX_TOKEN_TTL)
    {
        return Err(Error::invalid(
            "token_ttl",
            "must be at least 1s and at most the token key set's max-token-ttl",
        ));
    }
    if patch.audience.as_ref().is_some_and(|a| a.len() > 1024) {
        return Err(Error::invalid("audience", "at most 1024 characters"));
    }
    if let Some(subject) = patch.token_subject.as_deref()
        && (subject.len() > 256 || subject.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "token_subject",
            "at most 256 characters, no control characters",
        ));
    }
    if let Some(email) = patch.token_email.as_deref().filter(|e| !e.is_empty()) {
        let well_formed = email.len() <= 254
            && !email.chars().any(|c| c.is_control() || c.is_whitespace())
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.contains('@')
            });
        if !well_formed {
            return Err(Error::invalid(
                "token_email",
                format!("{email:?} is not an address like name@example.com"),
            ));
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

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
pub fn validate_scopes(field: &'static str, scopes: &[String]) -> Result<()> {
    for scope in scopes {
        let ok = !scope.is_empty()
            && scope.len() <= 256
            && scope
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !ok {
            return Err(Error::invalid(
                field,
                format!(
                    "{scope:?} is not a scope token (RFC 6749 §3.3: printable ASCII, no spaces, quotes or backslashes)"
                ),
            ));
        }
    }
    Ok(())
}

fn apply_patch(mut row: ClientRow, patch: ClientPatch, now: i64) -> Result<ClientRow> {
    if let Some(v) = patch.token_keyset {
        row.token_keyset = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = patch.token_ttl {
        row.token_ttl = model::secs_i64(v);
    }
    if let Some(v) = patch.audience {
        row.audience = v;
    }
    if let Some(v) = patch.allowed_scopes {
        row.allowed_scopes = serde_json::to_string(&v).map_err(Error::internal)?;
    }
    if let Some(v) = patch.token_subject {
        row.token_subject = v;
    }
    if let Some(v) = patch.token_email {
        row.token_email = v;
    }
    // OpenMetadata logs a token in as the user its email names: a subject
    // naming someone else would be a silent surprise.
    let email_user = om_user_name(&row.token_email);
    if !row.token_subject.is_empty()
        && !row.token_email.is_empty()
        && email_user != om_user_name(&row.token_subject)
    {
        return Err(Error::invalid(
            "token_email",
            format!(
                "{:?} names the OpenMetadata user {email_user:?}, not the token subject {:?}: \
                 OpenMetadata logs tokens in by email first",
                row.token_email, row.token_subject
            ),
        ));
    }
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
