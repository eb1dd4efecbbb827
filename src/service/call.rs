//! The one call pipeline. Every call from outside (a gRPC method, a token
//! request, a local `keyward master` command) and every change keyward makes
//! on its own (retention) runs through [`Service::audited`]: authenticate the
//! caller (throttled), authorize the action on its target, run the body, and
//! record the audit event with the durability the event needs. A call whose
//! event must be stored before the answer fails, returning nothing, when it
//! cannot be.

use std::{future::Future, net::IpAddr, sync::Arc};

use super::Service;
use crate::{
    Error, Result,
    domain::{
        access::{Grant, Role},
        audit::{Action, AuditEvent, Durability, Outcome},
        oauth::OAuthError,
        secret::SecretString,
        throttle::FailureThrottle,
    },
    ops::metrics::Door,
};

/// How a caller says who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API token (`authorization: Bearer kw_…`); `None` when the call
    /// carried none.
    ApiToken(Option<SecretString>),
    /// An OAuth client at the token endpoint, by the id it presented (`None`
    /// when the request named none). Its secret is checked by the grant.
    Client(Option<String>),
    /// keyward itself (retention), or an operator running a command on the
    /// database with its master key (`keyward master rewrap`): trusted, and
    /// named so in the audit log.
    Local(&'static str),
}

/// Who is calling, as the transport saw them.
#[derive(Debug, Clone)]
pub struct Caller {
    /// How they say who they are.
    pub credential: Credential,
    /// Their IP address, when known.
    pub peer: Option<IpAddr>,
    /// The subject of their TLS client certificate (mutual TLS).
    pub client_subject: Option<String>,
    /// The request id, the caller's or generated.
    pub request_id: String,
}

impl Caller {
    /// keyward acting on its own behalf, or a local command, named `who`.
    pub fn local(who: &'static str, request_id: String) -> Self {
        Self {
            credential: Credential::Local(who),
            peer: None,
            client_subject: None,
            request_id,
        }
    }

    /// The name a caller claims before it is authenticated: a client's id.
    fn claimed(&self) -> String {
        match &self.credential {
            Credential::Client(Some(id)) => id.clone(),
            _ => String::new(),
        }
    }

    /// The peer as the audit log records it: the address, and under mutual
    /// TLS the client certificate's subject.
    fn peer_text(&self) -> String {
        match (self.peer, self.client_subject.as_deref()) {
            (Some(ip), Some(subject)) => format!("{ip} [{subject}]"),
            (Some(ip), None) => ip.to_string(),
            (None, Some(subject)) => format!("[{subject}]"),
            (None, None) => String::new(),
        }
    }
}

/// What a call acts on, for the scope check and the audit event.
#[derive(Debug, Clone)]
pub enum Target {
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

/// An error a call can end with: how the audit log records it, and how the
/// pipeline's own refusals are said in it.
pub trait CallError: From<Error> {
    /// The outcome recorded for it.
    fn outcome(&self) -> Outcome;
    /// Refused unchecked by the failure throttle; retry in `retry_after` s.
    fn throttled(retry_after: u64) -> Self;
}

impl CallError for Error {
    fn outcome(&self) -> Outcome {
        Outcome::Failed(self.kind())
    }

    fn throttled(retry_after: u64) -> Self {
        Self::Throttled { retry_after }
    }
}

impl From<Error> for OAuthError {
    fn from(err: Error) -> Self {
        Self::Server(err)
    }
}

impl CallError for OAuthError {
    fn outcome(&self) -> Outcome {
        Outcome::OAuth(self.code())
    }

