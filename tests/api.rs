//! End-to-end behaviour through the real gRPC and HTTP interfaces, on SQLite and
//! on PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Backend, Clients, TestDb, TestServer, create_keyset as create, verify};
use keyward::transport::grpc::pb;
use serde_json::{Value, json};
use tonic::Code;

const ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn jwt_alg(name: &str) -> jsonwebtoken::Algorithm {
    name.parse().expect("jsonwebtoken knows the algorithm")
}

async fn jwks_of(server: &TestServer, keyset: &str) -> Value {
    let r = server
        .get(&format!("/keysets/{keyset}/jwks.json"), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn sign(
    server: &TestServer,
    keyset: &str,
    claims: Value,
    ttl: Option<u64>,
) -> pb::SignJwtResponse {
    server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: keyset.into(),
            claims_json: claims.to_string(),
            ttl_seconds: ttl,
            ..Default::default()
        })
        .await
        .expect("SignJwt")
        .into_inner()
}

fn code_of<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("call should fail");
    (status.code(), status.message().to_string())
}

async fn sign_and_verify_every_algorithm(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    for alg in ALGS {
        let name = format!("set-{}", alg.to_lowercase());
        let set = create(&server, &name, alg).await;
        assert_eq!(set.algorithm, alg);
        assert!(!set.active_kid.is_empty());
        assert_eq!(
            set.rsa_bits,
            if alg.starts_with(['R', 'P']) { 2048 } else { 0 }
        );

        let signed = sign(
            &server,
            &name,
            json!({"sub": "alice", "roles": ["Admin"]}),
            Some(600),
        )
        .await;
        assert_eq!(signed.kid, set.active_kid);
        let header = jsonwebtoken::decode_header(&signed.jwt).unwrap();
        assert_eq!(header.alg, jwt_alg(alg));
        assert_eq!(header.typ.as_deref(), Some("JWT"));

        let jwks = jwks_of(&server, &name).await;
        let key = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == set.active_kid.as_str())
            .expect("the active key is published");
        assert_eq!(key["kid"], set.active_kid.as_str());
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], alg);
        let expected_kty = match alg {
            "ES256" | "ES384" => "EC",
            "EdDSA" => "OKP",
            _ => "RSA",
        };
        assert_eq!(key["kty"], expected_kty);
        for member in ["n", "e", "x", "y"] {
            if let Some(v) = key[member].as_str() {
                assert!(
                    !v.contains('=') && !v.contains('+') && !v.contains('/'),
                    "{member} is base64url unpadded"
                );
            }
        }
        let claims = verify(&signed.jwt, &jwks);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        assert_eq!(claims["exp"].as_i64().unwrap(), signed.expires_at);
    }
    server.stop().await;
}

