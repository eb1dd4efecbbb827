//! The gRPC transport: `keyward.v1.KeySets`, `Clients`, `Access`, `Audit` and `Master`
//! over the [`Service`]. Each handler names its method and target and hands
//! its body to [`Api::call`], which authenticates, authorizes and audits.

use std::{collections::BTreeMap, sync::Arc};

use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{
    Error,
    crypto::keys::Algorithm,
    domain::access::Method,
    domain::audit::{self, AuditEvent, Durability},
    domain::model::{self, KeyState},
    domain::rotation::Cadence,
    domain::secret::SecretString,
    error::ErrorKind,
    service::master::{DEFAULT_REWRAP_BATCH, MAX_REWRAP_BATCH, MasterStatus, RewrapProgress},
    service::{
        Client, ClientPatch, ExportWhich, KeyInfo, KeySetInfo, NewToken, PageRequest, PolicyInput,
        RotationEvent, Service, SignProfile, SignRequest, TokenInfo, Transition,
    },
    store::AuditFilter,
};
use tokio_stream::wrappers::ReceiverStream;

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

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
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

    /// Messages that carry a secret or a private key out of keyward (or a
    /// key into it) wipe it when dropped, on the server and in the CLI alike.
    /// Requests carrying a client secret need not: the server moves it into a
    /// `SecretString`. (The encoded bytes in tonic's and hyper's buffers are
    /// not theirs to wipe.)
    macro_rules! wipe_on_drop {
        ($($message:ident { $($field:ident),+ }),+ $(,)?) => {
            $(
                impl Drop for $message {
                    fn drop(&mut self) {
                        $(zeroize::Zeroize::zeroize(&mut self.$field);)+
                    }
                }
            )+
        };
    }

    wipe_on_drop! {
        ExportKeyResponse { private_key_pkcs8_der },
        ImportKeyRequest { private_key },
        PutClientResponse { generated_secret },
        GetClientSecretResponse { secret },
        RotateClientSecretResponse { generated_secret },
        CreateTokenResponse { token },
    }
}

use pb::{
    access_server::{Access, AccessServer},
    audit_server::{Audit, AuditServer},
    clients_server::{Clients, ClientsServer},
    key_sets_server::{KeySets, KeySetsServer},
    master_server::{Master, MasterServer},
};

/// The gRPC services, sharing one [`Service`]. Every call goes through
/// [`Api::call`]: authentication (throttled per peer address), the role and
/// scope check, the handler, and the call's audit event.
#[derive(Debug, Clone)]
pub struct Api {
    service: Arc<Service>,
}

/// What a call names, for the scope check and the audit event.
enum Target {
    /// Nothing in particular (listings, a sweep of every key set).
    None,
    /// A name recorded in the audit event but not scope-checked (a kid).
    Named(String),
    /// A key set or client name, checked against a scoped token's patterns.
    Scoped(String),
}

impl Target {
    fn scope(&self) -> Option<&str> {
        match self {
            Self::Scoped(name) => Some(name),
            Self::None | Self::Named(_) => None,
        }
    }

    fn into_name(self) -> String {
        match self {
            Self::None => String::new(),
            Self::Named(name) | Self::Scoped(name) => name,
        }
    }
}

impl Api {
    /// Wraps the service.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// `keyward.v1.KeySets`.
    pub fn key_sets(&self) -> KeySetsServer<Self> {
        KeySetsServer::new(self.clone())
    }

    /// `keyward.v1.Clients`.
    pub fn clients(&self) -> ClientsServer<Self> {
        ClientsServer::new(self.clone())
    }

    /// `keyward.v1.Access`.
    pub fn access(&self) -> AccessServer<Self> {
        AccessServer::new(self.clone())
    }

    /// `keyward.v1.Audit`.
    pub fn audit(&self) -> AuditServer<Self> {
        AuditServer::new(self.clone())
    }

    /// `keyward.v1.Master`.
    pub fn master(&self) -> MasterServer<Self> {
        MasterServer::new(self.clone())
    }

