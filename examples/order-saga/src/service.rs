//! The service: its HTTP API (`/orders`, `/webhooks`, `/stats`), and the loops that subscribe it
//! to the gateway, drive each order's next step, and catch up on missed events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{info, warn};
use wire::{EventType, PaymentStatus};

use crate::Config;
use crate::order::{CardProfile, Order, OrderState, PaymentSeen, Step, stock_available};
use crate::store::{Processed, Store};

/// How far before the newest event it processed the catch-up reads again (events of several
/// gateway instances are not written in strict time order).
const CATCH_UP_OVERLAP_MS: i64 = 120_000;
/// How long a hanging webhook answer hangs.
const HANG: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
struct Counters {
    webhooks: AtomicU64,
    invalid_signatures: AtomicU64,
    processed_from_webhooks: AtomicU64,
    processed_from_events_api: AtomicU64,
    duplicates: AtomicU64,
    answered_500: AtomicU64,
    left_hanging: AtomicU64,
}

/// `GET /stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub orders: HashMap<String, u64>,
    pub webhooks: u64,
    pub invalid_signatures: u64,
    pub processed_from_webhooks: u64,
    pub processed_from_events_api: u64,
    /// Deliveries of events already processed (ignored).
    pub duplicates: u64,
    pub answered_500: u64,
    pub left_hanging: u64,
    /// Events in the inbox: each processed exactly once.
    pub inbox: u64,
    /// Orders not settled yet (still going, or giving money back).
    pub unsettled: u64,
    pub subscribed: bool,
}

struct Saga {
    config: Config,
    store: Store,
    client: reqwest::Client,
    verifier: RwLock<Option<Arc<standardwebhooks::Webhook>>>,
    counters: Counters,
    wake: Notify,
    /// When each order's current step may be sent again, and how often it was.
    retry: Mutex<HashMap<String, (tokio::time::Instant, u32)>>,
    rng: Mutex<fastrand::Rng>,
}

impl std::fmt::Debug for Saga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga").field("gateway", &self.config.gateway_url).finish_non_exhaustive()
    }
}

/// Serves the saga on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let store = Store::open(&config.store)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let saga = Arc::new(Saga {
        config,
        store,
        client,
        verifier: RwLock::new(None),
        counters: Counters::default(),
        wake: Notify::new(),
        retry: Mutex::new(HashMap::new()),
        rng: Mutex::new(fastrand::Rng::new()),
    });
    let tasks = [tokio::spawn(Arc::clone(&saga).subscribe_then_catch_up()), tokio::spawn(Arc::clone(&saga).drive())];
    let app = Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/{id}", get(get_order))
        .route("/webhooks", post(receive))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(Arc::clone(&saga));
    info!(addr = %listener.local_addr()?, gateway = %saga.config.gateway_url, "order-saga listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = json!({"type": "about:blank", "title": status.canonical_reason(), "status": status.as_u16(), "detail": detail.into()});
    (status, [("content-type", "application/problem+json")], body.to_string()).into_response()
}

/// `POST /orders` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    amount: i64,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default)]
    card: CardProfile,
}

fn usd() -> String {
    "USD".to_owned()
}

