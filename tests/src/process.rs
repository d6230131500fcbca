//! The gateway as its own process (the `gateway-under-test` binary), for tests that kill it,
//! terminate it or read its log files.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{MERCHANT_A, wait_for};

/// Any child process, killed when dropped, so that a driver that fails leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Starts `command` with its standard output discarded.
    pub fn spawn(command: &mut Command) -> anyhow::Result<Self> {
        use anyhow::Context;
        Ok(Self(command.stdout(Stdio::null()).spawn().with_context(|| format!("starting {command:?}"))?))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free address on 127.0.0.1 (free when asked; a server should bind it soon after).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// A running gateway process, killed (SIGKILL) when dropped.
/// The fingerprint key of every gateway process started here.
pub const FINGERPRINT_KEY: &str = "process-test-fingerprint-key";

#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    pub url: String,
}

impl GatewayProcess {
    /// Starts the binary at `binary` (pass `env!("CARGO_BIN_EXE_gateway-under-test")`) against
    /// `bank_url` on `store`, with quick timings plus `extra` arguments, and waits until ready.
    pub async fn start(binary: &str, bank_url: &str, store: &str, extra: &[&str]) -> Self {
        Self::start_at(binary, free_addr(), bank_url, store, extra).await
    }

    /// Like [`GatewayProcess::start`], on a given address (to restart where one was killed).
    pub async fn start_at(binary: &str, addr: SocketAddr, bank_url: &str, store: &str, extra: &[&str]) -> Self {
        let child = Command::new(binary)
            .args(["--listen", &addr.to_string(), "--bank-url", bank_url, "--store", store])
            .args(["--api-keys", &format!("{}:{}", MERCHANT_A.0, MERCHANT_A.1)])
            .args(["--fingerprint-key", FINGERPRINT_KEY])
            .args(["--attempt-timeout-ms", "500", "--deadline-ms", "1500", "--lease-ms", "2000"])
            .args(["--reconcile-interval-ms", "100", "--commit-window-ms", "3000"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the gateway process");
        let gateway = Self { child, url: format!("http://{addr}") };
        let client = reqwest::Client::new();
        wait_for("the gateway process to be ready", Duration::from_secs(20), || async {
            let ready = client.get(format!("{}/readyz", gateway.url)).send().await;
            ready.ok().filter(|r| r.status().is_success()).map(drop)
        })
        .await;
        gateway
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM: the gateway should stop accepting and finish what is in flight.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit and returns how it did.
    pub async fn exited(&mut self, deadline: Duration) -> ExitStatus {
        let child = &mut self.child;
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            poll.tick().await;
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(tokio::time::Instant::now() < give_up, "the gateway process did not exit");
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary built next to the running one (`target/<profile>/<name>`), or an error saying how to
/// build it.
pub fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let path = std::env::current_exe()?.parent().context("the binary has no directory")?.join(name);
    if !path.exists() {
        anyhow::bail!("{} not found; build it with `cargo build --release -p {name}`", path.display());
    }
    Ok(path)
}

/// Waits (up to 20 s) until `GET {base}/healthz` answers 2xx.
pub async fn wait_healthy(base: &str) {
    let client = reqwest::Client::new();
    wait_for(&format!("{base} to be healthy"), Duration::from_secs(20), || async {
        client.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success()).map(drop)
    })
    .await;
}
