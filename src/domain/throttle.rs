//! Throttled authentication: after `limit` failures within `window` from one
//! key, further attempts from that key are refused until the oldest of those
//! failures leaves the window. Keys are chosen by the caller so that an
//! attacker cannot lock a real client out: the token endpoint keys on the
//! peer address *and* the client id, gRPC on the peer address.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::domain::clock::Clock;

/// Failures tracked at most, over all keys; past it the keys whose failures
/// have all left the window are dropped first, then the least recent.
const MAX_KEYS: usize = 65_536;

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

/// Failure counts per key, in memory (each replica throttles on its own).
#[derive(Debug)]
pub struct FailureThrottle {
    settings: ThrottleSettings,
    clock: Arc<dyn Clock>,
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
    /// How many keys `failures` holds, read without the lock: while it is
    /// zero (no recent failure anywhere) checks cost one atomic load.
    tracked: AtomicUsize,
}

impl FailureThrottle {
    /// A throttle reading time from `clock`.
    pub fn new(settings: ThrottleSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings,
            clock,
            failures: Mutex::new(HashMap::new()),
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

    /// `Err(seconds to wait)` when `key` has reached its limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.is_idle() {
            return Ok(());
        }
        let now = self.clock.now();
        let start = self.window_start(now);
        let Ok(mut failures) = self.failures.lock() else {
            return Ok(());
        };
        let Some(times) = failures.get_mut(key) else {
            return Ok(());
        };
        forget_before(times, start);
        if times.is_empty() {
            failures.remove(key);
            self.tracked.store(failures.len(), Ordering::Relaxed);
            return Ok(());
        }
        if times.len() < self.settings.limit as usize {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = oldest.saturating_sub(start).max(1);
        Err(crate::domain::model::secs_u64(wait))
    }

    /// Records a failed attempt from `key`.
    pub fn failed(&self, key: &str) {
        let now = self.clock.now();
        let start = self.window_start(now);
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_KEYS && !failures.contains_key(key) {
            failures.retain(|_, times| times.back().is_some_and(|t| *t > start));
            if failures.len() >= MAX_KEYS {
                let least_recent = failures
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied().unwrap_or(i64::MIN))
                    .map(|(k, _)| k.clone());
                if let Some(k) = least_recent {
                    failures.remove(&k);
                }
            }
        }
        let times = failures.entry(key.to_string()).or_default();
        forget_before(times, start);
        // Only the last `limit` failures matter.
        if times.len() >= self.settings.limit as usize {
            times.pop_front();
        }
        times.push_back(now);
        self.tracked.store(failures.len(), Ordering::Relaxed);
    }
}

/// Drops the failures at or before `start`, which have left the window.
fn forget_before(times: &mut VecDeque<i64>, start: i64) {
    while times.front().is_some_and(|t| *t <= start) {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::clock::ManualClock;

    #[test]
    fn the_eleventh_failure_in_a_minute_is_refused_until_the_window_passes() {
        let clock = ManualClock::new(1_000_000);
        let throttle = FailureThrottle::new(ThrottleSettings::default(), Arc::new(clock.clone()));
        for _ in 0..10 {
            assert_eq!(throttle.check("10.0.0.1 ingestion"), Ok(()));
            throttle.failed("10.0.0.1 ingestion");
            clock.advance(1);
        }
        // Ten failures at t=0..9; now t=10.
        assert_eq!(throttle.check("10.0.0.1 ingestion"), Err(50));
        assert_eq!(throttle.check("10.0.0.1 other-client"), Ok(()));
        assert_eq!(throttle.check("10.0.0.2 ingestion"), Ok(()));
        clock.advance(50);
        assert_eq!(
            throttle.check("10.0.0.1 ingestion"),
            Ok(()),
            "the oldest left"
        );
        throttle.failed("10.0.0.1 ingestion");
        assert!(throttle.check("10.0.0.1 ingestion").is_err());
        clock.advance(61);
        assert_eq!(throttle.check("10.0.0.1 ingestion"), Ok(()));
        assert!(
            throttle.is_idle(),
            "a key whose failures all expired is dropped"
        );
    }

    #[test]
    fn memory_stays_bounded_under_many_keys() {
        let clock = ManualClock::new(0);
        let throttle = FailureThrottle::new(
            ThrottleSettings {
                limit: 1,
                window: 60,
            },
            Arc::new(clock.clone()),
        );
        for i in 0..(MAX_KEYS + 10) {
            throttle.failed(&format!("peer-{i}"));
        }
        let tracked = throttle.failures.lock().map(|f| f.len()).unwrap_or(0);
        assert!(tracked <= MAX_KEYS, "{tracked}");
        assert!(throttle.check(&format!("peer-{}", MAX_KEYS + 9)).is_err());
    }
}
