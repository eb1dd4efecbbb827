//! What serves each HTTP connection. A plain GET of a JWKS is answered here,
//! from the thread's copy of the document, with its request id and metrics
//! ([`observe::answered`]) but without the router, its middleware and its
//! per-request allocations: it is the request verifiers make most, and the
//! one a static file server is the yardstick for. A `POST /oauth2/token` is
//! answered here too ([`token::front`]), with what the middleware and its
//! route give it, but without the router's layers. Everything else (and a
//! HEAD, or a key set name with escapes) goes through the router.

use std::{convert::Infallible, net::SocketAddr, pin::Pin};

use axum::{
    Router,
    http::{Method, Request},
    response::Response,
    routing::future::RouteFuture,
};
use futures_util::future::{Either, FutureExt as _, Ready, ready};
use hyper::body::Incoming;

use super::{HttpState, jwks, observe, token};
use crate::transport::net::Peer;

/// An HTTP application: its router, and the state whose JWKS and token
/// endpoint the front answers itself (none for routers without the request
/// middleware).
#[derive(Debug, Clone)]
pub struct HttpApp {
    router: Router,
    front: Option<HttpState>,
}

/// A token request the front answers.
type TokenFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl HttpApp {
    /// `router` alone: every request goes through it.
    pub fn routed(router: Router) -> Self {
        Self {
            router,
            front: None,
        }
    }

    /// `router`, with the JWKS and token endpoint of `state` answered by the
    /// front.
    pub(super) fn with_front(router: Router, state: HttpState) -> Self {
        Self {
            router,
            front: Some(state),
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
    type Future =
        Either<Ready<Result<Response, Infallible>>, Either<TokenFuture, RouteFuture<Infallible>>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(state) = &self.app.front
            && request.method() == Method::POST
            && request.uri().path() == token::PATH
        {
            let answered = token::front(state.clone(), self.peer, request).map(Ok);
            return Either::Right(Either::Left(Box::pin(answered)));
        }
        if let Some(HttpState { service, .. }) = &self.app.front
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
        Either::Right(Either::Right(tower::Service::call(
            &mut self.app.router.clone(),
            request,
        )))
    }
}
