//! Change events out of the outbox: the feed each process follows (one
//! query per poll, whatever the number of watchers), `Watch` streams with
//! resume, and webhooks with their deliveries (queued once, claimed by one
//! replica, retried with backoff; the HTTP call itself is the server's).

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Mutex, Notify, broadcast, mpsc};

use super::{Caller, Service, master::meta_row};
use crate::{
    Error, Result,
    crypto::random,
    domain::{
        access::Grant,
        event::{Event, EventFilter, EventKind, NewEvent, Subject},
        model,
        secret::{SecretBytes, SecretString},
    },
    store::{Attempt, Claimed, webhook_secret_name},
};

pub use crate::store::{DeliveryRow, WebhookRow};

/// Events read per query.
const PAGE: i64 = 500;
/// Events a slow watcher may fall behind the live feed before it catches
/// up from the database instead.
const LIVE_BUFFER: usize = 4096;
/// Events queued to one watcher's connection.
const WATCHER_QUEUE: usize = 256;
/// The most attempts at one delivery: about nine hours of retries.
pub const MAX_ATTEMPTS: i64 = 20;
/// The longest wait between attempts.
const MAX_BACKOFF: i64 = 3600;

/// The events this process has read, fanned out to its watchers.
#[derive(Debug)]
pub struct EventFeed {
    live: broadcast::Sender<Arc<Event>>,
    /// The last event id read (and sent to `live`).
    seen: AtomicI64,
    /// One reader at a time.
    reading: Mutex<()>,
    /// Wakes the follower after a local write.
    pub(super) nudge: Notify,
}

impl EventFeed {
    pub(super) fn new() -> Self {
        Self {
            live: broadcast::channel(LIVE_BUFFER).0,
            seen: AtomicI64::new(0),
            reading: Mutex::new(()),
            nudge: Notify::new(),
        }
    }

    /// Watchers connected now.
    pub fn watchers(&self) -> usize {
        self.live.receiver_count()
    }
}

/// A webhook just created: its settings and its signing secret, shown once.
#[derive(Debug)]
pub struct CreatedWebhook {
    /// The webhook.
    pub webhook: WebhookRow,
    /// Its signing secret (`whsec_…`).
    pub secret: SecretString,
}

/// What a webhook is created with.
#[derive(Debug, Clone)]
pub struct WebhookInput {
    /// Its name.
    pub name: String,
    /// Where events go: `https://` (or `http://`).
    pub url: String,
    /// Which events.
    pub filter: EventFilter,
}

/// The wait before attempt `attempts + 1` after `attempts` failed ones:
/// 1 s, 2 s, 4 s … up to an hour, a fifth of it random.
pub fn backoff(attempts: i64) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let base = 1_i64
        .checked_shl(exp)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF);
    let jitter = i64::from(random::bytes::<1>()[0]) * base / (255 * 5);
    base + jitter
}

impl Service {
    /// The process's event feed.
    pub fn event_feed(&self) -> &EventFeed {
        &self.events
    }

    /// Starts the feed at the last event written: watchers that name no
    /// position get what comes after.
    pub(super) async fn start_event_feed(&self) -> Result<()> {
        let bounds = self.store.event_bounds().await?;
        self.events.seen.fetch_max(bounds.last, Ordering::SeqCst);
        Ok(())
    }

    /// Reads the events written since the last read (by any replica) and
    /// hands them to this process's watchers. Returns how many.
    pub async fn follow_events(&self) -> Result<usize> {
        let _reading = self.events.reading.lock().await;
        let mut read = 0;
        loop {
            let after = self.events.seen.load(Ordering::SeqCst);
            let page = self.store.events_after(after, PAGE).await?;
            let full = page.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
            read += page.len();
            if !page.is_empty() {
                // An event is committed with its change: the views catch up
                // with the database before a watcher hears of it, so a
                // watcher that acts at once (signs with the new key, reads
                // the new secret) is not answered from the view before.
                self.follow_other_replicas().await;
            }
            for event in page {
                self.events.seen.store(event.id, Ordering::SeqCst);
                // No watcher is not an error.
                let _ = self.events.live.send(Arc::new(event));
            }
            if !full {
                return Ok(read);
            }
        }
    }

    /// Wakes the event follower: a local write just committed events.
    pub(super) fn events_written(&self) {
        self.events.nudge.notify_one();
    }

    /// Waits for a local write's nudge, or `period`.
    pub async fn events_nudged(&self, period: Duration) {
        let _ = tokio::time::timeout(period, self.events.nudge.notified()).await;
    }

    /// The grant of an authenticated caller (for a call already admitted).
    fn grant_of(&self, caller: &Caller) -> Result<Arc<Grant>> {
        match &caller.credential {
            super::Credential::ApiToken(Some(token)) => self.authenticate(token.expose()),
            super::Credential::Local(who) => Ok(Arc::new(Grant {
                name: (*who).to_string(),
                role: crate::domain::access::Role::Admin,
                keysets: Vec::new(),
                clients: Vec::new(),
            })),
            _ => Err(Error::Unauthenticated("a watch needs an API token")),
        }
    }

