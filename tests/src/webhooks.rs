//! A webhook receiver for tests: records every delivery, answers as its plan says (a share of
//! 500s, a share of hangs), and verifies signatures with its own Standard Webhooks check, written
//! here from the specification (HMAC-SHA256 over `id.timestamp.body`, keyed by the base64 part of
//! the secret), independent of the gateway's signer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::oneshot;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Share of deliveries answered 500.
    pub fail_share: f64,
    /// Share of deliveries left hanging for `hang`.
    pub hang_share: f64,
    pub hang: Duration,
    pub seed: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Self { fail_share: 0.0, hang_share: 0.0, hang: Duration::from_secs(30), seed: 7 }
    }
}

/// One delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// What the receiver answered (0: it hung).
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a delivery's body is JSON")
    }
}

#[derive(Debug)]
struct Shared {
    plan: Mutex<Plan>,
    rng: Mutex<fastrand::Rng>,
    received: Mutex<Vec<Received>>,
}

/// A receiver serving on 127.0.0.1 until dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl WebhookReceiver {
    pub async fn start(plan: Plan) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            rng: Mutex::new(fastrand::Rng::with_seed(plan.seed)),
            plan: Mutex::new(plan),
            received: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().route("/hooks", axum::routing::post(receive)).with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self { addr, url: format!("http://{addr}/hooks"), shared, stop: Some(stop) }
    }

    pub fn set_plan(&self, plan: Plan) {
        *self.shared.plan.lock().expect("plan") = plan;
    }

    /// Every delivery so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received").clone()
    }

    /// The ids of deliveries answered 2xx.
    pub fn delivered_ids(&self) -> std::collections::HashSet<String> {
        self.received().into_iter().filter(|r| (200..300).contains(&r.answered)).map(|r| r.id).collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let plan = shared.plan.lock().expect("plan").clone();
    let roll = shared.rng.lock().expect("rng").f64();
    let (answer, hang) = if roll < plan.hang_share {
        (0, true)
    } else if roll < plan.hang_share + plan.fail_share {
        (500, false)
    } else {
        (204, false)
    };
    shared.received.lock().expect("received").push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: answer,
    });
    if hang {
        tokio::time::sleep(plan.hang).await;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::from_u16(answer).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The Standard Webhooks check, from the specification: `v1,<base64 HMAC-SHA256 of
/// "{id}.{timestamp}.{body}">` among the space-separated signatures, keyed by the base64-decoded
/// part of `whsec_<base64>`.
pub fn signature_is_valid(secret: &str, id: &str, timestamp: &str, body: &str, signatures: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Ok(key) = engine.decode(secret.strip_prefix("whsec_").unwrap_or(secret)) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else { return false };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let expected = engine.encode(mac.finalize().into_bytes());
    signatures.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// `POST /v1/webhook_endpoints` for `url` and `events`; the endpoint's id and secret.
pub async fn subscribe(
    client: &reqwest::Client,
    gateway_url: &str,
    api_key: &str,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let response = client
        .post(format!("{gateway_url}/v1/webhook_endpoints"))
        .bearer_auth(api_key)
        .header("Idempotency-Key", format!("subscribe-{}", uuid::Uuid::new_v4()))
        .json(&json!({"url": url, "enabled_events": events}))
        .send()
        .await
        .expect("POST /v1/webhook_endpoints");
    assert_eq!(response.status(), 201, "subscribing");
    let body: Value = response.json().await.expect("endpoint JSON");
    (body["id"].as_str().expect("id").to_owned(), body["secret"].as_str().expect("secret").to_owned())
}

/// Every event of the merchant, newest first, through all pages.
pub async fn all_events(client: &reqwest::Client, gateway_url: &str, api_key: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{gateway_url}/v1/events?limit=100");
        if let Some(after) = &after {
            url.push_str(&format!("&starting_after={after}"));
        }
        let page: Value =
            client.get(url).bearer_auth(api_key).send().await.expect("GET /v1/events").json().await.expect("JSON");
        let data = page["data"].as_array().expect("data").clone();
        after = data.last().and_then(|e| e["id"].as_str()).map(str::to_owned);
        events.extend(data);
        if !page["has_more"].as_bool().unwrap_or(false) {
            return events;
        }
    }
}
