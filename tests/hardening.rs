//! Hardening found by attacking and loading keyward on purpose: secret
//! versions that outlived a zero grace, policy changes that broke clients
//! later, files left readable, destroyed keys lingering on disk. Each test
//! failed before its fix.

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Backend, TestDb, TestServer, token_request};
use keyward::{
    config::MasterKeySource,
    crypto::aead::{AeadContext, MasterKey},
    domain::clock::SystemClock,
    transport::{grpc::pb, net::Limits},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tonic::Code;

async fn put_token_client(server: &TestServer, id: &str, secret: &str, ttl: u64) {
    server
        .clients()
        .put_client(pb::PutClientRequest {
            id: id.into(),
            secret: Some(secret.into()),
            token_keyset: Some("default".into()),
            token_ttl_seconds: Some(ttl),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn rotate(server: &TestServer, id: &str, secret: &str, grace: u64) -> i64 {
    server
        .clients()
        .rotate_client_secret(pb::RotateClientSecretRequest {
            id: id.into(),
            grace_seconds: Some(grace),
            secret: Some(secret.into()),
        })
        .await
        .unwrap()
        .into_inner()
        .previous_valid_until
}

/// The version `secret` verifies as, or `None`.
async fn verifies(server: &TestServer, id: &str, secret: &str) -> Option<u32> {
    let r = server
        .clients()
        .verify_client_secret(pb::VerifyClientSecretRequest {
            id: id.into(),
            secret: secret.into(),
        })
        .await
        .unwrap()
        .into_inner();
    r.valid.then_some(r.version)
}

async fn zero_grace_ends_every_older_version(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    put_token_client(&server, "ingestion", "secret-one", 600).await;
    rotate(&server, "ingestion", "secret-two", 3600).await;
    assert_eq!(verifies(&server, "ingestion", "secret-one").await, Some(1));

    // A compromise: rotate with no grace. Version 1 was still in its hour.
    rotate(&server, "ingestion", "secret-three", 0).await;
    for old in ["secret-one", "secret-two"] {
        assert_eq!(verifies(&server, "ingestion", old).await, None, "{old}");
        let r = token_request(&server, "ingestion", old).await;
        assert_eq!(r.status, 401, "{old} still issues tokens: {}", r.body);
    }
    assert_eq!(
        verifies(&server, "ingestion", "secret-three").await,
        Some(3)
    );
    assert_eq!(
        token_request(&server, "ingestion", "secret-three")
            .await
            .status,
        200
    );

    // A later, longer grace never extends an older version.
    let first_end = rotate(&server, "ingestion", "secret-four", 3600).await;
    rotate(&server, "ingestion", "secret-five", 7200).await;
    let v3 = server
        .clients()
        .get_client_secret(pb::GetClientSecretRequest {
            id: "ingestion".into(),
            version: Some(3),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        v3.valid_until <= first_end,
        "{} > {first_end}",
        v3.valid_until
    );
    server.stop().await;
}

async fn revoke_one_secret_version(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    put_token_client(&server, "om", "first", 600).await;
    rotate(&server, "om", "second", 86_400).await;
    rotate(&server, "om", "third", 86_400).await;
    let revoke = |version| {
        let mut clients = server.clients();
        async move {
            clients
                .revoke_client_secret(pb::RevokeClientSecretRequest {
                    id: "om".into(),
                    version,
                })
                .await
        }
    };
    let done = revoke(1).await.unwrap().into_inner();
    assert_eq!((done.version, done.current_version), (1, 3));
    assert_eq!(verifies(&server, "om", "first").await, None);
    assert_eq!(token_request(&server, "om", "first").await.status, 401);
    assert_eq!(
        verifies(&server, "om", "second").await,
        Some(2),
        "other versions are untouched"
    );

    let again = revoke(1).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{}", again.message());
    assert_eq!(revoke(9).await.unwrap_err().code(), Code::NotFound);
    let current = revoke(3).await.unwrap_err();
    assert_eq!(current.code(), Code::FailedPrecondition);
    assert!(
        current.message().contains("--grace 0s"),
        "{}",
        current.message()
    );
    assert_eq!(verifies(&server, "om", "third").await, Some(3));
    let missing = server
        .clients()
        .revoke_client_secret(pb::RevokeClientSecretRequest {
            id: "ghost".into(),
            version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

async fn max_token_ttl_stays_above_client_token_ttls(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    put_token_client(&server, "ingestion", "s3cret-ingestion", 1800).await;
    put_token_client(&server, "short", "s3cret-short", 300).await;
    let lower = |seconds| {
        let mut keysets = server.keysets();
        async move {
            keysets
                .update_key_set(pb::UpdateKeySetRequest {
                    name: "default".into(),
                    policy: Some(pb::RotationPolicy {
                        max_token_ttl_seconds: Some(seconds),
                        ..Default::default()
                    }),
                })
                .await
        }
    };
    let err = lower(600).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("ingestion") && !err.message().contains("short"),
        "names exactly the clients above: {}",
        err.message()
    );
    let set = server
        .keysets()
        .get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.max_token_ttl_seconds, 3600, "nothing changed");
    let r = token_request(&server, "ingestion", "s3cret-ingestion").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["expires_in"], 1800);

    // Down to exactly the longest client token-ttl is fine.
    lower(1800).await.unwrap();
    assert_eq!(
        token_request(&server, "ingestion", "s3cret-ingestion")
            .await
            .status,
        200
    );
    // The other direction: a client above its key set's maximum is refused.
    let err = server
        .clients()
        .put_client(pb::PutClientRequest {
            id: "short".into(),
            token_ttl_seconds: Some(3600),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("max-token-ttl"), "{}", err.message());
    server.stop().await;
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn database_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["keyward.db", "keyward.db-wal", "keyward.db-shm"]
        .iter()
        .map(|f| dir.join(f))
        .filter(|p| p.exists())
        .collect()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_files_are_private_and_loose_ones_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    // A fresh data dir: every database file is created 0600.
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    let files = database_files(db.data_dir());
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    server.stop().await;

    // An existing deployment left readable by others is tightened at start.
    let dir = db.data_dir();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in database_files(dir) {
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = TestServer::start(&db).await;
    assert_eq!(mode(dir), 0o700);
    for f in database_files(dir) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    server.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroyed_key_ciphertext_leaves_the_sqlite_files() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    let set = common::create_keyset(&server, "short-lived", "ES256").await;
    let common::RawDb::Sqlite(raw) = db.raw().await else {
        unreachable!()
    };
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT private_key FROM keys WHERE kid = $1")
        .bind(&set.active_kid)
        .fetch_one(&raw)
        .await
        .unwrap();
    raw.close().await;
    let on_disk = || -> Vec<u8> {
        database_files(db.data_dir())
            .iter()
            .flat_map(|f| std::fs::read(f).unwrap())
            .collect()
    };
    assert!(contains(&on_disk(), &sealed), "the sealed key is stored");

    // The emergency rotation retires the key: its private half is destroyed.
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest {
            name: "short-lived".into(),
        })
        .await
        .unwrap();
    assert!(
        !contains(&on_disk(), &sealed),
        "the retired key's ciphertext lingers in the database or its WAL"
    );
    server.stop().await;
}

/// A server on SQLite with `limits` (connections are no storage matter).
async fn with_limits(limits: Limits) -> (TestDb, TestServer) {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let mut config = db.config();
    config.limits = limits;
    let server = TestServer::start_with(&db, config, Arc::new(SystemClock)).await;
    (db, server)
}

/// Opens a connection and sends `bytes`, then nothing more.
async fn stalled(url: &str, bytes: &[u8]) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp
}

/// Whether the server closes `tcp` within `within` (EOF or reset).
async fn closed_by_server(mut tcp: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    read.await.is_ok()
}

const HALF_REQUEST: &[u8] = b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: keyward\r\nX-Slow: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off() {
    let limits = Limits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(2),
        header_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(1),
    };
    let (_db, server) = with_limits(limits).await;

    // HTTP: the connection cap is held by half-sent requests; the header
    // timeout frees it and the JWKS is served.
    let mut slow = Vec::new();
    for _ in 0..limits.max_connections {
        slow.push(stalled(&server.http_url, HALF_REQUEST).await);
    }
    let jwks = tokio::time::timeout(
        Duration::from_secs(20),
        server.get("/.well-known/jwks.json", &[]),
    )
    .await
    .expect("the JWKS is served once the slow connections time out");
    assert_eq!(jwks.status, 200);
    for tcp in slow {
        assert!(
            closed_by_server(tcp, Duration::from_secs(10)).await,
            "half-sent request left open"
        );
    }

    // gRPC: connections that never speak are closed after the idle timeout,
    // and a real client gets through.
    let mut silent = Vec::new();
    for _ in 0..limits.max_connections {
        silent.push(stalled(&server.grpc_url, b"").await);
    }
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        server.keysets().get_key_set(pb::GetKeySetRequest {
            name: "default".into(),
        }),
    )
    .await
    .expect("a gRPC call gets a connection once the silent ones time out");
    assert_eq!(got.unwrap().into_inner().name, "default");
    for tcp in silent {
        assert!(
            closed_by_server(tcp, Duration::from_secs(10)).await,
            "silent gRPC connection left open"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_stalled_request() {
    // Timeouts far longer than the grace: only the grace can end the wait.
    let limits = Limits {
        max_connections: 64,
        idle_timeout: Duration::from_secs(300),
        header_timeout: Duration::from_secs(300),
        shutdown_grace: Duration::from_secs(1),
    };
    let (_db, server) = with_limits(limits).await;
    let _http = stalled(&server.http_url, HALF_REQUEST).await;
    let _grpc = stalled(&server.grpc_url, b"PRI * HTTP/2.0\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown ends after the grace, not when the stalled client decides");
}

/// `keyward sign --out` makes the new file durable: after the rename into
/// place it opens the directory and fsyncs it (traced with strace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_moved_into_place_are_durable() {
    if std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "strace is missing under CI"
        );
        common::skipped("strace is not installed (Debian package strace)");
        return;
    }
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let server = TestServer::start(&db).await;
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("token.jwt");
    let trace = out_dir.path().join("trace.txt");
    let mut strace = std::process::Command::new("strace");
    strace
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,rename,renameat,renameat2,fsync",
            "-o",
        ])
        .arg(&trace)
        .arg(common::process::BIN)
        .args(["--endpoint", &server.grpc_url, "--token", &server.token])
        .args(["sign", "--keyset", "default", "--claims", "{}", "--out"])
        .arg(&out);
    let run = tokio::task::spawn_blocking(move || strace.output().unwrap())
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("ey"));
    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    let out_name = format!("\"{}\"", out.display());
    let renamed = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains(&out_name))
        .unwrap_or_else(|| panic!("no rename into {out_name}:\n{trace}"));
    let dir_name = format!("\"{}\"", out_dir.path().display());
    let dir_fd = lines[renamed..]
        .iter()
        .find(|l| l.contains("openat(") && l.contains(&dir_name))
        .and_then(|l| l.rsplit("= ").next())
        .unwrap_or_else(|| panic!("the directory is not opened after the rename:\n{trace}"))
        .trim()
        .to_string();
    assert!(
        lines[renamed..]
            .iter()
            .any(|l| l.contains(&format!("fsync({dir_fd})"))),
        "the directory is not fsynced after the rename:\n{trace}"
    );
    server.stop().await;
}

