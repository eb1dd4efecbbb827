//! OpenMetadata's configuration formats, as pure functions: the env file
//! `keyward export openmetadata` and `keyward agent` write, the value of
//! `AUTHENTICATION_PUBLIC_KEYS`, and the numeric owners of files handed to
//! OpenMetadata's container.

use std::path::Path;

/// OpenMetadata's own JWKS URL, as its `AUTHENTICATION_PUBLIC_KEYS` default lists it.
pub const OM_DEFAULT_JWKS_URL: &str = "http://localhost:8585/api/v1/system/config/jwks";

/// An http(s) URL that fits in OM's bracketed, comma-separated list.
pub fn parse_jwks_url(text: &str) -> Result<String, String> {
    if !(text.starts_with("https://") || text.starts_with("http://")) {
        return Err(format!("{text:?} is not an http(s) URL"));
    }
    if text.contains([',', '[', ']', '\'', '"']) || text.chars().any(char::is_whitespace) {
        return Err(format!(
            "{text:?} cannot go in AUTHENTICATION_PUBLIC_KEYS (no commas, brackets, quotes or spaces)"
        ));
    }
    Ok(text.to_string())
}

/// `UID`, `UID:GID` or `:GID`, numeric: the user OpenMetadata runs as need not
/// exist on the machine that exports.
pub fn parse_owner(text: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let id = |part: &str, what: &str| -> Result<Option<u32>, String> {
        if part.is_empty() {
            return Ok(None);
        }
        part.parse::<u32>().map(Some).map_err(|_| {
            format!("{what} {part:?} is not a number (give numeric ids, e.g. 1000:1000)")
        })
    };
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (id(u, "user id")?, id(g, "group id")?),
        None => (id(text, "user id")?, None),
    };
    if user.is_none() && group.is_none() {
        return Err("give UID, UID:GID or :GID".into());
    }
    Ok((user, group))
}

/// Quotes a value for an env file read by a shell or docker compose.
pub fn env_value(v: &str) -> String {
    if !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:@,[]=+%".contains(&b))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// `KEY=value` lines, one per pair, values quoted where a shell needs it.
pub fn env_lines(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}\n", env_value(v)))
        .collect()
}

/// OM's `AUTHENTICATION_PUBLIC_KEYS`: OM's own JWKS first (it must stay), then
/// keyward's, then the others given, each once.
pub fn public_keys(om_jwks_url: &str, keyward_jwks_url: &str, others: &[String]) -> String {
    let mut urls: Vec<&str> = Vec::new();
    for url in [om_jwks_url, keyward_jwks_url]
        .into_iter()
        .chain(others.iter().map(String::as_str))
    {
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    format!("[{}]", urls.join(","))
}

/// One key export for OpenMetadata: what its env file says.
#[derive(Debug, Clone, Copy)]
pub struct KeyExport<'a> {
    /// The key set.
    pub keyset: &'a str,
    /// The exported key's state (active or pending).
    pub state: &'a str,
    /// The exported key's kid (OM's `JWT_KEY_ID`).
    pub kid: &'a str,
    /// OM's `JWT_ISSUER`.
    pub issuer: &'a str,
    /// Where OpenMetadata finds the key files.
    pub om_dir: &'a Path,
    /// OpenMetadata's own JWKS URL, kept first.
    pub om_jwks_url: &'a str,
    /// keyward's JWKS URL for the key set.
    pub keyward_jwks_url: &'a str,
    /// Other JWKS URLs OpenMetadata must trust.
    pub public_key_urls: &'a [String],
}

impl KeyExport<'_> {
    /// The environment variables OpenMetadata reads, in order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "RSA_PRIVATE_KEY_FILE_PATH",
                self.om_dir.join("private_key.der").display().to_string(),
            ),
            (
                "RSA_PUBLIC_KEY_FILE_PATH",
                self.om_dir.join("public_key.der").display().to_string(),
            ),
            ("JWT_ISSUER", self.issuer.to_string()),
            ("JWT_KEY_ID", self.kid.to_string()),
            (
                "AUTHENTICATION_PUBLIC_KEYS",
                public_keys(
                    self.om_jwks_url,
                    self.keyward_jwks_url,
                    self.public_key_urls,
                ),
            ),
        ]
    }

    /// `openmetadata.env`: a comment naming the key, then [`Self::pairs`].
    pub fn env_file(&self) -> String {
        format!(
            "# keyward export openmetadata: key set {}, {} key {}\n{}",
            self.keyset,
            self.state,
            self.kid,
            env_lines(&self.pairs())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_numeric_user_and_group_ids() {
        assert_eq!(parse_owner("1000"), Ok((Some(1000), None)));
        assert_eq!(parse_owner("1000:1000"), Ok((Some(1000), Some(1000))));
        assert_eq!(parse_owner(":1000"), Ok((None, Some(1000))));
        for bad in ["", ":", "openmetadata", "1000:staff", "-1"] {
            assert!(parse_owner(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn public_keys_keep_om_first_and_every_url_once() {
        let keyward = "https://keyward.example.com/keysets/om/jwks.json";
        let idp = "https://idp.example.com/jwks".to_string();
        assert_eq!(
            public_keys(OM_DEFAULT_JWKS_URL, keyward, &[idp.clone(), idp.clone()]),
            format!("[{OM_DEFAULT_JWKS_URL},{keyward},{idp}]")
        );
        assert!(parse_jwks_url(&idp).is_ok());
        for bad in [
            "idp.example.com/jwks",
            "https://a,b",
            "https://a b",
            "https://a]",
        ] {
            assert!(parse_jwks_url(bad).is_err(), "{bad:?}");
        }
    }
}
