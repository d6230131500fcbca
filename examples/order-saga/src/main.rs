/// mimalloc, as the other services.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::Parser;
    let config = order_saga::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SAGA_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    order_saga::run(config, listener, http_conventions::shutdown::signal()).await
}
