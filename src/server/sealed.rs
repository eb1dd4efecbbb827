//! The keyring when seals are configured: master keys wrapped by a KMS or an
//! HSM, kept in the database, unwrapped once at start.
//!
//! - A key file (or `KEYWARD_MASTER_KEY`, or a development `master.key`)
//!   still names the current key when given; every key the keyring holds is
//!   then wrapped by every configured seal that lacks it, and the database
//!   records it as current. That is the migration: start once with the file
//!   and `--seal`, then without the file.
//! - With seals alone, the current key is the one the database records, and
//!   any configured seal that answers opens it: an unreachable KMS region or
//!   HSM does not stop a start while another seal answers.
//! - A fresh database started with seals alone gets a new random key,
//!   wrapped by the seals before anything is written; no key file is ever
//!   written.
//! - Adding a seal: start with it beside one that answers; it gets a wrap.
//!   Removing one: start without it (its wraps stay until `keyward master
//!   forget-seal`).
//!
//! The wraps are computed before the first write of a start, so a start that
//! cannot wrap a new current key refuses with nothing written.

use std::{collections::BTreeMap, sync::Arc};

use super::keyring::{read_key_file, resolve_keyring};
use crate::{
    Error, Result,
    config::{MasterKeySource, ServeConfig},
    crypto::aead::{Keyring, MasterKey},
    domain::{
        audit::{Action, AuditEvent, Outcome},
        event::{EventKind, NewEvent, Subject},
    },
    error::ErrorKind,
    seal::Seal,
    service::{Service, master::SealStatus},
    store::{MasterWrap, Store, WrappedKeyring},
};

/// What a start that opened the keyring still has to store and record.
pub(crate) struct Custody {
    /// Wraps to store (after migrating), with the current key's id to record.
    pending: Option<(Vec<MasterWrap>, String)>,
    /// Per configured seal: how it answered.
    pub probes: Vec<SealStatus>,
    /// Audit events: each unwrap and wrap, ok or failed.
    events: Vec<(Action, String, Outcome)>,
    /// What the seals said about keys they could not open, for a refusal.
    pub failures: Vec<String>,
}

/// How hard to try the seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// A start: stop at the first seal that opens each key, and wrap what
    /// the configured seals lack.
    Start,
    /// Read only (a backup): stop at the first seal that opens each key.
    Read,
    /// Ask every configured seal about every key it wraps, wrap nothing
    /// (status, doctor).
    Every,
}

