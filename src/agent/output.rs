//! One output's life: fetch what it holds from keyward, write it atomically
//! when it changed, run its command once per change, and decide when to look
//! again. A failure leaves the last good file in place and is retried with
//! backoff; the output's [`State`] says what happened, for health and metrics.

use std::{path::PathBuf, sync::Mutex, time::Duration};

use tokio::sync::Notify;
use zeroize::Zeroizing;

use super::{
    Connection,
    config::{OutputSpec, What},
    lock,
};
use crate::{
    crypto::{b64url_decode, random, sha256},
    domain::{
        clock::{Clock as _, SystemClock},
        openmetadata::KeyExport,
    },
    files::{ensure_handover_dir, ensure_parent_dir, refuse_symlinked_path, write_handover_file},
    transport::grpc::pb,
};

/// The longest wait between two attempts after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a command may run before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Unix seconds now.
pub(super) fn unix_now() -> i64 {
    SystemClock.now()
}

/// A uniformly random fraction in [0, 1).
fn unit_random() -> f64 {
    let n = u64::from_le_bytes(random::unguessable::<8>()) >> 11;
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64 / (1u64 << 53) as f64;
    f
}

/// Why an output looks again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wake {
    /// A change that needs new content (a token re-signed).
    pub renew: bool,
    /// Something may have changed: compare and write only if it did.
    pub check: bool,
}

impl Wake {
    /// Compare, and write only what changed (a token only if it must).
    pub const CHECK: Self = Self {
        renew: false,
        check: true,
    };
    /// New content is needed: sign the token again.
    pub const RENEW: Self = Self {
        renew: true,
        check: false,
    };
}

/// What health and metrics report of an output.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Whether a file is in place (written by this agent or kept from before).
    pub present: bool,
    /// When keyward last answered for it (Unix seconds).
    pub last_success: Option<i64>,
    /// The last attempt's failure, if it failed.
    pub last_error: Option<String>,
    /// When a token in place expires (Unix seconds).
    pub expires_at: Option<i64>,
    /// Files replaced because their content changed.
    pub writes: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Commands run after a change that exited 0 / did not.
    pub commands_ok: u64,
    /// Commands that failed or timed out.
    pub commands_failed: u64,
}

impl State {
    /// Whether what is in place can still be used.
    pub fn usable(&self, now: i64) -> bool {
        self.present && self.expires_at.is_none_or(|t| t > now)
    }
}

/// One output and its state.
pub(super) struct Output {
    pub spec: OutputSpec,
    pub state: Mutex<State>,
    wake: Mutex<Wake>,
    notify: Notify,
    /// SHA-256 of the content in place (all its files), to skip a write that
    /// would change nothing. Never the content itself.
    digest: Mutex<Option<[u8; 32]>>,
}

/// What a look found: what is in place is current (a token kept, with its
/// renewal time), or new content.
enum Fetched {
    Kept(Option<i64>),
    Fresh(Fresh),
}

/// What keyward answered: the files and, for a token, its times.
struct Fresh {
    files: Vec<(PathBuf, Zeroizing<Vec<u8>>)>,
    expires_at: Option<i64>,
    /// When to renew without being asked.
    renew_at: Option<i64>,
}

/// What a JWT in place says of itself (not verified: only to decide whether
/// to keep it after a restart).
struct InPlace {
    kid: String,
    iat: i64,
    exp: i64,
    sub: Option<String>,
}

fn read_token(path: &std::path::Path) -> Option<InPlace> {
    let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
    parse_token(&text)
}

fn parse_token(text: &str) -> Option<InPlace> {
    let mut parts = text.trim().split('.');
    let header: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts.next()?).ok()?).ok()?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts.next()?).ok()?).ok()?;
    Some(InPlace {
        kid: header["kid"].as_str()?.to_string(),
        iat: claims["iat"].as_i64()?,
        exp: claims["exp"].as_i64()?,
        sub: claims["sub"].as_str().map(str::to_string),
    })
}

