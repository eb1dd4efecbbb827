//! `keyward.v1.Events` (the `Watch` stream) and `keyward.v1.Webhooks`.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::{
    Api, Reply, anonymous,
    pb::{self, events_server::Events, webhooks_server::Webhooks},
};
use crate::{
    domain::{access::Method, event::EventFilter},
    service::{
        Caller, Target,
        events::{DeliveryRow, WebhookInput, WebhookRow},
    },
};

fn event_pb(event: crate::domain::event::Event) -> pb::Event {
    let s = event.subject;
    pb::Event {
        id: event.id,
        kind: event.kind.as_str().to_string(),
        at: event.at,
        keyset: s.keyset.unwrap_or_default(),
        kid: s.kid.unwrap_or_default(),
        client: s.client.unwrap_or_default(),
        token: s.token.unwrap_or_default(),
        detail: event.detail.unwrap_or_default(),
    }
}

fn webhook_pb(hook: WebhookRow) -> pb::Webhook {
    pb::Webhook {
        name: hook.name,
        url: hook.url,
        kinds: EventFilter::texts(&hook.filter.kinds),
        keysets: EventFilter::texts(&hook.filter.keysets),
        clients: EventFilter::texts(&hook.filter.clients),
        created_at: hook.created_at,
        after_event_id: hook.after_event,
    }
}

fn delivery_pb(d: DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        event_id: d.event_id,
        state: d.state.as_str().to_string(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at,
        last_attempt_at: d.last_attempt_at.unwrap_or_default(),
        last_status: d
            .last_status
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or_default(),
        last_error: d.last_error.unwrap_or_default(),
        delivered_at: d.delivered_at.unwrap_or_default(),
    }
}

/// A watch's stream of events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Events for Api {
    type WatchStream = EventStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Reply<Self::WatchStream> {
        // The stream checks the caller's token again as it runs.
        let caller: Caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(anonymous);
        let everything = |_: &pb::WatchRequest| Target::None;
        self.call(req, Method::Watch, everything, |r| async move {
            let filter = EventFilter::parse(&r.kinds, &r.keysets, &r.clients)?;
            let events = self.service.watch(&caller, filter, r.after_id).await?;
            let stream: EventStream = Box::pin(
                ReceiverStream::new(events).map(|e| e.map(event_pb).map_err(Status::from)),
            );
            Ok(stream)
        })
        .await
    }
}

#[tonic::async_trait]
impl Webhooks for Api {
    async fn create_webhook(
        &self,
        req: Request<pb::CreateWebhookRequest>,
    ) -> Reply<pb::CreateWebhookResponse> {
        let target = |r: &pb::CreateWebhookRequest| Target::Named(r.name.clone());
        self.call(req, Method::CreateWebhook, target, |r| async move {
            let filter = EventFilter::parse(&r.kinds, &r.keysets, &r.clients)?;
            let created = self
                .service
                .create_webhook(WebhookInput {
                    name: r.name.clone(),
                    url: r.url.clone(),
                    filter,
                })
                .await?;
            Ok(pb::CreateWebhookResponse {
                webhook: Some(webhook_pb(created.webhook)),
                signing_secret: created.secret.expose().to_string(),
            })
        })
        .await
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Reply<pb::ListWebhooksResponse> {
        let everything = |_: &pb::ListWebhooksRequest| Target::None;
        self.call(req, Method::ListWebhooks, everything, |_| async move {
            let hooks = self.service.list_webhooks().await?;
            Ok(pb::ListWebhooksResponse {
                webhooks: hooks.into_iter().map(webhook_pb).collect(),
            })
        })
        .await
    }

    async fn delete_webhook(
        &self,
        req: Request<pb::DeleteWebhookRequest>,
    ) -> Reply<pb::DeleteWebhookResponse> {
        let target = |r: &pb::DeleteWebhookRequest| Target::Named(r.name.clone());
        self.call(req, Method::DeleteWebhook, target, |r| async move {
            self.service.delete_webhook(&r.name).await?;
            Ok(pb::DeleteWebhookResponse {})
        })
        .await
    }

    async fn list_webhook_deliveries(
        &self,
        req: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Reply<pb::ListWebhookDeliveriesResponse> {
        let target = |r: &pb::ListWebhookDeliveriesRequest| Target::Named(r.webhook.clone());
        self.call(req, Method::ListWebhookDeliveries, target, |r| async move {
            let rows = self.service.webhook_deliveries(&r.webhook, r.limit).await?;
            Ok(pb::ListWebhookDeliveriesResponse {
                deliveries: rows.into_iter().map(delivery_pb).collect(),
            })
        })
        .await
    }
}
