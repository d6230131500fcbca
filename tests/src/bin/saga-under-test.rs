//! The order-saga service, built with the test crate so that process-level tests (kill -9,
//! restart) can start it through `CARGO_BIN_EXE_saga-under-test`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::Parser;
    let config = order_saga::Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    order_saga::run(config, listener, http_conventions::shutdown::signal()).await
}
