//! The hot paths serve from memory: reads, signing, secret checks and token
//! issuance make no database query, and what one replica changes another
//! honours within 2 s (two `keyward serve` processes on one database). The
//! issuer's JWKS, built from the views, verifies every token it mints.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{As, Backend, TestDb, TestServer, process, token_request, token_request_at};
use keyward::transport::grpc::pb;

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

/// The client's current secret, read over gRPC.
async fn current_secret(clients: &common::Clients, id: &str) -> String {
    clients
        .clone()
        .get_client_secret(pb::GetClientSecretRequest {
            id: id.into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret
        .clone()
}

/// Every call of the hot paths, once.
async fn hot_calls(server: &TestServer) {
    let mut cl = server.clients();
    let mut ks = server.keysets();
    assert_eq!(current_secret(&cl, "app").await, SECRET);
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

/// How often the event feed reads new events whatever the load
/// (`EVENT_POLL` in `src/server/tasks.rs`).
const EVENT_POLL: Duration = Duration::from_millis(250);

/// In steady state no database query serves GetClientSecret,
/// VerifyClientSecret, GetClient, GetKeySet, SignJwt, GetJwks, the JWKS
/// document or `/oauth2/token`. The audit log's writes are the only store
/// calls, with the follower's poll of the change counters and the event
/// feed's timed read, at most one per [`EVENT_POLL`] elapsed.
async fn hot_paths_make_no_database_query(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (server, store) = TestServer::start_counting(&db).await;
    common::create_keyset(&server, "hot", "ES256").await;
    put_token_client(&mut server.clients(), "app", "hot", SECRET).await;
    // The first signature parses the active key; from then on nothing is read.
    hot_calls(&server).await;
    let started = Instant::now();
    store.reset();
    for _ in 0..5 {
        hot_calls(&server).await;
    }
    server.service.flush_audit().await;
    let calls = store.all_calls();
    let polls = started.elapsed().as_millis() / EVENT_POLL.as_millis() + 1;
    let feed_reads = calls.get("events_after").copied().unwrap_or(0);
    assert!(
        u128::from(feed_reads) <= polls,
        "the event feed read more often than its timer ({polls} polls): {calls:?}"
    );
    let queries: Vec<_> = calls
        .iter()
        .filter(|(method, _)| !matches!(**method, "append_audit" | "generations" | "events_after"))
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

async fn spawn_serve(cmd: std::process::Command) -> process::Serve {
    tokio::task::spawn_blocking(move || process::spawn_serve(cmd).expect("keyward serve starts"))
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
    let one = spawn_serve(db.serve_command(&data)).await;
    let mut second = db.serve_command(&data);
    second.env("KEYWARD_NO_SCHEDULER", "true");
    let two = spawn_serve(second).await;
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
    let issued = token_request_at(&two.http, "app", SECRET).await;
    if issued.status != 200 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log: Vec<String> = two.log.try_iter().collect();
        panic!("{} {}\n{}", issued.status, issued.body, log.join("\n"));
    }
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
        let cl = b.clients.clone();
        async move { current_secret(&cl, "app").await == "the-rotated-secret" }
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

/// What a relying party that follows OIDC discovery does: read
/// `jwks_uri` and the advertised algorithms, find the token's kid there and
/// verify it with jsonwebtoken, accepting only those algorithms.
async fn verify_following_discovery(server: &TestServer, token: &str) -> serde_json::Value {
    let disco = server
        .get("/.well-known/openid-configuration", &[])
        .await
        .json();
    let algorithms: Vec<jsonwebtoken::Algorithm> = disco["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    let jwks_uri = disco["jwks_uri"].as_str().unwrap();
    let jwks = common::http_get(jwks_uri, &[]).await.json();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not at jwks_uri: {jwks}"));
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    // Only an advertised algorithm is accepted (jsonwebtoken takes one key
    // family per validation).
    assert!(
        algorithms.contains(&header.alg),
        "{:?} is not among the advertised {algorithms:?}",
        header.alg
    );
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("token does not verify through discovery: {e}"))
        .claims
}

/// Discovery's `id_token_signing_alg_values_supported`.
async fn advertised_algorithms(server: &TestServer) -> serde_json::Value {
    server
        .get("/.well-known/openid-configuration", &[])
        .await
        .json()["id_token_signing_alg_values_supported"]
        .clone()
}

async fn issued_token(server: &TestServer, id: &str) -> String {
    let r = token_request(server, id, SECRET).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// Discovery's `jwks_uri` holds the default key set's keys and those of
/// every key set a client's tokens are signed by, in step with rotation and
/// client changes; its algorithms are exactly theirs; a client whose token
/// key set is not the default is verified by a library that follows it.
async fn discovery_jwks_verifies_every_token_this_issuer_mints(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start_with_clock(&db, common::manual_clock_now()).await;
    let partner = common::create_keyset(&server, "partner", "ES256").await;
    let unused = common::create_keyset(&server, "unused", "EdDSA").await;
    let issuer_jwks = |server: &TestServer| {
        let url = format!("{}/oauth2/jwks.json", server.http_url);
        async move { common::http_get(&url, &[]).await }
    };
    let disco = server
        .get("/.well-known/openid-configuration", &[])
        .await
        .json();
    assert_eq!(
        disco["jwks_uri"],
        format!("{}/oauth2/jwks.json", server.http_url)
    );
    assert_eq!(
        disco["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );

    put_token_client(&mut server.clients(), "partner-app", "partner", SECRET).await;
    assert_eq!(
        advertised_algorithms(&server).await,
        serde_json::json!(["ES256", "RS256"])
    );
    let r = issuer_jwks(&server).await;
    assert_eq!(r.status, 200);
    let body = r.body.clone();
    assert!(body.contains(&partner.active_kid), "{body}");
    assert!(
        !body.contains(&unused.active_kid),
        "only token key sets: {body}"
    );
    let default = server.get("/.well-known/jwks.json", &[]).await;
    for key in default.json()["keys"].as_array().unwrap() {
        assert!(
            body.contains(key["kid"].as_str().unwrap()),
            "the default key set's keys too"
        );
    }
    // A strong ETag that revalidates, and a max-age no longer than any member's.
    let etag = r.header("etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let max_age = |r: &common::HttpResponse| -> u64 {
        r.header("cache-control")
            .split("max-age=")
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let partner_jwks = server.get("/keysets/partner/jwks.json", &[]).await;
    assert!(max_age(&r) <= max_age(&partner_jwks).min(max_age(&default)));
    let again = common::http_get(
        &format!("{}/oauth2/jwks.json", server.http_url),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);

    let claims =
        verify_following_discovery(&server, &issued_token(&server, "partner-app").await).await;
    assert_eq!(claims["sub"], "partner-app");

    // Rotated: the new key verifies at once, the old one's tokens still do.
    let old_token = issued_token(&server, "partner-app").await;
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "partner".into(),
        })
        .await
        .unwrap();
    let new_token = issued_token(&server, "partner-app").await;
    assert_ne!(
        jsonwebtoken::decode_header(&new_token).unwrap().kid,
        jsonwebtoken::decode_header(&old_token).unwrap().kid
    );
    verify_following_discovery(&server, &new_token).await;
    verify_following_discovery(&server, &old_token).await;
    let rotated = issuer_jwks(&server).await;
    assert_ne!(rotated.header("etag"), etag, "a new document, a new ETag");

    // The client moves to the EdDSA key set: its algorithm comes, ES256 goes.
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "partner-app".into(),
            token_keyset: Some("unused".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        advertised_algorithms(&server).await,
        serde_json::json!(["EdDSA", "RS256"])
    );
    assert!(
        !issuer_jwks(&server)
            .await
            .body
            .contains(&partner.active_kid)
    );
    verify_following_discovery(&server, &issued_token(&server, "partner-app").await).await;
    server.stop().await;
}

both_backends!(
    hot_paths_make_no_database_query,
    changes_on_one_replica_reach_another_within_two_seconds,
    discovery_jwks_verifies_every_token_this_issuer_mints,
);
