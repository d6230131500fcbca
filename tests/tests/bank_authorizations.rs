//! The bank's authorizations, through HTTP: a hold on the card's balance, captured once (all or
//! part, the rest released), voided, or left to expire; each exactly once per key, found again by
//! its key, and faulted by the chaos engine like charges. The ledger is the truth throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{BankConfig, Seen, TestBank, charge_body, wait_for};

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";
const OTHER_VISA: &str = "4111111111111111";

async fn post(bank: &TestBank, path: &str, key: &str, body: Option<Value>, fault: Option<&str>) -> reqwest::Response {
    let mut request = bank.client.post(bank.at(path)).header("Idempotency-Key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(fault) = fault {
        request = request.header("X-Chaos-Fault", fault);
    }
    request.send().await.unwrap()
}

async fn authorize(bank: &TestBank, key: &str, amount: i64, card: &str) -> Value {
    let response = post(bank, "/v1/authorizations", key, Some(charge_body(amount, card)), None).await;
    assert_eq!(response.status(), 201, "authorize {key}");
    response.json().await.unwrap()
}

async fn capture(bank: &TestBank, id: &str, key: &str, amount: Option<i64>) -> reqwest::Response {
    let body = amount.map(|amount| json!({"amount": amount}));
    post(bank, &format!("/v1/authorizations/{id}/capture"), key, body, None).await
}

async fn void(bank: &TestBank, id: &str, key: &str) -> reqwest::Response {
    post(bank, &format!("/v1/authorizations/{id}/void"), key, None, None).await
}

async fn code_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let problem: Value = response.json().await.unwrap();
    (status, problem["code"].as_str().unwrap_or_default().to_owned())
}

