//! `cargo bench --bench service -- seals`: what a seal costs. Start-up: the
//! time from spawning `keyward serve` to its serving line, and within it the
//! keyring's opening (its `master keyring opened` log line), with the key file,
//! SoftHSM2 (PKCS#11), OpenBao Transit and, built with `--features aws-kms`,
//! AWS KMS as moto serves it locally; the median of several restarts.
//! Requests: the JWKS GET, GetClientSecret and SignJwt (ES256) on a server
//! started with the key file and on one started sealed by SoftHSM2, side by
//! side in one run: no request calls a seal, so they should match within
//! the machine's noise.

use std::{sync::Arc, time::Instant};

use keyward::transport::grpc::pb;

use crate::{
    common::{
        As, Backend, TestDb, process,
        seals::{Bao, Hsm, Moto, SealEnv},
    },
    load::{self, HotCalls},
};

const RESTARTS: usize = 5;

/// `keyward serve` on `db`, sealed by `seals` (none: the key file), with
/// what each seal server needs in its environment.
fn command(db: &TestDb, seals: &[String], env: &[&dyn SealEnv]) -> std::process::Command {
    let mut cmd = db.serve_command(db.data_dir());
    cmd.env_remove("KEYWARD_SEALS");
    for e in env {
        e.apply(&mut cmd);
    }
    for seal in seals {
        cmd.arg("--seal").arg(seal);
    }
    cmd
}

fn start(db: &TestDb, seals: &[String], env: &[&dyn SealEnv]) -> process::Serve {
    process::spawn_serve(command(db, seals, env)).expect("keyward serve")
}

/// The keyring's opening time from the start-up log, in ms.
fn opening_ms(log: &[String]) -> Option<f64> {
    log.iter()
        .find(|l| l.contains("master keyring opened"))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("elapsed_ms="))
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Start-up with each keyring source: a fresh database, one start to set it
/// up, then timed restarts. AWS KMS when built in and moto is at hand.
async fn start_up(hsm: &Hsm, bao: &Bao, moto: Option<&Moto>) {
    println!(
        "\n== start-up: spawn to serving, and the keyring's opening within it (median of {RESTARTS})"
    );
    let mut env: Vec<&dyn SealEnv> = vec![hsm];
    let mut rows = vec![
        ("key file", Vec::new()),
        ("pkcs11 (SoftHSM2)", vec![hsm.seal()]),
        ("transit (OpenBao, token)", vec![bao.seal()]),
        ("pkcs11 + transit", vec![hsm.seal(), bao.seal()]),
    ];
    if let Some(moto) = moto {
        env.push(&moto.keyward);
        rows.push(("awskms (moto, local)", vec![moto.seal()]));
    }
    for (label, seals) in rows {
        let db = TestDb::new(Backend::Sqlite).await.unwrap();
        start(&db, &seals, &env).terminate();
        let (mut total, mut opening) = (Vec::new(), Vec::new());
        for _ in 0..RESTARTS {
            let started = Instant::now();
            let serving = start(&db, &seals, &env);
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

/// A server on a fresh SQLite database with a client and an ES256 key set,
/// and its hot calls.
async fn bench_server(seals: &[String], hsm: &Hsm) -> (TestDb, process::Serve, Arc<HotCalls>) {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let serving = start(&db, seals, &[hsm]);
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
    (db, serving, calls)
}

/// The hot calls on a server started with the key file and on one sealed,
/// both up at once and measured in turn (file, sealed, file, sealed) so the
/// machine's drift falls on both.
async fn requests(hsm: &Hsm) {
    println!("\n== requests: key file vs sealed by SoftHSM2 (SQLite, alternating, mean of 2 each)");
    let (_file_db, file_serving, file) = bench_server(&[], hsm).await;
    let (_sealed_db, sealed_serving, sealed) = bench_server(&[hsm.seal()], hsm).await;
    println!(
        "{:<28} {:>22} {:>22} {:>7}",
        "call", "key file /s (p99)", "sealed /s (p99)", "ratio"
    );
    type Pick = fn(&Arc<HotCalls>) -> load::Op;
    let calls: [(&str, usize, Pick); 3] = [
        ("GET /.well-known/jwks.json", load::HTTP_TASKS, |c| {
            c.jwks_get()
        }),
        ("GetClientSecret", load::GRPC_TASKS, |c| {
            c.get_client_secret("bench")
        }),
        ("SignJwt ES256", load::GRPC_TASKS, |c| c.sign_jwt("es")),
    ];
    for (name, tasks, pick) in calls {
        let mut sums = [(0.0, 0.0); 2];
        for _ in 0..2 {
            for (at, server) in [&file, &sealed].into_iter().enumerate() {
                let (per_sec, p99) = load::rate(tasks, &pick(server)).await;
                sums[at].0 += per_sec / 2.0;
                sums[at].1 += p99.as_secs_f64() * 1e3 / 2.0;
            }
        }
        let [f, s] = sums;
        println!(
            "{name:<28} {:>11.0} ({:>6.2} ms) {:>11.0} ({:>6.2} ms) {:>7.2}",
            f.0,
            f.1,
            s.0,
            s.1,
            s.0 / f.0
        );
    }
    file_serving.terminate();
    sealed_serving.terminate();
}

pub async fn run() {
    let (Some(hsm), Some(bao)) = (Hsm::new(), Bao::start()) else {
        println!("seals: SoftHSM2 and OpenBao are needed (see .ci/run)");
        return;
    };
    let moto = if cfg!(feature = "aws-kms") {
        Moto::start()
    } else {
        println!("seals: AWS KMS is not built in (cargo bench --features aws-kms)");
        None
    };
    start_up(&hsm, &bao, moto.as_ref()).await;
    requests(&hsm).await;
}
