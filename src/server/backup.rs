//! `keyward backup`: a consistent copy of the SQLite database while keyward
//! serves, to a new 0600 file, checked before it is put in place.

use std::path::Path;

use super::{keyring::check_canary, startup::open_existing};
use crate::{Error, Result, config::ServeConfig, files};

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
    files::refuse_symlinked_path(out)?;
    let (store, (master_key_id, sealed)) = open_existing(config).await?;
    // A configured key that does not open the database is a mistake worth
    // stopping for; no key at all is fine (a backup job need not hold it).
    let key_checked =
        match super::open_keyring(config, store.as_ref(), true, super::Probe::Read).await {
            Ok((keyring, _)) => {
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
