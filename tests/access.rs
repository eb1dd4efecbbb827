//! Least privilege through the real gRPC API: every method with every role,
//! in and out of scope, against the README's table; token lifecycle
//! (expiry, revocation); the CLI's token commands.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestDb, TestServer, call_method};
use keyward::transport::grpc::pb;
use tonic::Code;

/// The README's table: which roles (besides admin) may call each method, and
/// which of them only within their scope. Written out here, independently of
/// the server's own table, so that a change to either shows.
const TABLE: &[(&str, &[&str], &[&str])] = &[
    // (method, roles on anything, roles within their scope)
    ("CreateKeySet", &["operator"], &[]),
    ("UpdateKeySet", &["operator"], &[]),
    ("GetKeySet", &["operator", "auditor"], &["signer"]),
    ("ListKeySets", &["operator", "auditor"], &[]),
    ("DeleteKeySet", &["operator"], &[]),
    ("ListKeys", &["operator", "auditor"], &["signer"]),
    ("RotateKeySet", &["operator"], &[]),
    ("RotateDue", &["operator", "rotator"], &[]),
    ("RevokeKey", &["operator"], &[]),
    ("SignJwt", &[], &["signer"]),
    ("GetJwks", &["operator", "auditor"], &["signer"]),
    ("ExportKey", &[], &["exporter"]),
    ("ImportKey", &["operator"], &[]),
    ("PutClient", &["operator"], &[]),
    ("GetClient", &["operator", "auditor"], &["secret-reader"]),
    ("GetClientSecret", &[], &["secret-reader"]),
    ("ListClients", &["operator", "auditor"], &[]),
    ("RotateClientSecret", &["operator"], &[]),
    ("DeleteClient", &["operator"], &[]),
    ("RevokeClientSecret", &["operator"], &[]),
    ("VerifyClientSecret", &[], &["secret-reader"]),
    ("CreateToken", &[], &[]),
    ("GetToken", &["auditor"], &[]),
    ("ListTokens", &["auditor"], &[]),
    ("RevokeToken", &[], &[]),
    ("ListAuditEvents", &["auditor"], &[]),
    ("VerifyAuditChain", &["auditor"], &[]),
    ("Rewrap", &[], &[]),
    ("GetMasterStatus", &["operator", "auditor"], &[]),
    // What a watcher sees is scoped event by event (tests/events.rs).
    (
        "Watch",
        &["operator", "signer", "secret-reader", "exporter", "auditor"],
        &[],
    ),
    ("CreateWebhook", &[], &[]),
    ("ListWebhooks", &["operator", "auditor"], &[]),
    ("DeleteWebhook", &[], &[]),
    ("ListWebhookDeliveries", &["operator", "auditor"], &[]),
];

const ROLES: [&str; 7] = [
    "admin",
    "operator",
    "rotator",
    "signer",
    "secret-reader",
    "exporter",
    "auditor",
];

async fn create_token(server: &TestServer, name: &str, role: &str) -> String {
    let scoped = |wanted: &str| {
        if role == wanted {
            vec!["in-*".to_string()]
        } else {
            Vec::new()
        }
    };
    let keysets = if role == "signer" || role == "exporter" {
        vec!["in-*".to_string()]
    } else {
        Vec::new()
    };
    server
        .access()
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: role.into(),
            keysets,
            clients: scoped("secret-reader"),
            expires_in_seconds: None,
            description: format!("the {role} of the access table test"),
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .clone()
}

