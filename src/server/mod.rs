//! Start-up and lifecycle: resolve the master key, check it against the
//! database's canary before writing anything, migrate, bootstrap the first admin
//! token and default key set, then serve gRPC and HTTP until shutdown.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;

use crate::{
    Error, Result,
    config::{MasterKeySource, ServeConfig},
    crypto::{
        aead::{AeadContext, Keyring, MasterKey},
        b64url, random, sha256,
    },
    domain::{clock::Clock, secret::SecretBytes},
    files::{self, create_private_dir, create_private_file},
    service::{Service, master::MasterStatus},
    store::{self, Store},
    transport::{
        grpc,
        http::{self, HttpState},
        net,
    },
};

const CANARY_ROW: AeadContext<'static> = crate::service::master::meta_row("canary");
const CANARY_PLAINTEXT: &[u8] = b"keyward master key canary";

/// How often each process polls the database for changes made elsewhere.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A prepared server: database migrated, master key verified, bootstrap done.
#[derive(Debug)]
pub struct App {
    /// The settings it was prepared with.
    pub config: ServeConfig,
    /// The application layer.
    pub service: Arc<Service>,
    /// The listeners' TLS settings, when configured.
    pub tls: Option<Arc<crate::transport::tls::Tls>>,
}

/// Opens the database and migrates it, without touching keys. `keyward migrate`.
pub async fn migrate_only(config: &ServeConfig) -> Result<()> {
    ensure_data_dir(config)?;
    let store = store::open(&config.database_url).await?;
    let lock = store.lock_startup().await?;
    let migrated = store.migrate().await;
    lock.release().await;
    migrated
}

/// Creates the data directory (0700) if missing. On SQLite, where it holds
/// the database and `master.key`, an existing one that group or others can
/// read is tightened.
fn ensure_data_dir(config: &ServeConfig) -> Result<()> {
    let dir = &config.data_dir;
    if !config.is_sqlite() {
        return if dir.exists() {
            Ok(())
        } else {
            create_private_dir(dir)
        };
    }
    create_private_dir(dir)?;
    if let Some(mode) = files::mode_of(dir).filter(|m| m & 0o077 != 0) {
        match files::restrict(dir, 0o700) {
            Ok(()) => tracing::warn!(
                dir = %dir.display(),
                "the data directory was mode {mode:o}, readable by others; made it 0700"
            ),
            Err(err) => tracing::warn!(
                dir = %dir.display(),
                error = %err,
                "the data directory is mode {mode:o}, readable by others; make it 0700"
            ),
        }
    }
    Ok(())
}

/// Resolves the keyring: the current master key and any previous ones.
pub(crate) fn resolve_keyring(config: &ServeConfig, has_data: bool) -> Result<Keyring> {
    let current = resolve_master_key(config, has_data)?;
    let previous = config
        .previous_master_keys
        .iter()
        .map(|path| read_key_file(path))
        .collect::<Result<Vec<_>>>()?;
    Ok(Keyring::new(current).with_previous(previous))
}

