//! The audit trail's rules: what an event holds (typed: who, which action,
//! what outcome), which events must be durable before their response, which
//! events a listing returns, and how a walk of the stored chain finds the
//! first changed, deleted or reordered event.
//!
//! Each event's `hash` links it to the previous one (`link(previous hash, id,
//! event)`). The link is a keyed MAC computed by [`crate::crypto`]; here it is
//! the [`Linker`] the walk is given.

use super::{access::Method, oauth::OAuthCode};
use crate::error::ErrorKind;

mod chain;

pub use chain::*;

/// The target of a retention prune event: the ids it deleted.
pub fn prune_target(first: i64, last: i64) -> String {
    format!("{first}..={last}")
}

/// The ids a prune event's target names.
pub(crate) fn pruned_range(target: &str) -> Option<(i64, i64)> {
    let (first, last) = target.split_once("..=")?;
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// What an audited call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A `keyward.v1` method, called over gRPC or run locally.
    Call(Method),
    /// A `POST /oauth2/token` request.
    TokenEndpoint,
    /// Retention pruned older events.
    Prune,
    /// A seal unwrapped (or failed to unwrap) a master key at start.
    Unwrap,
    /// A seal wrapped a master key: a seal added, or a key newly in the keyring.
    Wrap,
    /// `keyward master forget-seal` deleted a seal's wraps.
    ForgetSeal,
    /// A stored action this keyward does not know (a newer one wrote it).
    Other(String),
}

impl Action {
    /// The action as stored and listed: the method's name, `/oauth2/token`
    /// or `AuditPrune`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Call(method) => method.as_str(),
            Self::TokenEndpoint => "/oauth2/token",
            Self::Prune => "AuditPrune",
            Self::Unwrap => "MasterKeyUnwrap",
            Self::Wrap => "MasterKeyWrap",
            Self::ForgetSeal => "MasterForgetSeal",
            Self::Other(name) => name,
        }
    }

    /// The action a stored name means.
    pub fn parse(name: &str) -> Self {
        match name {
            "/oauth2/token" => Self::TokenEndpoint,
            "AuditPrune" => Self::Prune,
            "MasterKeyUnwrap" => Self::Unwrap,
            "MasterKeyWrap" => Self::Wrap,
            "MasterForgetSeal" => Self::ForgetSeal,
            other => Method::parse(other).map_or_else(|| Self::Other(other.into()), Self::Call),
        }
    }
}

/// How an audited call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed: stored as the canonical status name (`PERMISSION_DENIED`).
    Failed(ErrorKind),
    /// A token request failed with this RFC 6749 error code.
    OAuth(OAuthCode),
    /// A stored outcome this keyward does not know.
    Other(String),
}

impl Outcome {
    /// The outcome as stored and listed: `OK`, a status name or an OAuth code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "OK",
            Self::Failed(kind) => kind.name(),
            Self::OAuth(code) => code.as_str(),
            Self::Other(text) => text,
        }
    }

    /// The outcome a stored text means.
    pub fn parse(text: &str) -> Self {
        if text == "OK" {
            return Self::Ok;
        }
        if let Some(kind) = ErrorKind::ALL.into_iter().find(|k| k.name() == text) {
            return Self::Failed(kind);
        }
        OAuthCode::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .map_or_else(|| Self::Other(text.into()), Self::OAuth)
    }

    /// Whether the caller's credentials were refused.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            Self::Failed(ErrorKind::Unauthenticated) | Self::OAuth(OAuthCode::InvalidClient)
        )
    }
}

/// One audited call, before it is stored. Never holds a secret, a token, a
/// private key or a claims payload: only names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Token name, `bootstrap`, the OAuth client id, or who ran a local
    /// command; empty when unknown.
    pub principal: String,
    /// What was done.
    pub action: Action,
    /// Key set, kid, client id or token name; empty when the call names none.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The caller's IP address (and client certificate); empty when unknown.
    pub peer: String,
    /// The request id, the caller's or generated.
    pub request_id: String,
}

/// A stored event: its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, consecutive from 1.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
    /// The link of the previous hash, the id and the fields.
    pub hash: Vec<u8>,
}

/// When an event must reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the response is sent; if it cannot be stored the call fails.
    BeforeResponse,
    /// Within a second, in a batch; a crash can lose the last batch.
    Batched,
}

