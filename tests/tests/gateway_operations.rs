//! What operators see and control: metrics, the live event stream, the breaker override, the
//! rate limit and the API documentation, read through the real endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::time::Duration;

use dashboard_tui::sse::SseReader;
use serde_json::{Value, json};
use tests::{ADMIN_KEY, MERCHANT_A, MERCHANT_B, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";

async fn setup() -> (TestBank, TestGateway) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    (bank, gateway)
}

/// The value of one sample line of `/metrics` (0 when absent).
async fn metric(gateway: &TestGateway, sample: &str) -> f64 {
    let text = gateway.client.get(gateway.at("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.parse().unwrap())
}

async fn admin(gateway: &TestGateway, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = gateway.client.request(method, gateway.at(path)).bearer_auth(ADMIN_KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn metrics_move_when_payments_happen() {
    let (_bank, gateway) = setup().await;
    let response = gateway.client.get(gateway.at("/metrics")).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let succeeded = r#"gateway_payments_total{outcome="succeeded"}"#;
    assert_eq!(metric(&gateway, succeeded).await, 0.0);

    let body = payment_body(100, APPROVE, "m");
    assert_eq!(gateway.pay("m-1", &body).await.status(), 201);
    assert_eq!(gateway.pay("m-1", &body).await.status(), 201);
    assert_eq!(gateway.pay("m-1", &payment_body(101, APPROVE, "m")).await.status(), 422);
    assert_eq!(gateway.pay("m-2", &payment_body(100, "4000000000000002", "m")).await.status(), 402);

    assert_eq!(metric(&gateway, succeeded).await, 1.0);
    assert_eq!(metric(&gateway, r#"gateway_payments_total{outcome="declined"}"#).await, 1.0);
    assert_eq!(metric(&gateway, "gateway_idempotent_replays_total").await, 1.0);
    assert_eq!(metric(&gateway, r#"gateway_idempotency_conflicts_total{kind="idempotency_key_reused"}"#).await, 1.0);
    assert_eq!(metric(&gateway, r#"gateway_bank_calls_total{bank="default",result="approved"}"#).await, 1.0);
    assert_eq!(metric(&gateway, r#"gateway_bank_calls_total{bank="default",result="declined"}"#).await, 1.0);
    assert_eq!(metric(&gateway, "gateway_bank_call_duration_seconds_count").await, 2.0);
    assert_eq!(
        metric(&gateway, r#"gateway_http_requests_total{route="/v1/payments",method="POST",status="201"}"#).await,
        2.0
    );
    assert_eq!(metric(&gateway, r#"gateway_breaker_state{state="closed"}"#).await, 1.0);
    assert!(metric(&gateway, r#"gateway_store_operation_duration_seconds_count{operation="claim"}"#).await >= 4.0);
}

#[tokio::test]
async fn a_forced_breaker_rejects_and_auto_restores() {
    let (bank, gateway) = setup().await;
    let unauthenticated = gateway.client.get(gateway.at("/admin/breaker")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let merchant = gateway.get_as(MERCHANT_A.1, "/admin/breaker").await;
    assert_eq!(merchant.status(), 403);

    let snapshot: Value = admin(&gateway, reqwest::Method::GET, "/admin/breaker", None).await.json().await.unwrap();
    assert_eq!(snapshot["state"], "closed");
    for field in ["failure_rate", "slow_call_rate", "calls_in_window", "opened_at", "open_until"] {
        assert!(snapshot.get(field).is_some(), "{field} in {snapshot}");
    }

    let forced = admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "forced_open"}))).await;
    assert_eq!(forced.json::<Value>().await.unwrap()["state"], "forced_open");
    let refused = gateway.pay("f-1", &payment_body(100, APPROVE, "f")).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().await.unwrap()["code"], "circuit_open");
    assert_eq!(bank.stats().await["requests"], 0, "the bank was not called");

    let bad = admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "ajar"}))).await;
    assert_eq!(bad.status(), 422);
    let auto = admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "auto"}))).await;
    assert_eq!(auto.json::<Value>().await.unwrap()["state"], "closed");
    assert_eq!(gateway.pay("f-1", &payment_body(100, APPROVE, "f")).await.status(), 201, "the key was released");
}

#[tokio::test]
async fn while_the_breaker_is_open_keys_still_replay_and_new_payments_leave_no_trace() {
    let (bank, gateway) = setup().await;
    let paid = gateway.pay("open-1", &payment_body(700, APPROVE, "o")).await;
    assert_eq!(paid.status(), 201);
    let paid: Value = paid.json().await.unwrap();
    admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "forced_open"}))).await;

    // A finished key replays its answer; the same key with another body is still refused as reuse.
    let replay = gateway.pay("open-1", &payment_body(700, APPROVE, "o")).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], paid["id"]);
    assert_eq!(gateway.pay("open-1", &payment_body(701, APPROVE, "o")).await.status(), 422);

    // New payments are refused before anything is written: no payment, no key held.
    for i in 0..5 {
        let refused = gateway.pay(&format!("open-new-{i}"), &payment_body(800 + i, APPROVE, "o")).await;
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().get("retry-after").is_some());
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], "circuit_open");
    }
    let listed: Value = gateway.get_as(MERCHANT_A.1, "/v1/payments?limit=100").await.json().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "only the payment made before: {listed}");
    assert_eq!(bank.stats().await["requests"], 1, "the bank saw only the first payment");
    let breaker: Value = admin(&gateway, reqwest::Method::GET, "/admin/breaker", None).await.json().await.unwrap();
    assert!(breaker["rejected"].as_u64().unwrap() >= 5, "refusals are counted: {breaker}");

    admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "auto"}))).await;
    assert_eq!(gateway.pay("open-new-0", &payment_body(800, APPROVE, "o")).await.status(), 201);
}

