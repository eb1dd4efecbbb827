//! Key sets and their keys as stored: the rows, decoded into domain types,
//! and [`KeySetStore`], what the service asks of them.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::{
    Error, Result,
    domain::{
        algorithm::Algorithm,
        cron::Schedule,
        event::{EventKind, NewEvent, Subject},
        model::{KeyState, secs_i64, secs_u64},
        rotation::{self, Cadence, KeyUpdate, Policy},
    },
};

/// A live key set, its policy decoded.
#[derive(Debug, Clone)]
pub struct KeySetRow {
    /// Surrogate id; names can be reused after deletion, ids cannot.
    pub id: i64,
    /// The key set's name.
    pub name: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size, for RSA algorithms.
    pub rsa_bits: Option<i64>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Its rotation policy.
    pub policy: Policy,
    /// When the next rotation is due.
    pub next_rotation_at: i64,
    /// Optimistic-concurrency version of the set and its keys.
    pub version: i64,
}

/// The columns of a `keysets` row, as the database holds them.
#[derive(sqlx::FromRow)]
pub(super) struct KeySetColumns {
    pub(super) id: i64,
    pub(super) name: String,
    #[sqlx(try_from = "String")]
    pub(super) algorithm: Algorithm,
    pub(super) rsa_bits: Option<i64>,
    pub(super) created_at: i64,
    #[sqlx(flatten)]
    pub(super) policy: PolicyColumns,
    pub(super) next_rotation_at: i64,
    pub(super) version: i64,
}

impl TryFrom<KeySetColumns> for KeySetRow {
    type Error = Error;

    fn try_from(c: KeySetColumns) -> Result<Self> {
        Ok(Self {
            policy: Policy::try_from(&c.policy)?,
            id: c.id,
            name: c.name,
            algorithm: c.algorithm,
            rsa_bits: c.rsa_bits,
            created_at: c.created_at,
            next_rotation_at: c.next_rotation_at,
            version: c.version,
        })
    }
}

/// A rotation policy in its stored columns: a period or a cron schedule, and
/// durations in seconds.
#[derive(sqlx::FromRow)]
pub(super) struct PolicyColumns {
    pub(super) rotate_every: Option<i64>,
    pub(super) schedule: Option<String>,
    pub(super) prepublish: i64,
    pub(super) retain: i64,
    pub(super) max_token_ttl: i64,
}

impl TryFrom<&PolicyColumns> for Policy {
    type Error = Error;

    fn try_from(c: &PolicyColumns) -> Result<Self> {
        let cadence = match (&c.schedule, c.rotate_every) {
            (Some(expr), _) => Cadence::Cron(Schedule::parse(expr).map_err(Error::internal)?),
            (None, Some(every)) => Cadence::Every(secs_u64(every)),
            (None, None) => Cadence::Every(rotation::DEFAULT_ROTATE_EVERY),
        };
        Ok(Self {
            cadence,
            prepublish: secs_u64(c.prepublish),
            retain: secs_u64(c.retain),
            max_token_ttl: secs_u64(c.max_token_ttl),
        })
    }
}

impl From<&Policy> for PolicyColumns {
    fn from(policy: &Policy) -> Self {
        let (rotate_every, schedule) = match &policy.cadence {
            Cadence::Every(p) => (Some(secs_i64(*p)), None),
            Cadence::Cron(s) => (None, Some(s.to_string())),
        };
        Self {
            rotate_every,
            schedule,
            prepublish: secs_i64(policy.prepublish),
            retain: secs_i64(policy.retain),
            max_token_ttl: secs_i64(policy.max_token_ttl),
        }
    }
}

/// A key set about to be inserted.
#[derive(Debug, Clone)]
pub struct NewKeySet {
    /// Its name.
    pub name: String,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// RSA modulus size, for RSA algorithms.
    pub rsa_bits: Option<i64>,
    /// Rotation policy.
    pub policy: Policy,
    /// First due rotation.
    pub next_rotation_at: i64,
    /// Creation time.
    pub created_at: i64,
}

/// A signing key's public record (never its private material).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// RFC 7638 thumbprint; unique forever.
    pub kid: String,
    /// Owning key set's id.
    pub keyset_id: i64,
    /// Owning key set's name.
    pub keyset: String,
    /// Its signing algorithm.
    #[sqlx(try_from = "String")]
    pub algorithm: Algorithm,
    /// Its lifecycle state.
    #[sqlx(try_from = "String")]
    pub state: KeyState,
    /// The published JWK, as JSON.
    pub public_jwk: String,
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

/// The sealed private half of a key, as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct SealedKey {
    /// The key's kid.
    pub kid: String,
    /// PKCS#8 DER sealed under the master key for row `keys/<kid>/1`.
    pub private_key: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
}

impl Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("kid", &self.kid)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

/// A key about to be inserted.
pub struct NewKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Pending or active.
    pub state: KeyState,
    /// Its signing algorithm.
    pub algorithm: Algorithm,
    /// Published JWK as JSON.
    pub public_jwk: String,
    /// Sealed PKCS#8.
    pub private_key: Vec<u8>,
    /// Id of the master key that sealed it.
    pub master_key_id: String,
    /// Creation time.
    pub created_at: i64,
}

/// A set of changes to one key set, applied in one transaction.
pub struct KeySetChange {
    /// The key set's name (its events name it).
    pub keyset: String,
    /// When, Unix seconds.
    pub at: i64,
    /// Key state changes, in order.
    pub updates: Vec<KeyUpdate>,
    /// New keys.
    pub inserts: Vec<NewKey>,
    /// New due time, if it moves.
    pub next_rotation_at: Option<i64>,
    /// New policy, if it changes.
    pub policy: Option<Policy>,
}

