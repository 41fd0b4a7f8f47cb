//! Three `roster serve` nodes on one PostgreSQL (DESIGN section 10), each a real server on its
//! own port with its own data directory, all on a private PostgreSQL 15 (`roster_tests::pg`):
//! what one node writes, the others decide with at once, and races between nodes end as a
//! serial run would.
//!
//! The tests of this binary run one at a time (`ONE_AT_A_TIME`): three nodes and PostgreSQL on
//! two cores measure contention, and a test must not depend on how much of it there is.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use helpers::{assert_problem, join_all, json_of, spawn_app_with, As, TestApp};
use reqwest::StatusCode;
use roster_server::http::ServerConfig;
use roster_server::StoreChoice;
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "multinode-secret-0123456789";

/// `count` nodes on a fresh database, each configured by `tweak` too.
async fn nodes(count: usize, tweak: impl Fn(&mut ServerConfig)) -> Vec<Arc<TestApp>> {
    let url = roster_tests::pg::database();
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = spawn_app_with(|config| {
            config.store = StoreChoice::Postgres(url.clone());
            config.secret = Some(SECRET.into());
            tweak(config);
        })
        .await;
        nodes.push(Arc::new(node));
    }
    nodes
}

/// No help from notifications or polling: whatever a node knows of another's writes, it
/// learned because a request needed it.
fn deaf(config: &mut ServerConfig) {
    config.postgres.notifications = false;
    config.postgres.poll_ms = 3_600_000;
}

