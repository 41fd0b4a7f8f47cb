//! A small real SMTP server for the delivery tests: it accepts every message and prints it.
//!
//! Usage: `smtp-sink ADDRESS` (e.g. `127.0.0.1:0`). It prints `listening HOST:PORT`, then one
//! JSON line per message received: `{"from": …, "to": [..], "data": "<the message>"}`.
//! It speaks enough SMTP (RFC 5321) for a client library: EHLO/HELO, MAIL, RCPT, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

fn main() {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = match TcpListener::bind(&address) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("smtp-sink: cannot listen on {address}: {error}");
            std::process::exit(1);
        }
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    {
        let mut out = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = writeln!(out, "listening {local}");
        let _ = out.flush();
    }
    for stream in listener.incoming().flatten() {
        let out = Arc::clone(&out);
        std::thread::spawn(move || {
            let _ = session(stream, &out);
        });
    }
}

fn session(stream: TcpStream, out: &Mutex<std::io::Stdout>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    writer.write_all(b"220 smtp-sink ready\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::<String>::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => writer.write_all(b"250-smtp-sink\r\n250 8BITMIME\r\n")?,
            "HELO" | "NOOP" => writer.write_all(b"250 OK\r\n")?,
            "RSET" => {
                from.clear();
                to.clear();
                writer.write_all(b"250 OK\r\n")?;
            }
            "MAIL" => {
                from = address_in(&command);
                writer.write_all(b"250 OK\r\n")?;
            }
            "RCPT" => {
                to.push(address_in(&command));
                writer.write_all(b"250 OK\r\n")?;
            }
            "DATA" => {
                writer.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let record = serde_json::json!({ "from": from, "to": to, "data": data });
                {
                    let mut out = out
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    writeln!(out, "{record}")?;
                    out.flush()?;
                }
                from.clear();
                to.clear();
                writer.write_all(b"250 OK queued\r\n")?;
            }
            "QUIT" => {
                writer.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => writer.write_all(b"502 not implemented\r\n")?,
        }
    }
}

/// The address between `<` and `>` of a MAIL or RCPT command.
fn address_in(command: &str) -> String {
    match (command.find('<'), command.rfind('>')) {
        (Some(start), Some(end)) if start < end => command[start + 1..end].to_string(),
        _ => String::new(),
    }
}
