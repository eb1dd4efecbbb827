//! `keyward audit …`: read and verify the audit log.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Admin, CliError, Output, print_rows};
use crate::{domain::model::format_time, transport::grpc::pb};

/// `keyward audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// List audit events, newest first.
    List {
        /// Only events since then: a duration back from now (1h, 7d) or an
        /// RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this principal (token name, bootstrap, or OAuth client id).
        #[arg(long, value_name = "NAME")]
        principal: Option<String>,
        /// Only this action: a gRPC method (GetClientSecret) or /oauth2/token.
        #[arg(long, value_name = "METHOD")]
        action: Option<String>,
        /// Only this target: key set, kid, client id or token name.
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// At most this many events, newest first.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Walk the hash chain: exit 0 when intact, 1 naming the first broken event.
    Verify,
}

/// `--since`: a duration back from `now`, or an RFC 3339 time.
fn since_of(text: &str, now: i64) -> Result<i64, CliError> {
    if let Ok(duration) = crate::domain::model::parse_duration("since", text) {
        let back = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(back).max(1));
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            CliError::usage(format!(
                "--since {text:?}: write a duration back from now (1h, 7d) or an RFC 3339 time (2026-11-29T10:00:00Z)"
            ))
        })
}

fn event_json(e: &pb::AuditEvent) -> Value {
    json!({
        "id": e.id,
        "at": format_time(e.at),
        "principal": e.principal,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "peer": e.peer,
        "request_id": e.request_id,
    })
}

const COLUMNS: [&str; 8] = [
    "id",
    "at",
    "principal",
    "action",
    "target",
    "outcome",
    "peer",
    "request_id",
];

/// Runs a `keyward audit` command.
pub(crate) async fn run(admin: &Admin, out: Output, cmd: &AuditCmd) -> Result<(), CliError> {
    let mut api = admin.audit();
    match cmd {
        AuditCmd::List {
            since,
            principal,
            action,
            target,
            limit,
        } => {
            let now = crate::domain::clock::Clock::now(&crate::domain::clock::SystemClock);
            let since = since.as_deref().map(|s| since_of(s, now)).transpose()?;
            // Pages until --limit events or the oldest kept one.
            let mut events = Vec::new();
            let mut page_token = String::new();
            while events.len() < *limit as usize {
                let wanted = *limit as usize - events.len();
                let page = api
                    .list_audit_events(pb::ListAuditEventsRequest {
                        since: since.unwrap_or(0),
                        principal: principal.clone().unwrap_or_default(),
                        action: action.clone().unwrap_or_default(),
                        target: target.clone().unwrap_or_default(),
                        page_size: u32::try_from(wanted.min(super::PAGE_SIZE as usize))
                            .unwrap_or(super::PAGE_SIZE),
                        page_token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                events.extend(page.events);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print_rows(out, events.iter().map(event_json).collect(), &COLUMNS);
            Ok(())
        }
        AuditCmd::Verify => {
            let report = api
                .verify_audit_chain(pb::VerifyAuditChainRequest {})
                .await?
                .into_inner();
            if out == Output::Json {
                println!(
                    "{}",
                    json!({
                        "intact": report.intact,
                        "checked": report.checked,
                        "first_id": report.first_id,
                        "last_id": report.last_id,
                        "broken_id": (!report.intact).then_some(report.broken_id),
                        "problem": (!report.intact).then_some(&report.problem),
                    })
                );
            }
            if report.intact {
                if out == Output::Table {
                    println!(
                        "audit chain intact: {} events checked (ids {}..={})",
                        report.checked, report.first_id, report.last_id
                    );
                }
                Ok(())
            } else {
                Err(CliError {
                    message: format!(
                        "audit chain broken at event {}: {}",
                        report.broken_id, report.problem
                    ),
                    code: 1,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn since_takes_a_duration_back_or_a_time() {
        assert_eq!(since_of("1h", 10_000).unwrap(), 6_400);
        assert_eq!(since_of("2026-11-29T10:00:00Z", 0).unwrap(), 1_795_946_400);
        assert_eq!(since_of("100d", 5).unwrap(), 1, "never before the epoch");
        assert_eq!(since_of("yesterday", 0).unwrap_err().code, 2);
    }
}
