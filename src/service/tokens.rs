//! API tokens: creating, listing and revoking them, and the in-memory view
//! every request is authenticated against (no database query per call; the
//! view reloads when the token generation moves, here or on another replica).

use std::{collections::HashMap, sync::Arc};

use super::Service;
use crate::{
    Error, Result,
    crypto::{b64url, random, sha256},
    domain::{
        access::{Grant, Pattern, Role, ScopeKind},
        model,
        secret::SecretString,
    },
    store::{Revocation, Store, TokenRow},
};

/// Revoking an admin token needs another admin token valid at least this
/// much longer: one about to expire would leave nobody in charge.
pub const ADMIN_KEPT_FOR: u64 = 86_400;

/// The prefix of every keyward token, so secret scanners can find leaks.
pub const TOKEN_PREFIX: &str = "kw_";

/// A new token's settings.
#[derive(Debug, Default)]
pub struct NewToken {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Option<Role>,
    /// Key set patterns (signer, exporter).
    pub keysets: Vec<String>,
    /// Client patterns (secret-reader).
    pub clients: Vec<String>,
    /// Lifetime in seconds; `None`: it never expires.
    pub expires_in: Option<u64>,
    /// What it is for.
    pub description: String,
}

/// A token as shown: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Key set patterns.
    pub keysets: Vec<String>,
    /// Client patterns.
    pub clients: Vec<String>,
    /// What it is for.
    pub description: String,
    /// Creation time.
    pub created_at: i64,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// The tokens that authenticate, by hash, as of one token generation.
#[derive(Debug, Default)]
pub(super) struct TokenView {
    generation: i64,
    by_hash: HashMap<[u8; 32], (Arc<Grant>, Option<i64>)>,
}

fn patterns(field: &'static str, json: &str) -> Result<Vec<Pattern>> {
    let texts: Vec<String> = serde_json::from_str(json).map_err(Error::internal)?;
    texts.iter().map(|t| Pattern::parse(field, t)).collect()
}

fn info_of(row: TokenRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        keysets: serde_json::from_str(&row.keysets).map_err(Error::internal)?,
        clients: serde_json::from_str(&row.clients).map_err(Error::internal)?,
        name: row.name,
        role: row.role,
        description: row.description,
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    })
}

impl TokenView {
    /// Reads every live token.
    pub(super) async fn load(store: &dyn Store) -> Result<Self> {
        let generation = store.tokens_generation().await?;
        let mut by_hash = HashMap::new();
        for row in store.list_tokens().await? {
            if row.revoked_at.is_some() {
                continue;
            }
            let Ok(hash) = <[u8; 32]>::try_from(row.token_hash.as_slice()) else {
                continue;
            };
            let grant = Grant {
                keysets: patterns("keysets", &row.keysets)?,
                clients: patterns("clients", &row.clients)?,
                name: row.name,
                role: row.role,
            };
            by_hash.insert(hash, (Arc::new(grant), row.expires_at));
        }
        Ok(Self {
            generation,
            by_hash,
        })
    }
}

impl Service {
    /// The grant of a presented token: `Unauthenticated` for an unknown,
    /// revoked or expired one. Reads memory only.
    pub fn authenticate(&self, presented: &str) -> Result<Arc<Grant>> {
        // Looked up by the token's SHA-256: how long the lookup takes depends
        // on that digest, which a caller cannot steer towards a stored one, so
        // timing reveals nothing usable about a stored token.
        let hash = sha256(presented.as_bytes());
        let view = self
            .tokens
            .read()
            .map_err(|_| Error::internal("token view lock poisoned"))?;
        match view.by_hash.get(&hash) {
            Some((grant, expires)) if expires.is_none_or(|at| self.clock.now() < at) => {
                Ok(Arc::clone(grant))
            }
            _ => Err(Error::Unauthenticated(
                "invalid token (unknown, revoked or expired)",
            )),
        }
    }

    /// Reloads the token view if the token generation, now `current`, moved
    /// (a change here or on another replica); returns whether it did.
    pub(super) async fn refresh_tokens_if(&self, current: i64) -> Result<bool> {
        let known = self
            .tokens
            .read()
            .map(|v| v.generation)
            .map_err(|_| Error::internal("token view lock poisoned"))?;
        if current == known {
            return Ok(false);
        }
        self.load_tokens().await?;
        Ok(true)
    }

