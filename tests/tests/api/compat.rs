//! The seed products' own routes: each seed document's example request, sent as its curl
//! example sends it (with our host), checked against the document's schema; codes crossing
//! between the families and the native API; the error cases each document lists, from real
//! causes; and families switched off.

use reqwest::{Method, Response, StatusCode};
use roster_domain::{InviteCode, ServerSecret, Timestamp};
use roster_server::http::Families;
use serde_json::{json, Value};

use crate::helpers::*;

/// A known server secret, so a test can derive the code an email invitation was made with
/// (the code a delivery worker would mail; Onehub's response carries ids, not codes).
const SECRET: &str = "compat-test-secret-0123456789abcdef";

const TEABLE_ROLES: [&str; 5] = ["owner", "creator", "editor", "commenter", "viewer"];

async fn spawn() -> TestApp {
    spawn_app_with(|config| config.secret = Some(SECRET.into())).await
}

fn mailed_code(number: u64) -> String {
    InviteCode::derive(&ServerSecret::new(SECRET.as_bytes().to_vec()), number, 1).encode_base64()
}

/// A request as a curl example sends it: a raw body with its own headers, nothing added.
async fn curl(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: &str,
    body: Option<&str>,
) -> Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("Authorization", authorization);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request
        .send()
        .await
        .expect("the request reaches the server")
}

fn string<'v>(body: &'v Value, field: &str) -> &'v str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {body}"))
}

fn is_rfc3339(text: &str) -> bool {
    Timestamp::parse(text).is_ok()
}

/// The seed's `201` schema of a Teable invitation link: every required field, typed, the role
/// in the enum.
fn assert_teable_link(link: &Value) {
    let object = link
        .as_object()
        .unwrap_or_else(|| panic!("an object: {link}"));
    for field in [
        "invitationId",
        "role",
        "inviteUrl",
        "invitationCode",
        "createdBy",
        "createdTime",
    ] {
        assert!(
            object.get(field).is_some_and(Value::is_string),
            "{field} is a required string: {link}"
        );
    }
    assert!(TEABLE_ROLES.contains(&string(link, "role")), "{link}");
    assert!(is_rfc3339(string(link, "createdTime")), "{link}");
    assert!(
        string(link, "inviteUrl").contains(string(link, "invitationCode")),
        "{link}"
    );
}

