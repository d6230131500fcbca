//! Events and webhooks end to end: every change reaches every subscribed endpoint, signed the
//! Standard Webhooks way (checked by an implementation written from the spec and by the
//! `standardwebhooks` crate), retried on its schedule, behind a breaker per endpoint; the events
//! API and the deliveries API tell the same story. On memory, redb and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use payment_api::Config;
use payment_api::webhook::Schedule;
use serde_json::{Value, json};
use tests::webhooks::{Plan, WebhookReceiver, all_events, signature_is_valid, subscribe};
use tests::{MERCHANT_A, MERCHANT_B, RedisServer, TestBank, TestGateway, authorization_body, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";

fn config(bank: &TestBank, store: &str) -> Config {
    let mut config = TestGateway::config(&bank.url, store);
    config.webhook_retry_schedule_s = Schedule::parse("0.05,0.1,0.1").unwrap();
    config.webhook_timeout_ms = 300;
    config.webhook_lease_ms = 1_500;
    config.webhook_breaker_open_ms = 300;
    config
}

/// Runs a scenario on each store: memory, redb (a fresh file) and Redis (its own server; skipped
/// with a reason when redis-server is missing, unless REQUIRE_REDIS=1).
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn on_memory() {
                super::$scenario("memory").await;
            }

            #[tokio::test]
            async fn on_redb() {
                let dir = std::env::temp_dir().join(format!("rp-wh-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
                super::$scenario(&format!("redb:{}", dir.join("store.redb").display())).await;
                let _ = std::fs::remove_dir_all(dir);
            }

            #[tokio::test]
            async fn on_redis() {
                let Some(redis) = tests::RedisServer::start(stringify!($scenario)).await else { return };
                super::$scenario(&redis.url()).await;
            }
        }
    )*};
}

on_every_store!(
    every_event_reaches_its_endpoints_signed,
    the_events_api_filters_by_type_pages_and_refuses_bad_parameters,
    endpoints_are_created_once_per_key_shown_without_secrets_and_deleted,
    a_failing_endpoint_is_retried_on_its_schedule_then_failed_and_a_redelivery_starts_over,
    a_hanging_endpoint_trips_its_own_breaker_and_never_holds_up_another,
    racing_creations_and_redeliveries_under_one_key_act_once,
);

