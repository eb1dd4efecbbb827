//! Throttled authentication, and how much one unauthenticated peer can make
//! keyward write down.
//!
//! [`FailureThrottle`]: after `limit` failures within `window` from one key
//! (a peer address, or a peer address and a client id), further attempts
//! from that key are refused until the oldest of those failures leaves the
//! window. Memory is bounded without letting an attacker wash a throttled
//! key out: each peer holds at most [`MAX_KEYS_PER_PEER`] keys, every key
//! at most `limit` failures, and when the table is full, keys whose failures
//! all left the window go first, then the least recent one still under its
//! limit; a key over its limit is never dropped before its window passes.
//!
//! [`AuditBudget`]: each peer may have [`AUDIT_BUDGET`] refusals of
//! unauthenticated calls recorded per window; past it they are still
//! refused, and counted, but not written.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::domain::clock::Clock;

/// Keys tracked at most, over all peers.
pub const MAX_KEYS: usize = 16_384;
/// Keys one peer address may hold (its own, and one per client id it tried).
pub const MAX_KEYS_PER_PEER: usize = 64;
/// Refusals of unauthenticated calls recorded per peer per window.
pub const AUDIT_BUDGET: u32 = 100;

/// How many failures, over how long, a key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Failures allowed within the window.
    pub limit: u32,
    /// The window, seconds.
    pub window: u64,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            limit: 10,
            window: 60,
        }
    }
}

/// A refusal by the throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until an attempt is accepted again.
    pub retry_after: u64,
    /// Whether this is the key's first refusal since it reached its limit
    /// (the one worth recording; later ones are only counted).
    pub first: bool,
}

/// What a key remembers.
#[derive(Debug, Default)]
struct Entry {
    /// Failure times within the window, oldest first; at most `limit`.
    failures: VecDeque<i64>,
    /// Whether a refusal was already reported since the limit was reached.
    refused: bool,
}

/// The keys, and how many each peer holds.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<(String, String), Entry>,
    per_peer: HashMap<String, usize>,
}

impl Table {
    fn remove(&mut self, key: &(String, String)) {
        if self.entries.remove(key).is_some()
            && let Some(count) = self.per_peer.get_mut(&key.0)
        {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&key.0);
            }
        }
    }
}

/// Failure counts per key, in memory (each replica throttles on its own).
#[derive(Debug)]
pub struct FailureThrottle {
    settings: ThrottleSettings,
    clock: Arc<dyn Clock>,
    table: Mutex<Table>,
    /// How many keys the table holds, read without the lock: while it is
    /// zero (no recent failure anywhere) checks cost one atomic load.
    tracked: AtomicUsize,
}

impl FailureThrottle {
    /// A throttle reading time from `clock`.
    pub fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings,
            clock,
            table: Mutex::new(Table::default()),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Whether no failure is being tracked at all (the common case).
    pub fn is_idle(&self) -> bool {
        self.tracked.load(Ordering::Relaxed) == 0
    }

    fn window_start(&self, now: i64) -> i64 {
        now.saturating_sub(crate::domain::model::secs_i64(self.settings.window))
    }

    fn limit(&self) -> usize {
        usize::try_from(self.settings.limit).unwrap_or(usize::MAX)
    }

    /// A poisoned lock is taken back as it is: counts are only a defence.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses the key (`peer`, and `client` or `""`) when it has reached
    /// its limit.
    pub fn check(&self, peer: &str, client: &str) -> Result<(), Throttled> {
        if self.is_idle() {
            return Ok(());
        }
        let now = self.clock.now();
        let start = self.window_start(now);
        let limit = self.limit();
        let mut table = self.table();
        let key = (peer.to_string(), client.to_string());
        let Some(entry) = table.entries.get_mut(&key) else {
            return Ok(());
        };
        forget_before(&mut entry.failures, start);
        if entry.failures.len() < limit {
            entry.refused = false;
            if entry.failures.is_empty() {
                table.remove(&key);
                self.tracked.store(table.entries.len(), Ordering::Relaxed);
            }
            return Ok(());
        }
        let oldest = entry.failures.front().copied().unwrap_or(now);
        let first = !entry.refused;
        entry.refused = true;
        Err(Throttled {
            retry_after: crate::domain::model::secs_u64(oldest.saturating_sub(start).max(1)),
            first,
        })
    }

