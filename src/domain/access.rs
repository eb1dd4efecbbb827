//! Least privilege, pure: API token roles, the name patterns that scope them,
//! and the table of which role may call which method on what.
//!
//! The table here is the one the README documents; `tests/access.rs` drives
//! every method with every role through the real gRPC API against it.

use std::fmt;

use crate::{Error, Result};

/// What a token may do. Fixed; see [`Method::rule`] for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including tokens and the audit log.
    Admin,
    /// Key sets, keys, policies, rotation, revocation, import, and clients'
    /// metadata and secret rotation; never a client secret read, a private key
    /// export or token management.
    Operator,
    /// `RotateDue` only: what cron holds.
    Rotator,
    /// Signing and reading the key sets its patterns match.
    Signer,
    /// Reading the clients (and their secrets) its patterns match.
    SecretReader,
    /// Exporting the private keys of the key sets its patterns match.
    Exporter,
    /// Reading the audit log and metadata: key sets, keys, clients, tokens;
    /// no secrets.
    Auditor,
}

impl Role {
    /// Every role, in the README's order.
    pub const ALL: [Self; 7] = [
        Self::Admin,
        Self::Operator,
        Self::Rotator,
        Self::Signer,
        Self::SecretReader,
        Self::Exporter,
        Self::Auditor,
    ];

    /// The role's name on the wire, in the CLI and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Rotator => "rotator",
            Self::Signer => "signer",
            Self::SecretReader => "secret-reader",
            Self::Exporter => "exporter",
            Self::Auditor => "auditor",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                Error::invalid(
                    "role",
                    format!("{name:?} is not a role; use one of {}", names.join(", ")),
                )
            })
    }

    /// Which kind of names this role's patterns scope, if any.
    pub fn scoped_by(self) -> Option<ScopeKind> {
        match self {
            Self::Signer | Self::Exporter => Some(ScopeKind::KeySets),
            Self::SecretReader => Some(ScopeKind::Clients),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Role {
    type Error = Error;

    fn try_from(name: String) -> Result<Self> {
        Self::parse(&name)
    }
}

/// The names a scoped role's patterns apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    /// Key set names (`--keyset`).
    KeySets,
    /// Client ids (`--client`).
    Clients,
}

/// An exact name, or a prefix ending in `*` (`om-*`); `*` alone matches
/// everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// Parses a pattern: printable ASCII without spaces, at most one `*`, and
    /// only at the end.
    pub fn parse(field: &'static str, text: &str) -> Result<Self> {
        let star = text.find('*');
        let valid = !text.is_empty()
            && text.len() <= 128
            && text.bytes().all(|b| b.is_ascii_graphic())
            && star.is_none_or(|at| at == text.len() - 1);
        if !valid {
            return Err(Error::invalid(
                field,
                format!(
                    "{text:?} is not a pattern: an exact name, or a prefix ending in '*' (om-*), or '*'"
                ),
            ));
        }
        Ok(Self(text.to_string()))
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a token holds: its role and, for scoped roles, its patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (`bootstrap` for the first admin token).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Key set patterns (signer, exporter).
    pub keysets: Vec<Pattern>,
    /// Client patterns (secret-reader).
    pub clients: Vec<Pattern>,
}

impl Grant {
    /// Whether the token's scope covers `name` (a key set or client, as its
    /// role is scoped); unscoped roles cover everything.
    pub fn covers(&self, kind: ScopeKind, name: &str) -> bool {
        if self.role.scoped_by() != Some(kind) {
            return true;
        }
        let patterns = match kind {
            ScopeKind::KeySets => &self.keysets,
            ScopeKind::Clients => &self.clients,
        };
        patterns.iter().any(|p| p.matches(name))
    }

    /// Allows `method` on `target`, or says why not: which role the call would
    /// need, or which scope the target is outside.
    pub fn authorize(&self, method: Method, target: Option<&str>) -> Result<()> {
        if self.role == Role::Admin {
            return Ok(());
        }
        let needs = method.rule();
        let Some(rule) = needs.iter().find(|r| r.role == self.role) else {
            let mut roles: Vec<&str> = needs.iter().map(|r| r.role.as_str()).collect();
            roles.insert(0, "admin");
            return Err(Error::PermissionDenied(format!(
                "token {:?} has role {}, which may not call {}; that needs role {}",
                self.name,
                self.role,
                method.as_str(),
                roles.join(" or ")
            )));
        };
        if let (Some(kind), Some(target)) = (rule.scope, target)
            && !self.covers(kind, target)
        {
            let (what, patterns) = match kind {
                ScopeKind::KeySets => ("key set", &self.keysets),
                ScopeKind::Clients => ("client", &self.clients),
            };
            let patterns: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
            return Err(Error::PermissionDenied(format!(
                "token {:?} ({}) may call {} only on {what}s matching {}; {target:?} is outside its scope",
                self.name,
                self.role,
                method.as_str(),
                if patterns.is_empty() {
                    "nothing".to_string()
                } else {
                    patterns.join(", ")
                }
            )));
        }
        Ok(())
    }
}

/// One row of the table: a role that may call a method, and whether its
/// scope limits the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The role.
    pub role: Role,
    /// The scope checked against the call's target, if any.
    pub scope: Option<ScopeKind>,
}

