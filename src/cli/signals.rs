//! The shutdown signals of the long-running commands (`serve`, `agent`).
//!
//! The handlers are installed when [`shutdown_signal`] is called, not when
//! the future it returns is first polled: a command that has said it is
//! running (`keyward serving`, say) shuts down cleanly on the very next
//! SIGTERM, even before the task that waits for the signal has run once.
//! Installed lazily, a SIGTERM in that window took the default action and
//! killed the process.

use std::future::Future;

use super::CliError;

/// Installs the SIGINT and SIGTERM handlers now; the future resolves on the
/// first of them, naming it in the log.
///
/// # Errors
/// The runtime refused a handler (no signal driver); the command must not
/// start unstoppable.
#[cfg(unix)]
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| CliError {
            message: format!("cannot handle {name}: {e}"),
            code: 1,
        })
    };
    let mut interrupt = install(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = install(SignalKind::terminate(), "SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    })
}

/// Ctrl-C, where there are no Unix signals (its handler is installed when
/// the future is first polled).
///
/// # Errors
/// Never; the signature matches the Unix one.
#[cfg(not(unix))]
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, CliError> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C: shutting down");
        } else {
            std::future::pending::<()>().await;
        }
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    /// A SIGTERM that arrives before the future is first polled is caught,
    /// not the default action: were the handler installed lazily, this test
    /// process would die of the signal.
    #[tokio::test]
    async fn a_sigterm_before_the_first_poll_is_a_clean_stop() {
        let stopped = super::shutdown_signal().expect("the handlers install");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent}");
        tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .expect("the SIGTERM sent before the first poll resolves the future");
    }
}
