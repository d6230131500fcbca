//! Serving HTTP/1.1 connections with the limits a server open to the world needs, for every
//! service of the workspace:
//!
//! - **Header-read timeout**: a connection that has not sent a whole request head in time (a
//!   silent connection, or one that sends half its headers and stalls) is closed.
//! - **Body-read timeout**: a request whose body has not arrived in time is answered 408 and its
//!   connection closed, so a half-sent body cannot hold a handler forever.
//! - **Idle timeout**: a keep-alive connection with no request for that long is closed.
//! - **Connection limit**: at most that many connections at once, and never more than the
//!   process's file descriptors allow (leaving room for the connections it makes itself). When
//!   full, the connection that has been idle longest is closed to make room; when every one is
//!   busy, new connections wait to be accepted.
//! - **`Connection: close`** on any answer given before the request's body was read (a 401, 413 or
//!   429, a missing key), so the client knows the connection ends there instead of finding out
//!   from a broken pipe on its next request.
//! - **problem+json for malformed requests**: hyper answers a request it cannot parse (a control
//!   character in a header, a bad request line, headers too large) with a bare status line; that
//!   answer is replaced on the wire with the problem+json every other error carries.
//!
//! A request can also reset its own connection ([`ConnectionControl`]), closing the socket with a
//! TCP RST and no response at all: the mock bank's chaos uses it to look like a crashed load
//! balancer.
//!
//! Hyper's own header-read timeout is not used: it also runs while a keep-alive connection waits
//! for its next request, which would cut idle connections at the header timeout. The watchdog of
//! each connection keeps the three clocks apart instead.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::problem::{ErrorCode, Problem};

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a connection may take to send a whole request head, from its first byte (or from
    /// being accepted).
    pub header_read_timeout: Duration,
    /// How long a request's body may take to arrive, from when its head did.
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
    /// On shutdown, how long open connections may take to finish their requests.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The connection limits as flags, with the same names and environment variables for every
/// service (flattened into each service's configuration).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ConnectionFlags {
    /// A connection that has not sent a whole request head within this long is closed (ms).
    #[arg(long, env = "HTTP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived within this long after its head is answered 408 (ms).
    #[arg(long, env = "HTTP_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed (ms).
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Connections served at once (never more than the open-file limit allows).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl Default for ConnectionFlags {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            header_read_timeout_ms: limits.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: limits.body_read_timeout.as_millis() as u64,
            idle_timeout_ms: limits.idle_timeout.as_millis() as u64,
            max_connections: limits.max_connections,
        }
    }
}

impl ConnectionFlags {
    /// The limits, with `drain_timeout` for shutdown.
    pub fn limits(&self, drain_timeout: Duration) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.max(1)),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.max(1)),
            max_connections: self.max_connections.max(1),
            drain_timeout,
        }
    }
}

/// A handle on the connection a request arrived on, found in the request's extensions.
#[derive(Debug, Clone)]
pub struct ConnectionControl(Arc<Conn>);

impl ConnectionControl {
    /// Closes the connection at once with a TCP RST, abandoning any response not yet written.
    pub fn reset(&self) {
        self.0.reset.store(true, Ordering::SeqCst);
        self.0.close();
    }
}

/// What the watchdog and the registry know of one connection. Times are milliseconds since
/// `base`, on tokio's clock.
#[derive(Debug)]
struct Conn {
    id: u64,
    base: Instant,
    last_activity_ms: AtomicU64,
    /// When the first byte of the request head now being read arrived (`NONE`: no head pending).
    head_started_ms: AtomicU64,
    /// Requests whose response has not been sent to the end.
    active: AtomicU32,
    served: AtomicU64,
    /// Woken when the last active request ends, so the watchdog starts the idle clock.
    quiet: Notify,
    /// Set (and `closing` woken) to close the connection: reset, eviction, shutdown deadline.
    closing_flag: AtomicBool,
    closing: Notify,
    /// Close with a TCP RST rather than a FIN.
    reset: AtomicBool,
}

const NONE: u64 = u64::MAX;

