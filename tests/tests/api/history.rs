//! History: a resource's events, a principal's membership events, and the global log, with
//! paging and the `audit` scope.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// alice registers `space/s`, adds bob, makes a link that carol uses, and bob leaves.
async fn story() -> TestApp {
    let app = spawn_app().await;
    app.register("space/s", "alice").await;
    let alice = As::AdminFor("alice".into());
    app.put(
        "/v1/resources/space/s/members/bob",
        &alice,
        json!({"role": "editor"}),
    )
    .await;
    let link = app.link("space/s", &alice, json!({"role": "viewer"})).await;
    assert_eq!(
        app.accept(&text(&link, "/code"), &As::AdminFor("carol".into()))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.delete(
            "/v1/resources/space/s/members/bob",
            &As::AdminFor("bob".into())
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    app
}

fn types(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| text(e, "/type"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resources_history_lists_its_events_with_a_summary_each() {
    let app = story().await;
    let history = app.read("/v1/resources/space/s/history").await;
    assert_eq!(
        types(&history),
        [
            "ResourceRegistered",
            "MemberAdded",
            "InviteLinkCreated",
            "InviteLinkUsed",
            "MemberAdded",
            "MemberRemoved"
        ]
    );
    let items = history["items"].as_array().expect("items");
    let positions: Vec<u64> = items
        .iter()
        .map(|e| e["position"].as_u64().expect("a position"))
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5, 6]);
    for item in items {
        assert_eq!(item["resource"], "space/s");
        assert!(
            item["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && !s.contains('\n')),
            "{item}"
        );
        assert!(item["occurred_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
    }
    assert_eq!(items[1]["actor"], "alice");
    assert!(
        items[5]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("bob")),
        "{}",
        items[5]
    );
    assert!(
        !history.to_string().contains(&text(
            &app.read("/v1/resources/space/s/invite-links").await,
            "/items/0/code"
        )),
        "no code in the history"
    );
    assert_eq!(history["next"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_follow_positions() {
    let app = story().await;
    let first = app.read("/v1/resources/space/s/history?limit=4").await;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(4));
    assert_eq!(first["next"], 4);
    let rest = app
        .read("/v1/resources/space/s/history?after=4&limit=4")
        .await;
    assert_eq!(types(&rest), ["MemberAdded", "MemberRemoved"]);
    assert_eq!(rest["next"], Value::Null);
    assert_eq!(
        app.read("/v1/resources/space/s/history?after=6").await["items"],
        json!([])
    );
    for bad in ["limit=0", "after=-1", "after=x", "limit=many"] {
        assert_problem(
            app.get(&format!("/v1/resources/space/s/history?{bad}"), &As::Admin)
                .await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_history_spans_resources() {
    let app = story().await;
    app.register("team/17", "dan").await;
    app.put(
        "/v1/resources/team/17/members/bob",
        &As::Admin,
        json!({"role": "member"}),
    )
    .await;
    let bob = app.read("/v1/principals/bob/history").await;
    let rows: Vec<(String, String)> = bob["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| (text(e, "/type"), text(e, "/resource")))
        .collect();
    assert_eq!(
        rows,
        pairs(&[
            ("MemberAdded", "space/s"),
            ("MemberRemoved", "space/s"),
            ("MemberAdded", "team/17")
        ])
    );
    // The owner's registration is her membership event.
    assert_eq!(
        types(&app.read("/v1/principals/alice/history").await),
        ["ResourceRegistered"]
    );
    let paged = app.read("/v1/principals/bob/history?limit=2").await;
    assert_eq!(paged["items"].as_array().map(Vec::len), Some(2));
    let next = paged["next"].as_u64().expect("a next position");
    assert_eq!(
        types(
            &app.read(&format!("/v1/principals/bob/history?after={next}"))
                .await
        ),
        ["MemberAdded"]
    );
    assert_problem(
        app.get("/v1/principals/a%2Fb/history", &As::Admin).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_log_is_chained_and_paged_for_auditors() {
    let app = story().await;
    let auditor = As::Key(app.key("auditor", &["audit"], false, None).await);
    let response = app.get("/v1/events?limit=3", &auditor).await;
    assert_eq!(response.status(), StatusCode::OK);
    let first = json_of(response).await;
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    assert_eq!(first["next"], 3);
    assert_eq!(items[0]["prev_hash"], "0".repeat(64));
    for pair in items.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "chained");
        assert_eq!(
            pair[1]["position"].as_u64(),
            pair[0]["position"].as_u64().map(|p| p + 1),
            "gap-free"
        );
    }
    for field in [
        "position",
        "stream",
        "version",
        "event_id",
        "type",
        "schema",
        "occurred_at",
        "actor",
        "command_id",
        "data",
        "hash",
    ] {
        assert!(items[0].get(field).is_some(), "{field} in {}", items[0]);
    }
    assert_eq!(items[0]["stream"], "resource:space/s");
    // The key issued for the auditor is in the log as a digest only.
    let all = app.read("/v1/events?limit=1000").await;
    let positions: Vec<u64> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(positions, (1..=7).collect::<Vec<u64>>());
    assert_eq!(all["next"], Value::Null);
    let rest = app.read("/v1/events?after=6").await;
    assert_eq!(types(&rest), ["ApiKeyIssued"]);
    assert!(!rest.to_string().contains("rk_"), "{rest}");
    for bad in ["limit=0", "after=x"] {
        assert_problem(
            app.get(&format!("/v1/events?{bad}"), &As::Admin).await,
            400,
            "invalid_request",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_needs_view_history_or_the_audit_scope() {
    let app = story().await;
    // carol is a viewer: members yes, history no.
    let carol = As::Key(app.key("carol", &["read"], false, None).await);
    assert_eq!(
        app.get("/v1/resources/space/s/members", &carol)
            .await
            .status(),
        StatusCode::OK
    );
    assert_problem(
        app.get("/v1/resources/space/s/history", &carol).await,
        403,
        "forbidden",
    )
    .await;
    assert_problem(app.get("/v1/events", &carol).await, 403, "forbidden").await;
    // An auditor who is no member reads any resource's history and past rolemap.
    let auditor = As::Key(app.key("auditor", &["read", "audit"], false, None).await);
    assert_eq!(
        app.get("/v1/resources/space/s/history", &auditor)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/resources/space/s/members?at_position=2", &auditor)
            .await
            .status(),
        StatusCode::OK
    );
    // alice (owner) holds view_history.
    let alice = As::Key(app.key("alice", &["read"], false, None).await);
    assert_eq!(
        types(
            &json_of(
                app.get("/v1/resources/space/s/history?limit=1", &alice)
                    .await
            )
            .await
        ),
        ["ResourceRegistered"]
    );
}
