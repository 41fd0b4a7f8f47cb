//! API keys and role schemas: the admin's routes (`admin` scope).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_shown_once_listed_without_its_secret_and_revoked() {
    let app = spawn_app().await;
    let body = json!({"principal": "svc", "scopes": ["read", "write"], "act_as": true, "email": "Svc@Example.com", "name": "the host"});
    let response = app.post("/v1/api-keys", &As::Admin, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let issued = json_of(response).await;
    let key = text(&issued, "/key");
    let id = text(&issued, "/id");
    assert!(key.starts_with("rk_") && key.len() > 40, "{key}");
    assert_eq!(issued["principal"], "svc");
    assert_eq!(issued["scopes"], json!(["read", "write"]));
    assert_eq!(issued["act_as"], true);
    assert!(issued["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let listed = app.get("/v1/api-keys", &As::Admin).await;
    let listed_text = listed.text().await.expect("a body");
    assert!(!listed_text.contains(&key), "the list shows no secret");
    let listed: Value = serde_json::from_str(&listed_text).expect("JSON");
    let row = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(
        row["email"], "Svc@Example.com",
        "emails are kept as written, and compared in normal form"
    );
    assert_eq!(row["name"], "the host");
    assert_eq!(row["revoked"], false);

    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}"), &As::Admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // Revoking again changes nothing and still answers 204.
    let head = app.head().await;
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}"), &As::Admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.head().await, head);
    let listed = app.read("/v1/api-keys").await;
    assert_eq!(listed["items"][0]["revoked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_request_is_a_clear_4xx() {
    let app = spawn_app().await;
    let cases: [(Value, u16, &str); 8] = [
        (
            json!({"principal": "a", "scopes": []}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": "a", "scopes": ["root"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": "a b", "scopes": ["read"]}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": "a", "scopes": "read"}),
            400,
            "invalid_request",
        ),
        (json!({"scopes": ["read"]}), 400, "invalid_request"),
        (
            json!({"principal": "a", "scopes": ["read"], "role": "x"}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": "a", "scopes": ["read"], "name": "n".repeat(129)}),
            400,
            "invalid_request",
        ),
        (
            json!({"principal": "a", "scopes": ["read"], "email": "nobody"}),
            422,
            "invalid_email",
        ),
    ];
    for (body, status, code) in cases {
        assert_problem(
            app.post("/v1/api-keys", &As::Admin, body).await,
            status,
            code,
        )
        .await;
    }
    assert_eq!(app.head().await, 0, "nothing was appended");
    // Unknown and malformed ids.
    assert_problem(
        app.delete("/v1/api-keys/key_unknown", &As::Admin).await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete("/v1/api-keys/key%20with%20space", &As::Admin)
            .await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_on_api_keys_is_409() {
    let app = spawn_app().await;
    let body = json!({"principal": "svc", "scopes": ["read"]});
    let send = || {
        app.client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", "issue-1")
            .json(&body)
            .send()
    };
    let first = send().await.expect("sent");
    assert_eq!(first.status(), StatusCode::CREATED);
    let head = app.head().await;
    let problem = assert_problem(send().await.expect("sent"), 409, "conflict").await;
    assert!(
        !problem.to_string().contains("rk_"),
        "no key in the refusal: {problem}"
    );
    assert_eq!(app.head().await, head, "nothing appended");
    assert_eq!(
        app.read("/v1/api-keys").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_schemas_are_built_in_defined_and_guarded() {
    let app = spawn_app().await;
    let reader = As::Key(app.key("bob", &["read"], false, None).await);
    // Built-in schemas, readable with `read`.
    for (kind, highest, default) in [
        ("space", "owner", "viewer"),
        ("team", "owner", "member"),
        ("folder", "administrator", "downloader"),
        ("anything", "owner", "viewer"),
    ] {
        let schema = json_of(app.get(&format!("/v1/role-schemas/{kind}"), &reader).await).await;
        assert_eq!(schema["kind"], kind);
        assert_eq!(schema["roles"][0]["name"], highest, "{kind}");
        assert_eq!(schema["default_role"], default, "{kind}");
    }
    // A new schema, in force at once; names are written in lowercase.
    let board = json!({"roles": [{"name": "Chair", "privileges": ["view_members", "invite", "manage_invitations", "manage_members", "view_history"]}, {"name": "seat", "privileges": ["view_members"]}], "default_role": "seat"});
    let defined = json_of(
        app.put("/v1/role-schemas/board", &As::Admin, board.clone())
            .await,
    )
    .await;
    assert_eq!(defined["roles"][0]["name"], "chair");
    assert_eq!(app.read("/v1/role-schemas/board").await, defined);
    app.register("board/b1", "alice").await;
    assert_eq!(app.members("board/b1").await, pairs(&[("alice", "chair")]));
    app.put(
        "/v1/resources/board/b1/members/bob",
        &As::Admin,
        json!({"role": "seat"}),
    )
    .await;

    let cases: [(&str, Value, u16, &str); 7] = [
        // Removing a role somebody holds, or changing the highest of a kind in use.
        (
            "board",
            json!({"roles": [{"name": "chair", "privileges": ["invite"]}], "default_role": "chair"}),
            409,
            "conflict",
        ),
        (
            "board",
            json!({"roles": [{"name": "head", "privileges": []}, {"name": "chair", "privileges": []}, {"name": "seat", "privileges": []}], "default_role": "seat"}),
            409,
            "conflict",
        ),
        (
            "board",
            json!({"roles": [{"name": "chair", "privileges": ["fly"]}], "default_role": "chair"}),
            400,
            "invalid_request",
        ),
        (
            "board",
            json!({"roles": [{"name": "chair", "privileges": []}], "default_role": "nobody"}),
            400,
            "unknown_role",
        ),
        (
            "board",
            json!({"roles": [{"name": "not a role!", "privileges": []}], "default_role": "x"}),
            400,
            "unknown_role",
        ),
        (
            "board",
            json!({"roles": [], "default_role": "x"}),
            400,
            "invalid_request",
        ),
        ("Bad Kind", board.clone(), 400, "invalid_request"),
    ];
    for (kind, body, status, code) in cases {
        let path = format!("/v1/role-schemas/{}", kind.replace(' ', "%20"));
        assert_problem(app.put(&path, &As::Admin, body).await, status, code).await;
    }
    // Adding a role below the highest is allowed, even in use.
    let wider = json!({"roles": [{"name": "chair", "privileges": ["view_members", "invite", "manage_invitations", "manage_members", "view_history"]}, {"name": "seat", "privileges": ["view_members"]}, {"name": "guest", "privileges": []}], "default_role": "guest"});
    assert_eq!(
        json_of(app.put("/v1/role-schemas/board", &As::Admin, wider).await).await["default_role"],
        "guest"
    );
    // Only `admin` defines schemas; a bad kind is 400 on GET too.
    assert_problem(
        app.put("/v1/role-schemas/board", &reader, board).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.get("/v1/role-schemas/NOPE", &reader).await,
        400,
        "invalid_request",
    )
    .await;
}
