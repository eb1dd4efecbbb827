//! Deadlines on HTTP/2 as a slow client sends it. The gRPC listener's
//! connections must send the connection preface, and then each frame they
//! start, within a deadline: a client that trickles a byte now and then
//! (which would keep the idle timer from ever firing) is closed once it is
//! late, so slow connections cannot hold every connection slot. Between
//! frames only the idle timeout applies.
//!
//! The deadline reads the plaintext HTTP/2 bytes (after TLS, when there is
//! TLS): the 24-byte preface, then frames of a 9-byte header announcing the
//! length of the payload that follows.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The HTTP/2 connection preface's length (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
/// An HTTP/2 frame header's length (RFC 9113 §4.1).
const HEADER_LEN: usize = 9;

/// Where the reader stands in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Inside the preface; this many bytes of it read.
    Preface(usize),
    /// Between frames: nothing owed.
    Idle,
    /// Inside a frame header; its bytes read so far, and their count.
    Header([u8; HEADER_LEN], usize),
    /// Inside a frame's payload; this many bytes still owed.
    Payload(usize),
}

/// Tracks a byte stream's HTTP/2 framing: whether a preface or frame has
/// started and not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Framing(Position);

impl Framing {
    fn new() -> Self {
        Self(Position::Preface(0))
    }

    /// Whether the client owes the rest of something it started.
    fn owing(self) -> bool {
        self.0 != Position::Idle
    }

    /// Takes `bytes` read from the client.
    fn read(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            self.0 = match self.0 {
                Position::Preface(got) => {
                    let take = (PREFACE_LEN - got).min(bytes.len());
                    bytes = &bytes[take..];
                    if got + take == PREFACE_LEN {
                        Position::Idle
                    } else {
                        Position::Preface(got + take)
                    }
                }
                Position::Idle => Position::Header([0; HEADER_LEN], 0),
                Position::Header(mut header, got) => {
                    let take = (HEADER_LEN - got).min(bytes.len());
                    header[got..got + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if got + take < HEADER_LEN {
                        Position::Header(header, got + take)
                    } else {
                        let length = usize::from(header[0]) << 16
                            | usize::from(header[1]) << 8
                            | usize::from(header[2]);
                        if length == 0 {
                            Position::Idle
                        } else {
                            Position::Payload(length)
                        }
                    }
                }
                Position::Payload(left) => {
                    let take = left.min(bytes.len());
                    bytes = &bytes[take..];
                    if take == left {
                        Position::Idle
                    } else {
                        Position::Payload(left - take)
                    }
                }
            };
        }
    }
}

/// A stream whose client must finish the preface, and each frame it starts,
/// within `limit`.
#[derive(Debug)]
pub struct FrameDeadline<S> {
    inner: S,
    limit: Duration,
    framing: Framing,
    /// Running while the client owes bytes.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FrameDeadline<S> {
    /// `inner`, whose preface is due within `limit` from now.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            framing: Framing::new(),
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Starts the deadline when something is owed, stops it when not.
    fn follow(&mut self) {
        match (self.framing.owing(), self.deadline.is_some()) {
            (true, false) => {
                self.deadline = Some(Box::pin(tokio::time::sleep_until(
                    Instant::now() + self.limit,
                )));
            }
            (false, true) => self.deadline = None,
            _ => {}
        }
    }
}

fn late() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "HTTP/2 preface or frame not finished within its deadline",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                this.framing.read(&buf.filled()[before..]);
                this.follow();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(late())),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for FrameDeadline<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: usize) -> Vec<u8> {
        let mut bytes = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            4,
            0,
            0,
            0,
            0,
            0,
        ];
        bytes.extend(std::iter::repeat_n(0u8, payload));
        bytes
    }

    #[test]
    fn framing_owes_until_the_preface_and_each_frame_end() {
        let mut framing = Framing::new();
        assert!(framing.owing(), "the preface is owed from the start");
        framing.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r");
        assert!(framing.owing(), "one byte of the preface left");
        framing.read(b"\n");
        assert!(!framing.owing());
        let settings = frame(6);
        framing.read(&settings[..4]);
        assert!(framing.owing(), "half a header");
        framing.read(&settings[4..12]);
        assert!(framing.owing(), "part of the payload");
        framing.read(&settings[12..]);
        assert!(!framing.owing());
        // Several frames in one read, the last one cut short.
        let mut many = frame(0);
        many.extend(frame(3));
        many.extend(&frame(100)[..20]);
        framing.read(&many);
        assert!(framing.owing());
        framing.read(&frame(100)[20..]);
        assert!(!framing.owing());
    }
}
