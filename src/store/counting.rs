//! A [`Store`] that counts the calls made to the store it wraps, so tests can
//! check how many database round trips an operation costs (and that a path
//! meant to be served from memory makes none), and that can be cut off from
//! it, as a replica is when its database becomes unreachable.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use async_trait::async_trait;

use super::{
    Attempt, AuditScan, AuditStore, Claimed, ClientDelta, ClientStore, DeliveryCounts, DeliveryRow,
    EventBounds, EventStore, Generations, KeyRow, KeySetChange, KeySetRow, KeySetStore, MasterWrap,
    MetaStore, MigrationState, NewKey, NewKeySet, PublishedDelta, Resealed, Revocation, SealStore,
    SealedAt, SealedCount, SealedKey, SealedTable, SealedValue, SecretRow, StartupLock, Store,
    TokenRow, TokenStore, WebhookRow, WrappedKeyring,
};
use crate::{
    Error, Result,
    domain::{
        audit::{AuditEvent, AuditFilter, AuditRecord, Linker},
        client::Client,
        event::{Event, NewEvent},
    },
};

/// Counts calls per [`Store`] method, then delegates (or, while cut off,
/// fails them).
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    cut_off: AtomicBool,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    /// The most key sets one `published_since` call with a `since` returned.
    largest_delta: Mutex<usize>,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            cut_off: AtomicBool::new(false),
            calls: Mutex::new(BTreeMap::new()),
            largest_delta: Mutex::new(0),
        }
    }

    /// Counts a call to `method`; fails it while the store is cut off.
    fn count(&self, method: &'static str) -> Result<()> {
        if let Ok(mut calls) = self.calls.lock() {
            *calls.entry(method).or_default() += 1;
        }
        if self.cut_off.load(Ordering::Relaxed) {
            return Err(Error::Unavailable);
        }
        Ok(())
    }

    /// Cuts the store off from its database (`true`): every call fails as
    /// unreachable until it is reconnected (`false`).
    pub fn set_cut_off(&self, cut_off: bool) {
        self.cut_off.store(cut_off, Ordering::Relaxed);
    }

    /// Calls made to `method` so far.
    pub fn calls(&self, method: &str) -> u64 {
        self.calls
            .lock()
            .map(|c| c.get(method).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Every call made so far, by method.
    pub fn all_calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Forgets the counts so far.
    pub fn reset(&self) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.clear();
        }
        if let Ok(mut largest) = self.largest_delta.lock() {
            *largest = 0;
        }
    }

    /// The most key sets an incremental `published_since` returned.
    pub fn largest_delta(&self) -> usize {
        self.largest_delta.lock().map(|l| *l).unwrap_or(0)
    }
}

