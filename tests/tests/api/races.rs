//! Races over real HTTP: many requests at once against one resource must leave the state a
//! serial order would, and never break a rule (DESIGN rule 9: lost races are decided again).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn shared(app: TestApp) -> std::sync::Arc<TestApp> {
    std::sync::Arc::new(app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_users_race_for_a_one_use_link_and_one_joins() {
    let app = shared(spawn_app().await);
    app.register("space/race", "alice").await;
    let link = json_of(
        app.post(
            "/v1/resources/space/race/invite-links",
            &As::AdminFor("alice".into()),
            json!({"role": "editor", "max_uses": 1}),
        )
        .await,
    )
    .await;
    let code = link["code"].as_str().expect("a code").to_string();
    let attempts = (0..50)
        .map(|i| {
            let (app, code) = (app.clone(), code.clone());
            async move {
                let response = app
                    .post(
                        "/v1/invitations/accept",
                        &As::AdminFor(format!("user{i}")),
                        json!({ "code": code }),
                    )
                    .await;
                let status = response.status();
                (status, json_of(response).await)
            }
        })
        .collect();
    let outcomes = join_all(attempts).await;
    let joined = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .count();
    let exhausted = outcomes
        .iter()
        .filter(|(s, b)| s.as_u16() == 410 && b["code"] == "invitation_exhausted")
        .count();
    assert_eq!((joined, exhausted), (1, 49), "{outcomes:?}");
    let members = json_of(
        app.get("/v1/resources/space/race/members", &As::Admin)
            .await,
    )
    .await;
    assert_eq!(members["items"].as_array().expect("items").len(), 2);
    let links = json_of(
        app.get("/v1/resources/space/race/invite-links", &As::Admin)
            .await,
    )
    .await;
    assert_eq!(
        (
            links["items"][0]["uses"].as_u64(),
            links["items"][0]["status"].as_str()
        ),
        (Some(1), Some("exhausted"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_demoting_each_other_leave_an_owner() {
    let app = shared(spawn_app().await);
    for round in 0..20 {
        let resource = format!("space/duel{round}");
        app.register(&resource, "alice").await;
        let promoted = app
            .send(
                reqwest::Method::PUT,
                &format!("/v1/resources/{resource}/members/bob"),
                &As::AdminFor("alice".into()),
                Some(json!({"role": "owner"})),
            )
            .await;
        assert_eq!(promoted.status(), StatusCode::OK);
        let duel = [("alice", "bob"), ("bob", "alice")]
            .into_iter()
            .map(|(actor, target)| {
                let (app, resource) = (app.clone(), resource.clone());
                async move {
                    let path = format!("/v1/resources/{resource}/members/{target}");
                    app.send(
                        reqwest::Method::PUT,
                        &path,
                        &As::AdminFor(actor.into()),
                        Some(json!({"role": "viewer"})),
                    )
                    .await
                    .status()
                }
            })
            .collect();
        let statuses = join_all(duel).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "round {round}: {statuses:?}"
        );
        let members = json_of(
            app.get(&format!("/v1/resources/{resource}/members"), &As::Admin)
                .await,
        )
        .await;
        let owners = members["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|m| m["role"] == "owner")
            .count();
        assert_eq!(owners, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_resends_at_once_leave_one_live_code() {
    let app = shared(spawn_app().await);
    app.register("space/resend", "alice").await;
    let created = json_of(
        app.post(
            "/v1/resources/space/resend/invitations",
            &As::AdminFor("alice".into()),
            json!({"emails": ["gus@example.com"]}),
        )
        .await,
    )
    .await;
    let id = created["invited"][0]["invitation"]["id"]
        .as_u64()
        .expect("an id");
    let resends = (0..20)
        .map(|_| {
            let app = app.clone();
            async move {
                let response = app
                    .post(
                        &format!("/v1/resources/space/resend/invitations/{id}/resend"),
                        &As::AdminFor("alice".into()),
                        json!({}),
                    )
                    .await;
                assert_eq!(response.status(), StatusCode::OK);
                json_of(response).await["code"]
                    .as_str()
                    .expect("a code")
                    .to_string()
            }
        })
        .collect();
    let mut codes: Vec<String> = join_all(resends).await;
    codes.push(
        created["invited"][0]["invitation"]["code"]
            .as_str()
            .expect("the first code")
            .to_string(),
    );
    let mut live = 0;
    for code in &codes {
        let preview: Value = json_of(
            app.post(
                "/v1/invitations/preview",
                &As::Admin,
                json!({ "code": code }),
            )
            .await,
        )
        .await;
        match preview["status"].as_str() {
            Some("pending") => live += 1,
            Some("revoked") => {}
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!(live, 1, "exactly one of {} codes works", codes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotent_post_at_once_has_one_effect() {
    let app = shared(spawn_app().await);
    app.register("space/idem", "alice").await;
    let before = json_of(app.get("/healthz", &As::Nobody).await).await["position"]
        .as_u64()
        .expect("a position");
    let posts = (0..20)
        .map(|_| {
            let app = app.clone();
            async move {
                let response = app
                    .client
                    .post(app.url("/v1/resources/space/idem/invite-links"))
                    .bearer_auth(ADMIN_TOKEN)
                    .header("X-Roster-Actor", "alice")
                    .header("Idempotency-Key", "create-the-link-once")
                    .json(&json!({"role": "viewer"}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), StatusCode::CREATED);
                json_of(response).await["id"].as_u64().expect("an id")
            }
        })
        .collect();
    let ids = join_all(posts).await;
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let after = json_of(app.get("/healthz", &As::Nobody).await).await["position"]
        .as_u64()
        .expect("a position");
    assert_eq!(after, before + 1, "one event for twenty requests");
    let links = json_of(
        app.get("/v1/resources/space/idem/invite-links", &As::Admin)
            .await,
    )
    .await;
    assert_eq!(links["items"].as_array().expect("items").len(), 1);
}
