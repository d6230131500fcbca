//! # payment-api
//!
//! The payment gateway. `POST /v1/payments` with an `Idempotency-Key` charges a card through the
//! bank exactly once, whatever the network, the bank, a retrying client or a crash does.
//!
//! How the parts fit:
//! - [`api`] is the HTTP surface; [`auth`] maps API keys to merchants.
//! - [`gateway`] is the payment flow: it claims the key in the [`store`], charges through the
//!   `resilience` guard (breaker, retries, budget, timeouts) with the [`bank`] client, and decides
//!   the answer from the one classification of each attempt.
//! - [`tasks`] runs in the background: the reconciler (settles payments whose outcome was
//!   unknown, and those of crashed requests), the stats ticker and the event forwarders.
//! - [`events`] and [`metrics`] are what operators and the dashboard see.
//! - [`model`] is the payment domain; [`config`] the flags.

pub mod api;
pub mod auth;
pub mod backlog;
pub mod bank;
pub mod config;
pub mod events;
pub mod gateway;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod ratelimit;
pub mod store;
pub mod tasks;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Config, LogFormat};
pub use gateway::Gateway;

/// What every handler can reach.
#[derive(Debug)]
pub struct App {
    pub gateway: Gateway,
    pub keys: auth::Keys,
    pub admin_key: Option<String>,
    pub rate_limiter: ratelimit::RateLimiter,
    pub max_body_bytes: usize,
    /// Turns true when shutdown begins, so endless responses (the event stream) end.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

impl App {
    pub async fn new(config: &Config, shutting_down: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let store = store::Store::open(&config.store_url)
            .await
            .with_context(|| format!("cannot open the store `{}`", config.store_url))?;
        let events = Arc::new(events::Events::new(config.stream_buffer));
        Ok(Self {
            gateway: Gateway::new(config, store, events)?,
            keys: auth::Keys::new(config.api_keys.clone()),
            admin_key: config.admin_key.clone(),
            rate_limiter: ratelimit::RateLimiter::new(config.rate_limit_per_sec, config.rate_limit_burst),
            max_body_bytes: config.max_body_bytes,
            shutting_down,
        })
    }
}

/// The binary: configuration from the command line and environment, logs (kept flushing until
/// the process ends), the listener, and shutdown on Ctrl-C or SIGTERM.
pub async fn serve_cli() -> anyhow::Result<()> {
    use clap::Parser;
    let config = Config::parse();
    let _logs = telemetry::init(&config.log, config.log_format, config.log_dir.as_deref())?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    run(config, listener, http_conventions::shutdown::signal()).await
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish (within `SHUTDOWN_TIMEOUT_MS`) and stops the background tasks.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stopping, shutting_down) = tokio::sync::watch::channel(false);
    let app = Arc::new(App::new(&config, shutting_down).await?);
    let background = tasks::spawn_all(Arc::clone(&app));
    info!(
        addr = %listener.local_addr()?,
        bank = %config.bank_url,
        store = app.gateway.store.kind(),
        merchants = config.api_keys.len(),
        "payment-api listening"
    );
    let signal = async move {
        shutdown.await;
        info!("shutting down: no new connections; finishing in-flight requests");
        let _ = stopping.send(true);
    };
    let limits = config.connections.limits(std::time::Duration::from_millis(config.shutdown_timeout_ms));
    http_conventions::serve::serve(listener, api::router(Arc::clone(&app)), limits, signal).await?;
    drop(background);
    info!("payment-api stopped");
    Ok(())
}
