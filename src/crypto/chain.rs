//! The audit chain's link: HMAC-SHA-256 of the previous event's hash, the
//! event's id and its fields, under a random key sealed in the database.
//! Someone who can write to the database but does not hold the master key
//! cannot re-link a chain they changed.

use ring::hmac;

use crate::domain::{
    audit::{AuditEvent, Linker},
    secret::SecretBytes,
};

/// The HMAC key events are chained with.
pub struct ChainKey(hmac::Key);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// Length of the raw key.
    pub const LEN: usize = 32;

    /// The key from its raw bytes.
    pub fn new(raw: &SecretBytes) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, raw.expose()))
    }
}

impl Linker for ChainKey {
    /// Every field is length-prefixed, so no two different events encode
    /// alike.
    fn link(&self, prev: &[u8], id: i64, event: &AuditEvent) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"keyward audit v1");
        ctx.update(&(prev.len() as u64).to_be_bytes());
        ctx.update(prev);
        ctx.update(&id.to_be_bytes());
        ctx.update(&event.at.to_be_bytes());
        for field in [
            event.principal.as_str(),
            event.action.as_str(),
            event.target.as_str(),
            event.outcome.as_str(),
            event.peer.as_str(),
            event.request_id.as_str(),
        ] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field.as_bytes());
        }
        ctx.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        access::Method,
        audit::{Action, GENESIS, Outcome},
    };

    fn event() -> AuditEvent {
        AuditEvent {
            at: 1_700_000_001,
            principal: "ops".into(),
            action: Action::Call(Method::RotateKeySet),
            target: "set-1".into(),
            outcome: Outcome::Ok,
            peer: "127.0.0.1".into(),
            request_id: "r1".into(),
        }
    }

    #[test]
    fn fields_are_length_prefixed() {
        let key = ChainKey::new(&SecretBytes::new(vec![7; 32]));
        let mut a = event();
        a.principal = "ab".into();
        a.target = "c".into();
        let mut b = event();
        b.principal = "a".into();
        b.target = "bc".into();
        assert_ne!(key.link(&GENESIS, 1, &a), key.link(&GENESIS, 1, &b));
    }

    #[test]
    fn the_link_depends_on_the_key_the_id_and_the_previous_hash() {
        let key = ChainKey::new(&SecretBytes::new(vec![7; 32]));
        let other = ChainKey::new(&SecretBytes::new(vec![8; 32]));
        let link = key.link(&GENESIS, 1, &event());
        assert_eq!(link.len(), 32);
        assert_eq!(link, key.link(&GENESIS, 1, &event()));
        assert_ne!(link, other.link(&GENESIS, 1, &event()));
        assert_ne!(link, key.link(&GENESIS, 2, &event()));
        assert_ne!(link, key.link(&link, 1, &event()));
    }
}
