//! The OpenAPI 3 description, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    admins, audit, audit_verify, health, identities, keys, leaks, posture, rotation_policy,
    secrets, tokens, usage, verify, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward", description = "API keys for non-human identities."),
    paths(
        identities::create, identities::list, identities::show, identities::update,
        identities::delete,
        keys::create, keys::list, keys::show, keys::update, keys::rotate, keys::revoke,
        verify::verify, verify::verify_batch,
        leaks::report,
        audit::list,
        secrets::put, secrets::get, secrets::delete, secrets::list,
        rotation_policy::put, rotation_policy::show, rotation_policy::delete,
        crate::routes::rotation_status::show,
        usage::usage, usage::top, posture::report,
        audit_verify::verify,
        admins::create, admins::list, admins::disable, admins::login,
        tokens::create, tokens::introspect, tokens::jwks,
        health::healthz, health::readyz, health::metrics, health::openapi,
        webhooks::create, webhooks::list, webhooks::show, webhooks::delete, webhooks::deliveries,
        crate::routes::anomalies::list, crate::routes::anomalies::show_policy,
        crate::routes::anomalies::put_policy,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
