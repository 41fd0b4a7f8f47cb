//! Registering resources and reading one back.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_is_registered_once_with_its_owner_holding_the_highest_role() {
    let app = spawn_app().await;
    let response = app
        .post(
            "/v1/resources",
            &As::Admin,
            json!({"resource": "workspace/931", "owner": "alice"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let view = json_of(response).await;
    assert_eq!(view["resource"], "workspace/931");
    assert_eq!(view["owners"], json!(["alice"]));
    assert_eq!(view["parent"], Value::Null);
    assert_eq!(view["member_count"], 1);
    assert!(view["registered_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        app.members("workspace/931").await,
        pairs(&[("alice", "administrator")])
    );

    let child = json_of(
        app.post(
            "/v1/resources",
            &As::Admin,
            json!({"resource": "folder/55", "owner": "bob", "parent": "workspace/931"}),
        )
        .await,
    )
    .await;
    assert_eq!(child["parent"], "workspace/931");
    assert_eq!(app.read("/v1/resources/folder/55").await, child);

    let again = app
        .post(
            "/v1/resources",
            &As::Admin,
            json!({"resource": "workspace/931", "owner": "bob"}),
        )
        .await;
    assert_problem(again, 409, "already_exists").await;
    assert_eq!(
        app.members("workspace/931").await,
        pairs(&[("alice", "administrator")]),
        "the first owner stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_member_count_follows_the_members() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    for who in ["bob", "carol"] {
        app.put(
            &format!("/v1/resources/space/s/members/{who}"),
            &As::Admin,
            json!({"role": "viewer"}),
        )
        .await;
    }
    assert_eq!(app.read("/v1/resources/space/s").await["member_count"], 3);
    assert_eq!(
        app.delete("/v1/resources/space/s/members/carol", &As::Admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.read("/v1/resources/space/s").await["member_count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resource_names_and_owners_are_400_and_unknown_ones_404() {
    let app = spawn_app().await;
    let long_id = format!("space/{}", "x".repeat(129));
    let long_kind = format!("{}/1", "k".repeat(33));
    let bodies = [
        json!({"resource": "space", "owner": "alice"}),
        json!({"resource": "Space/1", "owner": "alice"}),
        json!({"resource": "1space/1", "owner": "alice"}),
        json!({"resource": "space/", "owner": "alice"}),
        json!({"resource": "space/a b", "owner": "alice"}),
        json!({"resource": "space/a/b", "owner": "alice"}),
        json!({"resource": long_id, "owner": "alice"}),
        json!({"resource": long_kind, "owner": "alice"}),
        json!({"resource": "space/ok", "owner": ""}),
        json!({"resource": "space/ok", "owner": "a/b"}),
        json!({"resource": "space/ok", "owner": "tab\there"}),
        json!({"resource": "space/ok", "owner": "alice", "parent": "nope"}),
        json!({"resource": "space/ok", "owner": "alice", "parent": "space/ok"}),
        json!({"resource": "space/ok"}),
        json!({"resource": 42, "owner": "alice"}),
    ];
    for body in bodies {
        let problem = assert_problem(
            app.post("/v1/resources", &As::Admin, body.clone()).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(
            !problem["detail"].as_str().unwrap_or("").is_empty(),
            "{body}"
        );
    }
    assert_eq!(app.head().await, 0, "nothing was registered");
    // The id's whole alphabet is allowed.
    app.register("space/A-z_0.9~", "alice").await;
    assert_eq!(
        app.read("/v1/resources/space/A-z_0.9~").await["resource"],
        "space/A-z_0.9~"
    );
    // In the path: a bad kind or id is 400, a well-formed unknown resource 404.
    assert_problem(
        app.get("/v1/resources/SPACE/1", &As::Admin).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.get("/v1/resources/space/a%20b", &As::Admin).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.get("/v1/resources/space/missing", &As::Admin).await,
        404,
        "not_found",
    )
    .await;
    for path in ["/members", "/invite-links", "/invitations", "/history"] {
        assert_problem(
            app.get(&format!("/v1/resources/space/missing{path}"), &As::Admin)
                .await,
            404,
            "not_found",
        )
        .await;
    }
    let command = app
        .post(
            "/v1/resources/space/missing/invite-links",
            &As::Admin,
            json!({}),
        )
        .await;
    assert_problem(command, 404, "not_found").await;
    let command = app
        .put(
            "/v1/resources/space/missing/members/bob",
            &As::Admin,
            json!({"role": "viewer"}),
        )
        .await;
    assert_problem(command, 404, "not_found").await;
}
