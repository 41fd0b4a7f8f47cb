//! Storage faults as an operator meets them, with the real `roster` binary (issue 9, item 5):
//! a data directory locked by another process, a read-only one, and a disk that fills up.
//!
//! Tests run as root in CI, where permission bits do not stop writes, so read-only and full
//! are made for real with a size-limited tmpfs mounted for the test (`mount -t tmpfs -o
//! size=…`, then `mount -o remount,ro`). Mounting needs root (CAP_SYS_ADMIN): without it these
//! two tests fail with a message saying so rather than pass without having tested anything.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::Served;

const TOKEN: &str = "storage-test-admin-token-0123";

/// A tmpfs of a given size mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: these tests need root with CAP_SYS_ADMIN, as in CI"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn roster(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env("ROSTER_ADMIN_TOKEN", TOKEN)
        .env("NO_COLOR", "1")
        .output()
        .expect("roster runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `roster serve` on a free port, once it says it listens.
struct Server {
    child: Child,
    address: String,
    /// Everything it has written to standard error so far.
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(data: &Path) -> Server {
        let Served {
            child,
            address,
            log,
        } = Served::start(data, Some(TOKEN));
        Server {
            child,
            address,
            log,
        }
    }

    /// How many of its log lines so far contain `words`.
    fn logged(&self, words: &str) -> usize {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lines()
            .filter(|line| line.contains(words))
            .count()
    }

    /// `(status, body)` of a request as the admin.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command
            .args(["-s", "-X", method, "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        if let Some(body) = body {
            command.args(["-H", "content-type: application/json", "-d", body]);
        }
        let output = command
            .arg(format!("http://{}{path}", self.address))
            .output()
            .expect("curl runs");
        let out = text(&output.stdout);
        let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    fn register(&self, resource: &str) -> (u16, String) {
        self.request(
            "POST",
            "/v1/resources",
            Some(&format!(r#"{{"resource":"{resource}","owner":"olga"}}"#)),
        )
    }

    /// SIGTERM and wait; a server whose store failed may still exit non-zero.
    fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("the server exits")
    }
}

/// A failed command's standard error: one line, starting `roster: `, containing `words`.
fn assert_one_line_reason(output: &Output, words: &str) -> String {
    assert!(!output.status.success(), "it should fail: {output:?}");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("roster: "), "{stderr}");
    assert!(lines[0].contains(words), "{stderr}");
    lines[0].to_string()
}

fn assert_verifies(data: &Path) -> String {
    let verified = roster(data, &["verify", "--quiet"]);
    assert!(
        verified.status.success(),
        "verify: {}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
    text(&verified.stdout)
}

#[test]
fn a_locked_data_directory_is_refused_with_one_line_and_freed_when_the_holder_stops() {
    let temp = tempfile::tempdir().expect("temporary directory");
    let data = temp.path().join("data");
    let server = Server::start(&data);
    assert_eq!(server.register("space/locked").0, 201);
    for args in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["verify", "--quiet"][..],
        &["export"][..],
    ] {
        let output = roster(&data, args);
        let line = assert_one_line_reason(&output, "is locked by another process");
        println!("roster {}: {line}", args[0]);
    }
    assert!(server.stop().success());
    // The holder gone, the directory opens again and nothing was harmed.
    println!("{}", assert_verifies(&data).trim());
}

#[test]
fn a_read_only_data_directory_is_a_clear_startup_error_and_opens_once_writable() {
    let disk = Tmpfs::mount("32m");
    let data = disk.path().join("data");
    let server = Server::start(&data);
    assert_eq!(server.register("space/ro").0, 201);
    assert!(server.stop().success());
    // A read-only mount stops writes even for root, unlike permission bits.
    disk.remount("ro");
    let refused = roster(&data, &["serve", "--listen", "127.0.0.1:0"]);
    let line = assert_one_line_reason(&refused, "Read-only file system");
    println!("roster serve: {line}");
    let refused = roster(&data, &["verify", "--quiet"]);
    let line = assert_one_line_reason(&refused, "Read-only file system");
    println!("roster verify: {line}");
    // A data directory that cannot even be made gives its own clear line.
    let fresh = roster(
        &disk.path().join("fresh"),
        &["serve", "--listen", "127.0.0.1:0"],
    );
    let line = assert_one_line_reason(&fresh, "Read-only file system");
    println!("roster serve (new directory): {line}");
    disk.remount("rw");
    println!("{}", assert_verifies(&data).trim());
    let server = Server::start(&data);
    assert_eq!(server.request("GET", "/v1/resources/space/ro", None).0, 200);
    assert_eq!(server.register("space/ro-again").0, 201);
    assert!(server.stop().success());
}

/// Fills the filesystem at `dir` with a file until it is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("a filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(error) if error.raw_os_error() == Some(28) => break,
            Err(error) => panic!("filling: {error}"),
        }
    }
    let _ = file.sync_all();
    path
}

