//! Expiry and exact past times without waiting: the engine writes a log with a manual clock
//! set in 2024, then the server opens that data directory now, when every expiry in it has
//! passed and every event has a known time.

use reqwest::StatusCode;
use roster_domain::{
    Actor, Command, Event, Principal, ResourceCommand, ResourceId, RoleName, ServerSecret,
    Timestamp,
};
use roster_engine::{Engine, EngineConfig};
use serde_json::json;

use crate::helpers::*;

/// The secret both the writing engine and the server derive codes from.
const SECRET: &str = "a-server-secret-for-the-past-tests";
const HOUR_MS: i64 = 3_600_000;

/// What the log of 2024 holds.
struct Past {
    app: TestApp,
    link: u64,
    link_code: String,
    invitation: u64,
    invitation_code: String,
    /// Bind it for as long as the server runs: dropping it deletes the data directory.
    _dir: tempfile::TempDir,
}

fn principal(name: &str) -> Principal {
    Principal::parse(name).expect("a principal")
}

/// At 2024-01-01T00:00Z alice registers `space/old`; at 01:00 bob joins as an editor and alice
/// makes a link expiring at 03:00 and invites dana for a day; at 02:00 bob becomes a viewer.
async fn past() -> Past {
    let dir = tempfile::tempdir().expect("temporary directory");
    let start = Timestamp::parse("2024-01-01T00:00:00Z").expect("a time");
    let (config, clock) =
        EngineConfig::deterministic(ServerSecret::new(SECRET.as_bytes().to_vec()), 7, start);
    let engine = Engine::open(
        dir.path(),
        roster_eventstore::SledOptions::default(),
        config,
    )
    .await
    .expect("an engine");
    let resource = ResourceId::parse("space/old").expect("a resource");
    let alice = Actor::Principal {
        principal: principal("alice"),
        email: None,
    };
    let run = |actor: Actor, command: ResourceCommand| {
        let engine = engine.clone();
        async move {
            engine
                .execute(roster_engine::Request::new(
                    actor,
                    Command::Resource(command),
                ))
                .await
                .expect("the command succeeds")
                .events
        }
    };
    run(
        alice.clone(),
        ResourceCommand::RegisterResource {
            resource: resource.clone(),
            owner: principal("alice"),
            parent: None,
        },
    )
    .await;
    clock.advance_ms(HOUR_MS);
    let editor = RoleName::parse("editor").expect("a role");
    run(
        Actor::Admin,
        ResourceCommand::SetMemberRole {
            resource: resource.clone(),
            principal: principal("bob"),
            role: editor.clone(),
        },
    )
    .await;
    let expires_at = Some(start.checked_add_ms(3 * HOUR_MS).expect("in range"));
    let events = run(
        alice.clone(),
        ResourceCommand::CreateInviteLink {
            resource: resource.clone(),
            role: Some(editor),
            expires_at,
            max_uses: None,
        },
    )
    .await;
    let Some(Event::InviteLinkCreated { number: link, .. }) = events.first() else {
        panic!("a link: {events:?}")
    };
    let emails = serde_json::from_value(json!(["dana@example.com"])).expect("an email list");
    let expires_at = Some(start.checked_add_ms(25 * HOUR_MS).expect("in range"));
    let events = run(
        alice,
        ResourceCommand::CreateInvitations {
            resource: resource.clone(),
            emails,
            role: None,
            expires_at,
            message: None,
        },
    )
    .await;
    let Some(Event::InvitationCreated {
        number: invitation, ..
    }) = events.first()
    else {
        panic!("an invitation: {events:?}")
    };
    clock.advance_ms(HOUR_MS);
    run(
        Actor::Admin,
        ResourceCommand::SetMemberRole {
            resource,
            principal: principal("bob"),
            role: RoleName::parse("viewer").expect("a role"),
        },
    )
    .await;
    let (link, invitation) = (*link, *invitation);
    let link_code = engine.code(link, 1).encode_base64();
    let invitation_code = engine.code(invitation, 1).encode_base64();
    engine.close().await;
    // sled keeps the directory locked while any handle to the engine lives.
    drop(engine);

    let app = spawn_app_in(dir.path(), |c| c.secret = Some(SECRET.into())).await;
    Past {
        app,
        link,
        link_code,
        invitation,
        invitation_code,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_opens_nothing_until_its_expiry_moves() {
    let Past {
        app,
        link,
        link_code,
        _dir: _kept,
        ..
    } = past().await;
    let listed = app.read("/v1/resources/space/old/invite-links").await;
    assert_eq!(listed["items"][0]["status"], "expired");
    assert_eq!(listed["items"][0]["expires_at"], "2024-01-01T03:00:00.000Z");
    assert_eq!(
        listed["items"][0]["code"],
        link_code.as_str(),
        "the server derives the same code from the same secret"
    );
    let preview = json_of(
        app.post(
            "/v1/invitations/preview",
            &As::Admin,
            json!({"code": link_code}),
        )
        .await,
    )
    .await;
    assert_eq!(preview["status"], "expired");
    assert_problem(
        app.accept(&link_code, &As::AdminFor("zed".into())).await,
        410,
        "invitation_expired",
    )
    .await;
    // A new expiry must lie in the future; one that does opens the link again.
    let path = format!("/v1/resources/space/old/invite-links/{link}");
    let alice = As::AdminFor("alice".into());
    assert_problem(
        app.patch(&path, &alice, json!({"expires_at": "2024-06-01T00:00:00Z"}))
            .await,
        400,
        "invalid_request",
    )
    .await;
    let changed = json_of(
        app.patch(&path, &alice, json!({"expires_at": "2999-01-01T00:00:00Z"}))
            .await,
    )
    .await;
    assert_eq!(changed["status"], "active");
    assert_eq!(
        json_of(app.accept(&link_code, &As::AdminFor("zed".into())).await).await["role"],
        "editor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_is_listed_as_such_and_revived_by_a_resend() {
    let Past {
        app,
        invitation,
        invitation_code,
        _dir: _kept,
        ..
    } = past().await;
    let expired = app
        .read("/v1/resources/space/old/invitations?status=expired")
        .await;
    assert_eq!(expired["items"][0]["id"], invitation);
    assert_eq!(
        app.read("/v1/resources/space/old/invitations?status=pending")
            .await["items"],
        json!([])
    );
    assert_eq!(
        app.read("/v1/invitations?email=dana@example.com").await["items"],
        json!([]),
        "not pending any more"
    );
    let dana = As::KeyFor(
        app.key("svc", &["write"], true, None).await,
        "dana".into(),
        Some("dana@example.com".into()),
    );
    assert_problem(
        app.accept(&invitation_code, &dana).await,
        410,
        "invitation_expired",
    )
    .await;
    let decline = app
        .post(
            "/v1/invitations/decline",
            &dana,
            json!({"code": invitation_code}),
        )
        .await;
    assert_problem(decline, 410, "invitation_expired").await;
    // A resend gives a new code valid for the original validity (a day) from now.
    let resent = app
        .post(
            &format!("/v1/resources/space/old/invitations/{invitation}/resend"),
            &As::AdminFor("alice".into()),
            json!({}),
        )
        .await;
    assert_eq!(resent.status(), StatusCode::OK);
    let resent = json_of(resent).await;
    assert_eq!(resent["status"], "pending");
    assert!(
        text(&resent, "/expires_at").as_str() > "2025-01-01",
        "{resent}"
    );
    assert_problem(
        app.accept(&invitation_code, &dana).await,
        410,
        "invitation_revoked",
    )
    .await;
    assert_eq!(
        json_of(app.accept(&text(&resent, "/code"), &dana).await).await["role"],
        "viewer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rolemap_as_of_exact_instants() {
    let Past {
        app, _dir: _kept, ..
    } = past().await;
    let cases = [
        ("2023-12-31T23:59:59.999Z", vec![]),
        ("2024-01-01T00:00:00Z", vec![("alice", "owner")]),
        ("2024-01-01T00:59:59.999Z", vec![("alice", "owner")]),
        (
            "2024-01-01T01:00:00.000Z",
            vec![("alice", "owner"), ("bob", "editor")],
        ),
        // The same instant written with an offset.
        (
            "2024-01-01T02:30:00%2B01:30",
            vec![("alice", "owner"), ("bob", "editor")],
        ),
        (
            "2024-01-01T02:00:00Z",
            vec![("alice", "owner"), ("bob", "viewer")],
        ),
        (
            "2026-01-01T00:00:00Z",
            vec![("alice", "owner"), ("bob", "viewer")],
        ),
    ];
    for (as_of, expected) in cases {
        let page = app
            .read(&format!("/v1/resources/space/old/members?as_of={as_of}"))
            .await;
        let members: Vec<(String, String)> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| (text(m, "/principal"), text(m, "/role")))
            .collect();
        assert_eq!(members, pairs(&expected), "as of {as_of}");
    }
    // bob's `since` is when he joined; the history has every event at its time.
    let bob = app
        .read("/v1/resources/space/old/members?as_of=2024-01-01T01:00:00Z")
        .await["items"][1]
        .clone();
    assert_eq!(bob["since"], "2024-01-01T01:00:00.000Z");
    let history = app.read("/v1/resources/space/old/history").await;
    let times: Vec<String> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| text(e, "/occurred_at"))
        .collect();
    assert_eq!(
        times,
        [
            "2024-01-01T00:00:00.000Z",
            "2024-01-01T01:00:00.000Z",
            "2024-01-01T01:00:00.000Z",
            "2024-01-01T01:00:00.000Z",
            "2024-01-01T02:00:00.000Z"
        ]
    );
}

/// `min_position` on one node: a position the log holds is met at once (its writes are
/// read-your-writes); one past the head, which no write answered, is a 400, on the native and
/// the seed routes alike (the same middleware for both, each answering in its own shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_position_is_met_at_once_and_refused_past_the_head() {
    let app = spawn_app().await;
    app.register("space/spc_m", "alice").await;
    let head = app.head().await;
    let members = format!("/v1/resources/space/spc_m/members?min_position={head}");
    assert_eq!(app.get(&members, &As::Admin).await.status(), StatusCode::OK);
    let by_header = app
        .client
        .get(app.url("/v1/resources/space/spc_m"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Min-Position", head.to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(by_header.status(), StatusCode::OK);
    let past = head + 1;
    let alice = As::AdminFor("alice".into());
    assert_problem(
        app.get(
            &format!("/v1/resources/space/spc_m/members?min_position={past}"),
            &alice,
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    let teable = app
        .get(
            &format!("/api/space/spc_m/invitation/link?min_position={past}"),
            &alice,
        )
        .await;
    assert_eq!(teable.status(), StatusCode::BAD_REQUEST);
    let body = json_of(teable).await;
    assert_eq!(
        (body["code"].as_str(), body["data"]["rosterCode"].as_str()),
        (Some("validation_error"), Some("invalid_request"))
    );
}
