use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    dashboard_tui::terminal::run(dashboard_tui::Config::parse()).await
}
