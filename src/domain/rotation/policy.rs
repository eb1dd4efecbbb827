//! A key set's rotation policy: when rotations fall due, how long a key is
//! published before it signs and after it stops, and the rules a safe policy
//! keeps. The rules live once, in [`Policy::findings`]: creating or updating
//! a key set refuses a policy that breaks one, and `keyward doctor` reports
//! stored policies that do.

use crate::{
    Error, Result,
    domain::{
        cron::Schedule,
        model::{check_duration, format_duration, secs_i64},
    },
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

/// How bad a broken rule is, for an operator reading `keyward doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Verifiers may meet a token before or after they can check it, or a
    /// rotation waits: works, but should be fixed.
    Warn,
    /// Tokens certainly stop verifying before they expire, or rotation is
    /// impossible.
    Fail,
}

/// A rule a policy breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The setting at fault (`prepublish`, `retain`, …).
    pub field: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// What is wrong, in terms of the flags.
    pub problem: String,
    /// The least value of `field` that keeps the rule, when one does.
    pub at_least: Option<u64>,
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
    /// are [`Policy::findings`]').
    pub fn merged(self, input: &PolicyInput) -> Result<Self> {
        for (field, value) in [
            ("rotate_every", input.rotate_every),
            ("prepublish", input.prepublish),
            ("retain", input.retain),
        ] {
            if let Some(secs) = value {
                check_duration(field, secs)?;
            }
        }
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

    /// The shortest time between two rotations (a cron's shortest gap over
    /// the coming 400 days, from `now`).
    fn period(&self, now: i64) -> u64 {
        match &self.cadence {
            Cadence::Every(p) => *p,
            Cadence::Cron(schedule) => schedule
                .shortest_gap(now, 400 * 86_400)
                .and_then(|g| u64::try_from(g).ok())
                .unwrap_or(u64::MAX),
        }
    }

    /// Every rule the policy breaks, given the JWKS max-age clients are
    /// told, in the order they are checked.
    pub fn findings(&self, jwks_max_age: u64, now: i64) -> Vec<Finding> {
        let mut found = Vec::new();
        let mut finding = |field, severity, problem: String, at_least| {
            found.push(Finding {
                field,
                severity,
                problem,
                at_least,
            });
        };
        if self.cadence == Cadence::Every(0) {
            finding(
                "rotate_every",
                Severity::Fail,
                "must be at least 1 second".into(),
                Some(1),
            );
        }
        if self.max_token_ttl == 0 {
            finding(
                "max_token_ttl",
                Severity::Fail,
                "must be at least 1 second".into(),
                Some(1),
            );
        }
        let cached = 2 * jwks_max_age;
        if self.prepublish < cached {
            finding(
                "prepublish",
                Severity::Warn,
                format!(
                    "{} is shorter than twice the JWKS max-age ({jwks_max_age}s): a client that \
                     fetched the JWKS just before a key was published could meet a token from it \
                     before its cache expires; use at least {}",
                    format_duration(self.prepublish),
                    format_duration(cached)
                ),
                Some(cached),
            );
        }
        let period = self.period(now);
        if period > 0 && self.prepublish >= period {
            finding(
                "prepublish",
                Severity::Warn,
                format!(
                    "{} is not shorter than the rotation period ({}): each new key must be \
                     published before the next rotation is due",
                    format_duration(self.prepublish),
                    format_duration(period)
                ),
                None,
            );
        }
        let needed = self.max_token_ttl + jwks_max_age;
        if self.retain < needed {
            finding(
                "retain",
                if self.retain < self.max_token_ttl {
                    Severity::Fail
                } else {
                    Severity::Warn
                },
                format!(
                    "{} is shorter than max-token-ttl ({}) plus the JWKS max-age ({jwks_max_age}s): \
                     tokens signed just before a rotation would outlive their key; use at least {}",
                    format_duration(self.retain),
                    format_duration(self.max_token_ttl),
                    format_duration(needed)
                ),
                Some(needed),
            );
        }
        found
    }

    /// Refuses a policy that breaks any rule, explaining the first in terms
    /// of the flags.
    pub fn validate(&self, jwks_max_age: u64, now: i64) -> Result<()> {
        match self.findings(jwks_max_age, now).into_iter().next() {
            Some(finding) => Err(Error::invalid(finding.field, finding.problem)),
            None => Ok(()),
        }
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

    /// The scheduled rotations from `first` (the next one due) up to
    /// `until`, at most `limit` of them, each running on time.
    pub fn due_times(&self, first: i64, until: i64, limit: usize) -> Vec<i64> {
        let mut times = Vec::new();
        let mut at = first;
        while at <= until && times.len() < limit {
            times.push(at);
            let next = self.next_due(at, at);
            if next <= at {
                break;
            }
            at = next;
        }
        times
    }
}

/// The JWKS `max-age` for a key set pre-publishing for `prepublish` seconds:
/// the configured one, but never more than half the pre-publication, at least 1 s.
pub fn jwks_max_age(configured: u64, prepublish: u64) -> u64 {
    configured.min(prepublish / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

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
        let endless = |field: &str| PolicyInput {
            rotate_every: (field == "rotate_every").then_some(u64::MAX),
            prepublish: (field == "prepublish").then_some(u64::MAX),
            retain: (field == "retain").then_some(u64::MAX),
            ..PolicyInput::default()
        };
        for (input, field) in [
            (both, "schedule"),
            (bad_cron, "schedule"),
            (too_long, "max_token_ttl"),
            (endless("rotate_every"), "rotate_every"),
            (endless("prepublish"), "prepublish"),
            (endless("retain"), "retain"),
        ] {
            let err = base.clone().merged(&input).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid {field}")), "{err}");
        }
    }

    #[test]
    fn defaults_are_valid_for_the_default_max_age() {
        Policy::default().validate(300, 0).unwrap();
        assert!(Policy::default().findings(300, 0).is_empty());
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
    fn findings_grade_what_doctor_reports() {
        let base = Policy::default();
        let severity = |policy: &Policy, field: &str| {
            policy
                .findings(300, 0)
                .into_iter()
                .filter(|f| f.field == field)
                .map(|f| f.severity)
                .max()
        };
        let short_pre = Policy {
            prepublish: 60,
            ..base.clone()
        };
        assert_eq!(severity(&short_pre, "prepublish"), Some(Severity::Warn));
        let under_ttl = Policy {
            retain: 60,
            ..base.clone()
        };
        assert_eq!(severity(&under_ttl, "retain"), Some(Severity::Fail));
        let under_cache = Policy {
            retain: DEFAULT_MAX_TOKEN_TTL + 60,
            ..base.clone()
        };
        assert_eq!(severity(&under_cache, "retain"), Some(Severity::Warn));
        let finding = &under_cache.findings(300, 0)[0];
        assert_eq!(finding.at_least, Some(DEFAULT_MAX_TOKEN_TTL + 300));
        let never = Policy {
            cadence: Cadence::Every(0),
            ..base
        };
        assert_eq!(severity(&never, "rotate_every"), Some(Severity::Fail));
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
    fn due_times_step_with_the_cadence() {
        let every = Policy {
            cadence: Cadence::Every(10),
            ..Policy::default()
        };
        assert_eq!(every.due_times(100, 130, 64), [100, 110, 120, 130]);
        assert_eq!(every.due_times(100, 130, 2), [100, 110]);
        assert!(every.due_times(100, 99, 64).is_empty());
        let monthly = Policy {
            cadence: Cadence::Cron(Schedule::parse("0 3 1 * *").unwrap()),
            ..Policy::default()
        };
        // 2027-01-01T03:00:00Z, then the first of each month at 03:00.
        let first = 1_798_772_400;
        let times = monthly.due_times(first, first + 62 * 86_400, 64);
        assert_eq!(times, [first, first + 31 * 86_400, first + 59 * 86_400]);
    }
}
