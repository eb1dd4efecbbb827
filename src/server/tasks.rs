//! What runs beside the listeners, each on its own period until shutdown:
//! following changes other replicas make, the built-in rotation scheduler
//! and audit retention.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::watch, task::JoinHandle};

use crate::service::Service;

/// How often each process polls the database for changes made elsewhere.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How old the in-memory views may get, unread from the database, before
/// authenticated calls are refused (ten polls missed).
pub const MAX_VIEW_AGE: Duration = Duration::from_secs(5);

/// Runs `tick` now and then every `period` (a late tick is delayed, never
/// doubled) until `shutdown` flips to true.
pub(super) async fn every<F, Fut>(
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A tick in progress runs to its end; none starts after shutdown.
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            _ = ticker.tick() => tick().await,
        }
    }
}

/// Spawns `tick(service)` every `period` until `stop` (see [`every`]).
fn spawn_every<F, Fut>(
    service: &Arc<Service>,
    period: Duration,
    stop: watch::Receiver<bool>,
    tick: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Service>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let service = Arc::clone(service);
    tokio::spawn(every(period, stop, move || tick(Arc::clone(&service))))
}

/// How often each replica prunes audit events past retention.
const AUDIT_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Follows the database: views reload what other replicas changed.
pub(super) fn follow_replicas(
    service: &Arc<Service>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(service, WATCH_INTERVAL, stop, |service| async move {
        service.follow_other_replicas().await;
    })
}

/// The built-in scheduler: the same sweep `keyward rotate` runs, every
/// `period`. Safe beside other replicas and cron: each transition is
/// conditional, so only one of them applies it.
pub(super) fn rotate_on_schedule(
    service: &Arc<Service>,
    period: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(service, period, stop, move |service| async move {
        if let Err(err) = service.rotate_due(None, false).await {
            tracing::warn!(error = %err, "scheduled rotation sweep failed; retrying next tick");
            service.rotation_failed(&err.to_string()).await;
        }
    })
}

/// The event feed: reads new events (every replica's) for this process's
/// watchers, at once after a local write and every [`EVENT_POLL`] for the
/// others'.
pub(super) fn follow_events(
    service: &Arc<Service>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let service = Arc::clone(service);
    tokio::spawn(async move {
        loop {
            if let Err(err) = service.follow_events().await {
                tracing::warn!(error = %err, "reading change events failed; retrying");
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                () = service.events_nudged(EVENT_POLL) => {}
            }
        }
    })
}

/// How often each replica looks for near-expiry alerts.
const ALERT_EVERY: Duration = Duration::from_secs(60);

/// The alert sweep: near-expiry and overdue-rotation events, each stored
/// once whatever the number of replicas.
pub(super) fn raise_alerts(
    service: &Arc<Service>,
    overdue: Duration,
    ahead: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(service, ALERT_EVERY, stop, move |service| async move {
        if let Err(err) = service.raise_alerts(overdue, ahead).await {
            tracing::warn!(error = %err, "the alert sweep failed; retrying next minute");
        }
    })
}

/// How often the event feed reads events other replicas wrote.
pub const EVENT_POLL: Duration = Duration::from_millis(250);

/// Event retention: events older than `retain` (that every webhook has)
/// are pruned hourly.
pub(super) fn prune_events(
    service: &Arc<Service>,
    retain: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(
        service,
        AUDIT_PRUNE_EVERY,
        stop,
        move |service| async move {
            if let Err(err) = service.prune_events(retain).await {
                tracing::warn!(error = %err, "event retention failed; retrying next hour");
            }
        },
    )
}

/// Audit retention: events older than `retain` are pruned hourly.
pub(super) fn prune_audit(
    service: &Arc<Service>,
    retain: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_every(
        service,
        AUDIT_PRUNE_EVERY,
        stop,
        move |service| async move {
            if let Err(err) = service.prune_audit(retain).await {
                tracing::warn!(error = %err, "audit retention failed; retrying next hour");
            }
        },
    )
}
