//! Master-key custody: which master key seals how many stored values, and
//! the rewrap that seals every one of them again under the current key.
//!
//! A rewrap walks each sealed table in primary-key order, a batch at a time.
//! Each batch is one transaction of conditional UPDATEs that replace a value
//! and its key id together, and only where the row still holds the value as
//! read. So a rewrap killed at any point leaves every row sealed under either
//! its old key or the current one (both in the keyring), never in between; run
//! again, it finds only what is left.

use std::{collections::BTreeMap, str::FromStr as _, time::Duration};

use super::{Service, material::KeyBinding};
use crate::{
    Error, Result,
    crypto::aead::{AeadContext, Keyring},
    domain::{
        algorithm::Algorithm,
        event::{EventKind, NewEvent, Subject},
    },
    store::{Resealed, SealedAt, SealedTable, SealedValue, Store},
};

/// Values resealed per transaction unless told otherwise.
pub const DEFAULT_REWRAP_BATCH: usize = 200;
/// Most values one rewrap batch may hold.
pub const MAX_REWRAP_BATCH: usize = 10_000;
/// Walks over the tables before a rewrap gives up on values that keep being
/// sealed under an old key (a replica still running with it as current).
const REWRAP_PASSES: usize = 3;

/// The row a `keyward_meta` value (the canary, the audit key) is sealed for.
pub const fn meta_row(name: &str) -> AeadContext<'_> {
    AeadContext {
        table: "keyward_meta",
        id: name,
        version: 1,
    }
}

/// What one master key seals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUse {
    /// The key's id.
    pub master_key_id: String,
    /// Whether this process's keyring holds it.
    pub held: bool,
    /// Whether it is the keyring's current key.
    pub current: bool,
    /// Private keys it seals.
    pub keys: i64,
    /// Client secret versions it seals.
    pub client_secrets: i64,
    /// `keyward_meta` values (canary, audit key) it seals.
    pub meta: i64,
}

impl KeyUse {
    /// Every value it seals.
    pub fn total(&self) -> i64 {
        self.keys + self.client_secrets + self.meta
    }

    /// Whether the keyring may drop it: an old key that seals nothing.
    pub fn removable(&self) -> bool {
        !self.current && self.total() == 0
    }

    /// `master key id X seals N stored values (n in keys, …)`, naming only
    /// the tables it seals something in.
    pub fn seals(&self) -> String {
        let tables: Vec<String> = [
            (self.keys, SealedTable::Keys),
            (self.client_secrets, SealedTable::ClientSecrets),
            (self.meta, SealedTable::Meta),
        ]
        .into_iter()
        .filter(|(rows, _)| *rows > 0)
        .map(|(rows, table)| format!("{rows} in {}", table.as_str()))
        .collect();
        format!(
            "master key id {} seals {} stored values ({})",
            self.master_key_id,
            self.total(),
            tables.join(", ")
        )
    }
}

/// One seal: which master keys it wraps, and whether it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealStatus {
    /// The seal's id (kind and location, no secret).
    pub seal: String,
    /// Whether this process is configured with it.
    pub configured: bool,
    /// The master key ids it wraps, per the database.
    pub wraps: Vec<String>,
    /// Whether it was asked (to unwrap or wrap) and how that went: `None`
    /// when it was not needed, `Some(Ok)`, or `Some(Err(its error))`.
    pub answered: Option<Result<(), String>>,
}

/// Every master key the database or the keyring knows, current first, and
/// the seals that wrap them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterStatus {
    /// The current key's id.
    pub current: String,
    /// One entry per key id.
    pub keys: Vec<KeyUse>,
    /// Configured seals first (in their order), then seals that wrap keys
    /// but are not configured here.
    pub seals: Vec<SealStatus>,
}

impl MasterStatus {
    /// Values sealed under a key other than the current one.
    pub fn not_current(&self) -> i64 {
        self.keys
            .iter()
            .filter(|k| !k.current)
            .map(KeyUse::total)
            .sum()
    }
}

/// Where a rewrap stands, after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapProgress {
    /// The table the batch was in.
    pub table: SealedTable,
    /// Values resealed so far, all tables.
    pub resealed: u64,
    /// Values under old keys when the rewrap began (a running service may
    /// add more; they are found too).
    pub total: u64,
}

