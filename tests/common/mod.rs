//! Test harness: a fresh database per test (SQLite file, or a new PostgreSQL
//! database when `KEYWARD_TEST_DATABASE_URL` is set), the real server on
//! `127.0.0.1:0`, the generated gRPC clients and a plain HTTP client.

#![allow(dead_code, missing_docs)]

pub mod process;
pub mod seals;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use jsonwebtoken::{DecodingKey, Validation, jwk::Jwk};
use keyward::{
    config::{MasterKeySource, ServeConfig},
    crypto::aead::MasterKey,
    domain::{
        clock::{Clock, ManualClock, SystemClock},
        secret::SecretString,
    },
    server,
    store::{Store, counting::CountingStore},
    transport::grpc::pb::{
        self, access_client::AccessClient, audit_client::AuditClient,
        clients_client::ClientsClient, events_client::EventsClient, key_sets_client::KeySetsClient,
        master_client::MasterClient, webhooks_client::WebhooksClient,
    },
};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Says loudly that a test did not run: written to the terminal itself, past
/// the test harness's output capture, so a green run never hides it.
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let name = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {name}: {why}");
}

/// A fresh, private database plus the data directory its servers share.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub master_key: MasterKeySource,
    pub dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database, or `None` (after saying so) when PostgreSQL is not configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Some(Self {
                backend,
                url: format!("sqlite://{}", dir.path().join("keyward.db").display()),
                master_key: MasterKeySource::Unset,
                dir,
                pg_admin: None,
            }),
            Backend::Postgres => {
                let Ok(base) = std::env::var("KEYWARD_TEST_DATABASE_URL") else {
                    skipped(
                        "on PostgreSQL: KEYWARD_TEST_DATABASE_URL is not set \
                         (.ci/run sets it; e.g. postgres://postgres@127.0.0.1:5432/test)",
                    );
                    return None;
                };
                let name = format!(
                    "keyward_test_{}",
                    hex(&keyward::crypto::random::bytes::<8>())
                );
                pg_exec(&base, &format!("CREATE DATABASE {name}")).await;
                let key = MasterKey::generate_base64();
                Some(Self {
                    backend,
                    url: replace_db_name(&base, &name),
                    master_key: MasterKeySource::Inline(SecretString::new(
                        String::from_utf8(key.expose().to_vec()).expect("base64"),
                    )),
                    dir,
                    pg_admin: Some((base, name)),
                })
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `keyward serve` on this database: its URL and (on PostgreSQL) its
    /// master key in the environment, `data_dir` as the data directory.
    pub fn serve_command(&self, data_dir: &Path) -> std::process::Command {
        let mut cmd = process::serve_command(data_dir);
        cmd.env("KEYWARD_DATABASE_URL", &self.url);
        if let MasterKeySource::Inline(key) = &self.master_key {
            cmd.env("KEYWARD_MASTER_KEY", key.expose());
        }
        cmd
    }

    pub fn config(&self) -> ServeConfig {
        let mut config = ServeConfig::with_defaults(self.dir.path());
        config.database_url = self.url.clone();
        config.master_key = self.master_key.clone();
        config
    }

    /// A raw connection pool on the test database, for tampering.
    pub async fn raw(&self) -> RawDb {
        match self.backend {
            Backend::Sqlite => RawDb::Sqlite(
                sqlx::SqlitePool::connect(&self.url)
                    .await
                    .expect("raw sqlite"),
            ),
            Backend::Postgres => {
                RawDb::Postgres(sqlx::PgPool::connect(&self.url).await.expect("raw pg"))
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = self.pg_admin.take() {
            // Drop runs outside any runtime guarantee: use a private one.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(pg_exec(
                        &base,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ));
                }
            })
            .join();
        }
    }
}

pub enum RawDb {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl RawDb {
    pub async fn exec(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        match self {
            Self::Sqlite(p) => {
                sqlx::query(sql).execute(p).await.expect("raw sqlite exec");
            }
            Self::Postgres(p) => {
                sqlx::query(sql).execute(p).await.expect("raw pg exec");
            }
        }
    }

