//! Delivery against real peers on 127.0.0.1: invitation mails through a real SMTP server
//! process (`smtp-sink`), and signed webhooks to a real HTTP receiver.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use roster_server::workers::Retry;
use serde_json::{json, Value};

use crate::helpers::*;
use roster_tests::poll;

/// Waits until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    poll::until(what, || {
        let checked = check();
        async move {
            if checked.await {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await
}

fn quick_retry() -> Retry {
    Retry {
        initial_ms: 20,
        max_ms: 100,
        attempts_max: 100,
    }
}

/// The accept code in a mail: after `/invite/`, once quoted-printable soft breaks are undone.
fn code_in(data: &str) -> String {
    let flat = data.replace("=\r\n", "").replace("=\n", "");
    let start = flat
        .find("/invite/")
        .expect("the mail holds the accept URL")
        + "/invite/".len();
    flat[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn invitation_of(app: &TestApp, resource: &str, email: &str) -> Value {
    let list = json_of(
        app.get(&format!("/v1/resources/{resource}/invitations"), &As::Admin)
            .await,
    )
    .await;
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["email"] == email)
        .cloned()
        .expect("the invitation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_mailed_and_their_codes_work() {
    let sink = Sink::start("127.0.0.1:0");
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(sink.url());
        c.mail_from = Some("Roster <invites@roster.example>".into());
        c.retry.delivery = quick_retry();
    })
    .await;
    app.register("space/mail", "alice").await;
    let body = json!({"emails": ["dana@example.com", "Erin@Example.com"], "role": "editor", "message": "Welcome aboard"});
    let created = app
        .post(
            "/v1/resources/space/mail/invitations",
            &As::AdminFor("alice".into()),
            body,
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);

    let mut by_recipient = HashMap::new();
    for _ in 0..2 {
        let message = sink.next().await;
        let to = message["to"][0].as_str().expect("a recipient").to_string();
        by_recipient.insert(to, message);
    }
    let mut recipients: Vec<&String> = by_recipient.keys().collect();
    recipients.sort();
    // Mailed as the inviter wrote it: the normal form only decides what equals what.
    assert_eq!(recipients, ["Erin@Example.com", "dana@example.com"]);
    let dana = &by_recipient["dana@example.com"];
    assert_eq!(dana["from"], "invites@roster.example");
    let data = dana["data"].as_str().expect("the message");
    assert!(
        data.contains("Subject: alice invited you to space/mail"),
        "{data}"
    );
    assert!(
        data.contains("text/plain") && data.contains("text/html"),
        "both parts: {data}"
    );
    assert!(
        data.contains("as editor") && data.contains("Welcome aboard"),
        "{data}"
    );

    let key = app.key("host", &["read", "write"], true, None).await;
    let code = code_in(data);
    assert_eq!(code.len(), 43, "{code}");
    let as_dana = As::KeyFor(key, "dana".into(), Some("dana@example.com".into()));
    let accepted = app
        .post("/v1/invitations/accept", &as_dana, json!({ "code": code }))
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert_eq!(json_of(accepted).await["role"], "editor");
    eventually("erin's invitation shows delivered", || async {
        invitation_of(&app, "space/mail", "Erin@Example.com").await["delivery"]["status"]
            == "delivered"
    })
    .await;
    let erin = invitation_of(&app, "space/mail", "Erin@Example.com").await;
    assert_eq!(erin["delivery"]["attempts"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_comes_up_late_gets_the_mail_after_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://{address}"));
        c.mail_from = Some("invites@roster.example".into());
        c.retry.delivery = quick_retry();
    })
    .await;
    app.register("space/late", "alice").await;
    let created = app
        .post(
            "/v1/resources/space/late/invitations",
            &As::AdminFor("alice".into()),
            json!({"emails": "frank@example.com"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let failures = || async {
        let history = json_of(
            app.get("/v1/resources/space/late/history", &As::Admin)
                .await,
        )
        .await;
        history["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|h| h["type"] == "InvitationDeliveryFailed")
            .count()
    };
    eventually("two failed attempts are in the history", || async {
        failures().await >= 2
    })
    .await;
    assert_eq!(
        invitation_of(&app, "space/late", "frank@example.com").await["delivery"]["status"],
        "pending"
    );

    let sink = Sink::start(&address);
    let message = sink.next().await;
    assert_eq!(message["to"], json!(["frank@example.com"]));
    eventually("the invitation shows delivered", || async {
        invitation_of(&app, "space/late", "frank@example.com").await["delivery"]["status"]
            == "delivered"
    })
    .await;
    let history = json_of(
        app.get("/v1/resources/space/late/history", &As::Admin)
            .await,
    )
    .await;
    let items = history["items"].as_array().expect("items");
    let delivered = items
        .iter()
        .find(|h| h["type"] == "InvitationDelivered")
        .expect("delivered in the history");
    let failed_before = items
        .iter()
        .filter(|h| h["type"] == "InvitationDeliveryFailed")
        .count();
    assert!(failed_before >= 2);
    assert!(
        delivered["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("attempt {}", failed_before + 1))),
        "{delivered}"
    );
    app.stop().await;
}

/// `crash-serve` as a child process, and its address.
fn serve(dir: &std::path::Path, smtp_url: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-serve"))
        .args([dir.to_str().expect("utf-8"), "127.0.0.1:0", smtp_url])
        .env("ROSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("ROSTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("text");
    (
        child,
        format!(
            "http://{}",
            first.strip_prefix("listening ").expect("its address")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_delivery_loses_no_mail_and_repeats_no_acknowledged_one() {
    let sink = Sink::start("127.0.0.1:0");
    let dir = tempfile::tempdir().expect("temporary directory");
    let client = reqwest::Client::new();
    let (mut child, address) = serve(dir.path(), &sink.url());
    let post = |path: &str, body: Value| {
        client
            .post(format!("{address}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    assert_eq!(
        post(
            "/v1/resources",
            json!({"resource": "space/crash", "owner": "alice"})
        )
        .await
        .expect("sent")
        .status(),
        StatusCode::CREATED
    );
    let emails: Vec<String> = (0..20).map(|i| format!("guest{i}@example.com")).collect();
    let created = post(
        "/v1/resources/space/crash/invitations",
        json!({ "emails": emails }),
    )
    .await
    .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    // Kill it mid-way: after a few mails went out.
    let mut received: Vec<Value> = Vec::new();
    for _ in 0..5 {
        received.push(sink.next().await);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    // What the log acknowledged as delivered when it died.
    let acknowledged: Vec<u64> = {
        let store =
            roster_eventstore::SledStore::open(dir.path(), Default::default()).expect("opens");
        let events = roster_eventstore::EventStore::read_all(&store, 0, 10_000)
            .await
            .expect("reads");
        events
            .iter()
            .filter(|e| e.event_type == "InvitationDelivered")
            .map(|e| e.data["number"].as_u64().expect("a number"))
            .collect()
    };
    let (mut child, address) = serve(dir.path(), &sink.url());
    let invitations = || async {
        let list = client
            .get(format!("{address}/v1/resources/space/crash/invitations"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("sent");
        list.json::<Value>().await.expect("json")["items"]
            .as_array()
            .expect("items")
            .clone()
    };
    eventually("every invitation shows delivered", || async {
        invitations()
            .await
            .iter()
            .all(|i| i["delivery"]["status"] == "delivered")
    })
    .await;
    let numbers: HashMap<u64, String> = invitations()
        .await
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().expect("id"),
                i["email"].as_str().expect("email").to_string(),
            )
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    received.extend(sink.received_so_far());

    let mut count: HashMap<String, usize> = HashMap::new();
    for message in &received {
        *count
            .entry(message["to"][0].as_str().expect("a recipient").to_string())
            .or_default() += 1;
    }
    for email in &emails {
        assert!(
            count.get(email).copied().unwrap_or(0) >= 1,
            "{email} got no mail"
        );
    }
    for number in &acknowledged {
        assert_eq!(
            count[&numbers[number]], 1,
            "{} was sent again after its delivery was acknowledged",
            numbers[number]
        );
    }
}
