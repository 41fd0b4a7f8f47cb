//! The OpenAPI 3.1 document of every route, generated from the handlers' annotations.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, RefOr, Response};
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

/// Makes the document say what every native route answers, as the code does it in one place
/// rather than in each handler: a problem is `application/problem+json` (one `IntoResponse`
/// writes them all), every `/v1` route authenticates first (a missing or unknown key is 401,
/// a malformed `X-Roster-Actor` or path or query 400, a key that may not act so 403), and
/// every `/v1` route with a body reads it through the one JSON extractor (413, 415).
struct Problems;

const PROBLEM_SCHEMA: &str = "#/components/schemas/Problem";
const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

fn problem(description: &str) -> RefOr<Response> {
    let mut response = Response::new(description);
    response.content.insert(
        PROBLEM_CONTENT_TYPE.into(),
        Content::new(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
            utoipa::openapi::Ref::new(PROBLEM_SCHEMA),
        ))),
    );
    RefOr::T(response)
}

/// `min_position` on every route but the server's own (`/healthz`, `/metrics`, the
/// document): see `middleware::min_position`.
fn min_position() -> utoipa::openapi::path::Parameter {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    ParameterBuilder::new()
        .name("min_position")
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(
            "Answer only once this node reflects this log position (a write's \
             `X-Roster-Position`, from any node), else 503 `unavailable` after a wait; also \
             the header `X-Roster-Min-Position`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        ))
        .build()
}

impl Modify for Problems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let native = path.starts_with("/v1/");
            let system = matches!(
                path.as_str(),
                "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
            );
            for operation in operations(item) {
                if !system {
                    operation
                        .parameters
                        .get_or_insert_with(Vec::new)
                        .push(min_position());
                }
                if native {
                    operation
                        .responses
                        .responses
                        .entry("503".to_string())
                        .or_insert_with(|| {
                            problem("`min_position` not reached in time, or the store cannot be reached; see `Retry-After`")
                        });
                }
                let responses = &mut operation.responses.responses;
                if native {
                    let mut common = vec![
                        ("400", "a malformed path, query, header or body"),
                        ("401", "no key, or an unknown or revoked one"),
                        (
                            "403",
                            "the key lacks a scope, or may not act as the named principal",
                        ),
                    ];
                    if operation.request_body.is_some() {
                        common.push(("413", "the body is larger than the server accepts"));
                        common.push(("415", "the body is not sent as `application/json`"));
                    }
                    for (status, description) in common {
                        responses
                            .entry(status.to_string())
                            .or_insert_with(|| problem(description));
                    }
                }
                for response in responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = |content: &Content| matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == PROBLEM_SCHEMA);
                    if let Some(content) = response.content.get("application/json") {
                        if is_problem(content) {
                            let content = content.clone();
                            response.content.shift_remove("application/json");
                            response
                                .content
                                .insert(PROBLEM_CONTENT_TYPE.into(), content);
                        }
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Roster", description = "An event-sourced invitation and membership engine."),
    paths(
        routes::healthz, routes::readyz, routes::metrics, super::router::openapi_json,
        routes::issue_key, routes::list_keys, routes::revoke_key,
        routes::put_schema, routes::get_schema,
        routes::register, routes::list_resources, routes::get_resource,
        routes::create_link, routes::list_links, routes::get_link, routes::change_link, routes::rotate_link, routes::revoke_link,
        routes::create_invitations, routes::list_invitations, routes::get_invitation, routes::resend_invitation, routes::revoke_invitation,
        routes::preview, routes::accept, routes::accept_by_id, routes::decline, routes::pending_for_email,
        routes::list_members, routes::set_member, routes::remove_member, routes::memberships, routes::check,
        routes::resource_history, routes::principal_history, routes::events,
        super::webhook_routes::create_webhook, super::webhook_routes::list_webhooks,
        super::webhook_routes::delete_webhook, super::webhook_routes::webhook_deliveries,
        super::compat::teable::create_link, super::compat::teable::list_links, super::compat::teable::change_link, super::compat::teable::delete_link, super::compat::teable::email_invitations, super::compat::teable::accept_link, super::compat::calcom::create_invite, super::compat::onehub::invite_to_workspace, super::compat::onehub::invite_to_folder, super::compat::onehub::invite_to_file, super::compat::onedata::create_token, super::compat::onedata::join_space,
    ),
    modifiers(&Security, &Problems)
)]
pub struct ApiDoc;

/// The document as JSON, made once.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
}
