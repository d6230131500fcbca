//! Everything that touches the network: the feeds that turn the gateway's stream and the polled
//! endpoints into [`Msg`]s (reconnecting by themselves when a service goes away), the executor of
//! the model's [`Command`]s, and the built-in traffic generator.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Config;
use crate::model::{
    BreakerInfo, ChaosConfig, ChaosStats, Command, Link, Model, Msg, StreamItem, TrafficReport, TrafficSettings, update,
};
use crate::sse::SseReader;

/// The model plus the tasks feeding it: the dashboard without a terminal.
#[derive(Debug)]
pub struct Dashboard {
    pub model: Model,
    messages: mpsc::Receiver<Msg>,
    sender: mpsc::Sender<Msg>,
    http: reqwest::Client,
    config: Arc<Config>,
    traffic: watch::Sender<TrafficSettings>,
    /// The bank whose chaos is shown and tuned.
    chaos_bank: watch::Sender<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Dashboard {
    /// Starts the feeds and the (stopped) traffic generator.
    pub fn start(config: Config) -> Self {
        let config = Arc::new(config);
        let (sender, messages) = mpsc::channel(4_096);
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(2)).build().unwrap_or_default();
        let model = Model::new(chrono::Utc::now(), config.api_key.is_some());
        let (traffic, settings) = watch::channel(model.traffic);
        let (chaos_bank, bank) = watch::channel(config.bank.clone());
        let tasks = vec![
            tokio::spawn(stream_feed(http.clone(), Arc::clone(&config), sender.clone())),
            tokio::spawn(breaker_feed(http.clone(), Arc::clone(&config), sender.clone())),
            tokio::spawn(banks_feed(http.clone(), Arc::clone(&config), sender.clone())),
            tokio::spawn(bank_feed(http.clone(), bank, sender.clone())),
            tokio::spawn(traffic_generator(http.clone(), Arc::clone(&config), settings, sender.clone())),
        ];
        Self { model, messages, sender, http, config, traffic, chaos_bank, tasks }
    }

    /// A sender for inputs from elsewhere (the keyboard).
    pub fn sender(&self) -> mpsc::Sender<Msg> {
        self.sender.clone()
    }

    /// Applies one input and starts what it asks for.
    pub fn handle(&mut self, msg: Msg) {
        for command in update(&mut self.model, msg) {
            self.execute(command);
        }
    }

    /// The next input, if any arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Msg> {
        tokio::time::timeout(wait, self.messages.recv()).await.ok().flatten()
    }

    /// Handles inputs until `done` holds for the model, or `deadline` passes; says which.
    pub async fn run_until(&mut self, deadline: Duration, done: impl Fn(&Model) -> bool) -> bool {
        let give_up = tokio::time::Instant::now() + deadline;
        while !done(&self.model) {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if let Some(msg) = self.next(left.min(Duration::from_millis(200))).await {
                self.handle(msg);
            }
            self.handle(Msg::Tick(chrono::Utc::now()));
        }
        true
    }

    fn execute(&self, command: Command) {
        let (http, config, sender) = (self.http.clone(), Arc::clone(&self.config), self.sender.clone());
        let bank = self.chaos_bank.borrow().clone();
        match command {
            Command::SelectBank(url) => {
                let _ = self.chaos_bank.send(url);
            }
            Command::Traffic(settings) => {
                let _ = self.traffic.send(settings);
            }
            Command::ApplyPreset(name) => {
                tokio::spawn(async move {
                    let url = format!("{bank}/chaos/presets/{name}");
                    let notice = match http.post(url).send().await {
                        Ok(r) if r.status().is_success() => format!("bank chaos preset: {name}"),
                        Ok(r) => format!("preset {name} refused: {}", r.status()),
                        Err(e) => format!("bank unreachable: {e}"),
                    };
                    let _ = sender.send(Msg::Notice(notice)).await;
                });
            }
            Command::PatchChaos(patch) => {
                tokio::spawn(async move {
                    let notice = match http.patch(format!("{bank}/chaos")).json(&patch).send().await {
                        Ok(r) if r.status().is_success() => match r.json::<ChaosConfig>().await {
                            Ok(chaos) => format!("bank chaos: {}", crate::view::chaos_summary(&chaos)),
                            Err(_) => "bank chaos changed".to_owned(),
                        },
                        Ok(r) => format!("chaos change refused: {}", r.status()),
                        Err(e) => format!("bank unreachable: {e}"),
                    };
                    let _ = sender.send(Msg::Notice(notice)).await;
                });
            }
            Command::SetBreaker(state, bank) => {
                tokio::spawn(async move {
                    let path = match &bank {
                        Some(name) => format!("/admin/banks/{name}/breaker"),
                        None => "/admin/breaker".to_owned(),
                    };
                    let request = http
                        .put(format!("{}{path}", config.api))
                        .bearer_auth(&config.admin_key)
                        .json(&json!({ "state": state }));
                    let whose = bank.map(|name| format!("{name}'s ")).unwrap_or_default();
                    let notice = match request.send().await {
                        Ok(r) if r.status().is_success() => {
                            if let Ok(breaker) = r.json::<BreakerInfo>().await
                                && whose.is_empty()
                            {
                                let _ = sender.send(Msg::BreakerPolled(breaker)).await;
                            }
                            format!("{whose}breaker set to {state}")
                        }
                        Ok(r) => format!("breaker change refused: {}", r.status()),
                        Err(e) => format!("gateway unreachable: {e}"),
                    };
                    let _ = sender.send(Msg::Notice(notice)).await;
                });
            }
            Command::ExportCsv(csv) => {
                tokio::spawn(async move {
                    let path = config
                        .export_dir
                        .join(format!("transactions-{}.csv", chrono::Utc::now().format("%Y%m%d-%H%M%S")));
                    let notice = match tokio::fs::write(&path, csv).await {
                        Ok(()) => format!("exported to {}", path.display()),
                        Err(e) => format!("export failed: {e}"),
                    };
                    let _ = sender.send(Msg::Notice(notice)).await;
                });
            }
        }
    }
}

