//! Claim rules, pure: the subject and email a signing request sets, the
//! profiles that constrain claims (OpenMetadata's), and the claims and
//! scopes of a client-credentials token.

use serde_json::{Map, Value};

use super::{algorithm::Algorithm, client::Client, oauth::OAuthError};
use crate::{Error, Result};

/// Which claim rules a signing request follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignProfile {
    /// The caller's claims as given.
    #[default]
    Plain,
    /// Tokens OpenMetadata accepts.
    OpenMetadata {
        /// Sign even when the claims name different OpenMetadata users
        /// (`--force`): for an OM whose principal claims are not the default.
        allow_identity_mismatch: bool,
    },
}

impl SignProfile {
    /// Checks (and completes) `claims` under this profile, for a token signed
    /// with `alg`.
    pub fn apply(self, claims: &mut Map<String, Value>, alg: Algorithm) -> Result<()> {
        match self {
            Self::Plain => Ok(()),
            Self::OpenMetadata {
                allow_identity_mismatch,
            } => {
                check_om_algorithm(alg)?;
                check_om_claims(claims)?;
                if !allow_identity_mismatch {
                    check_om_identity(claims)?;
                }
                Ok(())
            }
        }
    }
}

/// The algorithms keyward signs with that OpenMetadata's
/// `tokenValidationAlgorithm` can name (it also allows ES512, which keyward
/// does not sign with). OM verifies every token with that one algorithm.
pub const OM_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::Rs256,
    Algorithm::Rs384,
    Algorithm::Rs512,
    Algorithm::Es256,
    Algorithm::Es384,
];

fn check_om_algorithm(alg: Algorithm) -> Result<()> {
    if OM_ALGORITHMS.contains(&alg) {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "the key set signs with {alg}, which OpenMetadata cannot verify: its \
         tokenValidationAlgorithm is one of RS256, RS384, RS512, ES256, ES384, ES512 \
         (RS256 by default); sign with a key set of that algorithm"
    )))
}

/// The OpenMetadata user a claim value names: OM takes the part before `@`,
/// lower-cased.
pub fn om_user_name(value: &str) -> String {
    value
        .split_once('@')
        .map_or(value, |(local, _)| local)
        .to_lowercase()
}

/// OpenMetadata logs a token in as the user named by the first of `email`,
/// `preferred_username`, `sub` that is present (its default
/// `jwtPrincipalClaims`); newer releases with `AUTHENTICATION_EMAIL_CLAIM` set
/// look the user up by email instead. A token whose claims name different users
/// logs in as someone the signer may not expect: refuse it, naming both.
fn check_om_identity(claims: &Map<String, Value>) -> Result<()> {
    let named: Vec<(&str, String)> = ["email", "preferred_username", "sub"]
        .into_iter()
        .filter_map(|claim| {
            let value = claims.get(claim)?.as_str()?;
            Some((claim, om_user_name(value)))
        })
        .collect();
    let Some((first_claim, user)) = named.first() else {
        return Ok(());
    };
    if let Some((claim, other)) = named.iter().find(|(_, name)| name != user) {
        return Err(Error::invalid(
            "email",
            format!(
                "OpenMetadata would log this token in as {user:?} (from {first_claim}), \
                 not {other:?} (from {claim}): it takes the user from the first of email, \
                 preferred_username, sub, and by email where AUTHENTICATION_EMAIL_CLAIM is \
                 set. Give an email whose part before '@' is the subject (e.g. \
                 {other}@example.com), or force it"
            ),
        ));
    }
    Ok(())
}

/// Sets `sub` and `email` from the request's fields, refusing a conflict with
/// the same claim given in `claims_json`.
pub fn apply_subject_and_email(
    claims: &mut serde_json::Map<String, serde_json::Value>,
    subject: Option<&str>,
    email: Option<&str>,
) -> Result<()> {
    for (field, claim, value) in [("subject", "sub", subject), ("email", "email", email)] {
        let Some(value) = value else { continue };
        if value.is_empty() {
            return Err(Error::invalid(field, "must not be empty when given"));
        }
        match claims.get(claim) {
            Some(existing) if existing.as_str() != Some(value) => {
                return Err(Error::invalid(
                    field,
                    format!("conflicts with the {claim:?} claim in claims_json"),
                ));
            }
            _ => {
                claims.insert(claim.into(), value.into());
            }
        }
    }
    Ok(())
}

