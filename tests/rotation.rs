//! Scheduled rotation, proven through the real gRPC and HTTP interfaces with an
//! injected clock: long walks with a strictly caching JWKS client, catch-up
//! after downtime, revocation, exactly-once under contention (tasks, replicas
//! and `keyward rotate` processes), and precise errors for bad policies.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, sync::Arc};

use common::{Backend, TestDb, TestServer};
use keyward::{
    domain::clock::{Clock, ManualClock},
    transport::grpc::pb,
};
use serde_json::Value;
use tonic::Code;

const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// xorshift64*: deterministic, seedable, good enough to pick instants.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    let seed = std::env::var("KEYWARD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    eprintln!("simulation seed {seed} (set KEYWARD_SIM_SEED to replay)");
    seed
}

fn policy(every: u64, prepublish: u64, retain: u64, ttl: u64) -> pb::RotationPolicy {
    pb::RotationPolicy {
        rotate_every_seconds: Some(every),
        schedule: None,
        prepublish_seconds: Some(prepublish),
        retain_seconds: Some(retain),
        max_token_ttl_seconds: Some(ttl),
    }
}

async fn start(db: &TestDb, clock: &ManualClock, jwks_max_age: u64) -> TestServer {
    let mut config = db.config();
    config.jwks_max_age = jwks_max_age;
    // The walk drives every sweep itself, as cron would.
    config.rotation_interval = None;
    TestServer::start_with(db, config, Arc::new(clock.clone())).await
}

async fn create(server: &TestServer, name: &str, p: pb::RotationPolicy) -> pb::KeySet {
    server
        .keysets()
        .create_key_set(pb::CreateKeySetRequest {
            name: name.into(),
            algorithm: "ES256".into(),
            rsa_bits: 0,
            policy: Some(p),
        })
        .await
        .expect("CreateKeySet")
        .into_inner()
}

async fn rotate_due(server: &TestServer, keyset: &str) -> Vec<pb::RotationEvent> {
    server
        .keysets()
        .rotate_due(pb::RotateDueRequest {
            keyset: Some(keyset.into()),
            dry_run: false,
        })
        .await
        .expect("RotateDue")
        .into_inner()
        .events
}

async fn keys(server: &TestServer, keyset: &str) -> Vec<pb::Key> {
    server
        .keysets()
        .list_keys(pb::ListKeysRequest {
            keyset: keyset.into(),
            ..Default::default()
        })
        .await
        .expect("ListKeys")
        .into_inner()
        .keys
}

fn in_state(keys: &[pb::Key], state: pb::KeyState) -> Vec<String> {
    keys.iter()
        .filter(|k| k.state == state as i32)
        .map(|k| k.kid.clone())
        .collect()
}

/// A JWKS client that caches exactly as long as `Cache-Control` allows and
/// never re-fetches early, not even for an unknown kid: the strictest client.
struct CachingClient {
    doc: Value,
    fetched_at: i64,
    max_age: i64,
}

impl CachingClient {
    async fn at(&mut self, server: &TestServer, path: &str, now: i64) -> &Value {
        if now >= self.fetched_at + self.max_age {
            let r = server.get(path, &[]).await;
            assert_eq!(r.status, 200);
            self.max_age = r
                .header("cache-control")
                .split("max-age=")
                .nth(1)
                .and_then(|v| v.parse().ok())
                .expect("max-age in Cache-Control");
            self.doc = r.json();
            self.fetched_at = now;
        }
        &self.doc
    }
}

