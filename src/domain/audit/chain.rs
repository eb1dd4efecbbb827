//! The audit chain's rules: each stored event's hash links it to the one
//! before, and a walk of the stored chain finds the first event that was
//! changed, deleted, reordered or added outside keyward, or a start that no
//! retention prune accounts for.

use subtle::ConstantTimeEq as _;

use super::{Action, AuditEvent, AuditRecord, pruned_range};

/// The hash the first event of a database chains from.
pub const GENESIS: [u8; 32] = [0; 32];

/// The link of event `id` to the chain: a keyed hash of the previous hash,
/// the id and every field, under a key only keyward holds.
pub trait Linker: Send + Sync {
    /// The hash of event `id` chained from `prev`.
    fn link(&self, prev: &[u8], id: i64, event: &AuditEvent) -> Vec<u8>;
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
pub struct ChainWalk<'k> {
    linker: &'k dyn Linker,
    bounds: ChainBounds,
    next_id: i64,
    prev: Vec<u8>,
    checked: i64,
    broken: Option<Broken>,
    /// Whether a prune event in the chain deleted exactly the events before
    /// the first kept one: the only way the chain's start may move.
    start_accounted: bool,
}

impl std::fmt::Debug for ChainWalk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainWalk")
            .field("bounds", &self.bounds)
            .field("next_id", &self.next_id)
            .field("checked", &self.checked)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// Whether two hashes are equal, in constant time.
fn same_hash(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl<'k> ChainWalk<'k> {
    /// Starts at the first kept event.
    pub fn new(linker: &'k dyn Linker, bounds: ChainBounds) -> Self {
        Self {
            start_accounted: bounds.first_id <= 1,
            linker,
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
        } else if !same_hash(
            &self.linker.link(&self.prev, record.id, &record.event),
            &record.hash,
        ) {
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
        if record.event.action == Action::Prune
            && pruned_range(&record.event.target)
                .is_some_and(|(_, last)| last == self.bounds.first_id - 1)
        {
            self.start_accounted = true;
        }
        self.checked += 1;
        self.next_id += 1;
        self.prev.clone_from(&record.hash);
    }

    /// Ends the walk: the last event read must be the recorded head, and a
    /// chain that no longer starts at event 1 must hold the prune event that
    /// moved its start there (retention is the only thing that may).
    pub fn finish(mut self) -> ChainReport {
        if self.broken.is_none() && !self.start_accounted {
            let first = self.bounds.first_id;
            self.broken = Some(Broken {
                id: first,
                problem: format!(
                    "events before {first} are gone but no retention prune in the chain deleted \
                     them: deleted outside keyward"
                ),
            });
        }
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
            } else if last > self.bounds.head_id || !same_hash(&self.prev, &self.bounds.head_hash) {
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
    use crate::{
        domain::{
            access::Method,
            audit::{Outcome, prune_target},
        },
        error::ErrorKind,
    };

    /// Not a MAC: the rules only need a link that changes with every input.
    struct Plain(u8);

    impl Linker for Plain {
        fn link(&self, prev: &[u8], id: i64, e: &AuditEvent) -> Vec<u8> {
            let text = format!(
                "{}|{prev:?}|{id}|{}|{}|{}|{}|{}|{}|{}",
                self.0,
                e.at,
                e.principal,
                e.action.as_str(),
                e.target,
                e.outcome.as_str(),
                e.peer,
                e.request_id
            );
            text.into_bytes()
        }
    }

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: 1_700_000_000 + n,
            principal: "ops".into(),
            action: Action::Call(Method::RotateKeySet),
            target: format!("set-{n}"),
            outcome: Outcome::Ok,
            peer: "127.0.0.1".into(),
            request_id: format!("r{n}"),
        }
    }

    fn chain(key: &dyn Linker, n: i64) -> (ChainBounds, Vec<AuditRecord>) {
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

    fn walk(key: &dyn Linker, bounds: &ChainBounds, records: &[AuditRecord]) -> ChainReport {
        let mut walk = ChainWalk::new(key, bounds.clone());
        for r in records {
            walk.check(r);
        }
        walk.finish()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let key = Plain(7);
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
        let key = Plain(7);
        let (bounds, records) = chain(&key, 6);
        let broken_at = |records: &[AuditRecord]| walk(&key, &bounds, records).broken.unwrap().id;

        let mut edited = records.clone();
        edited[2].event.outcome = Outcome::Failed(ErrorKind::PermissionDenied);
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

        assert_eq!(walk(&Plain(8), &bounds, &records).broken.unwrap().id, 1);
    }

    /// `n` events, then retention's prune of events `1..=cut` (so the chain
    /// starts at `cut + 1`): the kept records and their bounds.
    fn pruned(key: &dyn Linker, n: i64, cut: i64) -> (ChainBounds, Vec<AuditRecord>) {
        let (mut bounds, mut records) = chain(key, n);
        let prune = AuditEvent {
            action: Action::Prune,
            target: prune_target(1, cut),
            ..event(n + 1)
        };
        let hash = key.link(&bounds.head_hash, n + 1, &prune);
        records.push(AuditRecord {
            id: n + 1,
            event: prune,
            hash: hash.clone(),
        });
        bounds.head_id = n + 1;
        bounds.head_hash = hash;
        bounds.first_id = cut + 1;
        bounds.first_prev = records[usize::try_from(cut - 1).unwrap()].hash.clone();
        (bounds, records.split_off(usize::try_from(cut).unwrap()))
    }

    #[test]
    fn a_pruned_chain_verifies_from_where_retention_cut_it() {
        let key = Plain(7);
        let (bounds, kept) = pruned(&key, 6, 3);
        let report = walk(&key, &bounds, &kept);
        assert_eq!(report.broken, None);
        assert_eq!((report.checked, report.first_id), (4, 4));
    }

    #[test]
    fn a_prefix_deleted_outside_retention_is_found() {
        let key = Plain(7);
        // Events 1..=3 deleted and the start moved past them by hand.
        let (mut bounds, records) = chain(&key, 6);
        bounds.first_id = 4;
        bounds.first_prev = records[2].hash.clone();
        let broken = walk(&key, &bounds, &records[3..]).broken.unwrap();
        assert_eq!(broken.id, 4);
        assert!(broken.problem.contains("no retention prune"), "{broken:?}");
        // After a real prune of 1..=3, 4 and 5 deleted by hand too.
        let (mut bounds, kept) = pruned(&key, 6, 3);
        bounds.first_id = 6;
        bounds.first_prev = kept[1].hash.clone();
        assert_eq!(walk(&key, &bounds, &kept[2..]).broken.unwrap().id, 6);
    }
}