#[tokio::test]
async fn the_stream_delivers_events_in_order_to_readers_while_a_stalled_one_slows_nothing() {
    let (_bank, gateway) = setup().await;
    let open = || async { admin(&gateway, reqwest::Method::GET, "/admin/stream", None).await };
    let first = open().await;
    assert_eq!(first.status(), 200);
    assert!(first.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut readers = [SseReader::new(first), SseReader::new(open().await)];
    let _stalled = open().await; // connected, never read
    wait_for("three subscribers", Duration::from_secs(5), || async {
        (metric(&gateway, "gateway_stream_subscribers").await == 3.0).then_some(())
    })
    .await;

    let mut paid = HashSet::new();
    for i in 0..20 {
        let response = gateway.pay(&format!("s-{i}"), &payment_body(100 + i, APPROVE, "s")).await;
        assert_eq!(response.status(), 201, "payments keep flowing");
        paid.insert(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "forced_open"}))).await;
    admin(&gateway, reqwest::Method::PUT, "/admin/breaker", Some(json!({"state": "auto"}))).await;

    for reader in &mut readers {
        let mut last_id = 0;
        let mut succeeded = HashSet::new();
        let mut breaker = Vec::new();
        let mut stats = 0;
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            while stats == 0 || breaker.len() < 2 || succeeded.len() < paid.len() {
                let event = reader.next().await.expect("the stream stays open");
                let id = event.id.expect("every event has an id");
                assert!(id > last_id, "events arrive in order: {id} after {last_id}");
                last_id = id;
                let data: Value = serde_json::from_str(&event.data).unwrap();
                match event.kind.as_str() {
                    "stats" => {
                        stats += 1;
                        for field in ["totals", "rates", "latency_ms", "in_flight", "retries", "breaker"] {
                            assert!(data.get(field).is_some(), "stats has {field}: {data}");
                        }
                    }
                    "breaker" => {
                        assert_eq!(data["bank"], "default", "a breaker event names its bank: {data}");
                        breaker.push((data["to"].as_str().unwrap().to_owned(), data["reason"].clone()));
                    }
                    "payment" if data["status"] == "succeeded" => {
                        succeeded.insert(data["payment_id"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "stats {stats}, breaker {breaker:?}, payments {}", succeeded.len());
        assert_eq!(succeeded, paid);
        assert_eq!(breaker[0].0, "forced_open");
        assert_eq!(breaker[1].0, "closed");
        assert!(breaker[0].1.as_str().unwrap().contains("operator"));
    }
}

#[tokio::test]
async fn a_merchant_past_its_burst_gets_429_with_retry_after() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.rate_limit_per_sec = 0.5;
    config.rate_limit_burst = 3;
    let gateway = TestGateway::start(config).await;
    for i in 0..3 {
        let response = gateway.get_as(MERCHANT_A.1, "/v1/payments").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(response.headers()["ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let limited = gateway.pay("rl", &payment_body(100, APPROVE, "rl")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    assert_eq!(limited.headers()["ratelimit-remaining"], "0");
    assert_eq!(limited.json::<Value>().await.unwrap()["code"], "rate_limited");
    assert_eq!(bank.charge_count().await, 0);
    assert_eq!(gateway.get_as(MERCHANT_B.1, "/v1/payments").await.status(), 200, "each merchant has its own bucket");
}

/// Resolves a local `$ref` in the document, or panics.
fn resolve<'a>(document: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {reference}"));
    document.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {reference}"))
}

fn check_refs(document: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                resolve(document, reference);
            }
            map.values().for_each(|v| check_refs(document, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_refs(document, v)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_the_docs_are_served() {
    let (_bank, gateway) = setup().await;
    let document: Value = gateway.client.get(gateway.at("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/v1/payments", "post"),
        ("/v1/payments", "get"),
        ("/v1/payments/{id}", "get"),
        ("/v1/payments/{id}/refunds", "post"),
        ("/v1/payments/{id}/capture", "post"),
        ("/v1/payments/{id}/cancel", "post"),
        ("/v1/events", "get"),
        ("/v1/events/{id}", "get"),
        ("/v1/events/{id}/deliveries", "get"),
        ("/v1/events/{id}/redeliver", "post"),
        ("/v1/webhook_endpoints", "post"),
        ("/v1/webhook_endpoints", "get"),
        ("/v1/webhook_endpoints/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/admin/breaker", "get"),
        ("/admin/breaker", "put"),
        ("/admin/stream", "get"),
        ("/admin/banks", "get"),
        ("/admin/banks/{name}/breaker", "put"),
    ];
    for (path, method) in expected {
        let operation = &document["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(operation["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} has responses");
    }
    let documented: usize = document["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "no undocumented extras, nothing missing");
    for schema in [
        "Payment",
        "CreatePayment",
        "CardInput",
        "Problem",
        "Refund",
        "BreakerView",
        "Event",
        "WebhookEndpoint",
        "CreateEndpoint",
        "WebhookDelivery",
    ] {
        assert!(document["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    check_refs(&document, &document);
    check_truthful(&document);

    let docs = gateway.client.get(gateway.at("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}

/// What the OpenAPI 3.1 document must say to be true to the server (the full check, with an
/// OpenAPI validator and a schema-driven fuzzer, is `./run.sh fuzz`): every response described,
/// every error documented as the problem+json it is, the statuses every protected route can
/// answer, and the bounds the server enforces on what a client sends.
fn check_truthful(document: &Value) {
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                let what = format!("{method} {path} {status}");
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{what}: no description");
                // A decline (402) is a payment; every other error a problem.
                if (status.starts_with('4') || status.starts_with('5')) && status != "402" {
                    let content = response["content"].as_object().unwrap_or_else(|| panic!("{what}: no content"));
                    assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{what}");
                }
            }
            let secured = operation["security"].is_array();
            let body = operation["requestBody"].is_object();
            let mut must: Vec<&str> = Vec::new();
            if secured {
                must.extend(["400", "401"]);
            }
            if path.starts_with("/v1") {
                must.extend(["429", "503"]);
            }
            if body {
                must.extend(["408", "413", "415", "422"]);
            }
            for status in must {
                assert!(responses.contains_key(status), "{method} {path} can answer {status} but does not say so");
            }
        }
    }
    let key = document["paths"]["/v1/payments"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap()["schema"]
        .clone();
    assert_eq!((key["minLength"].as_u64(), key["maxLength"].as_u64()), (Some(1), Some(255)), "{key}");
    let limit = document["paths"]["/v1/payments"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64()), (Some(1), Some(100)), "{limit}");
    let payment = &document["components"]["schemas"]["CreatePayment"]["properties"];
    assert_eq!(payment["amount"]["minimum"], 1);
    assert_eq!(payment["currency"]["enum"], serde_json::json!(["TRY", "USD", "EUR", "GBP"]), "the configured ones");
    assert_eq!(payment["metadata"]["maxProperties"], 20);
}
