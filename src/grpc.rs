//! The gRPC transport: `keyward.v1.KeySets` and `keyward.v1.Clients` over the
//! [`Service`] service, behind the bearer-token [`Authenticator`].

use std::{collections::BTreeMap, sync::Arc};

use tonic::{Request, Response, Status, service::Interceptor};

use crate::{
    Error,
    access::{Grant, Method},
    crypto::keys::Algorithm,
    error::ErrorKind,
    model::{self, KeyState},
    rotation::Cadence,
    secret::SecretString,
    service::{
        Client, ClientPatch, ExportWhich, KeyInfo, KeySetInfo, NewToken, PageRequest, PolicyInput,
        RotationEvent, Service, SignProfile, SignRequest, TokenInfo, Transition,
    },
};

/// The gRPC code of each kind of error.
pub fn grpc_code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::DataLoss => tonic::Code::DataLoss,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        err.log_cause();
        Status::new(grpc_code(err.kind()), err.to_string())
    }
}

/// Generated protobuf types and gRPC stubs for `keyward.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("keyward.v1");

    /// Encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("keyward_descriptor");
}

use pb::{
    access_server::{Access, AccessServer},
    clients_server::{Clients, ClientsServer},
    key_sets_server::{KeySets, KeySetsServer},
};

/// Authenticates `authorization: Bearer <token>` against the service's
/// in-memory token view and records the token's [`Grant`] in the request
/// extensions, where each handler checks it with [`allow`].
#[derive(Clone)]
pub struct Authenticator {
    service: Arc<Service>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Authenticates against `service`'s tokens.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let peer = request.remote_addr().map(|a| a.ip());
        let grant = match self.service.authenticate_peer(peer, token) {
            Ok(grant) => grant,
            Err(err @ Error::Throttled { .. }) => return Err(err.into()),
            Err(_) if token.is_none() => {
                return Err(Status::unauthenticated(
                    "missing `authorization: Bearer <token>` metadata",
                ));
            }
            Err(_) => {
                return Err(Status::unauthenticated(
                    "invalid token (unknown, revoked or expired)",
                ));
            }
        };
        request.extensions_mut().insert(grant);
        Ok(request)
    }
}

/// Checks that the request's token may call `method` on `target`.
fn allow<T>(req: &Request<T>, method: Method, target: Option<&str>) -> Result<Arc<Grant>, Status> {
    let grant = req
        .extensions()
        .get::<Arc<Grant>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no token"))?;
    grant.authorize(method, target)?;
    Ok(grant)
}

/// The gRPC services, sharing one [`Service`].
#[derive(Debug, Clone)]
pub struct Api {
    service: Arc<Service>,
}

impl Api {
    /// Wraps the service.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// `keyward.v1.KeySets`, behind `auth`.
    pub fn key_sets(
        &self,
        auth: Authenticator,
    ) -> tonic::service::interceptor::InterceptedService<KeySetsServer<Self>, Authenticator> {
        KeySetsServer::with_interceptor(self.clone(), auth)
    }

    /// `keyward.v1.Clients`, behind `auth`.
    pub fn clients(
        &self,
        auth: Authenticator,
    ) -> tonic::service::interceptor::InterceptedService<ClientsServer<Self>, Authenticator> {
        ClientsServer::with_interceptor(self.clone(), auth)
    }

