//! Fuzzing of request bodies over real HTTP: arbitrary bytes, near-valid edits of valid bodies
//! and the corpus in `tests/corpus/bodies/`, with assorted content types, on every route that
//! takes a body, native and compatible. Whatever arrives, the server answers below 500; a
//! native 4xx is problem+json with its stable code, and a compatible route's 4xx is a JSON
//! object in its family's own error shape (DESIGN section 7).
//!
//! Proptest rather than cargo-fuzz, for the reason given at the top of `tests/fuzz.rs`; the
//! case count is bounded so this stays in seconds, and `ROSTER_FUZZ_CASES` raises it by hand.

// Shared with `tests/fuzz.rs`, which uses all of it.
#[allow(dead_code)]
#[path = "../fuzz/mutate.rs"]
mod mutate;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Every route that reads a body: method, path (with the seeded ids filled in), whether it is
/// native, and a valid body to start edits from.
fn routes() -> Vec<(Method, &'static str, bool, Value)> {
    vec![
        (
            Method::POST,
            "/v1/api-keys",
            true,
            json!({"principal": "carol", "scopes": ["read"], "act_as": false, "email": "carol@example.com", "name": "k"}),
        ),
        (
            Method::PUT,
            "/v1/role-schemas/board",
            true,
            json!({"roles": [{"name": "admin", "privileges": ["view_members", "invite", "manage_invitations", "manage_members", "view_history"]}, {"name": "member", "privileges": ["view_members"]}], "default_role": "member"}),
        ),
        (
            Method::POST,
            "/v1/resources",
            true,
            json!({"resource": "space/fuzzed", "owner": "alice", "parent": "space/s"}),
        ),
        (
            Method::POST,
            "/v1/resources/space/s/invite-links",
            true,
            json!({"role": "editor", "expires_at": "2030-01-01T00:00:00Z", "max_uses": 3}),
        ),
        (
            Method::PATCH,
            "/v1/resources/space/s/invite-links/1",
            true,
            json!({"role": "viewer", "expires_at": null, "max_uses": 5}),
        ),
        (
            Method::POST,
            "/v1/resources/space/s/invitations",
            true,
            json!({"emails": ["d@example.com", "e@example.com"], "role": "viewer", "expires_at": "2030-01-01T00:00:00Z", "message": "hi"}),
        ),
        (
            Method::POST,
            "/v1/invitations/preview",
            true,
            json!({"code": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ),
        (
            Method::POST,
            "/v1/invitations/accept",
            true,
            json!({"code": "0000000000000000000000000000000000000000000000000000000000000000"}),
        ),
        (
            Method::POST,
            "/v1/invitations/decline",
            true,
            json!({"code": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ),
        (
            Method::PUT,
            "/v1/resources/space/s/members/bob",
            true,
            json!({"role": "editor"}),
        ),
        (
            Method::POST,
            "/v1/webhooks",
            true,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["MemberAdded"]}),
        ),
        (
            Method::POST,
            "/api/space/s/invitation/link",
            false,
            json!({"role": "editor"}),
        ),
        (
            Method::PATCH,
            "/api/space/s/invitation/link/1",
            false,
            json!({"role": "viewer"}),
        ),
        (
            Method::POST,
            "/api/space/s/invitation/email",
            false,
            json!({"emails": ["f@example.com"], "role": "viewer"}),
        ),
        (
            Method::POST,
            "/api/invitation/link/accept",
            false,
            json!({"invitationId": "1", "invitationCode": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ),
        (Method::POST, "/v2/teams/1/invite", false, json!({})),
        (
            Method::POST,
            "/workspaces/1/invitations",
            false,
            json!({"invitation": {"emails": "g@example.com, h@example.com", "role_name": "member"}}),
        ),
        (
            Method::POST,
            "/folders/1/invitations",
            false,
            json!({"invitation": {"emails": ["i@example.com"]}}),
        ),
        (
            Method::POST,
            "/files/1/invitations",
            false,
            json!({"invitation": {"emails": ["j@example.com"]}}),
        ),
        (
            Method::POST,
            "/api/v3/onezone/spaces/s/users/token",
            false,
            json!({}),
        ),
        (
            Method::POST,
            "/api/v3/onezone/user/spaces/join",
            false,
            json!({"token": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ),
    ]
}

/// `None` sends no `Content-Type` at all.
const CONTENT_TYPES: [Option<&str>; 9] = [
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("APPLICATION/JSON"),
    Some("application/problem+json"),
    Some("application/vnd.api+json"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    None,
];

/// What a response must be, whatever the request was.
async fn check(
    native: bool,
    method: &Method,
    path: &str,
    response: reqwest::Response,
) -> Result<(), TestCaseError> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response
        .text()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let at = format!("{method} {path} -> {status} {content_type} {text}");
    prop_assert!(status < 500, "a server error: {}", at);
    if text.is_empty() {
        prop_assert!(status < 400, "an error without a body: {}", at);
        return Ok(());
    }
    let body: Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {at}")))?;
    if status < 400 {
        prop_assert!(content_type.starts_with("application/json"), "{}", at);
        return Ok(());
    }
    if native {
        prop_assert_eq!(content_type.as_str(), "application/problem+json", "{}", at);
        prop_assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{}", at);
        prop_assert!(
            body["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{}",
            at
        );
        prop_assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            at
        );
        prop_assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://")),
            "{}",
            at
        );
        prop_assert!(body["title"].is_string(), "{}", at);
    } else {
        // The families answer in their own JSON shapes, never in the native one.
        prop_assert!(content_type.starts_with("application/json"), "{}", at);
        prop_assert!(body.is_object(), "{}", at);
        prop_assert!(body.get("type").is_none(), "a native problem: {}", at);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("ROSTER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn no_body_on_any_route_gets_a_5xx_or_an_error_outside_its_shape() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = runtime.block_on(async {
        let app = spawn_app().await;
        app.register("space/s", "alice").await;
        app.link("space/s", &As::Admin, json!({"role": "editor"}))
            .await;
        app.invite_one("space/s", &As::Admin, "x@example.com", None)
            .await;
        for resource in ["workspace/1", "folder/1", "file/1", "team/1"] {
            app.register(resource, "alice").await;
        }
        app
    });
    let routes = routes();
    let corpus = mutate::corpus("bodies");
    let send = |route: usize, content_type: usize, actor: bool, body: Vec<u8>| {
        let (method, path, native, _) = &routes[route];
        let mut request = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .body(body);
        if let Some(content_type) = CONTENT_TYPES[content_type] {
            request = request.header("content-type", content_type);
        }
        if actor {
            request = request.header("x-roster-actor", "alice");
        }
        runtime.block_on(async {
            let response = request
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("the request failed: {e}")))?;
            check(*native, method, path, response).await
        })
    };

    // The corpus first: every file on every route, as JSON and without a content type.
    for (file, bytes) in &corpus {
        for route in 0..routes.len() {
            for content_type in [0, CONTENT_TYPES.len() - 1] {
                send(route, content_type, true, bytes.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            }
        }
    }

    let seeds: Vec<Vec<u8>> = routes
        .iter()
        .map(|(_, _, _, body)| body.to_string().into_bytes())
        .collect();
    let body = prop_oneof![
        // Arbitrary bytes, with no structure at all.
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|b| (None, b)),
        // Near-valid: the route's own valid body, edited.
        mutate::edits().prop_map(|e| (Some(e), Vec::new())),
        // Another route's valid body, edited: right JSON, wrong shape.
        (0..seeds.len(), mutate::edits())
            .prop_map(|(i, e)| (Some(e), vec![u8::try_from(i).unwrap_or(0)])),
    ];
    let input = (0..routes.len(), 0..CONTENT_TYPES.len(), any::<bool>(), body);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&input, |(route, content_type, actor, (edits, raw))| {
            let bytes = match (edits, raw.first()) {
                (None, _) => raw,
                (Some(edits), None) => mutate::apply(&seeds[route], &edits),
                (Some(edits), Some(other)) => {
                    mutate::apply(&seeds[usize::from(*other) % seeds.len()], &edits)
                }
            };
            send(route, content_type, actor, bytes)
        })
        .unwrap();
    // The fuzzing reached both sides of validation: bodies refused, and bodies that, edited
    // or not, still did what they asked (counted by the server's own metrics).
    let metrics = runtime.block_on(async {
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("a body")
    });
    let answered = |class: char| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("roster_http_requests_total{"))
            .filter(|l| l.contains(&format!("status=\"{class}")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let (successes, refusals) = (answered('2'), answered('4'));
    eprintln!("fuzz_bodies: {successes} successes, {refusals} refusals");
    assert!(
        successes > 20 && refusals > u64::from(cases()),
        "{successes} successes and {refusals} refusals"
    );
    assert_eq!(answered('5'), 0, "{metrics}");
    runtime.block_on(app.stop());
}
