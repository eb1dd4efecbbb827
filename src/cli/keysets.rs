//! `keyward keyset …`, `keys …`, `rotate` and `sign`: key sets, their keys,
//! due rotations and signing, over `keyward.v1.KeySets`.

use serde_json::json;

use super::{
    Admin, CliError, KeysCmd, KeysetCmd, Output, PAGE_SIZE, SignArgs, every_page, print_done,
    print_events, print_keys, print_keyset, print_keysets, print_transition, seconds, timeline,
};
use crate::{
    domain::{
        clock::{Clock as _, SystemClock},
        model::format_time,
    },
    transport::grpc::pb,
};

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

/// `keyward keys …`
pub(super) async fn keys(admin: &Admin, out: Output, cmd: &KeysCmd) -> Result<(), CliError> {
    match cmd {
        KeysCmd::List { keyset } => {
            let keys = all_keys(admin, keyset).await?;
            print_keys(out, &keys);
            Ok(())
        }
        KeysCmd::Timeline { keyset, days } => timeline_of(admin, out, keyset, *days).await,
        KeysCmd::Revoke { kid } => {
            let r = admin
                .keysets()
                .revoke_key(pb::RevokeKeyRequest { kid: kid.clone() })
                .await?
                .into_inner();
            print_transition(out, &r.events, &r.warnings, &r.keys);
            Ok(())
        }
    }
}

/// `keyward keys timeline`
async fn timeline_of(admin: &Admin, out: Output, keyset: &str, days: u32) -> Result<(), CliError> {
    let set = admin
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: keyset.to_string(),
        })
        .await?
        .into_inner();
    let keys = all_keys(admin, keyset).await?;
    let now = SystemClock.now();
    let drawn = timeline::build(&set, &keys, now, days);
    match out {
        Output::Json => println!("{}", json!(drawn)),
        Output::Table => print!("{}", timeline::render(&drawn)),
    }
    Ok(())
}

/// `keyward rotate`
pub(super) async fn rotate(
    admin: &Admin,
    out: Output,
    keyset: Option<&str>,
    dry_run: bool,
) -> Result<(), CliError> {
    let events = admin
        .keysets()
        .rotate_due(pb::RotateDueRequest {
            keyset: keyset.map(str::to_string),
            dry_run,
        })
        .await?
        .into_inner()
        .events;
    if out == Output::Table && events.is_empty() {
        println!("nothing due");
    } else {
        print_events(out, &events, dry_run);
    }
    Ok(())
}

/// `keyward sign`
pub(super) async fn sign(admin: &Admin, out: Output, args: &SignArgs) -> Result<(), CliError> {
    let signed = admin
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: args.keyset.clone(),
            claims_json: args.claims.clone(),
            ttl_seconds: Some(seconds("ttl", &args.ttl)?),
            profile: args.profile.clone().unwrap_or_default(),
            subject: args.subject.clone(),
            email: args.email.clone(),
            allow_identity_mismatch: args.force,
        })
        .await?
        .into_inner();
    let for_om = args.profile.as_deref() == Some("openmetadata");
    if let Some(path) = &args.out {
        crate::files::refuse_symlinked_path(path)?;
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

/// `keyward keyset …`
pub(super) async fn keyset(admin: &Admin, out: Output, cmd: &KeysetCmd) -> Result<(), CliError> {
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
