//! The audit trail, pure: what an event holds, which events must be durable
//! before their response, and the keyed hash chain that makes changing,
//! deleting or reordering stored events detectable.
//!
//! Each event's `hash` is HMAC-SHA-256 of the previous event's hash, its own
//! id and its fields. The HMAC key is random, sealed under the master key in
//! the database: someone who can write to the database but does not hold the
//! master key cannot re-link a chain they changed.

use ring::hmac;

use crate::{domain::access::Method, domain::secret::SecretBytes};

/// The action of a `/oauth2/token` request.
pub const TOKEN_ENDPOINT: &str = "/oauth2/token";
/// The action recorded when retention pruned older events.
pub const PRUNE_ACTION: &str = "AuditPrune";
/// The outcome of a call that succeeded.
pub const OK: &str = "OK";
/// The hash the first event of a database chains from.
pub const GENESIS: [u8; 32] = [0; 32];
/// The request id header (HTTP) and metadata key (gRPC): read from callers,
/// always answered.
pub const REQUEST_ID: &str = "x-request-id";

/// The caller's request id when it is a sane one (1 to 128 printable ASCII
/// characters), or a new random one.
pub fn request_id(given: Option<&str>) -> String {
    given
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(new_request_id, str::to_string)
}

/// A fresh request id: 12 random bytes, 16 characters. Random rather than
/// counted, so a caller learns nothing of other callers' traffic from it.
pub fn new_request_id() -> String {
    crate::crypto::b64url(&crate::crypto::random::unguessable::<12>())
}

/// One audited call, before it is stored. Never holds a secret, a token, a
/// private key or a claims payload: only names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Token name, `bootstrap`, or the OAuth client id; empty when unknown.
    pub principal: String,
    /// The gRPC method or [`TOKEN_ENDPOINT`].
    pub action: String,
    /// Key set, kid, client id or token name; empty when the call names none.
    pub target: String,
    /// [`OK`], a gRPC code name or an OAuth error code.
    pub outcome: String,
    /// The caller's IP address; empty when unknown.
    pub peer: String,
    /// The request id, the caller's or generated.
    pub request_id: String,
}

/// A stored event: its place in the chain and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, consecutive from 1.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
    /// HMAC of the previous hash, the id and the fields.
    pub hash: Vec<u8>,
}

/// When an event must reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the response is sent; if it cannot be stored the call fails.
    BeforeResponse,
    /// Within a second, in a batch; a crash can lose the last batch.
    Batched,
}

impl Durability {
    /// Events that reveal or change secrets or keys, token management and
    /// refused authentication are durable before the response; reads of
    /// public or non-secret data and signing are batched.
    pub fn of(method: Method) -> Self {
        use Method::*;
        match method {
            GetKeySet | ListKeySets | ListKeys | SignJwt | GetJwks | GetClient | ListClients
            | GetToken | ListTokens | ListAuditEvents | VerifyAuditChain | GetMasterStatus => {
                Self::Batched
            }
            CreateKeySet | UpdateKeySet | DeleteKeySet | RotateKeySet | RotateDue | RevokeKey
            | ExportKey | ImportKey | PutClient | GetClientSecret | RotateClientSecret
            | DeleteClient | RevokeClientSecret | VerifyClientSecret | CreateToken
            | RevokeToken | Rewrap => Self::BeforeResponse,
        }
    }
}

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

    /// The hash of event `id` chained from `prev`. Every field is
    /// length-prefixed, so no two different events encode alike.
    pub fn link(&self, prev: &[u8], id: i64, event: &AuditEvent) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"keyward audit v1");
        ctx.update(&(prev.len() as u64).to_be_bytes());
        ctx.update(prev);
        ctx.update(&id.to_be_bytes());
        ctx.update(&event.at.to_be_bytes());
        for field in [
            &event.principal,
            &event.action,
            &event.target,
            &event.outcome,
            &event.peer,
            &event.request_id,
        ] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field.as_bytes());
        }
        ctx.sign().as_ref().to_vec()
    }

    /// Whether `record` is the event that follows `prev`, unchanged.
    fn holds(&self, prev: &[u8], record: &AuditRecord) -> bool {
        let expected = self.link(prev, record.id, &record.event);
        crate::crypto::secrets_equal(&expected, &record.hash)
    }
}

/// Where the stored chain starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBounds {
    /// The first kept event (older ones were pruned).
    pub first_id: i64,
    /// The hash the first kept event chains from.
    pub first_prev: Vec<u8>,
    /// The last event; `first_id - 1` when none is kept.
    pub head_id: i64,
    /// Its hash.
    pub head_hash: Vec<u8>,
}

/// The first event that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Its id (for a deleted event: the id that is missing).
    pub id: i64,
    /// What is wrong, for a person.
    pub problem: String,
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events checked.
    pub checked: i64,
    /// The first kept event's id.
    pub first_id: i64,
    /// The last event's id.
    pub last_id: i64,
    /// The first break; `None` when the chain is intact.
    pub broken: Option<Broken>,
}

/// Checks stored events one by one, in id order, against the chain.
#[derive(Debug)]
pub struct ChainWalk<'k> {
    key: &'k ChainKey,
    bounds: ChainBounds,
    next_id: i64,
    prev: Vec<u8>,
    checked: i64,
    broken: Option<Broken>,
}

impl<'k> ChainWalk<'k> {
    /// Starts at the first kept event.
    pub fn new(key: &'k ChainKey, bounds: ChainBounds) -> Self {
        Self {
            key,
            next_id: bounds.first_id,
            prev: bounds.first_prev.clone(),
            bounds,
            checked: 0,
            broken: None,
        }
    }

