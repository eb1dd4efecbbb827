//! Request ids, shared by both transports: taken from the caller's
//! `x-request-id` when it is a sane one, made up otherwise, put in the
//! request's extensions (for the audit event and the log span) and sent back
//! on the response.

use axum::http::{HeaderMap, HeaderValue};

/// The request id header (HTTP) and metadata key (gRPC): read from callers,
/// always answered.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of a request, in its extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The request id of a request with `headers`, and the header that carries
/// it back on the response (`None` only if it could not be one).
pub fn request_id_of(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let id = request_id(headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()));
    let header = HeaderValue::from_str(&id).ok();
    (id, header)
}

/// Only the header that carries the request id of a request with `headers`
/// back: the caller's own header value when it is a sane id (nothing
/// copied), else a new id's.
pub fn request_id_header(headers: &HeaderMap) -> Option<HeaderValue> {
    match headers.get(REQUEST_ID) {
        Some(given) if given.to_str().is_ok_and(|id| sane(Some(id)).is_some()) => {
            Some(given.clone())
        }
        _ => HeaderValue::from_str(&crate::crypto::random::request_id()).ok(),
    }
}

fn sane(given: Option<&str>) -> Option<&str> {
    given.filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
}

/// The caller's request id when it is a sane one (1 to 128 printable ASCII
/// characters), or a new random one.
pub fn request_id(given: Option<&str>) -> String {
    sane(given).map_or_else(crate::crypto::random::request_id, str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        assert_eq!(request_id(Some("trace-42")), "trace-42");
        for bad in [
            None,
            Some(""),
            Some("has space"),
            Some("é"),
            Some(&*"x".repeat(129)),
        ] {
            let made = request_id(bad);
            assert_eq!(made.len(), 16, "{bad:?}");
            assert_ne!(made, request_id(bad), "random");
            let mut headers = HeaderMap::new();
            if let Some(bad) = bad.and_then(|b| HeaderValue::from_str(b).ok()) {
                headers.insert(REQUEST_ID, bad);
            }
            let header = request_id_header(&headers).unwrap();
            assert_eq!(header.len(), 16, "{bad:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("trace-42"));
        assert_eq!(request_id_header(&headers).unwrap(), "trace-42");
    }
}
