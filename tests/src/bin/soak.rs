//! `./run.sh soak`: payments through the real binaries with every chaos fault kind active and the
//! bank taken down and back up mid-run, then the invariants checked against the bank's ledger.
//! Exits non-zero when any invariant fails.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use tests::process::{FINGERPRINT_KEY, GatewayProcess, KillOnDrop, free_addr, sibling_binary, wait_healthy};
use tests::soak::{self, Audit, ClientTally, SoakPlan, Targets};
use tests::{MERCHANT_A, RedisServer};

#[derive(Debug, Parser)]
#[command(about = "Soak the gateway through a chaotic bank and check that nothing was charged twice or lost")]
struct Args {
    /// Logical payments to make.
    #[arg(long, env = "SOAK_PAYMENTS", default_value_t = 10_000)]
    payments: usize,
    /// Clients at once.
    #[arg(long, env = "SOAK_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Share of payments also sent as concurrent and later duplicates.
    #[arg(long, env = "SOAK_DUPLICATES", default_value_t = 0.1)]
    duplicates: f64,
    /// Share of bank requests that get a fault, spread over every fault kind.
    #[arg(long, env = "SOAK_FAULT_RATE", default_value_t = 0.3)]
    fault_rate: f64,
    /// Gateway instances (more than one needs Redis), used round-robin.
    #[arg(long, env = "SOAK_INSTANCES", default_value_t = 1)]
    instances: usize,
    /// kill -9 a gateway at 40 % of the run and restart it.
    #[arg(long)]
    kill_gateway: bool,
    /// Share of succeeded payments then refunded: two partial refunds at once, then the rest.
    #[arg(long, env = "SOAK_REFUNDS", default_value_t = 0.2)]
    refunds: f64,
    /// Share of payments that only authorize, then are captured (all or half), canceled, both at
    /// once, or left to expire (the gateway's authorizations last 4 s here).
    #[arg(long, env = "SOAK_TWO_STEP", default_value_t = 0.2)]
    two_step: f64,
    /// Kill Redis at 60 % of the run and restart it (its append-only file is fsynced).
    #[arg(long)]
    restart_redis: bool,
    /// Kill Redis at 60 % of the run and restart it empty, as a Redis without persistence comes
    /// back: the gateway forgets what it had acknowledged, and must still never charge twice.
    #[arg(long, conflicts_with = "restart_redis")]
    lose_redis_data: bool,
    /// Banks the gateway routes to (priority order). With two or more, the first goes down
    /// mid-run and comes back, and the others keep their chaos: payments fail over, and no key
    /// may be charged at two banks.
    #[arg(long, env = "SOAK_BANKS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    banks: u64,
    /// Store: `redis` (default when redis-server is installed) or `redb`.
    #[arg(long, env = "SOAK_STORE")]
    store: Option<String>,
}

/// On top of the process helper's quick timings (500 ms attempts, 1.5 s deadline, 2 s lease, 3 s
/// commit window): short breaker open periods, no rate limit in the way, authorizations that
/// expire after 4 s, quiet logs.
const GATEWAY_ARGS: [&str; 12] = [
    "--webhook-retry-schedule-s",
    "0.2,0.5,1,1,2,2,2,2",
    "--breaker-open-ms",
    "500",
    "--breaker-open-max-ms",
    "2000",
    "--rate-limit-per-sec",
    "1000000",
    "--authorization-ttl-s",
    "4",
    "--log",
    "warn",
];

