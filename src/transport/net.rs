//! Connections as a hostile network sends them: a cap on how many each
//! listener holds, an idle timeout on every connection, a header-read timeout
//! on HTTP, and a shutdown that waits for in-flight requests only so long.
//!
//! Both listeners accept through [`accept_loop`], which waits for a free slot
//! before it accepts (so past the cap, clients queue in the kernel's backlog
//! instead of taking memory and file descriptors), and wraps each socket in a
//! [`Conn`] that gives its slot back when dropped and fails a read or write
//! that has waited longer than the idle timeout.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

pub use super::frames::FrameDeadline;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch},
    time::{Instant, Sleep},
};

/// Most an HTTP connection buffers of a request's head: larger headers are
/// refused with 431.
pub const MAX_HTTP_BUFFER: usize = 64 * 1024;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP: a request's headers must arrive within this time (this also
    /// closes idle keep-alive connections).
    pub header_timeout: Duration,
    /// On shutdown, how long in-flight requests may take before their
    /// connections are closed anyway.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(120),
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// An accepted TCP connection holding one of its listener's slots.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    fn new(io: TcpStream, idle_timeout: Duration, slot: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            _slot: slot,
        }
    }

    fn touched(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// Called when the socket is not ready: fails once the idle time is up.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.touched();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.touched();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The address an HTTP request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl Conn {
    /// The remote address of the connection.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        tonic::transport::server::Connected::connect_info(&self.io).remote_addr()
    }
}

/// A connection after its TLS handshake, or a plaintext one.
#[derive(Debug)]
pub enum Stream {
    /// No TLS.
    Plain(Conn),
    /// TLS, with the client certificate's subject when one was presented.
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>, Option<String>),
}

/// What a gRPC request knows of its connection (in its extensions).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: Option<std::net::SocketAddr>,
    /// The subject of the client certificate, under mutual TLS.
    pub client_subject: Option<String>,
}

impl Stream {
    fn conn(&self) -> &Conn {
        match self {
            Self::Plain(conn) => conn,
            Self::Tls(tls, _) => tls.get_ref().0,
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            remote: self.conn().peer(),
            client_subject: match self {
                Self::Plain(_) => None,
                Self::Tls(_, subject) => subject.clone(),
            },
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(conn) => Pin::new(conn).poll_read(cx, buf),
            Self::Tls(tls, _) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(conn) => Pin::new(conn).poll_write(cx, data),
            Self::Tls(tls, _) => Pin::new(tls.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(conn) => Pin::new(conn).poll_flush(cx),
            Self::Tls(tls, _) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(conn) => Pin::new(conn).poll_shutdown(cx),
            Self::Tls(tls, _) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Completes `conn`'s TLS handshake within `timeout` when `tls` is set; a
/// failed or slow handshake is logged (at debug: scanners are common) and
/// the connection dropped.
pub async fn secure(
    conn: Conn,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) -> Option<Stream> {
    let Some(acceptor) = tls else {
        return Some(Stream::Plain(conn));
    };
    let peer = conn.peer();
    match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
        Ok(Ok(tls)) => {
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::transport::tls::subject_of(leaf));
            Some(Stream::Tls(Box::new(tls), subject))
        }
        Ok(Err(err)) => {
            tracing::debug!(peer = ?peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(peer = ?peer, "TLS handshake timed out");
            None
        }
    }
}

/// Hands on the HTTP/2 connections `conns` delivers once secured, each
/// handshake in its own task so a slow client holds up no other. Each must
/// then send its preface, and every frame it starts, within `timeout`
/// ([`FrameDeadline`]).
pub fn secured(
    mut conns: mpsc::Receiver<Conn>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    timeout: Duration,
) -> mpsc::Receiver<FrameDeadline<Stream>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(conn) = conns.recv().await {
            let Some(acceptor) = &tls else {
                let stream = FrameDeadline::new(Stream::Plain(conn), timeout);
                if tx.send(stream).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Some(stream) = secure(conn, Some(&acceptor), timeout).await {
                    let _ = tx.send(FrameDeadline::new(stream, timeout)).await;
                }
            });
        }
    });
    rx
}

/// Accepts connections from `listener` while fewer than
/// `limits.max_connections` of its connections are open, and hands each one
/// to `conns`, until `stop` flips or the receiver is gone.
pub async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    conns: mpsc::Sender<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut warned_full = false;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return,
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(err) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if slots.available_permits() > 0 {
            warned_full = false;
        }
        // Small unary replies must not wait on delayed ACKs (~40 ms each).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        if conns
            .send(Conn::new(tcp, limits.idle_timeout, slot))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Serves HTTP/1.1 with `app` on `listener` until `stop` flips; then lets
/// in-flight requests finish for at most `limits.shutdown_grace`.
pub async fn serve_http(
    listener: TcpListener,
    app: super::http::HttpApp,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel(1);
    let acceptor = tokio::spawn(accept_loop(listener, limits, tx, stop.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .header_read_timeout(limits.header_timeout)
        // Headers past 64 KiB are refused (431) before anything is kept.
        .max_buf_size(MAX_HTTP_BUFFER);
    while let Some(conn) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        let service = app.connection(conn.peer());
        let (watcher, mut builder, tls) = (graceful.watcher(), builder.clone(), tls.clone());
        builder.timer(super::timer::ConnTimer::new(limits.header_timeout));
        tasks.spawn(async move {
            // The handshake shares the header timeout: both are what a client
            // must send before it is served.
            let Some(stream) = secure(conn, tls.as_ref(), limits.header_timeout).await else {
                return;
            };
            let served = watcher
                .watch(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
            if let Err(err) = served.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    let _ = acceptor.await;
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tasks.len(),
            grace = ?limits.shutdown_grace,
            "HTTP connections still busy after the shutdown grace; closing them"
        );
    }
    tasks.abort_all();
}
