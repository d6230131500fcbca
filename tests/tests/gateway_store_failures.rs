//! The store failing at every step of a payment and of a refund: before the claim, between the
//! bank's answer and the write of the outcome, during the release of a key, and a Redis that comes
//! back without its data (with and without the gateway that was running). Whatever happens, the
//! client is never told "nothing was charged" when the bank charged, and no retry charges twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use payment_api::Config;
use serde_json::{Value, json};
use tests::{RedisServer, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

/// A gateway whose bank calls may take long enough to kill Redis during one.
fn patient(bank: &TestBank, redis: &RedisServer) -> Config {
    let mut config = TestGateway::config(&bank.url, &redis.url());
    config.attempt_timeout_ms = 3_000;
    config.deadline_ms = 6_000;
    config.lease_ms = 10_000;
    config
}

/// Sends `send` and kills Redis once the bank holds the request (it answers after its latency),
/// then returns the answer.
async fn kill_redis_during_the_bank_call<F>(bank: &TestBank, redis: &mut RedisServer, send: F) -> (u16, Value)
where
    F: std::future::Future<Output = reqwest::Response> + Send + 'static,
{
    let before = bank.stats().await["requests"].as_u64().unwrap();
    let answer = tokio::spawn(async move {
        let response = send.await;
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    });
    wait_for("the bank to receive the call", Duration::from_secs(10), || async {
        (bank.stats().await["requests"].as_u64().unwrap() > before).then_some(())
    })
    .await;
    redis.kill();
    answer.await.unwrap()
}

/// Retries `key` (as a careful client does) until it is answered with something other than a
/// 409 or 503.
async fn retry_until_answered(gateway: &TestGateway, key: &str, body: &Value) -> (u16, Value) {
    wait_for("a final answer to the retry", Duration::from_secs(30), || async {
        let response = gateway.pay(key, body).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        (!matches!(status, 409 | 503)).then_some((status, answer))
    })
    .await
}

fn assert_outcome_unknown(status: u16, answer: &Value) {
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "outcome_unknown", "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(!detail.contains("nothing was charged"), "never a false 'nothing was charged': {detail}");
    assert!(detail.contains("same Idempotency-Key"), "{detail}");
}

#[tokio::test]
async fn a_store_lost_after_the_bank_charged_is_not_called_nothing_charged_and_the_outcome_is_kept() {
    let Some(mut redis) = RedisServer::start_persistent("store_lost_after_the_charge").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 400, "jitter_ms": 0}})).await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let body = payment_body(1_234, APPROVE, "kept");

    let send = {
        let (gateway, body) = (Arc::clone(&gateway), body.clone());
        async move { gateway.pay("kept-1", &body).await }
    };
    let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
    assert_outcome_unknown(status, &answer);
    assert_eq!(bank.charge_count().await, 1, "the bank did charge");

    // While the store is down, retries are told the same truth; once it is back, the kept outcome
    // is written and the retry replays it.
    redis.restart().await;
    let (status, payment) = retry_until_answered(&gateway, "kept-1", &body).await;
    assert_eq!((status, payment["status"].as_str()), (201, Some("succeeded")), "{payment}");
    let charges = bank.charges_by_id().await;
    assert_eq!(charges.len(), 1, "charged once");
    assert!(charges.contains_key(payment["bank_charge_id"].as_str().unwrap()));
    assert_eq!(gateway.payment(payment["id"].as_str().unwrap()).await["status"], "succeeded");
}

#[tokio::test]
async fn a_redis_that_comes_back_empty_gets_the_kept_outcome_back_and_charges_nothing_twice() {
    let Some(mut redis) = RedisServer::start("redis_back_empty").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 400, "jitter_ms": 0}})).await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let body = payment_body(2_000, APPROVE, "empty");

    let send = {
        let (gateway, body) = (Arc::clone(&gateway), body.clone());
        async move { gateway.pay("empty-1", &body).await }
    };
    let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
    assert_outcome_unknown(status, &answer);

    redis.restart().await; // without persistence: everything it held is gone
    let (status, payment) = retry_until_answered(&gateway, "empty-1", &body).await;
    assert_eq!((status, payment["status"].as_str()), (201, Some("succeeded")), "{payment}");
    assert_eq!(bank.charge_count().await, 1, "the retry reached the bank as the same charge");
    // The payment is there again, listed and readable.
    assert_eq!(gateway.payment(payment["id"].as_str().unwrap()).await["status"], "succeeded");
    let replay = gateway.pay("empty-1", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], payment["id"]);
}

