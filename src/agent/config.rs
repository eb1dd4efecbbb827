//! The agent's configuration file (TOML): the outputs it keeps fresh and
//! where it answers health checks. Everything is checked at start, so a typo
//! stops the agent with the line at fault instead of a file never written.
//!
//! ```toml
//! health_listen = "127.0.0.1:9464"
//!
//! [[token]]                # a signed JWT, renewed at ~2/3 of its life
//! path = "/run/keyward/ingestion.jwt"
//! keyset = "om"
//! profile = "openmetadata"
//! subject = "ingestion-bot"
//! ttl = "1h"
//!
//! [[secret]]               # an OIDC client's current secret
//! path = "/etc/om/oidc-client-secret"
//! client = "openmetadata"
//!
//! [[openmetadata]]         # private_key.der, public_key.der, openmetadata.env
//! dir = "/om/keys"
//! keyset = "om"
//! command = "systemctl restart openmetadata"
//! ```

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    Error, Result,
    domain::{model, openmetadata},
    files::Handover,
};

// The tables as written; checked into [`OutputSpec`]s.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenForm {
    name: Option<String>,
    path: PathBuf,
    keyset: String,
    ttl: Option<String>,
    profile: Option<String>,
    subject: Option<String>,
    email: Option<String>,
    claims: Option<toml::Table>,
    owner: Option<String>,
    mode: Option<String>,
    command: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretForm {
    name: Option<String>,
    path: PathBuf,
    client: String,
    owner: Option<String>,
    mode: Option<String>,
    command: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenMetadataForm {
    name: Option<String>,
    dir: PathBuf,
    keyset: String,
    issuer: Option<String>,
    key: Option<String>,
    om_dir: Option<PathBuf>,
    om_jwks_url: Option<String>,
    #[serde(default)]
    public_key_urls: Vec<String>,
    owner: Option<String>,
    mode: Option<String>,
    command: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    health_listen: Option<String>,
    #[serde(default)]
    token: Vec<TokenForm>,
    #[serde(default)]
    secret: Vec<SecretForm>,
    #[serde(default)]
    openmetadata: Vec<OpenMetadataForm>,
}

/// The agent's checked configuration.
#[derive(Debug)]
pub struct AgentConfig {
    /// Where `/health` and `/metrics` are served, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// What to keep fresh, in the file's order (tokens, secrets, exports).
    pub outputs: Vec<OutputSpec>,
}

/// One output: what it holds, where it goes, who may read it, what runs
/// after it changes, and which API token fetches it.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Its name in logs, health and metrics (default: its path).
    pub name: String,
    /// What it holds.
    pub what: What,
    /// The file (a token or secret) or directory (an OpenMetadata export).
    pub path: PathBuf,
    /// Owner and mode of what is written.
    pub to: Handover,
    /// Run by `/bin/sh -c` after each change.
    pub command: Option<String>,
    /// The API token's file for this output (else the agent's token).
    pub token_file: Option<PathBuf>,
}

/// What an output holds.
#[derive(Debug, Clone)]
pub enum What {
    /// A JWT the key set signs.
    Token {
        /// The key set.
        keyset: String,
        /// Its lifetime.
        ttl: Duration,
        /// `openmetadata` or empty.
        profile: String,
        /// `sub`.
        subject: Option<String>,
        /// `email`.
        email: Option<String>,
        /// Extra claims, a JSON object.
        claims_json: String,
    },
    /// A client's current secret, the bytes alone.
    Secret {
        /// The client id.
        client: String,
    },
    /// `private_key.der`, `public_key.der` and `openmetadata.env`.
    OpenMetadata {
        /// The RSA key set.
        keyset: String,
        /// `JWT_ISSUER`.
        issuer: String,
        /// `active` or `pending`.
        key: String,
        /// Where OpenMetadata finds the files.
        om_dir: PathBuf,
        /// OpenMetadata's own JWKS URL.
        om_jwks_url: String,
        /// Other JWKS URLs OpenMetadata trusts.
        public_key_urls: Vec<String>,
    },
}

