//! Change events as stored (the outbox), webhooks and their deliveries, and
//! [`EventStore`], what the service asks of them.
//!
//! Events are written by the writes they describe, in the same transaction
//! (each write method of the other stores takes its events); what is here
//! reads them, prunes them, and moves them out to webhooks: queued once per
//! matching webhook by whichever replica advances the shared cursor, then
//! claimed for delivery by one replica at a time.

use async_trait::async_trait;

use crate::{
    Error, Result,
    domain::event::{Event, EventFilter, EventKind, NewEvent, Subject},
};

/// The columns of an `events` row.
#[derive(sqlx::FromRow)]
pub(super) struct EventColumns {
    pub(super) id: i64,
    pub(super) at: i64,
    pub(super) kind: String,
    pub(super) keyset: Option<String>,
    pub(super) kid: Option<String>,
    pub(super) client: Option<String>,
    pub(super) token: Option<String>,
    pub(super) detail: Option<String>,
}

impl TryFrom<EventColumns> for Event {
    type Error = Error;

    fn try_from(c: EventColumns) -> Result<Self> {
        Ok(Self {
            id: c.id,
            kind: EventKind::parse(&c.kind)?,
            at: c.at,
            subject: Subject {
                keyset: c.keyset,
                kid: c.kid,
                client: c.client,
                token: c.token,
            },
            detail: c.detail,
        })
    }
}

/// A webhook: where matching events are POSTed. Its signing secret is
/// sealed in `keyward_meta` under [`webhook_secret_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// Its name.
    pub name: String,
    /// Where events go.
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
    /// Events up to this id predate it and are never sent to it.
    pub after_event: i64,
    /// Creation time.
    pub created_at: i64,
}

/// The `keyward_meta` row a webhook's sealed signing secret lives in.
pub fn webhook_secret_name(webhook: &str) -> String {
    format!("webhook/{webhook}")
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed; keyward gave up.
    Failed,
}

impl DeliveryState {
    /// Its name in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| Error::internal(format!("unknown delivery state {text:?}")))
    }
}

impl TryFrom<String> for DeliveryState {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        Self::parse(&text)
    }
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    /// The webhook.
    pub webhook: String,
    /// The event.
    pub event_id: i64,
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending).
    pub next_attempt_at: i64,
    /// The last attempt's time.
    pub last_attempt_at: Option<i64>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the receiver accepted it.
    pub delivered_at: Option<i64>,
}

/// A delivery this replica claimed: the event and where it goes.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The webhook's name.
    pub webhook: String,
    /// Its URL.
    pub url: String,
    /// The event.
    pub event: Event,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When it was made.
    pub at: i64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<i64>,
    /// Why it failed; `None`: delivered.
    pub error: Option<String>,
    /// When to try again; `None` with an error: give up.
    pub retry_at: Option<i64>,
}

/// Where the outbox stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct EventBounds {
    /// The last event id given out (0: none yet).
    pub last: i64,
    /// Every event up to this id is gone (pruned); 0: none pruned.
    pub pruned_through: i64,
}

/// Deliveries by state, for metrics and `doctor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Waiting.
    pub pending: i64,
    /// Accepted.
    pub delivered: i64,
    /// Given up.
    pub failed: i64,
}

/// The outbox, webhooks and deliveries.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Writes events that go with no other change (alerts, failures), in
    /// their own transaction. Returns how many were stored (a `once` event
    /// already stored is not stored again).
    async fn append_events(&self, events: &[NewEvent]) -> Result<u64>;

    /// Up to `limit` events after id `after`, oldest first.
    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>>;

    /// The last event id given out, and up to which retention pruned.
    async fn event_bounds(&self) -> Result<EventBounds>;

    /// Deletes events older than `before` that every webhook has queued and
    /// no pending delivery needs, and finished deliveries older than it.
    async fn prune_events(&self, before: i64) -> Result<u64>;

    /// Stores a webhook and its sealed signing secret; `AlreadyExists` on a
    /// taken name. Its `after_event` is set to the last event id now.
    async fn insert_webhook(
        &self,
        hook: &WebhookRow,
        key_id: &str,
        sealed_secret: &[u8],
    ) -> Result<WebhookRow>;

    /// Every webhook, by name.
    async fn list_webhooks(&self) -> Result<Vec<WebhookRow>>;

    /// A webhook by name.
    async fn get_webhook(&self, name: &str) -> Result<Option<WebhookRow>>;

    /// Deletes a webhook, its secret and its deliveries. Returns whether it
    /// existed.
    async fn delete_webhook(&self, name: &str) -> Result<bool>;

    /// Whether there is delivery work, read without a write lock: events
    /// past the shared cursor while some webhook exists, and deliveries
    /// due at `now`.
    async fn delivery_work(&self, now: i64) -> Result<(bool, bool)>;

    /// Queues the deliveries of up to `limit` events past the shared cursor
    /// and advances it; of racing replicas one queues, the others get 0.
    async fn queue_deliveries(&self, now: i64, limit: i64) -> Result<u64>;

    /// Claims up to `limit` due deliveries for `claim` until `until`; a
    /// delivery is claimed by one claimant at a time.
    async fn claim_deliveries(
        &self,
        claim: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<Vec<Claimed>>;

    /// Records an attempt on a delivery `claim` holds; `false` when its
    /// claim lapsed and another took it.
    async fn record_attempt(
        &self,
        claim: &str,
        webhook: &str,
        event_id: i64,
        attempt: &Attempt,
    ) -> Result<bool>;

    /// A webhook's deliveries, newest first.
    async fn deliveries(&self, webhook: &str, limit: i64) -> Result<Vec<DeliveryRow>>;

    /// Deliveries by state, over every webhook.
    async fn delivery_counts(&self) -> Result<DeliveryCounts>;
}

/// A webhook's stored filter: JSON arrays of patterns.
pub(super) fn filter_columns(filter: &EventFilter) -> Result<[String; 3]> {
    let json =
        |patterns| serde_json::to_string(&EventFilter::texts(patterns)).map_err(Error::internal);
    Ok([
        json(&filter.kinds)?,
        json(&filter.keysets)?,
        json(&filter.clients)?,
    ])
}

/// The columns of a `webhooks` row.
#[derive(sqlx::FromRow)]
pub(super) struct WebhookColumns {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) kinds: String,
    pub(super) keysets: String,
    pub(super) clients: String,
    pub(super) after_event: i64,
    pub(super) created_at: i64,
}

impl TryFrom<WebhookColumns> for WebhookRow {
    type Error = Error;

    fn try_from(c: WebhookColumns) -> Result<Self> {
        let list = |text: &str| -> Result<Vec<String>> {
            serde_json::from_str(text).map_err(Error::internal)
        };
        Ok(Self {
            filter: EventFilter::parse(&list(&c.kinds)?, &list(&c.keysets)?, &list(&c.clients)?)?,
            name: c.name,
            url: c.url,
            after_event: c.after_event,
            created_at: c.created_at,
        })
    }
}