impl Conn {
    fn new(id: u64) -> Self {
        Self {
            id,
            base: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NONE),
            active: AtomicU32::new(0),
            served: AtomicU64::new(0),
            quiet: Notify::new(),
            closing_flag: AtomicBool::new(false),
            closing: Notify::new(),
            reset: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn close(&self) {
        self.closing_flag.store(true, Ordering::SeqCst);
        self.closing.notify_one();
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_activity_ms.store(now, Ordering::Relaxed);
        if self.active.load(Ordering::SeqCst) == 0 {
            let _ = self.head_started_ms.compare_exchange(NONE, now, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn on_write(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NONE, Ordering::SeqCst);
    }

    fn request_ended(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::Relaxed);
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.quiet.notify_one();
        }
    }

    /// When the connection must close if nothing changes; `None` while a request is active.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let head_started = self.head_started_ms.load(Ordering::SeqCst);
        if head_started != NONE {
            return Some(self.at(head_started) + limits.header_read_timeout);
        }
        if self.served.load(Ordering::Relaxed) == 0 {
            return Some(self.base + limits.header_read_timeout);
        }
        Some(self.at(self.last_activity_ms.load(Ordering::Relaxed)) + limits.idle_timeout)
    }
}

/// Every open connection, for eviction when full and closing at the shutdown deadline.
#[derive(Debug, Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn open(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn::new(self.next_id.fetch_add(1, Ordering::Relaxed)));
        self.lock().insert(conn.id, Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the connection that has waited longest without a request in progress, if any.
    fn evict_idlest(&self) -> bool {
        let open = self.lock();
        let idlest = open
            .values()
            .filter(|c| c.active.load(Ordering::SeqCst) == 0 && !c.closing_flag.load(Ordering::SeqCst))
            .min_by_key(|c| c.base + Duration::from_millis(c.last_activity_ms.load(Ordering::Relaxed)));
        match idlest {
            Some(conn) => {
                debug!(connection = conn.id, "connection limit reached; closing the idlest connection");
                conn.close();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        for conn in self.lock().values() {
            conn.close();
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit, and returns how many
/// connections can be served: `wanted`, but never so many that the process runs out of file
/// descriptors for its own files and outgoing connections (a tenth, at least 64, is kept).
pub fn connection_capacity(wanted: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            debug!(%error, "could not read or raise the open-file limit");
            return wanted;
        }
    };
    let reserve = (limit / 10).max(64);
    let capacity = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
    if capacity < wanted {
        warn!(wanted, capacity, open_file_limit = limit, "fewer connections than configured: the open-file limit");
    }
    wanted.min(capacity)
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; then stops accepting,
/// lets open connections finish their requests (up to `limits.drain_timeout`) and closes the rest.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let capacity = connection_capacity(limits.max_connections);
    let slots = Arc::new(Semaphore::new(capacity));
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                registry.evict_idlest();
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let conn = registry.open();
        let (router, registry, stopping) = (router.clone(), Arc::clone(&registry), stopping.clone());
        tokio::spawn(async move {
            serve_connection(stream, router, limits, Arc::clone(&conn), stopping).await;
            registry.remove(conn.id);
            drop(slot);
        });
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(());
    if tokio::time::timeout(limits.drain_timeout, stop.closed()).await.is_err() {
        warn!("connections still open at the shutdown deadline; closing them");
        registry.close_all();
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    conn: Arc<Conn>,
    mut stopping: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Watched { inner: stream, conn: Arc::clone(&conn), replacement: Replacement::None });
    let service_conn = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        handle(request, router.clone(), Arc::clone(&service_conn), limits)
    });
    let connection = http1::Builder::new().timer(TokioTimer::new()).serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        if conn.closing_flag.load(Ordering::SeqCst) {
            return;
        }
        let deadline = conn.deadline(&limits);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection closed with an error");
                }
                return;
            }
            // Returning drops the connection and with it the socket.
            () = conn.closing.notified() => return,
            _ = stopping.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = conn.quiet.notified() => {}
            () = sleep_until(deadline) => {
                if conn.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    info!(connection = conn.id, served = conn.served.load(Ordering::Relaxed), "closing a connection that sent no request in time");
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One request: tracked while active, its body under the body-read timeout, and `Connection:
/// close` on an answer given before its body was read.
async fn handle(
    request: Request<Incoming>,
    router: Router,
    conn: Arc<Conn>,
    limits: Limits,
) -> Result<Response<Body>, Infallible> {
    conn.request_started();
    let active = Active(Arc::clone(&conn));
    let (parts, body) = request.into_parts();
    let had_body = !body.is_end_stream();
    let reading = Arc::new(BodyReading::default());
    let body = TimedBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limits.body_read_timeout)),
        reading: Arc::clone(&reading),
    };
    let mut request = Request::from_parts(parts, Body::new(body));
    request.extensions_mut().insert(ConnectionControl(Arc::clone(&conn)));
    let Ok(mut response) = router.oneshot(request).await;
    if reading.timed_out.load(Ordering::SeqCst) {
        response = Problem::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {} ms", limits.body_read_timeout.as_millis()),
        )
        .into_response();
    }
    if had_body && !reading.finished.load(Ordering::SeqCst) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response.map(|body| Body::new(ActiveBody { inner: body, _active: active })))
}