impl Custody {
    fn none() -> Self {
        Self {
            pending: None,
            probes: Vec::new(),
            events: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// `err` (a keyring refusal) with what the seals said, if anything.
    pub(crate) fn explain(&self, err: Error) -> Error {
        match err {
            Error::FailedPrecondition(text) if !self.failures.is_empty() => {
                Error::FailedPrecondition(format!("{text} (seals: {})", self.failures.join("; ")))
            }
            other => other,
        }
    }

    /// Stores the wraps this start made (the database is migrated by now).
    pub(crate) async fn store_wraps(&self, store: &dyn Store, now: i64) -> Result<()> {
        if let Some((wraps, current)) = &self.pending {
            let wraps: Vec<MasterWrap> = wraps
                .iter()
                .map(|w| MasterWrap {
                    created_at: now,
                    ..w.clone()
                })
                .collect();
            store.store_wraps(&wraps, current, now).await?;
        }
        Ok(())
    }

    /// Records the unwraps and wraps in the audit log, and the seals'
    /// answers for `keyward master status`.
    pub(crate) async fn record(self, service: &Service) -> Result<()> {
        let now = service.now();
        for (action, target, outcome) in self.events {
            let event = AuditEvent {
                at: now,
                principal: "keyward".into(),
                action,
                target,
                outcome,
                peer: String::new(),
                request_id: String::new(),
            };
            service
                .audit(event, crate::domain::audit::Durability::BeforeResponse)
                .await?;
        }
        service.set_seal_probes(self.probes);
        // Each new wrap once, whichever replica stored it first.
        if let Some((wraps, _)) = &self.pending {
            let changed: Vec<NewEvent> = wraps
                .iter()
                .map(|w| {
                    NewEvent::new(EventKind::SealChanged, now, Subject::default())
                        .detail(format!(
                            "seal {} wraps master key {}",
                            w.seal, w.master_key_id
                        ))
                        .once(format!("seal.wrap/{}/{}", w.seal, w.master_key_id))
                })
                .collect();
            service.raise(&changed).await?;
        }
        Ok(())
    }
}

/// Opens the keyring: from files alone when no seal is configured (as
/// before seals existed), else from the database's wraps and the files.
pub(crate) async fn open_keyring(
    config: &ServeConfig,
    store: &dyn Store,
    has_data: bool,
    probe: Probe,
) -> Result<(Keyring, Custody)> {
    if config.seals.is_empty() {
        return Ok((resolve_keyring(config, has_data)?, Custody::none()));
    }
    let started = std::time::Instant::now();
    let seals = config
        .seals
        .iter()
        .map(|spec| {
            spec.open()
                .map_err(|e| Error::FailedPrecondition(format!("seal {}: {e}", spec.id())))
        })
        .collect::<Result<Vec<Arc<dyn Seal>>>>()?;
    let wrapped = store.wrapped_keyring().await?;
    let file_current = file_key(config)?;
    let previous = config
        .previous_master_keys
        .iter()
        .map(|path| read_key_file(path))
        .collect::<Result<Vec<_>>>()?;
    let mut opened = Opening::new(&seals);
    let mut held: BTreeMap<String, MasterKey> = BTreeMap::new();
    for key in file_current.iter().chain(previous.iter()) {
        held.insert(key.id().to_string(), clone_key(key)?);
    }
    // Current first: the one a start cannot do without.
    let mut ids: Vec<&str> = wrapped
        .wraps
        .iter()
        .map(|w| w.master_key_id.as_str())
        .collect();
    ids.dedup();
    ids.sort_by_key(|id| Some(*id) != wrapped.current.as_deref());
    for id in ids {
        if held.contains_key(id) && probe != Probe::Every {
            continue;
        }
        if let Some(key) = opened.unwrap(id, &wrapped, probe).await {
            held.entry(id.to_string()).or_insert(key);
        }
    }
    let mut fresh = false;
    let current = match (file_current, &wrapped.current) {
        (Some(key), _) => key,
        (None, Some(id)) => match held.remove(id.as_str()) {
            Some(key) => key,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "no configured seal could open the current master key {id}: {}; refusing \
                     to start (nothing was written)",
                    opened.failures_for(id)
                )));
            }
        },
        (None, None) if !has_data && wrapped.wraps.is_empty() => {
            fresh = true;
            MasterKey::generate()
        }
        (None, None) => {
            return Err(Error::FailedPrecondition(
                "this database is sealed by a master key that no seal wraps yet: start once \
                 with that key (--master-key-file, KEYWARD_MASTER_KEY or <data-dir>/master.key) \
                 beside --seal, and keyward wraps it; refusing to start (nothing was written)"
                    .into(),
            ));
        }
    };
    held.remove(current.id());
    // Wrap what the seals lack, before anything is written.
    let keys: Vec<&MasterKey> = std::iter::once(&current).chain(held.values()).collect();
    let new_wraps = match probe {
        Probe::Start => opened.wrap_missing(&keys, &wrapped).await,
        Probe::Read | Probe::Every => Vec::new(),
    };
    let current_wrapped = wrapped
        .wraps
        .iter()
        .chain(new_wraps.iter())
        .any(|w| w.master_key_id == current.id() && seals.iter().any(|s| s.id() == w.seal));
    if !current_wrapped && probe == Probe::Start {
        return Err(Error::FailedPrecondition(format!(
            "no configured seal could wrap the {} master key {}: {}; refusing to start \
             (nothing was written)",
            if fresh { "new" } else { "current" },
            current.id(),
            opened.failures_for(current.id())
        )));
    }
    let record_current = wrapped.current.as_deref() != Some(current.id());
    let pending =
        (!new_wraps.is_empty() || record_current).then(|| (new_wraps, current.id().to_string()));
    let keyring = Keyring::new(current).with_previous(held.into_values());
    tracing::info!(
        seals = seals.len(),
        keys = keyring.ids().count(),
        wrapped = pending.as_ref().map_or(0, |(wraps, _)| wraps.len()),
        elapsed_ms = %format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "master keyring opened"
    );
    Ok((
        keyring,
        Custody {
            pending,
            probes: opened.probes,
            events: opened.events,
            failures: opened.failures,
        },
    ))
}

/// The current key a file (or the environment) names, if any. With seals,
/// a development `master.key` in the data directory is read, never written.
fn file_key(config: &ServeConfig) -> Result<Option<MasterKey>> {
    match &config.master_key {
        MasterKeySource::Inline(text) => MasterKey::from_base64(text.expose())
            .map(Some)
            .map_err(|r| Error::FailedPrecondition(format!("KEYWARD_MASTER_KEY: {r}"))),
        MasterKeySource::File(path) => read_key_file(path).map(Some),
        MasterKeySource::Unset => {
            let path = config.data_dir.join("master.key");
            if config.is_sqlite() && path.exists() {
                read_key_file(&path).map(Some)
            } else {
                Ok(None)
            }
        }
    }
}

fn clone_key(key: &MasterKey) -> Result<MasterKey> {
    MasterKey::from_bytes(key.material()).map_err(Error::internal)
}

