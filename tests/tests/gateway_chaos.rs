//! The gateway through a failing bank: the breaker, released keys, processing payments settled by
//! the reconciler, and the gateway and the bank's ledger agreeing one-to-one after chaos.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{MERCHANT_A, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

async fn setup() -> (TestBank, TestGateway) {
    let bank = TestBank::start_with(tests::BankConfig { seed: Some(7), ..Default::default() }).await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    (bank, gateway)
}

async fn bank_requests(bank: &TestBank) -> u64 {
    bank.stats().await["requests"].as_u64().unwrap()
}

#[tokio::test]
async fn an_outage_opens_the_breaker_then_calls_fail_fast_until_the_bank_recovers() {
    let (bank, gateway) = setup().await;
    bank.client.post(bank.at("/chaos/presets/outage")).send().await.unwrap();

    // Failing payments until the breaker opens: each is 503 and charges nothing.
    let mut codes = Vec::new();
    for i in 0..8 {
        let response = gateway.pay(&format!("out-{i}"), &payment_body(100, APPROVE, "o")).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().get("retry-after").is_some());
        codes.push(response.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes[0], "bank_unavailable");
    assert_eq!(codes.last().unwrap(), "circuit_open", "{codes:?}");

    // Open: the bank is not even asked.
    let before = bank_requests(&bank).await;
    for i in 0..5 {
        let response = gateway.pay(&format!("fast-{i}"), &payment_body(100, APPROVE, "o")).await;
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "circuit_open");
    }
    assert_eq!(bank_requests(&bank).await, before, "no request reached the bank while open");

    // The bank recovers; after the open period the probes succeed and payments go through,
    // including under a key that was refused before (it was released).
    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    wait_for("the breaker to close", Duration::from_secs(15), || async {
        let response = gateway.pay("out-0", &payment_body(100, APPROVE, "o")).await;
        (response.status() == 201).then_some(())
    })
    .await;
    for i in 0..5 {
        assert_eq!(gateway.pay(&format!("after-{i}"), &payment_body(100, APPROVE, "o")).await.status(), 201);
    }
    assert_eq!(bank.charge_count().await, 6);
}

#[tokio::test]
async fn a_throttling_bank_gets_503_and_the_key_is_free_to_retry() {
    let (bank, gateway) = setup().await;
    bank.patch_chaos(json!({"throttle_rate": 1.0, "retry_after_s": 0})).await;
    let response = gateway.pay("thr", &payment_body(100, APPROVE, "o")).await;
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "bank_unavailable");
    assert_eq!(bank.charge_count().await, 0);

    bank.patch_chaos(json!({"throttle_rate": 0.0})).await;
    let retried = gateway.pay("thr", &payment_body(100, APPROVE, "o")).await;
    assert_eq!(retried.status(), 201, "the released key charges normally");
    assert!(retried.headers().get("idempotent-replayed").is_none());
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn an_unknown_outcome_is_202_processing_and_the_reconciler_settles_it() {
    let (bank, gateway) = setup().await;
    // Every answer is lost after the bank commits, inquiries included.
    bank.patch_chaos(json!({"ambiguous_rate": 1.0})).await;
    let body = payment_body(2_500, APPROVE, "amb");
    let response = gateway.pay("amb-1", &body).await;
    assert_eq!(response.status(), 202);
    let payment: Value = response.json().await.unwrap();
    assert_eq!(payment["status"], "processing");
    let id = payment["id"].as_str().unwrap().to_owned();
    let replay = gateway.pay("amb-1", &body).await;
    assert_eq!(replay.status(), 202, "replayed as processing until settled");

    bank.patch_chaos(json!({"ambiguous_rate": 0.0})).await;
    wait_for("the reconciler to settle the payment", Duration::from_secs(10), || async {
        (gateway.payment(&id).await["status"] == "succeeded").then_some(())
    })
    .await;
    let settled = gateway.pay("amb-1", &body).await;
    assert_eq!(settled.status(), 201, "later replays return the settled outcome");
    let settled: Value = settled.json().await.unwrap();
    assert_eq!(settled["status"], "succeeded");
    let charges = bank.charges_by_id().await;
    assert_eq!(charges.len(), 1, "charged once although every answer was lost");
    assert_eq!(charges[settled["bank_charge_id"].as_str().unwrap()]["amount"], 2_500);
    assert_eq!(settled["id"], id.as_str());
}

