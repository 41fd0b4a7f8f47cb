//! The configurable limits of DESIGN section 5: emails per request, pending invitations per
//! resource and active links per resource, each answered 422 `limit_reached`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

fn alice() -> As {
    As::AdminFor("alice".into())
}

fn addresses(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("user{i}@example.com")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_emails_in_one_request() {
    let app = spawn_app_with(|c| c.limits.emails_per_request_max = 3).await;
    app.register("space/s", "alice").await;
    let four = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({ "emails": addresses(0..4) }),
        )
        .await;
    let problem = assert_problem(four, 422, "limit_reached").await;
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains('3')),
        "{problem}"
    );
    // The count is of the items given, valid or not, in either form.
    let listed = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({ "emails": "a@example.com, b@example.com, nope, c@example.com" }),
        )
        .await;
    assert_problem(listed, 422, "limit_reached").await;
    assert_eq!(
        app.read("/v1/resources/space/s/invitations").await["items"],
        json!([]),
        "no partial batch"
    );
    let three = app
        .invite("space/s", &alice(), json!({ "emails": addresses(0..3) }))
        .await;
    assert_eq!(three["invited"].as_array().map(Vec::len), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_pending_invitations_on_one_resource() {
    let app = spawn_app_with(|c| c.limits.pending_invitations_max = 3).await;
    app.register("space/s", "alice").await;
    app.register("space/t", "alice").await;
    let two = app
        .invite("space/s", &alice(), json!({ "emails": addresses(0..2) }))
        .await;
    // Two more would make four: the whole batch is refused.
    let refused = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({ "emails": addresses(2..4) }),
        )
        .await;
    assert_problem(refused, 422, "limit_reached").await;
    app.invite("space/s", &alice(), json!({ "emails": addresses(2..3) }))
        .await;
    let full = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({ "emails": addresses(3..4) }),
        )
        .await;
    assert_problem(full, 422, "limit_reached").await;
    // The limit is per resource, and only pending invitations count: a revoked one frees a slot.
    app.invite("space/t", &alice(), json!({ "emails": addresses(0..3) }))
        .await;
    let first = &two["invited"][0]["invitation"]["id"];
    assert_eq!(
        app.delete(
            &format!("/v1/resources/space/s/invitations/{first}"),
            &alice()
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    app.invite("space/s", &alice(), json!({ "emails": addresses(3..4) }))
        .await;
    assert_eq!(
        app.read("/v1/resources/space/s/invitations?status=pending")
            .await["items"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_active_links_on_one_resource() {
    let app = spawn_app_with(|c| c.limits.active_links_max = 2).await;
    app.register("space/s", "alice").await;
    let first = app.link("space/s", &alice(), json!({"max_uses": 1})).await;
    app.link("space/s", &alice(), json!({})).await;
    assert_problem(
        app.post("/v1/resources/space/s/invite-links", &alice(), json!({}))
            .await,
        422,
        "limit_reached",
    )
    .await;
    // A spent link is not active: using the first one up frees a slot.
    assert_eq!(
        app.accept(&text(&first, "/code"), &As::AdminFor("bob".into()))
            .await
            .status(),
        StatusCode::OK
    );
    let third = app.link("space/s", &alice(), json!({})).await;
    // Reviving the spent link would make three active: refused.
    let path = format!("/v1/resources/space/s/invite-links/{}", first["id"]);
    assert_problem(
        app.patch(&path, &alice(), json!({"max_uses": null})).await,
        422,
        "limit_reached",
    )
    .await;
    // Revoking one frees a slot again, and then the revival is allowed.
    assert_eq!(
        app.delete(
            &format!("/v1/resources/space/s/invite-links/{}", third["id"]),
            &alice()
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        json_of(app.patch(&path, &alice(), json!({"max_uses": null})).await).await["status"],
        "active"
    );
    // Other resources have their own.
    app.register("space/t", "alice").await;
    app.link("space/t", &alice(), json!({})).await;
}