    /// Records a failed attempt of the key (`peer`, and `client` or `""`).
    pub fn failed(&self, peer: &str, client: &str) {
        let now = self.clock.now();
        let start = self.window_start(now);
        let limit = self.limit();
        let mut table = self.table();
        let key = (peer.to_string(), client.to_string());
        if !table.entries.contains_key(&key) && !self.make_room(&mut table, peer, start) {
            // Nowhere to keep it without dropping a key over its limit, or
            // past what this peer may hold: this failure goes uncounted.
            return;
        }
        if !table.entries.contains_key(&key) {
            *table.per_peer.entry(key.0.clone()).or_default() += 1;
        }
        let entry = table.entries.entry(key).or_default();
        forget_before(&mut entry.failures, start);
        // Only the last `limit` failures matter.
        while entry.failures.len() >= limit.max(1) {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        self.tracked.store(table.entries.len(), Ordering::Relaxed);
    }

    /// Whether a new key of `peer` may be kept: the peer holds fewer than
    /// [`MAX_KEYS_PER_PEER`], and the table has room, or can be given some
    /// by dropping keys whose failures all left the window, else the least
    /// recent key still under its limit.
    fn make_room(&self, table: &mut Table, peer: &str, start: i64) -> bool {
        if table.per_peer.get(peer).copied().unwrap_or(0) >= MAX_KEYS_PER_PEER {
            return false;
        }
        if table.entries.len() < MAX_KEYS {
            return true;
        }
        let expired: Vec<(String, String)> = table
            .entries
            .iter()
            .filter(|(_, e)| e.failures.back().is_none_or(|t| *t <= start))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            table.remove(key);
        }
        if table.entries.len() < MAX_KEYS {
            return true;
        }
        let limit = self.limit();
        let least_recent = table
            .entries
            .iter()
            .filter(|(_, e)| e.failures.len() < limit)
            .min_by_key(|(_, e)| e.failures.back().copied().unwrap_or(i64::MIN))
            .map(|(k, _)| k.clone());
        match least_recent {
            Some(key) => {
                table.remove(&key);
                true
            }
            None => false,
        }
    }
}

/// Drops the failures at or before `start`, which have left the window.
fn forget_before(times: &mut VecDeque<i64>, start: i64) {
    while times.front().is_some_and(|t| *t <= start) {
        times.pop_front();
    }
}

/// How many refusals of unauthenticated calls each peer has had recorded in
/// the current window: a peer past [`AUDIT_BUDGET`] is refused as before,
/// but what it makes keyward write stays bounded.
#[derive(Debug)]
pub struct AuditBudget {
    window: u64,
    clock: Arc<dyn Clock>,
    /// Per peer: the window's start and the refusals recorded in it.
    spent: Mutex<HashMap<String, (i64, u32)>>,
}

