//! The one call pipeline. Every call from outside (a gRPC method, a token
//! request, a local `keyward master` command) and every change keyward makes
//! on its own (retention) runs through [`Service::audited`]: authenticate the
//! caller (throttled), authorize the action on its target, run the body, and
//! record the audit event with the durability the event needs. A call whose
//! event must be stored before the answer fails, returning nothing, when it
//! cannot be.

use std::{future::Future, net::IpAddr, sync::Arc};

use futures_util::FutureExt as _;

use super::Service;
use crate::{
    Error,
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
    /// The trusted proxy the request came through, when it did.
    pub via: Option<IpAddr>,
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
            via: None,
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

    /// The key a peer's failures and refusals are counted under: its
    /// address.
    fn peer_key(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }

    /// The peer as the audit log records it: the address, and under mutual
    /// TLS the client certificate's subject.
    fn peer_text(&self) -> String {
        let address = match (self.peer, self.via) {
            (Some(ip), Some(proxy)) => format!("{ip} via {proxy}"),
            (Some(ip), None) => ip.to_string(),
            (None, _) => String::new(),
        };
        match self.client_subject.as_deref() {
            Some(subject) if address.is_empty() => format!("[{subject}]"),
            Some(subject) => format!("{address} [{subject}]"),
            None => address,
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

/// Runs `body`; a panic in it becomes an internal error, so the call still
/// answers and its audit event is still written (whatever it committed
/// before the panic is recorded as a failed call, never as nothing).
async fn run<R, E, F, Fut>(body: F) -> std::result::Result<R, E>
where
    E: CallError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = std::result::Result<R, E>>,
{
    match std::panic::AssertUnwindSafe(body()).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            tracing::error!(panic = what, "a call panicked; it answers INTERNAL");
            Err(E::from(Error::internal("the call panicked")))
        }
    }
}

/// Longest a free-text field of an audit event is stored; what a caller can
/// make keyward write is bounded.
const MAX_AUDIT_FIELD: usize = 256;

/// `text` cut to [`MAX_AUDIT_FIELD`] bytes (at a character boundary), saying
/// how much was left out.
fn bounded(mut text: String) -> String {
    if text.len() <= MAX_AUDIT_FIELD {
        return text;
    }
    let total = text.len();
    let mut cut = MAX_AUDIT_FIELD;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("…({} more bytes)", total - cut));
    text
}

/// The door a call comes through and the failure throttle it counts
/// against, under the key (the peer address, and the client id at the token
/// endpoint) made only when the throttle needs it.
struct Gate<'a> {
    door: Door,
    throttle: &'a FailureThrottle,
    /// The client id presented, or `""` for API tokens.
    client: &'a str,
}

/// Why a caller was refused before its call ran, and whether to record it.
struct Refusal<E> {
    error: E,
    /// Whether the refusal goes in the audit log (a throttled key's first
    /// refusal does; the rest are only counted).
    record: bool,
}

