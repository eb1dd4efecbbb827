//! Signing keys: generation, loading from PKCS#8, public JWKs and RFC 7638 kids.
//!
//! Every private key is held as PKCS#8 DER. RSA keys are generated with the `rsa`
//! crate (ring cannot generate them); EC and Ed25519 keys with ring. Loading and
//! signing are done by the signing backend: ring by default, `aws-lc-rs` with
//! the `aws-lc` cargo feature (about twice as fast for RSA). Both take the same
//! PKCS#8 and produce the same signatures; nothing outside this module knows
//! which one runs.

use std::fmt;

#[cfg(feature = "aws-lc")]
use aws_lc_rs as backend;
#[cfg(not(feature = "aws-lc"))]
use ring as backend;

use backend::{
    error::KeyRejected,
    rand::SystemRandom as SigningRng,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair},
};
use ring::rand::SystemRandom;

/// The library that loads keys and signs: `ring`, or `aws-lc-rs` when built
/// with the `aws-lc` feature.
pub const SIGNING_BACKEND: &str = if cfg!(feature = "aws-lc") {
    "aws-lc-rs"
} else {
    "ring"
};
use serde_json::{Map, Value, json};

use super::{b64url, random::RingRng, sha256};
use crate::domain::{algorithm::Algorithm, secret::SecretBytes};

/// The RSA padding and hash of `alg`; `None` for a non-RSA algorithm.
fn rsa_padding(alg: Algorithm) -> Option<&'static dyn signature::RsaEncoding> {
    Some(match alg {
        Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        Algorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
        Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
        Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
        Algorithm::Ps384 => &signature::RSA_PSS_SHA384,
        Algorithm::Ps512 => &signature::RSA_PSS_SHA512,
        _ => return None,
    })
}

/// A key failed to generate or load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub(super) String);

/// A freshly generated key: its private PKCS#8 and its public half.
pub struct GeneratedKey {
    /// PKCS#8 DER of the private key.
    pub pkcs8: SecretBytes,
    /// The loaded key, ready to sign.
    pub key: SigningKey,
}

/// Generates a key for `alg`. RSA generation is CPU-heavy (hundreds of
/// milliseconds to seconds): call it from `spawn_blocking`.
pub fn generate(alg: Algorithm, rsa_bits: u32) -> Result<GeneratedKey, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8 = match alg {
        _ if alg.is_rsa() => {
            use rsa::pkcs8::EncodePrivateKey as _;
            let private = rsa::RsaPrivateKey::new(&mut RingRng, rsa_bits as usize)
                .map_err(|e| KeyError(format!("RSA key generation failed: {e}")))?;
            let der = private
                .to_pkcs8_der()
                .map_err(|e| KeyError(format!("RSA key encoding failed: {e}")))?;
            SecretBytes::new(der.as_bytes().to_vec())
        }
        Algorithm::Es256 | Algorithm::Es384 => {
            let curve = if alg == Algorithm::Es384 {
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING
            } else {
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING
            };
            let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(curve, &rng)
                .map_err(|_| KeyError("ECDSA key generation failed".into()))?;
            SecretBytes::new(doc.as_ref().to_vec())
        }
        _ => {
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeyError("Ed25519 key generation failed".into()))?;
            SecretBytes::new(doc.as_ref().to_vec())
        }
    };
    let key = SigningKey::from_pkcs8(alg, pkcs8.expose())?;
    Ok(GeneratedKey { pkcs8, key })
}

/// The signing backend's ECDSA algorithm for `alg`.
fn ecdsa_alg(alg: Algorithm) -> &'static signature::EcdsaSigningAlgorithm {
    if alg == Algorithm::Es384 {
        &signature::ECDSA_P384_SHA384_FIXED_SIGNING
    } else {
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING
    }
}

/// An RSA key's modulus length in bytes (its signatures' length).
fn modulus_len(pair: &RsaKeyPair) -> usize {
    #[cfg(feature = "aws-lc")]
    return pair.public_modulus_len();
    #[cfg(not(feature = "aws-lc"))]
    return pair.public().modulus_len();
}