/// Resolves the master key. A missing key is generated only for SQLite and
/// only when the database holds no encrypted data yet.
fn resolve_master_key(config: &ServeConfig, has_data: bool) -> Result<MasterKey> {
    let invalid =
        |what: String, reason: String| Error::FailedPrecondition(format!("{what}: {reason}"));
    match &config.master_key {
        MasterKeySource::Inline(text) => MasterKey::from_base64(text.expose())
            .map_err(|r| invalid("KEYWARD_MASTER_KEY".into(), r)),
        MasterKeySource::File(path) => read_key_file(path),
        MasterKeySource::Unset if !config.is_sqlite() => Err(Error::FailedPrecondition(
            "PostgreSQL needs a configured master key: set KEYWARD_MASTER_KEY (base64 of 32 bytes) \
             or --master-key-file; generate one with `head -c 32 /dev/urandom | base64`"
                .into(),
        )),
        MasterKeySource::Unset => {
            let path = config.data_dir.join("master.key");
            if path.exists() {
                return read_key_file(&path);
            }
            if has_data {
                return Err(Error::FailedPrecondition(format!(
                    "the database holds encrypted data but no master key is configured and {} \
                     does not exist; configure the key it was created with",
                    path.display()
                )));
            }
            let mut contents = MasterKey::generate_base64().expose().to_vec();
            contents.push(b'\n');
            // Exclusive: of several processes starting on one fresh data dir,
            // one creates the file and every other one reads and uses it.
            let created = create_private_file(&path, &contents);
            zeroize::Zeroize::zeroize(&mut contents);
            if created? {
                tracing::warn!(
                    path = %path.display(),
                    "!!! GENERATED A MASTER KEY FOR DEVELOPMENT: it sits next to the database it \
                     protects. For production, keep the key elsewhere (KEYWARD_MASTER_KEY or \
                     --master-key-file) and back it up: without it nothing stored can be read. !!!"
                );
            }
            read_key_file(&path)
        }
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey> {
    let raw = SecretBytes::new(std::fs::read(path).map_err(|e| {
        Error::FailedPrecondition(format!("cannot read master key {}: {e}", path.display()))
    })?);
    let parsed = match std::str::from_utf8(raw.expose()) {
        Ok(text) => MasterKey::from_base64(text),
        Err(_) => MasterKey::from_bytes(&raw),
    };
    parsed.or_else(|e| {
        // A file of exactly 32 raw bytes is accepted too.
        MasterKey::from_bytes(&raw)
            .map_err(|_| Error::FailedPrecondition(format!("master key {}: {e}", path.display())))
    })
}

/// Prepares a server: everything short of binding sockets.
pub async fn prepare(config: ServeConfig, clock: Arc<dyn Clock>) -> Result<App> {
    prepare_with(config, clock, |store| store).await
}

/// [`prepare`] for a database keyward has already set up; refuses (writing
/// nothing) one it has not, so a mistyped URL does not create a database.
pub async fn prepare_existing(config: ServeConfig, clock: Arc<dyn Clock>) -> Result<App> {
    let (store, _) = open_existing(&config).await?;
    let store = Arc::from(store);
    prepare_on(config, clock, store).await
}

/// What each master key seals, by the configured keyring, read without
/// writing and without requiring the keyring to open everything: what an
/// operator checks before removing a key. `keyward master status`.
pub async fn master_status(config: &ServeConfig) -> Result<MasterStatus> {
    let (store, _) = open_existing(config).await?;
    let keyring = resolve_keyring(config, true)?;
    crate::service::master::status_of(store.as_ref(), &keyring).await
}

/// What `keyward backup` wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The new file.
    pub path: std::path::PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The id of the master key that opens what it holds.
    pub master_key_id: String,
    /// Whether the configured master key was checked against it (`false`:
    /// no key is configured here; keep the key with that id with the backup).
    pub key_checked: bool,
}

/// Writes a consistent copy of the SQLite database to `out` while keyward
/// serves: a new 0600 file, never an existing one. On PostgreSQL it refuses
/// and says how to run `pg_dump` instead.
pub async fn backup(config: &ServeConfig, out: &Path) -> Result<Backup> {
    if !config.is_sqlite() {
        return Err(Error::FailedPrecondition(format!(
            "keyward backup copies SQLite databases; on PostgreSQL use pg_dump, which takes a \
             consistent snapshot while keyward serves:\n  pg_dump --format=custom --file {} '{}'\n\
             (the password is not shown: give it in PGPASSWORD or ~/.pgpass), and keep the master \
             key with the backup's restore notes",
            out.display(),
            crate::config::redact_url(&config.database_url)
        )));
    }
    if out.symlink_metadata().is_ok() {
        return Err(Error::AlreadyExists(format!(
            "{} exists; keyward backup never overwrites: choose a new name",
            out.display()
        )));
    }
    let (store, (master_key_id, sealed)) = open_existing(config).await?;
    // A configured key that does not open the database is a mistake worth
    // stopping for; no key at all is fine (a backup job need not hold it).
    let key_checked = match resolve_keyring(config, true) {
        Ok(keyring) => {
            check_canary(&keyring, &master_key_id, &sealed)?;
            true
        }
        Err(_) => false,
    };
    let staged = files::stage_private_file(out, b"")?;
    let copied = store.backup_to(&staged).await;
    let placed = copied.and_then(|()| files::link_into_place(&staged, out));
    let _ = std::fs::remove_file(&staged);
    if !placed? {
        return Err(Error::AlreadyExists(format!(
            "{} appeared while the backup was written; it was left alone",
            out.display()
        )));
    }
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Backup {
        path: out.to_path_buf(),
        bytes,
        master_key_id,
        key_checked,
    })
}

/// Opens a database keyward has set up, with its master-key canary (the
/// sealing key's id and the sealed value).
async fn open_existing(config: &ServeConfig) -> Result<(Box<dyn Store>, (String, Vec<u8>))> {
    let store = store::open(&config.database_url).await?;
    let Some(canary) = store.read_canary().await? else {
        return Err(Error::FailedPrecondition(format!(
            "{} holds no keyward data; check --database-url and --data-dir",
            crate::config::redact_url(&config.database_url)
        )));
    };
    Ok((store, canary))
}

