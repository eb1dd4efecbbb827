//! The key lifecycle as pure functions of `now`.
//!
//! ```text
//! pending ──rotation──▶ active ──rotation──▶ retired ──retain──▶ expired
//!    │                    │                     │
//!    └──────── revoke ────┴──────── revoke ─────┴──▶ revoked
//! ```
//!
//! A key set always has one active key and normally one pending key, which is
//! published from the moment it is generated. When a rotation is due the
//! pending key (published for at least `prepublish`) starts signing, the active
//! key retires (published for `retain` more), and a new pending key is made.
//! Nothing here does I/O: [`plan`] turns the stored state and `now` into a
//! [`Plan`], which the service applies in one conditional transaction.

use crate::{
    Error, Result,
    domain::cron::Schedule,
    domain::model::{KeyState, format_duration, secs_i64},
};

/// Default rotation period: monthly.
pub const DEFAULT_ROTATE_EVERY: u64 = 30 * 86_400;
/// Default pre-publication: a day, longer than every common JWKS cache.
pub const DEFAULT_PREPUBLISH: u64 = 86_400;
/// Default retention after retirement: a day.
pub const DEFAULT_RETAIN: u64 = 86_400;
/// Default longest token lifetime.
pub const DEFAULT_MAX_TOKEN_TTL: u64 = 3600;
/// Longest `max-token-ttl` a key set may have.
pub const MAX_TOKEN_TTL: u64 = 366 * 86_400;

/// Policy settings a caller gives; `None` keeps the stored value (or the
/// default on create). Durations in seconds.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput {
    /// Rotation period (replaces a schedule).
    pub rotate_every: Option<u64>,
    /// Cron schedule (replaces a period).
    pub schedule: Option<String>,
    /// Minimum pre-publication.
    pub prepublish: Option<u64>,
    /// Publication after retirement.
    pub retain: Option<u64>,
    /// Longest token lifetime.
    pub max_token_ttl: Option<u64>,
}

/// What the planned times of a key depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTimes {
    /// Its state.
    pub state: KeyState,
    /// Creation time.
    pub created_at: i64,
    /// When it started signing.
    pub activated_at: Option<i64>,
    /// When it stopped signing.
    pub retired_at: Option<i64>,
    /// When it leaves (or left) the JWKS.
    pub expires_at: Option<i64>,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
}

/// A key's times as shown: what happened, or for pending and active keys
/// what is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlannedTimes {
    /// When it starts (or started) signing.
    pub activates_at: Option<i64>,
    /// When it stops (or stopped) signing.
    pub retires_at: Option<i64>,
    /// When it leaves (or left) the JWKS.
    pub expires_at: Option<i64>,
}

/// The times of each key of a key set due to rotate at `next_rotation_at`:
/// the switch happens then, or once the youngest pending key has been
/// published for `prepublish`, whichever is later.
pub fn planned_times(
    policy: &Policy,
    next_rotation_at: i64,
    keys: &[KeyTimes],
) -> Vec<PlannedTimes> {
    let pending_ready = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .map(|k| k.created_at.saturating_add(secs_i64(policy.prepublish)))
        .max();
    let switch = next_rotation_at.max(pending_ready.unwrap_or(next_rotation_at));
    keys.iter()
        .map(|k| match k.state {
            KeyState::Pending => PlannedTimes {
                activates_at: Some(switch),
                ..PlannedTimes::default()
            },
            KeyState::Active => PlannedTimes {
                activates_at: k.activated_at,
                retires_at: Some(switch),
                expires_at: Some(switch.saturating_add(secs_i64(policy.retain))),
            },
            KeyState::Retired | KeyState::Expired | KeyState::Revoked => PlannedTimes {
                activates_at: k.activated_at,
                retires_at: k.retired_at,
                expires_at: k.expires_at.or(k.revoked_at),
            },
        })
        .collect()
}

/// When rotations fall due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// Every fixed period, in seconds.
    Every(u64),
    /// At each firing of a cron schedule (UTC).
    Cron(Schedule),
}