impl Service {
    /// Runs one call: authenticates `caller`, checks it may take `action` on
    /// `target`, runs `body`, and records the call's audit event. An event
    /// that must be durable before the answer is written first; if it cannot
    /// be, the call fails with [`Error::AuditUnavailable`] and `body`'s
    /// result (a secret, perhaps) is dropped.
    ///
    /// Failed authentications are throttled per peer address (and client id
    /// at the token endpoint): past the limit, an API token that does not
    /// check is refused as throttled while a valid one is still served; a
    /// client is refused unchecked. What an unauthenticated peer makes
    /// keyward record is bounded ([`crate::domain::throttle::AuditBudget`]).
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
        let gate = self.gate(caller);
        let (principal, result, mut record) = match self.admit::<E>(caller, gate.as_ref()) {
            Err(refused) => (
                Principal::Refused(caller.claimed()),
                Err(refused.error),
                refused.record,
            ),
            Ok(principal) => {
                let allowed = match (&principal, &action) {
                    (Principal::Granted(grant), Action::Call(method)) => {
                        grant.authorize(*method, target.scope()).map_err(E::from)
                    }
                    _ => Ok(()),
                };
                let result = match allowed {
                    Ok(()) => run(body).await,
                    Err(denied) => Err(denied),
                };
                (principal, result, true)
            }
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(err) => err.outcome(),
        };
        if outcome.is_authentication_failure()
            && let Some(gate) = &gate
        {
            self.metrics.auth_failed(gate.door);
            gate.throttle.failed(&caller.peer_key(), gate.client);
        }
        // A refusal of a caller not known to be who it says is recorded
        // within its peer's budget.
        let unverified = match &principal {
            Principal::Granted(_) => false,
            Principal::Client(_) => outcome != Outcome::Ok,
            Principal::Refused(_) => true,
        };
        if record && unverified {
            record = self.audit_budget.spend(&caller.peer_key());
            if !record {
                self.metrics.unrecorded_refusal();
            }
        }
        if !record {
            return result;
        }
        let event = AuditEvent {
            at: self.clock.now(),
            principal: bounded(principal.name()),
            action,
            target: bounded(target.into_name()),
            outcome,
            peer: bounded(caller.peer_text()),
            request_id: caller.request_id.clone(),
        };
        let durability = Durability::of_event(&event);
        match self.audit(event, durability).await {
            Ok(()) => result,
            Err(err) => Err(E::from(err)),
        }
    }

    /// The door a credential comes through and its failure throttle, keyed
    /// by the peer address for API tokens and by the address and the client
    /// id at the token endpoint, so an attacker cannot lock a real client
    /// out. Local callers have none, and neither has a token request that
    /// names no client.
    fn gate<'a>(&'a self, caller: &'a Caller) -> Option<Gate<'a>> {
        let (door, throttle, client) = match &caller.credential {
            Credential::ApiToken(_) => (Door::Grpc, &self.grpc_throttle, ""),
            Credential::Client(Some(id)) => {
                (Door::TokenEndpoint, &self.token_throttle, id.as_str())
            }
            Credential::Client(None) | Credential::Local(_) => return None,
        };
        Some(Gate {
            door,
            throttle,
            client,
        })
    }

    /// Who the caller is, or why they are refused.
    fn admit<E: CallError>(
        &self,
        caller: &Caller,
        gate: Option<&Gate<'_>>,
    ) -> std::result::Result<Principal, Refusal<E>> {
        let refuse = |error: E| Refusal {
            error,
            record: true,
        };
        // A replica cut off from its database does not authenticate from
        // what it can no longer check.
        if !matches!(caller.credential, Credential::Local(_)) {
            self.views_fresh().map_err(|err| refuse(E::from(err)))?;
        }
        match &caller.credential {
            Credential::ApiToken(token) => {
                let grant = match token {
                    None => Err(Error::Unauthenticated(
                        "missing `authorization: Bearer <token>` metadata",
                    )),
                    Some(token) => self.authenticate(token.expose()),
                };
                // A token that checks is served even from a throttled
                // address (behind a shared proxy, everyone's): only the
                // failing attempts are throttled.
                grant.map(Principal::Granted).map_err(|err| {
                    if let Some(throttled) = self.throttled(caller, gate) {
                        return throttled;
                    }
                    tracing::info!(peer = ?caller.peer, "gRPC call with a missing, unknown, revoked or expired token");
                    refuse(E::from(err))
                })
            }
            Credential::Client(_) => match self.throttled(caller, gate) {
                // A client secret may be weak: past the limit, a client's
                // attempts from that address are not even checked.
                Some(throttled) => Err(throttled),
                None => Ok(Principal::Client(caller.claimed())),
            },
            Credential::Local(who) => Ok(Principal::Granted(Arc::new(Grant {
                name: (*who).to_string(),
                role: Role::Admin,
                keysets: Vec::new(),
                clients: Vec::new(),
            }))),
        }
    }

    /// The throttle's refusal of the caller's key, if it has reached its
    /// limit.
    fn throttled<E: CallError>(
        &self,
        caller: &Caller,
        gate: Option<&Gate<'_>>,
    ) -> Option<Refusal<E>> {
        let gate = gate?;
        // Nothing tracked (the common case): no key to make.
        if gate.throttle.is_idle() {
            return None;
        }
        let throttled = gate.throttle.check(&caller.peer_key(), gate.client).err()?;
        if throttled.first {
            match gate.door {
                Door::Grpc => tracing::warn!(peer = ?caller.peer, "gRPC authentication throttled"),
                Door::TokenEndpoint => {
                    tracing::warn!(peer = ?caller.peer, client = %gate.client, "token request throttled");
                }
            }
        }
        self.metrics.throttled(gate.door);
        Some(Refusal {
            error: E::throttled(throttled.retry_after),
            record: throttled.first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crypto::aead::{Keyring, MasterKey},
        domain::{
            access::Method, audit::AuditFilter, clock::ManualClock, secret::SecretBytes,
            throttle::ThrottleSettings,
        },
        error::ErrorKind,
        service::{
            Settings,
            audit::{AuditLog, load_chain_key},
        },
        store::{SqliteStore, Store},
    };

    /// A service on a fresh SQLite database in `dir`.
    async fn service_in(dir: &std::path::Path) -> (Service, Arc<dyn Store>) {
        let url = format!("sqlite://{}", dir.join("keyward.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("open"));
        store.migrate().await.expect("migrate");
        let key = MasterKey::from_bytes(&SecretBytes::new(vec![7; 32])).expect("key");
        let keyring = Keyring::new(key);
        let chain = load_chain_key(store.as_ref(), &keyring)
            .await
            .expect("chain key");
        let settings = Settings {
            jwks_max_age: 300,
            issuer: "http://keyward.test".into(),
            default_keyset: "default".into(),
            auth_throttle: ThrottleSettings::default(),
            max_view_age: std::time::Duration::from_secs(5),
        };
        let service = Service::new(
            Arc::clone(&store),
            Arc::new(keyring),
            Arc::new(ManualClock::new(1_800_000_000)),
            settings,
            AuditLog::start(Arc::clone(&store), chain),
        );
        (service, store)
    }

    #[tokio::test]
    async fn a_call_that_panics_answers_internal_and_is_still_audited() {
        let dir = tempfile::tempdir().expect("dir");
        let (service, store) = service_in(dir.path()).await;
        let caller = Caller::local("tester", "panic-1".into());
        let action = Action::Call(Method::RotateKeySet);
        let target = Target::Named("om".into());
        let answered: crate::Result<()> = service
            .audited(&caller, action, target, || async {
                panic!("after the commit")
            })
            .await;
        assert!(matches!(&answered, Err(Error::Internal(_))), "{answered:?}");
        service.flush_audit().await;
        let filter = AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        };
        let events = store.list_audit(&filter).await.expect("list");
        let event = &events.first().expect("the call's event").event;
        assert_eq!(
            (
                event.principal.as_str(),
                event.target.as_str(),
                event.request_id.as_str()
            ),
            ("tester", "om", "panic-1")
        );
        assert_eq!(event.outcome, Outcome::Failed(ErrorKind::Internal));
    }
}
