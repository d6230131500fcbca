//! A private `redis-server` on a free port, for tests that need Redis, can stop it and start it
//! again, and clean up after themselves.
//!
//! When `redis-server` is not installed, [`RedisServer::start`] returns `None` after printing why,
//! so the test can skip, unless `REQUIRE_REDIS=1` (CI), in which case it panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Keep an append-only file fsynced on every write, so a restart loses nothing.
    persistent: bool,
}

fn installed() -> bool {
    Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

impl RedisServer {
    /// Starts a server, or returns `None` (with a printed reason) when Redis is not installed.
    pub async fn start(test: &str) -> Option<Self> {
        Self::launch(test, false).await
    }

    /// Like [`RedisServer::start`], with every write fsynced to an append-only file, so that a
    /// killed and restarted server comes back with its data.
    pub async fn start_persistent(test: &str) -> Option<Self> {
        Self::launch(test, true).await
    }

    async fn launch(test: &str, persistent: bool) -> Option<Self> {
        if !installed() {
            if std::env::var("REQUIRE_REDIS").is_ok_and(|v| v == "1") {
                panic!("{test}: redis-server is not installed, and REQUIRE_REDIS=1 forbids skipping");
            }
            eprintln!("SKIPPED {test}: redis-server is not installed (set REQUIRE_REDIS=1 to fail instead)");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let dir = std::env::temp_dir().join(format!("rp-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self { port, dir, child: None, persistent };
        server.restart().await;
        Some(server)
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server process (again) on the same port and waits until it accepts connections.
    pub async fn restart(&mut self) {
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let port = self.port;
        crate::wait_for("redis-server to accept connections", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
    }

    /// Deletes `keys`, as an eviction or a failover that lost them would.
    pub async fn forget(&self, keys: &[&str]) {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut connection = client.get_multiplexed_async_connection().await.expect("connect to redis-server");
        let () = redis::cmd("DEL").arg(keys).query_async(&mut connection).await.expect("DEL");
    }

    /// Kills the server (SIGKILL); what it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