const fn any(role: Role) -> Rule {
    Rule { role, scope: None }
}

const fn keysets(role: Role) -> Rule {
    Rule {
        role,
        scope: Some(ScopeKind::KeySets),
    }
}

const fn clients(role: Role) -> Rule {
    Rule {
        role,
        scope: Some(ScopeKind::Clients),
    }
}

macro_rules! methods {
    ($($method:ident => [$($rule:expr),*]),* $(,)?) => {
        /// Every gRPC method that needs a token.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $(
                #[allow(missing_docs)]
                $method,
            )*
        }

        impl Method {
            /// Every method.
            pub const ALL: &'static [Method] = &[$(Method::$method),*];

            /// The method named `name`, if there is one.
            pub fn parse(name: &str) -> Option<Method> {
                Self::ALL.iter().copied().find(|m| m.as_str() == name)
            }

            /// The method's gRPC name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Method::$method => stringify!($method),)*
                }
            }

            /// The roles besides admin that may call it.
            pub fn rule(self) -> &'static [Rule] {
                match self {
                    $(Method::$method => {
                        const RULES: &[Rule] = &[$($rule),*];
                        RULES
                    })*
                }
            }
        }
    };
}

use Role::{Auditor, Exporter, Operator, Rotator, SecretReader, Signer};

