//! `keyward agent` as users run it: the real binary, a configuration file, a
//! real server on both databases. A reader checks the token file every second
//! the way a verifier would (signature against the JWKS, unexpired); keyward
//! is stopped for longer than a renewal behind a relay that keeps the
//! agent's endpoint; commands count the changes they are run for.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Backend, TestDb, TestServer, process::BIN};
use keyward::transport::grpc::pb;
use serde_json::Value;

/// A running `keyward agent`.
struct Agent {
    child: Child,
    /// `http://` base of its health listener.
    health: String,
    /// What it logged.
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(config: &Path, endpoint: &str, token_file: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["agent", "--health-listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(["--endpoint", endpoint, "--token-file"])
            .arg(token_file)
            .env("KEYWARD_LOG", "info")
            .env_remove("KEYWARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("agent: {line}");
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
                let _ = child.kill();
                let status = child.wait();
                panic!("the agent never said it was running: {status:?}");
            };
            if line.contains("keyward agent running") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("health="))
                    .unwrap()
                    .to_string();
                return Self {
                    child,
                    health: format!("http://{addr}"),
                    log,
                };
            }
        }
    }

    async fn health(&self) -> (u16, Value) {
        let got = common::http_get(&format!("{}/health", self.health), &[]).await;
        (got.status, got.json())
    }

    /// A metric's value for one output.
    async fn metric(&self, name: &str, output: &str) -> f64 {
        let text = common::http_get(&format!("{}/metrics", self.health), &[])
            .await
            .body;
        let prefix = format!("{name}{{output=\"{output}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"))
            .parse()
            .unwrap()
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the agent exits cleanly on SIGTERM: {status}"
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn token(server: &TestServer, name: &str, role: &str, scope: &str, dir: &Path) -> PathBuf {
    let token = if role == "secret-reader" {
        server.create_token(name, role, &[], &[scope]).await
    } else {
        server.create_token(name, role, &[scope], &[]).await
    };
    let path = dir.join(format!("{name}.token"));
    std::fs::write(&path, token).unwrap();
    path
}

async fn jwks(http_url: &str, keyset: &str) -> Value {
    let got = common::http_get(&format!("{http_url}/keysets/{keyset}/jwks.json"), &[]).await;
    assert_eq!(got.status, 200);
    got.json()
}

/// Whether the token in `path` verifies against `doc` and is unexpired now:
/// what a verifier would decide.
fn valid(path: &Path, doc: &Value) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    common::try_verify(text.trim(), doc, true).map(drop)
}

fn kid_in(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    jsonwebtoken::decode_header(text.trim()).ok()?.kid
}

