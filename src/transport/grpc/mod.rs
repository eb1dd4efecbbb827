//! The gRPC transport: `keyward.v1.KeySets`, `Clients`, `Access`, `Audit`,
//! `Master`, `Events` and `Webhooks` over the [`Service`]. What every call shares is written once:
//! [`observe`] (a tower layer) gives each call its request id, its client's
//! address (behind trusted proxies), log span and latency metrics; [`identify`] (an interceptor) puts the caller (bearer
//! token, address, client certificate) in the request's extensions; and
//! `Api::call` hands the handler's body to [`Service::audited`], which
//! authenticates, authorizes and audits. The handlers (`keysets`, `clients`,
//! `access`, `audit`, `master`) only convert (`convert`); listings share one
//! handler (`paging`).

mod access;
mod audit;
mod clients;
pub mod codec;
mod convert;
pub mod dial;
mod events;
mod keysets;
mod master;
pub mod observe;
mod paging;

use std::{future::Future, sync::Arc};

pub use convert::{master_status_pb, token_pb};
use tonic::{Request, Response, Status, service::interceptor::InterceptedService};

use crate::{
    Error,
    domain::{access::Method, audit::Action, secret::SecretString},
    error::ErrorKind,
    service::{Caller, Credential, Service, Target},
    transport::{net::ConnInfo, observe::RequestId, proxy::ClientAddr},
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
        CreateWebhookResponse { signing_secret },
    }
}

use pb::{
    access_server::AccessServer, audit_server::AuditServer, clients_server::ClientsServer,
    events_server::EventsServer, key_sets_server::KeySetsServer, master_server::MasterServer,
    webhooks_server::WebhooksServer,
};

/// The gRPC services, sharing one [`Service`].
#[derive(Debug, Clone)]
pub struct Api {
    service: Arc<Service>,
}

/// A `keyward.v1` service with its callers identified by [`identify`].
pub type Identified<S> = InterceptedService<S, fn(Request<()>) -> Result<Request<()>, Status>>;

type Reply<T> = Result<Response<T>, Status>;

impl Api {
    /// Wraps the service.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }

    /// `keyward.v1.KeySets`.
    pub fn key_sets(&self) -> Identified<KeySetsServer<Self>> {
        KeySetsServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Clients`.
    pub fn clients(&self) -> Identified<ClientsServer<Self>> {
        ClientsServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Access`.
    pub fn access(&self) -> Identified<AccessServer<Self>> {
        AccessServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Audit`.
    pub fn audit(&self) -> Identified<AuditServer<Self>> {
        AuditServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Master`.
    pub fn master(&self) -> Identified<MasterServer<Self>> {
        MasterServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Events`.
    pub fn events(&self) -> Identified<EventsServer<Self>> {
        EventsServer::with_interceptor(self.clone(), identify)
    }

    /// `keyward.v1.Webhooks`.
    pub fn webhooks(&self) -> Identified<WebhooksServer<Self>> {
        WebhooksServer::with_interceptor(self.clone(), identify)
    }

    /// Runs one call of `method` on what `target` names in the request, as
    /// [`Service::audited`]: authenticated, authorized and audited.
    async fn call<T, R, F, Fut>(
        &self,
        mut req: Request<T>,
        method: Method,
        target: impl FnOnce(&T) -> Target,
        body: F,
    ) -> Reply<R>
    where
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = Result<R, Error>>,
    {
        let caller = req
            .extensions_mut()
            .remove::<Caller>()
            .unwrap_or_else(anonymous);
        let message = req.into_inner();
        let target = target(&message);
        self.service
            .audited(&caller, Action::Call(method), target, || body(message))
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}

/// A caller the interceptor did not see: nobody.
fn anonymous() -> Caller {
    Caller {
        credential: Credential::ApiToken(None),
        peer: None,
        via: None,
        client_subject: None,
        request_id: crate::crypto::random::request_id(),
    }
}

/// The interceptor of every `keyward.v1` service: puts the [`Caller`] (the
/// bearer token, the connection's address and client certificate, the
/// request id [`observe`] gave the call) in the request's extensions.
/// [`Service::audited`] authenticates it.
#[allow(clippy::unnecessary_wraps)]
pub fn identify(mut req: Request<()>) -> Result<Request<()>, Status> {
    let token = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| SecretString::new(t.trim().to_string()));
    let conn = req.extensions().get::<ConnInfo>();
    let client = req.extensions().get::<ClientAddr>();
    let caller = Caller {
        credential: Credential::ApiToken(token),
        peer: client
            .map(|c| c.ip)
            .or_else(|| conn.and_then(|c| c.remote).map(|a| a.ip())),
        via: client.and_then(|c| c.via),
        client_subject: conn.and_then(|c| c.client_subject.clone()),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map_or_else(crate::crypto::random::request_id, |id| id.0.clone()),
    };
    req.extensions_mut().insert(caller);
    Ok(req)
}
