//! Rotation: the scheduled sweep ([`Service::rotate_due`]), the manual
//! emergency rotation and revocation. Every transition is planned by the pure
//! [`crate::domain::rotation`] rules and applied in one transaction
//! conditional on the key set's version, so racing replicas change a key set
//! exactly once.

use super::{KeyInfo, Service, keysets::by_keyset};
use crate::{
    Error, Result,
    domain::{
        model::{self, KeyState},
        rotation::{self, KeyView, Plan, Policy, RotationEvent},
    },
    ops::metrics::Trigger,
    store::{KeyRow, KeySetChange, KeySetRow, NewKey},
};

/// The result of a manual rotation or a revocation.
#[derive(Debug, Clone)]
pub struct Transition {
    /// What changed.
    pub events: Vec<RotationEvent>,
    /// Warnings for the operator.
    pub warnings: Vec<String>,
    /// The key set's keys afterwards.
    pub keys: Vec<KeyInfo>,
}

/// What the pure planner needs of stored keys.
fn views_of(keys: &[KeyRow]) -> Vec<KeyView> {
    keys.iter()
        .map(|k| KeyView {
            kid: k.kid.clone(),
            state: k.state,
            created_at: k.created_at,
            expires_at: k.expires_at,
        })
        .collect()
}

/// The keys a change inserts, by kid and state.
fn inserted(change: &KeySetChange) -> Vec<(&str, KeyState)> {
    change
        .inserts
        .iter()
        .map(|key| (key.kid.as_str(), key.state))
        .collect()
}

impl Service {
    /// Turns a plan into stored changes, generating the keys it needs (outside
    /// any transaction, off the async workers).
    async fn prepare_change(
        &self,
        row: &KeySetRow,
        plan: &Plan,
        policy: &Policy,
        now: i64,
    ) -> Result<KeySetChange> {
        let mut inserts = Vec::new();
        if plan.add_active {
            inserts.push(self.new_key(row, KeyState::Active).await?);
        }
        if plan.add_pending {
            inserts.push(self.new_key(row, KeyState::Pending).await?);
        }
        let updates = plan.updates(policy, now);
        Ok(KeySetChange {
            keyset: row.name.clone(),
            at: now,
            updates,
            inserts,
            next_rotation_at: plan.next_rotation_at,
            policy: None,
        })
    }

