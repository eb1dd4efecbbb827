//! The `keyward` command line: `serve`, `migrate`, and the admin commands, which
//! are gRPC clients of a running server.
//!
//! - [`args`]: every command and flag.
//! - `admin`: the connection and the admin token.
//! - this module: running a command (dispatch) and the CLI's errors.
//! - `print`: tables and JSON.
//! - `openmetadata`: the commands that speak OpenMetadata's formats.
//! - `tokens`: named API tokens.
//! - `audit`: listing and verifying the audit log.
//! - [`ops`]: `doctor` and `backup`, which look after the deployment itself;
//!   `fetch`: their HTTP(S) GET.

mod admin;
mod args;
mod audit;
mod fetch;
pub mod master;
mod openmetadata;
pub mod ops;
mod print;
mod timeline;
mod tokens;

use serde_json::json;

use crate::{
    domain::model::format_time,
    transport::grpc::{code_name, pb},
};
pub(crate) use admin::{Admin, read_stdin_secret};
pub use args::*;
pub(crate) use print::*;

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

/// Every key of `keyset`, page by page.
async fn all_keys(admin: &Admin, keyset: &str) -> Result<Vec<pb::Key>, CliError> {
    every_page(|page_token| {
        let mut api = admin.keysets();
        async move {
            let page = api
                .list_keys(pb::ListKeysRequest {
                    keyset: keyset.to_string(),
                    page_size: PAGE_SIZE,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.keys, page.next_page_token))
        }
    })
    .await
}

/// Items per page the CLI asks for: the most the server gives.
pub(crate) const PAGE_SIZE: u32 = 1000;

/// Runs an admin command; prints its result on stdout.
pub async fn run_admin(cli: &Cli) -> Result<(), CliError> {
    let admin = Admin::connect(cli)?;
    let out = cli.output;
    match &cli.command {
        Command::Serve(_) | Command::Migrate(_) => Ok(()),
        Command::Master(cmd) => master::run(cli, cmd).await,
        Command::Doctor(args) => ops::doctor(cli, args).await,
        Command::Backup(args) => ops::backup(cli, args).await,
        Command::Keyset(cmd) => keyset(&admin, out, cmd).await,
        Command::Keys(KeysCmd::List { keyset }) => {
            let keys = all_keys(&admin, keyset).await?;
            print_keys(out, &keys);
            Ok(())
        }
        Command::Keys(KeysCmd::Timeline { keyset, days }) => {
            let set = admin
                .keysets()
                .get_key_set(pb::GetKeySetRequest {
                    name: keyset.clone(),
                })
                .await?
                .into_inner();
            let keys = all_keys(&admin, keyset).await?;
            let now = crate::domain::clock::Clock::now(&crate::domain::clock::SystemClock);
            let drawn = timeline::build(&set, &keys, now, *days);
            match out {
                Output::Json => println!("{}", json!(drawn)),
                Output::Table => print!("{}", timeline::render(&drawn)),
            }
            Ok(())
        }
        Command::Keys(KeysCmd::Revoke { kid }) => {
            let r = admin
                .keysets()
                .revoke_key(pb::RevokeKeyRequest { kid: kid.clone() })
                .await?
                .into_inner();
            print_transition(out, &r.events, &r.warnings, &r.keys);
            Ok(())
        }
        Command::Rotate { keyset, dry_run } => {
            let events = admin
                .keysets()
                .rotate_due(pb::RotateDueRequest {
                    keyset: keyset.clone(),
                    dry_run: *dry_run,
                })
                .await?
                .into_inner()
                .events;
            if out == Output::Table && events.is_empty() {
                println!("nothing due");
            } else {
                print_events(out, &events, *dry_run);
            }
            Ok(())
        }
        Command::Sign {
            keyset,
            claims,
            ttl,
            profile,
            subject,
            email,
            force,
            out: out_file,
        } => {
            let signed = admin
                .keysets()
                .sign_jwt(pb::SignJwtRequest {
                    keyset: keyset.clone(),
                    claims_json: claims.clone(),
                    ttl_seconds: Some(seconds("ttl", ttl)?),
                    profile: profile.clone().unwrap_or_default(),
                    subject: subject.clone(),
                    email: email.clone(),
                    allow_identity_mismatch: *force,
                })
                .await?
                .into_inner();
            let for_om = profile.as_deref() == Some("openmetadata");
            if let Some(path) = out_file {
                crate::files::write_private_file(path, format!("{}\n", signed.jwt).as_bytes())?;
                eprintln!(
                    "wrote a token (kid {}, expires {}) to {}",
                    signed.kid,
                    format_time(signed.expires_at),
                    path.display()
                );
                return Ok(());
            }
            match out {
                Output::Table => {
                    println!("{}", signed.jwt);
                    if for_om {
                        // stderr: stdout stays the bare token for pipes.
                        eprintln!(
                            "expires {} (kid {}); openmetadata-ingestion reads a token once per run, so a run longer than its life fails",
                            format_time(signed.expires_at),
                            signed.kid
                        );
                    }
                }
                Output::Json => println!(
                    "{}",
                    json!({ "jwt": signed.jwt, "kid": signed.kid, "expires_at": format_time(signed.expires_at) })
                ),
            }
            Ok(())
        }
        Command::Client(cmd) => client(&admin, out, cmd).await,
        Command::Token(cmd) => tokens::run(&admin, out, cmd).await,
        Command::Audit(cmd) => audit::run(&admin, out, cmd).await,
        Command::Export(cmd) => openmetadata::export(&admin, out, cmd).await,
        Command::Import(cmd) => openmetadata::import(&admin, out, cmd).await,
    }
}

