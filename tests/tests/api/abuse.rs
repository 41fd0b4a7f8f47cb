//! The attacker's view of codes (issue 9, item 6): failed code checks are limited per client
//! address and per acting principal on every route that takes a code, answered 429 with
//! `Retry-After` in each family's own shape; successes never spend the budget; a wrong code
//! for a real invitation and a random code are answered byte for byte alike and take the same
//! path through the server.
//!
//! Refill is not waited for: the window is an hour, so nothing refills during a test, and
//! `Retry-After` is checked against the arithmetic (the limiter's own unit tests move its
//! clock by hand).

use std::net::{IpAddr, Ipv4Addr};

use reqwest::{Method, Response, StatusCode};
use roster_domain::{DomainError, InviteCode, ServerSecret};
use roster_server::http::ServerConfig;
use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app_with, As, TestApp, ADMIN_TOKEN};

const SECRET: &str = "abuse-test-secret-0123456789abcdef";
const HOUR_MS: u64 = 3_600_000;

/// A server whose address limit is `per_address` failures an hour and whose principal limit
/// is `per_principal`.
async fn app(per_address: u32, per_principal: u32) -> TestApp {
    spawn_app_with(|config: &mut ServerConfig| {
        config.secret = Some(SECRET.into());
        config.code_failures_per_address_max = per_address;
        config.code_failures_per_principal_max = per_principal;
        config.code_failures_window_ms = HOUR_MS;
    })
    .await
}

/// Every route family's code check, each in its own request and error shape.
#[derive(Debug, Clone, Copy)]
enum Route {
    Preview,
    Accept,
    Decline,
    TeableAccept,
    OnedataJoin,
}

const ROUTES: [Route; 5] = [
    Route::Preview,
    Route::Accept,
    Route::Decline,
    Route::TeableAccept,
    Route::OnedataJoin,
];

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Preview => "/v1/invitations/preview",
            Route::Accept => "/v1/invitations/accept",
            Route::Decline => "/v1/invitations/decline",
            Route::TeableAccept => "/api/invitation/link/accept",
            Route::OnedataJoin => "/api/v3/onezone/user/spaces/join",
        }
    }

    fn body(self, code: &str) -> Value {
        match self {
            Route::Preview | Route::Accept | Route::Decline => json!({ "code": code }),
            // Teable names the link beside its code; the id is the number the code claims, so
            // the request reaches the code check itself rather than the id comparison.
            Route::TeableAccept => json!({
                "invitationId": claimed_number(code).map_or("1".to_string(), |n| n.to_string()),
                "invitationCode": code,
            }),
            Route::OnedataJoin => json!({ "token": code }),
        }
    }

    /// The status and the family's code a failed check answers, then a limited one.
    fn failed(self) -> (u16, &'static str) {
        match self {
            Route::Preview | Route::Accept | Route::Decline => (404, "invitation_not_found"),
            Route::TeableAccept => (404, "not_found"),
            Route::OnedataJoin => (404, ""),
        }
    }

    fn limited(self) -> &'static str {
        match self {
            Route::Preview | Route::Accept | Route::Decline => "rate_limited",
            Route::TeableAccept => "too_many_requests",
            Route::OnedataJoin => "",
        }
    }

    /// The family's code in an error body (Onedata's `{error}` has none).
    fn code_of(self, body: &Value) -> String {
        match self {
            Route::Preview | Route::Accept | Route::Decline => {
                body["code"].as_str().unwrap_or_default().to_string()
            }
            Route::TeableAccept => body["code"].as_str().unwrap_or_default().to_string(),
            Route::OnedataJoin => {
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{body}"
                );
                String::new()
            }
        }
    }
}

fn claimed_number(code: &str) -> Option<u64> {
    InviteCode::parse(code).ok().map(|c| c.claimed_number())
}

/// A well-formed code for `number` made with another secret: its MAC is wrong.
fn forged(number: u64, generation: u32) -> String {
    InviteCode::derive(
        &ServerSecret::new(b"not the server's secret".to_vec()),
        number,
        generation,
    )
    .encode_base64()
}

async fn send(app: &TestApp, route: Route, who: &As, code: &str) -> Response {
    app.send(Method::POST, route.path(), who, Some(route.body(code)))
        .await
}

/// Status, the family's code, `Retry-After` and the body of a response.
async fn outcome(route: Route, response: Response) -> (u16, String, Option<u64>, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = json_of(response).await;
    let code = if status >= 400 {
        route.code_of(&body)
    } else {
        String::new()
    };
    (status, code, retry_after, body)
}