/// What a rewrap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrapOutcome {
    /// Values resealed under the current key.
    pub resealed: u64,
    /// Values that changed under the rewrap (rotated, erased, resealed by a
    /// racing rewrap) and were left to the writer that won.
    pub skipped: u64,
    /// The keys' use afterwards.
    pub status: MasterStatus,
}

/// How many stored values each master key seals, which of them `keyring`
/// holds, and which seal wraps which (`probes`: the configured seals and how
/// they answered this process).
pub async fn status_of(
    store: &dyn Store,
    keyring: &Keyring,
    probes: &[SealStatus],
) -> Result<MasterStatus> {
    let mut by_id: BTreeMap<String, KeyUse> = BTreeMap::new();
    for id in keyring.ids() {
        by_id.insert(
            id.to_string(),
            KeyUse {
                master_key_id: id.to_string(),
                held: true,
                current: id == keyring.id(),
                ..KeyUse::default()
            },
        );
    }
    for count in store.sealed_counts().await? {
        let entry = by_id
            .entry(count.master_key_id.clone())
            .or_insert_with(|| KeyUse {
                master_key_id: count.master_key_id.clone(),
                ..KeyUse::default()
            });
        match count.table {
            SealedTable::Keys => entry.keys += count.rows,
            SealedTable::ClientSecrets => entry.client_secrets += count.rows,
            SealedTable::Meta => entry.meta += count.rows,
        }
    }
    let mut keys: Vec<KeyUse> = by_id.into_values().collect();
    keys.sort_by_key(|k| (!k.current, !k.held, k.master_key_id.clone()));
    let mut seals: Vec<SealStatus> = probes.to_vec();
    for wrap in store.wrapped_keyring().await?.wraps {
        let at = match seals.iter().position(|s| s.seal == wrap.seal) {
            Some(at) => at,
            None => {
                seals.push(SealStatus {
                    seal: wrap.seal.clone(),
                    ..SealStatus::default()
                });
                seals.len() - 1
            }
        };
        seals[at].wraps.push(wrap.master_key_id);
    }
    Ok(MasterStatus {
        current: keyring.id().to_string(),
        keys,
        seals,
    })
}

impl Service {
    /// The configured seals and how they answered at start.
    pub fn seal_probes(&self) -> &[SealStatus] {
        self.seals.get().map_or(&[], Vec::as_slice)
    }

    /// Records how the configured seals answered at start (once).
    pub fn set_seal_probes(&self, probes: Vec<SealStatus>) {
        let _ = self.seals.set(probes);
    }

    /// How many stored values each master key seals, and which of them this
    /// process holds.
    pub async fn master_status(&self) -> Result<MasterStatus> {
        status_of(self.store.as_ref(), &self.keyring, self.seal_probes()).await
    }

    /// Deletes every wrap by `seal`, a seal this process is not configured
    /// with (removed from `--seal` on every replica). Refused while it is
    /// configured here, and while a master key that is current or still
    /// seals values has no wrap by another seal. Returns how many wraps went.
    pub async fn forget_seal(&self, seal: &str) -> Result<u64> {
        if self.seal_probes().iter().any(|s| s.seal == seal) {
            return Err(Error::FailedPrecondition(format!(
                "seal {seal} is configured here: remove it from --seal (KEYWARD_SEALS) on every \
                 replica first"
            )));
        }
        let wrapped = self.store.wrapped_keyring().await?;
        let status = self.master_status().await?;
        let mut wraps_any = false;
        for wrap in wrapped.wraps.iter().filter(|w| w.seal == seal) {
            wraps_any = true;
            let id = &wrap.master_key_id;
            let needed = status
                .keys
                .iter()
                .any(|k| &k.master_key_id == id && (k.current || k.total() > 0))
                || wrapped.current.as_ref() == Some(id);
            let elsewhere = wrapped
                .wraps
                .iter()
                .any(|w| &w.master_key_id == id && w.seal != seal);
            if needed && !elsewhere {
                return Err(Error::FailedPrecondition(format!(
                    "master key {id} is wrapped only by {seal}: start a replica with another \
                     seal beside it (which wraps it) before forgetting this one"
                )));
            }
        }
        if !wraps_any {
            return Err(Error::NotFound(format!(
                "no master key is wrapped by seal {seal}"
            )));
        }
        let gone = self.store.delete_wraps_by(seal).await?;
        self.raise(&[
            NewEvent::new(EventKind::SealChanged, self.now(), Subject::default()).detail(format!(
                "seal {seal} forgotten ({gone} wrap{} removed)",
                if gone == 1 { "" } else { "s" }
            )),
        ])
        .await?;
        Ok(gone)
    }