/// The master key a test database's servers use.
fn master_key_of(db: &TestDb) -> MasterKey {
    match &db.master_key {
        MasterKeySource::Inline(text) => MasterKey::from_base64(text.expose()).unwrap(),
        _ => MasterKey::from_base64(
            &std::fs::read_to_string(db.data_dir().join("master.key")).unwrap(),
        )
        .unwrap(),
    }
}

async fn sign(server: &TestServer, keyset: &str) -> Result<String, tonic::Status> {
    server
        .keysets()
        .sign_jwt(pb::SignJwtRequest {
            keyset: keyset.into(),
            claims_json: "{}".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().kid)
}

async fn key_ciphertext_is_bound_to_its_key_set(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    let a = common::create_keyset(&server, "set-a", "ES256").await;
    let b = common::create_keyset(&server, "set-b", "ES256").await;
    let raw = db.raw().await;

    // A key sealed before the binding (kid only) still opens and signs.
    let master = master_key_of(&db);
    let a_id: i64 = raw
        .scalar("SELECT id FROM keysets WHERE name = 'set-a'")
        .await;
    let sealed: Vec<u8> = raw
        .scalar(&format!(
            "SELECT private_key FROM keys WHERE kid = '{}'",
            a.active_kid
        ))
        .await;
    let bound_id = format!("{a_id}/ES256/{}", a.active_kid);
    let bound = AeadContext {
        table: "keys",
        id: &bound_id,
        version: 2,
    };
    let pkcs8 = master
        .open(&bound, &sealed)
        .expect("new keys are bound to their key set");
    let legacy = AeadContext {
        table: "keys",
        id: &a.active_kid,
        version: 1,
    };
    let resealed = master.seal(&legacy, pkcs8.expose());
    let hex: String = resealed.iter().map(|b| format!("{b:02x}")).collect();
    let literal = match backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    };
    raw.exec(&format!(
        "UPDATE keys SET private_key = {literal} WHERE kid = '{}'",
        a.active_kid
    ))
    .await;
    // Raw edits reach the in-memory views at the next start.
    let server = server.restart(&db).await;
    assert_eq!(sign(&server, "set-a").await.unwrap(), a.active_kid);

    // Moved into another key set, a bound key no longer opens: set-b must
    // not sign with set-a's key.
    let a_pending: String = raw
        .scalar(&format!(
            "SELECT kid FROM keys WHERE keyset_id = {a_id} AND state = 'pending'"
        ))
        .await;
    raw.exec(&format!(
        "UPDATE keys SET state = 'retired', private_key = NULL, master_key_id = NULL \
         WHERE kid = '{}'",
        b.active_kid
    ))
    .await;
    raw.exec(&format!(
        "UPDATE keys SET keyset_id = (SELECT id FROM keysets WHERE name = 'set-b') \
         WHERE kid = '{a_pending}'"
    ))
    .await;
    raw.exec(&format!(
        "UPDATE keys SET state = 'active' WHERE kid = '{a_pending}'"
    ))
    .await;
    let server = server.restart(&db).await;
    let err = sign(&server, "set-b").await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    assert_eq!(err.message(), "stored data could not be decrypted");
    server.stop().await;
}