/// Defence in depth: the gateway that kept the outcome dies too, and Redis comes back empty. The
/// retry reaches the bank under the same bank key (merchant, client key, request), and the bank
/// answers with the charge it already made.
#[tokio::test]
async fn a_store_and_a_gateway_that_both_forgot_still_never_charge_twice() {
    let Some(mut redis) = RedisServer::start("store_and_gateway_forgot").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 400, "jitter_ms": 0}})).await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let body = payment_body(3_000, APPROVE, "forgot");

    let send = {
        let (gateway, body) = (Arc::clone(&gateway), body.clone());
        async move { gateway.pay("forgot-1", &body).await }
    };
    let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
    assert_outcome_unknown(status, &answer);
    Arc::into_inner(gateway).unwrap().stop().await;

    redis.restart().await;
    let restarted = TestGateway::start(patient(&bank, &redis)).await;
    bank.patch_chaos(json!({"latency": {"base_ms": 0, "jitter_ms": 0}})).await;
    let (status, payment) = retry_until_answered(&restarted, "forgot-1", &body).await;
    assert_eq!((status, payment["status"].as_str()), (201, Some("succeeded")), "{payment}");
    let charges = bank.charges_by_id().await;
    assert_eq!(charges.len(), 1, "charged once, though nothing remembered the first attempt");
    assert!(charges.contains_key(payment["bank_charge_id"].as_str().unwrap()));
}

#[tokio::test]
async fn a_store_lost_before_the_claim_is_503_and_charges_nothing() {
    let Some(mut redis) = RedisServer::start("store_lost_before_claim").await else { return };
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, &redis.url())).await;
    redis.kill();
    let response = gateway.pay("before-1", &payment_body(100, APPROVE, "before")).await;
    assert_eq!(response.status(), 503);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "store_unavailable");
    assert!(answer["detail"].as_str().unwrap().contains("nothing was charged"));
    assert_eq!(bank.charge_count().await, 0, "and nothing was");
}

