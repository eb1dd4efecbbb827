//! Each key set's checks: rotation on time, the policy's rules, key size,
//! and an imported key that has signed for too long.

use serde_json::Value;

use super::Check;
use crate::{
    config::ServeConfig,
    crypto::keys::PublicJwk,
    domain::{
        model::{KeyState, format_duration, format_time},
        rotation::{Cadence, Finding, Severity},
    },
    store::{KeyRow, KeySetRow},
};

/// One key set's checks.
pub(super) fn keyset_checks(
    config: &ServeConfig,
    set: &KeySetRow,
    keys: &[&KeyRow],
    now: i64,
) -> Vec<Check> {
    let name = |what: &str| format!("keyset {}: {what}", set.name);
    let policy = &set.policy;
    let mut checks = Vec::new();

    let grace = i64::try_from(config.rotation_overdue_after.as_secs()).unwrap_or(i64::MAX);
    let late = now - set.next_rotation_at;
    checks.push(if late > grace {
        Check::fail(
            name("rotation"),
            format!(
                "overdue: due {} ago ({}), more than the allowed {}",
                format_duration(u64::try_from(late).unwrap_or(0)),
                format_time(set.next_rotation_at),
                format_duration(config.rotation_overdue_after.as_secs())
            ),
            if config.rotation_interval.is_some() {
                format!("is a keyward serving? run `keyward rotate --keyset {}` and read its output", set.name)
            } else {
                format!(
                    "the scheduler is off: check the cron job or timer running `keyward rotate`; run `keyward rotate --keyset {}` now",
                    set.name
                )
            },
        )
    } else {
        Check::ok(
            name("rotation"),
            format!("next due {}", format_time(set.next_rotation_at)),
        )
    });

    // The policy's own rules, with the JWKS max-age this deployment serves.
    let findings = policy.findings(config.jwks_max_age, now);
    let served = policy.jwks_max_age(config.jwks_max_age);
    checks.push(policy_check(
        &set.name,
        "pre-publication",
        "prepublish",
        &findings,
        format!(
            "{} before signing; JWKS max-age {}",
            format_duration(policy.prepublish),
            format_duration(served)
        ),
    ));
    checks.push(policy_check(
        &set.name,
        "retention",
        "retain",
        &findings,
        format!(
            "{} after retirement covers tokens of up to {}",
            format_duration(policy.retain),
            format_duration(policy.max_token_ttl)
        ),
    ));

    if set.algorithm.is_rsa() {
        let bits = set.rsa_bits.unwrap_or(0);
        checks.push(if bits < 2048 {
            Check::fail(
                name("key size"),
                format!("RSA keys of {bits} bits"),
                format!(
                    "create a key set with --rsa-bits 2048 or more and move signers to it; then `keyward keyset delete {}`",
                    set.name
                ),
            )
        } else {
            Check::ok(name("key size"), format!("RSA {bits} bits"))
        });
    }

    if let Some(active) = keys.iter().find(|k| k.state == KeyState::Active) {
        let imported = thumbprint_of(&active.public_jwk).is_some_and(|t| t != active.kid);
        let since = active.activated_at.unwrap_or(active.created_at);
        let period = match &policy.cadence {
            Cadence::Every(period) => *period,
            Cadence::Cron(_) => 31 * 86_400,
        };
        let age = u64::try_from(now - since).unwrap_or(0);
        checks.push(if imported && age > period {
            Check::warn(
                name("imported key"),
                format!(
                    "the active key {} was imported and has signed for {}, longer than one rotation period ({})",
                    active.kid,
                    format_duration(age),
                    format_duration(period)
                ),
                format!(
                    "keyward keyset rotate {} (then regenerate tokens that must outlive the old key)",
                    set.name
                ),
            )
        } else if imported {
            Check::ok(
                name("imported key"),
                format!("the active key {} was imported; it rotates away on schedule", active.kid),
            )
        } else {
            Check::ok(name("active key"), format!("{} signs since {}", active.kid, format_time(since)))
        });
    } else {
        checks.push(Check::fail(
            name("active key"),
            "no active key: signing fails",
            format!("keyward keyset rotate {}", set.name),
        ));
    }
    checks
}

/// The check of one policy setting: the worst rule it breaks
/// ([`crate::domain::rotation::Policy::findings`], the rules key set updates
/// are held to), with the update that fixes it; `fine` when it breaks none.
fn policy_check(
    keyset: &str,
    what: &str,
    field: &'static str,
    findings: &[Finding],
    fine: String,
) -> Check {
    let name = format!("keyset {keyset}: {what}");
    let Some(worst) = findings
        .iter()
        .filter(|f| f.field == field)
        .max_by_key(|f| f.severity)
    else {
        return Check::ok(name, fine);
    };
    let flag = field.replace('_', "-");
    let fix = match worst.at_least {
        Some(least) => format!(
            "keyward keyset update {keyset} --{flag} {}",
            format_duration(least)
        ),
        None => format!("keyward keyset update {keyset} --{flag} …, or a longer rotation period"),
    };
    match worst.severity {
        Severity::Warn => Check::warn(name, worst.problem.clone(), fix),
        Severity::Fail => Check::fail(name, worst.problem.clone(), fix),
    }
}

/// The RFC 7638 thumbprint of a stored public JWK, if it parses.
fn thumbprint_of(jwk_json: &str) -> Option<String> {
    let jwk: Value = serde_json::from_str(jwk_json).ok()?;
    let member = |name: &str| jwk.get(name).and_then(Value::as_str).map(str::to_string);
    let public = match jwk.get("kty")?.as_str()? {
        "RSA" => PublicJwk::Rsa {
            n: member("n")?,
            e: member("e")?,
        },
        "EC" => PublicJwk::Ec {
            crv: match jwk.get("crv")?.as_str()? {
                "P-256" => "P-256",
                "P-384" => "P-384",
                _ => return None,
            },
            x: member("x")?,
            y: member("y")?,
        },
        "OKP" => PublicJwk::Okp { x: member("x")? },
        _ => return None,
    };
    Some(public.thumbprint())
}