methods! {
    CreateKeySet => [any(Operator)],
    UpdateKeySet => [any(Operator)],
    GetKeySet => [any(Operator), keysets(Signer), any(Auditor)],
    ListKeySets => [any(Operator), any(Auditor)],
    DeleteKeySet => [any(Operator)],
    ListKeys => [any(Operator), keysets(Signer), any(Auditor)],
    RotateKeySet => [any(Operator)],
    RotateDue => [any(Operator), any(Rotator)],
    RevokeKey => [any(Operator)],
    SignJwt => [keysets(Signer)],
    GetJwks => [any(Operator), keysets(Signer), any(Auditor)],
    ExportKey => [keysets(Exporter)],
    ImportKey => [any(Operator)],
    PutClient => [any(Operator)],
    GetClient => [any(Operator), clients(SecretReader), any(Auditor)],
    GetClientSecret => [clients(SecretReader)],
    ListClients => [any(Operator), any(Auditor)],
    RotateClientSecret => [any(Operator)],
    DeleteClient => [any(Operator)],
    RevokeClientSecret => [any(Operator)],
    VerifyClientSecret => [clients(SecretReader)],
    CreateToken => [],
    GetToken => [any(Auditor)],
    ListTokens => [any(Auditor)],
    RevokeToken => [],
    ListAuditEvents => [any(Auditor)],
    VerifyAuditChain => [any(Auditor)],
    Rewrap => [],
    GetMasterStatus => [any(Operator), any(Auditor)],
    Watch => [any(Operator), any(Signer), any(SecretReader), any(Exporter), any(Auditor)],
    CreateWebhook => [],
    ListWebhooks => [any(Operator), any(Auditor)],
    DeleteWebhook => [],
    ListWebhookDeliveries => [any(Operator), any(Auditor)],
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grant(role: Role, keysets: &[&str], clients: &[&str]) -> Grant {
        let parse = |ps: &[&str]| ps.iter().map(|p| Pattern::parse("p", p).unwrap()).collect();
        Grant {
            name: "t".into(),
            role,
            keysets: parse(keysets),
            clients: parse(clients),
        }
    }

    #[test]
    fn patterns_are_exact_or_a_trailing_star_prefix() {
        let om = Pattern::parse("keyset", "om-*").unwrap();
        assert!(om.matches("om-prod") && om.matches("om-") && !om.matches("om"));
        let exact = Pattern::parse("keyset", "om").unwrap();
        assert!(exact.matches("om") && !exact.matches("om-prod"));
        assert!(Pattern::parse("keyset", "*").unwrap().matches("anything"));
        for bad in ["", "o*m", "**", "a b", "é", &"a".repeat(129)] {
            assert!(Pattern::parse("keyset", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_round_trip_and_unknown_ones_are_named() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).unwrap(), role);
        }
        let err = Role::parse("root").unwrap_err().to_string();
        assert!(err.contains("secret-reader"), "{err}");
    }

    #[test]
    fn admin_may_do_everything_and_token_management_is_admin_only() {
        let admin = grant(Role::Admin, &[], &[]);
        for method in Method::ALL {
            admin.authorize(*method, Some("x")).unwrap();
        }
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
            for method in [Method::CreateToken, Method::RevokeToken] {
                let err = grant(role, &["*"], &["*"]).authorize(method, None);
                assert!(
                    matches!(err, Err(Error::PermissionDenied(_))),
                    "{role} {method:?}"
                );
            }
        }
    }

    #[test]
    fn scoped_roles_reach_only_their_patterns() {
        let signer = grant(Role::Signer, &["om-*"], &[]);
        signer.authorize(Method::SignJwt, Some("om-prod")).unwrap();
        let err = signer
            .authorize(Method::SignJwt, Some("billing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("om-*") && err.contains("\"billing\""), "{err}");
        let err = signer
            .authorize(Method::ExportKey, Some("om-prod"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs role admin or exporter"), "{err}");
        let reader = grant(Role::SecretReader, &[], &["openmetadata"]);
        reader
            .authorize(Method::GetClientSecret, Some("openmetadata"))
            .unwrap();
        assert!(
            reader
                .authorize(Method::GetClientSecret, Some("other"))
                .is_err()
        );
        assert!(reader.covers(ScopeKind::Clients, "openmetadata"));
        assert!(!reader.covers(ScopeKind::Clients, "other"));
        assert!(
            reader.covers(ScopeKind::KeySets, "anything"),
            "not keyset-scoped"
        );
    }

    #[test]
    fn operators_never_read_secrets_or_export_keys() {
        let operator = grant(Role::Operator, &[], &[]);
        for method in [
            Method::GetClientSecret,
            Method::ExportKey,
            Method::CreateToken,
            Method::SignJwt,
        ] {
            assert!(operator.authorize(method, Some("x")).is_err(), "{method:?}");
        }
        operator
            .authorize(Method::RotateClientSecret, Some("x"))
            .unwrap();
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::{Pattern, Role};

        proptest! {
            #[test]
            fn patterns_and_roles_never_panic(text in ".{0,200}") {
                let _ = Role::parse(&text);
                if let Ok(pattern) = Pattern::parse("keyset", &text) {
                    let prefix = text.trim_end_matches('*');
                    prop_assert!(pattern.matches(prefix));
                    let longer = format!("{prefix}x");
                    prop_assert!(text.ends_with('*') || !pattern.matches(&longer));
                }
            }

            #[test]
            fn a_prefix_pattern_matches_exactly_its_extensions(
                prefix in "[a-z0-9-]{0,20}",
                rest in "[a-z0-9-]{0,20}",
                other in "[a-z0-9-]{1,20}",
            ) {
                let pattern = Pattern::parse("keyset", &format!("{prefix}*")).unwrap();
                let extended = format!("{prefix}{rest}");
                prop_assert!(pattern.matches(&extended));
                prop_assert_eq!(pattern.matches(&other), other.starts_with(&prefix));
            }
        }
    }
}