async fn until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Reads the token file every second, as a verifier would, until stopped;
/// JWKS from `jwks_from` (refetched each time while it answers, the last copy
/// kept while it does not, like a caching verifier).
struct Reader {
    failures: Arc<Mutex<Vec<String>>>,
    reads: Arc<Mutex<usize>>,
    jwks_from: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    fn start(path: PathBuf, http_url: &str, keyset: &'static str) -> Self {
        let failures = Arc::new(Mutex::new(Vec::new()));
        let reads = Arc::new(Mutex::new(0));
        let jwks_from = Arc::new(Mutex::new(http_url.to_string()));
        let (f, r, from) = (failures.clone(), reads.clone(), jwks_from.clone());
        let task = tokio::spawn(async move {
            let mut doc = Value::Null;
            loop {
                let url = from.lock().unwrap().clone();
                let fetched = tokio::time::timeout(
                    Duration::from_millis(500),
                    common::try_http_get(&format!("{url}/keysets/{keyset}/jwks.json"), &[]),
                )
                .await;
                if let Ok(Ok(got)) = fetched
                    && got.status == 200
                {
                    doc = got.json();
                }
                if let Err(e) = valid(&path, &doc) {
                    f.lock().unwrap().push(e);
                }
                *r.lock().unwrap() += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Self {
            failures,
            reads,
            jwks_from,
            task,
        }
    }

    fn stop(self) -> (usize, Vec<String>) {
        self.task.abort();
        let reads = *self.reads.lock().unwrap();
        (reads, self.failures.lock().unwrap().clone())
    }
}

async fn a_token_stays_valid_across_three_rotations(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    common::create_keyset(&server, "om", "ES256").await;
    let signer = token(&server, "agent-signer", "signer", "om", dir.path()).await;
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "openmetadata".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let reader = token(
        &server,
        "agent-reader",
        "secret-reader",
        "openmetadata",
        dir.path(),
    )
    .await;
    let jwt = dir.path().join("shared").join("ingestion.jwt");
    let secret = dir.path().join("client-secret");
    let token_log = dir.path().join("token-changes.log");
    let secret_log = dir.path().join("secret-changes.log");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[token]]
name = "ingestion"
path = "{jwt}"
keyset = "om"
profile = "openmetadata"
subject = "ingestion-bot"
ttl = "8s"
mode = "0644"
command = 'sha256sum "$KEYWARD_PATH" >> {token_log}'

[[secret]]
name = "om-secret"
path = "{secret}"
client = "openmetadata"
token_file = "{reader}"
command = 'echo "$KEYWARD_OUTPUT" >> {secret_log}'
"#,
            jwt = jwt.display(),
            token_log = token_log.display(),
            secret = secret.display(),
            reader = reader.display(),
            secret_log = secret_log.display(),
        ),
    )
    .unwrap();
    let agent = Agent::start(&config, &server.grpc_url, &signer);
    until("the token file", Duration::from_secs(10), || jwt.exists()).await;
    until("the secret file", Duration::from_secs(10), || {
        secret.exists()
    })
    .await;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&jwt).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let reading = Reader::start(jwt.clone(), &server.http_url, "om");

    // Three rotations: each time the token is signed again by the new key,
    // woken by Watch (well before its 8 s life would renew it).
    let mut kids = vec![kid_in(&jwt).unwrap()];
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let kid = common::rotate_keyset(&server, "om").await;
        let started = Instant::now();
        until("a token from the new key", Duration::from_secs(3), || {
            kid_in(&jwt).as_deref() == Some(kid.as_str())
        })
        .await;
        eprintln!("new key's token after {:?}", started.elapsed());
        kids.push(kid);
    }
    // And renewed before expiry when nothing changes: 8 s > 2/3 of the life.
    let before = std::fs::read_to_string(&jwt).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_ne!(std::fs::read_to_string(&jwt).unwrap(), before);

    let (reads, failures) = reading.stop();
    assert!(reads >= 15, "{reads} reads");
    assert!(failures.is_empty(), "invalid reads: {failures:?}");
    assert_eq!(kids.len(), 4);

    // The secret file holds the secret; a rotation rewrites it once.
    let first = std::fs::read_to_string(&secret).unwrap();
    let last_token = std::fs::read_to_string(&jwt).unwrap();
    assert!(!first.is_empty() && !first.ends_with('\n'));
    let rotated = server
        .clients()
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "openmetadata".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .generated_secret
        .clone();
    until("the rotated secret", Duration::from_secs(5), || {
        std::fs::read_to_string(&secret).unwrap() == rotated
    })
    .await;
    // An update that leaves the secret alone writes nothing.
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "openmetadata".into(),
            display_name: Some("OpenMetadata".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One command run per change, each for a different content.
    let token_runs = lines(&token_log);
    let mut distinct = token_runs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), token_runs.len(), "{token_runs:?}");
    let writes = agent
        .metric("keyward_agent_writes_total", "ingestion")
        .await;
    assert_eq!(token_runs.len() as f64, writes);
    assert!(token_runs.len() >= 5, "{token_runs:?}");
    assert_eq!(lines(&secret_log), ["om-secret", "om-secret"]);
    assert_eq!(
        agent
            .metric("keyward_agent_writes_total", "om-secret")
            .await,
        2.0
    );

    let (code, health) = agent.health().await;
    assert_eq!(
        (code, health["status"].as_str()),
        (200, Some("ok")),
        "{health}"
    );
    // Nothing secret in health, metrics or the log.
    let metrics = common::http_get(&format!("{}/metrics", agent.health), &[])
        .await
        .body;
    let log = agent.log.lock().unwrap().join("\n");
    for secret in [rotated.as_str(), first.as_str(), last_token.trim()] {
        for (what, text) in [
            ("health", &health.to_string()),
            ("metrics", &metrics),
            ("log", &log),
        ] {
            assert!(!text.contains(secret), "a secret in the agent's {what}");
        }
    }
    agent.stop();
    server.stop().await;
}