    /// Loads the API tokens into memory: at start, before serving, and after
    /// every change.
    pub async fn load_tokens(&self) -> Result<()> {
        let view = TokenView::load(self.store.as_ref()).await?;
        let mut slot = self
            .tokens
            .write()
            .map_err(|_| Error::internal("token view lock poisoned"))?;
        *slot = view;
        drop(slot);
        self.events_written();
        Ok(())
    }

    /// Creates a named token and returns it, shown this once.
    pub async fn create_token(&self, new: NewToken) -> Result<(TokenInfo, SecretString)> {
        model::validate_keyset_name(&new.name).map_err(|_| {
            Error::invalid(
                "name",
                format!(
                    "{:?} is not a token name (lowercase letters, digits and '-', 1 to 63)",
                    new.name
                ),
            )
        })?;
        let role = new
            .role
            .ok_or_else(|| Error::invalid("role", "give the token a role"))?;
        let scoped = role.scoped_by();
        for (field, list, kind) in [
            ("keysets", &new.keysets, ScopeKind::KeySets),
            ("clients", &new.clients, ScopeKind::Clients),
        ] {
            for text in list {
                Pattern::parse(field, text)?;
            }
            if !list.is_empty() && scoped != Some(kind) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "role {role} is not scoped by {field}; only signer and exporter take --keyset, secret-reader --client"
                    ),
                ));
            }
            if list.is_empty() && scoped == Some(kind) {
                return Err(Error::invalid(
                    field,
                    format!("role {role} needs at least one {field} pattern ('*' for all)"),
                ));
            }
        }
        if new.description.len() > 1024 {
            return Err(Error::invalid("description", "at most 1024 characters"));
        }
        let now = self.clock.now();
        let expires_at = match new.expires_in {
            Some(0) => return Err(Error::invalid("expires_in", "must be at least 1s")),
            Some(secs) => Some(
                now.saturating_add(model::secs_i64(model::check_duration("expires_in", secs)?)),
            ),
            None => None,
        };
        let token = format!("{TOKEN_PREFIX}{}", b64url(&random::bytes::<32>()));
        let row = TokenRow {
            name: new.name,
            token_hash: sha256(token.as_bytes()).to_vec(),
            role,
            keysets: serde_json::to_string(&new.keysets).map_err(Error::internal)?,
            clients: serde_json::to_string(&new.clients).map_err(Error::internal)?,
            description: new.description,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.store.insert_token(&row).await?;
        tracing::info!(token = %row.name, role = %role, "API token created");
        if let Err(err) = self.load_tokens().await {
            tracing::warn!(error = %err, "token view reload failed; the watcher retries");
        }
        Ok((info_of(row)?, SecretString::new(token)))
    }

    /// One page of tokens, by name.
    pub async fn list_tokens(&self, page: &super::PageRequest) -> Result<super::Page<TokenInfo>> {
        page.page_of(self.all_tokens().await?, |t| &t.name)
    }

    /// Every token, by name.
    async fn all_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.store
            .list_tokens()
            .await?
            .into_iter()
            .map(info_of)
            .collect()
    }

    /// One token by name.
    pub async fn get_token(&self, name: &str) -> Result<TokenInfo> {
        self.all_tokens()
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::NotFound(format!("no token named {name:?}")))
    }

    /// Revokes a token: it stops working here at once and on every replica
    /// within the watcher's interval.
    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo> {
        let now = self.clock.now();
        let mut target = self
            .all_tokens()
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::NotFound(format!("no token named {name:?}")))?;
        // Conditional in the database: on the token not being revoked yet
        // (a concurrent revocation elsewhere is reported, not repeated), and
        // on another admin token staying valid (two admins revoking each
        // other at once leave one).
        let kept_until = now.saturating_add(model::secs_i64(ADMIN_KEPT_FOR));
        match self.store.revoke_token(name, now, kept_until).await? {
            Revocation::Revoked => {}
            Revocation::Missing => {
                return Err(Error::FailedPrecondition(format!(
                    "token {name:?} was revoked already"
                )));
            }
            Revocation::LastAdmin => {
                return Err(Error::FailedPrecondition(format!(
                    "token {name:?} is the last working admin token (no other admin token stays \
                     valid for the next {}); create another admin token before revoking it",
                    model::format_duration(ADMIN_KEPT_FOR)
                )));
            }
        }
        tracing::info!(token = name, "API token revoked");
        if let Err(err) = self.load_tokens().await {
            tracing::warn!(error = %err, "token view reload failed; the watcher retries");
        }
        target.revoked_at = Some(now);
        Ok(target)
    }
}