/// About two-thirds into a life from `from` to `until`, less up to a tenth
/// of it at random, so that agents started together do not renew together.
fn renewal(from: i64, until: i64) -> i64 {
    let life = (until - from).max(0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let jitter = (life as f64 / 10.0 * unit_random()) as i64;
    from + life * 2 / 3 - jitter
}

fn digest_of(files: &[(PathBuf, Zeroizing<Vec<u8>>)]) -> [u8; 32] {
    let mut all = Zeroizing::new(Vec::new());
    for (path, content) in files {
        all.extend_from_slice(&sha256(path.as_os_str().as_encoded_bytes()));
        all.extend_from_slice(&sha256(content));
    }
    sha256(&all)
}

impl Output {
    pub fn new(spec: OutputSpec) -> Self {
        Self {
            spec,
            state: Mutex::new(State::default()),
            wake: Mutex::new(Wake::default()),
            notify: Notify::new(),
            digest: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Asks the output to look again.
    pub fn wake(&self, why: Wake) {
        {
            let mut wake = lock(&self.wake);
            wake.renew |= why.renew;
            wake.check |= why.check;
        }
        self.notify.notify_one();
    }

    fn take_wake(&self) -> Wake {
        std::mem::take(&mut *lock(&self.wake))
    }

    /// Whether event `e` may change what this output holds, and how.
    pub fn wants(&self, e: &pb::Event) -> Option<Wake> {
        let kind = e.kind.as_str();
        match &self.spec.what {
            What::Token { keyset, .. } if *keyset == e.keyset => {
                // A new signing key or a key that left: sign again. Others
                // (a key published ahead, retired but still in the JWKS) leave
                // the token valid.
                let renew = kind.starts_with("keyset.")
                    || matches!(kind, "key.activated" | "key.revoked" | "key.expired");
                renew.then_some(Wake::RENEW)
            }
            What::Secret { client } if *client == e.client && kind.starts_with("client.") => {
                Some(Wake::CHECK)
            }
            What::OpenMetadata { keyset, .. }
                if *keyset == e.keyset
                    && (kind.starts_with("key.") || kind.starts_with("keyset.")) =>
            {
                Some(Wake::CHECK)
            }
            _ => None,
        }
    }

    /// Reads what is in place: its digest, and whether a token there may be kept.
    pub fn adopt(&self) {
        let files = match &self.spec.what {
            What::OpenMetadata { .. } => ["private_key.der", "public_key.der", "openmetadata.env"]
                .iter()
                .map(|f| self.spec.path.join(f))
                .collect(),
            _ => vec![self.spec.path.clone()],
        };
        let read: Option<Vec<_>> = files
            .into_iter()
            .map(|p| std::fs::read(&p).ok().map(|c| (p, Zeroizing::new(c))))
            .collect();
        let Some(read) = read else { return };
        *lock(&self.digest) = Some(digest_of(&read));
        let mut state = self.state();
        state.present = true;
        if matches!(self.spec.what, What::Token { .. }) {
            state.expires_at = read_token(&self.spec.path).map(|t| t.exp).or(Some(0));
        }
    }

    /// Runs the output until `stop` fires: a first look at once, then on
    /// its renewal time, on a wake, or after a failure's backoff.
    pub async fn run(&self, conn: &Connection, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.adopt();
        let mut failures = 0u32;
        let mut next: Option<i64>;
        let mut why = Wake::CHECK;
        loop {
            match self.refresh(conn, why).await {
                Ok(renew_at) => {
                    failures = 0;
                    next = renew_at;
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    next = None;
                }
            }
            let delay = if failures > 0 {
                self.backoff(failures)
            } else {
                // At least a second: a renewal time already past never spins.
                next.map_or(Duration::MAX, |at| {
                    Duration::from_secs(u64::try_from(at - unix_now()).unwrap_or(0).max(1))
                })
            };
            let timed_out = tokio::select! {
                () = self.notify.notified() => false,
                () = sleep(delay) => true,
                _ = stop.changed() => return,
            };
            why = self.take_wake();
            if timed_out {
                // A renewal that came due, or a retry of what failed.
                why.renew |= failures == 0;
                why.check = true;
            }
        }
    }

    /// 1 s, 2 s, 4 s… up to 30 s, never more than a third of what is left
    /// of a token in place, give or take a fifth.
    fn backoff(&self, failures: u32) -> Duration {
        let mut secs = 2f64.powi(i32::try_from(failures.min(6)).unwrap_or(6) - 1);
        secs = secs.min(MAX_BACKOFF.as_secs_f64());
        if let Some(exp) = self.state().expires_at {
            #[allow(clippy::cast_precision_loss)]
            let left = (exp - unix_now()).max(0) as f64;
            secs = secs.min((left / 3.0).max(1.0));
        }
        Duration::from_secs_f64(secs * (0.8 + 0.4 * unit_random()))
    }

    /// One look: fetch, write if changed, run the command. `Ok` holds the
    /// next renewal time, if the output has one.
    pub async fn refresh(&self, conn: &Connection, why: Wake) -> Result<Option<i64>, ()> {
        let fetched = match self.fetch(conn, why).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(output = %self.spec.name, error = %e, "keyward did not answer; the last good file stays");
                let mut state = self.state();
                state.failures += 1;
                state.last_error = Some(e);
                return Err(());
            }
        };
        let fresh = match fetched {
            Fetched::Fresh(fresh) => fresh,
            Fetched::Kept(renew_at) => {
                let mut state = self.state();
                state.last_success = Some(unix_now());
                state.last_error = None;
                return Ok(renew_at);
            }
        };
        let digest = digest_of(&fresh.files);
        let changed = *lock(&self.digest) != Some(digest);
        if changed {
            if let Err(e) = self.write(&fresh) {
                tracing::error!(output = %self.spec.name, error = %e, "cannot write; the last good file stays");
                let mut state = self.state();
                state.failures += 1;
                state.last_error = Some(e);
                return Err(());
            }
            *lock(&self.digest) = Some(digest);
        }
        {
            let mut state = self.state();
            state.present = true;
            state.last_success = Some(unix_now());
            state.last_error = None;
            state.expires_at = fresh.expires_at;
            if changed {
                state.writes += 1;
            }
        }
        if changed {
            let expires = fresh.expires_at.map(crate::domain::model::format_time);
            tracing::info!(
                output = %self.spec.name,
                path = %self.spec.path.display(),
                expires = expires.as_deref().unwrap_or("-"),
                "written"
            );
            self.run_command().await;
        }
        Ok(fresh.renew_at)
    }

    /// Asks keyward for the output's content; [`Fetched::Kept`] when a token
    /// in place is still good and nothing asked to renew it.
    async fn fetch(&self, conn: &Connection, why: Wake) -> Result<Fetched, String> {
        let bearer = conn.bearer(self.spec.token_file.as_deref())?;
        let channel = conn.channel.clone();
        let status = |e: tonic::Status| super::describe(&e);
        match &self.spec.what {
            What::Token {
                keyset,
                ttl,
                profile,
                subject,
                email,
                claims_json,
            } => {
                let mut api = pb::key_sets_client::KeySetsClient::with_interceptor(channel, bearer);
                let present = self.state().present;
                if !why.renew
                    && present
                    && let Some(t) = read_token(&self.spec.path)
                    && let renew_at = renewal(t.iat, t.exp)
                    && unix_now() < renew_at
                    && (subject.is_none() || t.sub == *subject)
                {
                    // Kept if the key that signed it still signs.
                    let set = api
                        .get_key_set(pb::GetKeySetRequest {
                            name: keyset.clone(),
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                    if set.active_kid == t.kid {
                        return Ok(Fetched::Kept(Some(renew_at)));
                    }
                }
                let signed = api
                    .sign_jwt(pb::SignJwtRequest {
                        keyset: keyset.clone(),
                        claims_json: claims_json.clone(),
                        ttl_seconds: Some(ttl.as_secs()),
                        profile: profile.clone(),
                        subject: subject.clone(),
                        email: email.clone(),
                        allow_identity_mismatch: false,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                // Renewed by the token's own life, not by comparing its exp
                // with this machine's clock, which may be skewed.
                let now = unix_now();
                let life = parse_token(&signed.jwt).map_or_else(
                    || i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
                    |t| t.exp - t.iat,
                );
                Ok(Fetched::Fresh(Fresh {
                    files: vec![(
                        self.spec.path.clone(),
                        Zeroizing::new(format!("{}\n", signed.jwt).into_bytes()),
                    )],
                    expires_at: Some(signed.expires_at),
                    renew_at: Some(renewal(now, now.saturating_add(life))),
                }))
            }
            What::Secret { client } => {
                let mut got = pb::clients_client::ClientsClient::with_interceptor(channel, bearer)
                    .get_client_secret(pb::GetClientSecretRequest {
                        id: client.clone(),
                        version: None,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                let secret = Zeroizing::new(std::mem::take(&mut got.secret));
                Ok(Fetched::Fresh(Fresh {
                    files: vec![(
                        self.spec.path.clone(),
                        Zeroizing::new(secret.as_bytes().to_vec()),
                    )],
                    expires_at: None,
                    renew_at: None,
                }))
            }
            What::OpenMetadata {
                keyset,
                issuer,
                key,
                om_dir,
                om_jwks_url,
                public_key_urls,
            } => {
                let mut exported =
                    pb::key_sets_client::KeySetsClient::with_interceptor(channel, bearer)
                        .export_key(pb::ExportKeyRequest {
                            keyset: keyset.clone(),
                            key: key.clone(),
                        })
                        .await
                        .map_err(status)?
                        .into_inner();
                let private = Zeroizing::new(std::mem::take(&mut exported.private_key_pkcs8_der));
                let env = KeyExport {
                    keyset,
                    state: &exported.state,
                    kid: &exported.kid,
                    issuer,
                    om_dir,
                    om_jwks_url,
                    keyward_jwks_url: &exported.jwks_uri,
                    public_key_urls,
                }
                .env_file();
                let dir = &self.spec.path;
                Ok(Fetched::Fresh(Fresh {
                    files: vec![
                        (dir.join("private_key.der"), private),
                        (
                            dir.join("public_key.der"),
                            Zeroizing::new(std::mem::take(&mut exported.public_key_spki_der)),
                        ),
                        (
                            dir.join("openmetadata.env"),
                            Zeroizing::new(env.into_bytes()),
                        ),
                    ],
                    expires_at: None,
                    renew_at: None,
                }))
            }
        }
    }

    /// Writes each file atomically (staged with its mode and owner, then
    /// renamed over the old one), so a reader sees old or new, never half.
    fn write(&self, fresh: &Fresh) -> Result<(), String> {
        let to = self.spec.to;
        let prepared = match self.spec.what {
            What::OpenMetadata { .. } => ensure_handover_dir(&self.spec.path, to),
            _ => refuse_symlinked_path(&self.spec.path)
                .and_then(|()| ensure_parent_dir(&self.spec.path, to)),
        };
        prepared.map_err(|e| e.to_string())?;
        for (path, content) in &fresh.files {
            write_handover_file(path, content, to).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Runs the output's command, if it has one, with `KEYWARD_OUTPUT` and
    /// `KEYWARD_PATH` set; killed after a minute. Its failure is logged and
    /// counted; the file stays written.
    async fn run_command(&self) {
        let Some(command) = &self.spec.command else {
            return;
        };
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env("KEYWARD_OUTPUT", &self.spec.name)
            .env("KEYWARD_PATH", &self.spec.path)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let outcome = match child {
            Err(e) => Err(format!("cannot start: {e}")),
            Ok(mut child) => match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("exited with {status}")),
                Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
                Err(_) => Err(format!(
                    "still running after {}s; killed",
                    COMMAND_TIMEOUT.as_secs()
                )),
            },
        };
        let mut state = self.state();
        match outcome {
            Ok(()) => state.commands_ok += 1,
            Err(e) => {
                tracing::warn!(output = %self.spec.name, error = %e, "its command failed");
                state.commands_failed += 1;
            }
        }
    }
}

async fn sleep(d: Duration) {
    // Duration::MAX would overflow the timer: a day is "until woken".
    tokio::time::sleep(d.min(Duration::from_secs(86_400))).await;
}
