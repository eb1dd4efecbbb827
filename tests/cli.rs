//! The `keyward` binary as an operator uses it: `serve` on the embedded SQLite
//! default, the admin CLI against it, SIGTERM, a wrong master key, and what
//! the database file holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use common::process::{cli, json_out, serve, serve_command, stdout};

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

#[test]
fn operator_workflow_on_the_sqlite_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let server = serve(&data, &[]).expect("serve starts on a fresh machine");
    let ep = server.grpc.clone();

    #[cfg(unix)]
    for (file, mode) in [("master.key", 0o600), ("admin.token", 0o600)] {
        use std::os::unix::fs::PermissionsExt as _;
        let m = std::fs::metadata(data.join(file))
            .expect(file)
            .permissions()
            .mode();
        assert_eq!(m & 0o777, mode, "{file}");
    }
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
    let token = token.trim();

    // Key sets, with the token read from <data-dir>/admin.token.
    let created = json_out(&cli(
        &data,
        &ep,
        &[
            "--output",
            "json",
            "keyset",
            "create",
            "om",
            "--alg",
            "RS256",
            "--rsa-bits",
            "3072",
        ],
        None,
    ));
    assert_eq!(created["name"], "om");
    assert_eq!(created["rsa_bits"], 3072);
    let kid = created["active_kid"].as_str().expect("kid").to_string();
    let table = stdout(&cli(&data, &ep, &["keyset", "list"], None));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("default") && table.contains(&kid), "{table}");

    let jwt = stdout(&cli(
        &data,
        &ep,
        &[
            "sign",
            "--keyset",
            "om",
            "--claims",
            r#"{"sub":"ingestion-bot"}"#,
            "--ttl",
            "15m",
        ],
        None,
    ));
    let jwt = jwt.trim();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");

    let rotated = json_out(&cli(
        &data,
        &ep,
        &["--output", "json", "keyset", "rotate", "om"],
        None,
    ));
    assert_eq!(rotated["warnings"].as_array().expect("warnings").len(), 1);
    assert_eq!(
        rotated["keys"]
            .as_array()
            .expect("the keys the table shows")
            .len(),
        3,
        "{rotated}"
    );
    let keys = json_out(&cli(
        &data,
        &ep,
        &["--output", "json", "keys", "list", "om"],
        None,
    ));
    let mut states: Vec<_> = keys
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["state"].as_str().unwrap_or("").to_string())
        .collect();
    states.sort();
    assert_eq!(states, ["active", "pending", "retired"]);

    // Clients: a given secret from stdin, a generated one printed once.
    let put = cli(
        &data,
        &ep,
        &[
            "client",
            "put",
            "om-sso",
            "--secret-stdin",
            "--scope",
            "openid",
            "--scope",
            "email",
            "--callback-url",
            "https://om.example.com/callback",
        ],
        Some("operator-chosen-secret-123\n"),
    );
    assert!(stdout(&put).contains("om-sso"));
    let generated = json_out(&cli(
        &data,
        &ep,
        &["--output", "json", "client", "put", "generated"],
        None,
    ));
    let generated_secret = generated["generated_secret"]
        .as_str()
        .expect("generated secret")
        .to_string();
    assert_eq!(
        stdout(&cli(&data, &ep, &["client", "secret", "om-sso"], None)).trim(),
        "operator-chosen-secret-123"
    );
    let got = stdout(&cli(&data, &ep, &["client", "get", "om-sso"], None));
    assert!(
        !got.contains("operator-chosen-secret-123"),
        "get never shows the secret"
    );
    let verified = cli(
        &data,
        &ep,
        &["client", "verify", "om-sso", "--secret-stdin"],
        Some("operator-chosen-secret-123\n"),
    );
    assert!(stdout(&verified).contains("valid (version 1)"));
    let wrong = cli(
        &data,
        &ep,
        &["client", "verify", "om-sso", "--secret-stdin"],
        Some("nope\n"),
    );
    assert_eq!(wrong.status.code(), Some(1));
    let rotated = json_out(&cli(
        &data,
        &ep,
        &[
            "--output", "json", "client", "rotate", "om-sso", "--grace", "1h",
        ],
        None,
    ));
    assert_eq!(rotated["version"], 2);
    assert!(stdout(&cli(&data, &ep, &["client", "list"], None)).contains("generated"));

    // Errors: non-zero exit, one line on stderr with the gRPC code and message.
    let missing = cli(&data, &ep, &["keyset", "get", "ghost"], None);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: NOT_FOUND: ") && err.contains("ghost"),
        "{err}"
    );
    let bad = cli(&data, &ep, &["keyset", "create", "Bad!"], None);
    assert!(
        String::from_utf8_lossy(&bad.stderr).starts_with("error: INVALID_ARGUMENT: invalid name")
    );
    let unauth = cli(&data, &ep, &["--token", "kw_wrong", "keyset", "list"], None);
    assert!(String::from_utf8_lossy(&unauth.stderr).starts_with("error: UNAUTHENTICATED"));
    let bad_ttl = cli(
        &data,
        &ep,
        &["sign", "--keyset", "om", "--claims", "{}", "--ttl", "soon"],
        None,
    );
    assert!(String::from_utf8_lossy(&bad_ttl.stderr).contains("invalid ttl"));

    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let log = log.join("\n");
    for secret in [
        token,
        "operator-chosen-secret-123",
        generated_secret.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }

    // The database files hold no secret and no private key in clear.
    let files = db_files(&data);
    assert!(!files.is_empty());
    let bytes: Vec<u8> = files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    for secret in [
        token,
        "operator-chosen-secret-123",
        generated_secret.as_str(),
        jwt,
    ] {
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

    // Restart on the same data dir: keys and secrets are still there.
    let server = serve(&data, &[]).expect("restart");
    let ep = server.grpc.clone();
    assert_eq!(
        stdout(&cli(
            &data,
            &ep,
            &["client", "secret", "om-sso", "--version", "1"],
            None
        ))
        .trim(),
        "operator-chosen-secret-123"
    );
    let jwks = reqwest_like_get(&format!("{}/keysets/om/jwks.json", server.http));
    assert!(
        jwks.contains(&kid),
        "the retired key is still published after restart"
    );
    let (status, _) = server.terminate();
    assert!(status.success());

    // A wrong master key refuses to start, with a clear message.
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

#[test]
fn two_serve_processes_share_rotations_within_two_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let one = serve(&data, &[]).expect("first replica");
    let two = serve(&data, &[("KEYWARD_NO_SCHEDULER", "true")]).expect("second replica");

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
    let shown = stdout(&cli(&data, &two.grpc, &["keyset", "get", "shared"], None));
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

    let started = std::time::Instant::now();
    loop {
        let body = reqwest_like_get(&format!("{}/keysets/shared/jwks.json", two.http));
        if body.contains(&active) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second process did not serve the rotation within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let signed = json_out(&cli(
        &data,
        &two.grpc,
        &[
            "--output", "json", "sign", "--keyset", "shared", "--claims", "{}", "--ttl", "30m",
        ],
        None,
    ));
    assert_eq!(
        signed["kid"],
        active.as_str(),
        "both replicas sign with the new key"
    );
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