async fn every_method_is_allowed_exactly_as_the_table_says(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let mut wrong = Vec::new();
    for role in ROLES {
        let token = create_token(&server, &format!("t-{role}"), role).await;
        assert!(token.starts_with("kw_"), "{token}");
        let mut api = server.as_token(&token);
        for (method, anywhere, scoped) in TABLE {
            for (target, in_scope) in [("in-missing", true), ("out-missing", false)] {
                let allowed = role == "admin"
                    || anywhere.contains(&role)
                    || (in_scope && scoped.contains(&role));
                let got = call_method(&mut api, method, target).await;
                let denied = got == Code::PermissionDenied;
                if allowed == denied || got == Code::Unauthenticated {
                    wrong.push(format!(
                        "{role} {method} {target}: got {got:?}, want {}",
                        if allowed {
                            "allowed"
                        } else {
                            "PERMISSION_DENIED"
                        }
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    server.stop().await;
}

async fn denials_name_the_role_and_scope_needed(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    common::create_keyset(&server, "in-om", "RS256").await;
    let signer = create_token(&server, "om-signer", "signer").await;
    let mut api = server.as_token(&signer);
    let sign = |keyset: &str| pb::SignJwtRequest {
        keyset: keyset.into(),
        claims_json: r#"{"sub":"bot"}"#.into(),
        ..Default::default()
    };
    let signed = api
        .keysets
        .sign_jwt(sign("in-om"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.jwt.split('.').count(), 3);
    let err = api.keysets.sign_jwt(sign("default")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("in-*") && err.message().contains("\"default\""),
        "{}",
        err.message()
    );
    let err = api
        .keysets
        .export_key(pb::ExportKeyRequest {
            keyset: "in-om".into(),
            key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("role signer") && err.message().contains("admin or exporter"),
        "{}",
        err.message()
    );
    server.stop().await;
}

async fn tokens_expire_and_revoke_and_are_shown_once(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    let mut admin = server.access();
    let created = admin
        .create_token(pb::CreateTokenRequest {
            name: "cron".into(),
            role: "rotator".into(),
            expires_in_seconds: Some(3600),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut cron = server.as_token(&created.token);
    let rotate = pb::RotateDueRequest {
        keyset: None,
        dry_run: true,
    };
    cron.keysets.rotate_due(rotate.clone()).await.unwrap();

    // Listing never shows the token; the store holds only its hash.
    let listed = admin
        .list_tokens(pb::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{listed:?}").contains(&created.token));
    let names: Vec<_> = listed.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bootstrap", "cron"]);
    assert_eq!(listed.tokens[1].state, "active");
    let stored: Vec<u8> = db
        .raw()
        .await
        .scalar("SELECT token_hash FROM admin_tokens WHERE id = 'cron'")
        .await;
    assert_eq!(
        stored,
        keyward::crypto::sha256(created.token.as_bytes()).to_vec(),
        "only the token's hash is stored"
    );

    // Expired: unauthenticated.
    clock.advance(3601);
    let err = cron.keysets.rotate_due(rotate.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let shown = admin
        .get_token(pb::GetTokenRequest {
            name: "cron".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.state, "expired");

    // Revoked: unauthenticated at once; revoking twice is refused.
    let fresh = create_token(&server, "cron-2", "rotator").await;
    let mut cron = server.as_token(&fresh);
    cron.keysets.rotate_due(rotate.clone()).await.unwrap();
    let revoked = admin
        .revoke_token(pb::RevokeTokenRequest {
            name: "cron-2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.state, "revoked");
    let err = cron.keysets.rotate_due(rotate).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let again = admin
        .revoke_token(pb::RevokeTokenRequest {
            name: "cron-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // The last working admin token cannot be revoked: nobody could manage
    // tokens again.
    let last = admin
        .revoke_token(pb::RevokeTokenRequest {
            name: "bootstrap".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition);
    assert!(
        last.message().contains("last working admin"),
        "{}",
        last.message()
    );

    // Bad requests are precise.
    for (request, field) in [
        (
            pb::CreateTokenRequest {
                name: "cron".into(),
                role: "rotator".into(),
                ..Default::default()
            },
            Code::AlreadyExists,
        ),
        (
            pb::CreateTokenRequest {
                name: "x".into(),
                role: "root".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTokenRequest {
                name: "x".into(),
                role: "signer".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTokenRequest {
                name: "x".into(),
                role: "operator".into(),
                keysets: vec!["om".into()],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            pb::CreateTokenRequest {
                name: "x".into(),
                role: "signer".into(),
                keysets: vec!["o*m".into()],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ] {
        let err = admin.create_token(request.clone()).await.unwrap_err();
        assert_eq!(err.code(), field, "{request:?}: {}", err.message());
    }
    server.stop().await;
}

async fn failed_authentication_is_throttled_per_address_and_client(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    let mut cl = server.clients();
    for id in ["ingestion", "other"] {
        cl.put_client(pb::PutClientRequest {
            id: id.into(),
            secret: Some(format!("{id}-secret-0123456789")),
            token_keyset: Some("default".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let token_url = format!("{}/oauth2/token", server.http_url);
    let grant = |id: &str, secret: &str| {
        let auth = common::basic(id, secret);
        let url = token_url.clone();
        async move {
            common::http_post(
                &url,
                &[common::FORM, ("authorization", &auth)],
                "grant_type=client_credentials",
            )
            .await
        }
    };

    // Ten wrong secrets for one client are answered as such; the eleventh
    // attempt, even with the right secret, is refused until the window passes.
    for _ in 0..10 {
        assert_eq!(grant("ingestion", "wrong").await.status, 401);
    }
    let refused = grant("ingestion", "ingestion-secret-0123456789").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"], "temporarily_unavailable");
    assert_eq!(refused.header("retry-after"), "60");
    // Another client at the same address is served meanwhile.
    assert_eq!(grant("other", "other-secret-0123456789").await.status, 200);
    clock.advance(61);
    assert_eq!(
        grant("ingestion", "ingestion-secret-0123456789")
            .await
            .status,
        200
    );

    // gRPC: ten calls with bad tokens from one address; after them a valid
    // token from the same address is still served (junk cannot lock an
    // administrator out), while further bad tokens are refused unchecked
    // until the window passes.
    let bad_call = || async {
        let mut bad = server.as_token("kw_not-a-token");
        bad.keysets
            .list_key_sets(pb::ListKeySetsRequest::default())
            .await
            .unwrap_err()
    };
    for _ in 0..10 {
        assert_eq!(bad_call().await.code(), Code::Unauthenticated);
    }
    server
        .keysets()
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let err = bad_call().await;
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(err.message().contains("retry in"), "{}", err.message());
    }
    clock.advance(61);
    assert_eq!(bad_call().await.code(), Code::Unauthenticated);

    // Every refusal is in the audit log, throttled ones too.
    let events = server.audit_log().await;
    let count = |principal: &str, action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e.principal == principal && e.action == action && e.outcome == outcome)
            .count()
    };
    assert_eq!(count("ingestion", "/oauth2/token", "invalid_client"), 10);
    assert_eq!(
        count("ingestion", "/oauth2/token", "temporarily_unavailable"),
        1
    );
    assert_eq!(count("ingestion", "/oauth2/token", "OK"), 1);
    assert_eq!(count("other", "/oauth2/token", "OK"), 1);
    assert_eq!(count("", "ListKeySets", "UNAUTHENTICATED"), 11);
    // Only the first throttled refusal of a window is recorded.
    assert_eq!(count("", "ListKeySets", "RESOURCE_EXHAUSTED"), 1);
    server.stop().await;
}

both_backends!(
    every_method_is_allowed_exactly_as_the_table_says,
    denials_name_the_role_and_scope_needed,
    tokens_expire_and_revoke_and_are_shown_once,
    failed_authentication_is_throttled_per_address_and_client,
);
