//! The PKCS#11 seal: AES-GCM with an AES key that stays in a token (an HSM,
//! a cloud HSM's PKCS#11 library, SoftHSM2), found by the token's label and
//! the key's label, after logging in with the user PIN (a file, or
//! `KEYWARD_PKCS11_PIN`). Every call runs on the blocking pool.

use std::{collections::BTreeMap, path::PathBuf, sync::Mutex};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as P11Error, RvError},
    mechanism::{Mechanism, aead::GcmParams},
    object::{Attribute, AttributeType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    types::AuthPin,
};

use super::{Seal, SealError, params::Params, read_secret_file, secret_from_env};
use crate::{crypto::random, domain::secret::SecretBytes};

/// What a wrapped key starts with: format 1, AES-GCM, 12-byte IV, 16-byte tag.
const FORMAT: &[u8] = b"kwp11g1";
const IV_LEN: usize = 12;
/// Bound into every wrap as associated data.
const AAD: &[u8] = b"keyward master key";

/// A PKCS#11 seal's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Spec {
    /// The PKCS#11 library.
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The AES key's label (CKA_LABEL).
    pub key: String,
    /// The user PIN's file; `None`: `KEYWARD_PKCS11_PIN`.
    pub pin_file: Option<PathBuf>,
}

impl Pkcs11Spec {
    pub(super) fn parse(location: &str, query: &str) -> Result<Self, String> {
        let mut p = Params::parse(query, &["token", "key", "pin-file"])?;
        if location.is_empty() {
            return Err("pkcs11: name the library: pkcs11:/path/to/module.so?…".into());
        }
        Ok(Self {
            module: PathBuf::from(location),
            token: p.required("token")?,
            key: p.required("key")?,
            pin_file: p.optional("pin-file").map(PathBuf::from),
        })
    }

    /// `pkcs11:MODULE?token=T&key=K`
    pub fn id(&self) -> String {
        format!(
            "pkcs11:{}?token={}&key={}",
            self.module.display(),
            self.token,
            self.key
        )
    }
}

/// The seal. Its library is loaded and initialised on first use.
#[derive(Debug)]
pub struct Pkcs11Seal {
    spec: Pkcs11Spec,
    id: String,
}

/// Each PKCS#11 library loaded in this process, initialised once and kept:
/// PKCS#11 wants one context per library per process, however many seals
/// (or `keyward master status` probes) use it.
static CONTEXTS: Mutex<BTreeMap<PathBuf, Pkcs11>> = Mutex::new(BTreeMap::new());

impl Pkcs11Seal {
    pub(super) fn new(spec: Pkcs11Spec) -> Self {
        let id = spec.id();
        Self { spec, id }
    }

    /// Runs `op` with a logged-in session and the key, on the blocking pool.
    async fn run<T, F>(&self, op: F) -> Result<T, SealError>
    where
        T: Send + 'static,
        F: FnOnce(&Session, ObjectHandle) -> Result<T, SealError> + Send + 'static,
    {
        let spec = self.spec.clone();
        tokio::task::spawn_blocking(move || {
            let context = loaded(&spec)?;
            let (session, key) = open(&context, &spec)?;
            op(&session, key)
        })
        .await
        .map_err(|e| SealError::new(format!("the PKCS#11 call did not finish: {e}")))?
    }
}

/// The initialised library, loading it on first use.
fn loaded(spec: &Pkcs11Spec) -> Result<Pkcs11, SealError> {
    let mut contexts = CONTEXTS
        .lock()
        .map_err(|_| SealError::new("the PKCS#11 contexts are poisoned"))?;
    if let Some(context) = contexts.get(&spec.module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(&spec.module).map_err(|e| {
        SealError::new(format!(
            "cannot load the PKCS#11 library {}: {e}",
            spec.module.display()
        ))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed("C_Initialize", &e)),
    }
    contexts.insert(spec.module.clone(), context.clone());
    Ok(context)
}

/// A PKCS#11 failure in the token's own terms: `login to "kw": CKR_PIN_INCORRECT
/// (the specified PIN is incorrect…)`.
fn failed(what: &str, err: &P11Error) -> SealError {
    match err {
        P11Error::Pkcs11(rv, _) => SealError::new(format!("{what}: {} ({rv})", ckr_name(*rv))),
        other => SealError::new(format!("{what}: {other}")),
    }
}

/// The specification's name of a return value (`PinIncorrect` →
/// `CKR_PIN_INCORRECT`).
fn ckr_name(rv: RvError) -> String {
    let variant = format!("{rv:?}");
    if variant.contains('(') {
        return rv.to_string();
    }
    let mut name = String::from("CKR");
    for c in variant.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// A session on the token labelled `spec.token`, logged in, and the key.
fn open(context: &Pkcs11, spec: &Pkcs11Spec) -> Result<(Session, ObjectHandle), SealError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| failed("listing slots", &e))?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in slots {
        let info = context
            .get_token_info(slot)
            .map_err(|e| failed("reading a token", &e))?;
        let label = info.label().trim_end().to_string();
        if label == spec.token {
            found = Some(slot);
            break;
        }
        labels.push(label);
    }
    let slot = found.ok_or_else(|| {
        SealError::new(format!(
            "no token labelled {:?} (tokens: {})",
            spec.token,
            if labels.is_empty() {
                "none".to_string()
            } else {
                labels.join(", ")
            }
        ))
    })?;
    let session = context
        .open_ro_session(slot)
        .map_err(|e| failed("opening a session", &e))?;
    let pin = match &spec.pin_file {
        Some(path) => read_secret_file("PKCS#11 PIN", path)?,
        None => secret_from_env("KEYWARD_PKCS11_PIN").ok_or_else(|| {
            SealError::new("no PKCS#11 PIN: give pin-file=… or set KEYWARD_PKCS11_PIN")
        })?,
    };
    let pin = std::str::from_utf8(pin.expose())
        .map(|p| AuthPin::from(p.to_string()))
        .map_err(|_| SealError::new("the PKCS#11 PIN is not UTF-8"))?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(failed(&format!("login to {:?}", spec.token), &e)),
    }
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(spec.key.as_bytes().to_vec()),
        ])
        .map_err(|e| failed(&format!("finding key {:?}", spec.key), &e))?;
    match keys.as_slice() {
        [key] => Ok((session, *key)),
        [] => Err(SealError::new(format!(
            "no secret key labelled {:?} on token {:?}",
            spec.key, spec.token
        ))),
        _ => Err(SealError::new(format!(
            "{} secret keys are labelled {:?} on token {:?}; keep one",
            keys.len(),
            spec.key,
            spec.token
        ))),
    }
}

