//! # mock-bank
//!
//! A bank simulator that fails on purpose. It charges and refunds cards, and holds, captures and
//! voids authorizations, exactly once per idempotency key, and keeps a ledger that is the audit
//! truth, while a chaos engine decides, per
//! HTTP request, whether to answer normally or to fail the way real banks and networks fail.
//!
//! How the parts fit:
//! - [`ledger`] holds charges, refunds, authorizations, card accounts and idempotency keys;
//!   [`card`] has the
//!   decline rules and test cards.
//! - [`chaos`] decides faults deterministically from a seed and a live configuration;
//!   [`fault`] performs them on the wire, resetting a connection through the shared server
//!   (`http_conventions::serve`) when a fault calls for it.
//! - [`api`] is the HTTP surface; errors, JSON bodies, idempotency keys and request ids follow the
//!   shared `http-conventions` crate.
//!
//! Start it in-process with [`run`], giving it a bound listener and a shutdown future, as the
//! binary and the end-to-end tests do.

pub mod api;
pub mod card;
pub mod chaos;
pub mod config;
pub mod fault;
pub mod ledger;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

/// How long shutdown waits for open connections (and their in-flight requests) to finish.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub use config::{Config, LogFormat};

use chaos::ChaosEngine;
use ledger::{Ledger, Policy};

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct Bank {
    pub config: Config,
    pub ledger: Ledger,
    pub chaos: Arc<ChaosEngine>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown chaos preset `{0}`; known presets: {known}", known = chaos::PRESET_NAMES.join(", "))]
    UnknownPreset(String),
    #[error("max_amount and default_balance must not be negative")]
    NegativeLimit,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Bank {
    pub fn new(config: Config) -> Result<Self, Error> {
        let initial = chaos::preset(&config.preset).ok_or_else(|| Error::UnknownPreset(config.preset.clone()))?;
        if config.max_amount < 0 || config.default_balance < 0 {
            return Err(Error::NegativeLimit);
        }
        let seed = config.seed.unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
        let policy = Policy { max_amount: config.max_amount, default_balance: config.default_balance };
        let authorization_ttl = std::time::Duration::from_secs(config.authorization_ttl_s);
        Ok(Self { ledger: Ledger::new(policy, authorization_ttl), chaos: ChaosEngine::new(initial, seed), config })
    }
}

/// The binary's whole life: configuration from flags and environment, logging, then [`run`] on
/// the configured address until SIGINT or SIGTERM.
pub async fn serve_cli() -> anyhow::Result<()> {
    use anyhow::Context;
    use clap::Parser;
    let config = Config::parse();
    telemetry::init(&config.log, config.log_format)?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    run(config, listener, http_conventions::shutdown::signal()).await?;
    Ok(())
}

/// Serves the bank on `listener` until `shutdown` resolves.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let bank = Arc::new(Bank::new(config)?);
    let chaos = bank.chaos.config();
    info!(
        addr = %listener.local_addr()?,
        preset = %bank.config.preset,
        seed = chaos.seed,
        "mock-bank listening"
    );
    let limits = bank.config.connections.limits(DRAIN_TIMEOUT);
    http_conventions::serve::serve(listener, api::router(Arc::clone(&bank)), limits, shutdown).await?;
    info!("mock-bank stopped");
    Ok(())
}
