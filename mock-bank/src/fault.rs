//! Performs the chaos engine's decisions on the wire, as a middleware around the banking routes.
//!
//! What a client sees for each fault:
//! - failure: 503 or 500, nothing processed;
//! - ambiguous: the request is processed and committed, then the answer is lost (a 500, or the
//!   connection reset with no response);
//! - timeout: the request hangs for `hang_ms`, then is processed, even if the client is gone by
//!   then (a late commit); other requests are served meanwhile;
//! - reset: the connection is reset with no response, nothing processed;
//! - throttle: 429 with `Retry-After`, nothing processed;
//! - outage: 503 at once.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::info;

use crate::Bank;
use crate::chaos::{Fault, FaultKind, LostAnswer};
use http_conventions::problem::{ErrorCode, Problem};
use http_conventions::request_id::RequestId;
use http_conventions::serve::ConnectionControl;

/// Per-request override of the drawn fault kind.
pub const FAULT_HEADER: &str = "x-chaos-fault";

pub async fn inject(State(bank): State<Arc<Bank>>, request: Request, next: Next) -> Response {
    let forced = match forced_fault(&request, bank.config.chaos_header) {
        Ok(forced) => forced,
        Err(problem) => return problem.into_response(),
    };
    let decision = bank.chaos.decide(forced);
    if decision.fault != Fault::None {
        let request_id = request.extensions().get::<RequestId>().map(|id| id.0.as_str()).unwrap_or_default();
        info!(
            request_id,
            fault = ?decision.fault,
            forced = forced.is_some(),
            delay_ms = decision.delay.as_millis() as u64,
            method = %request.method(),
            path = request.uri().path(),
            "injecting fault"
        );
    }
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    match decision.fault {
        Fault::None => next.run(request).await,
        Fault::Outage => Problem::new(ErrorCode::BankUnavailable, "the bank is down").into_response(),
        Fault::Failure { status: 503 } => {
            Problem::new(ErrorCode::BankUnavailable, "the bank is temporarily unavailable").into_response()
        }
        Fault::Failure { .. } => internal_error(),
        Fault::Throttle { retry_after_s } => Problem::new(ErrorCode::RateLimited, "too many requests; retry later")
            .with_retry_after(retry_after_s)
            .into_response(),
        Fault::Reset => reset(connection_of(&request)).await,
        Fault::Timeout { hang } => {
            let request = match buffered(request, bank.config.max_body_bytes).await {
                Ok(request) => request,
                Err(problem) => return problem.into_response(),
            };
            // Spawned, so the late commit happens even after the client has given up and its
            // connection (and this handler) are gone.
            let late = tokio::spawn(async move {
                tokio::time::sleep(hang).await;
                next.run(request).await
            });
            late.await.unwrap_or_else(|_| internal_error())
        }
        Fault::Ambiguous(lost) => {
            let connection = connection_of(&request);
            let request = match buffered(request, bank.config.max_body_bytes).await {
                Ok(request) => request,
                Err(problem) => return problem.into_response(),
            };
            // Commit first, out of reach of a client disconnect; then lose the answer.
            let _committed = tokio::spawn(next.run(request)).await;
            match lost {
                LostAnswer::ServerError => internal_error(),
                LostAnswer::DroppedConnection => reset(connection).await,
            }
        }
    }
}

fn forced_fault(request: &Request, honoured: bool) -> Result<Option<FaultKind>, Problem> {
    let Some(value) = request.headers().get(FAULT_HEADER).filter(|_| honoured) else {
        return Ok(None);
    };
    value.to_str().ok().and_then(FaultKind::parse).map(Some).ok_or_else(|| {
        Problem::invalid_request("X-Chaos-Fault must be one of none, failure, ambiguous, timeout, reset, throttle")
    })
}

fn connection_of(request: &Request) -> Option<ConnectionControl> {
    request.extensions().get::<ConnectionControl>().cloned()
}

/// The same answer for an injected failure and for an ambiguous fault, so that a client cannot
/// tell from the response whether the bank acted.
fn internal_error() -> Response {
    Problem::new(ErrorCode::InternalError, "the bank could not complete the request").into_response()
}

async fn reset(connection: Option<ConnectionControl>) -> Response {
    match connection {
        Some(connection) => {
            connection.reset();
            // The connection task drops this future together with the connection.
            std::future::pending().await
        }
        // Only reachable if the router is served without `http_conventions::serve`.
        None => internal_error(),
    }
}

/// Reads the whole body now, while the client is still there, so that a spawned commit does not
/// depend on the client's connection.
async fn buffered(request: Request, limit: usize) -> Result<Request, Problem> {
    let (parts, body) = request.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(error) if error.is::<LengthLimitError>() => {
            Err(Problem::new(ErrorCode::PayloadTooLarge, "the request body is too large"))
        }
        Err(error) => Err(Problem::invalid_request(format!("could not read the request body: {error}"))),
    }
}
