//! Health, readiness and metrics: what an orchestrator and Prometheus ask.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_conventions::problem::{ErrorCode, Problem};

use crate::app::App;
use crate::gateway::Answer;

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "`{\"status\":\"ok\"}`", content_type = "application/json")))]
pub async fn healthz() -> Response {
    Answer { status: 200, body: r#"{"status":"ok"}"#.into(), replayed: false }.into_response()
}

/// Ready to take payments: the store answers.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready: `{\"status\":\"ready\",\"store\":…}`", content_type = "application/json"), (status = 503, description = "The store is unreachable", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"))
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Result<Response, Problem> {
    let store = app.gateway.ready().await.map_err(|error| {
        Problem::new(ErrorCode::StoreUnavailable, format!("not ready: {error}")).with_retry_after(1)
    })?;
    let body = format!(r#"{{"status":"ready","store":"{store}"}}"#);
    Ok(Answer { status: 200, body, replayed: false }.into_response())
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut response = app.gateway.metrics_text().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
