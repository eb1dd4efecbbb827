//! `cargo bench --bench service -- events`: what change events cost. The
//! outbox: a client secret rotation and an emergency key rotation (each
//! writes its events in its own transaction) next to one event appended in
//! a transaction of its own (more than the outbox adds to a change, which
//! pays no extra commit). The fan-out: 1,000 `Watch` streams open, one
//! rotation, the time until every watcher has its first event.

use std::time::{Duration, Instant};

use keyward::{
    domain::event::{EventKind, NewEvent, Subject},
    transport::grpc::pb::{self, events_client::EventsClient},
};
use tonic::{Request, transport::Endpoint};

use crate::common::{Backend, TestDb, TestServer, create_keyset};

const WRITES: usize = 200;
const WATCHERS: usize = 1000;
/// Watch streams per connection.
const PER_CHANNEL: usize = 100;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

async fn outbox(server: &TestServer) {
    let mut clients = server.clients();
    clients
        .put_client(pb::PutClientRequest {
            id: "bench".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..WRITES {
        clients
            .rotate_client_secret(pb::RotateClientSecretRequest {
                id: "bench".into(),
                grace_seconds: Some(0),
                secret: None,
            })
            .await
            .unwrap();
    }
    let secret = started.elapsed() / u32::try_from(WRITES).unwrap();
    create_keyset(server, "bench-es", "ES256").await;
    let mut keysets = server.keysets();
    let started = Instant::now();
    for _ in 0..WRITES {
        keysets
            .rotate_key_set(pb::RotateKeySetRequest {
                name: "bench-es".into(),
            })
            .await
            .unwrap();
    }
    let rotation = started.elapsed() / u32::try_from(WRITES).unwrap();
    let started = Instant::now();
    for i in 0..WRITES {
        let event = NewEvent::new(EventKind::RotationOverdue, 0, Subject::keyset("bench-es"))
            .detail(format!("bench {i}"));
        server.service.raise(&[event]).await.unwrap();
    }
    let alone = started.elapsed() / u32::try_from(WRITES).unwrap();
    println!(
        "RotateClientSecret {:>7.2} ms   RotateKeySet (ES256) {:>7.2} ms   one event in its own transaction {:>6.2} ms  (mean of {WRITES}, sequential)",
        ms(secret),
        ms(rotation),
        ms(alone)
    );
}

async fn fan_out(server: &TestServer) {
    create_keyset(server, "fan", "ES256").await;
    let mut streams = Vec::with_capacity(WATCHERS);
    for chunk in 0..WATCHERS.div_ceil(PER_CHANNEL) {
        let channel = Endpoint::from_shared(server.grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..PER_CHANNEL.min(WATCHERS - chunk * PER_CHANNEL) {
            let mut req = Request::new(pb::WatchRequest {
                keysets: vec!["fan".into()],
                ..Default::default()
            });
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", server.token).parse().unwrap(),
            );
            let stream = EventsClient::new(channel.clone())
                .watch(req)
                .await
                .unwrap()
                .into_inner();
            streams.push(stream);
        }
    }
    // Every stream's catch-up read is done before the rotation.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let waits: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                s.message().await.unwrap().unwrap();
                started.elapsed()
            })
        })
        .collect();
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: "fan".into() })
        .await
        .unwrap();
    let committed = started.elapsed();
    let mut got = Vec::with_capacity(WATCHERS);
    for w in waits {
        got.push(w.await.unwrap());
    }
    got.sort();
    println!(
        "{WATCHERS} watchers, one rotation: committed after {:.1} ms; first event at every watcher: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
        ms(committed),
        ms(percentile(&got, 0.5)),
        ms(percentile(&got, 0.99)),
        ms(*got.last().unwrap())
    );
}

pub async fn run() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db) = TestDb::new(backend).await else {
            continue;
        };
        println!("\n== events on {backend:?}");
        let server = TestServer::start(&db).await;
        outbox(&server).await;
        fan_out(&server).await;
        server.stop().await;
    }
}
