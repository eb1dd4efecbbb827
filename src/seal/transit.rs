//! The Vault / OpenBao Transit seal: `encrypt` and `decrypt` with a named
//! key over HTTP(S), authenticated by a token (a file, or `BAO_TOKEN` /
//! `VAULT_TOKEN`) or by AppRole (role and secret id files). The key never
//! leaves the server; a Transit key rotated there keeps opening what its
//! earlier versions wrapped.

use std::{path::PathBuf, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroize as _;

use super::{Seal, SealError, params::Params, read_secret_file, secret_from_env};
use crate::{domain::secret::SecretBytes, transport::client};

/// How long one call to the server may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Transit seal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitSpec {
    /// The server's base URL, without a trailing slash.
    pub url: String,
    /// Where the Transit engine is mounted.
    pub mount: String,
    /// The Transit key's name.
    pub key: String,
    /// How keyward authenticates.
    pub auth: TransitAuth,
    /// CA certificates (PEM) the server's certificate must chain to.
    pub ca_cert: Option<PathBuf>,
}

/// How the Transit seal authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitAuth {
    /// A token read from this file at each use (an agent may renew it).
    TokenFile(PathBuf),
    /// AppRole: role id and secret id files, at `auth/<mount>/login`.
    AppRole {
        /// The role id file.
        role_id_file: PathBuf,
        /// The secret id file.
        secret_id_file: PathBuf,
        /// The AppRole auth mount.
        mount: String,
    },
    /// `BAO_TOKEN`, else `VAULT_TOKEN`.
    Environment,
}

impl TransitSpec {
    pub(super) fn parse(location: &str, query: &str) -> Result<Self, String> {
        let mut p = Params::parse(
            query,
            &[
                "mount",
                "key",
                "token-file",
                "role-id-file",
                "secret-id-file",
                "approle-mount",
                "ca-cert",
            ],
        )?;
        if !(location.starts_with("https://") || location.starts_with("http://")) {
            return Err(format!(
                "transit: {location:?} must be an http:// or https:// URL"
            ));
        }
        let key = p.required("key")?;
        let auth = match (
            p.optional("token-file"),
            p.optional("role-id-file"),
            p.optional("secret-id-file"),
        ) {
            (Some(token), None, None) => TransitAuth::TokenFile(token.into()),
            (None, Some(role), Some(secret)) => TransitAuth::AppRole {
                role_id_file: role.into(),
                secret_id_file: secret.into(),
                mount: p
                    .optional("approle-mount")
                    .unwrap_or_else(|| "approle".into()),
            },
            (None, None, None) => TransitAuth::Environment,
            (Some(_), _, _) => {
                return Err("transit: give token-file or AppRole's files, not both".into());
            }
            _ => {
                return Err("transit: AppRole needs both role-id-file and secret-id-file".into());
            }
        };
        Ok(Self {
            url: location.trim_end_matches('/').to_string(),
            mount: p
                .optional("mount")
                .unwrap_or_else(|| "transit".into())
                .trim_matches('/')
                .to_string(),
            key,
            auth,
            ca_cert: p.optional("ca-cert").map(PathBuf::from),
        })
    }

    /// `transit:URL?mount=M&key=K`
    pub fn id(&self) -> String {
        format!("transit:{}?mount={}&key={}", self.url, self.mount, self.key)
    }
}

/// The seal.
#[derive(Debug)]
pub struct TransitSeal {
    spec: TransitSpec,
    id: String,
}

/// `{"errors": […]}`, the server's refusal.
#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<String>,
}

impl TransitSeal {
    pub(super) fn new(spec: TransitSpec) -> Self {
        let id = spec.id();
        Self { spec, id }
    }

    /// A token: from the file, the environment, or an AppRole login.
    async fn token(&self) -> Result<SecretBytes, SealError> {
        match &self.spec.auth {
            TransitAuth::TokenFile(path) => read_secret_file("Transit token", path),
            TransitAuth::Environment => secret_from_env("BAO_TOKEN")
                .or_else(|| secret_from_env("VAULT_TOKEN"))
                .ok_or_else(|| {
                    SealError::new(
                        "no Transit token: give token-file=…, AppRole's role-id-file and \
                         secret-id-file, or set BAO_TOKEN",
                    )
                }),
            TransitAuth::AppRole {
                role_id_file,
                secret_id_file,
                mount,
            } => {
                let role = read_secret_file("AppRole role id", role_id_file)?;
                let secret = read_secret_file("AppRole secret id", secret_id_file)?;
                let text = |s: &SecretBytes| String::from_utf8_lossy(s.expose()).into_owned();
                let mut body = json!({"role_id": text(&role), "secret_id": text(&secret)})
                    .to_string()
                    .into_bytes();
                let answer = self.call(&format!("auth/{mount}/login"), &body, None).await;
                body.zeroize();
                let mut answer = answer?;
                #[derive(Deserialize)]
                struct Login {
                    auth: Auth,
                }
                #[derive(Deserialize)]
                struct Auth {
                    client_token: String,
                }
                let login = serde_json::from_slice::<Login>(&answer)
                    .map_err(|_| SealError::new("the AppRole login answer holds no token"));
                answer.zeroize();
                let mut token = login?.auth.client_token;
                let out = SecretBytes::new(token.as_bytes().to_vec());
                token.zeroize();
                Ok(out)
            }
        }
    }

