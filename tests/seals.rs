//! Seals, on SQLite and PostgreSQL, against real servers on this machine:
//! SoftHSM2 through its PKCS#11 library, OpenBao's Transit engine
//! (`bao server -dev`) and AWS KMS (moto's server; with the `aws-kms`
//! feature). keyward started sealed, restarted, started with one
//! of two seals stopped, refused with the seal's own error (a wrong PIN, a
//! Transit key version disallowed, a KMS user who may not decrypt), migrated file → PKCS#11 → Transit while
//! clients read secrets and sign throughout, the wrapping start killed with
//! SIGKILL and run again; the master key's bytes are nowhere in the database,
//! the logs or a backup.
//!
//! SoftHSM2 (`softhsm2-util`, `pkcs11-tool` from OpenSC) and OpenBao (`bao`,
//! or `KEYWARD_TEST_BAO`) and moto (`moto[server]`) are installed by
//! `.ci/run`; elsewhere a test without them says SKIPPED.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{
    As, Backend, TestDb, hex, process,
    seals::{Bao, Hsm, Moto, SealEnv, TOKEN, check},
};
use keyward::{config::MasterKeySource, transport::grpc::pb};
use serde_json::Value;

/// How a replica gets its keyring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    /// The key file (SQLite: `<data-dir>/master.key`; PostgreSQL:
    /// `KEYWARD_MASTER_KEY`) beside the seals.
    File,
    /// The seals alone.
    Sealed,
}

/// `keyward serve` on `db` with `seals`; SoftHSM's config in its
/// environment when `hsm` is given.
fn serve_command(db: &TestDb, key: Key, seals: &[String], env: Option<&dyn SealEnv>) -> Command {
    let mut cmd = match key {
        Key::File => db.serve_command(db.data_dir()),
        Key::Sealed => {
            let mut cmd = process::serve_command(db.data_dir());
            cmd.env("KEYWARD_DATABASE_URL", &db.url);
            cmd
        }
    };
    for seal in seals {
        cmd.arg("--seal").arg(seal);
    }
    cmd.env_remove("KEYWARD_SEALS")
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN")
        .env_remove("KEYWARD_PKCS11_PIN");
    if let Some(env) = env {
        env.apply(&mut cmd);
    }
    cmd
}

fn serve(db: &TestDb, key: Key, seals: &[String], env: Option<&dyn SealEnv>) -> process::Serve {
    process::spawn_serve(serve_command(db, key, seals, env))
        .unwrap_or_else(|e| panic!("keyward serve: {e}"))
}

fn refused(db: &TestDb, key: Key, seals: &[String], env: Option<&dyn SealEnv>) -> String {
    match process::spawn_serve(serve_command(db, key, seals, env)) {
        Ok(serving) => panic!("started: {:?}", serving.startup_log),
        Err(said) => said,
    }
}

/// A start with seals alone that is refused, its message naming every one of
/// `named`; it wrote nothing (the audit log, written at every start, is as it was).
async fn refused_writing_nothing(
    db: &TestDb,
    seals: &[String],
    env: Option<&dyn SealEnv>,
    named: &[&str],
) {
    let before = audit_rows(db).await;
    let said = refused(db, Key::Sealed, seals, env);
    for text in named.iter().chain(&["nothing was written"]) {
        assert!(said.contains(text), "{text:?} not in: {said}");
    }
    assert_eq!(
        audit_rows(db).await,
        before,
        "a refused start writes nothing"
    );
}

/// `keyward --output json doctor --offline` with `seals`.
fn doctor(db: &TestDb, seals: &[String], env: Option<&dyn SealEnv>) -> std::process::Output {
    local_cli(db, &["--output", "json", "doctor", "--offline"], seals, env)
}

