//! The agent's `/health` (JSON; HTTP 503 only when an output is missing or
//! expired, so a keyward outage does not get the agent restarted while its
//! files are still good) and `/metrics` (Prometheus text).

use std::{fmt::Write as _, sync::Arc, sync::atomic::Ordering};

use axum::{
    Json, Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde_json::{Value, json};

use super::{Agent, lock, output::unix_now};

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    agent: Arc<Agent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (h, m) = (Arc::clone(&agent), agent);
    let app = Router::new()
        .route("/health", get(move || health(Arc::clone(&h))))
        .route("/metrics", get(move || metrics(Arc::clone(&m))));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "health listener failed");
    }
}

fn time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(crate::domain::model::format_time(t))
    })
}

async fn health(agent: Arc<Agent>) -> impl IntoResponse {
    let status = agent.status();
    let now = unix_now();
    let outputs: Vec<Value> = agent
        .outputs
        .iter()
        .map(|o| {
            let s = lock(&o.state).clone();
            json!({
                "name": o.spec.name,
                "kind": o.spec.what.kind(),
                "path": o.spec.path.display().to_string(),
                "usable": s.usable(now),
                "last_success": time(s.last_success),
                "last_error": s.last_error,
                "expires_at": time(s.expires_at),
                "writes": s.writes,
            })
        })
        .collect();
    let streams: Vec<Value> = agent
        .streams
        .iter()
        .map(|s| {
            json!({
                "token_file": s.credential.as_ref().map(|p| p.display().to_string()),
                "connected": s.connected.load(Ordering::SeqCst),
                "last_error": lock(&s.last_error).clone(),
            })
        })
        .collect();
    let code = if status == "failing" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({ "status": status, "outputs": outputs, "watch": streams })),
    )
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(agent: Arc<Agent>) -> impl IntoResponse {
    let now = unix_now();
    let mut out = String::new();
    let families: [(&str, &str, &str); 7] = [
        (
            "keyward_agent_output_usable",
            "gauge",
            "1 while the output's file is in place and unexpired",
        ),
        (
            "keyward_agent_output_healthy",
            "gauge",
            "1 while the output's last refresh succeeded",
        ),
        (
            "keyward_agent_output_expires_at_seconds",
            "gauge",
            "When the token in place expires (Unix time)",
        ),
        (
            "keyward_agent_output_last_success_seconds",
            "gauge",
            "When keyward last answered for the output (Unix time)",
        ),
        (
            "keyward_agent_writes_total",
            "counter",
            "Files replaced because their content changed",
        ),
        (
            "keyward_agent_refresh_failures_total",
            "counter",
            "Refreshes that failed (the last good file stayed)",
        ),
        (
            "keyward_agent_commands_total",
            "counter",
            "Commands run after a change, by outcome",
        ),
    ];
    let states: Vec<_> = agent
        .outputs
        .iter()
        .map(|o| (label(&o.spec.name), lock(&o.state).clone()))
        .collect();
    for (name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (output, s) in &states {
            let value = match name {
                "keyward_agent_output_usable" => i64::from(s.usable(now)),
                "keyward_agent_output_healthy" => i64::from(s.last_error.is_none() && s.present),
                "keyward_agent_output_expires_at_seconds" => match s.expires_at {
                    Some(t) => t,
                    None => continue,
                },
                "keyward_agent_output_last_success_seconds" => match s.last_success {
                    Some(t) => t,
                    None => continue,
                },
                "keyward_agent_writes_total" => i64::try_from(s.writes).unwrap_or(i64::MAX),
                "keyward_agent_refresh_failures_total" => {
                    i64::try_from(s.failures).unwrap_or(i64::MAX)
                }
                _ => {
                    for (outcome, n) in [("ok", s.commands_ok), ("failed", s.commands_failed)] {
                        let _ = writeln!(
                            out,
                            "{name}{{output=\"{output}\",outcome=\"{outcome}\"}} {n}"
                        );
                    }
                    continue;
                }
            };
            let _ = writeln!(out, "{name}{{output=\"{output}\"}} {value}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP keyward_agent_watch_connected 1 while the Watch stream is up\n# TYPE keyward_agent_watch_connected gauge"
    );
    for s in &agent.streams {
        let token = s
            .credential
            .as_ref()
            .map_or_else(|| "agent".to_string(), |p| label(&p.display().to_string()));
        let _ = writeln!(
            out,
            "keyward_agent_watch_connected{{token=\"{token}\"}} {}",
            u8::from(s.connected.load(Ordering::SeqCst))
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
