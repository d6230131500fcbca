//! The soak: many payments through a chaotic bank by careful clients, then the invariants checked
//! against the bank's ledger.
//!
//! Each logical payment has its own client key, also sent as the payment's `order_id`, so that the
//! ledger (bank key = payment id) can be traced back to client keys. A share of payments is sent
//! as duplicates: the same key and body at the same time, and once more afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Where the soak sends its payments.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Gateway base URLs, used round-robin.
    pub gateways: Vec<String>,
    pub bank: String,
    pub api_key: String,
}

#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub payments: usize,
    pub concurrency: usize,
    /// Share of payments also sent as a concurrent duplicate and once more afterwards.
    pub duplicate_share: f64,
    /// How long one logical payment may take, retries and polling included.
    pub payment_deadline: Duration,
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct ClientTally {
    /// Answers by HTTP status.
    pub statuses: std::sync::Mutex<BTreeMap<u16, u64>>,
    pub sent: AtomicU64,
    pub retries: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
}

/// The final answer a client got for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub status: String,
    pub payment_id: String,
    pub amount: i64,
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

fn body(key: &str, amount: i64) -> Value {
    let card = if amount % 10 == 0 { "4000000000000002" } else { "4242424242424242" };
    json!({
        "amount": amount,
        "currency": "USD",
        "order_id": key,
        "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
    })
}

/// Sends `key` until it gets a final answer: retries the same key on 409 (after `Retry-After`),
/// 429, 503 and network errors with backoff, and polls a 202 until the payment settles; a polled
/// payment that failed (never charged, key released) is sent again under the same key.
pub async fn careful_payment(
    http: &reqwest::Client,
    targets: &Targets,
    key: &str,
    amount: i64,
    deadline: Duration,
    tally: &ClientTally,
    turn: usize,
) -> Option<Final> {
    let give_up = Instant::now() + deadline;
    let body = body(key, amount);
    let mut attempt = 0u32;
    while Instant::now() < give_up {
        let gateway = &targets.gateways[(turn + attempt as usize) % targets.gateways.len()];
        attempt += 1;
        if attempt > 1 {
            tally.retries.fetch_add(1, Ordering::Relaxed);
        }
        tally.sent.fetch_add(1, Ordering::Relaxed);
        let sent = http
            .post(format!("{gateway}/v1/payments"))
            .bearer_auth(&targets.api_key)
            .header("Idempotency-Key", key)
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        let backoff = Duration::from_millis((20 * u64::from(attempt.min(10))).min(500) + fastrand::u64(..50));
        let response = match sent {
            Ok(response) => response,
            Err(_) => {
                tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        *tally.statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(status).or_default() += 1;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(2)));
        match status {
            201 | 402 => {
                let payment: Value = response.json().await.ok()?;
                return Some(Final {
                    status: payment["status"].as_str()?.to_owned(),
                    payment_id: payment["id"].as_str()?.to_owned(),
                    amount,
                });
            }
            202 => {
                let payment: Value = response.json().await.ok()?;
                let id = payment["id"].as_str()?.to_owned();
                match poll_until_settled(http, gateway, targets, &id, amount, give_up).await {
                    // The bank never charged it and the gateway freed the key: send the key again.
                    Some(settled) if settled.status == "failed" => continue,
                    other => return other,
                }
            }
            409 | 429 | 503 => tokio::time::sleep(retry_after.unwrap_or(backoff).max(backoff)).await,
            500..=599 => {
                tally.server_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
            }
            _ => return None,
        }
    }
    None
}

async fn poll_until_settled(
    http: &reqwest::Client,
    gateway: &str,
    targets: &Targets,
    id: &str,
    amount: i64,
    give_up: Instant,
) -> Option<Final> {
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    poll.tick().await;
    while Instant::now() < give_up {
        poll.tick().await;
        let Ok(response) = http.get(format!("{gateway}/v1/payments/{id}")).bearer_auth(&targets.api_key).send().await
        else {
            continue;
        };
        let Ok(payment) = response.json::<Value>().await else { continue };
        match payment["status"].as_str() {
            Some("processing") | None => continue,
            Some(status) => return Some(Final { status: status.to_owned(), payment_id: id.to_owned(), amount }),
        }
    }
    None
}