/// Parses an ECDSA PKCS#8 key (ring checks it with a random value; aws-lc
/// needs none).
fn parse_ecdsa(alg: Algorithm, pkcs8: &[u8]) -> Result<EcdsaKeyPair, KeyRejected> {
    #[cfg(feature = "aws-lc")]
    return EcdsaKeyPair::from_pkcs8(ecdsa_alg(alg), pkcs8);
    #[cfg(not(feature = "aws-lc"))]
    return EcdsaKeyPair::from_pkcs8(ecdsa_alg(alg), pkcs8, &SigningRng::new());
}

enum Inner {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key loaded for signing. `Debug` shows only the algorithm and kid.
pub struct SigningKey {
    alg: Algorithm,
    inner: Inner,
    jwk: PublicJwk,
    kid: String,
    /// The first segment of every token this key signs: its JWS header, made
    /// once with the kid rather than at each signature.
    header: String,
}

/// The base64url JWS protected header of a key: `alg`, `kid` and `typ: "JWT"`.
fn jws_header(alg: Algorithm, kid: &str) -> String {
    b64url(
        json!({ "alg": alg.as_str(), "typ": "JWT", "kid": kid })
            .to_string()
            .as_bytes(),
    )
}

impl SigningKey {
    /// Loads a PKCS#8 DER private key for `alg`.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rejected = |e: KeyRejected| KeyError(format!("key rejected: {e}"));
        let (inner, jwk) = if alg.is_rsa() {
            let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
            let parts = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let jwk = PublicJwk::Rsa {
                n: b64url(&parts.n),
                e: b64url(&parts.e),
            };
            (Inner::Rsa(pair), jwk)
        } else if matches!(alg, Algorithm::Es256 | Algorithm::Es384) {
            let pair = parse_ecdsa(alg, pkcs8).map_err(rejected)?;
            // Uncompressed point: 0x04 ‖ X ‖ Y.
            let point = pair.public_key().as_ref();
            let half = (point.len() - 1) / 2;
            let jwk = PublicJwk::Ec {
                crv: if alg == Algorithm::Es384 {
                    "P-384"
                } else {
                    "P-256"
                },
                x: b64url(&point[1..=half]),
                y: b64url(&point[1 + half..]),
            };
            (Inner::Ecdsa(pair), jwk)
        } else {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(rejected)?;
            let jwk = PublicJwk::Okp {
                x: b64url(pair.public_key().as_ref()),
            };
            (Inner::Ed25519(pair), jwk)
        };
        let kid = jwk.thumbprint();
        Ok(Self {
            alg,
            inner,
            jwk,
            header: jws_header(alg, &kid),
            kid,
        })
    }

