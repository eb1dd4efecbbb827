//! The `keyward` command line: `serve`, `migrate`, and the admin commands, which
//! are gRPC clients of a running server.
//!
//! - `args`: every command and flag.
//! - `admin`: the connection and the admin token.
//! - this module: running a command (dispatch) and the CLI's errors.
//! - `print`: tables and JSON.
//! - `signals`: SIGINT and SIGTERM for `serve` and `agent`.
//! - `keysets`: key sets, keys, due rotations and signing.
//! - `clients`: OIDC clients and their secrets.
//! - `openmetadata`: the commands that speak OpenMetadata's formats.
//! - `tokens`: named API tokens.
//! - `audit`: listing and verifying the audit log.
//! - `events`: `watch` and webhooks.
//! - [`agent`]: `keyward agent`, which keeps token, secret and key files fresh.
//! - [`ops`]: `doctor` and `backup`, which look after the deployment itself;
//!   `fetch`: their HTTP(S) GET.

mod admin;
pub mod agent;
mod args;
mod audit;
mod clients;
mod events;
mod keysets;
pub mod master;
mod openmetadata;
pub mod ops;
mod print;
mod signals;
mod timeline;
mod tokens;

use crate::transport::grpc::code_name;
pub(crate) use admin::{Admin, read_stdin_secret};
pub use args::*;
pub use events::{EventSelection, WatchArgs, WebhookCmd};
pub(crate) use print::*;
pub use signals::shutdown_signal;

/// A CLI failure: the one line printed on stderr, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The line for stderr.
    pub message: String,
    /// The process exit code.
    pub code: i32,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().replace('\n', " ");
        Self {
            message: format!("{}: {message}", code_name(status.code())),
            code: 1,
        }
    }
}

impl From<crate::Error> for CliError {
    fn from(err: crate::Error) -> Self {
        tonic::Status::from(err).into()
    }
}

/// The settings `keyward serve` would run with, for the commands that work on
/// the database directly (`master`, `doctor`, `backup`).
pub(crate) fn serve_config(
    cli: &Cli,
    args: &crate::config::ServeArgs,
) -> crate::Result<crate::config::ServeConfig> {
    crate::config::ServeConfig::resolve(
        cli.data_dir.clone(),
        args,
        std::env::var("KEYWARD_MASTER_KEY").ok(),
    )
}

/// Every item of a paged listing: `fetch` gets a page token and returns one
/// page and the next token (empty after the last page).
pub(crate) async fn every_page<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), CliError>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        token = next;
    }
}

/// Items per page the CLI asks for: the most the server gives.
pub(crate) const PAGE_SIZE: u32 = 1000;

/// Runs an admin command; prints its result on stdout.
pub async fn run_admin(cli: &Cli) -> Result<(), CliError> {
    // Break glass: no token needed, the database and master key are.
    if let Command::Token(tokens::TokenCmd::Create(args)) = &cli.command
        && args.local
    {
        return tokens::create_local(cli, args).await;
    }
    if let Command::Agent(args) = &cli.command {
        return agent::run(cli, args).await;
    }
    let admin = Admin::connect(cli)?;
    let out = cli.output;
    match &cli.command {
        Command::Serve(_) | Command::Migrate(_) => Ok(()),
        Command::Agent(args) => agent::run(cli, args).await,
        Command::Master(cmd) => master::run(cli, cmd).await,
        Command::Doctor(args) => ops::doctor(cli, args).await,
        Command::Backup(args) => ops::backup(cli, args).await,
        Command::Keyset(cmd) => keysets::keyset(&admin, out, cmd).await,
        Command::Keys(cmd) => keysets::keys(&admin, out, cmd).await,
        Command::Rotate { keyset, dry_run } => {
            keysets::rotate(&admin, out, keyset.as_deref(), *dry_run).await
        }
        Command::Sign(args) => keysets::sign(&admin, out, args).await,
        Command::Client(cmd) => clients::run(&admin, out, cmd).await,
        Command::Token(cmd) => tokens::run(&admin, out, cmd).await,
        Command::Audit(cmd) => audit::run(&admin, out, cmd).await,
        Command::Watch(args) => events::watch(&admin, out, args).await,
        Command::Webhook(cmd) => events::webhook(&admin, out, cmd).await,
        Command::Export(cmd) => openmetadata::export(&admin, out, cmd).await,
        Command::Import(cmd) => openmetadata::import(&admin, out, cmd).await,
    }
}
