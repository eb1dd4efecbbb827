//! `keyward export openmetadata`, `keyward import openmetadata` and
//! `keyward client env openmetadata`: OpenMetadata's formats, one command each.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Map, Value};

use super::{Admin, CliError, Output, print_transition};
use crate::{
    domain::openmetadata::{
        KeyExport, OM_DEFAULT_JWKS_URL, env_lines, parse_jwks_url, parse_owner,
    },
    files::{Handover, ensure_handover_dir, write_handover_file},
    transport::grpc::pb,
};

/// `keyward export …`
#[derive(Subcommand, Debug)]
pub enum ExportCmd {
    /// Write private_key.der, public_key.der and openmetadata.env for OpenMetadata.
    Openmetadata {
        /// RSA key set whose key OpenMetadata will sign with.
        #[arg(long)]
        keyset: String,
        /// Directory to write (created 0700; files 0600).
        #[arg(long)]
        out: PathBuf,
        /// JWT_ISSUER for OpenMetadata.
        #[arg(long, default_value = "open-metadata.org")]
        issuer: String,
        /// Which key: active, or pending (restart OM onto it before keyward activates it).
        #[arg(long, default_value = "active")]
        key: String,
        /// Where OpenMetadata will find the files, if not at --out (e.g. a mount path).
        #[arg(long, value_name = "DIR")]
        om_dir: Option<PathBuf>,
        /// OpenMetadata's own JWKS URL, kept first in AUTHENTICATION_PUBLIC_KEYS.
        #[arg(long, default_value = OM_DEFAULT_JWKS_URL)]
        om_jwks_url: String,
        /// Another JWKS URL OpenMetadata must trust (your IdP's), kept in
        /// AUTHENTICATION_PUBLIC_KEYS on every export. Repeatable.
        #[arg(long = "public-key-url", value_name = "URL", value_parser = parse_jwks_url)]
        public_key_urls: Vec<String>,
        /// Give the directory and files to this numeric user (and group):
        /// OpenMetadata's container runs as `openmetadata`, uid 1000, gid 1000.
        /// Needs root.
        #[arg(long, value_name = "UID[:GID]", value_parser = parse_owner)]
        owner: Option<(Option<u32>, Option<u32>)>,
        /// Let the owning group read the files (0640, directory 0750), e.g.
        /// with `--owner :1000` or a Kubernetes fsGroup.
        #[arg(long)]
        group_readable: bool,
    },
}

/// `keyward import …`
#[derive(Subcommand, Debug)]
pub enum ImportCmd {
    /// Install OpenMetadata's existing RSA key as the active key, keeping its kid.
    Openmetadata {
        /// RSA key set to install it in.
        #[arg(long)]
        keyset: String,
        /// Private key: PKCS#8 or PKCS#1, DER or PEM (OM's private_key.der).
        #[arg(long, value_name = "FILE")]
        private_key: PathBuf,
        /// Public key to check against the private key (OM's public_key.der).
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// The kid OM's tokens carry (its JWT_KEY_ID).
        #[arg(long)]
        kid: String,
    },
}

/// `keyward client env …`
#[derive(Subcommand, Debug)]
pub enum EnvCmd {
    /// The OIDC_* / AUTHENTICATION_* lines of OM's confidential custom-OIDC
    /// setup, or with --ingestion the ingestion workflow's server config.
    Openmetadata {
        /// Client id.
        id: String,
        /// OpenMetadata's external URL (OIDC_SERVER_URL, where OM sends users
        /// after login; ingestion's hostPort) [default: the callback URL's origin]
        #[arg(long, value_name = "URL")]
        server_url: Option<String>,
        /// The name on OM's login button (CUSTOM_OIDC_AUTHENTICATION_PROVIDER_NAME)
        /// [default: the client's display name, or its id]
        #[arg(long, value_name = "NAME")]
        provider_name: Option<String>,
        /// Print the ingestion workflow's `openMetadataServerConfig` instead:
        /// `--ingestion` or `--ingestion=jwt-token` (openmetadata-ingestion 1.3
        /// and later: a token file `keyward sign --out` refreshes), or
        /// `--ingestion=client-credentials` (openmetadata-ingestion 1.2.x and
        /// earlier only).
        #[arg(
            long,
            value_enum,
            value_name = "FORM",
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "jwt-token"
        )]
        ingestion: Option<IngestionForm>,
        /// With --ingestion (jwt-token): the token file the workflow reads.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/openmetadata/ingestion.jwt"
        )]
        jwt_token_file: String,
        /// With --ingestion client-credentials: keyward's token endpoint,
        /// e.g. https://keyward.example.com/oauth2/token.
        #[arg(long, value_name = "URL")]
        token_endpoint: Option<String>,
    },
}

