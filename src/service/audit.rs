//! The audit log: one writer task per process appends events to the chain,
//! durable events at once (the caller waits for the commit) and batched ones
//! within [`FLUSH_EVERY`]; listing, verifying and pruning read the store.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::Service;
use crate::{
    Error, Result,
    crypto::{
        aead::{AeadContext, Keyring},
        chain::ChainKey,
        random,
    },
    domain::{
        audit::{
            Action, AuditEvent, AuditFilter, AuditRecord, ChainReport, ChainWalk, Durability,
            Outcome, prune_target,
        },
        secret::SecretBytes,
    },
    store::{AuditScan, Store},
};

/// Batched events reach the database within this long.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Most events appended in one transaction.
const MAX_BATCH: usize = 2000;
/// Batched events kept in memory while the database cannot take them; past
/// this the oldest are dropped (and counted in the log).
const MAX_BACKLOG: usize = 100_000;
/// Events queued for the writer before callers wait for room.
const QUEUE: usize = 10_000;

const AUDIT_KEY_ROW: AeadContext<'static> = super::master::meta_row("audit_key");

/// The database's audit chain key: read and opened, or created on first start
/// (of several processes racing, one creates it and all use it).
pub async fn load_chain_key(store: &dyn Store, keyring: &Keyring) -> Result<ChainKey> {
    let (key_id, sealed) = match store.meta("audit_key").await? {
        Some(stored) => stored,
        None => {
            let raw = SecretBytes::new(random::bytes::<{ ChainKey::LEN }>().to_vec());
            let sealed = keyring.seal(&AUDIT_KEY_ROW, raw.expose());
            store
                .insert_meta("audit_key", keyring.id(), &sealed)
                .await?;
            // Read back: a racing process may have stored its key first.
            store.meta("audit_key").await?.ok_or_else(|| {
                Error::internal("the audit key vanished right after it was written")
            })?
        }
    };
    let raw = keyring
        .open(&AUDIT_KEY_ROW, &key_id, &sealed)
        .map_err(|err| super::opening_failed(&AUDIT_KEY_ROW, &key_id, &err))?;
    Ok(ChainKey::new(&raw))
}

enum Queued {
    Event(AuditEvent, Option<oneshot::Sender<Result<()>>>),
    Flush(oneshot::Sender<()>),
}

/// The handle requests record through; the writer task ends when it drops,
/// after writing what is queued.
#[derive(Debug)]
pub struct AuditLog {
    queue: mpsc::Sender<Queued>,
    key: Arc<ChainKey>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Event(e, _) => f.debug_tuple("Event").field(e).finish(),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// Starts the writer task (on the current tokio runtime).
    pub fn start(store: Arc<dyn Store>, key: ChainKey) -> Self {
        let key = Arc::new(key);
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(Writer::new(store, Arc::clone(&key)).run(rx));
        Self { queue, key }
    }
}

/// What the writer holds between transactions.
struct Writer {
    store: Arc<dyn Store>,
    key: Arc<ChainKey>,
    /// Batched events not yet stored, oldest first.
    batched: Vec<AuditEvent>,
    /// Durable events and the callers waiting for them.
    durable: Vec<(AuditEvent, oneshot::Sender<Result<()>>)>,
    /// Callers waiting for everything queued before them to be written.
    flushes: Vec<oneshot::Sender<()>>,
    /// When the batched events must be written.
    due: Option<tokio::time::Instant>,
    /// The last write failed: a full batch waits for the retry instead of
    /// trying the database again with every event that arrives.
    failing: bool,
}

impl Writer {
    fn new(store: Arc<dyn Store>, key: Arc<ChainKey>) -> Self {
        Self {
            store,
            key,
            batched: Vec::new(),
            durable: Vec::new(),
            flushes: Vec::new(),
            due: None,
            failing: false,
        }
    }

    fn take(&mut self, item: Queued) {
        match item {
            Queued::Event(event, None) => self.batched.push(event),
            Queued::Event(event, Some(done)) => self.durable.push((event, done)),
            Queued::Flush(done) => self.flushes.push(done),
        }
    }

