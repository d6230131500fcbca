//! Several banks: routing, and failover that can never charge twice. Each bank is a real mock
//! bank with its own ledger; the ledgers are the audit truth.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashSet;
use std::time::Duration;

use payment_api::Config;
use payment_api::config::{BankSpec, Routing};
use serde_json::{Value, json};
use tests::{ADMIN_KEY, TestBank, TestGateway, payment_body, wait_for};

const APPROVE: &str = "4242424242424242";
const INSUFFICIENT_FUNDS: &str = "4000000000009995";
const PROCESSING_ERROR: &str = "4000000000000119";

fn two_banks(primary: &TestBank, backup: &TestBank) -> Config {
    let mut config = TestGateway::config(&primary.url, "memory");
    config.banks = vec![
        BankSpec { name: "primary".into(), url: primary.url.clone() },
        BankSpec { name: "backup".into(), url: backup.url.clone() },
    ];
    config.rate_limit_per_sec = 1_000_000.0;
    config.rate_limit_burst = 1_000_000;
    config
}

async fn admin_banks(gateway: &TestGateway) -> Vec<Value> {
    let response = gateway.client.get(gateway.at("/admin/banks")).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Vec<Value>>().await.unwrap()
}

/// `PUT /admin/banks/{bank}/breaker`.
async fn force(gateway: &TestGateway, bank: &str, state: &str) {
    let response = gateway
        .client
        .put(gateway.at(&format!("/admin/banks/{bank}/breaker")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"state": state}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn attempted(payment: &Value) -> Vec<&str> {
    payment["attempted_acquirers"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect()
}

/// The bank keys of a bank's approved charges.
async fn charged_keys(bank: &TestBank) -> HashSet<String> {
    let ledger = bank.ledger().await;
    ledger["charges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "approved")
        .map(|c| c["idempotency_key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_outage_at_the_primary_sends_payments_to_the_backup_and_an_open_breaker_is_not_called() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    primary.client.post(primary.at("/chaos/presets/outage")).send().await.unwrap();
    let mut config = two_banks(&primary, &backup);
    config.breaker_open_ms = 60_000;
    config.breaker_open_max_ms = 60_000;
    let gateway = TestGateway::start(config).await;
    for i in 0..30 {
        let response = gateway.pay(&format!("out-{i}"), &payment_body(100 + i, APPROVE, "out")).await;
        assert_eq!(response.status(), 201, "the backup takes it");
        let payment: Value = response.json().await.unwrap();
        assert_eq!(payment["acquirer"], "backup");
        assert_eq!(*attempted(&payment).last().unwrap(), "backup");
    }
    let banks = admin_banks(&gateway).await;
    assert_eq!(banks[0]["name"], "primary");
    assert_eq!(banks[0]["breaker"]["state"], "open", "{banks:?}");
    assert_eq!(banks[1]["breaker"]["state"], "closed");
    // From now on the primary is skipped without a call.
    let called = primary.stats().await["requests"].as_u64().unwrap();
    for i in 30..50 {
        let payment: Value =
            gateway.pay(&format!("out-{i}"), &payment_body(100 + i, APPROVE, "out")).await.json().await.unwrap();
        assert_eq!(attempted(&payment), ["backup"], "{payment}");
    }
    assert_eq!(primary.stats().await["requests"].as_u64().unwrap(), called, "not one call to an open breaker's bank");
    assert!(charged_keys(&primary).await.is_empty());
    assert_eq!(charged_keys(&backup).await.len(), 50);
    // The failovers are counted.
    let metrics = gateway.client.get(gateway.at("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_bank_failovers_total{from=\"primary\",to=\"backup\"}"), "{metrics}");
    assert!(metrics.contains("gateway_bank_breaker_state{bank=\"primary\",state=\"open\"} 1"), "{metrics}");
    assert!(metrics.contains("gateway_bank_breaker_state{bank=\"backup\",state=\"closed\"} 1"), "{metrics}");
    assert!(metrics.contains("gateway_bank_calls_total{bank=\"backup\",result=\"approved\"} 50"), "{metrics}");
}

#[tokio::test]
async fn after_an_ambiguous_attempt_a_payment_never_reaches_another_bank() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    // Half the charges are processed and their answer lost; a quarter hang past the gateway's
    // attempt timeout and commit late.
    primary.patch_chaos(json!({"ambiguous_rate": 0.5, "timeout_rate": 0.25, "hang_ms": 400, "seed": 9})).await;
    let gateway = TestGateway::start(two_banks(&primary, &backup)).await;
    // The primary's breaker stays closed: every payment starts at the primary.
    force(&gateway, "primary", "forced_closed").await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let response = gateway.pay(&format!("amb-{i}"), &payment_body(200 + i, APPROVE, "amb")).await;
        assert!(matches!(response.status().as_u16(), 201 | 202), "{}", response.status());
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    primary.patch_chaos(json!({"ambiguous_rate": 0.0, "timeout_rate": 0.0})).await;
    for id in &ids {
        let payment = wait_for("the reconciler to settle it", Duration::from_secs(20), || async {
            let payment = gateway.payment(id).await;
            (payment["status"] != "processing").then_some(payment)
        })
        .await;
        assert_eq!(payment["status"], "succeeded");
        assert_eq!(attempted(&payment), ["primary"], "an unknown outcome stays with its bank: {payment}");
    }
    assert_eq!(backup.stats().await["requests"], 0, "the backup was never asked");
    assert_eq!(charged_keys(&primary).await.len(), 40);
}

#[tokio::test]
async fn a_final_decline_stays_and_a_soft_decline_tries_the_next_bank() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    let gateway = TestGateway::start(two_banks(&primary, &backup)).await;
    let response = gateway.pay("final", &payment_body(300, INSUFFICIENT_FUNDS, "d")).await;
    assert_eq!(response.status(), 402);
    let payment: Value = response.json().await.unwrap();
    assert_eq!((payment["decline_code"].as_str(), attempted(&payment)), (Some("insufficient_funds"), vec!["primary"]));
    assert_eq!(backup.stats().await["requests"], 0, "a final decline is never retried elsewhere");

    let response = gateway.pay("soft", &payment_body(300, PROCESSING_ERROR, "d")).await;
    assert_eq!(response.status(), 402, "every bank declined it");
    let payment: Value = response.json().await.unwrap();
    assert_eq!(payment["decline_code"], "processing_error");
    assert_eq!(attempted(&payment), ["primary", "backup"]);
    assert_eq!(payment["acquirer"], "backup");
    for bank in [&primary, &backup] {
        let declined = bank.ledger().await["totals"]["declined"].as_u64().unwrap();
        assert!(declined >= 1);
    }
}

#[tokio::test]
async fn captures_cancels_and_refunds_go_to_the_bank_that_holds_the_payment() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    let gateway = TestGateway::start(two_banks(&primary, &backup)).await;
    force(&gateway, "primary", "forced_open").await;
    let paid: Value = gateway.pay("held-1", &payment_body(800, APPROVE, "h")).await.json().await.unwrap();
    let held: Value = gateway.pay("held-2", &tests::authorization_body(900, APPROVE, "h")).await.json().await.unwrap();
    assert_eq!((paid["acquirer"].as_str(), held["acquirer"].as_str()), (Some("backup"), Some("backup")));
    force(&gateway, "primary", "auto").await;
    // The primary is back and first in line, but what the backup holds stays there.
    assert_eq!(gateway.refund(paid["id"].as_str().unwrap(), "r-1", Some(json!({"amount": 300}))).await.status(), 201);
    assert_eq!(gateway.capture(held["id"].as_str().unwrap(), "c-1", Some(json!({"amount": 500}))).await.status(), 200);
    let fresh: Value = gateway.pay("held-3", &payment_body(700, APPROVE, "h")).await.json().await.unwrap();
    assert_eq!(fresh["acquirer"], "primary");
    let ledger = backup.ledger().await;
    assert_eq!(
        ledger["totals"]["refunds"].as_u64().unwrap_or(ledger["refunds"].as_array().map_or(0, |r| r.len() as u64)),
        1
    );
    assert_eq!(ledger["authorizations"][0]["status"], "captured");
    assert!(primary.ledger().await["authorizations"].as_array().unwrap().is_empty());

    let unknown = gateway
        .client
        .put(gateway.at("/admin/banks/nope/breaker"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"state": "auto"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let banks = admin_banks(&gateway).await;
    let shares: f64 = banks.iter().map(|b| b["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{banks:?}");
}

#[tokio::test]
async fn a_bank_limited_to_some_currencies_gets_only_those() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    let mut config = two_banks(&primary, &backup);
    config.bank_currency_limits = Some(vec![("primary".into(), vec!["USD".into()])]);
    let gateway = TestGateway::start(config).await;
    let mut eur = payment_body(500, APPROVE, "cur");
    eur["currency"] = json!("EUR");
    let payment: Value = gateway.pay("eur", &eur).await.json().await.unwrap();
    assert_eq!(attempted(&payment), ["backup"]);
    let payment: Value = gateway.pay("usd", &payment_body(500, APPROVE, "cur")).await.json().await.unwrap();
    assert_eq!(attempted(&payment), ["primary"]);
}

/// Success-rate routing: a bank whose authorizations start failing loses its traffic (bar a
/// tenth that explores), and wins it back once it recovers.
#[tokio::test]
async fn success_rate_routing_moves_traffic_away_from_a_degraded_bank_and_back() {
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    let mut config = two_banks(&primary, &backup);
    config.routing = Routing::SuccessRate;
    let gateway = TestGateway::start(config).await;
    // Routing, not the breakers, moves the traffic here.
    force(&gateway, "primary", "forced_closed").await;
    let mut n = 0;
    let mut first_at_primary = |count: usize| {
        let gateway = &gateway;
        let start = n;
        n += count;
        async move {
            let mut primary_first = 0;
            for i in start..start + count {
                let response = gateway.pay(&format!("sr-{i}"), &payment_body(100, APPROVE, "sr")).await;
                let payment: Value = response.json().await.unwrap();
                if attempted(&payment)[0] == "primary" {
                    primary_first += 1;
                }
            }
            primary_first as f64 / count as f64
        }
    };
    let healthy = first_at_primary(100).await;
    assert!(healthy > 0.8, "equal rates keep the configured order, bar a tenth that explores: {healthy}");
    // Every charge at the primary now fails without being processed: each moves to the backup.
    primary.patch_chaos(json!({"failure_rate": 1.0})).await;
    first_at_primary(100).await;
    let degraded = first_at_primary(300).await;
    assert!(degraded < 0.2, "only the exploring share still starts at the primary: {degraded}");
    primary.patch_chaos(json!({"failure_rate": 0.0})).await;
    first_at_primary(800).await;
    let recovered = first_at_primary(200).await;
    assert!(recovered > 0.8, "the primary won its place back: {recovered}");
    assert!(charged_keys(&primary).await.is_disjoint(&charged_keys(&backup).await), "no key charged at both banks");
}

/// The store fails while a charge is at a bank that will turn out to have done nothing: the move to
/// the next bank cannot be recorded, so the next bank is not asked, and the client is answered
/// 503. Its retries, once the store and the bank are back, settle the payment once, at one bank.
#[tokio::test]
async fn a_store_failure_at_the_failover_charges_nothing_and_the_retries_charge_once() {
    let Some(mut redis) = tests::RedisServer::start_persistent("store_failure_at_the_failover").await else { return };
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    // The primary throttles every charge (it surely does nothing), slowly: time to take the store
    // away meanwhile.
    primary
        .patch_chaos(json!({"throttle_rate": 1.0, "retry_after_s": 0, "latency": {"base_ms": 600, "jitter_ms": 0}}))
        .await;
    let mut config = two_banks(&primary, &backup);
    config.store_url = redis.url();
    config.attempt_timeout_ms = 2_000;
    config.deadline_ms = 4_000;
    config.lease_ms = 6_500;
    let gateway = TestGateway::start(config).await;
    let body = payment_body(4_200, APPROVE, "sf");
    let paying = {
        let (client, url, body) = (gateway.client.clone(), gateway.at("/v1/payments"), body.clone());
        tokio::spawn(async move {
            client.post(url).bearer_auth(tests::MERCHANT_A.1).header("Idempotency-Key", "sf-1").json(&body).send().await
        })
    };
    wait_for("the charge to reach the primary", Duration::from_secs(10), || async {
        (primary.stats().await["requests"].as_u64().unwrap() >= 1).then_some(())
    })
    .await;
    redis.kill();
    let answer = paying.await.unwrap().unwrap();
    assert_eq!(answer.status(), 503, "nothing could be recorded");
    let problem: Value = answer.json().await.unwrap();
    // `store_unavailable` when the store failed at the move itself; `outcome_unknown` when it
    // failed while the primary's outcome was still being settled. Never a success.
    assert!(matches!(problem["code"].as_str(), Some("store_unavailable" | "outcome_unknown")), "{problem}");
    assert_eq!(backup.stats().await["requests"], 0, "the backup was not asked");

    redis.restart().await;
    // The move was never recorded: the payment is still the primary's, and a takeover cannot
    // prove the dead request's attempts did nothing while the primary answers no inquiry. It
    // stays there, unknown (202), until the primary answers again; then it settles once.
    primary.patch_chaos(json!({"throttle_rate": 0.0, "latency": {"base_ms": 0}})).await;
    let settled = wait_for("the retry to settle", Duration::from_secs(30), || async {
        let response = gateway.pay("sf-1", &body).await;
        (response.status() == 201).then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(settled["status"], "succeeded");
    let (at_primary, at_backup) = (charged_keys(&primary).await, charged_keys(&backup).await);
    assert_eq!(at_primary.len() + at_backup.len(), 1, "charged once, at one bank: {settled}");
}

/// A gateway dies while a payment's charge is at the backup, and the store loses the payment but
/// keeps its key. The retry takes the key over: before charging anywhere it asks every bank by the
/// bank key, finds the charge at the backup and settles there, though routing would now pick the
/// (recovered) primary. One charge, at one bank.
#[tokio::test]
async fn a_lost_payment_taken_over_is_found_at_its_bank_before_anything_is_charged() {
    let Some(redis) = tests::RedisServer::start_persistent("lost_payment_found_at_its_bank").await else { return };
    let (primary, backup) = (TestBank::start().await, TestBank::start().await);
    // The backup charges, then hangs: time to kill the gateway with the charge at the bank.
    backup.patch_chaos(json!({"timeout_rate": 1.0, "hang_ms": 3000})).await;
    let banks = format!("primary={},backup={}", primary.url, backup.url);
    let args = ["--log", "warn", "--banks", &banks, "--admin-key", ADMIN_KEY];
    let binary = env!("CARGO_BIN_EXE_gateway-under-test");
    let mut gateway = tests::process::GatewayProcess::start(binary, &primary.url, &redis.url(), &args).await;
    let client = reqwest::Client::new();
    let forced = client
        .put(format!("{}/admin/banks/primary/breaker", gateway.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"state": "forced_open"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forced.status(), 200);
    let body = payment_body(5_100, APPROVE, "lost");
    let paying = {
        let (client, url, body) = (client.clone(), format!("{}/v1/payments", gateway.url), body.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(tests::MERCHANT_A.1)
                .header("Idempotency-Key", "lost-1")
                .json(&body)
                .send()
                .await
        })
    };
    wait_for("the charge to reach the backup", Duration::from_secs(10), || async {
        (backup.stats().await["requests"].as_u64().unwrap() >= 1).then_some(())
    })
    .await;
    gateway.kill();
    assert!(paying.await.unwrap().is_err(), "no answer from the dead gateway");
    // The store forgets the payment, not the key.
    let connection = redis::Client::open(redis.url()).unwrap();
    let mut connection = connection.get_multiplexed_async_connection().await.unwrap();
    let key = format!("rp:idem:{}:payment:lost-1", tests::MERCHANT_A.0);
    let payment_id: String =
        redis::cmd("HGET").arg(&key).arg("resource_id").query_async(&mut connection).await.unwrap();
    redis.forget(&[&format!("rp:payment:{payment_id}")]).await;
    // The backup holds the charge; the new gateway's primary breaker is closed again.
    wait_for("the backup to commit", Duration::from_secs(10), || async {
        (charged_keys(&backup).await.len() == 1).then_some(())
    })
    .await;
    backup.patch_chaos(json!({"timeout_rate": 0.0})).await;
    let gateway = tests::process::GatewayProcess::start(binary, &primary.url, &redis.url(), &args).await;
    let settled = wait_for("the retry to settle", Duration::from_secs(30), || async {
        let response = client
            .post(format!("{}/v1/payments", gateway.url))
            .bearer_auth(tests::MERCHANT_A.1)
            .header("Idempotency-Key", "lost-1")
            .json(&body)
            .send()
            .await
            .ok()?;
        (response.status() == 201).then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(settled["acquirer"], "backup", "{settled}");
    assert!(charged_keys(&primary).await.is_empty(), "not charged again at the primary");
    assert_eq!(charged_keys(&backup).await.len(), 1);
}
