//! The payment gateway binary, built with the test crate so that process-level tests (kill -9,
//! restart) can start it through `CARGO_BIN_EXE_gateway-under-test`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    payment_api::serve_cli().await
}
