//! The `keyward` binary: parses the command line and hands off to the library.

use std::{process::ExitCode, sync::Arc};

use clap::Parser as _;
use keyward::{
    cli::{Cli, CliError, Command, LogFormat},
    config::ServeConfig,
    domain::clock::SystemClock,
    server,
};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: every request allocates (HTTP/2
/// frames, headers, protobuf messages, audit events), and glibc's malloc
/// spent a fifth of a core's time on it under load (see the README's
/// "Scaling with cores").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // A task woken by the running task runs next, in the worker's LIFO slot.
    // For gRPC that is the connection's task, woken by every call that
    // answers: it then wrote and sent each answer on its own. Without the
    // slot, the answers ready at once go out in one write: on one core, a
    // quarter to two thirds more gRPC calls a second (README, "Scaling with
    // cores").
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(
        cli.command,
        Command::Serve(_) | Command::Migrate(_) | Command::Agent(_)
    );
    let default_level = if serving { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }

    let result = match &cli.command {
        Command::Serve(args) => serve(&cli, args).await,
        Command::Migrate(args) => migrate(&cli, args).await,
        Command::Master(cmd) => keyward::cli::master::run(&cli, cmd).await,
        Command::Doctor(args) => keyward::cli::ops::doctor(&cli, args).await,
        Command::Backup(args) => keyward::cli::ops::backup(&cli, args).await,
        _ => keyward::cli::run_admin(&cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", err.message);
            ExitCode::from(u8::try_from(err.code).unwrap_or(1))
        }
    }
}

/// Start-up failures are not gRPC replies: print the message, and for an
/// internal error its cause too (the operator is the only audience here).
fn startup(err: keyward::Error) -> CliError {
    let message = match &err {
        keyward::Error::Internal(cause) => format!("{err}: {cause}"),
        _ => err.to_string(),
    };
    tracing::debug!(error = %message, "start-up failed");
    CliError { message, code: 1 }
}

fn config(cli: &Cli, args: &keyward::config::ServeArgs) -> Result<ServeConfig, CliError> {
    ServeConfig::resolve(
        cli.data_dir.clone(),
        args,
        std::env::var("KEYWARD_MASTER_KEY").ok(),
    )
    .map_err(startup)
}

async fn migrate(cli: &Cli, args: &keyward::config::ServeArgs) -> Result<(), CliError> {
    let config = config(cli, args)?;
    server::migrate_only(&config).await.map_err(startup)?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(cli: &Cli, args: &keyward::config::ServeArgs) -> Result<(), CliError> {
    let mut config = config(cli, args)?;
    config.check_plaintext().map_err(startup)?;
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError {
                message: format!("cannot listen on {addr}: {e}"),
                code: 1,
            })
    };
    let grpc = bind(config.grpc_addr).await?;
    let http = bind(config.http_addr).await?;
    let metrics = match config.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    // With port 0 the OS picks: record what it picked (the default issuer uses it).
    let local = |l: &tokio::net::TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    config.grpc_addr = local(&grpc, config.grpc_addr);
    config.http_addr = local(&http, config.http_addr);
    let app = server::prepare(config, Arc::new(SystemClock))
        .await
        .map_err(startup)?;
    let listeners = server::Listeners {
        grpc,
        http,
        metrics,
    };
    // Before the "keyward serving" line: a SIGTERM after it is a clean stop.
    let shutdown = keyward::cli::shutdown_signal()?;
    server::serve_on(app, listeners, shutdown)
        .await
        .map_err(startup)?;
    Ok(())
}