async fn post(gateway: &TestGateway, path: &str, key: &str, body: Value) -> reqwest::Response {
    gateway
        .client
        .post(gateway.at(path))
        .bearer_auth(MERCHANT_A.1)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(gateway: &TestGateway, path: &str) -> reqwest::Response {
    gateway.get_as(MERCHANT_A.1, path).await
}

/// A bit of everything: a payment, a decline, an authorization captured in part, one canceled,
/// and a payment refunded in two steps.
async fn payment_history(gateway: &TestGateway) {
    assert_eq!(gateway.pay("h-paid", &payment_body(1_000, APPROVE, "h1")).await.status(), 201);
    assert_eq!(gateway.pay("h-declined", &payment_body(1_000, DECLINE, "h2")).await.status(), 402);
    let held: Value = gateway.pay("h-held", &authorization_body(2_000, APPROVE, "h3")).await.json().await.unwrap();
    assert_eq!(
        gateway.capture(held["id"].as_str().unwrap(), "h-cap", Some(json!({"amount": 1_500}))).await.status(),
        200
    );
    let voided: Value = gateway.pay("h-void", &authorization_body(700, APPROVE, "h4")).await.json().await.unwrap();
    assert_eq!(gateway.cancel(voided["id"].as_str().unwrap(), "h-cancel").await.status(), 200);
    let refunded: Value = gateway.pay("h-ref", &payment_body(900, APPROVE, "h5")).await.json().await.unwrap();
    let id = refunded["id"].as_str().unwrap();
    assert_eq!(gateway.refund(id, "h-r1", Some(json!({"amount": 400}))).await.status(), 201);
    assert_eq!(gateway.refund(id, "h-r2", None).await.status(), 201);
}

async fn every_event_reaches_its_endpoints_signed(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    let everything = WebhookReceiver::start(Plan::default()).await;
    let successes = WebhookReceiver::start(Plan::default()).await;
    let (all_id, all_secret) = subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &everything.url, &["*"]).await;
    let (_, only_secret) =
        subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &successes.url, &["payment.succeeded"]).await;
    // Another merchant's endpoint hears nothing of merchant A.
    let elsewhere = WebhookReceiver::start(Plan::default()).await;
    subscribe(&gateway.client, &gateway.url, MERCHANT_B.1, &elsewhere.url, &["*"]).await;

    payment_history(&gateway).await;

    let events = all_events(&gateway.client, &gateway.url, MERCHANT_A.1).await;
    let kinds: Vec<&str> = events.iter().rev().map(|e| e["type"].as_str().unwrap()).collect();
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(
        count("payment.processing"),
        7,
        "{kinds:?}: one per payment created, and one per capture and cancel under way"
    );
    assert_eq!(count("payment.succeeded"), 3, "{kinds:?}");
    assert_eq!(count("payment.declined"), 1, "{kinds:?}");
    assert_eq!(count("payment.requires_capture"), 2, "{kinds:?}");
    assert_eq!(count("payment.canceled"), 1, "{kinds:?}");
    assert_eq!(count("refund.succeeded"), 2, "{kinds:?}");
    assert_eq!(count("payment.partially_refunded"), 1, "{kinds:?}");
    assert_eq!(count("payment.refunded"), 1, "{kinds:?}");
    // A refund's events: the refund's, then its payment's.
    let refunded = kinds.iter().position(|k| *k == "payment.refunded").unwrap();
    assert_eq!(kinds[refunded - 1], "refund.succeeded");

    let ids: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    wait_for("every event delivered", Duration::from_secs(20), || async {
        (everything.delivered_ids() == ids).then_some(())
    })
    .await;
    let by_id: HashMap<&str, &Value> = events.iter().map(|e| (e["id"].as_str().unwrap(), e)).collect();
    let signer = standardwebhooks::Webhook::new(&all_secret).unwrap();
    for delivery in everything.received() {
        assert!(
            signature_is_valid(&all_secret, &delivery.id, &delivery.timestamp, &delivery.body, &delivery.signature),
            "the spec's check accepts {delivery:?}"
        );
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", delivery.id.parse().unwrap());
        headers.insert("webhook-timestamp", delivery.timestamp.parse().unwrap());
        headers.insert("webhook-signature", delivery.signature.parse().unwrap());
        signer.verify(delivery.body.as_bytes(), &headers).expect("the standardwebhooks crate accepts it");
        assert!(!signature_is_valid(
            &only_secret,
            &delivery.id,
            &delivery.timestamp,
            &delivery.body,
            &delivery.signature
        ));
        let body = delivery.json();
        assert_eq!(body["id"], delivery.id, "webhook-id is the event's id");
        assert_eq!(&&body, by_id.get(delivery.id.as_str()).unwrap(), "the delivery is the event the API shows");
        let fetched: Value = get(&gateway, &format!("/v1/events/{}", delivery.id)).await.json().await.unwrap();
        assert_eq!(fetched, body);
    }
    let succeeded: HashSet<String> = events
        .iter()
        .filter(|e| e["type"] == "payment.succeeded")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    wait_for("the narrow endpoint's events", Duration::from_secs(10), || async {
        (successes.delivered_ids() == succeeded).then_some(())
    })
    .await;
    assert_eq!(successes.received().len(), 3, "only what it asked for, once each");
    assert!(elsewhere.received().iter().all(|r| !ids.contains(&r.id)), "merchants never see each other's events");

    // The deliveries API: one per subscribed endpoint, delivered at the first attempt.
    let succeeded_id = succeeded.iter().next().unwrap();
    let deliveries: Value = get(&gateway, &format!("/v1/events/{succeeded_id}/deliveries")).await.json().await.unwrap();
    let data = deliveries["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{deliveries}");
    for delivery in data {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(delivery["attempts"][0]["status_code"], 204);
        assert!(delivery["next_attempt_at"].is_null());
    }
    assert!(data.iter().any(|d| d["endpoint_id"] == all_id.as_str()));
    let metrics = gateway.client.get(gateway.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_webhook_attempts_total{result=\"delivered\"}"), "{metrics}");

    // Another merchant's event does not exist for merchant B.
    let other = gateway.get_as(MERCHANT_B.1, &format!("/v1/events/{succeeded_id}")).await;
    assert_eq!(other.status(), 404);
    let other = gateway.get_as(MERCHANT_B.1, &format!("/v1/events/{succeeded_id}/deliveries")).await;
    assert_eq!(other.status(), 404);
}