#[tokio::test]
async fn a_hung_bank_commits_late_and_the_reconciler_finds_the_charge() {
    let (bank, gateway) = setup().await;
    bank.patch_chaos(json!({"timeout_rate": 1.0, "hang_ms": 800})).await;
    let response = gateway.pay("hang-1", &payment_body(700, APPROVE, "o")).await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    bank.patch_chaos(json!({"timeout_rate": 0.0})).await;
    wait_for("the late commit to be reconciled", Duration::from_secs(10), || async {
        (gateway.payment(&id).await["status"] == "succeeded").then_some(())
    })
    .await;
    // Every hung attempt committed late under the same bank key: still one charge.
    let ledger_settled = wait_for("the hung attempts to finish", Duration::from_secs(10), || async {
        let stats = bank.stats().await;
        (stats["injected"]["timeout"].as_u64().unwrap() >= 1).then_some(())
    });
    ledger_settled.await;
    assert_eq!(bank.charge_count().await, 1);
}

/// Every payment of merchant A, following the cursor through all pages.
async fn all_payments(gateway: &TestGateway) -> Vec<Value> {
    let mut all = Vec::new();
    let mut query = "/v1/payments?limit=100".to_owned();
    loop {
        let page: Value = gateway.get_as(MERCHANT_A.1, &query).await.json().await.unwrap();
        let data = page["data"].as_array().unwrap();
        all.extend(data.iter().cloned());
        match data.last() {
            Some(last) if page["has_more"] == true => {
                query = format!("/v1/payments?limit=100&starting_after={}", last["id"].as_str().unwrap());
            }
            _ => return all,
        }
    }
}

/// A careful client: retries the same key on 409, 503 and network errors until it gets a final
/// answer or a 202 (processing).
async fn pay_until_answered(gateway: &TestGateway, key: &str, body: &Value) -> (u16, Value) {
    for _ in 0..200 {
        let response = gateway
            .client
            .post(gateway.at("/v1/payments"))
            .bearer_auth(MERCHANT_A.1)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        let Ok(response) = response else { continue };
        let status = response.status().as_u16();
        if matches!(status, 201 | 202 | 402) {
            return (status, response.json().await.unwrap());
        }
        assert!(matches!(status, 409 | 503), "unexpected {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer for {key}");
}

#[tokio::test]
async fn under_heavy_chaos_the_gateway_and_the_ledger_agree_one_to_one() {
    let (bank, gateway) = setup().await;
    bank.patch_chaos(json!({
        "ambiguous_rate": 0.2, "timeout_rate": 0.1, "reset_rate": 0.15, "failure_rate": 0.1,
        "hang_ms": 400,
    }))
    .await;
    let gateway = std::sync::Arc::new(gateway);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let gateway = std::sync::Arc::clone(&gateway);
        tasks.push(tokio::spawn(async move {
            let key = format!("chaos-{i}");
            let card = if i % 7 == 0 { "4000000000000002" } else { APPROVE };
            let (status, payment) = pay_until_answered(&gateway, &key, &payment_body(1_000 + i, card, "chaos")).await;
            (key, status, payment["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }

    // Quiesce: chaos off, then every processing payment settles.
    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    let payments: Vec<Value> = wait_for("every payment to settle", Duration::from_secs(30), || async {
        let all = all_payments(&gateway).await;
        all.iter().all(|p| p["status"] != "processing").then_some(all)
    })
    .await;

    let ledger = bank.charges_by_id().await;
    let succeeded: Vec<&Value> = payments.iter().filter(|p| p["status"] == "succeeded").collect();
    // Every approved bank charge belongs to exactly one succeeded payment, for the same amount.
    for (charge_id, charge) in &ledger {
        if charge["status"] == "approved" {
            let owners: Vec<&&Value> = succeeded.iter().filter(|p| p["bank_charge_id"] == charge_id.as_str()).collect();
            let [payment] = owners.as_slice() else {
                panic!("charge {charge_id} has {} succeeded payments: {owners:?}", owners.len());
            };
            assert_eq!(payment["amount"], charge["amount"]);
        }
    }
    // Every succeeded payment is charged (bank keys are unique per client key by construction).
    for payment in &succeeded {
        let charge = payment["bank_charge_id"].as_str().and_then(|id| ledger.get(id));
        assert_eq!(charge.map(|c| c["status"].clone()), Some(json!("approved")), "{} not charged", payment["id"]);
    }
    // Each client key ended with exactly one payment the client saw; it is settled, and no key
    // was charged twice.
    let keys: HashSet<&str> = answered.iter().map(|(key, _, _)| key.as_str()).collect();
    assert_eq!(keys.len(), 40);
    for (key, status, id) in &answered {
        let payment = payments.iter().find(|p| p["id"] == id.as_str()).unwrap_or_else(|| panic!("{key}: {id} missing"));
        if *status == 201 {
            assert_eq!(payment["status"], "succeeded", "{key}");
        }
    }
    let charged_per_order: usize = ledger.values().filter(|c| c["status"] == "approved").count();
    assert_eq!(charged_per_order, succeeded.len());
}