fn kids_of(doc: &Value) -> Vec<String> {
    doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

struct Walk {
    every: u64,
    prepublish: u64,
    retain: u64,
    max_ttl: u64,
    jwks_max_age: u64,
    rotations: usize,
}

/// Walks `rotations` scheduled rotations. Between rotations the clock jumps to
/// a random instant shortly before the next one is due; around it, it moves in
/// random steps no longer than the JWKS max-age. At every instant a token may
/// be minted with a random ttl, and every unexpired token must verify against
/// what the caching client holds.
async fn walk(backend: Backend, w: Walk) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let start_time = 1_800_000_000;
    let clock = ManualClock::new(start_time);
    let server = start(&db, &clock, w.jwks_max_age).await;
    let set = create(
        &server,
        "walk",
        policy(w.every, w.prepublish, w.retain, w.max_ttl),
    )
    .await;
    let path = "/keysets/walk/jwks.json";
    let max_age = i64::try_from(w.jwks_max_age.min(w.prepublish / 2)).unwrap();
    assert_eq!(set.jwks_max_age_seconds, u64::try_from(max_age).unwrap());

    let mut rng = Rng::new(seed());
    let mut client = CachingClient {
        doc: Value::Null,
        fetched_at: i64::MIN / 2,
        max_age: 0,
    };
    let mut first_seen: HashMap<String, i64> = kids_of(&server.get(path, &[]).await.json())
        .into_iter()
        .map(|kid| (kid, start_time))
        .collect();
    let initial_active = set.active_kid.clone();
    let mut tokens: Vec<(String, String, i64)> = Vec::new();
    let (mut rotations, mut minted, mut checks, mut steps) = (0usize, 0usize, 0usize, 0usize);
    let fine_window = i64::try_from(2 * w.max_ttl + 4 * w.jwks_max_age).unwrap();
    // Every token the retired key signed has expired by then.
    let settle = i64::try_from(w.max_ttl + 2 * w.jwks_max_age).unwrap();
    let mut last_rotation = i64::MIN / 2;

    while rotations < w.rotations {
        steps += 1;
        let now = clock.now();
        let next_due = server
            .keysets()
            .get_key_set(pb::GetKeySetRequest {
                name: "walk".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .next_rotation_at;
        // Fine steps before each rotation and until the tokens of the key it
        // retired have expired; random jumps across the quiet stretch between.
        let settling = now < last_rotation + settle;
        let step = if !settling && now < next_due - fine_window {
            // Quiet stretch: land at a random instant before the next rotation.
            let target = next_due - i64::try_from(rng.range(0, fine_window as u64)).unwrap();
            (target - now).max(1)
        } else {
            i64::try_from(rng.range(1, u64::try_from(max_age).unwrap())).unwrap()
        };
        clock.advance(step);
        let now = clock.now();

        let events = rotate_due(&server, "walk").await;
        assert!(
            events
                .iter()
                .all(|e| e.action != "wait" && e.action != "already-rotated"),
            "{events:?}"
        );
        let activated = events.iter().filter(|e| e.action == "activate").count();
        if activated > 0 {
            last_rotation = now;
        }
        rotations += activated;
        if std::env::var("KEYWARD_SIM_TRACE").is_ok() && !events.is_empty() {
            eprintln!("t+{}: {events:?}", now - start_time);
        }

        // What the server publishes now (a fresh fetch).
        let fresh = server.get(path, &[]).await.json();
        let published = kids_of(&fresh);
        assert!(
            !published.is_empty() && published.len() <= 3,
            "{published:?}"
        );
        for kid in &published {
            first_seen.entry(kid.clone()).or_insert(now);
        }

        if rng.range(0, 1) == 1 {
            let ttl = rng.range(1, w.max_ttl);
            let signed = server
                .keysets()
                .sign_jwt(pb::SignJwtRequest {
                    keyset: "walk".into(),
                    claims_json: r#"{"sub":"walker"}"#.into(),
                    ttl_seconds: Some(ttl),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            if signed.kid != initial_active {
                let published_for = now - first_seen[&signed.kid];
                assert!(
                    published_for >= i64::try_from(w.prepublish).unwrap(),
                    "key {} signs after {published_for}s in the JWKS, less than prepublish",
                    signed.kid
                );
            }
            tokens.push((signed.jwt, signed.kid, signed.expires_at));
            minted += 1;
        }

        let doc = client.at(&server, path, now).await.clone();
        tokens.retain(|(_, _, exp)| *exp > now);
        for (jwt, kid, exp) in &tokens {
            checks += 1;
            if let Err(e) = common::try_verify(jwt, &doc, false) {
                panic!(
                    "at t+{}s an unexpired token (kid {kid}, exp in {}s) failed: {e}",
                    now - start_time,
                    exp - now
                );
            }
        }
    }
    let days = (clock.now() - start_time) / 86_400;
    eprintln!(
        "walked {rotations} rotations over {days} days in {steps} steps: {minted} tokens minted, {checks} verifications, all passed"
    );
    let all = keys(&server, "walk").await;
    assert_eq!(in_state(&all, pb::KeyState::Active).len(), 1);
    assert!(all.len() >= w.rotations + 2, "kids are never reused");
    server.stop().await;
}

async fn walk_fifty_monthly_rotations_with_default_policy(backend: Backend) {
    // The defaults: rotate every 30 days, 1 day of pre-publication and
    // retention, 1 h tokens, 300 s JWKS max-age. 50 rotations ≈ 4 years.
    walk(
        backend,
        Walk {
            every: 30 * DAY,
            prepublish: DAY,
            retain: DAY,
            max_ttl: HOUR,
            jwks_max_age: 300,
            rotations: 50,
        },
    )
    .await;
}

async fn walk_tight_policy_densely(backend: Backend) {
    // Margins at their minimum: prepublish = 2 × max-age, retain = ttl + max-age.
    walk(
        backend,
        Walk {
            every: HOUR,
            prepublish: 2 * MIN,
            retain: 6 * MIN,
            max_ttl: 5 * MIN,
            jwks_max_age: MIN,
            rotations: 60,
        },
    )
    .await;
}

async fn downtime_catches_up_with_one_rotation(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = ManualClock::new(1_800_000_000);
    let server = start(&db, &clock, 60).await;
    let set = create(&server, "sleepy", policy(HOUR, 5 * MIN, 10 * MIN, 5 * MIN)).await;
    let created = clock.now();
    assert_eq!(set.next_rotation_at, created + 3600);

    // Dry run reports, changes nothing.
    clock.advance(3600 * 5 + 1800);
    let dry = server
        .keysets()
        .rotate_due(pb::RotateDueRequest {
            keyset: None,
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        dry.iter()
            .any(|e| e.keyset == "sleepy" && e.action == "activate"),
        "{dry:?}"
    );
    assert_eq!(
        keys(&server, "sleepy").await.len(),
        2,
        "a dry run changes nothing"
    );

    let events = rotate_due(&server, "sleepy").await;
    assert_eq!(
        events.iter().filter(|e| e.action == "activate").count(),
        1,
        "{events:?}"
    );
    let after = server
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: "sleepy".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.next_rotation_at,
        created + 6 * 3600,
        "next due stays on the period grid"
    );
    assert!(
        rotate_due(&server, "sleepy").await.is_empty(),
        "nothing more is due"
    );

    // The retired key expires after `retain` and leaves the JWKS.
    let retired = in_state(&keys(&server, "sleepy").await, pb::KeyState::Retired);
    assert_eq!(retired, std::slice::from_ref(&set.active_kid));
    clock.advance(10 * 60);
    let events = rotate_due(&server, "sleepy").await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "expire" && e.kid == set.active_kid),
        "{events:?}"
    );
    let jwks = server.get("/keysets/sleepy/jwks.json", &[]).await;
    assert!(!jwks.body.contains(&set.active_kid));
    let listed = keys(&server, "sleepy").await;
    let expired = listed.iter().find(|k| k.kid == set.active_kid).unwrap();
    assert_eq!(
        expired.state,
        pb::KeyState::Expired as i32,
        "the row is kept for history"
    );
    assert!(
        expired.created_at > 0
            && expired.activates_at > 0
            && expired.retires_at > 0
            && expired.expires_at > 0
    );
    server.stop().await;
}

async fn cron_schedule_drives_rotation(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    // 2027-01-15T10:00:00Z.
    let clock = ManualClock::new(1_800_000_000);
    let server = start(&db, &clock, 300).await;
    let set = server
        .keysets()
        .create_key_set(pb::CreateKeySetRequest {
            name: "monthly".into(),
            algorithm: "EdDSA".into(),
            rsa_bits: 0,
            policy: Some(pb::RotationPolicy {
                schedule: Some("0 3 1 * *".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.schedule, "0 3 1 * *");
    assert_eq!(set.rotate_every_seconds, 0);
    let first = set.next_rotation_at;
    assert_eq!(
        keyward::domain::model::format_time(first),
        "2027-02-01T03:00:00Z"
    );
    clock.set(first);
    let events = rotate_due(&server, "monthly").await;
    assert_eq!(events.iter().filter(|e| e.action == "activate").count(), 1);
    let next = server
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: "monthly".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .next_rotation_at;
    assert_eq!(
        keyward::domain::model::format_time(next),
        "2027-03-01T03:00:00Z"
    );

    // Switch to a period: the next due time follows the active key's start.
    let updated = server
        .keysets()
        .update_key_set(pb::UpdateKeySetRequest {
            name: "monthly".into(),
            policy: Some(pb::RotationPolicy {
                rotate_every_seconds: Some(7 * DAY),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.schedule, "");
    assert_eq!(updated.rotate_every_seconds, 7 * DAY);
    assert_eq!(updated.next_rotation_at, first + 7 * 86_400);
    server.stop().await;
}

async fn revocation(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = start(&db, &clock, 60).await;
    let set = create(&server, "rv", policy(DAY, HOUR, 2 * HOUR, HOUR)).await;
    let mut ks = server.keysets();
    let pending = in_state(&keys(&server, "rv").await, pb::KeyState::Pending).remove(0);

    // Revoking the active key promotes a successor at once and says so.
    clock.advance(2 * 3600);
    let r = ks
        .revoke_key(pb::RevokeKeyRequest {
            kid: set.active_kid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.warnings.iter().any(|w| w.contains("successor")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        in_state(&r.keys, pb::KeyState::Active),
        std::slice::from_ref(&pending)
    );
    assert_eq!(
        in_state(&r.keys, pb::KeyState::Revoked),
        std::slice::from_ref(&set.active_kid)
    );
    let fresh_pending = in_state(&r.keys, pb::KeyState::Pending);
    assert_eq!(fresh_pending.len(), 1);
    let jwks = server.get("/keysets/rv/jwks.json", &[]).await.body;
    assert!(
        !jwks.contains(&set.active_kid),
        "a revoked key is unpublished at once"
    );
    let signed = ks
        .sign_jwt(pb::SignJwtRequest {
            keyset: "rv".into(),
            claims_json: "{}".into(),
            ttl_seconds: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.kid, pending, "the successor signs");

    // Revoking the pending key publishes a new one.
    let r = ks
        .revoke_key(pb::RevokeKeyRequest {
            kid: fresh_pending[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let newer = in_state(&r.keys, pb::KeyState::Pending);
    assert_eq!(newer.len(), 1);
    assert_ne!(newer[0], fresh_pending[0]);

    // Revoked twice, unknown or malformed kids: precise errors.
    let again = ks
        .revoke_key(pb::RevokeKeyRequest {
            kid: set.active_kid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let unknown = ks
        .revoke_key(pb::RevokeKeyRequest {
            kid: "no-such-kid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("no-such-kid"));
    let empty = ks
        .revoke_key(pb::RevokeKeyRequest { kid: String::new() })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    server.stop().await;
}

async fn bad_policies_and_ttls_get_precise_errors(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = start(&db, &clock, 300).await;
    let mut ks = server.keysets();
    let cases: Vec<(pb::RotationPolicy, &str)> = vec![
        (policy(30 * DAY, 5 * MIN, DAY, HOUR), "prepublish"),
        (policy(HOUR, 2 * HOUR, DAY, HOUR), "rotation period"),
        (policy(30 * DAY, DAY, HOUR, HOUR), "retain"),
        (policy(0, DAY, DAY, HOUR), "rotate_every"),
        (policy(30 * DAY, DAY, DAY, 0), "max_token_ttl"),
        (
            pb::RotationPolicy {
                schedule: Some("61 * * * *".into()),
                ..Default::default()
            },
            "schedule",
        ),
        (
            pb::RotationPolicy {
                schedule: Some("0 * * * *".into()),
                ..Default::default()
            },
            "rotation period",
        ),
        (
            pb::RotationPolicy {
                rotate_every_seconds: Some(DAY * 30),
                schedule: Some("0 3 1 * *".into()),
                ..Default::default()
            },
            "either",
        ),
    ];
    for (p, mentions) in cases {
        let err = ks
            .create_key_set(pb::CreateKeySetRequest {
                name: "bad".into(),
                algorithm: "ES256".into(),
                rsa_bits: 0,
                policy: Some(p.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{p:?}: {err:?}");
        assert!(
            err.message().contains(mentions),
            "{p:?}: {:?} should mention {mentions}",
            err.message()
        );
    }
    let listed = ks
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.key_sets.iter().all(|s| s.name != "bad"),
        "nothing was created"
    );

    // Updates are validated against the merged policy; nothing changes on error.
    create(&server, "good", policy(30 * DAY, DAY, DAY, HOUR)).await;
    let err = ks
        .update_key_set(pb::UpdateKeySetRequest {
            name: "good".into(),
            policy: Some(pb::RotationPolicy {
                max_token_ttl_seconds: Some(2 * DAY),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("retain"), "{}", err.message());
    let unknown = ks
        .update_key_set(pb::UpdateKeySetRequest {
            name: "ghost".into(),
            policy: None,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // A ttl above the key set's max-token-ttl is refused; the max is the default cap.
    let over = ks
        .sign_jwt(pb::SignJwtRequest {
            keyset: "good".into(),
            claims_json: "{}".into(),
            ttl_seconds: Some(HOUR + 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument);
    assert!(over.message().contains("ttl_seconds") && over.message().contains("max-token-ttl"));
    let got = ks
        .get_key_set(pb::GetKeySetRequest {
            name: "good".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.max_token_ttl_seconds, HOUR,
        "the failed update changed nothing"
    );
    assert_eq!(got.prepublish_seconds, DAY);
    server.stop().await;
}

/// Makes the key set's rotation due now, with a pending key old enough.
async fn make_due(db: &TestDb, keyset: &str) {
    let raw = db.raw().await;
    raw.exec(&format!(
        "UPDATE keys SET created_at = created_at - 86400 WHERE state = 'pending' \
         AND keyset_id = (SELECT id FROM keysets WHERE name = '{keyset}' AND deleted_at IS NULL)"
    ))
    .await;
    raw.exec(&format!(
        "UPDATE keysets SET next_rotation_at = 0 WHERE name = '{keyset}' AND deleted_at IS NULL"
    ))
    .await;
}

async fn exactly_once_under_contention(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = db.config();
    config.jwks_max_age = 60;
    config.rotation_interval = None;
    let clock: Arc<dyn Clock> = Arc::new(keyward::domain::clock::SystemClock);
    let a = TestServer::start_with(&db, config.clone(), Arc::clone(&clock)).await;
    let b = TestServer::start_with(&db, config, clock).await;
    create(&a, "race", policy(HOUR, 5 * MIN, 10 * MIN, 5 * MIN)).await;
    let before = keys(&a, "race").await;
    let pending = in_state(&before, pb::KeyState::Pending).remove(0);
    make_due(&db, "race").await;

    // 8 tasks over two replicas and 3 `keyward rotate` processes, all at once.
    let bin = env!("CARGO_BIN_EXE_keyward");
    let processes: Vec<_> = (0..3)
        .map(|i| {
            let endpoint = if i % 2 == 0 { &a.grpc_url } else { &b.grpc_url };
            std::process::Command::new(bin)
                .args([
                    "--endpoint",
                    endpoint,
                    "--token",
                    &a.token,
                    "--output",
                    "json",
                ])
                .args(["rotate", "--keyset", "race"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn keyward rotate")
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut ks = if i % 2 == 0 { a.keysets() } else { b.keysets() };
        tasks.push(tokio::spawn(async move {
            ks.rotate_due(pb::RotateDueRequest {
                keyset: Some("race".into()),
                dry_run: false,
            })
            .await
            .expect("RotateDue never fails for losing a race")
            .into_inner()
            .events
        }));
    }
    let mut all: Vec<(String, String)> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap().into_iter().map(|e| (e.action, e.kid)));
    }
    for p in processes {
        let out = tokio::task::spawn_blocking(move || p.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Value = serde_json::from_slice(&out.stdout).expect("JSON events");
        for e in events.as_array().unwrap() {
            all.push((
                e["action"].as_str().unwrap().into(),
                e["kid"].as_str().unwrap().into(),
            ));
        }
    }
    let activations: Vec<_> = all.iter().filter(|(a, _)| a == "activate").collect();
    assert_eq!(activations.len(), 1, "exactly one transition: {all:?}");
    assert_eq!(activations[0].1, pending);
    assert!(
        all.iter().all(
            |(a, _)| ["activate", "retire", "publish", "already-rotated"].contains(&a.as_str())
        ),
        "{all:?}"
    );
    let after = keys(&a, "race").await;
    assert_eq!(in_state(&after, pb::KeyState::Active), [pending]);
    assert_eq!(in_state(&after, pb::KeyState::Pending).len(), 1);
    assert_eq!(after.len(), 3, "exactly one new key was stored");
    a.stop().await;
    b.stop().await;
}

both_backends!(
    walk_fifty_monthly_rotations_with_default_policy,
    walk_tight_policy_densely,
    downtime_catches_up_with_one_rotation,
    cron_schedule_drives_rotation,
    revocation,
    bad_policies_and_ttls_get_precise_errors,
    exactly_once_under_contention,
);