async fn run(args: Args) -> anyhow::Result<bool> {
    let redis_installed = std::process::Command::new("redis-server").arg("--version").output().is_ok();
    let store_kind = args.store.clone().unwrap_or_else(|| if redis_installed { "redis" } else { "redb" }.into());
    if store_kind != "redis" && (args.instances > 1 || args.restart_redis || args.lose_redis_data) {
        bail!("--instances > 1, --restart-redis and --lose-redis-data need the Redis store (install redis-server)");
    }

    let mut bank_processes = Vec::new();
    let mut bank_urls = Vec::new();
    for _ in 0..args.banks {
        let addr = free_addr();
        bank_processes.push(KillOnDrop::spawn(std::process::Command::new(sibling_binary("mock-bank")?).args([
            "--listen",
            &addr.to_string(),
            "--log",
            "warn",
        ]))?);
        let url = format!("http://{addr}");
        wait_healthy(&url).await;
        bank_urls.push(url);
    }
    let bank = bank_urls[0].clone();
    let http = reqwest::Client::new();

    let mut redis = None;
    let dir = std::env::temp_dir().join(format!("rp-soak-{}", uuid::Uuid::new_v4().simple()));
    let store = if store_kind == "redis" {
        let server = if args.lose_redis_data {
            RedisServer::start("soak").await
        } else {
            RedisServer::start_persistent("soak").await
        };
        let server = server.context("redis-server is not installed")?;
        let url = server.url();
        redis = Some(server);
        url
    } else {
        format!("redb:{}", dir.join("soak.redb").display())
    };

    let gateway_bin = sibling_binary("payment-api")?.display().to_string();
    let banks_flag: Vec<String> = bank_urls
        .iter()
        .enumerate()
        .map(|(i, url)| format!("{}={url}", if i == 0 { "primary".to_owned() } else { format!("bank{}", i + 1) }))
        .collect();
    let mut gateway_args: Vec<String> = GATEWAY_ARGS.iter().map(|a| (*a).to_owned()).collect();
    if bank_urls.len() > 1 {
        gateway_args.extend(["--banks".to_owned(), banks_flag.join(",")]);
    }
    let gateway_args: Vec<&str> = gateway_args.iter().map(String::as_str).collect();
    let mut gateways = Vec::new();
    for _ in 0..args.instances.max(1) {
        gateways.push(GatewayProcess::start(&gateway_bin, &bank, &store, &gateway_args).await);
    }
    let targets = Targets {
        gateways: gateways.iter().map(|g| g.url.clone()).collect(),
        banks: bank_urls.clone(),
        api_key: MERCHANT_A.1.into(),
    };

    // Every fault kind, sharing the fault rate; hangs outlast the gateway's attempts and commit late.
    let share = args.fault_rate / 5.0;
    let chaos = json!({
        "failure_rate": share, "ambiguous_rate": share, "timeout_rate": share, "reset_rate": share,
        "throttle_rate": share, "retry_after_s": 1, "hang_ms": 800, "latency": {"base_ms": 2, "jitter_ms": 10},
        "slow_rate": 0.02, "slow_ms": 700,
    });
    // The bank goes down a while after the start and comes back: the breaker trips and recovers.
    let scenario = json!({"steps": [
        {"after_s": 0, "config": chaos}, {"after_s": 8, "preset": "outage"}, {"after_s": 12, "config": chaos},
    ]});
    http.post(format!("{bank}/chaos/scenario")).json(&scenario).send().await?.error_for_status()?;
    // The other banks keep their chaos throughout: the primary's outage sends payments to them.
    for other in &bank_urls[1..] {
        http.patch(format!("{other}/chaos")).json(&chaos).send().await?.error_for_status()?;
    }
    println!(
        "soak: {} payments, {} clients, {:.0} % duplicates, {:.0} % two-step, {:.0} % faults, {} bank(s), {} gateway(s) on {store_kind}{}{}{}",
        args.payments,
        args.concurrency,
        args.duplicates * 100.0,
        args.two_step * 100.0,
        args.fault_rate * 100.0,
        bank_urls.len(),
        gateways.len(),
        if args.kill_gateway { ", kill -9 mid-run" } else { "" },
        if args.restart_redis { ", Redis restarted mid-run" } else { "" },
        if args.lose_redis_data { ", Redis restarted empty mid-run" } else { "" },
    );

    // Every event goes to a receiver that fails a tenth of deliveries: they are retried.
    let webhooks =
        soak::subscribe_webhooks(&targets, tests::webhooks::Plan { fail_share: 0.1, ..Default::default() }).await;
    let tally = Arc::new(ClientTally::default());
    let plan = SoakPlan {
        payments: args.payments,
        concurrency: args.concurrency,
        duplicate_share: args.duplicates,
        refund_share: args.refunds,
        two_step_share: args.two_step,
        payment_deadline: Duration::from_secs(120),
        store_may_forget: args.lose_redis_data,
    };
    let started = std::time::Instant::now();
    let driving = {
        let (targets, plan, tally) = (targets.clone(), plan.clone(), Arc::clone(&tally));
        tokio::spawn(async move { soak::drive(&targets, &plan, tally).await })
    };

    // Mid-run disruptions, triggered by progress.
    let expected_requests = args.payments as u64;
    let progress = || tally.sent.load(Ordering::Relaxed);
    if args.kill_gateway {
        tests::wait_for("40 % of the run", Duration::from_secs(3_600), || async {
            (progress() * 10 >= expected_requests * 4).then_some(())
        })
        .await;
        let victim = &mut gateways[0];
        let addr: SocketAddr = victim.url.trim_start_matches("http://").parse()?;
        victim.kill();
        println!(
            "soak: killed gateway {addr} with SIGKILL at {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            chrono::Utc::now()
        );
        *victim = GatewayProcess::start_at(&gateway_bin, addr, &bank, &store, &gateway_args).await;
        println!("soak: gateway {addr} restarted at {:.1} s", started.elapsed().as_secs_f64());
    }
    if (args.restart_redis || args.lose_redis_data)
        && let Some(server) = redis.as_mut()
    {
        tests::wait_for("60 % of the run", Duration::from_secs(3_600), || async {
            (progress() * 10 >= expected_requests * 6).then_some(())
        })
        .await;
        server.kill();
        println!("soak: killed Redis at {:.1} s ({})", started.elapsed().as_secs_f64(), chrono::Utc::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        server.restart().await;
        let how = if args.lose_redis_data { "empty" } else { "with its data" };
        println!("soak: Redis restarted {how} at {:.1} s ({})", started.elapsed().as_secs_f64(), chrono::Utc::now());
    }

    let driven = driving.await??;
    let drove = started.elapsed();
    let payments = soak::quiesce(&targets, Duration::from_secs(120)).await?;
    let audit = Audit { merchant: MERCHANT_A.0.into(), fingerprint_key: FINGERPRINT_KEY.into() };
    let mut report = soak::check(&targets, &plan, &audit, &driven, &payments, &tally).await?;
    soak::check_events(&targets, &webhooks, &payments, plan.store_may_forget, &mut report).await?;
    report.figures.insert("run seconds", drove.as_secs());
    report.figures.insert("payments per second", (args.payments as f64 / drove.as_secs_f64()) as u64);
    println!();
    report.print();
    drop(gateways);
    let _ = std::fs::remove_dir_all(dir);
    Ok(report.holds())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if runtime.block_on(run(args))? {
        println!("\nsoak: every invariant holds");
        Ok(())
    } else {
        println!("\nsoak: INVARIANTS FAILED");
        std::process::exit(1);
    }
}