async fn keyset(admin: &Admin, out: Output, cmd: &KeysetCmd) -> Result<(), CliError> {
    let mut api = admin.keysets();
    match cmd {
        KeysetCmd::Create {
            name,
            alg,
            rsa_bits,
            policy,
        } => {
            let set = api
                .create_key_set(pb::CreateKeySetRequest {
                    name: name.clone(),
                    algorithm: alg.clone(),
                    rsa_bits: rsa_bits.unwrap_or(0),
                    policy: Some(policy.to_pb()?),
                })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::Update { name, policy } => {
            let set = api
                .update_key_set(pb::UpdateKeySetRequest {
                    name: name.clone(),
                    policy: Some(policy.to_pb()?),
                })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::List => {
            let sets = every_page(|page_token| {
                let mut api = api.clone();
                async move {
                    let page = api
                        .list_key_sets(pb::ListKeySetsRequest {
                            page_size: PAGE_SIZE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.key_sets, page.next_page_token))
                }
            })
            .await?;
            print_keysets(out, &sets);
        }
        KeysetCmd::Get { name } => {
            let set = api
                .get_key_set(pb::GetKeySetRequest { name: name.clone() })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::Delete { name } => {
            api.delete_key_set(pb::DeleteKeySetRequest { name: name.clone() })
                .await?;
            print_done(out, &format!("deleted key set {name}"));
        }
        KeysetCmd::Rotate { name } => {
            let r = api
                .rotate_key_set(pb::RotateKeySetRequest { name: name.clone() })
                .await?
                .into_inner();
            print_transition(out, &r.events, &r.warnings, &r.keys);
        }
    }
    Ok(())
}

async fn client(admin: &Admin, out: Output, cmd: &ClientCmd) -> Result<(), CliError> {
    let mut api = admin.clients();
    match cmd {
        ClientCmd::Put {
            id,
            secret_stdin,
            display_name,
            discovery_uri,
            callback_url,
            scopes,
            auth_method,
            labels,
            token_keyset,
            token_ttl,
            audience,
            allowed_scopes,
            token_subject,
            token_email,
        } => {
            let labels = if labels.is_empty() {
                None
            } else {
                let mut values = std::collections::HashMap::new();
                for label in labels {
                    let (k, v) = label.split_once('=').ok_or_else(|| {
                        CliError::usage(format!("--label {label:?}: write it as KEY=VALUE"))
                    })?;
                    values.insert(k.to_string(), v.to_string());
                }
                Some(pb::Labels { values })
            };
            let secret = if *secret_stdin {
                Some(read_stdin_secret()?)
            } else {
                None
            };
            let mut r = api
                .put_client(pb::PutClientRequest {
                    id: id.clone(),
                    display_name: display_name.clone(),
                    discovery_uri: discovery_uri.clone(),
                    callback_url: callback_url.clone(),
                    scopes: (!scopes.is_empty()).then(|| pb::StringList {
                        values: scopes.clone(),
                    }),
                    auth_method: auth_method.clone(),
                    labels,
                    secret,
                    token_keyset: token_keyset.clone(),
                    token_ttl_seconds: token_ttl
                        .as_deref()
                        .map(|t| seconds("token_ttl", t))
                        .transpose()?,
                    audience: audience.clone(),
                    allowed_scopes: (!allowed_scopes.is_empty()).then(|| pb::StringList {
                        values: allowed_scopes.clone(),
                    }),
                    token_subject: token_subject.clone(),
                    token_email: token_email.clone(),
                })
                .await?
                .into_inner();
            let client = r.client.take().unwrap_or_default();
            match out {
                Output::Json => {
                    let mut v = client_json(&client);
                    v["created"] = r.created.into();
                    if !r.generated_secret.is_empty() {
                        v["generated_secret"] = std::mem::take(&mut r.generated_secret).into();
                    }
                    println!("{v}");
                }
                Output::Table => {
                    print_clients(out, &[client]);
                    if !r.generated_secret.is_empty() {
                        eprintln!(
                            "generated secret (shown once; `keyward client secret {id}` reads it back):"
                        );
                        println!("{}", r.generated_secret);
                    }
                }
            }
        }
        ClientCmd::Get { id } => {
            let c = api
                .get_client(pb::GetClientRequest { id: id.clone() })
                .await?
                .into_inner();
            print_clients(out, &[c]);
        }
        ClientCmd::Secret { id, version } => {
            let s = api
                .get_client_secret(pb::GetClientSecretRequest {
                    id: id.clone(),
                    version: *version,
                })
                .await?
                .into_inner();
            match out {
                Output::Table => println!("{}", s.secret),
                Output::Json => println!(
                    "{}",
                    json!({ "secret": s.secret, "version": s.version, "valid_until": format_time(s.valid_until) })
                ),
            }
        }
        ClientCmd::List => {
            let clients = every_page(|page_token| {
                let mut api = api.clone();
                async move {
                    let page = api
                        .list_clients(pb::ListClientsRequest {
                            page_size: PAGE_SIZE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.clients, page.next_page_token))
                }
            })
            .await?;
            print_clients(out, &clients);
        }
        ClientCmd::Rotate {
            id,
            grace,
            secret_stdin,
        } => {
            let secret = if *secret_stdin {
                Some(read_stdin_secret()?)
            } else {
                None
            };
            let mut r = api
                .rotate_client_secret(pb::RotateClientSecretRequest {
                    id: id.clone(),
                    grace_seconds: Some(seconds("grace", grace)?),
                    secret,
                })
                .await?
                .into_inner();
            match out {
                Output::Json => {
                    let mut v = json!({ "id": id, "version": r.version, "previous_valid_until": format_time(r.previous_valid_until) });
                    if !r.generated_secret.is_empty() {
                        v["generated_secret"] = std::mem::take(&mut r.generated_secret).into();
                    }
                    println!("{v}");
                }
                Output::Table => {
                    eprintln!(
                        "client {id}: secret version {} is current; the previous one verifies until {}",
                        r.version,
                        format_time(r.previous_valid_until)
                    );
                    if !r.generated_secret.is_empty() {
                        println!("{}", r.generated_secret);
                    }
                }
            }
        }
        ClientCmd::Env(cmd) => return openmetadata::client_env(admin, out, cmd).await,
        ClientCmd::Delete { id } => {
            api.delete_client(pb::DeleteClientRequest { id: id.clone() })
                .await?;
            print_done(out, &format!("deleted client {id}"));
        }
        ClientCmd::RevokeSecret { id, version } => {
            let r = api
                .revoke_client_secret(pb::RevokeClientSecretRequest {
                    id: id.clone(),
                    version: *version,
                })
                .await?
                .into_inner();
            print_done(
                out,
                &format!(
                    "revoked secret version {} of client {id}; version {} stays current",
                    r.version, r.current_version
                ),
            );
        }
        ClientCmd::Verify { id, .. } => {
            let secret = read_stdin_secret()?;
            let r = api
                .verify_client_secret(pb::VerifyClientSecretRequest {
                    id: id.clone(),
                    secret,
                })
                .await?
                .into_inner();
            match out {
                Output::Json => println!("{}", json!({ "valid": r.valid, "version": r.version })),
                Output::Table if r.valid => println!("valid (version {})", r.version),
                Output::Table => println!("invalid"),
            }
            if !r.valid {
                return Err(CliError {
                    message: format!("secret for client {id} is not valid"),
                    code: 1,
                });
            }
        }
    }
    Ok(())
}