/// A space owned by `owner` with a multi-use editor link on it; returns the link's code.
async fn space_with_link(app: &TestApp, space: &str, owner: &str) -> String {
    app.register(&format!("space/{space}"), owner).await;
    let link = app
        .link(
            &format!("space/{space}"),
            &As::AdminFor(owner.into()),
            json!({ "role": "viewer" }),
        )
        .await;
    link["code"].as_str().expect("a code").to_string()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of one sample line of `/metrics`, 0 when absent.
fn sample(metrics: &str, name_and_labels: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn past_the_address_limit_every_code_route_answers_429_with_retry_after() {
    for route in ROUTES {
        let app = app(3, 1000).await;
        let code = space_with_link(&app, "spc_a", "olga").await;
        let service = app.key("host", &["read", "write"], true, None).await;
        // Each failure names another principal: only the address limit can be reached.
        for i in 0..3 {
            let who = As::KeyFor(service.clone(), format!("guesser{i}"), None);
            let (status, family_code, retry_after, body) =
                outcome(route, send(&app, route, &who, &forged(424_242, i)).await).await;
            assert_eq!(
                (status, family_code.as_str()),
                route.failed(),
                "{route:?} {body}"
            );
            assert_eq!(retry_after, None, "{route:?}: a failure under the limit");
        }
        // The fourth failure from this address is refused before the code is looked at.
        let who = As::KeyFor(service.clone(), "guesser3".into(), None);
        let response = send(&app, route, &who, &forged(424_242, 9)).await;
        if matches!(route, Route::Preview | Route::Accept | Route::Decline) {
            assert_eq!(
                response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
        }
        let (status, family_code, retry_after, body) = outcome(route, response).await;
        assert_eq!(status, 429, "{route:?} {body}");
        assert_eq!(family_code, route.limited(), "{route:?} {body}");
        // Three failures an hour: one comes back every 20 minutes.
        let retry_after = retry_after.expect("a Retry-After header");
        assert!(
            (1_190..=1_200).contains(&retry_after),
            "{route:?}: Retry-After {retry_after}"
        );
        // Past the limit a right code is refused too: answering it would tell a guesser
        // which of its guesses was right.
        let who = As::KeyFor(service.clone(), "newcomer".into(), None);
        let (status, ..) = outcome(route, send(&app, route, &who, &code).await).await;
        assert_eq!(status, 429, "{route:?}");
        let scraped = metrics(&app).await;
        let family = match route {
            Route::TeableAccept => "teable",
            Route::OnedataJoin => "onedata",
            _ => "native",
        };
        assert_eq!(
            sample(
                &scraped,
                &format!("roster_failed_code_checks_total{{family=\"{family}\"}}")
            ),
            3,
            "{scraped}"
        );
        assert_eq!(
            sample(
                &scraped,
                &format!(
                    "roster_code_checks_rate_limited_total{{family=\"{family}\",limit=\"address\"}}"
                )
            ),
            2,
            "{scraped}"
        );
        println!("{route:?}: 3 failures, then 429 with Retry-After {retry_after} s");
        app.stop().await;
    }
}

#[tokio::test]
async fn successes_never_spend_the_budget_even_from_one_busy_service_key() {
    let app = app(3, 3).await;
    let code = space_with_link(&app, "spc_busy", "olga").await;
    let service = app.key("host", &["read", "write"], true, None).await;
    // Forty successes from one address through one service key, far past the limit of 3.
    for i in 0..20 {
        let who = As::KeyFor(service.clone(), format!("user{i}"), None);
        let preview = send(&app, Route::Preview, &who, &code).await;
        assert_eq!(preview.status(), StatusCode::OK);
        let accepted = send(&app, Route::Accept, &who, &code).await;
        assert_eq!(accepted.status(), StatusCode::OK, "accept {i}");
    }
    // The whole budget is still there: three failures, and only then a 429.
    for i in 0..3 {
        let who = As::KeyFor(service.clone(), format!("typo{i}"), None);
        let failed = send(&app, Route::Accept, &who, &forged(77, 0)).await;
        assert_eq!(failed.status(), StatusCode::NOT_FOUND, "failure {i}");
    }
    let who = As::KeyFor(service.clone(), "typo3".into(), None);
    let limited = send(&app, Route::Accept, &who, &forged(77, 0)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // Successes were not counted as failures anywhere.
    let scraped = metrics(&app).await;
    assert_eq!(
        sample(
            &scraped,
            "roster_failed_code_checks_total{family=\"native\"}"
        ),
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn the_principal_limit_holds_from_any_address_and_forwarded_for_is_not_believed() {
    let app = app(1000, 2).await;
    let code = space_with_link(&app, "spc_p", "olga").await;
    let service = app.key("host", &["read", "write"], true, None).await;
    let mallory = As::KeyFor(service.clone(), "mallory".into(), None);
    for _ in 0..2 {
        let failed = send(&app, Route::Preview, &mallory, &forged(5, 0)).await;
        assert_eq!(failed.status(), StatusCode::NOT_FOUND);
    }
    // From another loopback address the principal is still over its limit.
    let elsewhere = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("a client");
    let response = elsewhere
        .post(app.url("/v1/invitations/preview"))
        .bearer_auth(&service)
        .header("X-Roster-Actor", "mallory")
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = json_of(response).await;
    assert_eq!(body["code"], "rate_limited", "{body}");
    // Another principal through the same key and address is not affected.
    let trent = As::KeyFor(service.clone(), "trent".into(), None);
    assert_eq!(
        send(&app, Route::Preview, &trent, &code).await.status(),
        StatusCode::OK
    );
    app.stop().await;

    // The address limit: a client's own `X-Forwarded-For` does not buy it a fresh budget,
    // since no trusted proxy is configured; another real address does have its own.
    let app = app_with_address_limit_1().await;
    let first = app
        .client
        .post(app.url("/v1/invitations/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "p1")
        .json(&json!({ "code": forged(5, 0) }))
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), StatusCode::NOT_FOUND);
    let spoofed = app
        .client
        .post(app.url("/v1/invitations/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "p2")
        .header("X-Forwarded-For", "198.51.100.77")
        .json(&json!({ "code": forged(5, 0) }))
        .send()
        .await
        .expect("sent");
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
    let other_address = elsewhere
        .post(app.url("/v1/invitations/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Roster-Actor", "p3")
        .json(&json!({ "code": forged(5, 0) }))
        .send()
        .await
        .expect("sent");
    assert_eq!(other_address.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn app_with_address_limit_1() -> TestApp {
    app(1, 1000).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let app = spawn_app_with(|config: &mut ServerConfig| {
        config.secret = Some(SECRET.into());
        config.code_failures_per_address_max = 1;
        config.code_failures_window_ms = HOUR_MS;
        config.trusted_proxies = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    })
    .await;
    let from = |client: &'static str, actor: &'static str| {
        app.client
            .post(app.url("/v1/invitations/preview"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Roster-Actor", actor)
            .header("X-Forwarded-For", client)
            .json(&json!({ "code": forged(5, 0) }))
            .send()
    };
    assert_eq!(
        from("203.0.113.1", "a").await.expect("sent").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        from("203.0.113.1", "b").await.expect("sent").status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(
        from("203.0.113.2", "c").await.expect("sent").status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_code_for_a_real_invitation_and_a_random_code_are_answered_alike() {
    // Limits out of the way: this test compares answers, not budgets.
    let app = app(0, 0).await;
    let link_code = space_with_link(&app, "spc_same", "olga").await;
    let invitation = app
        .invite_one(
            "space/spc_same",
            &As::AdminFor("olga".into()),
            "eve@example.com",
            Some("viewer"),
        )
        .await;
    let invitation_code = invitation["code"].as_str().expect("a code").to_string();
    let secret = ServerSecret::new(SECRET.as_bytes().to_vec());
    let mut wrong_for_real = Vec::new();
    for real in [&link_code, &invitation_code] {
        let parsed = InviteCode::parse(real).expect("a real code parses");
        let number = parsed.claimed_number();
        let real_code = parsed
            .verify(&secret)
            .expect("the server's own code verifies");
        wrong_for_real.push(forged(number, real_code.generation()));
    }
    // A number nobody was given, and a generation nobody reached.
    let random = forged(9_007_199_254_740_000, 3);
    let malformed = "this-is-not-a-code".to_string();

    // The same path: each parses (or fails to) the same way, and fails at the MAC, which is
    // compared in constant time before anything is looked up; a number that exists is never
    // looked up unless its MAC verified, so whether it exists cannot change the path.
    for code in wrong_for_real.iter().chain([&random]) {
        let parsed = InviteCode::parse(code).expect("well-formed");
        assert_eq!(parsed.verify(&secret), Err(DomainError::InvitationNotFound));
    }
    assert_eq!(
        InviteCode::parse(&malformed),
        Err(DomainError::InvitationNotFound)
    );

    let who = As::AdminFor("eve".into());
    for route in ROUTES {
        let mut answers = Vec::new();
        for code in wrong_for_real.iter().chain([&random, &malformed]) {
            let response = send(&app, route, &who, code).await;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = response.text().await.expect("a body");
            answers.push((status, content_type, body));
        }
        let first = answers[0].clone();
        println!(
            "{route:?}: every wrong code answers {} {}",
            first.0, first.2
        );
        assert_eq!(first.0, route.failed().0, "{route:?}");
        for (i, answer) in answers.iter().enumerate() {
            assert_eq!(answer, &first, "{route:?}: answer {i} differs");
        }
    }
    app.stop().await;
}
