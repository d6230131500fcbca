//! Bad input of every kind gets a clear 4xx problem+json answer, and nothing is charged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::{Value, json};
use tests::{TestBank, charge_body};

async fn expect_problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {status} {code}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status);
    assert!(problem["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    problem
}

fn with(mut body: Value, pointer: &str, value: Value) -> Value {
    *body.pointer_mut(pointer).unwrap() = value;
    body
}

#[tokio::test]
async fn invalid_fields_are_422_naming_each_field() {
    let bank = TestBank::start().await;
    let good = charge_body(1_000, "4242424242424242");
    let cases = [
        (with(good.clone(), "/amount", json!(-5)), "amount"),
        (with(good.clone(), "/amount", json!(0)), "amount"),
        (with(good.clone(), "/amount", json!(9_007_199_254_740_992_i64)), "amount"),
        (with(good.clone(), "/currency", json!("XXX")), "currency"),
        (with(good.clone(), "/currency", json!("usd")), "currency"),
        (with(good.clone(), "/card/number", json!("4242424242424241")), "card.number"),
        (with(good.clone(), "/card/number", json!("4242-4242-4242-4242")), "card.number"),
        (with(good.clone(), "/card/exp_month", json!(13)), "card.exp_month"),
        (with(good.clone(), "/card/exp_year", json!(99)), "card.exp_year"),
        (with(good.clone(), "/card/cvc", json!("12a")), "card.cvc"),
    ];
    for (i, (body, field)) in cases.into_iter().enumerate() {
        let response = bank.charge(&format!("k{i}"), &body, &[]).await.unwrap();
        let problem = expect_problem(response, 422, "validation_failed").await;
        let fields: Vec<_> = problem["errors"].as_array().unwrap().iter().map(|e| e["field"].clone()).collect();
        assert!(fields.contains(&json!(field)), "case {i}: {problem}");
    }
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn wrongly_typed_or_unknown_fields_are_422() {
    let bank = TestBank::start().await;
    let good = charge_body(1_000, "4242424242424242");
    let cases = [
        with(good.clone(), "/amount", json!(19.99)),
        with(good.clone(), "/amount", json!("1000")),
        with(good.clone(), "/amount", json!(1e30)),
        with(good.clone(), "/card/exp_month", json!(-1)),
        json!({"amount": 1000, "currency": "USD"}),
        with(good.clone(), "/currency", json!(null)),
        {
            let mut extra = good.clone();
            extra["surprise"] = json!(true);
            extra
        },
        json!([1, 2, 3]),
    ];
    for (i, body) in cases.into_iter().enumerate() {
        let response = bank.charge(&format!("k{i}"), &body, &[]).await.unwrap();
        expect_problem(response, 422, "validation_failed").await;
    }
    // A number too large for any integer type, written out in full.
    let huge = r#"{"amount":100000000000000000000000000000,"currency":"USD","card":{"number":"4242424242424242","exp_month":1,"exp_year":2099,"cvc":"123"}}"#;
    let response = bank
        .client
        .post(bank.at("/v1/charges"))
        .header("Idempotency-Key", "huge")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_problem(response, 422, "validation_failed").await;
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn malformed_bodies_keys_and_headers_are_400_413_or_415() {
    let bank = TestBank::start().await;
    let post = |key: Option<&str>| {
        let request = bank.client.post(bank.at("/v1/charges")).header("content-type", "application/json");
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
    };

    expect_problem(post(Some("m1")).body("{\"amount\": ").send().await.unwrap(), 400, "invalid_request").await;
    expect_problem(post(Some("m2")).body("not json").send().await.unwrap(), 400, "invalid_request").await;
    expect_problem(post(Some("m3")).body("").send().await.unwrap(), 400, "invalid_request").await;

    let body = serde_json::to_vec(&charge_body(100, "4242424242424242")).unwrap();
    expect_problem(post(None).body(body.clone()).send().await.unwrap(), 400, "idempotency_key_missing").await;
    let long_key = "k".repeat(300);
    expect_problem(post(Some(&long_key)).body(body.clone()).send().await.unwrap(), 400, "invalid_request").await;
    expect_problem(post(Some("\"unterminated")).body(body.clone()).send().await.unwrap(), 400, "invalid_request").await;

    // 1 MiB of otherwise valid JSON.
    let mut big = charge_body(100, "4242424242424242");
    big["reference"] = json!("x".repeat(1024 * 1024));
    let big = serde_json::to_vec(&big).unwrap();
    expect_problem(post(Some("big")).body(big).send().await.unwrap(), 413, "payload_too_large").await;

    let xml = bank
        .client
        .post(bank.at("/v1/charges"))
        .header("Idempotency-Key", "xml")
        .header("content-type", "application/xml")
        .body("<charge/>")
        .send()
        .await
        .unwrap();
    expect_problem(xml, 415, "unsupported_media_type").await;

    let bad_fault = post(Some("f")).header("X-Chaos-Fault", "explode").body(body).send().await.unwrap();
    expect_problem(bad_fault, 400, "invalid_request").await;

    let wrong_method = bank.client.delete(bank.at("/v1/charges")).send().await.unwrap();
    expect_problem(wrong_method, 405, "method_not_allowed").await;
    let unknown = bank.client.get(bank.at("/v2/anything")).send().await.unwrap();
    expect_problem(unknown, 404, "not_found").await;
    let undecodable = bank.client.get(bank.at("/v1/charges?idempotency_key=%FF")).send().await.unwrap();
    expect_problem(undecodable, 400, "invalid_request").await;
    let bad_path = bank.client.get(bank.at("/v1/charges/%FF")).send().await.unwrap();
    expect_problem(bad_path, 400, "invalid_request").await;

    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn a_long_reference_is_refused_but_a_normal_one_is_kept() {
    let bank = TestBank::start().await;
    let mut body = charge_body(100, "4242424242424242");
    body["reference"] = json!("r".repeat(256));
    expect_problem(bank.charge("r1", &body, &[]).await.unwrap(), 422, "validation_failed").await;
    body["reference"] = json!("order #42");
    let charge: Value = bank.charge("r2", &body, &[]).await.unwrap().json().await.unwrap();
    assert_eq!(charge["reference"], "order #42");
    // The card number is in no answer and no ledger entry.
    let ledger = bank.ledger().await.to_string();
    assert!(!ledger.contains("4242424242424242"));
}
