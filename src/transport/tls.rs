//! TLS on both listeners: rustls with the ring provider, TLS 1.2 and 1.3.
//!
//! The certificate pair is read from its files and swapped in place when
//! they change (cert-manager, certbot): [`Tls::watch`] rereads them
//! periodically, new handshakes get the new pair, open connections keep
//! theirs, and a pair that fails to load is refused with a logged error while
//! the old one keeps serving. gRPC may require client certificates signed by
//! a given CA (mutual TLS); the HTTP listener (JWKS, discovery, the token
//! endpoint) never asks for one.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::sync::watch;

use crate::{
    Error, Result,
    domain::{model::format_time, secret::SecretBytes},
};

/// How often the certificate files are checked for a new pair, unless set.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Where the serving certificate and key, and the gRPC client CA, live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
    /// PEM CA certificates gRPC clients' certificates must chain to; `None`:
    /// no client certificate asked for.
    pub grpc_client_ca: Option<PathBuf>,
    /// How often the pair's files are checked for changes.
    pub reload_interval: Duration,
    /// Refuse an expired certificate (at start and on reload) instead of
    /// serving it with an error in the log.
    pub require_valid: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::FailedPrecondition(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

fn certificates(what: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::FailedPrecondition(format!("the TLS {what} {} is not PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "the TLS {what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// When the DER certificate `der` stops being valid, Unix seconds.
pub fn not_after_of(der: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    i64::try_from(
        cert.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    )
    .ok()
}

/// When the first certificate of the PEM file `path` stops being valid.
pub fn file_not_after(path: &Path) -> Result<i64> {
    let pem = read("certificate", path)?;
    let chain = certificates("certificate", path, &pem)?;
    chain
        .first()
        .and_then(|leaf| not_after_of(leaf))
        .ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "the TLS certificate {} does not parse as X.509",
                path.display()
            ))
        })
}

/// A TLS client's settings: trusting the PEM certificates in `ca`, or else
/// the public web PKI roots.
pub fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("CA certificate", path, &read("CA certificate", path)?)? {
                roots.add(cert).map_err(|e| {
                    Error::FailedPrecondition(format!(
                        "the TLS CA certificate {} is refused: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::internal)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The pair in `cert_pem` and `key_pem`, checked to belong together.
fn certified_key(files: &TlsFiles, cert_pem: &[u8], key_pem: &SecretBytes) -> Result<CertifiedKey> {
    let chain = certificates("certificate", &files.cert, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.expose()).map_err(|_| {
        Error::FailedPrecondition(format!(
            "the TLS key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        ))
    })?;
    let signing = provider().key_provider.load_private_key(key).map_err(|e| {
        Error::FailedPrecondition(format!(
            "the TLS key {} is not usable: {e}",
            files.key.display()
        ))
    })?;
    if let Some(leaf) = chain.first() {
        check_expiry(files, leaf)?;
    }
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        Error::FailedPrecondition(format!(
            "the TLS key {} does not belong to the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        ))
    })?;
    Ok(certified)
}

/// An expired certificate: refused under `--tls-require-valid`, otherwise
/// served with an error in the log (clients that check expiry refuse it).
fn check_expiry(files: &TlsFiles, leaf: &CertificateDer<'_>) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let Some(not_after) = not_after_of(leaf).filter(|at| *at <= now) else {
        return Ok(());
    };
    let expired_at = format_time(not_after);
    if files.require_valid {
        return Err(Error::FailedPrecondition(format!(
            "the TLS certificate {} expired at {expired_at}; renew it (--tls-require-valid \
             refuses to serve an expired certificate)",
            files.cert.display()
        )));
    }
    tracing::error!(
        cert = %files.cert.display(),
        expired_at = %expired_at,
        "serving an EXPIRED TLS certificate: clients that check expiry refuse it; renew it \
         (--tls-require-valid refuses to start with one)"
    );
    Ok(())
}

/// The serving pair, swapped whole when the files change.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// The TLS settings of both listeners and the pair they serve.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    /// The files' contents last looked at (loaded or refused), to act once
    /// per change.
    seen: Mutex<(Vec<u8>, SecretBytes)>,
    http: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
}

impl Tls {
    /// Loads the pair and the client CA; any problem is an error naming the
    /// file.
    pub fn load(files: TlsFiles) -> Result<Self> {
        let cert_pem = read("certificate", &files.cert)?;
        let key_pem = SecretBytes::new(read("key", &files.key)?);
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(certified_key(
            &files, &cert_pem, &key_pem,
        )?))));
        let builder = || {
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(Error::internal)
        };
        let mut http = builder()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        let grpc = builder()?;
        let grpc = match &files.grpc_client_ca {
            None => grpc.with_no_client_auth(),
            Some(ca) => {
                let pem = read("client CA", ca)?;
                let mut roots = RootCertStore::empty();
                for cert in certificates("client CA", ca, &pem)? {
                    roots.add(cert).map_err(|e| {
                        Error::FailedPrecondition(format!(
                            "the TLS client CA {} holds a certificate rustls refuses: {e}",
                            ca.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            Error::FailedPrecondition(format!(
                                "the TLS client CA {}: {e}",
                                ca.display()
                            ))
                        })?;
                grpc.with_client_cert_verifier(verifier)
            }
        };
        let mut grpc =
            grpc.with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        grpc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            files,
            resolver,
            seen: Mutex::new((cert_pem, key_pem)),
            http: Arc::new(http),
            grpc: Arc::new(grpc),
        })
    }

    /// When the certificate being served (its chain's first) stops being
    /// valid, Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        let pair = Arc::clone(
            &self
                .resolver
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        pair.cert.first().and_then(|leaf| not_after_of(leaf))
    }

    /// The HTTP listener's acceptor (no client certificates).
    pub fn http_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.http))
    }

    /// The gRPC listener's acceptor (client certificates when a CA is set).
    pub fn grpc_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.grpc))
    }

    /// Rereads the pair's files; when they changed, serves the new pair if it
    /// loads, or logs why not and keeps the old. Returns whether it swapped.
    pub fn reload_if_changed(&self) -> bool {
        let (cert_pem, key_pem) = match (
            read("certificate", &self.files.cert),
            read("key", &self.files.key),
        ) {
            (Ok(cert), Ok(key)) => (cert, SecretBytes::new(key)),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "TLS files unreadable; still serving the previous certificate");
                return false;
            }
        };
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.0 == cert_pem && seen.1.expose() == key_pem.expose() {
            return false;
        }
        let loaded = certified_key(&self.files, &cert_pem, &key_pem);
        *seen = (cert_pem, key_pem);
        match loaded {
            Ok(pair) => {
                *self
                    .resolver
                    .0
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded; new connections use it");
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "new TLS certificate refused; still serving the previous one");
                false
            }
        }
    }

    /// Checks the files every `reload_interval` until `stop` flips.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.files.reload_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let tls = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
        }
    }
}