impl Durability {
    /// Events that reveal or change secrets or keys, token management and
    /// refused authentication are durable before the response; reads of
    /// public or non-secret data and signing are batched.
    pub fn of(method: Method) -> Self {
        use Method::*;
        match method {
            GetKeySet
            | ListKeySets
            | ListKeys
            | SignJwt
            | GetJwks
            | GetClient
            | ListClients
            | GetToken
            | ListTokens
            | ListAuditEvents
            | VerifyAuditChain
            | GetMasterStatus
            | Watch
            | ListWebhooks
            | ListWebhookDeliveries => Self::Batched,
            CreateKeySet | UpdateKeySet | DeleteKeySet | RotateKeySet | RotateDue | RevokeKey
            | ExportKey | ImportKey | PutClient | GetClientSecret | RotateClientSecret
            | DeleteClient | RevokeClientSecret | VerifyClientSecret | CreateToken
            | RevokeToken | Rewrap | CreateWebhook | DeleteWebhook => Self::BeforeResponse,
        }
    }

    /// How soon `event` must be stored: a refused authentication before the
    /// answer, a refusal by the failure throttle (many by nature, never
    /// checked) batched, a token issued batched, any other call as its
    /// method says.
    pub fn of_event(event: &AuditEvent) -> Self {
        match (&event.outcome, &event.action) {
            (Outcome::Failed(ErrorKind::ResourceExhausted), _) => Self::Batched,
            (outcome, _) if outcome.is_authentication_failure() => Self::BeforeResponse,
            (_, Action::Call(method)) => Self::of(*method),
            (_, Action::TokenEndpoint) => Self::Batched,
            (
                _,
                Action::Prune
                | Action::Unwrap
                | Action::Wrap
                | Action::ForgetSeal
                | Action::Other(_),
            ) => Self::BeforeResponse,
        }
    }
}

/// Which audit events a listing returns: newest first, every filter given
/// matching exactly.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events at or after this time, Unix seconds.
    pub since: Option<i64>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this action, as stored (`RotateKeySet`, `/oauth2/token`).
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only events older than this id (paging).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000 + n,
            principal: "ops".into(),
            action: Action::Call(Method::RotateKeySet),
            target: format!("set-{n}"),
            outcome: Outcome::Ok,
            peer: "127.0.0.1".into(),
            request_id: format!("r{n}"),
        }
    }

    #[test]
    fn actions_and_outcomes_read_back_as_stored() {
        for method in Method::ALL {
            let action = Action::Call(*method);
            assert_eq!(Action::parse(action.as_str()), action);
        }
        for action in [Action::TokenEndpoint, Action::Prune] {
            assert_eq!(Action::parse(action.as_str()), action);
        }
        assert_eq!(Action::TokenEndpoint.as_str(), "/oauth2/token");
        assert_eq!(
            Action::parse("FutureMethod"),
            Action::Other("FutureMethod".into())
        );
        let mut outcomes = vec![Outcome::Ok];
        outcomes.extend(ErrorKind::ALL.into_iter().map(Outcome::Failed));
        outcomes.extend(OAuthCode::ALL.into_iter().map(Outcome::OAuth));
        for outcome in outcomes {
            assert_eq!(Outcome::parse(outcome.as_str()), outcome);
        }
        assert_eq!(
            Outcome::Failed(ErrorKind::PermissionDenied).as_str(),
            "PERMISSION_DENIED"
        );
        assert_eq!(
            Outcome::parse("CANCELLED"),
            Outcome::Other("CANCELLED".into())
        );
    }

    #[test]
    fn every_method_has_a_durability_and_secret_reads_are_durable() {
        assert_eq!(
            Durability::of(Method::GetClientSecret),
            Durability::BeforeResponse
        );
        assert_eq!(
            Durability::of(Method::ExportKey),
            Durability::BeforeResponse
        );
        assert_eq!(Durability::of(Method::SignJwt), Durability::Batched);
        for m in Method::ALL {
            let _ = Durability::of(*m);
        }
    }

    #[test]
    fn refusals_are_durable_and_throttled_ones_batched() {
        let with = |action, outcome| AuditEvent {
            action,
            outcome,
            ..event(1)
        };
        let read = Action::Call(Method::GetKeySet);
        assert_eq!(
            Durability::of_event(&with(read.clone(), Outcome::Ok)),
            Durability::Batched
        );
        assert_eq!(
            Durability::of_event(&with(
                read.clone(),
                Outcome::Failed(ErrorKind::Unauthenticated)
            )),
            Durability::BeforeResponse
        );
        assert_eq!(
            Durability::of_event(&with(read, Outcome::Failed(ErrorKind::ResourceExhausted))),
            Durability::Batched
        );
        assert_eq!(
            Durability::of_event(&with(
                Action::TokenEndpoint,
                Outcome::OAuth(OAuthCode::InvalidClient)
            )),
            Durability::BeforeResponse
        );
        assert_eq!(
            Durability::of_event(&with(
                Action::TokenEndpoint,
                Outcome::OAuth(OAuthCode::InvalidScope)
            )),
            Durability::Batched
        );
        assert_eq!(
            Durability::of_event(&with(Action::Prune, Outcome::Ok)),
            Durability::BeforeResponse
        );
    }
}
