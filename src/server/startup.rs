//! Start-up: open the database, check the keyring against its canary
//! before writing anything, migrate, bootstrap the first admin token and the
//! default key set, and load the in-memory views. One process at a time sets
//! a database up; replicas starting together wait for it.

use std::{path::Path, sync::Arc};

use super::{
    App,
    keyring::{CANARY_PLAINTEXT, CANARY_ROW, check_canary, check_keyring},
    sealed::{Probe, open_keyring},
};
use crate::{
    Error, Result,
    config::ServeConfig,
    crypto::{b64url, random, sha256},
    domain::clock::Clock,
    files::{self, create_private_dir},
    service::{Service, master::MasterStatus},
    store::{self, Store},
};

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
    let (keyring, custody) =
        open_keyring(&config, store.as_ref(), canary.is_some(), Probe::Start).await?;
    if let Some((stored_id, sealed)) = &canary {
        check_keyring(store.as_ref(), &keyring, stored_id)
            .await
            .map_err(|e| custody.explain(e))?;
        check_canary(&keyring, stored_id, sealed)?;
    }
    store.migrate().await?;
    // Wraps before the canary: a new sealed key is never without its wrap.
    custody.store_wraps(store.as_ref(), clock.now()).await?;
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
            max_view_age: super::tasks::MAX_VIEW_AGE,
        },
        crate::service::audit::AuditLog::start(Arc::clone(&store), chain_key),
    ));
    custody.record(&service).await?;
    service.announce_master_key().await?;
    // Each set-up step is checked on its own at every start, so a first
    // start that died half-way is finished by the next one.
    bootstrap_admin_token(&config, store.as_ref(), clock.now()).await?;
    if !store.any_keyset_ever().await? {
        // A database that never had a key set: give it a default one to
        // serve. (One whose key sets were all deleted gets none back.)
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

/// Opens a database keyward has set up, with its master-key canary (the
/// sealing key's id and the sealed value).
pub(super) async fn open_existing(
    config: &ServeConfig,
) -> Result<(Box<dyn Store>, (String, Vec<u8>))> {
    let store = store::open(&config.database_url).await?;
    let Some(canary) = store.read_canary().await? else {
        return Err(Error::FailedPrecondition(format!(
            "{} holds no keyward data; check --database-url and --data-dir",
            crate::config::redact_url(&config.database_url)
        )));
    };
    Ok((store, canary))
}

/// What each master key seals, by the configured keyring, read without
/// writing and without requiring the keyring to open everything: what an
/// operator checks before removing a key. `keyward master status`.
pub async fn master_status(config: &ServeConfig) -> Result<MasterStatus> {
    let (store, _) = open_existing(config).await?;
    let (keyring, custody) = open_keyring(config, store.as_ref(), true, Probe::Every).await?;
    crate::service::master::status_of(store.as_ref(), &keyring, &custody.probes).await
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
