//! `/admin/…`: the breaker and the live event stream, for the operator's key.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use http_conventions::extract::{JsonBody, Path};
use http_conventions::problem::Problem;
use resilience::Mode;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use wire::BreakerView;

use super::problem::json;
use crate::app::App;

/// The circuit breaker now.
#[utoipa::path(
    get, path = "/admin/breaker", tag = "admin",
    responses(
        (status = 200, description = "The breaker's state and numbers", body = BreakerView),
        (status = 400, description = "Two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn get_breaker(State(app): State<Arc<App>>) -> Response {
    json(200, &app.gateway.breaker())
}

/// `PUT /admin/breaker` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerMode {
    state: ModeName,
}

/// Force the breaker open or closed, or let its policy decide again.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    ForcedOpen,
    ForcedClosed,
    Auto,
}

impl ModeName {
    fn mode(self) -> Mode {
        match self {
            ModeName::ForcedOpen => Mode::ForcedOpen,
            ModeName::ForcedClosed => Mode::ForcedClosed,
            ModeName::Auto => Mode::Auto,
        }
    }
}

/// Force the breaker open or closed, or return it to automatic.
#[utoipa::path(
    put, path = "/admin/breaker", tag = "admin",
    request_body = BreakerMode,
    responses(
        (status = 200, description = "The breaker after the change", body = BreakerView),
        (status = 400, description = "Malformed JSON or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not one of the modes", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn put_breaker(
    State(app): State<Arc<App>>,
    JsonBody(body): JsonBody<BreakerMode>,
) -> Result<Response, Problem> {
    let breaker = app.gateway.set_breaker(body.state.mode());
    tracing::warn!(state = ?body.state, "operator set the circuit breaker");
    Ok(json(200, &breaker))
}

/// Every bank: its breaker, recent authorization rate and routing share.
#[utoipa::path(
    get, path = "/admin/banks", tag = "admin",
    responses(
        (status = 200, description = "The banks, in priority order", body = Vec<wire::BankView>),
        (status = 400, description = "Two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn get_banks(State(app): State<Arc<App>>) -> Response {
    json(200, &app.gateway.banks())
}

/// Force one bank's breaker open or closed, or return it to automatic.
#[utoipa::path(
    put, path = "/admin/banks/{name}/breaker", tag = "admin",
    request_body = BreakerMode,
    params(("name" = String, Path, description = "A bank's name, as in BANKS")),
    responses(
        (status = 200, description = "The bank's breaker after the change", body = BreakerView),
        (status = 400, description = "Malformed JSON or two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such bank", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Body over the size limit", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 415, description = "The body is declared as something other than JSON", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "Not one of the modes", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn put_bank_breaker(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<BreakerMode>,
) -> Result<Response, Problem> {
    let breaker = app
        .gateway
        .set_bank_breaker(&name, body.state.mode())
        .ok_or_else(|| Problem::not_found(format!("no bank named `{}`", name.chars().take(64).collect::<String>())))?;
    tracing::warn!(bank = %name, state = ?body.state, "operator set a bank's circuit breaker");
    Ok(json(200, &breaker))
}

/// Server-Sent Events: `stats` every second, `breaker` transitions, `payment` state changes, `log`
/// records; `lagged` tells a slow reader how many events it missed.
#[utoipa::path(
    get, path = "/admin/stream", tag = "admin",
    responses(
        (status = 200, description = "An endless text/event-stream", content_type = "text/event-stream"),
        (status = 400, description = "Two Authorization headers", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "No admin key", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "A merchant key, or admin routes disabled (no ADMIN_KEY)", body = http_conventions::problem::ProblemBody, content_type = "application/problem+json"),
    ),
    security(("admin_key" = []))
)]
pub async fn stream(State(app): State<Arc<App>>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (events, counted) = app.gateway.subscribe();
    let mut shutting_down = app.shutting_down.clone();
    let ended = async move {
        let _ = shutting_down.wait_for(|stopping| *stopping).await;
    };
    let events = BroadcastStream::new(events)
        .map(move |item| {
            let _ = &counted;
            Ok(match item {
                Ok(envelope) => {
                    Event::default().id(envelope.id.to_string()).event(envelope.kind).data(envelope.data.as_str())
                }
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"))
                }
            })
        })
        .take_until(Box::pin(ended));
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