/// [`doctor`], which must pass: its report.
fn doctor_passes(db: &TestDb, seals: &[String], env: Option<&dyn SealEnv>) -> String {
    let out = doctor(db, seals, env);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// `keyward ARGS --database-url … --seal …` (local, on the database).
fn local_cli(
    db: &TestDb,
    args: &[&str],
    seals: &[String],
    env: Option<&dyn SealEnv>,
) -> std::process::Output {
    let mut cmd = Command::new(process::BIN);
    cmd.arg("--data-dir")
        .arg(db.data_dir())
        .args(args)
        .arg("--database-url")
        .arg(&db.url)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_SEALS")
        .env_remove("KEYWARD_TOKEN");
    for seal in seals {
        cmd.arg("--seal").arg(seal);
    }
    if let Some(env) = env {
        env.apply(&mut cmd);
    }
    cmd.output().expect("keyward")
}

fn admin_token(db: &TestDb) -> String {
    std::fs::read_to_string(db.data_dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn api(db: &TestDb, serving: &process::Serve) -> As {
    As::at(&serving.grpc, &admin_token(db))
}

/// Clients with known secrets and an ES256 key set.
async fn store_some(api: &mut As, prefix: &str, n: usize) -> BTreeMap<String, String> {
    let mut made = BTreeMap::new();
    for i in 0..n {
        let (id, secret) = (
            format!("{prefix}-{i}"),
            format!("s3cret-{prefix}-{i}-{}", i * 31),
        );
        api.clients
            .put_client(pb::PutClientRequest {
                id: id.clone(),
                secret: Some(secret.clone()),
                ..Default::default()
            })
            .await
            .expect("PutClient");
        made.insert(id, secret);
    }
    made
}

/// Every secret reads back, and the default key set signs.
async fn reads_back(api: &mut As, secrets: &BTreeMap<String, String>) {
    common::secrets_read_back(&mut api.clients, secrets).await;
    api.keysets
        .sign_jwt(pb::SignJwtRequest {
            keyset: "default".into(),
            claims_json: r#"{"sub":"sealed"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("SignJwt");
}

/// `keyward master status -o json` on the database, with `seals`.
fn master_status(db: &TestDb, seals: &[String], env: Option<&dyn SealEnv>) -> Value {
    let out = local_cli(db, &["--output", "json", "master", "status"], seals, env);
    process::json_out(&out)
}

fn seal_entry<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["seals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["seal"] == id)
        .unwrap_or_else(|| panic!("{id} not in {status}"))
}

async fn audit_actions(api: &mut As) -> Vec<(String, String, String)> {
    common::audit_events(&mut api.audit)
        .await
        .into_iter()
        .map(|e| (e.action, e.target, e.outcome))
        .collect()
}

async fn audit_rows(db: &TestDb) -> i64 {
    db.raw()
        .await
        .scalar::<i64>("SELECT count(*) FROM audit_events")
        .await
}

/// Started by SoftHSM2 alone on a fresh database: no key file is written,
/// a restart opens everything, status and the audit log show the seal,
/// doctor round-trips it; a wrong PIN refuses the start, naming the seal
/// and the token's error, with nothing written.
async fn sealed_by_softhsm_from_the_first_start(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let Some(hsm) = Hsm::new() else { return };
    let seals = vec![hsm.seal()];
    let serving = serve(&db, Key::Sealed, &seals, Some(&hsm));
    assert!(
        !db.data_dir().join("master.key").exists(),
        "no master.key is written with a seal"
    );
    let secrets = store_some(&mut api(&db, &serving), "hsm", 5).await;
    serving.terminate();

    let serving = serve(&db, Key::Sealed, &seals, Some(&hsm));
    let mut client = api(&db, &serving);
    reads_back(&mut client, &secrets).await;
    let events = audit_actions(&mut client).await;
    assert!(
        events
            .iter()
            .any(|(a, t, o)| a == "MasterKeyWrap" && t.contains(&hsm.id()) && o == "OK"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .filter(|(a, t, _)| a == "MasterKeyUnwrap" && t.contains(&hsm.id()))
            .count()
            >= 1,
        "{events:?}"
    );
    let status = master_status(&db, &seals, Some(&hsm));
    let current = status["current"].as_str().unwrap().to_string();
    let entry = seal_entry(&status, &hsm.id());
    assert_eq!(entry["answered"], true, "{status}");
    assert_eq!(entry["wraps"], serde_json::json!([current]), "{status}");
    // Two starts, one wrap and one current key: one event each.
    let raw = db.raw().await;
    let wrapped: i64 = raw
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE kind = 'seal.changed' \
             AND detail = 'seal {} wraps master key {current}'",
            hsm.id()
        ))
        .await;
    assert_eq!(wrapped, 1);
    let announced: i64 = raw
        .scalar("SELECT count(*) FROM events WHERE kind = 'master.changed'")
        .await;
    assert_eq!(announced, 1);
    assert_eq!(
        status["keys"][0]["wrapped_by"],
        serde_json::json!([hsm.id()])
    );
    let remote = process::cli(
        db.data_dir(),
        &serving.grpc,
        &["--output", "json", "master", "status", "--remote"],
        None,
    );
    let remote = process::json_out(&remote);
    assert_eq!(seal_entry(&remote, &hsm.id())["answered"], true, "{remote}");

    let report = doctor_passes(&db, &seals, Some(&hsm));
    assert!(
        report.contains("wrapped and unwrapped a random challenge"),
        "{report}"
    );
    assert!(report.contains("cannot leave the token"), "{report}");
    // A key whose material may leave the token: doctor warns.
    check(
        Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &hsm.conf)
            .arg("--module")
            .arg(&hsm.module)
            .args(["--token-label", TOKEN, "--login", "--pin", &hsm.pin()])
            .args([
                "--keygen",
                "--key-type",
                "AES:32",
                "--label",
                "loose",
                "--extractable",
            ]),
    );
    let loose = hsm.seal().replace("key=master", "key=loose");
    let report: Value = serde_json::from_slice(&doctor(&db, &[loose], Some(&hsm)).stdout).unwrap();
    let permissions = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["check"]
                .as_str()
                .unwrap()
                .ends_with("key=loose permissions")
        })
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(permissions["status"], "warn", "{report}");
    assert!(
        permissions["detail"]
            .as_str()
            .unwrap()
            .contains("CKA_EXTRACTABLE is true"),
        "{report}"
    );
    serving.terminate();

    refused_writing_nothing(
        &db,
        &[hsm.seal_with_wrong_pin()],
        Some(&hsm),
        &[&hsm.id(), "CKR_PIN_INCORRECT"],
    )
    .await;
}

/// Started by OpenBao Transit: a Transit key rotated on OpenBao's side still
/// opens what its first version wrapped; an AppRole limited to encrypt and
/// decrypt serves and passes doctor; a key version OpenBao disallows
/// refuses the start with OpenBao's error.
async fn sealed_by_openbao_transit(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let Some(bao) = Bao::start() else { return };
    let seals = vec![bao.seal()];
    let serving = serve(&db, Key::Sealed, &seals, None);
    let secrets = store_some(&mut api(&db, &serving), "bao", 5).await;
    serving.terminate();

    bao.cli(&["write", "-f", "transit/keys/keyward/rotate"]);
    let serving = serve(&db, Key::Sealed, &seals, None);
    reads_back(&mut api(&db, &serving), &secrets).await;
    serving.terminate();

    let approle = vec![bao.approle_seal()];
    let serving = serve(&db, Key::Sealed, &approle, None);
    reads_back(&mut api(&db, &serving), &secrets).await;
    serving.terminate();
    let report = doctor_passes(&db, &approle, None);
    assert!(
        report.contains("wrapped and unwrapped a random challenge"),
        "{report}"
    );

    // What version 1 wrapped is now too old for OpenBao.
    bao.cli(&[
        "write",
        "transit/keys/keyward/config",
        "min_decryption_version=2",
    ]);
    refused_writing_nothing(&db, &seals, None, &[&bao.id(), "disallowed by policy"]).await;
}

/// Wrapped by both; with OpenBao stopped, SoftHSM opens the keyring and
/// status shows which seal did not answer; with the PIN wrong too, the
/// refusal names both.
async fn two_seals_one_stopped(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let Some(hsm) = Hsm::new() else { return };
    let Some(mut bao) = Bao::start() else { return };
    let seals = vec![bao.seal(), hsm.seal()];
    let serving = serve(&db, Key::Sealed, &seals, Some(&hsm));
    let secrets = store_some(&mut api(&db, &serving), "two", 3).await;
    serving.terminate();
    let status = master_status(&db, &seals, Some(&hsm));
    let current = status["current"].as_str().unwrap().to_string();
    for id in [bao.id(), hsm.id()] {
        assert_eq!(
            seal_entry(&status, &id)["wraps"],
            serde_json::json!([current])
        );
    }

    bao.stop();
    let serving = serve(&db, Key::Sealed, &seals, Some(&hsm));
    reads_back(&mut api(&db, &serving), &secrets).await;
    let remote = process::cli(
        db.data_dir(),
        &serving.grpc,
        &["--output", "json", "master", "status", "--remote"],
        None,
    );
    let remote = process::json_out(&remote);
    let transit = seal_entry(&remote, &bao.id());
    assert_eq!(transit["asked"], true, "{remote}");
    assert_eq!(transit["answered"], false, "{remote}");
    assert!(!transit["error"].as_str().unwrap().is_empty(), "{remote}");
    assert_eq!(seal_entry(&remote, &hsm.id())["answered"], true, "{remote}");
    serving.terminate();

    let said = refused(
        &db,
        Key::Sealed,
        &[bao.seal(), hsm.seal_with_wrong_pin()],
        Some(&hsm),
    );
    assert!(
        said.contains(&bao.id()) && said.contains(&hsm.id()) && said.contains("CKR_PIN_INCORRECT"),
        "{said}"
    );
}

/// Sealed by AWS KMS (moto's server, IAM enforced, SigV4 checked) as an IAM
/// user that may only encrypt and decrypt: no key file, a restart opens
/// everything, doctor round-trips the key; a user that may not decrypt
/// refuses the start with KMS's words and nothing written; a disabled key
/// is named by doctor; with KMS stopped, Transit beside it opens the
/// keyring. Built without the `aws-kms` feature, the seal is refused
/// saying how to build it.
async fn sealed_by_aws_kms(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    if !cfg!(feature = "aws-kms") {
        let seal = "awskms:alias/keyward?region=eu-west-1".to_string();
        let said = refused(&db, Key::Sealed, std::slice::from_ref(&seal), None);
        assert!(
            said.contains(&seal) && said.contains("--features aws-kms"),
            "{said}"
        );
        return;
    }
    let Some(mut moto) = Moto::start() else {
        return;
    };
    let Some(bao) = Bao::start() else { return };
    let seals = vec![moto.seal()];
    let credentials = moto.keyward.clone();
    let keyward = Some(&credentials as &dyn SealEnv);
    let serving = serve(&db, Key::Sealed, &seals, keyward);
    assert!(
        !db.data_dir().join("master.key").exists(),
        "no master.key is written with a seal"
    );
    let secrets = store_some(&mut api(&db, &serving), "kms", 5).await;
    serving.terminate();

    let serving = serve(&db, Key::Sealed, &seals, keyward);
    let mut client = api(&db, &serving);
    reads_back(&mut client, &secrets).await;
    let events = audit_actions(&mut client).await;
    for action in ["MasterKeyWrap", "MasterKeyUnwrap"] {
        assert!(
            events
                .iter()
                .any(|(a, t, o)| a == action && t.contains(&moto.id()) && o == "OK"),
            "{action} {events:?}"
        );
    }
    serving.terminate();
    let status = master_status(&db, &seals, keyward);
    let current = status["current"].as_str().unwrap().to_string();
    assert_eq!(
        seal_entry(&status, &moto.id())["wraps"],
        serde_json::json!([current]),
        "{status}"
    );
    let report = doctor_passes(&db, &seals, keyward);
    for said in [
        "wrapped and unwrapped a random challenge",
        "may not DescribeKey",
    ] {
        assert!(report.contains(said), "{said}: {report}");
    }

    refused_writing_nothing(
        &db,
        &seals,
        Some(&moto.encrypt_only),
        &[&moto.id(), "Decrypt: permission denied", "kms:Decrypt"],
    )
    .await;

    // Transit joins (both wrap the keyring), KMS's key is disabled: doctor
    // (as a user who may DescribeKey) names it; then KMS stops, and Transit
    // opens the keyring alone.
    let both = vec![moto.seal(), bao.seal()];
    serve(&db, Key::Sealed, &both, keyward).terminate();
    moto.on_key("disable_key");
    let report: Value =
        serde_json::from_slice(&doctor(&db, &seals, Some(&moto.admin)).stdout).unwrap();
    let permissions = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == format!("seal {} permissions", moto.id()))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(permissions["status"], "warn", "{report}");
    assert!(
        permissions["detail"]
            .as_str()
            .unwrap()
            .contains("is Disabled"),
        "{report}"
    );
    moto.stop();
    let serving = serve(&db, Key::Sealed, &both, keyward);
    reads_back(&mut api(&db, &serving), &secrets).await;
    let remote = process::cli(
        db.data_dir(),
        &serving.grpc,
        &["--output", "json", "master", "status", "--remote"],
        None,
    );
    let remote = process::json_out(&remote);
    let kms = seal_entry(&remote, &moto.id());
    assert_eq!(kms["answered"], false, "{remote}");
    assert!(
        kms["error"].as_str().unwrap().contains("unreachable"),
        "{remote}"
    );
    assert_eq!(seal_entry(&remote, &bao.id())["answered"], true, "{remote}");
    serving.terminate();
}

