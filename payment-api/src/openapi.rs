//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "resilient-pay payment gateway",
        description = "Charges a card exactly once through an unreliable bank. Errors are application/problem+json (RFC 9457) with a stable `code`."
    ),
    paths(
        crate::api::create_payment,
        crate::api::list_payments,
        crate::api::get_payment,
        crate::api::create_refund,
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics,
        crate::api::get_breaker,
        crate::api::put_breaker,
        crate::api::stream,
    ),
    components(schemas(http_conventions::FieldError)),
    modifiers(&Security),
    tags(
        (name = "payments", description = "Payments and refunds (Bearer API key)"),
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
