//! The benchmark's yardsticks, each served in its own process as the gateway is:
//!
//! - `baseline`: the payment handler a team would write first, with none of the gateway's care.
//!   It takes the key with Redis `SET NX`, makes one bank call with reqwest (no retry, breaker,
//!   budget, fingerprint, payment record or metrics), and stores the answer with `SET`.
//! - `bare`: an axum handler that reads the body and answers a fixed 201: the most any handler on
//!   this stack can do on this machine.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// `baseline` or `bare`.
    pub kind: String,
    #[arg(long)]
    pub listen: SocketAddr,
    /// Redis URL (baseline only).
    #[arg(long, default_value = "")]
    pub redis: String,
    /// The bank's base URL (baseline only).
    #[arg(long, default_value = "")]
    pub bank: String,
}

struct Baseline {
    redis: ConnectionManager,
    http: reqwest::Client,
    charges_url: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct Charge {
    amount: i64,
    currency: String,
    card: serde_json::Value,
}

/// Serves `args.kind` on its own multi-threaded runtime until killed.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let router = match args.kind.as_str() {
            "bare" => Router::new().route("/v1/payments", post(bare)),
            "baseline" => {
                let client = redis::Client::open(args.redis.as_str()).context("the baseline needs --redis")?;
                let redis = ConnectionManager::new(client).await.context("connecting to Redis")?;
                let http = reqwest::Client::builder().pool_max_idle_per_host(1_024).tcp_nodelay(true).build()?;
                let state = Arc::new(Baseline { redis, http, charges_url: format!("{}/v1/charges", args.bank) });
                Router::new().route("/v1/payments", post(baseline)).with_state(state)
            }
            other => anyhow::bail!("unknown server `{other}` (baseline or bare)"),
        };
        let router = router.route("/healthz", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}

async fn bare(_body: Bytes) -> impl IntoResponse {
    (StatusCode::CREATED, [("content-type", "application/json")], r#"{"id":"pay_bare","status":"succeeded"}"#)
}

async fn baseline(State(state): State<Arc<Baseline>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "Idempotency-Key is required").into_response();
    };
    let Ok(charge) = serde_json::from_slice::<Charge>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a payment").into_response();
    };
    let key = format!("baseline:{key}");
    let mut redis = state.redis.clone();
    let claimed: Result<Option<String>, _> =
        redis::cmd("SET").arg(&key).arg("pending").arg("NX").arg("EX").arg(86_400).query_async(&mut redis).await;
    match claimed {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::CONFLICT, "this key was already used").into_response(),
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "Redis is unavailable").into_response(),
    }
    let sent = state.http.post(&state.charges_url).header("idempotency-key", &key).json(&charge).send().await;
    let (status, answer) = match sent {
        Ok(response) => {
            let status = response.status();
            (status, response.bytes().await.unwrap_or_default())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, Bytes::from_static(b"the bank did not answer")),
    };
    let stored = format!("{} {}", status.as_u16(), String::from_utf8_lossy(&answer));
    let saved: Result<(), _> =
        redis::cmd("SET").arg(&key).arg(stored).arg("EX").arg(86_400).query_async(&mut redis).await;
    if saved.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "Redis is unavailable").into_response();
    }
    (status, [("content-type", "application/json")], answer).into_response()
}
