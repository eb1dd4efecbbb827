//! `keyward token …`: named API tokens with a role and a scope.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Admin, CliError, Output, print_rows, seconds};
use crate::{domain::model::format_time, transport::grpc::pb};

/// `keyward token …`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; prints it once on stdout.
    Create {
        /// Its name: lowercase letters, digits and '-'.
        name: String,
        /// admin, operator, rotator, signer, secret-reader, exporter or auditor.
        #[arg(long)]
        role: String,
        /// Key sets a signer or exporter may use: a name, or a prefix ending
        /// in '*' (repeatable).
        #[arg(long = "keyset", value_name = "PATTERN")]
        keysets: Vec<String>,
        /// Clients a secret-reader may read (repeatable).
        #[arg(long = "client", value_name = "PATTERN")]
        clients: Vec<String>,
        /// Lifetime, e.g. 90d [default: never expires]
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
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
        TokenCmd::Create {
            name,
            role,
            keysets,
            clients,
            expires_in,
            description,
        } => {
            let mut created = api
                .create_token(pb::CreateTokenRequest {
                    name: name.clone(),
                    role: role.clone(),
                    keysets: keysets.clone(),
                    clients: clients.clone(),
                    expires_in_seconds: expires_in
                        .as_deref()
                        .map(|d| seconds("expires_in", d))
                        .transpose()?,
                    description: description.clone(),
                })
                .await?
                .into_inner();
            let info = created.info.take().unwrap_or_default();
            match out {
                Output::Json => {
                    let mut v = token_json(&info);
                    v["token"] = Value::String(std::mem::take(&mut created.token));
                    println!("{v}");
                }
                Output::Table => {
                    println!("{}", created.token);
                    eprintln!(
                        "created token {:?} (role {}); it is shown only this once",
                        info.name, info.role
                    );
                }
            }
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