/// How an ingestion workflow authenticates to OpenMetadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngestionForm {
    /// `authProvider: openmetadata` with `securityConfig.jwtToken`: the only
    /// form openmetadata-ingestion 1.3 and later accept.
    JwtToken,
    /// `authProvider: custom-oidc` with clientId, secretKey, tokenEndpoint:
    /// openmetadata-ingestion 1.2.x and earlier.
    ClientCredentials,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError {
        message: format!("cannot read {what} {}: {e}", path.display()),
        code: 2,
    })
}

fn pairs_json(pairs: &[(&str, String)]) -> Value {
    let map: Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
        .collect();
    Value::Object(map)
}

/// `keyward export openmetadata`.
pub async fn export(admin: &Admin, out: Output, cmd: &ExportCmd) -> Result<(), CliError> {
    let ExportCmd::Openmetadata {
        keyset,
        out: dir,
        issuer,
        key,
        om_dir,
        om_jwks_url,
        public_key_urls,
        owner,
        group_readable,
    } = cmd;
    let to = Handover {
        owner: owner.and_then(|(u, _)| u),
        group: owner.and_then(|(_, g)| g),
        group_readable: *group_readable,
        mode: None,
    };
    let mut exported = admin
        .keysets()
        .export_key(pb::ExportKeyRequest {
            keyset: keyset.clone(),
            key: key.clone(),
        })
        .await?
        .into_inner();
    // Wiped when dropped, on every path out of here.
    let private = zeroize::Zeroizing::new(std::mem::take(&mut exported.private_key_pkcs8_der));
    ensure_handover_dir(dir, to)?;
    write_handover_file(&dir.join("private_key.der"), &private, to)?;
    write_handover_file(
        &dir.join("public_key.der"),
        &exported.public_key_spki_der,
        to,
    )?;
    let om_base = match om_dir {
        Some(d) => d.clone(),
        None => std::path::absolute(dir).unwrap_or_else(|_| dir.clone()),
    };
    let export = KeyExport {
        keyset,
        state: &exported.state,
        kid: &exported.kid,
        issuer,
        om_dir: &om_base,
        om_jwks_url,
        keyward_jwks_url: &exported.jwks_uri,
        public_key_urls,
    };
    let pairs = export.pairs();
    let env = export.env_file();
    write_handover_file(&dir.join("openmetadata.env"), env.as_bytes(), to)?;
    match out {
        Output::Json => {
            let mut v = pairs_json(&pairs);
            v["dir"] = Value::String(dir.display().to_string());
            v["state"] = Value::String(exported.state.clone());
            println!("{v}");
        }
        Output::Table => {
            eprintln!(
                "wrote private_key.der, public_key.der and openmetadata.env ({} key {}) to {}",
                exported.state,
                exported.kid,
                dir.display()
            );
            print!("{}", env_lines(&pairs));
        }
    }
    Ok(())
}

/// `keyward import openmetadata`.
pub async fn import(admin: &Admin, out: Output, cmd: &ImportCmd) -> Result<(), CliError> {
    let ImportCmd::Openmetadata {
        keyset,
        private_key,
        public_key,
        kid,
    } = cmd;
    let private = read_file(private_key, "private key")?;
    let public = public_key
        .as_deref()
        .map(|p| read_file(p, "public key"))
        .transpose()?;
    let r = admin
        .keysets()
        .import_key(pb::ImportKeyRequest {
            keyset: keyset.clone(),
            private_key: private,
            public_key: public,
            kid: kid.clone(),
        })
        .await?
        .into_inner();
    print_transition(out, &r.events, &[], &r.keys);
    Ok(())
}

