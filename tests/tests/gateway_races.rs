//! Every mutating verb raced against itself and the others on one payment, on every store, and
//! checked against the bank's ledger: duplicate payments, many refunds with distinct keys, the
//! same refund key twice, over-refunds and "refund the rest", all at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{RedisServer, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

/// One answer to a racing request: status, `code` (for problems) and body.
type Seen = (u16, String, Value);

async fn send(gateway: &TestGateway, payment_id: &str, key: &str, body: Option<Value>) -> Seen {
    let response = gateway.refund(payment_id, key, body).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned(), body)
}

/// Pays 1000 and then sends, all at once: 20 refunds of 100 under distinct keys, each key twice;
/// 3 refunds of 600; 2 "refund the rest"; one key reused with another amount; and the payment
/// itself again under its key. Then checks that the gateway, the answers and the ledger agree.
async fn race_on_one_payment(gateway: &Arc<TestGateway>, bank: &TestBank, round: usize) {
    let tag = format!("r{round}");
    let created = gateway.pay(&format!("{tag}-pay"), &payment_body(1_000, APPROVE, &tag)).await;
    assert_eq!(created.status(), 201);
    let payment: Value = created.json().await.unwrap();
    let id = payment["id"].as_str().unwrap().to_owned();

    let mut tasks = Vec::new();
    let mut spawn = |key: String, body: Option<Value>| {
        let (gateway, id) = (Arc::clone(gateway), id.clone());
        tasks.push(tokio::spawn(async move { (key.clone(), body.clone(), send(&gateway, &id, &key, body).await) }));
    };
    for i in 0..20 {
        for _ in 0..2 {
            spawn(format!("{tag}-hundred-{i}"), Some(json!({"amount": 100})));
        }
    }
    for i in 0..3 {
        spawn(format!("{tag}-six-hundred-{i}"), Some(json!({"amount": 600})));
    }
    for i in 0..2 {
        spawn(format!("{tag}-rest-{i}"), None);
    }
    spawn(format!("{tag}-hundred-0"), Some(json!({"amount": 50})));
    let duplicate = {
        let gateway = Arc::clone(gateway);
        let tag = tag.clone();
        tokio::spawn(async move { gateway.pay(&format!("{tag}-pay"), &payment_body(1_000, APPROVE, &tag)).await })
    };
    let mut seen: Vec<(String, Option<Value>, Seen)> = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    let replay = duplicate.await.unwrap();
    assert_eq!(replay.status(), 201, "{tag}: the payment replays while refunds race");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], id.as_str());

    // Every answer is one the contract allows, and says why.
    let mut refunded_by_key: HashMap<String, (String, i64)> = HashMap::new();
    for (key, body, (status, code, answer)) in &seen {
        match status {
            201 => {
                let refund = (answer["id"].as_str().unwrap().to_owned(), answer["amount"].as_i64().unwrap());
                if let Some(earlier) = refunded_by_key.insert(key.clone(), refund.clone()) {
                    assert_eq!(earlier, refund, "{tag}: {key} answered two different refunds");
                }
                assert_eq!(answer["status"], "succeeded");
            }
            409 => assert!(matches!(code.as_str(), "idempotency_key_in_use"), "{tag} {key}: 409 {code}"),
            422 => {
                assert!(matches!(code.as_str(), "validation_failed" | "idempotency_key_reused"), "{tag} {key}: {code}");
                if code == "validation_failed" {
                    assert!(answer["detail"].as_str().unwrap().contains("left to refund"), "{tag}: {answer}");
                }
            }
            other => panic!("{tag} {key} {body:?}: unexpected {other} {answer}"),
        }
    }

    // Nothing pending is left, and the gateway, the answers and the bank agree to the unit.
    let settled = wait_for("no refund left pending", Duration::from_secs(20), || async {
        let payment = gateway.payment(&id).await;
        (payment["status"] != "processing").then_some(payment)
    })
    .await;
    let charge = &bank.charges_by_id().await[settled["bank_charge_id"].as_str().unwrap()];
    let answered: i64 = refunded_by_key.values().map(|(_, amount)| amount).sum();
    let distinct: HashSet<&String> = refunded_by_key.values().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), refunded_by_key.len(), "{tag}: one refund per key");
    assert_eq!(settled["refunded_amount"], charge["refunded_amount"], "{tag}: the gateway agrees with the bank");
    assert_eq!(charge["refunded_amount"].as_i64().unwrap(), answered, "{tag}: and with what clients were told");
    assert_eq!(charge["refunds"].as_array().unwrap().len(), refunded_by_key.len(), "{tag}: one bank refund each");
    assert!(answered <= 1_000, "{tag}: never more than was charged");
    let expected = if answered == 1_000 { "refunded" } else { "partially_refunded" };
    assert_eq!(settled["status"], expected, "{tag}");
    // The same keys again replay what they answered first.
    for (key, (refund_id, amount)) in refunded_by_key.iter().take(3) {
        let again = send(gateway, &id, key, Some(json!({"amount": amount}))).await;
        if again.0 == 201 {
            assert_eq!(again.2["id"], refund_id.as_str(), "{tag} {key}");
        }
    }
}