/// [`prepare`], with the opened store passed through `wrap` first (tests
/// count its calls this way).
pub async fn prepare_with(
    config: ServeConfig,
    clock: Arc<dyn Clock>,
    wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
) -> Result<App> {
    ensure_data_dir(&config)?;
    let store = wrap(Arc::from(store::open(&config.database_url).await?));
    prepare_on(config, clock, store).await
}

async fn prepare_on(
    config: ServeConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
) -> Result<App> {
    // A bad certificate or key is refused before anything is written.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(crate::transport::tls::Tls::load(files.clone())?)),
        None => None,
    };
    // One process at a time sets a database up; the others wait, then find
    // it set up (and their key checked against its canary).
    let lock = store.lock_startup().await?;

    // Check the keyring before anything is written, migrations included.
    let canary = store.read_canary().await?;
    let keyring = resolve_keyring(&config, canary.is_some())?;
    if let Some((stored_id, sealed)) = &canary {
        check_keyring(store.as_ref(), &keyring, stored_id).await?;
        check_canary(&keyring, stored_id, sealed)?;
    }
    store.migrate().await?;
    if canary.is_none()
        && !store
            .write_canary(keyring.id(), &keyring.seal(&CANARY_ROW, CANARY_PLAINTEXT))
            .await?
    {
        // Another process created the canary first: its key is the database's.
        let (stored_id, sealed) = store.read_canary().await?.ok_or_else(|| {
            Error::internal("the master-key canary vanished right after it was written")
        })?;
        check_keyring(store.as_ref(), &keyring, &stored_id).await?;
        check_canary(&keyring, &stored_id, &sealed)?;
    }
    let chain_key = crate::service::audit::load_chain_key(store.as_ref(), &keyring).await?;
    let keyring = Arc::new(keyring);

    let service = Arc::new(Service::new(
        Arc::clone(&store),
        keyring,
        Arc::clone(&clock),
        crate::service::Settings {
            jwks_max_age: config.jwks_max_age,
            issuer: config.issuer(),
            default_keyset: config.default_keyset.clone(),
            auth_throttle: config.auth_throttle,
        },
        crate::service::audit::AuditLog::start(Arc::clone(&store), chain_key),
    ));
    if bootstrap_admin_token(&config, store.as_ref(), clock.now()).await? {
        // First start of this database: give it a default key set to serve.
        let policy = crate::domain::rotation::PolicyInput::default();
        match service
            .create_keyset(
                &config.default_keyset,
                crate::domain::algorithm::Algorithm::Rs256,
                None,
                &policy,
            )
            .await
        {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(err) => return Err(err),
        }
    }
    lock.release().await;
    service.load_views().await?;
    let readings = Readings {
        service: Arc::downgrade(&service),
        tls: tls.as_ref().map(Arc::downgrade),
    };
    service
        .metrics()
        .observe(Arc::new(readings), config.rotation_overdue_after);
    Ok(App {
        config,
        service,
        tls,
    })
}

/// What a scrape reads off this process: the service's views, the store's
/// error counts and the served certificate. Held weakly: the metrics belong
/// to the service.
struct Readings {
    service: std::sync::Weak<Service>,
    tls: Option<std::sync::Weak<crate::transport::tls::Tls>>,
}

impl crate::ops::metrics::Readings for Readings {
    fn keysets(&self) -> Option<crate::ops::metrics::KeySetStatus> {
        self.service
            .upgrade()
            .map(|service| service.keyset_status())
    }

    fn database_errors(&self) -> crate::ops::metrics::DatabaseErrors {
        let counts = store::error_counts();
        crate::ops::metrics::DatabaseErrors {
            unavailable: counts.unavailable,
            query: counts.query,
        }
    }

    fn tls_not_after(&self) -> Option<i64> {
        self.tls
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .and_then(|tls| tls.not_after())
    }
}

/// Refuses a keyring that lacks a key some stored value is sealed under,
/// naming each missing key id and what it still seals.
pub(crate) async fn check_keyring(
    store: &dyn Store,
    keyring: &Keyring,
    canary_id: &str,
) -> Result<()> {
    let status = crate::service::master::status_of(store, keyring).await?;
    let missing: Vec<_> = status.keys.iter().filter(|k| !k.held).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = if missing.iter().any(|k| k.master_key_id == canary_id) {
        "wrong master key"
    } else {
        "a master key was removed from the keyring too early"
    };
    let seals: Vec<String> = missing.iter().map(|k| k.seals()).collect();
    let held: Vec<&str> = keyring.ids().collect();
    Err(Error::FailedPrecondition(format!(
        "{what}: {}, and the keyring holds only {}; pass that key with --previous-master-key-file \
         until `keyward master rewrap` has resealed them; refusing to start (nothing was written)",
        seals.join("; "),
        held.join(", ")
    )))
}

