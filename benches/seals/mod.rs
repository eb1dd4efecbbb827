//! `cargo bench --bench service -- seals`: what a seal costs. Start-up: the
//! time from spawning `keyward serve` to its serving line, and within it the
//! keyring's opening (its `master keyring opened` log line), with the key file,
//! SoftHSM2 (PKCS#11) and OpenBao Transit; the median of several restarts.
//! Requests: the JWKS GET, GetClientSecret and SignJwt (ES256) on a server
//! started with the key file and on one started sealed by SoftHSM2, side by
//! side in one run: no request calls a seal, so they should match within
//! the machine's noise.

use std::{sync::Arc, time::Instant};

use keyward::transport::grpc::pb;

use crate::{
    common::{
        As, Backend, TestDb, process,
        seals::{Bao, Hsm},
    },
    load::{self, HotCalls},
};

const RESTARTS: usize = 5;

/// `keyward serve` on `db`, sealed by `seals` (none: the key file).
fn command(db: &TestDb, seals: &[String], hsm: &Hsm) -> std::process::Command {
    let mut cmd = db.serve_command(db.data_dir());
    cmd.env("SOFTHSM2_CONF", &hsm.conf)
        .env_remove("KEYWARD_SEALS");
    for seal in seals {
        cmd.arg("--seal").arg(seal);
    }
    cmd
}

fn start(db: &TestDb, seals: &[String], hsm: &Hsm) -> process::Serve {
    process::spawn_serve(command(db, seals, hsm)).expect("keyward serve")
}

/// The keyring's opening time from the start-up log, in ms.
fn opening_ms(log: &[String]) -> Option<f64> {
    log.iter()
        .find(|l| l.contains("master keyring opened"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("elapsed_ms="))
                .and_then(|v| v.parse().ok())
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Start-up with each keyring source: a fresh database, one start to set it
/// up, then timed restarts.
async fn start_up(hsm: &Hsm, bao: &Bao) {
    println!(
        "\n== start-up: spawn to serving, and the keyring's opening within it (median of {RESTARTS})"
    );
    for (label, seals) in [
        ("key file", Vec::new()),
        ("pkcs11 (SoftHSM2)", vec![hsm.seal()]),
        ("transit (OpenBao, token)", vec![bao.seal()]),
        ("pkcs11 + transit", vec![hsm.seal(), bao.seal()]),
    ] {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        start(&db, &seals, hsm).terminate();
        let (mut total, mut opening) = (Vec::new(), Vec::new());
        for _ in 0..RESTARTS {
            let started = Instant::now();
            let serving = start(&db, &seals, hsm);
            total.push(started.elapsed().as_secs_f64() * 1e3);
            if let Some(ms) = opening_ms(&serving.startup_log) {
                opening.push(ms);
            }
            serving.terminate();
        }
        let opening = if opening.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1} ms", median(opening))
        };
        println!(
            "{label:<28} start {:>7.1} ms   keyring opened in {opening}",
            median(total)
        );
    }
}

/// The hot calls on a server started with the key file and on one sealed.
async fn requests(hsm: &Hsm) {
    println!("\n== requests: key file vs sealed by SoftHSM2 (SQLite, same run)");
    let mut rows: Vec<(&str, [(f64, std::time::Duration); 2])> = vec![
        ("GET /.well-known/jwks.json", Default::default()),
        ("GetClientSecret", Default::default()),
        ("SignJwt ES256", Default::default()),
    ];
    for (column, seals) in [Vec::new(), vec![hsm.seal()]].into_iter().enumerate() {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        let serving = start(&db, &seals, hsm);
        let token = std::fs::read_to_string(db.data_dir().join("admin.token"))
            .unwrap()
            .trim()
            .to_string();
        let mut api = As::at(&serving.grpc, &token);
        api.clients
            .put_client(pb::PutClientRequest {
                id: "bench".into(),
                secret: Some("bench-secret-0123456789".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        api.keysets
            .create_key_set(pb::CreateKeySetRequest {
                name: "es".into(),
                algorithm: "ES256".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let calls = Arc::new(HotCalls::at(&serving.grpc, &serving.http, &token).await);
        let ops = [
            calls.jwks_get(),
            calls.get_client_secret("bench"),
            calls.sign_jwt("es"),
        ];
        for (row, op) in rows.iter_mut().zip(ops) {
            let tasks = if row.0.starts_with("GET") {
                load::HTTP_TASKS
            } else {
                load::GRPC_TASKS
            };
            row.1[column] = load::rate(tasks, &op).await;
        }
        serving.terminate();
    }
    println!(
        "{:<28} {:>22} {:>22} {:>7}",
        "call", "key file /s (p99)", "sealed /s (p99)", "ratio"
    );
    for (name, [file, sealed]) in rows {
        println!(
            "{name:<28} {:>11.0} ({:>6.2} ms) {:>11.0} ({:>6.2} ms) {:>7.2}",
            file.0,
            file.1.as_secs_f64() * 1e3,
            sealed.0,
            sealed.1.as_secs_f64() * 1e3,
            sealed.0 / file.0
        );
    }
}

pub async fn run() {
    let (Some(hsm), Some(bao)) = (Hsm::new(), Bao::start()) else {
        println!("seals: SoftHSM2 and OpenBao are needed (see .ci/run)");
        return;
    };
    start_up(&hsm, &bao).await;
    requests(&hsm).await;
}
