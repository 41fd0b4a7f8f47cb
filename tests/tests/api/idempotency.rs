//! `Idempotency-Key` on POST routes: the same key with the same body returns the first
//! response and appends nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// POSTs `body` to `path` as `who` with an `Idempotency-Key`.
async fn post_once(
    app: &TestApp,
    path: &str,
    who: &As,
    key: &str,
    body: &Value,
) -> (u16, u64, Value) {
    let token = match who {
        As::Admin | As::AdminFor(_) => ADMIN_TOKEN.to_string(),
        As::Key(key) => key.clone(),
        other => panic!("not used here: {other:?}"),
    };
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body);
    if let As::AdminFor(principal) = who {
        request = request.header("X-Roster-Actor", principal);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let at = position(&response);
    (status, at, json_of(response).await)
}

async fn event_count(app: &TestApp) -> usize {
    app.read("/v1/events?limit=1000").await["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_command_returns_the_first_response_and_appends_nothing() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let alice = As::AdminFor("alice".into());
    let link = app.link("space/s", &alice, json!({"role": "viewer"})).await;
    let invitation = app
        .invite_one("space/s", &alice, "inv@example.com", None)
        .await;
    let rotate = format!("/v1/resources/space/s/invite-links/{}/rotate", link["id"]);
    let resend = format!(
        "/v1/resources/space/s/invitations/{}/resend",
        invitation["id"]
    );
    let cases: [(&str, As, Value); 5] = [
        (
            "/v1/resources",
            As::Admin,
            json!({"resource": "space/t", "owner": "bob"}),
        ),
        (
            "/v1/resources/space/s/invite-links",
            alice.clone(),
            json!({"role": "editor", "max_uses": 2}),
        ),
        (
            "/v1/resources/space/s/invitations",
            alice.clone(),
            json!({"emails": ["a@example.com", "b@example.com"]}),
        ),
        (rotate.as_str(), alice.clone(), json!({})),
        (resend.as_str(), alice.clone(), json!({})),
    ];
    for (path, who, body) in cases {
        let (status, at, first) = post_once(&app, path, &who, "key-1", &body).await;
        assert!(status == 200 || status == 201, "{path}: {status} {first}");
        let events = event_count(&app).await;
        let (again_status, again_at, again) = post_once(&app, path, &who, "key-1", &body).await;
        assert_eq!(
            (again_status, &again),
            (status, &first),
            "{path}: the first response again"
        );
        assert_eq!(again_at, at, "{path}: the same position");
        assert_eq!(event_count(&app).await, events, "{path}: nothing appended");
        // Another key is another command, decided afresh.
        let (other_status, other_at, other) = post_once(&app, path, &who, "key-2", &body).await;
        assert_ne!(other, first, "{path}");
        match path {
            "/v1/resources" => assert_eq!(
                (other_status, other["code"].clone()),
                (409, json!("already_exists"))
            ),
            "/v1/resources/space/s/invitations" => assert_eq!(
                (other_status, other["code"].clone()),
                (422, json!("invalid_email"))
            ),
            _ => assert!(other_at > at, "{path}: a new command appends"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_accept_answers_as_the_first_did() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let link = app
        .link(
            "space/s",
            &As::AdminFor("alice".into()),
            json!({"role": "editor", "max_uses": 1}),
        )
        .await;
    let body = json!({"code": link["code"]});
    let bob = As::AdminFor("bob".into());
    let (status, _, first) =
        post_once(&app, "/v1/invitations/accept", &bob, "accept-1", &body).await;
    assert_eq!((status, first["changed"].clone()), (200, json!(true)));
    let events = event_count(&app).await;
    let (status, _, again) =
        post_once(&app, "/v1/invitations/accept", &bob, "accept-1", &body).await;
    assert_eq!(
        (status, &again),
        (200, &first),
        "the retry is told it joined, not that the link is spent"
    );
    assert_eq!(event_count(&app).await, events);
    // The same key from another actor is another command: the link is spent.
    let carol = As::AdminFor("carol".into());
    let (status, _, other) =
        post_once(&app, "/v1/invitations/accept", &carol, "accept-1", &body).await;
    assert_eq!(
        (status, other["code"].clone()),
        (410, json!("invitation_exhausted"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_invitation_batch_lists_every_address_as_the_first_did() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let alice = As::AdminFor("alice".into());
    // bob is a member whose email is known, dana is invited already.
    app.member_with_email("space/s", "bob", "bob@example.com", "viewer")
        .await;
    let dana = app
        .invite_one("space/s", &alice, "dana@example.com", None)
        .await;
    let path = "/v1/resources/space/s/invitations";
    let body = json!({"emails": ["carol@example.com", "bob@example.com", "dana@example.com", "not-an-email"]});
    let (status, _, first) = post_once(&app, path, &alice, "batch-1", &body).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["already_members"], json!(["bob@example.com"]));
    assert_eq!(
        first["already_invited"],
        json!([{"email": "dana@example.com", "invitation_id": dana["id"]}])
    );
    assert_eq!(first["email_errors"][0]["email"], "not-an-email");
    // What changed since must not show: carol is now invited and dana's invitation revoked,
    // so deciding the batch afresh would answer differently.
    let revoked = app.delete(&format!("{path}/{}", dana["id"]), &alice).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let events = event_count(&app).await;
    let (again_status, _, again) = post_once(&app, path, &alice, "batch-1", &body).await;
    assert_eq!(again_status, status);
    assert_eq!(again, first, "the first response, every list of it");
    assert_eq!(event_count(&app).await, events, "nothing appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_teable_email_invitation_answers_every_address_as_the_first_did() {
    let app = spawn_app().await;
    app.register("space/spc_seed", "alice").await;
    let alice = As::Key(app.key("alice", &["read", "write"], false, None).await);
    let dana = app
        .invite_one(
            "space/spc_seed",
            &As::AdminFor("alice".into()),
            "dana@example.com",
            None,
        )
        .await;
    let path = "/api/space/spc_seed/invitation/email";
    let body = json!({"emails": ["dana@example.com", "erin@example.com"], "role": "viewer"});
    let (status, _, first) = post_once(&app, path, &alice, "teable-1", &body).await;
    assert_eq!(status, 201, "{first}");
    // Teable answers an address invited already with its pending invitation.
    assert_eq!(
        first["dana@example.com"]["invitationId"],
        dana["id"].to_string()
    );
    let revoked = app
        .delete(
            &format!("/v1/resources/space/spc_seed/invitations/{}", dana["id"]),
            &As::AdminFor("alice".into()),
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let (again_status, _, again) = post_once(&app, path, &alice, "teable-1", &body).await;
    assert_eq!((again_status, &again), (status, &first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_not_remembered_and_a_bad_key_is_400() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let body = json!({"role": "owner"});
    let erin = As::AdminFor("erin".into());
    let (status, _, _) = post_once(
        &app,
        "/v1/resources/space/s/invite-links",
        &erin,
        "k",
        &body,
    )
    .await;
    assert_eq!(status, 403, "erin is no member yet");
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "owner"}),
    )
    .await;
    let (status, _, link) = post_once(
        &app,
        "/v1/resources/space/s/invite-links",
        &erin,
        "k",
        &body,
    )
    .await;
    assert_eq!(
        (status, link["role"].clone()),
        (201, json!("owner")),
        "the retry is decided afresh"
    );

    let too_long = "k".repeat(256);
    let response = app
        .client
        .post(app.url("/v1/resources"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", too_long)
        .json(&json!({"resource": "space/u", "owner": "a"}))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "invalid_request").await;
    let response = app
        .client
        .post(app.url("/v1/resources"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", "")
        .json(&json!({"resource": "space/u", "owner": "a"}))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "invalid_request").await;
    // Outside POST the header is ignored.
    let response = app
        .client
        .get(app.url("/v1/resources/space/s"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", "")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_rotation_or_resend_returns_the_code_it_made_not_a_later_one() {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let alice = As::AdminFor("alice".into());
    let link = app.link("space/s", &alice, json!({}));
    let rotate = format!(
        "/v1/resources/space/s/invite-links/{}/rotate",
        link.await["id"]
    );
    let invitation = app
        .invite_one("space/s", &alice, "inv@example.com", None)
        .await;
    let resend = format!(
        "/v1/resources/space/s/invitations/{}/resend",
        invitation["id"]
    );
    for path in [rotate, resend] {
        let (_, _, first) = post_once(&app, &path, &alice, "first", &json!({})).await;
        let (_, _, later) = post_once(&app, &path, &alice, "later", &json!({})).await;
        assert_ne!(first["code"], later["code"], "{path}");
        let (status, _, again) = post_once(&app, &path, &alice, "first", &json!({})).await;
        assert_eq!(
            (status, &again["code"]),
            (200, &first["code"]),
            "{path}: the first response's code"
        );
        // The replayed code is the first one, which the later rotation killed.
        let preview = json_of(
            app.post(
                "/v1/invitations/preview",
                &As::Admin,
                json!({"code": again["code"]}),
            )
            .await,
        )
        .await;
        assert_eq!(preview["status"], "revoked", "{path}");
    }
}