    /// POSTs `body` to `/v1/<path>`; the answer's body on 2xx.
    async fn call(
        &self,
        path: &str,
        body: &[u8],
        token: Option<&SecretBytes>,
    ) -> Result<Vec<u8>, SealError> {
        let url = format!("{}/v1/{path}", self.spec.url);
        let token_text = token.map(|t| String::from_utf8_lossy(t.expose()).into_owned());
        let headers: Vec<(&str, &str)> = token_text
            .as_deref()
            .map(|t| vec![("X-Vault-Token", t)])
            .unwrap_or_default();
        let sent = client::send(client::Request {
            method: client::Verb::Post,
            url: &url,
            headers: &headers,
            json: Some(body),
            ca: self.spec.ca_cert.as_deref(),
            timeout: TIMEOUT,
        })
        .await;
        if let Some(mut t) = token_text {
            t.zeroize();
        }
        let (status, answer) = sent.map_err(|e| SealError::new(format!("unreachable: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        let errors = serde_json::from_slice::<Errors>(&answer)
            .map(|e| e.errors.join("; "))
            .unwrap_or_default();
        let meaning = match status {
            403 => "permission denied",
            400 => "refused",
            404 => "not found",
            503 => "sealed or unavailable",
            _ => "failed",
        };
        Err(SealError::new(format!(
            "{meaning} (HTTP {status} from /v1/{path}){}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors}")
            }
        )))
    }

    fn path(&self, op: &str) -> String {
        format!("{}/{op}/{}", self.spec.mount, self.spec.key)
    }
}

#[async_trait::async_trait]
impl Seal for TransitSeal {
    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, key: &SecretBytes) -> Result<Vec<u8>, SealError> {
        let token = self.token().await?;
        let mut encoded = STANDARD.encode(key.expose());
        let mut body = json!({ "plaintext": encoded }).to_string().into_bytes();
        encoded.zeroize();
        let answer = self.call(&self.path("encrypt"), &body, Some(&token)).await;
        body.zeroize();
        #[derive(Deserialize)]
        struct Encrypted {
            data: Ciphertext,
        }
        #[derive(Deserialize)]
        struct Ciphertext {
            ciphertext: String,
        }
        let encrypted: Encrypted = serde_json::from_slice(&answer?)
            .map_err(|_| SealError::new("the encrypt answer holds no ciphertext"))?;
        Ok(encrypted.data.ciphertext.into_bytes())
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes, SealError> {
        let ciphertext = std::str::from_utf8(wrapped)
            .map_err(|_| SealError::new("the wrapped key is not a Transit ciphertext"))?;
        let token = self.token().await?;
        let body = json!({ "ciphertext": ciphertext }).to_string().into_bytes();
        let mut answer = self
            .call(&self.path("decrypt"), &body, Some(&token))
            .await?;
        #[derive(Deserialize)]
        struct Decrypted {
            data: Plaintext,
        }
        #[derive(Deserialize)]
        struct Plaintext {
            plaintext: String,
        }
        let parsed = serde_json::from_slice::<Decrypted>(&answer);
        answer.zeroize();
        let mut plaintext = parsed
            .map_err(|_| SealError::new("the decrypt answer holds no plaintext"))?
            .data
            .plaintext;
        let decoded = STANDARD.decode(plaintext.as_bytes());
        plaintext.zeroize();
        decoded
            .map(SecretBytes::new)
            .map_err(|_| SealError::new("the decrypt answer's plaintext is not base64"))
    }

    /// Asks the server which capabilities this token has on the key: more
    /// than `update` on encrypt/decrypt (and `read` on the key) is broader
    /// than a seal needs.
    async fn permissions(&self) -> Result<Option<String>, SealError> {
        let token = self.token().await?;
        let paths = [
            self.path("encrypt"),
            self.path("decrypt"),
            self.path("keys"),
            format!(
                "{}/export/encryption-key/{}",
                self.spec.mount, self.spec.key
            ),
        ];
        let body = json!({ "paths": paths }).to_string().into_bytes();
        let answer = self
            .call("sys/capabilities-self", &body, Some(&token))
            .await?;
        let caps: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| SealError::new("the capabilities answer is not JSON"))?;
        let of = |path: &str| -> Vec<String> {
            caps.get(path)
                .or_else(|| caps.get("data").and_then(|d| d.get(path)))
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut broader = Vec::new();
        for (path, allowed) in [
            (&paths[0], &["update", "create"][..]),
            (&paths[1], &["update", "create"][..]),
            (&paths[2], &["read"][..]),
            (&paths[3], &[][..]),
        ] {
            let extra: Vec<String> = of(path)
                .into_iter()
                .filter(|c| c != "deny" && !allowed.contains(&c.as_str()))
                .collect();
            if !extra.is_empty() {
                broader.push(format!("{} on {path}", extra.join(",")));
            }
        }
        if broader.is_empty() {
            Ok(Some(
                "the token may only encrypt and decrypt with the key".into(),
            ))
        } else {
            Err(SealError::new(format!(
                "the token may do more than wrap and unwrap: {}; give keyward a policy with only \
                 update on {} and {}",
                broader.join("; "),
                paths[0],
                paths[1]
            )))
        }
    }
}
