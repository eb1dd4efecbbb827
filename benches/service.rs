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

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestDb, TestServer};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use keyward::grpc::pb;

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
        access::Method,
        audit::{AuditEvent, Durability},
        service::{SignProfile, SignRequest},
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
            let mut cl = keyward::grpc::pb::clients_client::ClientsClient::new(channel.clone());
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
    let peer = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    const CHECKS: u32 = 200_000;
    let t = Instant::now();
    for _ in 0..CHECKS {
        let grant = service
            .authenticate_peer(peer, Some(&server.token))
            .unwrap();
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
        action: "GetClientSecret".into(),
        target: "bench".into(),
        outcome: "OK".into(),
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

/// How long each hot-path rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// Runs `op` from `tasks` tasks for [`RATE_WINDOW`] (after a short warm-up):
/// calls per second and the p99 latency.
async fn rate<F, Fut>(tasks: usize, op: F) -> (f64, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rate_for(RATE_WINDOW, tasks, op).await
}

/// [`rate`] over `window`.
async fn rate_for<F, Fut>(window: Duration, tasks: usize, op: F) -> (f64, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let warm_up = Instant::now() + Duration::from_millis(300);
    let end = warm_up + window;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let t = Instant::now();
                if t >= end {
                    return samples;
                }
                op(task).await;
                if t >= warm_up {
                    samples.push(t.elapsed());
                }
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort();
    let p99 = all[(all.len().saturating_sub(1)) * 99 / 100];
    (all.len() as f64 / window.as_secs_f64(), p99)
}

/// Raw signing of one token's worth of claims on `threads` threads, for
/// [`RATE_WINDOW`]: signatures per second.
fn raw_signing(alg: keyward::crypto::keys::Algorithm, threads: usize) -> f64 {
    use keyward::crypto::{jwt, keys};
    let key = std::sync::Arc::new(keys::generate(alg, 2048).unwrap().key);
    let end = Instant::now() + RATE_WINDOW;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = std::sync::Arc::clone(&key);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < end {
                    let mut claims = serde_json::Map::new();
                    claims.insert("sub".into(), "bench".into());
                    jwt::sign(&key, claims, 0, 600).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total as f64 / RATE_WINDOW.as_secs_f64()
}

/// [`raw_signing`] of RS256 on `cores` threads, printed as an anchor.
fn raw_rs_anchor(cores: usize) -> f64 {
    let raw = raw_signing(keyward::crypto::keys::Algorithm::Rs256, cores);
    println!(
        "{:<38} {raw:>9.0} /s  (anchor: {cores} threads)",
        "raw RS256-2048 signing"
    );
    raw
}

fn ratio_line(what: &str, (per_sec, p99): (f64, Duration), anchor: f64, anchor_name: &str) {
    println!(
        "{what:<38} {per_sec:>9.0} /s  p99 {:>7.2} ms  {:>5.2}x {anchor_name}",
        p99.as_secs_f64() * 1e3,
        per_sec / anchor
    );
}

/// The hot paths at full rate, each next to its anchor (see the module doc).
async fn hot_paths(server: &TestServer) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    const SECRET: &str = "hot-path-secret-0123456789";
    for (id, keyset) in [("hot-es", "es256"), ("hot-rs", "rs2048")] {
        server
            .clients()
            .put_client(pb::PutClientRequest {
                id: id.into(),
                secret: Some(SECRET.into()),
                token_keyset: Some(keyset.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // h2load -c4 -m16: four connections, sixteen calls in flight on each.
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            tonic::transport::Endpoint::from_shared(server.grpc_url.clone())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", server.token).parse().unwrap();
    let authed = move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    };
    const GRPC_TASKS: usize = 64;
    println!(
        "-- hot paths: {GRPC_TASKS} gRPC calls in flight on 4 connections, 64 HTTP connections"
    );

    // Each call is measured right after its anchor, so a machine that
    // speeds up or slows down between measurements moves both.
    let health_op = {
        let channels = channels.clone();
        move |task: usize| {
            let mut client = HealthClient::new(channels[task % 4].clone());
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap();
            }
        }
    };
    let health_anchor = || {
        let op = health_op.clone();
        async move {
            let health = rate(GRPC_TASKS, op).await;
            println!(
                "{:<38} {:>9.0} /s  p99 {:>7.2} ms  (anchor)",
                "grpc.health.v1.Health/Check",
                health.0,
                health.1.as_secs_f64() * 1e3
            );
            health
        }
    };
    let clients = {
        let (channels, authed) = (channels.clone(), authed.clone());
        move |task: usize| {
            pb::clients_client::ClientsClient::with_interceptor(
                channels[task % 4].clone(),
                authed.clone(),
            )
        }
    };
    let keysets = {
        let (channels, authed) = (channels.clone(), authed.clone());
        move |task: usize| {
            pb::key_sets_client::KeySetsClient::with_interceptor(
                channels[task % 4].clone(),
                authed.clone(),
            )
        }
    };
    let health = health_anchor().await;
    let get_secret = rate(GRPC_TASKS, move |task| {
        let mut client = clients(task);
        async move {
            client
                .get_client_secret(pb::GetClientSecretRequest {
                    id: "hot-es".into(),
                    version: None,
                })
                .await
                .unwrap();
        }
    })
    .await;
    ratio_line("Clients/GetClientSecret", get_secret, health.0, "health");
    let health = health_anchor().await;
    let get_keyset = {
        let keysets = keysets.clone();
        rate(GRPC_TASKS, move |task| {
            let mut client = keysets(task);
            async move {
                client
                    .get_key_set(pb::GetKeySetRequest {
                        name: "es256".into(),
                    })
                    .await
                    .unwrap();
            }
        })
        .await
    };
    ratio_line("KeySets/GetKeySet", get_keyset, health.0, "health");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for (keyset, label) in [
        ("es256", "KeySets/SignJwt ES256"),
        ("rs2048", "KeySets/SignJwt RS256"),
    ] {
        let anchor = if keyset == "es256" {
            health_anchor().await.0
        } else {
            raw_rs_anchor(cores)
        };
        let keysets = keysets.clone();
        let r = rate(GRPC_TASKS, move |task| {
            let mut client = keysets(task);
            async move {
                client
                    .sign_jwt(pb::SignJwtRequest {
                        keyset: keyset.into(),
                        claims_json: r#"{"sub":"bench"}"#.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
        .await;
        let anchor_name = if keyset == "es256" {
            "health"
        } else {
            "raw RS256"
        };
        ratio_line(label, r, anchor, anchor_name);
    }

    // HTTP: the JWKS GET, then the token endpoint per algorithm.
    const HTTP_TASKS: usize = 64;
    let http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(HTTP_TASKS)
        .build_http::<http_body_util::Full<Bytes>>();
    let jwks_url: hyper::Uri = format!("{}/.well-known/jwks.json", server.http_url)
        .parse()
        .unwrap();
    let jwks_get = {
        let (http, url) = (http.clone(), jwks_url.clone());
        move |_task: usize| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let resp = http.get(url).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        }
    };
    let jwks_rate = rate(HTTP_TASKS, jwks_get.clone()).await;
    println!(
        "{:<38} {:>9.0} /s  p99 {:>7.2} ms  (anchor)",
        "GET /.well-known/jwks.json",
        jwks_rate.0,
        jwks_rate.1.as_secs_f64() * 1e3
    );
    let token_url: hyper::Uri = format!("{}/oauth2/token", server.http_url).parse().unwrap();
    let token = move |client_id: &'static str| {
        let (http, url) = (http.clone(), token_url.clone());
        let auth = common::basic(client_id, SECRET);
        move |_task: usize| {
            let (http, url, auth) = (http.clone(), url.clone(), auth.clone());
            async move {
                let req = hyper::Request::post(url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("authorization", auth)
                    .body(http_body_util::Full::new(Bytes::from_static(
                        b"grant_type=client_credentials",
                    )))
                    .unwrap();
                let resp = http.request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        }
    };
    let token_es = rate(HTTP_TASKS, token("hot-es")).await;
    ratio_line(
        "POST /oauth2/token ES256",
        token_es,
        jwks_rate.0,
        "JWKS GET",
    );
    let raw_rs = raw_rs_anchor(cores);
    let token_rs = rate(HTTP_TASKS, token("hot-rs")).await;
    ratio_line("POST /oauth2/token RS256", token_rs, raw_rs, "raw RS256");

    // The JWKS, one request at a time, while RS256 tokens go out at full rate.
    let load = tokio::spawn(rate_for(
        RATE_WINDOW + Duration::from_secs(1),
        HTTP_TASKS,
        token("hot-rs"),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let under_load = rate(1, jwks_get).await;
    let load = load.await.unwrap();
    println!(
        "{:<38} {:>9.0} /s  p99 {:>7.2} ms  (while {:.0} RS256 tokens/s)",
        "JWKS GET under RS256 token load",
        under_load.0,
        under_load.1.as_secs_f64() * 1e3,
        load.0
    );
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        run(Backend::Sqlite).await;
        run(Backend::Postgres).await;
    });
}
