//! The order saga on the gateway's webhooks, under fire: hundreds of orders through bank chaos, a
//! receiver that answers 500 or hangs for a share of deliveries, a kill -9 and restart of the saga
//! service and of the gateway. Then: every order is confirmed with its payment captured, or
//! cancelled with no money held or kept; every payment event was processed once; the bank's
//! ledger agrees.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tests::process::{GatewayProcess, KillOnDrop, free_addr};
use tests::webhooks::all_events;
use tests::{MERCHANT_A, TestBank, wait_for};

const ORDERS: usize = 200;

async fn start_gateway(bank: &TestBank, addr: SocketAddr, store: &str) -> GatewayProcess {
    let extra = [
        "--log",
        "warn",
        "--rate-limit-per-sec",
        "5000",
        "--rate-limit-burst",
        "5000",
        "--webhook-retry-schedule-s",
        "0.2,0.5,1,1,2,2,2,2",
        "--webhook-timeout-ms",
        "500",
        "--webhook-lease-ms",
        "2000",
        "--webhook-breaker-open-ms",
        "300",
    ];
    GatewayProcess::start_at(env!("CARGO_BIN_EXE_gateway-under-test"), addr, &bank.url, store, &extra).await
}

async fn start_saga(addr: SocketAddr, gateway_url: &str, store: &std::path::Path) -> KillOnDrop {
    let saga = KillOnDrop::spawn(
        Command::new(env!("CARGO_BIN_EXE_saga-under-test"))
            .args(["--listen", &addr.to_string(), "--gateway-url", gateway_url, "--api-key", MERCHANT_A.1])
            .args(["--store", &store.display().to_string()])
            .args(["--stock-failure-rate", "0.25", "--webhook-fail-share", "0.15", "--webhook-hang-share", "0.1"])
            .args(["--catch-up-interval-ms", "1000", "--retry-ms", "300"])
            .env("SAGA_LOG", "warn"),
    )
    .unwrap();
    let client = reqwest::Client::new();
    wait_for("the saga to subscribe", Duration::from_secs(20), || async {
        let stats: Value = client.get(format!("http://{addr}/stats")).send().await.ok()?.json().await.ok()?;
        (stats["subscribed"] == true).then_some(())
    })
    .await;
    saga
}

async fn place(client: &reqwest::Client, saga: SocketAddr, i: usize) {
    let card = match i % 20 {
        0 | 1 => "decline",
        2 => "insufficient_funds",
        _ => "approve",
    };
    wait_for("an order to be placed", Duration::from_secs(20), || async {
        let response = client
            .post(format!("http://{saga}/orders"))
            .header("Idempotency-Key", format!("order-{i}"))
            .json(&json!({"amount": 1_000 + i as i64, "card": card}))
            .send()
            .await
            .ok()?;
        (response.status() == 201).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_order_ends_confirmed_and_captured_or_cancelled_with_nothing_kept() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"failure_rate": 0.03, "ambiguous_rate": 0.03, "timeout_rate": 0.03, "hang_ms": 400, "latency": {"base_ms": 5, "jitter_ms": 10}, "seed": 21})).await;
    let dir = std::env::temp_dir().join(format!("rp-saga-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let gateway_store = format!("redb:{}", dir.join("gateway.redb").display());
    let saga_store = dir.join("saga.redb");
    let (gateway_addr, saga_addr) = (free_addr(), free_addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();

    let mut gateway = start_gateway(&bank, gateway_addr, &gateway_store).await;
    let mut saga = start_saga(saga_addr, &gateway.url, &saga_store).await;
    for i in 0..ORDERS {
        place(&client, saga_addr, i).await;
        if i == ORDERS / 3 {
            drop(saga); // kill -9 the saga: webhooks meanwhile fail; it catches up after
            tokio::time::sleep(Duration::from_millis(500)).await;
            saga = start_saga(saga_addr, &gateway.url, &saga_store).await;
        }
        if i == 2 * ORDERS / 3 {
            drop(gateway); // kill -9 the gateway with deliveries and payments in flight
            gateway = start_gateway(&bank, gateway_addr, &gateway_store).await;
        }
    }

    let orders: Vec<Value> = wait_for("every order to settle", Duration::from_secs(120), || async {
        let list: Value = client.get(format!("http://{saga_addr}/orders")).send().await.ok()?.json().await.ok()?;
        let orders = list["data"].as_array()?.clone();
        (orders.len() == ORDERS && orders.iter().all(|o| o["settled"] == true)).then_some(orders)
    })
    .await;

    // The gateway's view of each order's payment, and the bank's.
    bank.client.post(bank.at("/chaos/presets/healthy")).send().await.unwrap();
    let payments = Value::Array(tests::soak::all_payments(&client, &gateway.url, MERCHANT_A.1).await.unwrap());
    let mut by_order: HashMap<String, Vec<&Value>> = HashMap::new();
    for payment in payments.as_array().unwrap() {
        by_order.entry(payment["order_id"].as_str().unwrap().to_owned()).or_default().push(payment);
    }
    let ledger: Value = client.get(bank.at("/v1/ledger")).send().await.unwrap().json().await.unwrap();
    let holds: HashMap<&str, &Value> =
        ledger["authorizations"].as_array().unwrap().iter().map(|a| (a["id"].as_str().unwrap(), a)).collect();
    assert!(
        holds.values().all(|a| a["status"] != "authorized"),
        "no money is left held: {:?}",
        holds.values().filter(|a| a["status"] == "authorized").collect::<Vec<_>>()
    );

    let (mut confirmed, mut cancelled) = (0, 0);
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        let own = by_order.get(id).cloned().unwrap_or_default();
        let kept = |p: &Value| p["amount_captured"].as_i64().unwrap() - p["amount_refunded"].as_i64().unwrap();
        for payment in &own {
            if let Some(hold) = payment["bank_authorization_id"].as_str() {
                assert_ne!(holds[hold]["status"], "authorized", "no hold left: {order} {payment}");
            }
        }
        match order["state"].as_str().unwrap() {
            "confirmed" => {
                confirmed += 1;
                let captured: Vec<&&Value> = own.iter().filter(|p| kept(p) > 0).collect();
                assert_eq!(captured.len(), 1, "one payment keeps the money: {order} {own:?}");
                let payment = captured[0];
                assert_eq!(payment["id"], order["payment_id"]);
                assert_eq!(payment["status"], "succeeded", "{order} {payment}");
                assert_eq!(payment["amount_captured"], order["amount"], "captured in full");
                assert_eq!(order["stock_reserved"], true);
                let hold = holds[payment["bank_authorization_id"].as_str().unwrap()];
                assert_eq!(
                    (hold["status"].as_str(), hold["captured_amount"].as_i64()),
                    (Some("captured"), order["amount"].as_i64())
                );
            }
            "cancelled" => {
                cancelled += 1;
                assert!(own.iter().all(|p| kept(p) == 0), "a cancelled order keeps no money: {order} {own:?}");
                assert_eq!(order["stock_reserved"], false);
                for payment in &own {
                    let status = payment["status"].as_str().unwrap();
                    assert!(["canceled", "declined", "failed", "refunded"].contains(&status), "{order} {payment}");
                }
            }
            other => panic!("{other}"),
        }
    }
    assert!(confirmed > ORDERS / 3 && cancelled > ORDERS / 10, "a mix: {confirmed} confirmed, {cancelled} cancelled");

    // Every payment event of the log was processed, once: the inbox holds each event id once.
    let events = all_events(&client, &gateway.url, MERCHANT_A.1).await;
    let payment_events: HashSet<&str> = events
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("payment."))
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let stats: Value = wait_for("the inbox to hold every payment event", Duration::from_secs(30), || async {
        let stats: Value = client.get(format!("http://{saga_addr}/stats")).send().await.ok()?.json().await.ok()?;
        (stats["inbox"].as_u64()? as usize == payment_events.len()).then_some(stats)
    })
    .await;
    assert!(stats["duplicates"].as_u64().unwrap() > 0, "redeliveries came and were ignored: {stats}");
    assert_eq!(stats["invalid_signatures"], 0);
    drop(saga);
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}