    /// Applies an operator's change, or says the key set moved under it.
    pub(super) async fn commit_change(&self, row: &KeySetRow, change: &KeySetChange) -> Result<()> {
        if self
            .store
            .apply_keyset_change(row.id, row.version, change)
            .await?
        {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "key set {:?} changed concurrently; nothing was changed, check `keys list` and retry if needed",
                row.name
            )))
        }
    }

    /// Performs (or, with `dry_run`, reports) every transition due now, for one
    /// key set or all. Racing callers change each key set once: the others
    /// report `already-rotated` and change nothing.
    pub async fn rotate_due(
        &self,
        keyset: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<RotationEvent>> {
        // Every key set and its published keys, from one consistent snapshot
        // (two queries whatever the number of key sets). Expired and revoked
        // keys play no part in planning.
        let (rows, keys) = match keyset {
            Some(name) => {
                let row = self.keyset_row(name).await?;
                let keys = self.store.list_keys(row.id).await?;
                // Read separately: if another process changed the set in
                // between, this view is torn and its change is made already.
                let reread = self.store.get_keyset(name).await?;
                if reread.as_ref().map(|r| r.version) != Some(row.version) {
                    return Ok(vec![RotationEvent::raced(name)]);
                }
                (vec![row], keys)
            }
            None => {
                let snapshot = self.store.published_since(None).await?;
                (snapshot.keysets, snapshot.keys)
            }
        };
        let mut by_set = by_keyset(keys);
        let mut events = Vec::new();
        let mut changed = false;
        for row in rows {
            let now = self.clock.now();
            let keys = by_set.remove(&row.id).unwrap_or_default();
            let views = views_of(&keys);
            let policy = row.policy.clone();
            let plan = rotation::plan(now, &policy, row.next_rotation_at, &views);
            if plan.is_empty() || dry_run {
                events.extend(plan.events(&row.name, None));
                continue;
            }
            let change = self.prepare_change(&row, &plan, &policy, now).await?;
            if self
                .store
                .apply_keyset_change(row.id, row.version, &change)
                .await?
            {
                changed = true;
                if plan.rotates {
                    self.metrics.rotated(&row.name, Trigger::Schedule);
                }
                let done = plan.events(&row.name, Some(&inserted(&change)));
                for e in &done {
                    tracing::info!(keyset = %e.keyset, action = e.action.as_str(), kid = %e.kid, detail = %e.detail, "rotation");
                }
                events.extend(done);
            } else {
                events.push(RotationEvent::raced(&row.name));
            }
        }
        if changed {
            self.refresh_keysets().await;
        }
        Ok(events)
    }

    async fn forced_rotation(&self, row: &KeySetRow, revoke_active: bool) -> Result<Transition> {
        let now = self.clock.now();
        let keys = self.store.list_keys(row.id).await?;
        let plan = rotation::force_rotation(
            now,
            &row.policy,
            self.jwks_max_age,
            row.next_rotation_at,
            &views_of(&keys),
            revoke_active,
        );
        self.apply_plan(row, &plan, now, Vec::new()).await
    }

    /// Applies an operator's plan (plus `extra` keys to insert) in one
    /// conditional transaction, then refreshes the JWKS and reports the set's
    /// keys as they now are.
    pub(super) async fn apply_plan(
        &self,
        row: &KeySetRow,
        plan: &Plan,
        now: i64,
        extra: Vec<NewKey>,
    ) -> Result<Transition> {
        let mut change = self.prepare_change(row, plan, &row.policy, now).await?;
        change.inserts.extend(extra);
        self.commit_change(row, &change).await?;
        for w in &plan.warnings {
            tracing::warn!(keyset = %row.name, "{w}");
        }
        self.refresh_keysets().await;
        let fresh = self.keyset_row(&row.name).await?;
        let keys = Self::key_infos(&fresh, self.store.list_keys(fresh.id).await?)?;
        Ok(Transition {
            events: plan.events(&row.name, Some(&inserted(&change))),
            warnings: plan.warnings.clone(),
            keys,
        })
    }

    /// Emergency rotation now: the pending key signs at once, the active key
    /// retires, a new pending key is published.
    pub async fn rotate_keyset(&self, name: &str) -> Result<Transition> {
        let row = self.keyset_row(name).await?;
        let t = self.forced_rotation(&row, false).await?;
        self.metrics.rotated(name, Trigger::Manual);
        tracing::info!(keyset = name, "key set rotated manually");
        Ok(t)
    }

    /// Revokes a key: it leaves the JWKS at once and never signs again.
    /// Revoking the active key promotes a successor at once.
    pub async fn revoke_key(&self, kid: &str) -> Result<Transition> {
        model::validate_kid(kid)?;
        let key = self
            .store
            .find_key(kid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no key has kid {kid:?}")))?;
        let row = self.keyset_row(&key.keyset).await.map_err(|e| match e {
            Error::NotFound(_) => Error::FailedPrecondition(format!(
                "key {kid:?} belonged to a deleted key set; it is already unpublished"
            )),
            other => other,
        })?;
        let state = key.state;
        let t = match state {
            KeyState::Active => {
                let mut t = self.forced_rotation(&row, true).await?;
                self.metrics.rotated(&row.name, Trigger::Revocation);
                t.warnings.insert(
                    0,
                    format!("revoked the active key {kid}; a successor signs from now on"),
                );
                t
            }
            KeyState::Pending | KeyState::Retired => {
                let plan = Plan {
                    changes: vec![rotation::KeyChange {
                        kid: kid.to_string(),
                        from: state,
                        to: KeyState::Revoked,
                    }],
                    add_pending: state == KeyState::Pending,
                    ..Plan::default()
                };
                self.apply_plan(&row, &plan, self.clock.now(), Vec::new())
                    .await?
            }
            KeyState::Expired | KeyState::Revoked => {
                return Err(Error::FailedPrecondition(format!(
                    "key {kid:?} is already {state} and unpublished"
                )));
            }
        };
        self.metrics.revoked(&row.name);
        tracing::warn!(keyset = %row.name, kid, "key revoked");
        Ok(t)
    }
}