    /// Raises `master.changed` for the current master key, once per key
    /// however many replicas start with it: called at every start.
    pub async fn announce_master_key(&self) -> Result<()> {
        let id = self.keyring.id();
        self.raise(&[
            NewEvent::new(EventKind::MasterKeyChanged, self.now(), Subject::default())
                .detail(format!("master key {id} seals new writes"))
                .once(format!("master.current/{id}")),
        ])
        .await?;
        Ok(())
    }

    /// Seals every stored value again under the current master key, `batch`
    /// values per transaction with `pause` between transactions (to spare a
    /// busy database), calling `progress` after each batch. Safe to run while
    /// the service serves, beside other rewraps, and again after being killed.
    pub async fn rewrap(
        &self,
        batch: usize,
        pause: Duration,
        progress: &mut (dyn FnMut(RewrapProgress) + Send),
    ) -> Result<RewrapOutcome> {
        if !(1..=MAX_REWRAP_BATCH).contains(&batch) {
            return Err(Error::invalid(
                "batch",
                format!("must be 1 to {MAX_REWRAP_BATCH}"),
            ));
        }
        let mut status = self.master_status().await?;
        if let Some(missing) = status.keys.iter().find(|k| !k.held) {
            return Err(Error::FailedPrecondition(format!(
                "{}, and is not in this keyring; add it with --previous-master-key-file \
                 to reseal them",
                missing.seals()
            )));
        }
        let total = u64::try_from(status.not_current()).unwrap_or(0);
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let current = self.keyring.id().to_string();
        let (mut resealed, mut skipped) = (0u64, 0u64);
        for _ in 0..REWRAP_PASSES {
            for table in SealedTable::ALL {
                let mut after: Option<SealedAt> = None;
                loop {
                    let page = self
                        .store
                        .sealed_after(table, after.as_ref(), &current, limit)
                        .await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.at.clone());
                    let count = page.len() as u64;
                    let values = page
                        .into_iter()
                        .map(|value| self.reseal_value(value))
                        .collect::<Result<Vec<_>>>()?;
                    let stored = self.store.reseal(&values).await?;
                    resealed += stored;
                    skipped += count.saturating_sub(stored);
                    progress(RewrapProgress {
                        table,
                        resealed,
                        total: total.max(resealed),
                    });
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            status = self.master_status().await?;
            if status.not_current() == 0 {
                break;
            }
        }
        if resealed > 0 && status.not_current() == 0 {
            self.raise(&[NewEvent::new(
                EventKind::MasterKeyChanged,
                self.now(),
                Subject::default(),
            )
            .detail(format!(
                "rewrap done: every value is sealed under master key {current}"
            ))])
            .await?;
        }
        if let Err(err) = self.store.purge_overwritten().await {
            tracing::warn!(error = %err, "could not purge overwritten ciphertext");
        }
        tracing::info!(
            resealed,
            skipped,
            master_key = %current,
            left_under_old_keys = status.not_current(),
            "master-key rewrap finished"
        );
        Ok(RewrapOutcome {
            resealed,
            skipped,
            status,
        })
    }

    /// One value sealed again under the current key, for the same row.
    fn reseal_value(&self, old: SealedValue) -> Result<Resealed> {
        let key_id = old.master_key_id.as_str();
        let sealed = match &old.at {
            SealedAt::Key {
                kid,
                keyset_id,
                algorithm,
            } => {
                let alg = Algorithm::from_str(algorithm).map_err(|_| {
                    Error::internal(format!("key {kid} has unknown algorithm {algorithm:?}"))
                })?;
                let binding = KeyBinding {
                    keyset_id: *keyset_id,
                    alg,
                    kid,
                };
                self.reseal_key(&binding, key_id, &old.sealed)?
            }
            SealedAt::ClientSecret { client_id, version } => {
                self.reseal_secret(client_id, *version, key_id, &old.sealed)?
            }
            SealedAt::Meta { name } => {
                let row = meta_row(name);
                let plain = self.open(&row, key_id, &old.sealed)?;
                self.keyring.seal(&row, plain.expose())
            }
        };
        Ok(Resealed {
            old,
            master_key_id: self.keyring.id().to_string(),
            sealed,
        })
    }
}
