//! `tally client` and `tally status` against peers that cannot answer: one that does not
//! speak Tally, a port where nothing listens, and a node that dies mid-conversation.
//! Each must fail promptly, with a message, and a non-zero exit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ServerProcess, TALLY, TempDir, free_address};

/// Far below the 60 s a call used to wait per line, far above what a prompt failure takes.
const PROMPT_FAILURE: Duration = Duration::from_secs(20);

const LOOKUP: &str = r#"{"op": "lookup_accounts", "ids": [1]}"#;

/// A listener that answers every connection with an HTTP error, as a web server would.
fn garbage_listener() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("an address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buffer) {
                    if read == 0 || stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// Runs `tally ARGS` with `input` on stdin; fails the test if it takes longer than
/// [`PROMPT_FAILURE`].
fn run(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(TALLY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally starts");
    // tally may have failed and exited before reading its input; that is its answer.
    let _ = child.stdin.take().expect("piped stdin").write_all(input.as_bytes());
    wait_bounded(&mut child);
    child.wait_with_output().expect("tally exits")
}

fn wait_bounded(child: &mut Child) {
    let deadline = Instant::now() + PROMPT_FAILURE;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tally did not finish within {PROMPT_FAILURE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_peer_that_does_not_speak_tally_fails_at_once_with_a_clear_message() {
    let address = garbage_listener().to_string();
    let output = run(&["client", "--addr", &address], &format!("{LOOKUP}\n{LOOKUP}\n"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "each line is answered: {stdout}");
    assert!(stdout.lines().all(|line| line.contains("does not speak the Tally protocol")), "{stdout}");
    assert!(stderr.contains("2 of 2 requests failed"), "{stderr}");

    let output = run(&["status", "--addr", &address], "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not speak the Tally protocol"), "{stderr}");
}

#[test]
fn a_closed_port_fails_within_the_connect_timeout() {
    let address = free_address().to_string();
    for command in ["client", "status"] {
        let output = run(&[command, "--addr", &address, "--connect-timeout-ms", "200"], &format!("{LOOKUP}\n"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "tally {command}: {stderr}");
        assert!(stderr.contains("no node reachable"), "tally {command}: {stderr}");
    }
}

#[test]
fn a_node_that_dies_mid_conversation_fails_the_next_line_within_the_connect_timeout() {
    let dir = TempDir::new("client-dies");
    let server = ServerProcess::start(&dir.path().join("data"), free_address(), &[]);
    let address = server.address.to_string();
    let mut child = Command::new(TALLY)
        .args(["client", "--addr", &address, "--connect-timeout-ms", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally client starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut reply = String::new();
    writeln!(stdin, "{LOOKUP}").expect("write");
    stdout.read_line(&mut reply).expect("a reply");
    assert_eq!(reply.trim(), r#"{"accounts":[]}"#);

    server.kill();
    reply.clear();
    writeln!(stdin, "{LOOKUP}").expect("write");
    drop(stdin);
    stdout.read_line(&mut reply).expect("a reply");
    assert!(reply.contains("no node reachable"), "{reply}");
    wait_bounded(&mut child);
    assert_eq!(child.wait().expect("exits").code(), Some(1));
}
