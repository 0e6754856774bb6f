//! The HTTP server loop: accepts connections up to a limit and serves each with hyper's
//! HTTP/1.1 connection, with a header-read timeout that also closes idle keep-alive
//! connections; stops with a deadline.
//!
//! ```text
//! accept ─▶ permit? ── no ──▶ "503, Connection: close" and close
//!              │ yes
//!              ▼
//!   task: hyper http1 connection (header timeout) ─▶ axum app
//! stop ─▶ stop accepting ─▶ graceful shutdown of every connection ─▶ after the grace
//!         period, the rest are dropped (closed)
//! ```
//!
//! What a connection may hold is bounded by its limits: the header timeout (slow or absent
//! headers, idle keep-alive), the write timeout (a client that stops reading its answer), and,
//! in the handlers, the body timeout and body limit (`body.rs`). The permit of a connection is
//! released when its task ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(20);

/// Connections over the limit being answered at once (see [`refuse`]).
const MAX_REFUSING: usize = 64;
/// The longest a refused connection is kept to deliver its answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Answer to a connection over the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 26\r\nConnection: close\r\n\r\ntoo many open connections\n";

/// The limits the server loop enforces itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Open connections at most.
    pub(crate) max_connections: usize,
    /// Time for a request's headers, from the first byte or from the end of the previous
    /// response (idle keep-alive).
    pub(crate) header_timeout: Duration,
    /// Longest a write to a client may wait for the client to read.
    pub(crate) write_timeout: Duration,
    /// How long stopping waits for open connections before it closes them.
    pub(crate) shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream, &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let mut close = close_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            let io = TimedWrites::new(stream, limits.write_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Connections still reading a request (a client that sent half a body and waits)
        // are closed now.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Tells a connection over the limit so and closes it. The answer is written, the write
/// side shut, and what the client sent is drained for a moment (closing a socket with
/// unread data resets it, and the client would lose the answer); at most [`MAX_REFUSING`]
/// connections are being refused at once, the rest are closed at once.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            stream.write_all(BUSY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// A stream whose writes fail with [`std::io::ErrorKind::TimedOut`] once they have waited
/// longer than the timeout for the peer to read (reads are untouched: their limits are the
/// header and body timeouts).
struct TimedWrites<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write or flush is pending.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedWrites<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        TimedWrites {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// Maps a pending write to a timeout error once the deadline has passed.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        if polled.is_ready() {
            self.deadline = None;
            return polled;
        }
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.deadline = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client did not read its answer in time",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.check(cx, polled)
    }
}
