//! Server settings, layered: defaults < TOML file (`--config`) < `KEYWARD_*`
//! environment < flags. Clap resolves flags over environment; the file fills
//! what both left unset.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

mod args;
mod file;
mod values;

pub use args::ServeArgs;
use file::{FileConfig, read_file_config};
use values::{retention, timeout_setting, tls_files, trusted_proxies};

use crate::{
    Error, Result,
    domain::{secret::SecretString, throttle::ThrottleSettings},
    seal::SealSpec,
    transport::{net::Limits, proxy::TrustedProxies},
};

/// The key set `/.well-known/jwks.json` serves unless configured.
pub const DEFAULT_KEYSET: &str = "default";

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./keyward-data";
/// Default gRPC listen address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default HTTP listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default JWKS `Cache-Control: max-age`, seconds.
pub const DEFAULT_JWKS_MAX_AGE: u64 = 300;
/// Default period of the built-in rotation sweep.
pub const DEFAULT_ROTATION_INTERVAL: Duration = Duration::from_secs(30);
/// With the built-in scheduler off, how late a due rotation may be before it
/// counts as overdue: an hourly cron or timer plus its slack.
pub const DEFAULT_OVERDUE_WITHOUT_SCHEDULER: Duration = Duration::from_secs(2 * 3600);
/// How long audit events are kept by default (a little over a year).
pub const DEFAULT_AUDIT_RETAIN: Duration = Duration::from_secs(400 * 86_400);
/// How long change events are kept by default.
pub const DEFAULT_EVENT_RETAIN: Duration = Duration::from_secs(7 * 86_400);
/// How long before an expiry its near-expiry event is raised, by default.
pub const DEFAULT_ALERT_AHEAD: Duration = Duration::from_secs(7 * 86_400);

/// Where the master key comes from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// Not configured: generated in the data directory (SQLite only).
    Unset,
    /// A file holding the base64 key.
    File(PathBuf),
    /// The base64 key itself (`KEYWARD_MASTER_KEY`).
    Inline(SecretString),
}

impl fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unset => f.write_str("Unset"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Inline(_) => f.write_str("Inline([redacted])"),
        }
    }
}

/// Resolved server settings.
#[derive(Clone)]
pub struct ServeConfig {
    /// Holds `keyward.db`, `master.key` and `admin.token`.
    pub data_dir: PathBuf,
    /// Database URL (may hold a password: `Debug` redacts it).
    pub database_url: String,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Master key source: the current key, which seals every write.
    pub master_key: MasterKeySource,
    /// Files holding earlier master keys, which only open older rows.
    pub previous_master_keys: Vec<PathBuf>,
    /// The KMS/HSM seals that wrap the master keys, in the order tried.
    pub seals: Vec<SealSpec>,
    /// Key set served at `/.well-known/jwks.json`.
    pub default_keyset: String,
    /// JWKS `Cache-Control: max-age`, seconds.
    pub jwks_max_age: u64,
    /// Period of the built-in rotation sweep; `None` turns it off.
    pub rotation_interval: Option<Duration>,
    /// How late a due rotation may be before it counts as overdue.
    pub rotation_overdue_after: Duration,
    /// Where `/metrics` is served alone; `None`: on the HTTP listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Issuer URL; `None`: `http://<http-addr>`.
    pub issuer: Option<String>,
    /// Connection limits and timeouts of both listeners.
    pub limits: Limits,
    /// How many failed authentications, over how long, an address may make.
    pub auth_throttle: ThrottleSettings,
    /// How long audit events are kept.
    pub audit_retain: Duration,
    /// How long change events are kept.
    pub event_retain: Duration,
    /// How long before an expiry its near-expiry event is raised.
    pub alert_ahead: Duration,
    /// TLS on both listeners; `None`: plaintext.
    pub tls: Option<crate::transport::tls::TlsFiles>,
    /// Plaintext allowed on a non-loopback address.
    pub allow_plaintext: bool,
    /// The proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("master_key", &self.master_key)
            .field("previous_master_keys", &self.previous_master_keys)
            .field("seals", &self.seals)
            .field("default_keyset", &self.default_keyset)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("rotation_interval", &self.rotation_interval)
            .field("rotation_overdue_after", &self.rotation_overdue_after)
            .field("metrics_addr", &self.metrics_addr)
            .field("issuer", &self.issuer)
            .field("limits", &self.limits)
            .field("auth_throttle", &self.auth_throttle)
            .field("audit_retain", &self.audit_retain)
            .field("event_retain", &self.event_retain)
            .field("alert_ahead", &self.alert_ahead)
            .field("tls", &self.tls)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

/// `scheme://user:password@host` → `scheme://user:[redacted]@host`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:[redacted]@{host}"),
        None => url.to_string(),
    }
}

