//! Conversions between the wire (`keyward.v1` messages, where proto3 writes
//! "not set" as `""` and `0`) and the service's typed values.

use std::collections::BTreeMap;

use super::pb;
use crate::{
    Error,
    domain::{
        algorithm::Algorithm,
        audit::{AuditFilter, AuditRecord},
        claims::SignProfile,
        client::{Client, ClientPatch},
        model::{self, KeyState},
        rotation::{Cadence, PolicyInput, RotationEvent},
        secret::SecretString,
    },
    service::{ExportWhich, KeyInfo, KeySetInfo, TokenInfo, Transition, master::MasterStatus},
};

pub(super) fn keyset_pb(info: KeySetInfo) -> pb::KeySet {
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
pub(super) fn key_pb(info: KeyInfo) -> pb::Key {
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
pub(super) fn algorithm_of(name: &str) -> Result<Algorithm, Error> {
    if name.is_empty() {
        Ok(Algorithm::Rs256)
    } else {
        model::parse_algorithm(name)
    }
}

/// An empty profile means none.
pub(super) fn profile_of(name: &str, allow_identity_mismatch: bool) -> Result<SignProfile, Error> {
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
pub(super) fn export_which(name: &str) -> Result<ExportWhich, Error> {
    match name {
        "" | "active" => Ok(ExportWhich::Active),
        "pending" => Ok(ExportWhich::Pending),
        other => Err(Error::invalid(
            "key",
            format!("{other:?}: export the active or the pending key"),
        )),
    }
}

pub(super) fn event_pb(e: RotationEvent) -> pb::RotationEvent {
    pb::RotationEvent {
        keyset: e.keyset,
        action: e.action.as_str().to_string(),
        kid: e.kid,
        detail: e.detail,
    }
}

pub(super) fn policy_input(p: Option<pb::RotationPolicy>) -> PolicyInput {
    let p = p.unwrap_or_default();
    PolicyInput {
        rotate_every: p.rotate_every_seconds,
        schedule: p.schedule,
        prepublish: p.prepublish_seconds,
        retain: p.retain_seconds,
        max_token_ttl: p.max_token_ttl_seconds,
    }
}

pub(super) fn transition_parts(
    t: Transition,
) -> (Vec<pb::RotationEvent>, Vec<String>, Vec<pb::Key>) {
    (
        t.events.into_iter().map(event_pb).collect(),
        t.warnings,
        t.keys.into_iter().map(key_pb).collect(),
    )
}

pub(super) fn client_pb(c: Client) -> pb::Client {
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

pub(super) fn version_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A token as the wire shows it, its state as of `now`.
pub fn token_pb(t: TokenInfo, now: i64) -> pb::Token {
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

pub(super) fn audit_event_pb(r: AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        id: r.id,
        at: r.event.at,
        principal: r.event.principal,
        action: r.event.action.as_str().to_string(),
        target: r.event.target,
        outcome: r.event.outcome.as_str().to_string(),
        peer: r.event.peer,
        request_id: r.event.request_id,
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
        seals: status
            .seals
            .into_iter()
            .map(|s| pb::SealStatus {
                asked: s.answered.is_some(),
                answered: matches!(s.answered, Some(Ok(()))),
                error: match s.answered {
                    Some(Err(e)) => e,
                    _ => String::new(),
                },
                seal: s.seal,
                configured: s.configured,
                wraps: s.wraps,
            })
            .collect(),
    }
}

/// `PutClient`'s fields: an unset one keeps the stored value.
pub(super) fn client_patch(r: &mut pb::PutClientRequest) -> ClientPatch {
    ClientPatch {
        display_name: r.display_name.take(),
        discovery_uri: r.discovery_uri.take(),
        callback_url: r.callback_url.take(),
        scopes: r.scopes.take().map(|s| s.values),
        auth_method: r.auth_method.take(),
        labels: r
            .labels
            .take()
            .map(|l| l.values.into_iter().collect::<BTreeMap<_, _>>()),
        secret: r.secret.take().map(SecretString::new),
        token_keyset: r.token_keyset.take(),
        token_ttl: r.token_ttl_seconds,
        audience: r.audience.take(),
        allowed_scopes: r.allowed_scopes.take().map(|s| s.values),
        token_subject: r.token_subject.take(),
        token_email: r.token_email.take(),
    }
}

/// A listing's filter: `since` 0 and empty strings match anything.
pub(super) fn audit_filter(r: &mut pb::ListAuditEventsRequest) -> AuditFilter {
    let given = |value: &mut String| Some(std::mem::take(value)).filter(|v| !v.is_empty());
    AuditFilter {
        since: (r.since != 0).then_some(r.since),
        principal: given(&mut r.principal),
        action: given(&mut r.action),
        target: given(&mut r.target),
        ..AuditFilter::default()
    }
}