    /// Runs one call: authenticates its bearer token, checks the token may
    /// call `method` on `target`, runs `handler`, and records the audit
    /// event. An event that must be durable before the response is written
    /// first; if it cannot be, the call fails with `UNAVAILABLE` and its
    /// result (a secret, perhaps) is dropped. The response carries the
    /// request id either way.
    async fn call<T, R, F, Fut>(
        &self,
        req: Request<T>,
        method: Method,
        target: Target,
        handler: F,
    ) -> Reply<R>
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        let started = std::time::Instant::now();
        let request_id = audit::request_id(
            req.metadata()
                .get(audit::REQUEST_ID)
                .and_then(|v| v.to_str().ok()),
        );
        // Every log line of the call carries its request id.
        let span = tracing::info_span!("grpc", request_id = %request_id, method = method.as_str());
        let reply = self
            .authorized_call(req, method, target, handler, request_id)
            .instrument(span)
            .await;
        let code = match &reply {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        self.service
            .metrics()
            .grpc_call(method.as_str(), code_name(code), started.elapsed());
        reply
    }

    async fn authorized_call<T, R, F, Fut>(
        &self,
        req: Request<T>,
        method: Method,
        target: Target,
        handler: F,
        request_id: String,
    ) -> Reply<R>
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        let conn = req.extensions().get::<crate::transport::net::ConnInfo>();
        let peer = conn.and_then(|c| c.remote).map(|a| a.ip());
        // Under mutual TLS the audit event names the client certificate too.
        let peer_text = match (peer, conn.and_then(|c| c.client_subject.as_deref())) {
            (Some(ip), Some(subject)) => format!("{ip} [{subject}]"),
            (Some(ip), None) => ip.to_string(),
            (None, Some(subject)) => format!("[{subject}]"),
            (None, None) => String::new(),
        };
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let authenticated = self.service.authenticate_peer(peer, token);
        let (principal, result, durability) = match authenticated {
            Err(err) => {
                let durability = match err {
                    // Refusals without a check are many by nature: batched.
                    Error::Throttled { .. } => Durability::Batched,
                    _ => Durability::BeforeResponse,
                };
                let status = match err {
                    Error::Throttled { .. } => err.into(),
                    _ if token.is_none() => {
                        Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
                    }
                    _ => Status::unauthenticated("invalid token (unknown, revoked or expired)"),
                };
                (String::new(), Err(status), durability)
            }
            Ok(grant) => {
                let result = match grant.authorize(method, target.scope()) {
                    Ok(()) => handler(req.into_inner()).await,
                    Err(err) => Err(err.into()),
                };
                (grant.name.clone(), result, Durability::of(method))
            }
        };
        let outcome = match &result {
            Ok(_) => audit::OK,
            Err(status) => code_name(status.code()),
        };
        let event = AuditEvent {
            at: self.service.now(),
            principal,
            action: method.as_str().to_string(),
            target: target.into_name(),
            outcome: outcome.to_string(),
            peer: peer_text,
            request_id: request_id.clone(),
        };
        let recorded = self.service.audit(event, durability).await;
        let id = tonic::metadata::MetadataValue::try_from(request_id.as_str()).ok();
        match recorded.map_err(Status::from).and(result) {
            Ok(value) => {
                let mut response = Response::new(value);
                if let Some(id) = id {
                    response.metadata_mut().insert(audit::REQUEST_ID, id);
                }
                Ok(response)
            }
            Err(mut status) => {
                if let Some(id) = id {
                    status.metadata_mut().insert(audit::REQUEST_ID, id);
                }
                Err(status)
            }
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

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
        let target = Target::Scoped(req.get_ref().name.clone());
        self.call(req, Method::CreateKeySet, target, |r| async move {
            let info = self
                .service
                .create_keyset(
                    &r.name,
                    algorithm_of(&r.algorithm)?,
                    (r.rsa_bits != 0).then_some(r.rsa_bits),
                    &policy_input(r.policy),
                )
                .await?;
            Ok(keyset_pb(info))
        })
        .await
    }

