//! # payment-api
//!
//! The payment gateway. `POST /v1/payments` with an `Idempotency-Key` charges a card through the
//! bank exactly once, whatever the network, the bank, a retrying client or a crash does.
//!
//! How the parts fit:
//! - [`app`] is what every handler reaches (the gateway and the edge's own parts), built from the
//!   configuration; [`http`] is the HTTP edge: routes, middleware, and the one mapping of domain errors to
//!   problem+json; [`auth`] maps API keys to merchants, [`ratelimit`] meters them.
//! - [`gateway`] is the payment operations, one module each (create, refund, reconcile), over
//!   the settlement table and the versioned commit; it charges through the `resilience` guard with
//!   the [`bank`] client, and keeps payments in the [`store`].
//! - [`model`] is the payment domain; [`error`] what can go wrong, in its words; [`fingerprint`]
//!   the names derived from a request (its fingerprint, its bank keys).
//! - [`tasks`] runs in the background: the reconciler, the backlog writer, the webhook
//!   dispatcher, the stats ticker and the event forwarders.
//! - [`webhook`]: endpoints, deliveries and their dispatch (events are written by the store with
//!   each change, see [`model::event`]).
//! - [`events`], [`metrics`] and [`telemetry`] are what operators and the dashboard see;
//!   [`config`] the flags.

pub mod app;
pub mod auth;
pub mod bank;
pub mod config;
pub mod error;
pub mod events;
pub mod fingerprint;
pub mod gateway;
pub mod http;
pub mod metrics;
pub mod model;
pub mod ratelimit;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::info;

pub use app::App;
pub use config::{Config, LogFormat};
pub use gateway::Gateway;

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
    let background = tasks::spawn_all(Arc::clone(&app.gateway));
    info!(
        addr = %listener.local_addr()?,
        bank = %config.bank_url,
        store = app.gateway.store_kind(),
        merchants = config.api_keys.len(),
        "payment-api listening"
    );
    let signal = async move {
        shutdown.await;
        info!("shutting down: no new connections; finishing in-flight requests");
        let _ = stopping.send(true);
    };
    let limits = config.connections.limits(std::time::Duration::from_millis(config.shutdown_timeout_ms));
    http_conventions::serve::serve(listener, http::router(Arc::clone(&app)), limits, signal).await?;
    drop(background);
    info!("payment-api stopped");
    Ok(())
}
