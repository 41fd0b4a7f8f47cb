//! The child process of the crash test: appends from many concurrent tasks to a sled log in
//! `sync` mode and prints one line per acknowledged append, until it is killed.
//!
//! Usage: `crash-append DATA_DIR TASKS`. Each line is `ack POSITION STREAM VERSION COMMAND_ID`.

use std::io::Write;
use std::sync::Arc;

use roster_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, SledOptions, SledStore, StreamView,
};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(tasks)) = (args.next(), args.next().and_then(|t| t.parse::<u32>().ok()))
    else {
        eprintln!("usage: crash-append DATA_DIR TASKS");
        std::process::exit(2);
    };
    let store = match SledStore::open(std::path::Path::new(&dir), SledOptions::default()) {
        Ok(store) => Arc::new(store),
        Err(error) => {
            eprintln!("crash-append: {error}");
            std::process::exit(1);
        }
    };
    let run = ulid::Ulid::new();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for n in 0u64.. {
                    let stream = format!("stream-{}", task % 5);
                    let command_id = format!("{run}-{task}-{n}");
                    let event = NewEvent {
                        event_id: ulid::Ulid::new().to_string(),
                        event_type: "Appended".into(),
                        schema: 1,
                        data: json!({ "task": task, "n": n }),
                    };
                    // Half the appends are decided by the writer, half carry their events.
                    let request = if n % 2 == 0 {
                        AppendRequest::new(stream, ExpectedVersion::Any, vec![event])
                    } else {
                        AppendRequest::decided(stream, move |_: StreamView<'_>| Ok(vec![event]))
                    };
                    match store.append(request.command_id(command_id.clone())).await {
                        Ok(done) => {
                            let mut out = std::io::stdout().lock();
                            let line = format!(
                                "ack {} {} {} {}",
                                done.position, done.stream, done.version, command_id
                            );
                            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            eprintln!("crash-append: {error}");
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}
