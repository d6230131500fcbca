//! # dashboard-tui
//!
//! The live terminal dashboard: the circuit breaker, outcomes, latency, retries, transactions, the
//! log tail and the bank's chaos, with keys to break the bank, force the breaker and send traffic.
//!
//! Built on The Elm Architecture: [`model`] holds the state and the pure `update`, [`view`] draws
//! it, [`runtime`] owns the network (feeds in, commands out) and [`terminal`] owns the screen:
//! one task draws at a fixed rate while inputs arrive on a channel.

pub mod model;
pub mod runtime;
pub mod sse;
pub mod terminal;
pub mod view;

use std::path::PathBuf;

use clap::Parser;
/// The key types of [`model::Msg::Key`], for drivers of the model without a terminal.
pub use ratatui::crossterm::event::{KeyCode, KeyEvent};

/// The live terminal dashboard of the payment gateway and its chaos bank.
#[derive(Debug, Clone, Parser)]
#[command(name = "dashboard-tui", version, about, long_about = None)]
pub struct Config {
    /// The payment gateway's base URL.
    #[arg(long, env = "DASHBOARD_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// The bank's base URL.
    #[arg(long, env = "DASHBOARD_BANK", default_value = "http://127.0.0.1:8081")]
    pub bank: String,
    /// The gateway's admin key (breaker control and the event stream).
    #[arg(long, env = "ADMIN_KEY")]
    pub admin_key: String,
    /// A merchant API key, for the built-in traffic generator.
    #[arg(long, env = "DASHBOARD_API_KEY")]
    pub api_key: Option<String>,
    /// Where `e` writes the transactions CSV.
    #[arg(long, env = "DASHBOARD_EXPORT_DIR", default_value = ".")]
    pub export_dir: PathBuf,
}