    /// `keyward.v1.Access`, behind `auth`.
    pub fn access(
        &self,
        auth: Authenticator,
    ) -> tonic::service::interceptor::InterceptedService<AccessServer<Self>, Authenticator> {
        AccessServer::with_interceptor(self.clone(), auth)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

fn keyset_pb(info: KeySetInfo) -> pb::KeySet {
    let (rotate_every_seconds, schedule) = match &info.policy.cadence {
        Cadence::Every(period) => (*period, String::new()),
        Cadence::Cron(cron) => (0, cron.to_string()),
    };
    pb::KeySet {
        name: info.name,
        algorithm: info.algorithm.as_str().to_string(),
        rsa_bits: info.rsa_bits.unwrap_or(0),
        created_at: info.created_at,
        active_kid: info.active_kid.unwrap_or_default(),
        published_keys: info.published_keys,
        rotate_every_seconds,
        schedule,
        prepublish_seconds: info.policy.prepublish,
        retain_seconds: info.policy.retain,
        max_token_ttl_seconds: info.policy.max_token_ttl,
        next_rotation_at: info.next_rotation_at,
        jwks_max_age_seconds: info.jwks_max_age,
    }
}

/// Converts a key to its wire form.
pub fn key_pb(info: KeyInfo) -> pb::Key {
    let state = match info.state {
        KeyState::Pending => pb::KeyState::Pending,
        KeyState::Active => pb::KeyState::Active,
        KeyState::Retired => pb::KeyState::Retired,
        KeyState::Expired => pb::KeyState::Expired,
        KeyState::Revoked => pb::KeyState::Revoked,
    };
    pb::Key {
        kid: info.kid,
        keyset: info.keyset,
        algorithm: info.algorithm.as_str().to_string(),
        state: state.into(),
        created_at: info.created_at,
        activates_at: info.activates_at.unwrap_or(0),
        retires_at: info.retires_at.unwrap_or(0),
        expires_at: info.expires_at.unwrap_or(0),
        public_jwk_json: info.public_jwk,
        revoked_at: info.revoked_at.unwrap_or(0),
    }
}

/// proto3 strings default to empty: an empty algorithm means RS256.
fn algorithm_of(name: &str) -> Result<Algorithm, Error> {
    if name.is_empty() {
        Ok(Algorithm::Rs256)
    } else {
        model::parse_algorithm(name)
    }
}

/// An empty profile means none.
fn profile_of(name: &str, allow_identity_mismatch: bool) -> Result<SignProfile, Error> {
    match name {
        "" => Ok(SignProfile::Plain),
        "openmetadata" => Ok(SignProfile::OpenMetadata {
            allow_identity_mismatch,
        }),
        other => Err(Error::invalid(
            "profile",
            format!("{other:?} is not a profile; use openmetadata or leave it empty"),
        )),
    }
}

/// An empty key choice means the active key.
fn export_which(name: &str) -> Result<ExportWhich, Error> {
    match name {
        "" | "active" => Ok(ExportWhich::Active),
        "pending" => Ok(ExportWhich::Pending),
        other => Err(Error::invalid(
            "key",
            format!("{other:?}: export the active or the pending key"),
        )),
    }
}

fn event_pb(e: RotationEvent) -> pb::RotationEvent {
    pb::RotationEvent {
        keyset: e.keyset,
        action: e.action.as_str().to_string(),
        kid: e.kid,
        detail: e.detail,
    }
}

fn policy_input(p: Option<pb::RotationPolicy>) -> PolicyInput {
    let p = p.unwrap_or_default();
    PolicyInput {
        rotate_every: p.rotate_every_seconds,
        schedule: p.schedule,
        prepublish: p.prepublish_seconds,
        retain: p.retain_seconds,
        max_token_ttl: p.max_token_ttl_seconds,
    }
}

fn transition_parts(t: Transition) -> (Vec<pb::RotationEvent>, Vec<String>, Vec<pb::Key>) {
    (
        t.events.into_iter().map(event_pb).collect(),
        t.warnings,
        t.keys.into_iter().map(key_pb).collect(),
    )
}

fn client_pb(c: Client) -> pb::Client {
    pb::Client {
        id: c.id,
        display_name: c.display_name,
        discovery_uri: c.discovery_uri,
        callback_url: c.callback_url,
        scopes: c.scopes,
        auth_method: c.auth_method.as_str().to_string(),
        labels: c.labels.into_iter().collect(),
        secret_version: u32::try_from(c.secret_version).unwrap_or(u32::MAX),
        created_at: c.created_at,
        updated_at: c.updated_at,
        token_keyset: c.token_keyset.unwrap_or_default(),
        token_ttl_seconds: c.token_ttl,
        audience: c.audience,
        allowed_scopes: c.allowed_scopes,
        token_subject: c.token_subject,
        token_email: c.token_email,
    }
}

fn version_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl KeySets for Api {
    async fn create_key_set(&self, req: Request<pb::CreateKeySetRequest>) -> Reply<pb::KeySet> {
        allow(&req, Method::CreateKeySet, Some(&req.get_ref().name))?;
        let r = req.into_inner();
        let info = self
            .service
            .create_keyset(
                &r.name,
                algorithm_of(&r.algorithm)?,
                (r.rsa_bits != 0).then_some(r.rsa_bits),
                &policy_input(r.policy),
            )
            .await?;
        ok(keyset_pb(info))
    }

    async fn update_key_set(&self, req: Request<pb::UpdateKeySetRequest>) -> Reply<pb::KeySet> {
        allow(&req, Method::UpdateKeySet, Some(&req.get_ref().name))?;
        let r = req.into_inner();
        let info = self
            .service
            .update_keyset(&r.name, &policy_input(r.policy))
            .await?;
        ok(keyset_pb(info))
    }

    async fn rotate_due(&self, req: Request<pb::RotateDueRequest>) -> Reply<pb::RotateDueResponse> {
        allow(&req, Method::RotateDue, req.get_ref().keyset.as_deref())?;
        let r = req.into_inner();
        let events = self
            .service
            .rotate_due(r.keyset.as_deref(), r.dry_run)
            .await?
            .into_iter()
            .map(event_pb)
            .collect();
        ok(pb::RotateDueResponse { events })
    }

    async fn revoke_key(&self, req: Request<pb::RevokeKeyRequest>) -> Reply<pb::RevokeKeyResponse> {
        allow(&req, Method::RevokeKey, None)?;
        let (events, warnings, keys) =
            transition_parts(self.service.revoke_key(&req.into_inner().kid).await?);
        ok(pb::RevokeKeyResponse {
            events,
            warnings,
            keys,
        })
    }

    async fn get_key_set(&self, req: Request<pb::GetKeySetRequest>) -> Reply<pb::KeySet> {
        allow(&req, Method::GetKeySet, Some(&req.get_ref().name))?;
        ok(keyset_pb(
            self.service.get_keyset(&req.into_inner().name).await?,
        ))
    }

    async fn list_key_sets(
        &self,
        req: Request<pb::ListKeySetsRequest>,
    ) -> Reply<pb::ListKeySetsResponse> {
        allow(&req, Method::ListKeySets, None)?;
        let r = req.into_inner();
        let page = self
            .service
            .list_keysets(&PageRequest {
                page_size: r.page_size,
                page_token: r.page_token,
            })
            .await?;
        ok(pb::ListKeySetsResponse {
            key_sets: page.items.into_iter().map(keyset_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn delete_key_set(
        &self,
        req: Request<pb::DeleteKeySetRequest>,
    ) -> Reply<pb::DeleteKeySetResponse> {
        allow(&req, Method::DeleteKeySet, Some(&req.get_ref().name))?;
        self.service.delete_keyset(&req.into_inner().name).await?;
        ok(pb::DeleteKeySetResponse {})
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        allow(&req, Method::ListKeys, Some(&req.get_ref().keyset))?;
        let keys = self
            .service
            .list_keys(&req.into_inner().keyset)
            .await?
            .into_iter()
            .map(key_pb)
            .collect();
        ok(pb::ListKeysResponse { keys })
    }

    async fn rotate_key_set(
        &self,
        req: Request<pb::RotateKeySetRequest>,
    ) -> Reply<pb::RotateKeySetResponse> {
        allow(&req, Method::RotateKeySet, Some(&req.get_ref().name))?;
        let (events, warnings, keys) =
            transition_parts(self.service.rotate_keyset(&req.into_inner().name).await?);
        ok(pb::RotateKeySetResponse {
            events,
            warnings,
            keys,
        })
    }

    async fn sign_jwt(&self, req: Request<pb::SignJwtRequest>) -> Reply<pb::SignJwtResponse> {
        allow(&req, Method::SignJwt, Some(&req.get_ref().keyset))?;
        let r = req.into_inner();
        let signed = self
            .service
            .sign_jwt(&SignRequest {
                keyset: r.keyset,
                claims_json: r.claims_json,
                ttl_seconds: r.ttl_seconds,
                profile: profile_of(&r.profile, r.allow_identity_mismatch)?,
                subject: r.subject,
                email: r.email,
            })
            .await?;
        ok(pb::SignJwtResponse {
            jwt: signed.jwt,
            kid: signed.kid,
            expires_at: signed.expires_at,
        })
    }

    async fn export_key(&self, req: Request<pb::ExportKeyRequest>) -> Reply<pb::ExportKeyResponse> {
        allow(&req, Method::ExportKey, Some(&req.get_ref().keyset))?;
        let r = req.into_inner();
        let exported = self
            .service
            .export_key(&r.keyset, export_which(&r.key)?)
            .await?;
        ok(pb::ExportKeyResponse {
            kid: exported.kid,
            algorithm: exported.algorithm,
            private_key_pkcs8_der: exported.private_pkcs8_der.expose().to_vec(),
            public_key_spki_der: exported.public_spki_der,
            state: exported.state.as_str().to_string(),
            issuer: exported.issuer,
            jwks_uri: exported.jwks_uri,
        })
    }

    async fn import_key(&self, req: Request<pb::ImportKeyRequest>) -> Reply<pb::ImportKeyResponse> {
        allow(&req, Method::ImportKey, Some(&req.get_ref().keyset))?;
        let r = req.into_inner();
        let imported = self
            .service
            .import_key(&r.keyset, &r.private_key, r.public_key.as_deref(), &r.kid)
            .await?;
        ok(pb::ImportKeyResponse {
            imported: Some(key_pb(imported.key)),
            events: imported.events.into_iter().map(event_pb).collect(),
            keys: imported.keys.into_iter().map(key_pb).collect(),
        })
    }

    async fn get_jwks(&self, req: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        allow(&req, Method::GetJwks, Some(&req.get_ref().keyset))?;
        let doc = self.service.jwks(&req.into_inner().keyset)?;
        ok(pb::GetJwksResponse {
            jwks_json: doc.body.clone(),
        })
    }
}

#[tonic::async_trait]
impl Clients for Api {
    async fn put_client(&self, req: Request<pb::PutClientRequest>) -> Reply<pb::PutClientResponse> {
        allow(&req, Method::PutClient, Some(&req.get_ref().id))?;
        let r = req.into_inner();
        let patch = ClientPatch {
            display_name: r.display_name,
            discovery_uri: r.discovery_uri,
            callback_url: r.callback_url,
            scopes: r.scopes.map(|s| s.values),
            auth_method: r.auth_method,
            labels: r
                .labels
                .map(|l| l.values.into_iter().collect::<BTreeMap<_, _>>()),
            secret: r.secret.map(SecretString::new),
            token_keyset: r.token_keyset,
            token_ttl: r.token_ttl_seconds,
            audience: r.audience,
            allowed_scopes: r.allowed_scopes.map(|s| s.values),
            token_subject: r.token_subject,
            token_email: r.token_email,
        };
        let outcome = self.service.put_client(&r.id, patch).await?;
        ok(pb::PutClientResponse {
            client: Some(client_pb(outcome.client)),
            created: outcome.created,
            generated_secret: outcome
                .generated_secret
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
        })
    }

    async fn get_client(&self, req: Request<pb::GetClientRequest>) -> Reply<pb::Client> {
        allow(&req, Method::GetClient, Some(&req.get_ref().id))?;
        ok(client_pb(
            self.service.get_client(&req.into_inner().id).await?,
        ))
    }

    async fn get_client_secret(
        &self,
        req: Request<pb::GetClientSecretRequest>,
    ) -> Reply<pb::GetClientSecretResponse> {
        allow(&req, Method::GetClientSecret, Some(&req.get_ref().id))?;
        let r = req.into_inner();
        if r.version == Some(0) {
            return Err(Error::invalid("version", "versions start at 1").into());
        }
        let s = self
            .service
            .get_client_secret(&r.id, r.version.map(i64::from))
            .await?;
        ok(pb::GetClientSecretResponse {
            secret: s.secret.expose().to_string(),
            version: version_u32(s.version),
            valid_until: s.valid_until.unwrap_or(0),
        })
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Reply<pb::ListClientsResponse> {
        allow(&req, Method::ListClients, None)?;
        let r = req.into_inner();
        let page = self
            .service
            .list_clients(&PageRequest {
                page_size: r.page_size,
                page_token: r.page_token,
            })
            .await?;
        ok(pb::ListClientsResponse {
            clients: page.items.into_iter().map(client_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn rotate_client_secret(
        &self,
        req: Request<pb::RotateClientSecretRequest>,
    ) -> Reply<pb::RotateClientSecretResponse> {
        allow(&req, Method::RotateClientSecret, Some(&req.get_ref().id))?;
        let r = req.into_inner();
        let rotated = self
            .service
            .rotate_client_secret(&r.id, r.grace_seconds, r.secret.map(SecretString::new))
            .await?;
        ok(pb::RotateClientSecretResponse {
            version: version_u32(rotated.version),
            generated_secret: rotated
                .generated_secret
                .map(|s| s.expose().to_string())
                .unwrap_or_default(),
            previous_valid_until: rotated.previous_valid_until,
        })
    }

    async fn delete_client(
        &self,
        req: Request<pb::DeleteClientRequest>,
    ) -> Reply<pb::DeleteClientResponse> {
        allow(&req, Method::DeleteClient, Some(&req.get_ref().id))?;
        self.service.delete_client(&req.into_inner().id).await?;
        ok(pb::DeleteClientResponse {})
    }

    async fn revoke_client_secret(
        &self,
        req: Request<pb::RevokeClientSecretRequest>,
    ) -> Reply<pb::RevokeClientSecretResponse> {
        allow(&req, Method::RevokeClientSecret, Some(&req.get_ref().id))?;
        let r = req.into_inner();
        let revoked = self
            .service
            .revoke_client_secret(&r.id, i64::from(r.version))
            .await?;
        ok(pb::RevokeClientSecretResponse {
            version: version_u32(revoked.version),
            current_version: version_u32(revoked.current_version),
        })
    }

    async fn verify_client_secret(
        &self,
        req: Request<pb::VerifyClientSecretRequest>,
    ) -> Reply<pb::VerifyClientSecretResponse> {
        allow(&req, Method::VerifyClientSecret, Some(&req.get_ref().id))?;
        let r = req.into_inner();
        let presented = SecretString::new(r.secret);
        let matched = self.service.verify_client_secret(&r.id, &presented).await?;
        ok(pb::VerifyClientSecretResponse {
            valid: matched.is_some(),
            version: matched.map_or(0, version_u32),
        })
    }
}

fn token_pb(t: TokenInfo, now: i64) -> pb::Token {
    let state = if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    };
    pb::Token {
        name: t.name,
        role: t.role.as_str().to_string(),
        keysets: t.keysets,
        clients: t.clients,
        description: t.description,
        created_at: t.created_at,
        expires_at: t.expires_at.unwrap_or(0),
        revoked_at: t.revoked_at.unwrap_or(0),
        state: state.to_string(),
    }
}

#[tonic::async_trait]
impl Access for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Reply<pb::CreateTokenResponse> {
        allow(&req, Method::CreateToken, Some(&req.get_ref().name))?;
        let r = req.into_inner();
        let (info, token) = self
            .service
            .create_token(NewToken {
                name: r.name,
                role: Some(crate::access::Role::parse(&r.role)?),
                keysets: r.keysets,
                clients: r.clients,
                expires_in: r.expires_in_seconds,
                description: r.description,
            })
            .await?;
        ok(pb::CreateTokenResponse {
            info: Some(token_pb(info, self.service.now())),
            token: token.expose().to_string(),
        })
    }

    async fn get_token(&self, req: Request<pb::GetTokenRequest>) -> Reply<pb::Token> {
        allow(&req, Method::GetToken, Some(&req.get_ref().name))?;
        let info = self.service.get_token(&req.get_ref().name).await?;
        ok(token_pb(info, self.service.now()))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Reply<pb::ListTokensResponse> {
        allow(&req, Method::ListTokens, None)?;
        let now = self.service.now();
        let tokens = self
            .service
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| token_pb(t, now))
            .collect();
        ok(pb::ListTokensResponse { tokens })
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Reply<pb::Token> {
        allow(&req, Method::RevokeToken, Some(&req.get_ref().name))?;
        let info = self.service.revoke_token(&req.get_ref().name).await?;
        ok(token_pb(info, self.service.now()))
    }
}
