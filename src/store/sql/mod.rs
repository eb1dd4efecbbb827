//! The statements behind the store's traits, one text for both backends
//! (`$1` placeholders work on both): each aggregate's trait is implemented
//! once, by a macro instantiated per backend. What differs between the
//! backends lives in [`super::sqlite`] and [`super::postgres`].

mod audit;
mod clients;
mod events;
mod keysets;
mod meta;
mod tokens;
mod tx;
mod wraps;

pub(in crate::store) use audit::KnownHead;

use super::{KeySetColumns, KeySetRow, PgStore, SqliteStore, Store};
use crate::Result;

/// Key set rows decoded into domain types.
fn decode_keysets(rows: Vec<KeySetColumns>) -> Result<Vec<KeySetRow>> {
    rows.into_iter().map(KeySetRow::try_from).collect()
}

const KEY_COLUMNS: &str = "k.kid, k.keyset_id, s.name AS keyset, k.algorithm, k.state, \
     k.public_jwk, k.created_at, k.activated_at, k.retired_at, k.expires_at, k.revoked_at \
     FROM keys k JOIN keysets s ON s.id = k.keyset_id";

const KEYSET_COLUMNS: &str = "id, name, algorithm, rsa_bits, created_at, rotate_every, schedule, \
     prepublish, retain, max_token_ttl, next_rotation_at, version";

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
}
