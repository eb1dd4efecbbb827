//! The audit log through the real gRPC and HTTP APIs: one event per call with
//! the right principal, action, target and outcome; request ids; a chain that
//! verifies after concurrent writers on two replicas and breaks when a row is
//! changed, deleted or swapped with SQL; calls refused when their event cannot
//! be stored; retention; no secret anywhere in the audit table.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Backend, TestDb, TestServer, call_method};
use keyward::transport::grpc::{code_name, pb};
use tonic::Code;

/// Every method, in the order the access table lists them.
const METHODS: &[&str] = &[
    "CreateKeySet",
    "UpdateKeySet",
    "GetKeySet",
    "ListKeySets",
    "DeleteKeySet",
    "ListKeys",
    "RotateKeySet",
    "RotateDue",
    "RevokeKey",
    "SignJwt",
    "GetJwks",
    "ExportKey",
    "ImportKey",
    "PutClient",
    "GetClient",
    "GetClientSecret",
    "ListClients",
    "RotateClientSecret",
    "DeleteClient",
    "RevokeClientSecret",
    "VerifyClientSecret",
    "CreateToken",
    "GetToken",
    "ListTokens",
    "RevokeToken",
    "ListAuditEvents",
    "VerifyAuditChain",
];

/// Methods whose request names nothing.
const UNTARGETED: &[&str] = &[
    "ListKeySets",
    "ListClients",
    "ListTokens",
    "ListAuditEvents",
    "VerifyAuditChain",
];