/// The scopes a client-credentials token gets: those `requested` (space
/// delimited; each once, in the order asked), all of them allowed, or every
/// allowed scope when none is requested.
pub fn granted_scopes(
    allowed: &[String],
    requested: Option<&str>,
) -> Result<Vec<String>, OAuthError> {
    match requested.map(str::trim) {
        None | Some("") => Ok(allowed.to_vec()),
        Some(requested) => {
            let mut granted: Vec<String> = Vec::new();
            for scope in requested.split_whitespace() {
                if !allowed.iter().any(|s| s == scope) {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope {scope:?} is not allowed for this client"
                    )));
                }
                if !granted.iter().any(|g| g == scope) {
                    granted.push(scope.to_string());
                }
            }
            Ok(granted)
        }
    }
}

/// The claims of a client-credentials token for `client` (before `iat` and
/// `exp`): keyward as issuer, the client's OpenMetadata identity if it has
/// one (OM loads the user named by email, else `preferred_username`, else
/// `sub`), its audience, a unique `jti` and the granted `scope`.
pub fn client_token_claims(
    issuer: &str,
    client: &Client,
    scope: &str,
    jti: &str,
) -> Map<String, Value> {
    let mut claims = Map::new();
    let text = |v: &str| Value::String(v.to_string());
    claims.insert("iss".into(), text(issuer));
    if client.token_subject.is_empty() {
        claims.insert("sub".into(), text(&client.id));
    } else {
        claims.insert("sub".into(), text(&client.token_subject));
        claims.insert("preferred_username".into(), text(&client.token_subject));
    }
    if !client.token_email.is_empty() {
        claims.insert("email".into(), text(&client.token_email));
    }
    claims.insert("client_id".into(), text(&client.id));
    if !client.audience.is_empty() {
        claims.insert("aud".into(), text(&client.audience));
    }
    claims.insert("jti".into(), text(jti));
    if !scope.is_empty() {
        claims.insert("scope".into(), text(scope));
    }
    claims
}

