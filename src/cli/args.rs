//! The command line's shape: every command, flag and environment variable.

// The doc comments below are also clap's `--help` text, written for a
// terminal: `<data-dir>`-style placeholders there are meant as they read.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::{CliError, openmetadata};
use crate::{config::ServeArgs, domain::model, transport::grpc::pb};

/// keyward: signing keys and OIDC client secrets for OpenMetadata.
#[derive(Parser, Debug)]
#[command(name = "keyward", version, about)]
pub struct Cli {
    /// Data directory (database, master.key, admin.token) [default: ./keyward-data]
    #[arg(long, env = "KEYWARD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// gRPC endpoint of a running keyward (admin commands)
    #[arg(
        long,
        env = "KEYWARD_ENDPOINT",
        global = true,
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// With an https:// endpoint: PEM CA certificates to trust for the
    /// server's certificate [default: the public web PKI roots]
    #[arg(long, env = "KEYWARD_CA_CERT", global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// With an https:// endpoint: a PEM client certificate, for servers that
    /// require mutual TLS (with --client-key)
    #[arg(
        long,
        env = "KEYWARD_CLIENT_CERT",
        global = true,
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of --client-cert
    #[arg(
        long,
        env = "KEYWARD_CLIENT_KEY",
        global = true,
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Admin token (admin commands)
    #[arg(long, env = "KEYWARD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token [default: <data-dir>/admin.token when present]
    #[arg(long, env = "KEYWARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format of admin commands
    #[arg(long, value_enum, global = true, default_value = "table")]
    pub output: Output,
    /// Log format on standard error: text for people, json (one object per
    /// line) for log collectors
    #[arg(
        long,
        value_enum,
        env = "KEYWARD_LOG_FORMAT",
        global = true,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, for people.
    Text,
    /// One JSON object per event: timestamp, level, target, message, fields,
    /// and the request's span (its request id).
    Json,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (gRPC + HTTP JWKS).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(ServeArgs),
    /// Manage key sets.
    #[command(subcommand)]
    Keyset(KeysetCmd),
    /// Inspect keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Sign a JWT with a key set's active key; prints the compact token.
    Sign(SignArgs),
    /// Export a key in another system's format.
    #[command(subcommand)]
    Export(openmetadata::ExportCmd),
    /// Import another system's key.
    #[command(subcommand)]
    Import(openmetadata::ImportCmd),
    /// Manage OIDC clients and their secrets.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Manage named API tokens with a role and a scope (admin).
    #[command(subcommand)]
    Token(super::tokens::TokenCmd),
    /// Read and verify the tamper-evident audit log (admin, auditor).
    #[command(subcommand)]
    Audit(super::audit::AuditCmd),
    /// Stream change events as they happen (key rotations, secret rotations,
    /// token changes…): one line each, until interrupted.
    Watch(super::events::WatchArgs),
    /// Webhooks: change events POSTed as signed CloudEvents (admin).
    #[command(subcommand)]
    Webhook(super::events::WebhookCmd),
    /// Keep files fresh for programs that read them: signed tokens renewed
    /// before expiry, client secrets, OpenMetadata key exports, each
    /// rewritten atomically when keyward changes it, then a command run.
    Agent(super::agent::AgentArgs),
    /// Master-key rotation: reseal everything under the current key, and
    /// see what each key still seals.
    #[command(subcommand)]
    Master(super::master::MasterCmd),
    /// Check a deployment (configuration, database, migrations, master key,
    /// clock, the running server, every key set, OpenMetadata): one line per
    /// check with its fix; exits 1 if any check fails.
    Doctor(super::ops::DoctorArgs),
    /// Write a consistent copy of the SQLite database to a new file while
    /// keyward serves (PostgreSQL: prints the pg_dump command).
    Backup(super::ops::BackupArgs),
    /// Perform every key transition that is due (what cron or a timer runs).
    Rotate {
        /// Only this key set.
        #[arg(long)]
        keyset: Option<String>,
        /// Show what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Rotation policy flags of `keyset create` and `keyset update`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct PolicyArgs {
    /// Rotate every DURATION, e.g. 30d [default: 30d]
    #[arg(long, value_name = "DURATION", conflicts_with = "schedule")]
    pub rotate_every: Option<String>,
    /// Rotate on a 5-field cron schedule (UTC), e.g. "0 3 1 * *"
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// How long a key is published before it signs [default: 1d]
    #[arg(long, value_name = "DURATION")]
    pub prepublish: Option<String>,
    /// How long a key stays published after it stops signing [default: 1d]
    #[arg(long, value_name = "DURATION")]
    pub retain: Option<String>,
    /// Longest token `sign` issues from this key set [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub max_token_ttl: Option<String>,
}

impl PolicyArgs {
    pub(crate) fn to_pb(&self) -> Result<pb::RotationPolicy, CliError> {
        let opt = |field: &'static str, v: &Option<String>| -> Result<Option<u64>, CliError> {
            v.as_deref().map(|t| seconds(field, t)).transpose()
        };
        Ok(pb::RotationPolicy {
            rotate_every_seconds: opt("rotate_every", &self.rotate_every)?,
            schedule: self.schedule.clone(),
            prepublish_seconds: opt("prepublish", &self.prepublish)?,
            retain_seconds: opt("retain", &self.retain)?,
            max_token_ttl_seconds: opt("max_token_ttl", &self.max_token_ttl)?,
        })
    }
}

