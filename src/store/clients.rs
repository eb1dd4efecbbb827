//! OIDC clients and their sealed secret versions as stored: the rows,
//! decoded into the domain's [`Client`], and [`ClientStore`].

use std::fmt::Debug;

use async_trait::async_trait;

use crate::{
    Error, Result,
    domain::{
        client::Client,
        model::{AuthMethod, secs_i64, secs_u64},
    },
};

/// Clients and their sealed secrets as of one clients generation.
#[derive(Debug, Clone, Default)]
pub struct ClientDelta {
    /// The clients generation this was read at.
    pub generation: i64,
    /// Whether this is every client (no `since` was given).
    pub full: bool,
    /// Ids changed since (never with `full`): each is in `clients` unless
    /// it was deleted.
    pub changed: Vec<String>,
    /// The clients read (changed ones, unless `full`).
    pub clients: Vec<Client>,
    /// Every secret version of `clients`.
    pub secrets: Vec<SecretRow>,
}

/// A `clients` row as the database holds it: lists and labels as JSON text.
#[derive(sqlx::FromRow)]
pub(super) struct ClientColumns {
    pub(super) id: String,
    pub(super) display_name: String,
    pub(super) discovery_uri: String,
    pub(super) callback_url: String,
    pub(super) scopes: String,
    pub(super) auth_method: String,
    pub(super) labels: String,
    pub(super) secret_version: i64,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
    pub(super) token_keyset: Option<String>,
    pub(super) token_ttl: i64,
    pub(super) audience: String,
    pub(super) allowed_scopes: String,
    pub(super) token_subject: String,
    pub(super) token_email: String,
}

/// A stored JSON column that does not parse: the row was changed outside
/// keyward.
fn corrupt(column: &str, err: &serde_json::Error) -> Error {
    Error::internal(format!("stored client {column} is not valid JSON: {err}"))
}

impl TryFrom<ClientColumns> for Client {
    type Error = Error;

    fn try_from(c: ClientColumns) -> Result<Self> {
        Ok(Self {
            scopes: serde_json::from_str(&c.scopes).map_err(|e| corrupt("scopes", &e))?,
            labels: serde_json::from_str(&c.labels).map_err(|e| corrupt("labels", &e))?,
            allowed_scopes: serde_json::from_str(&c.allowed_scopes)
                .map_err(|e| corrupt("allowed_scopes", &e))?,
            auth_method: AuthMethod::parse(&c.auth_method)?,
            token_ttl: secs_u64(c.token_ttl),
            id: c.id,
            display_name: c.display_name,
            discovery_uri: c.discovery_uri,
            callback_url: c.callback_url,
            secret_version: c.secret_version,
            created_at: c.created_at,
            updated_at: c.updated_at,
            token_keyset: c.token_keyset,
            audience: c.audience,
            token_subject: c.token_subject,
            token_email: c.token_email,
        })
    }
}

impl ClientColumns {
    /// `client` as the database holds it.
    pub(super) fn of(client: &Client) -> Self {
        Self {
            id: client.id.clone(),
            display_name: client.display_name.clone(),
            discovery_uri: client.discovery_uri.clone(),
            callback_url: client.callback_url.clone(),
            scopes: json(&client.scopes),
            auth_method: client.auth_method.as_str().to_string(),
            labels: json(&client.labels),
            secret_version: client.secret_version,
            created_at: client.created_at,
            updated_at: client.updated_at,
            token_keyset: client.token_keyset.clone(),
            token_ttl: secs_i64(client.token_ttl),
            audience: client.audience.clone(),
            allowed_scopes: json(&client.allowed_scopes),
            token_subject: client.token_subject.clone(),
            token_email: client.token_email.clone(),
        }
    }
}

/// A list or map of strings as JSON text (which cannot fail for those).
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Decodes rows read together.
pub(super) fn decode_clients(rows: Vec<ClientColumns>) -> Result<Vec<Client>> {
    rows.into_iter().map(Client::try_from).collect()
}

/// One version of a client secret, sealed.
#[derive(Clone, sqlx::FromRow)]
pub struct SecretRow {
    /// Owning client.
    pub client_id: String,
    /// Version, from 1.
    pub version: i64,
    /// Secret sealed for row `client_secrets/<client_id>/<version>`.
    pub secret: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
    /// Creation time.
    pub created_at: i64,
    /// End of the grace period once superseded; `None` while current.
    pub valid_until: Option<i64>,
}

impl Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("client_id", &self.client_id)
            .field("version", &self.version)
            .field("master_key_id", &self.master_key_id)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// Clients and their secret versions. Every write bumps the clients
/// generation and records the client it changed.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Creates a client with its first secret. `AlreadyExists` on a taken id.
    async fn insert_client(&self, client: &Client, secret: &SecretRow) -> Result<()>;

    /// Updates a client's metadata (not its secret version). Returns whether it existed.
    async fn update_client(&self, client: &Client) -> Result<bool>;

    /// A client by id.
    async fn get_client(&self, id: &str) -> Result<Option<Client>>;

    /// Up to `limit` clients whose ids sort after `after`, by id.
    async fn list_clients(&self, after: &str, limit: i64) -> Result<Vec<Client>>;

    /// Deletes a client and all its secrets. Returns whether it existed.
    async fn delete_client(&self, id: &str, now: i64) -> Result<bool>;

    /// A client's secret versions, newest first.
    async fn client_secrets(&self, id: &str) -> Result<Vec<SecretRow>>;

    /// What the client view reads, as of one consistent snapshot: with
    /// `since`, only the clients changed after that clients generation;
    /// without, every client.
    async fn clients_since(&self, since: Option<i64>) -> Result<ClientDelta>;

    /// Adds `new` as the current secret, in one transaction conditional on the
    /// current version being `new.version - 1`: every older version stays valid
    /// until `previous_valid_until` at the latest (never longer than it already
    /// was), versions whose grace has ended by `new.created_at` are deleted.
    /// Returns `false`, changing nothing, when another rotation won.
    async fn add_client_secret(&self, new: &SecretRow, previous_valid_until: i64) -> Result<bool>;

    /// Deletes secret version `version` of client `id` unless it is the
    /// current one. Returns whether a row was deleted.
    async fn delete_superseded_secret(&self, id: &str, version: i64, now: i64) -> Result<bool>;

    /// The clients whose client-credentials tokens key set `keyset` signs, by id.
    async fn clients_of_keyset(&self, keyset: &str) -> Result<Vec<Client>>;
}
