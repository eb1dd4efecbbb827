//! Change events: one vocabulary for every channel (the `Watch` stream,
//! webhooks). An event names what changed and when, never a secret: a key
//! set, a kid, a client id or a token name, and at most a short detail.
//!
//! Events are written in the transaction of the change they describe (the
//! outbox), and their ids are allocated in commit order, so a reader that
//! has seen id N has seen every event before it.

use std::fmt;

use super::{
    access::{Grant, Method, Pattern},
    model::KeyState,
};
use crate::{Error, Result};

macro_rules! kinds {
    ($($kind:ident => $name:literal: $doc:literal),* $(,)?) => {
        /// What happened.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $(#[doc = $doc] $kind,)*
        }

        impl EventKind {
            /// Every kind, in the README's order.
            pub const ALL: &'static [Self] = &[$(Self::$kind),*];

            /// Its name on the wire, in filters and in the database.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)*
                }
            }

            /// What it means, for the README and `--help`.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$kind => $doc,)*
                }
            }
        }
    };
}

kinds! {
    KeySetCreated => "keyset.created": "A key set was created with its first keys.",
    KeySetDeleted => "keyset.deleted": "A key set was deleted; its keys left the JWKS.",
    KeySetUpdated => "keyset.updated": "A key set's rotation policy changed.",
    KeyPending => "key.pending": "A key was published ahead of signing.",
    KeyActivated => "key.activated": "A key started signing.",
    KeyRetired => "key.retired": "A key stopped signing; it stays in the JWKS until it expires.",
    KeyExpiring => "key.expiring": "A retired key leaves the JWKS soon (near-expiry alert).",
    KeyExpired => "key.expired": "A key left the JWKS.",
    KeyRevoked => "key.revoked": "A key was revoked and left the JWKS at once.",
    RotationOverdue => "rotation.overdue": "A key set's rotation is past due and has not happened.",
    RotationFailed => "rotation.failed": "A scheduled rotation of a key set failed.",
    ClientCreated => "client.created": "A client was created with its first secret.",
    ClientUpdated => "client.updated": "A client's metadata changed.",
    ClientDeleted => "client.deleted": "A client and its secrets were deleted.",
    ClientSecretRotated => "client.secret_rotated": "A client got a new secret; the previous one stays valid through its grace.",
    ClientGraceEnding => "client.grace_ending": "A superseded client secret's grace ends soon (near-expiry alert).",
    ClientSecretRemoved => "client.secret_removed": "A superseded client secret was removed (revoked or its grace ended).",
    TokenCreated => "token.created": "An API token was created.",
    TokenExpiring => "token.expiring": "An API token expires soon (near-expiry alert).",
    TokenRevoked => "token.revoked": "An API token was revoked.",
    MasterKeyChanged => "master.changed": "The master key sealing new writes changed, or a rewrap moved values to it.",
    SealChanged => "seal.changed": "The seals wrapping the master keys changed.",
}

