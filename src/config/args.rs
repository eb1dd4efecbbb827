//! The flags of `keyward serve` and of every command that works on the
//! database directly, each also an environment variable.

// The doc comments below are also clap's `--help` text, written for a
// terminal: `<data-dir>`-style placeholders there are meant as they read.
#![allow(rustdoc::invalid_html_tags)]

use std::{net::SocketAddr, path::PathBuf};

/// `keyward serve` / `keyward migrate` flags (each also an environment variable).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Database URL; a postgres:// URL selects PostgreSQL [default: sqlite://<data-dir>/keyward.db]
    #[arg(long, env = "KEYWARD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "KEYWARD_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP (JWKS) listen address [default: 127.0.0.1:8080]
    #[arg(long, env = "KEYWARD_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// File holding the master key (base64 of 32 bytes). KEYWARD_MASTER_KEY may
    /// hold the key itself instead.
    #[arg(long, env = "KEYWARD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// A file holding an earlier master key, kept only to open rows it sealed
    /// until `keyward master rewrap` has resealed them (repeatable)
    #[arg(
        long = "previous-master-key-file",
        env = "KEYWARD_PREVIOUS_MASTER_KEY_FILES",
        value_delimiter = ',',
        value_name = "FILE"
    )]
    pub previous_master_key_files: Vec<PathBuf>,
    /// A KMS or HSM that wraps the master keys (repeatable; any one that
    /// answers opens them): pkcs11:MODULE?token=…&key=…&pin-file=…,
    /// transit:URL?mount=…&key=…&token-file=…, awskms:KEY?region=…
    #[arg(
        long = "seal",
        env = "KEYWARD_SEALS",
        value_delimiter = ',',
        value_name = "SEAL"
    )]
    pub seals: Vec<String>,
    /// Key set served at /.well-known/jwks.json [default: default]
    #[arg(long, env = "KEYWARD_DEFAULT_KEYSET")]
    pub default_keyset: Option<String>,
    /// JWKS Cache-Control max-age in seconds [default: 300]
    #[arg(long, env = "KEYWARD_JWKS_MAX_AGE")]
    pub jwks_max_age: Option<u64>,
    /// Issuer URL: `iss` of OAuth tokens and base of published URLs [default: http://<http-addr>]
    #[arg(long, env = "KEYWARD_ISSUER")]
    pub issuer: Option<String>,
    /// How often the built-in scheduler performs due rotations [default: 30s]
    #[arg(long, env = "KEYWARD_ROTATION_INTERVAL")]
    pub rotation_interval: Option<String>,
    /// Turn the built-in scheduler off (when cron runs `keyward rotate`)
    #[arg(long, env = "KEYWARD_NO_SCHEDULER")]
    pub no_scheduler: bool,
    /// A due rotation not done this long after its time sets
    /// keyward_rotation_overdue [default: two rotation intervals; 2h with --no-scheduler]
    #[arg(long, env = "KEYWARD_ROTATION_OVERDUE_AFTER", value_name = "DURATION")]
    pub rotation_overdue_after: Option<String>,
    /// Serve /metrics on this address only (plaintext, keep it internal)
    /// instead of on the HTTP listener
    #[arg(long, env = "KEYWARD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Most connections each listener holds open; more wait [default: 1024]
    #[arg(long, env = "KEYWARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Close a connection with no traffic for this long [default: 2m]
    #[arg(long, env = "KEYWARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// HTTP: close a connection whose request headers take longer [default: 10s]
    #[arg(long, env = "KEYWARD_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// On SIGTERM, how long in-flight requests may take [default: 10s]
    #[arg(long, env = "KEYWARD_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Failed authentications allowed per address (and client, at the token
    /// endpoint) within --auth-failure-window; more are refused [default: 10]
    #[arg(long, env = "KEYWARD_AUTH_FAILURE_LIMIT")]
    pub auth_failure_limit: Option<u32>,
    /// The window failed authentications are counted over [default: 60s]
    #[arg(long, env = "KEYWARD_AUTH_FAILURE_WINDOW")]
    pub auth_failure_window: Option<String>,
    /// Delete audit events older than this (checked hourly); the chain stays
    /// verifiable from the first kept event [default: 400d]
    #[arg(long, env = "KEYWARD_AUDIT_RETAIN")]
    pub audit_retain: Option<String>,
    /// Delete change events (Watch, webhooks) older than this, once every
    /// webhook has them (checked hourly) [default: 7d]
    #[arg(long, env = "KEYWARD_EVENT_RETAIN")]
    pub event_retain: Option<String>,
    /// Raise token.expiring, key.expiring and client.grace_ending events this
    /// long before the expiry [default: 7d]
    #[arg(long, env = "KEYWARD_ALERT_AHEAD", value_name = "DURATION")]
    pub alert_ahead: Option<String>,
    /// PEM certificate chain to serve gRPC and HTTP over TLS (with --tls-key);
    /// reloaded when the file changes
    #[arg(
        long,
        env = "KEYWARD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert: PKCS#8, PKCS#1 or SEC1
    #[arg(
        long,
        env = "KEYWARD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: gRPC clients must present a certificate signed by
    /// one (mutual TLS; needs --tls-cert)
    #[arg(long, env = "KEYWARD_GRPC_CLIENT_CA", value_name = "FILE")]
    pub grpc_client_ca: Option<PathBuf>,
    /// How often the certificate files are checked for a new pair [default: 10s]
    #[arg(long, env = "KEYWARD_TLS_RELOAD_INTERVAL", value_name = "DURATION")]
    pub tls_reload_interval: Option<String>,
    /// Refuse to serve an expired TLS certificate, at start and on reload
    /// (without it an expired one is served, with an error in the log)
    #[arg(long, env = "KEYWARD_TLS_REQUIRE_VALID")]
    pub tls_require_valid: bool,
    /// A proxy (address or block, e.g. 10.0.0.0/8) whose X-Forwarded-For
    /// names the client, on HTTP and gRPC (repeatable); others' is ignored
    #[arg(
        long = "trusted-proxy",
        env = "KEYWARD_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<String>,
    /// Serve plaintext on a non-loopback address (behind a proxy or mesh that
    /// terminates TLS)
    #[arg(long, env = "KEYWARD_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,
    /// Optional TOML file with the same settings (snake_case keys)
    #[arg(long, env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,
}
