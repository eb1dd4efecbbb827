//! Validated domain values: names, ids, key states, auth methods, durations.
//! Pure: every check returns a precise [`Error::InvalidArgument`].

use std::{fmt, str::FromStr, time::Duration};

use crate::{Error, Result};

pub use super::algorithm::Algorithm;

/// RSA modulus sizes keyward generates.
pub const RSA_BITS: [u32; 3] = [2048, 3072, 4096];

/// Checks a key set name: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn validate_keyset_name(name: &str) -> Result<()> {
    validate_slug(name, "a key set name")
}

/// Checks a webhook name: as a key set name.
pub fn validate_webhook_name(name: &str) -> Result<()> {
    validate_slug(name, "a webhook name")
}

/// `^[a-z0-9][a-z0-9-]{0,62}$`, refused as `what`.
fn validate_slug(name: &str, what: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "{what} is 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Checks a client id: `^[A-Za-z0-9._:-]{1,128}$`.
pub fn validate_client_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "id",
            "a client id is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
        ))
    }
}

/// Checks a kid: 1 to 256 printable ASCII characters, no quotes, backslashes or
/// spaces. Generated kids (RFC 7638 thumbprints) and imported ones (OpenMetadata's
/// `JWT_KEY_ID`) both fit.
pub fn validate_kid(kid: &str) -> Result<()> {
    let ok = !kid.is_empty()
        && kid.len() <= 256
        && kid
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "kid",
            "a kid is 1 to 256 printable ASCII characters, no quotes or spaces (see `keys list`, or OpenMetadata's JWT_KEY_ID)",
        ))
    }
}

/// Parses an algorithm name (the transports decide what an empty one means).
pub fn parse_algorithm(name: &str) -> Result<Algorithm> {
    name.parse().map_err(|_| {
        let allowed: Vec<_> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        Error::invalid(
            "algorithm",
            format!(
                "{name:?} is not supported; use one of {}",
                allowed.join(", ")
            ),
        )
    })
}

/// Resolves the RSA size for `alg`: 2048 by default for RSA, none for others.
pub fn resolve_rsa_bits(alg: Algorithm, requested: Option<u32>) -> Result<Option<u32>> {
    match (alg.is_rsa(), requested) {
        (true, None) => Ok(Some(2048)),
        (true, Some(bits)) if RSA_BITS.contains(&bits) => Ok(Some(bits)),
        (true, Some(bits)) => Err(Error::invalid(
            "rsa_bits",
            format!("{bits} is not supported; use 2048, 3072 or 4096"),
        )),
        (false, None) => Ok(None),
        (false, Some(_)) => Err(Error::invalid(
            "rsa_bits",
            format!("only RSA algorithms take a key size, not {alg}"),
        )),
    }
}

/// The lifecycle state of a signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signs; exactly one per key set.
    Active,
    /// Published for verification only; private material destroyed.
    Retired,
    /// Unpublished; kept for history.
    Expired,
    /// Withdrawn at once; never published or used again.
    Revoked,
}

impl KeyState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// Whether keys in this state appear in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(self, Self::Pending | Self::Active | Self::Retired)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "active" => Self::Active,
            "retired" => Self::Retired,
            "expired" => Self::Expired,
            "revoked" => Self::Revoked,
            other => return Err(Error::internal(format!("unknown key state {other:?}"))),
        })
    }
}

/// How the store decodes a stored state name.
impl TryFrom<String> for KeyState {
    type Error = Error;

    fn try_from(name: String) -> Result<Self> {
        name.parse()
    }
}

/// How the store decodes a stored algorithm name.
impl TryFrom<String> for Algorithm {
    type Error = super::algorithm::UnknownAlgorithm;

    fn try_from(name: String) -> std::result::Result<Self, Self::Error> {
        name.parse()
    }
}

/// How an OIDC client authenticates at a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic (the OAuth 2.0 default).
    ClientSecretBasic,
    /// Form fields `client_id` and `client_secret`.
    ClientSecretPost,
}

impl AuthMethod {
    /// The OIDC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    /// Parses an OIDC name; empty means the default, `client_secret_basic`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "client_secret_basic" => Ok(Self::ClientSecretBasic),
            "client_secret_post" => Ok(Self::ClientSecretPost),
            other => Err(Error::invalid(
                "auth_method",
                format!(
                    "{other:?} is not supported; use client_secret_basic or client_secret_post"
                ),
            )),
        }
    }
}

/// `90s`, `15m`, `12h`, `30d` or a combination, for messages.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// A duration in seconds as the database stores it (`i64`), saturating.
pub fn secs_i64(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Stored seconds as a duration in seconds; a negative value reads as 0.
pub fn secs_u64(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}

/// Parses a duration such as `90s`, `15m`, `12h`, `30d` or `1h30m`; a bare
/// number is seconds. `field` names the flag or field in the error.
pub fn parse_duration(field: &'static str, text: &str) -> Result<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|_| {
        Error::invalid(
            field,
            format!("{text:?} is not a duration; write it like 90s, 15m, 12h or 30d"),
        )
    })
}

