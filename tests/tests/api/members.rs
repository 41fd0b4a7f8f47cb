//! Members: direct grants, role changes, removal and leaving under rules 1 to 3, pagination,
//! the rolemap as of a past time or position, memberships and the privilege check.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn space() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    app
}

fn who(principal: &str) -> As {
    As::AdminFor(principal.into())
}

/// A refused member command: method, principal, role, actor, status and code.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a As, u16, &'a str);

async fn set(app: &TestApp, principal: &str, role: &str, actor: &As) -> reqwest::Response {
    app.put(
        &format!("/v1/resources/space/s/members/{principal}"),
        actor,
        json!({ "role": role }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_changed_and_removed() {
    let app = space().await;
    let response = set(&app, "bob", "Editor", &who("alice")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bob = json_of(response).await;
    assert_eq!(
        (
            bob["principal"].clone(),
            bob["role"].clone(),
            bob["granted_by"].clone()
        ),
        (json!("bob"), json!("editor"), json!("alice"))
    );
    assert!(bob["since"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        json_of(set(&app, "bob", "commenter", &who("alice")).await).await["role"],
        "commenter"
    );
    // Setting the role a member has appends nothing.
    let head = app.head().await;
    assert_eq!(
        set(&app, "bob", "commenter", &who("alice")).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.head().await, head);
    assert_eq!(
        app.members("space/s").await,
        pairs(&[("alice", "owner"), ("bob", "commenter")])
    );
    assert_eq!(
        app.delete("/v1/resources/space/s/members/bob", &who("alice"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.members("space/s").await, pairs(&[("alice", "owner")]));
    // Removing somebody who is not a member.
    assert_problem(
        app.delete("/v1/resources/space/s/members/bob", &who("alice"))
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_on_granting_changing_and_removing() {
    let app = space().await;
    for (principal, role) in [
        ("cid", "creator"),
        ("cat", "creator"),
        ("ed", "editor"),
        ("vi", "viewer"),
    ] {
        set(&app, principal, role, &As::Admin).await;
    }
    let cid = who("cid");
    // (method, principal, role, actor, status, code)
    let cases: [Case<'_>; 9] = [
        // Rule 1: a creator grants up to creator, never owner.
        ("PUT", "zed", Some("owner"), &cid, 403, "role_not_grantable"),
        ("PUT", "vi", Some("owner"), &cid, 403, "role_not_grantable"),
        // Rule 2: nor touches the owner.
        ("PUT", "alice", Some("viewer"), &cid, 403, "forbidden"),
        ("DELETE", "alice", None, &cid, 403, "forbidden"),
        // An editor lacks manage_members altogether.
        ("PUT", "vi", Some("commenter"), &who("ed"), 403, "forbidden"),
        ("DELETE", "vi", None, &who("ed"), 403, "forbidden"),
        // Roles the schema does not have.
        ("PUT", "vi", Some("janitor"), &cid, 400, "unknown_role"),
        ("PUT", "vi", Some(""), &cid, 400, "unknown_role"),
        // A principal that is not one.
        ("PUT", "a%20b", Some("viewer"), &cid, 400, "invalid_request"),
    ];
    for (name, principal, role, actor, status, code) in cases {
        let path = format!("/v1/resources/space/s/members/{principal}");
        let body = role.map(|r| json!({ "role": r }));
        assert_problem(
            app.send(method(name), &path, actor, body).await,
            status,
            code,
        )
        .await;
    }
    // Within the rules: a creator adds, changes and removes at or below itself, peers included.
    assert_eq!(
        set(&app, "zed", "creator", &cid).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        set(&app, "vi", "editor", &cid).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete("/v1/resources/space/s/members/cat", &cid)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // Anyone may leave.
    assert_eq!(
        app.delete("/v1/resources/space/s/members/vi", &who("vi"))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.members("space/s").await,
        pairs(&[
            ("alice", "owner"),
            ("cid", "creator"),
            ("ed", "editor"),
            ("zed", "creator")
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_owner_stays() {
    let app = space().await;
    let alice = who("alice");
    // Demoting, removing, or leaving as the only owner is refused, even for the admin.
    assert_problem(
        set(&app, "alice", "viewer", &alice).await,
        409,
        "last_owner",
    )
    .await;
    assert_problem(
        set(&app, "alice", "creator", &As::Admin).await,
        409,
        "last_owner",
    )
    .await;
    assert_problem(
        app.delete("/v1/resources/space/s/members/alice", &alice)
            .await,
        409,
        "last_owner",
    )
    .await;
    assert_problem(
        app.delete("/v1/resources/space/s/members/alice", &As::Admin)
            .await,
        409,
        "last_owner",
    )
    .await;
    // With a second owner, the first may step down.
    assert_eq!(
        set(&app, "bob", "owner", &alice).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete("/v1/resources/space/s/members/alice", &alice)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        set(&app, "bob", "editor", &who("bob")).await,
        409,
        "last_owner",
    )
    .await;
    assert_eq!(app.members("space/s").await, pairs(&[("bob", "owner")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_paged_by_principal() {
    let app = space().await;
    for i in 0..7 {
        set(&app, &format!("m{i}"), "viewer", &As::Admin).await;
    }
    // alice, m0 .. m6: eight members in principal order, three a page.
    let mut seen = Vec::new();
    let mut path = "/v1/resources/space/s/members?limit=3".to_string();
    let mut pages = 0;
    loop {
        let page = app.read(&path).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|m| text(m, "/principal")));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    next,
                    seen.last().expect("a member").as_str(),
                    "next is the page's last principal"
                );
                path = format!("/v1/resources/space/s/members?limit=3&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["alice", "m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    // A full last page has no next; after the last principal the page is empty.
    assert_eq!(
        app.read("/v1/resources/space/s/members?limit=8").await["next"],
        Value::Null
    );
    assert_eq!(
        app.read("/v1/resources/space/s/members?after=m6").await["items"],
        json!([])
    );
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=x",
        "limit=99999999999999999999999",
    ] {
        assert_problem(
            app.get(&format!("/v1/resources/space/s/members?{bad}"), &As::Admin)
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolemap_as_of_a_past_time_or_position() {
    let app = space().await;
    let registered_at = text(&app.read("/v1/resources/space/s").await, "/registered_at");
    let before_bob = app.head().await;
    assert_eq!(
        set(&app, "bob", "editor", &As::Admin).await.status(),
        StatusCode::OK
    );
    let before_change = app.head().await;
    set(&app, "bob", "viewer", &As::Admin).await;
    app.delete("/v1/resources/space/s/members/bob", &As::Admin)
        .await;

    let at = |query: String| {
        let app = &app;
        async move {
            let page = app
                .read(&format!("/v1/resources/space/s/members?{query}"))
                .await;
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| (text(m, "/principal"), text(m, "/role")))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        at(format!("at_position={before_bob}")).await,
        pairs(&[("alice", "owner")])
    );
    assert_eq!(
        at(format!("at_position={before_change}")).await,
        pairs(&[("alice", "owner"), ("bob", "editor")])
    );
    assert_eq!(
        at(format!("at_position={}", before_change + 1)).await,
        pairs(&[("alice", "owner"), ("bob", "viewer")])
    );
    assert_eq!(at(String::new()).await, pairs(&[("alice", "owner")]));
    assert_eq!(
        at("at_position=0".into()).await,
        Vec::<(String, String)>::new(),
        "before anything, nobody"
    );
    // By time (exact instants are tested on a log written with a manual clock, in `past`):
    // before registration nobody, at registration alice; the future has no rolemap yet.
    assert_eq!(
        at("as_of=2000-01-01T00:00:00Z".into()).await,
        Vec::<(String, String)>::new()
    );
    assert!(at(format!("as_of={registered_at}"))
        .await
        .contains(&("alice".to_string(), "owner".to_string())));
    let future = app
        .get(
            "/v1/resources/space/s/members?as_of=2999-01-01T00:00:00Z",
            &As::Admin,
        )
        .await;
    assert_problem(future, 400, "invalid_request").await;
    // Paging works in the past too.
    let page = app
        .read(&format!(
            "/v1/resources/space/s/members?at_position={before_change}&limit=1"
        ))
        .await;
    assert_eq!(page["next"], "alice");
    let rest = app
        .read(&format!(
            "/v1/resources/space/s/members?at_position={before_change}&limit=1&after=alice"
        ))
        .await;
    assert_eq!(
        (rest["items"][0]["principal"].clone(), rest["next"].clone()),
        (json!("bob"), Value::Null)
    );
    // Bad times and positions are 400; both at once too.
    for bad in [
        "as_of=yesterday",
        "as_of=2024-01-01",
        "at_position=-1",
        "at_position=x",
        "as_of=2024-01-01T00:00:00Z&at_position=1",
    ] {
        assert_problem(
            app.get(&format!("/v1/resources/space/s/members?{bad}"), &As::Admin)
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_memberships_and_the_privilege_check() {
    let app = space().await;
    app.register("team/17", "carol").await;
    set(&app, "bob", "editor", &As::Admin).await;
    app.put(
        "/v1/resources/team/17/members/bob",
        &As::Admin,
        json!({"role": "admin"}),
    )
    .await;
    let memberships = app.read("/v1/principals/bob/memberships").await;
    let rows: Vec<(String, String)> = memberships["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| (text(m, "/resource"), text(m, "/role")))
        .collect();
    assert_eq!(rows, pairs(&[("space/s", "editor"), ("team/17", "admin")]));
    assert_eq!(
        app.read("/v1/principals/nobody/memberships").await["items"],
        json!([])
    );
    assert_problem(
        app.get("/v1/principals/a%20b/memberships", &As::Admin)
            .await,
        400,
        "invalid_request",
    )
    .await;

    let app = &app;
    let check = |query: &str| {
        let path = format!("/v1/check?{query}");
        async move { app.get(&path, &As::Admin).await }
    };
    let cases = [
        (
            "principal=bob&resource=space/s&privilege=invite",
            json!({"allowed": true, "role": "editor"}),
        ),
        (
            "principal=bob&resource=space/s&privilege=manage_members",
            json!({"allowed": false, "role": "editor"}),
        ),
        (
            "principal=bob&resource=team/17&privilege=manage_members",
            json!({"allowed": true, "role": "admin"}),
        ),
        (
            "principal=zed&resource=space/s&privilege=view_members",
            json!({"allowed": false, "role": null}),
        ),
        (
            "principal=bob&resource=space/unknown&privilege=view_members",
            json!({"allowed": false, "role": null}),
        ),
    ];
    for (query, expected) in cases {
        assert_eq!(json_of(check(query).await).await, expected, "{query}");
    }
    for bad in [
        "principal=bob&resource=space/s",
        "principal=bob&resource=space/s&privilege=fly",
        "principal=bob&resource=nope&privilege=invite",
        "principal=a%20b&resource=space/s&privilege=invite",
    ] {
        assert_problem(check(bad).await, 400, "invalid_request").await;
    }
}
