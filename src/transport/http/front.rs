//! What serves each HTTP connection. A plain GET of a JWKS is answered here,
//! from the thread's copy of the document, with its request id and metrics
//! ([`observe::answered`]) but without the router, its middleware and its
//! per-request allocations: it is the request verifiers make most, and the
//! one a static file server is the yardstick for. Everything else (and a
//! HEAD, or a key set name with escapes) goes through the router.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    http::{Method, Request},
    response::Response,
    routing::future::RouteFuture,
};
use futures_util::future::{Either, Ready, ready};
use hyper::body::Incoming;

use super::{jwks, observe};
use crate::{service::Service, transport::net::Peer};

/// An HTTP application: its router, and the service whose JWKS the front
/// answers itself (none for routers without the request middleware).
#[derive(Debug, Clone)]
pub struct HttpApp {
    router: Router,
    documents: Option<Arc<Service>>,
}

impl HttpApp {
    /// `router` alone: every request goes through it.
    pub fn routed(router: Router) -> Self {
        Self {
            router,
            documents: None,
        }
    }

    /// `router`, with `service`'s JWKS answered by the front.
    pub(super) fn with_documents(router: Router, service: Arc<Service>) -> Self {
        Self {
            router,
            documents: Some(service),
        }
    }

    /// The service for one connection from `peer`.
    pub fn connection(&self, peer: Option<SocketAddr>) -> Connection {
        Connection {
            app: self.clone(),
            peer,
        }
    }
}

/// [`HttpApp`] serving one connection.
#[derive(Debug, Clone)]
pub struct Connection {
    app: HttpApp,
    peer: Option<SocketAddr>,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, RouteFuture<Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(service) = &self.app.documents
            && request.method() == Method::GET
            && let Some((route, which)) = jwks::requested(request.uri().path())
        {
            let started = std::time::Instant::now();
            let response = jwks::reply(service, which, request.headers());
            return Either::Left(ready(Ok(observe::answered(
                service,
                route,
                started,
                request.headers(),
                response,
            ))));
        }
        // Handlers that throttle by address (the token endpoint) read it here.
        if let Some(addr) = self.peer {
            request.extensions_mut().insert(Peer(addr));
        }
        // A router is always ready: it needs no `poll_ready` first.
        Either::Right(tower::Service::call(&mut self.app.router.clone(), request))
    }
}
