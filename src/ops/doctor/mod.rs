//! `keyward doctor`: checks of a deployment, each `ok`, `warn` or `fail`
//! with what to do about it. This module holds the checks that read the
//! configuration and the database (and judge an OpenMetadata JWKS); the CLI
//! adds the network checks (the server answering, fetching OpenMetadata's
//! JWKS) and prints the report.

use serde::Serialize;

mod keysets;
mod openmetadata;
mod seals;

pub use openmetadata::{OPENMETADATA_DEFAULT_KID, openmetadata_checks};

use crate::{
    config::ServeConfig,
    domain::model::format_duration,
    store::{self, KeyRow, KeySetRow, Store},
};

/// How far the database's clock may be from this machine's before it is a
/// warning, and before it is a failure.
const CLOCK_WARN_SECS: i64 = 5;
const CLOCK_FAIL_SECS: i64 = 60;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but should be fixed.
    Warn,
    /// Broken, or about to be.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, e.g. `database` or `keyset om: retention`.
    pub check: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for `warn` and `fail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A warning and its fix.
    pub fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(Status::Warn, check.into(), detail.into(), fix.into())
    }

    /// A failure and its fix.
    pub fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::with_fix(Status::Fail, check.into(), detail.into(), fix.into())
    }

    fn with_fix(status: Status, check: String, detail: String, fix: String) -> Self {
        Self {
            check,
            status,
            detail,
            fix: Some(fix),
        }
    }
}

/// The checks that need only the configuration and the database, in order;
/// a failure that makes the later ones meaningless stops there. `now` is
/// this machine's clock. Returns the opened store too, for later checks.
pub async fn local_checks(config: &ServeConfig, now: i64) -> (Vec<Check>, Option<Box<dyn Store>>) {
    let mut checks: Vec<Check> = tls_check(config, now).into_iter().collect();
    let url = crate::config::redact_url(&config.database_url);
    // Opening a SQLite URL creates the file: a doctor must not.
    let sqlite_file = if config.is_sqlite() {
        store::SqliteStore::file_of_url(&config.database_url)
            .ok()
            .flatten()
    } else {
        None
    };
    if let Some(path) = sqlite_file.filter(|p| !p.exists()) {
        checks.push(Check::fail(
            "database",
            format!("{} does not exist", path.display()),
            "check --data-dir and --database-url; `keyward serve` creates the database",
        ));
        return (checks, None);
    }
    let store = match store::open(&config.database_url).await {
        Ok(store) => store,
        Err(err) => {
            checks.push(Check::fail(
                "database",
                format!("{url}: {err}"),
                "check --database-url (KEYWARD_DATABASE_URL) and that the database is up",
            ));
            return (checks, None);
        }
    };
    if let Err(err) = store.ping().await {
        checks.push(Check::fail(
            "database",
            format!("{url}: {err}"),
            "check that the database is up and reachable from here",
        ));
        return (checks, None);
    }
    let canary = match store.read_canary().await {
        Ok(Some(canary)) => canary,
        Ok(None) => {
            checks.push(Check::fail(
                "database",
                format!("{url} answers but holds no keyward data"),
                "check --database-url and --data-dir; `keyward serve` sets a new database up",
            ));
            return (checks, None);
        }
        Err(err) => {
            checks.push(Check::fail(
                "database",
                format!("{url}: {err}"),
                "check the database",
            ));
            return (checks, None);
        }
    };
    checks.push(Check::ok(
        "database",
        format!("{url} ({}) answers", store.backend()),
    ));
    checks.push(migrations(store.as_ref()).await);
    checks.extend(seals::seal_checks(config).await);
    checks.push(master_key(config, store.as_ref(), &canary).await);
    let delta = match store.published_since(None).await {
        Ok(delta) => delta,
        Err(err) => {
            checks.push(Check::fail(
                "key sets",
                format!("cannot read them: {err}"),
                "check the database",
            ));
            return (checks, Some(store));
        }
    };
    checks.push(clock(store.as_ref(), now, &delta.keysets, &delta.keys).await);
    for set in &delta.keysets {
        let keys: Vec<&KeyRow> = delta
            .keys
            .iter()
            .filter(|k| k.keyset_id == set.id)
            .collect();
        checks.extend(keysets::keyset_checks(config, set, &keys, now));
    }
    (checks, Some(store))
}

/// Warn this long before the served certificate expires.
const CERT_WARN_SECS: i64 = 14 * 86_400;

/// The TLS certificate's remaining validity, when TLS is configured.
fn tls_check(config: &ServeConfig, now: i64) -> Option<Check> {
    let files = config.tls.as_ref()?;
    let name = "tls certificate";
    let path = files.cert.display();
    Some(match crate::transport::tls::file_not_after(&files.cert) {
        Err(err) => Check::fail(name, err.to_string(), "fix --tls-cert"),
        Ok(not_after) if not_after <= now => Check::fail(
            name,
            format!(
                "{path} expired at {}",
                crate::domain::model::format_time(not_after)
            ),
            "renew it; keyward picks the new pair up within --tls-reload-interval",
        ),
        Ok(not_after) if not_after - now < CERT_WARN_SECS => Check::warn(
            name,
            format!(
                "{path} expires in {} ({})",
                format_duration(u64::try_from(not_after - now).unwrap_or(0)),
                crate::domain::model::format_time(not_after)
            ),
            "renew it now; keyward picks the new pair up within --tls-reload-interval",
        ),
        Ok(not_after) => Check::ok(
            name,
            format!(
                "{path} valid until {}",
                crate::domain::model::format_time(not_after)
            ),
        ),
    })
}

async fn migrations(store: &dyn Store) -> Check {
    match store.migration_state().await {
        Ok(state) if !state.unknown.is_empty() => Check::fail(
            "migrations",
            format!(
                "the database has migrations this keyward does not know ({:?}): a newer keyward set it up",
                state.unknown
            ),
            "run the keyward version that migrated this database (or a newer one)",
        ),
        Ok(state) if !state.pending.is_empty() => Check::warn(
            "migrations",
            format!(
                "{} applied, {} pending ({:?})",
                state.applied,
                state.pending.len(),
                state.pending
            ),
            "`keyward migrate` (or `keyward serve`, which migrates at start) applies them",
        ),
        Ok(state) => Check::ok("migrations", format!("all {} applied", state.applied)),
        Err(err) => Check::fail("migrations", err.to_string(), "check the database"),
    }
}

async fn master_key(config: &ServeConfig, store: &dyn Store, canary: &(String, Vec<u8>)) -> Check {
    let (stored_id, sealed) = canary;
    let opened =
        crate::server::open_keyring(config, store, true, crate::server::Probe::Every).await;
    let keyring = match opened {
        Ok((keyring, _)) => keyring,
        Err(err) => {
            return Check::fail(
                "master key",
                err.to_string(),
                "give the key this database was sealed with (--master-key-file or \
                 KEYWARD_MASTER_KEY), or a --seal that wraps it",
            );
        }
    };
    if let Err(err) = crate::server::keyring::check_canary(&keyring, stored_id, sealed) {
        return Check::fail(
            "master key",
            err.to_string(),
            format!("configure the master key with id {stored_id}"),
        );
    }
    if let Err(err) = crate::server::keyring::check_keyring(store, &keyring, stored_id).await {
        return Check::fail(
            "master key",
            err.to_string(),
            "add the missing key with --previous-master-key-file until `keyward master rewrap` has run",
        );
    }
    Check::ok(
        "master key",
        format!(
            "key {} opens the canary and every stored value's key is held",
            keyring.id()
        ),
    )
}

/// The clock: not behind what the database already holds, and (PostgreSQL)
/// close to the database server's.
async fn clock(store: &dyn Store, now: i64, sets: &[KeySetRow], keys: &[KeyRow]) -> Check {
    let newest = sets
        .iter()
        .map(|s| s.created_at)
        .chain(keys.iter().map(|k| k.created_at))
        .max();
    if let Some(newest) = newest.filter(|n| *n > now + CLOCK_FAIL_SECS) {
        return Check::fail(
            "clock",
            format!(
                "this machine's clock is {} behind data the database holds (created at {})",
                format_duration(u64::try_from(newest - now).unwrap_or(0)),
                crate::domain::model::format_time(newest)
            ),
            "fix the clock (NTP) before serving: rotation and token times follow it",
        );
    }
    match store.database_time().await {
        Ok(db_now) => {
            let skew = (db_now - now).abs();
            let detail = format!("{skew}s from the database server's clock");
            if skew > CLOCK_FAIL_SECS {
                Check::fail("clock", detail, "synchronise both clocks (NTP)")
            } else if skew > CLOCK_WARN_SECS {
                Check::warn("clock", detail, "synchronise both clocks (NTP)")
            } else {
                Check::ok("clock", detail)
            }
        }
        Err(err) => Check::warn(
            "clock",
            format!("cannot read the database's clock: {err}"),
            "check the database",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_check_warns_two_weeks_ahead_and_fails_once_expired() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).expect("cert");
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, cert.pem()).expect("write");
        let mut config = ServeConfig::with_defaults(dir.path());
        assert!(tls_check(&config, 0).is_none(), "no TLS, no check");
        config.tls = Some(crate::transport::tls::TlsFiles {
            require_valid: false,
            cert: cert_file.clone(),
            key: dir.path().join("key.pem"),
            grpc_client_ca: None,
            reload_interval: std::time::Duration::from_secs(10),
        });
        let not_after = crate::transport::tls::file_not_after(&cert_file).expect("parses");
        assert_eq!(not_after, 1_893_456_000, "2030-01-01T00:00:00Z");
        let status = |now| tls_check(&config, now).map(|c| c.status);
        assert_eq!(status(not_after - 90 * 86_400), Some(Status::Ok));
        assert_eq!(status(not_after - 7 * 86_400), Some(Status::Warn));
        assert_eq!(status(not_after + 1), Some(Status::Fail));
        std::fs::write(&cert_file, "not a certificate").expect("write");
        assert_eq!(status(0), Some(Status::Fail));
    }
}
