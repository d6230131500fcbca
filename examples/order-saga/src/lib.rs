//! # order-saga
//!
//! An order service whose payment step is a saga on the gateway's events. An order authorizes
//! its payment (`capture: false`), reserves stock (which fails for a configurable share of
//! orders), then captures the payment, or cancels the authorization (refunds it, if it was
//! captured after all) as compensation.
//!
//! It learns every outcome from the gateway's webhooks: each delivery's signature is verified
//! (Standard Webhooks), its event id recorded in an inbox in the same transaction as the change
//! it makes, so an event delivered twice is processed once, and events may arrive in any order
//! (see [`order`]). After downtime it reads what it missed from `GET /v1/events`. Every request it
//! makes carries an idempotency key derived from the order and the step, so it may be sent again
//! after any failure or restart.
//!
//! - [`order`]: the saga's decisions, pure;
//! - [`store`]: orders and the inbox (redb);
//! - [`service`]: the HTTP API, the webhook receiver, and the loops that drive orders and catch up.

pub mod order;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use service::run;

/// The service's flags (each also an environment variable).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "order-saga", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SAGA_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,

    /// The payment gateway.
    #[arg(long, env = "SAGA_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,

    /// The merchant's API key at the gateway.
    #[arg(long, env = "SAGA_API_KEY")]
    pub api_key: String,

    /// Where the gateway sends webhooks: this service's `/webhooks` as the gateway reaches it
    /// (default: http://<listen>/webhooks).
    #[arg(long, env = "SAGA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The redb file holding orders and the inbox.
    #[arg(long, env = "SAGA_STORE", default_value = "data/order-saga.redb")]
    pub store: PathBuf,

    /// Share of orders whose stock cannot be reserved (0 to 1).
    #[arg(long, env = "SAGA_STOCK_FAILURE_RATE", default_value_t = 0.2)]
    pub stock_failure_rate: f64,

    /// Chaos for demos and tests: share of webhook deliveries answered 500 after processing them
    /// (so the gateway sends them again).
    #[arg(long, env = "SAGA_WEBHOOK_FAIL_SHARE", default_value_t = 0.0)]
    pub webhook_fail_share: f64,

    /// Chaos: share of webhook deliveries left hanging (unprocessed) for 15 s, past the gateway's
    /// timeout.
    #[arg(long, env = "SAGA_WEBHOOK_HANG_SHARE", default_value_t = 0.0)]
    pub webhook_hang_share: f64,

    /// How often the events API is read for events no webhook brought (ms).
    #[arg(long, env = "SAGA_CATCH_UP_INTERVAL_MS", default_value_t = 5_000)]
    pub catch_up_interval_ms: u64,

    /// How long an order waits before its step is sent again (ms; doubles up to 16 times that).
    #[arg(long, env = "SAGA_RETRY_MS", default_value_t = 1_000)]
    pub retry_ms: u64,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        for (name, share) in [
            ("SAGA_STOCK_FAILURE_RATE", self.stock_failure_rate),
            ("SAGA_WEBHOOK_FAIL_SHARE", self.webhook_fail_share),
            ("SAGA_WEBHOOK_HANG_SHARE", self.webhook_hang_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.webhook_fail_share + self.webhook_hang_share > 1.0 {
            return Err("SAGA_WEBHOOK_FAIL_SHARE + SAGA_WEBHOOK_HANG_SHARE must be at most 1".into());
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}/webhooks", self.listen))
    }
}