    /// The one value `sql` selects.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        T: Send + Unpin,
        for<'r> (T,):
            sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        let (value,): (T,) = match self {
            Self::Sqlite(p) => sqlx::query_as(sql)
                .fetch_one(p)
                .await
                .expect("raw sqlite query"),
            Self::Postgres(p) => sqlx::query_as(sql)
                .fetch_one(p)
                .await
                .expect("raw pg query"),
        };
        value
    }

    /// A textual dump of every table, to compare before and after.
    pub async fn dump(&self) -> String {
        let tables = [
            "keyward_meta",
            "keyward_state",
            "admin_tokens",
            "keysets",
            "keys",
            "clients",
            "client_secrets",
            "_sqlx_migrations",
        ];
        let mut out = String::new();
        for t in tables {
            let sql = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}"));
            let n: i64 = match self {
                Self::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("count"),
                Self::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.expect("count"),
            };
            out.push_str(&format!("{t}={n};"));
        }
        let sql = "SELECT kid || ':' || state || ':' || COALESCE(master_key_id, '') FROM keys ORDER BY kid";
        let rows: Vec<String> = match self {
            Self::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.expect("keys"),
            Self::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.expect("keys"),
        };
        out.push_str(&rows.join(","));
        out
    }
}

async fn pg_exec(url: &str, sql: &str) {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("KEYWARD_TEST_DATABASE_URL must point at a reachable PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await
        .expect("admin statement");
    pool.close().await;
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type KeySets = KeySetsClient<InterceptedService<Channel, Bearer>>;
pub type Clients = ClientsClient<InterceptedService<Channel, Bearer>>;
pub type Access = AccessClient<InterceptedService<Channel, Bearer>>;
pub type Audit = AuditClient<InterceptedService<Channel, Bearer>>;
pub type Master = MasterClient<InterceptedService<Channel, Bearer>>;
pub type Events = EventsClient<InterceptedService<Channel, Bearer>>;
pub type Webhooks = WebhooksClient<InterceptedService<Channel, Bearer>>;

/// The gRPC clients, all carrying one token.
pub struct As {
    pub keysets: KeySets,
    pub clients: Clients,
    pub access: Access,
    pub audit: Audit,
    pub master: Master,
    pub events: Events,
    pub webhooks: Webhooks,
}

impl As {
    /// Clients of the gRPC server at `url` (`http://…`) presenting `token`.
    pub fn at(url: &str, token: &str) -> Self {
        let channel = Endpoint::from_shared(url.to_string())
            .expect("endpoint")
            .connect_lazy();
        let bearer = Bearer(Some(format!("Bearer {token}").parse().expect("ascii")));
        Self {
            keysets: KeySetsClient::with_interceptor(channel.clone(), bearer.clone()),
            clients: ClientsClient::with_interceptor(channel.clone(), bearer.clone()),
            access: AccessClient::with_interceptor(channel.clone(), bearer.clone()),
            audit: AuditClient::with_interceptor(channel.clone(), bearer.clone()),
            master: MasterClient::with_interceptor(channel.clone(), bearer.clone()),
            events: EventsClient::with_interceptor(channel.clone(), bearer.clone()),
            webhooks: WebhooksClient::with_interceptor(channel, bearer),
        }
    }
}

/// Every kept audit event (up to 1000), newest first.
pub async fn audit_events(audit: &mut Audit) -> Vec<pb::AuditEvent> {
    audit
        .list_audit_events(pb::ListAuditEventsRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("ListAuditEvents")
        .into_inner()
        .events
}

/// Each client secret reads back as stored.
pub async fn secrets_read_back(
    clients: &mut Clients,
    secrets: &std::collections::BTreeMap<String, String>,
) {
    for (id, secret) in secrets {
        let got = clients
            .get_client_secret(pb::GetClientSecretRequest {
                id: id.clone(),
                version: None,
            })
            .await
            .unwrap_or_else(|e| panic!("GetClientSecret {id}: {e}"))
            .into_inner();
        assert_eq!(&got.secret, secret, "{id}");
    }
}

/// A running in-process server.
pub struct TestServer {
    pub grpc_url: String,
    pub http_url: String,
    pub token: String,
    pub channel: Channel,
    /// The server's service, for what no API offers (retention runs hourly).
    pub service: Arc<keyward::service::Service>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<keyward::Result<()>>>,
}

impl TestServer {
    pub async fn start(db: &TestDb) -> Self {
        Self::start_with(db, db.config(), Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(db: &TestDb, clock: ManualClock) -> Self {
        Self::start_with(db, db.config(), Arc::new(clock)).await
    }

    /// A server whose store calls are counted.
    pub async fn start_counting(db: &TestDb) -> (Self, Arc<CountingStore>) {
        let counting = Arc::new(std::sync::Mutex::new(None));
        let slot = Arc::clone(&counting);
        let server = Self::start_wrapped(db, db.config(), Arc::new(SystemClock), move |inner| {
            let store = Arc::new(CountingStore::new(inner));
            *slot.lock().expect("slot") = Some(Arc::clone(&store));
            store
        })
        .await;
        let store = counting
            .lock()
            .expect("slot")
            .take()
            .expect("store wrapped");
        (server, store)
    }

    pub async fn start_with(db: &TestDb, config: ServeConfig, clock: Arc<dyn Clock>) -> Self {
        Self::start_wrapped(db, config, clock, |store| store).await
    }

    async fn start_wrapped(
        db: &TestDb,
        mut config: ServeConfig,
        clock: Arc<dyn Clock>,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> Self {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        config.grpc_addr = grpc.local_addr().expect("addr");
        config.http_addr = http.local_addr().expect("addr");
        let grpc_url = format!("http://{}", grpc.local_addr().expect("addr"));
        let http_url = format!("http://{}", http.local_addr().expect("addr"));
        let app = server::prepare_with(config, clock, wrap)
            .await
            .expect("server prepares");
        let service = Arc::clone(&app.service);
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(app, grpc, http, async {
            let _ = rx.await;
        }));
        let token = std::fs::read_to_string(db.data_dir().join("admin.token"))
            .expect("admin.token written on first start")
            .trim()
            .to_string();
        let channel = Endpoint::from_shared(grpc_url.clone())
            .expect("endpoint")
            .connect_lazy();
        Self {
            grpc_url,
            http_url,
            token,
            channel,
            service,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn bearer(&self) -> Bearer {
        Bearer(Some(
            format!("Bearer {}", self.token).parse().expect("ascii"),
        ))
    }

    pub fn keysets(&self) -> KeySets {
        KeySetsClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn clients(&self) -> Clients {
        ClientsClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn access(&self) -> Access {
        AccessClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn audit(&self) -> Audit {
        AuditClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    pub fn master(&self) -> Master {
        MasterClient::with_interceptor(self.channel.clone(), self.bearer())
    }

    /// Every kept audit event (up to 1000), newest first, once the server
    /// has written all it holds.
    pub async fn audit_log(&self) -> Vec<pb::AuditEvent> {
        self.service.flush_audit().await;
        audit_events(&mut self.audit()).await
    }

    /// A new API token named `name` with `role`, scoped to the key set and
    /// client patterns given; returns the token itself.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        keysets: &[&str],
        clients: &[&str],
    ) -> String {
        let strings = |v: &[&str]| v.iter().map(ToString::to_string).collect();
        self.access()
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                keysets: strings(keysets),
                clients: strings(clients),
                ..Default::default()
            })
            .await
            .expect("CreateToken")
            .into_inner()
            .token
            .clone()
    }

    /// Clients that present `token` instead of the bootstrap admin token.
    pub fn as_token(&self, token: &str) -> As {
        let bearer = Bearer(Some(format!("Bearer {token}").parse().expect("ascii")));
        As {
            keysets: KeySetsClient::with_interceptor(self.channel.clone(), bearer.clone()),
            clients: ClientsClient::with_interceptor(self.channel.clone(), bearer.clone()),
            access: AccessClient::with_interceptor(self.channel.clone(), bearer.clone()),
            audit: AuditClient::with_interceptor(self.channel.clone(), bearer.clone()),
            master: MasterClient::with_interceptor(self.channel.clone(), bearer.clone()),
            events: EventsClient::with_interceptor(self.channel.clone(), bearer.clone()),
            webhooks: WebhooksClient::with_interceptor(self.channel.clone(), bearer),
        }
    }

    pub fn keysets_with(&self, header: Option<&str>) -> KeySets {
        let b = Bearer(header.map(|h| h.parse().expect("ascii")));
        KeySetsClient::with_interceptor(self.channel.clone(), b)
    }

    /// GET `path` with extra headers: (status, headers, body).
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(&format!("{}{}", self.http_url, path), headers).await
    }

    /// Stops the server and starts another on the same database: how an
    /// edit made behind keyward's back (raw SQL) reaches its in-memory views.
    pub async fn restart(self, db: &TestDb) -> Self {
        self.stop().await;
        Self::start(db).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    try_http_get(url, headers).await.expect("HTTP request")
}

/// GET `url`; `Err` when nobody answers (a server that is down).
pub async fn try_http_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse, String> {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = hyper::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).expect("request"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(read_response(resp).await)
}

/// POST `body` to `url` with `headers`.
pub async fn http_post(url: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let client =
        HttpClient::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let mut req = hyper::Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(
            req.body(http_body_util::Full::new(Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await
        .expect("HTTP request");
    read_response(resp).await
}

pub async fn read_response(resp: hyper::Response<hyper::body::Incoming>) -> HttpResponse {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

/// A clock near real time (so independent JWT libraries accept `exp`).
pub fn manual_clock_now() -> ManualClock {
    ManualClock::new(SystemClock.now())
}

pub fn path_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

pub fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect()
}

/// Verifies `token` against the JWKS `jwks` with jsonwebtoken, as a relying
/// party would: find the kid, build the key from the JWK, check signature and exp.
pub fn verify(token: &str, jwks: &Value) -> Value {
    try_verify(token, jwks, true).unwrap_or_else(|e| panic!("token does not verify: {e}"))
}

/// [`verify`] that says why it failed instead of panicking; without
/// `check_exp` (a test on simulated time checks exp itself) the signature alone.
/// Returns the claims.
pub fn try_verify(token: &str, jwks: &Value, check_exp: bool) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("the token has no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .ok_or("the JWKS has no keys array")?
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not in the JWKS {jwks}"))?;
    let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| e.to_string())?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.leeway = 0;
    if !check_exp {
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
    }
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// Creates a key set with the default policy.
pub async fn create_keyset(server: &TestServer, name: &str, alg: &str) -> pb::KeySet {
    server
        .keysets()
        .create_key_set(pb::CreateKeySetRequest {
            name: name.into(),
            algorithm: alg.into(),
            rsa_bits: 0,
            policy: None,
        })
        .await
        .expect("CreateKeySet")
        .into_inner()
}

/// Rotates key set `name` now; returns the kid that signs afterwards.
pub async fn rotate_keyset(server: &TestServer, name: &str) -> String {
    server
        .keysets()
        .rotate_key_set(pb::RotateKeySetRequest { name: name.into() })
        .await
        .expect("RotateKeySet");
    active_kid(server, name).await
}

/// The kid key set `name` signs with.
pub async fn active_kid(server: &TestServer, name: &str) -> String {
    server
        .keysets()
        .get_key_set(pb::GetKeySetRequest { name: name.into() })
        .await
        .expect("GetKeySet")
        .into_inner()
        .active_kid
}

/// An `Authorization: Basic` value for a client id and secret (RFC 6749 §2.3.1).
pub fn basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// An HTTP header as (name, value).
pub type HttpHeader<'a> = (&'a str, &'a str);

/// The form content type of a token request.
pub const FORM: HttpHeader<'static> = ("content-type", "application/x-www-form-urlencoded");

/// `POST /oauth2/token` with the client-credentials grant and Basic auth.
pub async fn token_request(server: &TestServer, id: &str, secret: &str) -> HttpResponse {
    token_request_at(&server.http_url, id, secret).await
}

/// [`token_request`] to the server whose HTTP listener is `http_url`.
pub async fn token_request_at(http_url: &str, id: &str, secret: &str) -> HttpResponse {
    http_post(
        &format!("{http_url}/oauth2/token"),
        &[FORM, ("authorization", &basic(id, secret))],
        "grant_type=client_credentials",
    )
    .await
}

/// A call's gRPC code.
pub fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    match r {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls `method` on `target` with `api`'s token and returns the gRPC code:
/// `target` names nothing that exists, so an allowed call fails later
/// (NOT_FOUND or INVALID_ARGUMENT) and changes nothing.
pub async fn call_method(api: &mut As, method: &str, target: &str) -> tonic::Code {
    let name = target.to_string();
    let ks = &mut api.keysets;
    let cl = &mut api.clients;
    let ac = &mut api.access;
    let au = &mut api.audit;
    match method {
        "CreateKeySet" => code(
            ks.create_key_set(pb::CreateKeySetRequest {
                name,
                algorithm: "HS256".into(),
                ..Default::default()
            })
            .await,
        ),
        "UpdateKeySet" => code(
            ks.update_key_set(pb::UpdateKeySetRequest {
                name,
                ..Default::default()
            })
            .await,
        ),
        "GetKeySet" => code(ks.get_key_set(pb::GetKeySetRequest { name }).await),
        "ListKeySets" => code(ks.list_key_sets(pb::ListKeySetsRequest::default()).await),
        "DeleteKeySet" => code(ks.delete_key_set(pb::DeleteKeySetRequest { name }).await),
        "ListKeys" => code(
            ks.list_keys(pb::ListKeysRequest {
                keyset: name,
                ..Default::default()
            })
            .await,
        ),
        "RotateKeySet" => code(ks.rotate_key_set(pb::RotateKeySetRequest { name }).await),
        "RotateDue" => code(
            ks.rotate_due(pb::RotateDueRequest {
                keyset: Some(name),
                dry_run: true,
            })
            .await,
        ),
        "RevokeKey" => code(ks.revoke_key(pb::RevokeKeyRequest { kid: name }).await),
        "SignJwt" => code(
            ks.sign_jwt(pb::SignJwtRequest {
                keyset: name,
                claims_json: "{}".into(),
                ..Default::default()
            })
            .await,
        ),
        "GetJwks" => code(ks.get_jwks(pb::GetJwksRequest { keyset: name }).await),
        "ExportKey" => code(
            ks.export_key(pb::ExportKeyRequest {
                keyset: name,
                key: String::new(),
            })
            .await,
        ),
        "ImportKey" => code(
            ks.import_key(pb::ImportKeyRequest {
                keyset: name,
                private_key: b"not a key".to_vec(),
                public_key: None,
                kid: "k".into(),
            })
            .await,
        ),
        "PutClient" => code(
            cl.put_client(pb::PutClientRequest {
                id: name,
                auth_method: Some("bogus".into()),
                ..Default::default()
            })
            .await,
        ),
        "GetClient" => code(cl.get_client(pb::GetClientRequest { id: name }).await),
        "GetClientSecret" => code(
            cl.get_client_secret(pb::GetClientSecretRequest {
                id: name,
                version: None,
            })
            .await,
        ),
        "ListClients" => code(cl.list_clients(pb::ListClientsRequest::default()).await),
        "RotateClientSecret" => code(
            cl.rotate_client_secret(pb::RotateClientSecretRequest {
                id: name,
                ..Default::default()
            })
            .await,
        ),
        "DeleteClient" => code(cl.delete_client(pb::DeleteClientRequest { id: name }).await),
        "RevokeClientSecret" => code(
            cl.revoke_client_secret(pb::RevokeClientSecretRequest {
                id: name,
                ..Default::default()
            })
            .await,
        ),
        "VerifyClientSecret" => code(
            cl.verify_client_secret(pb::VerifyClientSecretRequest {
                id: name,
                secret: "x".into(),
            })
            .await,
        ),
        "CreateToken" => code(
            ac.create_token(pb::CreateTokenRequest {
                name,
                role: "nope".into(),
                ..Default::default()
            })
            .await,
        ),
        "GetToken" => code(ac.get_token(pb::GetTokenRequest { name }).await),
        "ListTokens" => code(ac.list_tokens(pb::ListTokensRequest::default()).await),
        "RevokeToken" => code(ac.revoke_token(pb::RevokeTokenRequest { name }).await),
        "ListAuditEvents" => code(
            au.list_audit_events(pb::ListAuditEventsRequest::default())
                .await,
        ),
        "VerifyAuditChain" => code(au.verify_audit_chain(pb::VerifyAuditChainRequest {}).await),
        // Over the largest batch: an allowed call is refused as invalid.
        "Rewrap" => code(
            api.master
                .rewrap(pb::RewrapRequest {
                    batch_size: 20_000,
                    pause_millis: 0,
                })
                .await,
        ),
        "GetMasterStatus" => code(
            api.master
                .get_master_status(pb::GetMasterStatusRequest {})
                .await,
        ),
        "Watch" => code(api.events.watch(pb::WatchRequest::default()).await),
        // An allowed call is refused as invalid (no URL) or not found.
        "CreateWebhook" => code(
            api.webhooks
                .create_webhook(pb::CreateWebhookRequest {
                    name,
                    ..Default::default()
                })
                .await,
        ),
        "ListWebhooks" => code(api.webhooks.list_webhooks(pb::ListWebhooksRequest {}).await),
        "DeleteWebhook" => code(
            api.webhooks
                .delete_webhook(pb::DeleteWebhookRequest { name })
                .await,
        ),
        "ListWebhookDeliveries" => code(
            api.webhooks
                .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
                    webhook: name,
                    limit: 0,
                })
                .await,
        ),
        other => panic!("no call for {other}"),
    }
}

/// The old key (the one the test database was created with) and a new one,
/// each in a file; and their ids.
pub struct Keys {
    pub old: PathBuf,
    pub new: PathBuf,
    pub old_id: String,
    pub new_id: String,
}

pub fn write_keys(db: &TestDb) -> Keys {
    let old_text = match &db.master_key {
        MasterKeySource::Inline(text) => text.expose().to_string(),
        _ => std::fs::read_to_string(db.data_dir().join("master.key")).expect("master.key"),
    };
    let new_text = String::from_utf8(MasterKey::generate_base64().expose().to_vec()).unwrap();
    let dir = db.data_dir().join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (dir.join("old.key"), dir.join("new.key"));
    // Private, as keyward requires of a master key file.
    for (path, text) in [(&old, &old_text), (&new, &new_text)] {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    Keys {
        old,
        new,
        old_id: MasterKey::from_base64(&old_text).unwrap().id().to_string(),
        new_id: MasterKey::from_base64(&new_text).unwrap().id().to_string(),
    }
}

/// The test database with the new key current and, if given, the old one
/// as previous.
pub fn keyring_config(db: &TestDb, keys: &Keys, with_old: bool) -> ServeConfig {
    let mut config = db.config();
    config.master_key = MasterKeySource::File(keys.new.clone());
    config.previous_master_keys = if with_old {
        vec![keys.old.clone()]
    } else {
        Vec::new()
    };
    config
}
