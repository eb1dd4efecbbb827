//! Compact JWS (RFC 7515) signing of JWT claims.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value};

use super::keys::{KeyError, SigningKey};

/// Room for the signature of the largest key keyward generates (RSA-4096:
/// 512 bytes, 683 base64url characters) and the dot before it; a larger
/// imported key's token grows its buffer once.
const SIGNATURE_ROOM: usize = 684;

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
    let payload = serde_json::to_vec(&claims)
        .map_err(|e| KeyError(format!("claims do not serialize: {e}")))?;
    // One buffer for the whole token: the header (made once per key), the
    // payload, then the signature of those two.
    let header = key.jws_header();
    let mut token =
        String::with_capacity(header.len() + 1 + payload.len().div_ceil(3) * 4 + SIGNATURE_ROOM);
    token.push_str(header);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::json;

    use super::*;
    use crate::{
        crypto::{
            b64url_decode,
            keys::{self, PublicJwk},
        },
        domain::algorithm::Algorithm,
    };

    fn segment(token: &str, n: usize) -> Value {
        let part = token.split('.').nth(n).expect("three segments");
        serde_json::from_slice(&b64url_decode(part).expect("base64url")).expect("JSON")
    }

    /// What a JWT library makes of `token`, verified with `key`'s public half.
    fn verified(key: &SigningKey, token: &str) -> Value {
        let decoding = match key.public_jwk() {
            PublicJwk::Rsa { n, e } => DecodingKey::from_rsa_components(n, e).unwrap(),
            PublicJwk::Ec { x, y, .. } => DecodingKey::from_ec_components(x, y).unwrap(),
            PublicJwk::Okp { x } => DecodingKey::from_ed_components(x).unwrap(),
        };
        let mut validation = Validation::new(key.algorithm().as_str().parse().unwrap());
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &decoding, &validation)
            .expect("the token verifies")
            .claims
    }

    /// A token is `header.payload.signature`: the header names the key's
    /// algorithm and kid (an imported key's own kid too), the payload is the
    /// claims with `iat` and `exp`, and a JWT library verifies it.
    #[test]
    fn tokens_carry_their_key_in_the_header_and_verify() {
        for alg in [Algorithm::Es256, Algorithm::Rs256, Algorithm::EdDsa] {
            let generated = keys::generate(alg, 2048).unwrap();
            for kid in [None, Some("imported-kid")] {
                let mut key = SigningKey::from_pkcs8(alg, generated.pkcs8.expose()).unwrap();
                if let Some(kid) = kid {
                    key = key.with_kid(kid.into());
                }
                assert_eq!(key.kid(), kid.unwrap_or(generated.key.kid()));
                let mut claims = Map::new();
                claims.insert("sub".into(), json!("bot \"quoted\" ü"));
                let token = sign(&key, claims, 1_000, 4_600).unwrap();
                assert_eq!(token.split('.').count(), 3, "{token}");
                assert_eq!(
                    segment(&token, 0),
                    json!({ "alg": alg.as_str(), "kid": key.kid(), "typ": "JWT" }),
                    "{alg}"
                );
                let payload = json!({ "exp": 4_600, "iat": 1_000, "sub": "bot \"quoted\" ü" });
                assert_eq!(segment(&token, 1), payload, "{alg}");
                assert_eq!(verified(&key, &token), payload, "{alg}");
            }
        }
    }
}