/// The master key's text as configured, and its raw bytes.
fn master_key_bytes(db: &TestDb) -> (String, Vec<u8>) {
    let text = match &db.master_key {
        MasterKeySource::Inline(text) => text.expose().to_string(),
        _ => std::fs::read_to_string(db.data_dir().join("master.key")).unwrap(),
    };
    let text = text.trim().to_string();
    let raw = STANDARD.decode(&text).expect("base64 master key");
    (text, raw)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every byte the database holds: SQLite's files, or a `pg_dump`.
fn database_bytes(db: &TestDb) -> Vec<u8> {
    match db.backend {
        Backend::Sqlite => std::fs::read_dir(db.data_dir())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("keyward.db"))
            .flat_map(|e| std::fs::read(e.path()).unwrap_or_default())
            .collect(),
        Backend::Postgres => {
            let out = Command::new("pg_dump")
                .arg(format!("--dbname={}", db.url))
                .output()
                .expect("pg_dump (installed with PostgreSQL)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}

/// Clients that read secrets and sign on whichever replica is live, until
/// stopped; what failed.
struct Load {
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<String>>,
    served: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(token: &str, grpc: &str, secrets: &BTreeMap<String, String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(grpc.to_string()));
        let served = Arc::new(AtomicUsize::new(0));
        let tasks = (0..2)
            .map(|_| {
                let (stop, live, served) =
                    (Arc::clone(&stop), Arc::clone(&live), Arc::clone(&served));
                let (token, secrets) = (token.to_string(), secrets.clone());
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let url = live.lock().unwrap().clone();
                        let mut api = As::at(&url, &token);
                        for (id, secret) in &secrets {
                            match api
                                .clients
                                .get_client_secret(pb::GetClientSecretRequest {
                                    id: id.clone(),
                                    version: None,
                                })
                                .await
                            {
                                Ok(got) if &got.get_ref().secret == secret => {
                                    served.fetch_add(1, Ordering::Relaxed);
                                }
                                other => errors.push(format!("{url} {id}: {other:?}")),
                            }
                        }
                        match api
                            .keysets
                            .sign_jwt(pb::SignJwtRequest {
                                keyset: "default".into(),
                                claims_json: "{}".into(),
                                ..Default::default()
                            })
                            .await
                        {
                            Ok(_) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => errors.push(format!("{url} sign: {e}")),
                        }
                    }
                    errors
                })
            })
            .collect();
        Self {
            stop,
            live,
            served,
            tasks,
        }
    }

    /// Sends the clients to `grpc` (before the old replica stops).
    async fn switch_to(&self, grpc: &str) {
        *self.live.lock().unwrap() = grpc.to_string();
        // Calls already under way on the old replica finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in self.tasks {
            errors.extend(task.await.unwrap());
        }
        assert!(errors.is_empty(), "clients saw errors: {errors:#?}");
        self.served.load(Ordering::Relaxed)
    }
}