/// A problem+json body's `code`.
fn problem_code(body: &str) -> String {
    let problem: serde_json::Value = serde_json::from_str(body).expect("problem+json");
    problem["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_full_disk_answers_503_corrupts_nothing_and_the_server_recovers_by_itself_once_space_is_freed()
{
    let disk = Tmpfs::mount("24m");
    let data = disk.path().join("data");
    let server = Arc::new(Server::start(&data));
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let resource = format!("space/before{i}");
        assert_eq!(server.register(&resource).0, 201);
        acknowledged.push(resource);
    }
    let filler = fill(disk.path());
    // sled may still have room in the segment it writes: go on until the disk says no.
    let mut refused = None;
    for i in 0..200 {
        let resource = format!("space/full{i}");
        match server.register(&resource) {
            (201, _) => acknowledged.push(resource),
            (status, body) => {
                refused = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refused.expect("a full disk refuses commands");
    println!("on a full disk: {status} {body}");
    assert_eq!(status, 503, "{body}");
    assert_eq!(problem_code(&body), "unavailable");
    assert!(
        !body.contains("No space") && !body.contains("os error"),
        "no internals in the answer: {body}"
    );
    // Every later command is refused the same way, reads still work, and /healthz says the
    // server is failing.
    let (status, body) = server.register("space/still-full");
    assert_eq!((status, problem_code(&body).as_str()), (503, "unavailable"));
    assert_eq!(
        server.request("GET", "/v1/resources/space/before0", None).0,
        200
    );
    let (status, health) = server.request("GET", "/healthz", None);
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("\"failing\""), "{health}");

    // Commands keep coming while space is freed and the server reopens its log: each is
    // answered 201 or 503 `unavailable`, never a 500 or a refused connection.
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let server = Arc::clone(&server);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            for i in 0.. {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let resource = format!("space/during{i}");
                let (status, body) = server.register(&resource);
                answers.push((resource, status, body));
            }
            answers
        })
    };
    // The server probes its data directory and finds it still full before anything is freed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.logged("does not take writes yet") == 0 {
        assert!(
            Instant::now() < deadline,
            "the server did not probe its full data directory within 60 s"
        );
        // A polling interval, not a synchronisation: the loop ends on the log line alone.
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, health) = server.request("GET", "/healthz", None);
    assert_eq!(status, 503, "still full: {health}");
    std::fs::remove_file(&filler).expect("space freed");
    // The supervisor probes with a back-off of at most 5 s: poll /healthz until it is ok.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, health) = server.request("GET", "/healthz", None);
        if status == 200 {
            assert!(health.contains("\"ok\""), "{health}");
            break;
        }
        assert_eq!(status, 503, "while recovering: {health}");
        assert!(health.contains("\"failing\""), "{health}");
        assert!(
            Instant::now() < deadline,
            "the server did not recover within 60 s of space being freed"
        );
        // A polling interval, not a synchronisation: the loop ends on the answer alone.
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::Relaxed);
    let answers = writer.join().expect("the writer thread");
    for (resource, status, body) in answers {
        match status {
            201 => acknowledged.push(resource),
            503 => assert_eq!(problem_code(&body), "unavailable", "{resource}: {body}"),
            other => panic!("{resource} was answered {other} while recovering: {body}"),
        }
    }
    // The same process takes commands again and lost nothing it acknowledged.
    let (status, body) = server.register("space/after-recovery");
    assert_eq!(status, 201, "{body}");
    acknowledged.push("space/after-recovery".into());
    for resource in &acknowledged {
        let (status, body) = server.request("GET", &format!("/v1/resources/{resource}"), None);
        assert_eq!(status, 200, "{resource} was acknowledged: {body}");
    }
    // Each transition is logged once, and the log names no path or secret.
    for transition in [
        "a write to the log failed",
        "does not take writes yet",
        "reopening the log",
        "the log is open again",
    ] {
        assert_eq!(server.logged(transition), 1, "logged once: {transition}");
    }
    assert_eq!(server.logged(TOKEN), 0, "no admin token in the log");
    print!(
        "{}",
        server
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    );
    let server = Arc::into_inner(server).expect("the writer thread is done");
    let stopped = server.stop();
    assert!(
        stopped.success(),
        "a recovered server stops cleanly: {stopped}"
    );
    // Nothing half-written: the chain, positions and invariants hold, and the log holds
    // exactly the acknowledged commands.
    let verified = assert_verifies(&data);
    println!("{}", verified.trim());
    assert!(
        verified.contains(&format!("ok: {} events", acknowledged.len())),
        "exactly the acknowledged commands are in the log ({}): {verified}",
        acknowledged.len()
    );
}
