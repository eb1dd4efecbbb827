//! OpenMetadata with zero glue: exported files parse with openssl, OM's own
//! openssl-made key imports under its kid, OM-profile tokens, OIDC discovery
//! and the client-credentials grant — through the real server and CLI.

#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, process::Command};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::{
    Backend, FORM, HttpHeader, TestDb, TestServer, basic, create_keyset as create, http_post,
    verify,
};
use jsonwebtoken::{EncodingKey, Header};
use keyward::{domain::clock::ManualClock, transport::grpc::pb};
use serde_json::{Value, json};
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        common::skipped("openssl checks: no openssl binary on this machine");
    }
    ok
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn cli(server: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["--endpoint", &server.grpc_url, "--token", &server.token])
        .args(args)
        .output()
        .expect("run keyward")
}

fn b64url_to_hex(s: &str) -> String {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn export_writes_what_openmetadata_reads(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let set = create(&server, "om", "RS256").await;
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("om-keys");
    let dir_s = dir.to_str().unwrap();

    let o = cli(
        &server,
        &["export", "openmetadata", "--keyset", "om", "--out", dir_s],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let env = std::fs::read_to_string(dir.join("openmetadata.env")).unwrap();
    assert!(
        env.contains(&format!("JWT_KEY_ID={}", set.active_kid)),
        "{env}"
    );
    assert!(env.contains("JWT_ISSUER=open-metadata.org"));
    assert!(
        env.contains(&format!(
            "RSA_PRIVATE_KEY_FILE_PATH={dir_s}/private_key.der"
        )),
        "{env}"
    );
    assert!(env.contains(&format!("RSA_PUBLIC_KEY_FILE_PATH={dir_s}/public_key.der")));
    assert!(
        env.contains(&format!(
            "AUTHENTICATION_PUBLIC_KEYS=[http://localhost:8585/api/v1/system/config/jwks,{}/keysets/om/jwks.json]",
            server.http_url
        )),
        "{env}"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        for f in ["private_key.der", "public_key.der", "openmetadata.env"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }

    let jwks = server.get("/keysets/om/jwks.json", &[]).await.json();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == set.active_kid.as_str())
        .unwrap()
        .clone();
    if openssl() {
        let private = dir.join("private_key.der");
        let public = dir.join("public_key.der");
        run(Command::new("openssl")
            .args(["pkey", "-inform", "DER", "-noout", "-in"])
            .arg(&private));
        run(Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-noout", "-in"])
            .arg(&public));
        let modulus = run(Command::new("openssl")
            .args([
                "rsa", "-pubin", "-inform", "DER", "-noout", "-modulus", "-in",
            ])
            .arg(&public));
        let modulus = String::from_utf8(modulus.stdout).unwrap();
        assert_eq!(
            modulus.trim().trim_start_matches("Modulus="),
            b64url_to_hex(jwk["n"].as_str().unwrap()),
            "the public key matches the JWKS entry"
        );
        let derived = run(Command::new("openssl")
            .args([
                "pkey", "-inform", "DER", "-pubout", "-outform", "DER", "-in",
            ])
            .arg(&private));
        assert_eq!(
            derived.stdout,
            std::fs::read(&public).unwrap(),
            "the halves match"
        );
    }

    // OpenMetadata signs with the exported key; keyward's JWKS verifies it.
    let pkcs8 = std::fs::read(dir.join("private_key.der")).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(&pkcs8)
    );
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(set.active_kid.clone());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let om_token = jsonwebtoken::encode(
        &header,
        &json!({"sub": "admin", "iss": "open-metadata.org", "exp": exp}),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    verify(&om_token, &jwks);

    // --key pending exports the next key; only RSA key sets export.
    let pending_dir = out.path().join("next");
    let o = cli(
        &server,
        &[
            "--output",
            "json",
            "export",
            "openmetadata",
            "--keyset",
            "om",
            "--key",
            "pending",
            "--out",
            pending_dir.to_str().unwrap(),
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "pending");
    assert_ne!(v["JWT_KEY_ID"], set.active_kid.as_str());
    create(&server, "ec", "ES256").await;
    let err = server
        .keysets()
        .export_key(pb::ExportKeyRequest {
            keyset: "ec".into(),
            key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("RSA"), "{}", err.message());
    let err = cli(
        &server,
        &[
            "export",
            "openmetadata",
            "--keyset",
            "om",
            "--key",
            "retired",
            "--out",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&err.stderr).starts_with("error: INVALID_ARGUMENT"));

    // A symlinked output directory is refused: keys are not written (nor a
    // mode changed) wherever a link points.
    #[cfg(unix)]
    {
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            elsewhere.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let link = elsewhere.path().with_extension("link");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        let refused = cli(
            &server,
            &[
                "export",
                "openmetadata",
                "--keyset",
                "om",
                "--out",
                link.to_str().unwrap(),
            ],
        );
        let _ = std::fs::remove_file(&link);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("symbolic link"), "{stderr}");
        assert_eq!(
            std::fs::read_dir(elsewhere.path()).unwrap().count(),
            0,
            "nothing written through the link"
        );
        assert_eq!(
            mode(elsewhere.path()),
            0o755,
            "the link's target was not chmod-ed"
        );
    }
    server.stop().await;
}

async fn import_an_openssl_key_keeping_its_kid(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    if !openssl() {
        return;
    }
    let server = TestServer::start(&db).await;
    let set = create(&server, "om", "RS256").await;
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(tmp.path()).args(args));
    // Exactly OpenMetadata's documented recipe.
    ossl(&["genrsa", "-out", "key.pem", "2048"]);
    ossl(&[
        "pkcs8",
        "-topk8",
        "-inform",
        "PEM",
        "-outform",
        "DER",
        "-in",
        "key.pem",
        "-out",
        "private_key.der",
        "-nocrypt",
    ]);
    ossl(&[
        "rsa",
        "-in",
        "key.pem",
        "-pubout",
        "-outform",
        "DER",
        "-out",
        "public_key.der",
    ]);

    let kid = "Gb389a-9f76-gdjs-a92j-0242bk94356";
    let o = cli(
        &server,
        &[
            "import",
            "openmetadata",
            "--keyset",
            "om",
            "--private-key",
            p("private_key.der").to_str().unwrap(),
            "--public-key",
            p("public_key.der").to_str().unwrap(),
            "--kid",
            kid,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A token OpenMetadata signed before the switch verifies through keyward.
    let pem = std::fs::read(p("key.pem")).unwrap();
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.into());
    let om_token = jsonwebtoken::encode(
        &header,
        &json!({"sub": "ingestion-bot", "isBot": true, "tokenType": "BOT", "exp": 4_102_444_800u64}),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let jwks = server.get("/keysets/om/jwks.json", &[]).await.json();
    assert_eq!(verify(&om_token, &jwks)["sub"], "ingestion-bot");
    assert!(
        jwks.to_string().contains(&set.active_kid),
        "the replaced key stays published (retired)"
    );

    // keyward signs with it now, under the same kid.
    let signed = server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: "om".into(),
            claims_json: r#"{"sub":"x"}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.kid, kid);
    assert_eq!(
        jsonwebtoken::decode_header(&signed.jwt)
            .unwrap()
            .kid
            .as_deref(),
        Some(kid)
    );
    verify(&signed.jwt, &jwks);

    // A long imported kid (up to 256 characters) can be revoked like any other.
    let long_kid = format!("om-{}", "k".repeat(200));
    ossl(&["genrsa", "-out", "long.pem", "2048"]);
    let mut ks = server.keysets();
    ks.import_key(pb::ImportKeyRequest {
        keyset: "om".into(),
        private_key: std::fs::read(p("long.pem")).unwrap(),
        public_key: None,
        kid: long_kid.clone(),
    })
    .await
    .unwrap();
    let revoked = ks
        .revoke_key(pb::RevokeKeyRequest {
            kid: long_kid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        revoked
            .keys
            .iter()
            .any(|k| k.kid == long_kid && k.state == pb::KeyState::Revoked as i32)
    );

    // PKCS#1 PEM is accepted too.
    ossl(&["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"]);
    let import = |private: Vec<u8>, public: Option<Vec<u8>>, kid: &str| pb::ImportKeyRequest {
        keyset: "om".into(),
        private_key: private,
        public_key: public,
        kid: kid.into(),
    };
    ks.import_key(import(
        std::fs::read(p("pkcs1.pem")).unwrap(),
        None,
        "pkcs1-kid",
    ))
    .await
    .unwrap();

    // Refusals, each precise; nothing changes.
    ossl(&["genrsa", "-out", "weak.pem", "1024"]);
    ossl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.pem",
    ]);
    ossl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der",
    ]);
    let der = std::fs::read(p("private_key.der")).unwrap();
    let other_pub = {
        ossl(&[
            "rsa",
            "-in",
            "pkcs1.pem",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "other.der",
        ]);
        std::fs::read(p("other.der")).unwrap()
    };
    let cases = vec![
        (
            import(der.clone(), None, kid),
            Code::AlreadyExists,
            "already used",
        ),
        (
            import(der.clone(), None, &set.active_kid),
            Code::AlreadyExists,
            "already used",
        ),
        (
            import(std::fs::read(p("weak.pem")).unwrap(), None, "weak"),
            Code::InvalidArgument,
            "too weak",
        ),
        (
            import(std::fs::read(p("ec.der")).unwrap(), None, "ec"),
            Code::InvalidArgument,
            "not an RSA",
        ),
        (
            import(der.clone(), Some(other_pub), "mismatch"),
            Code::InvalidArgument,
            "does not match",
        ),
        (
            import(b"garbage".to_vec(), None, "garbage"),
            Code::InvalidArgument,
            "private_key",
        ),
        (import(der.clone(), None, ""), Code::InvalidArgument, "kid"),
        (
            import(der.clone(), None, "has space"),
            Code::InvalidArgument,
            "kid",
        ),
    ];
    let before = ks
        .list_keys(pb::ListKeysRequest {
            keyset: "om".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .len();
    for (req, code, mentions) in cases {
        let what = req.kid.clone();
        let err = ks.import_key(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(mentions),
            "{what}: {}",
            err.message()
        );
    }
    create(&server, "ec-set", "ES256").await;
    let err = ks
        .import_key(pb::ImportKeyRequest {
            keyset: "ec-set".into(),
            private_key: der,
            public_key: None,
            kid: "fresh".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let after = ks
        .list_keys(pb::ListKeysRequest {
            keyset: "om".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .len();
    assert_eq!(before, after, "refused imports change nothing");
    server.stop().await;
}

async fn openmetadata_profile_tokens(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    create(&server, "om", "RS256").await;
    let mut ks = server.keysets();
    let om = |claims: &str, subject: Option<&str>| pb::SignJwtRequest {
        keyset: "om".into(),
        claims_json: claims.into(),
        profile: "openmetadata".into(),
        subject: subject.map(str::to_string),
        email: Some("ingestion-bot@example.com".into()),
        ..Default::default()
    };
    for (claims, named) in [
        (r#"{"isBot":true}"#, "isBot"),
        (r#"{"isBot":false}"#, "isBot"),
        (r#"{"tokenType":"PERSONAL_ACCESS"}"#, "tokenType"),
        (r#"{"sessionId":"abc"}"#, "sessionId"),
        (r#"{"email_verified":false}"#, "email_verified"),
    ] {
        let err = ks.sign_jwt(om(claims, Some("bot"))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{claims}");
        assert!(
            err.message().contains(named) && err.message().contains("OpenMetadata"),
            "{}",
            err.message()
        );
    }
    let err = ks.sign_jwt(om("{}", None)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("subject"));
    let err = ks
        .sign_jwt(om(r#"{"sub":"a"}"#, Some("b")))
        .await
        .unwrap_err();
    assert!(err.message().contains("conflicts"), "{}", err.message());
    let err = ks
        .sign_jwt(pb::SignJwtRequest {
            profile: "unknown".into(),
            ..om("{}", Some("bot"))
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("profile"));

    let ok = ks
        .sign_jwt(om(
            r#"{"roles":["Ingestion"],"email_verified":true}"#,
            Some("ingestion-bot"),
        ))
        .await
        .unwrap()
        .into_inner();
    let jwks = server.get("/keysets/om/jwks.json", &[]).await.json();
    let claims = verify(&ok.jwt, &jwks);
    assert_eq!(claims["sub"], "ingestion-bot");
    assert_eq!(claims["preferred_username"], "ingestion-bot");
    assert_eq!(claims["email"], "ingestion-bot@example.com");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    // `sign --out` writes the token file an ingestion workflow points at.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ingestion.jwt");
    let o = cli(
        &server,
        &[
            "sign",
            "--keyset",
            "om",
            "--profile",
            "openmetadata",
            "--subject",
            "ingestion-bot",
            "--email",
            "ingestion-bot@example.com",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "the token goes to the file only");
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(verify(token.trim_end(), &jwks)["sub"], "ingestion-bot");
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");

    // A subject and an email naming different OM users: OM would log in as
    // the email's, so the profile refuses unless forced.
    let mismatch = |force: bool| {
        let mut args = vec![
            "sign",
            "--keyset",
            "om",
            "--profile",
            "openmetadata",
            "--subject",
            "ingestion-bot",
            "--email",
            "robot@example.com",
        ];
        if force {
            args.push("--force");
        }
        cli(&server, &args)
    };
    let refused = mismatch(false);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: INVALID_ARGUMENT") && err.contains("\"robot\" (from email)"),
        "{err}"
    );
    let forced = mismatch(true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let token = String::from_utf8(forced.stdout).unwrap();
    assert_eq!(verify(token.trim(), &jwks)["email"], "robot@example.com");
    let expiry = String::from_utf8_lossy(&forced.stderr);
    assert!(
        expiry.starts_with("expires ") && expiry.contains("once per run"),
        "the token's expiry is printed: {expiry}"
    );

    // Key sets OM cannot verify are refused, naming what OM accepts.
    for alg in ["PS256", "EdDSA"] {
        let name = format!("om-{}", alg.to_lowercase());
        create(&server, &name, alg).await;
        let err = ks
            .sign_jwt(pb::SignJwtRequest {
                keyset: name.clone(),
                ..om("{}", Some("ingestion-bot"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{alg}");
        assert!(
            err.message().contains(alg) && err.message().contains("RS256, RS384, RS512, ES256"),
            "{}",
            err.message()
        );
    }
    create(&server, "om-es256", "ES256").await;
    let es = ks
        .sign_jwt(pb::SignJwtRequest {
            keyset: "om-es256".into(),
            ..om("{}", Some("ingestion-bot"))
        })
        .await
        .unwrap()
        .into_inner();
    let es_jwks = server.get("/keysets/om-es256/jwks.json", &[]).await.json();
    assert_eq!(verify(&es.jwt, &es_jwks)["sub"], "ingestion-bot");
    server.stop().await;
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn client_credentials_grant(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let clock: ManualClock = common::manual_clock_now();
    let server = TestServer::start_with_clock(&db, clock.clone()).await;
    let mut cl = server.clients();
    let secret = "s3cret with spaces & symbols:+/";
    cl.put_client(pb::PutClientRequest {
        id: "ingestion".into(),
        secret: Some(secret.into()),
        token_keyset: Some("default".into()),
        token_ttl_seconds: Some(600),
        audience: Some("openmetadata".into()),
        allowed_scopes: Some(pb::StringList {
            values: vec!["read".into(), "write".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    // Discovery names the token endpoint and the JWKS that verifies its tokens.
    let disco = server.get("/.well-known/openid-configuration", &[]).await;
    assert_eq!(disco.header("access-control-allow-origin"), "*");
    let disco = disco.json();
    assert_eq!(disco["issuer"], server.http_url.as_str());
    assert_eq!(
        disco["token_endpoint"],
        format!("{}/oauth2/token", server.http_url)
    );
    assert_eq!(
        disco["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        disco["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(
        disco["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let token_url = disco["token_endpoint"].as_str().unwrap().to_string();
    let jwks_path = disco["jwks_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches(&server.http_url)
        .to_string();
    let jwks = server.get(&jwks_path, &[]).await.json();

    // HTTP Basic.
    let auth = basic("ingestion", secret);
    let r = http_post(
        &token_url,
        &[FORM, ("authorization", &auth)],
        &form(&[("grant_type", "client_credentials"), ("scope", "read")]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "read");
    let claims = verify(body["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["iss"], server.http_url.as_str());
    assert_eq!(claims["sub"], "ingestion");
    assert_eq!(claims["aud"], "openmetadata");
    assert_eq!(claims["scope"], "read");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));

    // Only the registered method authenticates: this client is registered
    // for client_secret_basic, so its secret in a form body is refused, and
    // once it is registered for client_secret_post, Basic is.
    let post = |s: &str| {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "ingestion"),
            ("client_secret", s),
        ])
    };
    let r = http_post(&token_url, &[FORM], &post(secret)).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_client")),
        "form authentication for a client_secret_basic client"
    );
    cl.put_client(pb::PutClientRequest {
        id: "ingestion".into(),
        auth_method: Some("client_secret_post".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = http_post(
        &token_url,
        &[FORM, ("authorization", &basic("ingestion", secret))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_client")),
        "Basic authentication for a client_secret_post client"
    );

    // Form post; no scope means every allowed scope.
    let r = http_post(&token_url, &[FORM], &post(secret)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], "read write");
    assert_eq!(
        r.header("access-control-allow-origin"),
        "",
        "the token endpoint is not opened to web origins"
    );

    // Wrong secret: 401 invalid_client with WWW-Authenticate.
    let r = http_post(&token_url, &[FORM], &post("wrong")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    assert!(r.header("www-authenticate").starts_with("Basic"));
    let r = http_post(
        &token_url,
        &[FORM, ("authorization", &basic("nobody", secret))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (401, json!("invalid_client"))
    );

    // The previous secret works during its grace period, and not after.
    let rotated = cl
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: "ingestion".into(),
            grace_seconds: Some(3600),
            secret: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        http_post(&token_url, &[FORM], &post(secret)).await.status,
        200
    );
    assert_eq!(
        http_post(&token_url, &[FORM], &post(&rotated.generated_secret))
            .await
            .status,
        200
    );
    clock.advance(3601);
    assert_eq!(
        http_post(&token_url, &[FORM], &post(secret)).await.status,
        401
    );
    let fresh = http_post(&token_url, &[FORM], &post(&rotated.generated_secret)).await;
    assert_eq!(fresh.status, 200);
    verify(fresh.json()["access_token"].as_str().unwrap(), &jwks);

    // RFC 6749 §5.2, case by case, with Basic authentication again.
    cl.put_client(pb::PutClientRequest {
        id: "ingestion".into(),
        auth_method: Some("client_secret_basic".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let new_auth = basic("ingestion", &rotated.generated_secret);
    let with_auth = [FORM, ("authorization", new_auth.as_str())];
    let json_body = [
        ("content-type", "application/json"),
        ("authorization", new_auth.as_str()),
    ];
    let cases: Vec<(&[HttpHeader<'_>], String, u16, &str)> = vec![
        (&with_auth, "scope=read".into(), 400, "invalid_request"),
        (
            &with_auth,
            "grant_type=password&username=a&password=b".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            &with_auth,
            "grant_type=client_credentials&scope=admin".into(),
            400,
            "invalid_scope",
        ),
        (
            &with_auth,
            "grant_type=client_credentials&grant_type=client_credentials".into(),
            400,
            "invalid_request",
        ),
        (
            &with_auth,
            format!(
                "grant_type=client_credentials&client_secret={}",
                rotated.generated_secret
            ),
            400,
            "invalid_request",
        ),
        (
            &[FORM],
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (&json_body, "{}".into(), 400, "invalid_request"),
        (
            &[FORM, ("authorization", "Bearer abc")],
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            &[FORM, ("authorization", "Basic !!!")],
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
    ];
    for (headers, body, status, error) in cases {
        let r = http_post(&token_url, headers, &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], error, "{body}");
        assert!(
            r.json()["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        assert_eq!(r.header("cache-control"), "no-store");
    }
    let big = format!("grant_type=client_credentials&pad={}", "x".repeat(9000));
    let r = http_post(&token_url, &with_auth, &big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_request");

    // A client without a token key set (an IdP secret kept for OpenMetadata)
    // answers exactly as an unknown client: its right secret, a wrong one and
    // an unknown client id are indistinguishable.
    cl.put_client(pb::PutClientRequest {
        id: "sso-only".into(),
        secret: Some("another-secret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut answers = Vec::new();
    for (id, secret) in [
        ("sso-only", "another-secret"),
        ("sso-only", "a-wrong-guess"),
        ("nobody-here", "another-secret"),
    ] {
        let r = http_post(
            &token_url,
            &[FORM, ("authorization", &basic(id, secret))],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(r.status, 401, "{id}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_client", "{id}");
        let challenge = r.header("www-authenticate").to_string();
        answers.push((r.status, r.body, challenge));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "ineligible and unknown clients must answer alike: {answers:?}"
    );

    // Token settings are validated against the key set.
    let err = cl
        .put_client(pb::PutClientRequest {
            id: "ingestion".into(),
            token_ttl_seconds: Some(7200),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max-token-ttl"), "{}", err.message());
    let err = cl
        .put_client(pb::PutClientRequest {
            id: "ingestion".into(),
            token_keyset: Some("ghost".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The key set signing a client's tokens cannot be deleted from under it.
    let err = server
        .keysets()
        .delete_key_set(pb::DeleteKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("ingestion"), "{}", err.message());
    server.stop().await;
}

async fn client_env_for_openmetadata(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let o = Command::new(BIN)
        .args(["--endpoint", &server.grpc_url, "--token", &server.token])
        .args([
            "client",
            "put",
            "openmetadata",
            "--discovery-uri",
            "https://idp.example.com/realms/data/.well-known/openid-configuration",
            "--callback-url",
            "https://om.example.com/callback",
            "--scope",
            "openid",
            "--scope",
            "email",
            "--scope",
            "profile",
            "--auth-method",
            "client_secret_post",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let generated = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let env = cli(&server, &["client", "env", "openmetadata", "openmetadata"]);
    let env = String::from_utf8(env.stdout).unwrap();
    for line in [
        "AUTHENTICATION_PROVIDER=custom-oidc",
        "AUTHENTICATION_CLIENT_TYPE=confidential",
        "AUTHENTICATION_AUTHORITY=https://idp.example.com/realms/data",
        "OIDC_CLIENT_ID=openmetadata",
        &format!("OIDC_CLIENT_SECRET={generated}"),
        "OIDC_DISCOVERY_URI=https://idp.example.com/realms/data/.well-known/openid-configuration",
        "OIDC_CALLBACK=https://om.example.com/callback",
        "OIDC_SCOPE='openid email profile'",
        "OIDC_CLIENT_AUTH_METHOD=client_secret_post",
        "OIDC_SERVER_URL=https://om.example.com",
        "CUSTOM_OIDC_AUTHENTICATION_PROVIDER_NAME=openmetadata",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in\n{env}");
    }
    let named = cli(
        &server,
        &[
            "--output",
            "json",
            "client",
            "env",
            "openmetadata",
            "openmetadata",
            "--server-url",
            "https://catalog.example.com/",
            "--provider-name",
            "Keycloak",
        ],
    );
    let named: Value = serde_json::from_slice(&named.stdout).unwrap();
    assert_eq!(named["OIDC_SERVER_URL"], "https://catalog.example.com");
    assert_eq!(
        named["CUSTOM_OIDC_AUTHENTICATION_PROVIDER_NAME"],
        "Keycloak"
    );

    // --ingestion: the workflow's server config. Current clients read a token
    // file; the sign command that refreshes it uses the client's identity.
    cli(
        &server,
        &[
            "client",
            "put",
            "openmetadata",
            "--token-keyset",
            "default",
            "--token-subject",
            "ingestion-bot",
            "--token-email",
            "ingestion-bot@example.com",
        ],
    );
    let yaml = cli(
        &server,
        &[
            "client",
            "env",
            "openmetadata",
            "openmetadata",
            "--ingestion",
        ],
    );
    assert!(
        yaml.status.success(),
        "{}",
        String::from_utf8_lossy(&yaml.stderr)
    );
    let yaml = String::from_utf8(yaml.stdout).unwrap();
    for line in [
        "workflowConfig:",
        "  openMetadataServerConfig:",
        "    hostPort: \"https://om.example.com/api\"",
        "    authProvider: \"openmetadata\"",
        "    securityConfig:",
        "      jwtToken: \"/etc/openmetadata/ingestion.jwt\"",
        "# keyward sign --keyset default --profile openmetadata --subject ingestion-bot --email ingestion-bot@example.com --ttl 2h --out /etc/openmetadata/ingestion.jwt",
    ] {
        assert!(yaml.lines().any(|l| l == line), "{line} missing in\n{yaml}");
    }
    assert!(
        !yaml.contains(&generated),
        "the jwt-token form carries no secret"
    );
    let legacy = |extra: &[&str]| {
        let mut args = vec![
            "--output",
            "json",
            "client",
            "env",
            "openmetadata",
            "openmetadata",
            "--ingestion=client-credentials",
        ];
        args.extend_from_slice(extra);
        cli(&server, &args)
    };
    let no_endpoint = legacy(&[]);
    assert_eq!(no_endpoint.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_endpoint.stderr).contains("--token-endpoint"));
    let old = legacy(&[
        "--token-endpoint",
        "https://keyward.example.com/oauth2/token",
    ]);
    assert!(
        old.status.success(),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let old: Value = serde_json::from_slice(&old.stdout).unwrap();
    assert_eq!(old["authProvider"], "custom-oidc");
    assert_eq!(old["securityConfig"]["clientId"], "openmetadata");
    assert_eq!(old["securityConfig"]["secretKey"], generated.as_str());
    assert_eq!(
        old["securityConfig"]["tokenEndpoint"],
        "https://keyward.example.com/oauth2/token"
    );
    let json_env = cli(
        &server,
        &[
            "--output",
            "json",
            "client",
            "env",
            "openmetadata",
            "openmetadata",
        ],
    );
    let v: Value = serde_json::from_slice(&json_env.stdout).unwrap();
    assert_eq!(v["OIDC_CLIENT_SECRET"], generated.as_str());
    assert_eq!(v["OIDC_SCOPE"], "openid email profile");
    let missing = cli(&server, &["client", "env", "openmetadata", "ghost"]);
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("error: NOT_FOUND"));
    server.stop().await;
}

/// A client's tokens log in to OpenMetadata as the user OM has: its bot is
/// `ingestion-bot`, not the client id, and OM reads `email` first.
async fn client_tokens_carry_the_openmetadata_identity(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let secret = "ingestion-secret-0123456789";
    let put = cli(
        &server,
        &[
            "--output",
            "json",
            "client",
            "put",
            "ingestion",
            "--token-keyset",
            "default",
            "--token-subject",
            "ingestion-bot",
            "--token-email",
            "ingestion-bot@example.com",
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let shown: Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(shown["token_subject"], "ingestion-bot", "{shown}");
    assert_eq!(shown["token_email"], "ingestion-bot@example.com");
    let mut cl = server.clients();
    cl.rotate_client_secret(pb::RotateClientSecretRequest {
        id: "ingestion".into(),
        grace_seconds: Some(0),
        secret: Some(secret.into()),
    })
    .await
    .unwrap();

    let token_url = format!("{}/oauth2/token", server.http_url);
    let auth = basic("ingestion", secret);
    let grant = "grant_type=client_credentials";
    let r = http_post(&token_url, &[FORM, ("authorization", &auth)], grant).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwks = server.get("/.well-known/jwks.json", &[]).await.json();
    let claims = verify(r.json()["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["sub"], "ingestion-bot");
    assert_eq!(claims["preferred_username"], "ingestion-bot");
    assert_eq!(claims["email"], "ingestion-bot@example.com");
    assert_eq!(claims["client_id"], "ingestion");

    // An email naming another OM user, or no address at all, is refused and
    // changes nothing.
    for (email, why) in [
        ("robot@example.com", "names the OpenMetadata user \"robot\""),
        ("not-an-address", "not an address"),
    ] {
        let err = cl
            .put_client(pb::PutClientRequest {
                id: "ingestion".into(),
                token_email: Some(email.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{email}");
        assert!(err.message().contains(why), "{}", err.message());
    }
    let kept = cl
        .get_client(pb::GetClientRequest {
            id: "ingestion".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.token_email, "ingestion-bot@example.com");

    // Cleared, tokens fall back to the client id and carry no email.
    cl.put_client(pb::PutClientRequest {
        id: "ingestion".into(),
        token_subject: Some(String::new()),
        token_email: Some(String::new()),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = http_post(&token_url, &[FORM, ("authorization", &auth)], grant).await;
    let claims = verify(r.json()["access_token"].as_str().unwrap(), &jwks);
    assert_eq!(claims["sub"], "ingestion");
    assert!(claims.get("email").is_none() && claims.get("preferred_username").is_none());
    server.stop().await;
}

both_backends!(
    export_writes_what_openmetadata_reads,
    import_an_openssl_key_keeping_its_kid,
    openmetadata_profile_tokens,
    client_credentials_grant,
    client_tokens_carry_the_openmetadata_identity,
    client_env_for_openmetadata,
);

/// OpenMetadata's container runs as its own non-root user (`openmetadata`,
/// uid 1000): the export can give it the files, or let its group read them,
/// without opening them to everyone. (No store is involved: SQLite only.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_for_openmetadata_running_as_another_user() {
    use std::os::unix::fs::MetadataExt as _;
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    create(&server, "om", "RS256").await;
    let out = tempfile::tempdir().unwrap();
    let files = ["private_key.der", "public_key.der", "openmetadata.env"];

    // Group-readable, plus the IdP's JWKS kept in AUTHENTICATION_PUBLIC_KEYS.
    let shared = out.path().join("shared");
    let o = cli(
        &server,
        &[
            "export",
            "openmetadata",
            "--keyset",
            "om",
            "--out",
            shared.to_str().unwrap(),
            "--group-readable",
            "--public-key-url",
            "https://idp.example.com/jwks",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&shared), 0o750);
    for f in files {
        assert_eq!(mode(&shared.join(f)), 0o640, "{f}");
    }
    let env = std::fs::read_to_string(shared.join("openmetadata.env")).unwrap();
    assert!(
        env.contains(&format!(
            "AUTHENTICATION_PUBLIC_KEYS=[http://localhost:8585/api/v1/system/config/jwks,{}/keysets/om/jwks.json,https://idp.example.com/jwks]",
            server.http_url
        )),
        "{env}"
    );

    // Owned by OM's uid and gid, still 0600: only root may give files away.
    let owned = out.path().join("owned");
    let o = cli(
        &server,
        &[
            "export",
            "openmetadata",
            "--keyset",
            "om",
            "--out",
            owned.to_str().unwrap(),
            "--owner",
            "4242:4343",
        ],
    );
    let root = std::fs::metadata(out.path()).unwrap().uid() == 0;
    if root {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dir = std::fs::metadata(&owned).unwrap();
        assert_eq!((dir.uid(), dir.gid(), mode(&owned)), (4242, 4343, 0o700));
        for f in files {
            let meta = std::fs::metadata(owned.join(f)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4242, 4343), "{f}");
            assert_eq!(mode(&owned.join(f)), 0o600, "{f}");
        }
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("cannot give") && err.contains("needs root"),
            "{err}"
        );
    }

    // Bad ids and URLs are refused before anything is written.
    for (flag, value) in [
        ("--owner", "openmetadata"),
        ("--public-key-url", "https://a,b"),
    ] {
        let bad = out.path().join("bad");
        let o = cli(
            &server,
            &[
                "export",
                "openmetadata",
                "--keyset",
                "om",
                "--out",
                bad.to_str().unwrap(),
                flag,
                value,
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{flag} {value}");
        assert!(!bad.exists(), "{flag} {value}: nothing written");
    }
    server.stop().await;
}
