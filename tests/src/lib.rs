//! Test support for the end-to-end suite, and (in `src/bin`) the load generator and bench drivers.
//!
//! [`TestBank`] starts a real mock bank in-process on `127.0.0.1:0` and stops it when dropped, so
//! each test talks HTTP to its own server and reads the bank's ledger as the audit truth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod baseline;
pub mod careful;
pub mod gateway;
pub mod loadgen;
pub mod process;
pub mod redis_server;
pub mod soak;
pub mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use gateway::{ADMIN_KEY, MERCHANT_A, MERCHANT_B, TestGateway, authorization_body, payment_body};
pub use mock_bank::Config as BankConfig;
pub use redis_server::RedisServer;

/// A mock bank serving in this process until dropped.
#[derive(Debug)]
pub struct TestBank {
    pub addr: SocketAddr,
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl TestBank {
    pub async fn start() -> Self {
        Self::start_with(BankConfig::default()).await
    }

    pub async fn start_with(config: BankConfig) -> Self {
        Self::start_at("127.0.0.1:0".parse().expect("an address"), config).await
    }

    /// Starts a bank on a given address (to bring one back where another stopped).
    pub async fn start_at(addr: SocketAddr, config: BankConfig) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the bank's address");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = mock_bank::run(config, listener, shutdown).await {
                panic!("mock bank failed: {error}");
            }
        });
        Self { addr, url: format!("http://{addr}"), client: reqwest::Client::new(), stop: Some(stop) }
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `POST /v1/charges` with the given key and body, plus optional extra headers.
    pub async fn charge(
        &self,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self.client.post(self.at("/v1/charges")).header("Idempotency-Key", key).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await
    }

    pub async fn patch_chaos(&self, patch: Value) -> Value {
        let response = self.client.patch(self.at("/chaos")).json(&patch).send().await.expect("PATCH /chaos");
        assert_eq!(response.status(), 200, "PATCH /chaos {patch}");
        response.json().await.expect("chaos config JSON")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.at(path)).send().await.expect("GET");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("JSON body")
    }

    pub async fn ledger(&self) -> Value {
        self.get_json("/v1/ledger").await
    }

    /// Ledger charges by idempotency key.
    pub async fn charges_by_key(&self) -> HashMap<String, Value> {
        let ledger = self.ledger().await;
        ledger["charges"]
            .as_array()
            .expect("charges array")
            .iter()
            .map(|c| (c["idempotency_key"].as_str().unwrap_or_default().to_owned(), c.clone()))
            .collect()
    }

    /// Ledger charges by charge id (what a payment's `bank_charge_id` names).
    pub async fn charges_by_id(&self) -> HashMap<String, Value> {
        let ledger = self.ledger().await;
        ledger["charges"]
            .as_array()
            .expect("charges array")
            .iter()
            .map(|c| (c["id"].as_str().unwrap_or_default().to_owned(), c.clone()))
            .collect()
    }

    pub async fn charge_count(&self) -> usize {
        self.ledger().await["totals"]["charges"].as_u64().unwrap_or(0) as usize
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/chaos/stats").await
    }
}

impl Drop for TestBank {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A charge request body for `card` and `amount`.
pub fn charge_body(amount: i64, card: &str) -> Value {
    json!({
        "amount": amount,
        "currency": "USD",
        "card": {"number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
    })
}

/// Polls `check` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting for {what}");
    }
}

/// What a client observed: an HTTP status, or a transport error with no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seen {
    Status(u16),
    NoResponse,
}

impl Seen {
    pub fn of(result: &reqwest::Result<reqwest::Response>) -> Self {
        match result {
            Ok(response) => Seen::Status(response.status().as_u16()),
            Err(_) => Seen::NoResponse,
        }
    }
}