/// OIDC issuer ("authority") of a discovery URI.
fn authority_of(discovery_uri: &str) -> String {
    discovery_uri
        .trim_end_matches('/')
        .trim_end_matches("/.well-known/openid-configuration")
        .to_string()
}

/// `scheme://host[:port]` of a URL, if it has one.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// `keyward client env openmetadata ID`.
pub async fn client_env(admin: &Admin, out: Output, cmd: &EnvCmd) -> Result<(), CliError> {
    let EnvCmd::Openmetadata {
        id,
        server_url,
        provider_name,
        ingestion,
        jwt_token_file,
        token_endpoint,
    } = cmd;
    let mut api = admin.clients();
    let client = api
        .get_client(pb::GetClientRequest { id: id.clone() })
        .await?
        .into_inner();
    let server_url = server_url
        .clone()
        .or_else(|| origin_of(&client.callback_url))
        .map(|u| u.trim_end_matches('/').to_string());
    if let Some(form) = ingestion {
        return ingestion_config(
            admin,
            out,
            &client,
            *form,
            server_url,
            jwt_token_file,
            token_endpoint.as_deref(),
        )
        .await;
    }
    let mut secret = api
        .get_client_secret(pb::GetClientSecretRequest {
            id: id.clone(),
            version: None,
        })
        .await?
        .into_inner();
    let scope = if client.scopes.is_empty() {
        "openid email profile".to_string()
    } else {
        client.scopes.join(" ")
    };
    let provider_name = provider_name.clone().unwrap_or_else(|| {
        if client.display_name.is_empty() {
            client.id.clone()
        } else {
            client.display_name.clone()
        }
    });
    let mut pairs = vec![
        ("AUTHENTICATION_PROVIDER", "custom-oidc".to_string()),
        ("CUSTOM_OIDC_AUTHENTICATION_PROVIDER_NAME", provider_name),
        ("AUTHENTICATION_CLIENT_TYPE", "confidential".to_string()),
        ("AUTHENTICATION_CLIENT_ID", client.id.clone()),
        (
            "AUTHENTICATION_AUTHORITY",
            authority_of(&client.discovery_uri),
        ),
        ("AUTHENTICATION_CALLBACK_URL", client.callback_url.clone()),
        ("OIDC_CLIENT_ID", client.id.clone()),
        ("OIDC_TYPE", "custom".to_string()),
        ("OIDC_CLIENT_SECRET", std::mem::take(&mut secret.secret)),
        ("OIDC_SCOPE", scope),
        ("OIDC_DISCOVERY_URI", client.discovery_uri.clone()),
        ("OIDC_CALLBACK", client.callback_url.clone()),
        ("OIDC_CLIENT_AUTH_METHOD", client.auth_method.clone()),
        ("OIDC_RESPONSE_TYPE", "code".to_string()),
        ("OIDC_PREFERRED_JWS", "RS256".to_string()),
    ];
    // Unknown, it is left out: an empty OIDC_SERVER_URL would replace OM's
    // default with nothing.
    if let Some(url) = &server_url {
        pairs.push(("OIDC_SERVER_URL", url.clone()));
    }
    match out {
        Output::Json => println!("{}", pairs_json(&pairs)),
        Output::Table => print!("{}", env_lines(&pairs)),
    }
    if server_url.is_none() {
        eprintln!(
            "warning: no OIDC_SERVER_URL: give --server-url (OpenMetadata's external URL) or a callback URL; unset, OM sends users to http://localhost:8585 after login"
        );
    }
    if client.discovery_uri.is_empty() || client.callback_url.is_empty() {
        eprintln!(
            "warning: client {id} has no {}; set it with `keyward client put {id} --discovery-uri … --callback-url …`",
            if client.discovery_uri.is_empty() {
                "discovery URI"
            } else {
                "callback URL"
            }
        );
    }
    Ok(())
}

