//! Encryption at rest: AES-256-GCM under the master key.
//!
//! A sealed value is `nonce (12 bytes) ‖ ciphertext ‖ tag`, with a fresh random
//! nonce per write. The row the value belongs to ([`AeadContext`]) is the associated
//! data, so a ciphertext copied onto another row fails to open.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::{b64url, random, sha256};
use crate::domain::secret::SecretBytes;

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The identity of the row a sealed value belongs to: table, id and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadContext<'a> {
    /// Table name.
    pub table: &'static str,
    /// The row's id within the table.
    pub id: &'a str,
    /// The row's version (1 for rows that have a single version).
    pub version: i64,
}

impl AeadContext<'_> {
    fn associated_data(&self) -> Vec<u8> {
        format!("keyward/v1/{}/{}/{}", self.table, self.id, self.version).into_bytes()
    }
}

impl fmt::Display for AeadContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.table, self.id, self.version)
    }
}

/// A sealed value failed to open: wrong key, tampering or a row copied elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("ciphertext failed authentication")]
pub struct OpenError;

/// The master key. Its `Debug` shows only its id.
pub struct MasterKey {
    key: LessSafeKey,
    id: String,
    /// The 32 bytes, kept only for a seal to wrap.
    material: SecretBytes,
}

impl MasterKey {
    /// Builds a master key from exactly 32 secret bytes.
    pub fn from_bytes(bytes: &SecretBytes) -> Result<Self, String> {
        let raw = bytes.expose();
        if raw.len() != MASTER_KEY_LEN {
            return Err(format!(
                "the master key must be {MASTER_KEY_LEN} bytes, got {}",
                raw.len()
            ));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| "the master key was rejected by AES-256-GCM".to_string())?;
        // The id names the key without revealing it: a hash of a domain-separated
        // input, truncated. It is stored beside every ciphertext.
        let mut input = b"keyward master key id\0".to_vec();
        input.extend_from_slice(raw);
        let id = b64url(&sha256(&input)[..9]);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            id,
            material: bytes.clone(),
        })
    }

    /// Parses a master key from its text form: base64 (standard or url-safe,
    /// padded or not) of 32 bytes, surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let decoded = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| "the master key is not valid base64".to_string())?;
        Self::from_bytes(&SecretBytes::new(decoded))
    }

    /// A new random master key in its text form (standard base64).
    pub fn generate_base64() -> SecretBytes {
        let raw = SecretBytes::new(random::bytes::<MASTER_KEY_LEN>().to_vec());
        SecretBytes::new(STANDARD.encode(raw.expose()).into_bytes())
    }

    /// A new random master key.
    pub fn generate() -> Self {
        let raw = SecretBytes::new(random::bytes::<MASTER_KEY_LEN>().to_vec());
        // 32 bytes are always a valid AES-256 key.
        #[allow(clippy::expect_used)]
        Self::from_bytes(&raw).expect("32 random bytes make a master key")
    }

    /// The key's 32 bytes, for a seal to wrap (envelope encryption). Nothing
    /// else may read them.
    pub fn material(&self) -> &SecretBytes {
        &self.material
    }

    /// The key's public id, stored beside each ciphertext.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` for the row `row`.
    pub fn seal(&self, row: &AeadContext<'_>, plaintext: &[u8]) -> Vec<u8> {
        let nonce_bytes = random::bytes::<NONCE_LEN>();
        let mut in_out = plaintext.to_vec();
        // seal_in_place only fails when the plaintext exceeds GCM's limit
        // (~64 GiB); keyward seals keys and secrets of a few KiB at most.
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(row.associated_data()),
                &mut in_out,
            )
            .expect("plaintext within AES-GCM limits");
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&in_out);
        zeroize::Zeroize::zeroize(&mut in_out);
        out
    }

    /// Opens a value sealed for `row`.
    pub fn open(&self, row: &AeadContext<'_>, sealed: &[u8]) -> Result<SecretBytes, OpenError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let mut in_out = ciphertext.to_vec();
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(row.associated_data()), &mut in_out);
        match opened {
            Ok(plain) => {
                let len = plain.len();
                in_out.truncate(len);
                Ok(SecretBytes::new(in_out))
            }
            Err(_) => {
                zeroize::Zeroize::zeroize(&mut in_out);
                Err(OpenError)
            }
        }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

/// A stored value names a master key that is not in the keyring, or failed
/// to open under the key it names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// The row was sealed under a key the keyring does not hold.
    #[error("sealed under master key id {0}, which is not in the keyring")]
    MissingKey(String),
    /// The key it names did not open it: tampering or a copied row.
    #[error("ciphertext failed authentication")]
    Open,
}

