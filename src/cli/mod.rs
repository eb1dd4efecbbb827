//! The `keyward` command line: `serve`, `migrate`, and the admin commands, which
//! are gRPC clients of a running server. [`openmetadata`] holds the commands
//! that speak OpenMetadata's formats.

mod openmetadata;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::{
    Request,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{
    config::{DEFAULT_DATA_DIR, ServeArgs},
    grpc::pb::{self, clients_client::ClientsClient, key_sets_client::KeySetsClient},
    model::{self, format_time},
    rotation::human,
};

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
    /// Admin token (admin commands)
    #[arg(long, env = "KEYWARD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the admin token [default: <data-dir>/admin.token when present]
    #[arg(long, env = "KEYWARD_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format of admin commands
    #[arg(long, value_enum, global = true, default_value = "table")]
    pub output: Output,
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
    Sign {
        /// Key set name.
        #[arg(long)]
        keyset: String,
        /// Claims as a JSON object.
        #[arg(long, default_value = "{}")]
        claims: String,
        /// Lifetime, e.g. 15m, 1h, 1d (at most the key set's max-token-ttl).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `openmetadata`: a token OpenMetadata accepts (needs --subject).
        #[arg(long)]
        profile: Option<String>,
        /// Sets `sub` (and `preferred_username` under the openmetadata profile).
        #[arg(long)]
        subject: Option<String>,
        /// Sets `email`.
        #[arg(long)]
        email: Option<String>,
        /// Write the token to FILE atomically (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Export a key in another system's format.
    #[command(subcommand)]
    Export(openmetadata::ExportCmd),
    /// Import another system's key.
    #[command(subcommand)]
    Import(openmetadata::ImportCmd),
    /// Manage OIDC clients and their secrets.
    #[command(subcommand)]
    Client(ClientCmd),
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
    fn to_pb(&self) -> Result<pb::RotationPolicy, CliError> {
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
    /// Revoke a key: unpublished at once, never signs again.
    Revoke {
        /// The key's kid.
        kid: String,
    },
}

/// `keyward client …`
#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process; size is irrelevant
pub enum ClientCmd {
    /// Create a client (secret generated unless --secret-stdin) or update its metadata.
    Put {
        /// Client id.
        id: String,
        /// Read the secret from standard input (create only).
        #[arg(long)]
        secret_stdin: bool,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// OIDC discovery URI.
        #[arg(long)]
        discovery_uri: Option<String>,
        /// Callback URL.
        #[arg(long)]
        callback_url: Option<String>,
        /// Scope (repeatable); replaces the stored scopes.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// client_secret_basic or client_secret_post.
        #[arg(long)]
        auth_method: Option<String>,
        /// Label KEY=VALUE (repeatable); replaces the stored labels.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Key set that signs this client's client-credentials tokens ("" clears it).
        #[arg(long)]
        token_keyset: Option<String>,
        /// Lifetime of its tokens, e.g. 15m (at most the key set's max-token-ttl) [default: 15m]
        #[arg(long)]
        token_ttl: Option<String>,
        /// `aud` of its tokens ("" clears it).
        #[arg(long)]
        audience: Option<String>,
        /// Scope it may request at the token endpoint (repeatable); replaces the stored ones.
        #[arg(long = "allowed-scope")]
        allowed_scopes: Vec<String>,
    },
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

/// A CLI failure: the one line printed on stderr, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The line for stderr.
    pub message: String,
    /// The process exit code.
    pub code: i32,
}

impl CliError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().replace('\n', " ");
        Self {
            message: format!("{}: {message}", code_name(status.code())),
            code: 1,
        }
    }
}

impl From<crate::Error> for CliError {
    fn from(err: crate::Error) -> Self {
        tonic::Status::from(err).into()
    }
}

/// The canonical upper-case name of a gRPC code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An authenticated connection to a running keyward.
pub(crate) struct Admin {
    channel: Channel,
    bearer: Bearer,
}

/// Adds the admin token to every call made through an [`Admin`] client.
#[derive(Clone)]
pub(crate) struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose calls carry the admin token.
type Authed = InterceptedService<Channel, Bearer>;

