//! Webhook delivery: each round queues what new events webhooks want (one
//! replica does it), claims due deliveries for this replica, and POSTs each
//! as a CloudEvent with a `keyward-signature` header, on its own task. A
//! slow or dead receiver costs a delivery slot for at most [`TIMEOUT`],
//! never a request; a replica killed mid-delivery leaves its claims to
//! expire, and another replica delivers them again (at least once).

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, watch},
    task::JoinHandle,
};

use crate::{
    crypto::{self, random},
    service::{Service, events::cloud_event},
    store::Claimed,
    transport::client::{self, Verb},
};

/// How often a replica looks for deliveries.
const ROUND: Duration = Duration::from_millis(500);
/// One POST's limit, connection to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds: past it, another replica may deliver again.
const HOLD: Duration = Duration::from_secs(60);
/// Deliveries in flight per replica.
const SLOTS: usize = 32;

/// Delivers webhooks every [`ROUND`] until `stop`.
pub(super) fn deliver(service: &Arc<Service>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let service = Arc::clone(service);
    let slots = Arc::new(Semaphore::new(SLOTS));
    tokio::spawn(super::tasks::every(ROUND, stop, move || {
        let service = Arc::clone(&service);
        let slots = Arc::clone(&slots);
        async move {
            if let Err(err) = round(&service, &slots).await {
                tracing::warn!(error = %err, "webhook delivery round failed; retrying");
            }
        }
    }))
}

async fn round(service: &Arc<Service>, slots: &Arc<Semaphore>) -> crate::Result<()> {
    let free = slots.available_permits();
    if free == 0 {
        return Ok(());
    }
    let claim = crate::crypto::b64url(&random::bytes::<12>());
    let due = service
        .due_deliveries(&claim, HOLD, i64::try_from(free).unwrap_or(1))
        .await?;
    for delivery in due {
        let Ok(permit) = Arc::clone(slots).acquire_owned().await else {
            return Ok(());
        };
        let service = Arc::clone(service);
        let claim = claim.clone();
        tokio::spawn(async move {
            let (status, error) = post(&service, &delivery).await;
            if let Err(err) = service
                .record_delivery(&claim, &delivery, status, error)
                .await
            {
                tracing::warn!(webhook = delivery.webhook, event = delivery.event.id, error = %err, "webhook delivery not recorded; it will be sent again");
            }
            drop(permit);
        });
    }
    Ok(())
}

/// POSTs one event: the receiver's status if it answered, and why the
/// delivery failed (anything but 2xx).
async fn post(service: &Service, delivery: &Claimed) -> (Option<u16>, Option<String>) {
    let secret = match service.webhook_secret(&delivery.webhook).await {
        Ok(secret) => secret,
        Err(err) => return (None, Some(format!("the signing secret: {err}"))),
    };
    let body = cloud_event(service.issuer(), &delivery.event);
    let timestamp = service.now();
    let signature = crypto::webhook_signature(secret.expose(), timestamp, &body);
    let (id, timestamp) = (delivery.event.id.to_string(), timestamp.to_string());
    let headers = [
        ("content-type", "application/cloudevents+json"),
        ("keyward-webhook", delivery.webhook.as_str()),
        ("keyward-event-id", id.as_str()),
        ("keyward-timestamp", timestamp.as_str()),
        ("keyward-signature", signature.as_str()),
    ];
    let sent = client::send(client::Request {
        method: Verb::Post,
        url: &delivery.url,
        headers: &headers,
        json: Some(&body),
        ca: None,
        timeout: TIMEOUT,
    })
    .await;
    match sent {
        Ok((status, _)) if (200..300).contains(&status) => (Some(status), None),
        Ok((status, _)) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
        ),
        Err(reason) => (None, Some(reason)),
    }
}
