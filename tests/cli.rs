//! The `keyward` binary as an operator uses it: `serve` on the embedded SQLite
//! default, the admin CLI against it, SIGTERM, a wrong master key, and what
//! the database file holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use common::process::{Serve, cli, cli_within_two_seconds, json_out, serve, serve_command, stdout};
use serde_json::Value;
use tempfile::TempDir;

/// A fresh data directory with `keyward serve` running on its SQLite
/// default, and the admin CLI pointed at it: what an operator has after the
/// README's first command.
struct Operator {
    _dir: TempDir,
    data: PathBuf,
    server: Serve,
}

impl Operator {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let server = serve(&data, &[]).expect("serve starts on a fresh machine");
        Self {
            _dir: dir,
            data,
            server,
        }
    }

    /// Runs `keyward ARGS` against the server; the token comes from `<data-dir>/admin.token`.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        cli(&self.data, &self.server.grpc, args, stdin)
    }

    /// The standard output of a command that must succeed.
    fn text(&self, args: &[&str]) -> String {
        stdout(&self.run(args, None))
    }

    /// The `--output json` document of a command that must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let args: Vec<&str> = ["--output", "json"].iter().chain(args).copied().collect();
        json_out(&self.run(&args, None))
    }

    /// The one line a failing command printed to stderr.
    fn error(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?} must fail with status 1"
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
        err
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .expect("admin.token")
            .trim()
            .to_string()
    }

    /// A client with an operator-chosen secret given on stdin.
    fn put_client_with_secret(&self, id: &str, secret: &str) {
        let put = self.run(
            &[
                "client",
                "put",
                id,
                "--secret-stdin",
                "--scope",
                "openid",
                "--scope",
                "email",
                "--callback-url",
                "https://om.example.com/callback",
            ],
            Some(&format!("{secret}\n")),
        );
        assert!(stdout(&put).contains(id));
    }

    /// A client whose secret keyward generates; returns that secret.
    fn put_client_generated(&self, id: &str) -> String {
        let put = self.json(&["client", "put", id]);
        put["generated_secret"]
            .as_str()
            .expect("generated secret")
            .to_string()
    }

    /// SIGTERM; asserts a clean exit and returns the log.
    fn stop(self) -> (PathBuf, TempDir, String) {
        let (status, log) = self.server.terminate();
        assert!(status.success(), "SIGTERM exits 0, got {status}");
        (self.data, self._dir, log.join("\n"))
    }
}