/// The subject of a DER certificate in RFC 4514 form (`CN=om,O=Example`),
/// escaped so no value can pass for another attribute or for the brackets
/// the audit log puts the subject in: RFC 4514's special characters, `=`,
/// `[` and `]`, and everything outside printable ASCII (control characters,
/// bidirectional overrides) are written as `\XX`.
pub fn subject_of(der: &[u8]) -> Option<String> {
    use x509_cert::der::{Decode as _, Encode as _, Tag, Tagged as _};
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let mut rdns = Vec::new();
    // RFC 4514 §2.1: the last RDN first.
    for rdn in cert.tbs_certificate.subject.0.iter().rev() {
        let mut atvs = Vec::new();
        for atv in rdn.0.iter() {
            let text = matches!(
                atv.value.tag(),
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString
            )
            .then(|| std::str::from_utf8(atv.value.value()).ok())
            .flatten();
            let value = match text {
                Some(text) => escape_dn_value(text),
                // RFC 4514 §2.4: a value of another type as `#` and its DER.
                None => format!("#{}", hex(&atv.value.to_der().ok()?)),
            };
            atvs.push(format!("{}={value}", attribute_name(&atv.oid.to_string())));
        }
        rdns.push(atvs.join("+"));
    }
    Some(rdns.join(","))
}

