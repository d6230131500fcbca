//! A payment gateway serving in this process until dropped, with timings shrunk for tests.

use std::net::SocketAddr;
use std::time::Duration;

use payment_api::Config;
use serde_json::Value;
use tokio::sync::oneshot;

pub const MERCHANT_A: (&str, &str) = ("shop_a", "sk_test_shop_a_0123456789");
pub const MERCHANT_B: (&str, &str) = ("shop_b", "sk_test_shop_b_9876543210");
/// The admin key of every test gateway.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

#[derive(Debug)]
pub struct TestGateway {
    pub addr: SocketAddr,
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    /// A configuration with both test merchants and quick timings: 300 ms attempts, a 1.5 s
    /// deadline, a 2 s lease, a breaker over the last 20 calls (at least 10, 3 probes) open for
    /// 500 ms, and a reconciler every 100 ms.
    pub fn config(bank_url: &str, store: &str) -> Config {
        let mut config = Config::for_tests(bank_url, store, &[MERCHANT_A, MERCHANT_B]);
        config.attempt_timeout_ms = 300;
        config.deadline_ms = 1_500;
        config.backoff_base_ms = 10;
        config.backoff_max_ms = 50;
        config.lease_ms = 2_000;
        config.breaker_open_ms = 500;
        config.breaker_window = 20;
        config.breaker_min_calls = 10;
        config.breaker_half_open_probes = 3;
        config.reconcile_interval_ms = 100;
        config.commit_window_ms = 5_000;
        config.retry_budget_min_per_sec = 1_000;
        config
    }

    pub async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = payment_api::run(config, listener, shutdown).await {
                panic!("payment-api failed: {error:#}");
            }
        });
        let gateway = Self {
            addr,
            url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            done: Some(done),
        };
        crate::wait_for("the gateway to be ready", Duration::from_secs(10), || async {
            let ready = gateway.client.get(gateway.at("/readyz")).send().await;
            ready.ok().filter(|r| r.status().is_success()).map(drop)
        })
        .await;
        gateway
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `POST /v1/payments` as merchant A.
    pub async fn pay(&self, key: &str, body: &Value) -> reqwest::Response {
        self.pay_as(MERCHANT_A.1, key, body).await
    }

    pub async fn pay_as(&self, secret: &str, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.at("/v1/payments"))
            .bearer_auth(secret)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST /v1/payments")
    }

    pub async fn get_as(&self, secret: &str, path: &str) -> reqwest::Response {
        self.client.get(self.at(path)).bearer_auth(secret).send().await.expect("GET")
    }

    pub async fn payment(&self, id: &str) -> Value {
        let response = self.get_as(MERCHANT_A.1, &format!("/v1/payments/{id}")).await;
        assert_eq!(response.status(), 200, "GET payment {id}");
        response.json().await.expect("payment JSON")
    }

    pub async fn refund(&self, payment_id: &str, key: &str, body: Option<Value>) -> reqwest::Response {
        self.operate(payment_id, "refunds", key, body).await
    }

    /// `POST /v1/payments/{id}/capture` as merchant A.
    pub async fn capture(&self, payment_id: &str, key: &str, body: Option<Value>) -> reqwest::Response {
        self.operate(payment_id, "capture", key, body).await
    }

    /// `POST /v1/payments/{id}/cancel` as merchant A.
    pub async fn cancel(&self, payment_id: &str, key: &str) -> reqwest::Response {
        self.operate(payment_id, "cancel", key, None).await
    }

    /// `POST /v1/payments/{id}/{operation}` as merchant A, with `body` if any.
    async fn operate(&self, payment_id: &str, operation: &str, key: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.at(&format!("/v1/payments/{payment_id}/{operation}")))
            .bearer_auth(MERCHANT_A.1)
            .header("Idempotency-Key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap_or_else(|e| panic!("POST {operation}: {e}"))
    }

    /// Stops serving and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An authorization request body (`"capture": false`) for `card` and `amount`, with an order id.
pub fn authorization_body(amount: i64, card: &str, order_id: &str) -> Value {
    let mut body = payment_body(amount, card, order_id);
    body["capture"] = Value::Bool(false);
    body
}

/// A payment request body for `card` and `amount`, with an order id.
pub fn payment_body(amount: i64, card: &str, order_id: &str) -> Value {
    serde_json::json!({
        "amount": amount,
        "currency": "USD",
        "card": {"number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
        "order_id": order_id,
    })
}
