//! `./run.sh bench bank`: the bank's throughput and latency under the `healthy` preset with zero
//! latency, measured against the real release binary running as its own process.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use tests::loadgen::{self, LoadPlan};
use tests::process::{sibling_binary, wait_healthy};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the resilient payment gateway's parts")]
struct Cli {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// The mock bank alone: POST /v1/charges with unique keys, healthy preset, no latency.
    Bank(BankArgs),
}

#[derive(Debug, clap::Args)]
struct BankArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, env = "BENCH_WARMUP_SECONDS", default_value_t = 2)]
    warmup: u64,
    /// The mock-bank binary; defaults to the one next to this binary.
    #[arg(long, env = "BENCH_BANK_BIN")]
    bank_bin: Option<PathBuf>,
}

/// A child process killed when dropped, so a failed bench leaves nothing running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn bench_bank(args: BankArgs) -> anyhow::Result<()> {
    let bin = match args.bank_bin {
        Some(bin) => bin,
        None => sibling_binary("mock-bank")?,
    };
    let addr = free_port()?;
    let _bank = Child(
        std::process::Command::new(&bin)
            .args(["--listen", &addr.to_string(), "--preset", "healthy", "--seed", "1", "--log", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    wait_healthy(&format!("http://{addr}")).await;

    let body = Bytes::from_static(
        br#"{"amount":1999,"currency":"USD","card":{"number":"4242424242424242","exp_month":12,"exp_year":2099,"cvc":"123"}}"#,
    );
    let uri: hyper::Uri = format!("http://{addr}/v1/charges").parse()?;
    let plan = LoadPlan {
        target: addr,
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup),
        duration: Duration::from_secs(args.seconds),
        request: Arc::new(move |seq| {
            hyper::Request::post(uri.clone())
                .header("host", "bank")
                .header("content-type", "application/json")
                .header("idempotency-key", format!("bench-{seq}"))
                .body(Full::new(body.clone()))
                .unwrap_or_default()
        }),
    };
    println!(
        "mock-bank benchmark: POST /v1/charges, unique keys, healthy preset, zero latency, {} connections, {} s \
         warm-up + {} s measured, {} cores",
        args.connections,
        args.warmup,
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let report = loadgen::run(plan).await?;
    loadgen::print_report("mock-bank", &report);
    let ok = report.by_status.get(&201).copied().unwrap_or(0);
    if ok != report.completed || report.transport_errors > 0 {
        bail!("some requests failed; the numbers above are not a clean measurement");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.target {
            Target::Bank(args) => bench_bank(args).await,
        }
    })
}
