//! `./run.sh bench`: the gateway side by side with a naive baseline, a bare handler and its own
//! fail-fast path, all behind the same load generator against the same healthy bank; plus
//! `bench bank` (the bank alone) and `bench load` (the load generator against a running gateway).

#![allow(clippy::print_stdout)]

/// The same allocator as the gateway, so that the baseline and the bare handler are not slowed
/// by one the gateway does not use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use tests::careful::{ClientTally, PaymentSession, Targets};
use tests::loadgen::{self, Bound, LoadReport, Outcome, Pace, RawSession, RequestFactory};
use tests::process::{GatewayProcess, KillOnDrop, free_addr, sibling_binary, wait_healthy};
use tests::{MERCHANT_A, RedisServer, baseline};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks and load for the resilient payment gateway")]
struct Cli {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// The gateway (on Redis, on redb, failing fast) beside a naive baseline and a bare handler.
    Compare(CompareArgs),
    /// The mock bank alone: POST /v1/charges with unique keys, healthy preset, no latency.
    Bank(RunArgs),
    /// Careful-client payments against a running gateway, at a rate or a concurrency.
    Load(LoadArgs),
    /// Serves the naive baseline or the bare handler (started by `compare`).
    #[command(hide = true)]
    Serve(baseline::ServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct RunArgs {
    /// Concurrent keep-alive connections (closed loop).
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 64)]
    connections: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds, not measured.
    #[arg(long, env = "BENCH_WARMUP_SECONDS", default_value_t = 2)]
    warmup: u64,
    /// Calls per second (open loop, at most `connections` in flight); without it, closed loop.
    /// At a rate every target can sustain, the percentiles compare the cost of a call rather than
    /// the queue in front of it.
    #[arg(long, env = "BENCH_RATE")]
    rate: Option<f64>,
}

impl RunArgs {
    fn bound(&self) -> Bound {
        Bound::Duration { warmup: Duration::from_secs(self.warmup), measured: Duration::from_secs(self.seconds) }
    }
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Only these targets (comma-separated): baseline, redis, redb, fail-fast, bare.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where the embedded store's file goes (a real disk: it is fsynced).
    #[arg(long, env = "BENCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Gateway base URL; give it more than once to spread payments round-robin.
    #[arg(long = "gateway", default_value = "http://127.0.0.1:8080")]
    gateways: Vec<String>,
    /// The merchant's API key (./run.sh passes the one in .run/keys.env).
    #[arg(long, env = "LOAD_API_KEY")]
    api_key: String,
    /// Payments per second (open loop); without it, the clients pay back to back (closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Clients at once: the closed loop's concurrency, or the open loop's most in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run this many seconds (after the warm-up)...
    #[arg(long, default_value_t = 10, conflicts_with = "count")]
    seconds: u64,
    /// ...or make this many payments.
    #[arg(long)]
    count: Option<u64>,
    /// Warm-up seconds, not measured (with --seconds).
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Share of payments also sent by a second client at once, and again afterwards.
    #[arg(long, default_value_t = 0.0)]
    duplicates: f64,
    /// How long one payment may take, retries and polling included.
    #[arg(long, default_value_t = 60)]
    payment_deadline_s: u64,
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The peak resident set of process `pid` so far, in bytes (Linux `VmHWM`).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) process `pid` has used so far, in microseconds.
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in clock ticks of 1/100 s on every platform this runs on.
    Some(ticks * 10_000)
}

/// CPU each process spent per measured call: sampled when the warm-up ends and when the run ends.
#[derive(Debug, Default, Clone, Copy)]
struct CpuPerCall {
    server: Option<f64>,
    bank: Option<f64>,
    redis: Option<f64>,
}

