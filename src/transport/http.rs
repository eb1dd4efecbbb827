//! The HTTP transport: JWKS from the in-memory snapshot, OIDC discovery, the
//! OAuth client-credentials token endpoint (audited like every gRPC call), and
//! health probes. Only the token endpoint authenticates: the rest publishes
//! public keys and metadata.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Path, Request, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use tracing::Instrument as _;

use crate::{
    Error,
    domain::audit::{self, AuditEvent, Durability},
    domain::model::AuthMethod,
    domain::secret::SecretString,
    error::ErrorKind,
    service::{OAuthError, Service, TokenRequest},
    view::JwksDoc,
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

/// Largest token request body.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 8 * 1024;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The service.
    pub service: Arc<Service>,
}

/// The HTTP routes; with `metrics`, `/metrics` too (otherwise it is served
/// on its own listener by [`metrics_router`], or not at all). Every request
/// gets a request id and is counted (see `observe`).
pub fn router(state: HttpState, metrics: bool) -> Router {
    routes(metrics)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// [`router`] without request ids and request metrics: what
/// `benches/service.rs` measures their cost against. Not served.
pub fn unobserved_router(state: HttpState, metrics: bool) -> Router {
    routes(metrics).with_state(state)
}

fn routes(metrics: bool) -> Router<HttpState> {
    let router = Router::new()
        .route("/.well-known/jwks.json", get(default_jwks))
        .route("/keysets/{name}/jwks.json", get(keyset_jwks))
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/jwks.json", get(issuer_jwks))
        .route(
            "/oauth2/token",
            post(token).layer(DefaultBodyLimit::max(MAX_TOKEN_REQUEST_BYTES)),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    let router = if metrics {
        router.route(METRICS_PATH, get(metrics_text))
    } else {
        router
    };
    router.fallback(not_found)
}

/// `/metrics` alone, for `--metrics-addr`.
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route(METRICS_PATH, get(metrics_text))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Where Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// The route label of a request path: one of the router's fixed paths, so a
/// client cannot grow the metrics with paths of its own.
fn route_of(path: &str) -> &'static str {
    const FIXED: &[&str] = &[
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/oauth2/jwks.json",
        "/oauth2/token",
        "/healthz",
        "/readyz",
        METRICS_PATH,
    ];
    if let Some(route) = FIXED.iter().find(|route| **route == path) {
        return route;
    }
    let keyset_jwks = path
        .strip_prefix("/keysets/")
        .and_then(|rest| rest.strip_suffix("/jwks.json"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'));
    if keyset_jwks {
        "/keysets/{name}/jwks.json"
    } else {
        "other"
    }
}

/// Every HTTP request: its request id (the caller's `x-request-id` when sane,
/// else a new one) goes on its log lines, into its extensions for the audit
/// log, and back in the response; its route, status and latency into the
/// metrics.
async fn observe(State(state): State<HttpState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = route_of(request.uri().path());
    let id = audit::request_id(
        request
            .headers()
            .get(audit::REQUEST_ID)
            .and_then(|v| v.to_str().ok()),
    );
    let header = HeaderValue::from_str(&id).ok();
    let span = tracing::info_span!("http", request_id = %id, route);
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).instrument(span).await;
    if let Some(id) = header {
        response.headers_mut().insert(audit::REQUEST_ID, id);
    }
    state
        .service
        .metrics()
        .http_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// The request id of an HTTP request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn metrics_text(State(state): State<HttpState>) -> Response {
    let mut response = state.service.metrics().render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::ops::metrics::CONTENT_TYPE),
    );
    no_store(response.headers_mut());
    response
}

async fn default_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    jwks_response(&state, state.service.default_keyset(), &headers)
}

async fn keyset_jwks(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    jwks_response(&state, &name, &headers)
}