/// Counts a request as active until dropped (with its response body, once sent).
struct Active(Arc<Conn>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request active until it has been sent (or dropped).
struct ActiveBody {
    inner: Body,
    _active: Active,
}

impl hyper::body::Body for ActiveBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Default)]
struct BodyReading {
    finished: AtomicBool,
    timed_out: AtomicBool,
}

/// The request body: records whether it was read to its end, and fails once the body-read
/// timeout has passed.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    reading: Arc<BodyReading>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.reading.finished.store(true, Ordering::SeqCst);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                if this.inner.is_end_stream() {
                    this.reading.finished.store(true, Ordering::SeqCst);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.reading.timed_out.store(true, Ordering::SeqCst);
                    Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket as hyper sees it: every read and write is activity, a reset request closes it with
/// RST, and hyper's bare answer to an unparsable request is replaced with problem+json.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
    replacement: Replacement,
}

enum Replacement {
    None,
    /// Our answer, being written in place of hyper's: the bytes and how many are written.
    Writing(Vec<u8>, usize),
    /// Written; hyper closes the connection, and anything more it writes is dropped.
    Done,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.conn.reset.load(Ordering::SeqCst) {
            // SO_LINGER 0: the close sends RST, not FIN.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.conn.on_write();
        if matches!(this.replacement, Replacement::None)
            && this.conn.active.load(Ordering::SeqCst) == 0
            && let Some(ours) = problem_for_bare_error(buf)
        {
            this.replacement = Replacement::Writing(ours, 0);
        }
        match &mut this.replacement {
            Replacement::None => Pin::new(&mut this.inner).poll_write(cx, buf),
            Replacement::Done => Poll::Ready(Ok(buf.len())),
            Replacement::Writing(bytes, written) => {
                while *written < bytes.len() {
                    match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Poll::Ready(Ok(n)) => *written += n,
                        other => return other,
                    }
                }
                this.replacement = Replacement::Done;
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    /// Not vectored: hyper then hands over each response as one buffer, so the bare answer to an
    /// unparsable request is recognised whole.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// When `written` is hyper's own answer to a request it could not parse (a status line and
/// headers with no body and no content type, written while no request is being served), the
/// problem+json answer to send instead.
fn problem_for_bare_error(written: &[u8]) -> Option<Vec<u8>> {
    let head = written.strip_prefix(b"HTTP/1.1 ")?;
    let status: u16 = std::str::from_utf8(head.get(..3)?).ok()?.parse().ok()?;
    let end = written.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&written[..end]).to_ascii_lowercase();
    let bare = !headers.contains("\r\ncontent-type:") && headers.contains("\r\ncontent-length: 0");
    if !bare || end + 4 != written.len() {
        return None;
    }
    let (status, detail) = match status {
        400 => (
            StatusCode::BAD_REQUEST,
            "the request line or a header is malformed (a control character in a header, say)",
        ),
        414 => (StatusCode::URI_TOO_LONG, "the request URI is too long"),
        431 => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "the request headers are too large"),
        _ => return None,
    };
    let body = serde_json::to_vec(&Problem::new(ErrorCode::InvalidRequest, detail).with_status(status).body()).ok()?;
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len(),
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bare_answer_is_replaced() {
        let bare = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 13:00:00 GMT\r\n\r\n";
        let replaced = problem_for_bare_error(bare).map(|b| String::from_utf8_lossy(&b).into_owned());
        let replaced = replaced.unwrap_or_else(|| panic!("the bare 400 must be replaced"));
        assert!(replaced.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\n"));
        assert!(replaced.contains("connection: close") && replaced.ends_with("\"code\":\"invalid_request\"}"));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n";
        assert!(problem_for_bare_error(ours).is_none(), "a response of ours is never touched");
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert!(problem_for_bare_error(with_body).is_none());
        assert!(problem_for_bare_error(b"{\"tail\":\"of a body\"}").is_none());
        let too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert!(problem_for_bare_error(too_large).is_some());
    }
}