    fn throttled(retry_after: u64) -> Self {
        Self::Throttled(retry_after)
    }
}

/// Who the caller turned out to be.
enum Principal {
    /// A token (or a local operator) holding this grant.
    Granted(Arc<Grant>),
    /// A token request's client, by the id it claims (the grant checks it).
    Client(String),
    /// Refused: nobody, or at the token endpoint the client id claimed.
    Refused(String),
}

impl Principal {
    fn name(&self) -> String {
        match self {
            Self::Granted(grant) => grant.name.clone(),
            Self::Client(id) | Self::Refused(id) => id.clone(),
        }
    }
}

impl Service {
    /// Runs one call: authenticates `caller` (refusing, unchecked, one that
    /// failed too often lately), checks it may take `action` on `target`,
    /// runs `body`, and records the call's audit event. An event that must
    /// be durable before the answer is written first; if it cannot be, the
    /// call fails with [`Error::AuditUnavailable`] and `body`'s result (a
    /// secret, perhaps) is dropped.
    pub async fn audited<R, E, F, Fut>(
        &self,
        caller: &Caller,
        action: Action,
        target: Target,
        body: F,
    ) -> std::result::Result<R, E>
    where
        E: CallError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<R, E>>,
    {
        let door = self.door(caller);
        let (principal, result) = match self.admit::<E>(caller, door.as_ref()) {
            Err(refused) => (Principal::Refused(caller.claimed()), Err(refused)),
            Ok(principal) => {
                let allowed = match (&principal, &action) {
                    (Principal::Granted(grant), Action::Call(method)) => {
                        grant.authorize(*method, target.scope()).map_err(E::from)
                    }
                    _ => Ok(()),
                };
                let result = match allowed {
                    Ok(()) => body().await,
                    Err(denied) => Err(denied),
                };
                (principal, result)
            }
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(err) => err.outcome(),
        };
        if outcome.is_authentication_failure()
            && let Some((door, throttle, key)) = &door
        {
            self.metrics.auth_failed(*door);
            throttle.failed(key);
        }
        let event = AuditEvent {
            at: self.clock.now(),
            principal: principal.name(),
            action,
            target: target.into_name(),
            outcome,
            peer: caller.peer_text(),
            request_id: caller.request_id.clone(),
        };
        let durability = Durability::of_event(&event);
        match self.audit(event, durability).await {
            Ok(()) => result,
            Err(err) => Err(E::from(err)),
        }
    }

    /// The door a credential comes through, its failure throttle and the key
    /// failures are counted under: the peer address for API tokens; the
    /// address and the client id at the token endpoint, so an attacker
    /// cannot lock a real client out. Local callers have none.
    fn door(&self, caller: &Caller) -> Option<(Door, &FailureThrottle, String)> {
        let peer = || caller.peer.map(|p| p.to_string()).unwrap_or_default();
        match &caller.credential {
            Credential::ApiToken(_) => Some((Door::Grpc, &self.grpc_throttle, peer())),
            Credential::Client(Some(id)) => Some((
                Door::TokenEndpoint,
                &self.token_throttle,
                format!("{} {id}", peer()),
            )),
            Credential::Client(None) | Credential::Local(_) => None,
        }
    }

    /// Who the caller is, or why they are refused.
    fn admit<E: CallError>(
        &self,
        caller: &Caller,
        door: Option<&(Door, &FailureThrottle, String)>,
    ) -> std::result::Result<Principal, E> {
        // The key is built only when the throttle tracks failures: the
        // common call costs one atomic load here.
        if let Some((door, throttle, key)) = door
            && !throttle.is_idle()
            && let Err(retry_after) = throttle.check(key)
        {
            match door {
                Door::Grpc => tracing::warn!(peer = ?caller.peer, "gRPC authentication throttled"),
                Door::TokenEndpoint => {
                    tracing::warn!(peer = ?caller.peer, "token request throttled");
                }
            }
            self.metrics.throttled(*door);
            return Err(E::throttled(retry_after));
        }
        match &caller.credential {
            Credential::ApiToken(token) => {
                let grant = match token {
                    None => Err(Error::Unauthenticated(
                        "missing `authorization: Bearer <token>` metadata",
                    )),
                    Some(token) => self.authenticate(token.expose()),
                };
                grant.map(Principal::Granted).map_err(|err| {
                    tracing::info!(peer = ?caller.peer, "gRPC call with a missing, unknown, revoked or expired token");
                    E::from(err)
                })
            }
            Credential::Client(_) => Ok(Principal::Client(caller.claimed())),
            Credential::Local(who) => Ok(Principal::Granted(Arc::new(Grant {
                name: (*who).to_string(),
                role: Role::Admin,
                keysets: Vec::new(),
                clients: Vec::new(),
            }))),
        }
    }

    /// [`Self::audited`] for keyward's own changes: trusted, recorded under
    /// `who`.
    pub(super) async fn audited_locally<R, F, Fut>(
        &self,
        who: &'static str,
        action: Action,
        target: Target,
        body: F,
    ) -> Result<R>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R>>,
    {
        let caller = Caller::local(who, String::new());
        self.audited(&caller, action, target, body).await
    }
}
