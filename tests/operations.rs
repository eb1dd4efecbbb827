//! Operating keyward: Prometheus metrics as a scraper reads them, the
//! example alert rules against those metrics, JSON logs that carry request
//! ids, and a graceful shutdown that finishes what is in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    sync::Arc,
    time::Duration,
};

use common::{Backend, TestDb, TestServer, create_keyset, http_get, manual_clock_now, process};
use keyward::{domain::clock::ManualClock, transport::grpc::pb};

/// One scrape: each sample (`name{labels}` exactly as exposed) and its value,
/// and each metric family's name and type.
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeMap<String, String>,
    body: String,
}

impl Scrape {
    async fn of(url: &str) -> Self {
        let response = http_get(url, &[]).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            response
                .header("content-type")
                .starts_with("application/openmetrics-text"),
            "{}",
            response.header("content-type")
        );
        Self::parse(&response.body)
    }

    fn parse(body: &str) -> Self {
        let mut samples = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                families.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
                samples.insert(series.to_string(), value);
            }
        }
        assert!(body.ends_with("# EOF\n"), "an exposition ends with # EOF");
        Self {
            samples,
            families,
            body: body.to_string(),
        }
    }

    /// The value of `series`, or 0 when it is absent (a counter not yet bumped).
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }

    /// Every sample name a family of this scrape may expose.
    fn sample_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for (family, kind) in &self.families {
            match kind.as_str() {
                "counter" => {
                    names.insert(format!("{family}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{family}{suffix}"));
                    }
                }
                "info" => {
                    names.insert(format!("{family}_info"));
                }
                _ => {
                    names.insert(family.clone());
                }
            }
        }
        names
    }
}

async fn start(db: &TestDb, clock: &ManualClock) -> TestServer {
    let mut config = db.config();
    // The scheduler off (as under cron): the test decides when rotations run.
    config.rotation_interval = None;
    config.rotation_overdue_after = Duration::from_secs(3600);
    TestServer::start_with(db, config, Arc::new(clock.clone())).await
}

