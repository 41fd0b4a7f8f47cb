//! What the review of 2026-12-07 found (issue 15, docs/SECURITY.md "Findings"), one test per
//! finding, each on the native routes and on every seed route that reaches the same rule.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn actor(name: &str) -> As {
    As::AdminFor(name.into())
}

/// `space/s` owned by alice, with carol a creator, erin an editor (who may invite, below a
/// creator) and vic a viewer.
async fn space() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    app.grant(
        "space/s",
        &[("carol", "creator"), ("erin", "editor"), ("vic", "viewer")],
    )
    .await;
    app
}

/// The native list of `space/s`'s links as `who` sees it: `(id, code)` per link.
async fn native_codes(app: &TestApp, who: &As) -> Vec<(u64, Option<String>)> {
    let response = app.get("/v1/resources/space/s/invite-links", who).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = json_of(response).await;
    listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| {
            let code = l["code"].as_str().map(String::from);
            // The URL carries the code: shown together or not at all.
            assert_eq!(code.is_some(), l["url"].is_string(), "{l}");
            (l["id"].as_u64().expect("an id"), code)
        })
        .collect()
}

/// Teable's list of `spc`'s links as `who` sees it: the ids.
async fn teable_ids(app: &TestApp, space: &str, who: &As) -> Vec<String> {
    let response = app
        .get(&format!("/api/space/{space}/invitation/link"), who)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = json_of(response).await;
    listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|l| {
            assert!(l["invitationCode"].is_string(), "{l}");
            text(l, "/invitationId")
        })
        .collect()
}

/// Finding 1: a viewer listed a creator's link, copied its code and accepted it, and rule 5
/// raised it to creator. A code is now shown only to the link's creator and to those who
/// could have created it; a viewer sees the link without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_shown_only_to_its_creator_and_to_those_who_could_have_made_it() {
    let app = space().await;
    let creator_link = app
        .link("space/s", &actor("carol"), json!({ "role": "creator" }))
        .await;
    let viewer_link = app
        .link("space/s", &actor("carol"), json!({ "role": "viewer" }))
        .await;
    let (creator_id, viewer_id) = (
        creator_link["id"].as_u64().expect("id"),
        viewer_link["id"].as_u64().expect("id"),
    );
    let creator_code = text(&creator_link, "/code");
    let viewer_code = text(&viewer_link, "/code");

    let shown = |codes: &[(u64, Option<String>)], id: u64| {
        codes
            .iter()
            .find(|(i, _)| *i == id)
            .unwrap_or_else(|| panic!("link {id} is listed"))
            .1
            .clone()
    };
    // The viewer sees both links, neither code.
    let vic = native_codes(&app, &actor("vic")).await;
    assert_eq!(shown(&vic, creator_id), None);
    assert_eq!(shown(&vic, viewer_id), None);
    // The editor may invite viewers, not creators.
    let erin = native_codes(&app, &actor("erin")).await;
    assert_eq!(shown(&erin, creator_id), None);
    assert_eq!(
        shown(&erin, viewer_id).as_deref(),
        Some(viewer_code.as_str())
    );
    // The creator sees its own; the owner and the admin acting as nobody see every code.
    for who in [actor("carol"), actor("alice"), As::Admin] {
        let codes = native_codes(&app, &who).await;
        assert_eq!(
            shown(&codes, creator_id).as_deref(),
            Some(creator_code.as_str())
        );
        assert_eq!(
            shown(&codes, viewer_id).as_deref(),
            Some(viewer_code.as_str())
        );
    }
    // A key that only reads is handed no credential, even the owner's.
    let reader = app.key("alice", &["read", "audit"], false, None).await;
    let codes = native_codes(&app, &As::Key(reader)).await;
    assert!(codes.iter().all(|(_, code)| code.is_none()), "{codes:?}");

    // Teable's list: every body of its shape carries the code, so it lists only the links
    // whose code the caller may see.
    let teable_space = "spc_t";
    app.register(&format!("space/{teable_space}"), "alice")
        .await;
    app.put(
        &format!("/v1/resources/space/{teable_space}/members/vic"),
        &As::Admin,
        json!({ "role": "viewer" }),
    )
    .await;
    let made = app
        .post(
            &format!("/api/space/{teable_space}/invitation/link"),
            &actor("alice"),
            json!({ "role": "owner" }),
        )
        .await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made = json_of(made).await;
    assert_eq!(
        teable_ids(&app, teable_space, &actor("alice")).await,
        vec![text(&made, "/invitationId")]
    );
    assert!(teable_ids(&app, teable_space, &actor("vic"))
        .await
        .is_empty());

    // With nothing to copy, the viewer stays a viewer.
    assert_eq!(
        app.members("space/s")
            .await
            .into_iter()
            .find(|(p, _)| p == "vic"),
        Some(("vic".to_string(), "viewer".to_string()))
    );
}

