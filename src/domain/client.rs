//! OIDC clients as the domain knows them: their metadata, typed, and the
//! rules a change to it keeps. Secrets are not here: they stay sealed in the
//! store and are opened by the service one call at a time.

use std::collections::BTreeMap;

use super::{
    claims::om_user_name,
    model::{self, AuthMethod},
    rotation::MAX_TOKEN_TTL,
    secret::SecretString,
};
use crate::{Error, Result};

/// Default lifetime of client-credentials tokens.
pub const DEFAULT_CLIENT_TOKEN_TTL: u64 = 15 * 60;
/// Largest accepted client secret, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

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

impl Client {
    /// A client `id` created at `now` with every setting at its default.
    pub fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            display_name: String::new(),
            discovery_uri: String::new(),
            callback_url: String::new(),
            scopes: Vec::new(),
            auth_method: AuthMethod::ClientSecretBasic,
            labels: BTreeMap::new(),
            secret_version: 1,
            created_at: now,
            updated_at: now,
            token_keyset: None,
            token_ttl: DEFAULT_CLIENT_TOKEN_TTL,
            audience: String::new(),
            allowed_scopes: Vec::new(),
            token_subject: String::new(),
            token_email: String::new(),
        }
    }

    /// The client with what `patch` sets (a validated patch) changed at `now`.
    pub fn patched(mut self, patch: ClientPatch, now: i64) -> Result<Self> {
        if let Some(v) = patch.token_keyset {
            self.token_keyset = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = patch.token_ttl {
            self.token_ttl = v;
        }
        if let Some(v) = patch.audience {
            self.audience = v;
        }
        if let Some(v) = patch.allowed_scopes {
            self.allowed_scopes = v;
        }
        if let Some(v) = patch.token_subject {
            self.token_subject = v;
        }
        if let Some(v) = patch.token_email {
            self.token_email = v;
        }
        // OpenMetadata logs a token in as the user its email names: a subject
        // naming someone else would be a silent surprise.
        let email_user = om_user_name(&self.token_email);
        if !self.token_subject.is_empty()
            && !self.token_email.is_empty()
            && email_user != om_user_name(&self.token_subject)
        {
            return Err(Error::invalid(
                "token_email",
                format!(
                    "{:?} names the OpenMetadata user {email_user:?}, not the token subject {:?}: \
                     OpenMetadata logs tokens in by email first",
                    self.token_email, self.token_subject
                ),
            ));
        }
        if let Some(v) = patch.display_name {
            self.display_name = v;
        }
        if let Some(v) = patch.discovery_uri {
            self.discovery_uri = v;
        }
        if let Some(v) = patch.callback_url {
            self.callback_url = v;
        }
        if let Some(v) = patch.scopes {
            self.scopes = v;
        }
        if let Some(v) = patch.auth_method {
            self.auth_method = AuthMethod::parse(&v)?;
        }
        if let Some(v) = patch.labels {
            self.labels = v;
        }
        self.updated_at = now;
        Ok(self)
    }
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

/// A client secret must be 1 to [`MAX_SECRET_BYTES`] bytes.
pub fn check_secret(secret: &SecretString) -> Result<()> {
    let len = secret.expose().len();
    if len == 0 || len > MAX_SECRET_BYTES {
        return Err(Error::invalid(
            "secret",
            format!("must be 1 to {MAX_SECRET_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Validates the fields a patch sets.
impl ClientPatch {
    /// Checks every field the patch sets.
    pub fn validate(self) -> Result<Self> {
        let patch = self;
        if let Some(secret) = &patch.secret {
            check_secret(secret)?;
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
            && (ttl == 0 || ttl > MAX_TOKEN_TTL)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> ClientPatch {
        ClientPatch::default()
    }

    #[test]
    fn a_patch_sets_only_what_it_names() {
        let client = Client::new("ingestion", 10);
        let changed = client
            .clone()
            .patched(
                ClientPatch {
                    scopes: Some(vec!["openid".into()]),
                    auth_method: Some("client_secret_post".into()),
                    ..patch()
                },
                20,
            )
            .expect("patched");
        assert_eq!(changed.scopes, ["openid"]);
        assert_eq!(changed.auth_method, AuthMethod::ClientSecretPost);
        assert_eq!((changed.created_at, changed.updated_at), (10, 20));
        assert_eq!(changed.token_ttl, client.token_ttl);
        let cleared = changed
            .patched(
                ClientPatch {
                    token_keyset: Some(String::new()),
                    ..patch()
                },
                30,
            )
            .expect("patched");
        assert_eq!(cleared.token_keyset, None);
    }

    #[test]
    fn a_subject_and_email_naming_different_users_are_refused() {
        let err = Client::new("c", 0)
            .patched(
                ClientPatch {
                    token_subject: Some("ingestion-bot".into()),
                    token_email: Some("robot@example.com".into()),
                    ..patch()
                },
                0,
            )
            .expect_err("refused")
            .to_string();
        assert!(err.starts_with("invalid token_email"), "{err}");
    }

    #[test]
    fn patches_are_checked_field_by_field() {
        for (bad, field) in [
            (
                ClientPatch {
                    callback_url: Some("ftp://x".into()),
                    ..patch()
                },
                "callback_url",
            ),
            (
                ClientPatch {
                    scopes: Some(vec!["has space".into()]),
                    ..patch()
                },
                "scopes",
            ),
            (
                ClientPatch {
                    token_ttl: Some(0),
                    ..patch()
                },
                "token_ttl",
            ),
            (
                ClientPatch {
                    token_email: Some("not-an-address".into()),
                    ..patch()
                },
                "token_email",
            ),
            (
                ClientPatch {
                    secret: Some(SecretString::new(String::new())),
                    ..patch()
                },
                "secret",
            ),
        ] {
            let err = bad.validate().expect_err("refused").to_string();
            assert!(err.starts_with(&format!("invalid {field}")), "{err}");
        }
        assert!(patch().validate().is_ok());
    }
}
