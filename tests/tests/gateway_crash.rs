//! kill -9 the gateway while payments are in flight at the bank, restart it on the same embedded
//! store, and check that every payment settles and none is charged twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tests::process::GatewayProcess;
use tests::{MERCHANT_A, TestBank, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

async fn start_gateway(bank_url: &str, store: &str) -> GatewayProcess {
    GatewayProcess::start(env!("CARGO_BIN_EXE_gateway-under-test"), bank_url, store, &["--log", "warn"]).await
}

async fn pay(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{url}/v1/payments"))
        .bearer_auth(MERCHANT_A.1)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
}

#[tokio::test]
async fn a_gateway_killed_mid_flight_loses_nothing_and_charges_nothing_twice() {
    let bank = TestBank::start().await;
    // Half the charges hang at the bank and commit after the gateway is dead; the others are
    // still waiting out their latency when it dies, and the bank never processes them.
    bank.patch_chaos(json!({"timeout_rate": 0.5, "hang_ms": 600, "latency": {"base_ms": 300}, "seed": 3})).await;
    let dir = std::env::temp_dir().join(format!("rp-crash-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let store = format!("redb:{}", dir.join("gateway.redb").display());

    let gateway = start_gateway(&bank.url, &store).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("crash-{i}")).collect();
    let mut in_flight = Vec::new();
    for key in &keys {
        let (client, url, key) = (client.clone(), gateway.url.clone(), key.clone());
        in_flight
            .push(tokio::spawn(async move { pay(&client, &url, &key, &payment_body(900, APPROVE, "crash")).await }));
    }
    wait_for("every charge to reach the bank", Duration::from_secs(10), || async {
        (bank.stats().await["requests"].as_u64().unwrap() >= 20).then_some(())
    })
    .await;
    drop(gateway); // kill -9
    for request in in_flight {
        assert!(request.await.unwrap().is_err(), "no answer came from the dead gateway");
    }

    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    let gateway = start_gateway(&bank.url, &store).await;

    // Clients retry with the same keys until they get a final answer.
    let mut answers: HashMap<String, Value> = HashMap::new();
    for key in &keys {
        let payment = wait_for("a final answer", Duration::from_secs(20), || async {
            let response = pay(&client, &gateway.url, key, &payment_body(900, APPROVE, "crash")).await.ok()?;
            (response.status() == 201).then_some(())?;
            response.json::<Value>().await.ok()
        })
        .await;
        answers.insert(key.clone(), payment);
    }

    // Every payment the store holds settles; none stays processing.
    let all: Vec<Value> = wait_for("every payment to settle", Duration::from_secs(20), || async {
        let page: Value = client
            .get(format!("{}/v1/payments?limit=100", gateway.url))
            .bearer_auth(MERCHANT_A.1)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let data = page["data"].as_array()?.clone();
        data.iter().all(|p| p["status"] != "processing").then_some(data)
    })
    .await;

    // The ledger agrees: one approved charge per key, each belonging to the succeeded payment
    // the client was given; nothing else charged.
    let ledger = bank.charges_by_id().await;
    let approved: Vec<(&String, &Value)> = ledger.iter().filter(|(_, c)| c["status"] == "approved").collect();
    assert_eq!(approved.len(), keys.len(), "one charge per key");
    for (key, payment) in &answers {
        let charge_id = payment["bank_charge_id"].as_str().unwrap();
        assert_eq!(payment["status"], "succeeded", "{key}");
        assert_eq!(ledger[charge_id]["status"], "approved", "{key}: the client's payment is the charged one");
    }
    for (charge_id, _) in approved {
        let owners: Vec<&Value> = all.iter().filter(|p| p["bank_charge_id"] == charge_id.as_str()).collect();
        assert_eq!(owners.len(), 1, "{charge_id}: one payment");
        assert_eq!(owners[0]["status"], "succeeded", "{charge_id}");
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}

/// The same for the two ends of an authorization: captures and cancels in flight at the bank when
/// the gateway dies are settled after the restart (by the clients' retries or the reconciler), each
/// exactly once, and no hold is left.
#[tokio::test]
async fn a_gateway_killed_mid_capture_or_cancel_does_each_exactly_once() {
    let bank = TestBank::start().await;
    let dir = std::env::temp_dir().join(format!("rp-crash-hold-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let store = format!("redb:{}", dir.join("gateway.redb").display());
    let gateway = start_gateway(&bank.url, &store).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut held = Vec::new();
    for i in 0..10 {
        let body = tests::authorization_body(1_000 + i, APPROVE, "crash-hold");
        let response = pay(&client, &gateway.url, &format!("hold-{i}"), &body).await.unwrap();
        assert_eq!(response.status(), 201);
        held.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    // Half the verbs hang at the bank and commit after the gateway is dead.
    bank.patch_chaos(json!({"timeout_rate": 0.5, "hang_ms": 600, "latency": {"base_ms": 300}, "seed": 5})).await;
    let before = bank.stats().await["requests"].as_u64().unwrap();
    let verb = |i: usize| if i.is_multiple_of(2) { "capture" } else { "cancel" };
    let send = |client: reqwest::Client, url: String, id: String, i: usize| async move {
        client
            .post(format!("{url}/v1/payments/{id}/{}", verb(i)))
            .bearer_auth(MERCHANT_A.1)
            .header("Idempotency-Key", format!("verb-{i}"))
            .send()
            .await
    };
    let mut in_flight = Vec::new();
    for (i, id) in held.iter().enumerate() {
        in_flight.push(tokio::spawn(send(client.clone(), gateway.url.clone(), id.clone(), i)));
    }
    wait_for("every verb to reach the bank", Duration::from_secs(10), || async {
        (bank.stats().await["requests"].as_u64().unwrap() >= before + 10).then_some(())
    })
    .await;
    drop(gateway); // kill -9
    for request in in_flight {
        assert!(request.await.unwrap().is_err(), "no answer came from the dead gateway");
    }

    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    let gateway = start_gateway(&bank.url, &store).await;
    for (i, id) in held.iter().enumerate() {
        let done = wait_for("the verb's final answer", Duration::from_secs(20), || async {
            let response = send(client.clone(), gateway.url.clone(), id.clone(), i).await.ok()?;
            (response.status() == 200).then_some(())?;
            response.json::<Value>().await.ok()
        })
        .await;
        assert_eq!(done["status"], if verb(i) == "capture" { "succeeded" } else { "canceled" }, "{done}");
    }
    let ledger = bank.ledger().await;
    let totals = &ledger["totals"]["authorizations"];
    assert_eq!((totals["captured"].as_u64(), totals["voided"].as_u64()), (Some(5), Some(5)), "{totals}");
    assert_eq!((totals["authorized"].as_u64(), ledger["totals"]["charges"].as_u64()), (Some(0), Some(5)));
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}
