//! Serving: gRPC and HTTP (and `/metrics` on its own listener when asked)
//! with the background tasks beside them, until shutdown; then stop
//! accepting, let in-flight requests finish within the grace, let a rotation
//! sweep under way finish, and write the audit events still queued.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::StreamExt as _;

use super::{App, tasks};
use crate::{
    Error, Result,
    transport::{
        grpc,
        http::{self, HttpState},
        net,
    },
};

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// HTTP: JWKS, discovery, the token endpoint, probes.
    pub http: TcpListener,
    /// `/metrics` alone (`--metrics-addr`); `None`: `/metrics` is on `http`.
    pub metrics: Option<TcpListener>,
}

/// Serves gRPC on `grpc` and HTTP (with `/metrics`) on `http` until
/// `shutdown` resolves, then stops accepting, lets in-flight requests finish
/// and returns.
pub async fn serve(
    app: App,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listeners = Listeners {
        grpc,
        http,
        metrics: None,
    };
    serve_on(app, listeners, shutdown).await
}

/// Resolves once `stop` says so.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// [`serve`], on the given listeners.
pub async fn serve_on(
    app: App,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let limits = app.config.limits;
    let grpc_addr = listeners.grpc.local_addr().map_err(Error::internal)?;
    let http_addr = listeners.http.local_addr().map_err(Error::internal)?;
    let metrics_addr = match &listeners.metrics {
        Some(listener) => Some(listener.local_addr().map_err(Error::internal)?),
        None => None,
    };

    let watcher = tasks::follow_replicas(&app.service, stop.clone());
    let tls_reload = app
        .tls
        .as_ref()
        .map(|tls| tokio::spawn(Arc::clone(tls).watch(stop.clone())));
    let (grpc_acceptor, grpc_server) = grpc_server(&app, listeners.grpc, &stop).await?;
    let (http_server, metrics_server) =
        http_servers(&app, listeners.http, listeners.metrics, &stop);

    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        metrics = %format!("{}/metrics", metrics_addr.unwrap_or(http_addr)),
        tls = app.tls.is_some(),
        mutual_tls = app.config.tls.as_ref().is_some_and(|t| t.grpc_client_ca.is_some()),
        backend = app.service.backend(),
        "keyward serving"
    );
    let scheduler = app
        .config
        .rotation_interval
        .map(|period| tasks::rotate_on_schedule(&app.service, period, stop.clone()));
    let retention = tasks::prune_audit(&app.service, app.config.audit_retain, stop.clone());
    let event_retention = tasks::prune_events(&app.service, app.config.event_retain, stop.clone());
    let event_feed = tasks::follow_events(&app.service, stop.clone());
    let deliveries = super::webhooks::deliver(&app.service, stop.clone());
    let alerts = tasks::raise_alerts(
        &app.service,
        app.config.rotation_overdue_after,
        app.config.alert_ahead,
        stop.clone(),
    );

    let both = async { tokio::join!(grpc_server, http_server) };
    // In-flight requests get the shutdown grace; connections still busy
    // after it (a client that never finishes its request) are dropped.
    let deadline = async {
        stopped(stop.clone()).await;
        tokio::time::sleep(limits.shutdown_grace).await;
    };
    let grpc_result = tokio::select! {
        (grpc_result, ()) = both => grpc_result,
        () = deadline => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    let helpers = [
        Some(grpc_acceptor),
        metrics_server,
        Some(watcher),
        Some(retention),
        Some(event_retention),
        Some(event_feed),
        Some(deliveries),
        Some(alerts),
        tls_reload,
    ];
    for task in helpers.into_iter().flatten() {
        task.abort();
    }
    finish_sweep(scheduler, limits.shutdown_grace).await;
    app.service.flush_audit().await;
    grpc_result.map_err(Error::internal)?;
    tracing::info!("keyward stopped");
    Ok(())
}

/// The gRPC server on `listener`: health and reflection beside the
/// `keyward.v1` services, every call observed ([`grpc::observe`]). Returns
/// its acceptor task and the server, which ends once `stop` says so.
async fn grpc_server(
    app: &App,
    listener: TcpListener,
    stop: &watch::Receiver<bool>,
) -> Result<(
    JoinHandle<()>,
    impl Future<Output = std::result::Result<(), tonic::transport::Error>> + use<>,
)> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<grpc::pb::key_sets_server::KeySetsServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::clients_server::ClientsServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::access_server::AccessServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::audit_server::AuditServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::master_server::MasterServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::events_server::EventsServer<grpc::Api>>()
        .await;
    health_reporter
        .set_serving::<grpc::pb::webhooks_server::WebhooksServer<grpc::Api>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(Error::internal)?;
    let reflection_alpha = reflection().build_v1alpha().map_err(Error::internal)?;
    let api = grpc::Api::new(Arc::clone(&app.service));
    let limits = app.config.limits;
    let (conns, accepted) = tokio::sync::mpsc::channel(1);
    let acceptor = tokio::spawn(net::accept_loop(listener, limits, conns, stop.clone()));
    let incoming = net::secured(
        accepted,
        app.tls.as_ref().map(|tls| tls.grpc_acceptor()),
        limits.header_timeout,
    );
    let server = tonic::transport::Server::builder()
        .layer(grpc::observe::ObserveLayer::new(
            Arc::clone(&app.service),
            app.config.trusted_proxies.clone(),
        ))
        // Finds peers that vanished without closing; the idle timeout closes
        // the ones that stay connected and say nothing.
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_alpha)
        .add_service(api.key_sets())
        .add_service(api.clients())
        .add_service(api.access())
        .add_service(api.audit())
        .add_service(api.master())
        .add_service(api.events())
        .add_service(api.webhooks())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming)
                .map(Ok::<_, std::convert::Infallible>),
            stopped(stop.clone()),
        );
    Ok((acceptor, server))
}

/// The HTTP server on `listener` (with `/metrics` unless `metrics` has a
/// listener of its own, served in plaintext for an internal scraper).
fn http_servers(
    app: &App,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    stop: &watch::Receiver<bool>,
) -> (impl Future<Output = ()> + use<>, Option<JoinHandle<()>>) {
    let state = HttpState {
        service: Arc::clone(&app.service),
        proxies: app.config.trusted_proxies.clone(),
    };
    let limits = app.config.limits;
    let server = net::serve_http(
        listener,
        http::app(state.clone(), metrics.is_none()),
        app.tls.as_ref().map(|tls| tls.http_acceptor()),
        limits,
        stop.clone(),
    );
    let metrics_server = metrics.map(|listener| {
        tokio::spawn(net::serve_http(
            listener,
            http::metrics_app(state),
            None,
            limits,
            stop.clone(),
        ))
    });
    (server, metrics_server)
}

/// A rotation sweep under way finishes (each key set's change is one
/// transaction either way) within the grace.
async fn finish_sweep(scheduler: Option<JoinHandle<()>>, grace: Duration) {
    if let Some(sweep) = scheduler
        && tokio::time::timeout(grace, sweep).await.is_err()
    {
        tracing::warn!(
            "a rotation sweep was still running after the shutdown grace; its current transaction rolls back"
        );
    }
}