/// RFC 4514's short name of an attribute type, or its dotted OID.
fn attribute_name(oid: &str) -> &str {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        other => other,
    }
}

/// An attribute value, escaped (RFC 4514 §2.4, and more: see [`subject_of`]).
fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let plain = c.is_ascii_graphic()
            && !matches!(
                c,
                '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' | '[' | ']'
            )
            && !(c == '#' && i == 0);
        if plain || (c == ' ' && i != 0 && i != last) {
            out.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for byte in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A self-signed certificate for `key_pem` (PKCS#8).
    fn self_signed(key_pem: &str) -> String {
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    }

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsFiles {
            require_valid: false,
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            grpc_client_ca: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }

    #[test]
    fn subjects_are_escaped_so_no_value_passes_for_another() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "admin],O=evil [x \u{202e}\n\u{7}",
        );
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let subject = subject_of(&der).unwrap();
        assert_eq!(
            subject,
            "CN=admin\\5D\\2CO\\3Devil \\5Bx \\E2\\80\\AE\\0A\\07,O=Example"
        );
        assert!(!subject.contains(']') && !subject.contains('\n'));
        let plain = rcgen::CertificateParams::new(vec!["om".to_string()]).unwrap();
        let der = plain.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(subject_of(&der).unwrap(), "CN=rcgen self signed cert");
    }

    #[test]
    fn keys_load_as_pkcs8_or_pkcs1_and_must_match_the_certificate() {
        use rsa::{pkcs1::EncodeRsaPrivateKey as _, pkcs8::EncodePrivateKey as _};
        let dir = tempfile::tempdir().unwrap();
        let rsa = rsa::RsaPrivateKey::new(&mut crate::crypto::random::RingRng, 2048).unwrap();
        let pkcs8 = rsa.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let pkcs1 = rsa.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let cert = self_signed(&pkcs8);
        Tls::load(files(dir.path(), &cert, &pkcs8)).unwrap();
        Tls::load(files(dir.path(), &cert, &pkcs1)).unwrap();

        let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = Tls::load(files(dir.path(), &cert, &ec))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not belong to the certificate"), "{err}");
        let err = Tls::load(files(dir.path(), &cert, "not a key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM private key"), "{err}");
        let err = Tls::load(files(dir.path(), "", &pkcs8))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        assert!(
            !err.contains("PRIVATE KEY"),
            "no key material in errors: {err}"
        );
    }

    #[test]
    fn a_changed_pair_swaps_in_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let tls = Tls::load(files(dir.path(), &self_signed(&key), &key)).unwrap();
        assert!(!tls.reload_if_changed(), "unchanged files: nothing to do");
        let next = rcgen::KeyPair::generate().unwrap().serialize_pem();
        files(dir.path(), &self_signed(&next), &next);
        assert!(tls.reload_if_changed());
        // A certificate whose key is not beside it: refused, and refused once.
        files(dir.path(), &self_signed(&key), &next);
        assert!(!tls.reload_if_changed());
        assert!(!tls.reload_if_changed());
    }

    /// A certificate for `key_pem` that expired in 2020.
    fn expired(key_pem: &str) -> String {
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn an_expired_certificate_is_refused_when_validity_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let mut required = files(dir.path(), &expired(&key), &key);
        required.require_valid = true;
        let err = Tls::load(required.clone()).unwrap_err().to_string();
        assert!(
            err.contains("expired at 2020-01-01") && err.contains("--tls-require-valid"),
            "{err}"
        );
        // Served (with an error logged) when not required.
        Tls::load(files(dir.path(), &expired(&key), &key)).unwrap();

        // On reload: a valid pair is served, an expired one that replaces
        // it is refused and the valid one kept.
        files(dir.path(), &self_signed(&key), &key);
        let tls = Tls::load(required).unwrap();
        let valid_until = tls.not_after().unwrap();
        files(dir.path(), &expired(&key), &key);
        assert!(!tls.reload_if_changed());
        assert_eq!(tls.not_after(), Some(valid_until));
    }
}
