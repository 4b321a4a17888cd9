//! An idle node is idle: with no pending transfer to expire it journals nothing, so a
//! short `exec` writes no tick and a node left alone keeps its last sequence.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ServerProcess, TALLY, TempDir, account, client, free_address};

/// A tick check every 50 ms: twenty chances a second to journal a tick that is not due.
const FAST_TICKS: [&str; 2] = ["--tick-interval-ms", "50"];

fn operations(data: &std::path::Path) -> Vec<String> {
    let output = Command::new(TALLY).args(["journal", "dump"]).arg(data).output().expect("dump runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).expect("dump lines are JSON");
            record["operation"].as_str().unwrap_or("?").to_owned()
        })
        .collect()
}

#[test]
fn exec_lasting_over_a_second_with_nothing_pending_writes_no_tick() {
    let dir = TempDir::new("idle-exec");
    let data = dir.path().join("data");
    let mut child = Command::new(TALLY)
        .args(["exec", "--data"])
        .arg(&data)
        .args(FAST_TICKS)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tally exec starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    writeln!(stdin, r#"{{"op": "create_accounts", "events": [{{"id": 1, "ledger": 1, "code": 1}}]}}"#).expect("write");
    writeln!(stdin, r#"{{"op": "create_transfers", "events": []}}"#).expect("write");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(1500));
    drop(stdin);
    assert!(child.wait().expect("exec exits").success());
    assert_eq!(operations(&data), ["create_accounts"], "no tick, and the empty create is not journaled");
}

#[test]
fn idle_node_journals_no_records() {
    let dir = TempDir::new("idle-serve");
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data, free_address(), &FAST_TICKS);
    let client = client(&[server.address], Duration::from_secs(10));
    client.create_accounts(&[account(1), account(2)]).expect("the node answers");
    let before = client.status().expect("status").last_sequence;
    std::thread::sleep(Duration::from_millis(1500));
    let after = client.status().expect("status").last_sequence;
    assert_eq!(after, before, "no record was journaled while the node was idle");
    drop(client);
    assert!(server.terminate());
}