impl ServeConfig {
    /// Settings with every default, for `data_dir`.
    pub fn with_defaults(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            database_url: default_database_url(&data_dir),
            data_dir,
            grpc_addr: parse_default(DEFAULT_GRPC_ADDR),
            http_addr: parse_default(DEFAULT_HTTP_ADDR),
            master_key: MasterKeySource::Unset,
            previous_master_keys: Vec::new(),
            seals: Vec::new(),
            default_keyset: DEFAULT_KEYSET.into(),
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
            rotation_interval: Some(DEFAULT_ROTATION_INTERVAL),
            rotation_overdue_after: 2 * DEFAULT_ROTATION_INTERVAL,
            metrics_addr: None,
            issuer: None,
            limits: Limits::default(),
            auth_throttle: ThrottleSettings::default(),
            audit_retain: DEFAULT_AUDIT_RETAIN,
            event_retain: DEFAULT_EVENT_RETAIN,
            alert_ahead: DEFAULT_ALERT_AHEAD,
            tls: None,
            allow_plaintext: false,
            trusted_proxies: TrustedProxies::default(),
        }
    }

    /// Resolves flags and environment (`args`, `data_dir`) over the TOML file
    /// over defaults. `master_key_env` is `KEYWARD_MASTER_KEY`.
    pub fn resolve(
        data_dir: Option<PathBuf>,
        args: &ServeArgs,
        master_key_env: Option<String>,
    ) -> Result<Self> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let tls = tls_files(args, &file)?;
        let trusted_proxies = trusted_proxies(args, &file)?;
        let data_dir = data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let defaults = Self::with_defaults(&data_dir);
        let master_key = match (
            args.master_key_file.clone(),
            master_key_env.filter(|k| !k.trim().is_empty()),
            file.master_key_file,
        ) {
            (Some(path), _, _) => MasterKeySource::File(path),
            (None, Some(inline), _) => MasterKeySource::Inline(SecretString::new(inline)),
            (None, None, Some(path)) => MasterKeySource::File(path),
            (None, None, None) => MasterKeySource::Unset,
        };
        let rotation_interval = if args.no_scheduler || file.no_scheduler == Some(true) {
            None
        } else {
            match args
                .rotation_interval
                .as_ref()
                .or(file.rotation_interval.as_ref())
            {
                Some(text) => {
                    let d = crate::domain::model::parse_duration("rotation_interval", text)?;
                    if d.is_zero() {
                        return Err(Error::invalid(
                            "rotation_interval",
                            "must be at least 1s; use --no-scheduler to turn the scheduler off",
                        ));
                    }
                    Some(d)
                }
                None => defaults.rotation_interval,
            }
        };
        let rotation_overdue_after = match args
            .rotation_overdue_after
            .as_ref()
            .or(file.rotation_overdue_after.as_ref())
        {
            Some(text) => crate::domain::model::parse_duration("rotation_overdue_after", text)?,
            None => match rotation_interval {
                Some(period) => 2 * period,
                None => DEFAULT_OVERDUE_WITHOUT_SCHEDULER,
            },
        };
        let config = Self {
            database_url: args
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or(defaults.database_url),
            grpc_addr: args
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or(defaults.grpc_addr),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or(defaults.http_addr),
            master_key,
            previous_master_keys: if args.previous_master_key_files.is_empty() {
                file.previous_master_key_files.unwrap_or_default()
            } else {
                args.previous_master_key_files.clone()
            },
            seals: SealSpec::parse_all(if args.seals.is_empty() {
                file.seals.as_deref().unwrap_or_default()
            } else {
                &args.seals
            })
            .map_err(|e| Error::invalid("seal", e))?,
            default_keyset: args
                .default_keyset
                .clone()
                .or(file.default_keyset)
                .unwrap_or(defaults.default_keyset),
            jwks_max_age: args
                .jwks_max_age
                .or(file.jwks_max_age)
                .unwrap_or(defaults.jwks_max_age),
            rotation_interval,
            rotation_overdue_after,
            metrics_addr: args.metrics_addr.or(file.metrics_addr),
            issuer: args.issuer.clone().or(file.issuer),
            limits: Limits {
                max_connections: match args.max_connections.or(file.max_connections) {
                    Some(0) => return Err(Error::invalid("max_connections", "must be at least 1")),
                    Some(n) => n,
                    None => defaults.limits.max_connections,
                },
                idle_timeout: timeout_setting(
                    "idle_timeout",
                    args.idle_timeout.as_ref().or(file.idle_timeout.as_ref()),
                    defaults.limits.idle_timeout,
                )?,
                header_timeout: timeout_setting(
                    "header_timeout",
                    args.header_timeout
                        .as_ref()
                        .or(file.header_timeout.as_ref()),
                    defaults.limits.header_timeout,
                )?,
                shutdown_grace: match args
                    .shutdown_grace
                    .as_ref()
                    .or(file.shutdown_grace.as_ref())
                {
                    Some(text) => crate::domain::model::parse_duration("shutdown_grace", text)?,
                    None => defaults.limits.shutdown_grace,
                },
            },
            auth_throttle: ThrottleSettings {
                limit: match args.auth_failure_limit.or(file.auth_failure_limit) {
                    Some(0) => {
                        return Err(Error::invalid("auth_failure_limit", "must be at least 1"));
                    }
                    Some(n) => n,
                    None => defaults.auth_throttle.limit,
                },
                window: match args
                    .auth_failure_window
                    .as_ref()
                    .or(file.auth_failure_window.as_ref())
                {
                    Some(text) => {
                        let window =
                            crate::domain::model::parse_duration("auth_failure_window", text)?;
                        if window.as_secs() == 0 {
                            return Err(Error::invalid(
                                "auth_failure_window",
                                "must be at least 1s",
                            ));
                        }
                        window.as_secs()
                    }
                    None => defaults.auth_throttle.window,
                },
            },
            audit_retain: retention(
                "audit_retain",
                args.audit_retain.as_ref().or(file.audit_retain.as_ref()),
                (86_400, "1d"),
                defaults.audit_retain,
            )?,
            event_retain: retention(
                "event_retain",
                args.event_retain.as_ref().or(file.event_retain.as_ref()),
                (3600, "1h"),
                defaults.event_retain,
            )?,
            alert_ahead: retention(
                "alert_ahead",
                args.alert_ahead.as_ref().or(file.alert_ahead.as_ref()),
                (60, "1m"),
                defaults.alert_ahead,
            )?,
            tls,
            allow_plaintext: args.allow_plaintext || file.allow_plaintext == Some(true),
            trusted_proxies,
            data_dir,
        };
        if let Some(issuer) = &config.issuer
            && !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        {
            return Err(Error::invalid(
                "issuer",
                "must be an http:// or https:// URL, e.g. https://keyward.example.com",
            ));
        }
        if config.jwks_max_age == 0 {
            return Err(Error::invalid("jwks_max_age", "must be at least 1 second"));
        }
        crate::domain::model::validate_keyset_name(&config.default_keyset)
            .map_err(|_| Error::invalid("default_keyset", "must be a valid key set name"))?;
        Ok(config)
    }

    /// The issuer URL: as configured, or `http(s)://<http-addr>`.
    pub fn issuer(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.http_addr))
    }

    /// Refuses plaintext listeners on an address other hosts can reach,
    /// unless allowed: secrets, private keys and tokens cross the gRPC
    /// connection.
    pub fn check_plaintext(&self) -> Result<()> {
        if self.tls.is_some() || self.allow_plaintext {
            return Ok(());
        }
        let exposed: Vec<String> = [("gRPC", self.grpc_addr), ("HTTP", self.http_addr)]
            .into_iter()
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .map(|(what, addr)| format!("{what} on {addr}"))
            .collect();
        if exposed.is_empty() {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "refusing to serve plaintext {}: client secrets, exported private keys and API tokens \
             would cross the network in clear. Give --tls-cert and --tls-key, or --allow-plaintext \
             when a proxy or service mesh in front terminates TLS",
            exposed.join(" and ")
        )))
    }

    /// Whether the database is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("keyward.db").display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layering_flags_over_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keyward.toml");
        std::fs::write(
            &file,
            "grpc_addr = \"127.0.0.1:6000\"\nhttp_addr = \"127.0.0.1:6001\"\njwks_max_age = 60\n",
        )
        .unwrap();
        let args = ServeArgs {
            http_addr: Some("127.0.0.1:7001".parse().unwrap()),
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(Some(dir.clone()), &args, None).unwrap();
        assert_eq!(c.grpc_addr.port(), 6000, "file over default");
        assert_eq!(c.http_addr.port(), 7001, "flag over file");
        assert_eq!(c.jwks_max_age, 60);
        assert_eq!(c.default_keyset, "default");
        assert!(c.database_url.ends_with("keyward.db") && c.is_sqlite());

        std::fs::write(&file, "grcp_addr = \"x\"\n").unwrap();
        let err = ServeConfig::resolve(None, &args, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("grcp_addr"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn auth_throttle_settings_are_checked() {
        let defaults = ServeConfig::resolve(None, &ServeArgs::default(), None).unwrap();
        assert_eq!(defaults.auth_throttle, ThrottleSettings::default());
        let args = ServeArgs {
            auth_failure_limit: Some(3),
            auth_failure_window: Some("5m".into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(None, &args, None).unwrap();
        assert_eq!(
            c.auth_throttle,
            ThrottleSettings {
                limit: 3,
                window: 300
            }
        );
        for args in [
            ServeArgs {
                auth_failure_limit: Some(0),
                ..ServeArgs::default()
            },
            ServeArgs {
                auth_failure_window: Some("0s".into()),
                ..ServeArgs::default()
            },
        ] {
            let err = ServeConfig::resolve(None, &args, None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("auth_failure"), "{err}");
        }
    }

    #[test]
    fn tls_needs_a_pair_and_plaintext_stays_on_loopback_unless_allowed() {
        let pair = ServeArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            grpc_client_ca: Some("ca.pem".into()),
            ..ServeArgs::default()
        };
        let c = ServeConfig::resolve(None, &pair, None).unwrap();
        let tls = c.tls.clone().unwrap();
        assert_eq!(tls.grpc_client_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            tls.reload_interval,
            crate::transport::tls::DEFAULT_RELOAD_INTERVAL
        );
        assert!(c.issuer().starts_with("https://"), "{}", c.issuer());
        let ca_alone = ServeArgs {
            grpc_client_ca: Some("ca.pem".into()),
            ..ServeArgs::default()
        };
        let err = ServeConfig::resolve(None, &ca_alone, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-cert"), "{err}");

        let mut open = ServeConfig::with_defaults("/tmp/x");
        open.check_plaintext().unwrap();
        open.http_addr = "0.0.0.0:8080".parse().unwrap();
        let err = open.check_plaintext().unwrap_err().to_string();
        assert!(
            err.contains("HTTP on 0.0.0.0:8080") && !err.contains("gRPC"),
            "{err}"
        );
        open.allow_plaintext = true;
        open.check_plaintext().unwrap();
        open.allow_plaintext = false;
        open.tls = c.tls;
        open.check_plaintext().unwrap();
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut c = ServeConfig::with_defaults("/tmp/x");
        c.database_url = "postgres://app:s3cret@db:5432/keyward".into();
        c.master_key = MasterKeySource::Inline(SecretString::new("AAAAsecretkey".into()));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("AAAAsecretkey"),
            "{shown}"
        );
    }
}
