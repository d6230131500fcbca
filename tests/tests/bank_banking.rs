//! The bank's banking behaviour, through HTTP: approvals, declines, idempotency, refunds, status
//! inquiry and the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;

use serde_json::{Value, json};
use tests::{BankConfig, TestBank, charge_body};

const APPROVE: &str = "4242424242424242";
const OTHER_VISA: &str = "4111111111111111";

#[tokio::test]
async fn approves_and_replays_with_the_same_key_without_charging_twice() {
    let bank = TestBank::start().await;
    let body = charge_body(1999, APPROVE);

    let first = bank.charge("order-1", &body, &[]).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "approved");
    assert_eq!(first["amount"], 1999);
    assert_eq!(first["card"], json!({"brand": "visa", "last4": "4242"}));
    assert!(first["id"].as_str().unwrap().starts_with("ch_"));

    // The quoted structured-field form of the key is the same key.
    let again = bank.charge("\"order-1\"", &body, &[]).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["charges"], 1);
    assert_eq!(ledger["totals"]["by_currency"]["USD"]["charged"], 1999);
    assert_eq!(ledger["charges"][0]["idempotency_key"], "order-1");
}

#[tokio::test]
async fn same_key_with_another_body_is_422_and_changes_nothing() {
    let bank = TestBank::start().await;
    assert_eq!(bank.charge("k", &charge_body(100, APPROVE), &[]).await.unwrap().status(), 201);
    let reused = bank.charge("k", &charge_body(200, APPROVE), &[]).await.unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(reused.headers()["content-type"], "application/problem+json");
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["code"], "idempotency_key_reused");
    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["charges"], 1);
    assert_eq!(ledger["charges"][0]["amount"], 100);
}