/// A key set's rotation policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// When rotations fall due.
    pub cadence: Cadence,
    /// Minimum time a key is published before it signs, seconds.
    pub prepublish: u64,
    /// Time a key stays published after it stops signing, seconds.
    pub retain: u64,
    /// Longest token lifetime `SignJwt` issues, seconds.
    pub max_token_ttl: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            cadence: Cadence::Every(DEFAULT_ROTATE_EVERY),
            prepublish: DEFAULT_PREPUBLISH,
            retain: DEFAULT_RETAIN,
            max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
        }
    }
}

impl Policy {
    /// Defaults that stay valid whatever JWKS max-age is configured.
    pub fn defaults_for(jwks_max_age: u64) -> Self {
        let base = Self::default();
        Self {
            prepublish: base.prepublish.max(2 * jwks_max_age),
            retain: base.retain.max(base.max_token_ttl + jwks_max_age),
            ..base
        }
    }

    /// `input` over this policy, checking what it sets (the combined rules
    /// are [`Policy::validate`]'s).
    pub fn merged(self, input: &PolicyInput) -> Result<Self> {
        let cadence = match (&input.rotate_every, &input.schedule) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "schedule",
                    "give either rotate-every or schedule, not both",
                ));
            }
            (Some(every), None) => Cadence::Every(*every),
            (None, Some(expr)) => {
                Cadence::Cron(Schedule::parse(expr).map_err(|e| Error::invalid("schedule", e))?)
            }
            (None, None) => self.cadence,
        };
        let max_token_ttl = input.max_token_ttl.unwrap_or(self.max_token_ttl);
        if max_token_ttl > MAX_TOKEN_TTL {
            return Err(Error::invalid(
                "max_token_ttl",
                format!("at most {}", format_duration(MAX_TOKEN_TTL)),
            ));
        }
        Ok(Self {
            cadence,
            prepublish: input.prepublish.unwrap_or(self.prepublish),
            retain: input.retain.unwrap_or(self.retain),
            max_token_ttl,
        })
    }

    /// Checks the policy against the JWKS max-age clients are told, explaining
    /// what is wrong in terms of the flags.
    pub fn validate(&self, jwks_max_age: u64, now: i64) -> Result<()> {
        let period = match &self.cadence {
            Cadence::Every(0) => {
                return Err(Error::invalid("rotate_every", "must be at least 1 second"));
            }
            Cadence::Every(p) => *p,
            Cadence::Cron(schedule) => schedule
                .shortest_gap(now, 400 * 86_400)
                .and_then(|g| u64::try_from(g).ok())
                .unwrap_or(u64::MAX),
        };
        if self.max_token_ttl == 0 {
            return Err(Error::invalid("max_token_ttl", "must be at least 1 second"));
        }
        if self.prepublish < 2 * jwks_max_age {
            return Err(Error::invalid(
                "prepublish",
                format!(
                    "{} is shorter than twice the JWKS max-age ({jwks_max_age}s): a client that \
                     fetched the JWKS just before a key was published could meet a token from it \
                     before its cache expires; use at least {}",
                    format_duration(self.prepublish),
                    format_duration(2 * jwks_max_age)
                ),
            ));
        }
        if self.prepublish >= period {
            return Err(Error::invalid(
                "prepublish",
                format!(
                    "{} is not shorter than the rotation period ({}): each new key must be \
                     published before the next rotation is due",
                    format_duration(self.prepublish),
                    format_duration(period)
                ),
            ));
        }
        let needed = self.max_token_ttl + jwks_max_age;
        if self.retain < needed {
            return Err(Error::invalid(
                "retain",
                format!(
                    "{} is shorter than max-token-ttl ({}) plus the JWKS max-age ({jwks_max_age}s): \
                     tokens signed just before a rotation would outlive their key; use at least {}",
                    format_duration(self.retain),
                    format_duration(self.max_token_ttl),
                    format_duration(needed)
                ),
            ));
        }
        Ok(())
    }

    /// The JWKS `max-age` for this key set: the configured one, but never more
    /// than half the pre-publication, and at least 1 s.
    pub fn jwks_max_age(&self, configured: u64) -> u64 {
        jwks_max_age(configured, self.prepublish)
    }

    /// The first due time for a key set whose active key started at `anchor`.
    pub fn first_due(&self, anchor: i64, now: i64) -> i64 {
        match &self.cadence {
            Cadence::Every(p) => anchor.saturating_add(secs_i64(*p)).max(now),
            Cadence::Cron(s) => s.next_after(now).unwrap_or(i64::MAX),
        }
    }

    /// The next due time after a rotation that was due at `due` and ran at
    /// `now`: one rotation catches up with any number of missed periods.
    pub fn next_due(&self, due: i64, now: i64) -> i64 {
        match &self.cadence {
            Cadence::Every(p) => {
                let p = secs_i64(*p).max(1);
                let behind = now.saturating_sub(due).max(0);
                due.saturating_add((behind / p + 1).saturating_mul(p))
            }
            Cadence::Cron(s) => s.next_after(now).unwrap_or(i64::MAX),
        }
    }
}

