//! The load generator: workers ("sessions") that each own their keep-alive connections, paced
//! either closed-loop (each worker sends its next call as soon as the previous one is answered) or
//! open-loop (call `n` is due at `start + n / rate`, whether or not earlier calls were answered),
//! bounded by a duration (after a warm-up that is not measured) or by a count.
//!
//! In the open loop a call's latency runs from the moment it was due, not from when a worker got
//! round to sending it, so a server that falls behind shows it in the percentiles instead of
//! quietly slowing the generator down (no coordinated omission).
//!
//! It speaks HTTP/1.1 through hyper's client connection directly (no pool) so that the generator
//! costs as little CPU as possible and the server, not the client, is what gets measured.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How calls are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Each worker calls again as soon as its previous call is answered.
    Closed,
    /// Calls are due at a fixed rate per second, spread over the workers; when every worker is
    /// busy, due calls wait and their wait counts in their latency.
    Open { rate: f64 },
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Run for a warm-up (not measured) and then this long (measured).
    Duration { warmup: Duration, measured: Duration },
    /// Make this many calls, all measured.
    Count(u64),
}

/// What one call came to, as the summary table counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The HTTP status of a single request.
    Status(u16),
    /// The final state of a call made of several requests (a careful client's payment).
    Named(&'static str),
    /// No answer: the connection failed or the call timed out.
    Transport,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(status) => write!(f, "{status}"),
            Outcome::Named(name) => f.write_str(name),
            Outcome::Transport => f.write_str("transport error"),
        }
    }
}

/// One worker's calls. `call(seq)` makes call number `seq` (unique across the run).
pub trait Session: Send + 'static {
    fn call(&mut self, seq: u64) -> impl Future<Output = Outcome> + Send;
}

/// What the measured part of a run produced.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub measured: Duration,
    pub completed: u64,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    fn empty() -> Self {
        // 1 µs to 10 min at 3 significant digits.
        let latency_us = Histogram::new_with_bounds(1, 600_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        Self { measured: Duration::ZERO, completed: 0, outcomes: BTreeMap::new(), latency_us }
    }

    fn merge(&mut self, other: &LoadReport) {
        self.completed += other.completed;
        for (outcome, count) in &other.outcomes {
            *self.outcomes.entry(*outcome).or_default() += count;
        }
        let _ = self.latency_us.add(&other.latency_us);
    }

    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1_000.0
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// Prints the summary table: rate, latency percentiles and outcomes.
    pub fn print(&self, title: &str) {
        println!("{title}");
        println!(
            "  calls      {:>10}   in {:.1} s   ({:.0} per second)",
            self.completed,
            self.measured.as_secs_f64(),
            self.rps()
        );
        println!(
            "  latency    p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms",
            self.percentile_ms(0.50),
            self.percentile_ms(0.90),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
            self.latency_us.max() as f64 / 1_000.0
        );
        for (outcome, count) in &self.outcomes {
            let share = *count as f64 * 100.0 / self.completed.max(1) as f64;
            println!("  {:<22} {count:>10}  {share:>5.1} %", outcome.to_string());
        }
    }
}

/// Runs one call per `seq` through the sessions (one worker each) until `bound`, and hands the
/// sessions back with the report so that they can say what else they saw.
pub async fn run<S: Session>(pace: Pace, bound: Bound, sessions: Vec<S>) -> anyhow::Result<(LoadReport, Vec<S>)> {
    anyhow::ensure!(!sessions.is_empty(), "the load generator needs at least one worker");
    if let Pace::Open { rate } = pace {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "the target rate must be above zero");
    }
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(sessions.len());
    for session in sessions {
        let next = Arc::clone(&next);
        workers.push(tokio::spawn(work(session, pace, bound, start, next)));
    }
    let mut report = LoadReport::empty();
    let mut sessions = Vec::with_capacity(workers.len());
    for worker in workers {
        let (session, part) = worker.await?;
        report.merge(&part);
        sessions.push(session);
    }
    report.measured = match bound {
        Bound::Duration { measured, .. } => measured,
        Bound::Count(_) => start.elapsed(),
    };
    Ok((report, sessions))
}

async fn work<S: Session>(
    mut session: S,
    pace: Pace,
    bound: Bound,
    start: Instant,
    next: Arc<AtomicU64>,
) -> (S, LoadReport) {
    let mut part = LoadReport::empty();
    let (measure_from, stop_at) = match bound {
        Bound::Duration { warmup, measured } => (start + warmup, Some(start + warmup + measured)),
        Bound::Count(_) => (start, None),
    };
    loop {
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if let Bound::Count(count) = bound
            && seq >= count
        {
            break;
        }
        let due = match pace {
            Pace::Closed => Instant::now(),
            Pace::Open { rate } => start + Duration::from_secs_f64(seq as f64 / rate),
        };
        if stop_at.is_some_and(|stop| due >= stop) {
            break;
        }
        if due > Instant::now() {
            // Only when it is not yet due: a sleep polled past its deadline still waits for the
            // timer driver's next turn, which would add up to a millisecond to every call.
            tokio::time::sleep_until(due).await;
        }
        let outcome = session.call(seq).await;
        if due >= measure_from {
            part.completed += 1;
            *part.outcomes.entry(outcome).or_default() += 1;
            part.latency_us.saturating_record(due.elapsed().as_micros().max(1) as u64);
        }
    }
    (session, part)
}

/// What a request got back.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After` in whole seconds, when given.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection to `target`, made again after any failure.
#[derive(Debug)]
pub struct Connection {
    target: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(target: SocketAddr) -> Self {
        Self { target, sender: None }
    }

    /// A connection to the `host:port` of a base URL such as `http://127.0.0.1:8080`.
    pub fn to_base_url(base: &str) -> anyhow::Result<Self> {
        use std::net::ToSocketAddrs;
        let authority = base.trim_start_matches("http://").trim_end_matches('/');
        let target = authority.to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("{base} has no address"))?;
        Ok(Self::new(target))
    }

    /// Sends `request` and reads the whole answer; `None` when no answer came within `timeout`
    /// (the connection is then dropped, so a late answer cannot be mistaken for the next one's).
    pub async fn send(&mut self, request: Request<Full<Bytes>>, timeout: Duration) -> Option<Reply> {
        let attempt = async {
            if self.sender.is_none() {
                let stream = TcpStream::connect(self.target).await.ok()?;
                stream.set_nodelay(true).ok()?;
                let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
                tokio::spawn(connection);
                self.sender = Some(sender);
            }
            let sender = self.sender.as_mut()?;
            sender.ready().await.ok()?;
            let response = sender.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some(Reply { status, retry_after, body })
        };
        let reply = tokio::time::timeout(timeout, attempt).await.ok().flatten();
        if reply.is_none() {
            self.sender = None;
        }
        reply
    }
}

/// Builds the request with sequence number `seq`.
pub type RequestFactory = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// A session that sends one request per call, built by a factory, and counts its status.
pub struct RawSession {
    connection: Connection,
    request: RequestFactory,
}

impl std::fmt::Debug for RawSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSession").field("connection", &self.connection).finish_non_exhaustive()
    }
}

impl RawSession {
    pub fn new(target: SocketAddr, request: RequestFactory) -> Self {
        Self { connection: Connection::new(target), request }
    }
}

impl Session for RawSession {
    async fn call(&mut self, seq: u64) -> Outcome {
        match self.connection.send((self.request)(seq), Duration::from_secs(30)).await {
            Some(reply) => Outcome::Status(reply.status),
            None => Outcome::Transport,
        }
    }
}