/// `keyward client env openmetadata ID --ingestion[=FORM]`: the
/// `workflowConfig.openMetadataServerConfig` block of an ingestion workflow.
async fn ingestion_config(
    admin: &Admin,
    out: Output,
    client: &pb::Client,
    form: IngestionForm,
    server_url: Option<String>,
    token_file: &str,
    token_endpoint: Option<&str>,
) -> Result<(), CliError> {
    let server_url = server_url.ok_or_else(|| {
        CliError::usage("give --server-url: OpenMetadata's URL, which the workflow calls")
    })?;
    let host_port = format!("{server_url}/api");
    let (config, note) = match form {
        IngestionForm::JwtToken => {
            let subject = if client.token_subject.is_empty() {
                "ingestion-bot"
            } else {
                client.token_subject.as_str()
            };
            let email = if client.token_email.is_empty() {
                format!("{subject}@example.com")
            } else {
                client.token_email.clone()
            };
            let keyset = if client.token_keyset.is_empty() {
                "om"
            } else {
                client.token_keyset.as_str()
            };
            let config = serde_json::json!({
                "hostPort": host_port,
                "authProvider": "openmetadata",
                "securityConfig": { "jwtToken": token_file },
            });
            let note = format!(
                "openmetadata-ingestion 1.3 and later. The workflow reads {token_file} once per run; \
                 keep it fresh, with a lifetime longer than the longest run:\n\
                 keyward sign --keyset {keyset} --profile openmetadata --subject {subject} --email {email} --ttl 2h --out {token_file}"
            );
            (config, note)
        }
        IngestionForm::ClientCredentials => {
            let endpoint = token_endpoint.ok_or_else(|| {
                CliError::usage("give --token-endpoint: keyward's token endpoint, e.g. https://keyward.example.com/oauth2/token")
            })?;
            if client.token_keyset.is_empty() {
                return Err(CliError::usage(format!(
                    "client {} issues no tokens: set `keyward client put {} --token-keyset KEYSET`",
                    client.id, client.id
                )));
            }
            // keyward enforces the registered method, and the ingestion
            // framework sends the secret in the form body.
            if client.auth_method != "client_secret_post" {
                return Err(CliError::usage(format!(
                    "openmetadata-ingestion sends its secret in the form body, and client {} is registered for {}: set `keyward client put {} --auth-method client_secret_post`",
                    client.id, client.auth_method, client.id
                )));
            }
            let secret = admin
                .clients()
                .get_client_secret(pb::GetClientSecretRequest {
                    id: client.id.clone(),
                    version: None,
                })
                .await?
                .into_inner();
            let config = serde_json::json!({
                "hostPort": host_port,
                "authProvider": "custom-oidc",
                "securityConfig": {
                    "clientId": client.id,
                    "secretKey": secret.secret,
                    "tokenEndpoint": endpoint,
                },
            });
            let note = "openmetadata-ingestion 1.2.x and earlier only: 1.3 removed the custom-oidc provider (use --ingestion)".to_string();
            (config, note)
        }
    };
    match out {
        Output::Json => println!("{config}"),
        Output::Table => {
            for line in note.lines() {
                println!("# {line}");
            }
            print!("{}", ingestion_yaml(&config));
        }
    }
    Ok(())
}

/// The block as YAML under `workflowConfig.openMetadataServerConfig`. The
/// values are URLs, paths, ids and secrets: each is written as a quoted
/// string, which YAML reads back verbatim.
fn ingestion_yaml(config: &Value) -> String {
    fn quoted(v: &Value) -> String {
        // A JSON string literal is a valid YAML double-quoted scalar.
        v.to_string()
    }
    let mut yaml = String::from("workflowConfig:\n  openMetadataServerConfig:\n");
    for key in ["hostPort", "authProvider"] {
        yaml.push_str(&format!("    {key}: {}\n", quoted(&config[key])));
    }
    yaml.push_str("    securityConfig:\n");
    if let Some(security) = config["securityConfig"].as_object() {
        for (key, value) in security {
            yaml.push_str(&format!("      {key}: {}\n", quoted(value)));
        }
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_url_defaults_to_the_callback_origin() {
        assert_eq!(
            origin_of("https://om.example.com:8443/callback?x=1").as_deref(),
            Some("https://om.example.com:8443")
        );
        assert_eq!(origin_of("http://om/").as_deref(), Some("http://om"));
        assert_eq!(origin_of(""), None);
        assert_eq!(origin_of("om.example.com/callback"), None);
    }
}
