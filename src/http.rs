//! The HTTP transport: JWKS from the in-memory snapshot, and health probes.
//! Unauthenticated by design: it publishes only public keys.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{Error, model, service::Keyward};

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The service.
    pub svc: Arc<Keyward>,
    /// The key set `/.well-known/jwks.json` serves.
    pub default_keyset: Arc<str>,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(default_jwks))
        .route("/keysets/{name}/jwks.json", get(keyset_jwks))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn default_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let name = Arc::clone(&state.default_keyset);
    jwks_response(&state, &name, &headers)
}

async fn keyset_jwks(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(err) = model::validate_keyset_name(&name) {
        return err.into_response();
    }
    jwks_response(&state, &name, &headers)
}

fn jwks_response(state: &HttpState, name: &str, headers: &HeaderMap) -> Response {
    let doc = match state.svc.jwks(name) {
        Ok(doc) => doc,
        Err(err) => return err.into_response(),
    };
    let cache_control = format!("public, max-age={}", doc.max_age);
    let not_modified = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag == doc.etag);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = doc.body.clone().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&doc.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    response
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.svc.store().ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn not_found() -> Response {
    Error::NotFound("no such resource".into()).into_response()
}