/// Finding 14: a stranger got 403 for an existing link or invitation of a resource it cannot
/// see and 404 for a missing one, so it could map which numbers were the resource's. Both are
/// 404 now, on every route that takes such a number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_404_alike_for_existing_and_missing_links_and_invitations() {
    let app = space().await;
    let link = app.link("space/s", &actor("alice"), json!({})).await;
    let link_id = link["id"].as_u64().expect("id");
    let invitation = app
        .invite_one("space/s", &actor("alice"), "zoe@example.com", None)
        .await;
    let invitation_id = invitation["id"].as_u64().expect("id");
    let missing = 9_000_000u64;
    let stranger = actor("stranger");

    let mut answers = Vec::new();
    for id in [link_id, missing] {
        let path = format!("/v1/resources/space/s/invite-links/{id}");
        answers.push(app.patch(&path, &stranger, json!({ "max_uses": 5 })).await);
        answers.push(
            app.post(&format!("{path}/rotate"), &stranger, json!({}))
                .await,
        );
        answers.push(app.delete(&path, &stranger).await);
        let teable = format!("/api/space/s/invitation/link/{id}");
        answers.push(
            app.patch(&teable, &stranger, json!({ "role": "viewer" }))
                .await,
        );
        answers.push(app.delete(&teable, &stranger).await);
    }
    for id in [invitation_id, missing] {
        let path = format!("/v1/resources/space/s/invitations/{id}");
        answers.push(
            app.post(&format!("{path}/resend"), &stranger, json!({}))
                .await,
        );
        answers.push(app.delete(&path, &stranger).await);
    }
    // Each answer with its number written `N`: an existing number's must read as a missing
    // one's, word for word, or the detail would tell the stranger which numbers exist.
    let mut read = Vec::new();
    for answer in answers {
        let url = answer.url().to_string();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{url}");
        let body = answer.text().await.expect("a body");
        read.push(
            [link_id, invitation_id, missing]
                .iter()
                .fold(body, |body, id| body.replace(&id.to_string(), "N")),
        );
    }
    for (existing, absent) in (0..5)
        .map(|i| (i, i + 5))
        .chain((10..12).map(|i| (i, i + 2)))
    {
        assert_eq!(
            read[existing], read[absent],
            "answer {existing} against {absent}"
        );
    }

    // A member who may see the links still learns it may not change another's: 403.
    let erin_link = app.link("space/s", &actor("erin"), json!({})).await;
    let refused = app
        .delete(
            &format!(
                "/v1/resources/space/s/invite-links/{}",
                erin_link["id"].as_u64().expect("id")
            ),
            &actor("vic"),
        )
        .await;
    assert_problem(refused, 403, "forbidden").await;
    // And nothing changed.
    let listed: Value = app.read("/v1/resources/space/s/invite-links").await;
    assert!(listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|l| l["status"] == "active"));
}