/// OpenMetadata rejects tokens it did not mint that carry these: refuse them
/// up front with the reason, and set `preferred_username` from `sub`.
fn check_om_claims(claims: &mut Map<String, Value>) -> Result<()> {
    let refused: [(&str, &str); 3] = [
        (
            "isBot",
            "OpenMetadata accepts isBot only on the bot token it stored itself",
        ),
        (
            "tokenType",
            "OpenMetadata accepts tokenType only on tokens in its own token cache",
        ),
        (
            "sessionId",
            "OpenMetadata accepts sessionId only for a live session it created",
        ),
    ];
    for (claim, why) in refused {
        if claims.contains_key(claim) {
            return Err(Error::invalid(
                "claims_json",
                format!("claim {claim:?} is refused under the openmetadata profile: {why}"),
            ));
        }
    }
    if claims.get("email_verified") == Some(&Value::Bool(false)) {
        return Err(Error::invalid(
            "claims_json",
            "claim \"email_verified\": false is refused under the openmetadata profile: OpenMetadata rejects such tokens",
        ));
    }
    let sub = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(Error::invalid(
                "subject",
                "the openmetadata profile needs a subject (--subject, or \"sub\" in the claims)",
            ));
        }
    };
    if let Some(email) = claims.get("email")
        && !email.as_str().is_some_and(|e| e.contains('@'))
    {
        return Err(Error::invalid(
            "email",
            "must be an address like name@example.com: OpenMetadata takes the user name from the part before '@'",
        ));
    }
    claims
        .entry("preferred_username")
        .or_insert_with(|| Value::String(sub));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn plain_takes_claims_as_given() {
        let mut c = claims(json!({"isBot": true}));
        SignProfile::Plain.apply(&mut c, Algorithm::EdDsa).unwrap();
        assert_eq!(Value::Object(c), json!({"isBot": true}));
    }

    #[test]
    fn openmetadata_refuses_what_om_rejects_and_needs_a_subject() {
        for (bad, field) in [
            (json!({"sub": "bot", "isBot": true}), "claims_json"),
            (json!({"sub": "bot", "tokenType": "x"}), "claims_json"),
            (
                json!({"sub": "bot", "email_verified": false}),
                "claims_json",
            ),
            (json!({}), "subject"),
            (json!({"sub": "bot", "email": "no-at-sign"}), "email"),
        ] {
            let err = OM
                .apply(&mut claims(bad.clone()), Algorithm::Rs256)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("invalid {field}")), "{bad}: {err}");
        }
        let mut ok = claims(json!({"sub": "ingestion-bot", "email": "Ingestion-Bot@example.com"}));
        OM.apply(&mut ok, Algorithm::Rs256).unwrap();
        assert_eq!(ok["preferred_username"], "ingestion-bot");
    }

    const OM: SignProfile = SignProfile::OpenMetadata {
        allow_identity_mismatch: false,
    };

    #[test]
    fn openmetadata_refuses_claims_naming_different_users_unless_forced() {
        let bad = json!({"sub": "ingestion-bot", "email": "robot@example.com"});
        let err = OM
            .apply(&mut claims(bad.clone()), Algorithm::Rs256)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"robot\" (from email)")
                && err.contains("\"ingestion-bot\" (from preferred_username)"),
            "{err}"
        );
        let forced = SignProfile::OpenMetadata {
            allow_identity_mismatch: true,
        };
        forced.apply(&mut claims(bad), Algorithm::Rs256).unwrap();
        let named = json!({"sub": "a", "preferred_username": "b"});
        assert!(OM.apply(&mut claims(named), Algorithm::Rs256).is_err());
        assert_eq!(om_user_name("Bot.One@Example.com"), "bot.one");
        assert_eq!(om_user_name("admin"), "admin");
    }

    #[test]
    fn openmetadata_signs_only_with_algorithms_om_verifies() {
        for alg in [
            Algorithm::Ps256,
            Algorithm::Ps384,
            Algorithm::Ps512,
            Algorithm::EdDsa,
        ] {
            let err = OM
                .apply(&mut claims(json!({"sub": "bot"})), alg)
                .unwrap_err();
            assert!(
                matches!(&err, Error::FailedPrecondition(m) if m.contains("RS256, RS384, RS512, ES256, ES384, ES512")),
                "{alg}: {err}"
            );
        }
        for alg in OM_ALGORITHMS {
            OM.apply(&mut claims(json!({"sub": "bot"})), alg).unwrap();
        }
    }

    #[test]
    fn requested_scopes_must_be_allowed_and_are_granted_once() {
        let allowed = vec!["read".to_string(), "write".to_string()];
        assert_eq!(granted_scopes(&allowed, None).unwrap(), allowed);
        assert_eq!(granted_scopes(&allowed, Some("  ")).unwrap(), allowed);
        assert_eq!(
            granted_scopes(&allowed, Some("write read write")).unwrap(),
            ["write", "read"]
        );
        let err = granted_scopes(&allowed, Some("read admin")).unwrap_err();
        assert!(
            matches!(&err, OAuthError::InvalidScope(m) if m.contains("admin")),
            "{err}"
        );
    }

    #[test]
    fn client_tokens_name_the_client_or_its_openmetadata_identity() {
        let mut client = Client::new("ingestion", 0);
        let plain = client_token_claims("https://kw", &client, "", "j1");
        assert_eq!(
            Value::Object(plain),
            json!({"iss": "https://kw", "sub": "ingestion", "client_id": "ingestion", "jti": "j1"})
        );
        client.token_subject = "ingestion-bot".into();
        client.token_email = "ingestion-bot@example.com".into();
        client.audience = "om".into();
        let om = client_token_claims("https://kw", &client, "read", "j2");
        assert_eq!(om["sub"], "ingestion-bot");
        assert_eq!(om["preferred_username"], "ingestion-bot");
        assert_eq!(om["email"], "ingestion-bot@example.com");
        assert_eq!(
            (om["aud"].as_str(), om["scope"].as_str()),
            (Some("om"), Some("read"))
        );
    }

    #[test]
    fn subject_and_email_must_agree_with_the_claims() {
        let mut c = claims(json!({"sub": "a"}));
        assert!(apply_subject_and_email(&mut c, Some("b"), None).is_err());
        apply_subject_and_email(&mut c, Some("a"), Some("a@example.com")).unwrap();
        assert_eq!(c["email"], "a@example.com");
        assert!(apply_subject_and_email(&mut c, Some(""), None).is_err());
    }
}