/// The master keys a process holds: the current one seals every write; the
/// previous ones only open rows sealed before a rotation. Each sealed row
/// records the id of the key that sealed it, and that id picks the key.
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring of `current` alone.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds keys that open older rows; a key already held is ignored.
    #[must_use]
    pub fn with_previous(mut self, keys: impl IntoIterator<Item = MasterKey>) -> Self {
        for key in keys {
            if self.get(key.id()).is_none() {
                self.previous.push(key);
            }
        }
        self
    }

    /// The key that seals new writes.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The current key's id, stored beside everything it seals.
    pub fn id(&self) -> &str {
        self.current.id()
    }

    /// Every key id held, the current one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(MasterKey::id)
    }

    /// The key with id `id`, if held.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` for `row` under the current key.
    pub fn seal(&self, row: &AeadContext<'_>, plaintext: &[u8]) -> Vec<u8> {
        self.current.seal(row, plaintext)
    }

    /// Opens a value sealed for `row` under the key with id `key_id`.
    pub fn open(
        &self,
        row: &AeadContext<'_>,
        key_id: &str,
        sealed: &[u8],
    ) -> Result<SecretBytes, KeyringError> {
        let key = self
            .get(key_id)
            .ok_or_else(|| KeyringError::MissingKey(key_id.to_string()))?;
        key.open(row, sealed).map_err(|_| KeyringError::Open)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(MasterKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_bytes(&SecretBytes::new(vec![7u8; 32])).unwrap()
    }

    const ROW: AeadContext<'static> = AeadContext {
        table: "keys",
        id: "abc",
        version: 1,
    };

    #[test]
    fn round_trip_with_fresh_nonces() {
        let k = key();
        let a = k.seal(&ROW, b"secret");
        let b = k.seal(&ROW, b"secret");
        assert_ne!(a, b, "each seal uses a fresh nonce");
        assert_eq!(k.open(&ROW, &a).unwrap().expose(), b"secret");
        assert!(!a.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn another_row_or_key_fails() {
        let k = key();
        let sealed = k.seal(&ROW, b"secret");
        let other_id = AeadContext { id: "abd", ..ROW };
        let other_version = AeadContext { version: 2, ..ROW };
        let other_table = AeadContext {
            table: "client_secrets",
            ..ROW
        };
        for row in [other_id, other_version, other_table] {
            assert!(k.open(&row, &sealed).is_err(), "{row}");
        }
        let wrong = MasterKey::from_bytes(&SecretBytes::new(vec![8u8; 32])).unwrap();
        assert!(wrong.open(&ROW, &sealed).is_err());
        assert_ne!(wrong.id(), k.id());
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open(&ROW, &tampered).is_err());
        assert!(k.open(&ROW, &sealed[..10]).is_err());
    }

    #[test]
    fn parses_text_forms_and_rejects_bad_lengths() {
        let text = MasterKey::generate_base64();
        let text = std::str::from_utf8(text.expose()).unwrap().to_string();
        assert!(MasterKey::from_base64(&format!("  {text}\n")).is_ok());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{:?}", key()).contains("7, 7"));
    }
    #[test]
    fn a_keyring_seals_under_its_current_key_and_opens_by_id() {
        let old = key();
        let new = MasterKey::from_bytes(&SecretBytes::new(vec![9u8; 32])).unwrap();
        let (old_id, new_id) = (old.id().to_string(), new.id().to_string());
        let sealed_old = old.seal(&ROW, b"before");
        let ring = Keyring::new(new).with_previous([old, key()]);
        assert_eq!(ring.id(), new_id);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [&new_id, &old_id]);
        assert_eq!(
            ring.open(&ROW, &old_id, &sealed_old).unwrap().expose(),
            b"before"
        );
        let sealed_new = ring.seal(&ROW, b"after");
        assert_eq!(
            ring.open(&ROW, &new_id, &sealed_new).unwrap().expose(),
            b"after"
        );
        // The id picks the key: naming the wrong one fails, and so does an unknown one.
        assert_eq!(
            ring.open(&ROW, &new_id, &sealed_old).unwrap_err(),
            KeyringError::Open
        );
        let alone = Keyring::new(MasterKey::from_bytes(&SecretBytes::new(vec![9u8; 32])).unwrap());
        let err = alone.open(&ROW, &old_id, &sealed_old).unwrap_err();
        assert_eq!(err, KeyringError::MissingKey(old_id.clone()));
        assert!(err.to_string().contains(&old_id));
        let shown = format!("{ring:?}");
        assert!(
            shown.contains(&old_id) && !shown.contains("9, 9"),
            "{shown}"
        );
    }
}