/// The longest duration keyward takes anywhere (a rotation period,
/// retention, a token's lifetime): 100 years. Longer ones are refused at the
/// edge, so every time keyward computes stays far inside what it can store
/// and show.
pub const MAX_DURATION_SECS: u64 = 36_525 * 86_400;

/// Refuses a duration longer than [`MAX_DURATION_SECS`], naming `field`.
pub fn check_duration(field: &'static str, secs: u64) -> Result<u64> {
    if secs > MAX_DURATION_SECS {
        return Err(Error::invalid(
            field,
            format!(
                "{secs} seconds is more than the longest duration keyward takes (100 years, {MAX_DURATION_SECS} seconds)"
            ),
        ));
    }
    Ok(secs)
}

/// The last instant RFC 3339 can write: 9999-12-31T23:59:59Z.
const LAST_RFC3339: u64 = 253_402_300_799;

/// Formats Unix seconds as RFC 3339 UTC, `-` for "not set" (0 or less), and
/// a time past year 9999 (only a database changed by hand holds one) as its
/// Unix seconds. Never fails.
pub fn format_time(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(secs) if secs > LAST_RFC3339 => format!("{secs} (Unix seconds, after year 9999)"),
        Ok(secs) if secs > 0 => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        }
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_shown_compactly() {
        assert_eq!(format_duration(90), "1m30s");
        assert_eq!(format_duration(30 * 86_400), "30d");
        assert_eq!(format_duration(3900), "1h5m");
    }

    #[test]
    fn keyset_names() {
        for ok in ["a", "default", "om-prod-1", "0", &"a".repeat(63)] {
            assert!(validate_keyset_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "ä", &"a".repeat(64)] {
            assert!(validate_keyset_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn client_ids() {
        for ok in ["a", "open-metadata", "svc:ingest_1.x", &"Z".repeat(128)] {
            assert!(validate_client_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            assert!(validate_client_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kids() {
        let thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        for ok in [
            thumbprint,
            "Gb389a-9f76-gdjs-a92j-0242bk94356",
            &"k".repeat(256),
        ] {
            assert!(validate_kid(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "has space",
            "quo\"te",
            "back\\slash",
            "tab\t",
            &"k".repeat(257),
        ] {
            assert!(validate_kid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rsa_bits_rules() {
        assert_eq!(
            resolve_rsa_bits(Algorithm::Rs256, None).unwrap(),
            Some(2048)
        );
        assert_eq!(
            resolve_rsa_bits(Algorithm::Ps512, Some(4096)).unwrap(),
            Some(4096)
        );
        assert!(resolve_rsa_bits(Algorithm::Rs256, Some(1024)).is_err());
        assert!(resolve_rsa_bits(Algorithm::Es256, Some(2048)).is_err());
        assert_eq!(resolve_rsa_bits(Algorithm::EdDsa, None).unwrap(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("ttl", "90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("ttl", "15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("ttl", "48h").unwrap().as_secs(), 172_800);
        assert_eq!(parse_duration("ttl", "30d").unwrap().as_secs(), 2_592_000);
        assert_eq!(parse_duration("ttl", "1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("ttl", "300").unwrap().as_secs(), 300);
        let err = parse_duration("ttl", "soon").unwrap_err().to_string();
        assert!(err.contains("ttl") && err.contains("soon"), "{err}");
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "-");
        assert_eq!(format_time(-5), "-");
        assert_eq!(format_time(86_400), "1970-01-02T00:00:00Z");
        assert_eq!(format_time(253_402_300_799), "9999-12-31T23:59:59Z");
        assert!(format_time(253_402_300_800).contains("after year 9999"));
        assert!(format_time(i64::MAX).starts_with(&i64::MAX.to_string()));
    }

    #[test]
    fn durations_past_a_century_are_refused_by_name() {
        assert_eq!(
            check_duration("retain", MAX_DURATION_SECS).unwrap(),
            MAX_DURATION_SECS
        );
        let err = check_duration("retain", u64::MAX).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid retain:") && err.contains("100 years"),
            "{err}"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::parse_duration;

        proptest! {
            #[test]
            fn times_always_format(unix in any::<i64>()) {
                prop_assert!(!super::super::format_time(unix).is_empty());
            }

            #[test]
            fn durations_never_panic_and_read_back(text in ".*", n in 0u64..10_000_000) {
                let _ = parse_duration("ttl", &text);
                prop_assert_eq!(parse_duration("ttl", &format!("{n}s")).unwrap().as_secs(), n);
                prop_assert_eq!(parse_duration("ttl", &format!("{n}m")).unwrap().as_secs(), n * 60);
            }
        }
    }
}
