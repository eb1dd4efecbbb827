//! Start-up and lifecycle, in the order they happen:
//!
//! - [`keyring`]: resolve the master keyring and check it against the
//!   database before anything is written; `sealed`: the keyring when KMS or
//!   HSM seals wrap the master keys;
//! - `startup`: migrate, bootstrap the first admin token and the default key
//!   set, load the views ([`prepare`]);
//! - `serve`: gRPC and HTTP until shutdown, then drain ([`serve_on`]);
//! - `tasks`: what runs beside them (following other replicas, the rotation
//!   scheduler, audit and event retention, the event feed);
//! - `webhooks`: webhook delivery, signed, retried, once per replica set;
//! - `backup`: `keyward backup`, a consistent copy while serving.

mod backup;
pub mod keyring;
mod sealed;
mod serve;
mod startup;
mod tasks;
mod webhooks;

use std::sync::Arc;

pub use backup::{Backup, backup};
pub(crate) use sealed::{Probe, open_keyring};
pub use serve::{Listeners, serve, serve_on};
pub use startup::{master_status, migrate_only, prepare, prepare_existing, prepare_with};
pub use tasks::{MAX_VIEW_AGE, WATCH_INTERVAL};

use crate::{config::ServeConfig, service::Service, transport::tls::Tls};

/// A prepared server: database migrated, master key verified, bootstrap done.
#[derive(Debug)]
pub struct App {
    /// The settings it was prepared with.
    pub config: ServeConfig,
    /// The application layer.
    pub service: Arc<Service>,
    /// The listeners' TLS settings, when configured.
    pub tls: Option<Arc<Tls>>,
}