async fn keyset_lifecycle_and_rotation(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut ks = server.keysets();

    // First start created the default key set, served at the well-known path.
    let listed = ks
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .key_sets
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["default"]
    );
    let well_known = server.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(well_known.status, 200);
    assert!(
        well_known
            .body
            .contains(listed.key_sets[0].active_kid.as_str())
    );

    let set = create(&server, "om", "RS256").await;
    assert_eq!(
        set.published_keys, 2,
        "a new key set has an active and a pending key"
    );
    let old = sign(&server, "om", json!({"sub": "bot"}), None).await;
    assert_eq!(old.kid, set.active_kid);
    let before = ks
        .list_keys(pb::ListKeysRequest {
            keyset: "om".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let pending_kid = before
        .iter()
        .find(|k| k.state == pb::KeyState::Pending as i32)
        .expect("a pending key")
        .kid
        .clone();

    // Manual rotation: the (young) pending key signs at once, with a warning.
    let rotated = ks
        .rotate_key_set(pb::RotateKeySetRequest { name: "om".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.warnings.len(), 1, "{:?}", rotated.warnings);
    assert!(rotated.warnings[0].contains("JWKS max-age"));
    let state_of = |kid: &str| {
        rotated
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.state)
            .expect("key listed")
    };
    assert_eq!(state_of(&set.active_kid), pb::KeyState::Retired as i32);
    assert_eq!(state_of(&pending_kid), pb::KeyState::Active as i32);
    let new_pending: Vec<_> = rotated
        .keys
        .iter()
        .filter(|k| k.state == pb::KeyState::Pending as i32)
        .collect();
    assert_eq!(new_pending.len(), 1);
    let activated = pending_kid.clone();
    let retired = set.active_kid.clone();

    // The JWKS (refreshed at once) publishes all three; old and new tokens verify.
    let jwks = jwks_of(&server, "om").await;
    let kids: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids.len(), 3);
    assert!(kids.contains(&retired) && kids.contains(&activated));
    assert!(kids.contains(&new_pending[0].kid));
    let new = sign(&server, "om", json!({"sub": "bot"}), None).await;
    assert_eq!(new.kid, activated, "the retired key never signs again");
    verify(&old.jwt, &jwks);
    verify(&new.jwt, &jwks);

    let got = ks
        .get_key_set(pb::GetKeySetRequest { name: "om".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.active_kid, activated);
    assert_eq!(got.published_keys, 3);
    let keys = ks
        .list_keys(pb::ListKeysRequest {
            keyset: "om".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.keyset == "om" && k.created_at > 0));

    // GetJwks over gRPC is the same document as HTTP.
    let grpc_jwks = ks
        .get_jwks(pb::GetJwksRequest {
            keyset: "om".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Value>(&grpc_jwks.jwks_json).unwrap(),
        jwks
    );

    // Delete: gone from gRPC and HTTP; the name can be reused with new kids.
    ks.delete_key_set(pb::DeleteKeySetRequest { name: "om".into() })
        .await
        .unwrap();
    let (code, _) = code_of(
        ks.get_key_set(pb::GetKeySetRequest { name: "om".into() })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let gone = server.get("/keysets/om/jwks.json", &[]).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.header("content-type"), "application/problem+json");
    assert_eq!(gone.json()["status"], 404);
    let again = create(&server, "om", "ES256").await;
    assert!(!kids.contains(&again.active_kid));
    server.stop().await;
}

async fn jwks_http_caching(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let mut config = db.config();
    config.jwks_max_age = 120;
    config.default_keyset = "main".into();
    let server = TestServer::start_with(
        &db,
        config,
        std::sync::Arc::new(keyward::domain::clock::SystemClock),
    )
    .await;

    let first = server.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(first.header("cache-control"), "public, max-age=120");
    let etag = first.header("etag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    assert_eq!(
        server.get("/keysets/main/jwks.json", &[]).await.body,
        first.body
    );

    let cached = server
        .get("/.well-known/jwks.json", &[("if-none-match", &etag)])
        .await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), etag);
    // Public documents are readable from any web origin; browsers may read the ETag.
    for r in [&first, &cached] {
        assert_eq!(r.header("access-control-allow-origin"), "*");
        assert_eq!(r.header("access-control-expose-headers"), "ETag");
    }
    let missing = server.get("/keysets/ghost/jwks.json", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("access-control-allow-origin"), "*");
    let other = server
        .get("/.well-known/jwks.json", &[("if-none-match", "\"stale\"")])
        .await;
    assert_eq!(other.status, 200);

    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "main".into(),
        })
        .await
        .unwrap();
    let after = server
        .get("/.well-known/jwks.json", &[("if-none-match", &etag)])
        .await;
    assert_eq!(after.status, 200, "a rotation changes the ETag");
    assert_ne!(after.header("etag"), etag);

    // Plain GETs are answered before the router, from each thread's copy; a
    // name with escapes goes through the router. Both answer alike, and
    // both follow the rotation.
    let routed = server.get("/keysets/m%61in/jwks.json", &[]).await;
    for front in [&after, &server.get("/keysets/main/jwks.json", &[]).await] {
        assert_eq!(routed.status, 200);
        assert_eq!(routed.body, front.body);
        for h in [
            "etag",
            "cache-control",
            "content-type",
            "access-control-allow-origin",
            "access-control-expose-headers",
        ] {
            assert_eq!(routed.header(h), front.header(h), "{h}");
        }
        assert_eq!(front.header("x-request-id").len(), 16, "a request id");
    }
    let routed_cached = server
        .get(
            "/keysets/m%61in/jwks.json",
            &[("if-none-match", after.header("etag"))],
        )
        .await;
    assert_eq!(routed_cached.status, 304);

    let health = server.get("/healthz", &[]).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = server.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    let bad = server.get("/keysets/Not_Valid/jwks.json", &[]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["detail"].as_str().unwrap().contains("name"));
    assert_eq!(server.get("/nope", &[]).await.status, 404);
    server.stop().await;
}