/// Refuses a keyring whose key does not open the database's canary.
pub(crate) fn check_canary(keyring: &Keyring, stored_id: &str, sealed: &[u8]) -> Result<()> {
    if keyring.open(&CANARY_ROW, stored_id, sealed).is_ok() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "wrong master key: this database was sealed with master key id {stored_id}, \
         the configured key has id {}; refusing to start (nothing was written)",
        keyring.id()
    )))
}

/// On an empty database, creates the admin token and writes it once to
/// `<data-dir>/admin.token`. Returns whether this process did so.
async fn bootstrap_admin_token(config: &ServeConfig, store: &dyn Store, now: i64) -> Result<bool> {
    if !store.admin_token_hashes().await?.is_empty() {
        return Ok(false);
    }
    let token = format!("kw_{}", b64url(&random::bytes::<32>()));
    let path = config.data_dir.join("admin.token");
    // Write the file before storing the hash: a token stored but never written
    // would lock everyone out.
    create_private_dir(&config.data_dir)?;
    // Unique per process: replicas bootstrapping one data dir must not swap tokens.
    let staged = files::stage_private_file(&path, format!("{token}\n").as_bytes())?;
    let won = store
        .insert_first_admin_token(&sha256(token.as_bytes()), now)
        .await;
    let won = match won {
        Ok(won) => won,
        Err(err) => {
            let _ = std::fs::remove_file(&staged);
            return Err(err);
        }
    };
    if won {
        let published = publish_admin_token(&staged, &path);
        let _ = std::fs::remove_file(&staged);
        published?;
        tracing::warn!(path = %path.display(), "created the first admin token; it is shown nowhere else");
    } else {
        let _ = std::fs::remove_file(&staged);
    }
    Ok(won)
}

/// Links the staged token file into place. Only the process that stored the
/// token's hash gets here, so a file already at `path` belongs to an earlier
/// database: it is moved aside, never overwritten.
fn publish_admin_token(staged: &Path, path: &Path) -> Result<()> {
    if files::link_into_place(staged, path)? {
        return Ok(());
    }
    let aside = path.with_extension(format!("token.old-{}", b64url(&random::bytes::<6>())));
    std::fs::rename(path, &aside).map_err(|e| {
        Error::FailedPrecondition(format!("cannot move {} aside: {e}", path.display()))
    })?;
    tracing::warn!(
        old = %aside.display(),
        "an admin.token from an earlier database was in the data directory; moved it aside"
    );
    if files::link_into_place(staged, path)? {
        Ok(())
    } else {
        Err(Error::FailedPrecondition(format!(
            "{} reappeared while it was being replaced; start again",
            path.display()
        )))
    }
}

/// Runs `tick` now and then every `period` (a late tick is delayed, never
/// doubled) until `shutdown` flips to true.
async fn every<F, Fut>(
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A tick in progress runs to its end; none starts after shutdown.
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = ticker.tick() => tick().await,
        }
    }
}

/// How often each replica prunes audit events past retention.
const AUDIT_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Serves gRPC on `grpc` and HTTP (with `/metrics`) on `http` until
/// `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// and returns.
pub async fn serve(
    app: App,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_on(
        app,
        Listeners {
            grpc,
            http,
            metrics: None,
        },
        shutdown,
    )
    .await
}

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP: JWKS, discovery, the token endpoint, probes.
    pub http: TcpListener,
    /// `/metrics` alone (`--metrics-addr`); `None`: `/metrics` is on `http`.
    pub metrics: Option<TcpListener>,
}

