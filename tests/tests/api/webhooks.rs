//! Webhooks against a real HTTP receiver on 127.0.0.1: every wanted event arrives signed,
//! in log order, after retries when the receiver fails, and every attempt is on record.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use roster_server::workers::Retry;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;

/// What the receiver got: the signature header and the body of each request.
#[derive(Default)]
struct Received {
    requests: Vec<(String, Vec<u8>)>,
    /// Requests to answer 500 before answering 204.
    failures_left: usize,
}

async fn receiver(failures: usize) -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received {
        requests: Vec::new(),
        failures_left: failures,
    }));
    let state = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = Arc::clone(&state);
            async move {
                let signature = headers
                    .get("roster-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let mut received = state.lock().expect("unpoisoned");
                received.requests.push((signature, body.to_vec()));
                if received.failures_left > 0 {
                    received.failures_left -= 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let address = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_string()),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes()) == v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_in_order_after_retries() {
    let (url, received) = receiver(2).await;
    let app = spawn_app_with(|c| {
        c.retry.webhook = Retry {
            initial_ms: 10,
            max_ms: 50,
            attempts_max: 10,
        }
    })
    .await;
    let created = app
        .post(
            "/v1/webhooks",
            &As::Admin,
            json!({"url": url, "events": ["ResourceRegistered", "MemberAdded"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let hook = json_of(created).await;
    let secret = hook["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_string();
    let id = hook["id"].as_u64().expect("an id");
    let listed = json_of(app.get("/v1/webhooks", &As::Admin).await).await;
    assert!(
        listed["items"][0].get("secret").is_none(),
        "the secret is never listed"
    );

    app.register("space/a", "alice").await;
    app.register("space/b", "bea").await;
    for (resource, member) in [
        ("space/a", "bob"),
        ("space/b", "dave"),
        ("space/a", "carol"),
    ] {
        let path = format!("/v1/resources/{resource}/members/{member}");
        let added = app
            .send(
                reqwest::Method::PUT,
                &path,
                &As::Admin,
                Some(json!({"role": "viewer"})),
            )
            .await;
        assert_eq!(added.status(), StatusCode::OK);
    }
    // A link is not wanted, so it must not arrive.
    let link = app
        .post("/v1/resources/space/a/invite-links", &As::Admin, json!({}))
        .await;
    assert_eq!(link.status(), StatusCode::CREATED);

    let delivered = |received: &Received| received.requests.len().saturating_sub(2);
    roster_tests::poll::until("all five events arrived", || async {
        match delivered(&received.lock().expect("unpoisoned")) {
            5.. => Ok(()),
            fewer => Err(fewer),
        }
    })
    .await;
    let requests = received.lock().expect("unpoisoned").requests.clone();
    let bodies: Vec<Value> = requests
        .iter()
        .map(|(_, body)| serde_json::from_slice(body).expect("JSON"))
        .collect();
    for (signature, body) in &requests {
        assert!(
            verify(&secret, signature, body),
            "a bad signature: {signature}"
        );
        assert!(!verify("another secret", signature, body));
    }
    // The first event was refused twice, then accepted: three requests for position 1.
    let positions: Vec<u64> = bodies
        .iter()
        .map(|b| b["position"].as_u64().expect("a position"))
        .collect();
    assert_eq!(&positions[..3], &[positions[0]; 3]);
    let accepted: Vec<u64> = positions[2..].to_vec();
    assert!(
        accepted.windows(2).all(|w| w[0] < w[1]),
        "in log order: {accepted:?}"
    );
    let types: Vec<&str> = bodies[2..]
        .iter()
        .map(|b| b["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(
        types,
        [
            "ResourceRegistered",
            "ResourceRegistered",
            "MemberAdded",
            "MemberAdded",
            "MemberAdded"
        ]
    );
    let members: Vec<(&str, &str)> = bodies[4..]
        .iter()
        .map(|b| {
            (
                b["stream"].as_str().expect("a stream"),
                b["data"]["principal"].as_str().expect("a principal"),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("resource:space/a", "bob"),
            ("resource:space/b", "dave"),
            ("resource:space/a", "carol")
        ]
    );

    let attempts = json_of(
        app.get(&format!("/v1/webhooks/{id}/deliveries"), &As::Admin)
            .await,
    )
    .await;
    let first: Vec<&Value> = attempts["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["position"] == positions[0])
        .collect();
    assert_eq!(first.len(), 3);
    assert_eq!(
        (first[0]["status"].as_u64(), first[0]["delivered"].as_bool()),
        (Some(500), Some(false))
    );
    assert_eq!(
        (
            first[2]["attempt"].as_u64(),
            first[2]["delivered"].as_bool()
        ),
        (Some(3), Some(true))
    );

    let removed = app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            &As::Admin,
            None,
        )
        .await;
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let listed = json_of(app.get("/v1/webhooks", &As::Admin).await).await;
    assert_eq!(listed["items"][0]["removed"], true);
    let bad = app
        .post("/v1/webhooks", &As::Admin, json!({"url": "ftp://nowhere"}))
        .await;
    assert_problem(bad, 400, "invalid_request").await;
    let not_admin = app
        .post(
            "/v1/webhooks",
            &As::AdminFor("alice".into()),
            json!({"url": url}),
        )
        .await;
    assert_problem(not_admin, 403, "forbidden").await;
    app.stop().await;
}