/// The events of one resource's stream, from the global log (admin: every scope).
async fn stream_events(app: &TestApp, resource: &str) -> Vec<Value> {
    let stream = format!("resource:{resource}");
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .read(&format!("/v1/events?after={after}&limit=1000"))
            .await;
        let items = page["items"].as_array().expect("items").clone();
        events.extend(items.into_iter().filter(|e| e["stream"] == stream));
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// Finding 2, and its Must show 3: `PUT .../members/{p}` racing with a removal answered 500
/// about once in ten rounds although its change was appended (the handler read the member
/// back from the read model, which the removal had already changed). 200 rounds of two
/// races: a role change against the member leaving, and a role change by a manager against
/// that manager's removal. No answer is a 5xx, and every answer is what the log recorded: a
/// 200 only for an appended change, with the role and time of its event; a 403 only where the
/// manager's removal came first, as a serial loser would get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_racing_a_removal_answers_what_the_log_recorded_200_times() {
    let app = std::sync::Arc::new(spawn_app().await);
    let rounds = 200;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..rounds {
        let resource = format!("space/race{round}");
        app.register(&resource, "alice").await;
        for (who, role) in [("bob", "editor"), ("carol", "creator")] {
            app.put(
                &format!("/v1/resources/{resource}/members/{who}"),
                &As::Admin,
                json!({ "role": role }),
            )
            .await;
        }
        // Odd rounds: bob leaves while alice changes his role. Even rounds: alice removes
        // carol while carol changes bob's role.
        let (changer, remover, removed) = if round % 2 == 1 {
            ("alice", "bob", "bob")
        } else {
            ("carol", "alice", "carol")
        };
        let change = {
            let (app, resource) = (app.clone(), resource.clone());
            tokio::spawn(async move {
                let response = app
                    .put(
                        &format!("/v1/resources/{resource}/members/bob"),
                        &actor(changer),
                        json!({ "role": "commenter" }),
                    )
                    .await;
                let status = response.status().as_u16();
                (status, json_of(response).await)
            })
        };
        let removal = {
            let (app, resource) = (app.clone(), resource.clone());
            tokio::spawn(async move {
                app.delete(
                    &format!("/v1/resources/{resource}/members/{removed}"),
                    &actor(remover),
                )
                .await
                .status()
                .as_u16()
            })
        };
        let (change, removal) = (change.await.expect("task"), removal.await.expect("task"));
        let (change_status, body) = change;
        assert!(change_status < 500, "round {round}: {change_status} {body}");
        assert_eq!(removal, 204, "round {round}");

        let events = stream_events(&app, &resource).await;
        let removed_at = events
            .iter()
            .find(|e| e["type"] == "MemberRemoved" && e["data"]["principal"] == removed)
            .and_then(|e| e["position"].as_u64())
            .expect("the removal was appended");
        let changed = events.iter().find(|e| {
            matches!(
                e["type"].as_str(),
                Some("MemberRoleChanged" | "MemberAdded")
            ) && e["data"]["principal"] == "bob"
                && e["data"]["role"] == "commenter"
        });
        match (change_status, changed) {
            (200, Some(event)) => {
                assert_eq!(body["role"], "commenter", "round {round}");
                assert_eq!(body["principal"], "bob", "round {round}");
                assert_eq!(body["since"], event["occurred_at"], "round {round}");
                // A manager's change counts only if it came before the manager's removal.
                if changer == "carol" {
                    assert!(
                        event["position"].as_u64() < Some(removed_at),
                        "round {round}"
                    );
                }
            }
            (403, None) => {
                // Only a serial loser is refused: carol, already removed.
                assert_eq!(changer, "carol", "round {round}: {body}");
                assert_eq!(body["code"], "forbidden", "round {round}");
            }
            (status, event) => panic!("round {round}: answered {status} {body}, logged {event:?}"),
        }
        *outcomes.entry((changer, change_status)).or_insert(0u32) += 1;
    }
    let total: u32 = outcomes.values().sum();
    assert_eq!(total, rounds);
    eprintln!("{rounds} rounds, (changer, status) -> count: {outcomes:?}");
}

/// Finding 3: addresses were compared after full Unicode lowercasing, so `\u{212A}ate` (the
/// Kelvin sign) was kate, and a key with the look-alike address accepted kate's invitation.
/// Every comparison now uses one normal form (ASCII letters folded, the domain in IDNA ASCII
/// form), on the native accept, Teable's accept and the pending-invitations lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_alike_address_is_another_address_everywhere() {
    let app = space().await;
    let kate = app
        .invite_one(
            "space/s",
            &actor("alice"),
            "kate@example.com",
            Some("editor"),
        )
        .await;
    let code = text(&kate, "/code");
    let id = kate["id"].as_u64().expect("id");
    let kelvin = "\u{212A}ate@example.com";

    // A user key whose verified email is the look-alike.
    let mallory = app
        .key("mallory", &["read", "write"], false, Some(kelvin))
        .await;
    let refused = app.accept(&code, &As::Key(mallory.clone())).await;
    assert_problem(refused, 403, "invitation_email_mismatch").await;
    // A service key vouching for the look-alike, on Teable's route.
    let host = app.key("host", &["read", "write"], true, None).await;
    let teable = app
        .post(
            "/api/invitation/link/accept",
            // Percent-encoded: header values outside ASCII are not portable.
            &As::KeyFor(host.clone(), "mallory".into(), Some(urlencode(kelvin))),
            json!({ "invitationId": id.to_string(), "invitationCode": code }),
        )
        .await;
    assert_eq!(teable.status(), StatusCode::FORBIDDEN);
    // Nor does the look-alike find kate's invitation.
    let pending = app
        .get(
            &format!("/v1/invitations?email={}", urlencode(kelvin)),
            &As::Key(mallory),
        )
        .await;
    assert_eq!(pending.status(), StatusCode::OK);
    assert_eq!(json_of(pending).await["items"], json!([]));

    // Kate, in any ASCII case and with an upper-case domain, is kate.
    let accepted = app
        .accept(
            &code,
            &As::KeyFor(host, "kate".into(), Some("KATE@Example.COM".into())),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(json_of(accepted).await["principal"], "kate");

    // An address with an invisible format character is refused, per address.
    let outcome = app
        .invite(
            "space/s",
            &actor("alice"),
            json!({ "emails": ["ok@example.com", "z\u{200B}oe@example.com"] }),
        )
        .await;
    assert_eq!(outcome["invited"][0]["email"], "ok@example.com");
    assert_eq!(
        outcome["email_errors"][0]["email"],
        "z\u{200B}oe@example.com"
    );
}