/// Runs the closed loop against `target` while sampling the CPU of `pids` (server, bank, Redis).
async fn measured_run(
    target: SocketAddr,
    args: &RunArgs,
    pids: [Option<u32>; 3],
) -> anyhow::Result<(LoadReport, CpuPerCall)> {
    let sample = move || pids.map(|pid| pid.and_then(cpu_us));
    let at_warmup = tokio::spawn({
        let warmup = Duration::from_secs(args.warmup);
        async move {
            tokio::time::sleep(warmup).await;
            sample()
        }
    });
    let report = drive(target, payment_requests(target, MERCHANT_A.1), args).await?;
    let (before, after) = (at_warmup.await?, sample());
    let completed = report.completed;
    let per_call = |i: usize| match (before[i], after[i]) {
        (Some(b), Some(a)) if completed > 0 => Some(a.saturating_sub(b) as f64 / completed as f64),
        _ => None,
    };
    let cpu = CpuPerCall { server: per_call(0), bank: per_call(1), redis: per_call(2) };
    Ok((report, cpu))
}

/// The binary named by environment variable `variable`, else `name` next to this one.
fn binary(variable: &str, name: &str) -> anyhow::Result<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => Ok(PathBuf::from(path)),
        None => sibling_binary(name),
    }
}

/// A mock bank process under the `healthy` preset with zero latency.
async fn start_bank() -> anyhow::Result<(KillOnDrop, SocketAddr)> {
    let addr = free_addr();
    let bank = KillOnDrop::spawn(std::process::Command::new(binary("BENCH_BANK_BIN", "mock-bank")?).args([
        "--listen",
        &addr.to_string(),
        "--preset",
        "healthy",
        "--seed",
        "1",
        "--log",
        "warn",
    ]))?;
    wait_healthy(&format!("http://{addr}")).await;
    Ok((bank, addr))
}

/// Unique keys, the payment body a merchant sends (10 % declined cards, as in the soak).
fn payment_requests(target: SocketAddr, api_key: &str) -> RequestFactory {
    let authorization = format!("Bearer {api_key}");
    let host = target.to_string();
    let run = uuid::Uuid::new_v4().simple().to_string();
    Arc::new(move |seq| {
        let key = format!("bench-{run}-{seq}");
        let amount = 100 + seq % 5_000;
        let body = tests::careful::payment_body(&key, amount as i64);
        hyper::Request::post("/v1/payments")
            .header("host", &host)
            .header("authorization", &authorization)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Full::new(body))
            .unwrap_or_default()
    })
}

async fn drive(target: SocketAddr, factory: RequestFactory, args: &RunArgs) -> anyhow::Result<LoadReport> {
    let sessions = (0..args.connections.max(1)).map(|_| RawSession::new(target, Arc::clone(&factory))).collect();
    let pace = args.rate.map_or(Pace::Closed, |rate| Pace::Open { rate });
    Ok(loadgen::run(pace, args.bound(), sessions).await?.0)
}