/// Runs the plan: every logical payment by a careful client, duplicates included.
pub async fn drive(targets: &Targets, plan: &SoakPlan, tally: Arc<ClientTally>) -> HashMap<String, Option<Final>> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap_or_default();
    let slots = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(plan.payments);
    for i in 0..plan.payments {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
        let (http, targets, plan, tally) = (http.clone(), targets.clone(), plan.clone(), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let key = format!("soak-{}-{i}", uuid::Uuid::new_v4().simple());
            let amount = 100 + (i as i64 % 5_000);
            let duplicate = fastrand::f64() < plan.duplicate_share;
            let first = careful_payment(&http, &targets, &key, amount, plan.payment_deadline, &tally, i);
            let answer = if duplicate {
                let twin = careful_payment(&http, &targets, &key, amount, plan.payment_deadline, &tally, i + 1);
                let (a, b) = tokio::join!(first, twin);
                // And once more, later: a replay.
                let again = careful_payment(&http, &targets, &key, amount, plan.payment_deadline, &tally, i).await;
                let answers = [a, b, again];
                let settled: Vec<&Final> = answers.iter().flatten().collect();
                if settled.windows(2).any(|w| w[0].payment_id != w[1].payment_id) {
                    // Different payments for one key: record the disagreement for the checker.
                    Some(Final { status: "DIVERGED".into(), payment_id: String::new(), amount })
                } else {
                    answers.into_iter().flatten().next()
                }
            } else {
                first.await
            };
            (key, answer)
        }));
    }
    let mut finals = HashMap::with_capacity(plan.payments);
    for task in tasks {
        if let Ok((key, answer)) = task.await {
            finals.insert(key, answer);
        }
    }
    finals
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
    finals: &HashMap<String, Option<Final>>,
    payments: &[Value],
    tally: &ClientTally,
) -> anyhow::Result<SoakReport> {
    let http = reqwest::Client::new();
    let ledger: Value =
        http.get(format!("{}/v1/ledger", targets.bank)).send().await?.error_for_status()?.json().await?;
    let charges = ledger["charges"].as_array().cloned().unwrap_or_default();
    let by_id: HashMap<&str, &Value> = payments.iter().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let mut report = SoakReport::default();

    let mut approved_per_key: HashMap<String, u64> = HashMap::new();
    let mut orphan_charges = 0;
    let mut amount_mismatch = 0;
    for charge in charges.iter().filter(|c| c["status"] == "approved") {
        let bank_key = charge["idempotency_key"].as_str().unwrap_or_default();
        match by_id.get(bank_key) {
            Some(payment)
                if matches!(payment["status"].as_str(), Some("succeeded" | "refunded" | "partially_refunded")) =>
            {
                if payment["amount"] != charge["amount"] {
                    amount_mismatch += 1;
                }
                let key = payment["order_id"].as_str().unwrap_or_default().to_owned();
                *approved_per_key.entry(key).or_default() += 1;
            }
            other => {
                orphan_charges += 1;
                report.examples.push(format!(
                    "charge {bank_key} (charged at {}) has payment {:?} ({:?}, {} attempts, created {}, updated {})",
                    charge["created_at"].as_str().unwrap_or_default(),
                    other.map(|p| &p["status"]),
                    other.map(|p| &p["failure_reason"]),
                    other.map_or(0, |p| p["attempts"].as_u64().unwrap_or(0)),
                    other.map_or("", |p| p["created_at"].as_str().unwrap_or_default()),
                    other.map_or("", |p| p["updated_at"].as_str().unwrap_or_default()),
                ));
            }
        }
    }
    let charged_twice = approved_per_key.values().filter(|n| **n > 1).count() as u64;
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
                if approved_per_key.get(key).copied() != Some(1) {
                    seen_succeeded_not_charged_once += 1;
                    report.examples.push(format!("{key}: succeeded but charged {:?} times", approved_per_key.get(key)));
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
            503 => "answers 503 (not charged, retried)",
            _ => "answers with another status",
        };
        *report.figures.entry(name).or_default() += count;
    }
    report.figures.insert("bank charges approved", charges.iter().filter(|c| c["status"] == "approved").count() as u64);
    report.figures.insert("bank charges declined", charges.iter().filter(|c| c["status"] == "declined").count() as u64);

    report.invariants = vec![
        ("no idempotency key charged twice", charged_twice),
        ("every approved charge has one succeeded payment", orphan_charges),
        ("charge and payment amounts agree", amount_mismatch),
        ("every payment seen succeeded is charged once", seen_succeeded_not_charged_once),
        ("duplicates of a key see the same payment", diverged),
        ("no payment left processing", processing),
        ("no 500 ever", tally.server_errors.load(Ordering::Relaxed)),
        ("every payment got a final answer", unanswered),
    ];
    Ok(report)
}
