//! The mock bank binary, built with the test crate so that process-level tests can start it
//! through `CARGO_BIN_EXE_bank-under-test`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mock_bank::serve_cli().await
}
