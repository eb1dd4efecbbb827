//! Near-expiry alerts and rotations gone wrong, as change events: raised by
//! every replica's sweep and stored once each (by their `once` key),
//! whatever the number of replicas or sweeps.

use std::time::Duration;

use super::Service;
use crate::{
    Result,
    domain::{
        event::{EventKind, NewEvent, Subject},
        model::{KeyState, format_time},
    },
};

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Service {
    /// Raises what is due now: `token.expiring` for API tokens expiring
    /// within `ahead`, `client.grace_ending` for superseded client
    /// secrets whose grace ends within it, `key.expiring` for retired keys
    /// leaving the JWKS within it, and `rotation.overdue` for key sets whose
    /// rotation is `overdue` late. Returns how many were new.
    pub async fn raise_alerts(&self, overdue: Duration, ahead: Duration) -> Result<u64> {
        let now = self.clock.now();
        let horizon = now.saturating_add(secs(ahead));
        let soon = |at: i64| at > now && at <= horizon;
        let mut events = Vec::new();
        for token in self.store.list_tokens().await? {
            if let (None, Some(expires)) = (token.revoked_at, token.expires_at)
                && soon(expires)
            {
                events.push(
                    NewEvent::new(EventKind::TokenExpiring, now, Subject::token(&token.name))
                        .detail(format!("expires {}", format_time(expires)))
                        .once(format!("token.expiring/{}/{expires}", token.name)),
                );
            }
        }
        let (sets, _) = self.keysets.entries();
        for entry in sets {
            let name = &entry.row.name;
            for key in &entry.keys {
                if let (KeyState::Retired, Some(expires)) = (key.state, key.expires_at)
                    && soon(expires)
                {
                    events.push(
                        NewEvent::new(EventKind::KeyExpiring, now, Subject::key(name, &key.kid))
                            .detail(format!("leaves the JWKS {}", format_time(expires)))
                            .once(format!("key.expiring/{}", key.kid)),
                    );
                }
            }
            let due = entry.row.next_rotation_at;
            if now > due.saturating_add(secs(overdue)) {
                events.push(
                    NewEvent::new(EventKind::RotationOverdue, now, Subject::keyset(name))
                        .detail(format!("due {}", format_time(due)))
                        .once(format!("rotation.overdue/{name}/{due}")),
                );
            }
        }
        for entry in self.clients.all() {
            let id = &entry.client.id;
            for secret in &entry.secrets {
                if secret.version != entry.client.secret_version
                    && let Some(until) = secret.valid_until
                    && soon(until)
                {
                    events.push(
                        NewEvent::new(EventKind::ClientGraceEnding, now, Subject::client(id))
                            .detail(format!(
                                "version {} stops verifying {}",
                                secret.version,
                                format_time(until)
                            ))
                            .once(format!("client.grace_ending/{id}/{}", secret.version)),
                    );
                }
            }
        }
        if events.is_empty() {
            return Ok(0);
        }
        self.raise(&events).await
    }

    /// Raises `rotation.failed` for a scheduled sweep that failed (once an
    /// hour at most: a sweep failing every tick is one alert, not hundreds).
    pub async fn rotation_failed(&self, reason: &str) {
        let now = self.clock.now();
        let event = NewEvent::new(EventKind::RotationFailed, now, Subject::default())
            .detail(reason.chars().take(200).collect::<String>())
            .once(format!("rotation.failed/{}", now / 3600));
        if let Err(err) = self.raise(&[event]).await {
            tracing::warn!(error = %err, "the rotation.failed event could not be stored");
        }
    }
}