fn who(principal: &str) -> As {
    As::AdminFor(principal.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_on_one_node_is_accepted_at_once_on_the_others() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(3, deaf).await;
    for round in 0..20 {
        let resource = format!("space/r{round}");
        nodes[0].register(&resource, "alice").await;
        let link = nodes[0]
            .link(&resource, &who("alice"), json!({ "role": "editor" }))
            .await;
        let code = link["code"].as_str().expect("a code");
        // No wait, no `min_position`: the nodes that never heard of the link find it.
        for (node, principal) in [(&nodes[1], "bob"), (&nodes[2], "carol")] {
            let accepted = node.accept(code, &who(principal)).await;
            assert_eq!(
                accepted.status(),
                StatusCode::OK,
                "round {round}, {principal}"
            );
        }
        let members = nodes[2].members(&resource).await;
        assert_eq!(members.len(), 3, "round {round}: {members:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_accepts_of_a_one_use_link_over_three_nodes_admit_one() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(3, |_| {}).await;
    nodes[0].register("space/hot", "alice").await;
    let link = nodes[0]
        .link(
            "space/hot",
            &who("alice"),
            json!({ "role": "viewer", "max_uses": 1 }),
        )
        .await;
    let code = link["code"].as_str().expect("a code").to_string();
    let attempts = (0..50)
        .map(|i| {
            let node = Arc::clone(&nodes[i % 3]);
            let code = code.clone();
            async move { node.accept(&code, &who(&format!("p{i}"))).await.status() }
        })
        .collect();
    let statuses = join_all(attempts).await;
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for status in statuses {
        *counts.entry(status.as_u16()).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([(200, 1), (410, 49)]));
    for node in &nodes {
        let head = nodes[0].head().await;
        let members = node
            .read(&format!(
                "/v1/resources/space/hot/members?min_position={head}"
            ))
            .await;
        assert_eq!(members["items"].as_array().map(Vec::len), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_demotions_of_the_last_two_owners_on_two_nodes_leave_one() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(2, |_| {}).await;
    for round in 0..10 {
        let resource = format!("space/o{round}");
        nodes[0].register(&resource, "alice").await;
        let promoted = nodes[0]
            .put(
                &format!("/v1/resources/{resource}/members/bob"),
                &who("alice"),
                json!({ "role": "owner" }),
            )
            .await;
        assert_eq!(promoted.status(), StatusCode::OK);
        let (bob_path, alice_path) = (
            format!("/v1/resources/{resource}/members/bob"),
            format!("/v1/resources/{resource}/members/alice"),
        );
        let (alice, bob) = (who("alice"), who("bob"));
        let demote = json!({ "role": "viewer" });
        let (a, b) = tokio::join!(
            nodes[0].put(&bob_path, &alice, demote.clone()),
            nodes[1].put(&alice_path, &bob, demote.clone()),
        );
        let statuses = BTreeSet::from([a.status().as_u16(), b.status().as_u16()]);
        // One demotion wins; the other is decided after it, by someone who is no longer an
        // owner or against the last owner: refused either way.
        assert!(statuses.contains(&200), "round {round}: {statuses:?}");
        assert_eq!(
            statuses.len(),
            2,
            "round {round}: both answered {statuses:?}"
        );
        let head = nodes[0].head().await.max(nodes[1].head().await);
        let members = nodes[1]
            .read(&format!(
                "/v1/resources/{resource}/members?min_position={head}"
            ))
            .await;
        let owners = members["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|m| m["role"] == "owner")
            .count();
        assert_eq!(owners, 1, "round {round}: {members}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_on_two_nodes_has_one_effect() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(2, |_| {}).await;
    nodes[0].register("space/idem", "alice").await;
    for round in 0..10 {
        let key = format!("same-key-{round}");
        let send = |node: &TestApp| {
            node.client
                .post(node.url("/v1/resources/space/idem/invite-links"))
                .bearer_auth(helpers::ADMIN_TOKEN)
                .header("X-Roster-Actor", "alice")
                .header("Idempotency-Key", key.clone())
                .json(&json!({ "role": "viewer" }))
                .send()
        };
        let (a, b) = tokio::join!(send(&nodes[0]), send(&nodes[1]));
        let (a, b) = (a.expect("answers"), b.expect("answers"));
        assert_eq!(
            (a.status(), b.status()),
            (StatusCode::CREATED, StatusCode::CREATED)
        );
        let (a, b) = (json_of(a).await, json_of(b).await);
        assert_eq!(a["id"], b["id"], "round {round}: one link, answered twice");
    }
    let head = nodes[0].head().await.max(nodes[1].head().await);
    let links = nodes[1]
        .read(&format!(
            "/v1/resources/space/idem/invite-links?min_position={head}"
        ))
        .await;
    assert_eq!(links["items"].as_array().map(Vec::len), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_made_at_once_on_three_nodes_never_share_a_number() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(3, deaf).await;
    nodes[0].register("space/many", "alice").await;
    let made = (0..60).map(|i| {
        let node = Arc::clone(&nodes[i % 3]);
        async move {
            let response = node
                .post(
                    "/v1/resources/space/many/invite-links",
                    &who("alice"),
                    json!({ "role": "viewer" }),
                )
                .await;
            assert_eq!(response.status(), StatusCode::CREATED);
            json_of(response).await["id"].as_u64().expect("an id")
        }
    });
    let ids = join_all(made.collect()).await;
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_schema_defined_on_one_node_is_in_force_on_another_at_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(2, deaf).await;
    let schema = json!({"roles": [
        {"name": "chair", "privileges": ["view_members", "invite", "manage_invitations", "manage_members", "view_history"]},
        {"name": "seat", "privileges": ["view_members"]}
    ], "default_role": "seat"});
    let defined = nodes[0]
        .put("/v1/role-schemas/board", &As::Admin, schema)
        .await;
    assert_eq!(defined.status(), StatusCode::OK);
    // Registered on the other node at once: its owner holds the schema's highest role.
    nodes[1].register("board/b1", "alice").await;
    assert_eq!(
        nodes[1].members("board/b1").await,
        [("alice".to_string(), "chair".to_string())]
    );
    let link = nodes[1]
        .link("board/b1", &who("alice"), json!({ "role": "seat" }))
        .await;
    assert_eq!(link["role"], "seat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_elsewhere_sees_a_write_only_with_its_position() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let nodes = nodes(3, deaf).await;
    // Node C has read the log once, at its start; then A writes.
    let written = nodes[0].register("space/later", "alice").await;
    assert!(written > 0);
    assert_problem(
        nodes[2]
            .get("/v1/resources/space/later/members", &As::Admin)
            .await,
        404,
        "not_found",
    )
    .await;
    let seen = nodes[2]
        .get(
            &format!("/v1/resources/space/later/members?min_position={written}"),
            &As::Admin,
        )
        .await;
    assert_eq!(seen.status(), StatusCode::OK);
    // The header does the same on another node.
    let by_header = nodes[1]
        .client
        .get(nodes[1].url("/v1/resources/space/later"))
        .bearer_auth(helpers::ADMIN_TOKEN)
        .header("X-Roster-Min-Position", written.to_string())
        .send()
        .await
        .expect("answers");
    assert_eq!(by_header.status(), StatusCode::OK);
    // A position nobody has written: no write answered it, so no wait can reach it.
    assert_problem(
        nodes[1]
            .get(
                &format!("/v1/resources/space/later?min_position={}", written + 1000),
                &As::Admin,
            )
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_problem(
        nodes[1]
            .get("/v1/resources/space/later?min_position=x", &As::Admin)
            .await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_or_other_settings_refuses_to_start() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let url = roster_tests::pg::database();
    let first = spawn_app_with(|config| {
        config.store = StoreChoice::Postgres(url.clone());
        config.secret = Some(SECRET.into());
    })
    .await;
    first.register("space/s", "alice").await;
    let refusal = |tweak: fn(&mut ServerConfig)| {
        let url = url.clone();
        async move {
            let dir = tempfile::tempdir().expect("a directory");
            let mut config = ServerConfig::new(dir.path().to_path_buf());
            config.store = StoreChoice::Postgres(url);
            config.secret = Some(SECRET.into());
            config.admin_token = Some(helpers::ADMIN_TOKEN.into());
            tweak(&mut config);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binds");
            let served = roster_server::serve(listener, config, std::future::pending()).await;
            served.expect_err("refuses to start").to_string()
        }
    };
    let other_secret = refusal(|c| c.secret = Some("another-secret-0123456789".into())).await;
    assert_eq!(
        other_secret,
        "cannot open the PostgreSQL store: this node does not fit the store: \
         ROSTER_SECRET differs from the one the store's other nodes use"
    );
    let other_limit = refusal(|c| c.limits.active_links_max = 7).await;
    assert_eq!(
        other_limit,
        "cannot open the PostgreSQL store: this node does not fit the store: decision settings \
         differ from the store's other nodes: active_links_max (store: 100, this node: 7)"
    );
    assert!(!other_secret.contains('\n') && !other_limit.contains('\n'));
    let no_secret = refusal(|c| c.secret = None).await;
    assert!(no_secret.contains("ROSTER_SECRET"), "{no_secret}");
    // The first node goes on.
    assert_eq!(first.members("space/s").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_mail_configured_send_each_invitation_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sink = helpers::Sink::start("127.0.0.1:0");
    let url = sink.url();
    // Every node could send: only the holder of the workers' lease does.
    let nodes = nodes(3, |config| {
        config.smtp_url = Some(url.clone());
        config.mail_from = Some("Roster <invites@roster.example>".into());
    })
    .await;
    nodes[0].register("space/mail", "alice").await;
    let emails: Vec<String> = (0..12).map(|i| format!("guest{i}@example.com")).collect();
    let invited = nodes[1]
        .post(
            "/v1/resources/space/mail/invitations",
            &who("alice"),
            json!({ "emails": emails, "role": "viewer" }),
        )
        .await;
    assert_eq!(invited.status(), StatusCode::CREATED);
    let mut recipients = BTreeSet::new();
    for _ in 0..12 {
        let message = sink.next().await;
        recipients.insert(message["to"][0].as_str().expect("a recipient").to_string());
    }
    assert_eq!(recipients, emails.iter().cloned().collect());
    // Every delivery recorded once, by one node; and no second copy was sent meanwhile.
    roster_tests::poll::until("every invitation shows delivered", || async {
        let head = nodes[0].head().await.max(nodes[1].head().await);
        let list = nodes[2]
            .read(&format!(
                "/v1/resources/space/mail/invitations?min_position={head}"
            ))
            .await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let delivered = items
            .iter()
            .filter(|i| i["delivery"]["status"] == "delivered")
            .count();
        if delivered == 12 {
            Ok(items)
        } else {
            Err(format!("{delivered} of 12 delivered"))
        }
    })
    .await
    .iter()
    .for_each(|item| assert_eq!(item["delivery"]["attempts"], 1, "{item}"));
    assert_eq!(sink.received_so_far(), Vec::<serde_json::Value>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_restarts_writes_answer_503_reads_go_on_and_the_node_recovers() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // A cluster of its own: this test stops it.
    let cluster = roster_tests::pg::PgCluster::start();
    let url = cluster.database();
    let node = spawn_app_with(|config| {
        config.store = StoreChoice::Postgres(url.clone());
        config.secret = Some(SECRET.into());
        config.postgres.lock_timeout_ms = 1_000;
    })
    .await;
    node.register("space/r", "alice").await;
    let join = |principal: String| {
        let node = &node;
        async move {
            node.put(
                &format!("/v1/resources/space/r/members/{principal}"),
                &who("alice"),
                json!({ "role": "viewer" }),
            )
            .await
        }
    };
    for i in 0..20 {
        assert_eq!(join(format!("before{i}")).await.status(), StatusCode::OK);
    }
    cluster.stop_immediate();
    // Writes: 503 `unavailable` with Retry-After, well within the request's time limit.
    let refused = join("during".into()).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "unavailable").await;
    // Reads go on from the node's read models; the node says why it is degraded.
    assert_eq!(node.members("space/r").await.len(), 21);
    roster_tests::poll::until("/healthz says degraded", || async {
        let health = node.read("/healthz").await;
        if health["status"] == "degraded" {
            Ok(health)
        } else {
            Err(health)
        }
    })
    .await;
    assert_eq!(
        node.get("/readyz", &As::Nobody).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    cluster.start_server();
    // It recovers by itself: the same write goes through once PostgreSQL is back.
    roster_tests::poll::until("a write goes through again", || async {
        match join("after".into()).await.status() {
            StatusCode::OK => Ok(()),
            other => Err(other),
        }
    })
    .await;
    roster_tests::poll::until("/readyz answers 200", || async {
        match node.get("/readyz", &As::Nobody).await.status() {
            StatusCode::OK => Ok(()),
            other => Err(other),
        }
    })
    .await;
    // Nothing acknowledged was lost; the refused write left nothing.
    let members: BTreeSet<String> = node
        .members("space/r")
        .await
        .into_iter()
        .map(|(principal, _)| principal)
        .collect();
    let mut expected: BTreeSet<String> = (0..20).map(|i| format!("before{i}")).collect();
    expected.extend(["alice".to_string(), "after".to_string()]);
    assert_eq!(members, expected);
    let name = url.rsplit('/').next().expect("a database name");
    let stored = cluster.psql(name, "SELECT count(*) FROM roster.events");
    assert_eq!(
        stored,
        node.head().await.to_string(),
        "every event, no more"
    );
}

/// A TCP proxy to PostgreSQL that, once armed, cuts the connection that is about to receive
/// the answer to a `COMMIT` (its `CommandComplete` message, tag `COMMIT`) instead of passing
/// it on: the commit happened, and the node was never told.
struct CommitEater {
    address: String,
    armed: Arc<std::sync::atomic::AtomicBool>,
    eaten: Arc<std::sync::atomic::AtomicUsize>,
}

impl CommitEater {
    async fn start(upstream: String) -> CommitEater {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = listener.local_addr().expect("an address").to_string();
        let armed = Arc::new(AtomicBool::new(false));
        let eaten = Arc::new(AtomicUsize::new(0));
        let (armed_in, eaten_in) = (Arc::clone(&armed), Arc::clone(&eaten));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let (armed, eaten) = (Arc::clone(&armed_in), Arc::clone(&eaten_in));
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let Ok(read) = server_read.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        let chunk = &buffer[..read];
                        let commit = chunk.windows(7).any(|w| w == b"COMMIT\0");
                        if commit && armed.swap(false, Ordering::AcqRel) {
                            eaten.fetch_add(1, Ordering::AcqRel);
                            // Dropping both halves closes the node's connection.
                            return;
                        }
                        if client_write.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CommitEater {
            address,
            armed,
            eaten,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_answers_its_true_outcome_and_a_retry_the_first() {
    use std::sync::atomic::Ordering;
    let _turn = ONE_AT_A_TIME.lock().await;
    let direct = roster_tests::pg::database();
    let cluster = roster_tests::pg::cluster();
    let proxy = CommitEater::start(format!("127.0.0.1:{}", cluster.port())).await;
    let through_proxy =
        direct.replacen(&format!("127.0.0.1:{}", cluster.port()), &proxy.address, 1);
    let node = spawn_app_with(|config| {
        config.store = StoreChoice::Postgres(through_proxy.clone());
        config.secret = Some(SECRET.into());
    })
    .await;
    node.register("space/lost", "alice").await;
    let create = |key: &'static str| {
        node.client
            .post(node.url("/v1/resources/space/lost/invite-links"))
            .bearer_auth(helpers::ADMIN_TOKEN)
            .header("X-Roster-Actor", "alice")
            .header("Idempotency-Key", key)
            .json(&json!({ "role": "viewer" }))
            .send()
    };
    let mut first_statuses = Vec::new();
    for round in 0..5 {
        let key: &'static str = ["k0", "k1", "k2", "k3", "k4"][round];
        proxy.armed.store(true, Ordering::Release);
        let first = create(key).await.expect("answers");
        assert_eq!(
            proxy.eaten.load(Ordering::Acquire),
            round + 1,
            "the answer was eaten"
        );
        // The true outcome (the node asked again by command id), or 503 if it could not.
        let first_status = first.status();
        first_statuses.push(first_status.as_u16());
        assert!(
            matches!(
                first_status,
                StatusCode::CREATED | StatusCode::SERVICE_UNAVAILABLE
            ),
            "round {round}: {first_status}"
        );
        let first_id = if first_status == StatusCode::CREATED {
            json_of(first).await["id"].as_u64()
        } else {
            None
        };
        let again = create(key).await.expect("answers");
        assert_eq!(again.status(), StatusCode::CREATED, "round {round}");
        let again_id = json_of(again).await["id"].as_u64().expect("an id");
        if let Some(first_id) = first_id {
            assert_eq!(
                first_id, again_id,
                "round {round}: the first outcome, again"
            );
        }
    }
    // One link per key: the commit the node was not told of was not made twice.
    let links = node.read("/v1/resources/space/lost/invite-links").await;
    assert_eq!(links["items"].as_array().map(Vec::len), Some(5));
    println!("answers to the commits whose answer was lost: {first_statuses:?}");
}
