//! Public documents: each key set's JWKS and the issuer's, from the
//! in-memory snapshot with a strong ETag and `Cache-Control`, and OIDC
//! discovery. Any web origin may read them.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::HttpState;
use crate::view::JwksDoc;

pub(super) async fn default_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    jwks_response(&state, state.service.default_keyset(), &headers)
}

pub(super) async fn keyset_jwks(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    jwks_response(&state, &name, &headers)
}

/// The issuer's JWKS (discovery's `jwks_uri`): the default key set's keys and
/// those of every key set that signs some client's tokens.
pub(super) async fn issuer_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    jwks_document(&state.service.issuer_keys().jwks, &headers)
}

fn jwks_response(state: &HttpState, name: &str, headers: &HeaderMap) -> Response {
    match state.service.jwks(name) {
        Ok(doc) => jwks_document(&doc, headers),
        Err(err) => {
            let mut response = err.into_response();
            public_document(response.headers_mut());
            response
        }
    }
}

/// A JWKS with its ETag and max-age; `304` when `If-None-Match` holds it.
fn jwks_document(doc: &JwksDoc, headers: &HeaderMap) -> Response {
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
    public_document(h);
    response
}

/// Public, credential-free documents (JWKS, discovery) may be read by any web
/// origin: single-page apps and browser-based verifiers fetch them.
fn public_document(h: &mut HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("ETag"),
    );
}

/// OpenID Provider metadata: what keyward really offers, no more.
pub(super) async fn discovery(State(state): State<HttpState>) -> Response {
    let issuer = state.service.issuer().to_string();
    // Exactly the algorithms of the keys at jwks_uri.
    let algs = state.service.issuer_keys().algorithms.clone();
    let doc = serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/oauth2/jwks.json"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        // No authorization endpoint: keyward issues tokens to clients only.
        "response_types_supported": [],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "claims_supported": ["iss", "sub", "aud", "iat", "exp", "jti", "scope", "client_id"],
    });
    let mut response = Json(doc).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    public_document(response.headers_mut());
    response
}