    async fn update_key_set(&self, req: Request<pb::UpdateKeySetRequest>) -> Reply<pb::KeySet> {
        let target = Target::Scoped(req.get_ref().name.clone());
        self.call(req, Method::UpdateKeySet, target, |r| async move {
            let info = self
                .service
                .update_keyset(&r.name, &policy_input(r.policy))
                .await?;
            Ok(keyset_pb(info))
        })
        .await
    }

    async fn rotate_due(&self, req: Request<pb::RotateDueRequest>) -> Reply<pb::RotateDueResponse> {
        let target = req
            .get_ref()
            .keyset
            .clone()
            .map_or(Target::None, Target::Scoped);
        self.call(req, Method::RotateDue, target, |r| async move {
            let events = self
                .service
                .rotate_due(r.keyset.as_deref(), r.dry_run)
                .await?
                .into_iter()
                .map(event_pb)
                .collect();
            Ok(pb::RotateDueResponse { events })
        })
        .await
    }

    async fn revoke_key(&self, req: Request<pb::RevokeKeyRequest>) -> Reply<pb::RevokeKeyResponse> {
        let target = Target::Named(req.get_ref().kid.clone());
        self.call(req, Method::RevokeKey, target, |r| async move {
            let (events, warnings, keys) = transition_parts(self.service.revoke_key(&r.kid).await?);
            Ok(pb::RevokeKeyResponse {
                events,
                warnings,
                keys,
            })
        })
        .await
    }

    async fn get_key_set(&self, req: Request<pb::GetKeySetRequest>) -> Reply<pb::KeySet> {
        let target = Target::Scoped(req.get_ref().name.clone());
        self.call(req, Method::GetKeySet, target, |r| async move {
            Ok(keyset_pb(self.service.get_keyset(&r.name)?))
        })
        .await
    }

