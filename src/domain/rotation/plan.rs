//! Planning: what is due for a key set at one instant, turned into the
//! state changes to store and the events to report. Nothing here does I/O;
//! the service applies a plan in one transaction conditional on the key
//! set's version.

use super::policy::Policy;
use crate::domain::model::{KeyState, format_duration, format_time, secs_i64};

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
                    format_time(ready_at)
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

/// One key's state change as stored: applied only if the key is still in
/// `from`, with the times the change sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUpdate {
    /// The key.
    pub kid: String,
    /// Its expected current state.
    pub from: KeyState,
    /// Its new state.
    pub to: KeyState,
    /// Sets `activated_at`.
    pub activated_at: Option<i64>,
    /// Sets `retired_at`.
    pub retired_at: Option<i64>,
    /// Sets `expires_at`.
    pub expires_at: Option<i64>,
    /// Sets `revoked_at`.
    pub revoked_at: Option<i64>,
    /// Erases the sealed private key: a key that will never sign again
    /// keeps only its public half.
    pub destroy_private: bool,
}

/// What a rotation sweep (or an operator's change) did to a key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationAction {
    /// A key started signing.
    Activate,
    /// A key stopped signing; it stays published.
    Retire,
    /// A retired key left the JWKS.
    Expire,
    /// A key was revoked.
    Revoke,
    /// A new pending key was published.
    Publish,
    /// A due rotation waits (the pending key is too young).
    Wait,
    /// Another process changed the key set first.
    AlreadyRotated,
}

impl RotationAction {
    /// Its name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Retire => "retire",
            Self::Expire => "expire",
            Self::Revoke => "revoke",
            Self::Publish => "publish",
            Self::Wait => "wait",
            Self::AlreadyRotated => "already-rotated",
        }
    }
}

/// One thing a rotation sweep did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    /// The key set.
    pub keyset: String,
    /// What happened.
    pub action: RotationAction,
    /// The key concerned (empty for `already-rotated`).
    pub kid: String,
    /// Human-readable detail.
    pub detail: String,
}

impl RotationEvent {
    /// Another process changed `keyset` first: this one changed nothing.
    pub fn raced(keyset: &str) -> Self {
        Self {
            keyset: keyset.to_string(),
            action: RotationAction::AlreadyRotated,
            kid: String::new(),
            detail: "another keyward process changed this key set first; nothing changed here"
                .into(),
        }
    }
}

impl Plan {
    /// The plan's state changes as stored at `now`: each sets the times its
    /// new state has (a retired key stays published for the policy's
    /// retention), and every key that will never sign again loses its
    /// private half.
    pub fn updates(&self, policy: &Policy, now: i64) -> Vec<KeyUpdate> {
        self.changes
            .iter()
            .map(|c| {
                let mut u = KeyUpdate {
                    kid: c.kid.clone(),
                    from: c.from,
                    to: c.to,
                    activated_at: None,
                    retired_at: None,
                    expires_at: None,
                    revoked_at: None,
                    destroy_private: !matches!(c.to, KeyState::Active | KeyState::Pending),
                };
                match c.to {
                    KeyState::Active => u.activated_at = Some(now),
                    KeyState::Retired => {
                        u.retired_at = Some(now);
                        u.expires_at = Some(now.saturating_add(secs_i64(policy.retain)));
                    }
                    KeyState::Revoked => u.revoked_at = Some(now),
                    KeyState::Expired | KeyState::Pending => {}
                }
                u
            })
            .collect()
    }

    /// What the plan did to `keyset` once applied with `inserted` keys (kid
    /// and state), or with `None` what it would do.
    pub fn events(
        &self,
        keyset: &str,
        inserted: Option<&[(&str, KeyState)]>,
    ) -> Vec<RotationEvent> {
        let event = |action, kid: &str, detail: String| RotationEvent {
            keyset: keyset.to_string(),
            action,
            kid: kid.to_string(),
            detail,
        };
        let mut events: Vec<RotationEvent> = self
            .changes
            .iter()
            .map(|c| {
                let action = match c.to {
                    KeyState::Active => RotationAction::Activate,
                    KeyState::Retired => RotationAction::Retire,
                    KeyState::Expired => RotationAction::Expire,
                    KeyState::Revoked => RotationAction::Revoke,
                    KeyState::Pending => RotationAction::Publish,
                };
                event(action, &c.kid, format!("{} -> {}", c.from, c.to))
            })
            .collect();
        for (kid, state) in inserted.unwrap_or_default() {
            let action = if *state == KeyState::Active {
                RotationAction::Activate
            } else {
                RotationAction::Publish
            };
            events.push(event(action, kid, format!("new {state} key")));
        }
        if inserted.is_none() && (self.add_pending || self.add_active) {
            events.push(event(
                RotationAction::Publish,
                "",
                "a new pending key would be generated".into(),
            ));
        }
        if let Some(next) = self.next_rotation_at
            && let Some(e) = events
                .iter_mut()
                .find(|e| e.action == RotationAction::Activate)
        {
            e.detail
                .push_str(&format!("; next rotation {}", format_time(next)));
        }
        if let Some(reason) = &self.waiting {
            events.push(event(RotationAction::Wait, "", reason.clone()));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn updates_set_the_times_of_each_new_state() {
        let p = Policy::default();
        let keys = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 0, None),
        ];
        let due = (30 * DAY) as i64;
        let updates = plan(due, &p, due, &keys).updates(&p, due);
        assert_eq!(updates.len(), 2);
        let retired = &updates[0];
        assert_eq!((retired.kid.as_str(), retired.to), ("a", KeyState::Retired));
        assert_eq!(retired.retired_at, Some(due));
        assert_eq!(retired.expires_at, Some(due + DAY as i64));
        assert!(retired.destroy_private, "a retired key never signs again");
        let active = &updates[1];
        assert_eq!(
            (active.activated_at, active.destroy_private),
            (Some(due), false)
        );
        let revoked = force_rotation(due, &p, 300, due, &keys, true).updates(&p, due);
        assert_eq!(revoked[0].revoked_at, Some(due));
        assert!(revoked[0].destroy_private);
    }

    #[test]
    fn events_say_what_changed_or_would() {
        let p = Policy::default();
        let keys = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 0, None),
        ];
        let due = (30 * DAY) as i64;
        let rotation = plan(due, &p, due, &keys);
        let dry = rotation.events("om", None);
        let actions: Vec<_> = dry.iter().map(|e| (e.action, e.kid.as_str())).collect();
        assert_eq!(
            actions,
            [
                (RotationAction::Retire, "a"),
                (RotationAction::Activate, "p"),
                (RotationAction::Publish, ""),
            ]
        );
        assert!(dry[1].detail.contains("next rotation"), "{:?}", dry[1]);
        let done = rotation.events("om", Some(&[("n", KeyState::Pending)]));
        assert_eq!(done[2].kid, "n");
        assert_eq!(done[2].detail, "new pending key");
        let young = [
            key("a", KeyState::Active, 0, None),
            key("p", KeyState::Pending, 1000, None),
        ];
        let waiting = plan(1000 + 3600, &p, 0, &young).events("om", None);
        assert_eq!(waiting.last().map(|e| e.action), Some(RotationAction::Wait));
        assert_eq!(
            RotationEvent::raced("om").action.as_str(),
            "already-rotated"
        );
    }
}
