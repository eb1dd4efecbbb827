//! `keyward agent`: keeps files fresh for programs that read keys and
//! secrets from disk (OpenMetadata's ingestion reads its `jwtToken` file once
//! per run; OpenMetadata's server reads its key files at start).
//!
//! - [`config`]: the TOML file listing the outputs.
//! - `output`: one output's life: fetch, atomic write when changed, its
//!   command once per change, renewal at about two-thirds of a token's life,
//!   backoff that keeps the last good file while keyward cannot be reached.
//! - this module: the `Watch` streams (one per API token) that wake the
//!   outputs a change concerns, so that nothing polls; start and stop.
//! - `health`: `/health` and `/metrics`.

pub mod config;
mod health;
mod output;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub use config::{AgentConfig, OutputSpec, What};
pub use output::State;
use output::{Output, Wake, unix_now};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::{
    Error, Result,
    domain::secret::SecretString,
    transport::grpc::{
        code_name,
        dial::{Bearer, Dial},
        pb,
    },
};

/// How `keyward agent` was started.
#[derive(Debug)]
pub struct Settings {
    /// Where keyward is.
    pub dial: Dial,
    /// The agent's API token (`--token`, `KEYWARD_TOKEN`).
    pub token: Option<SecretString>,
    /// A file holding it (`--token-file`), read again at each call so a
    /// replaced token takes effect without a restart.
    pub token_file: Option<PathBuf>,
    /// The configuration file.
    pub config: PathBuf,
    /// Write every output once and exit (an init container).
    pub once: bool,
    /// Overrides the file's `health_listen`.
    pub health_listen: Option<SocketAddr>,
}

/// The channel to keyward and the agent's credentials.
pub(crate) struct Connection {
    channel: Channel,
    token: Option<SecretString>,
    token_file: Option<PathBuf>,
}

impl Connection {
    /// The bearer for an output whose own token file is `own` (if any).
    fn bearer(&self, own: Option<&Path>) -> std::result::Result<Bearer, String> {
        let read = |file: &Path| {
            std::fs::read_to_string(file)
                .map(|t| Zeroizing::new(t.trim().to_string()))
                .map_err(|e| format!("cannot read the API token file {}: {e}", file.display()))
        };
        // The output's own file, else the agent's token, else the agent's file.
        let token = match (own, &self.token, &self.token_file) {
            (Some(file), _, _) => read(file)?,
            (None, Some(token), _) => Zeroizing::new(token.expose().trim().to_string()),
            (None, None, Some(file)) => read(file)?,
            (None, None, None) => return Err("no API token".into()),
        };
        if token.is_empty() {
            return Err("the API token is empty".into());
        }
        Bearer::new(&token)
    }
}

/// One `Watch` stream's health.
pub(crate) struct Stream {
    /// The token file it authenticates with, or `None` for the agent's token.
    credential: Option<PathBuf>,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// What the health endpoint reads.
pub(crate) struct Agent {
    outputs: Vec<Arc<Output>>,
    streams: Vec<Arc<Stream>>,
}

/// Runs the agent until `shutdown` completes. With `once`, writes every
/// output once and returns whether all succeeded.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<bool> {
    let config = AgentConfig::load(&settings.config)?;
    let channel = settings.dial.channel().map_err(Error::FailedPrecondition)?;
    if settings.token.is_none()
        && settings.token_file.is_none()
        && let Some(o) = config.outputs.iter().find(|o| o.token_file.is_none())
    {
        return Err(Error::FailedPrecondition(format!(
            "output {:?} has no API token: give the agent one (--token-file, \
             KEYWARD_TOKEN_FILE or KEYWARD_TOKEN) or set token_file in its table",
            o.name
        )));
    }
    let conn = Arc::new(Connection {
        channel,
        token: settings.token,
        token_file: settings.token_file,
    });
    let outputs: Vec<Arc<Output>> = config
        .outputs
        .into_iter()
        .map(|spec| Arc::new(Output::new(spec)))
        .collect();

    if settings.once {
        let mut all = true;
        for o in &outputs {
            o.adopt();
            let ok = o.refresh(&conn, Wake::CHECK).await.is_ok();
            all &= ok;
        }
        return Ok(all);
    }

