//! Where signatures are computed. ES256 and EdDSA take tens of microseconds
//! and run on the calling task. An RSA signature takes about 0.4 ms (2048
//! bits) to several ms (4096): those run on a pool of signing threads, one per
//! core, fed by a queue, so a burst of RS256 tokens waits in the queue instead
//! of holding the async workers that serve the JWKS and every other request.
//!
//! The threads take the next job straight from the queue: a core that
//! finishes a signature starts the next one without waiting for an async
//! worker to schedule it, which matters when those workers are busy with the
//! very requests that asked for the signatures.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Error, Result,
    crypto::{jwt, keys::SigningKey},
};

/// RSA signatures waiting for a thread, per thread, before callers wait for
/// room in the queue.
const QUEUED_PER_THREAD: usize = 256;

/// One RSA signature to compute and where to send it.
struct Job {
    key: Arc<SigningKey>,
    claims: Map<String, Value>,
    iat: i64,
    exp: i64,
    reply: oneshot::Sender<Result<String>>,
}

impl Job {
    fn run(self) {
        let signed = jwt::sign(&self.key, self.claims, self.iat, self.exp).map_err(Error::internal);
        // The caller may have gone (its request was cancelled): nothing to do.
        let _ = self.reply.send(signed);
    }
}

/// Signs JWTs, keeping RSA off the async workers.
#[derive(Debug)]
pub(super) struct JwtSigner {
    /// The signing threads' queue; `None` when no thread could be started,
    /// and RSA signatures go to tokio's blocking threads instead.
    rsa_queue: Option<mpsc::Sender<Job>>,
}

impl JwtSigner {
    /// Starts one signing thread per core. They stop when the signer is
    /// dropped, after the jobs already queued.
    pub(super) fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let (queue, jobs) = mpsc::channel::<Job>(QUEUED_PER_THREAD * threads);
        let jobs = Arc::new(Mutex::new(jobs));
        let mut started = 0;
        for n in 0..threads {
            let jobs = Arc::clone(&jobs);
            let spawned = std::thread::Builder::new()
                .name(format!("keyward-rsa-{n}"))
                .spawn(move || {
                    while let Some(job) = next_job(&jobs) {
                        // A panicking signature must not take the thread with
                        // it: its caller gets an internal error (the reply is
                        // dropped) and the thread takes the next job.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(err) => tracing::warn!(error = %err, "could not start an RSA signing thread"),
            }
        }
        if started == 0 {
            tracing::warn!("no RSA signing thread: RSA signatures use tokio's blocking threads");
        }
        Self {
            rsa_queue: (started > 0).then_some(queue),
        }
    }

    /// The compact JWS of `claims` with `iat` and `exp` set, signed by `key`.
    pub(super) async fn sign(
        &self,
        key: Arc<SigningKey>,
        claims: Map<String, Value>,
        iat: i64,
        exp: i64,
    ) -> Result<String> {
        if !key.algorithm().is_rsa() {
            return jwt::sign(&key, claims, iat, exp).map_err(Error::internal);
        }
        let (reply, signed) = oneshot::channel();
        let job = Job {
            key,
            claims,
            iat,
            exp,
            reply,
        };
        match &self.rsa_queue {
            Some(queue) => queue
                .send(job)
                .await
                .map_err(|_| Error::internal("the RSA signing threads have stopped"))?,
            None => drop(tokio::task::spawn_blocking(move || job.run())),
        }
        signed
            .await
            .map_err(|_| Error::internal("an RSA signing thread dropped its job"))?
    }
}

/// The next job for a signing thread, or `None` when the signer is gone. One
/// thread at a time waits on the queue; the others wait for the lock.
fn next_job(jobs: &Mutex<mpsc::Receiver<Job>>) -> Option<Job> {
    // No job runs under the lock, so it cannot be poisoned by one; take the
    // queue back regardless.
    let mut jobs = jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    jobs.blocking_recv()
}