impl What {
    /// `token`, `secret` or `openmetadata`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Token { .. } => "token",
            Self::Secret { .. } => "secret",
            Self::OpenMetadata { .. } => "openmetadata",
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// `0600`, `0640`, `0644`, `0400`…: read bits only, and the owner reads.
fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| {
        invalid(
            "mode",
            format!("{text:?} is not an octal mode like \"0640\""),
        )
    })?;
    if mode & !0o644 != 0 || mode & 0o400 == 0 {
        return Err(invalid(
            "mode",
            format!(
                "{text:?}: give read bits only, readable by the owner (0600, 0640, 0644, 0400, 0440, 0444)"
            ),
        ));
    }
    Ok(mode)
}

fn handover(owner: Option<&str>, mode: Option<&str>) -> Result<Handover> {
    let (owner, group) = owner
        .map(|o| openmetadata::parse_owner(o).map_err(|e| invalid("owner", e)))
        .transpose()?
        .unwrap_or((None, None));
    Ok(Handover {
        owner,
        group,
        group_readable: false,
        mode: mode.map(parse_mode).transpose()?,
    })
}

fn required(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(())
}

fn command(text: Option<String>) -> Result<Option<String>> {
    match text {
        Some(c) if c.trim().is_empty() => Err(invalid("command", "must not be empty")),
        other => Ok(other),
    }
}

