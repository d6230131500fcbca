//! Every fault kind, performed as a client sees it on the wire, checked against the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{BankConfig, Seen, TestBank, charge_body, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CARD: &str = "4242424242424242";

fn forced(kind: &'static str) -> [(&'static str, &'static str); 1] {
    [("X-Chaos-Fault", kind)]
}

#[tokio::test]
async fn failure_is_503_or_500_and_charges_nothing() {
    let bank = TestBank::start_with(BankConfig { seed: Some(3), ..BankConfig::default() }).await;
    let mut seen = Vec::new();
    for i in 0..20 {
        let response = bank.charge(&format!("f{i}"), &charge_body(100, CARD), &forced("failure")).await.unwrap();
        let status = response.status().as_u16();
        assert!(status == 503 || status == 500, "{status}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        seen.push(status);
    }
    assert!(seen.contains(&503) && seen.contains(&500), "both statuses occur: {seen:?}");
    assert_eq!(bank.charge_count().await, 0);
    assert_eq!(bank.stats().await["injected"]["failure"], 20);
}

#[tokio::test]
async fn throttle_is_429_with_retry_after_and_charges_nothing() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"retry_after_s": 7})).await;
    let response = bank.charge("t", &charge_body(100, CARD), &forced("throttle")).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "rate_limited");
    assert_eq!(bank.charge_count().await, 0);
    // The same key goes through once the bank lets it.
    assert_eq!(bank.charge("t", &charge_body(100, CARD), &[]).await.unwrap().status(), 201);
    assert_eq!(bank.charge_count().await, 1);
}

/// Sends a raw HTTP/1.1 request and reads until the server closes: returns the bytes received
/// and how the read ended.
async fn raw_exchange(bank: &TestBank, key: &str, fault: &str) -> (Vec<u8>, std::io::Result<usize>) {
    let body = serde_json::to_vec(&charge_body(100, CARD)).unwrap();
    let mut stream = tokio::net::TcpStream::connect(bank.addr).await.unwrap();
    let head = format!(
        "POST /v1/charges HTTP/1.1\r\nHost: bank\r\nConnection: close\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n\
         X-Chaos-Fault: {fault}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut received = Vec::new();
    let end = stream.read_to_end(&mut received).await;
    (received, end)
}

#[tokio::test]
async fn reset_closes_the_connection_with_no_response_and_charges_nothing() {
    let bank = TestBank::start().await;
    let (received, end) = raw_exchange(&bank, "reset-1", "reset").await;
    assert!(received.is_empty(), "no HTTP response at all, got {:?}", String::from_utf8_lossy(&received));
    let error = end.expect_err("the connection is reset, not closed cleanly");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(bank.charge_count().await, 0);

    // An HTTP client sees a transport error, not a status.
    assert_eq!(Seen::of(&bank.charge("reset-2", &charge_body(100, CARD), &forced("reset")).await), Seen::NoResponse);
    assert_eq!(bank.charge_count().await, 0);
    assert_eq!(bank.stats().await["injected"]["reset"], 2);
}

#[tokio::test]
async fn ambiguous_commits_the_charge_then_loses_the_answer() {
    let bank = TestBank::start_with(BankConfig { seed: Some(11), ..BankConfig::default() }).await;
    let mut seen = Vec::new();
    for i in 0..16 {
        let result = bank.charge(&format!("amb-{i}"), &charge_body(100 + i, CARD), &forced("ambiguous")).await;
        let outcome = Seen::of(&result);
        assert!(matches!(outcome, Seen::Status(500) | Seen::NoResponse), "{outcome:?}");
        seen.push(outcome);
    }
    assert!(seen.contains(&Seen::Status(500)) && seen.contains(&Seen::NoResponse), "both ways occur: {seen:?}");

    // Charged although every client saw an error: the ledger is the truth.
    let charges = bank.charges_by_key().await;
    assert_eq!(charges.len(), 16);
    for i in 0..16 {
        let charge = &charges[&format!("amb-{i}")];
        assert_eq!(charge["status"], "approved");
        assert_eq!(charge["amount"], 100 + i);
    }
    // A retry with the same key is a replay, not a second charge; an inquiry finds it too.
    let retry = bank.charge("amb-0", &charge_body(100, CARD), &[]).await.unwrap();
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let inquiry = bank.client.get(bank.at("/v1/charges?idempotency_key=amb-1")).send().await.unwrap();
    assert_eq!(inquiry.status(), 200);
    assert_eq!(bank.charge_count().await, 16);
}

#[tokio::test]
async fn ambiguous_drop_resets_the_connection_after_committing() {
    let bank = TestBank::start_with(BankConfig { seed: Some(11), ..BankConfig::default() }).await;
    // Try keys until one hits the dropped-connection variant (the seed makes this deterministic).
    for i in 0..32 {
        let key = format!("drop-{i}");
        let (received, end) = raw_exchange(&bank, &key, "ambiguous").await;
        if received.is_empty() {
            assert_eq!(end.expect_err("reset").kind(), std::io::ErrorKind::ConnectionReset);
            assert!(bank.charges_by_key().await.contains_key(&key), "committed before the reset");
            return;
        }
        assert!(received.starts_with(b"HTTP/1.1 500"), "{}", String::from_utf8_lossy(&received));
    }
    panic!("no dropped-connection variant in 32 ambiguous faults");
}

#[tokio::test]
async fn timeout_hangs_then_commits_late_after_the_client_gave_up() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"hang_ms": 1_500})).await;
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let result = impatient
        .post(bank.at("/v1/charges"))
        .header("Idempotency-Key", "late-1")
        .header("X-Chaos-Fault", "timeout")
        .json(&charge_body(700, CARD))
        .send()
        .await;
    assert!(result.expect_err("the client times out").is_timeout());
    assert!(!bank.charges_by_key().await.contains_key("late-1"), "not committed while hanging");

    let charge =
        wait_for("the late commit", Duration::from_secs(20), || async { bank.charges_by_key().await.remove("late-1") })
            .await;
    assert_eq!(charge["amount"], 700);
    assert_eq!(charge["status"], "approved");
}

