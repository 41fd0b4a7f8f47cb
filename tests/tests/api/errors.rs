//! Malformed requests: bad JSON, a wrong content type, an oversized body, unknown routes and
//! methods, bad ids and times. Each is a 4xx problem+json with a clear detail, never a 5xx.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// Sends `body` as-is with `content_type` (none when `None`) as the admin.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.expect("sent")
}

/// Every route that takes a JSON body, with `space/s` and link 1 filled in.
const BODY_ROUTES: [(&str, &str); 10] = [
    ("POST", "/v1/api-keys"),
    ("PUT", "/v1/role-schemas/board"),
    ("POST", "/v1/resources"),
    ("POST", "/v1/resources/space/s/invite-links"),
    ("PATCH", "/v1/resources/space/s/invite-links/1"),
    ("POST", "/v1/resources/space/s/invitations"),
    ("POST", "/v1/invitations/preview"),
    ("POST", "/v1/invitations/accept"),
    ("POST", "/v1/invitations/decline"),
    ("PUT", "/v1/resources/space/s/members/bob"),
];

async fn space_with_a_link_and_an_invitation() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    // Links and invitations draw their ids from one sequence.
    assert_eq!(app.link("space/s", &As::Admin, json!({})).await["id"], 1);
    let invitation = app
        .invite_one("space/s", &As::Admin, "x@example.com", None)
        .await;
    assert_eq!(invitation["id"], 2);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_400_and_a_missing_or_wrong_content_type_415() {
    let app = space_with_a_link_and_an_invitation().await;
    let head = app.head().await;
    for (name, path) in BODY_ROUTES {
        for body in [
            "{",
            "{\"role\": }",
            "[1, 2",
            "nul",
            "\u{0}",
            "{\"a\":1}{\"b\":2}",
        ] {
            let problem = assert_problem(
                raw(&app, method(name), path, Some("application/json"), body).await,
                400,
                "invalid_request",
            )
            .await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("JSON") || d.contains("body")),
                "{name} {path}: {problem}"
            );
        }
        // Valid JSON of the wrong shape.
        for body in ["[]", "42", "\"text\"", "{\"unexpected\": true}"] {
            assert_problem(
                raw(&app, method(name), path, Some("application/json"), body).await,
                400,
                "invalid_request",
            )
            .await;
        }
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            let response = raw(&app, method(name), path, content_type, "{}").await;
            assert_problem(response, 415, "unsupported_media_type").await;
        }
        // A JSON media type with parameters is JSON.
        let response = raw(
            &app,
            method(name),
            path,
            Some("application/json; charset=utf-8"),
            "[]",
        )
        .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{name} {path}: JSON of the wrong shape, not a media type error"
        );
    }
    assert_eq!(app.head().await, head, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|c| c.body_bytes_max = 1024).await;
    app.register("space/s", "alice").await;
    let big = json!({"emails": vec!["someone@example.com"; 100]}).to_string();
    assert!(big.len() > 1024);
    for (name, path) in BODY_ROUTES {
        let response = raw(
            &app,
            method(name),
            path,
            Some("application/json"),
            big.clone(),
        )
        .await;
        let problem = assert_problem(response, 413, "payload_too_large").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("larger")),
            "{problem}"
        );
    }
    // With an Idempotency-Key the body is read by the middleware first: the same answer.
    let response = app
        .client
        .post(app.url("/v1/resources/space/s/invitations"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", "big-1")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413, "payload_too_large").await;
    // Just under the limit is fine.
    let small = json!({"emails": vec!["someone@example.com"; 10]}).to_string();
    assert!(small.len() < 1024);
    assert_eq!(
        raw(
            &app,
            Method::POST,
            "/v1/resources/space/s/invitations",
            Some("application/json"),
            small
        )
        .await
        .status(),
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/v1",
        "/v2/resources",
        "/v1/resources/space",
        "/v1/resources/space/s/nothing",
        "/v1/invitations/accept/extra",
    ] {
        assert_problem(app.get(path, &As::Admin).await, 404, "not_found").await;
    }
    let cases = [
        (Method::DELETE, "/healthz"),
        (Method::POST, "/metrics"),
        (Method::PUT, "/v1/api-keys"),
        (Method::GET, "/v1/api-keys/key_1"),
        (Method::PATCH, "/v1/role-schemas/space"),
        (Method::DELETE, "/v1/resources"),
        (Method::DELETE, "/v1/resources/space/s"),
        (Method::PUT, "/v1/resources/space/s/invite-links"),
        (Method::GET, "/v1/resources/space/s/invite-links/1/rotate"),
        (Method::PATCH, "/v1/resources/space/s/invitations/1"),
        (Method::GET, "/v1/invitations/1/accept"),
        (Method::GET, "/v1/invitations/accept"),
        (Method::POST, "/v1/resources/space/s/members"),
        (Method::POST, "/v1/events"),
    ];
    for (verb, path) in cases {
        let response = app.send(verb.clone(), path, &As::Admin, None).await;
        assert_problem(response, 405, "method_not_allowed").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_malformed_request_gets_a_5xx() {
    let app = space_with_a_link_and_an_invitation().await;
    let long = "x".repeat(5000);
    let paths = [
        "/v1/resources/space/%FF%FE".to_string(),
        "/v1/resources/space/s/invite-links/%F0%9F%92%A9".to_string(),
        format!("/v1/resources/space/{long}"),
        format!("/v1/resources/{long}/1/members"),
        "/v1/resources/space/s/members?limit=%FF".to_string(),
        "/v1/resources/space/s/members?as_of=2024-02-30T00:00:00Z".to_string(),
        "/v1/resources/space/s/members?as_of=99999-01-01T00:00:00Z".to_string(),
        "/v1/resources/space/s/members?as_of=-0001-01-01T00:00:00Z".to_string(),
        "/v1/resources/space/s/members?at_position=18446744073709551615".to_string(),
        "/v1/resources/space/s/members?after=".to_string(),
        "/v1/resources/space/s/history?after=18446744073709551615".to_string(),
        "/v1/events?after=18446744073709551615&limit=1".to_string(),
        "/v1/check?principal=&resource=&privilege=".to_string(),
        "/v1/invitations?email=".to_string(),
        format!("/v1/invitations?email={long}@example.com"),
        format!("/v1/principals/{long}/memberships"),
        "/v1/role-schemas/%00".to_string(),
    ];
    for path in &paths {
        let response = app.get(path, &As::Admin).await;
        let status = response.status();
        assert!(
            status.is_client_error() || status.is_success(),
            "GET {path}: {status}"
        );
        if status.is_client_error() {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            assert_eq!(
                content_type.as_deref(),
                Some("application/problem+json"),
                "GET {path}"
            );
        }
    }
    let bodies = [
        json!({"role": null, "expires_at": null, "max_uses": null}),
        json!({"role": "viewer", "expires_at": "9999-12-31T23:59:59.999Z", "max_uses": 4294967295u32}),
        json!({"role": "viewer", "max_uses": 4294967296u64}),
        json!({"role": "x".repeat(10_000)}),
        json!({"expires_at": "1970-01-01T00:00:00Z"}),
        json!({"expires_at": "10000-01-01T00:00:00Z"}),
        json!({"expires_at": "2999-01-01T00:00:00.123456789+14:00"}),
    ];
    for body in bodies {
        for path in [
            "/v1/resources/space/s/invite-links",
            "/v1/resources/space/s/invite-links/1",
            "/v1/resources/space/s/invitations",
        ] {
            for verb in [Method::POST, Method::PATCH] {
                let response = app
                    .send(verb.clone(), path, &As::Admin, Some(body.clone()))
                    .await;
                assert!(
                    response.status().as_u16() < 500,
                    "{verb} {path} {body}: {}",
                    response.status()
                );
            }
        }
    }
    // An invitation expiring past the year 9999 after a resend.
    let invitation = app
        .invite_one("space/s", &As::Admin, "far@example.com", None)
        .await;
    let far = app
        .post(
            "/v1/resources/space/s/invitations",
            &As::Admin,
            json!({"emails": ["farther@example.com"], "expires_at": "9999-12-31T00:00:00Z"}),
        )
        .await;
    assert_eq!(far.status(), StatusCode::CREATED);
    let far = json_of(far).await;
    let resent = app
        .post(
            &format!(
                "/v1/resources/space/s/invitations/{}/resend",
                far["invited"][0]["invitation"]["id"]
            ),
            &As::Admin,
            json!({}),
        )
        .await;
    assert!(resent.status().as_u16() < 500, "{}", resent.status());
    assert_eq!(
        app.post(
            &format!(
                "/v1/resources/space/s/invitations/{}/resend",
                invitation["id"]
            ),
            &As::Admin,
            json!({})
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_names_its_type_title_status_detail_and_code() {
    let app = spawn_app().await;
    let response = app.get("/v1/resources/space/missing", &As::Admin).await;
    let problem = assert_problem(response, 404, "not_found").await;
    assert_eq!(problem["type"], "https://roster.dev/problems/not_found");
    assert_eq!(problem["title"], "Not Found");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("space/missing")),
        "{problem}"
    );
}