impl AgentConfig {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::FailedPrecondition(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| Error::FailedPrecondition(format!("{}: {e}", path.display())))
    }

    /// Checks a configuration's text.
    pub fn parse(text: &str) -> Result<Self> {
        let form: FileForm =
            toml::from_str(text).map_err(|e| invalid("configuration", e.message().to_string()))?;
        let health_listen = form
            .health_listen
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "health_listen",
                        format!("{a:?} is not an address like 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()?;
        let mut outputs = Vec::new();
        for t in form.token {
            required("keyset", &t.keyset)?;
            let ttl = model::parse_duration("ttl", t.ttl.as_deref().unwrap_or("1h"))?;
            let profile = t.profile.unwrap_or_default();
            if !profile.is_empty() && profile != "openmetadata" {
                return Err(invalid(
                    "profile",
                    format!("{profile:?}: only \"openmetadata\" exists"),
                ));
            }
            let claims_json = match &t.claims {
                Some(table) => {
                    serde_json::to_string(table).map_err(|e| invalid("claims", e.to_string()))?
                }
                None => "{}".to_string(),
            };
            outputs.push(OutputSpec {
                name: t.name.unwrap_or_else(|| t.path.display().to_string()),
                what: What::Token {
                    keyset: t.keyset,
                    ttl,
                    profile,
                    subject: t.subject,
                    email: t.email,
                    claims_json,
                },
                to: handover(t.owner.as_deref(), t.mode.as_deref())?,
                path: t.path,
                command: command(t.command)?,
                token_file: t.token_file,
            });
        }
        for s in form.secret {
            required("client", &s.client)?;
            outputs.push(OutputSpec {
                name: s.name.unwrap_or_else(|| s.path.display().to_string()),
                what: What::Secret { client: s.client },
                to: handover(s.owner.as_deref(), s.mode.as_deref())?,
                path: s.path,
                command: command(s.command)?,
                token_file: s.token_file,
            });
        }
        for o in form.openmetadata {
            required("keyset", &o.keyset)?;
            let key = o.key.unwrap_or_else(|| "active".into());
            if key != "active" && key != "pending" {
                return Err(invalid("key", format!("{key:?}: active or pending")));
            }
            let om_jwks_url = o
                .om_jwks_url
                .unwrap_or_else(|| openmetadata::OM_DEFAULT_JWKS_URL.to_string());
            let public_key_urls = o
                .public_key_urls
                .iter()
                .map(|u| openmetadata::parse_jwks_url(u).map_err(|e| invalid("public_key_urls", e)))
                .collect::<Result<Vec<_>>>()?;
            let om_dir = match o.om_dir {
                Some(d) => d,
                None => std::path::absolute(&o.dir).unwrap_or_else(|_| o.dir.clone()),
            };
            outputs.push(OutputSpec {
                name: o.name.unwrap_or_else(|| o.dir.display().to_string()),
                what: What::OpenMetadata {
                    keyset: o.keyset,
                    issuer: o.issuer.unwrap_or_else(|| "open-metadata.org".into()),
                    key,
                    om_dir,
                    om_jwks_url,
                    public_key_urls,
                },
                to: handover(o.owner.as_deref(), o.mode.as_deref())?,
                path: o.dir,
                command: command(o.command)?,
                token_file: o.token_file,
            });
        }
        if outputs.is_empty() {
            return Err(invalid(
                "configuration",
                "lists no output: add a [[token]], [[secret]] or [[openmetadata]] table",
            ));
        }
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for o in &outputs {
            if !names.insert(o.name.as_str()) {
                return Err(invalid("name", format!("{:?} names two outputs", o.name)));
            }
            if !paths.insert(o.path.as_path()) {
                return Err(invalid(
                    "path",
                    format!("{} is written by two outputs", o.path.display()),
                ));
            }
        }
        Ok(Self {
            health_listen,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_file_parses_with_its_defaults() {
        let config = AgentConfig::parse(
            r#"
            health_listen = "127.0.0.1:9464"
            [[token]]
            path = "/run/kw/ingestion.jwt"
            keyset = "om"
            profile = "openmetadata"
            subject = "ingestion-bot"
            ttl = "30m"
            claims = { team = "data" }
            mode = "0644"
            owner = "1000:1000"
            command = "touch /tmp/reloaded"
            [[secret]]
            name = "om-secret"
            path = "/run/kw/client-secret"
            client = "openmetadata"
            token_file = "/etc/kw/reader.token"
            [[openmetadata]]
            dir = "/om/keys"
            keyset = "om"
            "#,
        )
        .unwrap();
        assert_eq!(config.health_listen.unwrap().port(), 9464);
        assert_eq!(config.outputs.len(), 3);
        let token = &config.outputs[0];
        assert_eq!(token.name, "/run/kw/ingestion.jwt");
        assert_eq!(token.to.mode, Some(0o644));
        assert_eq!((token.to.owner, token.to.group), (Some(1000), Some(1000)));
        let What::Token {
            ttl, claims_json, ..
        } = &token.what
        else {
            panic!("a token");
        };
        assert_eq!(*ttl, Duration::from_secs(1800));
        assert_eq!(claims_json, r#"{"team":"data"}"#);
        assert_eq!(config.outputs[1].name, "om-secret");
        let What::OpenMetadata {
            key,
            issuer,
            om_dir,
            ..
        } = &config.outputs[2].what
        else {
            panic!("an export");
        };
        assert_eq!(
            (key.as_str(), issuer.as_str()),
            ("active", "open-metadata.org")
        );
        assert_eq!(om_dir, Path::new("/om/keys"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("", "lists no output"),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nttl = \"soon\"",
                "ttl",
            ),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nmode = \"0666\"",
                "read bits only",
            ),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nmode = \"0755\"",
                "read bits only",
            ),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nowner = \"om\"",
                "owner",
            ),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nprofile = \"x\"",
                "profile",
            ),
            (
                "[[token]]\npath = \"a\"\nkeyset = \"om\"\nsubjekt = \"x\"",
                "subjekt",
            ),
            ("[[secret]]\npath = \"a\"\nclient = \"\"", "client"),
            (
                "[[secret]]\npath = \"a\"\nclient = \"c\"\n[[secret]]\npath = \"a\"\nclient = \"d\"\nname = \"other\"",
                "two outputs",
            ),
            (
                "[[openmetadata]]\ndir = \"d\"\nkeyset = \"om\"\nkey = \"retired\"",
                "active or pending",
            ),
            (
                "health_listen = \"localhost\"\n[[secret]]\npath = \"a\"\nclient = \"c\"",
                "health_listen",
            ),
        ] {
            let err = AgentConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
