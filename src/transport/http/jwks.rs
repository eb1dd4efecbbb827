//! Public documents: each key set's JWKS and the issuer's, from the
//! in-memory snapshot with a strong ETag and `Cache-Control` (each thread
//! answering from its own copy), and OIDC discovery. Any web origin may read
//! them. The JWKS are the most requested thing keyward serves: the front
//! ([`super::front`]) answers plain GETs of them without the router.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper::body::Bytes;

use super::HttpState;
use crate::{
    Result,
    service::{DocumentsVersion, Service},
    view::JwksDoc,
};

/// The default key set's JWKS.
pub(super) const DEFAULT_ROUTE: &str = "/.well-known/jwks.json";
/// Each key set's JWKS.
pub(super) const KEYSET_ROUTE: &str = "/keysets/{name}/jwks.json";
/// The issuer's JWKS.
pub(super) const ISSUER_ROUTE: &str = "/oauth2/jwks.json";

/// Which JWKS a request asks for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Jwks<'a> {
    /// The default key set's.
    Default,
    /// The named key set's.
    KeySet(&'a str),
    /// The issuer's (discovery's `jwks_uri`): the default key set's keys and
    /// those of every key set that signs some client's tokens.
    Issuer,
}

/// The JWKS a GET of `path` asks for, with its route, when `path` is one of
/// theirs written plainly (a name with escapes is left to the router, which
/// decodes it): what the front answers without the router.
pub(super) fn requested(path: &str) -> Option<(&'static str, Jwks<'_>)> {
    match path {
        DEFAULT_ROUTE => Some((DEFAULT_ROUTE, Jwks::Default)),
        ISSUER_ROUTE => Some((ISSUER_ROUTE, Jwks::Issuer)),
        _ => {
            let name = path.strip_prefix("/keysets/")?.strip_suffix("/jwks.json")?;
            (!name.is_empty() && !name.contains(['/', '%']))
                .then_some((KEYSET_ROUTE, Jwks::KeySet(name)))
        }
    }
}

pub(super) async fn default_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    reply(&state.service, Jwks::Default, &headers)
}

pub(super) async fn keyset_jwks(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(&state.service, Jwks::KeySet(&name), &headers)
}

pub(super) async fn issuer_jwks(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    reply(&state.service, Jwks::Issuer, &headers)
}

/// The answer to a GET of `which`: the document with its ETag and max-age,
/// `304` when `If-None-Match` holds it, or the error.
pub(super) fn reply(service: &Service, which: Jwks<'_>, headers: &HeaderMap) -> Response {
    match local_copy(service, which) {
        Ok(doc) => doc.answer(headers),
        Err(err) => {
            let mut response = err.into_response();
            public_document(response.headers_mut());
            response
        }
    }
}

/// One JWKS as one thread answers it: its own copy of the body and of the
/// response headers, built once per document and thread, so answering
/// writes no memory another core reads (a shared reference count bumped by
/// every core on every request is what kept this path from scaling).
#[derive(Debug)]
struct LocalDoc {
    body: Bytes,
    /// ETag, `Cache-Control` and the CORS headers: a `304`'s headers.
    headers: HeaderMap,
    /// Those and `Content-Type`: a `200`'s.
    with_type: HeaderMap,
    etag: Box<str>,
}

impl LocalDoc {
    fn of(doc: &JwksDoc) -> Self {
        let mut headers = HeaderMap::with_capacity(8);
        if let Ok(v) = HeaderValue::from_str(&doc.etag) {
            headers.insert(header::ETAG, v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={}", doc.max_age)) {
            headers.insert(header::CACHE_CONTROL, v);
        }
        public_document(&mut headers);
        let mut with_type = headers.clone();
        with_type.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Self {
            body: Bytes::copy_from_slice(doc.body.as_bytes()),
            headers,
            with_type,
            etag: doc.etag.as_str().into(),
        }
    }

    fn answer(&self, request: &HeaderMap) -> Response {
        let not_modified = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || tag == &*self.etag);
        if not_modified {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            *r.headers_mut() = self.headers.clone();
            r
        } else {
            let mut r = Response::new(Body::from(self.body.clone()));
            *r.headers_mut() = self.with_type.clone();
            r
        }
    }
}

/// Most key sets' documents one thread keeps; beyond, a document is built
/// for each request (correct, only slower).
const MAX_LOCAL_DOCS: usize = 256;

/// This thread's copies, valid while the service's documents are at `version`.
#[derive(Debug, Default)]
struct LocalDocs {
    version: Option<DocumentsVersion>,
    keysets: HashMap<Box<str>, Rc<LocalDoc>>,
    issuer: Option<Rc<LocalDoc>>,
}

thread_local! {
    static LOCAL_DOCS: RefCell<LocalDocs> = RefCell::new(LocalDocs::default());
}

/// This thread's copy of `which`, made when the documents changed since the
/// last one (or the thread serves another service, as tests do).
fn local_copy(service: &Service, which: Jwks<'_>) -> Result<Rc<LocalDoc>> {
    // Read before the documents: a copy made after it is at least this new.
    let version = service.documents_version();
    LOCAL_DOCS.with_borrow_mut(|local| {
        if local.version != Some(version) {
            local.keysets.clear();
            local.issuer = None;
            local.version = Some(version);
        }
        let name = match which {
            Jwks::Default => service.default_keyset(),
            Jwks::KeySet(name) => name,
            Jwks::Issuer => {
                let issuer = local
                    .issuer
                    .get_or_insert_with(|| Rc::new(LocalDoc::of(&service.issuer_keys().jwks)));
                return Ok(Rc::clone(issuer));
            }
        };
        if let Some(doc) = local.keysets.get(name) {
            return Ok(Rc::clone(doc));
        }
        let doc = Rc::new(LocalDoc::of(&*service.jwks(name)?));
        if local.keysets.len() < MAX_LOCAL_DOCS {
            local.keysets.insert(name.into(), Rc::clone(&doc));
        }
        Ok(doc)
    })
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
