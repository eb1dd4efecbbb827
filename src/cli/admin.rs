//! The admin client's connection: the endpoint, the admin token (flag, file
//! or `<data-dir>/admin.token`) carried by an interceptor, and secrets read
//! from standard input.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::{Cli, CliError};
use crate::{
    config::DEFAULT_DATA_DIR,
    transport::grpc::{
        dial::{Bearer, Dial},
        pb::{
            access_client::AccessClient, audit_client::AuditClient, clients_client::ClientsClient,
            events_client::EventsClient, key_sets_client::KeySetsClient,
            master_client::MasterClient, webhooks_client::WebhooksClient,
        },
    },
};

/// An authenticated connection to a running keyward.
pub(crate) struct Admin {
    channel: Channel,
    bearer: Bearer,
}

/// A channel whose calls carry the admin token.
type Authed = InterceptedService<Channel, Bearer>;

/// The CLI's `--endpoint` and TLS flags.
pub(crate) fn dial(cli: &Cli) -> Dial {
    Dial {
        endpoint: cli.endpoint.clone(),
        ca_cert: cli.ca_cert.clone(),
        client_cert: cli.client_cert.clone(),
        client_key: cli.client_key.clone(),
    }
}

/// A channel to `--endpoint` with the CLI's TLS settings; connects on first use.
pub(crate) fn channel(cli: &Cli) -> Result<Channel, CliError> {
    dial(cli).channel().map_err(CliError::usage)
}

impl Admin {
    pub(crate) fn connect(cli: &Cli) -> Result<Self, CliError> {
        let token = resolve_token(cli)?;
        let bearer = Bearer::new(&token).map_err(CliError::usage)?;
        let channel = channel(cli)?;
        Ok(Self { channel, bearer })
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
