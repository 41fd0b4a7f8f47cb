//! The OpenAPI 3.1 document of every route, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Roster", description = "An event-sourced invitation and membership engine."),
    paths(
        routes::healthz, routes::metrics, super::openapi_json,
        routes::issue_key, routes::list_keys, routes::revoke_key,
        routes::put_schema, routes::get_schema,
        routes::register, routes::get_resource,
        routes::create_link, routes::list_links, routes::change_link, routes::rotate_link, routes::revoke_link,
        routes::create_invitations, routes::list_invitations, routes::resend_invitation, routes::revoke_invitation,
        routes::preview, routes::accept, routes::decline, routes::pending_for_email,
        routes::list_members, routes::set_member, routes::remove_member, routes::memberships, routes::check,
        routes::resource_history, routes::principal_history, routes::events,
        super::webhook_routes::create_webhook, super::webhook_routes::list_webhooks,
        super::webhook_routes::delete_webhook, super::webhook_routes::webhook_deliveries,
        super::compat::teable::create_link, super::compat::teable::list_links, super::compat::teable::change_link, super::compat::teable::delete_link, super::compat::teable::email_invitations, super::compat::teable::accept_link, super::compat::calcom::create_invite, super::compat::onehub::invite_to_workspace, super::compat::onehub::invite_to_folder, super::compat::onehub::invite_to_file, super::compat::onedata::create_token, super::compat::onedata::join_space,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document as JSON, made once.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}
