//! What every HTTP request gets, as a middleware around the routes: its
//! client's address (behind trusted proxies), its request id (the caller's `x-request-id` when sane, else a new one) on its
//! log lines, in its extensions for the audit log, and back on the response;
//! its route (the router's matched path, so a client cannot grow the metrics
//! with paths of its own), status and latency in the metrics.

use std::sync::RwLock;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use tracing::Instrument as _;

use super::HttpState;
use crate::{
    service::Service,
    transport::{
        net::Peer,
        observe::{REQUEST_ID, RequestId, request_id_header, request_id_of},
    },
};

/// The route label of a request: the path pattern it matched, or `other`.
fn route_of(request: &Request) -> &'static str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", |path| intern(path.as_str()))
}

/// The router's path patterns, each kept once for the process: metric labels
/// borrow them for good. Bounded by the routes the router has. Each thread
/// remembers those it has seen, so the shared list is read only the first
/// time a thread meets a route.
fn intern(path: &str) -> &'static str {
    static ROUTES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let known = |routes: &[&'static str]| routes.iter().copied().find(|r| *r == path);
    if let Some(route) = SEEN.with_borrow(|seen| known(seen)) {
        return route;
    }
    let shared = known(
        &ROUTES
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let route = shared.unwrap_or_else(|| {
        let mut routes = ROUTES
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        known(&routes).unwrap_or_else(|| {
            let route: &'static str = Box::leak(path.to_string().into_boxed_str());
            routes.push(route);
            route
        })
    });
    SEEN.with_borrow_mut(|seen| seen.push(route));
    route
}

/// The middleware.
pub(super) async fn observe(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = route_of(&request);
    let (id, header) = request_id_of(request.headers());
    let span = tracing::info_span!("http", request_id = %id, route);
    if let Some(Peer(addr)) = request.extensions().get::<Peer>().copied() {
        let client = state.proxies.client_of(addr.ip(), request.headers());
        request.extensions_mut().insert(client);
    }
    request.extensions_mut().insert(RequestId(id));
    let response = next.run(request).instrument(span).await;
    observed(&state.service, route, started, header, response)
}

/// A response on its way out: the request id `header` on it, its route,
/// status and latency in the metrics.
pub(super) fn observed(
    service: &Service,
    route: &'static str,
    started: std::time::Instant,
    header: Option<HeaderValue>,
    mut response: Response,
) -> Response {
    if let Some(id) = header {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    service
        .metrics()
        .http_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// What the middleware gives a request the front answered itself (a JWKS
/// GET): its request id back on the response, its route, status and latency
/// in the metrics. No log span: nothing on that path logs. The caller's id is
/// sent back as it came; a new one is drawn only when it sent none (or an
/// unusable one).
pub(super) fn answered(
    service: &Service,
    route: &'static str,
    started: std::time::Instant,
    request: &axum::http::HeaderMap,
    response: Response,
) -> Response {
    observed(
        service,
        route,
        started,
        request_id_header(request),
        response,
    )
}

#[cfg(test)]
mod tests {
    use super::intern;

    #[test]
    fn a_route_is_kept_once() {
        let a = intern("/keysets/{name}/jwks.json");
        let b = intern(&String::from("/keysets/{name}/jwks.json"));
        assert!(std::ptr::eq(a, b));
    }
}
