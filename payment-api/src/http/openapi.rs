//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "resilient-pay payment gateway",
        description = "Charges a card exactly once through an unreliable bank. Errors are application/problem+json (RFC 9457) with a stable `code`."
    ),
    paths(
        super::payments::create_payment,
        super::payments::list_payments,
        super::payments::get_payment,
        super::payments::create_refund,
        super::payments::capture_payment,
        super::payments::cancel_payment,
        super::webhooks::list_events,
        super::webhooks::get_event,
        super::webhooks::list_deliveries,
        super::webhooks::redeliver,
        super::webhooks::create_endpoint,
        super::webhooks::list_endpoints,
        super::webhooks::delete_endpoint,
        super::operations::healthz,
        super::operations::readyz,
        super::operations::metrics,
        super::admin::get_breaker,
        super::admin::put_breaker,
        super::admin::stream,
        super::admin::get_banks,
        super::admin::put_bank_breaker,
    ),
    components(schemas(http_conventions::FieldError)),
    modifiers(&Security),
    tags(
        (name = "payments", description = "Payments, their capture or cancel, and refunds (Bearer API key)"),
        (name = "events", description = "The event log, and webhook deliveries of each event (Bearer API key)"),
        (name = "webhooks", description = "Webhook endpoints: Standard Webhooks deliveries of events (Bearer API key)"),
        (name = "admin", description = "Operator routes (Bearer admin key)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("admin_key", bearer());
    }
}

/// The document as this gateway serves it: the currencies it accepts are the configured ones.
pub fn document(currencies: &[String]) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    let payment = document.components.as_mut().and_then(|c| c.schemas.get_mut("CreatePayment"));
    if let Some(RefOr::T(Schema::Object(payment))) = payment
        && let Some(RefOr::T(Schema::Object(currency))) = payment.properties.get_mut("currency")
    {
        currency.enum_values = Some(currencies.iter().map(|c| serde_json::Value::from(c.as_str())).collect());
    }
    link_payments_to_their_operations(&mut document);
    document
}

/// OpenAPI links from a created payment to the operations that take its id, so that a client
/// generator or a stateful fuzzer knows where the id goes.
fn link_payments_to_their_operations(document: &mut utoipa::openapi::OpenApi) {
    let Some(create) = document.paths.paths.get_mut("/v1/payments").and_then(|item| item.post.as_mut()) else {
        return;
    };
    let link =
        |operation: &str| LinkBuilder::new().operation_id(operation).parameter("id", "$response.body#/id").build();
    for (status, operations) in [
        ("201", &["get_payment", "create_refund", "capture_payment", "cancel_payment"][..]),
        ("202", &["get_payment"]),
        ("402", &["get_payment"]),
    ] {
        if let Some(RefOr::T(response)) = create.responses.responses.get_mut(status) {
            for operation in operations {
                response.links.insert(operation.to_string(), RefOr::T(link(operation)));
            }
        }
    }
}
