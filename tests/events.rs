//! Change events through the real gRPC API, on SQLite and PostgreSQL: every
//! change is one event in `Watch` and in the outbox, in commit order; a
//! watcher resumes from its last id missing nothing; a watcher acting on an
//! event at once sees the change, made on another replica; a token's scope
//! limits what it sees and a revoked token's stream ends; webhooks reach a
//! real HTTP receiver from two replicas once each, signed, through a
//! receiver outage and a replica killed mid-delivery; near-expiry alerts
//! once each.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Backend, TestDb, TestServer, create_keyset};
use keyward::transport::grpc::pb::{
    self, events_client::EventsClient, webhooks_client::WebhooksClient,
};
use tonic::{Code, Request, Streaming};

fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn watch(server: &TestServer, token: &str, req: pb::WatchRequest) -> Streaming<pb::Event> {
    EventsClient::new(server.channel.clone())
        .watch(bearer(token, req))
        .await
        .unwrap()
        .into_inner()
}

/// The next `n` events of `stream`, within ten seconds.
async fn take(stream: &mut Streaming<pb::Event>, n: usize) -> Vec<pb::Event> {
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events came: {got:?}", got.len()));
        got.push(next.unwrap().expect("stream open"));
    }
    got
}

/// Nothing more arrives within half a second.
async fn quiet(stream: &mut Streaming<pb::Event>) {
    let next = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(next.is_err(), "unexpected: {next:?}");
}

fn kinds(events: &[pb::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let about = [&e.keyset, &e.client, &e.token]
                .into_iter()
                .find(|s| !s.is_empty())
                .cloned()
                .unwrap_or_default();
            format!("{} {about}", e.kind)
        })
        .collect()
}