/// The JWKS `max-age` for a key set pre-publishing for `prepublish` seconds:
/// the configured one, but never more than half the pre-publication, at least 1 s.
pub fn jwks_max_age(configured: u64, prepublish: u64) -> u64 {
    configured.min(prepublish / 2).max(1)
}

/// What the planner needs to know of a key.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// The kid.
    pub kid: String,
    /// Its state.
    pub state: KeyState,
    /// When it was generated (and published, for pending keys).
    pub created_at: i64,
    /// When it leaves the JWKS, for retired keys.
    pub expires_at: Option<i64>,
}

/// A change of one key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The key.
    pub kid: String,
    /// Its state now (the change applies only if it still is).
    pub from: KeyState,
    /// Its state after.
    pub to: KeyState,
}

/// Everything due for one key set at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Key state changes, in the order they must apply (retire before promote).
    pub changes: Vec<KeyChange>,
    /// Whether a new pending key must be generated and published.
    pub add_pending: bool,
    /// Whether a new key must be generated to become active at once (there is
    /// no pending key to promote).
    pub add_active: bool,
    /// The new due time, when it moves.
    pub next_rotation_at: Option<i64>,
    /// Whether this plan is a rotation (pending → active).
    pub rotates: bool,
    /// Why a due rotation waits, when it does.
    pub waiting: Option<String>,
    /// Warnings for the operator (forced promotions of young keys).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Whether the plan changes anything.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && !self.add_pending && !self.add_active
    }
}

fn newest(keys: &[KeyView], state: KeyState) -> Option<&KeyView> {
    keys.iter()
        .filter(|k| k.state == state)
        .max_by_key(|k| k.created_at)
}

fn change(k: &KeyView, to: KeyState) -> KeyChange {
    KeyChange {
        kid: k.kid.clone(),
        from: k.state,
        to,
    }
}

/// What the scheduled sweep does for one key set at `now`.
pub fn plan(now: i64, policy: &Policy, next_rotation_at: i64, keys: &[KeyView]) -> Plan {
    let mut plan = Plan::default();
    for k in keys {
        if k.state == KeyState::Retired && k.expires_at.is_some_and(|t| t <= now) {
            plan.changes.push(change(k, KeyState::Expired));
        }
    }
    let active = newest(keys, KeyState::Active);
    let pending = newest(keys, KeyState::Pending);
    match (pending, next_rotation_at <= now) {
        (Some(p), true) => {
            let ready_at = p.created_at.saturating_add(secs_i64(policy.prepublish));
            if ready_at > now {
                plan.waiting = Some(format!(
                    "rotation is due but pending key {} has been published for {} of the {} \
                     pre-publication; it rotates at {}",
                    p.kid,
                    format_duration(u64::try_from(now - p.created_at).unwrap_or(0)),
                    format_duration(policy.prepublish),
                    crate::domain::model::format_time(ready_at)
                ));
            } else {
                if let Some(a) = active {
                    plan.changes.push(change(a, KeyState::Retired));
                }
                plan.changes.push(change(p, KeyState::Active));
                plan.add_pending = true;
                plan.rotates = true;
                plan.next_rotation_at = Some(policy.next_due(next_rotation_at, now));
            }
        }
        (None, _) => {
            // Normally a rotation leaves a pending key behind; make one if a
            // revocation or an older keyward left the set without.
            plan.add_pending = true;
            if active.is_none() {
                plan.add_active = true;
            }
        }
        (Some(_), false) => {}
    }
    plan
}