async fn bench_bank(args: RunArgs) -> anyhow::Result<()> {
    let (_bank, addr) = start_bank().await?;
    let body = Bytes::from_static(
        br#"{"amount":1999,"currency":"USD","card":{"number":"4242424242424242","exp_month":12,"exp_year":2099,"cvc":"123"}}"#,
    );
    let factory: RequestFactory = Arc::new(move |seq| {
        hyper::Request::post("/v1/charges")
            .header("host", "bank")
            .header("content-type", "application/json")
            .header("idempotency-key", format!("bench-{seq}"))
            .body(Full::new(body.clone()))
            .unwrap_or_default()
    });
    println!(
        "mock-bank benchmark: POST /v1/charges, unique keys, healthy preset, zero latency, {} connections, {} s \
         warm-up + {} s measured, {} cores",
        args.connections,
        args.warmup,
        args.seconds,
        cores()
    );
    let report = drive(addr, factory, &args).await?;
    report.print("mock-bank");
    if report.count(Outcome::Status(201)) != report.completed {
        bail!("some requests failed; the numbers above are not a clean measurement");
    }
    Ok(())
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let targets = Targets { gateways: args.gateways.clone(), banks: Vec::new(), api_key: args.api_key.clone() };
    let tally = Arc::new(ClientTally::default());
    let deadline = Duration::from_secs(args.payment_deadline_s);
    let sessions = PaymentSession::many(args.concurrency, &targets, &tally, args.duplicates, deadline)?;
    let pace = match args.rate {
        Some(rate) => Pace::Open { rate },
        None => Pace::Closed,
    };
    let bound = match args.count {
        Some(count) => Bound::Count(count),
        None => {
            Bound::Duration { warmup: Duration::from_secs(args.warmup), measured: Duration::from_secs(args.seconds) }
        }
    };
    println!(
        "load: careful clients paying {} through {}; {} clients, {}, {:.0} % duplicates",
        match pace {
            Pace::Open { rate } => format!("{rate} payments/s (open loop)"),
            Pace::Closed => "back to back (closed loop)".into(),
        },
        args.gateways.join(", "),
        args.concurrency,
        match bound {
            Bound::Count(count) => format!("{count} payments"),
            Bound::Duration { warmup, measured } =>
                format!("{} s warm-up + {} s measured", warmup.as_secs(), measured.as_secs()),
        },
        args.duplicates * 100.0
    );
    let (report, _) = loadgen::run(pace, bound, sessions).await?;
    report.print("payments (latency: from due to final answer, retries and polling included)");
    let statuses = tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let statuses: Vec<String> = statuses.iter().map(|(status, n)| format!("{status}: {n}")).collect();
    println!(
        "  requests sent {}   retries {}   transport errors {}   answers by status: {}",
        tally.sent.load(std::sync::atomic::Ordering::Relaxed),
        tally.retries.load(std::sync::atomic::Ordering::Relaxed),
        tally.transport_errors.load(std::sync::atomic::Ordering::Relaxed),
        statuses.join(", ")
    );
    Ok(())
}

/// One line of the comparison.
struct Row {
    name: &'static str,
    what: &'static str,
    report: Option<LoadReport>,
    rss: Option<u64>,
    cpu: CpuPerCall,
    note: String,
}

/// Gateway flags for the comparison: no rate limit in the way, quiet logs, the admin key for
/// forcing the breaker open.
const GATEWAY_ARGS: [&str; 8] = [
    "--rate-limit-per-sec",
    "1000000",
    "--rate-limit-burst",
    "1000000",
    "--log",
    "warn",
    "--admin-key",
    "bench-admin-key-0123456789",
];

