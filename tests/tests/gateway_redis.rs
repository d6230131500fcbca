//! The gateway on Redis: fail closed when Redis is gone, recover without a restart, and two
//! gateway instances sharing one Redis charge duplicates once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tests::{RedisServer, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

#[tokio::test]
async fn redis_down_is_503_store_unavailable_and_nothing_is_charged_until_it_is_back() {
    let Some(mut redis) = RedisServer::start("redis_down_is_503").await else { return };
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await;
    assert_eq!(gateway.pay("before", &payment_body(100, APPROVE, "o")).await.status(), 201);

    redis.kill();
    for i in 0..3 {
        let response = gateway.pay(&format!("down-{i}"), &payment_body(100, APPROVE, "o")).await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.json::<Value>().await.unwrap()["code"], "store_unavailable");
    }
    let ready = gateway.client.get(gateway.at("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(bank.charge_count().await, 1, "fail closed: never charge without the idempotency guarantee");

    redis.restart().await;
    wait_for("payments to work again", Duration::from_secs(20), || async {
        (gateway.pay("after", &payment_body(100, APPROVE, "o")).await.status() == 201).then_some(())
    })
    .await;
    assert_eq!(bank.charge_count().await, 2);
}

#[tokio::test]
async fn two_gateways_on_one_redis_charge_duplicates_once() {
    let Some(redis) = RedisServer::start("two_gateways_on_one_redis").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(serde_json::json!({"latency": {"base_ms": 30, "jitter_ms": 30}})).await;
    let first = Arc::new(TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await);
    let second = Arc::new(TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await);

    let mut tasks = Vec::new();
    for key in 0..10 {
        for copy in 0..6 {
            let gateway = Arc::clone(if copy % 2 == 0 { &first } else { &second });
            tasks.push(tokio::spawn(async move {
                let key = format!("dup-{key}");
                let body = payment_body(500, APPROVE, &key);
                // A careful client: retries 409 until it gets the answer.
                for _ in 0..100 {
                    let response = gateway.pay(&key, &body).await;
                    match response.status().as_u16() {
                        201 => {
                            return (key, response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
                        }
                        409 => tokio::time::sleep(Duration::from_millis(20)).await,
                        other => panic!("unexpected {other}"),
                    }
                }
                panic!("no answer for {key}");
            }));
        }
    }
    let mut by_key: std::collections::HashMap<String, Vec<String>> = Default::default();
    for task in tasks {
        let (key, id) = task.await.unwrap();
        by_key.entry(key).or_default().push(id);
    }
    for (key, ids) in &by_key {
        assert!(ids.iter().all(|id| id == &ids[0]), "{key}: every copy saw the same payment");
    }
    assert_eq!(bank.charge_count().await, 10, "ten keys, ten charges, whichever instance answered");
}

#[tokio::test]
async fn reconcilers_of_two_instances_settle_each_payment_once() {
    let Some(redis) = RedisServer::start("reconcilers_of_two_instances").await else { return };
    let bank = TestBank::start().await;
    let first = TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await;
    let second = TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await;

    // Every answer is lost: each payment is left processing, on either instance.
    bank.patch_chaos(serde_json::json!({"ambiguous_rate": 1.0})).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let gateway = if i % 2 == 0 { &first } else { &second };
        let response = gateway.pay(&format!("rec-{i}"), &payment_body(800, APPROVE, "rec")).await;
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    bank.patch_chaos(serde_json::json!({"ambiguous_rate": 0.0})).await;

    // Both reconcilers race over the same payments; each settles exactly once at the bank.
    for id in &ids {
        wait_for("the payment to settle", Duration::from_secs(15), || async {
            (first.payment(id).await["status"] == "succeeded").then_some(())
        })
        .await;
        assert_eq!(second.payment(id).await["status"], "succeeded");
    }
    for i in 0..6 {
        let replay = second.pay(&format!("rec-{i}"), &payment_body(800, APPROVE, "rec")).await;
        assert_eq!(replay.status(), 201, "replays on either instance return the settled outcome");
    }
    assert_eq!(bank.charge_count().await, 6);
}