/// `keyward keyset …`
#[derive(Subcommand, Debug)]
pub enum KeysetCmd {
    /// Create a key set and its first active key.
    Create {
        /// Name: a-z, 0-9 and '-', up to 63 characters.
        name: String,
        /// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// RSA modulus size: 2048, 3072 or 4096 (RSA algorithms only).
        #[arg(long)]
        rsa_bits: Option<u32>,
        /// Rotation policy.
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Change a key set's rotation policy.
    Update {
        /// Key set name.
        name: String,
        /// Rotation policy (unset flags keep their value).
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// List key sets.
    List,
    /// Show a key set.
    Get {
        /// Key set name.
        name: String,
    },
    /// Delete a key set (its kids stay reserved).
    Delete {
        /// Key set name.
        name: String,
    },
    /// Emergency rotation now: the pending key signs, the active one retires (still published).
    Rotate {
        /// Key set name.
        name: String,
    },
}

/// `keyward keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// List a key set's keys.
    List {
        /// Key set name.
        keyset: String,
    },
    /// Draw a key set's keys on a time axis: when each is pending, signs,
    /// stays published and leaves; revocations; the next rotations; now.
    Timeline {
        /// Key set name.
        keyset: String,
        /// Days the axis spans (two thirds past, one third ahead).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3660))]
        days: u32,
    },
    /// Revoke a key: unpublished at once, never signs again.
    Revoke {
        /// The key's kid.
        kid: String,
    },
}

/// `keyward client …`
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a client (secret generated unless --secret-stdin) or update its metadata.
    Put(PutArgs),
    /// Print a client's settings as another system's configuration.
    #[command(subcommand)]
    Env(openmetadata::EnvCmd),
    /// Show a client's metadata (never its secret).
    Get {
        /// Client id.
        id: String,
    },
    /// Print a client's secret.
    Secret {
        /// Client id.
        id: String,
        /// A given version instead of the current one.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List clients.
    List,
    /// Make a new secret current; the previous one stays valid for --grace
    /// (older ones never longer; `--grace 0s` ends them all now).
    Rotate {
        /// Client id.
        id: String,
        /// How long the previous secret keeps verifying.
        #[arg(long, default_value = "48h")]
        grace: String,
        /// Read the new secret from standard input instead of generating one.
        #[arg(long)]
        secret_stdin: bool,
    },
    /// Delete a client and all its secrets.
    Delete {
        /// Client id.
        id: String,
    },
    /// End a superseded secret version now, before its grace period would.
    RevokeSecret {
        /// Client id.
        id: String,
        /// The version to revoke (not the current one: rotate with --grace 0s).
        #[arg(long)]
        version: u32,
    },
    /// Check a secret read from standard input; exit 0 when valid, 1 when not.
    Verify {
        /// Client id.
        id: String,
        /// Read the secret from standard input.
        #[arg(long, required = true)]
        secret_stdin: bool,
    },
}

/// `keyward sign`
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// Key set name.
    #[arg(long)]
    pub keyset: String,
    /// Claims as a JSON object.
    #[arg(long, default_value = "{}")]
    pub claims: String,
    /// Lifetime, e.g. 15m, 1h, 1d (at most the key set's max-token-ttl).
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// `openmetadata`: a token OpenMetadata accepts (needs --subject).
    #[arg(long)]
    pub profile: Option<String>,
    /// Sets `sub` (and `preferred_username` under the openmetadata profile).
    #[arg(long)]
    pub subject: Option<String>,
    /// Sets `email`.
    #[arg(long)]
    pub email: Option<String>,
    /// Under --profile openmetadata: sign even if email and subject name
    /// different OpenMetadata users (OM logs in as the email's).
    #[arg(long)]
    pub force: bool,
    /// Write the token to FILE atomically (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `keyward client put`
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// Client id.
    pub id: String,
    /// Read the secret from standard input (create only).
    #[arg(long)]
    pub secret_stdin: bool,
    /// Display name.
    #[arg(long)]
    pub display_name: Option<String>,
    /// OIDC discovery URI.
    #[arg(long)]
    pub discovery_uri: Option<String>,
    /// Callback URL.
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Scope (repeatable); replaces the stored scopes.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// client_secret_basic or client_secret_post.
    #[arg(long)]
    pub auth_method: Option<String>,
    /// Label KEY=VALUE (repeatable); replaces the stored labels.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Key set that signs this client's client-credentials tokens ("" clears it).
    #[arg(long)]
    pub token_keyset: Option<String>,
    /// Lifetime of its tokens, e.g. 15m (at most the key set's max-token-ttl) [default: 15m]
    #[arg(long)]
    pub token_ttl: Option<String>,
    /// `aud` of its tokens ("" clears it).
    #[arg(long)]
    pub audience: Option<String>,
    /// Scope it may request at the token endpoint (repeatable); replaces the stored ones.
    #[arg(long = "allowed-scope")]
    pub allowed_scopes: Vec<String>,
    /// The OpenMetadata user its tokens log in as: their `sub` and
    /// `preferred_username` (default: the client id; "" clears it).
    #[arg(long, value_name = "NAME")]
    pub token_subject: Option<String>,
    /// `email` of its tokens; OpenMetadata looks the user up by it first,
    /// so its part before '@' must be the token subject ("" clears it).
    #[arg(long, value_name = "EMAIL")]
    pub token_email: Option<String>,
}

pub(crate) fn seconds(field: &'static str, text: &str) -> Result<u64, CliError> {
    Ok(model::parse_duration(field, text)?.as_secs())
}