/// The bank refused (surely nothing charged), and the store fails as the key is released: the
/// answer may say nothing was charged (true), the release is kept, and the key works again once
/// the store is back.
#[tokio::test]
async fn a_store_lost_during_the_release_says_nothing_charged_truthfully_and_frees_the_key_later() {
    let Some(mut redis) = RedisServer::start_persistent("store_lost_during_release").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"throttle_rate": 1.0, "retry_after_s": 0, "latency": {"base_ms": 400, "jitter_ms": 0}}))
        .await;
    let mut config = patient(&bank, &redis);
    config.max_attempts = 1;
    let gateway = Arc::new(TestGateway::start(config).await);
    let body = payment_body(700, APPROVE, "release");

    let send = {
        let (gateway, body) = (Arc::clone(&gateway), body.clone());
        async move { gateway.pay("release-1", &body).await }
    };
    let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
    assert_eq!(status, 503, "{answer}");
    assert!(matches!(answer["code"].as_str(), Some("store_unavailable" | "bank_unavailable")), "{answer}");
    assert_eq!(bank.charge_count().await, 0, "true: nothing was charged");

    bank.patch_chaos(json!({"throttle_rate": 0.0, "latency": {"base_ms": 0, "jitter_ms": 0}})).await;
    redis.restart().await;
    let (status, payment) = retry_until_answered(&gateway, "release-1", &body).await;
    assert_eq!((status, payment["status"].as_str()), (201, Some("succeeded")), "{payment}");
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn a_store_lost_after_the_bank_refunded_is_not_lost_and_never_refunds_twice() {
    let Some(mut redis) = RedisServer::start_persistent("store_lost_after_refund").await else { return };
    let bank = TestBank::start().await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let paid = gateway.pay("refund-pay", &payment_body(1_000, APPROVE, "refund")).await;
    let id = paid.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    bank.patch_chaos(json!({"latency": {"base_ms": 400, "jitter_ms": 0}})).await;

    let send = {
        let (gateway, id) = (Arc::clone(&gateway), id.clone());
        async move { gateway.refund(&id, "refund-1", Some(json!({"amount": 300}))).await }
    };
    let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "outcome_unknown", "{answer}");

    redis.restart().await;
    let refund = wait_for("the refund's answer", Duration::from_secs(30), || async {
        let response = gateway.refund(&id, "refund-1", Some(json!({"amount": 300}))).await;
        (response.status() == 201).then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(refund["amount"], 300);
    let payment = gateway.payment(&id).await;
    assert_eq!(
        (payment["refunded_amount"].as_i64(), payment["status"].as_str()),
        (Some(300), Some("partially_refunded"))
    );
    let charge = &bank.charges_by_id().await[payment["bank_charge_id"].as_str().unwrap()];
    assert_eq!(charge["refunded_amount"], 300, "refunded once");
    assert_eq!(charge["refunds"].as_array().unwrap().len(), 1);
}

/// Sends `first` and, while the bank holds it, makes the store forget the key's record (an
/// eviction, a failover that lost the last write), then sends `second` under the same key, which
/// finds the key free and becomes another payment. Returns both answers, the first's as it came.
async fn forget_the_record_during_the_bank_call(
    bank: &TestBank,
    redis: &RedisServer,
    gateway: &Arc<TestGateway>,
    key: &str,
    first: &Value,
    second: &Value,
) -> ((u16, Value), (u16, Value)) {
    let before = bank.stats().await["requests"].as_u64().unwrap();
    let first = {
        let (gateway, key, body) = (Arc::clone(gateway), key.to_owned(), first.clone());
        tokio::spawn(async move {
            let response = gateway.pay(&key, &body).await;
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        })
    };
    wait_for("the bank to receive the call", Duration::from_secs(10), || async {
        (bank.stats().await["requests"].as_u64().unwrap() > before).then_some(())
    })
    .await;
    redis.forget(&[&format!("rp:idem:{}:payment:{key}", tests::MERCHANT_A.0)]).await;
    let response = gateway.pay(key, second).await;
    let second = (response.status().as_u16(), response.json::<Value>().await.unwrap());
    (first.await.unwrap(), second)
}

async fn payments_of_order(gateway: &TestGateway, order: &str) -> Vec<Value> {
    let response = gateway.get_as(tests::MERCHANT_A.1, &format!("/v1/payments?order_id={order}")).await;
    let page: Value = response.json().await.unwrap();
    page["data"].as_array().unwrap().clone()
}

/// The same request retried after the store forgot its record is the same charge at the bank
/// (the bank key comes from the request), so the first payment is a ghost of the second: it ends
/// failed, pointing at the second, and only one payment says the money was taken.
#[tokio::test]
async fn a_payment_whose_record_was_forgot_and_retried_is_failed_as_a_ghost_of_the_retry() {
    let Some(redis) = RedisServer::start("record_forgot_same_request").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 600, "jitter_ms": 0}})).await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let body = payment_body(1_500, APPROVE, "ghost");

    let ((first_status, first), (status, retry)) =
        forget_the_record_during_the_bank_call(&bank, &redis, &gateway, "ghost-1", &body, &body).await;
    assert_eq!((status, retry["status"].as_str()), (201, Some("succeeded")), "{retry}");
    // The first request is told what the key answers (the retry's payment), or to retry.
    match first_status {
        409 => assert_eq!(first["code"], "idempotency_key_in_use", "{first}"),
        _ => assert_eq!((first_status, &first["id"]), (201, &retry["id"]), "{first}"),
    }
    let ghost = wait_for("the first payment to be settled as a ghost", Duration::from_secs(15), || async {
        let payments = payments_of_order(&gateway, "ghost").await;
        payments.into_iter().find(|p| p["id"] != retry["id"] && p["status"] != "processing")
    })
    .await;
    assert_eq!(ghost["status"], "failed", "{ghost}");
    assert!(ghost["failure_reason"].as_str().unwrap().contains(retry["id"].as_str().unwrap()), "{ghost}");
    assert_eq!(bank.charge_count().await, 1, "one charge");
    let succeeded = payments_of_order(&gateway, "ghost").await.into_iter().filter(|p| p["status"] == "succeeded");
    assert_eq!(succeeded.count(), 1, "and one payment that says so");
    let replay = gateway.pay("ghost-1", &body).await;
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], retry["id"]);
}

