//! The AWS KMS seal: `Encrypt` and `Decrypt` with a symmetric KMS key named
//! by its id, ARN, alias or alias ARN, credentials from the SDK's standard
//! chain (environment, shared files, web identity as with EKS IRSA, the ECS
//! and EC2 instance roles). The key never leaves KMS.
//!
//! The value is always parsed and checked; the seal itself needs the
//! `aws-kms` cargo feature (the official SDK), so the default build stays
//! lean.

use std::sync::Arc;

use super::{Seal, SealError, params::Params};

/// An AWS KMS seal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsSpec {
    /// A key id, key ARN, alias name (`alias/…`) or alias ARN.
    pub key: String,
    /// The region.
    pub region: String,
    /// Another endpoint (a VPC endpoint, a test server).
    pub endpoint: Option<String>,
}

impl AwsKmsSpec {
    pub(super) fn parse(location: &str, query: &str) -> Result<Self, String> {
        let mut p = Params::parse(query, &["region", "endpoint"])?;
        if location.is_empty() {
            return Err("awskms: name the key: awskms:KEY_ID_OR_ALIAS?region=…".into());
        }
        let endpoint = p.optional("endpoint");
        if let Some(url) = &endpoint
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "awskms: endpoint {url:?} must be an http:// or https:// URL"
            ));
        }
        Ok(Self {
            key: location.to_string(),
            region: p.required("region")?,
            endpoint,
        })
    }

    /// `awskms:KEY?region=R` (the endpoint is where, not which key).
    pub fn id(&self) -> String {
        format!("awskms:{}?region={}", self.key, self.region)
    }
}

/// Whether this build serves AWS KMS seals.
pub const BUILT: bool = cfg!(feature = "aws-kms");

/// Why a build without the SDK refuses an `awskms:` seal.
pub const NOT_BUILT: &str = "this keyward was built without AWS KMS support: build it with \
                             `cargo build --release --features aws-kms`";

/// The seal, ready to use; contacts nothing yet.
#[cfg(feature = "aws-kms")]
pub(super) fn open(spec: &AwsKmsSpec) -> Result<Arc<dyn Seal>, SealError> {
    Ok(Arc::new(sdk::AwsKmsSeal::new(spec.clone())))
}

/// Without the SDK: a refusal saying how to get it.
#[cfg(not(feature = "aws-kms"))]
pub(super) fn open(_spec: &AwsKmsSpec) -> Result<Arc<dyn Seal>, SealError> {
    Err(SealError::new(NOT_BUILT))
}

#[cfg(feature = "aws-kms")]
pub use sdk::AwsKmsSeal;

#[cfg(feature = "aws-kms")]
mod sdk {
    use std::time::Duration;

    use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
    use aws_sdk_kms::{
        Client,
        config::http::HttpResponse,
        error::{ProvideErrorMetadata, SdkError},
        primitives::Blob,
        types::{KeyState, KeyUsageType},
    };
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use tokio::sync::OnceCell;

    use super::AwsKmsSpec;
    use crate::{
        domain::secret::SecretBytes,
        seal::{Seal, SealError},
    };

    /// Bound into every ciphertext: a blob wrapped for anything else does
    /// not decrypt as a keyward master key.
    const CONTEXT: (&str, &str) = ("keyward", "master-key");

    /// The seal: one SDK client, made at first use.
    #[derive(Debug)]
    pub struct AwsKmsSeal {
        spec: AwsKmsSpec,
        id: String,
        client: OnceCell<Client>,
    }

    impl AwsKmsSeal {
        pub(in crate::seal) fn new(spec: AwsKmsSpec) -> Self {
            let id = spec.id();
            Self {
                spec,
                id,
                client: OnceCell::new(),
            }
        }

        /// The SDK's client: the standard credential chain, the seal's
        /// region and endpoint, HTTPS on rustls with ring, bounded waits.
        async fn client(&self) -> &Client {
            self.client
                .get_or_init(|| async {
                    let http = aws_smithy_http_client::Builder::new()
                        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                        .build_https();
                    let mut loader = aws_config::defaults(BehaviorVersion::latest())
                        .region(Region::new(self.spec.region.clone()))
                        .http_client(http)
                        .retry_config(RetryConfig::standard().with_max_attempts(3))
                        .timeout_config(
                            TimeoutConfig::builder()
                                .connect_timeout(Duration::from_secs(3))
                                .operation_attempt_timeout(Duration::from_secs(10))
                                .operation_timeout(Duration::from_secs(30))
                                .build(),
                        );
                    if let Some(endpoint) = &self.spec.endpoint {
                        loader = loader.endpoint_url(endpoint);
                    }
                    Client::new(&loader.load().await)
                })
                .await
        }
    }

    /// KMS's answer to a call it refused.
    struct Refusal {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    }

    impl Refusal {
        /// `None` when KMS did not answer (or answered nonsense).
        fn of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<Self> {
            let SdkError::ServiceError(service) = err else {
                return None;
            };
            let body = String::from_utf8_lossy(service.raw().body().bytes().unwrap_or_default());
            // KMS's protocol names its errors in JSON; some front ends
            // (proxies, test servers) answer IAM's XML form instead.
            Some(Self {
                status: service.raw().status().as_u16(),
                code: service
                    .err()
                    .code()
                    .map(str::to_string)
                    .or_else(|| between(&body, "<Code>", "</Code>")),
                message: service
                    .err()
                    .message()
                    .map(str::to_string)
                    .or_else(|| between(&body, "<Message>", "</Message>")),
            })
        }

        fn denied(&self) -> bool {
            matches!(
                self.code.as_deref(),
                Some("AccessDeniedException" | "AccessDenied")
            )
        }

