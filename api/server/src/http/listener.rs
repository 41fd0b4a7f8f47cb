//! Connections: a listener with a cap on open connections (past it, new connections wait to be
//! accepted in the kernel's backlog until one closes, since a connection's permit lives as long
//! as its socket) and time limits on a connection that is not busy with a request: a request's
//! head must arrive in time, and an idle kept-alive connection is closed, so slow or silent
//! clients cannot hold the capped places forever. And the services hyper runs per connection
//! ([`Dispatch`]) and per request ([`Connection`]), which tell the connection when it is busy
//! and hand each request to the router in force.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::supervise::Current;

/// The TCP peer of a connection, handed to the handlers as `ConnectInfo<Peer>` (by
/// [`Connection`]) for the limits on failed code checks.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The time limits on a connection while no request of it is being answered.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the connection's start, or from the first byte of a later request, until the
    /// request's head is complete: a client sending its head slowly (Slowloris) or not at all
    /// is cut off.
    pub header: Duration,
    /// From the end of a response until the first byte of the next request on the same
    /// (kept-alive) connection.
    pub idle: Duration,
}

pub struct Capped {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    timeouts: Timeouts,
}

impl Capped {
    pub fn new(inner: TcpListener, connections_max: usize, timeouts: Timeouts) -> Capped {
        Capped {
            inner,
            permits: Arc::new(Semaphore::new(connections_max.max(1))),
            timeouts,
        }
    }
}

impl axum::serve::Listener for Capped {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CappedStream, SocketAddr) {
        let permit = loop {
            // The semaphore is never closed, so acquiring only waits.
            if let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await {
                break permit;
            }
        };
        let (stream, address) = axum::serve::Listener::accept(&mut self.inner).await;
        // Small responses should leave at once rather than wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let activity = Activity::new(self.timeouts);
        let deadline = activity.lock().deadline;
        (
            CappedStream {
                stream,
                _permit: permit,
                activity,
                timer: Box::pin(tokio::time::sleep_until(deadline)),
                write_deadline: None,
                write_timer: Box::pin(tokio::time::sleep_until(deadline)),
            },
            address,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What one connection is doing, shared by its stream (which holds reads to a deadline while
/// the connection waits for a request) and its requests (which say when one is being answered).
///
/// The stream alone cannot tell where a request's head ends, so the head counts as complete
/// when the server takes the request ([`Connection`] calls `begin_request`),
/// and the answer as done when hyper drops the response's body, having written all of it.
pub struct Activity {
    timeouts: Timeouts,
    state: Mutex<ActivityState>,
}

struct ActivityState {
    /// Requests taken and not yet answered. While there is one, reads have no deadline here:
    /// the request time limit (`middleware::around`) covers reading its body.
    requests: usize,
    /// While waiting for a request: when the connection is closed unless that request's head
    /// is complete (or, on an idle connection, its first byte has arrived).
    deadline: Instant,
    /// Whether `deadline` is the header limit of a request whose first byte has arrived (or
    /// the connection's first request) rather than the idle limit.
    head_started: bool,
    /// The connection's task, from its last read: woken when its last request is answered,
    /// since hyper, with no timer of its own, may not read again until the client sends
    /// something, and only a read can start the idle deadline.
    waker: Option<Waker>,
}

impl Activity {
    fn new(timeouts: Timeouts) -> Arc<Activity> {
        Arc::new(Activity {
            timeouts,
            state: Mutex::new(ActivityState {
                requests: 0,
                deadline: Instant::now() + timeouts.header,
                head_started: true,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's head has arrived: until the returned guard drops, reads have no deadline.
    pub fn begin_request(self: &Arc<Activity>) -> InFlight {
        self.lock().requests += 1;
        InFlight(Arc::clone(self))
    }

    /// The deadline of a read about to wait, or `None` while a request is being answered;
    /// keeps `waker` to be woken when the last request ends.
    fn read_deadline(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.lock();
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.waker = Some(waker.clone());
        }
        (state.requests == 0).then_some(state.deadline)
    }

    /// Bytes arrived while waiting for a request: on an idle connection they start a request's
    /// head, which then has the header limit to complete.
    fn bytes_arrived(&self) {
        let mut state = self.lock();
        if state.requests == 0 && !state.head_started {
            state.head_started = true;
            state.deadline = Instant::now() + self.timeouts.header;
        }
    }
}

/// A request being answered; dropped with the response's body (or with the request, if the
/// connection goes first).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.requests = state.requests.saturating_sub(1);
            if state.requests > 0 {
                return;
            }
            state.deadline = Instant::now() + self.0.timeouts.idle;
            state.head_started = false;
            state.waker.take()
        };
        // Outside the lock: the task may run at once on another thread and read.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    /// Set to the deadline of the read that waits; boxed since `Sleep` is not `Unpin`.
    timer: Pin<Box<Sleep>>,
    /// While a write cannot proceed (the client reads nothing and the socket's buffers are
    /// full): when the connection is closed unless the client takes some of the answer.
    write_deadline: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
}

impl CappedStream {
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Bounds how long a write may wait for the client to read: a client that takes none of
    /// an answer for the idle limit is closed, as one that sends nothing is, so it cannot hold
    /// its place under the cap (or a request's resources) by never reading. Any progress
    /// starts the wait again.
    fn stall_limited<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if !written.is_pending() {
            self.write_deadline = None;
            return written;
        }
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + self.activity.timeouts.idle);
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        match self.write_timer.as_mut().poll(cx) {
            // hyper closes the connection on a write error.
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read none of the answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let deadline = this.activity.read_deadline(cx.waker());
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        let Some(deadline) = deadline else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    // hyper closes the connection on a read error.
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request head in time, or idle too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.stall_limited(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        this.stall_limited(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.stall_limited(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Per connection: the peer's address, for the limits on failed code checks, and what the
/// connection is doing, for its time limits.
#[derive(Clone)]
pub struct Dispatch {
    current: Current,
}

impl Dispatch {
    pub fn new(current: Current) -> Dispatch {
        Dispatch { current }
    }
}

impl tower::Service<axum::serve::IncomingStream<'_, Capped>> for Dispatch {
    type Response = Connection;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Connection, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, incoming: axum::serve::IncomingStream<'_, Capped>) -> Self::Future {
        std::future::ready(Ok(Connection {
            peer: Peer(*incoming.remote_addr()),
            activity: Arc::clone(incoming.io().activity()),
            current: Arc::clone(&self.current),
        }))
    }
}

/// Per request: the router in force when it arrives. A request keeps that router to its
/// end, so a swap never cuts one off half-way.
#[derive(Clone)]
pub struct Connection {
    peer: Peer,
    activity: Arc<Activity>,
    current: Current,
}

impl tower::Service<Request> for Connection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // hyper calls this once the request's head is complete: from here until the
        // response's body is written, the connection's header and idle limits do not apply.
        let in_flight = self.activity.begin_request();
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let router = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let response = router.oneshot(request).await?;
            Ok(response.map(|body| {
                Body::new(Answering {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response's body that holds its request in flight until hyper drops it, having written
/// it all (or lost the connection).
struct Answering {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Answering {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    // Passed on so that hyper still sends a `Content-Length` rather than chunks.
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