async fn list_keyset_names(server: &TestServer, page_size: u32) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .keysets()
            .list_key_sets(pb::ListKeySetsRequest {
                page_size,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.key_sets.into_iter().map(|k| k.name).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        page_token = page.next_page_token;
    }
}

/// Creating key sets, listing them and sweeping them cost the same number of
/// database round trips whatever their number: no full JWKS rebuild per
/// write, no query per key set.
async fn costs_do_not_grow_with_the_number_of_key_sets(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let (server, store) = TestServer::start_counting(&db).await;
    store.reset();
    const SETS: usize = 30;
    for i in 0..SETS {
        common::create_keyset(&server, &format!("grow-{i:02}"), "ES256").await;
    }
    let calls = store.all_calls();
    assert_eq!(
        calls.get("list_keysets"),
        None,
        "a key-set write re-read every key set: {calls:?}"
    );
    assert!(
        store.largest_delta() <= 3,
        "a JWKS refresh read {} key sets for one change",
        store.largest_delta()
    );
    for i in [0, SETS / 2, SETS - 1] {
        let r = server
            .get(&format!("/keysets/grow-{i:02}/jwks.json"), &[])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["keys"].as_array().unwrap().len(), 2);
    }

    store.reset();
    let pages = list_keyset_names(&server, 0).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].len(), SETS + 1, "the default key set too");
    let calls = store.all_calls();
    assert_eq!(calls.get("list_keysets"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("published_keys_between"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("list_keys"),
        None,
        "a query per key set: {calls:?}"
    );
    let listed = server
        .keysets()
        .list_key_sets(pb::ListKeySetsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let one = listed
        .key_sets
        .iter()
        .find(|k| k.name == "grow-07")
        .unwrap();
    assert_eq!(one.published_keys, 2);
    assert!(!one.active_kid.is_empty());

    store.reset();
    let events = server
        .keysets()
        .rotate_due(pb::RotateDueRequest {
            keyset: None,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(events.events.is_empty(), "nothing is due");
    // The audit writer and the replica follower run in the background.
    let calls = store.all_calls();
    let sweep: u64 = calls
        .iter()
        .filter(|(method, _)| !matches!(**method, "append_audit" | "generations"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(sweep, 1, "the sweep made {sweep} store calls: {calls:?}");

    // Pages: every key set exactly once, in order, none larger than asked.
    let pages = list_keyset_names(&server, 7).await;
    assert!(pages.iter().all(|p| p.len() <= 7));
    assert_eq!(pages.len(), (SETS + 1).div_ceil(7));
    let all: Vec<String> = pages.concat();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), SETS + 1);
    server.stop().await;
}

/// Polls replica `server`'s JWKS of `keyset` until `done` holds (at most 3 s).
async fn replica_sees(server: &TestServer, keyset: &str, done: impl Fn(u16, &str) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let r = server
            .get(&format!("/keysets/{keyset}/jwks.json"), &[])
            .await;
        if done(r.status, &r.body) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the other replica still answers {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Another replica follows creations, deletions and a name reused after a
/// deletion, reading only what changed.
async fn replicas_follow_deletion_and_name_reuse(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let a = TestServer::start(&db).await;
    let b = TestServer::start(&db).await;
    let first = common::create_keyset(&a, "reused", "ES256").await;
    replica_sees(&b, "reused", |status, body| {
        status == 200 && body.contains(&first.active_kid)
    })
    .await;
    a.keysets()
        .delete_key_set(pb::DeleteKeySetRequest {
            name: "reused".into(),
        })
        .await
        .unwrap();
    replica_sees(&b, "reused", |status, _| status == 404).await;

    // Deleted and created again between two of the other replica's polls.
    let other = common::create_keyset(&a, "other", "ES256").await;
    a.keysets()
        .delete_key_set(pb::DeleteKeySetRequest {
            name: "other".into(),
        })
        .await
        .unwrap();
    let again = common::create_keyset(&a, "other", "EdDSA").await;
    replica_sees(&b, "other", |status, body| {
        status == 200 && body.contains(&again.active_kid) && !body.contains(&other.active_kid)
    })
    .await;
    let served = b.get("/keysets/other/jwks.json", &[]).await.json();
    assert_eq!(served["keys"].as_array().unwrap().len(), 2);
    assert!(
        served["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["alg"] == "EdDSA")
    );
    a.stop().await;
    b.stop().await;
}

async fn clients_are_listed_in_bounded_pages(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    for i in 0..25 {
        server
            .clients()
            .put_client(pb::PutClientRequest {
                id: format!("app-{i:02}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = server
            .clients()
            .list_clients(pb::ListClientsRequest {
                page_size: 10,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        sizes.push(page.clients.len());
        ids.extend(page.clients.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(sizes, [10, 10, 5]);
    let expected: Vec<String> = (0..25).map(|i| format!("app-{i:02}")).collect();
    assert_eq!(ids, expected);
    let all = server
        .clients()
        .list_clients(pb::ListClientsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.clients.len(), all.next_page_token.as_str()), (25, ""));
    let bad = server
        .clients()
        .list_clients(pb::ListClientsRequest {
            page_size: 10,
            page_token: "not a token!".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());
    server.stop().await;
}

/// Walks a paged listing with `page_size`; returns each page's items.
async fn pages<T, F, Fut>(mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = (Vec<T>, String)>,
{
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (items, next) = fetch(token).await;
        pages.push(items);
        if next.is_empty() {
            return pages;
        }
        token = next;
    }
}

/// ListKeys, ListTokens and ListAuditEvents page like ListClients and
/// ListKeySets: page_size (0: 100, at most 1000), page_token,
/// next_page_token; every item once, in order; a foreign token refused.
async fn keys_tokens_and_audit_events_are_paged(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let server = TestServer::start(&db).await;
    common::create_keyset(&server, "paged", "ES256").await;
    for _ in 0..3 {
        server
            .keysets()
            .rotate_key_set(pb::RotateKeySetRequest {
                name: "paged".into(),
            })
            .await
            .unwrap();
    }
    let ks = server.keysets();
    let key_pages = pages(|page_token| {
        let mut ks = ks.clone();
        async move {
            let page = ks
                .list_keys(pb::ListKeysRequest {
                    keyset: "paged".into(),
                    page_size: 2,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            (page.keys, page.next_page_token)
        }
    })
    .await;
    let sizes: Vec<usize> = key_pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1], "five keys, two per page");
    let kids: Vec<String> = key_pages.concat().into_iter().map(|k| k.kid).collect();
    let all = ks
        .clone()
        .list_keys(pb::ListKeysRequest {
            keyset: "paged".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.next_page_token, "");
    assert_eq!(
        kids,
        all.keys.into_iter().map(|k| k.kid).collect::<Vec<_>>()
    );
    let bad = ks
        .clone()
        .list_keys(pb::ListKeysRequest {
            keyset: "paged".into(),
            page_size: 2,
            page_token: "bm90LWEta2lk".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{}", bad.message());

    for name in ["t-a", "t-b", "t-c"] {
        server
            .access()
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                role: "auditor".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let access = server.access();
    let token_pages = pages(|page_token| {
        let mut access = access.clone();
        async move {
            let page = access
                .list_tokens(pb::ListTokensRequest {
                    page_size: 3,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            (page.tokens, page.next_page_token)
        }
    })
    .await;
    let names: Vec<Vec<String>> = token_pages
        .into_iter()
        .map(|p| p.into_iter().map(|t| t.name).collect())
        .collect();
    assert_eq!(names, [vec!["bootstrap", "t-a", "t-b"], vec!["t-c"]]);

    // 120 clients: no page size gives 100, then the rest.
    for i in 0..120 {
        server
            .clients()
            .put_client(pb::PutClientRequest {
                id: format!("many-{i:03}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let clients = server.clients();
    let client_pages = pages(|page_token| {
        let mut clients = clients.clone();
        async move {
            let page = clients
                .list_clients(pb::ListClientsRequest {
                    page_size: 0,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            (page.clients, page.next_page_token)
        }
    })
    .await;
    assert_eq!(
        client_pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 20]
    );

    // Audit events, newest first, every id once across pages.
    server.service.flush_audit().await;
    let audit = server.audit();
    let event_pages = pages(|page_token| {
        let mut audit = audit.clone();
        async move {
            let page = audit
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_size: 50,
                    page_token,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            (page.events, page.next_page_token)
        }
    })
    .await;
    assert!(event_pages.len() >= 3, "over 128 events in pages of 50");
    assert!(event_pages.iter().all(|p| p.len() <= 50));
    let ids: Vec<i64> = event_pages.concat().into_iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    assert_eq!(*ids.last().unwrap(), 1, "down to the first event");
    let first_page = audit
        .clone()
        .list_audit_events(pb::ListAuditEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.events.len(), 100, "100 by default");
    // The older spelling, limit and before_id, still works.
    let older = audit
        .clone()
        .list_audit_events(pb::ListAuditEventsRequest {
            limit: 5,
            before_id: ids[10],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        older.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids[11..16]
    );
    server.stop().await;
}

both_backends!(
    keys_tokens_and_audit_events_are_paged,
    replicas_follow_deletion_and_name_reuse,
    costs_do_not_grow_with_the_number_of_key_sets,
    clients_are_listed_in_bounded_pages,
    key_ciphertext_is_bound_to_its_key_set,
    zero_grace_ends_every_older_version,
    revoke_one_secret_version,
    max_token_ttl_stays_above_client_token_ttls,
);