async fn verify(server: &TestServer) -> pb::VerifyAuditChainResponse {
    server.service.flush_audit().await;
    server
        .audit()
        .verify_audit_chain(pb::VerifyAuditChainRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn every_call_leaves_one_event_naming_who_what_and_how_it_ended(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut admin = server.as_token(&server.token);
    let mut codes = Vec::new();
    for method in METHODS {
        codes.push(call_method(&mut admin, method, "aud-missing").await);
    }
    let events = server.audit_log().await;
    for (method, code) in METHODS.iter().zip(&codes) {
        let mine: Vec<_> = events.iter().filter(|e| e.action == *method).collect();
        assert_eq!(mine.len(), 1, "{method}: {mine:?}");
        let e = mine[0];
        let target = if UNTARGETED.contains(method) {
            ""
        } else {
            "aud-missing"
        };
        assert_eq!(
            (
                e.principal.as_str(),
                e.target.as_str(),
                e.outcome.as_str(),
                e.peer.as_str()
            ),
            ("bootstrap", target, code_name(*code), "127.0.0.1"),
            "{method}"
        );
        assert!(!e.request_id.is_empty() && e.at > 0, "{e:?}");
    }
    assert_eq!(events.len(), METHODS.len(), "nothing else was recorded");
    let ids: Vec<i64> = events.iter().rev().map(|e| e.id).collect();
    assert_eq!(ids, (1..=METHODS.len() as i64).collect::<Vec<_>>());

    // A refused token and a denied role are recorded as such.
    let mut stranger = server.as_token("kw_not-a-token");
    let _ = call_method(&mut stranger, "GetClientSecret", "om").await;
    let signer = server
        .create_token("signer", "signer", &["om-*"], &[])
        .await;
    let mut signer = server.as_token(&signer);
    assert_eq!(
        call_method(&mut signer, "ExportKey", "om-prod").await,
        Code::PermissionDenied
    );
    let events = server.audit_log().await;
    let find = |action: &str| events.iter().find(|e| e.action == action).cloned().unwrap();
    let refused = find("GetClientSecret");
    assert_eq!(
        (refused.principal.as_str(), refused.outcome.as_str()),
        ("", "UNAUTHENTICATED")
    );
    let denied = find("ExportKey");
    assert_eq!(
        (
            denied.principal.as_str(),
            denied.target.as_str(),
            denied.outcome.as_str()
        ),
        ("signer", "om-prod", "PERMISSION_DENIED")
    );
    assert!(verify(&server).await.intact);
    server.stop().await;
}

async fn request_ids_are_taken_from_callers_or_generated_and_returned(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut ks = server.keysets();
    let mut req = tonic::Request::new(pb::GetKeySetRequest {
        name: "default".into(),
    });
    req.metadata_mut()
        .insert("x-request-id", "trace-0042".parse().unwrap());
    let ok = ks.get_key_set(req).await.unwrap();
    assert_eq!(ok.metadata().get("x-request-id").unwrap(), "trace-0042");
    let err = ks
        .get_key_set(pb::GetKeySetRequest {
            name: "missing".into(),
        })
        .await
        .unwrap_err();
    let generated = err
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(generated.len() >= 16, "{generated}");

    // The token endpoint too, refused or not.
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "ingestion".into(),
            secret: Some("ingestion-secret-0123456789".into()),
            token_keyset: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let url = format!("{}/oauth2/token", server.http_url);
    let basic = common::basic("ingestion", "ingestion-secret-0123456789");
    let good = common::http_post(
        &url,
        &[
            common::FORM,
            ("authorization", &basic),
            ("x-request-id", "tok-1"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(
        (good.status, good.header("x-request-id")),
        (200, "tok-1"),
        "{}",
        good.body
    );
    let bad = common::token_request(&server, "ingestion", "wrong").await;
    assert_eq!(bad.status, 401);
    assert!(!bad.header("x-request-id").is_empty());
    let malformed = common::http_post(&url, &[common::FORM], "grant_type=client_credentials").await;
    assert_eq!(malformed.status, 401, "{}", malformed.body);

    let events = server.audit_log().await;
    let by_id = |id: &str| events.iter().find(|e| e.request_id == id).unwrap();
    let e = by_id("trace-0042");
    assert_eq!((e.action.as_str(), e.outcome.as_str()), ("GetKeySet", "OK"));
    assert_eq!(by_id(&generated).outcome, "NOT_FOUND");
    let e = by_id("tok-1");
    assert_eq!(
        (e.principal.as_str(), e.action.as_str(), e.outcome.as_str()),
        ("ingestion", "/oauth2/token", "OK")
    );
    let e = by_id(bad.header("x-request-id"));
    assert_eq!(
        (e.principal.as_str(), e.outcome.as_str()),
        ("ingestion", "invalid_client")
    );
    let e = by_id(malformed.header("x-request-id"));
    assert_eq!(
        (e.principal.as_str(), e.outcome.as_str()),
        ("", "invalid_client")
    );
    server.stop().await;
}

/// Mixed calls from one writer: key sets, signing, secrets, tokens.
async fn mixed_calls(server: &TestServer, writer: usize, rounds: usize) {
    let mut ks = server.keysets();
    let mut cl = server.clients();
    for round in 0..rounds {
        let name = format!("w{writer}-r{round}");
        ks.create_key_set(pb::CreateKeySetRequest {
            name: name.clone(),
            algorithm: "ES256".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        ks.sign_jwt(pb::SignJwtRequest {
            keyset: name.clone(),
            claims_json: r#"{"sub":"x"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        cl.put_client(pb::PutClientRequest {
            id: name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        cl.get_client_secret(pb::GetClientSecretRequest {
            id: name.clone(),
            version: None,
        })
        .await
        .unwrap();
        let _ = ks
            .get_key_set(pb::GetKeySetRequest {
                name: "missing".into(),
            })
            .await;
    }
}

async fn the_chain_verifies_after_concurrent_writers_on_two_replicas(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let a = TestServer::start(&db).await;
    let b = TestServer::start(&db).await;
    const ROUNDS: usize = 6;
    tokio::join!(
        mixed_calls(&a, 0, ROUNDS),
        mixed_calls(&a, 1, ROUNDS),
        mixed_calls(&b, 2, ROUNDS),
        mixed_calls(&b, 3, ROUNDS),
    );
    b.service.flush_audit().await;
    let report = verify(&a).await;
    assert!(report.intact, "{report:?}");
    let expected = (4 * ROUNDS * 5) as i64;
    assert_eq!(
        (report.checked, report.first_id, report.last_id),
        (expected, 1, expected)
    );
    // Every writer's events are there, each once.
    let events = a.audit_log().await;
    for w in 0..4 {
        let n = events
            .iter()
            .filter(|e| e.target.starts_with(&format!("w{w}-")))
            .count();
        assert_eq!(n, ROUNDS * 4, "writer {w}");
    }

    // Strictly alternating durable events: each append finds the chain's end
    // moved by the other replica since its own last append. Each replica
    // reads a client it created (the other's view may lag by up to 2 s).
    const TURNS: usize = 5;
    for _ in 0..TURNS {
        for (server, client) in [(&a, "w0-r0"), (&b, "w2-r0")] {
            server
                .clients()
                .get_client_secret(pb::GetClientSecretRequest {
                    id: client.into(),
                    version: None,
                })
                .await
                .unwrap();
        }
    }
    b.service.flush_audit().await;
    let report = verify(&a).await;
    assert!(report.intact, "{report:?}");
    // The concurrent part, the verification and the listing above, and the
    // alternating reads.
    let expected = expected + 2 + (2 * TURNS) as i64;
    assert_eq!((report.checked, report.last_id), (expected, expected));
    a.stop().await;
    b.stop().await;
}

/// SQL that overwrites row `to` with every column of row `from` but the id.
fn copy_row(from: i64, to: i64) -> String {
    let set: Vec<String> = [
        "at",
        "principal",
        "action",
        "target",
        "outcome",
        "peer",
        "request_id",
        "hash",
    ]
    .iter()
    .map(|c| format!("{c} = (SELECT {c} FROM audit_events WHERE id = {from})"))
    .collect();
    format!("UPDATE audit_events SET {} WHERE id = {to}", set.join(", "))
}

async fn editing_deleting_or_swapping_a_row_breaks_the_chain_there(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    mixed_calls(&server, 0, 2).await;
    assert!(verify(&server).await.intact);
    let raw = db.raw().await;
    let broken = |r: pb::VerifyAuditChainResponse| {
        assert!(!r.intact, "{r:?}");
        (r.broken_id, r.problem)
    };

    // An edited outcome, then put back.
    raw.exec("UPDATE audit_events SET outcome = 'OK' WHERE id = 5")
        .await;
    let (id, problem) = broken(verify(&server).await);
    assert_eq!(id, 5, "{problem}");
    raw.exec("UPDATE audit_events SET outcome = 'NOT_FOUND' WHERE id = 5")
        .await;
    assert!(verify(&server).await.intact);

    // Two rows swapped: every column but the id exchanged, through a spare row.
    raw.exec(
        "INSERT INTO audit_events SELECT 99, at, principal, action, target, outcome, peer, \
         request_id, hash FROM audit_events WHERE id = 6",
    )
    .await;
    raw.exec(&copy_row(7, 6)).await;
    raw.exec(&copy_row(99, 7)).await;
    raw.exec("DELETE FROM audit_events WHERE id = 99").await;
    let (id, problem) = broken(verify(&server).await);
    assert_eq!(id, 6, "swapped rows 6 and 7: {problem}");

    // A deleted row: found where it is missing.
    let db2 = TestDb::new(backend).await.unwrap();
    let other = TestServer::start(&db2).await;
    mixed_calls(&other, 0, 2).await;
    let raw2 = db2.raw().await;
    raw2.exec("DELETE FROM audit_events WHERE id = 4").await;
    let (id, problem) = broken(verify(&other).await);
    assert_eq!(id, 4, "{problem}");
    assert!(problem.contains("missing"), "{problem}");
    // The newest row deleted: the chain no longer reaches its head.
    let last: i64 = raw2.scalar("SELECT max(id) FROM audit_events").await;
    raw2.exec(&format!("DELETE FROM audit_events WHERE id = {last}"))
        .await;
    let (id, _) = broken(verify(&other).await);
    assert_eq!(id, 4, "still the first break");
    other.stop().await;
    server.stop().await;
}

async fn a_call_whose_event_cannot_be_stored_fails_and_returns_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (server, store) = TestServer::start_counting(&db).await;
    let secret = "a-secret-that-must-not-leave-0001";
    let mut cl = server.clients();
    cl.put_client(pb::PutClientRequest {
        id: "om".into(),
        secret: Some(secret.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let raw = db.raw().await;
    raw.exec("ALTER TABLE audit_events RENAME TO audit_events_away")
        .await;
    let err = cl
        .get_client_secret(pb::GetClientSecretRequest {
            id: "om".into(),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("audit"), "{}", err.message());
    assert!(!format!("{err:?}").contains(secret));
    // Signing is batched: it is served, and its event waits for the database.
    server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: "default".into(),
            claims_json: r#"{"sub":"x"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // More batched events pile up than one INSERT holds (2,000 on SQLite):
    // the retry appends them in several, in order. Meanwhile a full batch
    // waits for the retry (about one a second) instead of trying the
    // database again with every event that arrives.
    const MANY: i64 = 3000;
    let mut ks = server.keysets();
    let appends_before = store.calls("append_audit");
    let started = std::time::Instant::now();
    for _ in 0..MANY {
        ks.get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap();
    }
    let tried = store.calls("append_audit") - appends_before;
    let allowed = 3 + started.elapsed().as_secs() * 2;
    assert!(
        tried <= allowed,
        "{tried} appends tried during the outage, at most {allowed} expected"
    );
    raw.exec("ALTER TABLE audit_events_away RENAME TO audit_events")
        .await;
    // The batched events are retried within a second or two, each once.
    let stored = |action: &str| {
        let sql = format!("SELECT count(*) FROM audit_events WHERE action = '{action}'");
        let raw = &raw;
        async move { raw.scalar::<i64>(&sql).await }
    };
    for _ in 0..50 {
        if stored("GetKeySet").await >= MANY {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.service.flush_audit().await;
    assert_eq!(stored("GetKeySet").await, MANY, "every batched event, once");
    assert_eq!(
        stored("SignJwt").await,
        1,
        "the batched event was written once"
    );
    let secret_reads: Vec<_> = server
        .audit_log()
        .await
        .into_iter()
        .filter(|e| e.action == "GetClientSecret")
        .collect();
    assert!(secret_reads.is_empty(), "{secret_reads:?}");
    assert!(verify(&server).await.intact);
    server.stop().await;
}

async fn retention_prunes_old_events_and_the_rest_still_verifies(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    mixed_calls(&server, 0, 2).await;
    server.service.flush_audit().await;
    clock.advance(401 * 86_400);
    mixed_calls(&server, 1, 1).await;
    server.service.flush_audit().await;
    let pruned = server
        .service
        .prune_audit(Duration::from_secs(400 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned, Some((1, 10)));
    let report = verify(&server).await;
    assert!(report.intact, "{report:?}");
    assert_eq!(report.first_id, 11);
    let events = server.audit_log().await;
    assert!(events.iter().all(|e| e.id >= 11));
    let cut = events.iter().find(|e| e.action == "AuditPrune").unwrap();
    assert_eq!(
        (cut.principal.as_str(), cut.target.as_str()),
        ("keyward", "1..=10")
    );
    // Nothing more to prune; the events of the last 400 days stay.
    assert_eq!(
        server
            .service
            .prune_audit(Duration::from_secs(400 * 86_400))
            .await
            .unwrap(),
        None
    );
    server.stop().await;
}

async fn no_secret_token_or_key_reaches_the_audit_table(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut used: Vec<String> = vec![server.token.clone()];
    let mut cl = server.clients();
    let put = cl
        .put_client(pb::PutClientRequest {
            id: "om".into(),
            token_keyset: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    used.push(put.generated_secret.clone());
    let rotated = cl
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "om".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    used.push(rotated.generated_secret.clone());
    let token = server
        .create_token("exporter", "exporter", &["*"], &[])
        .await;
    used.push(token.clone());
    let exported = server
        .as_token(&token)
        .keysets
        .export_key(pb::ExportKeyRequest {
            keyset: "default".into(),
            key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    use base64::Engine as _;
    let der = exported.private_key_pkcs8_der.clone();
    used.push(base64::engine::general_purpose::STANDARD.encode(&der));
    used.push(common::hex(&der));
    let signed = server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: "default".into(),
            claims_json: r#"{"sub":"claims-payload-marker"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    used.push(signed.jwt);
    used.push("claims-payload-marker".into());
    let issued = common::token_request(&server, "om", &rotated.generated_secret).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    used.push(issued.json()["access_token"].as_str().unwrap().to_string());
    let _ = common::token_request(&server, "om", "a-wrong-guess-0123456789").await;
    used.push("a-wrong-guess-0123456789".into());

    server.service.flush_audit().await;
    // The audit table itself, every text column of every row.
    let raw = db.raw().await;
    let row = "principal || ' ' || action || ' ' || target || ' ' || outcome || ' ' || peer \
               || ' ' || request_id";
    let table: String = match backend {
        Backend::Sqlite => {
            raw.scalar(&format!(
                "SELECT group_concat({row}, char(10)) FROM audit_events"
            ))
            .await
        }
        Backend::Postgres => {
            raw.scalar(&format!(
                "SELECT string_agg({row}, E'\\n') FROM audit_events"
            ))
            .await
        }
    };
    assert_eq!(table.lines().count(), 7, "{table}");
    assert!(
        table.contains("ExportKey") && table.contains("invalid_client"),
        "{table}"
    );
    for secret in &used {
        assert!(secret.len() >= 16, "{secret}");
        assert!(
            !table.contains(secret.as_str()),
            "{secret} is in the audit log"
        );
    }
    server.stop().await;
}

both_backends!(
    every_call_leaves_one_event_naming_who_what_and_how_it_ended,
    request_ids_are_taken_from_callers_or_generated_and_returned,
    the_chain_verifies_after_concurrent_writers_on_two_replicas,
    editing_deleting_or_swapping_a_row_breaks_the_chain_there,
    a_call_whose_event_cannot_be_stored_fails_and_returns_nothing,
    retention_prunes_old_events_and_the_rest_still_verifies,
    no_secret_token_or_key_reaches_the_audit_table,
);