/// An immediate rotation (`keyset rotate`, or revoking the active key): the
/// pending key signs at once whatever its age; without one, a new key does.
pub fn force_rotation(
    now: i64,
    policy: &Policy,
    jwks_max_age: u64,
    next_rotation_at: i64,
    keys: &[KeyView],
    revoke_active: bool,
) -> Plan {
    let mut plan = Plan {
        rotates: true,
        add_pending: true,
        ..Plan::default()
    };
    if let Some(a) = newest(keys, KeyState::Active) {
        let to = if revoke_active {
            KeyState::Revoked
        } else {
            KeyState::Retired
        };
        plan.changes.push(change(a, to));
    }
    match newest(keys, KeyState::Pending) {
        Some(p) => {
            let published = now.saturating_sub(p.created_at).max(0);
            let max_age = secs_i64(policy.jwks_max_age(jwks_max_age));
            if published < max_age {
                plan.warnings.push(format!(
                    "key {} signs after being published for only {}, less than the JWKS max-age \
                     ({}): clients holding a cached JWKS may reject its tokens until their cache \
                     expires",
                    p.kid,
                    format_duration(u64::try_from(published).unwrap_or(0)),
                    format_duration(u64::try_from(max_age).unwrap_or(0))
                ));
            }
            plan.changes.push(change(p, KeyState::Active));
        }
        None => {
            plan.add_active = true;
            plan.warnings.push(
                "no pending key existed: a new key signs without any pre-publication; clients \
                 holding a cached JWKS may reject its tokens until their cache expires"
                    .into(),
            );
        }
    }
    // The new active key gets a full period before the next scheduled rotation.
    plan.next_rotation_at = Some(policy.next_due(next_rotation_at.min(now), now));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_a_long_jwks_max_age() {
        assert_eq!(Policy::defaults_for(300), Policy::default());
        let long = Policy::defaults_for(2 * 86_400);
        assert_eq!(long.prepublish, 4 * 86_400);
        assert_eq!(long.retain, DEFAULT_MAX_TOKEN_TTL + 2 * 86_400);
        assert!(long.validate(2 * 86_400, 0).is_ok());
    }

    #[test]
    fn merging_keeps_what_is_not_given_and_checks_what_is() {
        let base = Policy::default();
        let kept = base.clone().merged(&PolicyInput::default()).unwrap();
        assert_eq!(kept, base);
        let cron = base
            .clone()
            .merged(&PolicyInput {
                schedule: Some("0 3 1 * *".into()),
                retain: Some(7200),
                ..PolicyInput::default()
            })
            .unwrap();
        assert!(matches!(cron.cadence, Cadence::Cron(_)));
        assert_eq!((cron.retain, cron.prepublish), (7200, base.prepublish));
        let both = PolicyInput {
            rotate_every: Some(3600),
            schedule: Some("0 * * * *".into()),
            ..PolicyInput::default()
        };
        let bad_cron = PolicyInput {
            schedule: Some("0 5/4294967295 * * *".into()),
            ..PolicyInput::default()
        };
        let too_long = PolicyInput {
            max_token_ttl: Some(MAX_TOKEN_TTL + 1),
            ..PolicyInput::default()
        };
        for (input, field) in [
            (both, "schedule"),
            (bad_cron, "schedule"),
            (too_long, "max_token_ttl"),
        ] {
            let err = base.clone().merged(&input).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid {field}")), "{err}");
        }
    }

    #[test]
    fn planned_times_wait_for_a_young_pending_key() {
        let policy = Policy {
            prepublish: 100,
            retain: 50,
            ..Policy::default()
        };
        let key = |state, created_at| KeyTimes {
            state,
            created_at,
            activated_at: (state == KeyState::Active).then_some(created_at),
            retired_at: None,
            expires_at: None,
            revoked_at: None,
        };
        let retired = KeyTimes {
            retired_at: Some(5),
            expires_at: Some(55),
            ..key(KeyState::Retired, 0)
        };
        let keys = [
            key(KeyState::Active, 10),
            key(KeyState::Pending, 10),
            retired,
        ];
        // Due at 1000, pending published since 10: the switch is at 1000.
        let p = planned_times(&policy, 1000, &keys);
        assert_eq!(p[0].activates_at, Some(10));
        assert_eq!((p[0].retires_at, p[0].expires_at), (Some(1000), Some(1050)));
        assert_eq!(p[1].activates_at, Some(1000));
        assert_eq!((p[2].retires_at, p[2].expires_at), (Some(5), Some(55)));
        // Due at 50, but the pending key is ready only at 110.
        let p = planned_times(&policy, 50, &keys);
        assert_eq!((p[1].activates_at, p[0].retires_at), (Some(110), Some(110)));
    }

    const DAY: u64 = 86_400;

    fn key(kid: &str, state: KeyState, created_at: i64, expires_at: Option<i64>) -> KeyView {
        KeyView {
            kid: kid.into(),
            state,
            created_at,
            expires_at,
        }
    }

    #[test]
    fn defaults_are_valid_for_the_default_max_age() {
        Policy::default().validate(300, 0).unwrap();
        assert_eq!(Policy::default().jwks_max_age(300), 300);
    }

    #[test]
    fn validation_explains_each_rule() {
        let base = Policy::default();
        let short_pre = Policy {
            prepublish: 500,
            ..base.clone()
        };
        let err = short_pre.validate(300, 0).unwrap_err().to_string();
        assert!(err.contains("prepublish") && err.contains("10m"), "{err}");
        let long_pre = Policy {
            prepublish: 31 * DAY,
            ..base.clone()
        };
        let err = long_pre.validate(300, 0).unwrap_err().to_string();
        assert!(err.contains("rotation period"), "{err}");
        let short_retain = Policy {
            retain: 3600,
            ..base.clone()
        };
        let err = short_retain.validate(300, 0).unwrap_err().to_string();
        assert!(err.contains("retain") && err.contains("1h5m"), "{err}");
        let cron = Policy {
            cadence: Cadence::Cron(Schedule::parse("0 * * * *").unwrap()),
            ..base
        };
        let err = cron.validate(300, 0).unwrap_err().to_string();
        assert!(
            err.contains("1h"),
            "the cron's period is its shortest gap: {err}"
        );
    }

    #[test]
    fn next_due_catches_up_in_one_step() {
        let p = Policy::default();
        let period = (30 * DAY) as i64;
        assert_eq!(p.next_due(1000, 1000), 1000 + period);
        // Down for three and a half periods: one rotation, next due in the future.
        let now = 1000 + 3 * period + period / 2;
        let next = p.next_due(1000, now);
        assert_eq!(next, 1000 + 4 * period);
        assert!(next > now);
    }

    #[test]
    fn sweep_rotates_when_due_and_prepublished() {
        let p = Policy::default();
        let keys = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 0, None),
            key("old", KeyState::Retired, 0, Some(100)),
        ];
        let due = (30 * DAY) as i64;
        let quiet = plan(due - 1, &p, due, &keys);
        assert_eq!(quiet.changes.len(), 1, "only the expiry");
        assert!(!quiet.rotates);
        let rotation = plan(due, &p, due, &keys);
        assert!(rotation.rotates && rotation.add_pending);
        assert_eq!(
            rotation
                .changes
                .iter()
                .map(|c| (c.kid.as_str(), c.to))
                .collect::<Vec<_>>(),
            [
                ("old", KeyState::Expired),
                ("a", KeyState::Retired),
                ("p", KeyState::Active)
            ]
        );
        assert_eq!(rotation.next_rotation_at, Some(due + due));
    }

    #[test]
    fn a_young_pending_key_makes_the_rotation_wait() {
        let p = Policy::default();
        let keys = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 1000, None),
        ];
        let plan = plan(1000 + 3600, &p, 0, &keys);
        assert!(!plan.rotates && plan.waiting.is_some() && plan.is_empty());
    }

    #[test]
    fn forced_rotation_warns_about_young_keys() {
        let p = Policy::default();
        let keys = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 1000, None),
        ];
        let forced = force_rotation(1010, &p, 300, 5000, &keys, false);
        assert_eq!(forced.changes.len(), 2);
        assert_eq!(forced.warnings.len(), 1);
        assert!(forced.add_pending && !forced.add_active);
        let old_enough = force_rotation(1000 + 301, &p, 300, 5000, &keys, true);
        assert!(old_enough.warnings.is_empty());
        assert_eq!(old_enough.changes[0].to, KeyState::Revoked);
        let no_pending = force_rotation(10, &p, 300, 5000, &keys[..1], false);
        assert!(no_pending.add_active && no_pending.add_pending);
    }
}
