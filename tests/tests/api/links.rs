//! Invite links: create, list, change, rotate, revoke, and who may do which.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// `space/s` owned by alice, with erin an editor (who may invite) and bob a viewer.
async fn space() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    app.grant("space/s", &[("erin", "editor"), ("bob", "viewer")])
        .await;
    app
}

fn alice() -> As {
    As::AdminFor("alice".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_created_with_its_code_url_and_limits() {
    let app = space().await;
    let response = app
        .post(
            "/v1/resources/space/s/invite-links",
            &alice(),
            json!({"role": "Editor", "expires_at": "2999-01-01T00:00:00+02:00", "max_uses": 3}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let link = json_of(response).await;
    let code = text(&link, "/code");
    assert_eq!(code.len(), 43, "base64url without padding");
    assert!(code
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(link["url"], format!("https://roster.example/invite/{code}"));
    assert_eq!(link["resource"], "space/s");
    assert_eq!(
        link["role"], "editor",
        "role names are written in lowercase"
    );
    assert_eq!(link["created_by"], "alice");
    assert_eq!(
        link["expires_at"], "2998-12-31T22:00:00.000Z",
        "times are written in UTC"
    );
    assert_eq!(link["max_uses"], 3);
    assert_eq!(link["uses"], 0);
    assert_eq!(link["status"], "active");
    assert!(link["id"].as_u64().is_some_and(|id| id > 0));

    // Without a role: the kind's default; without limits: none.
    let plain = app.link("space/s", &alice(), json!({})).await;
    assert_eq!(
        (
            plain["role"].clone(),
            plain["expires_at"].clone(),
            plain["max_uses"].clone()
        ),
        (json!("viewer"), Value::Null, Value::Null)
    );

    // The list shows both to whoever may view members; the codes only to those who could
    // have made the links (findings.rs has the whole rule).
    let listed = json_of(
        app.get(
            "/v1/resources/space/s/invite-links",
            &As::AdminFor("bob".into()),
        )
        .await,
    )
    .await;
    let ids: Vec<&Value> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| &l["id"])
        .collect();
    assert_eq!(ids, [&link["id"], &plain["id"]]);
    let mut without_code = link.clone();
    let fields = without_code.as_object_mut().expect("an object");
    fields.remove("code");
    fields.remove("url");
    assert_eq!(listed["items"][0], without_code);
    let listed = app.read("/v1/resources/space/s/invite-links").await;
    assert_eq!(listed["items"][0], link, "the admin sees the code");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_used_up_to_its_limit() {
    let app = space().await;
    let link = app
        .link(
            "space/s",
            &alice(),
            json!({"role": "commenter", "max_uses": 2}),
        )
        .await;
    let code = text(&link, "/code");
    for who in ["u1", "u2"] {
        let accepted = json_of(app.accept(&code, &As::AdminFor(who.into())).await).await;
        assert_eq!(accepted["role"], "commenter");
    }
    assert_problem(
        app.accept(&code, &As::AdminFor("u3".into())).await,
        410,
        "invitation_exhausted",
    )
    .await;
    let listed = app.read("/v1/resources/space/s/invite-links").await;
    assert_eq!(
        (
            listed["items"][0]["uses"].clone(),
            listed["items"][0]["status"].clone()
        ),
        (json!(2), json!("exhausted"))
    );
    // Raising the limit opens it again; lowering it below the uses is refused.
    let path = format!("/v1/resources/space/s/invite-links/{}", link["id"]);
    assert_problem(
        app.patch(&path, &alice(), json!({"max_uses": 1})).await,
        400,
        "invalid_request",
    )
    .await;
    let changed = json_of(app.patch(&path, &alice(), json!({"max_uses": 3})).await).await;
    assert_eq!(changed["status"], "active");
    assert_eq!(
        app.accept(&code, &As::AdminFor("u3".into())).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_changed_and_null_clears_a_limit() {
    let app = space().await;
    let link = app
        .link(
            "space/s",
            &alice(),
            json!({"role": "viewer", "max_uses": 5, "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let path = format!("/v1/resources/space/s/invite-links/{}", link["id"]);
    let changed = json_of(
        app.patch(&path, &alice(), json!({"role": "commenter"}))
            .await,
    )
    .await;
    assert_eq!(
        (changed["role"].clone(), changed["max_uses"].clone()),
        (json!("commenter"), json!(5)),
        "absent fields stay"
    );
    assert_eq!(changed["code"], link["code"], "a change keeps the code");
    let cleared = json_of(
        app.patch(
            &path,
            &alice(),
            json!({"max_uses": null, "expires_at": null}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (cleared["max_uses"].clone(), cleared["expires_at"].clone()),
        (Value::Null, Value::Null)
    );
    let later = json_of(
        app.patch(
            &path,
            &alice(),
            json!({"expires_at": "3000-01-01T00:00:00Z"}),
        )
        .await,
    )
    .await;
    assert_eq!(later["expires_at"], "3000-01-01T00:00:00.000Z");
    // The same change twice appends nothing the second time.
    let head = app.head().await;
    assert_eq!(
        app.patch(&path, &alice(), json!({"role": "commenter"}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.head().await, head);
    // An accepted code grants the role the link has now.
    let accepted = json_of(
        app.accept(&text(&link, "/code"), &As::AdminFor("zed".into()))
            .await,
    )
    .await;
    assert_eq!(accepted["role"], "commenter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_kills_every_older_code() {
    let app = space().await;
    let link = app
        .link("space/s", &alice(), json!({"role": "viewer"}))
        .await;
    let first = text(&link, "/code");
    let path = format!("/v1/resources/space/s/invite-links/{}/rotate", link["id"]);
    let rotated = json_of(app.post(&path, &alice(), json!({})).await).await;
    let second = text(&rotated, "/code");
    assert_ne!(first, second);
    assert_eq!(rotated["id"], link["id"]);
    assert_eq!(
        rotated["url"],
        format!("https://roster.example/invite/{second}")
    );
    let third = text(
        &json_of(app.post(&path, &alice(), json!({})).await).await,
        "/code",
    );
    // Both older generations answer as revoked; the newest works.
    for old in [&first, &second] {
        assert_problem(
            app.accept(old, &As::AdminFor("zed".into())).await,
            410,
            "invitation_revoked",
        )
        .await;
        let preview = json_of(
            app.post(
                "/v1/invitations/preview",
                &As::Admin,
                json!({ "code": old }),
            )
            .await,
        )
        .await;
        assert_eq!(preview["status"], "revoked");
    }
    assert_eq!(
        app.accept(&third, &As::AdminFor("zed".into()))
            .await
            .status(),
        StatusCode::OK
    );
    // The list shows the newest code.
    assert_eq!(
        app.read("/v1/resources/space/s/invite-links").await["items"][0]["code"],
        third.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_opens_nothing_and_stays_revoked() {
    let app = space().await;
    let link = app.link("space/s", &alice(), json!({})).await;
    let path = format!("/v1/resources/space/s/invite-links/{}", link["id"]);
    assert_eq!(
        app.delete(&path, &alice()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.accept(&text(&link, "/code"), &As::AdminFor("zed".into()))
            .await,
        410,
        "invitation_revoked",
    )
    .await;
    assert_eq!(
        app.read("/v1/resources/space/s/invite-links").await["items"][0]["status"],
        "revoked"
    );
    // Revoking again is a no-op; changing or rotating a revoked link is refused.
    let head = app.head().await;
    assert_eq!(
        app.delete(&path, &alice()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.head().await, head);
    assert_problem(
        app.patch(&path, &alice(), json!({"max_uses": 9})).await,
        410,
        "invitation_revoked",
    )
    .await;
    assert_problem(
        app.post(&format!("{path}/rotate"), &alice(), json!({}))
            .await,
        410,
        "invitation_revoked",
    )
    .await;
    assert_eq!(app.members("space/s").await.len(), 3, "nobody joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_manage_a_link() {
    let app = space().await;
    let erin = As::AdminFor("erin".into());
    let erins = app.link("space/s", &erin, json!({"role": "editor"})).await;
    let alices = app
        .link("space/s", &alice(), json!({"role": "viewer"}))
        .await;
    let path = |link: &Value| format!("/v1/resources/space/s/invite-links/{}", link["id"]);
    // erin (invite) manages her own link but not alice's.
    assert_eq!(
        app.patch(&path(&erins), &erin, json!({"max_uses": 4}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.post(&format!("{}/rotate", path(&erins)), &erin, json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_problem(
        app.patch(&path(&alices), &erin, json!({"max_uses": 4}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post(&format!("{}/rotate", path(&alices)), &erin, json!({}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(app.delete(&path(&alices), &erin).await, 403, "forbidden").await;
    // Nor may she raise her own link above her role.
    assert_problem(
        app.patch(&path(&erins), &erin, json!({"role": "creator"}))
            .await,
        403,
        "role_not_grantable",
    )
    .await;
    // bob (viewer) may do nothing with links but see them; alice (manage_invitations) may do all.
    let bob = As::AdminFor("bob".into());
    assert_problem(
        app.patch(&path(&erins), &bob, json!({"max_uses": 9})).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post("/v1/resources/space/s/invite-links", &bob, json!({}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.delete(&path(&erins), &alice()).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_link_requests_are_clear_4xx() {
    let app = space().await;
    let link = app.link("space/s", &alice(), json!({})).await;
    app.register("space/other", "alice").await;
    let create = "/v1/resources/space/s/invite-links";
    let cases: [(&str, &str, Value, u16, &str); 13] = [
        (
            "POST",
            create,
            json!({"role": "janitor"}),
            400,
            "unknown_role",
        ),
        (
            "POST",
            create,
            json!({"role": "not a role"}),
            400,
            "unknown_role",
        ),
        (
            "POST",
            create,
            json!({"max_uses": 0}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            create,
            json!({"max_uses": -1}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            create,
            json!({"max_uses": "3"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            create,
            json!({"expires_at": "tomorrow"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            create,
            json!({"expires_at": "2020-01-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        (
            "POST",
            create,
            json!({"expires_at": "2999-13-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        ("POST", create, json!({"uses": 1}), 400, "invalid_request"),
        (
            "PATCH",
            "/v1/resources/space/s/invite-links/abc",
            json!({}),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            "/v1/resources/space/s/invite-links/0",
            json!({}),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            "/v1/resources/space/s/invite-links/999999",
            json!({}),
            404,
            "not_found",
        ),
        (
            "PATCH",
            "/v1/resources/space/s/invite-links/18446744073709551616",
            json!({}),
            400,
            "invalid_request",
        ),
    ];
    for (name, path, body, status, code) in cases {
        assert_problem(
            app.send(method(name), path, &alice(), Some(body)).await,
            status,
            code,
        )
        .await;
    }
    let id = &link["id"];
    // A link of one resource is not found under another.
    assert_problem(
        app.patch(
            &format!("/v1/resources/space/other/invite-links/{id}"),
            &alice(),
            json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.post(
            &format!("/v1/resources/space/other/invite-links/{id}/rotate"),
            &alice(),
            json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete(
            &format!("/v1/resources/space/other/invite-links/{id}"),
            &alice(),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // A change to the past or to an unknown role is refused.
    let path = format!("/v1/resources/space/s/invite-links/{id}");
    assert_problem(
        app.patch(
            &path,
            &alice(),
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.patch(&path, &alice(), json!({"role": "janitor"})).await,
        400,
        "unknown_role",
    )
    .await;
    assert_problem(
        app.patch(&path, &alice(), json!({"max_uses": 0})).await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(
        app.read("/v1/resources/space/s/invite-links").await["items"][0],
        link,
        "nothing changed"
    );
}
