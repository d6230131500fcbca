//! The HTTP surface: banking routes (behind the fault injector), the ledger, and chaos control.
//! Authorizations (hold, capture, void) are in [`authorizations`].

mod authorizations;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

use crate::Bank;
use crate::card::CardSummary;
use crate::chaos::{ChaosConfig, PRESET_NAMES, Scenario, preset};
use crate::fault;
use crate::ledger::{Charge, ChargeOrder, ChargeStatus, Freshness, LedgerError};
use http_conventions::MAX_JSON_INTEGER as MAX_AMOUNT_WIRE;
use http_conventions::card::CardInput;
use http_conventions::extract::{JsonBody, OptionalJsonBody, Path, Query};
use http_conventions::idempotency::REPLAYED_HEADER;
use http_conventions::idempotency::{self, IdempotencyKey};
use http_conventions::problem::{ErrorCode, FieldError, Problem};
use http_conventions::request_id;

pub fn router(bank: Arc<Bank>) -> Router {
    let banking = Router::new()
        .route("/v1/charges", post(create_charge).get(find_charge_by_key))
        .route("/v1/charges/{id}", get(get_charge))
        .route("/v1/charges/{id}/refunds", post(create_refund))
        .merge(authorizations::routes())
        .route_layer(middleware::from_fn_with_state(Arc::clone(&bank), fault::inject));
    let control = Router::new()
        .route("/v1/ledger", get(ledger))
        .route("/healthz", get(health))
        .route("/chaos", get(get_chaos).put(put_chaos).patch(patch_chaos))
        .route("/chaos/presets", get(list_presets))
        .route("/chaos/presets/{name}", post(apply_preset))
        .route("/chaos/scenario", get(get_scenario).post(start_scenario).delete(stop_scenario))
        .route("/chaos/stats", get(chaos_stats))
        .route("/chaos/reset", post(reset_chaos));
    let max_body = bank.config.max_body_bytes;
    banking
        .merge(control)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(request_id::assign))
        .with_state(bank)
}

async fn not_found() -> Problem {
    Problem::not_found("no such route")
}

async fn method_not_allowed() -> Problem {
    Problem::new(ErrorCode::MethodNotAllowed, "this route does not accept that method")
}

async fn health() -> Json<Value> {
    Json(serde_json::json!({"status": "ok"}))
}

// ---------------------------------------------------------------------------------------------
// Banking

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub amount: i64,
    pub currency: String,
    pub card: CardInput,
    #[serde(default)]
    pub reference: Option<String>,
}

impl std::fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeRequest")
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("card", &CardSummary::of(&self.card.number))
            .field("reference", &self.reference)
            .finish()
    }
}

impl ChargeRequest {
    /// Checks every field and reports all problems at once.
    pub fn validate(self, currencies: &[String]) -> Result<ChargeOrder, Problem> {
        let mut errors = Vec::new();
        if self.amount <= 0 {
            errors.push(FieldError::new("amount", "must be a positive integer of minor units"));
        } else if self.amount > MAX_AMOUNT_WIRE {
            errors.push(FieldError::new("amount", format!("must be at most {MAX_AMOUNT_WIRE}")));
        }
        if !currencies.contains(&self.currency) {
            errors.push(FieldError::new("currency", format!("must be one of {}", currencies.join(", "))));
        }
        self.card.validate(&mut errors);
        if let Some(reference) = &self.reference
            && (reference.chars().count() > 255 || reference.chars().any(char::is_control))
        {
            errors.push(FieldError::new("reference", "must be at most 255 printable characters"));
        }
        if !errors.is_empty() {
            return Err(Problem::validation(errors));
        }
        Ok(ChargeOrder {
            amount: self.amount,
            currency: self.currency,
            card_number: self.card.number,
            exp_month: self.card.exp_month,
            exp_year: self.card.exp_year,
            cvc: self.card.cvc,
            reference: self.reference,
        })
    }
}

async fn create_charge(
    State(bank): State<Arc<Bank>>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(request): JsonBody<ChargeRequest>,
) -> Result<Response, Problem> {
    let order = request.validate(&bank.config.currencies)?;
    let (charge, freshness) = bank.ledger.charge(&key, &order).map_err(ledger_problem)?;
    debug!(
        charge_id = %charge.id,
        idempotency_key = %key,
        status = ?charge.status,
        amount = charge.amount,
        currency = %charge.currency,
        replayed = freshness == Freshness::Replayed,
        "charge"
    );
    Ok(charge_response(charge, freshness))
}

fn charge_response(charge: Arc<Charge>, freshness: Freshness) -> Response {
    let status = match charge.status {
        ChargeStatus::Approved => StatusCode::CREATED,
        ChargeStatus::Declined => StatusCode::PAYMENT_REQUIRED,
    };
    with_freshness((status, Json(charge)).into_response(), freshness)
}

