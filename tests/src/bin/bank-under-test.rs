//! The mock bank binary, built with the test crate so that process-level tests can start it
//! through `CARGO_BIN_EXE_bank-under-test`.

use anyhow::Context;
use clap::Parser;
use mock_bank::{Config, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(&config.log, config.log_format)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    mock_bank::run(config, listener, http_conventions::shutdown::signal()).await?;
    Ok(())
}