async fn metrics_follow_what_happens(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = manual_clock_now();
    let server = start(&db, &clock).await;
    let url = format!("{}/metrics", server.http_url);
    let ops = create_keyset(&server, "ops", "ES256").await;

    let mut keysets = server.keysets();
    keysets
        .sign_jwt(pb::SignJwtRequest {
            keyset: "ops".into(),
            claims_json: r#"{"sub":"a"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("SignJwt");
    let refused = server
        .keysets_with(Some("Bearer kw_not-a-token"))
        .get_key_set(pb::GetKeySetRequest { name: "ops".into() })
        .await
        .expect_err("an unknown token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    keysets
        .rotate_key_set(pb::RotateKeySetRequest { name: "ops".into() })
        .await
        .expect("RotateKeySet");

    // Request ids: the caller's comes back, and one is made up otherwise.
    let jwks = server
        .get(
            "/keysets/ops/jwks.json",
            &[("x-request-id", "scrape-test-1")],
        )
        .await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.header("x-request-id"), "scrape-test-1");
    let published = jwks.json()["keys"].as_array().expect("keys").len();
    let made_up = server.get("/.well-known/jwks.json", &[]).await;
    assert!(!made_up.header("x-request-id").is_empty());
    assert_ne!(
        made_up.header("x-request-id"),
        server
            .get("/.well-known/jwks.json", &[])
            .await
            .header("x-request-id"),
        "each request gets its own id"
    );
    // A path of the client's own choosing is no label value.
    let strange = server.get("/keysets/ops/evil-label-value", &[]).await;
    assert_eq!(strange.status, 404);
    // The token endpoint, answered without the router, is counted under its
    // route like the rest, and gives the caller's request id back.
    let token_url = format!("{}/oauth2/token", server.http_url);
    let unknown = common::http_post(
        &token_url,
        &[
            common::FORM,
            ("authorization", &common::basic("nobody", "wrong")),
            ("x-request-id", "scrape-token-1"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(unknown.header("x-request-id"), "scrape-token-1");
    let oversized = "a".repeat(keyward::transport::http::token::MAX_TOKEN_REQUEST_BYTES + 1);
    let too_large = common::http_post(&token_url, &[common::FORM], &oversized).await;
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    assert!(!too_large.header("x-request-id").is_empty());

    let scrape = Scrape::of(&url).await;
    assert_eq!(
        scrape.value(r#"keyward_grpc_requests_total{method="SignJwt",code="OK"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_grpc_requests_total{method="GetKeySet",code="UNAUTHENTICATED"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_grpc_request_duration_seconds_count{method="RotateKeySet"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_tokens_issued_total{keyset="ops",algorithm="ES256"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_auth_failures_total{transport="grpc"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_rotations_total{keyset="ops",trigger="manual"}"#),
        1.0
    );
    assert_eq!(
        scrape
            .value(r#"keyward_http_requests_total{route="/keysets/{name}/jwks.json",code="200"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_http_requests_total{route="/.well-known/jwks.json",code="200"}"#),
        2.0
    );
    assert_eq!(
        scrape.value(r#"keyward_http_requests_total{route="other",code="404"}"#),
        1.0
    );
    for code in ["401", "413"] {
        assert_eq!(
            scrape.value(&format!(
                r#"keyward_http_requests_total{{route="/oauth2/token",code="{code}"}}"#
            )),
            1.0,
            "{code}"
        );
    }
    assert_eq!(
        scrape.value(r#"keyward_http_request_duration_seconds_count{route="/oauth2/token"}"#),
        2.0
    );
    assert!(!scrape.body.contains("evil-label-value"));
    assert_eq!(
        scrape.value(r#"keyward_keyset_published_keys{keyset="ops"}"#),
        published as f64
    );
    assert_eq!(
        scrape.value(r#"keyward_rotation_overdue{keyset="ops"}"#),
        0.0
    );
    assert_eq!(
        scrape.value(r#"keyward_rotation_overdue{keyset="default"}"#),
        0.0
    );
    let next = scrape.value(r#"keyward_keyset_next_rotation_seconds{keyset="ops"}"#);
    assert!(next > 0.0, "the next rotation is ahead: {next}");
    assert!(scrape.has(r#"keyward_keyset_active_key_age_seconds{keyset="ops"}"#));
    assert!(scrape.value("keyward_jwks_snapshot_generation") >= 1.0);
    let age = scrape.value("keyward_jwks_snapshot_age_seconds");
    assert!((0.0..5.0).contains(&age), "snapshot age {age}");
    assert!(scrape.has(r#"keyward_build_info{version="0.1.0"}"#));
    assert!(scrape.families.contains_key("keyward_database_errors"));

    // The due time passes and no sweep runs: overdue only after the grace.
    let due = ops.next_rotation_at.max(
        server
            .keysets()
            .get_key_set(pb::GetKeySetRequest { name: "ops".into() })
            .await
            .expect("GetKeySet")
            .into_inner()
            .next_rotation_at,
    );
    clock.set(due + 60);
    let scrape = Scrape::of(&url).await;
    assert_eq!(
        scrape.value(r#"keyward_rotation_overdue{keyset="ops"}"#),
        0.0
    );
    assert!(scrape.value(r#"keyward_keyset_next_rotation_seconds{keyset="ops"}"#) < 0.0);
    clock.set(due + 3601);
    let scrape = Scrape::of(&url).await;
    assert_eq!(
        scrape.value(r#"keyward_rotation_overdue{keyset="ops"}"#),
        1.0
    );

    // `keyward rotate` (RotateDue) catches up: no longer overdue.
    keysets
        .rotate_due(pb::RotateDueRequest {
            keyset: Some("ops".into()),
            dry_run: false,
        })
        .await
        .expect("RotateDue");
    let scrape = Scrape::of(&url).await;
    assert_eq!(
        scrape.value(r#"keyward_rotation_overdue{keyset="ops"}"#),
        0.0
    );
    assert_eq!(
        scrape.value(r#"keyward_rotations_total{keyset="ops",trigger="schedule"}"#),
        1.0
    );
    server.stop().await;
}

/// With `--metrics-addr`, `/metrics` is there and only there.
async fn metrics_on_their_own_listener(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = db.config();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    config.grpc_addr = grpc.local_addr().expect("addr");
    config.http_addr = http.local_addr().expect("addr");
    let http_url = format!("http://{}", config.http_addr);
    let metrics_url = format!("http://{}/metrics", metrics.local_addr().expect("addr"));
    let app = keyward::server::prepare(config, Arc::new(keyward::domain::clock::SystemClock))
        .await
        .expect("prepare");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let listeners = keyward::server::Listeners {
        grpc,
        http,
        metrics: Some(metrics),
    };
    let task = tokio::spawn(keyward::server::serve_on(app, listeners, async {
        let _ = rx.await;
    }));
    assert_eq!(
        http_get(&format!("{http_url}/metrics"), &[]).await.status,
        404
    );
    assert_eq!(
        http_get(&format!("{http_url}/healthz"), &[]).await.status,
        200
    );
    let scrape = Scrape::of(&metrics_url).await;
    assert_eq!(
        scrape.value(r#"keyward_http_requests_total{route="/metrics",code="404"}"#),
        1.0,
        "both listeners count their requests in one registry"
    );
    assert_eq!(
        scrape.value(r#"keyward_http_requests_total{route="/healthz",code="200"}"#),
        1.0
    );
    assert_eq!(
        scrape.value(r#"keyward_keyset_published_keys{keyset="default"}"#),
        2.0,
        "the default key set publishes its active and pending keys"
    );
    let _ = tx.send(());
    task.await.expect("task").expect("stops cleanly");
}

both_backends!(metrics_follow_what_happens, metrics_on_their_own_listener);

/// Every metric an example alert rule names is one keyward exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_name_real_metrics() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let clock = manual_clock_now();
    let server = start(&db, &clock).await;
    // Some traffic: request counters have a series once a request was made.
    server
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        })
        .await
        .expect("GetKeySet");
    assert_eq!(server.get("/healthz", &[]).await.status, 200);
    let scrape = Scrape::of(&format!("{}/metrics", server.http_url)).await;
    let mut exposed = scrape.sample_names();
    // Exposed only with --tls-cert: tests/tls.rs scrapes it from a TLS server.
    exposed.insert("keyward_tls_certificate_expiry_seconds".to_string());

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus/alerts.yaml");
    let text = std::fs::read_to_string(path).expect("docs/prometheus/alerts.yaml");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut alerts = Vec::new();
    for group in groups {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            let named = metric_names(expr);
            assert!(!named.is_empty(), "{name} names no keyward metric");
            for metric in named {
                assert!(
                    exposed.contains(&metric),
                    "alert {name} names {metric}, which keyward does not expose; it does: {exposed:?}"
                );
            }
            alerts.push(name.to_string());
        }
    }
    for wanted in [
        "KeywardRotationOverdue",
        "KeywardJwksStale",
        "KeywardAuthFailureSpike",
    ] {
        assert!(alerts.iter().any(|a| a == wanted), "{wanted} in {alerts:?}");
    }
    server.stop().await;
}

/// The `keyward_…` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("keyward_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// `--log-format json`: one JSON object per line, and a request's lines
/// carry its request id.
#[test]
fn json_logs_carry_request_ids() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cmd = process::serve_command(dir.path());
    cmd.env_remove("KEYWARD_DATABASE_URL")
        .env("KEYWARD_LOG", "info")
        .env("KEYWARD_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = process::Logged::new(cmd.spawn().expect("spawn"));
    let serving = child.line_where(|line| line.contains("keyward serving"));
    let serving: serde_json::Value = serde_json::from_str(&serving).expect("a JSON line");
    let grpc = serving["grpc"].as_str().expect("grpc field").to_string();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = pb::key_sets_client::KeySetsClient::new(channel);
        let mut request = tonic::Request::new(pb::GetKeySetRequest {
            name: "default".into(),
        });
        request
            .metadata_mut()
            .insert("authorization", "Bearer kw_wrong".parse().expect("ascii"));
        request
            .metadata_mut()
            .insert("x-request-id", "json-log-7".parse().expect("ascii"));
        let refused = client.get_key_set(request).await.expect_err("refused");
        assert_eq!(
            refused
                .metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            Some("json-log-7")
        );
    });
    let line = child.line_where(|line| line.contains("json-log-7"));
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["span"]["request_id"], "json-log-7", "{line}");
    assert_eq!(event["span"]["method"], "GetKeySet", "{line}");
    assert_eq!(event["level"], "INFO", "{line}");
    assert!(event["timestamp"].is_string(), "{line}");
    assert!(event["target"].is_string(), "{line}");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("token")),
        "{line}"
    );
    let (status, rest) = child.terminate();
    assert!(status.success(), "{status}");
    for line in rest {
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
    }
}

/// SIGTERM while a request is half sent: the server stops accepting, the
/// request completes with its answer, and the process exits cleanly.
#[test]
fn sigterm_lets_the_request_in_flight_finish() {
    let dir = tempfile::tempdir().expect("dir");
    let serve = process::serve(dir.path(), &[]).expect("serves");
    let http = serve.http.trim_start_matches("http://").to_string();
    let body = "grant_type=client_credentials&client_id=nobody&client_secret=wrong";
    let mut stream = std::net::TcpStream::connect(&http).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /oauth2/token HTTP/1.1\r\nhost: keyward\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .expect("send the head and part of the body");
    stream.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));

    let pid = serve.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::net::TcpStream::connect(&http).is_err(),
        "no new connection is accepted after SIGTERM"
    );

    stream
        .write_all(&body.as_bytes()[10..])
        .expect("the rest of the body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the answer");
    assert!(
        response.starts_with("HTTP/1.1 401"),
        "the request in flight got its answer: {response}"
    );
    assert!(response.contains("invalid_client"), "{response}");
    let (status, _) = serve.terminate_waited();
    assert!(status.success(), "exited cleanly: {status}");
}

/// `keyward keys timeline`: every key on one axis, the next rotation, now;
/// `--output json` carries the same spans.
#[test]
fn keys_timeline_draws_every_key_and_the_next_rotation() {
    let dir = tempfile::tempdir().expect("dir");
    let serve = process::serve(dir.path(), &[]).expect("serves");
    let run = |args: &[&str]| process::stdout(&process::cli(dir.path(), &serve.grpc, args, None));
    run(&[
        "keyset",
        "create",
        "om",
        "--alg",
        "ES256",
        "--rotate-every",
        "7d",
        "--prepublish",
        "1d",
        "--retain",
        "2d",
    ]);
    run(&["keyset", "rotate", "om"]);
    let listed: serde_json::Value =
        serde_json::from_str(&run(&["--output", "json", "keys", "list", "om"])).expect("JSON");
    let kids: Vec<String> = listed
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect();
    assert_eq!(kids.len(), 3, "retired, active, pending: {listed}");

    let text = run(&["keys", "timeline", "om", "--days", "30"]);
    assert!(text.is_ascii(), "{text}");
    for kid in &kids {
        let row = text
            .lines()
            .find(|l| l.starts_with(&kid[..13]))
            .unwrap_or_else(|| panic!("a row for {kid}:\n{text}"));
        assert!(
            row.contains('#') || row.contains('-') || row.contains('='),
            "{row}"
        );
    }
    let rotations = text
        .lines()
        .find(|l| l.starts_with("rotations"))
        .expect("rotations row");
    let now = text
        .lines()
        .find(|l| l.starts_with("now"))
        .expect("now row");
    assert!(
        rotations.find('^') > now.find('^'),
        "the next rotation is ahead of now:\n{text}"
    );
    assert!(text.contains("next rotation: "), "{text}");

    let json: serde_json::Value = serde_json::from_str(&run(&[
        "--output", "json", "keys", "timeline", "om", "--days", "30",
    ]))
    .expect("JSON");
    assert_eq!(json["keyset"], "om");
    assert_eq!(json["keys"].as_array().expect("keys").len(), 3);
    let active = json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["state"] == "active")
        .expect("the active key");
    let phases: Vec<&str> = active["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["phase"].as_str().expect("phase"))
        .collect();
    assert_eq!(
        phases.last(),
        Some(&"retired"),
        "it retires at the next rotation: {active}"
    );
    let next = json["rotations"][0]
        .as_i64()
        .expect("a rotation on the axis");
    assert!(next > json["now"].as_i64().expect("now"));
    let missing = process::cli(dir.path(), &serve.grpc, &["keys", "timeline", "nope"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NOT_FOUND"));
    let (status, _) = serve.terminate();
    assert!(status.success());
}
