//! The admin client's connection: the endpoint, the admin token (flag, file
//! or `<data-dir>/admin.token`) carried by an interceptor, and secrets read
//! from standard input.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use tonic::{
    Request,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use super::{Cli, CliError};
use crate::{
    config::DEFAULT_DATA_DIR,
    transport::grpc::pb::{
        access_client::AccessClient, audit_client::AuditClient, clients_client::ClientsClient,
        events_client::EventsClient, key_sets_client::KeySetsClient, master_client::MasterClient,
        webhooks_client::WebhooksClient,
    },
};

/// An authenticated connection to a running keyward.
pub(crate) struct Admin {
    channel: Channel,
    bearer: Bearer,
}

/// Adds the admin token to every call made through an [`Admin`] client.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry the admin token.
type Authed = InterceptedService<Channel, Bearer>;

/// A channel to `--endpoint` with the CLI's TLS settings; connects on first use.
pub(crate) fn channel(cli: &Cli) -> Result<Channel, CliError> {
    let mut endpoint = Endpoint::from_shared(cli.endpoint.clone())
        .map_err(|e| CliError::usage(format!("invalid --endpoint {:?}: {e}", cli.endpoint)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if cli.endpoint.starts_with("https://") {
        endpoint = endpoint
            .tls_config(client_tls(cli)?)
            .map_err(|e| CliError::usage(format!("TLS settings refused: {e}")))?;
    } else if cli.ca_cert.is_some() || cli.client_cert.is_some() {
        return Err(CliError::usage(
            "--ca-cert and --client-cert need an https:// --endpoint",
        ));
    }
    Ok(endpoint.connect_lazy())
}

impl Admin {
    pub(crate) fn connect(cli: &Cli) -> Result<Self, CliError> {
        let token = resolve_token(cli)?;
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            CliError::usage("the admin token holds characters not allowed in a header")
        })?;
        let channel = channel(cli)?;
        Ok(Self {
            channel,
            bearer: Bearer(bearer),
        })
    }

    pub(crate) fn keysets(&self) -> KeySetsClient<Authed> {
        KeySetsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn clients(&self) -> ClientsClient<Authed> {
        ClientsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn access(&self) -> AccessClient<Authed> {
        AccessClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn audit(&self) -> AuditClient<Authed> {
        AuditClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn master(&self) -> MasterClient<Authed> {
        MasterClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn events(&self) -> EventsClient<Authed> {
        EventsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn webhooks(&self) -> WebhooksClient<Authed> {
        WebhooksClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

/// The client side of TLS: the CA to trust (or the web PKI roots) and, for
/// mutual TLS, the client's certificate and key.
fn client_tls(cli: &Cli) -> Result<tonic::transport::ClientTlsConfig, CliError> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))
    };
    let mut tls = tonic::transport::ClientTlsConfig::new();
    tls = match &cli.ca_cert {
        Some(ca) => tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
            "CA certificate",
            ca,
        )?)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        let key = zeroize::Zeroizing::new(read("client key", key)?);
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read("client certificate", cert)?,
            key.as_slice(),
        ));
    }
    Ok(tls)
}

fn resolve_token(cli: &Cli) -> Result<String, CliError> {
    if let Some(token) = cli.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.trim().to_string());
    }
    let default_file = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join("admin.token");
    let file = match &cli.token_file {
        Some(file) => file.clone(),
        None if default_file.exists() => default_file,
        None => {
            return Err(CliError::usage(format!(
                "no admin token: pass --token, set KEYWARD_TOKEN, or --token-file (looked for {})",
                default_file.display()
            )));
        }
    };
    read_token_file(&file)
}

fn read_token_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| CliError::usage(format!("cannot read token file {}: {e}", path.display())))
}

pub(crate) fn read_stdin_secret() -> Result<String, CliError> {
    let mut secret = String::new();
    std::io::stdin()
        .read_to_string(&mut secret)
        .map_err(|e| CliError::usage(format!("cannot read the secret from stdin: {e}")))?;
    let trimmed = secret.trim_end_matches(['\n', '\r']).to_string();
    zeroize::Zeroize::zeroize(&mut secret);
    if trimmed.is_empty() {
        return Err(CliError::usage("the secret read from stdin is empty"));
    }
    Ok(trimmed)
}
