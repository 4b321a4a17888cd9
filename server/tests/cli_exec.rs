//! `tally exec` keeps a pipelining program in step: every line gets a reply, and a closed
//! stdout stops it with a message and a non-zero exit.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{TALLY, TempDir};

const CREATE: &str = r#"{"op": "create_accounts", "events": [{"id": 1, "ledger": 1, "code": 1}]}"#;

#[test]
fn blank_lines_are_answered_in_order() {
    let dir = TempDir::new("exec-blank");
    let output = Command::new(TALLY)
        .args(["exec", "--data"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            write!(stdin, "\n   \n{CREATE}\n")?;
            drop(stdin);
            child.wait_with_output()
        })
        .expect("tally exec runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], [r#"{"error":"empty line"}"#, r#"{"error":"empty line"}"#], "{stdout}");
    assert!(lines[2].contains("created"), "{stdout}");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_closed_stdout_stops_exec_with_a_message_and_exit_1() {
    let dir = TempDir::new("exec-closed");
    let mut child = Command::new(TALLY)
        .args(["exec", "--data"])
        .arg(dir.path().join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally exec starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    writeln!(stdin, "{CREATE}").expect("write");
    let mut reply = String::new();
    stdout.read_line(&mut reply).expect("the first reply");
    assert!(reply.contains("created"), "{reply}");
    // The reader goes away; the next reply has nowhere to go.
    drop(stdout);
    for _ in 0..3 {
        // exec may have stopped already; then the pipe is closed.
        let _ = writeln!(stdin, r#"{{"op": "lookup_accounts", "ids": [1]}}"#);
    }
    drop(stdin);
    let output = child.wait_with_output().expect("tally exec exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    assert!(stderr.contains("2 requests were applied"), "{stderr}");
}