fn with_freshness(mut response: Response, freshness: Freshness) -> Response {
    if freshness == Freshness::Replayed {
        response.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

async fn get_charge(State(bank): State<Arc<Bank>>, Path(id): Path<String>) -> Result<Json<Arc<Charge>>, Problem> {
    bank.ledger.get(&id).map(Json).ok_or_else(|| Problem::not_found(format!("no charge {id}")))
}

/// Status inquiry: `GET /v1/charges?idempotency_key=K` is 200 with the charge made under K, or
/// 404 when the bank has none, which tells a client that the bank surely did not charge.
async fn find_charge_by_key(
    State(bank): State<Arc<Bank>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Arc<Charge>>, Problem> {
    let key = key_query(&params, "charge")?;
    bank.ledger.find_by_key(&key).map(Json).ok_or_else(|| Problem::not_found(format!("no charge under key {key}")))
}

/// The one parameter of a status inquiry: `?idempotency_key=K`.
fn key_query(params: &HashMap<String, String>, what: &str) -> Result<String, Problem> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "idempotency_key") {
        return Err(Problem::invalid_request(format!("unknown query parameter `{unknown}`")));
    }
    let raw = params.get("idempotency_key").ok_or_else(|| {
        Problem::invalid_request(format!("pass ?idempotency_key=K to find a {what}; GET /v1/ledger lists everything"))
    })?;
    idempotency::parse(raw.as_bytes())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    #[serde(default)]
    pub amount: Option<i64>,
}

async fn create_refund(
    State(bank): State<Arc<Bank>>,
    Path(charge_id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJsonBody(request): OptionalJsonBody<RefundRequest>,
) -> Result<Response, Problem> {
    let (refund, freshness) = bank.ledger.refund(&charge_id, &key, request.amount).map_err(ledger_problem)?;
    debug!(refund_id = %refund.id, charge_id, idempotency_key = %key, amount = refund.amount, "refund");
    Ok(with_freshness((StatusCode::CREATED, Json(refund)).into_response(), freshness))
}

fn ledger_problem(error: LedgerError) -> Problem {
    let detail = error.to_string();
    match error {
        LedgerError::KeyReused => Problem::new(ErrorCode::IdempotencyKeyReused, detail),
        LedgerError::NoSuchCharge(_) | LedgerError::NoSuchAuthorization(_) => Problem::not_found(detail),
        LedgerError::NotRefundable(_) | LedgerError::FullyRefunded(_) | LedgerError::NotHeld { .. } => {
            Problem::new(ErrorCode::InvalidState, detail)
        }
        LedgerError::OverRefund { .. } | LedgerError::NonPositiveRefund | LedgerError::CaptureAmount { .. } => {
            Problem::validation(vec![FieldError::new("amount", detail)])
        }
    }
}

async fn ledger(State(bank): State<Arc<Bank>>) -> Json<crate::ledger::LedgerReport> {
    Json(bank.ledger.report())
}

// ---------------------------------------------------------------------------------------------
// Chaos control

async fn get_chaos(State(bank): State<Arc<Bank>>) -> Json<ChaosConfig> {
    Json(bank.chaos.config())
}

async fn put_chaos(
    State(bank): State<Arc<Bank>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<ChaosConfig>, Problem> {
    bank.chaos.replace(body).map(Json)
}

async fn patch_chaos(
    State(bank): State<Arc<Bank>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<ChaosConfig>, Problem> {
    bank.chaos.patch(body).map(Json)
}

#[derive(Debug, Serialize)]
struct NamedPreset {
    name: &'static str,
    config: ChaosConfig,
}

async fn list_presets() -> Json<Vec<NamedPreset>> {
    Json(PRESET_NAMES.iter().filter_map(|&name| preset(name).map(|config| NamedPreset { name, config })).collect())
}

async fn apply_preset(State(bank): State<Arc<Bank>>, Path(name): Path<String>) -> Result<Json<ChaosConfig>, Problem> {
    bank.chaos
        .apply_preset(&name)
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no preset `{name}`; known presets: {}", PRESET_NAMES.join(", "))))
}

async fn get_scenario(State(bank): State<Arc<Bank>>) -> Json<crate::chaos::ScenarioStatus> {
    Json(bank.chaos.scenario_status())
}

async fn start_scenario(State(bank): State<Arc<Bank>>, JsonBody(body): JsonBody<Value>) -> Result<Response, Problem> {
    let scenario = Scenario::from_json(body)?;
    Ok((StatusCode::CREATED, Json(bank.chaos.start_scenario(scenario))).into_response())
}

async fn stop_scenario(State(bank): State<Arc<Bank>>) -> Json<crate::chaos::ScenarioStatus> {
    bank.chaos.stop_scenario();
    Json(bank.chaos.scenario_status())
}

async fn chaos_stats(State(bank): State<Arc<Bank>>) -> Json<crate::chaos::StatsSnapshot> {
    Json(bank.chaos.stats())
}

async fn reset_chaos(State(bank): State<Arc<Bank>>) -> Json<ChaosConfig> {
    Json(bank.chaos.reset())
}
