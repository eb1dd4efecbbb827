//! How keyward's costs grow with its size, through its real interfaces: the
//! hot paths (each as a ratio to its anchor, as in `benches/service.rs`) at
//! 10 key sets and 100 clients and again at full size, key-set creation rate
//! as the number of key sets grows, ListKeySets and the rotation sweep over
//! all of them, client creation, listing every client, and a `keyward serve`
//! process's start-up time and resident memory at full size.
//!
//! `cargo bench --bench scale` (SQLite; set KEYWARD_TEST_DATABASE_URL to
//! measure on PostgreSQL too). Sizes: KEYWARD_BENCH_KEYSETS (default 10000),
//! KEYWARD_BENCH_CLIENTS (default 100000). Nothing here asserts a time.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod load;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, TestServer};
use keyward::transport::grpc::pb;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process (server and client both), MiB.
fn rss_mib() -> f64 {
    rss_mib_of("/proc/self/status")
}

/// VmRSS from a `/proc/<pid>/status` file, MiB.
fn rss_mib_of(status: &str) -> f64 {
    let status = std::fs::read_to_string(status).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `runs` timings of `f`.
async fn median<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[runs / 2]
}

async fn list_all_clients(server: &TestServer) -> usize {
    let mut api = server.clients();
    let (mut n, mut token) = (0, String::new());
    loop {
        let page = api
            .list_clients(pb::ListClientsRequest {
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        n += page.clients.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

async fn list_all_keysets(server: &TestServer) -> usize {
    let mut api = server.keysets();
    let (mut n, mut token) = (0, String::new());
    loop {
        let page = api
            .list_key_sets(pb::ListKeySetsRequest {
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        n += page.key_sets.len();
        if page.next_page_token.is_empty() {
            return n;
        }
        token = page.next_page_token;
    }
}

/// The hot paths through one server, each as a ratio to the mean of its
/// anchor measured just before and just after (see `load::against`):
/// `(call, rate, ratio)`.
async fn hot_rates(server: &TestServer) -> Vec<(&'static str, f64, f64)> {
    use load::{Anchor, GRPC_TASKS, HTTP_TASKS, against};
    let calls = std::sync::Arc::new(load::HotCalls::new(server).await);
    let health = Anchor {
        name: "health",
        op: calls.health(),
        tasks: GRPC_TASKS,
    };
    let jwks = Anchor {
        name: "JWKS GET",
        op: calls.jwks_get(),
        tasks: HTTP_TASKS,
    };
    let mut rates = Vec::new();
    for (label, anchor, call, tasks) in [
        (
            "Clients/GetClientSecret",
            &health,
            calls.get_client_secret(HOT_CLIENT),
            GRPC_TASKS,
        ),
        (
            "KeySets/GetKeySet",
            &health,
            calls.get_key_set(HOT_KEYSET),
            GRPC_TASKS,
        ),
        (
            "KeySets/SignJwt ES256",
            &health,
            calls.sign_jwt(HOT_KEYSET),
            GRPC_TASKS,
        ),
        (
            "POST /oauth2/token ES256",
            &jwks,
            calls.token(HOT_CLIENT, HOT_SECRET),
            HTTP_TASKS,
        ),
    ] {
        let (rate, ratio) = against(anchor, label, &call, tasks).await;
        rates.push((label, rate, ratio));
    }
    rates
}

/// The service calls behind the hot paths, without transport or audit, one
/// at a time: nanoseconds per call. What grows with the number of key sets
/// and clients shows here without the load generator's noise.
async fn service_costs(server: &TestServer) -> Vec<(&'static str, f64)> {
    use keyward::{
        domain::claims::SignProfile, domain::secret::SecretString, service::SignRequest,
    };
    let service = &server.service;
    let per_call = |n: u32, t: Instant| t.elapsed().as_nanos() as f64 / f64::from(n);
    let mut costs = Vec::new();
    const N: u32 = 200_000;
    let t = Instant::now();
    for _ in 0..N {
        service.get_client_secret(HOT_CLIENT, None).unwrap();
    }
    costs.push(("get_client_secret", per_call(N, t)));
    let presented = SecretString::from(HOT_SECRET.to_string());
    let t = Instant::now();
    for _ in 0..N {
        service
            .verify_client_secret(HOT_CLIENT, &presented)
            .unwrap();
    }
    costs.push(("verify_client_secret", per_call(N, t)));
    let t = Instant::now();
    for _ in 0..N {
        service.get_client(HOT_CLIENT).unwrap();
    }
    costs.push(("get_client", per_call(N, t)));
    let t = Instant::now();
    for _ in 0..N {
        service.get_keyset(HOT_KEYSET).unwrap();
    }
    costs.push(("get_keyset", per_call(N, t)));
    const SIGNED: u32 = 20_000;
    let req = SignRequest {
        keyset: HOT_KEYSET.into(),
        claims_json: r#"{"sub":"bench"}"#.into(),
        ttl_seconds: Some(600),
        profile: SignProfile::Plain,
        subject: None,
        email: None,
    };
    let t = Instant::now();
    for _ in 0..SIGNED {
        service.sign_jwt(&req).await.unwrap();
    }
    costs.push(("sign_jwt ES256", per_call(SIGNED, t)));
    for (call, ns) in &costs {
        println!("{:<38} {ns:>9.0} ns per call", format!("service {call}"));
    }
    costs
}

const HOT_KEYSET: &str = "ks-000000";
const HOT_CLIENT: &str = "client-0000000";
const HOT_SECRET: &str = "scale-bench-secret-0123456789";
/// The size the hot paths are measured at first.
const SMALL: (usize, usize) = (10, 100);

/// Creates key sets `from..to` one at a time, printing the rate per sixth
/// of `total`.
async fn create_keysets(server: &TestServer, from: usize, to: usize, total: usize) {
    let window = (total / 6).max(1);
    let mut ks = server.keysets();
    let mut made = from;
    while made < to {
        let upto = (made + window).min(to);
        let t = Instant::now();
        for i in made..upto {
            ks.create_key_set(pb::CreateKeySetRequest {
                name: format!("ks-{i:06}"),
                algorithm: "ES256".into(),
                rsa_bits: 0,
                policy: None,
            })
            .await
            .unwrap();
        }
        if upto - made >= window {
            println!(
                "CreateKeySet ES256, sets {:>6}..{:<6} {:>9.0} /s",
                made,
                upto,
                (upto - made) as f64 / t.elapsed().as_secs_f64()
            );
        }
        made = upto;
    }
}

/// Creates clients `from..to` from 8 tasks; the first gets a known secret
/// and ES256 tokens from the first key set.
async fn create_clients(server: &TestServer, from: usize, to: usize) -> f64 {
    let t = Instant::now();
    let mut tasks = Vec::new();
    let per_task = (to - from).div_ceil(8);
    for task in 0..8 {
        let mut api = server.clients();
        tasks.push(tokio::spawn(async move {
            let first = from + task * per_task;
            for i in first..(first + per_task).min(to) {
                let hot = i == 0;
                api.put_client(pb::PutClientRequest {
                    id: format!("client-{i:07}"),
                    display_name: Some(format!("Client number {i}")),
                    callback_url: Some("https://om.example.com/callback".into()),
                    secret: hot.then(|| HOT_SECRET.into()),
                    token_keyset: hot.then(|| HOT_KEYSET.into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (to - from) as f64 / t.elapsed().as_secs_f64()
}

/// Starts a `keyward serve` process on `db`: how long until it serves, and
/// its resident memory then (MiB).
fn serve_process(db: &TestDb) -> (Duration, f64) {
    let t = Instant::now();
    let serve = common::process::spawn_serve(db.serve_command(db.data_dir()))
        .expect("keyward serve starts");
    let took = t.elapsed();
    let rss = rss_mib_of(&format!("/proc/{}/status", serve.child.id()));
    serve.terminate();
    (took, rss)
}

async fn run(backend: Backend, keysets: usize, clients: usize) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    println!("\n== {backend:?}: {keysets} key sets, {clients} clients ==");
    let (small_keysets, small_clients) = SMALL;
    create_keysets(&server, 0, small_keysets, keysets).await;
    create_clients(&server, 0, small_clients).await;
    println!("-- hot paths at {small_keysets} key sets, {small_clients} clients");
    let small = hot_rates(&server).await;
    let small_costs = service_costs(&server).await;

    create_keysets(&server, small_keysets, keysets, keysets).await;
    println!(
        "PutClient, 8 concurrent                {:>9.0} /s",
        create_clients(&server, small_clients, clients).await
    );
    println!("-- hot paths at {keysets} key sets, {clients} clients");
    let large = hot_rates(&server).await;
    let large_costs = service_costs(&server).await;
    println!("-- growth, large size against small: each call's ratio to its anchor (its rate)");
    for ((call, rate_before, before), (_, rate_after, after)) in small.iter().zip(&large) {
        println!(
            "{call:<38} {before:>5.2}x -> {after:>5.2}x  {:+4.0} %  ({rate_before:.0} -> {rate_after:.0} /s)",
            (after / before - 1.0) * 100.0
        );
    }
    for ((call, before), (_, after)) in small_costs.iter().zip(&large_costs) {
        println!(
            "{:<38} {before:>6.0} -> {after:>6.0} ns  {:+4.0} %",
            format!("service {call}"),
            (after / before - 1.0) * 100.0
        );
    }

    let listed = list_all_keysets(&server).await;
    let list = median(5, || async {
        list_all_keysets(&server).await;
    })
    .await;
    println!(
        "ListKeySets, all {listed} (pages of 1000) {:>9.1} ms",
        ms(list)
    );
    let sweep = median(5, || {
        let mut ks = server.keysets();
        async move {
            ks.rotate_due(pb::RotateDueRequest {
                keyset: None,
                dry_run: false,
            })
            .await
            .unwrap();
        }
    })
    .await;
    println!(
        "RotateDue sweep, none due             {:>9.1} ms",
        ms(sweep)
    );
    let before = rss_mib();
    let listed = list_all_clients(&server).await;
    let list = median(3, || async {
        list_all_clients(&server).await;
    })
    .await;
    println!(
        "ListClients, all {listed} (pages of 1000) {:>9.1} ms; bench RSS {before:.0} MiB before, {:.0} MiB after",
        ms(list),
        rss_mib()
    );
    server.stop().await;
    let (took, rss, db) = tokio::task::spawn_blocking(move || {
        let (took, rss) = serve_process(&db);
        (took, rss, db)
    })
    .await
    .unwrap();
    println!(
        "keyward serve start-up                 {:>9.1} ms; RSS {rss:.0} MiB when serving",
        ms(took)
    );
    rewrap(&db).await;
    tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
}

/// `GetClientSecret` latencies (ms) from one caller until `until` resolves.
async fn secret_latencies(
    server: &TestServer,
    until: impl std::future::Future<Output = ()>,
) -> Vec<f64> {
    let mut api = server.clients();
    let mut samples = Vec::new();
    tokio::pin!(until);
    loop {
        let t = Instant::now();
        tokio::select! {
            () = &mut until => return samples,
            got = api.get_client_secret(pb::GetClientSecretRequest {
                id: "client-0000000".into(),
                version: None,
            }) => {
                got.unwrap();
                samples.push(ms(t.elapsed()));
            }
        }
    }
}

fn p50_p99(mut samples: Vec<f64>) -> (f64, f64, usize) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), samples.len())
}

/// A master-key rotation at full size: the rewrap's time and what it does
/// to GetClientSecret's latency meanwhile.
async fn rewrap(db: &TestDb) {
    let keys = common::write_keys(db);
    let server = TestServer::start_with(
        db,
        common::keyring_config(db, &keys, true),
        std::sync::Arc::new(keyward::domain::clock::SystemClock),
    )
    .await;
    let before = secret_latencies(&server, tokio::time::sleep(Duration::from_secs(3))).await;
    let service = std::sync::Arc::clone(&server.service);
    let t = Instant::now();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let job = tokio::spawn(async move {
        let outcome = service
            .rewrap(
                keyward::service::master::DEFAULT_REWRAP_BATCH,
                Duration::ZERO,
                &mut |_| {},
            )
            .await;
        let _ = done_tx.send(());
        outcome
    });
    let during = secret_latencies(&server, async {
        let _ = done_rx.await;
    })
    .await;
    let outcome = job.await.unwrap().unwrap();
    let took = t.elapsed();
    let current = &outcome.status.keys[0];
    let (b50, b99, _) = p50_p99(before);
    let (d50, d99, n) = p50_p99(during);
    println!(
        "Master rewrap (batches of {}): {} values ({} keys, {} client secrets, {} meta) in {:.1} s, {:.0} values/s",
        keyward::service::master::DEFAULT_REWRAP_BATCH,
        outcome.resealed,
        current.keys,
        current.client_secrets,
        current.meta,
        took.as_secs_f64(),
        outcome.resealed as f64 / took.as_secs_f64()
    );
    println!(
        "GetClientSecret, one caller: p50 {b50:.2} ms, p99 {b99:.2} ms before; p50 {d50:.2} ms, p99 {d99:.2} ms during the rewrap ({n} calls)"
    );
    server.stop().await;
}

fn main() {
    let keysets = size("KEYWARD_BENCH_KEYSETS", 10_000);
    let clients = size("KEYWARD_BENCH_CLIENTS", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(Backend::Sqlite, keysets, clients).await;
        run(Backend::Postgres, keysets, clients).await;
    });
}
