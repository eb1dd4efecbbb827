//! Compact JWS (RFC 7515) signing of JWT claims.

use serde_json::{Map, Value, json};

use super::{
    b64url,
    keys::{KeyError, SigningKey},
};

/// Signs `claims` with `key`, setting `iat` and `exp` (Unix seconds). The header
/// carries `alg`, `typ: "JWT"` and the key's `kid`.
pub fn sign(
    key: &SigningKey,
    mut claims: Map<String, Value>,
    iat: i64,
    exp: i64,
) -> Result<String, KeyError> {
    claims.insert("iat".into(), iat.into());
    claims.insert("exp".into(), exp.into());
    let header = json!({ "alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid() });
    let mut token = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(Value::Object(claims).to_string().as_bytes())
    );
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&b64url(&signature));
    Ok(token)
}
