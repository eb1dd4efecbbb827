//! Judging the JWKS OpenMetadata publishes: its shipped default key is
//! public to everyone; its key should be one keyward holds, and still signing.

use serde_json::Value;

use super::Check;
use crate::{domain::model::KeyState, store::Store};

/// The kid of the signing key OpenMetadata ships with, public to everyone.
pub const OPENMETADATA_DEFAULT_KID: &str = "Gb389a-9f76-gdjs-a92j-0242bk94356";

/// Judges the JWKS OpenMetadata publishes (`/api/v1/system/config/jwks`):
/// its shipped default key is public to everyone; its key should be one
/// keyward holds (exported from it), and one still signing.
pub async fn openmetadata_checks(url: &str, jwks: &Value, store: Option<&dyn Store>) -> Vec<Check> {
    let kids: Vec<&str> = jwks
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("kid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if kids.is_empty() {
        return vec![Check::fail(
            "openmetadata",
            format!("{url} publishes no key"),
            "check --openmetadata-url and OpenMetadata's JWT settings",
        )];
    }
    let mut checks = Vec::new();
    if kids.contains(&OPENMETADATA_DEFAULT_KID) {
        checks.push(Check::warn(
            "openmetadata: default key",
            format!(
                "OpenMetadata still publishes its shipped default key ({OPENMETADATA_DEFAULT_KID}), whose private half every OpenMetadata install shares"
            ),
            "keyward keyset create om --alg RS256 && keyward export openmetadata --keyset om --out DIR; point OpenMetadata at DIR (docs/openmetadata.md) and restart it; then regenerate bot tokens",
        ));
    } else {
        checks.push(Check::ok(
            "openmetadata: default key",
            "OpenMetadata does not publish its shipped default key",
        ));
    }
    let Some(store) = store else {
        return checks;
    };
    let mut known = Vec::new();
    for kid in kids.iter().filter(|k| **k != OPENMETADATA_DEFAULT_KID) {
        match store.find_key(kid).await {
            Ok(Some(key)) => known.push(key),
            Ok(None) => {}
            Err(err) => {
                checks.push(Check::warn(
                    "openmetadata: key",
                    format!("cannot look kid {kid} up: {err}"),
                    "check the database",
                ));
                return checks;
            }
        }
    }
    checks.push(match known.first() {
        None => Check::warn(
            "openmetadata: key",
            format!("OpenMetadata's key ({}) is not one keyward holds", kids.join(", ")),
            "export OpenMetadata's key from keyward: keyward export openmetadata --keyset om --out DIR (or import OpenMetadata's current key with `keyward import openmetadata`)",
        ),
        Some(key) if matches!(key.state, KeyState::Active | KeyState::Pending) => Check::ok(
            "openmetadata: key",
            format!("OpenMetadata publishes {} of key set {} ({})", key.kid, key.keyset, key.state),
        ),
        Some(key) => Check::warn(
            "openmetadata: key",
            format!(
                "OpenMetadata signs with {} of key set {}, which keyward has {}",
                key.kid, key.keyset, key.state
            ),
            format!(
                "keyward export openmetadata --keyset {} --out DIR and restart OpenMetadata (it reads its key once at start)",
                key.keyset
            ),
        ),
    });
    checks
}
