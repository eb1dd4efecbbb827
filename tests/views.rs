//! The hot paths serve from memory: reads, signing, secret checks and token
//! issuance make no database query, and what one replica changes another
//! honours within 2 s (two `keyward serve` processes on one database).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{As, Backend, TestDb, TestServer, process, token_request, token_request_at};
use keyward::grpc::pb;

const SECRET: &str = "s3cret-for-the-view-tests";

async fn put_token_client(clients: &mut common::Clients, id: &str, keyset: &str, secret: &str) {
    clients
        .put_client(pb::PutClientRequest {
            id: id.into(),
            secret: Some(secret.into()),
            token_keyset: Some(keyset.into()),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every call of the hot paths, once.
async fn hot_calls(server: &TestServer) {
    let mut cl = server.clients();
    let mut ks = server.keysets();
    let secret = cl
        .get_client_secret(pb::GetClientSecretRequest {
            id: "app".into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.secret, SECRET);
    let verified = cl
        .verify_client_secret(pb::VerifyClientSecretRequest {
            id: "app".into(),
            secret: SECRET.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.valid);
    cl.get_client(pb::GetClientRequest { id: "app".into() })
        .await
        .unwrap();
    ks.get_key_set(pb::GetKeySetRequest { name: "hot".into() })
        .await
        .unwrap();
    ks.sign_jwt(pb::SignJwtRequest {
        keyset: "hot".into(),
        claims_json: r#"{"sub":"x"}"#.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    ks.get_jwks(pb::GetJwksRequest {
        keyset: "hot".into(),
    })
    .await
    .unwrap();
    assert_eq!(server.get("/keysets/hot/jwks.json", &[]).await.status, 200);
    let issued = token_request(server, "app", SECRET).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let refused = token_request(server, "app", "not-the-secret").await;
    assert_eq!(refused.status, 401);
}

/// In steady state no database query serves GetClientSecret,
/// VerifyClientSecret, GetClient, GetKeySet, SignJwt, GetJwks, the JWKS
/// document or `/oauth2/token`. The audit log's writes are the only store
/// calls, with the follower's poll of the change counters.
async fn hot_paths_make_no_database_query(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (server, store) = TestServer::start_counting(&db).await;
    common::create_keyset(&server, "hot", "ES256").await;
    put_token_client(&mut server.clients(), "app", "hot", SECRET).await;
    // The first signature parses the active key; from then on nothing is read.
    hot_calls(&server).await;
    store.reset();
    for _ in 0..5 {
        hot_calls(&server).await;
    }
    server.service.flush_audit().await;
    let calls = store.all_calls();
    let queries: Vec<_> = calls
        .iter()
        .filter(|(method, _)| !matches!(**method, "append_audit" | "generations"))
        .collect();
    assert!(
        queries.is_empty(),
        "hot paths queried the database: {queries:?} (all calls: {calls:?})"
    );
    assert!(
        calls.get("append_audit").copied().unwrap_or(0) >= 1,
        "the audit log still records the calls: {calls:?}"
    );
}

/// Waits up to 2 s for `check` to hold, polling every 50 ms; returns how
/// long it took.
async fn within_two_seconds<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the second replica did not honour {what} within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spawn_serve(data: std::path::PathBuf, env: Vec<(String, String)>) -> process::Serve {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        process::serve(&data, &env).expect("keyward serve starts")
    })
    .await
    .unwrap()
}

/// A secret rotated, a key revoked and a client deleted on replica A are
/// honoured by replica B within 2 s, on the view B built before the change.
async fn changes_on_one_replica_reach_another_within_two_seconds(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let data = db.data_dir().join("data");
    let mut env = vec![("KEYWARD_DATABASE_URL".to_string(), db.url.clone())];
    if let keyward::config::MasterKeySource::Inline(key) = &db.master_key {
        env.push(("KEYWARD_MASTER_KEY".into(), key.expose().to_string()));
    }
    let one = spawn_serve(data.clone(), env.clone()).await;
    let mut env_two = env;
    env_two.push(("KEYWARD_NO_SCHEDULER".into(), "true".into()));
    let two = spawn_serve(data.clone(), env_two).await;
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut a = As::at(&one.grpc, token.trim());
    let mut b = As::at(&two.grpc, token.trim());

    a.keysets
        .create_key_set(pb::CreateKeySetRequest {
            name: "shared".into(),
            algorithm: "ES256".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    put_token_client(&mut a.clients, "app", "shared", SECRET).await;
    // B serves both from its view before anything changes. (Failed token
    // requests are throttled per client: each phase waits on the gRPC read,
    // then checks the token endpoint once.)
    within_two_seconds("a new client", || {
        let mut cl = b.clients.clone();
        async move {
            cl.get_client(pb::GetClientRequest { id: "app".into() })
                .await
                .is_ok()
        }
    })
    .await;
    assert_eq!(token_request_at(&two.http, "app", SECRET).await.status, 200);
    let signed_kid = |b: &mut As| {
        let mut ks = b.keysets.clone();
        async move {
            ks.sign_jwt(pb::SignJwtRequest {
                keyset: "shared".into(),
                claims_json: "{}".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .kid
        }
    };
    let first_kid = signed_kid(&mut b).await;

    // A secret rotated with no grace: B hands out the new one and refuses the old.
    a.clients
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "app".into(),
            grace_seconds: Some(0),
            secret: Some("the-rotated-secret".into()),
        })
        .await
        .unwrap();
    let lag = within_two_seconds("a rotated secret", || {
        let mut cl = b.clients.clone();
        async move {
            let read = cl
                .get_client_secret(pb::GetClientSecretRequest {
                    id: "app".into(),
                    version: None,
                })
                .await
                .unwrap()
                .into_inner();
            read.secret == "the-rotated-secret"
        }
    })
    .await;
    assert_eq!(token_request_at(&two.http, "app", SECRET).await.status, 401);
    let rotated = token_request_at(&two.http, "app", "the-rotated-secret").await;
    assert_eq!(rotated.status, 200);
    eprintln!("{backend:?}: secret rotation seen by the other replica after {lag:?}");

    // The active key revoked: B neither signs with it nor publishes it.
    a.keysets
        .revoke_key(pb::RevokeKeyRequest {
            kid: first_kid.clone(),
        })
        .await
        .unwrap();
    let lag = within_two_seconds("a revoked key", || {
        let (mut b, http, kid) = (
            As::at(&two.grpc, token.trim()),
            two.http.clone(),
            first_kid.clone(),
        );
        async move {
            let jwks = common::http_get(&format!("{http}/keysets/shared/jwks.json"), &[]).await;
            signed_kid(&mut b).await != kid && !jwks.body.contains(&kid)
        }
    })
    .await;
    eprintln!("{backend:?}: key revocation seen by the other replica after {lag:?}");

    // The client deleted: B knows it no more.
    a.clients
        .delete_client(pb::DeleteClientRequest { id: "app".into() })
        .await
        .unwrap();
    let lag = within_two_seconds("a deleted client", || {
        let mut cl = b.clients.clone();
        async move {
            cl.get_client(pb::GetClientRequest { id: "app".into() })
                .await
                .is_err_and(|s| s.code() == tonic::Code::NotFound)
        }
    })
    .await;
    let refused = token_request_at(&two.http, "app", "the-rotated-secret").await;
    assert_eq!(refused.status, 401);
    eprintln!("{backend:?}: client deletion seen by the other replica after {lag:?}");

    for replica in [one, two] {
        let status = tokio::task::spawn_blocking(move || replica.terminate().0)
            .await
            .unwrap();
        assert!(status.success(), "SIGTERM exits 0, got {status}");
    }
}

both_backends!(
    hot_paths_make_no_database_query,
    changes_on_one_replica_reach_another_within_two_seconds,
);