/// Implements a store trait by counting each call and delegating it.
macro_rules! delegate {
    ($trait:ident { $( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )* }) => {
        #[async_trait]
        impl $trait for CountingStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    self.count(stringify!($name))?;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

#[async_trait]
impl KeySetStore for CountingStore {
    async fn published_since(&self, since: Option<i64>) -> Result<PublishedDelta> {
        self.count("published_since")?;
        let delta = self.inner.published_since(since).await?;
        if since.is_some()
            && let Ok(mut largest) = self.largest_delta.lock()
        {
            *largest = (*largest).max(delta.keysets.len() + delta.deleted.len());
        }
        Ok(delta)
    }

    async fn insert_keyset(
        &self,
        set: &NewKeySet,
        keys: &(dyn Fn(i64) -> Vec<NewKey> + Sync),
    ) -> Result<KeySetRow> {
        self.count("insert_keyset")?;
        self.inner.insert_keyset(set, keys).await
    }

    async fn any_keyset_ever(&self) -> Result<bool> {
        self.count("any_keyset_ever")?;
        self.inner.any_keyset_ever().await
    }

    async fn get_keyset(&self, name: &str) -> Result<Option<KeySetRow>> {
        self.count("get_keyset")?;
        self.inner.get_keyset(name).await
    }

    async fn list_keysets(&self, after: &str, limit: i64) -> Result<Vec<KeySetRow>> {
        self.count("list_keysets")?;
        self.inner.list_keysets(after, limit).await
    }

    async fn published_keys_between(&self, first: &str, last: &str) -> Result<Vec<KeyRow>> {
        self.count("published_keys_between")?;
        self.inner.published_keys_between(first, last).await
    }

    async fn delete_keyset(&self, name: &str, now: i64) -> Result<bool> {
        self.count("delete_keyset")?;
        self.inner.delete_keyset(name, now).await
    }

    async fn list_keys(&self, keyset_id: i64) -> Result<Vec<KeyRow>> {
        self.count("list_keys")?;
        self.inner.list_keys(keyset_id).await
    }

    async fn sealed_key(&self, kid: &str) -> Result<Option<SealedKey>> {
        self.count("sealed_key")?;
        self.inner.sealed_key(kid).await
    }

    async fn find_key(&self, kid: &str) -> Result<Option<KeyRow>> {
        self.count("find_key")?;
        self.inner.find_key(kid).await
    }

    async fn apply_keyset_change(
        &self,
        keyset_id: i64,
        version: i64,
        change: &KeySetChange,
    ) -> Result<bool> {
        self.count("apply_keyset_change")?;
        self.inner
            .apply_keyset_change(keyset_id, version, change)
            .await
    }
}

delegate!(MetaStore {
    fn ping(&self) -> Result<()>;
    fn migrate(&self) -> Result<()>;
    fn migration_state(&self) -> Result<MigrationState>;
    fn database_time(&self) -> Result<i64>;
    fn backup_to(&self, path: &std::path::Path) -> Result<()>;
    fn lock_startup(&self) -> Result<StartupLock>;
    fn read_canary(&self) -> Result<Option<(String, Vec<u8>)>>;
    fn write_canary(&self, key_id: &str, sealed: &[u8]) -> Result<bool>;
    fn meta(&self, name: &str) -> Result<Option<(String, Vec<u8>)>>;
    fn insert_meta(&self, name: &str, key_id: &str, sealed: &[u8]) -> Result<bool>;
    fn sealed_counts(&self) -> Result<Vec<SealedCount>>;
    fn sealed_after(
        &self,
        table: SealedTable,
        after: Option<&SealedAt>,
        except_key_id: &str,
        limit: i64
    ) -> Result<Vec<SealedValue>>;
    fn reseal(&self, values: &[Resealed]) -> Result<u64>;
    fn purge_overwritten(&self) -> Result<()>;
    fn generations(&self) -> Result<Generations>;
});

delegate!(SealStore {
    fn wrapped_keyring(&self) -> Result<WrappedKeyring>;
    fn store_wraps(&self, wraps: &[MasterWrap], current: &str, now: i64) -> Result<()>;
    fn delete_wraps_of(&self, ids: &[String]) -> Result<u64>;
    fn delete_wraps_by(&self, seal: &str) -> Result<u64>;
});

delegate!(TokenStore {
    fn insert_first_admin_token(&self, hash: &[u8], now: i64) -> Result<bool>;
    fn admin_token_hashes(&self) -> Result<Vec<Vec<u8>>>;
    fn insert_token(&self, token: &TokenRow) -> Result<()>;
    fn list_tokens(&self) -> Result<Vec<TokenRow>>;
    fn revoke_token(&self, name: &str, now: i64, admin_kept_until: i64) -> Result<Revocation>;
    fn tokens_generation(&self) -> Result<i64>;
});

delegate!(ClientStore {
    fn insert_client(&self, client: &Client, secret: &SecretRow) -> Result<()>;
    fn update_client(&self, client: &Client) -> Result<bool>;
    fn get_client(&self, id: &str) -> Result<Option<Client>>;
    fn list_clients(&self, after: &str, limit: i64) -> Result<Vec<Client>>;
    fn delete_client(&self, id: &str, now: i64) -> Result<bool>;
    fn client_secrets(&self, id: &str) -> Result<Vec<SecretRow>>;
    fn clients_since(&self, since: Option<i64>) -> Result<ClientDelta>;
    fn add_client_secret(&self, new: &SecretRow, previous_valid_until: i64) -> Result<bool>;
    fn delete_superseded_secret(&self, id: &str, version: i64, now: i64) -> Result<bool>;
    fn clients_of_keyset(&self, keyset: &str) -> Result<Vec<Client>>;
});

delegate!(EventStore {
    fn append_events(&self, events: &[NewEvent]) -> Result<u64>;
    fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>>;
    fn event_bounds(&self) -> Result<EventBounds>;
    fn prune_events(&self, before: i64) -> Result<u64>;
    fn insert_webhook(
        &self,
        hook: &WebhookRow,
        key_id: &str,
        sealed_secret: &[u8]
    ) -> Result<WebhookRow>;
    fn list_webhooks(&self) -> Result<Vec<WebhookRow>>;
    fn get_webhook(&self, name: &str) -> Result<Option<WebhookRow>>;
    fn delete_webhook(&self, name: &str) -> Result<bool>;
    fn delivery_work(&self, now: i64) -> Result<(bool, bool)>;
    fn queue_deliveries(&self, now: i64, limit: i64) -> Result<u64>;
    fn claim_deliveries(&self, claim: &str, now: i64, until: i64, limit: i64) -> Result<Vec<Claimed>>;
    fn record_attempt(&self, claim: &str, webhook: &str, event_id: i64, attempt: &Attempt) -> Result<bool>;
    fn deliveries(&self, webhook: &str, limit: i64) -> Result<Vec<DeliveryRow>>;
    fn delivery_counts(&self) -> Result<DeliveryCounts>;
});

delegate!(AuditStore {
    fn append_audit(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64>;
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    fn scan_audit(&self, visit: &mut (dyn FnMut(AuditScan) -> bool + Send)) -> Result<()>;
    fn prune_audit(
        &self,
        before: i64,
        link: &dyn Linker,
        record: &(dyn Fn(i64, i64) -> AuditEvent + Sync)
    ) -> Result<Option<(i64, i64)>>;
});