    fn queued(&self) -> usize {
        self.batched.len() + self.durable.len()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Queued>) {
        loop {
            let item = match self.due {
                None => rx.recv().await,
                Some(due) => tokio::select! {
                    item = rx.recv() => item,
                    () = tokio::time::sleep_until(due) => {
                        self.write().await;
                        continue;
                    }
                },
            };
            let Some(item) = item else {
                // Every handle is gone: write what is left and stop.
                self.write().await;
                return;
            };
            self.take(item);
            while self.queued() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => self.take(item),
                    Err(_) => break,
                }
            }
            let full = self.queued() >= MAX_BATCH && !self.failing;
            if !self.durable.is_empty() || !self.flushes.is_empty() || full {
                self.write().await;
            } else if self.due.is_none() && !self.batched.is_empty() {
                self.due = Some(tokio::time::Instant::now() + FLUSH_EVERY);
            }
        }
    }

    /// Appends everything queued in one transaction (batched events first:
    /// they are older) and answers the callers waiting.
    async fn write(&mut self) {
        let durable = std::mem::take(&mut self.durable);
        if self.batched.is_empty() && durable.is_empty() {
            self.answer_flushes();
            self.due = None;
            return;
        }
        let mut events = std::mem::take(&mut self.batched);
        let kept = events.len();
        let (durable_events, waiters): (Vec<_>, Vec<_>) = durable.into_iter().unzip();
        events.extend(durable_events);
        let written = self.store.append_audit(&events, self.key.as_ref()).await;
        match written {
            Ok(_) => {
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
                self.due = None;
                self.failing = false;
            }
            Err(err) => {
                tracing::error!(error = %err, events = events.len(), "could not write audit events; the calls waiting for them fail, batched ones are retried");
                // No secret is ever in an event, so the log may hold it.
                for event in &events[kept..] {
                    tracing::error!(?event, "audit event not stored; its call was refused");
                }
                for done in waiters {
                    let _ = done.send(Err(Error::AuditUnavailable));
                }
                events.truncate(kept);
                if events.len() > MAX_BACKLOG {
                    let dropped = events.len() - MAX_BACKLOG;
                    events.drain(..dropped);
                    tracing::error!(
                        dropped,
                        "audit backlog full; dropped the oldest batched events"
                    );
                }
                self.batched = events;
                self.due = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                self.failing = true;
            }
        }
        self.answer_flushes();
    }

    fn answer_flushes(&mut self) {
        for done in self.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

impl Service {
    /// Records an audit event. [`Durability::BeforeResponse`] waits until it
    /// is committed and fails with [`Error::AuditUnavailable`] when it cannot
    /// be; batched events are queued and never fail the call.
    pub async fn audit(&self, event: AuditEvent, durability: Durability) -> Result<()> {
        match durability {
            Durability::Batched => {
                if self
                    .audit
                    .queue
                    .send(Queued::Event(event, None))
                    .await
                    .is_err()
                {
                    tracing::error!("the audit writer has stopped; an event was not recorded");
                }
                Ok(())
            }
            Durability::BeforeResponse => {
                let (done, written) = oneshot::channel();
                self.audit
                    .queue
                    .send(Queued::Event(event, Some(done)))
                    .await
                    .map_err(|_| Error::AuditUnavailable)?;
                written.await.map_err(|_| Error::AuditUnavailable)?
            }
        }
    }

    /// Waits until every event recorded so far has been written (or failed).
    pub async fn flush_audit(&self) {
        let (done, flushed) = oneshot::channel();
        if self.audit.queue.send(Queued::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// One page of the audit events matching `filter`, newest first (the
    /// page sets the filter's `before_id` and `limit`).
    pub async fn audit_events(
        &self,
        mut filter: AuditFilter,
        page: &super::PageRequest,
    ) -> Result<super::Page<AuditRecord>> {
        let after = page.after()?;
        filter.before_id = if after.is_empty() {
            None
        } else {
            Some(after.parse().map_err(|_| {
                Error::invalid(
                    "page_token",
                    "not a token this listing returned; start again without one",
                )
            })?)
        };
        filter.limit = page.fetch_limit();
        let mut items = self.store.list_audit(&filter).await?;
        let next_page_token = (items.len() > page.size()).then(|| {
            items.truncate(page.size());
            items
                .last()
                .map(|last| super::PageRequest::token_after(&last.id.to_string()))
        });
        Ok(super::Page {
            items,
            next_page_token: next_page_token.flatten(),
        })
    }

    /// Walks the whole kept chain from one snapshot.
    pub async fn verify_audit(&self) -> Result<ChainReport> {
        let key = Arc::clone(&self.audit.key);
        let mut walk: Option<ChainWalk<'_>> = None;
        self.store
            .scan_audit(&mut |item| match item {
                AuditScan::Bounds(bounds) => {
                    walk = Some(ChainWalk::new(key.as_ref(), bounds));
                    true
                }
                AuditScan::Event(record) => walk.as_mut().is_some_and(|w| {
                    w.check(&record);
                    !w.is_broken()
                }),
            })
            .await?;
        walk.map(ChainWalk::finish)
            .ok_or_else(|| Error::internal("the audit chain has no bounds row"))
    }

    /// Deletes events older than `retain` and records the cut in the chain,
    /// in the same transaction, as the event that accounts for the chain's
    /// new start. Returns the ids deleted, if any.
    pub async fn prune_audit(&self, retain: Duration) -> Result<Option<(i64, i64)>> {
        let retain = i64::try_from(retain.as_secs()).unwrap_or(i64::MAX);
        let now = self.now();
        let before = now.saturating_sub(retain);
        let record = |first, last| AuditEvent {
            at: now,
            principal: "keyward".into(),
            action: Action::Prune,
            target: prune_target(first, last),
            outcome: Outcome::Ok,
            peer: String::new(),
            request_id: String::new(),
        };
        let pruned = self
            .store
            .prune_audit(before, self.audit.key.as_ref(), &record)
            .await?;
        if let Some((first, last)) = pruned {
            tracing::info!(first, last, "pruned audit events past retention");
        }
        Ok(pruned)
    }
}
