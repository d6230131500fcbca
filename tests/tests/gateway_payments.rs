//! The gateway's payment API against the real mock bank, both in-process: every row of the
//! contract's idempotency table, checked against what the bank's ledger says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;

use serde_json::{Value, json};
use tests::{MERCHANT_A, MERCHANT_B, TestBank, TestGateway, payment_body};

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";

async fn setup() -> (TestBank, TestGateway) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    (bank, gateway)
}

#[tokio::test]
async fn approved_payment_is_201_and_replayed_without_a_second_charge() {
    let (bank, gateway) = setup().await;
    let body = payment_body(1999, APPROVE, "order-1");
    let first = gateway.pay("key-1", &body).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let payment: Value = first.json().await.unwrap();
    assert_eq!(payment["object"], "payment");
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["amount"], 1999);
    assert_eq!(payment["card"], json!({"brand": "visa", "last4": "4242"}));
    assert_eq!(payment["attempts"], 1);
    let id = payment["id"].as_str().unwrap();
    assert!(id.starts_with("pay_"));

    let replay = gateway.pay("key-1", &body).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], id);

    // The bank charged once, under the gateway's own key for the payment, and knows no card number.
    let charges = bank.charges_by_id().await;
    assert_eq!(charges.len(), 1);
    let charge = &charges[payment["bank_charge_id"].as_str().unwrap()];
    assert_eq!(charge["reference"], charge["idempotency_key"], "the bank key is also the charge's reference");
    assert!(charge["idempotency_key"].as_str().unwrap().starts_with("pk_"));
    assert_eq!(gateway.payment(id).await["status"], "succeeded");
}

#[tokio::test]
async fn declined_payment_is_402_with_its_code_and_replayed() {
    let (bank, gateway) = setup().await;
    let body = payment_body(500, DECLINE, "order-2");
    let first = gateway.pay("decline-1", &body).await;
    assert_eq!(first.status(), 402);
    let payment: Value = first.json().await.unwrap();
    assert_eq!(payment["status"], "declined");
    assert_eq!(payment["decline_code"], "card_declined");
    assert_eq!(payment["attempts"], 1, "a decline is never retried");
    let replay = gateway.pay("decline-1", &body).await;
    assert_eq!(replay.status(), 402);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let (bank, gateway) = setup().await;
    assert_eq!(gateway.pay("k", &payment_body(100, APPROVE, "o")).await.status(), 201);
    let reused = gateway.pay("k", &payment_body(101, APPROVE, "o")).await;
    assert_eq!(reused.status(), 422);
    assert_eq!(reused.json::<Value>().await.unwrap()["code"], "idempotency_key_reused");
    // A quoted key is the same key.
    assert_eq!(gateway.pay("\"k\"", &payment_body(100, APPROVE, "o")).await.status(), 201);
    assert_eq!(bank.charge_count().await, 1);
}

