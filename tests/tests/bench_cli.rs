//! The bench binary as a user runs it, briefly: `bench compare` starts its servers, drives each and
//! prints the table and verdicts; `bench load` pays through a running gateway with careful
//! clients. Only that they work and say what they measured is checked, never how fast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

use tests::{MERCHANT_A, TestBank, TestGateway};

/// The bench, starting the test crate's builds of the gateway and the bank.
fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bench"));
    command.env("BENCH_GATEWAY_BIN", env!("CARGO_BIN_EXE_gateway-under-test"));
    command.env("BENCH_BANK_BIN", env!("CARGO_BIN_EXE_bank-under-test"));
    command
}

#[test]
fn compare_runs_every_target_it_is_asked_for_and_reports_each() {
    // The baseline needs Redis; without it (and without REQUIRE_REDIS=1) compare the rest.
    let redis = Command::new("redis-server").arg("--version").output().is_ok();
    let only = if redis { "baseline,fail-fast,bare" } else { "fail-fast,bare" };
    let output = bench()
        .args(["compare", "--only", only, "--seconds", "1", "--warmup", "0", "--connections", "4"])
        .output()
        .expect("run bench compare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench compare failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for row in only.split(',') {
        let line = stdout.lines().find(|l| l.starts_with(row) && l.contains("MiB")).unwrap_or_else(|| {
            panic!("no result row for {row}:\n{stdout}");
        });
        assert!(!line.contains("answers were not"), "{row} answered what it should not:\n{stdout}");
    }
    assert!(stdout.contains("fail-fast rps >= 0.50x bare handler"), "{stdout}");
    if redis {
        assert!(stdout.lines().any(|l| l.starts_with("baseline") && l.contains(" 1.00 ")), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_pays_through_a_running_gateway_and_prints_the_summary() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.rate_limit_per_sec = 1_000_000.0;
    config.rate_limit_burst = 1_000_000;
    let gateway = TestGateway::start(config).await;
    let url = gateway.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        bench()
            .args(["load", "--gateway", &url, "--api-key", MERCHANT_A.1, "--count", "60", "--concurrency", "4"])
            .args(["--duplicates", "0.2", "--rate", "200"])
            .output()
            .expect("run bench load")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench load failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("200 payments/s (open loop)"), "{stdout}");
    assert!(stdout.contains("calls              60"), "{stdout}");
    for expected in ["p50", "p90", "p99", "p99.9", "succeeded", "declined"] {
        assert!(stdout.contains(expected), "{expected} in\n{stdout}");
    }
    // Every logical payment reached the bank once, duplicates included: 54 approved, 6 declined.
    let ledger: serde_json::Value = bank.client.get(bank.at("/v1/ledger")).send().await.unwrap().json().await.unwrap();
    let charges = ledger["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 60, "one charge per payment: {ledger}");
}
