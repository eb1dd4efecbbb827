//! How keyward's costs grow with its size, through its real gRPC interface:
//! key-set creation rate as the number of key sets grows, ListKeySets and the
//! rotation sweep over all of them, client creation, and the process's
//! resident memory around listing every client.
//!
//! `cargo bench --bench scale` (SQLite; set KEYWARD_TEST_DATABASE_URL to
//! measure on PostgreSQL too). Sizes: KEYWARD_BENCH_KEYSETS (default 3000),
//! KEYWARD_BENCH_CLIENTS (default 20000). Nothing here asserts a time.

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, TestServer};
use keyward::grpc::pb;

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of this process (server and client both), MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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

async fn run(backend: Backend, keysets: usize, clients: usize) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    println!("\n== {backend:?}: {keysets} key sets, {clients} clients ==");

    let window = (keysets / 6).max(1);
    let mut ks = server.keysets();
    let mut made = 0;
    while made < keysets {
        let upto = (made + window).min(keysets);
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
        println!(
            "CreateKeySet ES256, sets {:>6}..{:<6} {:>9.0} /s",
            made,
            upto,
            (upto - made) as f64 / t.elapsed().as_secs_f64()
        );
        made = upto;
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

    let t = Instant::now();
    let mut tasks = Vec::new();
    let per_task = clients.div_ceil(8);
    for task in 0..8 {
        let mut api = server.clients();
        tasks.push(tokio::spawn(async move {
            for i in task * per_task..((task + 1) * per_task).min(clients) {
                api.put_client(pb::PutClientRequest {
                    id: format!("client-{i:07}"),
                    display_name: Some(format!("Client number {i}")),
                    callback_url: Some("https://om.example.com/callback".into()),
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
    println!(
        "PutClient, 8 concurrent                {:>9.0} /s",
        clients as f64 / t.elapsed().as_secs_f64()
    );
    let before = rss_mib();
    let listed = list_all_clients(&server).await;
    let list = median(3, || async {
        list_all_clients(&server).await;
    })
    .await;
    println!(
        "ListClients, all {listed} (pages of 1000) {:>9.1} ms; RSS {before:.0} MiB before, {:.0} MiB after",
        ms(list),
        rss_mib()
    );
    server.stop().await;
}

fn main() {
    let keysets = size("KEYWARD_BENCH_KEYSETS", 3000);
    let clients = size("KEYWARD_BENCH_CLIENTS", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(Backend::Sqlite, keysets, clients).await;
        run(Backend::Postgres, keysets, clients).await;
    });
}
