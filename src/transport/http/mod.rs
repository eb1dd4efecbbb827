//! The HTTP transport: JWKS from the in-memory snapshot and OIDC discovery
//! ([`jwks`]), the OAuth client-credentials token endpoint ([`token`]), health
//! probes and `/metrics`. Only the token endpoint authenticates: the rest
//! publishes public keys and metadata. Every request gets a request id, a log
//! span and its count and latency in the metrics ([`observe`]); a JWKS GET,
//! answered by the [`front`] of each connection, needs no span.

mod front;
mod jwks;
mod observe;
pub mod token;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};

pub use front::{Connection, HttpApp};

use crate::{
    Error, error::ErrorKind, ops::metrics, service::Service, transport::proxy::TrustedProxies,
};

/// The HTTP status of each kind of error.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::DataLoss | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An RFC 9457 problem document.
#[derive(serde::Serialize)]
struct Problem {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_cause();
        let status = http_status(self.kind());
        let problem = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = (status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The service.
    pub service: Arc<Service>,
    /// The proxies whose `X-Forwarded-For` is believed.
    pub proxies: TrustedProxies,
}

/// The HTTP routes; with `metrics`, `/metrics` too (otherwise it is served
/// on its own listener by [`metrics_app`], or not at all), each request
/// observed, the JWKS and the token endpoint answered by the front.
pub fn app(state: HttpState, metrics: bool) -> HttpApp {
    let router = routes(metrics)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state.clone());
    HttpApp::with_front(router, state)
}

/// [`app`] without request ids and request metrics, every request through
/// the router: what `benches/service.rs` measures their cost against. Not
/// served.
pub fn unobserved_app(state: HttpState, metrics: bool) -> HttpApp {
    HttpApp::routed(routes(metrics).with_state(state))
}

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

fn routes(metrics: bool) -> Router<HttpState> {
    let router = Router::new()
        .route(jwks::DEFAULT_ROUTE, get(jwks::default_jwks))
        .route(jwks::KEYSET_ROUTE, get(jwks::keyset_jwks))
        .route("/.well-known/openid-configuration", get(jwks::discovery))
        .route(jwks::ISSUER_ROUTE, get(jwks::issuer_jwks))
        .route(
            token::PATH,
            post(token::token).layer(DefaultBodyLimit::max(token::MAX_TOKEN_REQUEST_BYTES)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // Served on its own listener, `/metrics` is still a route here, one
    // that answers 404: its requests are counted under its name.
    let router = if metrics {
        router.route(METRICS_PATH, get(metrics_text))
    } else {
        router.route(METRICS_PATH, any(not_found))
    };
    router.fallback(not_found)
}

/// `/metrics` alone, for `--metrics-addr`.
pub fn metrics_app(state: HttpState) -> HttpApp {
    HttpApp::routed(
        Router::new()
            .route(METRICS_PATH, get(metrics_text))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(
                state.clone(),
                observe::observe,
            ))
            .with_state(state),
    )
}

async fn metrics_text(State(state): State<HttpState>) -> Response {
    let mut response = state.service.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    no_store(response.headers_mut());
    response
}

/// Never cached: `/metrics` and every token response.
fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.service.ready().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn not_found() -> Response {
    Error::NotFound("no such resource".into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::{ErrorKind, StatusCode, http_status};
    use crate::{domain::oauth::OAuthError, transport::grpc::grpc_code};

    #[test]
    fn one_code_table_for_both_transports() {
        let table = [
            (
                ErrorKind::InvalidArgument,
                tonic::Code::InvalidArgument,
                400,
            ),
            (ErrorKind::NotFound, tonic::Code::NotFound, 404),
            (ErrorKind::AlreadyExists, tonic::Code::AlreadyExists, 409),
            (
                ErrorKind::FailedPrecondition,
                tonic::Code::FailedPrecondition,
                409,
            ),
            (
                ErrorKind::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (
                ErrorKind::PermissionDenied,
                tonic::Code::PermissionDenied,
                403,
            ),
            (
                ErrorKind::ResourceExhausted,
                tonic::Code::ResourceExhausted,
                429,
            ),
            (ErrorKind::DataLoss, tonic::Code::DataLoss, 500),
            (ErrorKind::Unavailable, tonic::Code::Unavailable, 503),
            (ErrorKind::Internal, tonic::Code::Internal, 500),
        ];
        for (kind, code, status) in table {
            assert_eq!(grpc_code(kind), code, "{kind:?}");
            assert_eq!(
                crate::transport::grpc::code_name(code),
                kind.name(),
                "the audit log names a failure as gRPC does: {kind:?}"
            );
            assert_eq!(
                http_status(kind),
                StatusCode::from_u16(status).unwrap(),
                "{kind:?}"
            );
        }
        let oauth = [
            (OAuthError::InvalidClient(String::new()), 401),
            (OAuthError::InvalidScope(String::new()), 400),
            (OAuthError::Server(crate::Error::internal("x")), 500),
        ];
        for (err, status) in oauth {
            assert_eq!(http_status(err.kind()).as_u16(), status, "{err:?}");
        }
    }
}
