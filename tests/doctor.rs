//! `keyward doctor` and `keyward backup`, run as an operator runs them: the
//! binary against a real server and database. Each doctor check is driven
//! into `ok` and into `warn` or `fail`; the README's restore steps are
//! followed to the letter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    path::Path,
    process::{Command, Output},
    sync::{Arc, Mutex},
};

use common::{Backend, TestDb, TestServer, process};
use keyward::{config::MasterKeySource, crypto::aead::MasterKey, transport::grpc::pb};
use serde_json::{Value, json};

/// `keyward … doctor` against `server` on `db`; `extra` goes after `doctor`.
fn doctor(db: &TestDb, server: &TestServer, env: &[(&str, &str)], extra: &[&str]) -> (i32, Value) {
    let mut cmd = Command::new(process::BIN);
    cmd.arg("--data-dir")
        .arg(db.data_dir())
        .args(["--endpoint", &server.grpc_url, "--output", "json", "doctor"])
        .args(["--http-url", &server.http_url])
        .args(extra)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_DATABASE_URL");
    if !extra.contains(&"--database-url") {
        cmd.args(["--database-url", &db.url]);
    }
    if let MasterKeySource::Inline(key) = &db.master_key {
        cmd.env("KEYWARD_MASTER_KEY", key.expose());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run keyward doctor");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The status of the check named `name` (`None` if absent).
fn status<'a>(report: &'a Value, name: &str) -> Option<&'a str> {
    report["checks"]
        .as_array()?
        .iter()
        .find(|c| c["check"] == name)?
        .get("status")?
        .as_str()
}

