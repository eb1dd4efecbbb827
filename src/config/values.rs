//! Single settings read from flags over the TOML file: durations with a
//! floor, the TLS files, the trusted proxies.

use std::time::Duration;

use super::{ServeArgs, file::FileConfig};
use crate::{Error, Result, transport::proxy::TrustedProxies};

/// A retention setting: `text` parsed, at least `min` (seconds, as said), or
/// `default`.
pub(super) fn retention(
    field: &'static str,
    text: Option<&String>,
    (min, said): (u64, &str),
    default: Duration,
) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(default);
    };
    let retain = crate::domain::model::parse_duration(field, text)?;
    if retain < Duration::from_secs(min) {
        return Err(Error::invalid(field, format!("must be at least {said}")));
    }
    Ok(retain)
}

/// The TLS files, from flags over the file; the client CA needs a pair.
pub(super) fn tls_files(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<Option<crate::transport::tls::TlsFiles>> {
    let cert = args.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = args.tls_key.clone().or_else(|| file.tls_key.clone());
    let grpc_client_ca = args
        .grpc_client_ca
        .clone()
        .or_else(|| file.grpc_client_ca.clone());
    let reload_interval = match args
        .tls_reload_interval
        .as_ref()
        .or(file.tls_reload_interval.as_ref())
    {
        Some(text) => {
            let every = crate::domain::model::parse_duration("tls_reload_interval", text)?;
            if every.is_zero() {
                return Err(Error::invalid("tls_reload_interval", "must be at least 1s"));
            }
            every
        }
        None => crate::transport::tls::DEFAULT_RELOAD_INTERVAL,
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::transport::tls::TlsFiles {
            require_valid: args.tls_require_valid || file.tls_require_valid == Some(true),
            cert,
            key,
            grpc_client_ca,
            reload_interval,
        })),
        (None, None) if grpc_client_ca.is_none() => Ok(None),
        (None, None) => Err(Error::invalid(
            "grpc_client_ca",
            "mutual TLS needs TLS: give --tls-cert and --tls-key too",
        )),
        (Some(_), None) => Err(Error::invalid("tls_key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => Err(Error::invalid("tls_cert", "--tls-key needs --tls-cert")),
    }
}

/// The trusted proxies, from flags over the file.
pub(super) fn trusted_proxies(args: &ServeArgs, file: &FileConfig) -> Result<TrustedProxies> {
    let given = if args.trusted_proxies.is_empty() {
        file.trusted_proxies.clone().unwrap_or_default()
    } else {
        args.trusted_proxies.clone()
    };
    let blocks = given
        .iter()
        .map(|text| text.parse().map_err(|e| Error::invalid("trusted_proxy", e)))
        .collect::<Result<Vec<_>>>()?;
    Ok(TrustedProxies::new(blocks))
}

/// A timeout setting: a duration of at least one second.
pub(super) fn timeout_setting(
    field: &'static str,
    text: Option<&String>,
    default: Duration,
) -> Result<Duration> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = crate::domain::model::parse_duration(field, text)?;
    if d < Duration::from_secs(1) {
        return Err(Error::invalid(field, "must be at least 1s"));
    }
    Ok(d)
}
