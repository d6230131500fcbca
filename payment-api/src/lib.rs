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
//! - [`reconciler`] settles payments whose outcome was unknown, and those of crashed requests.
//! - [`model`] is the payment domain; [`config`] the flags.

pub mod api;
pub mod auth;
pub mod bank;
pub mod config;
pub mod gateway;
pub mod model;
pub mod reconciler;
pub mod store;
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
    pub max_body_bytes: usize,
}

impl App {
    pub async fn new(config: &Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let store = store::Store::open(&config.store_url)
            .await
            .with_context(|| format!("cannot open the store `{}`", config.store_url))?;
        Ok(Self {
            gateway: Gateway::new(config, store)?,
            keys: auth::Keys::new(config.api_keys.clone()),
            max_body_bytes: config.max_body_bytes,
        })
    }
}

/// The binary: configuration from the command line and environment, logs, the listener, and
/// shutdown on Ctrl-C or SIGTERM.
pub async fn serve_cli() -> anyhow::Result<()> {
    use clap::Parser;
    let config = Config::parse();
    telemetry::init(&config.log, config.log_format)?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    run(config, listener, shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Serves the gateway on `listener` until `shutdown` resolves; the reconciler runs alongside.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Arc::new(App::new(&config).await?);
    let reconciler = reconciler::spawn(Arc::clone(&app));
    info!(
        addr = %listener.local_addr()?,
        bank = %config.bank_url,
        store = app.gateway.store.kind(),
        merchants = config.api_keys.len(),
        "payment-api listening"
    );
    axum::serve(listener, api::router(app)).with_graceful_shutdown(shutdown).await?;
    drop(reconciler);
    info!("payment-api stopped");
    Ok(())
}
