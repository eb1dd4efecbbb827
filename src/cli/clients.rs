//! `keyward client …`: OIDC clients and their secrets, over
//! `keyward.v1.Clients`.

use serde_json::json;

use super::{
    Admin, CliError, ClientCmd, Output, PAGE_SIZE, PutArgs, client_json, every_page, openmetadata,
    print_clients, print_done, read_stdin_secret, seconds,
};
use crate::{domain::model::format_time, transport::grpc::pb};

/// Runs a `keyward client` command.
pub(super) async fn run(admin: &Admin, out: Output, cmd: &ClientCmd) -> Result<(), CliError> {
    match cmd {
        ClientCmd::Put(args) => put(admin, out, args).await,
        ClientCmd::Get { id } => {
            let client = admin
                .clients()
                .get_client(pb::GetClientRequest { id: id.clone() })
                .await?
                .into_inner();
            print_clients(out, &[client]);
            Ok(())
        }
        ClientCmd::Secret { id, version } => secret(admin, out, id, *version).await,
        ClientCmd::List => list(admin, out).await,
        ClientCmd::Rotate {
            id,
            grace,
            secret_stdin,
        } => rotate(admin, out, id, grace, *secret_stdin).await,
        ClientCmd::Env(cmd) => openmetadata::client_env(admin, out, cmd).await,
        ClientCmd::Delete { id } => {
            admin
                .clients()
                .delete_client(pb::DeleteClientRequest { id: id.clone() })
                .await?;
            print_done(out, &format!("deleted client {id}"));
            Ok(())
        }
        ClientCmd::RevokeSecret { id, version } => revoke_secret(admin, out, id, *version).await,
        ClientCmd::Verify { id, .. } => verify(admin, out, id).await,
    }
}

/// `--label KEY=VALUE`s as the wire's labels; none given keeps the stored ones.
fn labels_of(labels: &[String]) -> Result<Option<pb::Labels>, CliError> {
    if labels.is_empty() {
        return Ok(None);
    }
    let mut values = std::collections::HashMap::new();
    for label in labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--label {label:?}: write it as KEY=VALUE")))?;
        values.insert(k.to_string(), v.to_string());
    }
    Ok(Some(pb::Labels { values }))
}

/// A repeatable flag as the wire's list; none given keeps the stored one.
fn list_of(values: &[String]) -> Option<pb::StringList> {
    (!values.is_empty()).then(|| pb::StringList {
        values: values.to_vec(),
    })
}

/// The secret on standard input, when the flag asks for it.
fn secret_from_stdin(asked: bool) -> Result<Option<String>, CliError> {
    asked.then(read_stdin_secret).transpose()
}

/// `keyward client put`
async fn put(admin: &Admin, out: Output, args: &PutArgs) -> Result<(), CliError> {
    let request = pb::PutClientRequest {
        id: args.id.clone(),
        display_name: args.display_name.clone(),
        discovery_uri: args.discovery_uri.clone(),
        callback_url: args.callback_url.clone(),
        scopes: list_of(&args.scopes),
        auth_method: args.auth_method.clone(),
        labels: labels_of(&args.labels)?,
        secret: secret_from_stdin(args.secret_stdin)?,
        token_keyset: args.token_keyset.clone(),
        token_ttl_seconds: args
            .token_ttl
            .as_deref()
            .map(|t| seconds("token_ttl", t))
            .transpose()?,
        audience: args.audience.clone(),
        allowed_scopes: list_of(&args.allowed_scopes),
        token_subject: args.token_subject.clone(),
        token_email: args.token_email.clone(),
    };
    let mut r = admin.clients().put_client(request).await?.into_inner();
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
                    "generated secret (shown once; `keyward client secret {}` reads it back):",
                    args.id
                );
                println!("{}", r.generated_secret);
            }
        }
    }
    Ok(())
}

/// `keyward client secret`
async fn secret(
    admin: &Admin,
    out: Output,
    id: &str,
    version: Option<u32>,
) -> Result<(), CliError> {
    let s = admin
        .clients()
        .get_client_secret(pb::GetClientSecretRequest {
            id: id.to_string(),
            version,
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
    Ok(())
}

/// `keyward client list`
async fn list(admin: &Admin, out: Output) -> Result<(), CliError> {
    let api = admin.clients();
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
    Ok(())
}

/// `keyward client rotate`
async fn rotate(
    admin: &Admin,
    out: Output,
    id: &str,
    grace: &str,
    secret_stdin: bool,
) -> Result<(), CliError> {
    let mut r = admin
        .clients()
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: id.to_string(),
            grace_seconds: Some(seconds("grace", grace)?),
            secret: secret_from_stdin(secret_stdin)?,
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
    Ok(())
}

/// `keyward client revoke-secret`
async fn revoke_secret(admin: &Admin, out: Output, id: &str, version: u32) -> Result<(), CliError> {
    let r = admin
        .clients()
        .revoke_client_secret(pb::RevokeClientSecretRequest {
            id: id.to_string(),
            version,
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
    Ok(())
}

/// `keyward client verify`: exit 0 when the secret on standard input is
/// valid, 1 when not.
async fn verify(admin: &Admin, out: Output, id: &str) -> Result<(), CliError> {
    let secret = read_stdin_secret()?;
    let r = admin
        .clients()
        .verify_client_secret(pb::VerifyClientSecretRequest {
            id: id.to_string(),
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
    Ok(())
}