fn assert_status(report: &Value, name: &str, want: &str) {
    assert_eq!(
        status(report, name),
        Some(want),
        "check {name:?} in {}",
        serde_json::to_string_pretty(report).unwrap()
    );
    if want != "ok" {
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap();
        assert!(
            check["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "a {want} says how to fix it: {check}"
        );
    }
}

fn now() -> i64 {
    keyward::domain::clock::Clock::now(&keyward::domain::clock::SystemClock)
}

async fn doctor_checks_a_deployment(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    common::create_keyset(&server, "short", "ES256").await;

    let (code, report) = doctor(&db, &server, &[], &[]);
    for name in [
        "configuration",
        "database",
        "migrations",
        "master key",
        "clock",
        "server: gRPC",
        "server: HTTP",
        "keyset default: rotation",
        "keyset default: pre-publication",
        "keyset default: retention",
        "keyset default: key size",
        "keyset default: active key",
        "keyset short: rotation",
    ] {
        assert_status(&report, name, "ok");
    }
    assert_eq!(
        (report["warn"].as_u64(), report["fail"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(code, 0);

    // Warnings alone: still exit 0.
    let raw = db.raw().await;
    raw.exec("UPDATE keysets SET prepublish = 60 WHERE name = 'short'")
        .await;
    raw.exec("UPDATE _sqlx_migrations SET success = false WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .await;
    let (code, report) = doctor(&db, &server, &[], &[]);
    assert_status(&report, "keyset short: pre-publication", "warn");
    assert_status(&report, "migrations", "warn");
    assert_eq!(report["fail"].as_u64(), Some(0), "{report}");
    assert_eq!(code, 0, "warnings alone pass");

    // Each failure is named, and the run fails.
    raw.exec("UPDATE keysets SET retain = 60 WHERE name = 'short'")
        .await;
    raw.exec("UPDATE keysets SET rsa_bits = 1024 WHERE name = 'default'")
        .await;
    raw.exec(&format!(
        "UPDATE keysets SET next_rotation_at = {} WHERE name = 'short'",
        now() - 3 * 86_400
    ))
    .await;
    raw.exec(&format!(
        "UPDATE keys SET kid = 'imported-by-hand', activated_at = {} \
         WHERE state = 'active' AND keyset_id = (SELECT id FROM keysets WHERE name = 'default')",
        now() - 60 * 86_400
    ))
    .await;
    raw.exec("UPDATE _sqlx_migrations SET success = true, version = 99990101000000 WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .await;
    let (code, report) = doctor(&db, &server, &[], &[]);
    assert_status(&report, "keyset short: retention", "fail");
    assert_status(&report, "keyset default: key size", "fail");
    assert_status(&report, "keyset short: rotation", "fail");
    assert_status(&report, "keyset default: imported key", "warn");
    assert_status(&report, "migrations", "fail");
    assert_eq!(code, 1);

    // A clock behind what the database holds.
    raw.exec(&format!(
        "UPDATE keysets SET created_at = {} WHERE name = 'short'",
        now() + 86_400
    ))
    .await;
    let (_, report) = doctor(&db, &server, &[], &[]);
    assert_status(&report, "clock", "fail");

    // Another master key.
    let other = String::from_utf8(MasterKey::generate_base64().expose().to_vec()).unwrap();
    let (code, report) = doctor(&db, &server, &[("KEYWARD_MASTER_KEY", &other)], &[]);
    assert_status(&report, "master key", "fail");
    assert_eq!(code, 1);

    // The server gone: both listeners fail; --offline skips them.
    let (grpc, http) = (server.grpc_url.clone(), server.http_url.clone());
    server.stop().await;
    let mut cmd = Command::new(process::BIN);
    let out = cmd
        .arg("--data-dir")
        .arg(db.data_dir())
        .args(["--endpoint", &grpc, "doctor", "--database-url", &db.url])
        .args(["--http-url", &http])
        .envs(match &db.master_key {
            MasterKeySource::Inline(key) => vec![("KEYWARD_MASTER_KEY", key.expose().to_string())],
            _ => vec![],
        })
        .output()
        .expect("doctor");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fail") && l.contains("server: gRPC")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fail") && l.contains("server: HTTP")),
        "{table}"
    );
    assert!(table.contains("fix: "), "{table}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("check(s) failed"));
    assert_eq!(out.status.code(), Some(1));
}

/// A stand-in for OpenMetadata's `/api/v1/system/config/jwks`.
async fn fake_openmetadata(jwks: Arc<Mutex<Value>>) -> String {
    let app = axum::Router::new().route(
        "/api/v1/system/config/jwks",
        axum::routing::get(move || {
            let jwks = Arc::clone(&jwks);
            async move { axum::Json(jwks.lock().unwrap().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn om_key(kid: &str) -> Value {
    json!({ "keys": [{ "kty": "RSA", "kid": kid, "n": "AQAB", "e": "AQAB", "alg": "RS256", "use": "sig" }] })
}

async fn doctor_judges_what_openmetadata_publishes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let jwks = Arc::new(Mutex::new(om_key(
        keyward::ops::doctor::OPENMETADATA_DEFAULT_KID,
    )));
    let om = fake_openmetadata(Arc::clone(&jwks)).await;
    let with_om = ["--openmetadata-url", om.as_str(), "--offline"];

    let (code, report) = doctor(&db, &server, &[], &with_om);
    assert_status(&report, "openmetadata: default key", "warn");
    assert_status(&report, "openmetadata: key", "warn");
    assert_eq!(code, 0);
    assert!(status(&report, "server: gRPC").is_none(), "--offline");

    let active = server
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .active_kid;
    *jwks.lock().unwrap() = om_key(&active);
    let (_, report) = doctor(&db, &server, &[], &with_om);
    assert_status(&report, "openmetadata: default key", "ok");
    assert_status(&report, "openmetadata: key", "ok");

    // keyward rotated away from the key OpenMetadata still signs with.
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    let (_, report) = doctor(&db, &server, &[], &with_om);
    assert_status(&report, "openmetadata: key", "warn");
    let detail = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "openmetadata: key")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("retired"), "{detail}");

    *jwks.lock().unwrap() = json!({ "keys": [] });
    let (code, report) = doctor(&db, &server, &[], &with_om);
    assert_status(&report, "openmetadata", "fail");
    assert_eq!(code, 1);
    server.stop().await;
}

both_backends!(
    doctor_checks_a_deployment,
    doctor_judges_what_openmetadata_publishes
);

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(process::BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_DATABASE_URL")
        .output()
        .expect("run keyward")
}

/// The README's backup and restore, step by step: a backup taken while
/// keyward serves, restored into a fresh data directory with the same master
/// key, serves the same JWKS and secrets.
#[test]
fn backup_while_serving_then_restore_as_the_readme_says() {
    let old = tempfile::tempdir().unwrap();
    let serving = process::serve(old.path(), &[]).unwrap();
    let secret = "s3cret-value-for-the-backup-test";
    let made = process::cli(
        old.path(),
        &serving.grpc,
        &["client", "put", "ingestion", "--secret-stdin"],
        Some(secret),
    );
    process::stdout(&made);
    let created = process::cli(
        old.path(),
        &serving.grpc,
        &["keyset", "create", "om", "--alg", "ES256"],
        None,
    );
    process::stdout(&created);

    // keyward backup --out /backups/keyward-….db, while it serves.
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("keyward-backup.db");
    let file_arg = file.to_str().unwrap();
    let out = run(old.path(), &["backup", "--out", file_arg]);
    let said = process::stdout(&out);
    assert!(
        said.contains("mode 0600") && said.contains("master key"),
        "{said}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let first = std::fs::read(&file).unwrap();
    let again = run(old.path(), &["backup", "--out", file_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("never overwrites"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(&file).unwrap(), first, "left untouched");
    assert!(
        std::fs::read_dir(backups.path()).unwrap().count() == 1,
        "no staged file is left behind"
    );

    // Restore: a fresh data directory holding the backup as keyward.db,
    // served with the same master key.
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&file, data.join("keyward.db")).unwrap();
    std::fs::set_permissions(
        data.join("keyward.db"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let key_file = old.path().join("master.key");
    let mut cmd = process::serve_command(&data);
    cmd.env_remove("KEYWARD_DATABASE_URL")
        .arg("--master-key-file")
        .arg(&key_file);
    let restored_server = process::spawn_serve(cmd).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for path in ["/.well-known/jwks.json", "/keysets/om/jwks.json"] {
            let before = common::http_get(&format!("{}{path}", serving.http), &[]).await;
            let after = common::http_get(&format!("{}{path}", restored_server.http), &[]).await;
            assert_eq!(before.status, 200);
            assert_eq!(after.body, before.body, "{path} is served the same");
        }
    });
    // The admin token still opens it (its hash is in the database).
    let token = old.path().join("admin.token");
    let shown = process::cli(
        &data,
        &restored_server.grpc,
        &[
            "--token-file",
            token.to_str().unwrap(),
            "client",
            "secret",
            "ingestion",
        ],
        None,
    );
    assert_eq!(process::stdout(&shown).trim(), secret);
    let (status, _) = restored_server.terminate();
    assert!(status.success());
    let (status, _) = serving.terminate();
    assert!(status.success());
}

/// On PostgreSQL, backup says what to run instead and writes nothing.
#[tokio::test]
async fn backup_on_postgres_prints_the_pg_dump_command() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("pg.dump");
    let out = run(
        db.data_dir(),
        &[
            "backup",
            "--out",
            file.to_str().unwrap(),
            "--database-url",
            &db.url,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("pg_dump --format=custom --file"), "{said}");
    let database = db.url.rsplit('/').next().unwrap();
    assert!(said.contains(database), "names the database: {said}");
    assert!(!file.exists());
}
