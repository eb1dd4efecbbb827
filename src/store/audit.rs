//! The audit chain as stored: events appended under the chain's head lock,
//! listed, scanned from one snapshot and pruned.

use async_trait::async_trait;

use crate::{
    Result,
    domain::audit::{Action, AuditEvent, AuditFilter, AuditRecord, ChainBounds, Linker, Outcome},
};

/// What a scan of the audit chain visits: its bounds, then every kept event
/// from the first, in id order, all from one consistent snapshot.
#[derive(Debug)]
pub enum AuditScan {
    /// Where the chain starts and ends.
    Bounds(ChainBounds),
    /// The next stored event.
    Event(AuditRecord),
}

/// An `audit_events` row.
#[derive(sqlx::FromRow)]
pub(super) struct AuditColumns {
    pub(super) id: i64,
    pub(super) at: i64,
    pub(super) principal: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) outcome: String,
    pub(super) peer: String,
    pub(super) request_id: String,
    pub(super) hash: Vec<u8>,
}

impl From<AuditColumns> for AuditRecord {
    fn from(c: AuditColumns) -> Self {
        Self {
            id: c.id,
            event: AuditEvent {
                at: c.at,
                principal: c.principal,
                action: Action::parse(&c.action),
                target: c.target,
                outcome: Outcome::parse(&c.outcome),
                peer: c.peer,
                request_id: c.request_id,
            },
            hash: c.hash,
        }
    }
}

/// The `audit_chain` row.
#[derive(sqlx::FromRow)]
pub(super) struct ChainColumns {
    pub(super) head_id: i64,
    pub(super) head_hash: Vec<u8>,
    pub(super) first_id: i64,
    pub(super) first_prev: Vec<u8>,
}

impl From<ChainColumns> for ChainBounds {
    fn from(c: ChainColumns) -> Self {
        Self {
            first_id: c.first_id,
            first_prev: c.first_prev,
            head_id: c.head_id,
            head_hash: c.head_hash,
        }
    }
}

/// The audit chain.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `events` to the audit chain in one transaction, holding the
    /// chain's row lock so concurrent writers (other replicas too) append one
    /// after another; each event's hash is `link(previous hash, id, event)`.
    /// Returns the id of the last one.
    async fn append_audit(&self, events: &[AuditEvent], link: &dyn Linker) -> Result<i64>;

    /// Audit events matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;

    /// Visits the chain's bounds and then its kept events in id order, from
    /// one snapshot, until `visit` returns false.
    async fn scan_audit(&self, visit: &mut (dyn FnMut(AuditScan) -> bool + Send)) -> Result<()>;

    /// Deletes the oldest events, up to the newest one before `before` (Unix
    /// seconds), moves the chain's start past them and appends the event
    /// `record` makes of the ids deleted, all in one transaction. Returns the
    /// ids deleted, if any.
    async fn prune_audit(
        &self,
        before: i64,
        link: &dyn Linker,
        record: &(dyn Fn(i64, i64) -> AuditEvent + Sync),
    ) -> Result<Option<(i64, i64)>>;
}