/// The issuer's JWKS (discovery's `jwks_uri`): the default key set's keys and
/// those of every key set that signs some client's tokens.
async fn issuer_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
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
async fn discovery(State(state): State<HttpState>) -> Response {
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

/// An RFC 6749 §5.2 error response.
fn oauth_error(err: &OAuthError) -> Response {
    if let OAuthError::Server(inner) = err {
        tracing::error!(error = %inner, "token endpoint failed");
        inner.log_cause();
    }
    let status = http_status(err.kind());
    let description = match err {
        OAuthError::Server(inner @ Error::AuditUnavailable) => inner.to_string(),
        OAuthError::Server(_) => "internal error".to_string(),
        other => other.to_string(),
    };
    let body = serde_json::json!({ "error": err.code(), "error_description": description });
    let mut response = (status, Json(body)).into_response();
    let h = response.headers_mut();
    if let OAuthError::Throttled(wait) = err {
        h.insert(header::RETRY_AFTER, HeaderValue::from(*wait));
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keyward\""),
        );
    }
    no_store(h);
    response
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// `Authorization: Basic` credentials, form-urlencoded inside (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, SecretString)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::InvalidClient("malformed Basic credentials".into());
    let text = value.to_str().map_err(|_| malformed())?;
    let Some(encoded) = text
        .strip_prefix("Basic ")
        .or_else(|| text.strip_prefix("basic "))
    else {
        return Err(OAuthError::InvalidClient(
            "only Basic client authentication is accepted in the Authorization header".into(),
        ));
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = SecretString::new(String::from_utf8(decoded).map_err(|_| malformed())?);
    let (id, secret) = decoded.expose().split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = SecretString::new(form_decode(secret).ok_or_else(malformed)?);
    Ok(Some((id, secret)))
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /oauth2/token`: the client-credentials grant. Every request, refused
/// or not, leaves an audit event; a failed client authentication is stored
/// before the answer is sent.
async fn token(State(state): State<HttpState>, request: Request) -> Response {
    let headers = request.headers().clone();
    let peer = request
        .extensions()
        .get::<crate::transport::net::Peer>()
        .map(|p| p.0.ip());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or_else(audit::new_request_id, |id| id.0.clone());
    let body = Bytes::from_request(request, &()).await;
    // An unreadable body keeps its own status (413 when too large).
    let body_status = body.as_ref().err().map(BytesRejection::status);
    let (principal, result) = match token_request(&headers, body) {
        Ok(mut req) => {
            req.peer = peer;
            let client = req.client_id.clone();
            (client, state.service.client_credentials(req).await)
        }
        Err(rejected) => (String::new(), Err(rejected)),
    };
    let (outcome, durability) = match &result {
        Ok(_) => (audit::OK, Durability::Batched),
        Err(err @ OAuthError::InvalidClient(_)) => (err.code(), Durability::BeforeResponse),
        Err(err) => (err.code(), Durability::Batched),
    };
    let event = AuditEvent {
        at: state.service.now(),
        principal,
        action: audit::TOKEN_ENDPOINT.to_string(),
        target: String::new(),
        outcome: outcome.to_string(),
        peer: peer.map(|p| p.to_string()).unwrap_or_default(),
        request_id: request_id.clone(),
    };
    let result = match state.service.audit(event, durability).await {
        Ok(()) => result,
        Err(err) => Err(OAuthError::Server(err)),
    };
    let mut response = match result {
        Ok(issued) => {
            let body = serde_json::json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            });
            let mut response = Json(body).into_response();
            no_store(response.headers_mut());
            response
        }
        Err(err) => oauth_error(&err),
    };
    if let Some(status) = body_status {
        *response.status_mut() = status;
    }
    response
}

/// Reads a token request: its form body and client authentication
/// (RFC 6749 §2.3.1, §4.4.2).
fn token_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<TokenRequest, OAuthError> {
    let body = body.map_err(|_| {
        OAuthError::InvalidRequest(format!(
            "the request body could not be read; it may be at most {MAX_TOKEN_REQUEST_BYTES} bytes"
        ))
    })?;
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err(OAuthError::InvalidRequest(
            "send the parameters as application/x-www-form-urlencoded".into(),
        ));
    }
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(&body) {
        if params.iter().any(|(seen, _)| *seen == k) {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter {k:?} is repeated"
            )));
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    let mut take = |name: &str| {
        params
            .iter()
            .position(|(k, _)| k == name)
            .map(|i| params.swap_remove(i).1)
    };
    let grant_type = take("grant_type");
    let scope = take("scope");
    let form_id = take("client_id");
    let form_secret = take("client_secret").map(SecretString::new);
    let basic = basic_credentials(headers)?;
    let (client_id, client_secret, auth_method) = match (basic, form_id, form_secret) {
        (Some(_), _, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "use one client authentication method: Basic or client_secret in the body, not both".into(),
            ));
        }
        (Some((id, _)), Some(form_id), None) if form_id != id => {
            return Err(OAuthError::InvalidRequest(
                "client_id in the body differs from the Basic credentials".into(),
            ));
        }
        (Some((id, secret)), _, None) => (id, secret, AuthMethod::ClientSecretBasic),
        (None, Some(id), Some(secret)) => (id, secret, AuthMethod::ClientSecretPost),
        (None, _, _) => {
            return Err(OAuthError::InvalidClient(
                "client authentication is required: HTTP Basic, or client_id and client_secret in the body".into(),
            ));
        }
    };
    Ok(TokenRequest {
        grant_type,
        scope,
        client_id,
        client_secret,
        auth_method,
        peer: None,
    })
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
    use super::{ErrorKind, StatusCode, form_decode, http_status};
    use crate::transport::grpc::grpc_code;

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
                http_status(kind),
                StatusCode::from_u16(status).unwrap(),
                "{kind:?}"
            );
        }
        let oauth = [
            (
                crate::service::OAuthError::InvalidClient(String::new()),
                401,
            ),
            (crate::service::OAuthError::InvalidScope(String::new()), 400),
            (
                crate::service::OAuthError::Server(crate::Error::internal("x")),
                500,
            ),
        ];
        for (err, status) in oauth {
            assert_eq!(http_status(err.kind()).as_u16(), status, "{err:?}");
        }
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%26c%3D%2B").as_deref(), Some("a b&c=+"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("bad%2"), None);
        assert_eq!(form_decode("bad%zz"), None);
        assert_eq!(form_decode("%FF"), None, "not UTF-8");
    }

    mod properties {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, HeaderValue, header};
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        use proptest::prelude::*;

        use super::super::{basic_credentials, form_decode, token_request};

        fn form_encode(s: &str) -> String {
            form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }

        proptest! {
            #[test]
            fn form_decoding_never_panics_and_inverts_encoding(text in ".*", raw in ".*") {
                let _ = form_decode(&raw);
                prop_assert_eq!(form_decode(&form_encode(&text)), Some(text));
            }

            #[test]
            fn basic_headers_never_panic(value in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut headers = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_bytes(&value) {
                    headers.insert(header::AUTHORIZATION, v);
                }
                let _ = basic_credentials(&headers);
            }

            #[test]
            fn basic_credentials_round_trip(id in "[^\\x00]{1,40}", secret in ".{0,60}") {
                let encoded = STANDARD.encode(format!("{}:{}", form_encode(&id), form_encode(&secret)));
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::AUTHORIZATION,
                    HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
                );
                let (got_id, got_secret) = basic_credentials(&headers).ok().flatten().unwrap();
                prop_assert_eq!(got_id, id);
                prop_assert_eq!(got_secret.expose(), secret.as_str());
            }

            #[test]
            fn token_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
                let mut headers = HeaderMap::new();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                let _ = token_request(&headers, Ok(Bytes::from(body)));
            }
        }
    }
}
