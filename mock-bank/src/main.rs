/// mimalloc: under load the system allocator's arena locks cost a quarter of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mock_bank::serve_cli().await
}