/// Percent-encodes a query value (UTF-8 bytes; unreserved characters as they are).
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Finding 8: an `audit` key got 403 for a resource's members but today's rolemap through
/// `as_of=2999-01-01` or a position past the head. Now `audit` reads every resource's members,
/// links, invitations (without codes) and history, now and in the past, and any principal's
/// memberships and history; a time in the future or a position past the head is a 400 for
/// everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_key_reads_the_present_and_the_past_alike_and_nothing_it_could_act_with() {
    let app = space().await;
    app.link("space/s", &actor("alice"), json!({ "role": "creator" }))
        .await;
    app.invite_one("space/s", &actor("alice"), "zoe@example.com", None)
        .await;
    let auditor = As::Key(app.key("auditor", &["audit"], false, None).await);
    let head = app.head().await;

    let now = json_of(app.get("/v1/resources/space/s/members", &auditor).await).await;
    let past = json_of(
        app.get(
            &format!("/v1/resources/space/s/members?at_position={head}"),
            &auditor,
        )
        .await,
    )
    .await;
    assert_eq!(now["items"].as_array().map(Vec::len), Some(4), "{now}");
    assert_eq!(now["items"], past["items"]);
    for path in [
        "/v1/resources/space/s",
        "/v1/resources/space/s/history",
        "/v1/resources/space/s/invitations",
        "/v1/principals/vic/memberships",
        "/v1/principals/vic/history",
    ] {
        assert_eq!(
            app.get(path, &auditor).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let links = json_of(
        app.get("/v1/resources/space/s/invite-links", &auditor)
            .await,
    )
    .await;
    let links = links["items"].as_array().expect("items");
    assert_eq!(links.len(), 1);
    assert!(
        links[0].get("code").is_none() && links[0].get("url").is_none(),
        "{links:?}"
    );
    // It acts on nothing.
    let refused = app
        .post("/v1/resources/space/s/invite-links", &auditor, json!({}))
        .await;
    assert_problem(refused, 403, "forbidden").await;

    // Past the present, for the auditor and the admin alike.
    for who in [&auditor, &As::Admin] {
        let future = app
            .get(
                "/v1/resources/space/s/members?as_of=2999-01-01T00:00:00Z",
                who,
            )
            .await;
        assert_problem(future, 400, "invalid_request").await;
        let past_head = app
            .get(
                &format!("/v1/resources/space/s/members?at_position={}", head + 1000),
                who,
            )
            .await;
        assert_problem(past_head, 400, "invalid_request").await;
    }
}

/// POSTs a raw JSON body with an `Idempotency-Key`, as the admin acting for `principal`.
async fn post_raw(
    app: &TestApp,
    path: &str,
    principal: &str,
    key: &str,
    body: &str,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", principal)
        .header("Idempotency-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("sent")
}

/// Finding 9: an `Idempotency-Key` reused with another body ran a new command. The same key
/// with the same body, however it is spaced or its members ordered, answers the first
/// response; with another body it is 422 `idempotency_key_reused` and appends nothing, on the
/// native routes and the seed routes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_another_body_is_refused_on_every_route_family() {
    let app = space().await;
    app.register("space/spc_t", "alice").await;
    app.register("workspace/9", "alice").await;
    let cases = [
        (
            "/v1/resources/space/s/invite-links",
            r#"{"role":"viewer","max_uses":3}"#,
            "{ \"max_uses\" : 3,\n  \"role\" : \"viewer\" }",
            r#"{"role":"viewer","max_uses":4}"#,
        ),
        (
            "/v1/resources/space/s/invitations",
            r#"{"emails":["a@example.com"]}"#,
            r#"  {"emails": [ "a@example.com" ] }"#,
            r#"{"emails":["b@example.com"]}"#,
        ),
        (
            "/api/space/spc_t/invitation/link",
            r#"{"role":"viewer"}"#,
            r#"{ "role": "viewer" }"#,
            r#"{"role":"editor"}"#,
        ),
        (
            "/workspaces/9/invitations",
            r#"{"invitation":{"emails":"c@example.com","role_name":"viewer"}}"#,
            r#"{"invitation": {"role_name": "viewer", "emails": "c@example.com"}}"#,
            r#"{"invitation":{"emails":"d@example.com","role_name":"viewer"}}"#,
        ),
    ];
    for (path, body, respaced, other) in cases {
        let first = post_raw(&app, path, "alice", "key-9", body).await;
        let status = first.status();
        assert!(status.is_success(), "{path}: {status}");
        let first = json_of(first).await;
        let head = app.head().await;
        let again = post_raw(&app, path, "alice", "key-9", respaced).await;
        assert_eq!(again.status(), status, "{path}");
        assert_eq!(json_of(again).await, first, "{path}: the first response");
        let reused = post_raw(&app, path, "alice", "key-9", other).await;
        assert_eq!(reused.status().as_u16(), 422, "{path}");
        let refusal = json_of(reused).await;
        // In each family's own error shape: native and Teable carry the code, Onehub's
        // `{error, share}` the words.
        let said = refusal.to_string();
        assert!(
            said.contains("idempotency_key_reused")
                || said.contains("first used with another body"),
            "{path}: {refusal}"
        );
        assert_eq!(app.head().await, head, "{path}: nothing appended");
    }
}

/// Finding 12: a webhook URL with `user:password@` was stored and listed in clear. It is
/// refused, 422 `invalid_url`, with a pointer to the signature a receiver checks instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_with_credentials_is_refused() {
    let app = spawn_app().await;
    for url in [
        "https://hook:s3cret@receiver.example/roster",
        "http://user@receiver.example",
        "https://a:b@receiver.example?next=/x@y",
    ] {
        let refused = app
            .post(
                "/v1/webhooks",
                &As::Admin,
                json!({ "url": url, "events": [] }),
            )
            .await;
        let body = assert_problem(refused, 422, "invalid_url").await;
        assert!(
            text(&body, "/detail").contains("Roster-Signature"),
            "{body}"
        );
    }
    // An @ after the authority is no credential.
    let fine = app
        .post(
            "/v1/webhooks",
            &As::Admin,
            json!({ "url": "https://receiver.example/hooks?owner=a@b.io", "events": [] }),
        )
        .await;
    assert_eq!(fine.status(), StatusCode::CREATED);
    let listed = app.read("/v1/webhooks").await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

/// Finding 13: a resource's view kept the registering owner in `owner` after the highest role
/// had moved on. It lists the current holders of the highest role instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_shows_who_holds_its_highest_role_now() {
    let app = space().await;
    let view = app.read("/v1/resources/space/s").await;
    assert_eq!(
        (view["owners"].clone(), view["owner_count"].clone()),
        (json!(["alice"]), json!(1))
    );
    // alice makes carol an owner and leaves.
    let promoted = app
        .put(
            "/v1/resources/space/s/members/carol",
            &actor("alice"),
            json!({ "role": "owner" }),
        )
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let view = app.read("/v1/resources/space/s").await;
    assert_eq!(view["owners"], json!(["alice", "carol"]));
    let left = app
        .delete("/v1/resources/space/s/members/alice", &actor("alice"))
        .await;
    assert_eq!(left.status(), StatusCode::NO_CONTENT);
    let view = app.read("/v1/resources/space/s").await;
    assert_eq!(
        (view["owners"].clone(), view["owner_count"].clone()),
        (json!(["carol"]), json!(1))
    );
    assert_eq!(view["member_count"], 3);
    assert!(view.get("owner").is_none(), "{view}");
}