async fn race_suite(store: &str) {
    let bank = TestBank::start().await;
    // Latency with jitter spreads the racing requests over each other's bank calls.
    bank.patch_chaos(json!({"latency": {"base_ms": 2, "jitter_ms": 15}})).await;
    let gateway = Arc::new(TestGateway::start(TestGateway::config(&bank.url, store)).await);
    for round in 0..4 {
        race_on_one_payment(&gateway, &bank, round).await;
    }
}

#[tokio::test]
async fn every_verb_races_on_one_payment_in_memory() {
    race_suite("memory").await;
}

#[tokio::test]
async fn every_verb_races_on_one_payment_on_redb() {
    let dir = std::env::temp_dir().join(format!("rp-races-{}", uuid::Uuid::new_v4()));
    race_suite(&format!("redb:{}", dir.join("store.redb").display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn every_verb_races_on_one_payment_on_redis() {
    let Some(redis) = RedisServer::start("every_verb_races_on_one_payment_on_redis").await else { return };
    race_suite(&redis.url()).await;
}

/// Two gateways on one Redis: the same races, each request to either instance.
#[tokio::test]
async fn refunds_race_across_two_instances_on_redis() {
    let Some(redis) = RedisServer::start("refunds_race_across_two_instances").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 2, "jitter_ms": 15}})).await;
    let first = Arc::new(TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await);
    let second = Arc::new(TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await);
    let created = first.pay("two-pay", &payment_body(1_000, APPROVE, "two")).await;
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let gateway = Arc::clone(if i % 2 == 0 { &first } else { &second });
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            send(&gateway, &id, &format!("two-{i}"), Some(json!({"amount": 100}))).await.0
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 10, "over-refunds are 422: {statuses:?}");
    let payment = first.payment(&id).await;
    assert_eq!((payment["refunded_amount"].as_i64(), payment["status"].as_str()), (Some(1_000), Some("refunded")));
    let charge = &bank.charges_by_id().await[payment["bank_charge_id"].as_str().unwrap()];
    assert_eq!(charge["refunded_amount"], 1_000);
}

/// A refund key is the merchant's, per payment: the same key on two payments is two refunds,
/// each reaching the bank under its own key.
#[tokio::test]
async fn the_same_refund_key_on_two_payments_refunds_both() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    // Past the retention of the first use, as a merchant reusing its key next day would be.
    config.idempotency_retention_s = 1;
    let gateway = TestGateway::start(config).await;
    let mut ids = Vec::new();
    for order in ["a", "b"] {
        let paid = gateway.pay(&format!("key-{order}"), &payment_body(500, APPROVE, order)).await;
        ids.push(paid.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(send(&gateway, &ids[0], "refund-1", None).await.0, 201);
    wait_for("the first use of the key to expire", Duration::from_secs(10), || async {
        let seen = send(&gateway, &ids[1], "refund-1", None).await;
        (seen.0 != 422 || seen.1 != "idempotency_key_reused").then_some(seen)
    })
    .await;
    for id in &ids {
        let payment = gateway.payment(id).await;
        assert_eq!(payment["status"], "refunded", "{id}");
        let charge = &bank.charges_by_id().await[payment["bank_charge_id"].as_str().unwrap()];
        assert_eq!(charge["refunded_amount"], 500, "{id}: refunded at the bank too");
    }
}