impl EventKind {
    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| Error::internal(format!("unknown event kind {name:?} in the database")))
    }

    /// The event a key entering `state` is.
    pub fn of_key_state(state: KeyState) -> Self {
        match state {
            KeyState::Pending => Self::KeyPending,
            KeyState::Active => Self::KeyActivated,
            KeyState::Retired => Self::KeyRetired,
            KeyState::Expired => Self::KeyExpired,
            KeyState::Revoked => Self::KeyRevoked,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event is about; any may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// A key set's name.
    pub keyset: Option<String>,
    /// A key's kid.
    pub kid: Option<String>,
    /// A client's id.
    pub client: Option<String>,
    /// An API token's name.
    pub token: Option<String>,
}

impl Subject {
    /// About a key set.
    pub fn keyset(name: &str) -> Self {
        Self {
            keyset: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// About one key of a key set.
    pub fn key(keyset: &str, kid: &str) -> Self {
        Self {
            keyset: Some(keyset.to_string()),
            kid: Some(kid.to_string()),
            ..Self::default()
        }
    }

    /// About a client.
    pub fn client(id: &str) -> Self {
        Self {
            client: Some(id.to_string()),
            ..Self::default()
        }
    }

    /// About an API token.
    pub fn token(name: &str) -> Self {
        Self {
            token: Some(name.to_string()),
            ..Self::default()
        }
    }
}

/// An event about to be written with its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, Unix seconds (the service's clock).
    pub at: i64,
    /// About what.
    pub subject: Subject,
    /// A short, non-secret detail (`version 3`, `due 2026-12-01T00:00:00Z`).
    pub detail: Option<String>,
    /// Written at most once per value: near-expiry alerts and overdue
    /// rotations, raised by every sweep until they happen, are stored once.
    pub once: Option<String>,
}

impl NewEvent {
    /// An event of `kind` about `subject` at `at`.
    pub fn new(kind: EventKind, at: i64, subject: Subject) -> Self {
        Self {
            kind,
            at,
            subject,
            detail: None,
            once: None,
        }
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Stored at most once per `key`.
    pub fn once(mut self, key: impl Into<String>) -> Self {
        self.once = Some(key.into());
        self
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its position: ids increase in commit order, with gaps.
    pub id: i64,
    /// What happened.
    pub kind: EventKind,
    /// When, Unix seconds.
    pub at: i64,
    /// About what.
    pub subject: Subject,
    /// A short, non-secret detail.
    pub detail: Option<String>,
}

impl Event {
    /// Whether a token holding `grant` may see this event: as it may read
    /// what the event is about (a key set, a client, a token, the master
    /// key's status), within its scope.
    pub fn visible_to(&self, grant: &Grant) -> bool {
        let subject = &self.subject;
        let (method, target) = match self.kind.as_str().split('.').next() {
            Some("client") => (Method::GetClient, subject.client.as_deref()),
            Some("token") => (Method::GetToken, subject.token.as_deref()),
            Some("master" | "seal") => (Method::GetMasterStatus, None),
            _ => (Method::GetKeySet, subject.keyset.as_deref()),
        };
        // A scoped token sees only events about what its scope names.
        if grant.role.scoped_by().is_some() && target.is_none() {
            return false;
        }
        // An exporter reads no key set, but must learn when its key changes.
        grant.authorize(method, target).is_ok()
            || (method == Method::GetKeySet && grant.authorize(Method::ExportKey, target).is_ok())
    }
}

/// Which events a watcher or a webhook wants: kinds by pattern (`key.*`),
/// and subjects by key set and client patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Kind patterns; empty: every kind.
    pub kinds: Vec<Pattern>,
    /// Key set patterns.
    pub keysets: Vec<Pattern>,
    /// Client patterns.
    pub clients: Vec<Pattern>,
}

impl EventFilter {
    /// Parses the patterns a caller gave; a kind pattern must match some
    /// kind, so a typo is refused instead of silently matching nothing.
    pub fn parse(kinds: &[String], keysets: &[String], clients: &[String]) -> Result<Self> {
        let kinds = kinds
            .iter()
            .map(|k| {
                let pattern = Pattern::parse("event", k)?;
                if EventKind::ALL
                    .iter()
                    .any(|kind| pattern.matches(kind.as_str()))
                {
                    Ok(pattern)
                } else {
                    Err(Error::invalid(
                        "event",
                        format!(
                            "{k:?} matches no event kind; kinds: {}",
                            EventKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                }
            })
            .collect::<Result<_>>()?;
        let parse = |field, patterns: &[String]| {
            patterns
                .iter()
                .map(|p| Pattern::parse(field, p))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            kinds,
            keysets: parse("keyset", keysets)?,
            clients: parse("client", clients)?,
        })
    }

    /// Whether `event` passes: its kind matches a kind pattern (or none is
    /// given), and, when key set or client patterns are given, its key set
    /// matches one of the former or its client one of the latter.
    pub fn matches(&self, event: &Event) -> bool {
        let kind =
            self.kinds.is_empty() || self.kinds.iter().any(|p| p.matches(event.kind.as_str()));
        if !kind {
            return false;
        }
        if self.keysets.is_empty() && self.clients.is_empty() {
            return true;
        }
        let any = |patterns: &[Pattern], name: &Option<String>| {
            name.as_deref()
                .is_some_and(|n| patterns.iter().any(|p| p.matches(n)))
        };
        any(&self.keysets, &event.subject.keyset) || any(&self.clients, &event.subject.client)
    }

    /// The patterns as written, for storing and showing.
    pub fn texts(patterns: &[Pattern]) -> Vec<String> {
        patterns.iter().map(|p| p.as_str().to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(kind: EventKind, subject: Subject) -> Event {
        Event {
            id: 1,
            kind,
            at: 0,
            subject,
            detail: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kinds_round_trip_and_are_unique() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()).unwrap(), *kind);
        }
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert!(EventKind::parse("key.gone").is_err());
    }

    #[test]
    fn filters_match_kinds_then_subjects() {
        let f = EventFilter::parse(&strings(&["key.*"]), &strings(&["om"]), &[]).unwrap();
        assert!(f.matches(&event(EventKind::KeyActivated, Subject::key("om", "k"))));
        assert!(!f.matches(&event(EventKind::KeyActivated, Subject::key("other", "k"))));
        assert!(!f.matches(&event(EventKind::KeySetCreated, Subject::keyset("om"))));
        let either =
            EventFilter::parse(&[], &strings(&["om-*"]), &strings(&["openmetadata"])).unwrap();
        assert!(either.matches(&event(EventKind::KeyRetired, Subject::key("om-prod", "k"))));
        assert!(either.matches(&event(
            EventKind::ClientSecretRotated,
            Subject::client("openmetadata")
        )));
        assert!(!either.matches(&event(EventKind::TokenCreated, Subject::token("t"))));
        let all = EventFilter::default();
        assert!(all.matches(&event(EventKind::TokenCreated, Subject::token("t"))));
    }

    #[test]
    fn an_exporter_sees_its_key_sets_events_and_nothing_else() {
        use crate::domain::access::{Grant, Pattern, Role};
        let exporter = Grant {
            name: "om-export".into(),
            role: Role::Exporter,
            keysets: vec![Pattern::parse("keyset", "om").unwrap()],
            clients: Vec::new(),
        };
        let sees = |kind, subject| event(kind, subject).visible_to(&exporter);
        assert!(sees(EventKind::KeyActivated, Subject::key("om", "k")));
        assert!(sees(EventKind::KeySetUpdated, Subject::keyset("om")));
        assert!(!sees(EventKind::KeyActivated, Subject::key("billing", "k")));
        assert!(!sees(EventKind::ClientSecretRotated, Subject::client("om")));
        assert!(!sees(EventKind::TokenCreated, Subject::token("om")));
    }

    #[test]
    fn a_kind_pattern_matching_nothing_is_refused_by_name() {
        let err = EventFilter::parse(&strings(&["keys.*"]), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("keys.*") && err.contains("key.activated"),
            "{err}"
        );
        assert!(EventFilter::parse(&strings(&["*"]), &[], &[]).is_ok());
    }
}
