//! Unknown query parameters on the native routes are refused, as unknown body fields are: a
//! misspelt `as_of` or `limit` would otherwise be ignored and answer a question nobody asked.
//! The parameters a route takes are read from the OpenAPI document, which is generated from
//! the handlers' annotations, so what is refused and what is documented cannot drift apart.
//! The seed products' routes ignore what they do not know, in the query as in their bodies,
//! since their own clients may send more than the documents list.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::error::ApiError;

/// `(METHOD, path template)` → the query parameters the route documents.
type Known = HashMap<(String, String), BTreeSet<String>>;

fn known() -> &'static Known {
    static KNOWN: OnceLock<Known> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let document: serde_json::Value =
            serde_json::from_str(crate::http::openapi::document()).unwrap_or_default();
        let mut known = Known::new();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, operations) in paths {
            let Some(operations) = operations.as_object() else {
                continue;
            };
            for (method, operation) in operations {
                let names = operation["parameters"]
                    .as_array()
                    .map(|parameters| {
                        parameters
                            .iter()
                            .filter(|p| p["in"] == "query")
                            .filter_map(|p| p["name"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                known.insert((method.to_ascii_uppercase(), path.clone()), names);
            }
        }
        known
    })
}

/// Whether the route is one of Roster's own (native or system), whose queries are checked.
fn native(template: &str) -> bool {
    template.starts_with("/v1/")
        || matches!(
            template,
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json"
        )
}

/// The middleware: 400 `invalid_request` naming the first unknown parameter.
pub async fn refuse_unknown_query(request: Request, next: Next) -> Result<Response, ApiError> {
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    if let (Some(template), Some(query)) = (template, request.uri().query()) {
        let key = (request.method().as_str().to_string(), template);
        // A method the route does not take is routing's 405, whatever the query says.
        if let Some(allowed) = known().get(&key).filter(|_| native(&key.1)) {
            for (name, _) in form_urlencoded::parse(query.as_bytes()) {
                if !allowed.contains(name.as_ref()) {
                    let takes = if allowed.is_empty() {
                        "it takes none".to_string()
                    } else {
                        let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
                        format!("it takes {}", list.join(", "))
                    };
                    return Err(ApiError::invalid(format!(
                        "unknown query parameter {name:?} for {} {}: {takes}",
                        key.0, key.1
                    )));
                }
            }
        }
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_native_route_is_known_with_its_parameters() {
        let members = known()
            .get(&(
                "GET".to_string(),
                "/v1/resources/{kind}/{id}/members".to_string(),
            ))
            .expect("the members route is documented");
        for name in ["as_of", "at_position", "limit", "after"] {
            assert!(members.contains(name), "{name}: {members:?}");
        }
        // A route that takes no parameter of its own takes `min_position` alone, as every
        // route does (reads after a write made through another node).
        assert_eq!(
            known().get(&("POST".to_string(), "/v1/resources".to_string())),
            Some(&BTreeSet::from(["min_position".to_string()]))
        );
    }
}