#[tokio::test]
async fn a_hanging_request_does_not_block_others_and_answers_when_done() {
    let bank = Arc::new(TestBank::start().await);
    bank.patch_chaos(json!({"hang_ms": 3_000})).await;
    let hanging = {
        let bank = Arc::clone(&bank);
        tokio::spawn(async move { bank.charge("slow", &charge_body(100, CARD), &forced("timeout")).await })
    };
    wait_for("the hang to start", Duration::from_secs(10), || async {
        (bank.stats().await["injected"]["timeout"] == 1).then_some(())
    })
    .await;
    for i in 0..20 {
        let response = bank.charge(&format!("quick-{i}"), &charge_body(100, CARD), &[]).await.unwrap();
        assert_eq!(response.status(), 201);
    }
    assert!(!hanging.is_finished(), "twenty requests were served while one hung");
    let answer = hanging.await.unwrap().unwrap();
    assert_eq!(answer.status(), 201);
    assert_eq!(bank.charge_count().await, 21);
}

#[tokio::test]
async fn outage_answers_503_at_once_but_chaos_control_and_the_ledger_still_work() {
    let bank = TestBank::start().await;
    let response = bank.client.post(bank.at("/chaos/presets/outage")).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["outage"], true);
    for i in 0..5 {
        // Even a forced "none" cannot get through an outage.
        let response = bank.charge(&format!("o{i}"), &charge_body(100, CARD), &forced("none")).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "bank_unavailable");
    }
    let inquiry = bank.client.get(bank.at("/v1/charges?idempotency_key=o1")).send().await.unwrap();
    assert_eq!(inquiry.status(), 503);
    assert_eq!(bank.charge_count().await, 0);
    assert_eq!(bank.stats().await["injected"]["outage"], 6);

    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    assert_eq!(bank.charge("o1", &charge_body(100, CARD), &[]).await.unwrap().status(), 201);
}

#[tokio::test]
async fn the_fault_header_can_be_disabled() {
    let bank = TestBank::start_with(BankConfig { chaos_header: false, ..BankConfig::default() }).await;
    let response = bank.charge("h", &charge_body(100, CARD), &forced("failure")).await.unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(bank.stats().await["forced_by_header"], 0);
}

#[tokio::test]
async fn faults_apply_to_refunds_too() {
    let bank = TestBank::start().await;
    let charge: Value = bank.charge("c", &charge_body(1_000, CARD), &[]).await.unwrap().json().await.unwrap();
    let url = bank.at(&format!("/v1/charges/{}/refunds", charge["id"].as_str().unwrap()));
    let refund = || bank.client.post(&url).header("Idempotency-Key", "rf").json(&json!({"amount": 250}));
    let lost = refund().header("X-Chaos-Fault", "ambiguous").send().await;
    assert!(matches!(Seen::of(&lost), Seen::Status(500) | Seen::NoResponse));
    // The refund was made although the answer was lost; the retry replays it.
    let retry = refund().send().await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let ledger = bank.ledger().await;
    assert_eq!(ledger["charges"][0]["refunded_amount"], 250);
}