impl AuditBudget {
    /// Budgets per `window` seconds, reading time from `clock`.
    pub fn new(window: u64, clock: Arc<dyn Clock>) -> Self {
        Self {
            window,
            clock,
            spent: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more refusal of `peer` may be recorded (and counts it).
    pub fn spend(&self, peer: &str) -> bool {
        let now = self.clock.now();
        let window = crate::domain::model::secs_i64(self.window.max(1));
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spent.len() >= MAX_KEYS && !spent.contains_key(peer) {
            spent.retain(|_, (since, _)| now.saturating_sub(*since) < window);
            if spent.len() >= MAX_KEYS {
                // Too many peers to count: record (an attacker with that many
                // addresses gets no more per address than the budget).
                return true;
            }
        }
        let (since, used) = spent.entry(peer.to_string()).or_insert((now, 0));
        if now.saturating_sub(*since) >= window {
            *since = now;
            *used = 0;
        }
        if *used >= AUDIT_BUDGET {
            return false;
        }
        *used += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;

    fn throttle(clock: &ManualClock) -> FailureThrottle {
        FailureThrottle::new(ThrottleSettings::default(), Arc::new(clock.clone()))
    }

    #[test]
    fn the_eleventh_failure_in_a_minute_is_refused_until_the_window_passes() {
        let clock = ManualClock::new(1_000_000);
        let throttle = throttle(&clock);
        for _ in 0..10 {
            assert_eq!(throttle.check("10.0.0.1", "ingestion"), Ok(()));
            throttle.failed("10.0.0.1", "ingestion");
            clock.advance(1);
        }
        // Ten failures at t=0..9; now t=10.
        let refused = throttle.check("10.0.0.1", "ingestion").unwrap_err();
        assert_eq!((refused.retry_after, refused.first), (50, true));
        assert!(
            !throttle.check("10.0.0.1", "ingestion").unwrap_err().first,
            "the first refusal is the one reported"
        );
        assert_eq!(throttle.check("10.0.0.1", "other-client"), Ok(()));
        assert_eq!(throttle.check("10.0.0.2", "ingestion"), Ok(()));
        clock.advance(50);
        assert_eq!(
            throttle.check("10.0.0.1", "ingestion"),
            Ok(()),
            "the oldest left"
        );
        throttle.failed("10.0.0.1", "ingestion");
        assert!(throttle.check("10.0.0.1", "ingestion").unwrap_err().first);
        clock.advance(61);
        assert_eq!(throttle.check("10.0.0.1", "ingestion"), Ok(()));
        assert!(
            throttle.is_idle(),
            "a key whose failures all expired is dropped"
        );
    }

    #[test]
    fn junk_from_one_peer_cannot_wash_out_a_throttled_key() {
        let clock = ManualClock::new(0);
        let throttle = throttle(&clock);
        for _ in 0..10 {
            throttle.failed("10.0.0.1", "ingestion");
        }
        // The attacker's own address tries client ids without end.
        for i in 0..(MAX_KEYS + 100) {
            throttle.failed("10.0.0.1", &format!("junk-{i}"));
        }
        assert!(throttle.check("10.0.0.1", "ingestion").is_err());
        let table = throttle.table();
        assert!(
            table.entries.len() <= MAX_KEYS_PER_PEER,
            "{}",
            table.entries.len()
        );
    }

    #[test]
    fn junk_from_many_peers_evicts_keys_under_their_limit_never_one_over_it() {
        let clock = ManualClock::new(0);
        let throttle = throttle(&clock);
        for _ in 0..10 {
            throttle.failed("10.0.0.1", "ingestion");
        }
        throttle.failed("10.0.0.9", "other");
        clock.advance(1);
        for i in 0..(MAX_KEYS + 100) {
            throttle.failed(&format!("peer-{i}"), "junk");
        }
        assert!(
            throttle.check("10.0.0.1", "ingestion").is_err(),
            "still throttled"
        );
        let table = throttle.table();
        assert!(table.entries.len() <= MAX_KEYS, "{}", table.entries.len());
        assert!(
            !table
                .entries
                .contains_key(&("10.0.0.9".to_string(), "other".to_string())),
            "the least recent key under its limit went first"
        );
    }

    #[test]
    fn a_peer_past_its_audit_budget_is_not_recorded_until_the_window_passes() {
        let clock = ManualClock::new(0);
        let budget = AuditBudget::new(60, Arc::new(clock.clone()));
        for _ in 0..AUDIT_BUDGET {
            assert!(budget.spend("10.0.0.1"));
        }
        assert!(!budget.spend("10.0.0.1"));
        assert!(budget.spend("10.0.0.2"), "other peers keep theirs");
        clock.advance(60);
        assert!(budget.spend("10.0.0.1"));
    }
}
