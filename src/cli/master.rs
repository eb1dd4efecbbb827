//! `keyward master …`: reseal every stored value under the current master key,
//! and see what each master key still seals. Both run on the database directly
//! (with the server's settings, like `keyward migrate`) or, with `--remote`,
//! through a running replica's `keyward.v1.Master` service.

// The doc comments below are also clap's `--help` text, written for a
// terminal: bare URLs there are meant as they read.
#![allow(rustdoc::bare_urls)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Admin, Cli, CliError, Output, print_rows, serve_config as config};
use crate::{
    config::ServeArgs,
    crypto::random,
    domain::{access::Method, audit::Action, clock::SystemClock},
    server,
    service::{
        Caller, Target,
        master::{DEFAULT_REWRAP_BATCH, RewrapProgress},
    },
    transport::grpc::{master_status_pb, pb},
};

/// `keyward master …`
#[derive(Subcommand, Debug)]
pub enum MasterCmd {
    /// Seal every stored value again under the current master key
    /// (--master-key-file), opening older ones with --previous-master-key-file.
    /// Safe while replicas serve; run it again if it was interrupted.
    Rewrap {
        /// Values resealed per transaction.
        #[arg(long, default_value_t = DEFAULT_REWRAP_BATCH as u32,
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
        /// Wait this long between transactions, to spare a busy database (e.g. 10ms).
        #[arg(long, value_name = "DURATION", default_value = "0s")]
        pause: String,
        /// Ask the running keyward at --endpoint to do it (keyward.v1.Master/Rewrap).
        #[arg(long)]
        remote: bool,
        /// The database and keyring, as `keyward serve` takes them.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Delete a seal's wraps once it is removed from --seal on every replica.
    /// Refused while a master key that is current or still seals values has
    /// no wrap by another seal.
    ForgetSeal {
        /// The seal's id, as `keyward master status` lists it
        /// (e.g. transit:https://bao.example:8200?mount=transit&key=keyward).
        seal: String,
        /// The database and keyring, as `keyward serve` takes them.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// How many stored values each master key seals, which keys may leave
    /// the keyring, and which seals wrap them.
    Status {
        /// Ask the running keyward at --endpoint (keyward.v1.Master/GetMasterStatus).
        #[arg(long)]
        remote: bool,
        /// The database and keyring, as `keyward serve` takes them.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Runs a `keyward master` command.
pub async fn run(cli: &Cli, cmd: &MasterCmd) -> Result<(), CliError> {
    match cmd {
        MasterCmd::Status {
            remote: true,
            serve: _,
        } => {
            let status = Admin::connect(cli)?
                .master()
                .get_master_status(pb::GetMasterStatusRequest {})
                .await?
                .into_inner();
            print_status(cli.output, &status);
            Ok(())
        }
        MasterCmd::Status {
            remote: false,
            serve,
        } => {
            let status = server::master_status(&config(cli, serve)?).await?;
            print_status(cli.output, &master_status_pb(status));
            Ok(())
        }
        MasterCmd::ForgetSeal { seal, serve } => {
            let app = open(cli, serve).await?;
            let caller = Caller::local("keyward master forget-seal (local)", random::request_id());
            let service = &app.service;
            let gone = service
                .audited(
                    &caller,
                    Action::ForgetSeal,
                    Target::Named(seal.clone()),
                    || service.forget_seal(seal),
                )
                .await?;
            super::print::print_done(cli.output, &format!("deleted {gone} wrap(s) by {seal}"));
            Ok(())
        }
        MasterCmd::Rewrap {
            batch_size,
            pause,
            remote,
            serve,
        } => {
            let pause = crate::domain::model::parse_duration("pause", pause)?;
            if *remote {
                rewrap_remote(cli, *batch_size, pause).await
            } else {
                rewrap_local(cli, serve, *batch_size as usize, pause).await
            }
        }
    }
}

/// The service on the configured database, which must already be set up.
async fn open(cli: &Cli, args: &ServeArgs) -> Result<server::App, CliError> {
    Ok(server::prepare_existing(config(cli, args)?, Arc::new(SystemClock)).await?)
}

async fn rewrap_local(
    cli: &Cli,
    args: &ServeArgs,
    batch: usize,
    pause: Duration,
) -> Result<(), CliError> {
    let app = open(cli, args).await?;
    let mut shown = Progress::default();
    // A local rewrap has no token: the audit log records it by its command.
    let caller = Caller::local("keyward master rewrap (local)", random::request_id());
    let service = &app.service;
    let mut progress = |p: RewrapProgress| shown.show(p.table.as_str(), p.resealed, p.total);
    let outcome = service
        .audited(&caller, Action::Call(Method::Rewrap), Target::None, || {
            service.rewrap(batch, pause, &mut progress)
        })
        .await?;
    finish(
        cli.output,
        &pb::RewrapProgress {
            resealed: outcome.resealed,
            total: outcome.resealed,
            done: true,
            skipped: outcome.skipped,
            status: Some(master_status_pb(outcome.status)),
            ..Default::default()
        },
    )
}

async fn rewrap_remote(cli: &Cli, batch_size: u32, pause: Duration) -> Result<(), CliError> {
    let mut stream = Admin::connect(cli)?
        .master()
        .rewrap(pb::RewrapRequest {
            batch_size,
            pause_millis: u32::try_from(pause.as_millis()).unwrap_or(u32::MAX),
        })
        .await?
        .into_inner();
    let mut shown = Progress::default();
    while let Some(message) = stream.message().await? {
        if message.done {
            return finish(cli.output, &message);
        }
        shown.show(&message.table, message.resealed, message.total);
    }
    Err(CliError {
        message: "the server ended the rewrap without a result; run it again to finish".into(),
        code: 1,
    })
}

/// Progress lines on stderr, at most one a second.
#[derive(Default)]
struct Progress {
    last: Option<Instant>,
}

impl Progress {
    fn show(&mut self, table: &str, resealed: u64, total: u64) {
        if self.last.is_some_and(|at| at.elapsed().as_secs() < 1) {
            return;
        }
        self.last = Some(Instant::now());
        let percent = (resealed * 100).checked_div(total).unwrap_or(100);
        eprintln!("rewrap: {resealed}/{total} values resealed ({percent}%), now in {table}");
    }
}

/// The rewrap's result; an error when old keys still seal values.
fn finish(out: Output, done: &pb::RewrapProgress) -> Result<(), CliError> {
    let status = done.status.clone().unwrap_or_default();
    let left: i64 = status
        .keys
        .iter()
        .filter(|k| !k.current)
        .map(|k| k.keys + k.client_secrets + k.meta)
        .sum();
    match out {
        Output::Json => println!(
            "{}",
            json!({
                "resealed": done.resealed,
                "skipped": done.skipped,
                "current": status.current,
                "keys": status.keys.iter().map(key_use_json).collect::<Vec<_>>(),
            })
        ),
        Output::Table => {
            println!(
                "resealed {} values under master key {} ({} changed meanwhile and were left to the write that won)",
                done.resealed, status.current, done.skipped
            );
            print_status(out, &status);
        }
    }
    if left > 0 {
        return Err(CliError {
            message: format!(
                "{left} values are still sealed under older keys: a replica may still seal with an old key as \
                 current; restart every replica with the new --master-key-file and run the rewrap again"
            ),
            code: 1,
        });
    }
    Ok(())
}

fn key_use_json(k: &pb::MasterKeyUse) -> Value {
    let advice = if k.current {
        "current: seals new writes"
    } else if !k.held {
        "NOT IN THE KEYRING: add it with --previous-master-key-file"
    } else if k.removable {
        "may be removed from the keyring"
    } else {
        "keep: run `keyward master rewrap`"
    };
    json!({
        "master_key_id": k.master_key_id,
        "held": k.held,
        "current": k.current,
        "keys": k.keys,
        "client_secrets": k.client_secrets,
        "meta": k.meta,
        "removable": k.removable,
        "advice": advice,
    })
}

/// The keys as rows and, when seals wrap any or are configured, the seals:
/// what each wraps and whether it answered. As JSON: one object,
/// `{"current", "keys": [...], "seals": [...]}`.
fn print_status(out: Output, status: &pb::MasterStatus) {
    let keys: Vec<Value> = status
        .keys
        .iter()
        .map(|k| {
            let mut row = key_use_json(k);
            row["wrapped_by"] = status
                .seals
                .iter()
                .filter(|s| s.wraps.contains(&k.master_key_id))
                .map(|s| Value::String(s.seal.clone()))
                .collect();
            row
        })
        .collect();
    let seals: Vec<Value> = status.seals.iter().map(seal_json).collect();
    if out == Output::Json {
        println!(
            "{}",
            json!({ "current": status.current, "keys": keys, "seals": seals })
        );
        return;
    }
    print_rows(
        out,
        keys,
        &["master_key_id", "keys", "client_secrets", "meta", "advice"],
    );
    if !seals.is_empty() {
        println!();
        print_rows(out, seals, &["seal", "wraps", "state"]);
    }
}

fn seal_json(s: &pb::SealStatus) -> Value {
    let state = match (s.configured, s.asked, s.answered) {
        (false, _, _) => {
            "not configured here: `keyward master forget-seal` once no key needs it".to_string()
        }
        (true, false, _) => "configured, not asked".to_string(),
        (true, true, true) => "answered".to_string(),
        (true, true, false) => format!("DID NOT ANSWER: {}", s.error),
    };
    json!({
        "seal": s.seal,
        "configured": s.configured,
        "wraps": s.wraps,
        "asked": s.asked,
        "answered": s.answered,
        "error": s.error,
        "state": state,
    })
}