/// The seals' answers, as a start collects them.
struct Opening<'a> {
    seals: &'a [Arc<dyn Seal>],
    probes: Vec<SealStatus>,
    events: Vec<(Action, String, Outcome)>,
    failures: Vec<String>,
}

impl<'a> Opening<'a> {
    fn new(seals: &'a [Arc<dyn Seal>]) -> Self {
        Self {
            seals,
            probes: seals
                .iter()
                .map(|s| SealStatus {
                    seal: s.id().to_string(),
                    configured: true,
                    ..SealStatus::default()
                })
                .collect(),
            events: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn answered(&mut self, at: usize, outcome: Result<(), String>) {
        let probe = &mut self.probes[at];
        // One failure is what status shows; a later success does not hide it.
        if !matches!(probe.answered, Some(Err(_))) {
            probe.answered = Some(outcome);
        }
    }

    /// Opens master key `id` with the configured seals that wrap it.
    async fn unwrap(
        &mut self,
        id: &str,
        wrapped: &WrappedKeyring,
        probe: Probe,
    ) -> Option<MasterKey> {
        let mut opened = None;
        for (at, seal) in self.seals.iter().enumerate() {
            let Some(wrap) = wrapped
                .wraps
                .iter()
                .find(|w| w.master_key_id == id && w.seal == seal.id())
            else {
                continue;
            };
            let target = format!("master key {id} by {}", seal.id());
            let result = seal
                .unwrap(&wrap.wrapped)
                .await
                .map_err(|e| e.to_string())
                .and_then(|raw| MasterKey::from_bytes(&raw))
                .and_then(|key| {
                    if key.id() == id {
                        Ok(key)
                    } else {
                        Err(format!("it unwrapped to another key ({})", key.id()))
                    }
                });
            match result {
                Ok(key) => {
                    self.answered(at, Ok(()));
                    self.events.push((Action::Unwrap, target, Outcome::Ok));
                    opened.get_or_insert(key);
                    if probe != Probe::Every {
                        break;
                    }
                }
                Err(reason) => {
                    tracing::warn!(seal = %seal.id(), master_key = %id, error = %reason,
                        "a seal could not unwrap a master key");
                    self.failures
                        .push(format!("{} (key {id}): {reason}", seal.id()));
                    self.answered(at, Err(reason));
                    self.events.push((
                        Action::Unwrap,
                        target,
                        Outcome::Failed(ErrorKind::FailedPrecondition),
                    ));
                }
            }
        }
        if opened.is_none() && !self.failures.iter().any(|f| f.contains(id)) {
            self.failures.push(format!(
                "master key {id} is wrapped only by seals not configured here ({})",
                wrapped
                    .wraps
                    .iter()
                    .filter(|w| w.master_key_id == id)
                    .map(|w| w.seal.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        opened
    }

    /// Wraps each of `keys` with every configured seal that has no wrap of it.
    async fn wrap_missing(
        &mut self,
        keys: &[&MasterKey],
        wrapped: &WrappedKeyring,
    ) -> Vec<MasterWrap> {
        let mut out = Vec::new();
        for key in keys {
            for (at, seal) in self.seals.iter().enumerate() {
                let has = wrapped
                    .wraps
                    .iter()
                    .any(|w| w.master_key_id == key.id() && w.seal == seal.id());
                if has {
                    continue;
                }
                let target = format!("master key {} by {}", key.id(), seal.id());
                match seal.wrap(key.material()).await {
                    Ok(bytes) => {
                        self.answered(at, Ok(()));
                        self.events.push((Action::Wrap, target, Outcome::Ok));
                        tracing::info!(seal = %seal.id(), master_key = %key.id(),
                            "a seal wrapped a master key");
                        out.push(MasterWrap {
                            master_key_id: key.id().to_string(),
                            seal: seal.id().to_string(),
                            wrapped: bytes,
                            created_at: 0,
                        });
                    }
                    Err(e) => {
                        tracing::warn!(seal = %seal.id(), master_key = %key.id(), error = %e,
                            "a seal could not wrap a master key; it will be tried at the next start");
                        self.failures
                            .push(format!("{} (key {}): {e}", seal.id(), key.id()));
                        self.answered(at, Err(e.to_string()));
                        self.events.push((
                            Action::Wrap,
                            target,
                            Outcome::Failed(ErrorKind::FailedPrecondition),
                        ));
                    }
                }
            }
        }
        out
    }

    fn failures_for(&self, id: &str) -> String {
        let named: Vec<&str> = self
            .failures
            .iter()
            .filter(|f| f.contains(id))
            .map(String::as_str)
            .collect();
        if named.is_empty() {
            "no configured seal wraps it".into()
        } else {
            named.join("; ")
        }
    }
}
