//! TLS and mutual TLS on both listeners, with throwaway CAs made here: the CLI
//! and a hyper/rustls HTTP client over TLS, clients without a certificate or
//! with one from another CA refused, a replaced certificate served to new
//! connections while an open one carries on, a bad replacement refused, and
//! plaintext refused on a non-loopback address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Backend, TestDb, TestServer, process};
use http_body_util::Empty;
use hyper::body::Bytes;
use keyward::{config::ServeConfig, domain::clock::SystemClock, transport::tls::TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SerialNumber,
};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};

/// A throwaway certificate authority.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `127.0.0.1` and `localhost` (server) or named `cn`
    /// (client), with serial `serial`: (certificate PEM, key PEM).
    fn issue(&self, cn: &str, client: bool, serial: u64) -> (String, String) {
        self.issue_with(cn, client, serial, |_| {})
    }

    /// [`Ca::issue`], its parameters changed by `edit` before signing.
    fn issue_with(
        &self,
        cn: &str,
        client: bool,
        serial: u64,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names = if client {
            Vec::new()
        } else {
            vec!["127.0.0.1".to_string(), "localhost".to_string()]
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `contents` to `dir/name` by rename, as cert-manager and certbot
/// replace files; returns the path.
fn put(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

struct Pki {
    ca: Ca,
    dir: PathBuf,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn pki(db: &TestDb) -> Pki {
    let dir = db.data_dir().join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("keyward test CA");
    let ca_file = put(&dir, "ca.pem", &ca.pem());
    let (cert, key) = ca.issue("keyward", false, 1);
    let cert = put(&dir, "server.pem", &cert);
    let key = put(&dir, "server.key", &key);
    Pki {
        ca,
        dir,
        ca_file,
        cert,
        key,
    }
}

fn tls_config(db: &TestDb, pki: &Pki, client_ca: Option<PathBuf>) -> ServeConfig {
    let mut config = db.config();
    config.tls = Some(TlsFiles {
        require_valid: false,
        cert: pki.cert.clone(),
        key: pki.key.clone(),
        grpc_client_ca: client_ca,
        reload_interval: Duration::from_secs(1),
    });
    config
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn https(url: &str) -> String {
    format!("https://127.0.0.1:{}", port(url))
}

/// The admin CLI against `server` over TLS with `args` first.
fn cli(db: &TestDb, server: &TestServer, tls_args: &[&str], args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = tls_args.to_vec();
    all.extend_from_slice(args);
    process::cli(db.data_dir(), &https(&server.grpc_url), &all, None)
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A TLS connection to `addr` trusting `ca_pem`.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(client_config(ca_pem))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn serial_of(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    use x509_cert::der::Decode as _;
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    x509_cert::Certificate::from_der(leaf)
        .unwrap()
        .tbs_certificate
        .serial_number
        .as_bytes()
        .to_vec()
}

fn addr_of(url: &str) -> SocketAddr {
    format!("127.0.0.1:{}", port(url)).parse().unwrap()
}

/// An HTTP/1.1 connection over TLS that stays open between requests.
struct HttpsConn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    serial: Vec<u8>,
}

impl HttpsConn {
    async fn open(url: &str, ca_pem: &str) -> Self {
        let tls = connect(addr_of(url), ca_pem).await;
        let serial = serial_of(&tls);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        Self { sender, serial }
    }

    async fn get(&mut self, path: &str) -> common::HttpResponse {
        let req = hyper::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Empty::new())
            .unwrap();
        // The connection takes the next request once it has finished the last.
        self.sender.ready().await.expect("connection ready");
        let resp = self
            .sender
            .send_request(req)
            .await
            .expect("request on the open connection");
        common::read_response(resp).await
    }
}

async fn the_cli_and_an_http_client_speak_tls(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let pki = pki(&db);
    let server =
        TestServer::start_with(&db, tls_config(&db, &pki, None), Arc::new(SystemClock)).await;
    let ca = pki.ca_file.to_str().unwrap();

    let out = cli(
        &db,
        &server,
        &["--ca-cert", ca],
        &["keyset", "get", "default", "--output", "json"],
    );
    assert_eq!(process::json_out(&out)["name"], "default");
    // Without our CA the server's certificate is not trusted.
    let out = cli(&db, &server, &[], &["keyset", "list"]);
    assert!(!out.status.success());
    // A plaintext client gets nothing from the TLS port.
    let plain = process::cli(db.data_dir(), &server.grpc_url, &["keyset", "list"], None);
    assert!(!plain.status.success());

    let mut http = HttpsConn::open(&server.http_url, &pki.ca.pem()).await;
    let jwks = http.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert!(!jwks.json()["keys"].as_array().unwrap().is_empty());
    // The served certificate's remaining validity is a metric.
    let metrics = http.get("/metrics").await;
    let left: i64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("keyward_tls_certificate_expiry_seconds "))
        .expect("the certificate expiry gauge")
        .parse()
        .unwrap();
    let expected = keyward::transport::tls::file_not_after(&pki.cert).unwrap()
        - keyward::domain::clock::Clock::now(&SystemClock);
    assert!((left - expected).abs() < 60, "{left} vs {expected}");
    // The issuer keyward publishes is https.
    let discovery = http.get("/.well-known/openid-configuration").await;
    assert!(
        discovery.json()["issuer"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{}",
        discovery.body
    );
    server.stop().await;
}

async fn mutual_tls_refuses_clients_without_the_right_certificate(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let pki = pki(&db);
    let clients_ca = Ca::new("keyward clients CA");
    let clients_ca_file = put(&pki.dir, "clients-ca.pem", &clients_ca.pem());
    let (good_cert, good_key) = clients_ca.issue("om-server", true, 7);
    let (good_cert, good_key) = (
        put(&pki.dir, "good.pem", &good_cert),
        put(&pki.dir, "good.key", &good_key),
    );
    let other_ca = Ca::new("someone else's CA");
    let (bad_cert, bad_key) = other_ca.issue("om-server", true, 8);
    let (bad_cert, bad_key) = (
        put(&pki.dir, "bad.pem", &bad_cert),
        put(&pki.dir, "bad.key", &bad_key),
    );
    let server = TestServer::start_with(
        &db,
        tls_config(&db, &pki, Some(clients_ca_file)),
        Arc::new(SystemClock),
    )
    .await;
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let ca = s(&pki.ca_file);

    let none = cli(&db, &server, &["--ca-cert", &ca], &["keyset", "list"]);
    assert!(
        !none.status.success(),
        "no client certificate must be refused"
    );
    let other = cli(
        &db,
        &server,
        &[
            "--ca-cert",
            &ca,
            "--client-cert",
            &s(&bad_cert),
            "--client-key",
            &s(&bad_key),
        ],
        &["keyset", "list"],
    );
    assert!(
        !other.status.success(),
        "a certificate from another CA must be refused"
    );
    let good = [
        "--ca-cert",
        &ca,
        "--client-cert",
        &s(&good_cert),
        "--client-key",
        &s(&good_key),
    ];
    let out = cli(
        &db,
        &server,
        &good,
        &["keyset", "get", "default", "--output", "json"],
    );
    assert_eq!(process::json_out(&out)["name"], "default");
    // The bearer token is still required under mutual TLS.
    let out = process::cli(
        db.data_dir(),
        &https(&server.grpc_url),
        &[&good[..], &["--token", "kw_not-a-token", "keyset", "list"]].concat(),
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));

    // The audit event names the client certificate.
    server.service.flush_audit().await;
    let out = cli(
        &db,
        &server,
        &good,
        &["audit", "list", "--action", "GetKeySet", "--output", "json"],
    );
    let events = process::json_out(&out);
    let peer = events[0]["peer"].as_str().unwrap().to_string();
    assert!(
        peer.starts_with("127.0.0.1 [") && peer.contains("CN=om-server"),
        "{peer}"
    );

    // HTTP (JWKS) asks no client certificate.
    let mut http = HttpsConn::open(&server.http_url, &pki.ca.pem()).await;
    assert_eq!(http.get("/.well-known/jwks.json").await.status, 200);

    // keyward agent dials the same way: the CA, the client certificate, and
    // its own scoped token.
    let out = cli(
        &db,
        &server,
        &good,
        &[
            "--output",
            "json",
            "token",
            "create",
            "tls-agent",
            "--role",
            "signer",
            "--keyset",
            "default",
        ],
    );
    let token = process::json_out(&out)["token"]
        .as_str()
        .unwrap()
        .to_string();
    let token_file = put(&pki.dir, "agent.token", &token);
    let jwt = pki.dir.join("agent.jwt");
    let config = put(
        &pki.dir,
        "agent.toml",
        &format!(
            "[[token]]\npath = \"{}\"\nkeyset = \"default\"\nttl = \"5m\"\n",
            jwt.display()
        ),
    );
    let agent = |tls: &[&str]| {
        std::process::Command::new(process::BIN)
            .args(["agent", "--once", "--config", &s(&config), "--endpoint"])
            .arg(https(&server.grpc_url))
            .args(["--token-file", &s(&token_file)])
            .args(tls)
            .env_remove("KEYWARD_TOKEN")
            .output()
            .unwrap()
    };
    let refused = agent(&["--ca-cert", &ca]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("keyward unreachable"),
        "{refused:?}"
    );
    assert!(!jwt.exists());
    let written = agent(&good);
    assert!(written.status.success(), "{written:?}");
    let text = std::fs::read_to_string(&jwt).unwrap();
    assert_eq!(text.split('.').count(), 3, "a compact JWT");
    assert!(!String::from_utf8_lossy(&written.stderr).contains(&token));
    server.stop().await;
}

async fn a_replaced_certificate_reaches_new_connections_and_open_ones_carry_on(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    let pki = pki(&db);
    let server =
        TestServer::start_with(&db, tls_config(&db, &pki, None), Arc::new(SystemClock)).await;
    let ca_pem = pki.ca.pem();
    let mut open = HttpsConn::open(&server.http_url, &ca_pem).await;
    assert_eq!(open.get("/healthz").await.status, 200);
    let first = open.serial.clone();

    // cert-manager renews: a new pair, a new serial.
    let (cert, key) = pki.ca.issue("keyward", false, 2);
    put(&pki.dir, "server.key", &key);
    put(&pki.dir, "server.pem", &cert);
    let renewed = Instant::now();
    let mut serial = first.clone();
    while serial == first && renewed.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        serial = serial_of(&connect(addr_of(&server.http_url), &ca_pem).await);
    }
    assert_ne!(serial, first, "the new certificate is served within 30 s");
    // gRPC's listener serves it too.
    assert_eq!(
        serial_of(&connect(addr_of(&server.grpc_url), &ca_pem).await),
        serial
    );
    // The connection opened before goes on, on its old certificate.
    assert_eq!(open.get("/.well-known/jwks.json").await.status, 200);
    assert_eq!(open.serial, first);

    // A bad replacement (a key that is not the certificate's) is refused;
    // the pair before it keeps serving.
    let (cert, _) = pki.ca.issue("keyward", false, 3);
    let (_, other_key) = pki.ca.issue("keyward", false, 4);
    put(&pki.dir, "server.key", &other_key);
    put(&pki.dir, "server.pem", &cert);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        serial_of(&connect(addr_of(&server.http_url), &ca_pem).await),
        serial
    );
    let out = cli(
        &db,
        &server,
        &["--ca-cert", pki.ca_file.to_str().unwrap()],
        &["keyset", "list"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

/// A client certificate whose common name holds RFC 4514 syntax (`,`, `=`,
/// `]`) is shown escaped in the audit log, not as another identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_subject_cannot_pass_for_another() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let pki = pki(&db);
    let clients_ca = Ca::new("keyward clients CA");
    let clients_ca_file = put(&pki.dir, "clients-ca.pem", &clients_ca.pem());
    let (cert, key) = clients_ca.issue("om-server],CN=admin [x", true, 9);
    let (cert, key) = (put(&pki.dir, "c.pem", &cert), put(&pki.dir, "c.key", &key));
    let server = TestServer::start_with(
        &db,
        tls_config(&db, &pki, Some(clients_ca_file)),
        Arc::new(SystemClock),
    )
    .await;
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let tls = [
        "--ca-cert".to_string(),
        s(&pki.ca_file),
        "--client-cert".to_string(),
        s(&cert),
        "--client-key".to_string(),
        s(&key),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let out = cli(&db, &server, &tls, &["keyset", "get", "default"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.service.flush_audit().await;
    let out = cli(
        &db,
        &server,
        &tls,
        &["audit", "list", "--action", "GetKeySet", "--output", "json"],
    );
    let events = process::json_out(&out);
    let peer = events[0]["peer"].as_str().unwrap();
    assert_eq!(
        peer.split_once(' ').unwrap().1,
        "[CN=om-server\\5D\\2CCN\\3Dadmin \\5Bx]",
        "{peer}"
    );
    server.stop().await;
}

/// An expired serving certificate: logged as an error at start (served, as
/// before), refused with --tls-require-valid.
#[test]
fn an_expired_certificate_is_logged_and_refused_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("keyward test CA");
    let (cert, key) = ca.issue_with("keyward", false, 3, |params| {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let cert = put(dir.path(), "server.pem", &cert);
    let key = put(dir.path(), "server.key", &key);
    let data = dir.path().join("data");
    let serve = |require: bool| {
        let mut cmd = process::serve_command(&data);
        cmd.arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_remove("KEYWARD_DATABASE_URL");
        if require {
            cmd.arg("--tls-require-valid");
        }
        process::spawn_serve(cmd)
    };
    let served = serve(false).expect("an expired certificate is still served by default");
    assert!(
        served
            .startup_log
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("EXPIRED")),
        "{:?}",
        served.startup_log
    );
    served.terminate();
    let refused = serve(true).unwrap_err();
    assert!(
        refused.contains("expired at 2020-01-01") && refused.contains("--tls-require-valid"),
        "{refused}"
    );
}

/// `keyward serve` on all interfaces: refused without TLS, served with
/// --allow-plaintext or with TLS.
#[test]
fn plaintext_on_a_reachable_address_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let on_all_interfaces = || {
        let mut cmd = std::process::Command::new(process::BIN);
        cmd.args([
            "serve",
            "--grpc-addr",
            "0.0.0.0:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("KEYWARD_MASTER_KEY")
        .env_remove("KEYWARD_DATABASE_URL");
        cmd
    };
    let out = on_all_interfaces().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to serve plaintext gRPC on 0.0.0.0:0")
            && stderr.contains("--allow-plaintext"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("keyward.db").exists(),
        "nothing was written"
    );

    let mut allowed = on_all_interfaces();
    allowed.arg("--allow-plaintext");
    let serve = process::spawn_serve(allowed).expect("serves with --allow-plaintext");
    serve.terminate();
}

both_backends!(
    the_cli_and_an_http_client_speak_tls,
    mutual_tls_refuses_clients_without_the_right_certificate,
    a_replaced_certificate_reaches_new_connections_and_open_ones_carry_on,
);