/// The key reused for another request after the store forgot its record: that is another charge
/// (another bank key), and the first payment keeps its own, answered and settled as itself.
#[tokio::test]
async fn a_payment_whose_forgotten_key_was_reused_for_another_request_keeps_its_own_charge() {
    let Some(redis) = RedisServer::start("record_forgot_other_request").await else { return };
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 600, "jitter_ms": 0}})).await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let (first_body, second_body) = (payment_body(1_100, APPROVE, "reused"), payment_body(2_200, APPROVE, "reused"));

    let ((status, first), (second_status, second)) =
        forget_the_record_during_the_bank_call(&bank, &redis, &gateway, "reused-1", &first_body, &second_body).await;
    assert_eq!((second_status, second["amount"].as_i64()), (201, Some(2_200)), "{second}");
    assert_eq!(
        (status, first["status"].as_str(), first["amount"].as_i64()),
        (201, Some("succeeded"), Some(1_100)),
        "{first}"
    );
    assert_ne!(first["id"], second["id"]);
    assert_eq!(gateway.payment(first["id"].as_str().unwrap()).await["status"], "succeeded");
    let charges = bank.charges_by_id().await;
    assert_eq!(charges.len(), 2, "two requests, two charges");
    for payment in [&first, &second] {
        assert!(charges.contains_key(payment["bank_charge_id"].as_str().unwrap()), "{payment}");
    }
}

/// A capture the bank made while the store died is not lost and never made twice; so is a cancel.
#[tokio::test]
async fn a_store_lost_after_the_bank_captured_or_released_is_not_lost_and_never_acts_twice() {
    let Some(mut redis) = RedisServer::start_persistent("store_lost_after_capture").await else { return };
    let bank = TestBank::start().await;
    let gateway = Arc::new(TestGateway::start(patient(&bank, &redis)).await);
    let mut held = Vec::new();
    for key in ["hold-capture", "hold-cancel"] {
        let response = gateway.pay(key, &tests::authorization_body(1_200, APPROVE, key)).await;
        assert_eq!(response.status(), 201);
        held.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    bank.patch_chaos(json!({"latency": {"base_ms": 400, "jitter_ms": 0}})).await;

    for (id, capture) in [(&held[0], true), (&held[1], false)] {
        let send = {
            let (gateway, id) = (Arc::clone(&gateway), id.clone());
            async move { if capture { gateway.capture(&id, "verb", None).await } else { gateway.cancel(&id, "verb").await } }
        };
        let (status, answer) = kill_redis_during_the_bank_call(&bank, &mut redis, send).await;
        assert_eq!((status, answer["code"].as_str()), (503, Some("outcome_unknown")), "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(if capture { "captured the payment" } else { "released the hold" }), "{detail}");
        redis.restart().await;
        let done = wait_for("the kept outcome to be replayed", Duration::from_secs(30), || async {
            let response =
                if capture { gateway.capture(id, "verb", None).await } else { gateway.cancel(id, "verb").await };
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status == 200).then_some(body)
        })
        .await;
        assert_eq!(done["status"], if capture { "succeeded" } else { "canceled" }, "{done}");
    }
    let ledger = bank.ledger().await;
    let totals = &ledger["totals"]["authorizations"];
    assert_eq!((totals["captured"].as_u64(), totals["voided"].as_u64()), (Some(1), Some(1)), "{totals}");
    assert_eq!(ledger["totals"]["charges"], 1, "captured once");
}
