//! Measures keyward's hot paths through its real interfaces and prints figures:
//! JWKS over HTTP (keep-alive, concurrent), SignJwt over gRPC per algorithm,
//! key generation, a rotation sweep over many key sets, and the cost of
//! authorization and audit on GetClientSecret and SignJwt.
//!
//! The "hot paths" section prints each call's rate next to an anchor
//! measured in the same run on the same server: the gRPC health check for
//! gRPC calls, the JWKS GET for HTTP calls and a raw signing loop (one thread
//! per core) for RSA signing; then the JWKS p99 while RS256 tokens are issued
//! at full rate.
//!
//! `cargo bench --bench service` (SQLite; set KEYWARD_TEST_DATABASE_URL to
//! measure on PostgreSQL too). Nothing here asserts a time.
//! `cargo bench --bench service -- --server-cores N` runs `keyward serve`
//! pinned to N cores and outside load generators on the rest, each figure
//! as a ratio to its anchor (see `cores/mod.rs`).
//! `cargo bench --bench service -- seals` measures what a seal costs at
//! start and shows requests unchanged (see `seals/mod.rs`).
//! `cargo bench --bench service -- events` measures the outbox's cost on
//! writes and the `Watch` fan-out (see `events/mod.rs`).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;
mod cores;
mod events;
mod load;
mod seals;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, TestServer};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keyward::transport::grpc::pb;