/// Follows `/admin/stream`, reconnecting after a pause whenever it breaks.
async fn stream_feed(http: reqwest::Client, config: Arc<Config>, sender: mpsc::Sender<Msg>) {
    loop {
        let response = http.get(format!("{}/admin/stream", config.api)).bearer_auth(&config.admin_key).send().await;
        let failure = match response {
            Ok(r) if r.status().is_success() => {
                let _ = sender.send(Msg::Api(Link::Up)).await;
                let mut reader = SseReader::new(r);
                while let Some(event) = reader.next().await {
                    let item = match event.kind.as_str() {
                        "stats" => serde_json::from_str(&event.data).ok().map(|s| StreamItem::Stats(Box::new(s))),
                        "breaker" => serde_json::from_str(&event.data).ok().map(StreamItem::Breaker),
                        "payment" => serde_json::from_str(&event.data).ok().map(StreamItem::Payment),
                        "log" => serde_json::from_str(&event.data).ok().map(StreamItem::Log),
                        "webhooks" => serde_json::from_str(&event.data).ok().map(StreamItem::Webhooks),
                        "lagged" => serde_json::from_str::<Value>(&event.data)
                            .ok()
                            .and_then(|v| v["missed"].as_u64())
                            .map(StreamItem::Lagged),
                        _ => None,
                    };
                    if let Some(item) = item
                        && sender.send(Msg::Stream(item)).await.is_err()
                    {
                        return;
                    }
                }
                "the event stream ended".to_owned()
            }
            Ok(r) => format!("stream refused: {}", r.status()),
            Err(e) => short_error(&e),
        };
        if sender.send(Msg::Api(Link::Down(failure))).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn short_error(error: &reqwest::Error) -> String {
    if error.is_connect() { "connection refused".to_owned() } else { "no answer".to_owned() }
}

/// Polls `/admin/breaker` every second (the stream's snapshot lacks the thresholds).
async fn breaker_feed(http: reqwest::Client, config: Arc<Config>, sender: mpsc::Sender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let polled = http
            .get(format!("{}/admin/breaker", config.api))
            .bearer_auth(&config.admin_key)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        let msg = match polled {
            Ok(r) if r.status().is_success() => match r.json::<BreakerInfo>().await {
                Ok(breaker) => Msg::BreakerPolled(breaker),
                Err(_) => continue,
            },
            Ok(r) if r.status() == 401 || r.status() == 403 => {
                Msg::Api(Link::Down(format!("admin key refused ({})", r.status())))
            }
            Ok(_) => continue,
            Err(e) => Msg::Api(Link::Down(short_error(&e))),
        };
        if sender.send(msg).await.is_err() {
            return;
        }
    }
}

/// Polls `/admin/banks` every second (a gateway without it is left alone: one bank).
async fn banks_feed(http: reqwest::Client, config: Arc<Config>, sender: mpsc::Sender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let polled = http
            .get(format!("{}/admin/banks", config.api))
            .bearer_auth(&config.admin_key)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Ok(response) = polled.and_then(reqwest::Response::error_for_status)
            && let Ok(banks) = response.json::<Vec<crate::model::BankView>>().await
            && sender.send(Msg::BanksPolled(banks)).await.is_err()
        {
            return;
        }
    }
}

