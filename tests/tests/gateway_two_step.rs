//! Two-step payments through the real bank: authorize (`"capture": false`), then capture (all or
//! part) or cancel, or let it expire; every row of the contract's table, each verb under
//! ambiguous, timeout and reset faults, and a capture racing a cancel, on every store. The bank's
//! ledger is the truth throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{RedisServer, TestBank, TestGateway, authorization_body, wait_for};

const APPROVE: &str = "4242424242424242";
const DECLINE: &str = "4000000000000002";

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Authorizes `amount` and returns the payment.
async fn authorize(gateway: &TestGateway, key: &str, amount: i64) -> Value {
    let (status, payment) = answer(gateway.pay(key, &authorization_body(amount, APPROVE, key)).await).await;
    assert_eq!(status, 201, "{payment}");
    payment
}

fn ledger_authorization(ledger: &Value, id: &str) -> Value {
    ledger["authorizations"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned().expect("in the ledger")
}

/// The bank's authorization behind a payment (found by the reference the gateway sends).
async fn bank_hold(bank: &TestBank) -> Vec<Value> {
    bank.ledger().await["authorizations"].as_array().unwrap().clone()
}

async fn setup() -> (TestBank, Arc<TestGateway>) {
    let bank = TestBank::start().await;
    let gateway = Arc::new(TestGateway::start(TestGateway::config(&bank.url, "memory")).await);
    (bank, gateway)
}

#[tokio::test]
async fn an_authorization_holds_the_amount_and_a_capture_takes_it_once() {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "two-1", 1_000).await;
    assert_eq!(held["status"], "requires_capture");
    assert_eq!((held["capture"].as_bool(), held["amount_capturable"].as_i64()), (Some(false), Some(1_000)));
    assert_eq!((held["amount_captured"].as_i64(), held["amount_refunded"].as_i64()), (Some(0), Some(0)));
    assert!(held["capture_before"].is_string() && held["bank_charge_id"].is_null(), "{held}");
    let holds = bank_hold(&bank).await;
    assert_eq!((holds.len(), holds[0]["status"].as_str()), (1, Some("authorized")));
    assert_eq!(bank.charge_count().await, 0, "nothing charged yet");

    let id = held["id"].as_str().unwrap();
    let (status, captured) = answer(gateway.capture(id, "cap-1", None).await).await;
    assert_eq!(status, 200, "{captured}");
    assert_eq!(captured["status"], "succeeded");
    assert_eq!((captured["amount_captured"].as_i64(), captured["amount_capturable"].as_i64()), (Some(1_000), Some(0)));
    let charge_id = captured["bank_charge_id"].as_str().unwrap();
    let charge = &bank.charges_by_id().await[charge_id];
    assert_eq!((charge["amount"].as_i64(), charge["status"].as_str()), (Some(1_000), Some("approved")));
    assert_eq!(
        ledger_authorization(&bank.ledger().await, charge["authorization_id"].as_str().unwrap())["status"],
        "captured"
    );

    // The same key replays; another capture or a cancel is 409; the bank saw one capture.
    let replay = gateway.capture(id, "cap-1", None).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(answer(replay).await.1, captured);
    let (status, problem) = answer(gateway.capture(id, "cap-2", None).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    let (status, problem) = answer(gateway.cancel(id, "cancel-1").await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    assert_eq!(bank.charge_count().await, 1);
    assert_eq!(gateway.payment(id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_partial_capture_releases_the_rest_and_refunds_apply_to_what_was_captured() {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "part", 1_000).await;
    let id = held["id"].as_str().unwrap();
    let (status, captured) = answer(gateway.capture(id, "cap", Some(json!({"amount": 600}))).await).await;
    assert_eq!((status, captured["amount_captured"].as_i64()), (200, Some(600)), "{captured}");
    let hold = &bank_hold(&bank).await[0];
    assert_eq!((hold["status"].as_str(), hold["captured_amount"].as_i64()), (Some("captured"), Some(600)));

    let (status, problem) = answer(gateway.refund(id, "ref-over", Some(json!({"amount": 700}))).await).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")), "{problem}");
    let (status, refund) = answer(gateway.refund(id, "ref-all", None).await).await;
    assert_eq!((status, refund["amount"].as_i64()), (201, Some(600)), "{refund}");
    let refunded = gateway.payment(id).await;
    assert_eq!(refunded["status"], "refunded");
    assert_eq!((refunded["amount_refunded"].as_i64(), refunded["refunded_amount"].as_i64()), (Some(600), Some(600)));
    let charge = &bank.charges_by_id().await[refunded["bank_charge_id"].as_str().unwrap()];
    assert_eq!((charge["amount"].as_i64(), charge["refunded_amount"].as_i64()), (Some(600), Some(600)));
}

#[tokio::test]
async fn a_cancel_releases_the_hold_once_and_nothing_is_captured_after_it() {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "cancel", 800).await;
    let id = held["id"].as_str().unwrap();
    let (status, canceled) = answer(gateway.cancel(id, "cancel-1").await).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(
        (canceled["status"].as_str(), canceled["cancellation_reason"].as_str()),
        (Some("canceled"), Some("requested"))
    );
    assert!(canceled["canceled_at"].is_string());
    assert_eq!((canceled["amount_capturable"].as_i64(), canceled["amount_captured"].as_i64()), (Some(0), Some(0)));
    assert_eq!(bank_hold(&bank).await[0]["status"], "voided");

    let replay = gateway.cancel(id, "cancel-1").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    for (status, problem) in [
        answer(gateway.capture(id, "cap-after", None).await).await,
        answer(gateway.cancel(id, "cancel-2").await).await,
        answer(gateway.refund(id, "refund-after", None).await).await,
    ] {
        assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    }
    assert_eq!(bank.charge_count().await, 0, "nothing was ever charged");
}

#[tokio::test]
async fn bad_captures_are_refused_before_the_bank_and_free_their_key() {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "bad", 500).await;
    let id = held["id"].as_str().unwrap();
    for amount in [501, 0, -1] {
        let (status, problem) = answer(gateway.capture(id, "cap", Some(json!({"amount": amount}))).await).await;
        assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")), "{amount}: {problem}");
    }
    let (status, problem) = answer(gateway.capture(id, "cap", Some(json!({"amount": 1, "x": 2}))).await).await;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")), "{problem}");
    let (status, problem) = answer(gateway.cancel(id, "cancel-with-body").await).await;
    assert_eq!(status, 200, "{problem}");
    assert_eq!(bank_hold(&bank).await[0]["status"], "voided");
    // The refused capture freed its key: the same key with a corrected body is a new request (409
    // now: the hold was canceled meanwhile).
    let (status, problem) = answer(gateway.capture(id, "cap", Some(json!({"amount": 500}))).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    let missing = gateway.capture("pay_nope", "k", None).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_declined_authorization_cannot_be_captured_or_canceled() {
    let (bank, gateway) = setup().await;
    let (status, declined) = answer(gateway.pay("declined", &authorization_body(300, DECLINE, "declined")).await).await;
    assert_eq!((status, declined["status"].as_str()), (402, Some("declined")), "{declined}");
    let id = declined["id"].as_str().unwrap();
    for (status, problem) in
        [answer(gateway.capture(id, "c", None).await).await, answer(gateway.cancel(id, "c").await).await]
    {
        assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    }
    assert_eq!(bank_hold(&bank).await[0]["status"], "declined");
}

#[tokio::test]
async fn an_authorization_not_captured_in_time_is_canceled_as_expired() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.authorization_ttl_s = 1;
    let gateway = TestGateway::start(config).await;
    let held = authorize(&gateway, "expiring", 400).await;
    let id = held["id"].as_str().unwrap();
    let expired = wait_for("the authorization to expire", Duration::from_secs(15), || async {
        let payment = gateway.payment(id).await;
        (payment["status"] == "canceled").then_some(payment)
    })
    .await;
    assert_eq!(expired["cancellation_reason"], "expired");
    assert_eq!(bank_hold(&bank).await[0]["status"], "voided", "the gateway released it at the bank");
    let (status, problem) = answer(gateway.capture(id, "late", None).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
}

#[tokio::test]
async fn an_authorization_past_capture_before_is_not_captured_even_before_the_reconciler_cancels_it() {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.authorization_ttl_s = 1;
    config.reconcile_interval_ms = 600_000; // the reconciler will not get to it in this test
    let gateway = TestGateway::start(config).await;
    let held = authorize(&gateway, "past", 400).await;
    let id = held["id"].as_str().unwrap();
    let before: chrono::DateTime<chrono::Utc> = held["capture_before"].as_str().unwrap().parse().unwrap();
    wait_for("capture_before to pass", Duration::from_secs(10), || async {
        (chrono::Utc::now() > before).then_some(())
    })
    .await;
    let (status, problem) = answer(gateway.capture(id, "late", None).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("capture_before"), "{problem}");
    assert_eq!(bank.charge_count().await, 0);
    // The cancel is still the client's to make.
    let (status, canceled) = answer(gateway.cancel(id, "cancel").await).await;
    assert_eq!((status, canceled["status"].as_str()), (200, Some("canceled")), "{canceled}");
}

#[tokio::test]
async fn a_hold_the_bank_let_expire_is_canceled_as_expired_when_captured() {
    let bank = TestBank::start_with(tests::BankConfig { authorization_ttl_s: 1, ..tests::BankConfig::default() }).await;
    let gateway = TestGateway::start(TestGateway::config(&bank.url, "memory")).await;
    let held = authorize(&gateway, "bank-expired", 400).await;
    let id = held["id"].as_str().unwrap().to_owned();
    wait_for("the bank's hold to lapse", Duration::from_secs(10), || async {
        (bank_hold(&bank).await[0]["status"] == "expired").then_some(())
    })
    .await;
    let (status, problem) = answer(gateway.capture(&id, "too-late", None).await).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");
    let payment = gateway.payment(&id).await;
    assert_eq!(
        (payment["status"].as_str(), payment["cancellation_reason"].as_str()),
        (Some("canceled"), Some("expired"))
    );
    assert_eq!(bank.charge_count().await, 0);
}

#[tokio::test]
async fn an_authorization_whose_answer_was_lost_is_settled_to_requires_capture() {
    let (bank, gateway) = setup().await;
    bank.patch_chaos(json!({"ambiguous_rate": 1.0})).await;
    let (status, pending) = answer(gateway.pay("lost-auth", &authorization_body(650, APPROVE, "lost")).await).await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("processing")), "{pending}");
    bank.patch_chaos(json!({"ambiguous_rate": 0.0})).await;
    let id = pending["id"].as_str().unwrap();
    let held = wait_for("the reconciler to find the hold", Duration::from_secs(20), || async {
        let payment = gateway.payment(id).await;
        (payment["status"] == "requires_capture").then_some(payment)
    })
    .await;
    assert_eq!(held["amount_capturable"], 650);
    let replay = wait_for("the key to replay the hold", Duration::from_secs(10), || async {
        let (status, body) = answer(gateway.pay("lost-auth", &authorization_body(650, APPROVE, "lost")).await).await;
        (status == 201).then_some(body)
    })
    .await;
    assert_eq!(replay["status"], "requires_capture");
    assert_eq!(bank_hold(&bank).await.len(), 1, "held once");
    let (status, captured) = answer(gateway.capture(id, "cap", Some(json!({"amount": 650}))).await).await;
    assert_eq!((status, captured["status"].as_str()), (200, Some("succeeded")), "{captured}");
}

/// A capture and a cancel sent at once on one authorization: exactly one wins, the other is 409,
/// and the bank never sees both commit.
async fn capture_races_cancel(store: &str) {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 2, "jitter_ms": 10}})).await;
    let gateway = Arc::new(TestGateway::start(TestGateway::config(&bank.url, store)).await);
    for round in 0..10 {
        let held = authorize(&gateway, &format!("race-{round}"), 1_000).await;
        let id = held["id"].as_str().unwrap().to_owned();
        let capturing = {
            let (gateway, id) = (Arc::clone(&gateway), id.clone());
            tokio::spawn(async move { answer(gateway.capture(&id, &format!("cap-{round}"), None).await).await })
        };
        let canceling = {
            let (gateway, id) = (Arc::clone(&gateway), id.clone());
            tokio::spawn(async move { answer(gateway.cancel(&id, &format!("cancel-{round}")).await).await })
        };
        let ((captured, capture), (canceled, cancel)) = (capturing.await.unwrap(), canceling.await.unwrap());
        let winner = match (captured, canceled) {
            (200, 409) => "succeeded",
            (409, 200) => "canceled",
            other => panic!("round {round}: {other:?}: {capture} / {cancel}"),
        };
        let loser = if captured == 409 { &capture } else { &cancel };
        assert_eq!(loser["code"], "invalid_state", "{loser}");
        assert_eq!(gateway.payment(&id).await["status"], winner);
    }
    let ledger = bank.ledger().await;
    let totals = &ledger["totals"]["authorizations"];
    assert_eq!(totals["captured"].as_u64().unwrap() + totals["voided"].as_u64().unwrap(), 10, "{totals}");
    assert_eq!(ledger["totals"]["charges"], totals["captured"], "a charge per capture, none per cancel");
}