#[tokio::test]
async fn fifty_concurrent_requests_with_one_key_charge_once() {
    let bank = Arc::new(TestBank::start().await);
    let body = charge_body(500, OTHER_VISA);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (bank, body) = (Arc::clone(&bank), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = bank.charge("same", &body, &[]).await.unwrap();
            assert_eq!(response.status(), 201);
            response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer is the same charge");
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn test_cards_decline_with_their_codes_and_declines_are_replayed() {
    let bank = TestBank::start().await;
    for (card, code) in [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
        ("4000000000000119", "processing_error"),
        ("4000000000000135", "issuer_unavailable"),
    ] {
        let response = bank.charge(card, &charge_body(100, card), &[]).await.unwrap();
        assert_eq!(response.status(), 402, "{card}");
        let charge: Value = response.json().await.unwrap();
        assert_eq!(charge["status"], "declined");
        assert_eq!(charge["decline_code"], code);

        let replay = bank.charge(card, &charge_body(100, card), &[]).await.unwrap();
        assert_eq!(replay.status(), 402);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    }
    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["declined"], 5);
    assert_eq!(ledger["totals"]["approved"], 0);
}

#[tokio::test]
async fn amounts_over_max_amount_decline_and_expired_dates_decline() {
    let bank = TestBank::start_with(BankConfig { max_amount: 10_000, ..BankConfig::default() }).await;
    let at_limit = bank.charge("a", &charge_body(10_000, APPROVE), &[]).await.unwrap();
    assert_eq!(at_limit.status(), 201);
    let over = bank.charge("b", &charge_body(10_001, APPROVE), &[]).await.unwrap();
    assert_eq!(over.status(), 402);
    assert_eq!(over.json::<Value>().await.unwrap()["decline_code"], "amount_limit_exceeded");

    let mut expired = charge_body(100, OTHER_VISA);
    expired["card"]["exp_year"] = json!(2001);
    let response = bank.charge("c", &expired, &[]).await.unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(response.json::<Value>().await.unwrap()["decline_code"], "expired_card");
}

#[tokio::test]
async fn a_card_account_approves_while_its_balance_covers_the_amount() {
    let bank = TestBank::start_with(BankConfig { default_balance: 1_000, ..BankConfig::default() }).await;
    assert_eq!(bank.charge("1", &charge_body(600, OTHER_VISA), &[]).await.unwrap().status(), 201);
    let short = bank.charge("2", &charge_body(600, OTHER_VISA), &[]).await.unwrap();
    assert_eq!(short.status(), 402);
    assert_eq!(short.json::<Value>().await.unwrap()["decline_code"], "insufficient_funds");
    // Another card has its own account; the always-approve test card has no limit.
    assert_eq!(bank.charge("3", &charge_body(600, "5555555555554444"), &[]).await.unwrap().status(), 201);
    assert_eq!(bank.charge("4", &charge_body(5_000, APPROVE), &[]).await.unwrap().status(), 201);
    // What was left (400) still covers a smaller charge.
    assert_eq!(bank.charge("5", &charge_body(400, OTHER_VISA), &[]).await.unwrap().status(), 201);
}

async fn refund(bank: &TestBank, charge_id: &str, key: &str, body: Option<Value>) -> reqwest::Response {
    let mut request =
        bank.client.post(bank.at(&format!("/v1/charges/{charge_id}/refunds"))).header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn refunds_are_partial_or_the_rest_idempotent_and_never_exceed_the_charge() {
    let bank = TestBank::start().await;
    let charge: Value = bank.charge("c1", &charge_body(1_000, APPROVE), &[]).await.unwrap().json().await.unwrap();
    let id = charge["id"].as_str().unwrap();

    let partial = refund(&bank, id, "r1", Some(json!({"amount": 300}))).await;
    assert_eq!(partial.status(), 201);
    let partial: Value = partial.json().await.unwrap();
    assert_eq!(partial["amount"], 300);
    assert_eq!(partial["charge_id"], id);

    let replay = refund(&bank, id, "r1", Some(json!({"amount": 300}))).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], partial["id"]);

    let reused = refund(&bank, id, "r1", Some(json!({"amount": 301}))).await;
    assert_eq!(reused.status(), 422);

    let over = refund(&bank, id, "r2", Some(json!({"amount": 701}))).await;
    assert_eq!(over.status(), 422);
    assert_eq!(over.json::<Value>().await.unwrap()["code"], "validation_failed");

    let zero = refund(&bank, id, "r2b", Some(json!({"amount": 0}))).await;
    assert_eq!(zero.status(), 422);

    // No amount refunds what is left.
    let rest = refund(&bank, id, "r3", None).await;
    assert_eq!(rest.status(), 201);
    assert_eq!(rest.json::<Value>().await.unwrap()["amount"], 700);

    let nothing_left = refund(&bank, id, "r4", None).await;
    assert_eq!(nothing_left.status(), 409);
    assert_eq!(nothing_left.json::<Value>().await.unwrap()["code"], "invalid_state");

    let missing = refund(&bank, "ch_nope", "r5", None).await;
    assert_eq!(missing.status(), 404);

    let declined: Value =
        bank.charge("d1", &charge_body(100, "4000000000000002"), &[]).await.unwrap().json().await.unwrap();
    let not_refundable = refund(&bank, declined["id"].as_str().unwrap(), "r6", None).await;
    assert_eq!(not_refundable.status(), 409);

    let ledger = bank.ledger().await;
    let usd = &ledger["totals"]["by_currency"]["USD"];
    assert_eq!(
        (usd["charged"].as_i64(), usd["refunded"].as_i64(), usd["net"].as_i64()),
        (Some(1_000), Some(1_000), Some(0))
    );
    assert_eq!(ledger["totals"]["refunds"], 2);
}

#[tokio::test]
async fn status_inquiry_finds_a_charge_by_key_or_says_there_is_none() {
    let bank = TestBank::start().await;
    let charge: Value = bank.charge("inq-1", &charge_body(42, APPROVE), &[]).await.unwrap().json().await.unwrap();

    let found = bank.client.get(bank.at("/v1/charges")).query(&[("idempotency_key", "inq-1")]).send().await.unwrap();
    assert_eq!(found.status(), 200);
    assert_eq!(found.json::<Value>().await.unwrap()["id"], charge["id"]);

    let none = bank.client.get(bank.at("/v1/charges")).query(&[("idempotency_key", "inq-2")]).send().await.unwrap();
    assert_eq!(none.status(), 404);
    assert_eq!(none.json::<Value>().await.unwrap()["code"], "not_found");

    let no_key = bank.client.get(bank.at("/v1/charges")).send().await.unwrap();
    assert_eq!(no_key.status(), 400);

    let by_id = bank.client.get(bank.at(&format!("/v1/charges/{}", charge["id"].as_str().unwrap()))).send().await;
    assert_eq!(by_id.unwrap().json::<Value>().await.unwrap()["idempotency_key"], "inq-1");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let bank = TestBank::start().await;
    let generated = bank.client.get(bank.at("/healthz")).send().await.unwrap();
    assert!(generated.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let echoed = bank.client.get(bank.at("/nope")).header("X-Request-Id", "abc-123").send().await.unwrap();
    assert_eq!(echoed.status(), 404);
    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
}