/// `openmetadata`, created with every field set and a generated secret, which
/// is returned.
async fn put_openmetadata_client(cl: &mut Clients) -> String {
    let put = cl
        .put_client(pb::PutClientRequest {
            id: "openmetadata".into(),
            display_name: Some("OpenMetadata".into()),
            discovery_uri: Some("https://idp.example.com/.well-known/openid-configuration".into()),
            callback_url: Some("https://om.example.com/callback".into()),
            scopes: Some(pb::StringList {
                values: vec!["openid".into(), "email".into(), "profile".into()],
            }),
            auth_method: Some("client_secret_post".into()),
            labels: Some(pb::Labels {
                values: HashMap::from([("team".into(), "data".into())]),
            }),
            secret: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.created);
    let client = put.client.clone().unwrap();
    assert_eq!(client.secret_version, 1);
    assert_eq!(client.auth_method, "client_secret_post");
    put.generated_secret.clone()
}

async fn verify_secret(cl: &Clients, id: &str, secret: &str) -> pb::VerifyClientSecretResponse {
    cl.clone()
        .verify_client_secret(pb::VerifyClientSecretRequest {
            id: id.into(),
            secret: secret.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn secret_version(
    cl: &mut Clients,
    id: &str,
    version: Option<u32>,
) -> Result<pb::GetClientSecretResponse, tonic::Status> {
    cl.get_client_secret(pb::GetClientSecretRequest {
        id: id.into(),
        version,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn generated_secret_is_returned_once_and_only_by_get_client_secret(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut cl = server.clients();
    let generated = put_openmetadata_client(&mut cl).await;
    assert_eq!(generated.len(), 43, "32 bytes, base64url unpadded");

    let got = cl
        .get_client(pb::GetClientRequest {
            id: "openmetadata".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{got:?}").contains(&generated));
    assert_eq!(got.scopes, ["openid", "email", "profile"]);
    let secret = secret_version(&mut cl, "openmetadata", None).await.unwrap();
    assert_eq!(
        (secret.secret.as_str(), secret.version),
        (generated.as_str(), 1)
    );
    server.stop().await;
}

async fn updating_a_client_keeps_its_secret_and_unset_fields(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut cl = server.clients();
    let generated = put_openmetadata_client(&mut cl).await;

    let upd = cl
        .put_client(pb::PutClientRequest {
            id: "openmetadata".into(),
            display_name: Some("OM prod".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!upd.created && upd.generated_secret.is_empty());
    let upd = upd.client.clone().unwrap();
    assert_eq!(upd.display_name, "OM prod");
    assert_eq!(
        upd.scopes,
        ["openid", "email", "profile"],
        "unset fields are kept"
    );
    let (code, msg) = code_of(
        cl.put_client(pb::PutClientRequest {
            id: "openmetadata".into(),
            secret: Some("x".into()),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "a secret on update: {msg}");
    assert!(verify_secret(&cl, "openmetadata", &generated).await.valid);
    server.stop().await;
}

async fn rotated_secrets_overlap_for_the_grace_period(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    let mut cl = server.clients();
    let generated = put_openmetadata_client(&mut cl).await;

    // Both verify during the grace, only the new one after it.
    let rotated = cl
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "openmetadata".into(),
            grace_seconds: Some(3600),
            secret: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.version, 2);
    let new_secret = rotated.generated_secret.clone();
    assert_ne!(new_secret, generated);
    let old = verify_secret(&cl, "openmetadata", &generated).await;
    assert_eq!((old.valid, old.version), (true, 1));
    assert_eq!(
        verify_secret(&cl, "openmetadata", &new_secret)
            .await
            .version,
        2
    );
    assert!(!verify_secret(&cl, "openmetadata", "wrong").await.valid);
    let longer = format!("{generated}x");
    assert!(!verify_secret(&cl, "openmetadata", &longer).await.valid);
    let v1 = secret_version(&mut cl, "openmetadata", Some(1))
        .await
        .unwrap();
    assert_eq!(v1.secret, generated);
    assert_eq!(v1.valid_until, rotated.previous_valid_until);

    clock.advance(3601);
    assert!(
        !verify_secret(&cl, "openmetadata", &generated).await.valid,
        "previous secret fails after its grace"
    );
    assert!(verify_secret(&cl, "openmetadata", &new_secret).await.valid);

    // A given secret on rotation; the default grace is 48 h.
    let given = cl
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "openmetadata".into(),
            grace_seconds: None,
            secret: Some("chosen-by-operator".into()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(given.generated_secret.is_empty());
    assert_eq!(given.previous_valid_until, clock_now(&clock) + 48 * 3600);
    assert!(
        verify_secret(&cl, "openmetadata", "chosen-by-operator")
            .await
            .valid
    );
    assert!(verify_secret(&cl, "openmetadata", &new_secret).await.valid);
    // Version 1 ended its grace before this rotation, so it was deleted.
    let gone = secret_version(&mut cl, "openmetadata", Some(1)).await;
    assert_eq!(gone.map(|_| ()).unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

async fn a_given_secret_is_stored_as_is_and_not_echoed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut cl = server.clients();
    put_openmetadata_client(&mut cl).await;
    let put = cl
        .put_client(pb::PutClientRequest {
            id: "svc.ingest".into(),
            secret: Some("s3cr3t-from-idp".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(put.created && put.generated_secret.is_empty());
    assert!(!format!("{put:?}").contains("s3cr3t-from-idp"));
    assert!(
        verify_secret(&cl, "svc.ingest", "s3cr3t-from-idp")
            .await
            .valid
    );
    let ids: Vec<_> = cl
        .list_clients(pb::ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clients
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["openmetadata", "svc.ingest"]);
    server.stop().await;
}

async fn a_deleted_client_is_gone_with_its_secrets(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut cl = server.clients();
    let generated = put_openmetadata_client(&mut cl).await;
    cl.delete_client(pb::DeleteClientRequest {
        id: "openmetadata".into(),
    })
    .await
    .unwrap();
    let (code, _) = code_of(
        cl.get_client(pb::GetClientRequest {
            id: "openmetadata".into(),
        })
        .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, _) = code_of(
        cl.verify_client_secret(pb::VerifyClientSecretRequest {
            id: "openmetadata".into(),
            secret: generated,
        })
        .await,
    );
    assert_eq!(code, Code::NotFound);
    let gone = secret_version(&mut cl, "openmetadata", None).await;
    assert_eq!(gone.map(|_| ()).unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

fn clock_now(clock: &keyward::domain::clock::ManualClock) -> i64 {
    keyward::domain::clock::Clock::now(clock)
}

async fn bad_input_gets_precise_codes(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut ks = server.keysets();
    let mut cl = server.clients();
    create(&server, "ok", "ES256").await;

    let create_req = |name: &str, alg: &str, bits: u32| pb::CreateKeySetRequest {
        name: name.into(),
        algorithm: alg.into(),
        rsa_bits: bits,
        policy: None,
    };
    let cases: Vec<(&str, (Code, String), Code, &str)> = vec![
        (
            "bad name",
            code_of(ks.create_key_set(create_req("Bad_Name", "", 0)).await),
            Code::InvalidArgument,
            "name",
        ),
        (
            "long name",
            code_of(ks.create_key_set(create_req(&"a".repeat(64), "", 0)).await),
            Code::InvalidArgument,
            "name",
        ),
        (
            "bad alg",
            code_of(ks.create_key_set(create_req("x", "HS256", 0)).await),
            Code::InvalidArgument,
            "algorithm",
        ),
        (
            "bad bits",
            code_of(ks.create_key_set(create_req("x", "RS256", 1024)).await),
            Code::InvalidArgument,
            "rsa_bits",
        ),
        (
            "bits on EC",
            code_of(ks.create_key_set(create_req("x", "ES256", 2048)).await),
            Code::InvalidArgument,
            "rsa_bits",
        ),
        (
            "duplicate",
            code_of(ks.create_key_set(create_req("ok", "ES256", 0)).await),
            Code::AlreadyExists,
            "ok",
        ),
        (
            "get unknown",
            code_of(
                ks.get_key_set(pb::GetKeySetRequest {
                    name: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
        (
            "delete unknown",
            code_of(
                ks.delete_key_set(pb::DeleteKeySetRequest {
                    name: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
        (
            "rotate unknown",
            code_of(
                ks.rotate_key_set(pb::RotateKeySetRequest {
                    name: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
        (
            "keys unknown",
            code_of(
                ks.list_keys(pb::ListKeysRequest {
                    keyset: "nope".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
        (
            "jwks unknown",
            code_of(
                ks.get_jwks(pb::GetJwksRequest {
                    keyset: "nope".into(),
                })
                .await,
            ),
            Code::NotFound,
            "nope",
        ),
    ];
    let sign_req = |keyset: &str, claims: String, ttl: Option<u64>| pb::SignJwtRequest {
        keyset: keyset.into(),
        claims_json: claims,
        ttl_seconds: ttl,
        ..Default::default()
    };
    let big = json!({ "pad": "x".repeat(17 * 1024) }).to_string();
    let more: Vec<(&str, (Code, String), Code, &str)> = vec![
        (
            "claims not json",
            code_of(ks.sign_jwt(sign_req("ok", "{".into(), None)).await),
            Code::InvalidArgument,
            "claims_json",
        ),
        (
            "claims array",
            code_of(ks.sign_jwt(sign_req("ok", "[1]".into(), None)).await),
            Code::InvalidArgument,
            "JSON object",
        ),
        (
            "claims too big",
            code_of(ks.sign_jwt(sign_req("ok", big, None)).await),
            Code::InvalidArgument,
            "16384",
        ),
        (
            "claims exp",
            code_of(
                ks.sign_jwt(sign_req("ok", r#"{"exp":1}"#.into(), None))
                    .await,
            ),
            Code::InvalidArgument,
            "exp",
        ),
        (
            "ttl zero",
            code_of(ks.sign_jwt(sign_req("ok", "{}".into(), Some(0))).await),
            Code::InvalidArgument,
            "ttl_seconds",
        ),
        (
            "sign unknown",
            code_of(ks.sign_jwt(sign_req("nope", "{}".into(), None)).await),
            Code::NotFound,
            "nope",
        ),
        (
            "client id",
            code_of(
                cl.get_client(pb::GetClientRequest { id: "a b".into() })
                    .await,
            ),
            Code::InvalidArgument,
            "id",
        ),
        (
            "client id long",
            code_of(
                cl.put_client(pb::PutClientRequest {
                    id: "a".repeat(129),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "id",
        ),
        (
            "client unknown",
            code_of(
                cl.get_client(pb::GetClientRequest { id: "ghost".into() })
                    .await,
            ),
            Code::NotFound,
            "ghost",
        ),
        (
            "secret unknown",
            code_of(
                cl.get_client_secret(pb::GetClientSecretRequest {
                    id: "ghost".into(),
                    version: None,
                })
                .await,
            ),
            Code::NotFound,
            "ghost",
        ),
        (
            "rotate unknown",
            code_of(
                cl.rotate_client_secret(pb::RotateClientSecretRequest {
                    id: "ghost".into(),
                    ..Default::default()
                })
                .await,
            ),
            Code::NotFound,
            "ghost",
        ),
        (
            "delete unknown",
            code_of(
                cl.delete_client(pb::DeleteClientRequest { id: "ghost".into() })
                    .await,
            ),
            Code::NotFound,
            "ghost",
        ),
        (
            "auth method",
            code_of(
                cl.put_client(pb::PutClientRequest {
                    id: "c".into(),
                    auth_method: Some("private_key_jwt".into()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "auth_method",
        ),
        (
            "bad url",
            code_of(
                cl.put_client(pb::PutClientRequest {
                    id: "c".into(),
                    callback_url: Some("javascript:alert(1)".into()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "callback_url",
        ),
        (
            "bad scope",
            code_of(
                cl.put_client(pb::PutClientRequest {
                    id: "c".into(),
                    scopes: Some(pb::StringList {
                        values: vec!["has space".into()],
                    }),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "scopes",
        ),
        (
            "empty secret",
            code_of(
                cl.put_client(pb::PutClientRequest {
                    id: "c".into(),
                    secret: Some(String::new()),
                    ..Default::default()
                })
                .await,
            ),
            Code::InvalidArgument,
            "secret",
        ),
    ];
    // Every case is checked and every wrong one reported, not just the first.
    let wrong: Vec<String> = cases
        .into_iter()
        .chain(more)
        .filter(|(_, (code, message), want, mentions)| {
            *code != *want || !message.contains(mentions)
        })
        .map(|(what, (code, message), want, mentions)| {
            format!("{what}: got {code:?} {message:?}, want {want:?} mentioning {mentions:?}")
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // None of the refused client calls created anything.
    let clients = cl
        .list_clients(pb::ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clients;
    assert!(clients.is_empty(), "{clients:?}");
    let (code, _) = code_of(
        cl.get_client_secret(pb::GetClientSecretRequest {
            id: "ghost".into(),
            version: Some(0),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    server.stop().await;
}

async fn authentication_and_public_services(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    assert!(server.token.starts_with("kw_") && server.token.len() == 46);

    for header in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some(&*format!("Bearer {}x", server.token)),
    ] {
        let (code, _) = code_of(
            server
                .keysets_with(header)
                .list_key_sets(pb::ListKeySetsRequest::default())
                .await,
        );
        assert_eq!(code, Code::Unauthenticated, "{header:?}");
    }
    let ok = server
        .keysets_with(Some(&format!("Bearer {}", server.token)))
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await;
    assert!(ok.is_ok());
    let mut unauth_clients =
        keyward::transport::grpc::pb::clients_client::ClientsClient::new(server.channel.clone());
    let (code, _) = code_of(
        unauth_clients
            .list_clients(pb::ListClientsRequest::default())
            .await,
    );
    assert_eq!(code, Code::Unauthenticated);

    // Health and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel.clone());
    for service in ["", "keyward.v1.KeySets", "keyward.v1.Clients"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "keyward.v1.KeySets",
        "keyward.v1.Clients",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    server.stop().await;
}

async fn restart_keeps_keys_and_secrets(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let set = create(&server, "persist", "PS256").await;
    let token = sign(&server, "persist", json!({"sub": "x"}), None).await;
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "keep".into(),
            secret: Some("kept-secret".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let jwks_before = jwks_of(&server, "persist").await;
    let admin_token = server.token.clone();
    server.stop().await;

    let server = TestServer::start(&db).await;
    assert_eq!(server.token, admin_token, "the admin token is created once");
    assert_eq!(jwks_of(&server, "persist").await, jwks_before);
    verify(&token.jwt, &jwks_before);
    let again = sign(&server, "persist", json!({"sub": "x"}), None).await;
    assert_eq!(
        again.kid, set.active_kid,
        "the same key signs after a restart"
    );
    let secret = server
        .clients()
        .get_client_secret(pb::GetClientSecretRequest {
            id: "keep".into(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.secret, "kept-secret");
    let names: Vec<_> = server
        .keysets()
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .key_sets
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["default", "persist"], "no second default key set");
    server.stop().await;
}

async fn moved_ciphertext_is_data_loss(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut cl = server.clients();
    for id in ["alpha", "beta"] {
        cl.put_client(pb::PutClientRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    create(&server, "src", "ES256").await;
    create(&server, "dst", "ES256").await;
    let raw = db.raw().await;
    raw.exec(
        "UPDATE client_secrets SET secret = (SELECT secret FROM client_secrets WHERE client_id = 'alpha') \
         WHERE client_id = 'beta'",
    )
    .await;
    raw.exec(
        "UPDATE keys SET private_key = (SELECT k.private_key FROM keys k JOIN keysets s ON s.id = k.keyset_id \
           WHERE s.name = 'src' AND k.state = 'active') \
         WHERE state = 'active' AND keyset_id = (SELECT id FROM keysets WHERE name = 'dst' AND deleted_at IS NULL)",
    )
    .await;
    // An edit behind keyward's back reaches its in-memory views when they
    // next load the rows: here, at the next start.
    let server = server.restart(&db).await;
    let mut cl = server.clients();

    let (code, message) = code_of(
        cl.get_client_secret(pb::GetClientSecretRequest {
            id: "beta".into(),
            version: None,
        })
        .await,
    );
    assert_eq!(code, Code::DataLoss);
    assert_eq!(
        message, "stored data could not be decrypted",
        "generic message only"
    );
    let (code, _) = code_of(
        cl.verify_client_secret(pb::VerifyClientSecretRequest {
            id: "beta".into(),
            secret: "x".into(),
        })
        .await,
    );
    assert_eq!(code, Code::DataLoss);
    let (code, _) = code_of(
        server
            .keysets()
            .sign_jwt(pb::SignJwtRequest {
                keyset: "dst".into(),
                claims_json: "{}".into(),
                ttl_seconds: None,
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, Code::DataLoss);
    // Untouched rows still work.
    cl.get_client_secret(pb::GetClientSecretRequest {
        id: "alpha".into(),
        version: None,
    })
    .await
    .unwrap();
    sign(&server, "src", json!({}), None).await;
    server.stop().await;
}

async fn wrong_master_key_refuses_and_writes_nothing(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    create(&server, "guarded", "EdDSA").await;
    server.stop().await;
    let raw = db.raw().await;
    let before = raw.dump().await;

    let mut config = db.config();
    let other = keyward::crypto::aead::MasterKey::generate_base64();
    config.master_key =
        keyward::config::MasterKeySource::Inline(keyward::domain::secret::SecretString::new(
            String::from_utf8(other.expose().to_vec()).unwrap(),
        ));
    let err = keyward::server::prepare(
        config,
        std::sync::Arc::new(keyward::domain::clock::SystemClock),
    )
    .await
    .expect_err("a wrong master key must refuse");
    let message = err.to_string();
    assert!(message.contains("wrong master key"), "{message}");
    assert_eq!(raw.dump().await, before, "nothing was written");

    if backend == Backend::Postgres {
        let mut unset = db.config();
        unset.master_key = keyward::config::MasterKeySource::Unset;
        let err = keyward::server::prepare(
            unset,
            std::sync::Arc::new(keyward::domain::clock::SystemClock),
        )
        .await
        .expect_err("PostgreSQL needs a configured master key");
        assert!(err.to_string().contains("KEYWARD_MASTER_KEY"), "{err}");
    } else {
        // The generated key file is what a restart without configuration uses;
        // with the file gone the database refuses rather than minting a new key.
        std::fs::remove_file(db.data_dir().join("master.key")).unwrap();
        let err = keyward::server::prepare(
            db.config(),
            std::sync::Arc::new(keyward::domain::clock::SystemClock),
        )
        .await
        .expect_err("missing master key must refuse");
        assert!(err.to_string().contains("no master key"), "{err}");
        assert!(!db.data_dir().join("master.key").exists());
    }
    assert_eq!(raw.dump().await, before, "nothing was written");
}

async fn other_process_change_shows_within_two_seconds(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let a = TestServer::start(&db).await;
    let b = TestServer::start(&db).await;
    create(&a, "shared", "ES256").await;
    let rotated = a
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "shared".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let kid_in = |state: pb::KeyState| {
        rotated
            .keys
            .iter()
            .find(|k| k.state == state as i32)
            .unwrap_or_else(|| panic!("a {state:?} key"))
            .kid
            .clone()
    };
    // The newly active key was already published as pending, so the JWKS alone cannot
    // show the rotation: B must sign with the new active key and publish the new pending
    // key A created.
    let (active, pending) = (kid_in(pb::KeyState::Active), kid_in(pb::KeyState::Pending));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // Before B has seen the key set at all, it answers NotFound.
        let signed_with = b
            .keysets()
            .sign_jwt(pb::SignJwtRequest {
                keyset: "shared".into(),
                claims_json: "{}".into(),
                ..Default::default()
            })
            .await
            .map_or_else(
                |status| format!("{:?}", status.code()),
                |r| r.into_inner().kid,
            );
        let r = b.get("/keysets/shared/jwks.json", &[]).await;
        if signed_with == active && r.status == 200 && r.body.contains(&pending) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server B did not see the rotation within 2 s (signs with {signed_with}, want {active})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

async fn concurrent_manual_rotations_change_once_each(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    create(&server, "race", "ES256").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut ks = server.keysets();
        tasks.push(tokio::spawn(async move {
            ks.rotate_key_set(pb::RotateKeySetRequest {
                name: "race".into(),
            })
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    let keys = server
        .keysets()
        .list_keys(pb::ListKeysRequest {
            keyset: "race".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let active = keys
        .iter()
        .filter(|k| k.state == pb::KeyState::Active as i32)
        .count();
    assert_eq!(active, 1, "never two active keys");
    assert_eq!(
        keys.len(),
        2 + won,
        "each successful rotation added exactly one key"
    );
    assert!(won >= 1);
    server.stop().await;
}

both_backends!(
    sign_and_verify_every_algorithm,
    keyset_lifecycle_and_rotation,
    jwks_http_caching,
    generated_secret_is_returned_once_and_only_by_get_client_secret,
    updating_a_client_keeps_its_secret_and_unset_fields,
    rotated_secrets_overlap_for_the_grace_period,
    a_given_secret_is_stored_as_is_and_not_echoed,
    a_deleted_client_is_gone_with_its_secrets,
    bad_input_gets_precise_codes,
    authentication_and_public_services,
    restart_keeps_keys_and_secrets,
    moved_ciphertext_is_data_loss,
    wrong_master_key_refuses_and_writes_nothing,
    other_process_change_shows_within_two_seconds,
    concurrent_manual_rotations_change_once_each,
);