/// Polls the selected bank's `/chaos` and `/chaos/stats` every second.
async fn bank_feed(http: reqwest::Client, bank: watch::Receiver<String>, sender: mpsc::Sender<Msg>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let base = bank.borrow().clone();
        let get = |path: &str| http.get(format!("{base}{path}")).timeout(Duration::from_secs(2)).send();
        let polled = async {
            let config = get("/chaos").await?.error_for_status()?.json::<ChaosConfig>().await?;
            let stats = get("/chaos/stats").await?.error_for_status()?.json::<ChaosStats>().await?;
            Ok::<_, reqwest::Error>((config, stats))
        }
        .await;
        let msgs = match polled {
            Ok((config, stats)) => vec![Msg::Bank(Link::Up), Msg::ChaosPolled { config, stats }],
            Err(e) => vec![Msg::Bank(Link::Down(short_error(&e)))],
        };
        for msg in msgs {
            if sender.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Sends payments at the configured rate, a share of them duplicates of recent ones (same key,
/// same body) and a share authorizations only (then captured, all or part, canceled, or left to
/// expire), and reports counts every second.
async fn traffic_generator(
    http: reqwest::Client,
    config: Arc<Config>,
    mut settings: watch::Receiver<TrafficSettings>,
    sender: mpsc::Sender<Msg>,
) {
    let Some(api_key) = config.api_key.clone() else { return };
    let report = Arc::new(std::sync::Mutex::new(TrafficReport::default()));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut recent: VecDeque<(String, Value)> = VecDeque::with_capacity(64);
    let mut last_report = tokio::time::Instant::now();
    loop {
        let current = *settings.borrow_and_update();
        if !current.running {
            if settings.changed().await.is_err() {
                return;
            }
            continue;
        }
        let period = Duration::from_secs_f64(1.0 / f64::from(current.rate.max(1)));
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            changed = settings.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        }
        let (key, body) = match recent.get(fastrand::usize(..recent.len().max(1))) {
            Some(old) if fastrand::f64() < current.duplicate_share => old.clone(),
            _ => {
                let card = if fastrand::u8(..10) == 0 { "4000000000000002" } else { "4242424242424242" };
                let body = json!({
                    "amount": fastrand::i64(100..50_000),
                    "currency": "USD",
                    "order_id": format!("dash-{}", fastrand::u32(..1_000_000)),
                    "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
                    "capture": fastrand::f64() >= current.two_step_share,
                });
                let fresh = (format!("dash-{}", uuid::Uuid::new_v4().simple()), body);
                if recent.len() == 64 {
                    recent.pop_front();
                }
                recent.push_back(fresh.clone());
                fresh
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else { continue };
        let client = Client { http: http.clone(), url: config.api.clone(), api_key: api_key.clone() };
        let counts = Arc::clone(&report);
        tokio::spawn(async move {
            let _permit = permit;
            let sent = client.post("/v1/payments", &key, Some(&body)).await;
            {
                let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
                counts.sent += 1;
                if sent.is_ok() {
                    counts.answered += 1;
                } else {
                    counts.transport_errors += 1;
                }
            }
            if body["capture"] == false
                && let Ok(response) = sent
                && response.status().as_u16() == 201
                && let Ok(payment) = response.json::<Value>().await
            {
                follow_up(&client, &payment).await;
            }
        });
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = tokio::time::Instant::now();
            let snapshot = *report.lock().unwrap_or_else(|p| p.into_inner());
            if sender.send(Msg::Traffic(snapshot)).await.is_err() {
                return;
            }
        }
    }
}

/// The gateway as the traffic generator calls it.
struct Client {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl Client {
    async fn post(&self, path: &str, key: &str, body: Option<&Value>) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", key)
            .timeout(Duration::from_secs(15));
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await
    }
}

/// What becomes of an authorization, a moment later: captured whole (half of them), captured in
/// part, canceled, or left to expire.
async fn follow_up(client: &Client, payment: &Value) {
    let Some(id) = payment["id"].as_str() else { return };
    let amount = payment["amount"].as_i64().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(fastrand::u64(200..3_000))).await;
    let key = format!("dash-{}", uuid::Uuid::new_v4().simple());
    let roll = fastrand::f64();
    let _ = if roll < 0.5 {
        client.post(&format!("/v1/payments/{id}/capture"), &key, None).await
    } else if roll < 0.7 {
        let part = json!({"amount": (amount / 2).max(1)});
        client.post(&format!("/v1/payments/{id}/capture"), &key, Some(&part)).await
    } else if roll < 0.9 {
        client.post(&format!("/v1/payments/{id}/cancel"), &key, None).await
    } else {
        return;
    };
}
