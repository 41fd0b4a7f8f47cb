//! `roster serve` as an operator meets it: the admin token and secret made at first start
//! (mode 0600, the token printed once), and a graceful stop on SIGTERM that exits 0 with the
//! log intact.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};

use support::Served;

/// Starts `roster serve` without an admin token (so it makes one at first start). Returns the
/// process, its address, and what it has written so far.
fn start(dir: &std::path::Path) -> (Child, String, String) {
    let served = Served::start(dir, None);
    let said = served.log();
    (served.child, served.address, said)
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
    assert!(resource.contains("\"owners\":[\"alice\"]"), "{resource}");
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

/// A server the test stops itself; killed instead if the test fails first, so that a failing
/// test leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every file and directory under `dir`, `dir` included, with its permission bits.
fn modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut found = vec![(
        dir.to_path_buf(),
        std::fs::metadata(dir).expect("exists").permissions().mode() & 0o777,
    )];
    for entry in std::fs::read_dir(dir).expect("lists") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            found.extend(modes(&path));
        } else {
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode()
                & 0o777;
            found.push((path, mode));
        }
    }
    found
}

#[test]
fn the_data_directory_and_every_file_in_it_are_for_the_owner_only() {
    let parent = tempfile::tempdir().expect("temporary directory");
    // One data directory serve makes, one an operator made open to everyone beforehand.
    let fresh = parent.path().join("fresh");
    let loose = parent.path().join("loose");
    std::fs::create_dir(&loose).expect("creates");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in [&fresh, &loose] {
        let (server, address, said) = start(dir);
        let mut server = Running(server);
        assert!(
            said.contains(&format!("no log in {}: starting a new one", dir.display())),
            "{said}"
        );
        if dir == &loose {
            assert!(said.contains("was mode 755: made it 0700"), "{said}");
        }
        // A command, so that the log, the read models and the snapshots directory hold
        // something (an invitee's email among it).
        let token = std::fs::read_to_string(dir.join("admin-token")).expect("a token");
        let auth = format!("Authorization: Bearer {}", token.trim());
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
        let invited = curl(&[
            "-X",
            "POST",
            &format!("http://{address}/v1/resources/space/s1/invitations"),
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"emails": ["dana@example.com"]}"#,
        ]);
        assert!(invited.contains("dana@example.com"), "{invited}");
        assert!(terminate(&mut server.0).success());

        let found = modes(dir);
        assert!(found.len() > 4, "sled's files are there: {found:?}");
        let open: Vec<_> = found.iter().filter(|(_, mode)| mode & 0o077 != 0).collect();
        assert!(open.is_empty(), "readable by others: {open:?}");

        // Started again on its own log, serve says nothing of a new one.
        let (server, _, said) = start(dir);
        let mut server = Running(server);
        assert!(!said.contains("no log in"), "{said}");
        assert!(terminate(&mut server.0).success());
    }
}
