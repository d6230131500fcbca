//! The soak: many payments through a chaotic bank by careful clients, then the invariants checked
//! against the bank's ledger.
//!
//! Each logical payment has its own client key, also sent as the payment's `order_id`, so that the
//! ledger can be traced back to client keys: each approved charge through the payment that names
//! it (`bank_charge_id`), and that payment's `order_id`. A share of payments is sent
//! as duplicates: the same key and body at the same time, and once more afterwards. A share only
//! authorizes, then is captured (all or half), canceled, both at once, or left to expire; a
//! capture's charge is traced through its authorization.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

pub use crate::careful::{ClientTally, Final, Targets};
use crate::careful::{HoldTally, PaymentSession, RefundTally, amount_of_key, payment_body};
use crate::loadgen::{self, Bound, Pace};

#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub payments: usize,
    pub concurrency: usize,
    /// Share of payments also sent as a concurrent duplicate and once more afterwards.
    pub duplicate_share: f64,
    /// Share of succeeded payments then refunded (two partial refunds at once, then the rest).
    pub refund_share: f64,
    /// Share of payments that only authorize (then captured, canceled, raced or left to expire).
    pub two_step_share: f64,
    /// How long one logical payment may take, retries and polling included.
    pub payment_deadline: Duration,
    /// The store may lose its data mid-run (a Redis without persistence restarted): payments
    /// acknowledged before are then forgotten by the gateway, though never charged twice.
    pub store_may_forget: bool,
}

/// Who the soak pays as, so that every bank charge can be traced to a client key: the bank key
/// of a payment is derived from the merchant, the client's key and the request's fingerprint.
#[derive(Debug, Clone)]
pub struct Audit {
    pub merchant: String,
    pub fingerprint_key: String,
}

/// What the clients were answered.
#[derive(Debug, Default)]
pub struct Driven {
    /// Each logical payment's final answer.
    pub finals: HashMap<String, Option<Final>>,
    pub refunds: Vec<RefundTally>,
    pub holds: Vec<HoldTally>,
}

/// The outcome of a soak run and its invariant checks.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub figures: BTreeMap<&'static str, u64>,
    /// Each invariant with the number of violations (0 = holds).
    pub invariants: Vec<(&'static str, u64)>,
    pub examples: Vec<String>,
}

impl SoakReport {
    pub fn holds(&self) -> bool {
        self.invariants.iter().all(|(_, violations)| *violations == 0)
    }

    pub fn print(&self) {
        println!("{:<58} {:>10}", "figure", "value");
        for (name, value) in &self.figures {
            println!("{name:<58} {value:>10}");
        }
        println!();
        println!("{:<58} {:>10}", "invariant", "violations");
        for (name, violations) in &self.invariants {
            let mark = if *violations == 0 { "ok" } else { "FAILED" };
            println!("{name:<58} {violations:>10}  {mark}");
        }
        for example in self.examples.iter().take(20) {
            println!("  e.g. {example}");
        }
    }
}

/// Runs the plan: every logical payment by a careful client, duplicates and refunds included,
/// and returns what each client was answered.
pub async fn drive(targets: &Targets, plan: &SoakPlan, tally: Arc<ClientTally>) -> anyhow::Result<Driven> {
    let sessions =
        PaymentSession::many(plan.concurrency, targets, &tally, plan.duplicate_share, plan.payment_deadline)?;
    let sessions =
        sessions.into_iter().map(|s| s.with_refunds(plan.refund_share).with_two_step(plan.two_step_share)).collect();
    let (_, sessions) = loadgen::run(Pace::Closed, Bound::Count(plan.payments as u64), sessions).await?;
    let mut driven = Driven::default();
    for session in sessions {
        driven.finals.extend(session.finals);
        driven.refunds.extend(session.refunds);
        driven.holds.extend(session.holds);
    }
    Ok(driven)
}

/// The bank key each logical payment is charged under.
fn bank_keys(audit: &Audit, finals: &HashMap<String, Option<Final>>) -> HashMap<String, String> {
    finals
        .keys()
        .filter_map(|key| {
            let body = payment_body(key, amount_of_key(key)?);
            let request: payment_api::model::CreatePayment = serde_json::from_slice(&body).ok()?;
            let fingerprint =
                payment_api::fingerprint::fingerprint(audit.fingerprint_key.as_bytes(), &request.canonical());
            Some((payment_api::fingerprint::bank_key(&audit.merchant, key, &fingerprint), key.clone()))
        })
        .collect()
}

