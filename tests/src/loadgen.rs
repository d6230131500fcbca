//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending its
//! next request as soon as the previous answer arrives, for a warm-up and then a measured period.
//!
//! It speaks to hyper's client connection directly (no pool, no retries) so that the generator
//! costs as little CPU as possible and the server, not the client, is what gets measured.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Builds the request with sequence number `seq` (unique across all connections).
pub type RequestFactory = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

#[derive(Clone)]
pub struct LoadPlan {
    pub target: SocketAddr,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub request: RequestFactory,
}

impl std::fmt::Debug for LoadPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadPlan")
            .field("target", &self.target)
            .field("connections", &self.connections)
            .field("warmup", &self.warmup)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

/// What the measured period produced.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub measured: Duration,
    pub completed: u64,
    pub transport_errors: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Latency in microseconds.
    pub latency_us: Histogram<u64>,
}

impl LoadReport {
    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.measured.as_secs_f64()
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1_000.0
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Runs the plan and reports on the measured period only.
pub async fn run(plan: LoadPlan) -> anyhow::Result<LoadReport> {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop_at = measure_from + plan.duration;
    let mut tasks = Vec::with_capacity(plan.connections);
    for connection in 0..plan.connections {
        let plan = plan.clone();
        tasks
            .push(tokio::spawn(async move { drive_connection(&plan, connection as u64, measure_from, stop_at).await }));
    }
    let mut report = LoadReport {
        measured: plan.duration,
        completed: 0,
        transport_errors: 0,
        by_status: BTreeMap::new(),
        latency_us: new_histogram(),
    };
    for task in tasks {
        let part = task.await??;
        report.completed += part.completed;
        report.transport_errors += part.transport_errors;
        for (status, count) in part.by_status {
            *report.by_status.entry(status).or_default() += count;
        }
        report.latency_us.add(&part.latency_us)?;
    }
    Ok(report)
}

async fn drive_connection(
    plan: &LoadPlan,
    connection: u64,
    measure_from: Instant,
    stop_at: Instant,
) -> anyhow::Result<LoadReport> {
    let mut part = LoadReport {
        measured: plan.duration,
        completed: 0,
        transport_errors: 0,
        by_status: BTreeMap::new(),
        latency_us: new_histogram(),
    };
    let mut seq = connection;
    let stride = plan.connections as u64;
    'reconnect: while Instant::now() < stop_at {
        let stream = TcpStream::connect(plan.target).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        loop {
            let sent = Instant::now();
            if sent >= stop_at {
                break 'reconnect;
            }
            let request = (plan.request)(seq);
            seq += stride;
            let outcome = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                Ok::<u16, hyper::Error>(status)
            }
            .await;
            let measured = sent >= measure_from;
            match outcome {
                Ok(status) => {
                    if measured {
                        part.completed += 1;
                        *part.by_status.entry(status).or_default() += 1;
                        let micros = sent.elapsed().as_micros().max(1) as u64;
                        part.latency_us.saturating_record(micros);
                    }
                }
                Err(_) => {
                    if measured {
                        part.transport_errors += 1;
                    }
                    continue 'reconnect;
                }
            }
        }
    }
    Ok(part)
}

/// Prints a one-table summary of a report.
pub fn print_report(title: &str, report: &LoadReport) {
    println!("{title}");
    println!("  requests  {:>10}   in {:.1} s", report.completed, report.measured.as_secs_f64());
    println!("  rps       {:>10.0}", report.rps());
    println!(
        "  latency   p50 {:.3} ms   p90 {:.3} ms   p99 {:.3} ms   p99.9 {:.3} ms   max {:.3} ms",
        report.percentile_ms(0.50),
        report.percentile_ms(0.90),
        report.percentile_ms(0.99),
        report.percentile_ms(0.999),
        report.latency_us.max() as f64 / 1_000.0
    );
    let statuses: Vec<String> = report.by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!("  statuses  {}   transport errors: {}", statuses.join(", "), report.transport_errors);
}
