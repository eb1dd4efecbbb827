//! `keyward watch` (the live event stream) and `keyward webhook …`.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Admin, CliError, Output, print_done, print_rows};
use crate::{domain::model::format_time, transport::grpc::pb};

/// Which events: kinds and subjects, as `Watch` and webhooks take them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct EventSelection {
    /// Event kinds: a name (key.activated) or a prefix ending in '*'
    /// (key.*); repeatable [default: every kind]
    #[arg(long = "event", value_name = "PATTERN")]
    pub kinds: Vec<String>,
    /// Only events about these key sets (or, with --client, those clients);
    /// repeatable
    #[arg(long = "keyset", value_name = "PATTERN")]
    pub keysets: Vec<String>,
    /// Only events about these clients (or, with --keyset, those key sets);
    /// repeatable
    #[arg(long = "client", value_name = "PATTERN")]
    pub clients: Vec<String>,
}

/// `keyward watch`
#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// What to watch.
    #[command(flatten)]
    pub selection: EventSelection,
    /// Resume after this event id (the last one seen; 0: every kept event)
    /// [default: from now on]
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
}

/// `keyward webhook …`
#[derive(Subcommand, Debug)]
pub enum WebhookCmd {
    /// Create a webhook; prints its signing secret once on stdout.
    Create {
        /// Its name: lowercase letters, digits and '-'.
        name: String,
        /// Where events are POSTed: https:// (or http://).
        #[arg(long)]
        url: String,
        /// Which events.
        #[command(flatten)]
        selection: EventSelection,
    },
    /// List webhooks (never their secrets).
    List,
    /// Delete a webhook, its secret and its pending deliveries.
    Delete {
        /// Webhook name.
        name: String,
    },
    /// A webhook's latest deliveries, newest first.
    Deliveries {
        /// Webhook name.
        name: String,
        /// How many [default: 100; at most 1000]
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn time_or_none(t: i64) -> Value {
    if t == 0 {
        Value::Null
    } else {
        Value::String(format_time(t))
    }
}

fn event_json(e: &pb::Event) -> Value {
    let or_null = |s: &str| {
        if s.is_empty() {
            Value::Null
        } else {
            Value::String(s.to_string())
        }
    };
    json!({
        "id": e.id,
        "kind": e.kind,
        "at": format_time(e.at),
        "keyset": or_null(&e.keyset),
        "kid": or_null(&e.kid),
        "client": or_null(&e.client),
        "token": or_null(&e.token),
        "detail": or_null(&e.detail),
    })
}

fn webhook_json(w: &pb::Webhook) -> Value {
    json!({
        "name": w.name,
        "url": w.url,
        "events": w.kinds,
        "keysets": w.keysets,
        "clients": w.clients,
        "created_at": format_time(w.created_at),
    })
}

const WEBHOOK_COLUMNS: [&str; 5] = ["name", "url", "events", "keysets", "clients"];

/// `keyward watch`: one line per event until interrupted (JSON lines with
/// `--output json`).
pub(crate) async fn watch(admin: &Admin, out: Output, args: &WatchArgs) -> Result<(), CliError> {
    let sel = &args.selection;
    let mut stream = admin
        .events()
        .watch(pb::WatchRequest {
            after_id: args.after,
            kinds: sel.kinds.clone(),
            keysets: sel.keysets.clone(),
            clients: sel.clients.clone(),
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        match out {
            Output::Json => println!("{}", event_json(&event)),
            Output::Table => {
                let about: Vec<String> = [
                    ("keyset", &event.keyset),
                    ("kid", &event.kid),
                    ("client", &event.client),
                    ("token", &event.token),
                ]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
                println!(
                    "{:>6}  {}  {:<22} {}{}",
                    event.id,
                    format_time(event.at),
                    event.kind,
                    about.join(" "),
                    if event.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", event.detail)
                    }
                );
            }
        }
    }
    Ok(())
}

/// Runs a `keyward webhook` command.
pub(crate) async fn webhook(admin: &Admin, out: Output, cmd: &WebhookCmd) -> Result<(), CliError> {
    let mut api = admin.webhooks();
    match cmd {
        WebhookCmd::Create {
            name,
            url,
            selection,
        } => {
            let mut created = api
                .create_webhook(pb::CreateWebhookRequest {
                    name: name.clone(),
                    url: url.clone(),
                    kinds: selection.kinds.clone(),
                    keysets: selection.keysets.clone(),
                    clients: selection.clients.clone(),
                })
                .await?
                .into_inner();
            let hook = created.webhook.take().unwrap_or_default();
            let secret = std::mem::take(&mut created.signing_secret);
            match out {
                Output::Json => {
                    let mut v = webhook_json(&hook);
                    v["signing_secret"] = Value::String(secret);
                    println!("{v}");
                }
                Output::Table => {
                    println!("{secret}");
                    eprintln!(
                        "created webhook {:?} -> {}; its signing secret is shown only this once",
                        hook.name, hook.url
                    );
                }
            }
        }
        WebhookCmd::List => {
            let hooks = api
                .list_webhooks(pb::ListWebhooksRequest {})
                .await?
                .into_inner()
                .webhooks;
            print_rows(
                out,
                hooks.iter().map(webhook_json).collect(),
                &WEBHOOK_COLUMNS,
            );
        }
        WebhookCmd::Delete { name } => {
            api.delete_webhook(pb::DeleteWebhookRequest { name: name.clone() })
                .await?;
            print_done(out, &format!("deleted webhook {name:?}"));
        }
        WebhookCmd::Deliveries { name, limit } => {
            let rows = api
                .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
                    webhook: name.clone(),
                    limit: *limit,
                })
                .await?
                .into_inner()
                .deliveries;
            let rows = rows
                .iter()
                .map(|d| {
                    json!({
                        "event_id": d.event_id,
                        "state": d.state,
                        "attempts": d.attempts,
                        "last_status": if d.last_status == 0 { Value::Null } else { json!(d.last_status) },
                        "last_error": if d.last_error.is_empty() { Value::Null } else { json!(d.last_error) },
                        "last_attempt_at": time_or_none(d.last_attempt_at),
                        "next_attempt_at": if d.state == "pending" { time_or_none(d.next_attempt_at) } else { Value::Null },
                        "delivered_at": time_or_none(d.delivered_at),
                    })
                })
                .collect();
            print_rows(
                out,
                rows,
                &[
                    "event_id",
                    "state",
                    "attempts",
                    "last_status",
                    "last_error",
                    "next_attempt_at",
                ],
            );
        }
    }
    Ok(())
}
