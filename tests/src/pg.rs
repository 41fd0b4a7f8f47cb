//! A private PostgreSQL 15 for tests: `initdb` into a temporary directory, a free port on
//! 127.0.0.1, fsync on, a database per test; stopped and removed when the test process ends.
//!
//! Found through `pg_config --bindir` (Debian's `postgresql-15`, which `.ci/run` installs).
//! Nothing is skipped without it: a test that needs PostgreSQL fails, saying how to get it.
//! This file uses nothing but `std` and `tempfile`, so the event store's own tests include it
//! (`#[path]`) without depending on this crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster of our own.
#[derive(Debug)]
pub struct PgCluster {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    /// Holds the directory; removed by the watcher once the cluster is stopped.
    _root: PathBuf,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The cluster this test process shares, started on first use.
pub fn cluster() -> &'static PgCluster {
    SHARED.get_or_init(PgCluster::start)
}

/// A fresh database on the shared cluster: its URL.
pub fn database() -> String {
    cluster().database()
}

fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let bindir = from_pg_config.unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        bindir.join("initdb").exists(),
        "PostgreSQL's server binaries are missing (no initdb in {}): install Debian's \
         postgresql-15 (`apt-get install -y postgresql-15`; `.ci/run` does it), or put \
         pg_config of a PostgreSQL 15 on PATH",
        bindir.display()
    );
    bindir
}

/// `initdb` refuses to run as root: then the cluster runs as the `postgres` user.
fn as_cluster_owner(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgCluster {
    /// A new cluster of its own (for a test that stops and starts PostgreSQL); stopped when
    /// the test process ends.
    pub fn start() -> PgCluster {
        let bindir = bindir();
        let root = tempfile::Builder::new()
            .prefix("roster-pg.")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = root.join("data");
        // The cluster's owner must reach its directory.
        run(
            Command::new("chmod").arg("755").arg(&root),
            "making the cluster's directory reachable",
        );
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&root)
            .status();
        run(
            as_cluster_owner(&bindir.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "roster", "--auth=trust", "--no-sync", "-E", "UTF8"]),
            "initdb",
        );
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = on\nsynchronous_commit = on\nmax_connections = 300\n\
             shared_buffers = 128MB\nlog_min_messages = warning\n",
            root.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("writes postgresql.conf");
        let cluster = PgCluster {
            bindir,
            data,
            port,
            _root: root.clone(),
        };
        cluster.start_server();
        cluster.watch(&root);
        cluster
    }

    /// Stops the cluster and removes its directory once this process has ended, however it
    /// ended: a watcher process polls for it, in a session of its own and deaf to the usual
    /// signals, so that killing the test's process group (a timeout, Ctrl-C) does not take
    /// the watcher with it.
    fn watch(&self, root: &Path) {
        let script = format!(
            "trap '' HUP INT TERM; \
             while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            ctl = as_owner_prefix(&self.bindir.join("pg_ctl")),
            data = self.data.display(),
            root = root.display(),
        );
        let setsid = Path::new("/usr/bin/setsid").exists();
        let mut watcher = if setsid {
            let mut command = Command::new("/usr/bin/setsid");
            command.arg("sh");
            command
        } else {
            Command::new("sh")
        };
        let _ = watcher
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Starts the server (again) on its port, waiting until it takes connections.
    pub fn start_server(&self) {
        run(
            as_cluster_owner(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(self.data.join("server.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        );
    }

    /// Stops the server at once, as a crash would (`-m immediate`): no checkpoint.
    pub fn stop_immediate(&self) {
        run(
            as_cluster_owner(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data.join("server.log")
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://roster@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh database; its URL.
    pub fn database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        run(
            Command::new(self.bindir.join("createdb"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "roster",
                ])
                .arg(&name),
            "createdb",
        );
        self.url(&name)
    }

    /// Runs one SQL text with psql against database `name`; its output, unaligned.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let output = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "roster",
            ])
            .args(["-d", name, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("runs psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

/// The shell words that run `program` as the cluster's owner (for the watcher's script).
fn as_owner_prefix(program: &Path) -> String {
    let command = as_cluster_owner(program);
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(command.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}