/// A replica started on a blocking thread (it waits for the serving line).
async fn replica(db: &Arc<TestDb>, key: Key, seals: Vec<String>, hsm: &Arc<Hsm>) -> process::Serve {
    let (db, hsm) = (Arc::clone(db), Arc::clone(hsm));
    tokio::task::spawn_blocking(move || serve(&db, key, &seals, Some(&*hsm)))
        .await
        .unwrap()
}

/// File → PKCS#11 → PKCS#11 and Transit → Transit, one replica replacing
/// another while clients read and sign; the first wrapping start killed
/// with SIGKILL at random points and run again; then the file is gone, the
/// key is nowhere in the database, the logs or a backup, and the old seal
/// is forgotten.
async fn migrate_file_to_pkcs11_to_transit_under_load(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let Some(hsm) = Hsm::new() else { return };
    let Some(bao) = Bao::start() else { return };
    let (db, hsm) = (Arc::new(db), Arc::new(hsm));
    let mut logs: Vec<String> = Vec::new();

    let first = replica(&db, Key::File, Vec::new(), &hsm).await;
    let secrets = store_some(&mut api(&db, &first), "mig", 8).await;
    let (key_text, key_raw) = master_key_bytes(&db);
    let load = Load::start(&admin_token(&db), &first.grpc, &secrets);

    // The wrapping start, killed at random points, then run to the end.
    for _ in 0..4 {
        let mut child = serve_command(&db, Key::File, &[hsm.seal()], Some(&*hsm))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = u64::from(keyward::crypto::random::bytes::<1>()[0]) * 4;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    let wrapped = replica(&db, Key::File, vec![hsm.seal()], &hsm).await;
    load.switch_to(&wrapped.grpc).await;
    logs.extend(first.terminate().1);
    logs.extend(wrapped.startup_log.clone());

    // The file leaves: SoftHSM alone opens the keyring.
    if backend == Backend::Sqlite {
        std::fs::remove_file(db.data_dir().join("master.key")).unwrap();
    }
    let pkcs11 = replica(&db, Key::Sealed, vec![hsm.seal()], &hsm).await;
    load.switch_to(&pkcs11.grpc).await;
    logs.extend(wrapped.terminate().1);
    logs.extend(pkcs11.startup_log.clone());

    // Transit joins, then SoftHSM leaves.
    let both = replica(&db, Key::Sealed, vec![hsm.seal(), bao.seal()], &hsm).await;
    load.switch_to(&both.grpc).await;
    logs.extend(pkcs11.terminate().1);
    logs.extend(both.startup_log.clone());
    let transit = replica(&db, Key::Sealed, vec![bao.seal()], &hsm).await;
    load.switch_to(&transit.grpc).await;
    logs.extend(both.terminate().1);
    logs.extend(transit.startup_log.clone());
    let served = load.finish().await;
    assert!(served > 0);
    reads_back(&mut api(&db, &transit), &secrets).await;

    let status = master_status(&db, &[bao.seal()], None);
    assert_eq!(seal_entry(&status, &bao.id())["answered"], true, "{status}");
    assert_eq!(
        seal_entry(&status, &hsm.id())["configured"],
        false,
        "{status}"
    );
    // Transit may not be forgotten while configured; SoftHSM may.
    let out = local_cli(
        &db,
        &["master", "forget-seal", &bao.id()],
        &[bao.seal()],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("configured here"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = local_cli(
        &db,
        &["master", "forget-seal", &hsm.id()],
        &[bao.seal()],
        None,
    );
    assert!(
        process::stdout(&out).contains("deleted 1 wrap"),
        "{}",
        process::stdout(&out)
    );
    let status = master_status(&db, &[bao.seal()], None);
    assert_eq!(status["seals"].as_array().unwrap().len(), 1, "{status}");
    let forgotten: i64 = db
        .raw()
        .await
        .scalar(&format!(
            "SELECT count(*) FROM events WHERE kind = 'seal.changed' \
             AND detail = 'seal {} forgotten (1 wrap removed)'",
            hsm.id()
        ))
        .await;
    assert_eq!(forgotten, 1);

    // The key is nowhere: the database, every log line, a backup.
    let backup = db.data_dir().join("backup.db");
    if backend == Backend::Sqlite {
        let out = local_cli(
            &db,
            &["backup", "--out", &backup.display().to_string()],
            &[bao.seal()],
            None,
        );
        process::stdout(&out);
    }
    logs.extend(transit.terminate().1);
    let mut stored = database_bytes(&db);
    stored.extend(std::fs::read(&backup).unwrap_or_default());
    let log = logs.join("\n");
    let hex_key = hex(&key_raw);
    for needle in [key_text.as_bytes(), key_raw.as_slice(), hex_key.as_bytes()] {
        assert!(
            !contains(&stored, needle),
            "the master key is in the database"
        );
        assert!(
            !contains(log.as_bytes(), needle),
            "the master key is in a log"
        );
    }
}

both_backends!(
    sealed_by_softhsm_from_the_first_start,
    sealed_by_openbao_transit,
    two_seals_one_stopped,
    sealed_by_aws_kms,
    migrate_file_to_pkcs11_to_transit_under_load,
);
