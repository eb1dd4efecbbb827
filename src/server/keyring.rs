//! The master keyring: the current key (from `KEYWARD_MASTER_KEY`, a file,
//! or for SQLite a generated development key) and the previous ones, checked
//! against the database's canary and against every stored value's key id
//! before anything is written.

use std::path::Path;

use crate::{
    Error, Result,
    config::{MasterKeySource, ServeConfig},
    crypto::aead::{AeadContext, Keyring, MasterKey},
    domain::secret::SecretBytes,
    files::{self, create_private_file},
    store::Store,
};

/// The row the canary is sealed for.
pub(super) const CANARY_ROW: AeadContext<'static> = crate::service::master::meta_row("canary");
/// What the canary holds.
pub(super) const CANARY_PLAINTEXT: &[u8] = b"keyward master key canary";

/// Resolves the keyring: the current master key and any previous ones.
pub fn resolve_keyring(config: &ServeConfig, has_data: bool) -> Result<Keyring> {
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

/// Reads a master key file, refusing one that group or others may read (as
/// ssh refuses a private key file): a key anyone on the machine can copy
/// protects nothing.
pub(super) fn read_key_file(path: &Path) -> Result<MasterKey> {
    if let Some(mode) = files::mode_of(path).filter(|mode| mode & 0o077 != 0) {
        return Err(Error::FailedPrecondition(format!(
            "master key {} is readable by others (mode {mode:o}); make it private with \
             `chmod 600 {}` and start again",
            path.display(),
            path.display()
        )));
    }
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

/// Refuses a keyring that lacks a key some stored value is sealed under,
/// naming each missing key id and what it still seals.
pub async fn check_keyring(store: &dyn Store, keyring: &Keyring, canary_id: &str) -> Result<()> {
    let status = crate::service::master::status_of(store, keyring, &[]).await?;
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
pub fn check_canary(keyring: &Keyring, stored_id: &str, sealed: &[u8]) -> Result<()> {
    if keyring.open(&CANARY_ROW, stored_id, sealed).is_ok() {
        return Ok(());
    }
    Err(Error::FailedPrecondition(format!(
        "wrong master key: this database was sealed with master key id {stored_id}, \
         the configured key has id {}; refusing to start (nothing was written)",
        keyring.id()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("master.key");
        std::fs::write(&path, MasterKey::generate_base64().expose()).expect("write");
        for (mode, refused) in [
            (0o644, true),
            (0o640, true),
            (0o604, true),
            (0o600, false),
            (0o400, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            match read_key_file(&path) {
                Err(err) => {
                    assert!(refused, "{mode:o}: {err}");
                    assert!(err.to_string().contains("chmod 600"), "{err}");
                }
                Ok(_) => assert!(!refused, "{mode:o} was accepted"),
            }
        }
    }
}
