//! The audit trail's rules: what an event holds (typed: who, which action,
//! what outcome), which events must be durable before their response, which
//! events a listing returns, and how a walk of the stored chain finds the
//! first changed, deleted or reordered event.
//!
//! Each event's `hash` links it to the previous one (`link(previous hash, id,
//! event)`). The link is a keyed MAC computed by [`crate::crypto`]; here it is
//! the [`Linker`] the walk is given.

use subtle::ConstantTimeEq as _;

use super::{access::Method, oauth::OAuthCode};
use crate::error::ErrorKind;

/// The hash the first event of a database chains from.
pub const GENESIS: [u8; 32] = [0; 32];

/// What an audited call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A `keyward.v1` method, called over gRPC or run locally.
    Call(Method),
    /// A `POST /oauth2/token` request.
    TokenEndpoint,
    /// Retention pruned older events.
    Prune,
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
            Self::Other(name) => name,
        }
    }

    /// The action a stored name means.
    pub fn parse(name: &str) -> Self {
        match name {
            "/oauth2/token" => Self::TokenEndpoint,
            "AuditPrune" => Self::Prune,
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
            GetKeySet | ListKeySets | ListKeys | SignJwt | GetJwks | GetClient | ListClients
            | GetToken | ListTokens | ListAuditEvents | VerifyAuditChain | GetMasterStatus => {
                Self::Batched
            }
            CreateKeySet | UpdateKeySet | DeleteKeySet | RotateKeySet | RotateDue | RevokeKey
            | ExportKey | ImportKey | PutClient | GetClientSecret | RotateClientSecret
            | DeleteClient | RevokeClientSecret | VerifyClientSecret | CreateToken
            | RevokeToken | Rewrap => Self::BeforeResponse,
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
            (_, Action::Prune | Action::Other(_)) => Self::BeforeResponse,
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

/// The link of event `id` to the chain: a keyed hash of the previous hash,
/// the id and every field, under a key only keyward holds.
pub trait Linker: Send + Sync {
    /// The hash of event `id` chained from `prev`.
    fn link(&self, prev: &[u8], id: i64, event: &AuditEvent) -> Vec<u8>;
}

/// Where the stored chain starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBounds {
    /// The first kept event (older ones were pruned).
    pub first_id: i64,
    /// The hash the first kept event chains from.
    pub first_prev: Vec<u8>,
    /// The last event; `first_id - 1` when none is kept.
    pub head_id: i64,
    /// Its hash.
    pub head_hash: Vec<u8>,
}

/// The first event that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Its id (for a deleted event: the id that is missing).
    pub id: i64,
    /// What is wrong, for a person.
    pub problem: String,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub checked: i64,
    /// The first kept event's id.
    pub first_id: i64,
    /// The last event's id.
    pub last_id: i64,
    /// The first break; `None` when the chain is intact.
    pub broken: Option<Broken>,
}

/// Checks stored events one by one, in id order, against the chain.
pub struct ChainWalk<'k> {
    linker: &'k dyn Linker,
    bounds: ChainBounds,
    next_id: i64,
    prev: Vec<u8>,
    checked: i64,
    broken: Option<Broken>,
}

