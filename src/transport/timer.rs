//! hyper's timer for one HTTP/1.1 connection, used for its header-read
//! timeout. hyper asks for a new timer for every request head it reads;
//! with tokio's own, each one is put into the runtime's timer wheel when the
//! head is not there yet and taken out once it is: two turns of a lock that
//! every core shares, on every keep-alive request. Here every timer of a
//! connection is a view of one tokio timer the connection keeps: a later
//! deadline moves it without that lock (tokio only notes the new deadline),
//! and dropping a view leaves it in place. Only a timer that fired, or the
//! connection's end, goes back to the shared wheel.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

type Shared = Arc<Mutex<Pin<Box<tokio::time::Sleep>>>>;

/// The timer of one connection.
#[derive(Debug, Clone)]
pub struct ConnTimer {
    sleep: Shared,
}

impl ConnTimer {
    /// A timer whose first deadline is `first` from now.
    pub fn new(first: Duration) -> Self {
        Self {
            sleep: Arc::new(Mutex::new(Box::pin(tokio::time::sleep(first)))),
        }
    }
}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// tokio's clock, which tests may pause.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline {
            shared: Arc::clone(&self.sleep),
            at: tokio::time::Instant::from_std(deadline),
        })
    }
}

/// One of hyper's timers: done at `at`, kept by the connection's one timer.
#[derive(Debug)]
struct Deadline {
    shared: Shared,
    at: tokio::time::Instant,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleep = self
            .shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sleep.deadline() != self.at {
            sleep.as_mut().reset(self.at);
        }
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Deadline {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hyper::rt::Timer as _;

    use super::ConnTimer;

    #[tokio::test]
    async fn each_deadline_fires_no_sooner_than_its_time() {
        let timer = ConnTimer::new(Duration::from_secs(10));
        let start = tokio::time::Instant::now();
        timer.sleep(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
        // A view dropped before its time leaves the next one unaffected.
        drop(timer.sleep(Duration::from_millis(1)));
        let resumed = tokio::time::Instant::now();
        timer.sleep(Duration::from_millis(50)).await;
        assert!(resumed.elapsed() >= Duration::from_millis(50));
        // An earlier deadline after a later one still fires at its own time.
        let later = timer.sleep(Duration::from_secs(3600));
        let early = tokio::time::timeout(Duration::from_millis(20), later);
        assert!(early.await.is_err(), "not before its deadline");
        let soon = tokio::time::Instant::now();
        timer.sleep(Duration::from_millis(10)).await;
        assert!(soon.elapsed() >= Duration::from_millis(10));
    }
}
