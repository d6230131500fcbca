//! Live chaos control: validation, presets, scenarios, stats, reset, and seeded determinism.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mock_bank::chaos::{ChaosConfig, ChaosPlan, Fault, LostAnswer};
use serde_json::{Value, json};
use tests::{BankConfig, Seen, TestBank, charge_body, wait_for};

const CARD: &str = "4242424242424242";

async fn send(bank: &TestBank, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = bank.client.request(method, bank.at(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn field_names(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|e| e.iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn invalid_configurations_are_422_and_change_nothing() {
    let bank = TestBank::start().await;
    let before = bank.get_json("/chaos").await;
    let cases = [
        (json!({"failure_rate": 1.5}), Some("failure_rate")),
        (json!({"reset_rate": -0.1}), Some("reset_rate")),
        (json!({"failure_rate": 0.6, "timeout_rate": 0.3, "throttle_rate": 0.2}), Some("failure_rate")),
        (json!({"slow_rate": 2}), Some("slow_rate")),
        (json!({"hang_ms": 10_000_000}), Some("hang_ms")),
        (json!({"latency": {"base_ms": 700_000}}), Some("latency.base_ms")),
        (json!({"hang_ms": -1}), None),
        (json!({"failure_rate": "high"}), None),
        (json!({"failure_rat": 0.1}), None),
        (json!({"latency": {"base": 1}}), None),
    ];
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        for (body, field) in &cases {
            let (status, problem) = send(&bank, method.clone(), "/chaos", Some(body.clone())).await;
            assert_eq!(status, 422, "{method} {body}");
            assert_eq!(problem["code"], "validation_failed");
            if let Some(field) = field {
                assert!(field_names(&problem).contains(&(*field).to_owned()), "{body}: {problem}");
            }
        }
    }
    let (status, _) = send(&bank, reqwest::Method::PATCH, "/chaos", Some(json!([1]))).await;
    assert_eq!(status, 422);
    let malformed =
        bank.client.put(bank.at("/chaos")).header("content-type", "application/json").body("{").send().await;
    assert_eq!(malformed.unwrap().status(), 400);
    assert_eq!(bank.get_json("/chaos").await, before);
}

#[tokio::test]
async fn put_replaces_the_whole_configuration_and_patch_merges() {
    let bank = TestBank::start().await;
    let (status, config) =
        send(&bank, reqwest::Method::PUT, "/chaos", Some(json!({"failure_rate": 0.25, "latency": {"base_ms": 3}})))
            .await;
    assert_eq!(status, 200);
    assert_eq!(config["failure_rate"], 0.25);
    assert_eq!(config["latency"], json!({"base_ms": 3, "jitter_ms": 0}));

    let patched = bank.patch_chaos(json!({"reset_rate": 0.1, "latency": {"jitter_ms": 4}})).await;
    assert_eq!(patched["failure_rate"], 0.25, "kept");
    assert_eq!(patched["reset_rate"], 0.1);
    assert_eq!(patched["latency"], json!({"base_ms": 3, "jitter_ms": 4}));

    let (_, replaced) = send(&bank, reqwest::Method::PUT, "/chaos", Some(json!({"throttle_rate": 0.5}))).await;
    assert_eq!(replaced["failure_rate"], 0.0, "PUT does not merge");
    assert_eq!(replaced["throttle_rate"], 0.5);
    assert_eq!(bank.get_json("/chaos").await, replaced);
}

#[tokio::test]
async fn presets_are_listed_and_applied_by_name() {
    let bank = TestBank::start().await;
    let presets = bank.get_json("/chaos/presets").await;
    let presets: HashMap<String, Value> = presets
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["config"].clone()))
        .collect();
    for name in ["healthy", "flaky", "degraded", "throttled", "brownout", "outage"] {
        let listed = presets.get(name).unwrap_or_else(|| panic!("preset {name} listed"));
        let (status, applied) = send(&bank, reqwest::Method::POST, &format!("/chaos/presets/{name}"), None).await;
        assert_eq!(status, 200);
        let mut expected = listed.clone();
        expected["seed"] = applied["seed"].clone();
        assert_eq!(applied, expected, "{name}");
    }
    assert_eq!(presets["outage"]["outage"], true);
    assert!(presets["throttled"]["throttle_rate"].as_f64().unwrap() > 0.0);
    let (status, problem) = send(&bank, reqwest::Method::POST, "/chaos/presets/meltdown", None).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn a_scenario_timeline_changes_the_chaos_over_time_and_can_be_stopped() {
    let bank = TestBank::start().await;
    let timeline = json!([
        {"after_s": 0, "preset": "flaky"},
        {"after_s": 0.2, "config": {"outage": true}},
    ]);
    let (status, started) = send(&bank, reqwest::Method::POST, "/chaos/scenario", Some(timeline)).await;
    assert_eq!(status, 201);
    assert_eq!(started["active"], true);
    assert_eq!(started["steps"].as_array().unwrap().len(), 2);

    wait_for("the outage step", Duration::from_secs(10), || async {
        let status = bank.get_json("/chaos/scenario").await;
        (status["current_step"] == 1 && status["active"] == false).then_some(())
    })
    .await;
    assert_eq!(bank.get_json("/chaos").await["outage"], true);
    let response = bank.charge("s", &charge_body(100, CARD), &[]).await.unwrap();
    assert_eq!(response.status(), 503);

    // A long timeline is stopped by DELETE before its second step.
    let long = json!({"steps": [{"after_s": 0, "preset": "healthy"}, {"after_s": 3600, "preset": "outage"}]});
    send(&bank, reqwest::Method::POST, "/chaos/scenario", Some(long)).await;
    wait_for("the first step", Duration::from_secs(10), || async {
        (bank.get_json("/chaos").await["outage"] == false).then_some(())
    })
    .await;
    let (status, stopped) = send(&bank, reqwest::Method::DELETE, "/chaos/scenario", None).await;
    assert_eq!((status, stopped["active"].as_bool()), (200, Some(false)));

    // A person's change stops a running timeline too.
    let repeating = json!({"steps": [{"after_s": 0, "preset": "healthy"}], "repeat_after_s": 3600});
    send(&bank, reqwest::Method::POST, "/chaos/scenario", Some(repeating)).await;
    assert_eq!(bank.get_json("/chaos/scenario").await["active"], true);
    bank.patch_chaos(json!({"failure_rate": 0.1})).await;
    assert_eq!(bank.get_json("/chaos/scenario").await["active"], false);

    let bad = json!([{"after_s": 5, "preset": "healthy"}, {"after_s": 1, "preset": "nope"}]);
    let (status, problem) = send(&bank, reqwest::Method::POST, "/chaos/scenario", Some(bad)).await;
    assert_eq!(status, 422);
    assert!(field_names(&problem).contains(&"steps[1].preset".to_owned()), "{problem}");
}

/// What a client sees for a decision of the plan.
fn expected_seen(fault: Fault) -> Seen {
    match fault {
        Fault::None => Seen::Status(201),
        Fault::Failure { status } => Seen::Status(status),
        Fault::Ambiguous(LostAnswer::ServerError) => Seen::Status(500),
        Fault::Ambiguous(LostAnswer::DroppedConnection) | Fault::Reset => Seen::NoResponse,
        Fault::Throttle { .. } => Seen::Status(429),
        Fault::Timeout { .. } => unreachable!("no timeouts configured"),
        Fault::Outage => Seen::Status(503),
    }
}

fn mixed_config() -> ChaosConfig {
    ChaosConfig {
        failure_rate: 0.2,
        ambiguous_rate: 0.1,
        reset_rate: 0.1,
        throttle_rate: 0.1,
        slow_rate: 0.3,
        slow_ms: 0,
        ..ChaosConfig::default()
    }
}

#[tokio::test]
async fn with_a_fixed_seed_every_fault_is_exactly_as_the_plan_predicts() {
    const N: usize = 300;
    let bank = TestBank::start_with(BankConfig { seed: Some(1234), ..BankConfig::default() }).await;
    let config = mixed_config();
    bank.patch_chaos(serde_json::to_value(ChaosConfig { seed: None, ..config.clone() }).unwrap()).await;

    let mut plan = ChaosPlan::new(config, 1234);
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let mut should_be_charged = Vec::new();
    for i in 0..N {
        let decision = plan.decide(None);
        let kind = match decision.fault {
            Fault::None => "none",
            Fault::Failure { .. } => "failure",
            Fault::Ambiguous(_) => "ambiguous",
            Fault::Reset => "reset",
            Fault::Throttle { .. } => "throttle",
            _ => unreachable!(),
        };
        *counts.entry(kind).or_default() += 1;
        if decision.slow {
            *counts.entry("slow").or_default() += 1;
        }
        let key = format!("seq-{i}");
        let seen = Seen::of(&bank.charge(&key, &charge_body(100, CARD), &[]).await);
        assert_eq!(seen, expected_seen(decision.fault), "request {i}");
        if matches!(decision.fault, Fault::None | Fault::Ambiguous(_)) {
            should_be_charged.push(key);
        }
    }

    let stats = bank.stats().await;
    assert_eq!(stats["requests"], N as u64);
    for kind in ["none", "failure", "ambiguous", "reset", "throttle", "slow"] {
        assert_eq!(stats["injected"][kind], counts.get(kind).copied().unwrap_or(0), "{kind}: {stats}");
    }
    assert!(counts["failure"] > 0 && counts["ambiguous"] > 0 && counts["reset"] > 0 && counts["throttle"] > 0);

    let charged = bank.charges_by_key().await;
    let mut charged: Vec<_> = charged.keys().cloned().collect();
    charged.sort();
    should_be_charged.sort();
    assert_eq!(charged, should_be_charged, "exactly the processed requests are in the ledger");
}

#[tokio::test]
async fn two_banks_with_the_same_seed_fail_the_same_way_and_a_put_seed_restarts_the_sequence() {
    let config = serde_json::to_value(ChaosConfig { seed: Some(77), ..mixed_config() }).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let bank = TestBank::start().await;
        let (status, _) = send(&bank, reqwest::Method::PUT, "/chaos", Some(config.clone())).await;
        assert_eq!(status, 200);
        let mut seen = Vec::new();
        for i in 0..100 {
            seen.push(Seen::of(&bank.charge(&format!("r{i}"), &charge_body(100, CARD), &[]).await));
        }
        runs.push(seen);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].iter().any(|s| *s != Seen::Status(201)), "faults happened");
}

