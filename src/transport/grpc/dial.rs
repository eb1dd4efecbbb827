//! The client side of keyward's gRPC: a channel to an endpoint with the
//! caller's TLS settings, and the interceptor that carries its API token.
//! The CLI's admin commands and `keyward agent` both dial through here.

use std::path::{Path, PathBuf};

use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    service::Interceptor,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

/// Where keyward is and what to trust there.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// With `https://`: PEM CA certificates to trust (else the web PKI roots).
    pub ca_cert: Option<PathBuf>,
    /// With `https://`: a PEM client certificate for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Dial {
    /// A channel that connects on first use (and reconnects after a failure).
    /// Fails, with a line for a person, when the settings cannot work.
    pub fn channel(&self) -> Result<Channel, String> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| format!("invalid --endpoint {:?}: {e}", self.endpoint))?
            .connect_timeout(std::time::Duration::from_secs(5))
            // A stream (Watch) learns of a dead peer within a minute.
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if self.endpoint.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls()?)
                .map_err(|e| format!("TLS settings refused: {e}"))?;
        } else if self.ca_cert.is_some() || self.client_cert.is_some() {
            return Err("--ca-cert and --client-cert need an https:// --endpoint".into());
        }
        Ok(endpoint.connect_lazy())
    }

    /// The CA to trust (or the web PKI roots) and, for mutual TLS, the
    /// client's certificate and key.
    fn tls(&self) -> Result<ClientTlsConfig, String> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_cert {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
            None => tls.with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let key = zeroize::Zeroizing::new(read("client key", key)?);
            tls = tls.identity(Identity::from_pem(
                read("client certificate", cert)?,
                key.as_slice(),
            ));
        }
        Ok(tls)
    }
}

/// Adds `authorization: Bearer <token>` to every call made through it.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// The header for `token`; fails if the token cannot be a header value.
    pub fn new(token: &str) -> Result<Self, String> {
        format!("Bearer {}", token.trim())
            .parse()
            .map(Self)
            .map_err(|_| "the API token holds characters not allowed in a header".into())
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
