//! Seals: where the root of trust lives. A seal wraps and unwraps keyward's
//! master keys (envelope encryption) with a key that never leaves a KMS or an
//! HSM: PKCS#11 ([`pkcs11`]), Vault/OpenBao Transit ([`transit`]) and AWS
//! KMS ([`awskms`], served when built with the `aws-kms` feature).
//!
//! keyward keeps only wrapped master keys (in the database) and unwraps them
//! once at start; no request ever calls a seal. A seal is configured by one
//! URL-like value (`--seal`, repeatable); its [`SealSpec::id`] names it
//! without any secret and is stored beside each key it wraps. The secrets a
//! seal needs (a PIN, a token, AppRole credentials) come from files or the
//! environment, read when the seal is used, never from the value itself.

pub mod awskms;
mod params;
pub mod pkcs11;
pub mod transit;

use std::{fmt, path::Path, str::FromStr, sync::Arc};

use async_trait::async_trait;

use crate::{domain::secret::SecretBytes, files};

/// Why a seal did not answer: its own words (an HTTP status and the KMS's
/// error, a PKCS#11 return value), never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SealError(pub String);

impl SealError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A configured seal, opened lazily: nothing is contacted until it is used.
#[async_trait]
pub trait Seal: Send + Sync + fmt::Debug {
    /// The seal's id: its kind and location, no secret. Stored beside each
    /// wrapped master key.
    fn id(&self) -> &str;

    /// Wraps `key` (a master key's bytes).
    async fn wrap(&self, key: &SecretBytes) -> Result<Vec<u8>, SealError>;

    /// Unwraps what [`Seal::wrap`] returned.
    async fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes, SealError>;

    /// What the seal can tell about its key's permissions, for `keyward
    /// doctor`: `Ok(None)` when it cannot tell, `Ok(Some(note))` when they
    /// are no broader than wrap and unwrap, an error naming what is broader.
    async fn permissions(&self) -> Result<Option<String>, SealError> {
        Ok(None)
    }
}

/// One `--seal` value, parsed.
#[derive(Clone, PartialEq, Eq)]
pub enum SealSpec {
    /// `pkcs11:MODULE?token=LABEL&key=LABEL&pin-file=FILE`
    Pkcs11(pkcs11::Pkcs11Spec),
    /// `transit:URL?mount=transit&key=NAME&token-file=FILE`
    Transit(transit::TransitSpec),
    /// `awskms:KEY_ID_OR_ALIAS?region=REGION[&endpoint=URL]`
    AwsKms(awskms::AwsKmsSpec),
}

impl SealSpec {
    /// The seal's id: its kind and location, without secrets or file names.
    pub fn id(&self) -> String {
        match self {
            Self::Pkcs11(spec) => spec.id(),
            Self::Transit(spec) => spec.id(),
            Self::AwsKms(spec) => spec.id(),
        }
    }

    /// The seal, ready to use; contacts nothing yet.
    pub fn open(&self) -> Result<Arc<dyn Seal>, SealError> {
        match self {
            Self::Pkcs11(spec) => Ok(Arc::new(pkcs11::Pkcs11Seal::new(spec.clone()))),
            Self::Transit(spec) => Ok(Arc::new(transit::TransitSeal::new(spec.clone()))),
            Self::AwsKms(spec) => awskms::open(spec),
        }
    }
}

impl SealSpec {
    /// Each non-empty value parsed; a seal configured twice, or one this
    /// build cannot serve, is refused (before anything is touched).
    pub fn parse_all(values: &[String]) -> Result<Vec<Self>, String> {
        let specs = values
            .iter()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.parse::<Self>())
            .collect::<Result<Vec<_>, _>>()?;
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.id() == spec.id()) {
                return Err(format!("{} is configured twice", spec.id()));
            }
            if let Self::AwsKms(_) = spec
                && !awskms::BUILT
            {
                return Err(format!("{}: {}", spec.id(), awskms::NOT_BUILT));
            }
        }
        Ok(specs)
    }
}

impl fmt::Debug for SealSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