/// Down for longer than the gateway keeps retrying: the deliveries fail for good, and the saga
/// learns what it missed from the events API when it is back.
#[tokio::test]
async fn a_saga_down_past_every_retry_catches_up_from_the_events_api() {
    let bank = TestBank::start().await;
    let dir = std::env::temp_dir().join(format!("rp-saga-cu-{}-{}", std::process::id(), uuid::Uuid::new_v4()));
    let gateway = GatewayProcess::start(
        env!("CARGO_BIN_EXE_gateway-under-test"),
        &bank.url,
        &format!("redb:{}", dir.join("gateway.redb").display()),
        &[
            "--log",
            "warn",
            "--webhook-retry-schedule-s",
            "0.05",
            "--webhook-timeout-ms",
            "300",
            "--webhook-lease-ms",
            "1000",
        ],
    )
    .await;
    let saga_addr = free_addr();
    let client = reqwest::Client::new();
    let saga = start_saga(saga_addr, &gateway.url, &dir.join("saga.redb")).await;
    for i in 0..10 {
        place(&client, saga_addr, i).await;
    }
    // The authorizations go out; the saga dies before their outcomes arrive.
    wait_for("every authorization sent", Duration::from_secs(20), || async {
        let page: Value = client
            .get(format!("{}/v1/payments?limit=100", gateway.url))
            .bearer_auth(MERCHANT_A.1)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (page["data"].as_array()?.len() == 10).then_some(())
    })
    .await;
    drop(saga);
    // Every delivery meanwhile runs out of attempts.
    let events = all_events(&client, &gateway.url, MERCHANT_A.1).await;
    wait_for("deliveries to fail for good", Duration::from_secs(30), || async {
        for event in &events {
            let id = event["id"].as_str()?;
            let deliveries: Value = client
                .get(format!("{}/v1/events/{id}/deliveries", gateway.url))
                .bearer_auth(MERCHANT_A.1)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if deliveries["data"].as_array()?.iter().any(|d| d["status"] == "pending") {
                return None;
            }
        }
        Some(())
    })
    .await;
    let saga = start_saga(saga_addr, &gateway.url, &dir.join("saga.redb")).await;
    // An order the gateway will never take (a currency it does not accept) ends cancelled.
    let refused: Value = client
        .post(format!("http://{saga_addr}/orders"))
        .json(&json!({"amount": 500, "currency": "XYZ"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    wait_for("every order to settle", Duration::from_secs(60), || async {
        let list: Value = client.get(format!("http://{saga_addr}/orders")).send().await.ok()?.json().await.ok()?;
        let orders = list["data"].as_array()?;
        orders.iter().all(|o| o["settled"] == true).then_some(())
    })
    .await;
    let stats: Value = client.get(format!("http://{saga_addr}/stats")).send().await.unwrap().json().await.unwrap();
    assert!(stats["processed_from_events_api"].as_u64().unwrap() > 0, "{stats}");
    let refused: Value = client
        .get(format!("http://{saga_addr}/orders/{}", refused["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refused["state"], "cancelled", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("refused"), "{refused}");
    drop(saga);
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}