async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let gateway_bin = binary("BENCH_GATEWAY_BIN", "payment-api")?.display().to_string();
    let mut redis = if wanted("baseline") || wanted("redis") || wanted("fail-fast") {
        RedisServer::start("bench compare").await
    } else {
        None
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("rp-bench-{}", uuid::Uuid::new_v4().simple()));
    println!(
        "Side by side, one run: POST /v1/payments with unique keys (10 % declined cards), {}, {} connections, \
         {} s warm-up + {} s measured each, a fresh healthy zero-latency bank per target, {} cores.",
        args.run.rate.map_or("closed loop".to_owned(), |rate| format!("open loop at {rate} calls/s")),
        args.run.connections,
        args.run.warmup,
        args.run.seconds,
        cores()
    );
    let mut rows = Vec::new();
    let this = std::env::current_exe()?;

    for name in ["baseline", "redis", "two-banks", "redb", "fail-fast", "bare"] {
        if !wanted(name) {
            continue;
        }
        let (what, expected) = match name {
            "baseline" => ("naive handler: SET NX, one bank call, SET", 201),
            "redis" => ("the gateway on Redis", 201),
            "two-banks" => ("the gateway on Redis, two banks split 50/50", 201),
            "redb" => ("the gateway on redb (fsync per commit)", 201),
            "fail-fast" => ("the gateway, breaker forced open", 503),
            _ => ("bare axum handler", 201),
        };
        let mut row = Row { name, what, report: None, rss: None, cpu: CpuPerCall::default(), note: String::new() };
        let needs_redis = matches!(name, "baseline" | "redis" | "two-banks" | "fail-fast");
        let redis_url = redis.as_ref().map(RedisServer::url).unwrap_or_default();
        if needs_redis && redis.is_none() {
            row.note = "skipped: redis-server is not installed".into();
            rows.push(row);
            continue;
        }
        if let Some(server) = redis.as_mut().filter(|_| needs_redis) {
            // A fresh, empty Redis for each target (it keeps nothing on disk).
            server.kill();
            server.restart().await;
        }
        let (bank_process, bank) = start_bank().await?;
        let bank_pid = Some(bank_process.pid());
        let redis_pid = redis.as_ref().filter(|_| needs_redis).and_then(RedisServer::pid);
        let bank_url = format!("http://{bank}");
        print!("  {name:<10} ... ");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let (report, cpu, rss) = match name {
            "baseline" | "bare" => {
                let addr = free_addr();
                let server = KillOnDrop::spawn(std::process::Command::new(&this).args([
                    "serve",
                    name,
                    "--listen",
                    &addr.to_string(),
                    "--redis",
                    &redis_url,
                    "--bank",
                    &bank_url,
                ]))?;
                wait_healthy(&format!("http://{addr}")).await;
                let (report, cpu) = measured_run(addr, &args.run, [Some(server.pid()), bank_pid, redis_pid]).await?;
                (report, cpu, peak_rss(server.pid()))
            }
            _ => {
                let store = if name == "redb" {
                    format!("redb:{}", data_dir.join("bench.redb").display())
                } else {
                    redis_url.clone()
                };
                // The second bank of `two-banks`: its CPU is not sampled (the bank column shows
                // the first bank's only).
                let second = if name == "two-banks" { Some(start_bank().await?) } else { None };
                let mut gateway_args: Vec<String> = GATEWAY_ARGS.iter().map(|a| (*a).to_owned()).collect();
                if let Some((_, second)) = &second {
                    let banks = format!("a={bank_url},b=http://{second}");
                    gateway_args.extend(
                        ["--banks", &banks, "--routing", "weighted", "--routing-weights", "a=50,b=50"]
                            .map(str::to_owned),
                    );
                }
                let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
                let gateway = GatewayProcess::start(&gateway_bin, &bank_url, &store, &gateway_args).await;
                if name == "fail-fast" {
                    force_breaker_open(&gateway.url).await?;
                }
                let addr: SocketAddr = gateway.url.trim_start_matches("http://").parse()?;
                let (report, cpu) = measured_run(addr, &args.run, [Some(gateway.pid()), bank_pid, redis_pid]).await?;
                (report, cpu, peak_rss(gateway.pid()))
            }
        };
        println!("{:.0} calls/s", report.rps());
        let unexpected = report.completed - report.count(Outcome::Status(expected));
        let declined = if expected == 201 { report.count(Outcome::Status(402)) } else { 0 };
        if unexpected > declined {
            row.note = format!("{} answers were not {expected}/402: {:?}", unexpected - declined, report.outcomes);
        }
        row.report = Some(report);
        row.rss = rss;
        row.cpu = cpu;
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    print_comparison(&rows, args.run.rate.is_some());
    Ok(())
}