#[tokio::test]
async fn with_random_seeds_the_rates_hold_within_statistical_tolerance() {
    const N: usize = 1_000;
    let bank = Arc::new(TestBank::start().await);
    bank.patch_chaos(json!({"failure_rate": 0.2, "throttle_rate": 0.1})).await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let bank = Arc::clone(&bank);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in (worker..N).step_by(8) {
                seen.push(Seen::of(&bank.charge(&format!("rand-{i}"), &charge_body(100, CARD), &[]).await));
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.unwrap());
    }
    let count = |f: &dyn Fn(&Seen) -> bool| seen.iter().filter(|s| f(s)).count();
    let failures = count(&|s| matches!(s, Seen::Status(500 | 503)));
    let throttled = count(&|s| *s == Seen::Status(429));
    let approved = count(&|s| *s == Seen::Status(201));
    assert_eq!(failures + throttled + approved, N);
    let within = |observed: usize, rate: f64| {
        let mean = N as f64 * rate;
        let sigma = (N as f64 * rate * (1.0 - rate)).sqrt();
        (observed as f64 - mean).abs() <= 5.0 * sigma
    };
    assert!(within(failures, 0.2), "failures {failures} of {N}");
    assert!(within(throttled, 0.1), "throttled {throttled} of {N}");
    assert_eq!(bank.charge_count().await, approved);
    let stats = bank.stats().await;
    assert_eq!(stats["injected"]["failure"], failures as u64);
    assert_eq!(stats["injected"]["throttle"], throttled as u64);
}

#[tokio::test]
async fn reset_restores_the_startup_configuration_seed_and_zero_counters() {
    let bank =
        TestBank::start_with(BankConfig { seed: Some(5), preset: "throttled".into(), ..BankConfig::default() }).await;
    let startup = bank.get_json("/chaos").await;
    assert_eq!(startup["seed"], 5);
    let first: Vec<Seen> = {
        let mut seen = Vec::new();
        for i in 0..40 {
            seen.push(Seen::of(&bank.charge(&format!("a{i}"), &charge_body(100, CARD), &[]).await));
        }
        seen
    };
    bank.patch_chaos(json!({"outage": true, "seed": 9})).await;
    assert!(bank.stats().await["requests"].as_u64().unwrap() >= 40);

    let (status, reset) = send(&bank, reqwest::Method::POST, "/chaos/reset", None).await;
    assert_eq!(status, 200);
    assert_eq!(reset, startup);
    let stats = bank.stats().await;
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["injected"]["failure"], 0);

    // The same sequence of faults as after start-up.
    let mut again = Vec::new();
    for i in 0..40 {
        again.push(Seen::of(&bank.charge(&format!("b{i}"), &charge_body(100, CARD), &[]).await));
    }
    assert_eq!(first, again);
}
