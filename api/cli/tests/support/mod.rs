//! `roster serve` as a real process for the command-line tests: on a free port, ready once it
//! says it listens, with everything it writes to standard error kept.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub struct Served {
    pub child: Child,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Everything the server has written to standard error so far.
    pub log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `roster serve` on `data` with this admin token (`None`: none given, so the
    /// server makes one at first start) and waits until it listens.
    pub fn start(data: &Path, admin_token: Option<&str>) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
        command
            .arg("--data")
            .arg(data)
            .args(["serve", "--listen", &address])
            .env("ROSTER_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match admin_token {
            Some(token) => command.env("ROSTER_ADMIN_TOKEN", token),
            None => command.env_remove("ROSTER_ADMIN_TOKEN"),
        };
        let mut child = command.spawn().expect("the server starts");
        let mut log = BufReader::new(child.stderr.take().expect("piped"));
        let mut said = String::new();
        loop {
            let mut line = String::new();
            assert!(
                log.read_line(&mut line).expect("reads") > 0,
                "stopped before listening: {said}"
            );
            said.push_str(&line);
            if line.contains("roster is listening") {
                break;
            }
        }
        // The rest is kept as it comes, so the server never blocks on a full pipe.
        let kept = Arc::new(Mutex::new(said));
        let keeping = Arc::clone(&kept);
        std::thread::spawn(move || {
            let mut line = String::new();
            while log.read_line(&mut line).is_ok_and(|n| n > 0) {
                keeping
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&line);
                line.clear();
            }
        });
        Served {
            child,
            address,
            log: kept,
        }
    }

    /// What the server has written to standard error so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