    /// Whether the walk has found a break (later events need not be read).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Checks the next stored event.
    pub fn check(&mut self, record: &AuditRecord) {
        if self.broken.is_some() {
            return;
        }
        let problem = if record.id > self.next_id {
            Some((self.next_id, "is missing: deleted".to_string()))
        } else if record.id < self.next_id {
            Some((record.id, "is out of order or duplicated".to_string()))
        } else if !self.key.holds(&self.prev, record) {
            Some((
                record.id,
                "does not match its hash: changed, moved, or the events before it were".to_string(),
            ))
        } else {
            None
        };
        if let Some((id, problem)) = problem {
            self.broken = Some(Broken {
                id,
                problem: format!("event {id} {problem}"),
            });
            return;
        }
        self.checked += 1;
        self.next_id += 1;
        self.prev.clone_from(&record.hash);
    }

    /// Ends the walk: the last event read must be the recorded head.
    pub fn finish(mut self) -> ChainReport {
        if self.broken.is_none() {
            let last = self.next_id - 1;
            if last < self.bounds.head_id {
                self.broken = Some(Broken {
                    id: self.next_id,
                    problem: format!(
                        "events {}..={} are missing: deleted (the chain's head is {})",
                        self.next_id, self.bounds.head_id, self.bounds.head_id
                    ),
                });
            } else if last > self.bounds.head_id
                || !crate::crypto::secrets_equal(&self.prev, &self.bounds.head_hash)
            {
                self.broken = Some(Broken {
                    id: last,
                    problem: format!(
                        "event {last} is not the chain's recorded head (event {}): the last events were changed or added outside keyward",
                        self.bounds.head_id
                    ),
                });
            }
        }
        ChainReport {
            checked: self.checked,
            first_id: self.bounds.first_id,
            last_id: self.bounds.head_id,
            broken: self.broken,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> ChainKey {
        ChainKey::new(&SecretBytes::new(vec![7; 32]))
    }

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000 + n,
            principal: "ops".into(),
            action: "RotateKeySet".into(),
            target: format!("set-{n}"),
            outcome: OK.into(),
            peer: "127.0.0.1".into(),
            request_id: format!("r{n}"),
        }
    }

    fn chain(key: &ChainKey, n: i64) -> (ChainBounds, Vec<AuditRecord>) {
        let mut prev = GENESIS.to_vec();
        let mut records = Vec::new();
        for id in 1..=n {
            let hash = key.link(&prev, id, &event(id));
            records.push(AuditRecord {
                id,
                event: event(id),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let bounds = ChainBounds {
            first_id: 1,
            first_prev: GENESIS.to_vec(),
            head_id: n,
            head_hash: prev,
        };
        (bounds, records)
    }

    fn walk(key: &ChainKey, bounds: &ChainBounds, records: &[AuditRecord]) -> ChainReport {
        let mut walk = ChainWalk::new(key, bounds.clone());
        for r in records {
            walk.check(r);
        }
        walk.finish()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let key = key();
        let (bounds, records) = chain(&key, 5);
        let report = walk(&key, &bounds, &records);
        assert_eq!(report.broken, None);
        assert_eq!((report.checked, report.first_id, report.last_id), (5, 1, 5));
        let empty = ChainBounds {
            first_id: 1,
            first_prev: GENESIS.to_vec(),
            head_id: 0,
            head_hash: GENESIS.to_vec(),
        };
        assert_eq!(walk(&key, &empty, &[]).broken, None);
    }

    #[test]
    fn edits_deletions_swaps_and_truncation_are_found_at_the_first_broken_event() {
        let key = key();
        let (bounds, records) = chain(&key, 6);
        let broken_at = |records: &[AuditRecord]| walk(&key, &bounds, records).broken.unwrap().id;

        let mut edited = records.clone();
        edited[2].event.outcome = "PERMISSION_DENIED".into();
        assert_eq!(broken_at(&edited), 3);

        let mut deleted = records.clone();
        deleted.remove(3);
        assert_eq!(broken_at(&deleted), 4);

        let mut swapped = records.clone();
        let (a, b) = (swapped[1].event.clone(), swapped[2].event.clone());
        swapped[1].event = b;
        swapped[2].event = a;
        assert_eq!(broken_at(&swapped), 2);

        assert_eq!(broken_at(&records[..4]), 5, "the newest events deleted");

        let other = ChainKey::new(&SecretBytes::new(vec![8; 32]));
        assert_eq!(walk(&other, &bounds, &records).broken.unwrap().id, 1);
    }

    #[test]
    fn a_pruned_chain_verifies_from_where_it_was_cut() {
        let key = key();
        let (mut bounds, records) = chain(&key, 6);
        bounds.first_id = 4;
        bounds.first_prev = records[2].hash.clone();
        let report = walk(&key, &bounds, &records[3..]);
        assert_eq!(report.broken, None);
        assert_eq!((report.checked, report.first_id), (3, 4));
    }

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
        }
    }

    #[test]
    fn fields_are_length_prefixed() {
        let key = key();
        let mut a = event(1);
        a.principal = "ab".into();
        a.action = "c".into();
        let mut b = event(1);
        b.principal = "a".into();
        b.action = "bc".into();
        assert_ne!(key.link(&GENESIS, 1, &a), key.link(&GENESIS, 1, &b));
    }

    #[test]
    fn every_method_has_a_durability_and_secret_reads_are_durable() {
        assert_eq!(
            Durability::of(Method::GetClientSecret),
            Durability::BeforeResponse
        );
        assert_eq!(
            Durability::of(Method::ExportKey),
            Durability::BeforeResponse
        );
        assert_eq!(Durability::of(Method::SignJwt), Durability::Batched);
        for m in Method::ALL {
            let _ = Durability::of(*m);
        }
    }
}
