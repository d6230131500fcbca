//! The gateway as a real process: its log files, and a graceful shutdown on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use tests::process::GatewayProcess;
use tests::{MERCHANT_A, TestBank, payment_body, wait_for};

const CARD: &str = "4242424242424242";

#[tokio::test]
async fn sigterm_finishes_the_payment_in_flight_then_exits_and_the_logs_are_json_with_request_ids() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 400}})).await;
    let logs = std::env::temp_dir().join(format!("rp-logs-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let log_dir = logs.display().to_string();
    let mut gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway-under-test"),
        &bank.url,
        "memory",
        &["--log-dir", &log_dir, "--shutdown-timeout-ms", "5000"],
    )
    .await;

    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = gateway.url.clone();
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .post(format!("{url}/v1/payments"))
                .bearer_auth(MERCHANT_A.1)
                .header("Idempotency-Key", "term-1")
                .header("X-Request-Id", "req-sigterm-test")
                .json(&payment_body(1_234, CARD, "term"))
                .send()
                .await
        }
    });
    wait_for("the payment to reach the bank", Duration::from_secs(10), || async {
        (bank.stats().await["requests"].as_u64().unwrap() >= 1).then_some(())
    })
    .await;

    gateway.terminate();
    let response = in_flight.await.unwrap().expect("the in-flight payment is answered");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], "req-sigterm-test");
    let status = gateway.exited(Duration::from_secs(15)).await;
    assert!(status.success(), "exited cleanly: {status:?}");
    assert_eq!(bank.charge_count().await, 1);

    // Every file line is JSON; the payment's lines carry its request id, merchant, payment id and
    // key; the shutdown was logged (the writer flushed at exit); no card number anywhere.
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        assert!(path.file_name().unwrap().to_string_lossy().starts_with("payment-api.log"), "{path:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(CARD), "a card number reached the log file");
        lines.extend(text.lines().map(|line| serde_json::from_str::<Value>(line).expect("a JSON line")));
    }
    let ours: Vec<&Value> = lines.iter().filter(|l| l["span"]["request_id"] == "req-sigterm-test").collect();
    assert!(!ours.is_empty(), "the request's lines are in the file");
    let finished = ours.iter().find(|l| l["message"] == "request finished").expect("a request-finished line");
    assert_eq!(finished["span"]["merchant"], MERCHANT_A.0);
    assert_eq!(finished["span"]["idempotency_key"], "term-1");
    assert!(finished["span"]["payment_id"].as_str().unwrap().starts_with("pay_"));
    assert!(lines.iter().any(|l| l["message"] == "payment-api stopped"));
    let _ = std::fs::remove_dir_all(logs);
}