async fn force_breaker_open(gateway: &str) -> anyhow::Result<()> {
    reqwest::Client::new()
        .put(format!("{gateway}/admin/breaker"))
        .bearer_auth(GATEWAY_ARGS[7])
        .json(&serde_json::json!({"state": "forced_open"}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// The table, then each target's verdict. Throughput targets only mean something in the closed
/// loop; in the open loop every target is offered the same rate.
fn print_comparison(rows: &[Row], open_loop: bool) {
    let find = |name: &str| rows.iter().find(|r| r.name == name).and_then(|r| r.report.as_ref());
    let baseline = find("baseline");
    let bare = find("bare");
    println!();
    println!(
        "{:<10} {:<42} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}  CPU µs per call: server / bank / Redis",
        "target", "what", "calls/s", "p50 ms", "p99 ms", "rps ×", "p50 ×", "p99 ×", "peak RSS",
    );
    for row in rows {
        let Some(report) = &row.report else {
            println!("{:<10} {:<42} {}", row.name, row.what, row.note);
            continue;
        };
        let ratio = |value: f64, base: Option<f64>| match base {
            Some(base) if base > 0.0 => format!("{:.2}", value / base),
            _ => "-".into(),
        };
        let cpu = |value: Option<f64>| value.map_or("-".to_owned(), |us| format!("{us:.0}"));
        println!(
            "{:<10} {:<42} {:>9.0} {:>9.2} {:>9.2} {:>8} {:>8} {:>8} {:>9}  {} / {} / {}",
            row.name,
            row.what,
            report.rps(),
            report.percentile_ms(0.5),
            report.percentile_ms(0.99),
            ratio(report.rps(), baseline.map(LoadReport::rps)),
            ratio(report.percentile_ms(0.5), baseline.map(|b| b.percentile_ms(0.5))),
            ratio(report.percentile_ms(0.99), baseline.map(|b| b.percentile_ms(0.99))),
            row.rss.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))),
            cpu(row.cpu.server),
            cpu(row.cpu.bank),
            cpu(row.cpu.redis),
        );
        if !row.note.is_empty() {
            println!("{:<10} {}", "", row.note);
        }
    }
    println!();
    println!("Targets (reported, not asserted); ratios are to the baseline unless said:");
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    if open_loop {
        println!("  (open loop: every target was offered the same rate, so only latency is compared)");
    }
    if let (Some(base), Some(gateway)) = (baseline, find("redis")) {
        let rps = gateway.rps() / base.rps();
        let p99 = gateway.percentile_ms(0.99) / base.percentile_ms(0.99);
        if !open_loop {
            println!("  gateway on Redis rps >= 0.90x baseline: {rps:.2}x  {}", verdict(rps >= 0.9));
        }
        println!("  gateway on Redis p99 <= 1.25x baseline: {p99:.2}x  {}", verdict(p99 <= 1.25));
    }
    if let (Some(base), Some(gateway)) = (baseline, find("redb"))
        && !open_loop
    {
        let rps = gateway.rps() / base.rps();
        println!("  gateway on redb rps >= 0.90x baseline:  {rps:.2}x  {}", verdict(rps >= 0.9));
    }
    if let (Some(bare), Some(fast)) = (bare, find("fail-fast"))
        && !open_loop
    {
        let rps = fast.rps() / bare.rps();
        println!("  fail-fast rps >= 0.50x bare handler:    {rps:.2}x  {}", verdict(rps >= 0.5));
    }
    if let (Some(one), Some(two)) = (find("redis"), find("two-banks")) {
        // Not a target: what routing between two banks costs the payment path.
        if open_loop {
            let p50 = two.percentile_ms(0.5) / one.percentile_ms(0.5);
            println!("  two banks beside one (p50):              {p50:.2}x");
        } else {
            println!("  two banks beside one (rps):              {:.2}x", two.rps() / one.rps());
        }
    }
    let gateways = ["redis", "two-banks", "redb", "fail-fast"];
    let peak = rows.iter().filter(|r| gateways.contains(&r.name)).filter_map(|r| r.rss).max();
    if let Some(peak) = peak {
        let mib = peak as f64 / (1024.0 * 1024.0);
        println!("  gateway peak RSS <= 64 MiB:             {mib:.1} MiB  {}", verdict(mib <= 64.0));
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Target::Serve(args) = cli.target {
        // The servers under test get their own process and runtime, as the gateway does.
        return baseline::serve(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.target {
            Target::Compare(args) => compare(args).await,
            Target::Bank(args) => bench_bank(args).await,
            Target::Load(args) => load(args).await,
            Target::Serve(_) => unreachable!("served above"),
        }
    })
}