/// Teable's error shape, `{message, status, code}`, with the HTTP status in the body too.
async fn assert_teable_error(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let body = json_of(response).await;
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Cal.com v2's error shape, `{status: "error", error: {code, message}}`.
async fn assert_calcom_error(response: Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body = json_of(response).await;
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Onedata's error shape as the seed shows it: `{"error": "<text>"}` and nothing else.
async fn assert_onedata_error(response: Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    let body = json_of(response).await;
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("an object: {body}"));
    assert_eq!(object.len(), 1, "{body}");
    string(&body, "error").to_string()
}

async fn role_of(app: &TestApp, resource: &str, principal: &str) -> Option<String> {
    let members = json_of(
        app.get(&format!("/v1/resources/{resource}/members"), &As::Admin)
            .await,
    )
    .await;
    members["items"]
        .as_array()?
        .iter()
        .find(|m| m["principal"] == principal)
        .map(|m| string(m, "role").to_string())
}

async fn memberships(app: &TestApp, principal: &str) -> Vec<(String, String)> {
    let body = json_of(
        app.get(
            &format!("/v1/principals/{principal}/memberships"),
            &As::Admin,
        )
        .await,
    )
    .await;
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| {
            (
                string(m, "resource").to_string(),
                string(m, "role").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teable_the_documents_example_and_the_link_routes() {
    let app = spawn().await;
    app.register("space/spc_seed", "alice").await;
    let key = app.key("alice", &["read", "write"], false, None).await;
    let bearer = format!("Bearer {key}");

    // The document's curl example, `{spaceId}` filled in.
    let created = curl(
        &app,
        Method::POST,
        "/api/space/spc_seed/invitation/link",
        &bearer,
        Some(r#"{"role":"owner"}"#),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let link = json_of(created).await;
    assert_teable_link(&link);
    assert_eq!(link["role"], "owner");
    assert_eq!(link["createdBy"], "alice");
    assert_eq!(
        string(&link, "invitationCode").len(),
        43,
        "the native code: {link}"
    );
    let id = string(&link, "invitationId").to_string();

    // The list: an array of the same bodies.
    let listed = curl(
        &app,
        Method::GET,
        "/api/space/spc_seed/invitation/link",
        &bearer,
        None,
    )
    .await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed = json_of(listed).await;
    let items = listed.as_array().expect("an array");
    assert_eq!(items.len(), 1);
    assert_teable_link(&items[0]);
    assert_eq!(items[0], link);

    // Change the role: `{invitationId, role}`.
    let path = format!("/api/space/spc_seed/invitation/link/{id}");
    let changed = curl(
        &app,
        Method::PATCH,
        &path,
        &bearer,
        Some(r#"{"role":"editor"}"#),
    )
    .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(
        json_of(changed).await,
        json!({ "invitationId": id, "role": "editor" })
    );
    let refused = curl(
        &app,
        Method::PATCH,
        &path,
        &bearer,
        Some(r#"{"role":"superuser"}"#),
    )
    .await;
    assert_teable_error(refused, 400, "validation_error").await;

    // Accept with `{invitationId, invitationCode}`: 201 `{spaceId}`.
    let bob = app.key("bob", &["read", "write"], false, None).await;
    let accept =
        json!({ "invitationId": id, "invitationCode": link["invitationCode"] }).to_string();
    let accepted = curl(
        &app,
        Method::POST,
        "/api/invitation/link/accept",
        &format!("Bearer {bob}"),
        Some(&accept),
    )
    .await;
    assert_eq!(accepted.status(), StatusCode::CREATED);
    let accepted = json_of(accepted).await;
    assert_eq!(accepted["spaceId"], "spc_seed", "{accepted}");
    assert_eq!(
        role_of(&app, "space/spc_seed", "bob").await.as_deref(),
        Some("editor")
    );

    // A wrong code, or a right code under another id, answers as Teable's not found.
    let wrong = json!({ "invitationId": id, "invitationCode": "A".repeat(43) }).to_string();
    let body = assert_teable_error(
        curl(
            &app,
            Method::POST,
            "/api/invitation/link/accept",
            &format!("Bearer {bob}"),
            Some(&wrong),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(body["data"]["rosterCode"], "invitation_not_found");
    let mismatched =
        json!({ "invitationId": "999", "invitationCode": link["invitationCode"] }).to_string();
    assert_teable_error(
        curl(
            &app,
            Method::POST,
            "/api/invitation/link/accept",
            &format!("Bearer {bob}"),
            Some(&mismatched),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    // Email invitations: `{email: {invitationId}}`.
    let invited = curl(
        &app,
        Method::POST,
        "/api/space/spc_seed/invitation/email",
        &bearer,
        Some(r#"{"emails":["carol@example.com","dan@example.com"],"role":"viewer"}"#),
    )
    .await;
    assert_eq!(invited.status(), StatusCode::CREATED);
    let invited = json_of(invited).await;
    for email in ["carol@example.com", "dan@example.com"] {
        assert!(
            invited[email]["invitationId"]
                .as_str()
                .is_some_and(|i| i.parse::<u64>().is_ok()),
            "{invited}"
        );
    }
    let bad = curl(
        &app,
        Method::POST,
        "/api/space/spc_seed/invitation/email",
        &bearer,
        Some(r#"{"emails":["not-an-address"],"role":"viewer"}"#),
    )
    .await;
    assert_teable_error(bad, 400, "validation_error").await;

    // Delete: 200, the link leaves the list and its code stops working.
    let deleted = curl(&app, Method::DELETE, &path, &bearer, None).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    let listed = json_of(
        curl(
            &app,
            Method::GET,
            "/api/space/spc_seed/invitation/link",
            &bearer,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(listed, json!([]));
    let erin = app.key("erin", &["read", "write"], false, None).await;
    let gone = curl(
        &app,
        Method::POST,
        "/api/invitation/link/accept",
        &format!("Bearer {erin}"),
        Some(&accept),
    )
    .await;
    let body = assert_teable_error(gone, 410, "not_found").await;
    assert_eq!(body["data"]["rosterCode"], "invitation_revoked");

    // Auth and resources, in Teable's shape.
    assert_teable_error(
        curl(
            &app,
            Method::GET,
            "/api/space/spc_seed/invitation/link",
            "Bearer nope",
            None,
        )
        .await,
        401,
        "unauthorized",
    )
    .await;
    assert_teable_error(
        curl(
            &app,
            Method::POST,
            "/api/space/spc_none/invitation/link",
            &bearer,
            Some(r#"{"role":"viewer"}"#),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    let viewer = app.key("carl", &["read", "write"], false, None).await;
    assert_teable_error(
        curl(
            &app,
            Method::POST,
            "/api/space/spc_seed/invitation/link",
            &format!("Bearer {viewer}"),
            Some(r#"{"role":"viewer"}"#),
        )
        .await,
        403,
        "restricted_resource",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calcom_the_documents_example_and_its_errors() {
    let app = spawn().await;
    app.register("team/17", "olivia").await;
    let key = app.key("olivia", &["read", "write"], false, None).await;

    // The document's request: a POST with the Bearer header and no body.
    let response = curl(
        &app,
        Method::POST,
        "/v2/teams/17/invite",
        &format!("Bearer {key}"),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body["status"], "success", "{body}");
    assert!(["success", "error"].contains(&string(&body, "status")));
    let token = string(&body["data"], "token").to_string();
    assert_eq!(token.len(), 64);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{token}"
    );
    assert_eq!(
        string(&body["data"], "inviteLink"),
        format!("https://roster.example/signup?token={token}&callbackUrl=/getting-started")
    );

    // A member, for 7 days, with no use limit.
    let links = json_of(
        app.get("/v1/resources/team/17/invite-links", &As::Admin)
            .await,
    )
    .await;
    let link = &links["items"][0];
    assert_eq!(link["role"], "member");
    assert_eq!(link["max_uses"], Value::Null);
    let created = Timestamp::parse(string(link, "created_at"))
        .expect("a time")
        .unix_ms();
    let expires = Timestamp::parse(string(link, "expires_at"))
        .expect("a time")
        .unix_ms();
    assert_eq!(expires - created, 7 * 24 * 60 * 60 * 1000);

    // Errors as Cal.com v2 writes them.
    assert_calcom_error(
        curl(
            &app,
            Method::POST,
            "/v2/teams/17/invite",
            "Bearer cal_unknown",
            None,
        )
        .await,
        401,
        "UnauthorizedException",
    )
    .await;
    assert_calcom_error(
        curl(
            &app,
            Method::POST,
            "/v2/teams/18/invite",
            &format!("Bearer {key}"),
            None,
        )
        .await,
        404,
        "NotFoundException",
    )
    .await;
    assert_calcom_error(
        curl(
            &app,
            Method::POST,
            "/v2/teams/seventeen/invite",
            &format!("Bearer {key}"),
            None,
        )
        .await,
        400,
        "BadRequestException",
    )
    .await;
    // `TEAM_MEMBERSHIP_WRITE`: a read-only key, and a plain member, may not invite.
    let reader = app.key("olivia", &["read"], false, None).await;
    assert_calcom_error(
        curl(
            &app,
            Method::POST,
            "/v2/teams/17/invite",
            &format!("Bearer {reader}"),
            None,
        )
        .await,
        403,
        "ForbiddenException",
    )
    .await;
    let mia = app.key("mia", &["read", "write"], false, None).await;
    let joined = app
        .post(
            "/v1/invitations/accept",
            &As::Key(mia.clone()),
            json!({ "code": token }),
        )
        .await;
    assert_eq!(json_of(joined).await["role"], "member");
    assert_calcom_error(
        curl(
            &app,
            Method::POST,
            "/v2/teams/17/invite",
            &format!("Bearer {mia}"),
            None,
        )
        .await,
        403,
        "ForbiddenException",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onehub_the_documents_example_and_its_422s() {
    let app = spawn_app_with(|config| {
        config.secret = Some(SECRET.into());
        config.limits.pending_invitations_max = 3;
    })
    .await;
    app.register("workspace/931", "wendy").await;
    let key = app.key("wendy", &["read", "write"], false, None).await;
    let bearer = format!("Bearer {key}");

    // The document's example request body.
    let example = r#"{
  "invitation": {
    "emails": "first-user@example.com, second-user@example.com",
    "role_name": "Creator"
  }
}"#;
    let response = curl(
        &app,
        Method::POST,
        "/workspaces/931/invitations",
        &bearer,
        Some(example),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body = json_of(response).await;
    let share = &body["share"];
    assert_eq!(share["emails"], "", "{body}");
    assert_eq!(share["email_errors"], json!([]));
    assert_eq!(share["join_errors"], json!([]));
    assert_eq!(share["errors"], json!({}));
    let invited = share["invited_emails"].as_array().expect("an array");
    assert_eq!(invited.len(), 2);
    let mut ids = Vec::new();
    for (entry, email) in invited
        .iter()
        .zip(["first-user@example.com", "second-user@example.com"])
    {
        let object = entry.as_object().expect("an object");
        assert_eq!(object.len(), 1);
        ids.push(
            object[email]
                .as_u64()
                .unwrap_or_else(|| panic!("an integer id: {entry}")),
        );
    }
    // "Creator" matched case-insensitively.
    let listed = json_of(
        app.get("/v1/resources/workspace/931/invitations", &As::Admin)
            .await,
    )
    .await;
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["role"] == "creator"),
        "{listed}"
    );

    // The invitation becomes a rolemap when accepted (here through the native API, with the
    // code its email would carry).
    let service = app.key("svc", &["read", "write"], true, None).await;
    let fiona = As::KeyFor(
        service.clone(),
        "fiona".into(),
        Some("first-user@example.com".into()),
    );
    let accepted = app
        .post(
            "/v1/invitations/accept",
            &fiona,
            json!({ "code": mailed_code(ids[0]) }),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(
        role_of(&app, "workspace/931", "fiona").await.as_deref(),
        Some("creator")
    );

    // A missing or unknown role_name falls back to the default role; folders and files too.
    app.register("folder/55", "wendy").await;
    app.register("file/7", "wendy").await;
    for (path, body) in [
        (
            "/folders/55/invitations",
            r#"{"invitation":{"emails":"g@example.com"}}"#,
        ),
        (
            "/files/7/invitations",
            r#"{"invitation":{"emails":"h@example.com","role_name":"Overlord"}}"#,
        ),
    ] {
        let response = curl(&app, Method::POST, path, &bearer, Some(body)).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
        let id = json_of(response).await["share"]["invited_emails"][0]
            .as_object()
            .expect("one")
            .values()
            .next()
            .and_then(Value::as_u64)
            .expect("an id");
        let who = format!("p{id}");
        let email = if path.starts_with("/folders") {
            "g@example.com"
        } else {
            "h@example.com"
        };
        let accepted = app
            .post(
                "/v1/invitations/accept",
                &As::KeyFor(service.clone(), who.clone(), Some(email.into())),
                json!({ "code": mailed_code(id) }),
            )
            .await;
        assert_eq!(json_of(accepted).await["role"], "downloader", "{path}");
    }

    // Per-email errors beside the invited ones.
    let mixed = curl(
        &app,
        Method::POST,
        "/workspaces/931/invitations",
        &bearer,
        Some(r#"{"invitation":{"emails":"third@example.com, nonsense"}}"#),
    )
    .await;
    assert_eq!(mixed.status(), StatusCode::CREATED);
    let share = json_of(mixed).await["share"].clone();
    assert_eq!(share["emails"], "nonsense");
    assert_eq!(share["invited_emails"].as_array().map(Vec::len), Some(1));
    assert!(share["email_errors"][0]["nonsense"].is_string(), "{share}");

    // 422: an invalid email.
    let invalid = curl(
        &app,
        Method::POST,
        "/workspaces/931/invitations",
        &bearer,
        Some(r#"{"invitation":{"emails":"not-an-email"}}"#),
    )
    .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(invalid).await;
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["share"]["email_errors"][0]["not-an-email"].is_string(),
        "{body}"
    );

    // 422: a limit reached (three pending invitations at most on the workspace; two are
    // pending now: second-user's and third's).
    let over = curl(
        &app,
        Method::POST,
        "/workspaces/931/invitations",
        &bearer,
        Some(r#"{"invitation":{"emails":"x1@example.com, x2@example.com"}}"#),
    )
    .await;
    assert_eq!(over.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = json_of(over).await;
    assert!(string(&body, "error").contains("pending"), "{body}");
    assert_eq!(body["share"]["invited_emails"], json!([]));

    // Integer ids only; unknown items are not found.
    let text = curl(
        &app,
        Method::POST,
        "/workspaces/abc/invitations",
        &bearer,
        Some(example),
    )
    .await;
    assert_eq!(text.status(), StatusCode::BAD_REQUEST);
    assert!(string(&json_of(text).await, "error").contains("integer"));
    assert_eq!(
        curl(
            &app,
            Method::POST,
            "/workspaces/932/invitations",
            &bearer,
            Some(example)
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onedata_the_documents_example_and_its_400_401_403_404() {
    let app = spawn().await;
    let space = "9ueUeoZA6KXxNgzlvqmmrbzqE_BQiaHEEDC21sY1Kuc";
    app.register(&format!("space/{space}"), "uma").await;
    let key = app.key("uma", &["read", "write"], false, None).await;
    let path = format!("/api/v3/onezone/spaces/{space}/users/token");

    // `curl -u username:password -X POST …/users/token`: Basic auth, the key as the password, no body.
    let response = app
        .client
        .post(app.url(&path))
        .basic_auth("uma", Some(&key))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let token = string(&body, "token").to_string();
    // Bearer works as well.
    let bearer = curl(&app, Method::POST, &path, &format!("Bearer {key}"), None).await;
    assert_eq!(bearer.status(), StatusCode::OK);

    // Join with the token: the default role, as the acting principal.
    let victor = app.key("victor", &["read", "write"], false, None).await;
    let joined = app
        .client
        .post(app.url("/api/v3/onezone/user/spaces/join"))
        .basic_auth("victor", Some(&victor))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("sent");
    assert_eq!(joined.status(), StatusCode::CREATED);
    assert_eq!(
        joined
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some(format!("/api/v3/onezone/user/spaces/{space}").as_str())
    );
    assert_eq!(json_of(joined).await, json!({ "spaceId": space }));
    assert_eq!(
        role_of(&app, &format!("space/{space}"), "victor")
            .await
            .as_deref(),
        Some("viewer")
    );

    // 400: a join without a token, and a body that is not JSON.
    assert_onedata_error(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/user/spaces/join",
            &format!("Bearer {victor}"),
            Some("{}"),
        )
        .await,
        400,
    )
    .await;
    assert_onedata_error(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/user/spaces/join",
            &format!("Bearer {victor}"),
            Some("{token"),
        )
        .await,
        400,
    )
    .await;
    // 401: a wrong password, and none at all.
    let wrong = app
        .client
        .post(app.url(&path))
        .basic_auth("uma", Some("not-the-key"))
        .send()
        .await
        .expect("sent");
    assert_onedata_error(wrong, 401).await;
    assert_onedata_error(
        app.client.post(app.url(&path)).send().await.expect("sent"),
        401,
    )
    .await;
    // 403: victor is a viewer, without `space_invite_user` (our `invite`).
    assert_onedata_error(
        curl(&app, Method::POST, &path, &format!("Bearer {victor}"), None).await,
        403,
    )
    .await;
    // 404: a space that does not exist, and a token that opens nothing.
    assert_onedata_error(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/spaces/no_such_space/users/token",
            &format!("Bearer {key}"),
            None,
        )
        .await,
        404,
    )
    .await;
    let forged = json!({ "token": "A".repeat(43) }).to_string();
    assert_onedata_error(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/user/spaces/join",
            &format!("Bearer {victor}"),
            Some(&forged),
        )
        .await,
        404,
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_cross_between_the_families_and_the_native_api() {
    let app = spawn().await;
    app.register("space/s1", "owner1").await;
    app.register("team/5", "owner1").await;
    app.register("workspace/6", "owner1").await;
    let owner = app.key("owner1", &["read", "write"], false, None).await;
    let bearer = format!("Bearer {owner}");

    // Made through each family, accepted through the native API.
    let teable = json_of(
        curl(
            &app,
            Method::POST,
            "/api/space/s1/invitation/link",
            &bearer,
            Some(r#"{"role":"commenter"}"#),
        )
        .await,
    )
    .await;
    let calcom = json_of(curl(&app, Method::POST, "/v2/teams/5/invite", &bearer, None).await).await;
    let onehub = json_of(
        curl(
            &app,
            Method::POST,
            "/workspaces/6/invitations",
            &bearer,
            Some(r#"{"invitation":{"emails":"n1@example.com","role_name":"viewer"}}"#),
        )
        .await,
    )
    .await;
    let onedata = json_of(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/spaces/s1/users/token",
            &bearer,
            None,
        )
        .await,
    )
    .await;
    let onehub_id = onehub["share"]["invited_emails"][0]["n1@example.com"]
        .as_u64()
        .expect("an id");
    let service = app.key("svc", &["read", "write"], true, None).await;
    for (who, code, email, resource, role) in [
        (
            "n1",
            string(&teable, "invitationCode").to_string(),
            None,
            "space/s1",
            "commenter",
        ),
        (
            "n2",
            string(&calcom["data"], "token").to_string(),
            None,
            "team/5",
            "member",
        ),
        (
            "n3",
            mailed_code(onehub_id),
            Some("n1@example.com".to_string()),
            "workspace/6",
            "viewer",
        ),
        (
            "n4",
            string(&onedata, "token").to_string(),
            None,
            "space/s1",
            "viewer",
        ),
    ] {
        let accepted = app
            .post(
                "/v1/invitations/accept",
                &As::KeyFor(service.clone(), who.into(), email),
                json!({ "code": code }),
            )
            .await;
        assert_eq!(accepted.status(), StatusCode::OK, "{resource}");
        let accepted = json_of(accepted).await;
        assert_eq!(
            (accepted["resource"].as_str(), accepted["role"].as_str()),
            (Some(resource), Some(role)),
            "{accepted}"
        );
        assert_eq!(
            memberships(&app, who).await,
            vec![(resource.to_string(), role.to_string())]
        );
    }

    // A native link's code through Teable's accept and Onedata's join: the same membership
    // as through the native accept.
    let link = json_of(
        app.post(
            "/v1/resources/space/s1/invite-links",
            &As::Key(owner.clone()),
            json!({ "role": "editor" }),
        )
        .await,
    )
    .await;
    let code = string(&link, "code").to_string();
    let id = link["id"].as_u64().expect("an id").to_string();
    let p1 = app.key("p1", &["read", "write"], false, None).await;
    let p2 = app.key("p2", &["read", "write"], false, None).await;
    let p3 = app.key("p3", &["read", "write"], false, None).await;
    let through_teable = curl(
        &app,
        Method::POST,
        "/api/invitation/link/accept",
        &format!("Bearer {p1}"),
        Some(&json!({ "invitationId": id, "invitationCode": code }).to_string()),
    )
    .await;
    assert_eq!(through_teable.status(), StatusCode::CREATED);
    let through_onedata = curl(
        &app,
        Method::POST,
        "/api/v3/onezone/user/spaces/join",
        &format!("Bearer {p2}"),
        Some(&json!({ "token": code }).to_string()),
    )
    .await;
    assert_eq!(through_onedata.status(), StatusCode::CREATED);
    let through_native = app
        .post(
            "/v1/invitations/accept",
            &As::Key(p3),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(through_native.status(), StatusCode::OK);
    let expected = vec![("space/s1".to_string(), "editor".to_string())];
    for who in ["p1", "p2", "p3"] {
        assert_eq!(memberships(&app, who).await, expected, "{who}");
    }
    let links = json_of(
        app.get("/v1/resources/space/s1/invite-links", &As::Admin)
            .await,
    )
    .await;
    let native = links["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|l| l["code"] == code.as_str())
        .cloned()
        .expect("the link");
    assert_eq!(
        native["uses"], 3,
        "one slot per acceptance, whichever route: {native}"
    );
    // The hex form (Cal.com's) of the same code is taken too.
    let hex = InviteCode::derive(
        &ServerSecret::new(SECRET.as_bytes().to_vec()),
        link["id"].as_u64().expect("id"),
        1,
    )
    .encode_hex();
    let p5 = app.key("p5", &["read", "write"], false, None).await;
    let joined = curl(
        &app,
        Method::POST,
        "/api/v3/onezone/user/spaces/join",
        &format!("Bearer {p5}"),
        Some(&json!({ "token": hex }).to_string()),
    )
    .await;
    assert_eq!(joined.status(), StatusCode::CREATED);
    // A code of another kind of resource is not a space token.
    let team_token = string(&calcom["data"], "token").to_string();
    assert_onedata_error(
        curl(
            &app,
            Method::POST,
            "/api/v3/onezone/user/spaces/join",
            &format!("Bearer {p5}"),
            Some(&json!({ "token": team_token }).to_string()),
        )
        .await,
        400,
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_switched_off_answers_404_and_the_others_stay() {
    let app = spawn_app_with(|config| {
        config.families = Families {
            teable: false,
            calcom: true,
            onehub: false,
            onedata: true,
        }
    })
    .await;
    app.register("space/s1", "o").await;
    app.register("team/1", "o").await;
    app.register("workspace/1", "o").await;
    let owner = As::AdminFor("o".into());
    let off = [
        app.post(
            "/api/space/s1/invitation/link",
            &owner,
            json!({ "role": "viewer" }),
        )
        .await,
        app.get("/api/space/s1/invitation/link", &owner).await,
        app.post(
            "/api/invitation/link/accept",
            &owner,
            json!({ "invitationId": "1", "invitationCode": "x" }),
        )
        .await,
        app.post(
            "/workspaces/1/invitations",
            &owner,
            json!({ "invitation": { "emails": "a@example.com" } }),
        )
        .await,
    ];
    for response in off {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(
        app.post("/v2/teams/1/invite", &owner, json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.post("/api/v3/onezone/spaces/s1/users/token", &owner, json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    app.stop().await;

    let none = Families {
        teable: false,
        calcom: false,
        onehub: false,
        onedata: false,
    };
    let app = spawn_app_with(|config| config.families = none).await;
    app.register("team/1", "o").await;
    app.register("space/s1", "o").await;
    assert_eq!(
        app.post("/v2/teams/1/invite", &owner, json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post("/api/v3/onezone/spaces/s1/users/token", &owner, json!({}))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(
            "/api/v3/onezone/user/spaces/join",
            &owner,
            json!({ "token": "x" })
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_families_routes() {
    let app = spawn_app().await;
    let document = json_of(app.get("/openapi.json", &As::Nobody).await).await;
    for (path, method) in [
        ("/api/space/{spaceId}/invitation/link", "post"),
        ("/api/space/{spaceId}/invitation/link", "get"),
        (
            "/api/space/{spaceId}/invitation/link/{invitationId}",
            "patch",
        ),
        (
            "/api/space/{spaceId}/invitation/link/{invitationId}",
            "delete",
        ),
        ("/api/space/{spaceId}/invitation/email", "post"),
        ("/api/invitation/link/accept", "post"),
        ("/v2/teams/{teamId}/invite", "post"),
        ("/workspaces/{id}/invitations", "post"),
        ("/folders/{id}/invitations", "post"),
        ("/files/{id}/invitations", "post"),
        ("/api/v3/onezone/spaces/{id}/users/token", "post"),
        ("/api/v3/onezone/user/spaces/join", "post"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is in the document"
        );
    }
    let schemas = &document["components"]["schemas"];
    for schema in [
        "TeableInvitationLink",
        "TeableError",
        "CalcomInviteOutput",
        "OnehubShareBody",
        "OnedataSpaceInviteToken",
        "OnedataError",
    ] {
        assert!(schemas[schema].is_object(), "{schema} is described");
    }
    app.stop().await;
}