fn db_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("keyward.db"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const CHOSEN_SECRET: &str = "operator-chosen-secret-123";

#[cfg(unix)]
#[test]
fn fresh_start_writes_master_key_and_admin_token_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let op = Operator::start();
    for file in ["master.key", "admin.token"] {
        let mode = std::fs::metadata(op.data.join(file))
            .expect(file)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(op.admin_token().starts_with("kw_"));
}

#[test]
fn keysets_are_created_signed_with_and_rotated() {
    let op = Operator::start();
    let created = op.json(&[
        "keyset",
        "create",
        "om",
        "--alg",
        "RS256",
        "--rsa-bits",
        "3072",
    ]);
    assert_eq!(created["name"], "om");
    assert_eq!(created["rsa_bits"], 3072);
    let kid = created["active_kid"].as_str().expect("kid").to_string();
    let table = op.text(&["keyset", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("default") && table.contains(&kid), "{table}");

    let jwt = op.text(&[
        "sign",
        "--keyset",
        "om",
        "--claims",
        r#"{"sub":"ingestion-bot"}"#,
        "--ttl",
        "15m",
    ]);
    assert_eq!(jwt.trim().split('.').count(), 3, "{jwt}");

    let rotated = op.json(&["keyset", "rotate", "om"]);
    assert_eq!(rotated["warnings"].as_array().expect("warnings").len(), 1);
    assert_eq!(
        rotated["keys"]
            .as_array()
            .expect("the keys the table shows")
            .len(),
        3,
        "{rotated}"
    );
    let keys = op.json(&["keys", "list", "om"]);
    let mut states: Vec<_> = keys
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["state"].as_str().unwrap_or("").to_string())
        .collect();
    states.sort();
    assert_eq!(states, ["active", "pending", "retired"]);
}

#[test]
fn client_secrets_are_given_generated_verified_and_rotated() {
    let op = Operator::start();
    op.put_client_with_secret("om-sso", CHOSEN_SECRET);
    op.put_client_generated("generated");
    assert_eq!(
        op.text(&["client", "secret", "om-sso"]).trim(),
        CHOSEN_SECRET
    );
    let got = op.text(&["client", "get", "om-sso"]);
    assert!(!got.contains(CHOSEN_SECRET), "get never shows the secret");

    let verify = |secret: &str| {
        op.run(
            &["client", "verify", "om-sso", "--secret-stdin"],
            Some(&format!("{secret}\n")),
        )
    };
    assert!(stdout(&verify(CHOSEN_SECRET)).contains("valid (version 1)"));
    assert_eq!(verify("nope").status.code(), Some(1));

    let rotated = op.json(&["client", "rotate", "om-sso", "--grace", "1h"]);
    assert_eq!(rotated["version"], 2);
    assert!(op.text(&["client", "list"]).contains("generated"));
}

#[test]
fn errors_are_one_line_naming_the_grpc_code() {
    let op = Operator::start();
    let missing = op.error(&["keyset", "get", "ghost"]);
    assert!(
        missing.starts_with("error: NOT_FOUND: ") && missing.contains("ghost"),
        "{missing}"
    );
    let bad = op.error(&["keyset", "create", "Bad!"]);
    assert!(
        bad.starts_with("error: INVALID_ARGUMENT: invalid name"),
        "{bad}"
    );
    let unauth = op.error(&["--token", "kw_wrong", "keyset", "list"]);
    assert!(unauth.starts_with("error: UNAUTHENTICATED"), "{unauth}");
    let bad_ttl = op.error(&[
        "sign", "--keyset", "default", "--claims", "{}", "--ttl", "soon",
    ]);
    assert!(bad_ttl.contains("invalid ttl"), "{bad_ttl}");
}

#[test]
fn no_secret_reaches_the_log_or_the_database_in_clear() {
    let op = Operator::start();
    let token = op.admin_token();
    op.put_client_with_secret("om-sso", CHOSEN_SECRET);
    let generated = op.put_client_generated("generated");
    let jwt = op.text(&["sign", "--keyset", "default", "--claims", "{}"]);
    for alg in ["RS256", "ES256", "EdDSA"] {
        op.text(&["keyset", "create", &alg.to_lowercase(), "--alg", alg]);
    }
    let (data, _dir, log) = op.stop();

    let secrets = [token.as_str(), CHOSEN_SECRET, &generated, jwt.trim()];
    for secret in &secrets[..3] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let files = db_files(&data);
    assert!(!files.is_empty());
    let bytes: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    for secret in secrets {
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "secret in clear in the database"
        );
    }
    // PKCS#8 headers: version 0 + rsaEncryption, version 0 + ecPublicKey, version 1 + Ed25519.
    let markers: [&[u8]; 3] = [
        &[
            0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
            0x01, 0x01,
        ],
        &[
            0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
        ],
        &[0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
    ];
    for marker in markers {
        assert!(
            !contains(&bytes, marker),
            "an unencrypted PKCS#8 key is in the database"
        );
    }
}

#[test]
fn restart_keeps_keys_and_secrets() {
    let op = Operator::start();
    let kid = op.json(&["keyset", "create", "om"])["active_kid"]
        .as_str()
        .expect("kid")
        .to_string();
    op.json(&["keyset", "rotate", "om"]);
    op.put_client_with_secret("om-sso", CHOSEN_SECRET);
    op.json(&["client", "rotate", "om-sso", "--grace", "1h"]);
    let (data, _dir, _) = op.stop();

    let server = serve(&data, &[]).expect("restart");
    let secret = cli(
        &data,
        &server.grpc,
        &["client", "secret", "om-sso", "--version", "1"],
        None,
    );
    assert_eq!(stdout(&secret).trim(), CHOSEN_SECRET);
    let jwks = reqwest_like_get(&format!("{}/keysets/om/jwks.json", server.http));
    assert!(
        jwks.contains(&kid),
        "the retired key is still published after restart"
    );
    assert!(server.terminate().0.success());
}

#[test]
fn a_wrong_master_key_refuses_to_start() {
    let (data, _dir, _) = Operator::start().stop();
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let refused =
        serve(&data, &[("KEYWARD_MASTER_KEY", other)]).expect_err("wrong key must refuse");
    assert!(refused.contains("wrong master key"), "{refused}");
    assert!(!refused.contains("exit status: 0"), "{refused}");
}

/// A tiny blocking HTTP/1.0 GET, enough for a JWKS.
fn reqwest_like_get(url: &str) -> String {
    use std::io::Read as _;
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn unreachable_database_is_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = serve_command(dir.path())
        .args(["--database-url", "postgres://postgres@127.0.0.1:1/none"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: cannot connect to PostgreSQL: "),
        "{err}"
    );
    assert!(err.contains("refused"), "the cause is named: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Two `keyward serve` processes sharing one data directory (one SQLite
/// database); only the first runs the scheduler.
fn two_replicas(dir: &TempDir) -> (PathBuf, Serve, Serve) {
    let data = dir.path().join("data");
    let one = serve(&data, &[]).expect("first replica");
    let two = serve(&data, &[("KEYWARD_NO_SCHEDULER", "true")]).expect("second replica");
    (data, one, two)
}

#[test]
fn two_serve_processes_share_rotations_within_two_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, one, two) = two_replicas(&dir);

    let created = json_out(&cli(
        &data,
        &one.grpc,
        &[
            "--output",
            "json",
            "keyset",
            "create",
            "shared",
            "--alg",
            "ES256",
            "--rotate-every",
            "7d",
            "--prepublish",
            "12h",
            "--retain",
            "2d",
            "--max-token-ttl",
            "30m",
        ],
        None,
    ));
    assert_eq!(created["rotation"], "every 7d");
    assert_eq!(created["prepublish"], "12h");
    // The other replica serves it from memory within 2 s.
    let shown = stdout(&cli_within_two_seconds(
        &data,
        &two.grpc,
        &["keyset", "get", "shared"],
    ));
    assert!(
        shown.contains("every 7d") && shown.contains("next_rotation"),
        "{shown}"
    );

    let dry = stdout(&cli(&data, &two.grpc, &["rotate", "--dry-run"], None));
    assert_eq!(dry.trim(), "nothing due", "{dry}");

    let rotated = cli(&data, &one.grpc, &["keyset", "rotate", "shared"], None);
    let warning = String::from_utf8_lossy(&rotated.stderr).to_string();
    assert!(
        warning.starts_with("warning: "),
        "a young pending key is promoted with a warning: {warning}"
    );
    let keys = json_out(&cli(
        &data,
        &one.grpc,
        &["--output", "json", "keys", "list", "shared"],
        None,
    ));
    let active = keys
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["state"] == "active")
        .and_then(|k| k["kid"].as_str())
        .expect("active key")
        .to_string();
    assert_ne!(active, created["active_kid"].as_str().unwrap_or_default());

    // The new active key was published (pending) before the rotation; the
    // second process signs with it within 2 s.
    let started = std::time::Instant::now();
    loop {
        let signed = json_out(&cli(
            &data,
            &two.grpc,
            &[
                "--output", "json", "sign", "--keyset", "shared", "--claims", "{}", "--ttl", "30m",
            ],
            None,
        ));
        if signed["kid"] == active.as_str() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second process did not sign with the new key within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = reqwest_like_get(&format!("{}/keysets/shared/jwks.json", two.http));
    assert!(body.contains(&active), "{body}");
    let too_long = cli(
        &data,
        &two.grpc,
        &[
            "sign", "--keyset", "shared", "--claims", "{}", "--ttl", "31m",
        ],
        None,
    );
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("max-token-ttl"));

    assert!(one.terminate().0.success());
    assert!(two.terminate().0.success());
}

/// A token made on one replica works on the other, and its revocation on the
/// first is refused by the second within 2 s; `keyward rotate` runs with a
/// rotator token and nothing more.
#[test]
fn a_token_revoked_on_one_replica_is_refused_by_another_within_two_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, one, two) = two_replicas(&dir);

    let created = json_out(&cli(
        &data,
        &one.grpc,
        &[
            "--output",
            "json",
            "token",
            "create",
            "cron",
            "--role",
            "rotator",
            "--expires-in",
            "90d",
            "--description",
            "nightly rotation",
        ],
        None,
    ));
    for field in ["name", "role", "token", "keysets", "clients", "expires_at"] {
        assert!(created.get(field).is_some(), "{field} in {created}");
    }
    assert_eq!(created["role"], "rotator");
    let token = created["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("kw_"));

    let rotate = |endpoint: &str| {
        cli(
            &data,
            endpoint,
            &["--token", &token, "rotate", "--dry-run"],
            None,
        )
    };
    let started = std::time::Instant::now();
    while !rotate(&two.grpc).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second replica did not accept the new token within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let denied = cli(
        &data,
        &two.grpc,
        &["--token", &token, "keyset", "list"],
        None,
    );
    let err = String::from_utf8_lossy(&denied.stderr).to_string();
    assert!(
        err.starts_with("error: PERMISSION_DENIED") && err.contains("role rotator"),
        "{err}"
    );
    let listed = stdout(&cli(&data, &two.grpc, &["token", "list"], None));
    assert!(
        listed.contains("cron") && !listed.contains(&token),
        "{listed}"
    );

    stdout(&cli(&data, &one.grpc, &["token", "revoke", "cron"], None));
    let revoked = std::time::Instant::now();
    loop {
        let out = rotate(&two.grpc);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(err.starts_with("error: UNAUTHENTICATED"), "{err}");
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(2),
            "the second replica still accepted the revoked token after 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(one.terminate().0.success());
    assert!(two.terminate().0.success());
}

#[test]
fn the_audit_log_is_listed_and_verified_from_the_cli() {
    let op = Operator::start();
    op.text(&["keyset", "create", "audited", "--alg", "ES256"]);
    op.text(&["sign", "--keyset", "audited", "--claims", "{}"]);
    let created = op.json(&["audit", "list", "--action", "CreateKeySet"]);
    let created = created.as_array().expect("a JSON array");
    assert_eq!(created.len(), 1, "{created:?}");
    let event = &created[0];
    assert_eq!(
        (&event["principal"], &event["target"], &event["outcome"]),
        (
            &Value::from("bootstrap"),
            &Value::from("audited"),
            &Value::from("OK")
        )
    );
    let id = event["id"].as_i64().expect("id");
    let table = op.text(&["audit", "list", "--since", "1h", "--limit", "5"]);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("REQUEST_ID")),
        "{table}"
    );
    assert!(table.contains("CreateKeySet"), "{table}");
    let usage = op.run(&["audit", "list", "--since", "last tuesday"], None);
    assert_eq!(usage.status.code(), Some(2));
    let intact = op.text(&["audit", "verify"]);
    assert!(intact.starts_with("audit chain intact"), "{intact}");

    // Someone with write access to the database rewrites history.
    let db = format!("sqlite://{}", op.data.join("keyward.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
        sqlx::query("UPDATE audit_events SET target = 'elsewhere' WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    });
    let err = op.error(&["audit", "verify"]);
    assert!(err.contains(&format!("broken at event {id}")), "{err}");
    let json = op.run(&["--output", "json", "audit", "verify"], None);
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (&report["intact"], &report["broken_id"]),
        (&Value::Bool(false), &Value::from(id))
    );
    op.stop();
}
