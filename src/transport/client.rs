//! A small HTTP(S) client: `keyward doctor` probing keyward's own listener
//! and OpenMetadata's JWKS, and the Vault/OpenBao Transit seal. One request
//! per connection, bodies capped, every call bounded by a timeout.

use std::{path::Path, sync::Arc, time::Duration};

use axum::body::Body;
use hyper::{Method, Uri};

/// The methods the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// `GET`
    Get,
    /// `POST`, with a JSON body.
    Post,
}
use hyper_util::rt::TokioIo;

/// Largest body read.
const MAX_BODY: usize = 1024 * 1024;

/// One request: where, how, and what to trust.
pub(crate) struct Request<'a> {
    /// `GET` or `POST`.
    pub method: Verb,
    /// An `http://` or `https://` URL.
    pub url: &'a str,
    /// Extra headers (name, value). Values may be secrets: never logged.
    pub headers: &'a [(&'a str, &'a str)],
    /// A JSON body, if any.
    pub json: Option<&'a [u8]>,
    /// PEM CA certificates `https://` trusts; `None`: the web PKI roots.
    pub ca: Option<&'a Path>,
    /// The whole exchange's limit.
    pub timeout: Duration,
}

/// GETs `url` within `timeout`: its status and body, or why it failed.
/// `https://` trusts `ca` (PEM), or else the public web PKI roots.
pub(crate) async fn get(
    url: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    send(Request {
        method: Verb::Get,
        url,
        headers: &[],
        json: None,
        ca,
        timeout,
    })
    .await
}

/// Sends `request`: the status and body, or why no answer came.
pub(crate) async fn send(request: Request<'_>) -> Result<(u16, Vec<u8>), String> {
    let limit = request.timeout;
    tokio::time::timeout(limit, fetch(request))
        .await
        .map_err(|_| format!("no answer within {}s", limit.as_secs()))?
}

async fn fetch(request: Request<'_>) -> Result<(u16, Vec<u8>), String> {
    let uri: Uri = request.url.parse().map_err(|e| format!("not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("use an http:// or https:// URL".into()),
    };
    let host = uri.host().ok_or("the URL names no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let host_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((host_name.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut builder = hyper::Request::builder()
        .method(match request.method {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
        })
        .uri(&path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("keyward/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    let body = match request.json {
        Some(json) => {
            // A caller's own content type (CloudEvents') stands.
            if !request
                .headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            {
                builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            Body::from(json.to_vec())
        }
        None => Body::empty(),
    };
    // The error names no header value: a header may carry a token.
    let built = builder
        .body(body)
        .map_err(|_| "the request could not be built (a header is malformed)".to_string())?;
    if tls {
        let config = crate::transport::tls::client_config(request.ca).map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from(host_name.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(TokioIo::new(stream), built).await
    } else {
        exchange(TokioIo::new(tcp), built).await
    }
}

async fn exchange<T>(io: T, request: hyper::Request<Body>) -> Result<(u16, Vec<u8>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_BODY)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    driver.abort();
    Ok((status, body.to_vec()))
}