/// Every payment of the merchant, through the gateway's cursor pagination.
pub async fn all_payments(http: &reqwest::Client, gateway: &str, api_key: &str) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{gateway}/v1/payments?limit=100");
        if let Some(after) = &cursor {
            url.push_str(&format!("&starting_after={after}"));
        }
        let page: Value = http.get(url).bearer_auth(api_key).send().await?.error_for_status()?.json().await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        cursor = data.last().and_then(|p| p["id"].as_str()).map(str::to_owned);
        all.extend(data);
        if page["has_more"] != true || cursor.is_none() {
            return Ok(all);
        }
    }
}

/// Waits until no payment is processing (the reconciler drained) and no authorization is still
/// held (each captured, canceled, or expired and canceled by the gateway), up to `deadline`.
pub async fn quiesce(targets: &Targets, deadline: Duration) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    for bank in &targets.banks {
        http.post(format!("{bank}/chaos/reset")).send().await?.error_for_status()?;
        http.post(format!("{bank}/chaos/presets/healthy")).send().await?.error_for_status()?;
    }
    let give_up = Instant::now() + deadline;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        poll.tick().await;
        let payments = all_payments(&http, &targets.gateways[0], &targets.api_key).await?;
        let open = |p: &&Value| matches!(p["status"].as_str(), Some("processing" | "requires_capture"));
        if !payments.iter().any(|p| open(&p)) || Instant::now() >= give_up {
            return Ok(payments);
        }
    }
}