    // Bound first: a taken port stops the agent before it writes anything.
    let listener = match settings.health_listen.or(config.health_listen) {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::FailedPrecondition(format!("cannot listen on {addr} for health: {e}"))
        })?),
        None => None,
    };
    // One Watch per credential: each token sees only its own scope.
    let mut groups: BTreeMap<Option<PathBuf>, Vec<Arc<Output>>> = BTreeMap::new();
    for o in &outputs {
        groups
            .entry(o.spec.token_file.clone())
            .or_default()
            .push(Arc::clone(o));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut streams = Vec::new();
    for (credential, members) in groups {
        let stream = Arc::new(Stream {
            credential,
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        streams.push(Arc::clone(&stream));
        tasks.spawn(follow(Arc::clone(&conn), stream, members, stop_rx.clone()));
    }
    for o in &outputs {
        let (o, conn, stop) = (Arc::clone(o), Arc::clone(&conn), stop_rx.clone());
        tasks.spawn(async move { o.run(&conn, stop).await });
    }
    let agent = Arc::new(Agent {
        outputs: outputs.clone(),
        streams,
    });
    let health = match listener {
        Some(listener) => {
            let bound = listener
                .local_addr()
                .map_err(|e| Error::Internal(Box::new(e)))?;
            tasks.spawn(health::serve(listener, Arc::clone(&agent), stop_rx.clone()));
            Some(bound)
        }
        None => None,
    };
    tracing::info!(
        outputs = outputs.len(),
        health = %health.map_or_else(|| "off".to_string(), |a| a.to_string()),
        "keyward agent running"
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    tracing::info!("keyward agent stopped");
    Ok(true)
}

/// Follows one credential's `Watch` stream and wakes the outputs each event
/// concerns. Whenever it (re)connects without a position to resume from (at
/// start, or after its position was pruned), every output checks itself:
/// what happened while nobody watched is found that way.
async fn follow(
    conn: Arc<Connection>,
    stream: Arc<Stream>,
    outputs: Vec<Arc<Output>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut kinds = Vec::new();
    let mut keysets = Vec::new();
    let mut clients = Vec::new();
    for o in &outputs {
        match &o.spec.what {
            What::Token { keyset, .. } | What::OpenMetadata { keyset, .. } => {
                kinds.extend(["key.*".to_string(), "keyset.*".to_string()]);
                keysets.push(keyset.clone());
            }
            What::Secret { client } => {
                kinds.push("client.*".to_string());
                clients.push(client.clone());
            }
        }
    }
    for list in [&mut kinds, &mut keysets, &mut clients] {
        list.sort();
        list.dedup();
    }
    let mut after: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let opened = match conn.bearer(stream.credential.as_deref()) {
            Err(e) => Err(e),
            Ok(bearer) => {
                pb::events_client::EventsClient::with_interceptor(conn.channel.clone(), bearer)
                    .watch(pb::WatchRequest {
                        after_id: after,
                        kinds: kinds.clone(),
                        keysets: keysets.clone(),
                        clients: clients.clone(),
                    })
                    .await
                    .map_err(|e| {
                        if e.code() == tonic::Code::FailedPrecondition {
                            // Resumed too late: what was missed is checked instead.
                            after = None;
                        }
                        describe(&e)
                    })
            }
        };
        let ended = match opened {
            Err(e) => e,
            Ok(response) => {
                stream.connected.store(true, Ordering::SeqCst);
                *lock(&stream.last_error) = None;
                failures = 0;
                // Without a position, everything is checked; with one, what
                // failed while keyward was away is retried now.
                for o in &outputs {
                    if after.is_none() || lock(&o.state).last_error.is_some() {
                        o.wake(Wake::CHECK);
                    }
                }
                let mut events = response.into_inner();
                let ended = loop {
                    tokio::select! {
                        got = events.message() => match got {
                            Ok(Some(e)) => {
                                after = Some(e.id);
                                for o in &outputs {
                                    if let Some(why) = o.wants(&e) {
                                        tracing::debug!(output = %o.spec.name, event = %e.kind, "woken");
                                        o.wake(why);
                                    }
                                }
                            }
                            Ok(None) => break "keyward ended the stream".to_string(),
                            Err(e) => {
                                if e.code() == tonic::Code::FailedPrecondition {
                                    after = None;
                                }
                                break describe(&e);
                            }
                        },
                        _ = stop.changed() => return,
                    }
                };
                stream.connected.store(false, Ordering::SeqCst);
                ended
            }
        };
        tracing::warn!(error = %ended, "watch stream down; reconnecting");
        *lock(&stream.last_error) = Some(ended);
        failures = failures.saturating_add(1);
        // 1 s, 2 s, 4 s, 8 s, then every 10 s: back soon after keyward is.
        let delay = Duration::from_secs(1 << (failures.min(5) - 1)).min(Duration::from_secs(10));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A failed call in one line. Failures to reach keyward at all (tonic
/// reports them as UNKNOWN, UNAVAILABLE or CANCELLED with the transport's
/// error as source) read `UNAVAILABLE: keyward unreachable (<root cause>)`.
pub(crate) fn describe(e: &tonic::Status) -> String {
    let mut cause = std::error::Error::source(e);
    let mut root = None;
    while let Some(c) = cause {
        root = Some(c.to_string());
        cause = c.source();
    }
    match root {
        Some(root) => format!("UNAVAILABLE: keyward unreachable ({root})"),
        None => format!("{}: {}", code_name(e.code()), e.message()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Agent {
    /// `ok`, `degraded` (keyward unreachable or a refresh failed, every file
    /// still usable) or `failing` (an output missing or expired).
    fn status(&self) -> &'static str {
        let now = unix_now();
        let states: Vec<State> = self
            .outputs
            .iter()
            .map(|o| lock(&o.state).clone())
            .collect();
        if states.iter().any(|s| !s.usable(now)) {
            "failing"
        } else if states.iter().any(|s| s.last_error.is_some())
            || self
                .streams
                .iter()
                .any(|s| !s.connected.load(Ordering::SeqCst))
        {
            "degraded"
        } else {
            "ok"
        }
    }
}
