//! Master keys wrapped by seals (`master_key_wraps`), and which of them is
//! current when no key file names it (`sealed_keyring`). The store moves the
//! wrapped bytes; only the seal that wrapped one can open it.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::Result;

/// One master key as one seal wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterWrap {
    /// The master key's id.
    pub master_key_id: String,
    /// The seal's id.
    pub seal: String,
    /// What the seal returned.
    pub wrapped: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

impl Debug for MasterWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterWrap")
            .field("master_key_id", &self.master_key_id)
            .field("seal", &self.seal)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Every wrap, and the current key's id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrappedKeyring {
    /// The key that seals new writes, when seals alone configure the keyring.
    pub current: Option<String>,
    /// Every wrap, by master key id then seal.
    pub wraps: Vec<MasterWrap>,
}

/// The wrapped keyring's rows.
#[async_trait]
pub trait SealStore: Send + Sync {
    /// Every wrap and the current key; empty before the migration that
    /// creates the tables (read before migrating, as the canary is).
    async fn wrapped_keyring(&self) -> Result<WrappedKeyring>;

    /// In one transaction: stores each wrap unless that key already has a
    /// wrap by that seal, and makes `current` the current key.
    async fn store_wraps(&self, wraps: &[MasterWrap], current: &str, now: i64) -> Result<()>;

    /// Deletes the wraps of the master keys `ids` (keys that seal nothing
    /// any more); returns how many rows went.
    async fn delete_wraps_of(&self, ids: &[String]) -> Result<u64>;

    /// Deletes every wrap by `seal`; returns how many rows went.
    async fn delete_wraps_by(&self, seal: &str) -> Result<u64>;
}
