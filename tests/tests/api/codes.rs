//! Using codes: preview, accept and decline, in both encodings, and every way a code can fail
//! to open anything (rules 4 to 7 and 9 of DESIGN section 2).

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

fn who(principal: &str) -> As {
    As::AdminFor(principal.into())
}

/// The hex form of a base64url code (Cal.com's encoding of the same 32 bytes).
fn hex_of(code: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in code.bytes() {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c)
            .expect("a base64url character");
        bits = (bits << 6) | u32::try_from(value).expect("below 64");
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push(u8::try_from((bits >> count) & 0xff).expect("a byte"));
        }
    }
    assert_eq!(bytes.len(), 32, "a code is 32 bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_says_what_a_code_is_for_without_using_it() {
    let app = space().await;
    let reader = As::Key(app.key("anyone", &["read"], false, None).await);
    let link = app
        .link(
            "space/s",
            &alice(),
            json!({"role": "commenter", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    let head = app.head().await;
    let preview = json_of(
        app.post(
            "/v1/invitations/preview",
            &reader,
            json!({"code": link["code"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        preview,
        json!({"resource": "space/s", "role": "commenter", "kind": "link", "status": "active", "expires_at": "2999-01-01T00:00:00.000Z", "inviter": "alice", "email": null})
    );
    let invitation = app
        .invite_one("space/s", &alice(), "dana@example.com", Some("editor"))
        .await;
    let preview = json_of(
        app.post(
            "/v1/invitations/preview",
            &reader,
            json!({"code": invitation["code"]}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (
            preview["kind"].clone(),
            preview["status"].clone(),
            preview["email"].clone()
        ),
        (json!("email"), json!("pending"), json!("dana@example.com"))
    );
    assert_eq!(preview["expires_at"], invitation["expires_at"]);
    assert_eq!(app.head().await, head + 1, "previews append nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_encodings_of_a_code_open_the_same_thing() {
    let app = space().await;
    let link = app
        .link("space/s", &alice(), json!({"role": "editor"}))
        .await;
    let hex = hex_of(&text(&link, "/code"));
    assert_eq!(hex.len(), 64);
    let preview = json_of(
        app.post(
            "/v1/invitations/preview",
            &As::Admin,
            json!({ "code": hex }),
        )
        .await,
    )
    .await;
    assert_eq!(preview["role"], "editor");
    assert_eq!(
        json_of(app.accept(&hex, &who("bob")).await).await["principal"],
        "bob"
    );
    let invitation = app
        .invite_one("space/s", &alice(), "d@example.com", None)
        .await;
    let dana = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "dana".into(),
        Some("d@example.com".into()),
    );
    assert_eq!(
        app.accept(&hex_of(&text(&invitation, "/code")), &dana)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.members("space/s").await,
        pairs(&[("alice", "owner"), ("bob", "editor"), ("dana", "viewer")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_malformed_and_forged_codes_get_one_answer() {
    // Thirty failures from one address and principal: past the limit on failed code checks,
    // which is switched off here since this test compares answers (`abuse.rs` tests limits).
    let app = crate::helpers::spawn_app_with(|config| {
        config.code_failures_per_address_max = 0;
        config.code_failures_per_principal_max = 0;
    })
    .await;
    app.register("space/s", "alice").await;
    let link = app.link("space/s", &alice(), json!({})).await;
    let real = text(&link, "/code");
    // The same 43 characters with the last one changed: a forged signature.
    let mut forged = real.clone();
    let last = forged.pop().expect("a character");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let cases = [
        String::new(),
        "x".to_string(),
        "not a code at all".to_string(),
        "A".repeat(43),
        "0".repeat(64),
        "Z".repeat(64),
        format!("{real}="),
        real.to_uppercase(),
        forged,
        "é".repeat(43),
    ];
    let mut details = std::collections::BTreeSet::new();
    for code in &cases {
        for path in [
            "/v1/invitations/preview",
            "/v1/invitations/accept",
            "/v1/invitations/decline",
        ] {
            let response = app
                .post(path, &who("mallory"), json!({ "code": code }))
                .await;
            let problem = assert_problem(response, 404, "invitation_not_found").await;
            details.insert(problem["detail"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        details.len(),
        1,
        "one detail for every failure: {details:?}"
    );
    // A missing or mistyped code is a malformed request, not a lookup.
    assert_problem(
        app.post("/v1/invitations/accept", &who("mallory"), json!({}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        app.post(
            "/v1/invitations/accept",
            &who("mallory"),
            json!({"code": 7}),
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(app.members("space/s").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_never_lowers_a_role_and_raises_a_lower_one() {
    let app = space().await;
    app.put(
        "/v1/resources/space/s/members/bob",
        &As::Admin,
        json!({"role": "creator"}),
    )
    .await;
    app.put(
        "/v1/resources/space/s/members/vic",
        &As::Admin,
        json!({"role": "viewer"}),
    )
    .await;
    let link = app
        .link(
            "space/s",
            &alice(),
            json!({"role": "editor", "max_uses": 1}),
        )
        .await;
    let code = text(&link, "/code");
    // bob ranks above: nothing changes, nothing is appended, the one use is kept (rule 5).
    let head = app.head().await;
    let kept = json_of(app.accept(&code, &who("bob")).await).await;
    assert_eq!(
        kept,
        json!({"resource": "space/s", "principal": "bob", "role": "creator", "changed": false})
    );
    assert_eq!(app.head().await, head);
    // alice (owner) too.
    assert_eq!(
        json_of(app.accept(&code, &alice()).await).await["changed"],
        false
    );
    // vic ranks below: raised, and the link's use is spent.
    let raised = json_of(app.accept(&code, &who("vic")).await).await;
    assert_eq!(
        raised,
        json!({"resource": "space/s", "principal": "vic", "role": "editor", "changed": true})
    );
    // Rule 6 comes first: the spent link refuses even one who would not change.
    assert_problem(
        app.accept(&code, &who("bob")).await,
        410,
        "invitation_exhausted",
    )
    .await;
    let member = app.read("/v1/resources/space/s/members").await["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["principal"] == "vic")
        .cloned()
        .expect("vic");
    assert_eq!(
        member["granted_by"], "alice",
        "granted by the link's creator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_invitation_is_used_once_by_its_addressee() {
    let app = space().await;
    let invitation = app
        .invite_one("space/s", &alice(), "dana@example.com", Some("editor"))
        .await;
    let code = text(&invitation, "/code");
    let service = app.key("svc", &["write"], true, None).await;
    let as_ = |p: &str, e: &str| As::KeyFor(service.clone(), p.into(), Some(e.into()));
    assert_problem(
        app.accept(&code, &as_("eve", "eve@example.com")).await,
        403,
        "invitation_email_mismatch",
    )
    .await;
    let accepted = json_of(app.accept(&code, &as_("dana", "dana@example.com")).await).await;
    assert_eq!(accepted["role"], "editor");
    // Used: by anyone, again, it is gone.
    assert_problem(
        app.accept(&code, &as_("dana", "dana@example.com")).await,
        410,
        "invitation_used",
    )
    .await;
    assert_problem(
        app.accept(&code, &as_("dan2", "dana@example.com")).await,
        410,
        "invitation_used",
    )
    .await;
    let listed = app.read("/v1/resources/space/s/invitations").await;
    assert_eq!(
        (
            listed["items"][0]["status"].clone(),
            listed["items"][0]["accepted_by"].clone()
        ),
        (json!("accepted"), json!("dana"))
    );
    // The accepted email is now known: inviting it again says it is a member.
    let again = app
        .post(
            "/v1/resources/space/s/invitations",
            &alice(),
            json!({"emails": ["dana@example.com"]}),
        )
        .await;
    let problem = assert_problem(again, 422, "invalid_email").await;
    assert_eq!(problem["already_members"], json!(["dana@example.com"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_invitation_cannot_be_used_and_a_declined_link_records_nothing() {
    let app = space().await;
    let invitation = app
        .invite_one("space/s", &alice(), "dana@example.com", None)
        .await;
    let code = text(&invitation, "/code");
    let dana_without_email = who("dana");
    let decline = |code: String| {
        app.post(
            "/v1/invitations/decline",
            &dana_without_email,
            json!({ "code": code }),
        )
    };
    assert_eq!(decline(code.clone()).await.status(), StatusCode::OK);
    assert_problem(decline(code.clone()).await, 410, "invitation_declined").await;
    let dana = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "dana".into(),
        Some("dana@example.com".into()),
    );
    assert_problem(app.accept(&code, &dana).await, 410, "invitation_declined").await;
    let preview = json_of(
        app.post(
            "/v1/invitations/preview",
            &As::Admin,
            json!({ "code": code }),
        )
        .await,
    )
    .await;
    assert_eq!(preview["status"], "declined");

    let link = app.link("space/s", &alice(), json!({"max_uses": 1})).await;
    let head = app.head().await;
    let declined = json_of(decline(text(&link, "/code")).await).await;
    assert_eq!(declined, json!({"resource": "space/s", "declined": false}));
    assert_eq!(app.head().await, head, "a link's decline appends nothing");
    assert_eq!(
        app.accept(&text(&link, "/code"), &who("dana"))
            .await
            .status(),
        StatusCode::OK,
        "and spends no use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_dies_with_its_inviters_privilege() {
    let app = space().await;
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "editor"}),
    )
    .await;
    let erin = who("erin");
    let link = app.link("space/s", &erin, json!({"role": "editor"})).await;
    let invitation = app
        .invite_one("space/s", &erin, "dana@example.com", Some("editor"))
        .await;
    let admins = app
        .link("space/s", &As::Admin, json!({"role": "creator"}))
        .await;
    // erin falls to viewer: she no longer holds `invite` (rule 4).
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "viewer"}),
    )
    .await;
    assert_problem(
        app.accept(&text(&link, "/code"), &who("zed")).await,
        410,
        "inviter_lost_privilege",
    )
    .await;
    let dana = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "dana".into(),
        Some("dana@example.com".into()),
    );
    assert_problem(
        app.accept(&text(&invitation, "/code"), &dana).await,
        410,
        "inviter_lost_privilege",
    )
    .await;
    // Back as an editor, her codes work again; gone, they do not.
    app.put(
        "/v1/resources/space/s/members/erin",
        &As::Admin,
        json!({"role": "editor"}),
    )
    .await;
    assert_eq!(
        app.accept(&text(&link, "/code"), &who("zed"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete("/v1/resources/space/s/members/erin", &erin)
            .await
            .status(),
        StatusCode::NO_CONTENT,
        "erin leaves"
    );
    assert_problem(
        app.accept(&text(&link, "/code"), &who("yan")).await,
        410,
        "inviter_lost_privilege",
    )
    .await;
    // The admin's own link is not subject to rule 4 (rule 8).
    assert_eq!(
        json_of(app.accept(&text(&admins, "/code"), &who("yan")).await).await["role"],
        "creator"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_accepts_of_a_one_use_link_admit_exactly_one() {
    let app = space().await;
    let link = app
        .link(
            "space/s",
            &alice(),
            json!({"role": "editor", "max_uses": 1}),
        )
        .await;
    let code = text(&link, "/code");
    let actors: Vec<As> = (0..16).map(|i| who(&format!("racer{i}"))).collect();
    let racers: Vec<_> = actors
        .iter()
        .map(|actor| app.accept(&code, actor))
        .collect();
    let mut statuses: Vec<u16> = Vec::new();
    let mut codes: Vec<Value> = Vec::new();
    for response in futures_join(racers).await {
        statuses.push(response.status().as_u16());
        codes.push(json_of(response).await["code"].clone());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    // The losers are told the link is spent, never a conflict (rule 9).
    assert_eq!(
        statuses.iter().filter(|s| **s == 410).count(),
        15,
        "{statuses:?}"
    );
    assert!(
        codes
            .iter()
            .filter(|c| !c.is_null())
            .all(|c| c == "invitation_exhausted"),
        "{codes:?}"
    );
    assert_eq!(app.members("space/s").await.len(), 2);
}

/// Runs the requests at once (each on its own task) and returns their responses in order.
async fn futures_join<F>(futures: Vec<F>) -> Vec<reqwest::Response>
where
    F: std::future::Future<Output = reqwest::Response>,
{
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<reqwest::Response>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(response) => *slot = Some(response),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|r| r.expect("every request answered"))
        .collect()
}