/// Finding 16: unknown query parameters were ignored while unknown body fields were refused,
/// so a misspelt `as_of` answered today's rolemap. Every native route refuses them, 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_query_parameter_is_refused_on_every_native_route() {
    let app = space().await;
    for (method, template) in ROUTES {
        let path = concrete(template);
        let response = app
            .send(
                method_of(method),
                &format!("{path}?asof=2020-01-01T00:00:00Z"),
                &As::Admin,
                None,
            )
            .await;
        let body = assert_problem(response, 400, "invalid_request").await;
        assert!(
            text(&body, "/detail").contains("\"asof\""),
            "{method} {path}: {body}"
        );
    }
    // A known one still works, percent-encoded or not.
    let members = app
        .get("/v1/resources/space/s/members?l%69mit=1", &As::Admin)
        .await;
    assert_eq!(members.status(), StatusCode::OK);
    // The seed routes ignore what they do not know, as they do in bodies.
    let teable = app
        .get("/api/space/s/invitation/link?viewId=x", &actor("alice"))
        .await;
    assert_eq!(teable.status(), StatusCode::OK);
}

fn method_of(name: &str) -> reqwest::Method {
    reqwest::Method::from_bytes(name.as_bytes()).expect("a method")
}

/// Finding 10: with two `X-Roster-Actor` or two `Authorization` headers the first won
/// silently; which actor or credential a request carries must never be a guess. Both are
/// 400, as is a second `X-Roster-Actor-Email` or `Idempotency-Key`. And a principal outside
/// ASCII is named percent-encoded (or as raw UTF-8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_names_someone_twice_is_refused_and_names_outside_ascii_work() {
    let app = space().await;
    let other_key = app.key("vic", &["read", "write"], false, None).await;
    let doubled = [
        ("x-roster-actor", "alice", "vic"),
        (
            "authorization",
            "Bearer test-admin-token-0123456789",
            &format!("Bearer {other_key}"),
        ),
        ("x-roster-actor-email", "a@example.com", "b@example.com"),
    ];
    for (name, first, second) in doubled {
        let mut request = app.client.get(app.url("/v1/resources/space/s/members"));
        if name != "authorization" {
            request = request.bearer_auth(ADMIN_TOKEN);
        }
        let response = request
            .header(name, first)
            .header(name, second.to_string())
            .send()
            .await
            .expect("sent");
        let body = assert_problem(response, 400, "invalid_request").await;
        assert!(
            text(&body, "/detail").contains("more than once"),
            "{name}: {body}"
        );
    }
    let response = app
        .client
        .post(app.url("/v1/resources/space/s/invite-links"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "alice")
        .header("Idempotency-Key", "k1")
        .header("Idempotency-Key", "k2")
        .json(&json!({}))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "invalid_request").await;

    // émile, named percent-encoded, then as raw UTF-8: the same principal.
    let added = app
        .client
        .put(app.url("/v1/resources/space/s/members/%C3%A9mile"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "alice")
        .json(&json!({ "role": "editor" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(added.status(), StatusCode::OK);
    for named in ["%C3%A9mile", "émile"] {
        let link = app
            .client
            .post(app.url("/v1/resources/space/s/invite-links"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Roster-Actor", named)
            .json(&json!({ "role": "viewer" }))
            .send()
            .await
            .expect("sent");
        assert_eq!(link.status(), StatusCode::CREATED, "{named}");
        assert_eq!(json_of(link).await["created_by"], "émile");
    }
}

/// Every page of `path` (which takes `limit` and `after`), `limit` at a time: the items of
/// each page, and the page count.
async fn pages(app: &TestApp, path: &str, limit: usize) -> (Vec<Value>, usize) {
    let joiner = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut after: Option<Value> = None;
    for count in 1.. {
        let from = match &after {
            Some(Value::String(s)) => format!("&after={}", urlencode(s)),
            Some(Value::Number(n)) => format!("&after={n}"),
            _ => String::new(),
        };
        let page = app
            .read(&format!("{path}{joiner}limit={limit}{from}"))
            .await;
        let got = page["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit, "{path}: {page}");
        items.extend(got);
        match &page["next"] {
            Value::Null => return (items, count),
            next => after = Some(next.clone()),
        }
    }
    unreachable!("pages end")
}

/// Expected by users: every list pages with `limit`, `after` and `next`, and a resource's
/// invitations filter by status and by address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_with_limit_after_and_next() {
    let app = space().await;
    for _ in 0..5 {
        app.link("space/s", &actor("alice"), json!({})).await;
    }
    let (links, count) = pages(&app, "/v1/resources/space/s/invite-links", 2).await;
    assert_eq!((links.len(), count), (5, 3));
    let ids: Vec<u64> = links.iter().filter_map(|l| l["id"].as_u64()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    for address in ["a@x.io", "b@x.io", "c@x.io", "Dee@X.io"] {
        app.invite_one("space/s", &actor("alice"), address, None)
            .await;
    }
    let revoked = app
        .invite_one("space/s", &actor("alice"), "e@x.io", None)
        .await;
    app.delete(
        &format!("/v1/resources/space/s/invitations/{}", revoked["id"]),
        &actor("alice"),
    )
    .await;
    let (all, count) = pages(&app, "/v1/resources/space/s/invitations", 2).await;
    assert_eq!((all.len(), count), (5, 3));
    let (pending, _) = pages(&app, "/v1/resources/space/s/invitations?status=pending", 3).await;
    assert_eq!(pending.len(), 4);
    let (gone, _) = pages(&app, "/v1/resources/space/s/invitations?status=revoked", 3).await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0]["email"], "e@x.io");
    let (dee, _) = pages(
        &app,
        "/v1/resources/space/s/invitations?email=dee%40x.io",
        3,
    )
    .await;
    assert_eq!(dee.len(), 1, "the address compares in normal form");
    assert_eq!(dee[0]["email"], "Dee@X.io");

    for n in 0..4 {
        app.register(&format!("team/t{n}"), "vic").await;
    }
    let (memberships, count) = pages(&app, "/v1/principals/vic/memberships", 2).await;
    assert_eq!((memberships.len(), count), (5, 3));

    for n in 0..3 {
        app.key(&format!("k{n}"), &["read"], false, None).await;
    }
    let (keys, count) = pages(&app, "/v1/api-keys", 2).await;
    assert_eq!((keys.len(), count), (3, 2));

    for n in 0..3 {
        let made = app
            .post(
                "/v1/webhooks",
                &As::Admin,
                json!({ "url": format!("https://receiver.example/{n}"), "events": [] }),
            )
            .await;
        assert_eq!(made.status(), StatusCode::CREATED);
    }
    let (hooks, count) = pages(&app, "/v1/webhooks", 2).await;
    assert_eq!((hooks.len(), count), (3, 2));

    let (resources, _) = pages(&app, "/v1/resources?kind=team", 3).await;
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert_eq!(names, ["team/t0", "team/t1", "team/t2", "team/t3"]);
    assert_eq!(resources[0]["owners"], json!(["vic"]));
    let (everything, _) = pages(&app, "/v1/resources", 2).await;
    assert_eq!(everything.len(), 5);
}

/// Expected by users: one link or invitation by id (a stranger gets 404 for either), the
/// resources under a parent, and a user key that may not list resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_link_one_invitation_and_the_resource_list() {
    let app = space().await;
    let link = app
        .link("space/s", &actor("carol"), json!({ "role": "creator" }))
        .await;
    let id = link["id"].as_u64().expect("id");
    let path = format!("/v1/resources/space/s/invite-links/{id}");
    let as_carol = json_of(app.get(&path, &actor("carol")).await).await;
    assert_eq!(as_carol, link);
    let as_vic = json_of(app.get(&path, &actor("vic")).await).await;
    assert!(
        as_vic.get("code").is_none() && as_vic["id"] == id,
        "{as_vic}"
    );
    let invitation = app
        .invite_one("space/s", &actor("alice"), "zoe@example.com", None)
        .await;
    let invitation_path = format!("/v1/resources/space/s/invitations/{}", invitation["id"]);
    let shown = app.read(&invitation_path).await;
    assert_eq!(shown["email"], "zoe@example.com");
    assert!(shown.get("code").is_none(), "{shown}");
    for path in [
        path.as_str(),
        invitation_path.as_str(),
        "/v1/resources/space/s/invite-links/777",
    ] {
        let response = app.get(path, &actor("stranger")).await;
        assert_problem(response, 404, "not_found").await;
    }

    let child = app
        .post(
            "/v1/resources",
            &As::Admin,
            json!({ "resource": "folder/f1", "owner": "alice", "parent": "workspace/w" }),
        )
        .await;
    assert_eq!(child.status(), StatusCode::CREATED);
    let (under, _) = pages(&app, "/v1/resources?parent=workspace%2Fw", 10).await;
    assert_eq!(under.len(), 1);
    assert_eq!(under[0]["resource"], "folder/f1");
    let user = app.key("vic", &["read"], false, None).await;
    let refused = app.get("/v1/resources", &As::Key(user)).await;
    assert_problem(refused, 403, "forbidden").await;
}

/// Expected by users: a signed-in user accepts an invitation to its verified address by id,
/// without the mailed code; any other address gets 404, and the invitation is used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_accepted_by_id_by_its_addressee_only() {
    let app = space().await;
    let invitation = app
        .invite_one(
            "space/s",
            &actor("alice"),
            "Kate@Example.com",
            Some("editor"),
        )
        .await;
    let id = invitation["id"].as_u64().expect("id");
    let kate = As::Key(
        app.key("kate", &["read", "write"], false, Some("kate@example.com"))
            .await,
    );
    // What the host shows her: her pending invitations.
    let mine = json_of(
        app.get("/v1/invitations?email=kate@example.com", &kate)
            .await,
    )
    .await;
    assert_eq!(mine["items"][0]["id"], id);

    let mallory = As::Key(
        app.key(
            "mallory",
            &["read", "write"],
            false,
            Some("mallory@example.com"),
        )
        .await,
    );
    let path = format!("/v1/invitations/{id}/accept");
    // Another address, or no verified address at all: as if there were no such invitation.
    for who in [&mallory, &actor("nobody-with-an-email")] {
        let refused = app.post(&path, who, json!({})).await;
        assert_problem(refused, 404, "not_found").await;
    }
    let accepted = app.post(&path, &kate, json!({})).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let accepted = json_of(accepted).await;
    assert_eq!(
        (
            accepted["principal"].clone(),
            accepted["role"].clone(),
            accepted["changed"].clone()
        ),
        (json!("kate"), json!("editor"), json!(true))
    );
    let again = app.post(&path, &kate, json!({})).await;
    assert_problem(again, 410, "invitation_used").await;
}

/// Expected by users: a pasted code with spaces around it, or the whole invite URL, is
/// understood on every route that takes a code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_code_or_a_whole_invite_url_is_understood() {
    let app = space().await;
    let link = app
        .link("space/s", &actor("alice"), json!({ "role": "viewer" }))
        .await;
    let (code, url) = (text(&link, "/code"), text(&link, "/url"));
    let preview = app
        .post(
            "/v1/invitations/preview",
            &actor("p1"),
            json!({ "code": format!("  {code}\n") }),
        )
        .await;
    assert_eq!(preview.status(), StatusCode::OK);
    let accepted = app.accept(&format!(" {url} "), &actor("p2")).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let teable = app
        .post(
            "/api/invitation/link/accept",
            &actor("p3"),
            json!({ "invitationId": link["id"].as_u64().expect("id").to_string(), "invitationCode": format!("{code} ") }),
        )
        .await;
    assert_eq!(teable.status(), StatusCode::CREATED);
    let onedata = app
        .post(
            "/api/v3/onezone/user/spaces/join",
            &actor("p4"),
            json!({ "token": url }),
        )
        .await;
    assert!(onedata.status().is_success(), "{}", onedata.status());
}

/// Expected by users: CORS is off unless origins are listed; then a listed origin's preflight
/// and request are allowed and any other origin gets no CORS header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_on_for_listed_origins() {
    let preflight = |app: &TestApp, origin: &str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                app.url("/v1/resources/space/s/members"),
            )
            .header("Origin", origin.to_string())
            .header("Access-Control-Request-Method", "GET")
            .header(
                "Access-Control-Request-Headers",
                "authorization,x-roster-actor",
            )
            .send()
    };
    let closed = spawn_app().await;
    let answer = preflight(&closed, "https://app.example")
        .await
        .expect("sent");
    assert!(answer
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    let open = spawn_app_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    open.register("space/s", "alice").await;
    let answer = preflight(&open, "https://app.example").await.expect("sent");
    assert!(answer.status().is_success(), "{}", answer.status());
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = answer.headers()["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-roster-actor"),
        "{allowed}"
    );
    let read = open
        .client
        .get(open.url("/v1/resources/space/s/members"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Origin", "https://app.example")
        .send()
        .await
        .expect("sent");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(read.headers()["access-control-expose-headers"]
        .to_str()
        .expect("text")
        .contains("x-roster-position"));
    let other = preflight(&open, "https://evil.example")
        .await
        .expect("sent");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// Finding 11: principals with format characters (U+200B, U+202E, U+FEFF: Unicode's category
/// Cf) were accepted and printed as other names in `roster audit`; and a principal named
/// `admin` was written into events exactly as the admin was. Both are refused or told apart
/// now: the admin acting as nobody is `roster/admin`, which no principal can be (no `/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_invisible_characters_are_refused_and_the_admin_is_unambiguous() {
    let app = space().await;
    for sneaky in [
        "ali\u{200B}ce",
        "\u{202E}ecila",
        "\u{FEFF}alice",
        "bob\u{2060}",
    ] {
        let encoded = urlencode(sneaky);
        let put = app
            .put(
                &format!("/v1/resources/space/s/members/{encoded}"),
                &actor("alice"),
                json!({ "role": "viewer" }),
            )
            .await;
        assert_problem(put, 400, "invalid_request").await;
        let register = app
            .post(
                "/v1/resources",
                &As::Admin,
                json!({ "resource": "space/sneaky", "owner": sneaky }),
            )
            .await;
        assert_problem(register, 400, "invalid_request").await;
        let acting = app
            .client
            .get(app.url("/v1/resources/space/s/members"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Roster-Actor", encoded)
            .send()
            .await
            .expect("sent");
        assert_problem(acting, 400, "invalid_request").await;
    }
    // The admin as nobody, and a principal called admin, are two actors in the log.
    app.link("space/s", &As::Admin, json!({})).await;
    app.put(
        "/v1/resources/space/s/members/admin",
        &As::Admin,
        json!({ "role": "editor" }),
    )
    .await;
    app.link("space/s", &actor("admin"), json!({})).await;
    let history = app.read("/v1/resources/space/s/history").await;
    let actors: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|h| h["type"] == "InviteLinkCreated")
        .filter_map(|h| h["actor"].as_str())
        .collect();
    assert_eq!(actors, ["roster/admin", "admin"]);
}

/// Finding 15: error details named the domain's enum variants (`[ManageMembers]`). They name
/// privileges as the API does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_privileges_as_the_api_does() {
    let app = space().await;
    let refused = app
        .put(
            "/v1/resources/space/s/members/zed",
            &actor("vic"),
            json!({ "role": "viewer" }),
        )
        .await;
    let body = assert_problem(refused, 403, "forbidden").await;
    let detail = text(&body, "/detail");
    assert!(detail.contains("manage_members"), "{detail}");
    let invite = app
        .post(
            "/v1/resources/space/s/invite-links",
            &actor("vic"),
            json!({}),
        )
        .await;
    let detail = text(&assert_problem(invite, 403, "forbidden").await, "/detail");
    assert!(detail.contains("invite or manage_invitations"), "{detail}");
    assert!(
        !detail.contains('[') && !detail.contains("Invite,"),
        "{detail}"
    );
}

/// A method a route does not take is 405, whatever its query says (the query check runs only
/// for the operations the document lists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_method_is_405_before_any_query_is_read() {
    let app = spawn_app().await;
    let response = app
        .send(
            reqwest::Method::from_bytes(b"TRACE").expect("a method"),
            "/v1/events?after=0&limit=1",
            &As::Admin,
            None,
        )
        .await;
    assert_problem(response, 405, "method_not_allowed").await;
}