/// A TCP relay that keeps one address for the agent while keyward behind it
/// stops and starts again elsewhere (what a Kubernetes Service does).
struct Relay {
    addr: String,
    target: Arc<Mutex<Option<String>>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let target = Arc::new(Mutex::new(Some(target.to_string())));
        let conns = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (t, c) = (target.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let Some(to) = t.lock().unwrap().clone() else {
                    continue; // dropped: connection refused, in effect
                };
                let task = tokio::spawn(async move {
                    let to = to.trim_start_matches("http://").to_string();
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            target,
            conns,
        }
    }

    /// Cuts every connection and refuses new ones until [`Self::to`].
    fn cut(&self) {
        *self.target.lock().unwrap() = None;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn to(&self, target: &str) {
        *self.target.lock().unwrap() = Some(target.to_string());
    }
}

async fn the_last_good_file_stays_while_keyward_is_down(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    common::create_keyset(&server, "om", "ES256").await;
    let signer = token(&server, "agent-signer", "signer", "om", dir.path()).await;
    let relay = Relay::start(&server.grpc_url).await;
    let jwt = dir.path().join("ingestion.jwt");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[token]]\nname = \"ingestion\"\npath = \"{}\"\nkeyset = \"om\"\nttl = \"18s\"\n",
            jwt.display()
        ),
    )
    .unwrap();
    let agent = Agent::start(&config, &relay.addr, &signer);
    until("the token file", Duration::from_secs(10), || jwt.exists()).await;
    let written = std::fs::read_to_string(&jwt).unwrap();
    let reading = Reader::start(jwt.clone(), &server.http_url, "om");
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // keyward stops for 12 s: past the renewal (11-12 s into the token's 18 s).
    relay.cut();
    server.stop().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        std::fs::read_to_string(&jwt).unwrap(),
        written,
        "the last good file stays"
    );
    let (code, health) = agent.health().await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["outputs"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("UNAVAILABLE")),
        "{health}"
    );
    assert_eq!(health["watch"][0]["connected"], false, "{health}");
    assert!(
        agent
            .metric("keyward_agent_refresh_failures_total", "ingestion")
            .await
            >= 1.0
    );

    // Back (a new process, new ports, same database): renewed at once.
    let server = TestServer::start(&db).await;
    *reading.jwks_from.lock().unwrap() = server.http_url.clone();
    relay.to(&server.grpc_url);
    let back = Instant::now();
    until("a renewed token", Duration::from_secs(10), || {
        std::fs::read_to_string(&jwt).unwrap() != written
    })
    .await;
    eprintln!("renewed {:?} after keyward came back", back.elapsed());
    let doc = jwks(&server.http_url, "om").await;
    valid(&jwt, &doc).unwrap();
    let started = Instant::now();
    loop {
        let (code, health) = agent.health().await;
        if code == 200 && health["status"] == "ok" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (reads, failures) = reading.stop();
    assert!(reads >= 12, "{reads} reads");
    assert!(failures.is_empty(), "invalid reads: {failures:?}");
    agent.stop();
    server.stop().await;
}

fn agent_once(config: &Path, endpoint: &str, token_file: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["agent", "--once", "--config"])
        .arg(config)
        .args(["--endpoint", endpoint, "--token-file"])
        .arg(token_file)
        .env_remove("KEYWARD_TOKEN")
        .output()
        .unwrap()
}

fn env_value(dir: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(dir.join("openmetadata.env"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

async fn openmetadata_exports_follow_rotations(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let dir = tempfile::tempdir().unwrap();
    common::create_keyset(&server, "om", "RS256").await;
    let exporter = token(&server, "om-export", "exporter", "om", dir.path()).await;
    let out = dir.path().join("om-keys");
    let log = dir.path().join("changes.log");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[openmetadata]]\nname = \"om\"\ndir = \"{}\"\nkeyset = \"om\"\nom_dir = \"/opt/om/keys\"\ncommand = 'echo restart >> {}'\n",
            out.display(),
            log.display()
        ),
    )
    .unwrap();

    // --once: written, then nothing changes and nothing runs again.
    let first = agent_once(&config, &server.grpc_url, &exporter);
    assert!(first.status.success(), "{first:?}");
    let kid = common::active_kid(&server, "om").await;
    assert_eq!(env_value(&out, "JWT_KEY_ID"), Some(kid.clone()));
    assert_eq!(
        env_value(&out, "RSA_PRIVATE_KEY_FILE_PATH").as_deref(),
        Some("/opt/om/keys/private_key.der")
    );
    let private = std::fs::read(out.join("private_key.der")).unwrap();
    assert!(private.len() > 1000);
    let again = agent_once(&config, &server.grpc_url, &exporter);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(lines(&log), ["restart"]);

    // Running: a rotation re-exports once, from the Watch.
    let agent = Agent::start(&config, &server.grpc_url, &exporter);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lines(&log), ["restart"], "a restart alone changes nothing");
    let kid = common::rotate_keyset(&server, "om").await;
    until("the new key exported", Duration::from_secs(10), || {
        env_value(&out, "JWT_KEY_ID").as_deref() == Some(kid.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lines(&log), ["restart", "restart"]);
    assert_ne!(std::fs::read(out.join("private_key.der")).unwrap(), private);
    agent.stop();

    // What cannot work is named, the exit code says which kind.
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        "[[openmetadata]]\ndir = \"x\"\nkeyset = \"billing\"\n",
    )
    .unwrap();
    let failed = agent_once(&missing, &server.grpc_url, &exporter);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    std::fs::write(&missing, "[[openmetadata]]\ndir = \"x\"\n").unwrap();
    let bad = agent_once(&missing, &server.grpc_url, &exporter);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("keyset"),
        "{bad:?}"
    );
    server.stop().await;
}

both_backends!(
    a_token_stays_valid_across_three_rotations,
    the_last_good_file_stays_while_keyward_is_down,
    openmetadata_exports_follow_rotations,
);
