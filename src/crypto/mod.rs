//! Pure cryptography: no I/O, no clock.
//!
//! - [`aead`]: AES-256-GCM sealing of secrets under the master key, bound to the
//!   row they belong to.
//! - [`keys`]: signing-key generation, loading, public JWKs and RFC 7638 kids.
//! - [`chain`]: the audit chain's keyed link (HMAC-SHA-256).
//! - [`jwt`]: compact JWS signing.
//! - [`random`]: the one source of randomness, `ring::rand::SystemRandom`
//!   (built with the `aws-lc` feature, the randomness inside a signature,
//!   ECDSA nonces and RSA blinding, comes from aws-lc's own generator).

pub mod aead;
pub mod chain;
pub mod jwt;
pub mod keys;
pub mod random;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

/// base64url without padding, as JOSE wants it.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// A webhook body's signature: `v1=` and the hex HMAC-SHA-256, keyed with
/// the webhook's secret as shown, of `{timestamp}.{body}`.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Compares two secrets in constant time by comparing their SHA-256 digests, so
/// neither content nor length leaks through timing.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    sha256(a).ct_eq(&sha256(b)).into()
}
