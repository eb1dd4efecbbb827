//! What the admin commands print: one view of each thing, as a table or as
//! JSON (`--output`).

use serde_json::{Value, json};

use super::Output;
use crate::{
    domain::model::{format_duration, format_time},
    transport::grpc::pb,
};

/// Longest a table cell is shown; longer text is cut, saying how much was
/// left out (`--output json` shows it whole).
const MAX_CELL: usize = 200;

/// Stored text as a table shows it: control characters and the invisible
/// ones that reorder or hide text (bidirectional overrides, zero-width
/// characters) escaped, so nothing stored can forge a line or a terminal
/// escape in an operator's view; cut at [`MAX_CELL`] characters. JSON output
/// keeps the text exact.
pub(crate) fn shown(text: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_CELL {
            let left = text.chars().count() - count;
            out.push_str(&format!("…({left} more characters)"));
            break;
        }
        if invisible(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

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
            Value::String(s) => shown(s),
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
        Value::String(s) => shown(s),
        Value::Array(items) => shown(
            &items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => shown(&other.to_string()),
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
    // Padded by hand: a width format argument is limited to 65,535.
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count()))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_cannot_forge_lines_or_escapes_in_a_table() {
        let forged = "ops\n2026-01-01 admin\u{1b}[2J\u{7}\u{202e}txt";
        let cell = shown(forged);
        assert!(!cell.chars().any(char::is_control), "{cell:?}");
        assert!(!cell.contains('\u{202e}'), "{cell:?}");
        assert_eq!(cell, "ops\\n2026-01-01 admin\\u{1b}[2J\\u{7}\\u{202e}txt");
        let long = "x".repeat(100_000);
        let cut = shown(&long);
        assert!(
            cut.len() < 300 && cut.ends_with("(99800 more characters)"),
            "{cut}"
        );
    }

    #[test]
    fn a_huge_cell_prints_without_panicking() {
        let rows = vec![json!({ "principal": "p".repeat(100_000), "action": "GetKeySet" })];
        print_rows(Output::Table, rows, &["principal", "action"]);
    }
}
