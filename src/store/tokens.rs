//! API tokens as stored: names, roles and scopes with the token's SHA-256,
//! never the token itself.

use async_trait::async_trait;

use crate::{Result, domain::access::Role};

/// An API token as stored: its name, role and scope, never the token itself.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// The token's name (`bootstrap` for the first admin token).
    #[sqlx(rename = "id")]
    pub name: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// Its role.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Key set patterns, as a JSON array.
    pub keysets: String,
    /// Client patterns, as a JSON array.
    pub clients: String,
    /// What it is for.
    pub description: String,
    /// Creation time.
    pub created_at: i64,
    /// When it stops working, if ever.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// What a revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The token is revoked.
    Revoked,
    /// No unrevoked token has that name.
    Missing,
    /// Refused: it is the last admin token that stays valid.
    LastAdmin,
}

/// API tokens. Every change bumps the tokens generation.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Stores the first admin token's hash unless an admin token exists; returns
    /// whether it wrote (exactly one of several racing processes does).
    async fn insert_first_admin_token(&self, hash: &[u8], now: i64) -> Result<bool>;

    /// Hashes of every admin token.
    async fn admin_token_hashes(&self) -> Result<Vec<Vec<u8>>>;

    /// Stores a new API token; `AlreadyExists` if its name is taken.
    async fn insert_token(&self, token: &TokenRow) -> Result<()>;

    /// Every API token, revoked and expired ones too, by name.
    async fn list_tokens(&self) -> Result<Vec<TokenRow>>;

    /// Revokes a token at `now`, unless it is an admin token and no other
    /// admin token stays valid until `admin_kept_until`: checked and done as
    /// one, so two admins revoking each other at once leave one.
    async fn revoke_token(&self, name: &str, now: i64, admin_kept_until: i64)
    -> Result<Revocation>;

    /// The counter bumped by every token change.
    async fn tokens_generation(&self) -> Result<i64>;
}
