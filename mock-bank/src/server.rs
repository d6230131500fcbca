//! The accept loop. The bank serves HTTP/1.1 connections itself (rather than through
//! `axum::serve`) for one reason: chaos must be able to kill a connection from inside a request,
//! closing the socket with a TCP reset and no HTTP response at all, the way a crashed load
//! balancer or a dropped NAT entry looks to a client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;
use tracing::{debug, warn};

/// How long shutdown waits for open connections (and their in-flight requests) to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A handle on the connection a request arrived on, found in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnectionControl(Arc<ControlState>);

#[derive(Debug, Default)]
struct ControlState {
    reset: AtomicBool,
    notify: Notify,
}

impl ConnectionControl {
    /// Closes the connection at once with a TCP RST, abandoning any response not yet written.
    pub fn reset(&self) {
        self.0.reset.store(true, Ordering::SeqCst);
        self.0.notify.notify_one();
    }

    fn reset_requested(&self) -> bool {
        self.0.reset.load(Ordering::SeqCst)
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and lets open
/// connections finish their requests (up to [`DRAIN_DEADLINE`]).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let (stop, stopping) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(stream, router.clone(), stopping.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drop(stopping);
    let _ = stop.send(());
    if tokio::time::timeout(DRAIN_DEADLINE, stop.closed()).await.is_err() {
        warn!("connections still open at the shutdown deadline; closing them");
    }
    Ok(())
}

async fn serve_connection(stream: TcpStream, router: Router, mut stopping: watch::Receiver<()>) {
    let _ = stream.set_nodelay(true);
    let control = ConnectionControl::default();
    let io = TokioIo::new(ResettableStream { inner: stream, control: control.clone() });
    let request_control = control.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(request_control.clone());
        router.clone().oneshot(request)
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%error, "connection closed with an error");
                }
                return;
            }
            // Returning drops the connection and with it the socket, which resets it.
            () = control.0.notify.notified() => return,
            _ = stopping.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A TCP stream that, when its connection was told to reset, closes with RST instead of FIN by
/// setting `SO_LINGER` to zero just before the socket is closed.
struct ResettableStream {
    inner: TcpStream,
    control: ConnectionControl,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.control.reset_requested() {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
