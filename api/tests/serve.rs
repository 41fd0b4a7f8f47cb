//! `roster serve` as an operator meets it: the admin token and secret made at first start
//! (mode 0600, the token printed once), and a graceful stop on SIGTERM that exits 0 with the
//! log intact.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

/// Starts `roster serve` on a free port and waits until it says it listens. Returns the
/// process, its address, and what it wrote before listening.
fn start(dir: &std::path::Path) -> (Child, String, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "--data",
            dir.to_str().expect("utf-8"),
            "serve",
            "--listen",
            &address,
        ])
        .env_remove("ROSTER_ADMIN_TOKEN")
        .env("ROSTER_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let mut log = BufReader::new(server.stderr.take().expect("piped"));
    let mut before = String::new();
    loop {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).expect("reads") > 0,
            "stopped before listening: {before}"
        );
        before.push_str(&line);
        if line.contains("roster is listening") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    (server, address, before)
}

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn terminate(server: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    server.wait().expect("the server exits")
}

#[test]
fn first_start_makes_private_secrets_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut server, address, said) = start(dir.path());
    let token = std::fs::read_to_string(dir.path().join("admin-token"))
        .expect("an admin token file")
        .trim()
        .to_string();
    assert!(said.contains(&token), "the token is shown at first start");
    for file in ["admin-token", "secret.key"] {
        let mode = std::fs::metadata(dir.path().join(file))
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let auth = format!("Authorization: Bearer {token}");
    let created = curl(&[
        "-X",
        "POST",
        &format!("http://{address}/v1/resources"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"resource": "space/s1", "owner": "alice"}"#,
    ]);
    assert!(created.contains("\"member_count\":1"), "{created}");
    let status = terminate(&mut server);
    assert!(status.success(), "exit status {status:?}");

    // Started again: the same token works, and it is not shown again.
    let (mut server, address, said) = start(dir.path());
    assert!(!said.contains(&token), "the token is shown only once");
    let resource = curl(&[
        &format!("http://{address}/v1/resources/space/s1"),
        "-H",
        &auth,
    ]);
    assert!(resource.contains("\"owner\":\"alice\""), "{resource}");
    assert!(terminate(&mut server).success());
    let verified = Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "--data",
            dir.path().to_str().expect("utf-8"),
            "verify",
            "--quiet",
        ])
        .output()
        .expect("runs");
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("ok: 1 events"));
}
