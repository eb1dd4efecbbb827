//! Claim rules, pure: the subject and email a signing request sets, and the
//! profiles that constrain claims (OpenMetadata's).

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Which claim rules a signing request follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignProfile {
    /// The caller's claims as given.
    #[default]
    Plain,
    /// Tokens OpenMetadata accepts.
    OpenMetadata,
}

impl SignProfile {
    /// Checks (and completes) `claims` under this profile.
    pub fn apply(self, claims: &mut Map<String, Value>) -> Result<()> {
        match self {
            Self::Plain => Ok(()),
            Self::OpenMetadata => check_om_claims(claims),
        }
    }
}

/// Sets `sub` and `email` from the request's fields, refusing a conflict with
/// the same claim given in `claims_json`.
pub(super) fn apply_subject_and_email(
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
        SignProfile::Plain.apply(&mut c).unwrap();
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
            let err = SignProfile::OpenMetadata
                .apply(&mut claims(bad.clone()))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("invalid {field}")), "{bad}: {err}");
        }
        let mut ok = claims(json!({"sub": "ingestion-bot", "email": "bot@example.com"}));
        SignProfile::OpenMetadata.apply(&mut ok).unwrap();
        assert_eq!(ok["preferred_username"], "ingestion-bot");
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
