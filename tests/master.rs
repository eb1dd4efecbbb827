//! Online master-key rotation, on SQLite and PostgreSQL: a keyring of a new
//! current key and the old one serves everything while `Master/Rewrap`
//! reseals it under load; `keyward master rewrap` killed with SIGKILL at
//! random points and run again loses nothing; a key removed too early is
//! refused at start with what it still seals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Backend, Keys, TestDb, TestServer, keyring_config, process, write_keys};
use keyward::{config::MasterKeySource, domain::clock::SystemClock, server, transport::grpc::pb};

/// Clients with known secrets and ES256 key sets, created under the old key.
async fn stored(server: &TestServer, clients: usize, keysets: usize) -> BTreeMap<String, String> {
    for k in 0..keysets {
        common::create_keyset(server, &format!("mk-{k}"), "ES256").await;
    }
    let mut secrets = BTreeMap::new();
    let mut tasks = Vec::new();
    for chunk in 0..4 {
        let mut api = server.clients();
        let ids: Vec<usize> = (0..clients).filter(|i| i % 4 == chunk).collect();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for i in ids {
                let (id, secret) = (format!("c-{i:04}"), format!("secret-{i}-{}", i * 7919));
                api.put_client(pb::PutClientRequest {
                    id: id.clone(),
                    secret: Some(secret.clone()),
                    ..Default::default()
                })
                .await
                .expect("PutClient");
                made.push((id, secret));
            }
            made
        }));
    }
    for task in tasks {
        secrets.extend(task.await.unwrap());
    }
    secrets
}

/// Every secret reads back as stored, and every key set signs a token its
/// JWKS verifies.
async fn everything_opens(server: &TestServer, secrets: &BTreeMap<String, String>, keysets: usize) {
    common::secrets_read_back(&mut server.clients(), secrets).await;
    for name in (0..keysets)
        .map(|k| format!("mk-{k}"))
        .chain(["default".to_string()])
    {
        sign_and_verify(server, &name).await;
    }
}

async fn sign_and_verify(server: &TestServer, keyset: &str) {
    let jwt = server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: keyset.into(),
            claims_json: r#"{"sub":"rewrap"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("SignJwt {keyset}: {e}"))
        .into_inner()
        .jwt;
    let jwks = server
        .keysets()
        .get_jwks(pb::GetJwksRequest {
            keyset: keyset.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let claims = common::verify(&jwt, &serde_json::from_str(&jwks).unwrap());
    assert_eq!(claims["sub"], "rewrap");
}

fn use_of<'a>(status: &'a pb::MasterStatus, id: &str) -> &'a pb::MasterKeyUse {
    status
        .keys
        .iter()
        .find(|k| k.master_key_id == id)
        .unwrap_or_else(|| panic!("{id} not in {status:?}"))
}

fn total(k: &pb::MasterKeyUse) -> i64 {
    k.keys + k.client_secrets + k.meta
}

