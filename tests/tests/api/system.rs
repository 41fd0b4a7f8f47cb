//! The routes outside `/v1`: liveness, Prometheus metrics and the OpenAPI document, and the
//! `X-Roster-Position` header every response carries.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_without_a_key_with_the_logs_position() {
    let app = spawn_app().await;
    let before = app.get("/healthz", &As::Nobody).await;
    assert_eq!(before.status(), StatusCode::OK);
    let body = json_of(before).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["position"], 0, "a fresh log is empty");

    app.register("space/s", "alice").await;
    assert_eq!(app.head().await, 1, "one event appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_counting_requests_refusals_and_positions() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    // One refused command and one failed code check, so their counters move.
    let refused = app
        .post(
            "/v1/resources",
            &As::Admin,
            json!({"resource": "space/s", "owner": "bob"}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let unknown = app.accept("not-a-code", &As::AdminFor("bob".into())).await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    let response = app.get("/metrics", &As::Nobody).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.text().await.expect("a body");
    for line in body.lines() {
        // The exposition format: comments, or `name{labels} value` with a number.
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (_, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
    }
    for expected in [
        "# TYPE roster_http_requests_total counter",
        "roster_http_requests_total{route=\"/v1/resources\",status=\"201\"} 1",
        "roster_http_requests_total{route=\"/v1/resources\",status=\"409\"} 1",
        "roster_failed_code_checks_total{family=\"native\"} 1",
        "roster_commands_refused_total 2",
        "roster_log_head_position 1",
        "roster_read_models_position 1",
    ] {
        assert!(
            body.lines().any(|l| l == expected),
            "missing {expected:?} in\n{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_of_the_design() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json", &As::Nobody).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document = json_of(response).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    let paths = document["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for (method, template) in ROUTES {
        let listed = paths
            .get(template)
            .and_then(|p| p.get(method.to_lowercase()))
            .is_some();
        if !listed {
            missing.push(format!("{method} {template}"));
        }
    }
    assert!(missing.is_empty(), "not in /openapi.json: {missing:?}");
    // The error body is described once and referred to.
    assert!(document.pointer("/components/schemas/Problem").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_read_models_position() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let head = app.head().await;
    // Every route, as the admin: successes and refusals alike carry the header.
    for (name, template) in ROUTES {
        let body = matches!(name, "POST" | "PUT" | "PATCH").then(|| json!({}));
        let response = app
            .send(method(name), &concrete(template), &As::Admin, body)
            .await;
        assert!(
            response.status().as_u16() < 500,
            "{name} {template}: {}",
            response.status()
        );
        assert!(position(&response) >= head, "{name} {template}");
    }
    // And so do a route that does not exist and a request without a key.
    let head = app.head().await;
    assert_eq!(position(&app.get("/nowhere", &As::Nobody).await), head);
    assert_eq!(position(&app.get("/v1/events", &As::Nobody).await), head);
    // A command's response reflects its own position (read-your-writes).
    let registered = app
        .post(
            "/v1/resources",
            &As::Admin,
            json!({"resource": "space/t", "owner": "bob"}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    assert_eq!(position(&registered), head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_keeps_a_private_secret_and_no_configured_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let secret =
        std::fs::metadata(app.dir.join("secret.key")).expect("a secret made at first start");
    assert_eq!(secret.permissions().mode() & 0o777, 0o600);
    // The admin token came from the configuration (ROSTER_ADMIN_TOKEN): it is not written down.
    assert!(!app.dir.join("admin-token").exists());
}