    /// The same key under another kid (an imported key keeps the kid its
    /// tokens already carry).
    pub fn with_kid(mut self, kid: String) -> Self {
        self.header = jws_header(self.alg, &kid);
        self.kid = kid;
        self
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// RFC 7638 SHA-256 thumbprint of the public key, base64url.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The base64url JWS header its tokens carry (the signing input's first
    /// segment).
    pub fn jws_header(&self) -> &str {
        &self.header
    }

    /// The public half.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// RSA modulus size in bits; `None` for other key types.
    pub fn rsa_bits(&self) -> Option<u32> {
        match &self.inner {
            Inner::Rsa(pair) => u32::try_from(modulus_len(pair) * 8).ok(),
            _ => None,
        }
    }

    /// Signs `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SigningRng::new();
        let failed = |_| KeyError("signing failed".into());
        match &self.inner {
            Inner::Rsa(pair) => {
                let padding =
                    rsa_padding(self.alg).ok_or_else(|| KeyError("not an RSA algorithm".into()))?;
                let mut sig = vec![0u8; modulus_len(pair)];
                pair.sign(padding, &rng, message, &mut sig)
                    .map_err(failed)?;
                Ok(sig)
            }
            Inner::Ecdsa(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The public half of a key, in JWK terms (members base64url without padding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicJwk {
    /// `kty: RSA`.
    Rsa {
        /// Modulus.
        n: String,
        /// Public exponent.
        e: String,
    },
    /// `kty: EC`.
    Ec {
        /// `P-256` or `P-384`.
        crv: &'static str,
        /// X coordinate.
        x: String,
        /// Y coordinate.
        y: String,
    },
    /// `kty: OKP`, Ed25519.
    Okp {
        /// The public key.
        x: String,
    },
}

impl PublicJwk {
    /// The required members in lexicographic order, as RFC 7638 hashes them.
    fn required_members(&self) -> Map<String, Value> {
        let value = match self {
            Self::Rsa { n, e } => json!({ "e": e, "kty": "RSA", "n": n }),
            Self::Ec { crv, x, y } => json!({ "crv": crv, "kty": "EC", "x": x, "y": y }),
            Self::Okp { x } => json!({ "crv": "Ed25519", "kty": "OKP", "x": x }),
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// RFC 7638 JWK SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        // serde_json's Map is ordered by key and its compact form has no
        // whitespace: exactly RFC 7638's canonical form.
        let canonical = Value::Object(self.required_members()).to_string();
        b64url(&sha256(canonical.as_bytes()))
    }

    /// The JWK as published: required members plus `kid`, `use` and `alg`.
    pub fn to_published(&self, kid: &str, alg: Algorithm) -> Map<String, Value> {
        let mut map = self.required_members();
        map.insert("kid".into(), kid.into());
        map.insert("use".into(), "sig".into());
        map.insert("alg".into(), alg.as_str().into());
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // The example key of RFC 7638 §3.1.
        let jwk = PublicJwk::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn every_algorithm_generates_loads_and_signs() {
        for alg in Algorithm::ALL {
            let generated = generate(alg, 2048).unwrap();
            let reloaded = SigningKey::from_pkcs8(alg, generated.pkcs8.expose()).unwrap();
            assert_eq!(reloaded.kid(), generated.key.kid(), "{alg}");
            assert_eq!(reloaded.public_jwk(), generated.key.public_jwk());
            assert!(!reloaded.sign(b"message").unwrap().is_empty());
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
            assert!(!format!("{reloaded:?}").contains("Rsa("));
        }
        assert!("HS256".parse::<Algorithm>().is_err());
    }

    /// The aws-lc backend signs what ring signs: byte for byte where the
    /// scheme is deterministic (RSA PKCS#1 v1.5, Ed25519), and verifiably by
    /// ring where it is randomized (ECDSA, RSA-PSS).
    #[cfg(feature = "aws-lc")]
    #[test]
    fn aws_lc_signs_as_ring_does() {
        use ring::signature::{self as rs, KeyPair as _};
        let message = b"header.payload";
        for alg in Algorithm::ALL {
            let generated = generate(alg, 2048).unwrap();
            let pkcs8 = generated.pkcs8.expose();
            let ours = generated.key.sign(message).unwrap();
            match alg {
                Algorithm::Rs256 => {
                    let pair = rs::RsaKeyPair::from_pkcs8(pkcs8).unwrap();
                    let mut theirs = vec![0u8; pair.public().modulus_len()];
                    pair.sign(
                        &rs::RSA_PKCS1_SHA256,
                        &ring::rand::SystemRandom::new(),
                        message,
                        &mut theirs,
                    )
                    .unwrap();
                    assert_eq!(ours, theirs, "{alg}");
                }
                Algorithm::EdDsa => {
                    let pair = rs::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).unwrap();
                    assert_eq!(ours, pair.sign(message).as_ref(), "{alg}");
                }
                Algorithm::Es256 | Algorithm::Ps256 => {
                    let (verify, public): (&dyn rs::VerificationAlgorithm, Vec<u8>) =
                        if alg == Algorithm::Es256 {
                            let pair = rs::EcdsaKeyPair::from_pkcs8(
                                &rs::ECDSA_P256_SHA256_FIXED_SIGNING,
                                pkcs8,
                                &ring::rand::SystemRandom::new(),
                            )
                            .unwrap();
                            (
                                &rs::ECDSA_P256_SHA256_FIXED,
                                pair.public_key().as_ref().to_vec(),
                            )
                        } else {
                            let pair = rs::RsaKeyPair::from_pkcs8(pkcs8).unwrap();
                            (
                                &rs::RSA_PSS_2048_8192_SHA256,
                                pair.public_key().as_ref().to_vec(),
                            )
                        };
                    rs::UnparsedPublicKey::new(verify, public)
                        .verify(message, &ours)
                        .unwrap_or_else(|_| panic!("ring verifies aws-lc's {alg}"));
                }
                _ => {}
            }
        }
    }
}