impl Admin {
    fn connect(cli: &Cli) -> Result<Self, CliError> {
        let token = resolve_token(cli)?;
        let bearer = format!("Bearer {token}").parse().map_err(|_| {
            CliError::usage("the admin token holds characters not allowed in a header")
        })?;
        let channel = Endpoint::from_shared(cli.endpoint.clone())
            .map_err(|e| CliError::usage(format!("invalid --endpoint {:?}: {e}", cli.endpoint)))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
        Ok(Self {
            channel,
            bearer: Bearer(bearer),
        })
    }

    pub(crate) fn keysets(&self) -> KeySetsClient<Authed> {
        KeySetsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }

    pub(crate) fn clients(&self) -> ClientsClient<Authed> {
        ClientsClient::with_interceptor(self.channel.clone(), self.bearer.clone())
    }
}

fn resolve_token(cli: &Cli) -> Result<String, CliError> {
    if let Some(token) = cli.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.trim().to_string());
    }
    let default_file = cli
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
        .join("admin.token");
    let file = match &cli.token_file {
        Some(file) => file.clone(),
        None if default_file.exists() => default_file,
        None => {
            return Err(CliError::usage(format!(
                "no admin token: pass --token, set KEYWARD_TOKEN, or --token-file (looked for {})",
                default_file.display()
            )));
        }
    };
    read_token_file(&file)
}

pub(crate) fn read_token_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .map_err(|e| CliError::usage(format!("cannot read token file {}: {e}", path.display())))
}

fn read_stdin_secret() -> Result<String, CliError> {
    let mut secret = String::new();
    std::io::stdin()
        .read_to_string(&mut secret)
        .map_err(|e| CliError::usage(format!("cannot read the secret from stdin: {e}")))?;
    let trimmed = secret.trim_end_matches(['\n', '\r']).to_string();
    zeroize::Zeroize::zeroize(&mut secret);
    if trimmed.is_empty() {
        return Err(CliError::usage("the secret read from stdin is empty"));
    }
    Ok(trimmed)
}

fn seconds(field: &'static str, text: &str) -> Result<u64, CliError> {
    Ok(model::parse_duration(field, text)?.as_secs())
}

/// Runs an admin command; prints its result on stdout.
pub async fn run_admin(cli: &Cli) -> Result<(), CliError> {
    let admin = Admin::connect(cli)?;
    let out = cli.output;
    match &cli.command {
        Command::Serve(_) | Command::Migrate(_) => Ok(()),
        Command::Keyset(cmd) => keyset(&admin, out, cmd).await,
        Command::Keys(KeysCmd::List { keyset }) => {
            let keys = admin
                .keysets()
                .list_keys(pb::ListKeysRequest {
                    keyset: keyset.clone(),
                })
                .await?
                .into_inner()
                .keys;
            print_keys(out, &keys);
            Ok(())
        }
        Command::Keys(KeysCmd::Revoke { kid }) => {
            let r = admin
                .keysets()
                .revoke_key(pb::RevokeKeyRequest { kid: kid.clone() })
                .await?
                .into_inner();
            print_transition(out, &r.events, &r.warnings, &r.keys);
            Ok(())
        }
        Command::Rotate { keyset, dry_run } => {
            let events = admin
                .keysets()
                .rotate_due(pb::RotateDueRequest {
                    keyset: keyset.clone(),
                    dry_run: *dry_run,
                })
                .await?
                .into_inner()
                .events;
            if out == Output::Table && events.is_empty() {
                println!("nothing due");
            } else {
                print_events(out, &events, *dry_run);
            }
            Ok(())
        }
        Command::Sign {
            keyset,
            claims,
            ttl,
            profile,
            subject,
            email,
            out: out_file,
        } => {
            let signed = admin
                .keysets()
                .sign_jwt(pb::SignJwtRequest {
                    keyset: keyset.clone(),
                    claims_json: claims.clone(),
                    ttl_seconds: Some(seconds("ttl", ttl)?),
                    profile: profile.clone().unwrap_or_default(),
                    subject: subject.clone(),
                    email: email.clone(),
                })
                .await?
                .into_inner();
            if let Some(path) = out_file {
                crate::files::write_private_file(path, format!("{}\n", signed.jwt).as_bytes())?;
                eprintln!(
                    "wrote a token (kid {}, expires {}) to {}",
                    signed.kid,
                    format_time(signed.expires_at),
                    path.display()
                );
                return Ok(());
            }
            match out {
                Output::Table => println!("{}", signed.jwt),
                Output::Json => println!(
                    "{}",
                    json!({ "jwt": signed.jwt, "kid": signed.kid, "expires_at": format_time(signed.expires_at) })
                ),
            }
            Ok(())
        }
        Command::Client(cmd) => client(&admin, out, cmd).await,
        Command::Export(cmd) => openmetadata::export(&admin, out, cmd).await,
        Command::Import(cmd) => openmetadata::import(&admin, out, cmd).await,
    }
}