    /// A stream of the events `filter` passes and the caller may see:
    /// after `after` (every kept event after that id, then live ones), or
    /// from now on. The stream ends with `UNAUTHENTICATED` when the token is
    /// revoked or expires, and with `FAILED_PRECONDITION` when events after
    /// `after` were already pruned.
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        filter: EventFilter,
        after: Option<i64>,
    ) -> Result<mpsc::Receiver<Result<Event>>> {
        self.grant_of(caller)?;
        // Subscribed before the catch-up read: nothing falls between them.
        let mut live = self.events.live.subscribe();
        let cursor = match after {
            None => self.events.seen.load(Ordering::SeqCst),
            Some(after) if after < 0 => {
                return Err(Error::invalid("after_id", "must be 0 or more"));
            }
            Some(after) => {
                let bounds = self.store.event_bounds().await?;
                if after > bounds.last {
                    return Err(Error::invalid(
                        "after_id",
                        format!(
                            "no event {after} was ever written (the last is {})",
                            bounds.last
                        ),
                    ));
                }
                if after < bounds.pruned_through {
                    return Err(Error::FailedPrecondition(format!(
                        "events after {after} up to {} were pruned by event retention; read \
                         the current state again and watch from now (omit after_id)",
                        bounds.pruned_through
                    )));
                }
                after
            }
        };
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let service = Arc::clone(self);
        let caller = caller.clone();
        tokio::spawn(async move {
            let mut watcher = Watcher {
                service,
                caller,
                filter,
                cursor,
                tx,
            };
            if watcher.catch_up().await.is_err() {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(event) => {
                        if watcher.offer(&event).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if watcher.catch_up().await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    /// Creates a webhook and its signing secret, sealed like every secret.
    pub async fn create_webhook(&self, input: WebhookInput) -> Result<CreatedWebhook> {
        model::validate_webhook_name(&input.name)?;
        validate_webhook_url(&input.url)?;
        let now = self.clock.now();
        let secret = SecretString::new(format!(
            "whsec_{}",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                random::unguessable::<32>()
            )
        ));
        let row_name = webhook_secret_name(&input.name);
        let sealed = self
            .keyring
            .seal(&meta_row(&row_name), secret.expose().as_bytes());
        let hook = WebhookRow {
            name: input.name,
            url: input.url,
            filter: input.filter,
            after_event: 0,
            created_at: now,
        };
        let webhook = self
            .store
            .insert_webhook(&hook, self.keyring.id(), &sealed)
            .await?;
        tracing::info!(webhook = webhook.name, url = webhook.url, "webhook created");
        Ok(CreatedWebhook { webhook, secret })
    }

    /// Every webhook.
    pub async fn list_webhooks(&self) -> Result<Vec<WebhookRow>> {
        self.store.list_webhooks().await
    }

    /// Deletes a webhook, its secret and its deliveries.
    pub async fn delete_webhook(&self, name: &str) -> Result<()> {
        if !self.store.delete_webhook(name).await? {
            return Err(Error::NotFound(format!("webhook {name:?} does not exist")));
        }
        tracing::info!(webhook = name, "webhook deleted");
        Ok(())
    }

    /// A webhook's latest deliveries, newest first.
    pub async fn webhook_deliveries(&self, name: &str, limit: u32) -> Result<Vec<DeliveryRow>> {
        if self.store.get_webhook(name).await?.is_none() {
            return Err(Error::NotFound(format!("webhook {name:?} does not exist")));
        }
        let limit = match limit {
            0 => 100,
            n => i64::from(n.min(1000)),
        };
        self.store.deliveries(name, limit).await
    }

    /// Queues the deliveries of events not yet queued, then claims up to
    /// `limit` due ones for `claim` (a replica's delivery round) for `hold`.
    pub async fn due_deliveries(
        &self,
        claim: &str,
        hold: Duration,
        limit: i64,
    ) -> Result<Vec<Claimed>> {
        let now = self.clock.now();
        // Idle rounds read; only work takes the write lock.
        let (queue, due) = self.store.delivery_work(now).await?;
        if queue {
            while self.store.queue_deliveries(now, PAGE).await? > 0 {}
        } else if !due {
            return Ok(Vec::new());
        }
        let hold = i64::try_from(hold.as_secs()).unwrap_or(i64::MAX);
        self.store
            .claim_deliveries(claim, now, now.saturating_add(hold), limit)
            .await
    }

    /// A webhook's signing secret, opened.
    pub async fn webhook_secret(&self, webhook: &str) -> Result<SecretBytes> {
        let name = webhook_secret_name(webhook);
        let (key_id, sealed) = self
            .store
            .meta(&name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("webhook {webhook:?} has no secret")))?;
        self.keyring
            .open(&meta_row(&name), &key_id, &sealed)
            .map_err(|err| super::opening_failed(&meta_row(&name), &key_id, &err))
    }

    /// Records a delivery attempt: delivered, or failed (`error`, with the
    /// receiver's status if it answered) and retried with backoff until
    /// [`MAX_ATTEMPTS`].
    pub async fn record_delivery(
        &self,
        claim: &str,
        delivery: &Claimed,
        status: Option<u16>,
        error: Option<String>,
    ) -> Result<()> {
        let now = self.clock.now();
        let attempts = delivery.attempts + 1;
        let retry_at = match &error {
            Some(_) if attempts < MAX_ATTEMPTS => Some(now + backoff(attempts)),
            _ => None,
        };
        self.metrics.webhook_attempt(match (&error, retry_at) {
            (None, _) => "delivered",
            (Some(_), Some(_)) => "retry",
            (Some(_), None) => "failed",
        });
        if let (Some(reason), None) = (&error, retry_at) {
            tracing::warn!(webhook = delivery.webhook, event = delivery.event.id, attempts, error = %reason, "webhook delivery failed for good");
        }
        let attempt = Attempt {
            at: now,
            status: status.map(i64::from),
            error,
            retry_at,
        };
        self.store
            .record_attempt(claim, &delivery.webhook, delivery.event.id, &attempt)
            .await?;
        Ok(())
    }

    /// Records events that go with no stored change (alerts, failures).
    pub async fn raise(&self, events: &[NewEvent]) -> Result<u64> {
        let stored = self.store.append_events(events).await?;
        if stored > 0 {
            self.events_written();
        }
        Ok(stored)
    }

    /// Deletes events (and finished deliveries) older than `retain`.
    pub async fn prune_events(&self, retain: Duration) -> Result<u64> {
        let before = self
            .clock
            .now()
            .saturating_sub(i64::try_from(retain.as_secs()).unwrap_or(i64::MAX));
        self.store.prune_events(before).await
    }
}

/// A webhook URL: `http://` or `https://`, a host, no credentials in it.
fn validate_webhook_url(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| Error::invalid("url", "must be an https:// (or http://) URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Error::invalid("url", "names no host"));
    }
    if authority.contains('@') {
        return Err(Error::invalid(
            "url",
            "must not carry credentials; receivers check the signature header instead",
        ));
    }
    if url.len() > 2048 || url.chars().any(char::is_whitespace) {
        return Err(Error::invalid("url", "is not a URL"));
    }
    Ok(())
}

/// One `Watch` stream's state.
struct Watcher {
    service: Arc<Service>,
    caller: Caller,
    filter: EventFilter,
    /// The last event id considered.
    cursor: i64,
    tx: mpsc::Sender<Result<Event>>,
}

/// The watcher is gone (or its token is): the stream ends.
struct Ended;

impl Watcher {
    /// Sends what the database holds after the cursor.
    async fn catch_up(&mut self) -> std::result::Result<(), Ended> {
        loop {
            let page = match self.service.store.events_after(self.cursor, PAGE).await {
                Ok(page) => page,
                Err(err) => {
                    let _ = self.tx.send(Err(err)).await;
                    return Err(Ended);
                }
            };
            let full = page.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
            for event in page {
                self.offer(&event).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Sends `event` if it is new, passes the filter and the token (checked
    /// again: it may have been revoked) may see it.
    async fn offer(&mut self, event: &Event) -> std::result::Result<(), Ended> {
        if event.id <= self.cursor {
            return Ok(());
        }
        self.cursor = event.id;
        if !self.filter.matches(event) {
            return Ok(());
        }
        let grant = match self.service.grant_of(&self.caller) {
            Ok(grant) => grant,
            Err(err) => {
                let _ = self.tx.send(Err(err)).await;
                return Err(Ended);
            }
        };
        if !event.visible_to(&grant) {
            return Ok(());
        }
        self.tx.send(Ok(event.clone())).await.map_err(|_| Ended)
    }
}

/// An event in CloudEvents 1.0's structured JSON form, as webhooks POST it.
pub fn cloud_event(source: &str, event: &Event) -> Vec<u8> {
    let subject = match (&event.subject, event.kind) {
        (Subject { kid: Some(kid), .. }, _) => format!(
            "keysets/{}/keys/{kid}",
            event.subject.keyset.as_deref().unwrap_or_default()
        ),
        (
            Subject {
                keyset: Some(k), ..
            },
            _,
        ) => format!("keysets/{k}"),
        (
            Subject {
                client: Some(c), ..
            },
            _,
        ) => format!("clients/{c}"),
        (Subject { token: Some(t), .. }, _) => format!("tokens/{t}"),
        (_, EventKind::SealChanged) => "seals".to_string(),
        _ => "master".to_string(),
    };
    let body = serde_json::json!({
        "specversion": "1.0",
        "id": event.id.to_string(),
        "source": source,
        "type": format!("io.keyward.{}", event.kind),
        "time": model::format_time(event.at),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {
            "id": event.id,
            "kind": event.kind.as_str(),
            "keyset": event.subject.keyset,
            "kid": event.subject.kid,
            "client": event.subject.client,
            "token": event.subject.token,
            "detail": event.detail,
        },
    });
    body.to_string().into_bytes()
}