/// Checks the invariants: the gateway's payments, the clients' answers and the bank's ledger agree.
pub async fn check(
    targets: &Targets,
    plan: &SoakPlan,
    audit: &Audit,
    driven: &Driven,
    payments: &[Value],
    tally: &ClientTally,
) -> anyhow::Result<SoakReport> {
    let finals = &driven.finals;
    let http = reqwest::Client::new();
    // The banks' ledgers together: charge and authorization ids are unique across banks.
    let mut charges = Vec::new();
    let mut authorizations = Vec::new();
    let mut keys_per_bank: Vec<std::collections::HashSet<String>> = Vec::new();
    for bank in &targets.banks {
        let ledger: Value = http.get(format!("{bank}/v1/ledger")).send().await?.error_for_status()?.json().await?;
        let own_charges = ledger["charges"].as_array().cloned().unwrap_or_default();
        let own_holds = ledger["authorizations"].as_array().cloned().unwrap_or_default();
        // The bank keys that moved money here: approved charges (a capture's under its
        // authorization's key) and holds.
        let hold_key: HashMap<&str, &str> =
            own_holds.iter().filter_map(|a| Some((a["id"].as_str()?, a["idempotency_key"].as_str()?))).collect();
        let mut keys: std::collections::HashSet<String> = own_charges
            .iter()
            .filter(|c| c["status"] == "approved")
            .filter_map(|c| match c["authorization_id"].as_str() {
                Some(hold) => hold_key.get(hold).map(|k| (*k).to_owned()),
                None => c["idempotency_key"].as_str().map(str::to_owned),
            })
            .collect();
        keys.extend(
            own_holds
                .iter()
                .filter(|a| a["status"] != "declined")
                .filter_map(|a| a["idempotency_key"].as_str().map(str::to_owned)),
        );
        keys_per_bank.push(keys);
        charges.extend(own_charges);
        authorizations.extend(own_holds);
    }
    let authorization_by_id: HashMap<&str, &Value> =
        authorizations.iter().filter_map(|a| Some((a["id"].as_str()?, a))).collect();
    let mut by_charge: HashMap<&str, Vec<&Value>> = HashMap::new();
    for payment in payments {
        if let Some(charge) = payment["bank_charge_id"].as_str() {
            by_charge.entry(charge).or_default().push(payment);
        }
    }
    let mut report = SoakReport::default();

    let mut approved_per_key: HashMap<String, u64> = HashMap::new();
    let mut orphan_charges = 0;
    let mut forgotten_charges = 0;
    let mut amount_mismatch = 0;
    let client_key_of = bank_keys(audit, finals);
    let mut charged_per_client_key: HashMap<&str, u64> = HashMap::new();
    let mut charges_of_no_client = 0;
    for charge in charges.iter().filter(|c| c["status"] == "approved") {
        // A capture's charge is under the capture's key; its client key is its authorization's.
        let bank_key = match charge["authorization_id"].as_str().and_then(|id| authorization_by_id.get(id)) {
            Some(authorization) => authorization["idempotency_key"].as_str().unwrap_or_default(),
            None => charge["idempotency_key"].as_str().unwrap_or_default(),
        };
        match client_key_of.get(bank_key) {
            Some(key) => *charged_per_client_key.entry(key).or_default() += 1,
            None => {
                charges_of_no_client += 1;
                report.examples.push(format!("charge {bank_key} is under no client key's bank key"));
            }
        }
        let settled: Vec<&Value> = by_charge
            .get(charge["id"].as_str().unwrap_or_default())
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| matches!(p["status"].as_str(), Some("succeeded" | "refunded" | "partially_refunded")))
            .collect();
        match settled.as_slice() {
            [payment] => {
                if payment["amount_captured"] != charge["amount"] {
                    amount_mismatch += 1;
                    report.examples.push(format!(
                        "payment {} captured {} but its charge is {}",
                        payment["id"], payment["amount_captured"], charge["amount"]
                    ));
                }
                let key = payment["order_id"].as_str().unwrap_or_default().to_owned();
                *approved_per_key.entry(key).or_default() += 1;
            }
            [] if plan.store_may_forget => forgotten_charges += 1,
            other => {
                orphan_charges += 1;
                let of_key: Vec<String> = payments
                    .iter()
                    .filter(|p| p["bank_charge_id"] == charge["id"])
                    .map(|p| format!("{} {} ({} attempts)", p["id"], p["status"], p["attempts"]))
                    .collect();
                report.examples.push(format!(
                    "charge {bank_key} (charged at {}) has {} settled payments; payments naming it: {of_key:?}",
                    charge["created_at"].as_str().unwrap_or_default(),
                    other.len(),
                ));
            }
        }
    }
    let charged_twice =
        approved_per_key.values().chain(charged_per_client_key.values()).filter(|n| **n > 1).count() as u64;

    // Refunds: what the clients were told, the gateway's payment and the bank's charge agree.
    let by_id: HashMap<&str, &Value> = payments.iter().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let charge_by_id: HashMap<&str, &Value> = charges.iter().filter_map(|c| Some((c["id"].as_str()?, c))).collect();
    let mut refund_disagreements = 0;
    let mut refunds_answered = 0;
    for refund in &driven.refunds {
        refunds_answered += u64::from(refund.refunded > 0);
        let payment = by_id.get(refund.payment_id.as_str());
        let charge = payment.and_then(|p| charge_by_id.get(p["bank_charge_id"].as_str().unwrap_or_default()));
        let (Some(payment), Some(charge)) = (payment, charge) else {
            if !plan.store_may_forget {
                refund_disagreements += 1;
                report.examples.push(format!("refunded payment {} is gone", refund.payment_id));
            }
            continue;
        };
        let at_bank = charge["refunded_amount"].as_i64().unwrap_or(-1);
        let at_gateway = payment["refunded_amount"].as_i64().unwrap_or(-1);
        let agree = if plan.store_may_forget {
            at_bank >= refund.refunded && at_bank <= charge["amount"].as_i64().unwrap_or(0)
        } else {
            at_bank == refund.refunded && at_gateway == refund.refunded && !refund.diverged
        };
        if !agree {
            refund_disagreements += 1;
            report.examples.push(format!(
                "payment {}: clients were refunded {}, the gateway says {at_gateway}, the bank {at_bank}{}",
                refund.payment_id,
                refund.refunded,
                if refund.diverged { " (a refund key answered two ways)" } else { "" }
            ));
        }
    }
    let mut seen_succeeded_not_charged_once = 0;
    let mut diverged = 0;
    let mut unanswered = 0;
    for (key, answer) in finals {
        match answer {
            Some(f) if f.status == "DIVERGED" => {
                diverged += 1;
                report.examples.push(format!("{key}: duplicates saw different payments"));
            }
            Some(f) if f.status == "succeeded" => {
                // Counted at the bank, by the key's bank key: true even for payments the gateway forgot.
                let charged = charged_per_client_key.get(key.as_str()).copied();
                if charged != Some(1) {
                    seen_succeeded_not_charged_once += 1;
                    report.examples.push(format!("{key}: succeeded but charged {charged:?} times"));
                }
            }
            Some(_) => {}
            None => unanswered += 1,
        }
    }
    let processing = payments.iter().filter(|p| p["status"] == "processing").count() as u64;

    // Two-step payments, against the bank's authorizations.
    let mut charges_of_authorization: HashMap<&str, Vec<&Value>> = HashMap::new();
    for charge in &charges {
        if let Some(id) = charge["authorization_id"].as_str() {
            charges_of_authorization.entry(id).or_default().push(charge);
        }
    }
    let mut over_captured = 0;
    let mut captured_after_release = 0;
    let mut holds_left = 0;
    let mut holds_forgotten = 0;
    let orders: std::collections::HashSet<&str> = payments.iter().filter_map(|p| p["order_id"].as_str()).collect();
    for authorization in &authorizations {
        let id = authorization["id"].as_str().unwrap_or_default();
        let captured = authorization["captured_amount"].as_i64().unwrap_or(0);
        let made = charges_of_authorization.get(id).map_or(0, Vec::len);
        if captured > authorization["amount"].as_i64().unwrap_or(0) || made > 1 {
            over_captured += 1;
            report.examples.push(format!("authorization {id} captured {captured} in {made} charges"));
        }
        match authorization["status"].as_str() {
            Some("voided" | "expired") if captured > 0 || made > 0 => {
                captured_after_release += 1;
                report.examples.push(format!("authorization {id} was released and captured"));
            }
            Some("authorized") => {
                // A hold whose payment the store lost is the gateway's no more: nobody releases
                // it but the bank's own expiry.
                let key = client_key_of.get(authorization["idempotency_key"].as_str().unwrap_or_default());
                if plan.store_may_forget && key.is_none_or(|key| !orders.contains(key.as_str())) {
                    holds_forgotten += 1;
                } else {
                    holds_left += 1;
                    report.examples.push(format!("authorization {id} is still held"));
                }
            }
            _ => {}
        }
    }
    let hold_of_key: HashMap<&str, &Value> = authorizations
        .iter()
        .filter_map(|a| Some((client_key_of.get(a["idempotency_key"].as_str()?)?.as_str(), a)))
        .collect();
    for payment in payments.iter().filter(|p| p["status"] == "canceled") {
        let hold = hold_of_key.get(payment["order_id"].as_str().unwrap_or_default());
        if hold.is_some_and(|h| h["status"] == "captured") {
            captured_after_release += 1;
            report.examples.push(format!("payment {} is canceled but its hold was captured", payment["id"]));
        }
    }
    // What each payment says it took, less what it gave back, is what moved at the bank.
    let mut moved_mismatch = 0;
    for payment in payments {
        let charge = payment["bank_charge_id"].as_str().and_then(|id| charge_by_id.get(id));
        let moved = charge
            .filter(|c| c["status"] == "approved")
            .map_or(0, |c| c["amount"].as_i64().unwrap_or(0) - c["refunded_amount"].as_i64().unwrap_or(0));
        let said = payment["amount_captured"].as_i64().unwrap_or(0) - payment["amount_refunded"].as_i64().unwrap_or(0);
        if moved != said && !(plan.store_may_forget && charge.is_some()) {
            moved_mismatch += 1;
            report.examples.push(format!("payment {} says {said} moved, the bank {moved}", payment["id"]));
        }
    }
    // Every capture or cancel a client saw succeed happened, once.
    let mut verbs_not_once = 0;
    for hold in &driven.holds {
        let authorization = hold_of_key.get(hold.key.as_str());
        let status = authorization.and_then(|a| a["status"].as_str()).unwrap_or("missing");
        let made = authorization
            .and_then(|a| charges_of_authorization.get(a["id"].as_str().unwrap_or_default()))
            .map_or(0, Vec::len);
        let wrong = match (hold.captured, hold.canceled) {
            (Some(amount), false) => {
                status != "captured" || made != 1 || authorization.is_some_and(|a| a["captured_amount"] != amount)
            }
            (None, true) => !matches!(status, "voided" | "expired") || made != 0,
            (None, false) => false,
            (Some(_), true) => true,
        };
        // A store that lost its data answers a key's replay with 404: forgotten, not a lie.
        let diverged = hold.diverged && !(plan.store_may_forget && hold.forgotten);
        if wrong || diverged {
            verbs_not_once += 1;
            report.examples.push(format!(
                "{}: clients saw captured {:?}, canceled {}{}; the bank says {status} with {made} charges {}",
                hold.key,
                hold.captured,
                hold.canceled,
                if hold.diverged { " (a key answered two ways, or both won)" } else { "" },
                hold.detail,
            ));
        }
    }

    let count_status = |status: &str| finals.values().flatten().filter(|f| f.status == status).count() as u64;
    report.figures.insert("logical payments", finals.len() as u64);
    report.figures.insert("client requests sent", tally.sent.load(Ordering::Relaxed));
    report.figures.insert("client retries", tally.retries.load(Ordering::Relaxed));
    report.figures.insert("client transport errors", tally.transport_errors.load(Ordering::Relaxed));
    report.figures.insert("clients saw succeeded", count_status("succeeded"));
    report.figures.insert("clients saw declined", count_status("declined"));
    report.figures.insert("clients saw failed", count_status("failed"));
    report.figures.insert("gateway payments (all attempts)", payments.len() as u64);
    for (status, count) in tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let name: &'static str = match status {
            200 => "answers 200 (captures and cancels)",
            201 => "answers 201",
            202 => "answers 202 (then polled)",
            402 => "answers 402",
            409 => "answers 409 (key in use, retried)",
            429 => "answers 429 (rate limited, retried)",
            503 => "answers 503 (retried)",
            404 => "answers 404 (payment forgotten by the store; key sent again)",
            _ => "answers with another status",
        };
        *report.figures.entry(name).or_default() += count;
    }
    report.figures.insert("bank charges approved", charges.iter().filter(|c| c["status"] == "approved").count() as u64);
    report.figures.insert("bank charges declined", charges.iter().filter(|c| c["status"] == "declined").count() as u64);
    report.figures.insert("payments refunded by clients", refunds_answered);
    report.figures.insert("two-step: authorized", driven.holds.len() as u64);
    report
        .figures
        .insert("two-step: captures clients saw", driven.holds.iter().filter(|h| h.captured.is_some()).count() as u64);
    report.figures.insert("two-step: cancels clients saw", driven.holds.iter().filter(|h| h.canceled).count() as u64);
    let expired = payments.iter().filter(|p| p["cancellation_reason"] == "expired").count() as u64;
    report.figures.insert("two-step: expired (canceled by the gateway)", expired);
    let held_at_bank = |status: &str| authorizations.iter().filter(|a| a["status"] == status).count() as u64;
    report.figures.insert("bank authorizations captured", held_at_bank("captured"));
    report.figures.insert("bank authorizations voided", held_at_bank("voided"));
    report
        .figures
        .insert("bank refunds", charges.iter().map(|c| c["refunds"].as_array().map_or(0, Vec::len) as u64).sum());
    if plan.store_may_forget {
        report.figures.insert("approved charges the gateway forgot (store lost its data)", forgotten_charges);
        report.figures.insert("holds the gateway forgot, left to the bank's expiry", holds_forgotten);
    }

    // A bank key that moved money at two banks charged one payment twice.
    let mut banks_of_key: HashMap<&str, usize> = HashMap::new();
    for keys in &keys_per_bank {
        for key in keys {
            *banks_of_key.entry(key.as_str()).or_default() += 1;
        }
    }
    let at_two_banks = banks_of_key.values().filter(|n| **n > 1).count() as u64;
    report.figures.insert("banks", targets.banks.len() as u64);
    let moved = payments.iter().filter(|p| p["attempted_acquirers"].as_array().is_some_and(|a| a.len() > 1)).count();
    report.figures.insert("payments failed over to another bank", moved as u64);
    report.invariants = vec![
        ("no idempotency key charged twice", charged_twice),
        ("no idempotency key charged at more than one bank", at_two_banks),
        ("every approved charge is under a client key's bank key", charges_of_no_client),
        ("every approved charge has one succeeded payment", orphan_charges),
        ("charge and payment amounts agree", amount_mismatch),
        ("every payment seen succeeded is charged once", seen_succeeded_not_charged_once),
        ("duplicates of a key see the same payment", diverged),
        ("refunds: clients, gateway and bank agree", refund_disagreements),
        ("holds: never captured more than authorized, nor twice", over_captured),
        ("holds: nothing captured after a cancel or expiry", captured_after_release),
        ("holds: none left held at the bank", holds_left),
        ("captured minus refunded is what the bank moved", moved_mismatch),
        ("every capture or cancel a client saw happened once", verbs_not_once),
        ("no payment left processing", processing),
        ("no 500 ever", tally.server_errors.load(Ordering::Relaxed)),
        ("every payment got a final answer", unanswered),
    ];
    Ok(report)
}