/// Places an order (once per `Idempotency-Key`, when one is sent).
async fn create_order(State(saga): State<Arc<Saga>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: NewOrder = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => return problem(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid order: {error}")),
    };
    if !(1..=100_000_000).contains(&request.amount) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "amount must be 1 to 100000000 minor units");
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "currency must be a three-letter code");
    }
    let id = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) => format!("ord_{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).simple()),
        None => format!("ord_{}", uuid::Uuid::new_v4().simple()),
    };
    let now = Utc::now();
    let order = Order {
        id,
        amount: request.amount,
        currency: request.currency,
        card: request.card,
        state: OrderState::Placed,
        reason: None,
        stock_reserved: false,
        payment_id: None,
        payments: Default::default(),
        created_at: now,
        updated_at: now,
    };
    match saga.store.create(order).await {
        Ok(order) => {
            saga.wake.notify_one();
            (StatusCode::CREATED, axum::Json(shown(&order))).into_response()
        }
        Err(error) => problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// An order as the API shows it: with `settled` (final, nothing held or kept in vain) and its
/// next step.
fn shown(order: &Order) -> Value {
    let mut value = serde_json::to_value(order).unwrap_or_default();
    value["settled"] = json!(order.is_settled());
    value["next_step"] = json!(format!("{:?}", order.next_step()));
    value
}

async fn get_order(State(saga): State<Arc<Saga>>, Path(id): Path<String>) -> Response {
    match saga.store.get(&id).await {
        Ok(Some(order)) => axum::Json(shown(&order)).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(error) => problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

async fn list_orders(State(saga): State<Arc<Saga>>) -> Response {
    match saga.store.all().await {
        Ok(orders) => axum::Json(json!({"data": orders.iter().map(shown).collect::<Vec<_>>()})).into_response(),
        Err(error) => problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

async fn stats(State(saga): State<Arc<Saga>>) -> Response {
    let (orders, inbox) = match (saga.store.all().await, saga.store.inbox_len().await) {
        (Ok(orders), Ok(inbox)) => (orders, inbox),
        (Err(error), _) | (_, Err(error)) => return problem(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    };
    let mut by_state: HashMap<String, u64> = HashMap::new();
    for order in &orders {
        *by_state.entry(order.state.as_str().to_owned()).or_default() += 1;
    }
    let unsettled = orders.iter().filter(|o| !o.is_settled()).count() as u64;
    let c = &saga.counters;
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    axum::Json(Stats {
        orders: by_state,
        webhooks: load(&c.webhooks),
        invalid_signatures: load(&c.invalid_signatures),
        processed_from_webhooks: load(&c.processed_from_webhooks),
        processed_from_events_api: load(&c.processed_from_events_api),
        duplicates: load(&c.duplicates),
        answered_500: load(&c.answered_500),
        left_hanging: load(&c.left_hanging),
        inbox,
        unsettled,
        subscribed: saga.verifier.read().unwrap_or_else(|p| p.into_inner()).is_some(),
    })
    .into_response()
}

/// `POST /webhooks`: verify, process once, answer (or, by the chaos flags, fail or hang).
async fn receive(State(saga): State<Arc<Saga>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    saga.counters.webhooks.fetch_add(1, Ordering::Relaxed);
    let verifier = saga.verifier.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(verifier) = verifier else { return StatusCode::SERVICE_UNAVAILABLE };
    if verifier.verify(&body, &headers).is_err() {
        saga.counters.invalid_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    }
    let roll = saga.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
    if roll < saga.config.webhook_hang_share {
        saga.counters.left_hanging.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(HANG).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else { return StatusCode::BAD_REQUEST };
    if let Err(error) = saga.process(&event, false).await {
        warn!(%error, "could not process a webhook; the gateway will send it again");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if roll < saga.config.webhook_hang_share + saga.config.webhook_fail_share {
        saga.counters.answered_500.fetch_add(1, Ordering::Relaxed);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// What a payment event says of the payment.
fn payment_seen(object: &Value) -> Option<PaymentSeen> {
    Some(PaymentSeen {
        id: object["id"].as_str()?.to_owned(),
        status: PaymentStatus::parse(object["status"].as_str()?)?,
        updated_at: object["updated_at"].as_str()?.parse().ok()?,
        amount_captured: object["amount_captured"].as_i64().unwrap_or(0),
        amount_refunded: object["amount_refunded"].as_i64().unwrap_or(0),
    })
}

impl Saga {
    /// Processes one event (from a webhook, or from the events API): recorded in the inbox and
    /// applied to its order in one transaction, unless it was processed before.
    async fn process(&self, event: &Value, from_api: bool) -> Result<(), crate::store::StoreError> {
        let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str().and_then(EventType::parse)) else {
            return Ok(());
        };
        let object = &event["data"]["object"];
        let created_at: DateTime<Utc> =
            event["created_at"].as_str().and_then(|c| c.parse().ok()).unwrap_or_else(Utc::now);
        let Some(seen) = payment_seen(object).filter(|_| kind.is_payment()) else { return Ok(()) };
        let order_id = object["order_id"].as_str().map(str::to_owned);
        match self.store.process(id, created_at, order_id, seen).await? {
            Processed::Duplicate => {
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Processed::NotOurs => {}
            Processed::Applied(order) => {
                let counter = if from_api {
                    &self.counters.processed_from_events_api
                } else {
                    &self.counters.processed_from_webhooks
                };
                counter.fetch_add(1, Ordering::Relaxed);
                info!(order_id = %order.id, event_id = id, event_type = kind.as_str(), state = order.state.as_str(), "event processed");
                self.wake.notify_one();
            }
        }
        Ok(())
    }

    /// Subscribes to the gateway's payment events (the same key each time, so a restart gets
    /// the same endpoint and secret back), then reads missed events now and every interval.
    async fn subscribe_then_catch_up(self: Arc<Self>) {
        // Where it stood before this start: webhooks arriving from now on move the watermark,
        // and the first catch-up must still read what was missed while it was down.
        let mut since = self.store.watermark().await.unwrap_or(0);
        let url = self.config.public_url();
        let events: Vec<&str> = EventType::ALL.iter().filter(|t| t.is_payment()).map(|t| t.as_str()).collect();
        let mut wait = Duration::from_millis(200);
        loop {
            let subscribed = self
                .client
                .post(format!("{}/v1/webhook_endpoints", self.config.gateway_url))
                .bearer_auth(&self.config.api_key)
                .header("Idempotency-Key", format!("order-saga:{url}"))
                .json(&json!({"url": url, "enabled_events": events}))
                .send()
                .await;
            let secret = match subscribed {
                Ok(response) if response.status() == StatusCode::CREATED => {
                    response.json::<Value>().await.ok().and_then(|b| b["secret"].as_str().map(str::to_owned))
                }
                Ok(response) => {
                    warn!(status = %response.status(), "the gateway refused the subscription; trying again");
                    None
                }
                Err(error) => {
                    warn!(%error, "the gateway is unreachable; trying to subscribe again");
                    None
                }
            };
            if let Some(verifier) = secret.and_then(|s| standardwebhooks::Webhook::new(&s).ok()) {
                *self.verifier.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(verifier));
                info!(%url, "subscribed to the gateway's payment events");
                break;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.catch_up_interval_ms.max(100)));
        loop {
            tick.tick().await;
            match self.catch_up(since).await {
                Ok(()) => since = self.store.watermark().await.unwrap_or(since),
                Err(error) => warn!(%error, "catching up on events failed; will try again"),
            }
        }
    }

    /// Reads the events API back to a little before the newest event processed (or the oldest
    /// open order), and processes what the inbox lacks, oldest first.
    async fn catch_up(&self, watermark: i64) -> anyhow::Result<()> {
        // From a little before the newest event processed; with none yet, from the oldest order
        // still open.
        let from = if watermark > 0 {
            Some(watermark)
        } else {
            let orders = self.store.all().await?;
            orders.iter().filter(|o| !o.is_settled()).map(|o| o.created_at.timestamp_millis()).min()
        };
        let Some(from) = from else { return Ok(()) };
        let horizon = from - CATCH_UP_OVERLAP_MS;
        let mut missed = Vec::new();
        let mut after: Option<String> = None;
        'pages: loop {
            let mut request = self
                .client
                .get(format!("{}/v1/events", self.config.gateway_url))
                .bearer_auth(&self.config.api_key)
                .query(&[("limit", "100")]);
            if let Some(after) = &after {
                request = request.query(&[("starting_after", after.as_str())]);
            }
            let page: Value = request.send().await?.error_for_status()?.json().await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            for event in &data {
                let created: Option<DateTime<Utc>> = event["created_at"].as_str().and_then(|c| c.parse().ok());
                if created.is_some_and(|c| c.timestamp_millis() < horizon) {
                    break 'pages;
                }
                let id = event["id"].as_str().unwrap_or_default();
                if !id.is_empty() && !self.store.seen(id).await? {
                    missed.push(event.clone());
                }
            }
            after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
            if after.is_none() || !page["has_more"].as_bool().unwrap_or(false) {
                break;
            }
        }
        for event in missed.iter().rev() {
            self.process(event, true).await?;
        }
        Ok(())
    }

    /// Drives every open order one step, whenever woken and at least every 200 ms.
    async fn drive(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let orders = match self.store.all().await {
                Ok(orders) => orders,
                Err(error) => {
                    warn!(%error, "cannot read orders");
                    continue;
                }
            };
            for order in orders {
                let step = order.next_step();
                if step == Step::Wait || !self.due(&order.id, &step) {
                    continue;
                }
                if let Err(error) = self.take(&order, step).await {
                    warn!(order_id = %order.id, %error, "a saga step failed; it is sent again later");
                }
            }
        }
    }

    /// Whether `order_id`'s `step` may be sent now; if so, the next time it may be.
    fn due(&self, order_id: &str, step: &Step) -> bool {
        if *step == Step::ReserveStock {
            return true;
        }
        let now = tokio::time::Instant::now();
        let mut retry = self.retry.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("{order_id}/{step:?}");
        let (next, tries) = retry.get(&key).copied().unwrap_or((now, 0));
        if next > now {
            return false;
        }
        let wait = Duration::from_millis(self.config.retry_ms) * 2u32.pow(tries.min(4));
        retry.retain(|k, _| !k.starts_with(&format!("{order_id}/")));
        retry.insert(key, (now + wait, tries + 1));
        true
    }

    /// One step of one order. Every request is keyed by the order and the step: sending it again
    /// never acts twice. Outcomes arrive as events.
    async fn take(&self, order: &Order, step: Step) -> anyhow::Result<()> {
        let gateway = &self.config.gateway_url;
        let (path, body) = match &step {
            Step::Authorize => {
                let body = json!({
                    "amount": order.amount,
                    "currency": order.currency,
                    "card": {"number": order.card.number(), "exp_month": 12, "exp_year": 2099, "cvc": "123"},
                    "order_id": order.id,
                    "capture": false,
                    "description": "order-saga",
                });
                ("/v1/payments".to_owned(), Some(body))
            }
            Step::ReserveStock => {
                let available = stock_available(&order.id, self.config.stock_failure_rate);
                self.store
                    .modify(&order.id, move |order| {
                        if order.next_step() != Step::ReserveStock {
                            return false;
                        }
                        if available {
                            order.state = OrderState::Capturing;
                            order.stock_reserved = true;
                        } else {
                            order.state = OrderState::Cancelling;
                            order.reason = Some("out of stock".to_owned());
                        }
                        order.updated_at = Utc::now();
                        true
                    })
                    .await?;
                self.wake.notify_one();
                return Ok(());
            }
            Step::Capture { payment_id } => (format!("/v1/payments/{payment_id}/capture"), None),
            Step::Cancel { payment_id } => (format!("/v1/payments/{payment_id}/cancel"), None),
            Step::Refund { payment_id } => (format!("/v1/payments/{payment_id}/refunds"), None),
            Step::Wait => return Ok(()),
        };
        let (name, key) = match &step {
            Step::Authorize => ("authorize", format!("{}:authorize", order.id)),
            Step::Capture { payment_id } => ("capture", format!("{}:capture:{payment_id}", order.id)),
            Step::Cancel { payment_id } => ("cancel", format!("{}:cancel:{payment_id}", order.id)),
            Step::Refund { payment_id } => ("refund", format!("{}:refund:{payment_id}", order.id)),
            Step::ReserveStock | Step::Wait => return Ok(()),
        };
        let mut request = self
            .client
            .post(format!("{gateway}{path}"))
            .bearer_auth(&self.config.api_key)
            .header("Idempotency-Key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let refused = status.is_client_error() && !matches!(status.as_u16(), 409 | 429);
        if step == Step::Authorize && refused {
            // The gateway will never take this payment (an unknown currency, say): nothing was
            // charged, and sending it again would be refused again.
            let detail = response.json::<Value>().await.ok().and_then(|p| p["code"].as_str().map(str::to_owned));
            let reason = format!(
                "payment refused by the gateway ({status}{})",
                detail.map(|d| format!(", {d}")).unwrap_or_default()
            );
            warn!(order_id = %order.id, %reason, "order cancelled");
            self.store
                .modify(&order.id, move |order| {
                    let open = order.payments.is_empty() && !order.state.is_final();
                    if open {
                        order.cancel(&reason, Utc::now());
                    }
                    open
                })
                .await?;
            return Ok(());
        }
        if step == Step::Authorize && order.state == OrderState::Placed {
            self.store
                .modify(&order.id, |order| {
                    let placed = order.state == OrderState::Placed;
                    if placed {
                        order.state = OrderState::Authorizing;
                    }
                    placed
                })
                .await?;
        }
        info!(order_id = %order.id, step = name, status = status.as_u16(), "saga step sent");
        Ok(())
    }
}