    async fn list_key_sets(
        &self,
        req: Request<pb::ListKeySetsRequest>,
    ) -> Reply<pb::ListKeySetsResponse> {
        self.call(req, Method::ListKeySets, Target::None, |r| async move {
            let page = self
                .service
                .list_keysets(&PageRequest {
                    page_size: r.page_size,
                    page_token: r.page_token,
                })
                .await?;
            Ok(pb::ListKeySetsResponse {
                key_sets: page.items.into_iter().map(keyset_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn delete_key_set(
        &self,
        req: Request<pb::DeleteKeySetRequest>,
    ) -> Reply<pb::DeleteKeySetResponse> {
        let target = Target::Scoped(req.get_ref().name.clone());
        self.call(req, Method::DeleteKeySet, target, |r| async move {
            self.service.delete_keyset(&r.name).await?;
            Ok(pb::DeleteKeySetResponse {})
        })
        .await
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        let target = Target::Scoped(req.get_ref().keyset.clone());
        self.call(req, Method::ListKeys, target, |r| async move {
            let page = PageRequest {
                page_size: r.page_size,
                page_token: r.page_token,
            };
            let page = self.service.list_keys(&r.keyset, &page).await?;
            Ok(pb::ListKeysResponse {
                keys: page.items.into_iter().map(key_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn rotate_key_set(
        &self,
        req: Request<pb::RotateKeySetRequest>,
    ) -> Reply<pb::RotateKeySetResponse> {
        let target = Target::Scoped(req.get_ref().name.clone());
        self.call(req, Method::RotateKeySet, target, |r| async move {
            let (events, warnings, keys) =
                transition_parts(self.service.rotate_keyset(&r.name).await?);
            Ok(pb::RotateKeySetResponse {
                events,
                warnings,
                keys,
            })
        })
        .await
    }

    async fn sign_jwt(&self, req: Request<pb::SignJwtRequest>) -> Reply<pb::SignJwtResponse> {
        let target = Target::Scoped(req.get_ref().keyset.clone());
        self.call(req, Method::SignJwt, target, |r| async move {
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
            Ok(pb::SignJwtResponse {
                jwt: signed.jwt,
                kid: signed.kid,
                expires_at: signed.expires_at,
            })
        })
        .await
    }

    async fn export_key(&self, req: Request<pb::ExportKeyRequest>) -> Reply<pb::ExportKeyResponse> {
        let target = Target::Scoped(req.get_ref().keyset.clone());
        self.call(req, Method::ExportKey, target, |r| async move {
            let exported = self
                .service
                .export_key(&r.keyset, export_which(&r.key)?)
                .await?;
            Ok(pb::ExportKeyResponse {
                kid: exported.kid,
                algorithm: exported.algorithm,
                private_key_pkcs8_der: exported.private_pkcs8_der.expose().to_vec(),
                public_key_spki_der: exported.public_spki_der,
                state: exported.state.as_str().to_string(),
                issuer: exported.issuer,
                jwks_uri: exported.jwks_uri,
            })
        })
        .await
    }

    async fn import_key(&self, req: Request<pb::ImportKeyRequest>) -> Reply<pb::ImportKeyResponse> {
        let target = Target::Scoped(req.get_ref().keyset.clone());
        self.call(req, Method::ImportKey, target, |r| async move {
            let imported = self
                .service
                .import_key(&r.keyset, &r.private_key, r.public_key.as_deref(), &r.kid)
                .await?;
            Ok(pb::ImportKeyResponse {
                imported: Some(key_pb(imported.key)),
                events: imported.events.into_iter().map(event_pb).collect(),
                keys: imported.keys.into_iter().map(key_pb).collect(),
            })
        })
        .await
    }

    async fn get_jwks(&self, req: Request<pb::GetJwksRequest>) -> Reply<pb::GetJwksResponse> {
        let target = Target::Scoped(req.get_ref().keyset.clone());
        self.call(req, Method::GetJwks, target, |r| async move {
            let doc = self.service.jwks(&r.keyset)?;
            Ok(pb::GetJwksResponse {
                jwks_json: doc.body.clone(),
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl Clients for Api {
    async fn put_client(&self, req: Request<pb::PutClientRequest>) -> Reply<pb::PutClientResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::PutClient, target, |r| async move {
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
            Ok(pb::PutClientResponse {
                client: Some(client_pb(outcome.client)),
                created: outcome.created,
                generated_secret: outcome
                    .generated_secret
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_client(&self, req: Request<pb::GetClientRequest>) -> Reply<pb::Client> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::GetClient, target, |r| async move {
            Ok(client_pb(self.service.get_client(&r.id)?))
        })
        .await
    }

    async fn get_client_secret(
        &self,
        req: Request<pb::GetClientSecretRequest>,
    ) -> Reply<pb::GetClientSecretResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::GetClientSecret, target, |r| async move {
            if r.version == Some(0) {
                return Err(Error::invalid("version", "versions start at 1").into());
            }
            let s = self
                .service
                .get_client_secret(&r.id, r.version.map(i64::from))?;
            Ok(pb::GetClientSecretResponse {
                secret: s.secret.expose().to_string(),
                version: version_u32(s.version),
                valid_until: s.valid_until.unwrap_or(0),
            })
        })
        .await
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Reply<pb::ListClientsResponse> {
        self.call(req, Method::ListClients, Target::None, |r| async move {
            let page = self
                .service
                .list_clients(&PageRequest {
                    page_size: r.page_size,
                    page_token: r.page_token,
                })
                .await?;
            Ok(pb::ListClientsResponse {
                clients: page.items.into_iter().map(client_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn rotate_client_secret(
        &self,
        req: Request<pb::RotateClientSecretRequest>,
    ) -> Reply<pb::RotateClientSecretResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::RotateClientSecret, target, |r| async move {
            let rotated = self
                .service
                .rotate_client_secret(&r.id, r.grace_seconds, r.secret.map(SecretString::new))
                .await?;
            Ok(pb::RotateClientSecretResponse {
                version: version_u32(rotated.version),
                generated_secret: rotated
                    .generated_secret
                    .map(|s| s.expose().to_string())
                    .unwrap_or_default(),
                previous_valid_until: rotated.previous_valid_until,
            })
        })
        .await
    }

    async fn delete_client(
        &self,
        req: Request<pb::DeleteClientRequest>,
    ) -> Reply<pb::DeleteClientResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::DeleteClient, target, |r| async move {
            self.service.delete_client(&r.id).await?;
            Ok(pb::DeleteClientResponse {})
        })
        .await
    }

    async fn revoke_client_secret(
        &self,
        req: Request<pb::RevokeClientSecretRequest>,
    ) -> Reply<pb::RevokeClientSecretResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::RevokeClientSecret, target, |r| async move {
            let revoked = self
                .service
                .revoke_client_secret(&r.id, i64::from(r.version))
                .await?;
            Ok(pb::RevokeClientSecretResponse {
                version: version_u32(revoked.version),
                current_version: version_u32(revoked.current_version),
            })
        })
        .await
    }

    async fn verify_client_secret(
        &self,
        req: Request<pb::VerifyClientSecretRequest>,
    ) -> Reply<pb::VerifyClientSecretResponse> {
        let target = Target::Scoped(req.get_ref().id.clone());
        self.call(req, Method::VerifyClientSecret, target, |r| async move {
            let presented = SecretString::new(r.secret);
            let matched = self.service.verify_client_secret(&r.id, &presented)?;
            Ok(pb::VerifyClientSecretResponse {
                valid: matched.is_some(),
                version: matched.map_or(0, version_u32),
            })
        })
        .await
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
        let target = Target::Named(req.get_ref().name.clone());
        self.call(req, Method::CreateToken, target, |r| async move {
            let (info, token) = self
                .service
                .create_token(NewToken {
                    name: r.name,
                    role: Some(crate::domain::access::Role::parse(&r.role)?),
                    keysets: r.keysets,
                    clients: r.clients,
                    expires_in: r.expires_in_seconds,
                    description: r.description,
                })
                .await?;
            Ok(pb::CreateTokenResponse {
                info: Some(token_pb(info, self.service.now())),
                token: token.expose().to_string(),
            })
        })
        .await
    }

    async fn get_token(&self, req: Request<pb::GetTokenRequest>) -> Reply<pb::Token> {
        let target = Target::Named(req.get_ref().name.clone());
        self.call(req, Method::GetToken, target, |r| async move {
            let info = self.service.get_token(&r.name).await?;
            Ok(token_pb(info, self.service.now()))
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Reply<pb::ListTokensResponse> {
        self.call(req, Method::ListTokens, Target::None, |r| async move {
            let now = self.service.now();
            let page = PageRequest {
                page_size: r.page_size,
                page_token: r.page_token,
            };
            let page = self.service.list_tokens(&page).await?;
            Ok(pb::ListTokensResponse {
                tokens: page.items.into_iter().map(|t| token_pb(t, now)).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Reply<pb::Token> {
        let target = Target::Named(req.get_ref().name.clone());
        self.call(req, Method::RevokeToken, target, |r| async move {
            let info = self.service.revoke_token(&r.name).await?;
            Ok(token_pb(info, self.service.now()))
        })
        .await
    }
}

fn audit_event_pb(r: audit::AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        id: r.id,
        at: r.event.at,
        principal: r.event.principal,
        action: r.event.action,
        target: r.event.target,
        outcome: r.event.outcome,
        peer: r.event.peer,
        request_id: r.event.request_id,
    }
}

/// An empty filter matches anything.
fn filter_of(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

#[tonic::async_trait]
impl Audit for Api {
    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Reply<pb::ListAuditEventsResponse> {
        self.call(req, Method::ListAuditEvents, Target::None, |r| async move {
            // limit and before_id are the older spellings of the page.
            let page = PageRequest {
                page_size: if r.page_size == 0 {
                    r.limit
                } else {
                    r.page_size
                },
                page_token: if r.page_token.is_empty() && r.before_id > 0 {
                    PageRequest::token_after(&r.before_id.to_string())
                } else {
                    r.page_token
                },
            };
            let filter = AuditFilter {
                since: (r.since != 0).then_some(r.since),
                principal: filter_of(r.principal),
                action: filter_of(r.action),
                target: filter_of(r.target),
                ..AuditFilter::default()
            };
            let page = self.service.audit_events(filter, &page).await?;
            Ok(pb::ListAuditEventsResponse {
                events: page.items.into_iter().map(audit_event_pb).collect(),
                next_page_token: page.next_page_token.unwrap_or_default(),
            })
        })
        .await
    }

    async fn verify_audit_chain(
        &self,
        req: Request<pb::VerifyAuditChainRequest>,
    ) -> Reply<pb::VerifyAuditChainResponse> {
        self.call(
            req,
            Method::VerifyAuditChain,
            Target::None,
            |_| async move {
                let report = self.service.verify_audit().await?;
                let (broken_id, problem) = report
                    .broken
                    .map_or((0, String::new()), |b| (b.id, b.problem));
                Ok(pb::VerifyAuditChainResponse {
                    intact: broken_id == 0,
                    checked: report.checked,
                    first_id: report.first_id,
                    last_id: report.last_id,
                    broken_id,
                    problem,
                })
            },
        )
        .await
    }
}

/// Converts a master-key status to its wire form.
pub fn master_status_pb(status: MasterStatus) -> pb::MasterStatus {
    pb::MasterStatus {
        current: status.current,
        keys: status
            .keys
            .into_iter()
            .map(|k| pb::MasterKeyUse {
                removable: k.removable(),
                master_key_id: k.master_key_id,
                held: k.held,
                current: k.current,
                keys: k.keys,
                client_secrets: k.client_secrets,
                meta: k.meta,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Master for Api {
    type RewrapStream = ReceiverStream<Result<pb::RewrapProgress, Status>>;

    async fn rewrap(&self, req: Request<pb::RewrapRequest>) -> Reply<Self::RewrapStream> {
        self.call(req, Method::Rewrap, Target::None, |r| async move {
            let batch = match r.batch_size {
                0 => DEFAULT_REWRAP_BATCH,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            };
            if batch > MAX_REWRAP_BATCH {
                return Err(Error::invalid(
                    "batch_size",
                    format!("must be at most {MAX_REWRAP_BATCH}"),
                )
                .into());
            }
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let service = Arc::clone(&self.service);
            // The rewrap runs to its end even if the caller goes away: every
            // batch it commits is whole, and what it leaves a rerun finishes.
            tokio::spawn(async move {
                let progress_tx = tx.clone();
                let mut progress = move |p: RewrapProgress| {
                    // Progress is advisory: a slow reader misses some.
                    let _ = progress_tx.try_send(Ok(pb::RewrapProgress {
                        table: p.table.as_str().to_string(),
                        resealed: p.resealed,
                        total: p.total,
                        ..Default::default()
                    }));
                };
                let pause = std::time::Duration::from_millis(u64::from(r.pause_millis));
                let last = match service.rewrap(batch, pause, &mut progress).await {
                    Ok(outcome) => Ok(pb::RewrapProgress {
                        table: String::new(),
                        resealed: outcome.resealed,
                        total: outcome.resealed,
                        done: true,
                        skipped: outcome.skipped,
                        status: Some(master_status_pb(outcome.status)),
                    }),
                    Err(err) => Err(Status::from(err)),
                };
                let _ = tx.send(last).await;
            });
            Ok(ReceiverStream::new(rx))
        })
        .await
    }

    async fn get_master_status(
        &self,
        req: Request<pb::GetMasterStatusRequest>,
    ) -> Reply<pb::MasterStatus> {
        self.call(req, Method::GetMasterStatus, Target::None, |_| async move {
            Ok(master_status_pb(self.service.master_status().await?))
        })
        .await
    }
}
