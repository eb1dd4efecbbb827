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
//! Nothing here does I/O: [`plan()`] turns the stored state and `now` into a
//! [`Plan`], which the service applies in one conditional transaction.
//!
//! - `policy`: the policy, its rules ([`Policy::findings`]) and due times.
//! - `plan`: due transitions, forced rotations, the changes and events
//!   they make.
//! - `times`: each key's planned times.

mod plan;
mod policy;
mod times;

pub use plan::*;
pub use policy::*;
pub use times::*;