impl FromStr for SealSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let Some((scheme, rest)) = value.split_once(':') else {
            return Err(format!(
                "{value:?} is not a seal: use pkcs11:…, transit:… or awskms:…"
            ));
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        match scheme {
            "pkcs11" => pkcs11::Pkcs11Spec::parse(location, query).map(Self::Pkcs11),
            "transit" => transit::TransitSpec::parse(location, query).map(Self::Transit),
            "awskms" => awskms::AwsKmsSpec::parse(location, query).map(Self::AwsKms),
            other => Err(format!(
                "unknown seal kind {other:?}: use pkcs11:…, transit:… or awskms:…"
            )),
        }
    }
}

/// Reads a seal's secret from `path`, refusing a file group or others may
/// read (as for the master key file), trailing newline dropped.
pub(crate) fn read_secret_file(what: &str, path: &Path) -> Result<SecretBytes, SealError> {
    if let Some(mode) = files::mode_of(path).filter(|mode| mode & 0o077 != 0) {
        return Err(SealError::new(format!(
            "the {what} file {} is readable by others (mode {mode:o}); `chmod 600` it",
            path.display()
        )));
    }
    let mut raw = std::fs::read(path).map_err(|e| {
        SealError::new(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        raw.pop();
    }
    Ok(SecretBytes::new(raw))
}

/// A secret from the environment variable `name`, if set and not empty.
pub(crate) fn secret_from_env(name: &str) -> Option<SecretBytes> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| SecretBytes::new(v.trim().as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_forms_parse_and_their_ids_hold_no_secret_file() {
        let p: SealSpec =
            "pkcs11:/usr/lib/softhsm/libsofthsm2.so?token=kw&key=master&pin-file=/run/pin"
                .parse()
                .expect("pkcs11");
        assert_eq!(
            p.id(),
            "pkcs11:/usr/lib/softhsm/libsofthsm2.so?token=kw&key=master"
        );
        let t: SealSpec =
            "transit:https://bao.example:8200?mount=transit&key=keyward&token-file=/run/token"
                .parse()
                .expect("transit");
        assert_eq!(
            t.id(),
            "transit:https://bao.example:8200?mount=transit&key=keyward"
        );
        let a: SealSpec = "awskms:alias/keyward?region=eu-west-1&endpoint=http://127.0.0.1:5000"
            .parse()
            .expect("awskms");
        assert_eq!(a.id(), "awskms:alias/keyward?region=eu-west-1");
        let approle: SealSpec =
            "transit:http://127.0.0.1:8200?key=k&role-id-file=/a&secret-id-file=/b&ca-cert=/c"
                .parse()
                .expect("approle");
        assert_eq!(
            approle.id(),
            "transit:http://127.0.0.1:8200?mount=transit&key=k"
        );
    }

    #[test]
    fn bad_values_are_refused_precisely() {
        for (value, expected) in [
            ("vault:x", "unknown seal kind"),
            ("nothing", "is not a seal"),
            ("pkcs11:/lib.so?token=t", "key="),
            (
                "pkcs11:/lib.so?token=t&key=k&pin=1234",
                "unknown parameter \"pin\"",
            ),
            ("transit:https://h?mount=m", "key="),
            ("transit:ftp://h?key=k", "http:// or https://"),
            (
                "transit:https://h?key=k&token=abc",
                "unknown parameter \"token\"",
            ),
            ("transit:https://h?key=k&role-id-file=/a", "secret-id-file"),
            ("awskms:?region=x", "name the key"),
            ("awskms:alias/k", "region="),
            (
                "awskms:alias/k?region=r&endpoint=kms.local",
                "http:// or https://",
            ),
            ("pkcs11:/lib.so?token=t&key=k&key=j", "more than once"),
        ] {
            let err = value.parse::<SealSpec>().expect_err(value);
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn a_seal_configured_twice_is_refused_even_with_other_secret_files() {
        let values = [
            "transit:http://bao:8200?key=k&token-file=/a".to_string(),
            String::new(),
            "transit:http://bao:8200?key=k&token-file=/b".to_string(),
        ];
        let err = SealSpec::parse_all(&values).expect_err("twice");
        assert!(err.contains("configured twice"), "{err}");
        assert_eq!(SealSpec::parse_all(&values[..2]).expect("one").len(), 1);
    }
}
