//! A key's times as shown: what happened, and for pending and active keys
//! what the policy plans.

use super::policy::Policy;
use crate::domain::model::{KeyState, secs_i64};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
