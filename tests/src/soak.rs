//! The soak: many payments through a chaotic bank by careful clients, then the invariants checked
//! against the bank's ledger.
//!
//! Each logical payment has its own client key, also sent as the payment's `order_id`, so that the
//! ledger can be traced back to client keys: each approved charge through the payment that names
//! it (`bank_charge_id`), and that payment's `order_id`. A share of payments is sent
//! as duplicates: the same key and body at the same time, and once more afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

pub use crate::careful::{ClientTally, Final, Targets};
use crate::careful::{PaymentSession, RefundTally, amount_of_key, payment_body};
use crate::loadgen::{self, Bound, Pace};

#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub payments: usize,
    pub concurrency: usize,
    /// Share of payments also sent as a concurrent duplicate and once more afterwards.
    pub duplicate_share: f64,
    /// Share of succeeded payments then refunded (two partial refunds at once, then the rest).
    pub refund_share: f64,
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
        for example in self.examples.iter().take(10) {
            println!("  e.g. {example}");
        }
    }
}

/// Runs the plan: every logical payment by a careful client, duplicates and refunds included,
/// and returns what each client was answered.
pub async fn drive(targets: &Targets, plan: &SoakPlan, tally: Arc<ClientTally>) -> anyhow::Result<Driven> {
    let sessions =
        PaymentSession::many(plan.concurrency, targets, &tally, plan.duplicate_share, plan.payment_deadline)?;
    let sessions = sessions.into_iter().map(|s| s.with_refunds(plan.refund_share)).collect();
    let (_, sessions) = loadgen::run(Pace::Closed, Bound::Count(plan.payments as u64), sessions).await?;
    let mut driven = Driven::default();
    for session in sessions {
        driven.finals.extend(session.finals);
        driven.refunds.extend(session.refunds);
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

/// Waits until no payment is processing (the reconciler drained), up to `deadline`.
pub async fn quiesce(targets: &Targets, deadline: Duration) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    http.post(format!("{}/chaos/reset", targets.bank)).send().await?.error_for_status()?;
    http.post(format!("{}/chaos/presets/healthy", targets.bank)).send().await?.error_for_status()?;
    let give_up = Instant::now() + deadline;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        poll.tick().await;
        let payments = all_payments(&http, &targets.gateways[0], &targets.api_key).await?;
        if payments.iter().all(|p| p["status"] != "processing") || Instant::now() >= give_up {
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
    let ledger: Value =
        http.get(format!("{}/v1/ledger", targets.bank)).send().await?.error_for_status()?.json().await?;
    let charges = ledger["charges"].as_array().cloned().unwrap_or_default();
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
        let bank_key = charge["idempotency_key"].as_str().unwrap_or_default();
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
                if payment["amount"] != charge["amount"] {
                    amount_mismatch += 1;
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
    report
        .figures
        .insert("bank refunds", charges.iter().map(|c| c["refunds"].as_array().map_or(0, Vec::len) as u64).sum());
    if plan.store_may_forget {
        report.figures.insert("approved charges the gateway forgot (store lost its data)", forgotten_charges);
    }

    report.invariants = vec![
        ("no idempotency key charged twice", charged_twice),
        ("every approved charge is under a client key's bank key", charges_of_no_client),
        ("every approved charge has one succeeded payment", orphan_charges),
        ("charge and payment amounts agree", amount_mismatch),
        ("every payment seen succeeded is charged once", seen_succeeded_not_charged_once),
        ("duplicates of a key see the same payment", diverged),
        ("refunds: clients, gateway and bank agree", refund_disagreements),
        ("no payment left processing", processing),
        ("no 500 ever", tally.server_errors.load(Ordering::Relaxed)),
        ("every payment got a final answer", unanswered),
    ];
    Ok(report)
}
