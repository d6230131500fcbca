//! The reduced soak of `./run.sh test`: 2,000 payments by careful clients through every fault
//! kind, with an outage in the middle, a fifth of them two-step (captured, canceled, raced or left
//! to expire), then every invariant checked against the bank's ledger.
//! It asserts correctness only, never timings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tests::soak::{self, Audit, ClientTally, SoakPlan, Targets};
use tests::webhooks::Plan;
use tests::{MERCHANT_A, TestBank, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_payments_through_chaos_keep_every_invariant() {
    let bank = TestBank::start().await;
    // Every fault kind, 30 % in all; hangs outlast the gateway's 300 ms attempts and commit late.
    let chaos = json!({
        "failure_rate": 0.10, "ambiguous_rate": 0.05, "timeout_rate": 0.05, "reset_rate": 0.05,
        "throttle_rate": 0.05, "retry_after_s": 0, "hang_ms": 400, "latency": {"base_ms": 1, "jitter_ms": 5},
        "slow_rate": 0.02, "slow_ms": 200,
    });
    let scenario = json!([
        {"after_s": 0, "config": chaos},
        {"after_s": 2, "preset": "outage"},
        {"after_s": 4, "config": chaos},
    ]);
    let started = bank.client.post(bank.at("/chaos/scenario")).json(&scenario).send().await.unwrap();
    assert_eq!(started.status(), 201);

    let mut config = TestGateway::config(&bank.url, "memory");
    config.rate_limit_per_sec = 1_000_000.0;
    config.rate_limit_burst = 1_000_000;
    // Under 30 % faults the breaker trips now and then; keep its growing open periods short.
    config.breaker_open_max_ms = 1_000;
    // The bank's hangs last 400 ms, so nothing can commit later than that.
    config.commit_window_ms = 1_500;
    config.authorization_ttl_s = 2;
    config.webhook_retry_schedule_s = payment_api::webhook::Schedule::parse("0.1,0.2,0.5,1,1,1,1,1").unwrap();
    let gateway = TestGateway::start(config).await;

    let targets =
        Targets { gateways: vec![gateway.url.clone()], banks: vec![bank.url.clone()], api_key: MERCHANT_A.1.into() };
    let plan = SoakPlan {
        payments: 2_000,
        concurrency: 96,
        duplicate_share: 0.1,
        refund_share: 0.1,
        two_step_share: 0.2,
        payment_deadline: Duration::from_secs(60),
        store_may_forget: false,
    };
    // Every event goes to a receiver that fails a tenth of deliveries: they are retried.
    let webhooks = soak::subscribe_webhooks(&targets, Plan { fail_share: 0.1, ..Plan::default() }).await;
    let tally = Arc::new(ClientTally::default());
    let clock = std::time::Instant::now();
    let driven = soak::drive(&targets, &plan, Arc::clone(&tally)).await.unwrap();
    eprintln!("drive took {:?}", clock.elapsed());
    let stats = bank.stats().await;
    for kind in ["failure", "ambiguous", "timeout", "reset", "throttle", "outage"] {
        assert!(stats["injected"][kind].as_u64().unwrap() > 0, "the bank injected {kind}: {stats}");
    }
    let payments = soak::quiesce(&targets, Duration::from_secs(60)).await.unwrap();
    eprintln!("quiesce done at {:?}", clock.elapsed());
    let audit = Audit { merchant: MERCHANT_A.0.into(), fingerprint_key: "test-fingerprint-key".into() };
    let mut report = soak::check(&targets, &plan, &audit, &driven, &payments, &tally).await.unwrap();
    soak::check_events(&targets, &webhooks, &payments, false, &mut report).await.unwrap();
    report.print();
    assert!(report.holds(), "an invariant failed (see the table above)");
    assert_eq!(report.figures["logical payments"], 2_000);
}
