//! Who may call what: no key, a bad or revoked key, scopes, privileges on the resource, user
//! keys that speak only for themselves, service keys and the admin acting for a principal, and
//! HTTP Basic with the key as the password.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// `space/s` owned by alice, with bob a viewer and erin an editor.
async fn space_with_members() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    app.grant("space/s", &[("bob", "viewer"), ("erin", "editor")])
        .await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_refuses_a_request_without_a_key() {
    let app = space_with_members().await;
    let mut checked = 0;
    for (name, template) in ROUTES.iter().filter(|(_, t)| t.starts_with("/v1/")) {
        let body = matches!(*name, "POST" | "PUT" | "PATCH").then(|| json!({}));
        let response = app
            .send(method(name), &concrete(template), &As::Nobody, body)
            .await;
        let problem = assert_problem(response, 401, "unauthenticated").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("Bearer")),
            "{name} {template}: {problem}"
        );
        checked += 1;
    }
    assert_eq!(checked, 32);
    // The routes outside /v1 are public.
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        assert_eq!(
            app.get(path, &As::Nobody).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_scheme_is_401() {
    let app = space_with_members().await;
    let key = app.key("alice", &["read"], false, None).await;
    let cases = [
        "Bearer nope".to_string(),
        "Bearer ".to_string(),
        "Bearer".to_string(),
        format!("Bearer {key}x"),
        format!("Bearer rk_{}", "0".repeat(64)),
        format!("Token {key}"),
        format!("bearer  {ADMIN_TOKEN}-"),
        "Basic !!!not base64".to_string(),
        // `alice:wrong` in base64.
        "Basic YWxpY2U6d3Jvbmc=".to_string(),
    ];
    for header in cases {
        let response = app
            .get("/v1/resources/space/s/members", &As::Raw(header.clone()))
            .await;
        assert_problem(response, 401, "unauthenticated").await;
    }
    // The scheme is case-insensitive, like HTTP's.
    let response = app
        .get(
            "/v1/resources/space/s/members",
            &As::Raw(format!("bearer {key}")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_401_from_then_on() {
    let app = space_with_members().await;
    let (id, key) = app
        .key_with_id("alice", &["read", "write"], false, None)
        .await;
    assert_eq!(
        app.get("/v1/resources/space/s", &As::Key(key.clone()))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{id}"), &As::Admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.get("/v1/resources/space/s", &As::Key(key.clone()))
            .await,
        401,
        "unauthenticated",
    )
    .await;
    let command = app
        .post(
            "/v1/resources/space/s/invite-links",
            &As::Key(key),
            json!({"role": "viewer"}),
        )
        .await;
    assert_problem(command, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_opens_its_routes_and_no_other() {
    let app = space_with_members().await;
    // alice owns the space, so only the scope can refuse her.
    let read = As::Key(app.key("alice", &["read"], false, None).await);
    let write = As::Key(app.key("alice", &["write"], false, None).await);
    let audit = As::Key(app.key("alice", &["audit"], false, None).await);
    let admin = As::Key(app.key("alice", &["admin"], false, None).await);
    let link = json!({"role": "viewer"});
    let schema = json!({"roles": [{"name": "lead", "privileges": ["view_members"]}], "default_role": "lead"});
    let cases: [(&As, &str, &str, Option<serde_json::Value>, u16); 16] = [
        (&read, "GET", "/v1/resources/space/s/members", None, 200),
        (
            &read,
            "POST",
            "/v1/resources/space/s/invite-links",
            Some(link.clone()),
            403,
        ),
        (
            &read,
            "POST",
            "/v1/invitations/preview",
            Some(json!({"code": "x"})),
            404,
        ),
        (&read, "GET", "/v1/events", None, 403),
        (&read, "GET", "/v1/api-keys", None, 403),
        (&write, "GET", "/v1/resources/space/s/members", None, 403),
        (
            &write,
            "POST",
            "/v1/resources/space/s/invite-links",
            Some(link.clone()),
            201,
        ),
        (
            &write,
            "POST",
            "/v1/invitations/preview",
            Some(json!({"code": "x"})),
            403,
        ),
        (
            &write,
            "PUT",
            "/v1/role-schemas/board",
            Some(schema.clone()),
            403,
        ),
        (&audit, "GET", "/v1/events", None, 200),
        (
            &audit,
            "POST",
            "/v1/resources/space/s/invite-links",
            Some(link.clone()),
            403,
        ),
        (&audit, "GET", "/v1/api-keys", None, 403),
        // `admin` holds every other scope.
        (&admin, "GET", "/v1/api-keys", None, 200),
        (&admin, "PUT", "/v1/role-schemas/board", Some(schema), 200),
        (&admin, "GET", "/v1/events", None, 200),
        (
            &admin,
            "POST",
            "/v1/resources/space/s/invite-links",
            Some(link),
            201,
        ),
    ];
    for (who, name, path, body, status) in cases {
        let response = app.send(method(name), path, who, body).await;
        if status == 403 {
            let problem = assert_problem(response, 403, "forbidden").await;
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("scope")),
                "{name} {path}: {problem}"
            );
        } else {
            assert_eq!(response.status().as_u16(), status, "{name} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_the_privilege_is_403() {
    let app = space_with_members().await;
    let bob = As::Key(app.key("bob", &["read", "write"], false, None).await);
    let carol = As::Key(app.key("carol", &["read", "write"], false, None).await);
    // A viewer sees the members but may not invite, manage or read the history.
    assert_eq!(
        app.get("/v1/resources/space/s/members", &bob)
            .await
            .status(),
        StatusCode::OK
    );
    for (name, path, body) in [
        (
            "POST",
            "/v1/resources/space/s/invite-links",
            Some(json!({"role": "viewer"})),
        ),
        (
            "POST",
            "/v1/resources/space/s/invitations",
            Some(json!({"emails": ["x@example.com"]})),
        ),
        (
            "PUT",
            "/v1/resources/space/s/members/zed",
            Some(json!({"role": "viewer"})),
        ),
        ("DELETE", "/v1/resources/space/s/members/erin", None),
        ("GET", "/v1/resources/space/s/history", None),
        ("GET", "/v1/resources/space/s/members?at_position=1", None),
    ] {
        assert_problem(
            app.send(method(name), path, &bob, body).await,
            403,
            "forbidden",
        )
        .await;
    }
    // Somebody who is not a member sees nothing of the resource.
    for path in [
        "/v1/resources/space/s",
        "/v1/resources/space/s/members",
        "/v1/resources/space/s/invite-links",
        "/v1/resources/space/s/invitations",
    ] {
        assert_problem(app.get(path, &carol).await, 403, "forbidden").await;
    }
    assert_problem(
        app.post("/v1/resources/space/s/invite-links", &carol, json!({}))
            .await,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_key_speaks_only_for_its_own_principal() {
    let app = space_with_members().await;
    let key = app
        .key("bob", &["read", "write"], false, Some("bob@example.com"))
        .await;
    let bob = As::Key(key.clone());
    // Naming another actor is refused; naming itself is allowed.
    let as_alice = As::KeyFor(key.clone(), "alice".into(), None);
    let refused = app
        .post(
            "/v1/resources/space/s/invite-links",
            &as_alice,
            json!({"role": "viewer"}),
        )
        .await;
    let problem = assert_problem(refused, 403, "forbidden").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("X-Roster-Actor") || d.contains("x-roster-actor")),
        "{problem}"
    );
    assert_eq!(
        app.get(
            "/v1/resources/space/s/members",
            &As::KeyFor(key.clone(), "bob".into(), None)
        )
        .await
        .status(),
        StatusCode::OK
    );
    // It registers resources only for itself.
    assert_problem(
        app.post(
            "/v1/resources",
            &bob,
            json!({"resource": "space/b", "owner": "alice"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.post(
            "/v1/resources",
            &bob,
            json!({"resource": "space/b", "owner": "bob"})
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    // It reads only its own memberships, history, checks and pending invitations.
    for (path, own) in [
        (
            "/v1/principals/alice/memberships",
            "/v1/principals/bob/memberships",
        ),
        ("/v1/principals/alice/history", "/v1/principals/bob/history"),
        (
            "/v1/check?principal=alice&resource=space/s&privilege=invite",
            "/v1/check?principal=bob&resource=space/s&privilege=invite",
        ),
        (
            "/v1/invitations?email=alice@example.com",
            "/v1/invitations?email=bob@example.com",
        ),
    ] {
        assert_problem(app.get(path, &bob).await, 403, "forbidden").await;
        assert_eq!(app.get(own, &bob).await.status(), StatusCode::OK, "{own}");
    }
    let memberships = json_of(app.get("/v1/principals/bob/memberships", &bob).await).await;
    let resources: Vec<&str> = memberships["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["resource"].as_str().expect("resource"))
        .collect();
    assert_eq!(resources, ["space/b", "space/s"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_key_acts_for_the_principal_it_names() {
    let app = space_with_members().await;
    let service = app.key("host-app", &["read", "write"], true, None).await;
    let for_alice = As::KeyFor(service.clone(), "alice".into(), None);
    // Domain rules apply to the named principal: alice may invite, carol (no member) may not.
    let link = app
        .link("space/s", &for_alice, json!({"role": "editor"}))
        .await;
    assert_eq!(link["created_by"], "alice");
    let for_carol = As::KeyFor(service.clone(), "carol".into(), None);
    assert_problem(
        app.post("/v1/resources/space/s/invite-links", &for_carol, json!({}))
            .await,
        403,
        "forbidden",
    )
    .await;
    // Without X-Roster-Actor the key acts as its own principal, who is no member.
    assert_problem(
        app.get("/v1/resources/space/s/members", &As::Key(service.clone()))
            .await,
        403,
        "forbidden",
    )
    .await;
    // It may read anyone's memberships and pending invitations.
    assert_eq!(
        app.get("/v1/principals/bob/memberships", &As::Key(service.clone()))
            .await
            .status(),
        StatusCode::OK
    );
    let invitation = app
        .invite_one("space/s", &for_alice, "dana@example.com", Some("commenter"))
        .await;
    let pending = json_of(
        app.get(
            "/v1/invitations?email=dana@example.com",
            &As::Key(service.clone()),
        )
        .await,
    )
    .await;
    assert_eq!(pending["items"][0]["id"], invitation["id"]);
    // Accepting an email invitation needs the acting principal's verified email.
    let code = text(&invitation, "/code");
    let without = As::KeyFor(service.clone(), "dana".into(), None);
    assert_problem(
        app.accept(&code, &without).await,
        403,
        "invitation_email_mismatch",
    )
    .await;
    let wrong = As::KeyFor(
        service.clone(),
        "dana".into(),
        Some("dana@elsewhere.example".into()),
    );
    assert_problem(
        app.accept(&code, &wrong).await,
        403,
        "invitation_email_mismatch",
    )
    .await;
    // The match is trimmed and case-insensitive.
    let right = As::KeyFor(service, "dana".into(), Some("  Dana@Example.COM ".into()));
    let accepted = json_of(app.accept(&code, &right).await).await;
    assert_eq!(
        accepted,
        json!({"resource": "space/s", "principal": "dana", "role": "commenter", "changed": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_keys_email_is_its_verified_email() {
    let app = space_with_members().await;
    let invitation = app
        .invite_one(
            "space/s",
            &As::AdminFor("alice".into()),
            "gus@example.com",
            None,
        )
        .await;
    let code = text(&invitation, "/code");
    // A key without an email cannot accept; one issued with the right email can, without headers.
    let no_email = As::Key(app.key("gus", &["write"], false, None).await);
    assert_problem(
        app.accept(&code, &no_email).await,
        403,
        "invitation_email_mismatch",
    )
    .await;
    let with_email = As::Key(
        app.key("gus", &["write"], false, Some("gus@example.com"))
            .await,
    );
    let accepted = json_of(app.accept(&code, &with_email).await).await;
    assert_eq!(accepted["principal"], "gus");
    assert_eq!(accepted["role"], "viewer", "the kind's default role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_takes_the_key_as_the_password() {
    let app = space_with_members().await;
    let key = app.key("alice", &["read"], false, None).await;
    let url = app.url("/v1/resources/space/s/members");
    for (user, password) in [
        ("alice", key.as_str()),
        ("", key.as_str()),
        ("anything", ADMIN_TOKEN),
    ] {
        let response = app
            .client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "user {user:?}");
    }
    let wrong = app
        .client
        .get(&url)
        .basic_auth("alice", Some("rk_wrong"))
        .send()
        .await
        .expect("sent");
    assert_problem(wrong, 401, "unauthenticated").await;
    let no_password = app
        .client
        .get(&url)
        .basic_auth(&key, None::<&str>)
        .send()
        .await
        .expect("sent");
    assert_problem(no_password, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_stands_outside_the_rolemap_unless_it_names_an_actor() {
    let app = space_with_members().await;
    // Without an actor: any role, any member, links with no creator (rule 8) ...
    let link = app
        .link("space/s", &As::Admin, json!({"role": "owner"}))
        .await;
    assert_eq!(link["created_by"], serde_json::Value::Null);
    let promoted = app
        .put(
            "/v1/resources/space/s/members/bob",
            &As::Admin,
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(
        json_of(promoted).await["granted_by"],
        serde_json::Value::Null
    );
    // ... but bound by the invariants: the last owner stays.
    assert_eq!(
        app.delete("/v1/resources/space/s/members/bob", &As::Admin)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        app.delete("/v1/resources/space/s/members/alice", &As::Admin)
            .await,
        409,
        "last_owner",
    )
    .await;
    // Accepting needs somebody to accept.
    assert_problem(
        app.accept(&text(&link, "/code"), &As::Admin).await,
        400,
        "invalid_request",
    )
    .await;
    // With an actor, the domain rules are that principal's: erin (editor) may not grant owner.
    let erin = As::AdminFor("erin".into());
    assert_problem(
        app.post(
            "/v1/resources/space/s/invite-links",
            &erin,
            json!({"role": "owner"}),
        )
        .await,
        403,
        "role_not_grantable",
    )
    .await;
    assert_problem(
        app.put(
            "/v1/resources/space/s/members/zed",
            &erin,
            json!({"role": "viewer"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    let own = app.link("space/s", &erin, json!({"role": "editor"})).await;
    assert_eq!(own["created_by"], "erin");
    // The admin key speaks for anyone, like a service key.
    assert_eq!(
        app.get("/v1/principals/bob/memberships", &As::Admin)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_actor_header_is_400() {
    let app = space_with_members().await;
    let service = app.key("host-app", &["read", "write"], true, None).await;
    for who in [
        As::KeyFor(service.clone(), "has space".into(), None),
        As::KeyFor(service.clone(), "a/b".into(), None),
        As::KeyFor(service.clone(), "x".repeat(129), None),
        As::KeyFor(service.clone(), "dana".into(), Some("not-an-email".into())),
        As::AdminFor("".into()),
    ] {
        let response = app.get("/v1/resources/space/s/members", &who).await;
        let problem = assert_problem(response, 400, "invalid_request").await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("x-roster-actor")),
            "{who:?}: {problem}"
        );
    }
}