/// [`serve`], on the given listeners.
pub async fn serve_on(
    app: App,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let Listeners {
        grpc,
        http,
        metrics,
    } = listeners;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let watcher = tokio::spawn({
        let service = Arc::clone(&app.service);
        every(WATCH_INTERVAL, stop_rx.clone(), move || {
            let service = Arc::clone(&service);
            async move { service.follow_other_replicas().await }
        })
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<grpc::pb::key_sets_server::KeySetsServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::clients_server::ClientsServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::access_server::AccessServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::audit_server::AuditServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::master_server::MasterServer<grpc::Api>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::internal)?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(Error::internal)?;
    let api = grpc::Api::new(Arc::clone(&app.service));
    let grpc_addr = grpc.local_addr().map_err(Error::internal)?;
    let http_addr = http.local_addr().map_err(Error::internal)?;
    let limits = app.config.limits;
    let (grpc_conns, grpc_accepted) = tokio::sync::mpsc::channel(1);
    let grpc_acceptor = tokio::spawn(net::accept_loop(grpc, limits, grpc_conns, stop_rx.clone()));
    let grpc_incoming = net::secured(
        grpc_accepted,
        app.tls.as_ref().map(|tls| tls.grpc_acceptor()),
        limits.header_timeout,
    );
    let tls_reload = app
        .tls
        .as_ref()
        .map(|tls| tokio::spawn(Arc::clone(tls).watch(stop_rx.clone())));
    let grpc_server = tonic::transport::Server::builder()
        .layer(grpc::observe::ObserveLayer::new(Arc::clone(&app.service)))
        // Finds peers that vanished without closing; the idle timeout closes
        // the ones that stay connected and say nothing.
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(api.key_sets())
        .add_service(api.clients())
        .add_service(api.access())
        .add_service(api.audit())
        .add_service(api.master())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(grpc_incoming)
                .map(Ok::<_, std::convert::Infallible>),
            wait(stop_rx.clone()),
        );

    let state = HttpState {
        service: Arc::clone(&app.service),
    };
    let metrics_addr = match &metrics {
        Some(listener) => Some(listener.local_addr().map_err(Error::internal)?),
        None => None,
    };
    let router = http::router(state.clone(), metrics.is_none());
    let http_server = net::serve_http(
        http,
        router,
        app.tls.as_ref().map(|tls| tls.http_acceptor()),
        limits,
        stop_rx.clone(),
    );
    // Plaintext, for an internal address a scraper reaches.
    let metrics_server = metrics.map(|listener| {
        tokio::spawn(net::serve_http(
            listener,
            http::metrics_router(state),
            None,
            limits,
            stop_rx.clone(),
        ))
    });

    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        metrics = %metrics_addr.map_or_else(|| format!("{http_addr}/metrics"), |a| format!("{a}/metrics")),
        tls = app.tls.is_some(),
        mutual_tls = app.config.tls.as_ref().is_some_and(|t| t.grpc_client_ca.is_some()),
        backend = app.service.backend(),
        "keyward serving"
    );
    // The built-in scheduler: the same sweep `keyward rotate` runs. Safe
    // beside other replicas and cron: each transition is conditional, so only
    // one of them applies it.
    let scheduler = app.config.rotation_interval.map(|period| {
        let service = Arc::clone(&app.service);
        tokio::spawn(every(period, stop_rx.clone(), move || {
            let service = Arc::clone(&service);
            async move {
                if let Err(err) = service.rotate_due(None, false).await {
                    tracing::warn!(error = %err, "scheduled rotation sweep failed; retrying next tick");
                }
            }
        }))
    });
    let retention = {
        let (service, retain) = (Arc::clone(&app.service), app.config.audit_retain);
        tokio::spawn(every(AUDIT_PRUNE_EVERY, stop_rx.clone(), move || {
            let service = Arc::clone(&service);
            async move {
                if let Err(err) = service.prune_audit(retain).await {
                    tracing::warn!(error = %err, "audit retention failed; retrying next hour");
                }
            }
        }))
    };
    let both = async { tokio::join!(grpc_server, http_server) };
    // In-flight requests get the shutdown grace; connections still busy
    // after it (a client that never finishes its request) are dropped.
    let deadline = async {
        wait(stop_rx.clone()).await;
        tokio::time::sleep(limits.shutdown_grace).await;
    };
    let grpc_result = tokio::select! {
        (grpc_result, ()) = both => grpc_result,
        () = deadline => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    grpc_acceptor.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    watcher.abort();
    retention.abort();
    if let Some(reload) = tls_reload {
        reload.abort();
    }
    // A rotation sweep under way finishes (each key set's change is one
    // transaction either way) within the grace.
    if let Some(sweep) = scheduler
        && tokio::time::timeout(limits.shutdown_grace, sweep)
            .await
            .is_err()
    {
        tracing::warn!(
            "a rotation sweep was still running after the shutdown grace; its current transaction rolls back"
        );
    }
    app.service.flush_audit().await;
    grpc_result.map_err(Error::internal)?;
    tracing::info!("keyward stopped");
    Ok(())
}