#[tokio::test]
async fn a_capture_and_a_cancel_racing_never_both_happen_in_memory() {
    capture_races_cancel("memory").await;
}

#[tokio::test]
async fn a_capture_and_a_cancel_racing_never_both_happen_on_redb() {
    let dir = std::env::temp_dir().join(format!("rp-two-step-{}", uuid::Uuid::new_v4()));
    capture_races_cancel(&format!("redb:{}", dir.join("store.redb").display())).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_capture_and_a_cancel_racing_never_both_happen_on_redis() {
    let Some(redis) = RedisServer::start("capture_races_cancel").await else { return };
    capture_races_cancel(&redis.url()).await;
}

/// Which verb a fault test sends.
#[derive(Debug, Clone, Copy)]
enum Verb {
    Capture,
    Cancel,
}

impl Verb {
    async fn send(self, gateway: &TestGateway, id: &str, key: &str) -> (u16, Value) {
        match self {
            Verb::Capture => answer(gateway.capture(id, key, None).await).await,
            Verb::Cancel => answer(gateway.cancel(id, key).await).await,
        }
    }

    fn done(self) -> (&'static str, &'static str) {
        match self {
            Verb::Capture => ("succeeded", "captured"),
            Verb::Cancel => ("canceled", "voided"),
        }
    }
}

/// Under a fault that may have let the bank act (ambiguous: it committed and lost the answer;
/// timeout: it commits late), the verb is answered 202 `processing`, and once the bank is healthy
/// the reconciler settles it from what the bank did; the same key then replays the outcome, and
/// the bank acted once.
async fn unknown_outcome_is_settled(verb: Verb, fault: Value) {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "faulty", 700).await;
    let id = held["id"].as_str().unwrap();
    bank.patch_chaos(fault.clone()).await;
    let (status, pending) = verb.send(&gateway, id, "verb-1").await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("processing")), "{fault}: {pending}");
    assert_eq!(pending["amount_capturable"], 0, "nothing can be captured while it is pending");
    // Listed as it is shown.
    for (status, listed) in [("processing", true), ("requires_capture", false)] {
        let page: Value =
            gateway.get_as(tests::MERCHANT_A.1, &format!("/v1/payments?status={status}")).await.json().await.unwrap();
        let ids: Vec<&str> = page["data"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
        assert_eq!(ids.contains(&id), listed, "?status={status}: {ids:?}");
    }
    let (status, problem) = verb.send(&gateway, id, "verb-other-key").await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("invalid_state")), "{problem}");

    bank.patch_chaos(json!({"ambiguous_rate": 0.0, "timeout_rate": 0.0})).await;
    let (status_name, bank_status) = verb.done();
    let settled = wait_for("the reconciler to settle it", Duration::from_secs(20), || async {
        let payment = gateway.payment(id).await;
        (payment["status"] == status_name).then_some(payment)
    })
    .await;
    let replay = wait_for("the key to replay the outcome", Duration::from_secs(10), || async {
        let (status, body) = verb.send(&gateway, id, "verb-1").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(replay["status"], settled["status"]);
    assert_eq!(bank_hold(&bank).await[0]["status"], bank_status);
    let captures = if matches!(verb, Verb::Capture) { 1 } else { 0 };
    assert_eq!(bank.charge_count().await, captures, "the bank acted once");
}

#[tokio::test]
async fn an_ambiguous_capture_is_settled_by_the_reconciler() {
    unknown_outcome_is_settled(Verb::Capture, json!({"ambiguous_rate": 1.0})).await;
}

#[tokio::test]
async fn an_ambiguous_cancel_is_settled_by_the_reconciler() {
    unknown_outcome_is_settled(Verb::Cancel, json!({"ambiguous_rate": 1.0})).await;
}

#[tokio::test]
async fn a_capture_that_hangs_and_commits_late_is_settled_by_the_reconciler() {
    unknown_outcome_is_settled(Verb::Capture, json!({"timeout_rate": 1.0, "hang_ms": 2_000})).await;
}

#[tokio::test]
async fn a_cancel_that_hangs_and_commits_late_is_settled_by_the_reconciler() {
    unknown_outcome_is_settled(Verb::Cancel, json!({"timeout_rate": 1.0, "hang_ms": 2_000})).await;
}

/// Under a fault that proves the bank did nothing (an outage: 503 before processing), the verb is
/// 503 with nothing done, the payment still `requires_capture`, and the key free for a retry.
async fn refused_verb_frees_its_key(verb: Verb) {
    let (bank, gateway) = setup().await;
    let held = authorize(&gateway, "outage", 900).await;
    let id = held["id"].as_str().unwrap();
    bank.patch_chaos(json!({"outage": true})).await;
    let (status, problem) = verb.send(&gateway, id, "verb-1").await;
    assert_eq!((status, problem["code"].as_str()), (503, Some("bank_unavailable")), "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("nothing was captured") || detail.contains("the hold was not released"), "{detail}");
    assert_eq!(gateway.payment(id).await["status"], "requires_capture");
    assert_eq!(bank_hold(&bank).await[0]["status"], "authorized");

    bank.patch_chaos(json!({"outage": false})).await;
    let (status, done) = verb.send(&gateway, id, "verb-1").await;
    assert_eq!((status, done["status"].as_str()), (200, Some(verb.done().0)), "{done}");
    assert_eq!(bank_hold(&bank).await[0]["status"], verb.done().1);
}

#[tokio::test]
async fn a_capture_refused_by_a_bank_outage_frees_its_key() {
    refused_verb_frees_its_key(Verb::Capture).await;
}

#[tokio::test]
async fn a_cancel_refused_by_a_bank_outage_frees_its_key() {
    refused_verb_frees_its_key(Verb::Cancel).await;
}

/// A connection reset may come after the bank acted, so the verb is 202; the reconciler finds
/// that the bank did nothing once it can no longer commit, puts the payment back to
/// `requires_capture` and frees the key, and a retry with the same key then does it, once.
async fn reset_verb_is_found_not_done_and_retried(verb: Verb) {
    let bank = TestBank::start().await;
    let mut config = TestGateway::config(&bank.url, "memory");
    config.commit_window_ms = 300;
    let gateway = TestGateway::start(config).await;
    let held = authorize(&gateway, "reset", 900).await;
    let id = held["id"].as_str().unwrap();
    bank.patch_chaos(json!({"reset_rate": 1.0})).await;
    let (status, pending) = verb.send(&gateway, id, "verb-1").await;
    assert_eq!((status, pending["status"].as_str()), (202, Some("processing")), "{pending}");

    bank.patch_chaos(json!({"reset_rate": 0.0})).await;
    wait_for("the reconciler to find it not done", Duration::from_secs(20), || async {
        (gateway.payment(id).await["status"] == "requires_capture").then_some(())
    })
    .await;
    assert_eq!(bank_hold(&bank).await[0]["status"], "authorized");
    let done = wait_for("the retry to be done", Duration::from_secs(10), || async {
        let (status, body) = verb.send(&gateway, id, "verb-1").await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(done["status"], verb.done().0);
    assert_eq!(bank_hold(&bank).await[0]["status"], verb.done().1);
}

#[tokio::test]
async fn a_capture_reset_on_the_wire_is_found_not_done_and_retried() {
    reset_verb_is_found_not_done_and_retried(Verb::Capture).await;
}

#[tokio::test]
async fn a_cancel_reset_on_the_wire_is_found_not_done_and_retried() {
    reset_verb_is_found_not_done_and_retried(Verb::Cancel).await;
}

/// Every verb at once on one authorization: three captures and three cancels under distinct keys
/// (each key twice), three refunds and the authorization's own key again. At most one capture key
/// or one cancel key wins, never both; refunds only come after a capture and never exceed it;
/// the gateway, the answers and the ledger agree.
#[tokio::test]
async fn every_verb_races_on_one_authorization() {
    let bank = TestBank::start().await;
    bank.patch_chaos(json!({"latency": {"base_ms": 2, "jitter_ms": 15}})).await;
    let gateway = Arc::new(TestGateway::start(TestGateway::config(&bank.url, "memory")).await);
    for round in 0..5 {
        let tag = format!("all-{round}");
        let held = authorize(&gateway, &tag, 1_000).await;
        let id = held["id"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for (verb, n) in [("capture", 3), ("cancel", 3), ("refund", 3)] {
            for i in 0..n {
                let copies = if verb == "refund" { 1 } else { 2 };
                for _ in 0..copies {
                    let (gateway, id, key) = (Arc::clone(&gateway), id.clone(), format!("{tag}-{verb}-{i}"));
                    tasks.push(tokio::spawn(async move {
                        let response = match verb {
                            "capture" => gateway.capture(&id, &key, None).await,
                            "cancel" => gateway.cancel(&id, &key).await,
                            _ => gateway.refund(&id, &key, Some(json!({"amount": 100}))).await,
                        };
                        (verb, key, answer(response).await)
                    }));
                }
            }
        }
        let replay = {
            let (gateway, tag) = (Arc::clone(&gateway), tag.clone());
            tokio::spawn(
                async move { answer(gateway.pay(&tag, &authorization_body(1_000, APPROVE, &tag)).await).await },
            )
        };
        let mut won = std::collections::HashMap::new();
        let mut refunded = 0;
        for task in tasks {
            let (verb, key, (status, body)) = task.await.unwrap();
            match (verb, status) {
                ("capture" | "cancel", 200) => {
                    if let Some(earlier) = won.insert(key.clone(), body["status"].clone()) {
                        assert_eq!(earlier, body["status"], "{key} answered two ways");
                    }
                }
                ("refund", 201) => refunded += body["amount"].as_i64().unwrap(),
                (_, 409) => {
                    let code = body["code"].as_str().unwrap();
                    assert!(matches!(code, "invalid_state" | "idempotency_key_in_use"), "{key}: {body}");
                }
                other => panic!("{key}: unexpected {other:?}: {body}"),
            }
        }
        let (status, again) = replay.await.unwrap();
        assert_eq!((status, &again["id"]), (201, &held["id"]), "the authorization's key replays");
        assert!(won.len() <= 1, "{tag}: more than one capture or cancel key won: {won:?}");
        let settled = wait_for("nothing left pending", Duration::from_secs(20), || async {
            let payment = gateway.payment(&id).await;
            (payment["status"] != "processing").then_some(payment)
        })
        .await;
        let hold = ledger_authorization(&bank.ledger().await, settled["bank_authorization_id"].as_str().unwrap());
        match settled["status"].as_str().unwrap() {
            "succeeded" | "partially_refunded" => {
                assert_eq!(hold["status"], "captured");
                let charge = &bank.charges_by_id().await[settled["bank_charge_id"].as_str().unwrap()];
                assert_eq!(charge["refunded_amount"].as_i64().unwrap(), refunded, "{tag}: refunds agree with the bank");
                assert_eq!(settled["amount_refunded"].as_i64().unwrap(), refunded);
            }
            "canceled" => {
                assert_eq!(hold["status"], "voided");
                assert_eq!(refunded, 0, "{tag}: nothing refunded of a canceled hold");
            }
            "requires_capture" => assert!(won.is_empty(), "{tag}: a winner but still held"),
            other => panic!("{tag}: {other}"),
        }
    }
    let ledger = bank.ledger().await;
    assert_eq!(ledger["totals"]["charges"], ledger["totals"]["authorizations"]["captured"]);
}
