//! `keyward token …`: named API tokens with a role and a scope.

use clap::Subcommand;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{Admin, Cli, CliError, Output, print_rows, seconds};
use crate::{
    config::ServeArgs,
    crypto::random,
    domain::{
        access::{Method, Role},
        audit::Action,
        clock::SystemClock,
        model::format_time,
    },
    service::{Caller, NewToken, Target},
    transport::grpc::{pb, token_pb},
};

/// `keyward token …`
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process; size is irrelevant
pub enum TokenCmd {
    /// Create a token; prints it once on stdout.
    Create(CreateArgs),
    /// List tokens (never the tokens themselves).
    List,
    /// Show one token (never the token itself).
    Get {
        /// Token name.
        name: String,
    },
    /// Revoke a token: every replica refuses it within 2 s.
    Revoke {
        /// Token name.
        name: String,
    },
}

/// `keyward token create`
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Its name: lowercase letters, digits and '-'.
    pub name: String,
    /// admin, operator, rotator, signer, secret-reader, exporter or auditor.
    #[arg(long)]
    pub role: String,
    /// Key sets a signer or exporter may use: a name, or a prefix ending
    /// in '*' (repeatable).
    #[arg(long = "keyset", value_name = "PATTERN")]
    pub keysets: Vec<String>,
    /// Clients a secret-reader may read (repeatable).
    #[arg(long = "client", value_name = "PATTERN")]
    pub clients: Vec<String>,
    /// Lifetime, e.g. 90d [default: never expires]
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,
    /// What the token is for.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Break glass: create it on the database directly (with the server's
    /// settings and master key, like `keyward master`), without a token,
    /// when no working admin token is left. Audited.
    #[arg(long)]
    pub local: bool,
    /// With --local: the database and keyring, as `keyward serve` takes them.
    #[command(flatten)]
    pub serve: ServeArgs,
}

fn time_or_none(t: i64) -> Value {
    if t == 0 {
        Value::Null
    } else {
        Value::String(format_time(t))
    }
}

fn token_json(t: &pb::Token) -> Value {
    json!({
        "name": t.name,
        "role": t.role,
        "keysets": t.keysets,
        "clients": t.clients,
        "description": t.description,
        "state": t.state,
        "created_at": format_time(t.created_at),
        "expires_at": time_or_none(t.expires_at),
        "revoked_at": time_or_none(t.revoked_at),
    })
}

const COLUMNS: [&str; 6] = ["name", "role", "keysets", "clients", "state", "expires_at"];

/// Runs a `keyward token` command.
pub(crate) async fn run(admin: &Admin, out: Output, cmd: &TokenCmd) -> Result<(), CliError> {
    let mut api = admin.access();
    match cmd {
        TokenCmd::Create(args) => {
            let mut created = api
                .create_token(pb::CreateTokenRequest {
                    name: args.name.clone(),
                    role: args.role.clone(),
                    keysets: args.keysets.clone(),
                    clients: args.clients.clone(),
                    expires_in_seconds: expires_in(args)?,
                    description: args.description.clone(),
                })
                .await?
                .into_inner();
            let info = created.info.take().unwrap_or_default();
            print_created(out, &info, std::mem::take(&mut created.token));
        }
        TokenCmd::List => {
            let tokens = super::every_page(|page_token| {
                let mut api = api.clone();
                async move {
                    let page = api
                        .list_tokens(pb::ListTokensRequest {
                            page_size: super::PAGE_SIZE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.tokens, page.next_page_token))
                }
            })
            .await?;
            print_rows(out, tokens.iter().map(token_json).collect(), &COLUMNS);
        }
        TokenCmd::Get { name } => {
            let token = api
                .get_token(pb::GetTokenRequest { name: name.clone() })
                .await?
                .into_inner();
            print_rows(out, vec![token_json(&token)], &COLUMNS);
        }
        TokenCmd::Revoke { name } => {
            let token = api
                .revoke_token(pb::RevokeTokenRequest { name: name.clone() })
                .await?
                .into_inner();
            print_rows(out, vec![token_json(&token)], &COLUMNS);
        }
    }
    Ok(())
}

fn expires_in(args: &CreateArgs) -> Result<Option<u64>, CliError> {
    args.expires_in
        .as_deref()
        .map(|d| seconds("expires_in", d))
        .transpose()
}

/// A new token, shown this once.
fn print_created(out: Output, info: &pb::Token, mut token: String) {
    match out {
        Output::Json => {
            let mut v = token_json(info);
            v["token"] = Value::String(std::mem::take(&mut token));
            println!("{v}");
        }
        Output::Table => {
            println!("{token}");
            eprintln!(
                "created token {:?} (role {}); it is shown only this once",
                info.name, info.role
            );
        }
    }
    zeroize::Zeroize::zeroize(&mut token);
}

/// `keyward token create --local`: the break-glass path when no working admin
/// token is left. It needs what the server needs (the database and the
/// master key), runs the call through the same pipeline as the server
/// (recorded in the audit log as a local command), and prints the token.
pub(crate) async fn create_local(cli: &Cli, args: &CreateArgs) -> Result<(), CliError> {
    let config = super::serve_config(cli, &args.serve)?;
    let app = crate::server::prepare_existing(config, Arc::new(SystemClock)).await?;
    let service = &app.service;
    let new = NewToken {
        name: args.name.clone(),
        role: Some(Role::parse(&args.role)?),
        keysets: args.keysets.clone(),
        clients: args.clients.clone(),
        expires_in: expires_in(args)?,
        description: args.description.clone(),
    };
    let caller = Caller::local("keyward token create (local)", random::request_id());
    let target = Target::Named(args.name.clone());
    let (info, token) = service
        .audited(&caller, Action::Call(Method::CreateToken), target, || {
            service.create_token(new)
        })
        .await?;
    service.flush_audit().await;
    tracing::warn!(token = %info.name, role = %info.role, "token created locally (break glass)");
    print_created(
        cli.output,
        &token_pb(info, service.now()),
        token.expose().to_string(),
    );
    Ok(())
}
