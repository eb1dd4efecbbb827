//! The OAuth 2.0 client-credentials grant (RFC 6749 §4.4): a client proves
//! its secret (current, or a previous one in its grace period) and receives a
//! JWT signed by its token key set.

use super::{Caller, Service, Target};
use crate::{
    Error,
    crypto::{b64url, random},
    domain::{
        audit::Action,
        claims,
        model::{self, AuthMethod},
        oauth::OAuthError,
        secret::SecretString,
    },
};

/// A token request, after the transport has parsed the form and the
/// client authentication.
#[derive(Debug)]
pub struct TokenRequest {
    /// `grant_type`.
    pub grant_type: Option<String>,
    /// `scope`, space-delimited.
    pub scope: Option<String>,
    /// The client id presented.
    pub client_id: String,
    /// The presented secret.
    pub client_secret: SecretString,
    /// How the client authenticated: HTTP Basic or the form body.
    pub auth_method: AuthMethod,
}

/// A successful token response.
#[derive(Debug)]
pub struct IssuedToken {
    /// The JWT.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The granted scopes, space-delimited.
    pub scope: String,
}

impl Service {
    /// `POST /oauth2/token`, the client-credentials grant, as one audited
    /// call: `request` is the parsed request, or why it did not parse.
    /// Failed client authentications are throttled per (peer address, client
    /// id): past the limit, attempts get [`OAuthError::Throttled`] unchecked.
    pub async fn token_endpoint(
        &self,
        caller: &Caller,
        request: Result<TokenRequest, OAuthError>,
    ) -> Result<IssuedToken, OAuthError> {
        self.audited(caller, Action::TokenEndpoint, Target::None, || async {
            self.issue_client_token(request?).await
        })
        .await
    }

    async fn issue_client_token(&self, req: TokenRequest) -> Result<IssuedToken, OAuthError> {
        match req.grant_type.as_deref() {
            Some("client_credentials") => {}
            None | Some("") => {
                return Err(OAuthError::InvalidRequest("grant_type is required".into()));
            }
            Some(other) => {
                return Err(OAuthError::UnsupportedGrantType(format!(
                    "{other:?} is not supported; use client_credentials"
                )));
            }
        }
        let bad_client = || OAuthError::InvalidClient("client authentication failed".into());
        if model::validate_client_id(&req.client_id).is_err() {
            return Err(bad_client());
        }
        // A client that may not use this grant (no token key set: an IdP
        // secret kept for OpenMetadata, say) answers exactly as an unknown
        // client does, after the same work, so the endpoint is no oracle for
        // its secret or its existence.
        let entry = self
            .clients
            .get(&req.client_id)
            .filter(|entry| entry.client.token_keyset.is_some());
        let Some(entry) = entry else {
            self.decoy_secret_check(&req.client_secret);
            return Err(bad_client());
        };
        let matched = self
            .matching_secret_version(&entry, &req.client_secret)
            .map_err(OAuthError::Server)?;
        if matched.is_none() {
            tracing::info!(client = %req.client_id, "token request with a wrong secret");
            return Err(bad_client());
        }
        let client = &entry.client;
        // The registered method only (RFC 7591 token_endpoint_auth_method): a
        // client_secret_basic secret sent in a form body, or the reverse, is
        // refused as any failed authentication is.
        if client.auth_method != req.auth_method {
            tracing::info!(
                client = %req.client_id,
                registered = client.auth_method.as_str(),
                used = req.auth_method.as_str(),
                "token request with an authentication method the client is not registered for"
            );
            return Err(bad_client());
        }
        let Some(keyset) = client.token_keyset.as_deref() else {
            return Err(bad_client());
        };
        let scope = claims::granted_scopes(&client.allowed_scopes, req.scope.as_deref())?.join(" ");
        let set = self.keysets.get(keyset).ok_or_else(|| {
            OAuthError::Server(Error::internal(format!(
                "client {}'s token key set {keyset:?} does not exist",
                client.id
            )))
        })?;
        // A token's id is public and guards nothing: it must only never repeat.
        let jti = b64url(&random::unguessable::<16>());
        let claims = claims::client_token_claims(&self.issuer, client, &scope, &jti);
        // Updates refuse a client token-ttl above its key set's max-token-ttl
        // and the reverse; should a race still leave one above, the token gets
        // the key set's maximum rather than the client an error.
        let max = set.row.policy.max_token_ttl;
        let ttl = client.token_ttl.min(max);
        if ttl < client.token_ttl {
            tracing::warn!(client = %client.id, keyset, "client token-ttl above the key set's max-token-ttl; issued with the maximum");
        }
        let signed = self
            .sign_claims(&set, claims, Some(ttl))
            .await
            .map_err(OAuthError::Server)?;
        // The audit log has every issued token; this line is for debugging.
        tracing::debug!(client = %client.id, jti, kid = %signed.kid, "client-credentials token issued");
        Ok(IssuedToken {
            access_token: signed.jwt,
            expires_in: ttl,
            scope,
        })
    }
}