async fn the_events_api_filters_by_type_pages_and_refuses_bad_parameters(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    for i in 0..5 {
        assert_eq!(gateway.pay(&format!("f-{i}"), &payment_body(100 + i, APPROVE, "f")).await.status(), 201);
    }
    let page: Value = get(&gateway, "/v1/events?type=payment.succeeded&limit=2").await.json().await.unwrap();
    let first: Vec<&str> = page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!((first.len(), page["has_more"].as_bool()), (2, Some(true)));
    assert!(page["data"].as_array().unwrap().iter().all(|e| e["type"] == "payment.succeeded"));
    let amounts: Vec<i64> =
        page["data"].as_array().unwrap().iter().map(|e| e["data"]["object"]["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [104, 103], "newest first");
    let next: Value = get(&gateway, &format!("/v1/events?type=payment.succeeded&limit=10&starting_after={}", first[1]))
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<i64> =
        next["data"].as_array().unwrap().iter().map(|e| e["data"]["object"]["amount"].as_i64().unwrap()).collect();
    assert_eq!((amounts, next["has_more"].as_bool()), (vec![102, 101, 100], Some(false)));
    for bad in [
        "type=payment.exploded",
        "limit=0",
        "limit=101",
        "limit=x",
        "colour=red",
        "starting_after=not-an-event",
        "starting_after=evt_01A232A16DBC75269765ECB42E123BD3",
    ] {
        let response = get(&gateway, &format!("/v1/events?{bad}")).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(get(&gateway, "/v1/events/evt_nope").await.status(), 404);
}

async fn endpoints_are_created_once_per_key_shown_without_secrets_and_deleted(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    let body = json!({"url": "https://example.com/hooks", "enabled_events": ["payment.succeeded", "refund.failed"]});
    let created = post(&gateway, "/v1/webhook_endpoints", "we-1", body.clone()).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store", "it holds the secret");
    let created: Value = created.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && standardwebhooks::Webhook::new(secret).is_ok(), "{created}");
    assert!(created["id"].as_str().unwrap().starts_with("we_"));

    let replay = post(&gateway, "/v1/webhook_endpoints", "we-1", body.clone()).await;
    assert_eq!((replay.status().as_u16(), replay.headers()["idempotent-replayed"].to_str().unwrap()), (201, "true"));
    assert_eq!(replay.json::<Value>().await.unwrap(), created, "the same endpoint, the same secret");
    let reused = post(
        &gateway,
        "/v1/webhook_endpoints",
        "we-1",
        json!({"url": "https://example.com/x", "enabled_events": ["*"]}),
    )
    .await;
    assert_eq!(reused.status(), 422);

    for (i, (bad, field)) in [
        (json!({"url": "ftp://example.com/", "enabled_events": ["*"]}), "url"),
        (json!({"url": "not a url", "enabled_events": ["*"]}), "url"),
        (json!({"url": "https://example.com/", "enabled_events": []}), "enabled_events"),
        (json!({"url": "https://example.com/", "enabled_events": ["payment.exploded"]}), "enabled_events"),
    ]
    .into_iter()
    .enumerate()
    {
        let response = post(&gateway, "/v1/webhook_endpoints", &format!("bad-{i}"), bad.clone()).await;
        assert_eq!(response.status(), 422, "{bad}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    for bad in [
        json!({"url": "https://example.com/"}),
        json!({"url": 5, "enabled_events": ["*"]}),
        json!({"url": "https://e.com/", "enabled_events": ["*"], "extra": 1}),
    ] {
        let response = post(&gateway, "/v1/webhook_endpoints", "bad-shape", bad.clone()).await;
        assert!(matches!(response.status().as_u16(), 400 | 422), "{bad}: {}", response.status());
    }
    let no_key = gateway
        .client
        .post(gateway.at("/v1/webhook_endpoints"))
        .bearer_auth(MERCHANT_A.1)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400, "an Idempotency-Key is required");

    let list: Value = get(&gateway, "/v1/webhook_endpoints").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none(), "secrets are shown once: {list}");
    let theirs: Value = gateway.get_as(MERCHANT_B.1, "/v1/webhook_endpoints").await.json().await.unwrap();
    assert_eq!(theirs["data"].as_array().unwrap().len(), 0);

    let id = created["id"].as_str().unwrap();
    let foreign = gateway
        .client
        .delete(gateway.at(&format!("/v1/webhook_endpoints/{id}")))
        .bearer_auth(MERCHANT_B.1)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    let deleted = gateway
        .client
        .delete(gateway.at(&format!("/v1/webhook_endpoints/{id}")))
        .bearer_auth(MERCHANT_A.1)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap()["deleted"], true);
    let again = gateway
        .client
        .delete(gateway.at(&format!("/v1/webhook_endpoints/{id}")))
        .bearer_auth(MERCHANT_A.1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let list: Value = get(&gateway, "/v1/webhook_endpoints").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // At most 16 live endpoints.
    for i in 0..16 {
        let response = post(
            &gateway,
            "/v1/webhook_endpoints",
            &format!("many-{i}"),
            json!({"url": format!("https://example.com/{i}"), "enabled_events": ["*"]}),
        )
        .await;
        assert_eq!(response.status(), 201);
    }
    let over = post(
        &gateway,
        "/v1/webhook_endpoints",
        "many-16",
        json!({"url": "https://example.com/16", "enabled_events": ["*"]}),
    )
    .await;
    assert_eq!(over.status(), 422);
}

#[tokio::test]
async fn private_addresses_are_refused_when_the_gateway_is_told_to() {
    let bank = TestBank::start().await;
    let mut config = config(&bank, "memory");
    config.webhook_allow_private = false;
    let gateway = TestGateway::start(config).await;
    for url in [
        "http://127.0.0.1:9/hooks",
        "http://[::1]/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest",
    ] {
        let response = post(&gateway, "/v1/webhook_endpoints", url, json!({"url": url, "enabled_events": ["*"]})).await;
        assert_eq!(response.status(), 422, "{url}");
    }
    let public = post(
        &gateway,
        "/v1/webhook_endpoints",
        "public",
        json!({"url": "https://example.com/hooks", "enabled_events": ["*"]}),
    )
    .await;
    assert_eq!(public.status(), 201);
}

async fn a_failing_endpoint_is_retried_on_its_schedule_then_failed_and_a_redelivery_starts_over(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    let receiver = WebhookReceiver::start(Plan { fail_share: 1.0, ..Plan::default() }).await;
    subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &receiver.url, &["payment.succeeded"]).await;
    let paid: Value = gateway.pay("retry-1", &payment_body(500, APPROVE, "r")).await.json().await.unwrap();
    let events: Value = get(&gateway, "/v1/events?type=payment.succeeded").await.json().await.unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(events["data"][0]["data"]["object"]["id"], paid["id"]);

    // The schedule has three waits: four attempts, then failed.
    let failed = wait_for("the delivery to fail for good", Duration::from_secs(20), || async {
        let deliveries: Value = get(&gateway, &format!("/v1/events/{event_id}/deliveries")).await.json().await.ok()?;
        (deliveries["data"][0]["status"] == "failed").then_some(deliveries["data"][0].clone())
    })
    .await;
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{failed}");
    assert!(attempts.iter().all(|a| a["status_code"] == 500));
    assert_eq!(receiver.received().len(), 4);
    assert!(receiver.received().iter().all(|r| r.id == event_id), "the same webhook-id on every attempt");

    // The receiver recovers; a redelivery sends it again, once per key.
    receiver.set_plan(Plan::default());
    let redeliver = |key: &'static str| {
        let gateway = &gateway;
        let event_id = event_id.clone();
        async move { post(gateway, &format!("/v1/events/{event_id}/redeliver"), key, json!({})).await }
    };
    let started = redeliver("again-1").await;
    assert_eq!(started.status(), 202);
    assert!(started.headers().get("idempotent-replayed").is_none());
    wait_for("the redelivery", Duration::from_secs(10), || async {
        (receiver.delivered_ids().contains(&event_id)).then_some(())
    })
    .await;
    let replayed = redeliver("again-1").await;
    assert_eq!(
        (replayed.status().as_u16(), replayed.headers()["idempotent-replayed"].to_str().unwrap()),
        (202, "true")
    );
    let deliveries: Value = get(&gateway, &format!("/v1/events/{event_id}/deliveries")).await.json().await.unwrap();
    assert_eq!(deliveries["data"][0]["status"], "delivered");
    assert_eq!(deliveries["data"][0]["attempts"].as_array().unwrap().len(), 5, "{deliveries}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 5, "a replayed redelivery sends nothing");
    let unknown = post(&gateway, "/v1/events/evt_nope/redeliver", "x", json!({})).await;
    assert_eq!(unknown.status(), 404);
}