impl std::fmt::Debug for ChainWalk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWalk")
            .field("bounds", &self.bounds)
            .field("next_id", &self.next_id)
            .field("checked", &self.checked)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Whether two hashes are equal, in constant time.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl<'k> ChainWalk<'k> {
    /// Starts at the first kept event.
    pub fn new(linker: &'k dyn Linker, bounds: ChainBounds) -> Self {
        Self {
            linker,
            next_id: bounds.first_id,
            prev: bounds.first_prev.clone(),
            bounds,
            checked: 0,
            broken: None,
        }
    }

    /// Whether the walk has found a break (later events need not be read).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Checks the next stored event.
    pub fn check(&mut self, record: &AuditRecord) {
        if self.broken.is_some() {
            return;
        }
        let problem = if record.id > self.next_id {
            Some((self.next_id, "is missing: deleted".to_string()))
        } else if record.id < self.next_id {
            Some((record.id, "is out of order or duplicated".to_string()))
        } else if !same_hash(
            &self.linker.link(&self.prev, record.id, &record.event),
            &record.hash,
        ) {
            Some((
                record.id,
                "does not match its hash: changed, moved, or the events before it were".to_string(),
            ))
        } else {
            None
        };
        if let Some((id, problem)) = problem {
            self.broken = Some(Broken {
                id,
                problem: format!("event {id} {problem}"),
            });
            return;
        }
        self.checked += 1;
        self.next_id += 1;
        self.prev.clone_from(&record.hash);
    }

    /// Ends the walk: the last event read must be the recorded head.
    pub fn finish(mut self) -> ChainReport {
        if self.broken.is_none() {
            let last = self.next_id - 1;
            if last < self.bounds.head_id {
                self.broken = Some(Broken {
                    id: self.next_id,
                    problem: format!(
                        "events {}..={} are missing: deleted (the chain's head is {})",
                        self.next_id, self.bounds.head_id, self.bounds.head_id
                    ),
                });
            } else if last > self.bounds.head_id || !same_hash(&self.prev, &self.bounds.head_hash) {
                self.broken = Some(Broken {
                    id: last,
                    problem: format!(
                        "event {last} is not the chain's recorded head (event {}): the last events were changed or added outside keyward",
                        self.bounds.head_id
                    ),
                });
            }
        }
        ChainReport {
            checked: self.checked,
            first_id: self.bounds.first_id,
            last_id: self.bounds.head_id,
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Not a MAC: the rules only need a link that changes with every input.
    struct Plain(u8);

    impl Linker for Plain {
        fn link(&self, prev: &[u8], id: i64, e: &AuditEvent) -> Vec<u8> {
            let text = format!(
                "{}|{prev:?}|{id}|{}|{}|{}|{}|{}|{}|{}",
                self.0,
                e.at,
                e.principal,
                e.action.as_str(),
                e.target,
                e.outcome.as_str(),
                e.peer,
                e.request_id
            );
            text.into_bytes()
        }
    }

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

    fn chain(key: &dyn Linker, n: i64) -> (ChainBounds, Vec<AuditRecord>) {
        let mut prev = GENESIS.to_vec();
        let mut records = Vec::new();
        for id in 1..=n {
            let hash = key.link(&prev, id, &event(id));
            records.push(AuditRecord {
                id,
                event: event(id),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let bounds = ChainBounds {
            first_id: 1,
            first_prev: GENESIS.to_vec(),
            head_id: n,
            head_hash: prev,
        };
        (bounds, records)
    }

    fn walk(key: &dyn Linker, bounds: &ChainBounds, records: &[AuditRecord]) -> ChainReport {
        let mut walk = ChainWalk::new(key, bounds.clone());
        for r in records {
            walk.check(r);
        }
        walk.finish()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let key = Plain(7);
        let (bounds, records) = chain(&key, 5);
        let report = walk(&key, &bounds, &records);
        assert_eq!(report.broken, None);
        assert_eq!((report.checked, report.first_id, report.last_id), (5, 1, 5));
        let empty = ChainBounds {
            first_id: 1,
            first_prev: GENESIS.to_vec(),
            head_id: 0,
            head_hash: GENESIS.to_vec(),
        };
        assert_eq!(walk(&key, &empty, &[]).broken, None);
    }

    #[test]
    fn edits_deletions_swaps_and_truncation_are_found_at_the_first_broken_event() {
        let key = Plain(7);
        let (bounds, records) = chain(&key, 6);
        let broken_at = |records: &[AuditRecord]| walk(&key, &bounds, records).broken.unwrap().id;

        let mut edited = records.clone();
        edited[2].event.outcome = Outcome::Failed(ErrorKind::PermissionDenied);
        assert_eq!(broken_at(&edited), 3);

        let mut deleted = records.clone();
        deleted.remove(3);
        assert_eq!(broken_at(&deleted), 4);

        let mut swapped = records.clone();
        let (a, b) = (swapped[1].event.clone(), swapped[2].event.clone());
        swapped[1].event = b;
        swapped[2].event = a;
        assert_eq!(broken_at(&swapped), 2);

        assert_eq!(broken_at(&records[..4]), 5, "the newest events deleted");

        assert_eq!(walk(&Plain(8), &bounds, &records).broken.unwrap().id, 1);
    }

    #[test]
    fn a_pruned_chain_verifies_from_where_it_was_cut() {
        let key = Plain(7);
        let (mut bounds, records) = chain(&key, 6);
        bounds.first_id = 4;
        bounds.first_prev = records[2].hash.clone();
        let report = walk(&key, &bounds, &records[3..]);
        assert_eq!(report.broken, None);
        assert_eq!((report.checked, report.first_id), (3, 4));
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
