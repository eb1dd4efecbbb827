//! What every `keyward.v1` call gets before its handler runs, as a tower
//! layer around the gRPC server: a request id (the caller's `x-request-id`
//! when sane), a log span carrying it and the method, the id on the
//! response, and the call's count and latency in the metrics. Other services
//! (health, reflection) pass through untouched.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::codegen::http;
use tracing::Instrument as _;

use super::code_name;
use crate::{
    domain::access::Method,
    service::Service,
    transport::{
        net::ConnInfo,
        observe::{REQUEST_ID, RequestId, request_id_of},
        proxy::TrustedProxies,
    },
};

/// The layer: wraps the gRPC server's routes.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    service: Arc<Service>,
    proxies: TrustedProxies,
}

impl ObserveLayer {
    /// Observes calls into the metrics of `service`, believing
    /// `X-Forwarded-For` from `proxies`.
    pub fn new(service: Arc<Service>, proxies: TrustedProxies) -> Self {
        Self { service, proxies }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            service: Arc::clone(&self.service),
            proxies: self.proxies.clone(),
        }
    }
}

/// The routes, observed.
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    service: Arc<Service>,
    proxies: TrustedProxies,
}

/// The `keyward.v1` method a request path names (`/keyward.v1.KeySets/GetKeySet`).
fn method_of(path: &str) -> Option<Method> {
    let (service, method) = path.strip_prefix("/keyward.v1.")?.split_once('/')?;
    (!service.is_empty()).then_some(())?;
    Method::parse(method)
}

/// The status a response carries in its headers (an error answered at
/// once); a call whose status comes in the trailers succeeded.
fn status_of(headers: &http::HeaderMap) -> &'static str {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or("OK", |code| code_name(tonic::Code::from(code)))
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(method) = method_of(request.uri().path()) else {
            return Box::pin(self.inner.call(request));
        };
        let started = Instant::now();
        let (id, header) = request_id_of(request.headers());
        // Every log line of the call carries its request id.
        let span = tracing::info_span!("grpc", request_id = %id, method = method.as_str());
        let peer = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.remote)
            .map(|a| a.ip());
        if let Some(peer) = peer {
            let client = self.proxies.client_of(peer, request.headers());
            request.extensions_mut().insert(client);
        }
        request.extensions_mut().insert(RequestId(id));
        let call = span.in_scope(|| self.inner.call(request));
        let service = Arc::clone(&self.service);
        Box::pin(async move {
            let mut response = call.instrument(span).await?;
            let code = status_of(response.headers());
            if let Some(id) = header {
                response.headers_mut().insert(REQUEST_ID, id);
            }
            service
                .metrics()
                .grpc_call(method.as_str(), code, started.elapsed());
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keyward_methods_are_observed() {
        assert_eq!(
            method_of("/keyward.v1.Clients/GetClientSecret"),
            Some(Method::GetClientSecret)
        );
        for other in [
            "/grpc.health.v1.Health/Check",
            "/keyward.v1.Clients/NoSuchMethod",
            "/keyward.v1./GetKeySet",
            "/keyward.v2.KeySets/GetKeySet",
        ] {
            assert_eq!(method_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_status_in_the_headers_is_an_error_answered_at_once() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_of(&headers), "NOT_FOUND");
    }
}