/// A hanging endpoint trips its own breaker and is put off; a healthy one beside it gets every
/// event, and the hanging one is not tried for every event.
async fn a_hanging_endpoint_trips_its_own_breaker_and_never_holds_up_another(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    let hanging =
        WebhookReceiver::start(Plan { hang_share: 1.0, hang: Duration::from_secs(5), ..Plan::default() }).await;
    let healthy = WebhookReceiver::start(Plan::default()).await;
    subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &hanging.url, &["*"]).await;
    subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &healthy.url, &["*"]).await;
    for i in 0..30 {
        assert_eq!(gateway.pay(&format!("hang-{i}"), &payment_body(100, APPROVE, "hang")).await.status(), 201);
    }
    let events = all_events(&gateway.client, &gateway.url, MERCHANT_A.1).await;
    assert_eq!(events.len(), 60);
    let ids: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    wait_for("the healthy endpoint to get everything", Duration::from_secs(20), || async {
        (healthy.delivered_ids() == ids).then_some(())
    })
    .await;
    let tried = hanging.received().len();
    assert!(tried < ids.len(), "the breaker put the hanging endpoint off: tried {tried} of {} events", ids.len());
    assert!(tried >= 5, "it was tried until the breaker opened: {tried}");

    // The live stream reports delivery health per endpoint, for the dashboard.
    let stream = gateway.client.get(gateway.at("/admin/stream")).bearer_auth(tests::ADMIN_KEY).send().await.unwrap();
    let mut reader = dashboard_tui::sse::SseReader::new(stream);
    let health = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = reader.next().await.expect("the stream stays open");
            if event.kind == "webhooks" {
                break serde_json::from_str::<Vec<wire::EndpointHealth>>(&event.data).unwrap();
            }
        }
    })
    .await
    .expect("a webhooks event within a few seconds");
    let by_url: HashMap<&str, &wire::EndpointHealth> = health.iter().map(|h| (h.url.as_str(), h)).collect();
    assert_eq!(by_url[healthy.url.as_str()].breaker, "closed");
    assert_eq!(by_url[healthy.url.as_str()].delivered, 60);
    assert_ne!(by_url[hanging.url.as_str()].breaker, "closed", "{health:?}");
    assert_eq!(by_url[hanging.url.as_str()].delivered, 0);
}

