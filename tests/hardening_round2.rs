//! Hardening, second round: what an adversarial review broke, each driven
//! the way the attacker or the careless operator did it. Storage matters run
//! on both databases. (Certificate subjects and expired certificates are in
//! `tests/tls.rs`, next to the PKI they need.)

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use common::{Backend, TestDb, TestServer, process};
use keyward::{
    domain::{clock::SystemClock, throttle::AUDIT_BUDGET},
    transport::{
        grpc::pb::{self, key_sets_client::KeySetsClient},
        net::Limits,
        proxy::TrustedProxies,
    },
};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};
use tonic::{Code, Request, Status, codegen::http::uri::PathAndQuery};

const YEAR: u64 = 365 * 86_400;
const FAR: &str = "9223372036854775807";

fn message(status: &Status) -> &str {
    status.message()
}

/// Rows of `table` in the test database.
async fn rows(db: &TestDb, table: &str) -> i64 {
    db.raw()
        .await
        .scalar::<i64>(&format!("SELECT COUNT(*) FROM {table}"))
        .await
}

/// The admin CLI against `server`, which must succeed; its standard output.
fn cli_ok(db: &TestDb, server: &TestServer, args: &[&str]) -> String {
    let out = process::cli(db.data_dir(), &server.grpc_url, args, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "keyward {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// 1. Durations and times.

async fn durations_are_bounded_and_far_times_print(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut ks = server.keysets();
    let policies = [
        (
            "rotate_every",
            pb::RotationPolicy {
                rotate_every_seconds: Some(u64::MAX),
                ..Default::default()
            },
        ),
        (
            "prepublish",
            pb::RotationPolicy {
                prepublish_seconds: Some(u64::MAX),
                ..Default::default()
            },
        ),
        (
            "retain",
            pb::RotationPolicy {
                retain_seconds: Some(101 * YEAR),
                ..Default::default()
            },
        ),
    ];
    for (field, policy) in policies {
        let err = ks
            .create_key_set(pb::CreateKeySetRequest {
                name: "huge".into(),
                algorithm: "ES256".into(),
                policy: Some(policy.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", message(&err));
        assert!(message(&err).contains(field), "{}", message(&err));
        let err = ks
            .update_key_set(pb::UpdateKeySetRequest {
                name: "default".into(),
                policy: Some(policy),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", message(&err));
        assert!(message(&err).contains(field), "{}", message(&err));
    }
    let err = server
        .access()
        .create_token(pb::CreateTokenRequest {
            name: "forever".into(),
            role: "auditor".into(),
            expires_in_seconds: Some(u64::MAX),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", message(&err));
    assert!(message(&err).contains("expires_in"), "{}", message(&err));
    let said = process::cli(
        db.data_dir(),
        &server.grpc_url,
        &[
            "token",
            "create",
            "forever",
            "--role",
            "auditor",
            "--expires-in",
            "200y",
        ],
        None,
    );
    assert_eq!(said.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&said.stderr).contains("INVALID_ARGUMENT"),
        "{}",
        String::from_utf8_lossy(&said.stderr)
    );

    // A century, the bound itself, is accepted, and rotating such a key set
    // answers and is audited.
    ks.create_key_set(pb::CreateKeySetRequest {
        name: "century".into(),
        algorithm: "ES256".into(),
        policy: Some(pb::RotationPolicy {
            rotate_every_seconds: Some(100 * YEAR),
            retain_seconds: Some(100 * YEAR),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    ks.rotate_key_set(pb::RotateKeySetRequest {
        name: "century".into(),
    })
    .await
    .unwrap();

    // Values stored before the bound existed (saturated to i64::MAX) print,
    // rotate and are audited: nothing panics.
    let raw = db.raw().await;
    raw.exec(&format!(
        "UPDATE keysets SET rotate_every = {FAR}, retain = {FAR}, next_rotation_at = {FAR} \
         WHERE name = 'default'"
    ))
    .await;
    raw.exec(&format!(
        "UPDATE admin_tokens SET expires_at = {FAR} WHERE id = 'bootstrap'"
    ))
    .await;
    let server = server.restart(&db).await;
    let rotated = server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "default".into(),
        })
        .await;
    let code = common::code(rotated);
    assert!(
        matches!(code, Code::Ok | Code::FailedPrecondition),
        "{code:?}"
    );
    for args in [
        &["keyset", "list"][..],
        &["keyset", "get", "default"],
        &["keys", "list", "default"],
        &["token", "list"],
        &["keyset", "list", "--output", "json"],
        &["keys", "list", "default", "--output", "json"],
        &["token", "list", "--output", "json"],
    ] {
        cli_ok(&db, &server, args);
    }
    let shown = cli_ok(&db, &server, &["keyset", "get", "default"]);
    assert!(shown.contains("after year 9999"), "{shown}");
    let events = server.audit_log().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "RotateKeySet" && e.target == "century" && e.outcome == "OK"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == "RotateKeySet" && e.target == "default"),
        "the rotation of the far key set is audited"
    );
    server.stop().await;
}

// 2. and 5. The token endpoint, from callers who prove nothing.

async fn put_token_client(server: &TestServer, id: &str) {
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: id.into(),
            secret: Some(format!("{id}-secret-0123456789")),
            token_keyset: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A client-credentials grant at `server` from `forwarded` (an
/// `X-Forwarded-For` value) or no such header.
async fn grant(
    server: &TestServer,
    id: &str,
    secret: &str,
    forwarded: Option<&str>,
) -> common::HttpResponse {
    let auth = common::basic(id, secret);
    let mut headers = vec![common::FORM, ("authorization", auth.as_str())];
    if let Some(addr) = forwarded {
        headers.push(("x-forwarded-for", addr));
    }
    common::http_post(
        &format!("{}/oauth2/token", server.http_url),
        &headers,
        "grant_type=client_credentials",
    )
    .await
}

async fn unauthenticated_callers_cannot_fill_memory_or_disk(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    put_token_client(&server, "ingestion").await;
    server.service.flush_audit().await;
    let before = rows(&db, "audit_events").await;

    // Longer than a client id may be, or not one at all: refused as an
    // unknown client, and the id is kept nowhere.
    let long = "a".repeat(40_000);
    for id in [long.as_str(), &"b".repeat(129), "evil\nid", "x\u{202e}y"] {
        let refused = grant(&server, id, "whatever", None).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert_eq!(refused.json()["error"], "invalid_client");
    }
    // Headers past the buffer are refused by the HTTP layer itself.
    let huge = grant(&server, &"c".repeat(100_000), "whatever", None).await;
    assert!(
        (400..500).contains(&huge.status),
        "a 100 KB header: {}",
        huge.status
    );

    // Many distinct, well-formed ids: the first refusals are written down,
    // the rest only counted.
    for i in 0..(AUDIT_BUDGET + 60) {
        let id = format!("junk-{i:04}-{}", "j".repeat(100));
        assert_eq!(grant(&server, &id, "whatever", None).await.status, 401);
    }
    server.service.flush_audit().await;
    let written = rows(&db, "audit_events").await - before;
    assert!(
        written <= i64::from(AUDIT_BUDGET) + 1,
        "{written} refusals of one unauthenticated peer written"
    );
    let longest: i64 = db
        .raw()
        .await
        .scalar("SELECT CAST(MAX(LENGTH(principal)) AS BIGINT) FROM audit_events")
        .await;
    assert!(longest <= 256, "a principal of {longest} bytes was stored");
    let metrics = server.get("/metrics", &[]).await.body;
    let unrecorded = metrics
        .lines()
        .find(|l| l.starts_with("keyward_audit_refusals_unrecorded_total"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let unrecorded: f64 = unrecorded.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(unrecorded >= 50.0, "{unrecorded}");

    // The client proves itself as before.
    let ok = grant(&server, "ingestion", "ingestion-secret-0123456789", None).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    server.stop().await;
}

// 5. and 6. The throttle: kept under junk, per client address behind a
// trusted proxy, never in the way of a valid token.

async fn the_throttle_holds_under_junk_and_follows_trusted_proxies(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = db.config();
    config.trusted_proxies = TrustedProxies::new(vec!["127.0.0.1/32".parse().unwrap()]);
    let server = TestServer::start_with(&db, config, Arc::new(SystemClock)).await;
    put_token_client(&server, "ingestion").await;
    let right = "ingestion-secret-0123456789";
    let victim = Some("10.0.0.1");

    for _ in 0..10 {
        assert_eq!(
            grant(&server, "ingestion", "wrong", victim).await.status,
            401
        );
    }
    assert_eq!(grant(&server, "ingestion", right, victim).await.status, 429);
    // The same client from another address (as the proxy says) is served.
    assert_eq!(
        grant(&server, "ingestion", right, Some("10.0.0.2"))
            .await
            .status,
        200
    );
    // Junk from the victim's address and from a thousand others does not
    // wash the throttled entry out.
    for i in 0..1_200u32 {
        let from = if i % 6 == 0 {
            "10.0.0.1".to_string()
        } else {
            format!("10.1.{}.{}", i / 250, i % 250)
        };
        let refused = grant(&server, &format!("junk-{i}"), "x", Some(&from)).await;
        assert!(matches!(refused.status, 401 | 429), "{}", refused.status);
    }
    let still = grant(&server, "ingestion", right, victim).await;
    assert_eq!(still.status, 429, "{}", still.body);
    assert_eq!(
        grant(&server, "ingestion", "wrong", victim).await.status,
        429
    );

    // gRPC: bad tokens from one forwarded address throttle that address's
    // bad tokens only; a valid token from it is served.
    let as_from = |token: &str, addr: &str| {
        let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        let from: tonic::metadata::MetadataValue<_> = addr.parse().unwrap();
        KeySetsClient::with_interceptor(server.channel.clone(), move |mut req: Request<()>| {
            req.metadata_mut().insert("authorization", auth.clone());
            req.metadata_mut().insert("x-forwarded-for", from.clone());
            Ok(req)
        })
    };
    let list = |token: &str, addr: &str| {
        let mut client = as_from(token, addr);
        async move {
            client
                .list_key_sets(pb::ListKeySetsRequest::default())
                .await
                .map(|_| ())
        }
    };
    for _ in 0..10 {
        let err = list("kw_junk", "10.2.0.1").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let err = list("kw_junk", "10.2.0.1").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    list(&server.token, "10.2.0.1").await.unwrap();
    let err = list("kw_junk", "10.2.0.2").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The audit log names the client address and the proxy it came through.
    let events = server.audit_log().await;
    let throttled = events
        .iter()
        .find(|e| e.action == "ListKeySets" && e.outcome == "RESOURCE_EXHAUSTED")
        .unwrap();
    assert_eq!(throttled.peer, "10.2.0.1 via 127.0.0.1");
    server.stop().await;
}

/// Without a trusted proxy, `X-Forwarded-For` is the caller's word and is
/// ignored: a guesser cannot dodge the throttle by naming other addresses.
async fn forwarded_for_from_an_untrusted_peer_is_ignored(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    put_token_client(&server, "ingestion").await;
    for i in 0..10 {
        let from = format!("10.3.0.{i}");
        let refused = grant(&server, "ingestion", "wrong", Some(&from)).await;
        assert_eq!(refused.status, 401);
    }
    let refused = grant(&server, "ingestion", "wrong", Some("10.3.1.1")).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    let events = server.audit_log().await;
    assert!(
        events.iter().all(|e| !e.peer.contains("10.3.")),
        "{events:?}"
    );
    server.stop().await;
}

// 4. Undecodable protobuf.

/// A message whose field 1 is bytes, where keyward's is a string.
#[derive(Clone, PartialEq, prost::Message)]
struct BytesName {
    #[prost(bytes = "vec", tag = "1")]
    name: Vec<u8>,
}

/// A message whose field 1 is a varint, where keyward's is a string.
#[derive(Clone, PartialEq, prost::Message)]
struct NumberName {
    #[prost(uint64, tag = "1")]
    name: u64,
}

async fn raw_call<M: prost::Message + Send + 'static>(
    server: &TestServer,
    token: Option<&str>,
    message: M,
) -> Status {
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<M, pb::KeySet>::default();
    grpc.unary(
        request,
        PathAndQuery::from_static("/keyward.v1.KeySets/GetKeySet"),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_invalid_arguments() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    let token = server.token.clone();
    for caller in [Some(token.as_str()), None] {
        let not_utf8 = raw_call(
            &server,
            caller,
            BytesName {
                name: vec![0xff, 0xfe, b'x'],
            },
        )
        .await;
        assert_eq!(not_utf8.code(), Code::InvalidArgument, "{not_utf8:?}");
        let wrong_type = raw_call(&server, caller, NumberName { name: 7 }).await;
        assert_eq!(wrong_type.code(), Code::InvalidArgument, "{wrong_type:?}");
    }
    // A well-formed name still answers.
    let found = raw_call(
        &server,
        Some(&token),
        BytesName {
            name: b"no-such-set".to_vec(),
        },
    )
    .await;
    assert_eq!(found.code(), Code::NotFound);
    server.stop().await;
}

// 3. Stored text printed by the CLI.

async fn the_cli_escapes_what_it_prints(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    server.service.flush_audit().await;
    // Rows as an older keyward stored them, straight from a Basic username.
    let forged = "evil\n2026-01-01 admin CreateToken OK\u{1b}[2J\u{7}\u{202e}";
    let long = "p".repeat(100_000);
    let hash = match backend {
        Backend::Sqlite => "zeroblob(32)",
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
    };
    let raw = db.raw().await;
    let next: i64 = raw
        .scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM audit_events")
        .await;
    // Recent, so retention (which runs at start) leaves them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (id, principal) in [(next, forged.replace('\'', "''")), (next + 1, long.clone())] {
        raw.exec(&format!(
            "INSERT INTO audit_events (id, at, principal, action, target, outcome, peer, \
             request_id, hash) VALUES ({id}, {now}, '{principal}', '/oauth2/token', '', \
             'invalid_client', '127.0.0.1', 'r', {hash})"
        ))
        .await;
    }
    let table = cli_ok(&db, &server, &["audit", "list"]);
    assert!(
        !table
            .chars()
            .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{table:?}"
    );
    assert!(table.contains(r"evil\n2026-01-01"), "{table}");
    assert!(table.contains(r"\u{1b}[2J\u{7}\u{202e}"), "{table}");
    assert!(table.contains("more characters"), "the long cell is cut");
    assert!(table.len() < 20_000, "{} bytes", table.len());
    // JSON stays exact.
    let json: serde_json::Value = serde_json::from_str(&cli_ok(
        &db,
        &server,
        &["audit", "list", "--output", "json"],
    ))
    .unwrap();
    let principals: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["principal"].as_str().unwrap())
        .collect();
    assert!(principals.contains(&forged), "{principals:?}");
    assert!(principals.contains(&long.as_str()));
    server.stop().await;
}

// 7. Admin tokens.

async fn create_admin(
    server: &TestServer,
    as_token: &str,
    name: &str,
    expires_in: Option<u64>,
) -> String {
    server
        .as_token(as_token)
        .access
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: "admin".into(),
            expires_in_seconds: expires_in,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .clone()
}

async fn revoke(server: &TestServer, as_token: &str, name: &str) -> Result<(), Status> {
    server
        .as_token(as_token)
        .access
        .revoke_token(pb::RevokeTokenRequest { name: name.into() })
        .await
        .map(|_| ())
}

/// Whether `token` is a working admin token at `server`, allowing for the
/// replica's view to catch up.
async fn works(server: &TestServer, token: &str) -> bool {
    for _ in 0..40 {
        let listed = server
            .as_token(token)
            .access
            .list_tokens(pb::ListTokensRequest::default())
            .await;
        if listed.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn two_admins_cannot_revoke_each_other_away(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let one = TestServer::start(&db).await;
    let two = TestServer::start(&db).await;
    let mut survivor = (
        "alice".to_string(),
        create_admin(&one, &one.token, "alice", None).await,
    );
    revoke(&one, &survivor.1, "bootstrap").await.unwrap();
    for round in 0..6 {
        let other_name = format!("admin-{round}");
        let other = create_admin(&one, &survivor.1, &other_name, None).await;
        assert!(works(&two, &other).await);
        let (a, b) = tokio::join!(
            revoke(&one, &survivor.1, &other_name),
            revoke(&two, &other, &survivor.0)
        );
        let succeeded = usize::from(a.is_ok()) + usize::from(b.is_ok());
        assert_eq!(succeeded, 1, "round {round}: {a:?} / {b:?}");
        let refused = a.as_ref().err().or(b.as_ref().err()).unwrap();
        assert!(
            matches!(
                refused.code(),
                Code::FailedPrecondition | Code::Unauthenticated
            ),
            "{refused:?}"
        );
        if b.is_ok() {
            survivor = (other_name, other);
        }
        assert!(works(&one, &survivor.1).await && works(&two, &survivor.1).await);
    }

    // An admin token about to expire does not count as the one kept.
    let brief = create_admin(&one, &survivor.1, "brief", Some(3600)).await;
    let err = revoke(&one, &brief, &survivor.0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("last working admin"),
        "{}",
        err.message()
    );
    // Expired or not, a token other than the last may go.
    revoke(&one, &survivor.1, "brief").await.unwrap();
    let err = revoke(&one, &survivor.1, &survivor.0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    two.stop().await;

    // Break glass: with every admin token gone (as raw SQL left them),
    // `token create --local` with the database and master key makes one.
    db.raw()
        .await
        .exec("UPDATE admin_tokens SET revoked_at = 1 WHERE revoked_at IS NULL")
        .await;
    let one = one.restart(&db).await;
    assert!(!works(&one, &survivor.1).await);
    let mut rescue = Command::new(process::BIN);
    rescue
        .arg("--data-dir")
        .arg(db.data_dir())
        .args([
            "--output", "json", "token", "create", "rescue", "--role", "admin", "--local",
        ])
        .env("KEYWARD_DATABASE_URL", &db.url)
        .env_remove("KEYWARD_MASTER_KEY");
    if let keyward::config::MasterKeySource::Inline(key) = &db.master_key {
        rescue.env("KEYWARD_MASTER_KEY", key.expose());
    }
    let made = rescue.output().unwrap();
    let created = process::json_out(&made);
    let token = created["token"].as_str().unwrap();
    assert!(works(&one, token).await);
    one.service.flush_audit().await;
    let events = one
        .as_token(token)
        .audit
        .list_audit_events(pb::ListAuditEventsRequest {
            action: "CreateToken".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let local = events
        .iter()
        .find(|e| e.action == "CreateToken" && e.target == "rescue")
        .unwrap();
    assert_eq!(
        (local.principal.as_str(), local.outcome.as_str()),
        ("keyward token create (local)", "OK")
    );
    one.stop().await;
}

// 8. The audit log's head.

async fn verify(server: &TestServer) -> pb::VerifyAuditChainResponse {
    server.service.flush_audit().await;
    server
        .audit()
        .verify_audit_chain(pb::VerifyAuditChainRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Deletes events up to `last` and moves the chain's recorded start past
/// them, as an attacker with database access would.
async fn erase_prefix(db: &TestDb, last: i64) {
    let raw = db.raw().await;
    raw.exec(&format!(
        "UPDATE audit_chain SET first_id = {}, \
         first_prev = (SELECT hash FROM audit_events WHERE id = {last}) WHERE id = 1",
        last + 1
    ))
    .await;
    raw.exec(&format!("DELETE FROM audit_events WHERE id <= {last}"))
        .await;
}

async fn an_erased_audit_prefix_is_detected(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    for _ in 0..6 {
        server
            .keysets()
            .get_key_set(pb::GetKeySetRequest {
                name: "default".into(),
            })
            .await
            .unwrap();
    }
    assert!(verify(&server).await.intact);
    erase_prefix(&db, 3).await;
    let report = verify(&server).await;
    assert!(!report.intact, "{report:?}");
    assert_eq!(report.first_id, 4);
    assert!(report.problem.contains("no retention prune"), "{report:?}");
    server.stop().await;

    // After a real prune, erasing more than it deleted is found too.
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    for _ in 0..4 {
        server
            .keysets()
            .get_key_set(pb::GetKeySetRequest {
                name: "default".into(),
            })
            .await
            .unwrap();
    }
    server.service.flush_audit().await;
    clock.advance(401 * 86_400);
    for _ in 0..4 {
        server
            .keysets()
            .get_key_set(pb::GetKeySetRequest {
                name: "default".into(),
            })
            .await
            .unwrap();
    }
    server.service.flush_audit().await;
    let (_, cut) = server
        .service
        .prune_audit(Duration::from_secs(400 * 86_400))
        .await
        .unwrap()
        .unwrap();
    let report = verify(&server).await;
    assert!(report.intact, "{report:?}");
    erase_prefix(&db, cut + 2).await;
    let report = verify(&server).await;
    assert!(!report.intact, "{report:?}");
    assert!(report.problem.contains("no retention prune"), "{report:?}");
    server.stop().await;
}

// 9. Slow HTTP/2 clients.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_grpc_clients_cannot_hold_the_connection_slots() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let mut config = db.config();
    // An idle timeout far away: only the frame deadline can free the slots.
    config.limits = Limits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(300),
        header_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
    };
    let server = TestServer::start_with(&db, config, Arc::new(SystemClock)).await;
    let addr = server.grpc_url.trim_start_matches("http://").to_string();
    // Two trickle the preface (a byte every 700 ms), two a 60-byte SETTINGS
    // frame after a whole preface (a byte every 300 ms): each would take
    // more than 15 s, and each byte keeps any idle timer from firing.
    let mut tricklers = Vec::new();
    for n in 0..4 {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
            let (bytes, every) = if n % 2 == 0 {
                (preface.to_vec(), Duration::from_millis(700))
            } else {
                tcp.write_all(preface).await.unwrap();
                let mut frame = vec![0, 0, 60, 4, 0, 0, 0, 0, 0];
                frame.resize(9 + 60, 0);
                (frame, Duration::from_millis(300))
            };
            for byte in bytes {
                tokio::time::sleep(every).await;
                if tcp.write_all(&[byte]).await.is_err() {
                    return true;
                }
            }
            // Sent everything without being cut off.
            false
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = tokio::time::timeout(
        Duration::from_secs(15),
        server.keysets().get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        }),
    )
    .await
    .expect("a real client gets a slot once the tricklers are cut off");
    assert_eq!(got.unwrap().into_inner().name, "default");
    for trickler in tricklers {
        assert!(
            trickler.await.unwrap(),
            "a trickling connection was left open"
        );
    }
    server.stop().await;
}

// 10. A first start that died half-way.

async fn a_first_start_that_died_is_finished_by_the_next(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    server.stop().await;
    // What a crash between the admin token and the default key set leaves.
    let raw = db.raw().await;
    raw.exec("DELETE FROM keys").await;
    raw.exec("DELETE FROM keysets").await;
    let server = TestServer::start(&db).await;
    let jwks = server.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert!(!jwks.json()["keys"].as_array().unwrap().is_empty());

    // A default key set the operator deleted stays deleted.
    server
        .keysets()
        .delete_key_set(pb::DeleteKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    let server = server.restart(&db).await;
    assert_eq!(server.get("/.well-known/jwks.json", &[]).await.status, 404);
    server.stop().await;
}

// 11. A replica cut off from its database.

async fn a_replica_cut_off_from_the_database_stops_honouring_tokens(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let one = TestServer::start(&db).await;
    let signer = one
        .create_token("signer", "signer", &["default"], &[])
        .await;
    // The second replica starts knowing the token.
    let (two, store) = TestServer::start_counting(&db).await;
    let sign = || {
        let mut keysets = two.as_token(&signer).keysets;
        async move {
            keysets
                .sign_jwt(pb::SignJwtRequest {
                    keyset: "default".into(),
                    claims_json: "{}".into(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    };
    sign().await.unwrap();

    // Cut off, the second replica cannot learn the token is revoked.
    store.set_cut_off(true);
    revoke(&one, &one.token, "signer").await.unwrap();
    tokio::time::sleep(keyward::server::MAX_VIEW_AGE + Duration::from_secs(1)).await;
    let err = sign().await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(two.get("/readyz", &[]).await.status, 503);

    // Back in touch, it knows.
    store.set_cut_off(false);
    let mut refused = None;
    for _ in 0..60 {
        match sign().await {
            Err(err) if err.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let refused = refused.expect("the replica recovers").unwrap_err();
    assert_eq!(
        refused.code(),
        Code::Unauthenticated,
        "{}",
        refused.message()
    );
    two.stop().await;
    one.stop().await;
}

// 12. and 13. Files.

fn keyward(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(process::BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn a_master_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let serving = process::serve(dir.path(), &[]).unwrap();
    drop(serving);
    let key = dir.path().join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = process::serve(dir.path(), &[]).unwrap_err();
    assert!(refused.contains("chmod 600"), "{refused}");
    let doctor = keyward(dir.path(), &["doctor"]);
    assert!(!doctor.status.success());
    let said = String::from_utf8_lossy(&doctor.stdout).to_string()
        + &String::from_utf8_lossy(&doctor.stderr);
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    process::serve(dir.path(), &[]).unwrap();
}

#[test]
fn out_paths_through_a_symlinked_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(process::serve(dir.path(), &[]).unwrap());
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().join("backups");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    let out = link.join("keyward.db");
    let refused = keyward(dir.path(), &["backup", "--out", out.to_str().unwrap()]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    // The same through a real directory is written.
    let real = outside.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let made = keyward(
        dir.path(),
        &["backup", "--out", real.join("keyward.db").to_str().unwrap()],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

both_backends!(
    durations_are_bounded_and_far_times_print,
    unauthenticated_callers_cannot_fill_memory_or_disk,
    the_throttle_holds_under_junk_and_follows_trusted_proxies,
    forwarded_for_from_an_untrusted_peer_is_ignored,
    the_cli_escapes_what_it_prints,
    two_admins_cannot_revoke_each_other_away,
    an_erased_audit_prefix_is_detected,
    a_first_start_that_died_is_finished_by_the_next,
    a_replica_cut_off_from_the_database_stops_honouring_tokens,
);
