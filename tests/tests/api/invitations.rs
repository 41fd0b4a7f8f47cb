//! Email invitations: per-email outcomes, listing by status, resend, revoke, and the pending
//! invitations of an email.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

async fn space() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    app
}

fn alice() -> As {
    As::AdminFor("alice".into())
}

fn emails(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|i| {
            i["email"]
                .as_str()
                .or(i.as_str())
                .expect("an email")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_email_gets_its_own_outcome() {
    let app = space().await;
    // bob is a member whose email is known (his key's), dana is invited already.
    app.member_with_email("space/s", "bob", "bob@example.com", "viewer")
        .await;
    let dana = app
        .invite_one("space/s", &alice(), "dana@example.com", None)
        .await;

    let response = app.post("/v1/resources/space/s/invitations", &alice(), json!({"emails": "Carol@Example.com, bob@example.com,dana@example.com , not-an-email, gus@example.com", "role": "editor", "message": "join us"})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let outcome = json_of(response).await;
    // Each as it was written; compared in normal form (DESIGN section 13).
    assert_eq!(
        emails(&outcome["invited"]),
        ["Carol@Example.com", "gus@example.com"]
    );
    assert_eq!(emails(&outcome["already_members"]), ["bob@example.com"]);
    assert_eq!(
        outcome["already_invited"],
        json!([{"email": "dana@example.com", "invitation_id": dana["id"]}])
    );
    assert_eq!(emails(&outcome["email_errors"]), ["not-an-email"]);
    assert!(outcome["email_errors"][0]["error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));

    let carol = &outcome["invited"][0]["invitation"];
    let code = text(carol, "/code");
    assert_eq!(code.len(), 43);
    assert_eq!(
        carol["url"],
        format!("https://roster.example/invite/{code}")
    );
    assert_eq!(carol["role"], "editor");
    assert_eq!(carol["status"], "pending");
    assert_eq!(carol["invited_by"], "alice");
    assert_eq!(carol["resource"], "space/s");
    assert_eq!(carol["accepted_by"], Value::Null);
    assert_eq!(carol["delivery"]["status"], "not_configured");
    // The default expiry is seven days after creation.
    let created = text(carol, "/created_at");
    let expires = text(carol, "/expires_at");
    assert_eq!(days_between(&created, &expires), 7);
}

/// Whole days between two RFC 3339 UTC times of the same time of day.
fn days_between(from: &str, to: &str) -> i64 {
    let day = |t: &str| -> (i64, String) {
        let (date, time) = t.split_once('T').expect("a time");
        let mut parts = date.split('-').map(|p| p.parse::<i64>().expect("a number"));
        let (y, m, d) = (
            parts.next().expect("year"),
            parts.next().expect("month"),
            parts.next().expect("day"),
        );
        // Days from civil (Howard Hinnant's algorithm), enough for a difference.
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        (
            era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy,
            time.to_string(),
        )
    };
    let ((a, at), (b, bt)) = (day(from), day(to));
    assert_eq!(at, bt, "the same time of day");
    b - a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_invites_nobody_is_422_and_says_why() {
    let app = space().await;
    app.invite_one("space/s", &alice(), "dana@example.com", None)
        .await;
    let head = app.head().await;
    let response = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({"emails": ["dana@example.com", "nope", "@x"]}),
        )
        .await;
    let problem = assert_problem(response, 422, "invalid_email").await;
    assert_eq!(
        problem["already_invited"][0]["email"], "dana@example.com",
        "{problem}"
    );
    assert_eq!(emails(&problem["email_errors"]), ["nope", "@x"]);
    assert_eq!(problem["already_members"], json!([]));
    assert_eq!(app.head().await, head, "nothing appended");
    // An empty list invites nobody either.
    assert_problem(
        app.post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({"emails": []}),
        )
        .await,
        422,
        "invalid_email",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({"emails": ""}),
        )
        .await,
        422,
        "invalid_email",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_invitation_requests_are_clear_4xx() {
    let app = space().await;
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "editor"}),
    )
    .await;
    app.put(
        "/v1/resources/space/s/members/bob",
        &As::Admin,
        json!({"role": "viewer"}),
    )
    .await;
    let create = "/v1/resources/space/s/invitations";
    let cases: [(As, Value, u16, &str); 10] = [
        (alice(), json!({"emails": 42}), 400, "invalid_request"),
        (alice(), json!({"emails": [1, 2]}), 400, "invalid_request"),
        (alice(), json!({"role": "viewer"}), 400, "invalid_request"),
        (
            alice(),
            json!({"emails": ["x@example.com"], "role": "janitor"}),
            400,
            "unknown_role",
        ),
        (
            alice(),
            json!({"emails": ["x@example.com"], "expires_at": "soon"}),
            400,
            "invalid_request",
        ),
        (
            alice(),
            json!({"emails": ["x@example.com"], "expires_at": "2001-01-01T00:00:00Z"}),
            400,
            "invalid_request",
        ),
        (
            alice(),
            json!({"emails": ["x@example.com"], "message": "m".repeat(2001)}),
            400,
            "invalid_request",
        ),
        (
            As::AdminFor("erin".into()),
            json!({"emails": ["x@example.com"], "role": "owner"}),
            403,
            "role_not_grantable",
        ),
        (
            As::AdminFor("bob".into()),
            json!({"emails": ["x@example.com"]}),
            403,
            "forbidden",
        ),
        (
            As::AdminFor("nobody".into()),
            json!({"emails": ["x@example.com"]}),
            403,
            "forbidden",
        ),
    ];
    for (who, body, status, code) in cases {
        assert_problem(app.post(create, &who, body).await, status, code).await;
    }
    assert_eq!(
        app.read(create).await["items"],
        json!([]),
        "nobody was invited"
    );
    // A bad status filter, a bad id, an id of another resource.
    assert_problem(
        app.get("/v1/resources/space/s/invitations?status=lost", &As::Admin)
            .await,
        400,
        "invalid_request",
    )
    .await;
    let x = app
        .invite_one("space/s", &alice(), "x@example.com", None)
        .await;
    app.register("space/other", "alice").await;
    assert_problem(
        app.post(
            "/v1/resources/space/s/invitations/nan/resend",
            &alice(),
            json!({}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.delete("/v1/resources/space/s/invitations/-3", &alice())
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.delete("/v1/resources/space/s/invitations/424242", &alice())
            .await,
        404,
        "not_found",
    )
    .await;
    assert_problem(
        app.delete(
            &format!("/v1/resources/space/other/invitations/{}", x["id"]),
            &alice(),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // A link's id is not an invitation's.
    let link = app.link("space/s", &alice(), json!({})).await;
    assert_problem(
        app.post(
            &format!("/v1/resources/space/s/invitations/{}/resend", link["id"]),
            &alice(),
            json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_listed_by_status() {
    let app = space().await;
    let outcome = app
        .invite(
            "space/s",
            &alice(),
            json!({"emails": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]}),
        )
        .await;
    let invitation = |i: usize| outcome["invited"][i]["invitation"].clone();
    let accept = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "pa".into(),
        Some("a@example.com".into()),
    );
    assert_eq!(
        app.accept(&text(&invitation(0), "/code"), &accept)
            .await
            .status(),
        StatusCode::OK
    );
    let decline = app
        .post(
            "/v1/invitations/decline",
            &As::AdminFor("pb".into()),
            json!({"code": text(&invitation(1), "/code")}),
        )
        .await;
    assert_eq!(decline.status(), StatusCode::OK);
    let revoked = app
        .delete(
            &format!("/v1/resources/space/s/invitations/{}", invitation(2)["id"]),
            &alice(),
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);

    let all = app.read("/v1/resources/space/s/invitations").await;
    let statuses: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["accepted", "declined", "revoked", "pending"]);
    assert!(
        all["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i.get("code").is_none()),
        "a list shows no code"
    );
    assert_eq!(all["items"][0]["accepted_by"], "pa");
    assert!(all["items"][0]["accepted_at"].as_str().is_some());
    for (status, email) in [
        ("accepted", "a@example.com"),
        ("declined", "b@example.com"),
        ("revoked", "c@example.com"),
        ("pending", "d@example.com"),
    ] {
        let listed = app
            .read(&format!(
                "/v1/resources/space/s/invitations?status={status}"
            ))
            .await;
        assert_eq!(emails(&listed["items"]), [email], "{status}");
    }
    assert_eq!(
        app.read("/v1/resources/space/s/invitations?status=expired")
            .await["items"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_rotates_the_code_and_moves_the_expiry() {
    let app = space().await;
    let first = app
        .invite_one("space/s", &alice(), "dana@example.com", Some("commenter"))
        .await;
    let path = format!("/v1/resources/space/s/invitations/{}/resend", first["id"]);
    let response = app.post(&path, &alice(), json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let resent = json_of(response).await;
    assert_eq!(resent["id"], first["id"]);
    assert_ne!(resent["code"], first["code"]);
    assert_eq!(
        resent["url"],
        format!("https://roster.example/invite/{}", text(&resent, "/code"))
    );
    assert!(
        text(&resent, "/expires_at") >= text(&first, "/expires_at"),
        "the expiry moves forward"
    );
    assert_eq!(resent["status"], "pending");
    // The older code is dead, and says so; the new one works.
    let dana = As::AdminFor("dana".into());
    let dana_with_email = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "dana".into(),
        Some("dana@example.com".into()),
    );
    assert_problem(
        app.accept(&text(&first, "/code"), &dana_with_email).await,
        410,
        "invitation_revoked",
    )
    .await;
    assert_eq!(
        json_of(app.accept(&text(&resent, "/code"), &dana_with_email).await).await["role"],
        "commenter"
    );
    // A used invitation is neither resent, revoked nor declined.
    assert_problem(
        app.post(&path, &alice(), json!({})).await,
        410,
        "invitation_used",
    )
    .await;
    assert_problem(
        app.delete(
            &format!("/v1/resources/space/s/invitations/{}", first["id"]),
            &alice(),
        )
        .await,
        410,
        "invitation_used",
    )
    .await;
    let declined = app
        .post(
            "/v1/invitations/decline",
            &dana,
            json!({"code": text(&resent, "/code")}),
        )
        .await;
    assert_problem(declined, 410, "invitation_used").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_or_revoked_invitation_cannot_be_resent() {
    let app = space().await;
    let declined = app
        .invite_one("space/s", &alice(), "d@example.com", None)
        .await;
    let decline = app
        .post(
            "/v1/invitations/decline",
            &As::AdminFor("anyone".into()),
            json!({"code": text(&declined, "/code")}),
        )
        .await;
    assert_eq!(
        json_of(decline).await,
        json!({"resource": "space/s", "declined": true})
    );
    let resend = format!(
        "/v1/resources/space/s/invitations/{}/resend",
        declined["id"]
    );
    assert_problem(
        app.post(&resend, &alice(), json!({})).await,
        410,
        "invitation_declined",
    )
    .await;
    assert_problem(
        app.delete(
            &format!("/v1/resources/space/s/invitations/{}", declined["id"]),
            &alice(),
        )
        .await,
        410,
        "invitation_declined",
    )
    .await;

    let revoked = app
        .invite_one("space/s", &alice(), "r@example.com", None)
        .await;
    let path = format!("/v1/resources/space/s/invitations/{}", revoked["id"]);
    assert_eq!(
        app.delete(&path, &alice()).await.status(),
        StatusCode::NO_CONTENT
    );
    let head = app.head().await;
    assert_eq!(
        app.delete(&path, &alice()).await.status(),
        StatusCode::NO_CONTENT,
        "revoking twice is a no-op"
    );
    assert_eq!(app.head().await, head);
    assert_problem(
        app.post(&format!("{path}/resend"), &alice(), json!({}))
            .await,
        410,
        "invitation_revoked",
    )
    .await;
    let with_email = As::AdminFor("rita".into());
    assert_problem(
        app.accept(&text(&revoked, "/code"), &with_email).await,
        410,
        "invitation_revoked",
    )
    .await;
    // An email whose invitation was declined or revoked may be invited again.
    let again = app
        .invite(
            "space/s",
            &alice(),
            json!({"emails": ["d@example.com", "r@example.com"]}),
        )
        .await;
    assert_eq!(
        emails(&again["invited"]),
        ["d@example.com", "r@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_resend_and_revoke_an_invitation() {
    let app = space().await;
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "editor"}),
    )
    .await;
    app.put(
        "/v1/resources/space/s/members/ed",
        &As::Admin,
        json!({"role": "editor"}),
    )
    .await;
    let erin = As::AdminFor("erin".into());
    let hers = app
        .invite_one("space/s", &erin, "h@example.com", Some("editor"))
        .await;
    let alices = app
        .invite_one("space/s", &alice(), "a@example.com", None)
        .await;
    // erin resends her own; another editor may not touch it; she may not touch alice's.
    let resend = |i: &Value| format!("/v1/resources/space/s/invitations/{}/resend", i["id"]);
    assert_eq!(
        app.post(&resend(&hers), &erin, json!({})).await.status(),
        StatusCode::OK
    );
    assert_problem(
        app.post(&resend(&hers), &As::AdminFor("ed".into()), json!({}))
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.post(&resend(&alices), &erin, json!({})).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(
        app.delete(
            &format!("/v1/resources/space/s/invitations/{}", alices["id"]),
            &erin,
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    // alice manages every invitation.
    assert_eq!(
        app.delete(
            &format!("/v1/resources/space/s/invitations/{}", hers["id"]),
            &alice()
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_invitations_are_found_by_email() {
    let app = space().await;
    app.register("workspace/931", "alice").await;
    let one = app
        .invite_one("space/s", &alice(), "new@example.com", None)
        .await;
    let two = app
        .invite_one("workspace/931", &alice(), "NEW@example.com", None)
        .await;
    app.invite_one("space/s", &alice(), "other@example.com", None)
        .await;
    let found = app.read("/v1/invitations?email=New@Example.com").await;
    let ids: Vec<&Value> = found["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, [&one["id"], &two["id"]]);
    assert_eq!(
        found["items"][1]["role"], "downloader",
        "Onehub's default role for a workspace"
    );
    assert!(
        found["items"][0].get("code").is_none(),
        "no code for a sign-up flow's lookup"
    );
    // A revoked one is no longer pending.
    app.delete(
        &format!("/v1/resources/space/s/invitations/{}", one["id"]),
        &alice(),
    )
    .await;
    assert_eq!(
        app.read("/v1/invitations?email=new@example.com").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The email is required and must be one.
    assert_problem(
        app.get("/v1/invitations", &As::Admin).await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.get("/v1/invitations?email=nope", &As::Admin).await,
        422,
        "invalid_email",
    )
    .await;
}