async fn keyset(admin: &Admin, out: Output, cmd: &KeysetCmd) -> Result<(), CliError> {
    let mut api = admin.keysets();
    match cmd {
        KeysetCmd::Create {
            name,
            alg,
            rsa_bits,
            policy,
        } => {
            let set = api
                .create_key_set(pb::CreateKeySetRequest {
                    name: name.clone(),
                    algorithm: alg.clone(),
                    rsa_bits: rsa_bits.unwrap_or(0),
                    policy: Some(policy.to_pb()?),
                })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::Update { name, policy } => {
            let set = api
                .update_key_set(pb::UpdateKeySetRequest {
                    name: name.clone(),
                    policy: Some(policy.to_pb()?),
                })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::List => {
            let mut sets = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .list_key_sets(pb::ListKeySetsRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await?
                    .into_inner();
                sets.extend(page.key_sets);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print_keysets(out, &sets);
        }
        KeysetCmd::Get { name } => {
            let set = api
                .get_key_set(pb::GetKeySetRequest { name: name.clone() })
                .await?
                .into_inner();
            print_keyset(out, &set);
        }
        KeysetCmd::Delete { name } => {
            api.delete_key_set(pb::DeleteKeySetRequest { name: name.clone() })
                .await?;
            print_done(out, &format!("deleted key set {name}"));
        }
        KeysetCmd::Rotate { name } => {
            let r = api
                .rotate_key_set(pb::RotateKeySetRequest { name: name.clone() })
                .await?
                .into_inner();
            print_transition(out, &r.events, &r.warnings, &r.keys);
        }
    }
    Ok(())
}

async fn client(admin: &Admin, out: Output, cmd: &ClientCmd) -> Result<(), CliError> {
    let mut api = admin.clients();
    match cmd {
        ClientCmd::Put {
            id,
            secret_stdin,
            display_name,
            discovery_uri,
            callback_url,
            scopes,
            auth_method,
            labels,
            token_keyset,
            token_ttl,
            audience,
            allowed_scopes,
        } => {
            let labels = if labels.is_empty() {
                None
            } else {
                let mut values = std::collections::HashMap::new();
                for label in labels {
                    let (k, v) = label.split_once('=').ok_or_else(|| {
                        CliError::usage(format!("--label {label:?}: write it as KEY=VALUE"))
                    })?;
                    values.insert(k.to_string(), v.to_string());
                }
                Some(pb::Labels { values })
            };
            let secret = if *secret_stdin {
                Some(read_stdin_secret()?)
            } else {
                None
            };
            let r = api
                .put_client(pb::PutClientRequest {
                    id: id.clone(),
                    display_name: display_name.clone(),
                    discovery_uri: discovery_uri.clone(),
                    callback_url: callback_url.clone(),
                    scopes: (!scopes.is_empty()).then(|| pb::StringList {
                        values: scopes.clone(),
                    }),
                    auth_method: auth_method.clone(),
                    labels,
                    secret,
                    token_keyset: token_keyset.clone(),
                    token_ttl_seconds: token_ttl
                        .as_deref()
                        .map(|t| seconds("token_ttl", t))
                        .transpose()?,
                    audience: audience.clone(),
                    allowed_scopes: (!allowed_scopes.is_empty()).then(|| pb::StringList {
                        values: allowed_scopes.clone(),
                    }),
                })
                .await?
                .into_inner();
            let client = r.client.unwrap_or_default();
            match out {
                Output::Json => {
                    let mut v = client_json(&client);
                    v["created"] = r.created.into();
                    if !r.generated_secret.is_empty() {
                        v["generated_secret"] = r.generated_secret.into();
                    }
                    println!("{v}");
                }
                Output::Table => {
                    print_clients(out, &[client]);
                    if !r.generated_secret.is_empty() {
                        eprintln!(
                            "generated secret (shown once; `keyward client secret {id}` reads it back):"
                        );
                        println!("{}", r.generated_secret);
                    }
                }
            }
        }
        ClientCmd::Get { id } => {
            let c = api
                .get_client(pb::GetClientRequest { id: id.clone() })
                .await?
                .into_inner();
            print_clients(out, &[c]);
        }
        ClientCmd::Secret { id, version } => {
            let s = api
                .get_client_secret(pb::GetClientSecretRequest {
                    id: id.clone(),
                    version: *version,
                })
                .await?
                .into_inner();
            match out {
                Output::Table => println!("{}", s.secret),
                Output::Json => println!(
                    "{}",
                    json!({ "secret": s.secret, "version": s.version, "valid_until": format_time(s.valid_until) })
                ),
            }
        }
        ClientCmd::List => {
            let mut clients = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = api
                    .list_clients(pb::ListClientsRequest {
                        page_size: 1000,
                        page_token,
                    })
                    .await?
                    .into_inner();
                clients.extend(page.clients);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            print_clients(out, &clients);
        }
        ClientCmd::Rotate {
            id,
            grace,
            secret_stdin,
        } => {
            let secret = if *secret_stdin {
                Some(read_stdin_secret()?)
            } else {
                None
            };
            let r = api
                .rotate_client_secret(pb::RotateClientSecretRequest {
                    id: id.clone(),
                    grace_seconds: Some(seconds("grace", grace)?),
                    secret,
                })
                .await?
                .into_inner();
            match out {
                Output::Json => {
                    let mut v = json!({ "id": id, "version": r.version, "previous_valid_until": format_time(r.previous_valid_until) });
                    if !r.generated_secret.is_empty() {
                        v["generated_secret"] = r.generated_secret.into();
                    }
                    println!("{v}");
                }
                Output::Table => {
                    eprintln!(
                        "client {id}: secret version {} is current; the previous one verifies until {}",
                        r.version,
                        format_time(r.previous_valid_until)
                    );
                    if !r.generated_secret.is_empty() {
                        println!("{}", r.generated_secret);
                    }
                }
            }
        }
        ClientCmd::Env(cmd) => return openmetadata::client_env(admin, out, cmd).await,
        ClientCmd::Delete { id } => {
            api.delete_client(pb::DeleteClientRequest { id: id.clone() })
                .await?;
            print_done(out, &format!("deleted client {id}"));
        }
        ClientCmd::RevokeSecret { id, version } => {
            let r = api
                .revoke_client_secret(pb::RevokeClientSecretRequest {
                    id: id.clone(),
                    version: *version,
                })
                .await?
                .into_inner();
            print_done(
                out,
                &format!(
                    "revoked secret version {} of client {id}; version {} stays current",
                    r.version, r.current_version
                ),
            );
        }
        ClientCmd::Verify { id, .. } => {
            let secret = read_stdin_secret()?;
            let r = api
                .verify_client_secret(pb::VerifyClientSecretRequest {
                    id: id.clone(),
                    secret,
                })
                .await?
                .into_inner();
            match out {
                Output::Json => println!("{}", json!({ "valid": r.valid, "version": r.version })),
                Output::Table if r.valid => println!("valid (version {})", r.version),
                Output::Table => println!("invalid"),
            }
            if !r.valid {
                return Err(CliError {
                    message: format!("secret for client {id} is not valid"),
                    code: 1,
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn print_done(out: Output, message: &str) {
    match out {
        Output::Table => println!("{message}"),
        Output::Json => println!("{}", json!({ "ok": true, "message": message })),
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::KeyState::try_from(state) {
        Ok(pb::KeyState::Pending) => "pending",
        Ok(pb::KeyState::Active) => "active",
        Ok(pb::KeyState::Retired) => "retired",
        Ok(pb::KeyState::Expired) => "expired",
        Ok(pb::KeyState::Revoked) => "revoked",
        _ => "unknown",
    }
}

fn policy_text(s: &pb::KeySet) -> String {
    if s.schedule.is_empty() {
        format!("every {}", human(s.rotate_every_seconds))
    } else {
        format!("cron {}", s.schedule)
    }
}

fn keyset_json(s: &pb::KeySet) -> Value {
    json!({
        "name": s.name,
        "algorithm": s.algorithm,
        "rsa_bits": (s.rsa_bits > 0).then_some(s.rsa_bits),
        "active_kid": s.active_kid,
        "published_keys": s.published_keys,
        "created_at": format_time(s.created_at),
        "rotation": policy_text(s),
        "rotate_every": (s.schedule.is_empty()).then(|| human(s.rotate_every_seconds)),
        "schedule": (!s.schedule.is_empty()).then(|| s.schedule.clone()),
        "prepublish": human(s.prepublish_seconds),
        "retain": human(s.retain_seconds),
        "max_token_ttl": human(s.max_token_ttl_seconds),
        "next_rotation": format_time(s.next_rotation_at),
        "jwks_max_age": human(s.jwks_max_age_seconds),
    })
}

fn print_keysets(out: Output, sets: &[pb::KeySet]) {
    print_rows(
        out,
        sets.iter().map(keyset_json).collect(),
        &[
            "name",
            "algorithm",
            "active_kid",
            "rotation",
            "next_rotation",
        ],
    );
}

/// One key set, as `field: value` lines (or JSON).
fn print_keyset(out: Output, set: &pb::KeySet) {
    let v = keyset_json(set);
    if out == Output::Json {
        println!("{v}");
        return;
    }
    for field in [
        "name",
        "algorithm",
        "rsa_bits",
        "active_kid",
        "published_keys",
        "created_at",
        "rotation",
        "prepublish",
        "retain",
        "max_token_ttl",
        "next_rotation",
        "jwks_max_age",
    ] {
        let value = match &v[field] {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        println!("{field:<15} {value}");
    }
}

/// A key as both outputs show it.
fn key_json(k: &pb::Key) -> Value {
    json!({
        "kid": k.kid,
        "keyset": k.keyset,
        "algorithm": k.algorithm,
        "state": state_name(k.state),
        "created": format_time(k.created_at),
        "activates": format_time(k.activates_at),
        "retires": format_time(k.retires_at),
        "expires": format_time(k.expires_at),
    })
}

/// A rotation event as both outputs show it.
fn event_json(e: &pb::RotationEvent, dry_run: bool) -> Value {
    json!({
        "keyset": e.keyset,
        "action": if dry_run { format!("would {}", e.action) } else { e.action.clone() },
        "kid": e.kid,
        "detail": e.detail,
    })
}

fn print_keys(out: Output, keys: &[pb::Key]) {
    print_rows(
        out,
        keys.iter().map(key_json).collect(),
        &["kid", "state", "created", "activates", "retires", "expires"],
    );
}

fn print_events(out: Output, events: &[pb::RotationEvent], dry_run: bool) {
    let rows = events.iter().map(|e| event_json(e, dry_run)).collect();
    print_rows(out, rows, &["keyset", "action", "kid", "detail"]);
}

pub(crate) fn print_transition(
    out: Output,
    events: &[pb::RotationEvent],
    warnings: &[String],
    keys: &[pb::Key],
) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if out == Output::Json {
        let v = json!({
            "events": events.iter().map(|e| event_json(e, false)).collect::<Vec<_>>(),
            "warnings": warnings,
            "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    print_events(out, events, false);
    println!();
    print_keys(out, keys);
}

fn client_json(c: &pb::Client) -> Value {
    json!({
        "id": c.id,
        "display_name": c.display_name,
        "discovery_uri": c.discovery_uri,
        "callback_url": c.callback_url,
        "scopes": c.scopes,
        "auth_method": c.auth_method,
        "labels": c.labels,
        "secret_version": c.secret_version,
        "created_at": format_time(c.created_at),
        "updated_at": format_time(c.updated_at),
        "token_keyset": c.token_keyset,
        "token_ttl": human(c.token_ttl_seconds),
        "audience": c.audience,
        "allowed_scopes": c.allowed_scopes,
    })
}

fn print_clients(out: Output, clients: &[pb::Client]) {
    print_rows(
        out,
        clients.iter().map(client_json).collect(),
        &[
            "id",
            "display_name",
            "auth_method",
            "scopes",
            "secret_version",
            "updated_at",
        ],
    );
}

/// Prints rows as aligned columns (`columns` in order) or as a JSON array.
fn print_rows(out: Output, rows: Vec<Value>, columns: &[&str]) {
    if out == Output::Json {
        println!("{}", Value::Array(rows));
        return;
    }
    let cell = |v: &Value| match v {
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in table {
        println!("{}", line(row));
    }
}
