//! What the admin commands print: one view of each thing, as a table or as
//! JSON (`--output`).

use serde_json::{Value, json};

use super::Output;
use crate::{
    domain::model::{format_duration, format_time},
    transport::grpc::pb,
};

pub(crate) fn print_done(out: Output, message: &str) {
    match out {
        Output::Table => println!("{message}"),
        Output::Json => println!("{}", json!({ "ok": true, "message": message })),
    }
}

pub(crate) fn state_name(state: i32) -> &'static str {
    match pb::KeyState::try_from(state) {
        Ok(pb::KeyState::Pending) => "pending",
        Ok(pb::KeyState::Active) => "active",
        Ok(pb::KeyState::Retired) => "retired",
        Ok(pb::KeyState::Expired) => "expired",
        Ok(pb::KeyState::Revoked) => "revoked",
        _ => "unknown",
    }
}

pub(crate) fn policy_text(s: &pb::KeySet) -> String {
    if s.schedule.is_empty() {
        format!("every {}", format_duration(s.rotate_every_seconds))
    } else {
        format!("cron {}", s.schedule)
    }
}

pub(crate) fn keyset_json(s: &pb::KeySet) -> Value {
    json!({
        "name": s.name,
        "algorithm": s.algorithm,
        "rsa_bits": (s.rsa_bits > 0).then_some(s.rsa_bits),
        "active_kid": s.active_kid,
        "published_keys": s.published_keys,
        "created_at": format_time(s.created_at),
        "rotation": policy_text(s),
        "rotate_every": (s.schedule.is_empty()).then(|| format_duration(s.rotate_every_seconds)),
        "schedule": (!s.schedule.is_empty()).then(|| s.schedule.clone()),
        "prepublish": format_duration(s.prepublish_seconds),
        "retain": format_duration(s.retain_seconds),
        "max_token_ttl": format_duration(s.max_token_ttl_seconds),
        "next_rotation": format_time(s.next_rotation_at),
        "jwks_max_age": format_duration(s.jwks_max_age_seconds),
    })
}

pub(crate) fn print_keysets(out: Output, sets: &[pb::KeySet]) {
    print_rows(
        out,
        sets.iter().map(keyset_json).collect(),
        &[
            "name",
            "algorithm",
            "active_kid",
            "rotation",
            "next_rotation",
        ],
    );
}

/// One key set, as `field: value` lines (or JSON).
pub(crate) fn print_keyset(out: Output, set: &pb::KeySet) {
    let v = keyset_json(set);
    if out == Output::Json {
        println!("{v}");
        return;
    }
    for field in [
        "name",
        "algorithm",
        "rsa_bits",
        "active_kid",
        "published_keys",
        "created_at",
        "rotation",
        "prepublish",
        "retain",
        "max_token_ttl",
        "next_rotation",
        "jwks_max_age",
    ] {
        let value = match &v[field] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        println!("{field:<15} {value}");
    }
}

/// A key as both outputs show it.
pub(crate) fn key_json(k: &pb::Key) -> Value {
    json!({
        "kid": k.kid,
        "keyset": k.keyset,
        "algorithm": k.algorithm,
        "state": state_name(k.state),
        "created": format_time(k.created_at),
        "activates": format_time(k.activates_at),
        "retires": format_time(k.retires_at),
        "expires": format_time(k.expires_at),
    })
}

/// A rotation event as both outputs show it.
pub(crate) fn event_json(e: &pb::RotationEvent, dry_run: bool) -> Value {
    json!({
        "keyset": e.keyset,
        "action": if dry_run { format!("would {}", e.action) } else { e.action.clone() },
        "kid": e.kid,
        "detail": e.detail,
    })
}

pub(crate) fn print_keys(out: Output, keys: &[pb::Key]) {
    print_rows(
        out,
        keys.iter().map(key_json).collect(),
        &["kid", "state", "created", "activates", "retires", "expires"],
    );
}

pub(crate) fn print_events(out: Output, events: &[pb::RotationEvent], dry_run: bool) {
    let rows = events.iter().map(|e| event_json(e, dry_run)).collect();
    print_rows(out, rows, &["keyset", "action", "kid", "detail"]);
}

pub(crate) fn print_transition(
    out: Output,
    events: &[pb::RotationEvent],
    warnings: &[String],
    keys: &[pb::Key],
) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if out == Output::Json {
        let v = json!({
            "events": events.iter().map(|e| event_json(e, false)).collect::<Vec<_>>(),
            "warnings": warnings,
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    print_events(out, events, false);
    println!();
    print_keys(out, keys);
}

pub(crate) fn client_json(c: &pb::Client) -> Value {
    json!({
        "id": c.id,
        "display_name": c.display_name,
        "discovery_uri": c.discovery_uri,
        "callback_url": c.callback_url,
        "scopes": c.scopes,
        "auth_method": c.auth_method,
        "labels": c.labels,
        "secret_version": c.secret_version,
        "created_at": format_time(c.created_at),
        "updated_at": format_time(c.updated_at),
        "token_keyset": c.token_keyset,
        "token_ttl": format_duration(c.token_ttl_seconds),
        "audience": c.audience,
        "allowed_scopes": c.allowed_scopes,
        "token_subject": c.token_subject,
        "token_email": c.token_email,
    })
}

pub(crate) fn print_clients(out: Output, clients: &[pb::Client]) {
    print_rows(
        out,
        clients.iter().map(client_json).collect(),
        &[
            "id",
            "display_name",
            "auth_method",
            "scopes",
            "secret_version",
            "updated_at",
        ],
    );
}

/// Prints rows as aligned columns (`columns` in order) or as a JSON array.
pub(crate) fn print_rows(out: Output, rows: Vec<Value>, columns: &[&str]) {
    if out == Output::Json {
        println!("{}", Value::Array(rows));
        return;
    }
    let cell = |v: &Value| match v {
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in table {
        println!("{}", line(row));
    }
}
