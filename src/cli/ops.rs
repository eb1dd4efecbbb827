//! Commands that look after a deployment itself rather than call its API:
//! `keyward doctor` and `keyward backup`.

// The doc comments below are also clap's `--help` text, written for a
// terminal: `<data-dir>`-style placeholders and bare URLs there are meant as they read.
#![allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]

use std::{path::PathBuf, time::Duration};

use clap::Args;
use serde_json::json;

use super::{Cli, CliError, Output};
use crate::{
    config::{ServeArgs, ServeConfig},
    domain::clock::{Clock as _, SystemClock},
    ops::doctor::{self, Check, Status},
};

/// How long each network check waits.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// `keyward doctor`
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// OpenMetadata's base URL (e.g. https://om.example.com): checks the
    /// JWKS it publishes at /api/v1/system/config/jwks
    #[arg(long, value_name = "URL", env = "KEYWARD_OPENMETADATA_URL")]
    pub openmetadata_url: Option<String>,
    /// Where keyward's HTTP listener answers [default: the issuer, or
    /// http://<http-addr>]
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// Skip the checks of the running server (gRPC at --endpoint, HTTP)
    #[arg(long)]
    pub offline: bool,
    /// The configuration and database, as `keyward serve` takes them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `keyward backup`
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The new file: never overwritten, created mode 0600.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The database, as `keyward serve` takes it.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Runs every check and prints one line each; fails (exit 1) when any check
/// failed.
pub async fn doctor(cli: &Cli, args: &DoctorArgs) -> Result<(), CliError> {
    let mut checks = Vec::new();
    let config = match super::serve_config(cli, &args.serve) {
        Ok(config) => {
            checks.push(Check::ok(
                "configuration",
                format!("data dir {}", config.data_dir.display()),
            ));
            Some(config)
        }
        Err(err) => {
            checks.push(Check::fail(
                "configuration",
                err.to_string(),
                "fix the flag, variable or TOML setting it names",
            ));
            None
        }
    };
    let mut store = None;
    if let Some(config) = &config {
        let (local, opened) = doctor::local_checks(config, SystemClock.now()).await;
        checks.extend(local);
        store = opened;
        if !args.offline {
            checks.push(grpc_check(cli).await);
            checks.push(http_check(cli, config, args.http_url.as_deref()).await);
        }
    }
    if let Some(url) = &args.openmetadata_url {
        let jwks_url = format!("{}/api/v1/system/config/jwks", url.trim_end_matches('/'));
        match crate::transport::client::get(&jwks_url, cli.ca_cert.as_deref(), PROBE_TIMEOUT).await
        {
            Ok((200, body)) => match serde_json::from_slice(&body) {
                Ok(jwks) => checks
                    .extend(doctor::openmetadata_checks(&jwks_url, &jwks, store.as_deref()).await),
                Err(e) => checks.push(Check::fail(
                    "openmetadata",
                    format!("{jwks_url} is not JSON: {e}"),
                    "check --openmetadata-url: it is OpenMetadata's base URL",
                )),
            },
            Ok((status, _)) => checks.push(Check::fail(
                "openmetadata",
                format!("{jwks_url} answered {status}"),
                "check --openmetadata-url: it is OpenMetadata's base URL",
            )),
            Err(e) => checks.push(Check::fail(
                "openmetadata",
                format!("{jwks_url}: {e}"),
                "check --openmetadata-url and that OpenMetadata is up",
            )),
        }
    }
    print_report(cli.output, &checks);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(CliError {
            message: format!("{failed} check(s) failed"),
            code: 1,
        })
    }
}

async fn grpc_check(cli: &Cli) -> Check {
    let name = "server: gRPC";
    let channel = match super::admin::channel(cli) {
        Ok(channel) => channel,
        Err(err) => return Check::fail(name, err.message, "check --endpoint"),
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let asked = tokio::time::timeout(
        PROBE_TIMEOUT,
        health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    match asked {
        Ok(Ok(reply)) if reply.get_ref().status == 1 => {
            Check::ok(name, format!("{} is serving", cli.endpoint))
        }
        Ok(Ok(reply)) => Check::fail(
            name,
            format!("{} reports status {}", cli.endpoint, reply.get_ref().status),
            "read the server's log",
        ),
        Ok(Err(status)) => Check::fail(
            name,
            format!("{}: {}", cli.endpoint, status.message()),
            "is keyward running there? check --endpoint (KEYWARD_ENDPOINT) and its TLS flags",
        ),
        Err(_) => Check::fail(
            name,
            format!(
                "{}: no answer within {}s",
                cli.endpoint,
                PROBE_TIMEOUT.as_secs()
            ),
            "is keyward running there? check --endpoint (KEYWARD_ENDPOINT)",
        ),
    }
}

async fn http_check(cli: &Cli, config: &ServeConfig, http_url: Option<&str>) -> Check {
    let name = "server: HTTP";
    let base = match (http_url, &config.issuer) {
        (Some(url), _) => url.trim_end_matches('/').to_string(),
        (None, Some(issuer)) => issuer.trim_end_matches('/').to_string(),
        (None, None) => {
            let mut addr = config.http_addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let scheme = if config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{addr}")
        }
    };
    let url = format!("{base}/readyz");
    match crate::transport::client::get(&url, cli.ca_cert.as_deref(), PROBE_TIMEOUT).await {
        Ok((200, _)) => Check::ok(name, format!("{url} is ready")),
        Ok((status, body)) => Check::fail(
            name,
            format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
            "read the server's log; 503 means it cannot reach its database",
        ),
        Err(e) => Check::fail(
            name,
            format!("{url}: {e}"),
            "is keyward running? give --http-url where its HTTP listener answers",
        ),
    }
}

fn print_report(out: Output, checks: &[Check]) {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "checks": checks,
                "ok": count(Status::Ok),
                "warn": count(Status::Warn),
                "fail": count(Status::Fail),
            })
        ),
        Output::Table => {
            let width = checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
            for c in checks {
                println!(
                    "{:<4}  {:<width$}  {}",
                    c.status.as_str(),
                    c.check,
                    c.detail
                );
                if let Some(fix) = &c.fix {
                    println!("{:<4}  {:<width$}  fix: {fix}", "", "");
                }
            }
            println!(
                "{} ok, {} warn, {} fail",
                count(Status::Ok),
                count(Status::Warn),
                count(Status::Fail)
            );
        }
    }
}

/// `keyward backup --out FILE`.
pub async fn backup(cli: &Cli, args: &BackupArgs) -> Result<(), CliError> {
    let config = super::serve_config(cli, &args.serve)?;
    let done = crate::server::backup(&config, &args.out)
        .await
        .map_err(|err| match err {
            // Its own words (the pg_dump command spans lines).
            crate::Error::FailedPrecondition(message) | crate::Error::AlreadyExists(message) => {
                CliError { message, code: 1 }
            }
            other => other.into(),
        })?;
    let key_note = if done.key_checked {
        "the configured master key opens it"
    } else {
        "no master key is configured here: keep the key with this id with the backup"
    };
    match cli.output {
        Output::Json => println!(
            "{}",
            json!({
                "path": done.path,
                "bytes": done.bytes,
                "master_key_id": done.master_key_id,
                "master_key_checked": done.key_checked,
            })
        ),
        Output::Table => println!(
            "wrote {} ({} bytes, mode 0600); restoring it needs master key {} ({key_note})",
            done.path.display(),
            done.bytes,
            done.master_key_id
        ),
    }
    Ok(())
}
