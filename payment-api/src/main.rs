#[tokio::main]
async fn main() -> anyhow::Result<()> {
    payment_api::serve_cli().await
}