struct Stats {
    count: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>, elapsed: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    Stats {
        count: samples.len(),
        elapsed,
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn report(what: &str, s: &Stats) {
    println!(
        "{what:<38} {:>7} ops  {:>9.0} ops/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
        s.count,
        s.count as f64 / s.elapsed.as_secs_f64(),
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

async fn jwks(server: &TestServer, concurrency: usize, per_task: usize) -> Stats {
    let url: hyper::Uri = format!("{}/.well-known/jwks.json", server.http_url)
        .parse()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    timed(concurrency, per_task, move || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let resp = client.get(url).await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.unwrap();
        }
    })
    .await
}

async fn sign(server: &TestServer, keyset: &str, n: usize) -> Stats {
    let mut ks = server.keysets();
    let started = Instant::now();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ks.sign_jwt(pb::SignJwtRequest {
            keyset: keyset.into(),
            claims_json: r#"{"sub":"bench","email":"bench@example.com"}"#.into(),
            ttl_seconds: Some(600),
            ..Default::default()
        })
        .await
        .unwrap();
        samples.push(t.elapsed());
    }
    stats(samples, started.elapsed())
}

async fn create(server: &TestServer, name: &str, alg: &str, bits: u32) -> Duration {
    let t = Instant::now();
    server
        .keysets()
        .create_key_set(pb::CreateKeySetRequest {
            name: name.into(),
            algorithm: alg.into(),
            rsa_bits: bits,
            policy: None,
        })
        .await
        .unwrap();
    t.elapsed()
}

/// Runs `op` `n` times from each of `concurrency` tasks and times each run.
async fn timed<F, Fut>(concurrency: usize, n: usize, op: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                op().await;
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    stats(all, started.elapsed())
}

/// The steady-state cost of authorization and audit: GetClientSecret and
/// SignJwt through gRPC (token check, role check, audit event) next to the
/// same service calls without the transport, the checks or the audit, and
/// each of those costs alone.
async fn authorization_and_audit(server: &TestServer) {
    use keyward::{
        domain::claims::SignProfile,
        domain::{
            access::Method,
            audit::{Action, AuditEvent, Durability, Outcome},
        },
        service::SignRequest,
    };
    let service = std::sync::Arc::clone(&server.service);
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "bench".into(),
            secret: Some("bench-secret-0123456789abcdef".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let channel = server.channel.clone();
    let token = server.token.clone();
    for concurrency in [1, 8] {
        let (channel, token) = (channel.clone(), token.clone());
        let stats = timed(concurrency, 1000, move || {
            let mut cl =
                keyward::transport::grpc::pb::clients_client::ClientsClient::new(channel.clone());
            let token = token.clone();
            async move {
                let mut req = tonic::Request::new(pb::GetClientSecretRequest {
                    id: "bench".into(),
                    version: None,
                });
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse().unwrap());
                cl.get_client_secret(req).await.unwrap();
            }
        })
        .await;
        report(
            &format!("GetClientSecret gRPC, {concurrency} conc., full"),
            &stats,
        );
    }
    let direct = std::sync::Arc::clone(&service);
    report(
        "GetClientSecret service call only",
        &timed(1, 1000, move || {
            let service = std::sync::Arc::clone(&direct);
            async move {
                service.get_client_secret("bench", None).unwrap();
            }
        })
        .await,
    );
    report(
        "SignJwt ES256 gRPC, full",
        &sign(server, "es256", 2000).await,
    );
    let direct = std::sync::Arc::clone(&service);
    report(
        "SignJwt ES256 service call only",
        &timed(1, 2000, move || {
            let service = std::sync::Arc::clone(&direct);
            async move {
                service
                    .sign_jwt(&SignRequest {
                        keyset: "es256".into(),
                        claims_json: r#"{"sub":"bench","email":"bench@example.com"}"#.into(),
                        ttl_seconds: Some(600),
                        profile: SignProfile::Plain,
                        subject: None,
                        email: None,
                    })
                    .await
                    .unwrap();
            }
        })
        .await,
    );

    // The pieces alone.
    const CHECKS: u32 = 200_000;
    let t = Instant::now();
    for _ in 0..CHECKS {
        let grant = service.authenticate(&server.token).unwrap();
        grant
            .authorize(Method::GetClientSecret, Some("bench"))
            .unwrap();
    }
    println!(
        "{:<38} {:>9.0} ns per call",
        "token check + role check",
        t.elapsed().as_nanos() as f64 / f64::from(CHECKS)
    );
    let event = AuditEvent {
        at: service.now(),
        principal: "bench".into(),
        action: Action::Call(Method::GetClientSecret),
        target: "bench".into(),
        outcome: Outcome::Ok,
        peer: "127.0.0.1".into(),
        request_id: "bench-request-0001".into(),
    };
    for (label, durability, concurrency, n) in [
        (
            "audit event, batched (queued)",
            Durability::Batched,
            1,
            20_000,
        ),
        (
            "audit event, durable, 1 writer",
            Durability::BeforeResponse,
            1,
            500,
        ),
        (
            "audit event, durable, 8 writers",
            Durability::BeforeResponse,
            8,
            250,
        ),
        (
            "audit event, durable, 64 writers",
            Durability::BeforeResponse,
            64,
            200,
        ),
        // Far more than the queue holds: the rate the writer stores them.
        (
            "audit event, batched, 64 writers",
            Durability::Batched,
            64,
            2000,
        ),
    ] {
        let (service, event) = (std::sync::Arc::clone(&service), event.clone());
        let stats = timed(concurrency, n, move || {
            let (service, event) = (std::sync::Arc::clone(&service), event.clone());
            async move {
                service.audit(event, durability).await.unwrap();
            }
        })
        .await;
        report(label, &stats);
        server.service.flush_audit().await;
    }
}

/// [`load::raw_signing`] of RS256 on `cores` threads, printed as an anchor.
fn raw_rs_anchor(cores: usize) -> f64 {
    let raw = load::raw_signing(keyward::domain::algorithm::Algorithm::Rs256, cores);
    println!(
        "{:<38} {raw:>9.0} /s  (anchor: {cores} threads)",
        "raw RS256-2048 signing"
    );
    raw
}

/// The hot paths at full rate, each next to its anchor (see the module doc).
/// The secret of the hot-path clients.
const HOT_SECRET: &str = "hot-path-secret-0123456789";

async fn hot_paths(server: &TestServer) {
    use load::{Anchor, GRPC_TASKS, HTTP_TASKS, against, rate, rate_for, ratio_line};
    for (id, keyset) in [("hot-es", "es256"), ("hot-rs", "rs2048")] {
        server
            .clients()
            .put_client(pb::PutClientRequest {
                id: id.into(),
                secret: Some(HOT_SECRET.into()),
                token_keyset: Some(keyset.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let calls = std::sync::Arc::new(load::HotCalls::new(server).await);
    println!(
        "-- hot paths: {GRPC_TASKS} gRPC calls in flight on 4 connections, {HTTP_TASKS} HTTP connections"
    );

    // Each call is measured between two measurements of its anchor, so a
    // machine that speeds up or slows down meanwhile moves both.
    let health = Anchor {
        name: "health",
        op: calls.health(),
        tasks: GRPC_TASKS,
    };
    for (label, call) in [
        ("Clients/GetClientSecret", calls.get_client_secret("hot-es")),
        ("KeySets/GetKeySet", calls.get_key_set("es256")),
        ("KeySets/SignJwt ES256", calls.sign_jwt("es256")),
    ] {
        against(&health, label, &call, GRPC_TASKS).await;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let anchor = raw_rs_anchor(cores);
    let signed = rate(GRPC_TASKS, &calls.sign_jwt("rs2048")).await;
    ratio_line("KeySets/SignJwt RS256", signed, anchor, "raw RS256");

    // HTTP: the token endpoint per algorithm.
    let jwks_get = calls.jwks_get();
    let jwks = Anchor {
        name: "JWKS GET",
        op: jwks_get.clone(),
        tasks: HTTP_TASKS,
    };
    let token_es = calls.token("hot-es", HOT_SECRET);
    against(&jwks, "POST /oauth2/token ES256", &token_es, HTTP_TASKS).await;
    let anchor = raw_rs_anchor(cores);
    let token_rs = calls.token("hot-rs", HOT_SECRET);
    ratio_line(
        "POST /oauth2/token RS256",
        rate(HTTP_TASKS, &token_rs).await,
        anchor,
        "raw RS256",
    );

    observability_cost(server, &calls, &token_es).await;

    // The JWKS, one request at a time, while RS256 tokens go out at full rate.
    let load = tokio::spawn(async move {
        rate_for(
            load::RATE_WINDOW + Duration::from_secs(1),
            HTTP_TASKS,
            &token_rs,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let under_load = rate(1, &jwks_get).await;
    let load = load.await.unwrap();
    println!(
        "{:<38} {:>9.0} /s  p99 {:>7.2} ms  (while {:.0} RS256 tokens/s)",
        "JWKS GET under RS256 token load",
        under_load.0,
        under_load.1.as_secs_f64() * 1e3,
        load.0
    );
}

/// What request ids, their log span and the request metrics cost: the same
/// service behind a second listener whose router has none of them,
/// alternated with the real one three times.
async fn observability_cost(server: &TestServer, calls: &load::HotCalls, token: &load::Op) {
    use load::{HTTP_TASKS, rate};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = keyward::transport::http::HttpState {
        service: std::sync::Arc::clone(&server.service),
        proxies: keyward::transport::proxy::TrustedProxies::default(),
    };
    let bare_server = tokio::spawn(keyward::transport::net::serve_http(
        listener,
        keyward::transport::http::unobserved_app(state, true),
        None,
        keyward::transport::net::Limits::default(),
        stopped,
    ));
    let bare = calls.http_at(&bare_url);
    let bare_token = bare.token("hot-es", HOT_SECRET);
    println!("-- request ids, log spans and request metrics: with / without, alternated 3 times");
    for (label, with, without) in [
        ("JWKS GET", calls.jwks_get(), bare.jwks_get()),
        ("POST /oauth2/token ES256", token.clone(), bare_token),
    ] {
        let (mut on, mut off) = (0.0, 0.0);
        for _ in 0..3 {
            off += rate(HTTP_TASKS, &without).await.0;
            on += rate(HTTP_TASKS, &with).await.0;
        }
        println!(
            "{label:<38} {:>9.0} /s with, {:>9.0} /s without  {:>5.3}x",
            on / 3.0,
            off / 3.0,
            on / off
        );
    }
    let _ = stop.send(true);
    let _ = bare_server.await;
}

/// `cargo bench --bench service -- observe`: only what request ids, log
/// spans and request metrics cost, on SQLite.
async fn observe_only() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    create(&server, "es256", "ES256", 0).await;
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "hot-es".into(),
            secret: Some(HOT_SECRET.into()),
            token_keyset: Some("es256".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let calls = load::HotCalls::new(&server).await;
    let token = calls.token("hot-es", HOT_SECRET);
    observability_cost(&server, &calls, &token).await;
    server.stop().await;
}

async fn run(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    println!(
        "\n== {backend:?} (signing backend: {}) ==",
        keyward::crypto::keys::SIGNING_BACKEND
    );

    for (name, alg, bits) in [
        ("rs2048", "RS256", 2048),
        ("rs3072", "RS256", 3072),
        ("rs4096", "RS256", 4096),
        ("es256", "ES256", 0),
        ("ed", "EdDSA", 0),
    ] {
        let took = create(&server, name, alg, bits).await;
        println!(
            "{:<38} {:>9.1} ms (two keys: active + pending)",
            format!("CreateKeySet {alg} {bits}"),
            took.as_secs_f64() * 1e3
        );
    }
    for (name, label) in [
        ("rs2048", "SignJwt RS256-2048"),
        ("es256", "SignJwt ES256"),
        ("ed", "SignJwt EdDSA"),
    ] {
        sign(&server, name, 50).await; // warm the signer cache
        report(label, &sign(&server, name, 2000).await);
    }
    hot_paths(&server).await;
    authorization_and_audit(&server).await;
    report("JWKS GET, 1 connection", &jwks(&server, 1, 5000).await);
    report("JWKS GET, 8 concurrent", &jwks(&server, 8, 2500).await);

    for i in 0..100 {
        create(&server, &format!("many-{i}"), "ES256", 0).await;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    for _ in 0..50 {
        let t = Instant::now();
        server
            .keysets()
            .rotate_due(pb::RotateDueRequest {
                keyset: None,
                dry_run: false,
            })
            .await
            .unwrap();
        samples.push(t.elapsed());
    }
    report(
        "RotateDue sweep, 106 key sets, none due",
        &stats(samples, started.elapsed()),
    );
    server.stop().await;
}

/// Raw signing through `crypto::keys`, no server: one thread, then one per
/// core, for each algorithm. `cargo bench --bench service -- raw` prints only
/// this (add `--features aws-lc` to compare the backends).
fn raw_signing_rates() {
    use keyward::domain::algorithm::Algorithm;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "\n== raw signing (signing backend: {}) ==",
        keyward::crypto::keys::SIGNING_BACKEND
    );
    for alg in [
        Algorithm::Rs256,
        Algorithm::Ps256,
        Algorithm::Es256,
        Algorithm::EdDsa,
    ] {
        let one = load::raw_signing(alg, 1);
        let all = load::raw_signing(alg, cores);
        println!(
            "{:<38} {one:>9.0} /s on 1 thread  {all:>9.0} /s on {cores}",
            format!("raw {alg:?} signing")
        );
    }
}

fn main() {
    // As `keyward serve` runs: spans and events at info are recorded (here
    // into a sink), so the request span costs what it costs in production.
    // KEYWARD_BENCH_LOGS=off measures without any subscriber.
    if std::env::var("KEYWARD_BENCH_LOGS").as_deref() != Ok("off") {
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .init();
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--server-cores") {
        let n = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .expect("--server-cores N: how many cores keyward gets");
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cores::run(n));
        return;
    }
    if std::env::args().any(|a| a == "seals") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(seals::run());
        return;
    }
    if std::env::args().any(|a| a == "events") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(events::run());
        return;
    }
    if std::env::args().any(|a| a == "raw") {
        raw_signing_rates();
        return;
    }
    if std::env::args().any(|a| a == "observe") {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(observe_only());
        return;
    }
    raw_signing_rates();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(Backend::Sqlite).await;
        run(Backend::Postgres).await;
    });
}
