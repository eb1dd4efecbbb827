//! Concurrent first start: several `keyward serve` processes started at the
//! same instant on one fresh database. They must agree on one master key (or
//! refuse to start, every one whose key is not the database's), and every
//! start-up failure names its cause.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::{process::Command, sync::Barrier};

use common::{
    Backend, TestDb,
    process::{Serve, cli, cli_within_two_seconds, serve_command, spawn_serve, stdout},
};
use keyward::{config::MasterKeySource, crypto::aead::MasterKey};

const TRIALS: usize = 20;
const REPLICAS: usize = 3;

/// `keyward serve` on the test database, with `master_key` in the environment.
fn replica(db: &TestDb, master_key: Option<&str>) -> Command {
    let mut cmd = serve_command(db.data_dir());
    cmd.args(["--database-url", &db.url])
        .env("KEYWARD_NO_SCHEDULER", "true");
    if let Some(key) = master_key {
        cmd.env("KEYWARD_MASTER_KEY", key);
    }
    cmd
}

/// Spawns every command at the same instant; each one's outcome, in order.
fn start_together(commands: Vec<Command>) -> Vec<Result<Serve, String>> {
    let barrier = Barrier::new(commands.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = commands
            .into_iter()
            .map(|cmd| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    spawn_serve(cmd)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn configured_key(db: &TestDb) -> Option<String> {
    match &db.master_key {
        MasterKeySource::Inline(key) => Some(key.expose().to_string()),
        _ => None,
    }
}

fn new_key() -> String {
    String::from_utf8(MasterKey::generate_base64().expose().to_vec()).unwrap()
}

/// Same key (SQLite: none configured, so `master.key` is generated in the
/// shared data dir; PostgreSQL: the same `KEYWARD_MASTER_KEY`). Every replica
/// serves, and what each one seals every other one can open.
async fn replicas_with_one_key_agree(backend: Backend) {
    let mut served = 0;
    for trial in 0..TRIALS {
        let Some(db) = TestDb::new(backend).await else {
            return;
        };
        let key = configured_key(&db);
        let outcome = tokio::task::spawn_blocking(move || {
            let started = start_together(
                (0..REPLICAS)
                    .map(|_| replica(&db, key.as_deref()))
                    .collect(),
            );
            let replicas: Vec<Serve> = started
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("trial {trial}: a replica failed: {e}")))
                .collect();
            for (i, r) in replicas.iter().enumerate() {
                let put = cli(
                    db.data_dir(),
                    &r.grpc,
                    &["client", "put", &format!("c{i}"), "--secret-stdin"],
                    Some(&format!("secret-of-replica-{i}\n")),
                );
                stdout(&put);
            }
            for (i, _) in replicas.iter().enumerate() {
                for reader in &replicas {
                    // Other replicas see a new client within 2 s.
                    let read = cli_within_two_seconds(
                        db.data_dir(),
                        &reader.grpc,
                        &["client", "secret", &format!("c{i}")],
                    );
                    assert_eq!(
                        stdout(&read).trim(),
                        format!("secret-of-replica-{i}"),
                        "trial {trial}: replica {i}'s secret is unreadable elsewhere"
                    );
                }
            }
            let n = replicas.len();
            for r in replicas {
                assert!(r.terminate().0.success());
            }
            drop(db);
            n
        })
        .await
        .unwrap();
        served += outcome;
    }
    eprintln!(
        "{backend:?}: {TRIALS} trials x {REPLICAS} replicas with one key: {served} served, \
         every secret read back by every replica"
    );
}

/// Different keys: exactly one replica's key becomes the database's; every
/// other replica refuses to start, saying why, every time.
async fn replicas_with_different_keys_refuse(backend: Backend) {
    let mut refused = 0;
    for trial in 0..TRIALS {
        let Some(db) = TestDb::new(backend).await else {
            return;
        };
        let n = tokio::task::spawn_blocking(move || {
            let started = start_together(
                (0..REPLICAS)
                    .map(|_| replica(&db, Some(&new_key())))
                    .collect(),
            );
            let (up, down): (Vec<_>, Vec<_>) = started.into_iter().partition(Result::is_ok);
            assert_eq!(up.len(), 1, "trial {trial}: {down:?}");
            for failed in &down {
                let message = failed.as_ref().unwrap_err();
                assert!(
                    message.contains("error: wrong master key"),
                    "trial {trial}: {message}"
                );
            }
            for r in up {
                assert!(r.unwrap().terminate().0.success());
            }
            drop(db);
            down.len()
        })
        .await
        .unwrap();
        refused += n;
    }
    eprintln!(
        "{backend:?}: {TRIALS} trials x {REPLICAS} replicas with different keys: \
         {TRIALS} served, {refused} refused with `wrong master key`"
    );
}

/// A start-up that fails inside keyward (here: a migration altered after it
/// was applied) names its cause, not just "internal error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_names_its_cause() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let url = db.url.clone();
    let first = tokio::task::spawn_blocking({
        let cmd = replica(&db, None);
        move || spawn_serve(cmd)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(first.terminate().0.success());
    let raw = db.raw().await;
    raw.exec("UPDATE _sqlx_migrations SET checksum = X'00'")
        .await;
    let cmd = replica(&db, None);
    let refused = tokio::task::spawn_blocking(move || spawn_serve(cmd))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        refused.contains("error: internal error: ") && refused.contains("modified"),
        "{refused} ({url})"
    );
}

both_backends!(
    replicas_with_one_key_agree,
    replicas_with_different_keys_refuse
);