#[async_trait::async_trait]
impl Seal for Pkcs11Seal {
    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, key: &SecretBytes) -> Result<Vec<u8>, SealError> {
        let plain = key.clone();
        self.run(move |session, handle| {
            let mut iv = random::bytes::<IV_LEN>();
            let iv_copy = iv;
            let params = GcmParams::new(&mut iv, AAD, 128.into())
                .map_err(|e| SealError::new(format!("AES-GCM parameters: {e}")))?;
            let sealed = session
                .encrypt(&Mechanism::AesGcm(params), handle, plain.expose())
                .map_err(|e| failed("C_Encrypt (CKM_AES_GCM)", &e))?;
            let mut out = Vec::with_capacity(FORMAT.len() + IV_LEN + sealed.len());
            out.extend_from_slice(FORMAT);
            out.extend_from_slice(&iv_copy);
            out.extend_from_slice(&sealed);
            Ok(out)
        })
        .await
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<SecretBytes, SealError> {
        let body = wrapped
            .strip_prefix(FORMAT)
            .filter(|b| b.len() > IV_LEN)
            .ok_or_else(|| SealError::new("the wrapped key is not a PKCS#11 AES-GCM wrap"))?
            .to_vec();
        self.run(move |session, handle| {
            let (iv, sealed) = body.split_at(IV_LEN);
            let mut iv = iv.to_vec();
            let params = GcmParams::new(&mut iv, AAD, 128.into())
                .map_err(|e| SealError::new(format!("AES-GCM parameters: {e}")))?;
            session
                .decrypt(&Mechanism::AesGcm(params), handle, sealed)
                .map(SecretBytes::new)
                .map_err(|e| failed("C_Decrypt (CKM_AES_GCM)", &e))
        })
        .await
    }

    /// Refuses a key that may leave the token or serve other uses.
    async fn permissions(&self) -> Result<Option<String>, SealError> {
        self.run(|session, handle| {
            let attributes = session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Extractable,
                        AttributeType::Sensitive,
                        AttributeType::Sign,
                        AttributeType::Derive,
                    ],
                )
                .map_err(|e| failed("reading the key's attributes", &e))?;
            let mut broader = Vec::new();
            let mut also = "";
            for attribute in attributes {
                match attribute {
                    Attribute::Extractable(true) => broader.push("CKA_EXTRACTABLE is true"),
                    Attribute::Sensitive(false) => broader.push("CKA_SENSITIVE is false"),
                    Attribute::Sign(true) => also = " (it may also compute MACs: CKA_SIGN)",
                    Attribute::Derive(true) => broader.push("CKA_DERIVE is true"),
                    _ => {}
                }
            }
            if broader.is_empty() {
                Ok(Some(format!(
                    "the key is sensitive and cannot leave the token{also}"
                )))
            } else {
                Err(SealError::new(format!(
                    "the key's material can leave the token: {}; create it with \
                     CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, CKA_DERIVE=false",
                    broader.join(", ")
                )))
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_are_named_as_the_specification_names_them() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            ckr_name(RvError::KeyHandleInvalid),
            "CKR_KEY_HANDLE_INVALID"
        );
        assert_eq!(
            ckr_name(RvError::VendorDefined(0x8000_0001)),
            "CKR_VENDOR_DEFINED(0x80000001)"
        );
    }
}