        /// The code in words.
        fn meaning(&self) -> &'static str {
            match self.code.as_deref().unwrap_or_default() {
                _ if self.denied() => "permission denied",
                "DisabledException" => "the key is disabled",
                "KMSInvalidStateException" => "the key is not usable in its state",
                "NotFoundException" => "the key is not found",
                "InvalidCiphertextException" => "not wrapped by this key",
                "IncorrectKeyException" => "wrapped under another key",
                "UnrecognizedClientException" | "InvalidClientTokenId" => {
                    "the credentials are not recognised"
                }
                "SignatureDoesNotMatch" | "InvalidSignatureException" => {
                    "the credentials' secret is wrong"
                }
                "ExpiredTokenException" => "the credentials have expired",
                "KMSInternalException" | "DependencyTimeoutException" => "KMS failed",
                _ => "refused",
            }
        }
    }

    /// KMS's refusal in words: what it means, KMS's code and message; or
    /// why KMS was not reached. Never the request (it may hold key bytes).
    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
        op: &str,
        err: &SdkError<E, HttpResponse>,
    ) -> SealError {
        let Some(refusal) = Refusal::of(err) else {
            let what = match err {
                SdkError::DispatchFailure(d) if d.is_timeout() => "timed out",
                SdkError::DispatchFailure(d) if d.is_io() => "unreachable",
                SdkError::TimeoutError(_) => "timed out",
                SdkError::ResponseError(_) => "bad answer",
                _ => "could not call KMS",
            };
            return SealError::new(format!("{op}: {what}: {}", causes(err)));
        };
        SealError::new(format!(
            "{op}: {} (HTTP {}{}){}",
            refusal.meaning(),
            refusal.status,
            refusal
                .code
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            refusal
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ))
    }

    /// An error and its sources, each said once: `dispatch failure: io
    /// error: …: Connection refused (os error 111)`.
    fn causes(err: &dyn std::error::Error) -> String {
        let mut said = vec![err.to_string()];
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !said.iter().any(|s| s.contains(&text)) {
                said.push(text);
            }
            source = cause.source();
        }
        said.join(": ")
    }

    /// The text between `open` and `close` in `body`, if any.
    fn between(body: &str, open: &str, close: &str) -> Option<String> {
        let start = body.find(open)? + open.len();
        let len = body[start..].find(close)?;
        Some(body[start..start + len].trim().to_string()).filter(|s| !s.is_empty())
    }

    #[async_trait::async_trait]
    impl Seal for AwsKmsSeal {
        fn id(&self) -> &str {
            &self.id
        }

        async fn wrap(&self, key: &SecretBytes) -> Result<Vec<u8>, SealError> {
            let out = self
                .client()
                .await
                .encrypt()
                .key_id(&self.spec.key)
                .plaintext(Blob::new(key.expose().to_vec()))
                .encryption_context(CONTEXT.0, CONTEXT.1)
                .send()
                .await
                .map_err(|e| failed("Encrypt", &e))?;
            out.ciphertext_blob
                .map(Blob::into_inner)
                .ok_or_else(|| SealError::new("Encrypt: the answer holds no ciphertext"))
        }

        async fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes, SealError> {
            let out = self
                .client()
                .await
                .decrypt()
                .key_id(&self.spec.key)
                .ciphertext_blob(Blob::new(wrapped.to_vec()))
                .encryption_context(CONTEXT.0, CONTEXT.1)
                .send()
                .await
                .map_err(|e| failed("Decrypt", &e))?;
            out.plaintext
                .map(|p| SecretBytes::new(p.into_inner()))
                .ok_or_else(|| SealError::new("Decrypt: the answer holds no plaintext"))
        }

        /// `DescribeKey`: the key must be enabled, symmetric and for
        /// encryption. A seal needs only `kms:Encrypt` and `kms:Decrypt`,
        /// so a refused `DescribeKey` is the least-privilege answer; IAM's
        /// policies themselves are not KMS's to show.
        async fn permissions(&self) -> Result<Option<String>, SealError> {
            let described = self
                .client()
                .await
                .describe_key()
                .key_id(&self.spec.key)
                .send()
                .await;
            let out = match described {
                Ok(out) => out,
                Err(err) if Refusal::of(&err).is_some_and(|r| r.denied()) => {
                    return Ok(Some(
                        "keyward may not DescribeKey (a seal needs only kms:Encrypt and \
                         kms:Decrypt); the IAM policy itself was not inspected"
                            .into(),
                    ));
                }
                Err(err) => return Err(failed("DescribeKey", &err)),
            };
            let Some(meta) = out.key_metadata else {
                return Err(SealError::new(
                    "DescribeKey: the answer holds no key metadata",
                ));
            };
            let state = meta
                .key_state
                .as_ref()
                .map(KeyState::as_str)
                .unwrap_or("unknown");
            let usage = meta
                .key_usage
                .as_ref()
                .map(KeyUsageType::as_str)
                .unwrap_or("unknown");
            if meta.key_state != Some(KeyState::Enabled) {
                return Err(SealError::new(format!(
                    "the key {} is {state}: keyward cannot start with this seal until it is \
                     enabled",
                    meta.arn.as_deref().unwrap_or(&self.spec.key)
                )));
            }
            if meta.key_usage != Some(KeyUsageType::EncryptDecrypt) {
                return Err(SealError::new(format!(
                    "the key's usage is {usage}, not ENCRYPT_DECRYPT"
                )));
            }
            Ok(Some(format!(
                "the key {} is {state}, for {usage}; keyward may also DescribeKey (a seal needs \
                 only kms:Encrypt and kms:Decrypt); the IAM policy itself was not inspected",
                meta.arn.as_deref().unwrap_or(&self.spec.key)
            )))
        }
    }
}
