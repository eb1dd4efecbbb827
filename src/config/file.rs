//! The optional TOML file (`--config`): the same settings as the flags, in
//! snake_case, filling what flags and environment left unset.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{Error, Result};

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) database_url: Option<String>,
    pub(super) grpc_addr: Option<SocketAddr>,
    pub(super) http_addr: Option<SocketAddr>,
    pub(super) master_key_file: Option<PathBuf>,
    pub(super) previous_master_key_files: Option<Vec<PathBuf>>,
    pub(super) seals: Option<Vec<String>>,
    pub(super) default_keyset: Option<String>,
    pub(super) jwks_max_age: Option<u64>,
    pub(super) rotation_interval: Option<String>,
    pub(super) no_scheduler: Option<bool>,
    pub(super) rotation_overdue_after: Option<String>,
    pub(super) metrics_addr: Option<SocketAddr>,
    pub(super) issuer: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) idle_timeout: Option<String>,
    pub(super) header_timeout: Option<String>,
    pub(super) shutdown_grace: Option<String>,
    pub(super) auth_failure_limit: Option<u32>,
    pub(super) auth_failure_window: Option<String>,
    pub(super) audit_retain: Option<String>,
    pub(super) event_retain: Option<String>,
    pub(super) alert_ahead: Option<String>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) grpc_client_ca: Option<PathBuf>,
    pub(super) tls_reload_interval: Option<String>,
    pub(super) tls_require_valid: Option<bool>,
    pub(super) allow_plaintext: Option<bool>,
    pub(super) trusted_proxies: Option<Vec<String>>,
}

/// Reads and parses the file at `path`.
pub(super) fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Error::invalid("config", format!("{}: {}", path.display(), e.message())))
}