/// A webhook receiver subscribed to every event of the soak's merchant.
#[derive(Debug)]
pub struct Webhooks {
    pub receiver: crate::webhooks::WebhookReceiver,
    pub secret: String,
}

/// Subscribes a receiver (answering as `plan` says) to every event, before the run.
pub async fn subscribe_webhooks(targets: &Targets, plan: crate::webhooks::Plan) -> Webhooks {
    let receiver = crate::webhooks::WebhookReceiver::start(plan).await;
    let client = reqwest::Client::new();
    let (_, secret) =
        crate::webhooks::subscribe(&client, &targets.gateways[0], &targets.api_key, &receiver.url, &["*"]).await;
    Webhooks { receiver, secret }
}

/// The event invariants, added to `report`: every event of the log reached the receiver, signed
/// and under its own id; each payment's newest event shows it as it is; no event names a payment
/// the gateway does not have. With `store_may_forget`, the log may have lost events with the
/// payments, so only the deliveries are checked.
pub async fn check_events(
    targets: &Targets,
    webhooks: &Webhooks,
    payments: &[Value],
    store_may_forget: bool,
    report: &mut SoakReport,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let events = crate::webhooks::all_events(&http, &targets.gateways[0], &targets.api_key).await;
    let ids: std::collections::HashSet<String> =
        events.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect();
    // Deliveries retried on the compressed schedule arrive within seconds.
    let give_up = Instant::now() + Duration::from_secs(60);
    while !ids.is_subset(&webhooks.receiver.delivered_ids()) && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let delivered = webhooks.receiver.delivered_ids();
    let undelivered = ids.difference(&delivered).count() as u64;
    let received = webhooks.receiver.received();
    let badly_signed = received
        .iter()
        .filter(|r| {
            let signed =
                crate::webhooks::signature_is_valid(&webhooks.secret, &r.id, &r.timestamp, &r.body, &r.signature);
            let body_id = serde_json::from_str::<Value>(&r.body).ok().and_then(|b| b["id"].as_str().map(str::to_owned));
            !signed || body_id.as_deref() != Some(r.id.as_str())
        })
        .count() as u64;
    report.figures.insert("events", ids.len() as u64);
    report.figures.insert("webhook deliveries received", received.len() as u64);
    report.figures.insert("webhook deliveries answered 2xx", delivered.len() as u64);
    report.invariants.push(("every event reached the webhook endpoint", undelivered));
    report.invariants.push(("every delivery signed, under its event's id", badly_signed));
    if store_may_forget {
        return Ok(());
    }

    // The newest event of each payment (by the payment's own updated_at) shows it as it is now.
    let mut newest: HashMap<&str, &Value> = HashMap::new();
    for event in events.iter().filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("payment."))) {
        let object = &event["data"]["object"];
        let Some(id) = object["id"].as_str() else { continue };
        let later = newest.get(id).is_none_or(|known| {
            let at = |o: &Value| o["updated_at"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
            at(object) > at(&known["data"]["object"])
        });
        if later {
            newest.insert(id, event);
        }
    }
    let mut stale = 0;
    let mut silent = 0;
    for payment in payments {
        let id = payment["id"].as_str().unwrap_or_default();
        match newest.get(id) {
            None => {
                silent += 1;
                report.examples.push(format!("payment {id} has no event"));
            }
            Some(event) => {
                let object = &event["data"]["object"];
                let same = ["status", "amount_captured", "amount_refunded"].iter().all(|f| object[f] == payment[f]);
                if !same {
                    stale += 1;
                    report.examples.push(format!(
                        "payment {id} is {} but its newest event {} says {}",
                        payment["status"], event["id"], object["status"]
                    ));
                }
            }
        }
    }
    let known: std::collections::HashSet<&str> = payments.iter().filter_map(|p| p["id"].as_str()).collect();
    let orphan_events = newest.keys().filter(|id| !known.contains(*id)).count() as u64;
    report.invariants.push(("every payment has events", silent));
    report.invariants.push(("each payment's newest event shows it as it is", stale));
    report.invariants.push(("no event names a payment the gateway lacks", orphan_events));
    Ok(())
}
