//! `POST /oauth2/token`: the client-credentials grant. A served connection's
//! front answers it ([`front`]): it reads the form body within its limit and
//! the client authentication (RFC 6749 §2.3.1, §4.4.2) and hands the
//! outcome, parsed or not, to [`crate::service::Service::token_endpoint`], so
//! every request, refused or not, leaves an audit event. Routers without the
//! front (the bench's) reach the same through the [`TokenForm`] extractor and
//! the routed handler.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    body::{Body, Bytes},
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::{HttpState, http_status, no_store, observe};
use crate::{
    Error,
    domain::{
        model::{self, AuthMethod},
        oauth::OAuthError,
        secret::SecretString,
    },
    service::{Caller, Credential, IssuedToken, Service, TokenRequest},
    transport::{
        net::Peer,
        observe::{RequestId, request_id_of},
        proxy::ClientAddr,
    },
};

/// Largest token request body.
pub const MAX_TOKEN_REQUEST_BYTES: usize = 8 * 1024;

/// The token endpoint's path.
pub const PATH: &str = "/oauth2/token";

/// A token request, parsed.
#[derive(Debug)]
pub struct TokenForm(pub TokenRequest);

/// Why a token request did not parse: the OAuth error, and the status of an
/// unreadable body (413 when too large), which the answer keeps.
#[derive(Debug)]
pub struct TokenRejection {
    /// The error the client is told.
    pub error: OAuthError,
    /// The status of a body that could not be read.
    pub status: Option<StatusCode>,
}

impl IntoResponse for TokenRejection {
    fn into_response(self) -> Response {
        let mut response = oauth_error(&self.error);
        if let Some(status) = self.status {
            *response.status_mut() = status;
        }
        response
    }
}

impl<S: Send + Sync> FromRequest<S> for TokenForm {
    type Rejection = TokenRejection;

    async fn from_request(mut request: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Reading the body needs only the body and the extensions (its size
        // limit): the headers are taken out rather than copied.
        let headers = std::mem::take(request.headers_mut());
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejected| unreadable(rejected.status()))?;
        token_request(&headers, &body)
            .map(Self)
            .map_err(|error| TokenRejection {
                error,
                status: None,
            })
    }
}

/// The handler: one audited call, whether the request parsed or not.
pub(super) async fn token(
    State(state): State<HttpState>,
    peer: Option<Extension<Peer>>,
    client: Option<Extension<ClientAddr>>,
    request_id: Option<Extension<RequestId>>,
    form: Result<TokenForm, TokenRejection>,
) -> Response {
    let from = client.map(|Extension(c)| c).or_else(|| {
        peer.map(|Extension(Peer(addr))| ClientAddr {
            ip: addr.ip(),
            via: None,
        })
    });
    let request_id = request_id.map_or_else(crate::crypto::random::request_id, |id| id.0.0);
    answer(&state.service, from, request_id, form.map(|TokenForm(r)| r)).await
}

/// `POST /oauth2/token` as the connection's front answers it, without the
/// router: what the request middleware gives a request (its client's
/// address, its request id on its log lines, in its audit event and back on
/// the response, its count and latency in the metrics) and what the router's
/// route and handler do (the body read within its limit, then [`answer`]).
pub(super) async fn front(
    state: HttpState,
    peer: Option<SocketAddr>,
    request: Request<Incoming>,
) -> Response {
    let started = std::time::Instant::now();
    let (id, header) = request_id_of(request.headers());
    let span = tracing::info_span!("http", request_id = %id, route = PATH);
    let from = peer.map(|addr| state.proxies.client_of(addr.ip(), request.headers()));
    let (parts, body) = request.into_parts();
    let response = async {
        let form = match axum::body::to_bytes(Body::new(body), MAX_TOKEN_REQUEST_BYTES).await {
            Ok(body) => token_request(&parts.headers, &body).map_err(|error| TokenRejection {
                error,
                status: None,
            }),
            Err(unread) => {
                // As axum's own body reader answers: 413 past the limit.
                let too_large = unread
                    .into_inner()
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                Err(unreadable(if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                }))
            }
        };
        answer(&state.service, from, id, form).await
    }
    .instrument(span)
    .await;
    observe::observed(&state.service, PATH, started, header, response)
}

/// The refusal of a body that could not be read, with its status.
fn unreadable(status: StatusCode) -> TokenRejection {
    TokenRejection {
        error: OAuthError::InvalidRequest(format!(
            "the request body could not be read; it may be at most {MAX_TOKEN_REQUEST_BYTES} bytes"
        )),
        status: Some(status),
    }
}

/// One audited token request from `from`, whether it parsed or not, and its
/// answer.
async fn answer(
    service: &Service,
    from: Option<ClientAddr>,
    request_id: String,
    form: Result<TokenRequest, TokenRejection>,
) -> Response {
    let (request, body_status) = match form {
        Ok(request) => (Ok(request), None),
        Err(rejected) => (Err(rejected.error), rejected.status),
    };
    let caller = Caller {
        credential: Credential::Client(request.as_ref().ok().map(|r| r.client_id.clone())),
        peer: from.map(|c| c.ip),
        via: from.and_then(|c| c.via),
        client_subject: None,
        request_id,
    };
    let mut response = match service.token_endpoint(&caller, request).await {
        Ok(issued) => token_response(&issued),
        Err(err) => oauth_error(&err),
    };
    if let Some(status) = body_status {
        *response.status_mut() = status;
    }
    response
}

/// An RFC 6749 §5.1 token response body.
#[derive(serde::Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    expires_in: u64,
    scope: &'a str,
    token_type: &'static str,
}

fn token_response(issued: &IssuedToken) -> Response {
    // Serialized from borrowed fields: the token is not copied into a JSON
    // value first. The fields are in the order a JSON object value had them.
    let body = TokenResponse {
        access_token: &issued.access_token,
        expires_in: issued.expires_in,
        scope: &issued.scope,
        token_type: "Bearer",
    };
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
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
        OAuthError::Server(inner @ (Error::AuditUnavailable | Error::Unavailable)) => {
            inner.to_string()
        }
        OAuthError::Server(_) => "internal error".to_string(),
        other => other.to_string(),
    };
    let body =
        serde_json::json!({ "error": err.code().as_str(), "error_description": description });
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

/// Reads a token request: its form body and client authentication
/// (RFC 6749 §2.3.1, §4.4.2).
fn token_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
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
    for (k, v) in form_urlencoded::parse(body) {
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
    // An id no client can have (too long, or characters client ids never
    // hold) is refused here, before anything is kept of it: no throttle
    // entry, no audit principal.
    if model::validate_client_id(&client_id).is_err() {
        return Err(OAuthError::InvalidClient(
            "client authentication failed".into(),
        ));
    }
    Ok(TokenRequest {
        grant_type,
        scope,
        client_id,
        client_secret,
        auth_method,
    })
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%26c%3D%2B").as_deref(), Some("a b&c=+"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("bad%2"), None);
        assert_eq!(form_decode("bad%zz"), None);
        assert_eq!(form_decode("%FF"), None, "not UTF-8");
    }

    mod properties {
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
                let _ = token_request(&headers, &body);
            }
        }
    }
}