/// Makes one change of every kind, returning the events each must give.
async fn change_everything(server: &TestServer) -> Vec<&'static str> {
    create_keyset(server, "om", "ES256").await;
    let mut ks = server.keysets();
    ks.rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    ks.update_key_set(pb::UpdateKeySetRequest {
        name: "om".into(),
        policy: Some(pb::RotationPolicy {
            retain_seconds: Some(3 * 86_400),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let mut cl = server.clients();
    cl.put_client(pb::PutClientRequest {
        id: "openmetadata".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    cl.rotate_client_secret(pb::RotateClientSecretRequest {
        id: "openmetadata".into(),
        grace_seconds: Some(3600),
        secret: None,
    })
    .await
    .unwrap();
    cl.revoke_client_secret(pb::RevokeClientSecretRequest {
        id: "openmetadata".into(),
        version: 1,
    })
    .await
    .unwrap();
    let mut ac = server.access();
    ac.create_token(pb::CreateTokenRequest {
        name: "ci".into(),
        role: "auditor".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    ac.revoke_token(pb::RevokeTokenRequest { name: "ci".into() })
        .await
        .unwrap();
    cl.delete_client(pb::DeleteClientRequest {
        id: "openmetadata".into(),
    })
    .await
    .unwrap();
    ks.delete_key_set(pb::DeleteKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    vec![
        "keyset.created om",
        "key.activated om",
        "key.pending om",
        // The emergency rotation: the pending key signs, the old one
        // retires, a new one is published.
        "key.activated om",
        "key.retired om",
        "key.pending om",
        "keyset.updated om",
        "client.created openmetadata",
        "client.secret_rotated openmetadata",
        "client.secret_removed openmetadata",
        "token.created ci",
        "token.revoked ci",
        "client.deleted openmetadata",
        "keyset.deleted om",
    ]
}

async fn every_change_is_one_event_in_watch_and_outbox(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let token = server.token.clone();
    let before: i64 = db.raw().await.scalar("SELECT count(*) FROM events").await;
    let mut live = watch(&server, &token, pb::WatchRequest::default()).await;
    let mut keys_only = watch(
        &server,
        &token,
        pb::WatchRequest {
            kinds: vec!["key.*".into()],
            ..Default::default()
        },
    )
    .await;
    let want = change_everything(&server).await;
    let mut got = take(&mut live, want.len()).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    // Within one transaction the order is the store's; across, commit order.
    assert_eq!(
        sorted(kinds(&got)),
        sorted(want.iter().map(ToString::to_string).collect()),
        "{got:?}"
    );
    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "{got:?}");
    quiet(&mut live).await;
    let stored: i64 = db.raw().await.scalar("SELECT count(*) FROM events").await;
    assert_eq!(stored - before, i64::try_from(want.len()).unwrap());
    let keys = take(&mut keys_only, 5).await;
    assert!(keys.iter().all(|e| e.kind.starts_with("key.")), "{keys:?}");
    quiet(&mut keys_only).await;
    // No secret anywhere in the outbox.
    let dump = db.raw().await.dump().await;
    let events_dump: Vec<&str> = dump.lines().filter(|l| l.contains("secret")).collect();
    assert!(
        events_dump.iter().all(|l| !l.contains("whsec_")),
        "{events_dump:?}"
    );
    // Restarted, the outbox is the same and resuming from 0 reads it all.
    let server = server.restart(&db).await;
    let mut all = watch(
        &server,
        &token,
        pb::WatchRequest {
            after_id: Some(0),
            ..Default::default()
        },
    )
    .await;
    let replay = take(&mut all, usize::try_from(stored).unwrap()).await;
    got.retain(|e| replay.contains(e));
    assert_eq!(got.len(), want.len(), "every live event is in the replay");
    server.stop().await;
}

async fn a_watcher_resumes_and_sees_only_its_scope(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let admin = server.token.clone();
    let mut stream = watch(&server, &admin, pb::WatchRequest::default()).await;
    create_keyset(&server, "om", "ES256").await;
    let first = take(&mut stream, 3).await;
    drop(stream);
    // Missed while disconnected.
    create_keyset(&server, "billing", "ES256").await;
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let last = first.last().unwrap().id;
    let mut resumed = watch(
        &server,
        &admin,
        pb::WatchRequest {
            after_id: Some(last),
            ..Default::default()
        },
    )
    .await;
    let missed = take(&mut resumed, 6).await;
    // One transaction each; within one, the store's order.
    let mut rotation = kinds(&missed[3..]);
    rotation.sort();
    assert_eq!(
        (kinds(&missed[..3]), rotation),
        (
            vec![
                "keyset.created billing".to_string(),
                "key.activated billing".into(),
                "key.pending billing".into()
            ],
            vec![
                "key.activated om".to_string(),
                "key.pending om".into(),
                "key.retired om".into()
            ]
        ),
        "{missed:?}"
    );
    assert!(missed[0].id > last);
    quiet(&mut resumed).await;

    // A position never given out is refused.
    let err = EventsClient::new(server.channel.clone())
        .watch(bearer(
            &admin,
            pb::WatchRequest {
                after_id: Some(1_000_000),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = EventsClient::new(server.channel.clone())
        .watch(bearer(
            &admin,
            pb::WatchRequest {
                kinds: vec!["keys.*".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A signer of om sees om's key events only.
    let signer = server
        .create_token("om-signer", "signer", &["om"], &[])
        .await;
    let mut scoped = watch(&server, &signer, pb::WatchRequest::default()).await;
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "billing".into(),
        })
        .await
        .unwrap();
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let seen = take(&mut scoped, 3).await;
    assert!(seen.iter().all(|e| e.keyset == "om"), "{seen:?}");
    quiet(&mut scoped).await;

    // Revoked, its stream ends at the next event it would get.
    server
        .access()
        .revoke_token(pb::RevokeTokenRequest {
            name: "om-signer".into(),
        })
        .await
        .unwrap();
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), scoped.message())
        .await
        .unwrap();
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
    server.stop().await;
}

/// One POST a receiver took: its headers and body.
type Received = (BTreeMap<String, String>, Vec<u8>);

/// A webhook receiver: records what it is sent; answers 503 while `failing`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    failing: Arc<AtomicBool>,
    /// While set, requests are held 30 s (counted in `held`), then refused.
    hanging: Arc<AtomicBool>,
    held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    async fn start(&self) -> String {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let me = me.clone();
                    async move {
                        if me.hanging.load(Ordering::SeqCst) {
                            me.held.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        if me.failing.load(Ordering::SeqCst) {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let headers = headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect();
                        me.got.lock().unwrap().push((headers, body.to_vec()));
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Waits until `n` distinct events came; returns the event ids in order.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<i64> {
        let started = Instant::now();
        loop {
            let mut ids: Vec<String> = (self.got.lock().unwrap().iter())
                .map(|(h, _)| h["keyward-event-id"].clone())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let got = ids.len();
            if got >= n {
                break;
            }
            assert!(started.elapsed() < within, "{got} of {n} deliveries came");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h["keyward-event-id"].parse().unwrap())
            .collect()
    }
}

/// The webhook's `want` deliveries once none is pending. A receiver counts a POST before its
/// answer reaches the replica, which records the delivery only then: this waits for the record.
async fn settled_deliveries(
    server: &TestServer,
    webhook: &str,
    want: usize,
) -> Vec<pb::WebhookDelivery> {
    let started = Instant::now();
    loop {
        let deliveries = WebhooksClient::new(server.channel.clone())
            .list_webhook_deliveries(bearer(
                &server.token,
                pb::ListWebhookDeliveriesRequest {
                    webhook: webhook.into(),
                    limit: 1000,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries;
        assert_eq!(deliveries.len(), want);
        if deliveries.iter().all(|d| d.state != "pending")
            || started.elapsed() > Duration::from_secs(30)
        {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The check the README gives receivers: HMAC-SHA-256 of `timestamp.body`.
fn signature_holds(secret: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> bool {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = [headers["keyward-timestamp"].as_bytes(), b".", body].concat();
    let Some(hex) = headers["keyward-signature"].strip_prefix("v1=") else {
        return false;
    };
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    ring::hmac::verify(&key, &signed, &tag).is_ok()
}

async fn webhooks_reach_a_receiver_once_from_two_replicas(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let one = TestServer::start(&db).await;
    let two = TestServer::start(&db).await;
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let mut hooks = WebhooksClient::new(one.channel.clone());
    let created = hooks
        .create_webhook(bearer(
            &one.token,
            pb::CreateWebhookRequest {
                name: "om-keys".into(),
                url: url.clone(),
                kinds: vec!["key.*".into(), "keyset.*".into()],
                keysets: vec!["om-*".into()],
                clients: Vec::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let secret = created.signing_secret.clone();
    assert!(secret.starts_with("whsec_"), "shown once");
    // The secret is sealed: not in the database in clear.
    assert!(!db.raw().await.dump().await.contains(&secret));
    for bad in ["ftp://x/hook", "https://user:pw@x/hook", "not a url"] {
        let err = hooks
            .create_webhook(bearer(
                &one.token,
                pb::CreateWebhookRequest {
                    name: "bad".into(),
                    url: bad.into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
    }

    // Changes on both replicas; only om-* key set events match.
    create_keyset(&one, "om-prod", "ES256").await;
    create_keyset(&two, "billing", "ES256").await;
    for _ in 0..3 {
        two.keysets()
            .rotate_key_set(pb::RotateKeySetRequest {
                name: "om-prod".into(),
            })
            .await
            .unwrap();
    }
    let want = 3 + 3 * 3;
    let ids = receiver.wait_for(want, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), want, "each event once: {ids:?}");
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), want);
    for (headers, body) in &got {
        assert!(signature_holds(&secret, headers, body), "{headers:?}");
        assert!(!signature_holds("whsec_other", headers, body));
        assert_eq!(headers["content-type"], "application/cloudevents+json");
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["id"], headers["keyward-event-id"]);
        assert!(
            event["type"]
                .as_str()
                .unwrap()
                .starts_with("io.keyward.key")
        );
        assert_eq!(event["data"]["keyset"], "om-prod");
    }

    // The receiver fails for a while, then recovers: every event arrives.
    receiver.failing.store(true, Ordering::SeqCst);
    one.keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "om-prod".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = hooks
        .list_webhook_deliveries(bearer(
            &one.token,
            pb::ListWebhookDeliveriesRequest {
                webhook: "om-keys".into(),
                limit: 3,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries;
    assert!(
        failed
            .iter()
            .all(|d| d.state == "pending" && d.last_status == 503 && d.attempts >= 1),
        "{failed:?}"
    );
    receiver.failing.store(false, Ordering::SeqCst);
    receiver.wait_for(want + 3, Duration::from_secs(30)).await;
    let delivered = settled_deliveries(&two, "om-keys", want + 3).await;
    assert!(
        delivered.iter().all(|d| d.state == "delivered"),
        "{delivered:?}"
    );
    assert!(delivered.iter().take(3).all(|d| d.attempts >= 2));

    // Deleted, it gets nothing more and its secret is gone.
    hooks
        .delete_webhook(bearer(
            &one.token,
            pb::DeleteWebhookRequest {
                name: "om-keys".into(),
            },
        ))
        .await
        .unwrap();
    let secrets: i64 = db
        .raw()
        .await
        .scalar("SELECT count(*) FROM keyward_meta WHERE name LIKE 'webhook/%'")
        .await;
    assert_eq!(secrets, 0);
    one.keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "om-prod".into(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), want + 3);
    two.stop().await;
    one.stop().await;
}

async fn near_expiry_alerts_are_raised_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    let admin = server.token.clone();
    // A token expiring in 10 days, a key set retaining retired keys 9 days,
    // a client secret rotated with 8 days of grace.
    server
        .access()
        .create_token(pb::CreateTokenRequest {
            name: "cron".into(),
            role: "rotator".into(),
            expires_in_seconds: Some(10 * 86_400),
            ..Default::default()
        })
        .await
        .unwrap();
    server
        .keysets()
        .create_key_set(pb::CreateKeySetRequest {
            name: "om".into(),
            algorithm: "ES256".into(),
            rsa_bits: 0,
            policy: Some(pb::RotationPolicy {
                retain_seconds: Some(9 * 86_400),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let mut cl = server.clients();
    cl.put_client(pb::PutClientRequest {
        id: "openmetadata".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    cl.rotate_client_secret(pb::RotateClientSecretRequest {
        id: "openmetadata".into(),
        grace_seconds: Some(8 * 86_400),
        secret: None,
    })
    .await
    .unwrap();
    let mut alerts = watch(
        &server,
        &admin,
        pb::WatchRequest {
            kinds: vec![
                "token.expiring".into(),
                "key.expiring".into(),
                "client.grace_ending".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    let overdue = Duration::from_secs(3600);
    let week = keyward::config::DEFAULT_ALERT_AHEAD;
    // Nothing is within a week yet; all three are within --alert-ahead 11d.
    assert_eq!(server.service.raise_alerts(overdue, week).await.unwrap(), 0);
    let eleven_days = Duration::from_secs(11 * 86_400);
    let early = server
        .service
        .raise_alerts(overdue, eleven_days)
        .await
        .unwrap();
    assert_eq!(early, 3);
    take(&mut alerts, 3).await;
    assert_eq!(server.service.raise_alerts(overdue, week).await.unwrap(), 0);
    quiet(&mut alerts).await;
    // Four days on: all three are within a week; each is raised once per
    // deadline, however many sweeps (and replicas) or windows see it.
    clock.advance(4 * 86_400);
    assert_eq!(server.service.raise_alerts(overdue, week).await.unwrap(), 0);
    assert_eq!(server.service.raise_alerts(overdue, week).await.unwrap(), 0);
    quiet(&mut alerts).await;
    drop(alerts);
    let mut replay = watch(
        &server,
        &admin,
        pb::WatchRequest {
            after_id: Some(0),
            kinds: vec![
                "token.expiring".into(),
                "key.expiring".into(),
                "client.grace_ending".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    let mut got = kinds(&take(&mut replay, 3).await);
    got.sort();
    assert_eq!(
        got,
        [
            "client.grace_ending openmetadata",
            "key.expiring om",
            "token.expiring cron"
        ]
    );
    quiet(&mut replay).await;
    server.stop().await;
}

async fn a_replica_killed_mid_delivery_loses_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // Replica one is a process of its own, to be killed with SIGKILL.
    let mut one = common::process::spawn_serve(db.serve_command(db.data_dir())).unwrap();
    let token = std::fs::read_to_string(db.data_dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let api = common::As::at(&one.grpc, &token);
    let receiver = Receiver::default();
    let url = receiver.start().await;
    receiver.hanging.store(true, Ordering::SeqCst);
    let mut hooks = api.webhooks.clone();
    hooks
        .create_webhook(pb::CreateWebhookRequest {
            name: "keys".into(),
            url,
            // Not key.expiring: the alert sweep would add the retired key's.
            kinds: vec![
                "key.pending".into(),
                "key.activated".into(),
                "key.retired".into(),
            ],
            keysets: vec!["om".into()],
            clients: Vec::new(),
        })
        .await
        .unwrap();
    let mut keysets = api.keysets.clone();
    keysets
        .create_key_set(pb::CreateKeySetRequest {
            name: "om".into(),
            algorithm: "ES256".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    keysets
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let want = 2 + 3;
    // Killed while its deliveries are in flight.
    let started = Instant::now();
    while receiver.held.load(Ordering::SeqCst) < want {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no delivery began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one.child.kill().unwrap();
    one.child.wait().unwrap();
    receiver.hanging.store(false, Ordering::SeqCst);
    // Another replica delivers every event once the dead one's claims lapse.
    let two = TestServer::start(&db).await;
    let mut ids = receiver.wait_for(want, Duration::from_secs(120)).await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), want, "{ids:?}");
    let deliveries = settled_deliveries(&two, "keys", want).await;
    assert!(
        deliveries.iter().all(|d| d.state == "delivered"),
        "{deliveries:?}"
    );
    two.stop().await;
}

async fn master_key_changes_are_events(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let token = server.token.clone();
    let master = || pb::WatchRequest {
        after_id: Some(0),
        kinds: vec!["master.*".into(), "seal.*".into()],
        ..Default::default()
    };
    let mut all = watch(&server, &token, master()).await;
    let first = take(&mut all, 1).await;
    assert_eq!(first[0].kind, "master.changed");
    assert!(first[0].detail.ends_with("seals new writes"), "{first:?}");
    quiet(&mut all).await;
    drop(all);
    // The same key again: nothing new.
    let server = server.restart(&db).await;
    let mut all = watch(&server, &token, master()).await;
    assert_eq!(take(&mut all, 1).await, first);
    quiet(&mut all).await;
    server.stop().await;

    // A new current key, then a rewrap that leaves nothing under the old one.
    let keys = common::write_keys(&db);
    let server = TestServer::start_with(
        &db,
        common::keyring_config(&db, &keys, true),
        Arc::new(keyward::domain::clock::SystemClock),
    )
    .await;
    let mut all = watch(&server, &token, master()).await;
    take(&mut all, 1).await;
    let changed = take(&mut all, 1).await;
    assert_eq!(
        changed[0].detail,
        format!("master key {} seals new writes", keys.new_id)
    );
    server
        .service
        .rewrap(200, Duration::ZERO, &mut |_| {})
        .await
        .unwrap();
    let rewrapped = take(&mut all, 1).await;
    assert_eq!(
        rewrapped[0].detail,
        format!(
            "rewrap done: every value is sealed under master key {}",
            keys.new_id
        )
    );
    // Only operators and auditors see them.
    let signer = server.create_token("signer", "signer", &["*"], &[]).await;
    let mut none = watch(&server, &signer, master()).await;
    quiet(&mut none).await;
    server.stop().await;
}

/// A watcher that acts on an event at once is answered as of that event:
/// the replica it watches reads the change another replica made before it
/// passes the event on (without that, the replica's views caught up within
/// their own interval, and a token signed on `key.activated` could still
/// carry the old key).
async fn a_watcher_acting_at_once_sees_the_change(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let watched = TestServer::start(&db).await;
    let writer = TestServer::start(&db).await;
    let mut activations = watch(
        &watched,
        &watched.token,
        pb::WatchRequest {
            kinds: vec!["key.activated".into()],
            ..Default::default()
        },
    )
    .await;
    create_keyset(&writer, "om", "ES256").await;
    take(&mut activations, 1).await;
    let mut signer = watched.keysets();
    for round in 0..5 {
        let new_kid = common::rotate_keyset(&writer, "om").await;
        let event = take(&mut activations, 1).await.remove(0);
        assert_eq!(event.kid, new_kid, "round {round}");
        let signed = signer
            .sign_jwt(pb::SignJwtRequest {
                keyset: "om".into(),
                claims_json: r#"{"sub":"watcher"}"#.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(signed.kid, new_kid, "round {round}");
    }
    writer.stop().await;
    watched.stop().await;
}

#[test]
fn the_readme_names_every_event_kind() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Events and webhooks")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    for kind in keyward::domain::event::EventKind::ALL {
        assert!(
            section.contains(&format!("`{}`", kind.as_str())),
            "{kind} is not in the README's Events section"
        );
    }
}

both_backends!(
    every_change_is_one_event_in_watch_and_outbox,
    a_watcher_resumes_and_sees_only_its_scope,
    webhooks_reach_a_receiver_once_from_two_replicas,
    near_expiry_alerts_are_raised_once,
    a_replica_killed_mid_delivery_loses_nothing,
    master_key_changes_are_events,
    a_watcher_acting_at_once_sees_the_change,
);