#[tokio::test]
async fn fifty_concurrent_identical_requests_charge_once() {
    let (bank, gateway) = setup().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 50}})).await;
    let gateway = Arc::new(gateway);
    let body = payment_body(4200, APPROVE, "order-50");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (gateway, body) = (Arc::clone(&gateway), body.clone());
        tasks.push(tokio::spawn(async move {
            let response = gateway.pay("same-key", &body).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").is_some();
            (status, retry_after, response.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            201 => ids.push(body["id"].as_str().unwrap().to_owned()),
            409 => {
                assert_eq!(body["code"], "idempotency_key_in_use");
                assert!(retry_after, "409 carries Retry-After");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every success is the same payment");
    assert_eq!(bank.charge_count().await, 1, "the bank charged exactly once");
}

#[tokio::test]
async fn keys_and_payments_are_scoped_per_merchant() {
    let (bank, gateway) = setup().await;
    let body = payment_body(300, APPROVE, "shared-order");
    let a: Value = gateway.pay_as(MERCHANT_A.1, "same", &body).await.json().await.unwrap();
    let b: Value = gateway.pay_as(MERCHANT_B.1, "same", &body).await.json().await.unwrap();
    assert_ne!(a["id"], b["id"], "the same key of two merchants names two payments");
    assert_eq!(bank.charge_count().await, 2);

    let theirs = gateway.get_as(MERCHANT_B.1, &format!("/v1/payments/{}", a["id"].as_str().unwrap())).await;
    assert_eq!(theirs.status(), 404, "another merchant's payment does not exist for you");
    let listed: Value = gateway.get_as(MERCHANT_B.1, "/v1/payments").await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], b["id"]);
}

#[tokio::test]
async fn requests_without_a_valid_api_key_are_401() {
    let (bank, gateway) = setup().await;
    let body = payment_body(100, APPROVE, "o");
    let none = gateway.client.post(gateway.at("/v1/payments")).header("Idempotency-Key", "k").json(&body).send();
    let none = none.await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(none.json::<Value>().await.unwrap()["code"], "unauthorized");
    assert_eq!(gateway.pay_as("sk_wrong_key_0000000000", "k", &body).await.status(), 401);
    assert_eq!(gateway.get_as("nope", "/v1/payments").await.status(), 401);
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn bad_input_is_4xx_problem_json_and_charges_nothing() {
    let (bank, gateway) = setup().await;
    let post = |key: Option<&str>| {
        let request = gateway
            .client
            .post(gateway.at("/v1/payments"))
            .bearer_auth(MERCHANT_A.1)
            .header("content-type", "application/json");
        match key {
            Some(key) => request.header("Idempotency-Key", key),
            None => request,
        }
    };
    let good = payment_body(100, APPROVE, "o");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (post(None).json(&good), 400, "idempotency_key_missing"),
        (post(Some(&"k".repeat(300))).json(&good), 400, "invalid_request"),
        (post(Some("m")).body("{\"amount\":"), 400, "invalid_request"),
        (
            post(Some("a")).json(&json!({"amount": -1, "currency": "USD", "card": good["card"]})),
            422,
            "validation_failed",
        ),
        (
            post(Some("b")).json(&json!({"amount": 19.99, "currency": "USD", "card": good["card"]})),
            422,
            "validation_failed",
        ),
        (
            post(Some("c")).json(&json!({"amount": 100, "currency": "XXX", "card": good["card"]})),
            422,
            "validation_failed",
        ),
        (post(Some("d")).json(&payment_body(100, "4242424242424241", "o")), 422, "validation_failed"),
        (
            post(Some("e")).json(&json!({"amount": 100, "currency": "USD", "card": good["card"], "extra": 1})),
            422,
            "validation_failed",
        ),
        (
            post(Some("f"))
                .json(&json!({"amount": 100, "currency": "USD", "card": good["card"], "metadata": {"k": 1}})),
            422,
            "validation_failed",
        ),
        (
            post(Some("g")).json(
                &json!({"amount": 100, "currency": "USD", "card": good["card"], "description": "x".repeat(20_000)}),
            ),
            413,
            "payload_too_large",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "case {i}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "case {i}");
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code, "case {i}");
    }
    let listed = gateway.get_as(MERCHANT_A.1, "/v1/payments?limit=0").await;
    assert_eq!(listed.status(), 400);
    let listed = gateway.get_as(MERCHANT_A.1, "/v1/payments?status=paid").await;
    assert_eq!(listed.status(), 400);
    for path in ["/v1/payments/%FF", "/v1/payments?unknown=1"] {
        let response = gateway.get_as(MERCHANT_A.1, path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{path}");
    }
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn payments_are_listed_newest_first_with_filters_and_a_cursor() {
    let (_bank, gateway) = setup().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let card = if i == 2 { DECLINE } else { APPROVE };
        let order = if i % 2 == 0 { "even" } else { "odd" };
        let payment: Value =
            gateway.pay(&format!("list-{i}"), &payment_body(100 + i, card, order)).await.json().await.unwrap();
        ids.push(payment["id"].as_str().unwrap().to_owned());
    }
    let page = |query: &str| {
        let gateway = &gateway;
        let query = query.to_owned();
        async move {
            let response = gateway.get_as(MERCHANT_A.1, &format!("/v1/payments{query}")).await;
            assert_eq!(response.status(), 200);
            let list: Value = response.json().await.unwrap();
            let ids: Vec<String> =
                list["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
            (ids, list["has_more"].as_bool().unwrap())
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(page("").await, (newest_first.clone(), false));
    assert_eq!(page("?limit=2").await, (newest_first[..2].to_vec(), true));
    let after = format!("?limit=2&starting_after={}", newest_first[1]);
    assert_eq!(page(&after).await, (newest_first[2..4].to_vec(), true));
    let last = format!("?limit=2&starting_after={}", newest_first[3]);
    assert_eq!(page(&last).await, (newest_first[4..].to_vec(), false));
    assert_eq!(page("?order_id=even").await.0, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    assert_eq!(page("?status=declined").await.0, vec![ids[2].clone()]);
    assert_eq!(page("?status=succeeded&order_id=even").await.0, vec![ids[4].clone(), ids[0].clone()]);
}

#[tokio::test]
async fn refunds_compensate_a_payment_exactly_once() {
    let (bank, gateway) = setup().await;
    let payment: Value = gateway.pay("r-pay", &payment_body(1_000, APPROVE, "o")).await.json().await.unwrap();
    let id = payment["id"].as_str().unwrap();

    let partial = gateway.refund(id, "r-1", Some(json!({"amount": 300}))).await;
    assert_eq!(partial.status(), 201);
    let refund: Value = partial.json().await.unwrap();
    assert_eq!((refund["amount"].as_i64(), refund["payment_id"].as_str()), (Some(300), Some(id)));
    assert_eq!(gateway.payment(id).await["status"], "partially_refunded");

    let replay = gateway.refund(id, "r-1", Some(json!({"amount": 300}))).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(gateway.refund(id, "r-1", Some(json!({"amount": 301}))).await.status(), 422);
    assert_eq!(gateway.refund(id, "r-2", Some(json!({"amount": 701}))).await.status(), 422, "over-refund");

    let rest = gateway.refund(id, "r-3", None).await;
    assert_eq!(rest.status(), 201);
    assert_eq!(rest.json::<Value>().await.unwrap()["amount"], 700);
    let refunded = gateway.payment(id).await;
    assert_eq!((refunded["status"].as_str(), refunded["refunded_amount"].as_i64()), (Some("refunded"), Some(1_000)));
    assert_eq!(gateway.refund(id, "r-4", None).await.status(), 409, "nothing left to refund");

    let declined: Value = gateway.pay("r-dec", &payment_body(100, DECLINE, "o")).await.json().await.unwrap();
    let not_refundable = gateway.refund(declined["id"].as_str().unwrap(), "r-5", None).await;
    assert_eq!(not_refundable.status(), 409);
    assert_eq!(not_refundable.json::<Value>().await.unwrap()["code"], "invalid_state");
    assert_eq!(gateway.refund("pay_nope", "r-6", None).await.status(), 404);

    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["by_currency"]["USD"]["refunded"], 1_000);
    assert_eq!(ledger["totals"]["refunds"], 2);
}