async fn a_master_key_rotates_under_a_serving_replica(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    const CLIENTS: usize = 40;
    const KEYSETS: usize = 2;
    let server = TestServer::start(&db).await;
    let secrets = stored(&server, CLIENTS, KEYSETS).await;
    server.stop().await;
    let keys = write_keys(&db);

    // The new key alone cannot start: it names the old key and what it seals.
    let err = server::prepare(keyring_config(&db, &keys, false), Arc::new(SystemClock))
        .await
        .expect_err("the old key still seals everything")
        .to_string();
    assert!(err.contains("wrong master key"), "{err}");
    assert!(
        err.contains(&format!("master key id {} seals", keys.old_id))
            && err.contains(&format!("{CLIENTS} in client_secrets")),
        "{err}"
    );

    let server =
        TestServer::start_with(&db, keyring_config(&db, &keys, true), Arc::new(SystemClock)).await;
    let status = server
        .master()
        .get_master_status(pb::GetMasterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.current, keys.new_id);
    let old = use_of(&status, &keys.old_id);
    assert!(old.held && !old.current && !old.removable, "{old:?}");
    assert_eq!(old.client_secrets, CLIENTS as i64);
    assert_eq!(old.meta, 2, "the canary and the audit key");
    assert_eq!(total(use_of(&status, &keys.new_id)), 0);

    // Readers and signers run through the whole rewrap.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut readers = Vec::new();
    // c-0000 is rotated during the rewrap; the readers read the others.
    let mut read = secrets.clone();
    read.remove("c-0000");
    for r in 0..3 {
        let (mut clients, mut keysets) = (server.clients(), server.keysets());
        let secrets = read.clone();
        let (stop, served, failed) = (Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
        readers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for (id, secret) in secrets.iter().skip(r).step_by(3) {
                    let got = clients
                        .get_client_secret(pb::GetClientSecretRequest {
                            id: id.clone(),
                            version: None,
                        })
                        .await;
                    match got {
                        Ok(got) if &got.get_ref().secret == secret => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{id}: {other:?}"));
                        }
                    }
                    let signed = keysets
                        .sign_jwt(pb::SignJwtRequest {
                            keyset: format!("mk-{}", r % KEYSETS),
                            claims_json: "{}".into(),
                            ..Default::default()
                        })
                        .await;
                    match signed {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.push(format!("sign: {e}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A write during the rotation: sealed under the new key from the start.
    server
        .clients()
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "c-0000".into(),
            secret: Some("rotated-during-the-rewrap".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut stream = server
        .master()
        .rewrap(pb::RewrapRequest {
            batch_size: 3,
            pause_millis: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for reader in readers {
        errors.extend(reader.await.unwrap());
    }
    assert!(errors.is_empty(), "{} failed: {errors:#?}", errors.len());
    assert!(served.load(Ordering::Relaxed) > 100, "{served:?} served");
    assert_eq!(failed.load(Ordering::Relaxed), 0);

    let done = messages.last().expect("a last message");
    assert!(done.done, "{done:?}");
    assert!(
        messages.len() > 10,
        "progress after each batch: {}",
        messages.len()
    );
    // The old key sealed every client's first version, the ES256 keys (two
    // per key set) and the default RS256 set's, the canary and the audit key.
    let status = done.status.clone().unwrap();
    let old = use_of(&status, &keys.old_id);
    assert!(old.removable && total(old) == 0, "{old:?}");
    let new = use_of(&status, &keys.new_id);
    assert_eq!(new.meta, 2);
    assert!(new.client_secrets > CLIENTS as i64, "{new:?}");
    assert_eq!(
        done.resealed as i64,
        total(new) - 1,
        "all but the rotated secret"
    );
    server.service.flush_audit().await;
    let events = server
        .audit()
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "Rewrap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .any(|e| e.principal == "bootstrap" && e.outcome == "OK"),
        "the rewrap is audited: {events:?}"
    );
    server.stop().await;

    // The new key alone now opens everything, the rotated secret included.
    let server = TestServer::start_with(
        &db,
        keyring_config(&db, &keys, false),
        Arc::new(SystemClock),
    )
    .await;
    let mut expected = secrets.clone();
    expected.insert("c-0000".into(), "rotated-during-the-rewrap".into());
    everything_opens(&server, &expected, KEYSETS).await;
    server.stop().await;
}

/// Runs `keyward master rewrap` on the test database's keyring.
fn rewrap_command(db: &TestDb, keys: &Keys, extra: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(process::BIN);
    cmd.arg("--data-dir")
        .arg(db.data_dir())
        .args(["master", "rewrap", "--database-url", &db.url])
        .arg("--master-key-file")
        .arg(&keys.new)
        .arg("--previous-master-key-file")
        .arg(&keys.old)
        .args(extra)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_PREVIOUS_MASTER_KEY_FILES")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

async fn status_of(db: &TestDb, keys: &Keys) -> (i64, i64) {
    let status = server::master_status(&keyring_config(db, keys, true))
        .await
        .expect("status");
    let count = |id: &str| {
        status
            .keys
            .iter()
            .find(|k| k.master_key_id == id)
            .map_or(0, keyward::service::master::KeyUse::total)
    };
    (count(&keys.old_id), count(&keys.new_id))
}

/// Waits for the rewrap's first progress line on stderr; how long that took.
fn first_progress_line(child: &mut std::process::Child) -> Duration {
    use std::io::BufRead as _;
    let started = std::time::Instant::now();
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("rewrap:") {
                let _ = tx.send(());
            }
        }
    });
    let _ = rx.recv_timeout(Duration::from_secs(20));
    started.elapsed()
}

/// A uniformly random duration in `[low, high)` milliseconds.
fn random_ms(low: u64, high: u64) -> Duration {
    let r = u64::from_le_bytes(keyward::crypto::random::bytes::<8>());
    Duration::from_millis(low + r % (high - low))
}

async fn a_rewrap_killed_at_random_points_finishes_and_loses_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    const CLIENTS: usize = 120;
    const KEYSETS: usize = 3;
    const KILLS: usize = 20;
    let server = TestServer::start(&db).await;
    let secrets = stored(&server, CLIENTS, KEYSETS).await;
    server.stop().await;
    let keys = write_keys(&db);
    let (all, none) = status_of(&db, &keys).await;
    assert_eq!(none, 0);
    assert!(all > CLIENTS as i64, "{all}");

    let mut partial = 0;
    let mut log = Vec::new();
    for kill in 0..KILLS {
        // One value per transaction, 40 ms apart: a run takes seconds. Every
        // fourth kill lands while it starts; the others at a random point
        // after its first transaction, before, inside or between transactions.
        let mut child = rewrap_command(&db, &keys, &["--batch-size", "1", "--pause", "40ms"])
            .spawn()
            .expect("spawn rewrap");
        let spawned = std::time::Instant::now();
        let after = if kill % 4 == 0 {
            random_ms(0, 300)
        } else {
            first_progress_line(&mut child) + random_ms(0, 500)
        };
        tokio::time::sleep(after.saturating_sub(spawned.elapsed())).await;
        let _ = child.kill();
        let exited = child.wait().unwrap();
        let (old, new) = status_of(&db, &keys).await;
        assert_eq!(old + new, all, "kill {kill}: no value lost or doubled");
        if old > 0 && new > 0 {
            partial += 1;
        }
        log.push(format!(
            "kill {kill} after {after:?} ({exited}): old {old}, new {new}"
        ));
        // Every value still opens (under one key or the other) and matches.
        let server =
            TestServer::start_with(&db, keyring_config(&db, &keys, true), Arc::new(SystemClock))
                .await;
        everything_opens(&server, &secrets, KEYSETS).await;
        server.stop().await;
    }
    assert!(
        partial >= KILLS / 4,
        "most kills should land mid-rewrap; {partial} did:\n{}",
        log.join("\n")
    );

    let out = rewrap_command(&db, &keys, &[]).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("may be removed from the keyring"),
        "{printed}"
    );
    assert_eq!(status_of(&db, &keys).await, (0, all));
    // Run again: nothing left to do.
    let again = rewrap_command(&db, &keys, &["--output", "json"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["resealed"], 0, "{again}");

    let server = TestServer::start_with(
        &db,
        keyring_config(&db, &keys, false),
        Arc::new(SystemClock),
    )
    .await;
    everything_opens(&server, &secrets, KEYSETS).await;
    server.stop().await;
}

async fn a_key_removed_too_early_is_named_with_what_it_seals(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let secrets = stored(&server, 6, 1).await;
    server.stop().await;
    let keys = write_keys(&db);
    // Everything resealed under the new key...
    let server =
        TestServer::start_with(&db, keyring_config(&db, &keys, true), Arc::new(SystemClock)).await;
    let outcome = server
        .service
        .rewrap(1000, Duration::ZERO, &mut |_| {})
        .await
        .unwrap();
    assert!(outcome.resealed > 6, "{outcome:?}");
    server.stop().await;
    // ...then a replica still running with the old key as current (it was
    // not restarted) rotates four secrets: sealed under the old key again.
    let mut old_current = db.config();
    old_current.master_key = MasterKeySource::File(keys.old.clone());
    old_current.previous_master_keys = vec![keys.new.clone()];
    let server = TestServer::start_with(&db, old_current, Arc::new(SystemClock)).await;
    for id in secrets.keys().take(4) {
        server
            .clients()
            .rotate_client_secret(pb::RotateClientSecretRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    server.stop().await;

    // Dropping the old key now is refused, naming it and its count, and
    // writing nothing.
    let raw = db.raw().await;
    let before = raw.dump().await;
    let err = server::prepare(keyring_config(&db, &keys, false), Arc::new(SystemClock))
        .await
        .expect_err("the old key still seals 4 secrets")
        .to_string();
    assert_eq!(raw.dump().await, before, "nothing was written");
    assert!(
        err.contains("removed from the keyring too early")
            && err.contains(&format!(
                "master key id {} seals 4 stored values",
                keys.old_id
            ))
            && err.contains("4 in client_secrets"),
        "{err}"
    );
    // Status, which needs no complete keyring, says the same.
    let out = process::cli(
        db.data_dir(),
        "http://127.0.0.1:1",
        &[
            "master",
            "status",
            "--database-url",
            &db.url,
            "--master-key-file",
            path_str(&keys.new),
            "--output",
            "json",
        ],
        None,
    );
    let status = process::json_out(&out);
    let old = status["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["master_key_id"] == keys.old_id.as_str())
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(old["held"], false);
    assert_eq!(old["client_secrets"], 4);
    assert!(
        old["advice"]
            .as_str()
            .unwrap()
            .contains("NOT IN THE KEYRING"),
        "{old}"
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

both_backends!(
    a_master_key_rotates_under_a_serving_replica,
    a_rewrap_killed_at_random_points_finishes_and_loses_nothing,
    a_key_removed_too_early_is_named_with_what_it_seals,
);
