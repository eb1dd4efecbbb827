//! `keyward agent`: the command line of [`crate::agent`].

use std::{net::SocketAddr, path::PathBuf};

use super::{Cli, CliError, admin::dial};
use crate::{agent, domain::secret::SecretString};

/// `keyward agent`
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The agent's configuration file (TOML): the outputs to keep fresh.
    #[arg(long, env = "KEYWARD_AGENT_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Write every output once and exit: 0 if all were written (or are
    /// current), 1 otherwise. For an init container or a first run.
    #[arg(long)]
    pub once: bool,
    /// Serve /health and /metrics here (beats the file's health_listen).
    #[arg(long, env = "KEYWARD_AGENT_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(cli: &Cli, args: &AgentArgs) -> Result<(), CliError> {
    let settings = agent::Settings {
        dial: dial(cli),
        token: cli
            .token
            .as_ref()
            .filter(|t| !t.is_empty())
            .map(|t| SecretString::new(t.clone())),
        token_file: cli.token_file.clone(),
        config: args.config.clone(),
        once: args.once,
        health_listen: args.health_listen,
    };
    let all_ok = agent::run(settings, super::shutdown_signal()?)
        .await
        .map_err(|e| CliError {
            message: e.to_string(),
            code: 2,
        })?;
    if all_ok {
        Ok(())
    } else {
        Err(CliError {
            message: "some outputs were not written (see the log above)".into(),
            code: 1,
        })
    }
}