fn ledger_authorization(ledger: &Value, id: &str) -> Value {
    ledger["authorizations"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned().expect("in the ledger")
}

#[tokio::test]
async fn a_hold_takes_from_the_balance_and_a_partial_capture_releases_the_rest() {
    let bank = TestBank::start_with(BankConfig { default_balance: 1_000, ..BankConfig::default() }).await;
    let held = authorize(&bank, "auth-1", 600, OTHER_VISA).await;
    assert_eq!((held["status"].as_str(), held["amount"].as_i64()), (Some("authorized"), Some(600)));
    assert!(held["id"].as_str().unwrap().starts_with("au_"));
    assert!(held["expires_at"].is_string());
    let short = bank.charge("charge-1", &charge_body(600, OTHER_VISA), &[]).await.unwrap();
    assert_eq!(short.status(), 402, "the hold took 600 of the 1,000");
    assert_eq!(bank.ledger().await["totals"]["authorizations"]["held"]["USD"], 600);

    let id = held["id"].as_str().unwrap();
    let captured = capture(&bank, id, "capture-1", Some(250)).await;
    assert_eq!(captured.status(), 200);
    assert!(captured.headers().get("idempotent-replayed").is_none());
    let captured: Value = captured.json().await.unwrap();
    assert_eq!((captured["status"].as_str(), captured["captured_amount"].as_i64()), (Some("captured"), Some(250)));
    let charge_id = captured["charge_id"].as_str().unwrap();
    let charge = &bank.charges_by_id().await[charge_id];
    assert_eq!((charge["amount"].as_i64(), charge["authorization_id"].as_str()), (Some(250), Some(id)));
    assert_eq!(charge["status"], "approved");

    // 250 was taken and 350 released: 750 is left.
    assert_eq!(bank.charge("charge-2", &charge_body(750, OTHER_VISA), &[]).await.unwrap().status(), 201);
    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["authorizations"]["held"], json!({}));
    assert_eq!(ledger["totals"]["by_currency"]["USD"]["charged"], 1_000);

    // The same key replays; another capture, or a void, finds nothing held.
    let again = capture(&bank, id, "capture-1", Some(250)).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap()["charge_id"], charge_id);
    assert_eq!(code_of(capture(&bank, id, "capture-2", Some(100)).await).await, (409, "invalid_state".into()));
    assert_eq!(code_of(void(&bank, id, "void-1").await).await, (409, "invalid_state".into()));
    assert_eq!(bank.charge_count().await, 3, "one capture charge, however often it is asked");

    // The capture's charge refunds like any charge, back to the card.
    let refund = bank
        .client
        .post(bank.at(&format!("/v1/charges/{charge_id}/refunds")))
        .header("Idempotency-Key", "refund-1")
        .json(&json!({"amount": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 201);
    assert_eq!(bank.charge("charge-3", &charge_body(100, OTHER_VISA), &[]).await.unwrap().status(), 201);
}

#[tokio::test]
async fn a_capture_without_an_amount_takes_all_and_a_void_gives_all_back() {
    let bank = TestBank::start_with(BankConfig { default_balance: 1_000, ..BankConfig::default() }).await;
    let whole = authorize(&bank, "auth-whole", 400, OTHER_VISA).await;
    let captured: Value = capture(&bank, whole["id"].as_str().unwrap(), "cap", None).await.json().await.unwrap();
    assert_eq!(captured["captured_amount"], 400);

    let voided_hold = authorize(&bank, "auth-void", 600, OTHER_VISA).await;
    let id = voided_hold["id"].as_str().unwrap();
    let voided = void(&bank, id, "void").await;
    assert_eq!(voided.status(), 200);
    let voided: Value = voided.json().await.unwrap();
    assert_eq!((voided["status"].as_str(), voided["captured_amount"].as_i64()), (Some("voided"), Some(0)));
    assert!(voided["charge_id"].is_null());
    assert_eq!(void(&bank, id, "void").await.headers()["idempotent-replayed"], "true");
    assert_eq!(code_of(capture(&bank, id, "cap-after-void", None).await).await, (409, "invalid_state".into()));
    // The 600 is back: 600 of the 1,000 - 400 captured.
    assert_eq!(bank.charge("after", &charge_body(600, OTHER_VISA), &[]).await.unwrap().status(), 201);
    let ledger = bank.ledger().await;
    assert_eq!(ledger_authorization(&ledger, id)["status"], "voided");
    assert_eq!(ledger["totals"]["authorizations"]["voided"], 1);
    assert_eq!(ledger["totals"]["authorizations"]["captured"], 1);
}

#[tokio::test]
async fn bad_captures_are_refused_and_change_nothing() {
    let bank = TestBank::start().await;
    let held = authorize(&bank, "auth", 500, APPROVE).await;
    let id = held["id"].as_str().unwrap();
    for amount in [501, 0, -5] {
        let (status, code) = code_of(capture(&bank, id, &format!("over-{amount}"), Some(amount)).await).await;
        assert_eq!((status, code.as_str()), (422, "validation_failed"), "capture of {amount}");
    }
    assert_eq!(code_of(capture(&bank, "au_nope", "k", None).await).await, (404, "not_found".into()));
    assert_eq!(code_of(void(&bank, "au_nope", "k").await).await, (404, "not_found".into()));
    let unknown_field = post(&bank, &format!("/v1/authorizations/{id}/void"), "v", Some(json!({"x": 1})), None).await;
    assert_eq!(unknown_field.status(), 422);
    // The same authorization key with another amount is refused, not a second hold.
    let reused = post(&bank, "/v1/authorizations", "auth", Some(charge_body(900, APPROVE)), None).await;
    assert_eq!(code_of(reused).await, (422, "idempotency_key_reused".into()));
    let ledger = bank.ledger().await;
    assert_eq!(ledger["authorizations"].as_array().unwrap().len(), 1);
    assert_eq!(ledger_authorization(&ledger, id)["status"], "authorized");
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn a_declined_authorization_holds_nothing() {
    let bank = TestBank::start().await;
    let response = post(&bank, "/v1/authorizations", "declined", Some(charge_body(500, DECLINE)), None).await;
    assert_eq!(response.status(), 402);
    let declined: Value = response.json().await.unwrap();
    assert_eq!(
        (declined["status"].as_str(), declined["decline_code"].as_str()),
        (Some("declined"), Some("card_declined"))
    );
    let id = declined["id"].as_str().unwrap();
    assert_eq!(code_of(capture(&bank, id, "c", None).await).await, (409, "invalid_state".into()));
    assert_eq!(bank.ledger().await["totals"]["authorizations"]["declined"], 1);
}

#[tokio::test]
async fn a_hold_expires_and_its_amount_comes_back() {
    let config = BankConfig { default_balance: 500, authorization_ttl_s: 1, ..BankConfig::default() };
    let bank = TestBank::start_with(config).await;
    let held = authorize(&bank, "short", 500, OTHER_VISA).await;
    let id = held["id"].as_str().unwrap().to_owned();
    let expired = wait_for("the hold to expire", Duration::from_secs(10), || async {
        let authorization = bank.get_json(&format!("/v1/authorizations/{id}")).await;
        (authorization["status"] == "expired").then_some(authorization)
    })
    .await;
    assert_eq!(expired["closed_at"], expired["expires_at"]);
    assert_eq!(code_of(capture(&bank, &id, "late", None).await).await, (409, "invalid_state".into()));
    assert_eq!(code_of(void(&bank, &id, "late").await).await, (409, "invalid_state".into()));
    assert_eq!(bank.charge("after", &charge_body(500, OTHER_VISA), &[]).await.unwrap().status(), 201);
    assert_eq!(bank.ledger().await["totals"]["authorizations"]["expired"], 1);
}

#[tokio::test]
async fn each_operation_is_found_by_its_key_or_surely_not_done() {
    let bank = TestBank::start().await;
    let status = |path: String| {
        let bank = &bank;
        async move { bank.client.get(bank.at(&path)).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/v1/authorizations?idempotency_key=a".into()).await, 404);
    let held = authorize(&bank, "a", 300, APPROVE).await;
    let id = held["id"].as_str().unwrap();
    assert_eq!(bank.get_json("/v1/authorizations?idempotency_key=a").await["id"], id);
    assert_eq!(status("/v1/captures?idempotency_key=c".into()).await, 404);
    assert_eq!(status("/v1/voids?idempotency_key=v".into()).await, 404);
    capture(&bank, id, "c", Some(100)).await;
    assert_eq!(bank.get_json("/v1/captures?idempotency_key=c").await["captured_amount"], 100);
    assert_eq!(status("/v1/voids?idempotency_key=v".into()).await, 404, "a refused void is not a void");
    assert_eq!(status("/v1/captures".into()).await, 400);
    assert_eq!(status("/v1/voids?idempotency_key=v&x=1".into()).await, 400);
}

#[tokio::test]
async fn a_capture_and_a_void_racing_on_one_hold_never_both_commit() {
    let bank = Arc::new(TestBank::start_with(BankConfig { default_balance: 100_000, ..BankConfig::default() }).await);
    for round in 0..20 {
        let held = authorize(&bank, &format!("race-{round}"), 1_000, OTHER_VISA).await;
        let id = held["id"].as_str().unwrap().to_owned();
        let capturing = {
            let (bank, id) = (Arc::clone(&bank), id.clone());
            tokio::spawn(async move { capture(&bank, &id, &format!("cap-{round}"), Some(600)).await.status().as_u16() })
        };
        let voiding = {
            let (bank, id) = (Arc::clone(&bank), id.clone());
            tokio::spawn(async move { void(&bank, &id, &format!("void-{round}")).await.status().as_u16() })
        };
        let (captured, voided) = (capturing.await.unwrap(), voiding.await.unwrap());
        assert!(matches!((captured, voided), (200, 409) | (409, 200)), "round {round}: {captured} / {voided}");
        let status = bank.get_json(&format!("/v1/authorizations/{id}")).await["status"].clone();
        assert_eq!(status, if captured == 200 { "captured" } else { "voided" });
    }
    let ledger = bank.ledger().await;
    let totals = &ledger["totals"]["authorizations"];
    assert_eq!(totals["captured"].as_u64().unwrap() + totals["voided"].as_u64().unwrap(), 20);
    assert_eq!(ledger["totals"]["charges"], totals["captured"], "a charge per capture, none per void");
}

#[tokio::test]
async fn fifty_concurrent_authorizations_with_one_key_hold_once() {
    let bank = Arc::new(TestBank::start_with(BankConfig { default_balance: 1_000, ..BankConfig::default() }).await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let bank = Arc::clone(&bank);
        tasks.push(tokio::spawn(async move { authorize(&bank, "same", 800, OTHER_VISA).await["id"].clone() }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every answer is the same hold");
    assert_eq!(bank.ledger().await["totals"]["authorizations"]["held"]["USD"], 800);
}

#[tokio::test]
async fn an_ambiguous_capture_commits_and_loses_its_answer_and_a_retry_replays_it() {
    let bank = TestBank::start_with(BankConfig { seed: Some(5), ..BankConfig::default() }).await;
    let held = authorize(&bank, "amb", 900, APPROVE).await;
    let id = held["id"].as_str().unwrap();
    let path = format!("/v1/authorizations/{id}/capture");
    let lost = bank
        .client
        .post(bank.at(&path))
        .header("Idempotency-Key", "amb-capture")
        .header("X-Chaos-Fault", "ambiguous")
        .send()
        .await;
    assert!(matches!(Seen::of(&lost), Seen::Status(500) | Seen::NoResponse), "{:?}", Seen::of(&lost));
    assert_eq!(bank.get_json("/v1/captures?idempotency_key=amb-capture").await["status"], "captured");
    let retry = post(&bank, &path, "amb-capture", None, None).await;
    assert_eq!((retry.status().as_u16(), &retry.headers()["idempotent-replayed"]), (200, &"true".parse().unwrap()));
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn a_hung_void_commits_late_after_the_client_gave_up() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"hang_ms": 1_500})).await;
    let held = authorize(&bank, "hang", 700, APPROVE).await;
    let id = held["id"].as_str().unwrap().to_owned();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let result = impatient
        .post(bank.at(&format!("/v1/authorizations/{id}/void")))
        .header("Idempotency-Key", "late-void")
        .header("X-Chaos-Fault", "timeout")
        .send()
        .await;
    assert!(result.expect_err("the client times out").is_timeout());
    assert_eq!(bank.get_json(&format!("/v1/authorizations/{id}")).await["status"], "authorized", "not yet");
    wait_for("the late void", Duration::from_secs(20), || async {
        (bank.get_json(&format!("/v1/authorizations/{id}")).await["status"] == "voided").then_some(())
    })
    .await;
}
