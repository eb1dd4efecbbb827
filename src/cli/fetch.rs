//! A small HTTP(S) GET for `keyward doctor`: probing keyward's own HTTP
//! listener and fetching OpenMetadata's JWKS.

use std::{path::Path, sync::Arc, time::Duration};

use axum::body::Body;
use hyper::Uri;
use hyper_util::rt::TokioIo;

/// Largest body read.
const MAX_BODY: usize = 1024 * 1024;

/// GETs `url` within `timeout`: its status and body, or why it failed.
/// `https://` trusts `ca` (PEM), or else the public web PKI roots.
pub(crate) async fn get(
    url: &str,
    ca: Option<&Path>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    tokio::time::timeout(timeout, fetch(url, ca))
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
}

async fn fetch(url: &str, ca: Option<&Path>) -> Result<(u16, Vec<u8>), String> {
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
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
    let request = hyper::Request::get(&path)
        .header(
            hyper::header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("keyward-doctor/", env!("CARGO_PKG_VERSION")),
        )
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    if tls {
        let config = crate::transport::tls::client_config(ca).map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::try_from(host_name.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(TokioIo::new(stream), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
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