impl KeySetChange {
    /// The events the change is: each key's new state, then a policy change.
    pub fn events(&self) -> Vec<NewEvent> {
        let updated = self.updates.iter().map(|u| (&u.kid, u.to));
        let inserted = self.inserts.iter().map(|k| (&k.kid, k.state));
        let mut events: Vec<NewEvent> = updated
            .chain(inserted)
            .map(|(kid, state)| {
                NewEvent::new(
                    EventKind::of_key_state(state),
                    self.at,
                    Subject::key(&self.keyset, kid),
                )
            })
            .collect();
        if self.policy.is_some() {
            events.push(NewEvent::new(
                EventKind::KeySetUpdated,
                self.at,
                Subject::keyset(&self.keyset),
            ));
        }
        events
    }
}

/// Key sets and their published keys as of one generation.
#[derive(Debug, Clone, Default)]
pub struct PublishedDelta {
    /// The generation this was read at.
    pub generation: i64,
    /// Whether this is everything (no `since` was given).
    pub full: bool,
    /// Live key sets (changed ones, unless `full`).
    pub keysets: Vec<KeySetRow>,
    /// Names of key sets deleted since (never with `full`).
    pub deleted: Vec<String>,
    /// Published keys of `keysets`.
    pub keys: Vec<KeyRow>,
    /// The sealed private halves of the active keys among `keys`.
    pub active: Vec<SealedKey>,
}

/// Key sets and their keys. Every write that changes what the JWKS publishes
/// bumps the key set generation and records its events in the same
/// transaction.
#[async_trait]
pub trait KeySetStore: Send + Sync {
    /// Creates a key set with its first keys, in one transaction: `keys` gets
    /// the new key set's id (their ciphertext is bound to it) and returns the
    /// keys to insert. `AlreadyExists` on a taken name.
    async fn insert_keyset(
        &self,
        set: &NewKeySet,
        keys: &(dyn Fn(i64) -> Vec<NewKey> + Sync),
    ) -> Result<KeySetRow>;

    /// Whether any key set, live or deleted, was ever created.
    async fn any_keyset_ever(&self) -> Result<bool>;

    /// A live key set by name.
    async fn get_keyset(&self, name: &str) -> Result<Option<KeySetRow>>;

    /// Up to `limit` live key sets whose names sort after `after`, by name.
    async fn list_keysets(&self, after: &str, limit: i64) -> Result<Vec<KeySetRow>>;

    /// What the JWKS and the rotation sweep read, as of one consistent
    /// snapshot: with `since`, only the key sets changed after that
    /// generation; without, every live key set.
    async fn published_since(&self, since: Option<i64>) -> Result<PublishedDelta>;

    /// The published keys of the live key sets named `first..=last`.
    async fn published_keys_between(&self, first: &str, last: &str) -> Result<Vec<KeyRow>>;

    /// Deletes a key set: its keys become expired and lose their private
    /// material; their kids stay taken. Returns whether it existed.
    async fn delete_keyset(&self, name: &str, now: i64) -> Result<bool>;

    /// A key set's keys, oldest first.
    async fn list_keys(&self, keyset_id: i64) -> Result<Vec<KeyRow>>;

    /// The sealed private half of a key (pending or active keys have one).
    async fn sealed_key(&self, kid: &str) -> Result<Option<SealedKey>>;

    /// A key by kid, whatever its key set's state.
    async fn find_key(&self, kid: &str) -> Result<Option<KeyRow>>;

    /// Applies `change` in one transaction conditional on the key set still
    /// being at `version` (and every updated key still in its `from` state).
    /// Returns `false`, changing nothing, when another writer got there first.
    async fn apply_keyset_change(
        &self,
        keyset_id: i64,
        version: i64,
        change: &KeySetChange,
    ) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(policy: &Policy) -> Policy {
        Policy::try_from(&PolicyColumns::from(policy)).expect("decodes")
    }

    #[test]
    fn policies_round_trip_through_their_columns() {
        let every = Policy {
            cadence: Cadence::Every(7 * 86_400),
            prepublish: 3600,
            retain: 2 * 86_400,
            max_token_ttl: 900,
        };
        assert_eq!(round_trip(&every), every);
        let cron = Policy {
            cadence: Cadence::Cron(Schedule::parse("0 3 * * 1").expect("cron")),
            ..Policy::default()
        };
        let columns = PolicyColumns::from(&cron);
        assert_eq!(
            (columns.rotate_every, columns.schedule.as_deref()),
            (None, Some("0 3 * * 1"))
        );
        assert_eq!(round_trip(&cron), cron);
    }

    #[test]
    fn a_policy_without_a_cadence_reads_as_the_default_period() {
        let columns = PolicyColumns {
            rotate_every: None,
            schedule: None,
            prepublish: 60,
            retain: 60,
            max_token_ttl: 60,
        };
        let policy = Policy::try_from(&columns).expect("decodes");
        assert_eq!(
            policy.cadence,
            Cadence::Every(rotation::DEFAULT_ROTATE_EVERY)
        );
    }

    #[test]
    fn a_corrupt_stored_schedule_is_an_internal_error_not_a_panic() {
        let columns = PolicyColumns {
            rotate_every: None,
            schedule: Some("not cron".into()),
            prepublish: 60,
            retain: 60,
            max_token_ttl: 60,
        };
        let err = Policy::try_from(&columns).expect_err("refused");
        assert!(matches!(err, Error::Internal(_)), "{err:?}");
    }
}