mod crash {
    //! kill -9 a gateway while events are written, fanned out and in flight to a receiver that
    //! hangs or fails: after a restart (redb) or on the surviving instance (Redis), every event
    //! still reaches the endpoint, always under its own webhook-id.

    use super::*;
    use tests::process::GatewayProcess;

    const FAST: &[&str] = &[
        "--log",
        "warn",
        "--webhook-retry-schedule-s",
        "0.1,0.2,0.2,0.5,1,1,1",
        "--webhook-timeout-ms",
        "400",
        "--webhook-lease-ms",
        "1500",
        "--webhook-breaker-open-ms",
        "300",
    ];

    async fn start(bank: &TestBank, store: &str) -> GatewayProcess {
        GatewayProcess::start(env!("CARGO_BIN_EXE_gateway-under-test"), &bank.url, store, FAST).await
    }

    async fn pay(client: &reqwest::Client, url: &str, key: &str) {
        let response = client
            .post(format!("{url}/v1/payments"))
            .bearer_auth(MERCHANT_A.1)
            .header("Idempotency-Key", key)
            .json(&payment_body(300, APPROVE, "crash"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    /// Waits until the receiver has had every event of the log delivered, and checks each
    /// delivery's signature and id.
    async fn everything_arrives(client: &reqwest::Client, url: &str, receiver: &WebhookReceiver, secret: &str) {
        let events = all_events(client, url, MERCHANT_A.1).await;
        let ids: HashSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        wait_for("every event delivered after the crash", Duration::from_secs(40), || async {
            ids.is_subset(&receiver.delivered_ids()).then_some(())
        })
        .await;
        for delivery in receiver.received() {
            assert!(signature_is_valid(secret, &delivery.id, &delivery.timestamp, &delivery.body, &delivery.signature));
            assert_eq!(delivery.json()["id"], delivery.id);
        }
    }

    #[tokio::test]
    async fn a_gateway_killed_between_its_changes_and_their_deliveries_delivers_them_after_a_restart_on_redb() {
        let bank = TestBank::start().await;
        let dir = std::env::temp_dir().join(format!("rp-whcrash-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
        let store = format!("redb:{}", dir.join("gateway.redb").display());
        let receiver =
            WebhookReceiver::start(Plan { hang_share: 0.5, fail_share: 0.3, hang: Duration::from_secs(3), seed: 11 })
                .await;
        let client = reqwest::Client::new();
        let gateway = start(&bank, &store).await;
        let (_, secret) = subscribe(&client, &gateway.url, MERCHANT_A.1, &receiver.url, &["*"]).await;
        for i in 0..20 {
            pay(&client, &gateway.url, &format!("c-{i}")).await;
        }
        wait_for("deliveries in flight", Duration::from_secs(10), || async {
            (receiver.received().len() >= 5).then_some(())
        })
        .await;
        drop(gateway); // kill -9: leased deliveries, unsent ones and perhaps unfanned events die with it
        receiver.set_plan(Plan::default());
        let gateway = start(&bank, &store).await;
        everything_arrives(&client, &gateway.url, &receiver, &secret).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn instances_share_deliveries_and_one_killed_mid_flight_loses_none_on_redis() {
        let Some(redis) = RedisServer::start("instances_share_deliveries").await else { return };
        let bank = TestBank::start().await;
        let receiver =
            WebhookReceiver::start(Plan { hang_share: 1.0, hang: Duration::from_secs(3), ..Plan::default() }).await;
        let client = reqwest::Client::new();
        let doomed = start(&bank, &redis.url()).await;
        let survivor = start(&bank, &redis.url()).await;
        let (_, secret) = subscribe(&client, &doomed.url, MERCHANT_A.1, &receiver.url, &["*"]).await;
        for i in 0..20 {
            let url = if i % 2 == 0 { &doomed.url } else { &survivor.url };
            pay(&client, url, &format!("r-{i}")).await;
        }
        wait_for("deliveries in flight", Duration::from_secs(10), || async {
            (receiver.received().len() >= 8).then_some(())
        })
        .await;
        drop(doomed); // kill -9: what it had taken is left leased to nobody
        receiver.set_plan(Plan::default());
        everything_arrives(&client, &survivor.url, &receiver, &secret).await;
        // The log is shared: the survivor lists the dead instance's events too.
        let events = all_events(&client, &survivor.url, MERCHANT_A.1).await;
        assert_eq!(events.len(), 40, "two events per payment");
    }
}

/// The same creation, or the same redelivery, sent many times at once acts once.
async fn racing_creations_and_redeliveries_under_one_key_act_once(store: &str) {
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, store)).await;
    let receiver = WebhookReceiver::start(Plan::default()).await;
    let body = json!({"url": receiver.url, "enabled_events": ["payment.succeeded"]});
    let creations = (0..8).map(|_| post(&gateway, "/v1/webhook_endpoints", "race-create", body.clone()));
    let answers = futures_util::future::join_all(creations).await;
    let mut secrets = HashSet::new();
    for answer in answers {
        assert_eq!(answer.status(), 201);
        secrets.insert(answer.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned());
    }
    assert_eq!(secrets.len(), 1, "one endpoint, one secret");
    let list: Value = get(&gateway, "/v1/webhook_endpoints").await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    assert_eq!(gateway.pay("race-pay", &payment_body(100, APPROVE, "race")).await.status(), 201);
    let events: Value = get(&gateway, "/v1/events?type=payment.succeeded").await.json().await.unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    wait_for("the first delivery", Duration::from_secs(10), || async {
        receiver.delivered_ids().contains(&event_id).then_some(())
    })
    .await;
    let path = format!("/v1/events/{event_id}/redeliver");
    let redeliveries = (0..8).map(|_| post(&gateway, &path, "race-again", json!({})));
    for answer in futures_util::future::join_all(redeliveries).await {
        assert_eq!(answer.status(), 202);
    }
    wait_for("the redelivery", Duration::from_secs(10), || async { (receiver.received().len() >= 2).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2, "one redelivery, however many times it was asked for");
}

/// The README's receiver (`examples/webhook_receiver.py`, Python's standard library only) accepts
/// the gateway's deliveries with the right secret and refuses them with another: a third,
/// independent reading of the signature.
#[tokio::test]
async fn the_python_receiver_of_the_readme_verifies_deliveries() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let bank = TestBank::start().await;
    let gateway = TestGateway::start(config(&bank, "memory")).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/webhook_receiver.py");
    let (right, wrong) = (tests::process::free_addr(), tests::process::free_addr());
    let (_, secret) = subscribe(
        &gateway.client,
        &gateway.url,
        MERCHANT_A.1,
        &format!("http://{right}/hooks"),
        &["payment.succeeded"],
    )
    .await;
    subscribe(&gateway.client, &gateway.url, MERCHANT_A.1, &format!("http://{wrong}/hooks"), &["payment.succeeded"])
        .await;
    let receiver = |addr: std::net::SocketAddr| {
        let mut command = std::process::Command::new("python3");
        command.arg(script).env("WEBHOOK_SECRET", &secret).env("PORT", addr.port().to_string());
        tests::process::KillOnDrop::spawn(&mut command).unwrap()
    };
    // The second receiver holds the first endpoint's secret, not its own.
    let (_right, _wrong) = (receiver(right), receiver(wrong));
    for addr in [right, wrong] {
        wait_for("the receiver to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(drop)
        })
        .await;
    }
    assert_eq!(gateway.pay("py-1", &payment_body(100, APPROVE, "py")).await.status(), 201);
    let events: Value = get(&gateway, "/v1/events?type=payment.succeeded").await.json().await.unwrap();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    let deliveries = wait_for("an answer from each receiver", Duration::from_secs(20), || async {
        let list: Value = get(&gateway, &format!("/v1/events/{event_id}/deliveries")).await.json().await.ok()?;
        let data = list["data"].as_array()?.clone();
        (data.len() == 2 && data.iter().all(|d| !d["attempts"].as_array().unwrap().is_empty())).then_some(data)
    })
    .await;
    let codes: HashSet<i64> = deliveries
        .iter()
        .map(|d| d["attempts"].as_array().unwrap().last().unwrap()["status_code"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(codes, HashSet::from([204, 400]), "{deliveries:?}");
}
