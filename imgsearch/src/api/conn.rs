//! The connections `serve` takes: at most `max` at once (each is a file descriptor; the next waits
//! in the kernel's backlog until one closes), and each closed once it has sent nothing for
//! `idle` while the server waits to read from it and writes nothing to it (an idle keep-alive
//! connection, headers sent half and never finished). A flood of idle connections therefore holds
//! the slots for at most `idle`, and `/health` answers after it.
//!
//! A connection whose request is being handled is not idle, however long the handler takes: hyper
//! keeps reading meanwhile (to see the client go), so the `busy` layer counts the connection's
//! requests in flight (`InFlight`, handed to it as connect info) and the timeout waits while any is.
//! A request body that stops arriving is cut by the router's body timeout (the same idle time).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::extract::{ConnectInfo, Request, connect_info::Connected};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// A `TcpListener` with a connection limit and an idle read timeout.
pub struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    pub fn new(inner: TcpListener, max: usize, idle: Duration) -> Self {
        Limited { inner, slots: Arc::new(Semaphore::new(max.max(1))), idle }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = self.slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let conn = Conn { stream, idle: self.idle, deadline: Box::pin(tokio::time::sleep(self.idle)), in_flight: InFlight::default(), was_busy: false, _slot: permit };
        (conn, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One connection: its slot is given back when it is dropped.
pub struct Conn {
    stream: TcpStream,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    in_flight: InFlight,
    /// A request was in flight at the last read: the idle time starts again when it is done.
    was_busy: bool,
    _slot: OwnedSemaphorePermit,
}

/// The requests of one connection being handled now.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One request in flight, until dropped.
struct Handling(InFlight);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    fn busy(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

impl Connected<axum::serve::IncomingStream<'_, Limited>> for InFlight {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Limited>) -> Self {
        stream.io().in_flight.clone()
    }
}

/// The layer that marks a request's connection busy until its handler has answered (the body
/// that follows is writes, which count as activity anyway).
pub async fn busy(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let _handling = req.extensions().get::<ConnectInfo<InFlight>>().map(|ConnectInfo(c)| {
        c.0.fetch_add(1, Ordering::AcqRel);
        Handling(c.clone())
    });
    next.run(req).await
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(r)
            }
            // the server is answering: waiting for the client is not what takes the time
            Poll::Pending if self.in_flight.busy() => {
                self.was_busy = true;
                Poll::Pending
            }
            Poll::Pending => {
                if std::mem::take(&mut self.was_busy) {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                match self.deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client sent nothing for too long"))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    /// A write that goes through counts as activity too: a slow download is not idle.
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written
            && n > 0
        {
            let next = Instant::now() + self.idle;
            self.deadline.as_mut().reset(next);
        }
        written
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
