//! The server's life: a restart on the same data directory finds everything as it was; no
//! code or key is ever written to the data directory or the logs.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_everything_as_it_was() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = spawn_app_in(dir.path(), |_| {}).await;
    app.register("space/spc_42", "alice").await;
    let alice = As::AdminFor("alice".into());
    let link = json_of(
        app.post(
            "/v1/resources/space/spc_42/invite-links",
            &alice,
            json!({"role": "editor", "max_uses": 5}),
        )
        .await,
    )
    .await;
    let code = link["code"].as_str().expect("a code").to_string();
    let accepted = app
        .post(
            "/v1/invitations/accept",
            &As::AdminFor("bob".into()),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let invited = app
        .post(
            "/v1/resources/space/spc_42/invitations",
            &alice,
            json!({"emails": "dana@example.com"}),
        )
        .await;
    assert_eq!(invited.status(), StatusCode::CREATED);
    let key = app.key("carol", &["read"], false, None).await;
    let paths = [
        "/v1/resources/space/spc_42",
        "/v1/resources/space/spc_42/members",
        "/v1/resources/space/spc_42/invite-links",
        "/v1/resources/space/spc_42/invitations",
        "/v1/resources/space/spc_42/history",
        "/v1/principals/bob/memberships",
        "/v1/api-keys",
        "/v1/events",
    ];
    let mut before = Vec::new();
    for path in paths {
        before.push(json_of(app.get(path, &As::Admin).await).await);
    }
    app.stop().await;

    let app = spawn_app_in(dir.path(), |_| {}).await;
    for (path, expected) in paths.iter().zip(&before) {
        assert_eq!(
            &json_of(app.get(path, &As::Admin).await).await,
            expected,
            "{path} after the restart"
        );
    }
    // The key still works, the code still works (up to its limit), and the log goes on.
    let resource = app.get("/v1/resources/space/spc_42", &As::Key(key)).await;
    assert_eq!(
        resource.status().as_u16(),
        403,
        "carol is not a member, but her key is known"
    );
    let again = app
        .post(
            "/v1/invitations/accept",
            &As::AdminFor("erin".into()),
            json!({ "code": code }),
        )
        .await;
    assert_eq!(json_of(again).await["role"], "editor");
    app.stop().await;
}

/// Walks every file under `dir`.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_code_or_key_reaches_the_data_directory_or_the_logs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let app = spawn_app_in(dir.path(), |_| {}).await;
    app.register("space/secrets", "alice").await;
    let alice = As::AdminFor("alice".into());
    let mut secrets = Vec::new();
    let link = json_of(
        app.post(
            "/v1/resources/space/secrets/invite-links",
            &alice,
            json!({"role": "viewer"}),
        )
        .await,
    )
    .await;
    secrets.push(link["code"].as_str().expect("code").to_string());
    let rotated = json_of(
        app.post(
            &format!(
                "/v1/resources/space/secrets/invite-links/{}/rotate",
                link["id"]
            ),
            &alice,
            json!({}),
        )
        .await,
    )
    .await;
    secrets.push(rotated["code"].as_str().expect("code").to_string());
    let invited = json_of(
        app.post(
            "/v1/resources/space/secrets/invitations",
            &alice,
            json!({"emails": ["x@example.com", "y@example.com"]}),
        )
        .await,
    )
    .await;
    for item in invited["invited"].as_array().expect("invited") {
        secrets.push(
            item["invitation"]["code"]
                .as_str()
                .expect("code")
                .to_string(),
        );
        let id = &item["invitation"]["id"];
        let resent = json_of(
            app.post(
                &format!("/v1/resources/space/secrets/invitations/{id}/resend"),
                &alice,
                json!({}),
            )
            .await,
        )
        .await;
        secrets.push(resent["code"].as_str().expect("code").to_string());
    }
    // Use some of them, successfully and not, so every path that handles a code runs.
    let preview = app
        .post(
            "/v1/invitations/preview",
            &As::Admin,
            json!({"code": secrets[1]}),
        )
        .await;
    assert_eq!(preview.status(), StatusCode::OK);
    let accepted = app
        .post(
            "/v1/invitations/accept",
            &As::AdminFor("bob".into()),
            json!({"code": secrets[1]}),
        )
        .await;
    assert_eq!(accepted.status(), StatusCode::OK);
    let dead = app
        .post(
            "/v1/invitations/accept",
            &As::AdminFor("bob".into()),
            json!({"code": secrets[0]}),
        )
        .await;
    assert_eq!(dead.status().as_u16(), 410);
    for principal in ["k1", "k2"] {
        let key = app
            .key(
                principal,
                &["read", "write"],
                false,
                Some(&format!("{principal}@example.com")),
            )
            .await;
        assert_eq!(
            app.get("/v1/principals/k1/memberships", &As::Key(key.clone()))
                .await
                .status()
                .as_u16(),
            if principal == "k1" { 200 } else { 403 }
        );
        secrets.push(key);
    }
    let wrong = app
        .get(
            "/healthz",
            &As::Key("rk_0000000000000000000000000000000000000000000000000000000000000000".into()),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::OK);
    app.stop().await;

    // Both encodings of every code, and every key.
    let mut needles: Vec<String> = Vec::new();
    for secret in &secrets {
        needles.push(secret.clone());
        if !secret.starts_with("rk_") {
            let bytes = base64_url_decode(secret);
            needles.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    assert!(needles.len() >= 12);
    for file in files(dir.path()) {
        let bytes = std::fs::read(&file).expect("readable");
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret",
                file.display()
            );
        }
    }
    let logs = captured_logs();
    assert!(logs.contains("request"), "the logs were captured");
    for needle in &needles {
        assert!(!logs.contains(needle.as_str()), "the logs hold a secret");
    }
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64url");
        bits = (bits << 6) | u32::try_from(value).expect("small");
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).expect("a byte"));
        }
    }
    out
}
