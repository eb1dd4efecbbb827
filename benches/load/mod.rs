//! What both benches drive load with: calls at full rate from many tasks for
//! a fixed window, raw signing loops, and the hot-path calls over a real
//! server's gRPC and HTTP interfaces, shaped like the outside load generators
//! (`h2load -c4 -m16` for gRPC, `wrk -c64` for HTTP).

#![allow(dead_code)]

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use keyward::transport::grpc::pb;
use tonic::{metadata::MetadataValue, transport::Channel};

use crate::common::{self, TestServer};

/// How long each rate is measured, after a short warm-up.
pub const RATE_WINDOW: Duration = Duration::from_secs(3);
/// gRPC calls in flight: four connections, sixteen calls on each.
pub const GRPC_TASKS: usize = 64;
/// HTTP connections, one request in flight on each.
pub const HTTP_TASKS: usize = 64;

/// One call of a load: its task number in, done when the call is.
pub type Op = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

fn op<F, Fut>(f: F) -> Op
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |task| Box::pin(f(task)))
}

/// Runs `op` from `tasks` tasks for [`RATE_WINDOW`]: calls per second and
/// the p99 latency.
pub async fn rate(tasks: usize, op: &Op) -> (f64, Duration) {
    rate_for(RATE_WINDOW, tasks, op).await
}

/// [`rate`] over `window`.
pub async fn rate_for(window: Duration, tasks: usize, op: &Op) -> (f64, Duration) {
    let warm_up = Instant::now() + Duration::from_millis(300);
    let end = warm_up + window;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let op = Arc::clone(op);
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
pub fn raw_signing(alg: keyward::domain::algorithm::Algorithm, threads: usize) -> f64 {
    use keyward::crypto::{jwt, keys};
    let key = Arc::new(keys::generate(alg, 2048).unwrap().key);
    let end = Instant::now() + RATE_WINDOW;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let key = Arc::clone(&key);
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

/// Prints a measured rate next to its anchor, as a ratio.
pub fn ratio_line(what: &str, (per_sec, p99): (f64, Duration), anchor: f64, anchor_name: &str) {
    println!(
        "{what:<38} {per_sec:>9.0} /s  p99 {:>7.2} ms  {:>5.2}x {anchor_name}",
        p99.as_secs_f64() * 1e3,
        per_sec / anchor
    );
}

/// An anchor: a call whose rate another is compared to, with its name and
/// the tasks it runs from.
pub struct Anchor<'a> {
    pub name: &'a str,
    pub op: Op,
    pub tasks: usize,
}

/// Measures `call` from `tasks` tasks between two measurements of `anchor`
/// (the machine's speed drifts by tens of percent within seconds) and prints
/// both anchors and the call's ratio to their mean: `(call's rate, ratio)`.
pub async fn against(anchor: &Anchor<'_>, label: &str, call: &Op, tasks: usize) -> (f64, f64) {
    let before = rate(anchor.tasks, &anchor.op).await;
    let measured = rate(tasks, call).await;
    let after = rate(anchor.tasks, &anchor.op).await;
    println!(
        "{:<38} {:>9.0} /s before, {:.0} /s after  (anchor)",
        anchor.name, before.0, after.0
    );
    let mean = (before.0 + after.0) / 2.0;
    ratio_line(label, measured, mean, anchor.name);
    (measured.0, measured.0 / mean)
}

/// The hot-path calls against one server, each as an [`Op`].
pub struct HotCalls {
    channels: Vec<Channel>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    http: Client<HttpConnector, Full<Bytes>>,
    http_url: String,
}

impl HotCalls {
    pub async fn new(server: &TestServer) -> Self {
        Self::at(&server.grpc_url, &server.http_url, &server.token).await
    }

    /// The calls against the server at these URLs, presenting `token`.
    pub async fn at(grpc_url: &str, http_url: &str, token: &str) -> Self {
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(
                tonic::transport::Endpoint::from_shared(grpc_url.to_string())
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        Self {
            channels,
            bearer: format!("Bearer {token}").parse().unwrap(),
            http: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(HTTP_TASKS)
                .build_http(),
            http_url: http_url.to_string(),
        }
    }

    /// The same calls, with HTTP ones sent to `http_url` instead.
    pub fn http_at(&self, http_url: &str) -> Self {
        Self {
            channels: self.channels.clone(),
            bearer: self.bearer.clone(),
            http: self.http.clone(),
            http_url: http_url.to_string(),
        }
    }

    fn authed<T>(&self, task: usize, message: T) -> (Channel, tonic::Request<T>) {
        let mut req = tonic::Request::new(message);
        req.metadata_mut()
            .insert("authorization", self.bearer.clone());
        (self.channels[task % self.channels.len()].clone(), req)
    }

    /// `grpc.health.v1.Health/Check`: the gRPC anchor.
    pub fn health(&self) -> Op {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channels = self.channels.clone();
        op(move |task| {
            let mut client = HealthClient::new(channels[task % channels.len()].clone());
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap();
            }
        })
    }

    pub fn get_client_secret(self: &Arc<Self>, id: &'static str) -> Op {
        let calls = Arc::clone(self);
        op(move |task| {
            let (channel, req) = calls.authed(
                task,
                pb::GetClientSecretRequest {
                    id: id.into(),
                    version: None,
                },
            );
            async move {
                pb::clients_client::ClientsClient::new(channel)
                    .get_client_secret(req)
                    .await
                    .unwrap();
            }
        })
    }

    pub fn get_key_set(self: &Arc<Self>, name: &'static str) -> Op {
        let calls = Arc::clone(self);
        op(move |task| {
            let (channel, req) = calls.authed(task, pb::GetKeySetRequest { name: name.into() });
            async move {
                pb::key_sets_client::KeySetsClient::new(channel)
                    .get_key_set(req)
                    .await
                    .unwrap();
            }
        })
    }

    pub fn sign_jwt(self: &Arc<Self>, keyset: &'static str) -> Op {
        let calls = Arc::clone(self);
        op(move |task| {
            let (channel, req) = calls.authed(
                task,
                pb::SignJwtRequest {
                    keyset: keyset.into(),
                    claims_json: r#"{"sub":"bench"}"#.into(),
                    ..Default::default()
                },
            );
            async move {
                pb::key_sets_client::KeySetsClient::new(channel)
                    .sign_jwt(req)
                    .await
                    .unwrap();
            }
        })
    }

    /// `GET /.well-known/jwks.json`: the HTTP anchor.
    pub fn jwks_get(&self) -> Op {
        let url: hyper::Uri = format!("{}/.well-known/jwks.json", self.http_url)
            .parse()
            .unwrap();
        let http = self.http.clone();
        op(move |_task| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let resp = http.get(url).await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        })
    }

    /// `POST /oauth2/token` with the client-credentials grant.
    pub fn token(&self, client_id: &str, secret: &str) -> Op {
        let url: hyper::Uri = format!("{}/oauth2/token", self.http_url).parse().unwrap();
        let (http, auth) = (self.http.clone(), common::basic(client_id, secret));
        op(move |_task| {
            let req = hyper::Request::post(url.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .header("authorization", auth.clone())
                .body(Full::new(Bytes::from_static(
                    b"grant_type=client_credentials",
                )))
                .unwrap();
            let resp = http.request(req);
            async move {
                let resp = resp.await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.unwrap();
            }
        })
    }
}
