//! The `tally` command line as a user runs it: `exec` conversing in JSON lines, the
//! journal tools, and argument errors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use common::{TALLY, TempDir, free_address};

/// A running `tally exec`, answered one line at a time.
struct Exec {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Exec {
    fn start(data: &std::path::Path) -> Exec {
        let mut child = Command::new(TALLY)
            .args(["exec", "--data"])
            .arg(data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("tally exec starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Exec { child, stdin, stdout }
    }

    /// Sends one line and reads its reply before sending anything else: this only works
    /// because `exec` flushes each reply before it reads the next line.
    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").expect("write a line");
        self.stdin.flush().expect("flush");
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("read a reply");
        serde_json::from_str(&reply).unwrap_or_else(|error| panic!("reply {reply:?} is not JSON: {error}"))
    }

    fn finish(self) {
        let Exec { mut child, stdin, .. } = self;
        drop(stdin);
        let status = child.wait().expect("tally exec exits");
        assert!(status.success(), "tally exec exited with {status}");
    }
}

fn statuses(reply: &Value) -> Vec<&str> {
    reply["results"].as_array().expect("a results reply").iter().map(|r| r["status"].as_str().unwrap_or("?")).collect()
}

fn ids(reply: &Value, key: &str) -> Vec<String> {
    let records = reply[key].as_array().unwrap_or_else(|| panic!("a {key} reply: {reply}"));
    records.iter().map(|record| record["id"].as_str().unwrap_or("?").to_owned()).collect()
}

#[test]
fn exec_answers_json_lines() {
    let dir = TempDir::new("exec");
    let data = dir.path().join("data");
    let mut exec = Exec::start(&data);

    let reply = exec.ask(
        r#"{"op": "create_accounts", "events": [{"id": 1, "ledger": 1, "code": 1, "flags": ["history"]}, {"id": "2", "ledger": 1, "code": 1}, {"id": 0, "ledger": 1, "code": 1}]}"#,
    );
    assert_eq!(statuses(&reply), ["created", "created", "id_must_not_be_zero"]);
    assert!(reply["results"][0]["timestamp"].as_u64().is_some_and(|timestamp| timestamp > 0));

    let reply =
        exec.ask(r#"{"op": "upsert_limit_profiles", "events": [{"id": 7, "ledger": 1, "max_single_debit": "1000"}]}"#);
    assert_eq!(statuses(&reply), ["created"]);

    let reply = exec.ask(
        r#"{"op": "create_transfers", "events": [{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": "250", "ledger": 1, "code": 1}, {"id": 11, "debit_account_id": 1, "credit_account_id": 1, "amount": 1, "ledger": 1, "code": 1}]}"#,
    );
    assert_eq!(statuses(&reply), ["created", "accounts_must_be_different"]);

    let reply = exec.ask(r#"{"op": "create_transfers", "events": [{"id": 12, "oops": 1}]}"#);
    assert!(reply["error"].as_str().is_some_and(|error| error.contains("oops")), "{reply}");
    let reply = exec.ask("this is not JSON");
    assert!(reply["error"].as_str().is_some_and(|error| error.starts_with("malformed JSON")), "{reply}");

    let reply = exec.ask(r#"{"op": "lookup_accounts", "ids": [2, 99, 1]}"#);
    assert_eq!(ids(&reply, "accounts"), ["2", "1"]);
    assert_eq!(reply["accounts"][0]["credits_posted"], json!("250"));
    assert_eq!(reply["accounts"][1]["debits_posted"], json!("250"));

    let reply = exec.ask(r#"{"op": "lookup_transfers", "ids": [11, 10]}"#);
    assert_eq!(ids(&reply, "transfers"), ["10"]);
    assert_eq!(reply["transfers"][0]["amount"], json!("250"));

    let filter = r#"{"account_id": 1, "limit": 10, "flags": ["debits", "credits"]}"#;
    let reply = exec.ask(&format!(r#"{{"op": "get_account_transfers", "filter": {filter}}}"#));
    assert_eq!(ids(&reply, "transfers"), ["10"]);
    let reply = exec.ask(&format!(r#"{{"op": "get_account_balances", "filter": {filter}}}"#));
    let balances = reply["balances"].as_array().expect("a balances reply");
    assert_eq!(balances.len(), 1);
    assert_eq!(balances[0]["debits_posted"], json!("250"));
    // A filter that cannot be answered is an error, not an empty list.
    let no_side = r#"{"account_id": 1, "limit": 10}"#;
    let reply = exec.ask(&format!(r#"{{"op": "get_account_transfers", "filter": {no_side}}}"#));
    assert!(reply["error"].as_str().is_some_and(|error| error.contains("neither side")), "{reply}");
    let too_many = r#"{"account_id": 1, "limit": 8190, "flags": ["debits"]}"#;
    let reply = exec.ask(&format!(r#"{{"op": "get_account_balances", "filter": {too_many}}}"#));
    assert!(reply["error"].as_str().is_some_and(|error| error.contains("limit 8190")), "{reply}");

    // A line longer than the limit is an error, and the next line is still read.
    let long = format!(r#"{{"op": "lookup_accounts", "ids": [{}1]}}"#, "1, ".repeat(3 << 20));
    let reply = exec.ask(&long);
    assert!(reply["error"].as_str().is_some_and(|error| error.contains("longer than")), "{reply}");
    let reply = exec.ask(r#"{"op": "lookup_accounts", "ids": [1]}"#);
    assert_eq!(ids(&reply, "accounts"), ["1"]);
    exec.finish();

    // A second run over the same directory starts from what the first one wrote: the
    // snapshot its clean shutdown left, and the journal.
    let snapshots = std::fs::read_dir(data.join("snapshots")).expect("the snapshot directory").count();
    assert_eq!(snapshots, 1);
    let mut exec = Exec::start(&data);
    let reply = exec.ask(r#"{"op": "lookup_accounts", "ids": [1, 2]}"#);
    assert_eq!(reply["accounts"][0]["debits_posted"], json!("250"));
    let reply = exec.ask(r#"{"op": "create_transfers", "events": [{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": "250", "ledger": 1, "code": 1}]}"#);
    assert_eq!(statuses(&reply), ["exists"]);
    exec.finish();

    // The journal holds the three mutations of the first run and the retried one.
    let output = Command::new(TALLY).args(["journal", "verify"]).arg(&data).output().expect("verify runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = Command::new(TALLY).args(["journal", "dump"]).arg(&data).output().expect("dump runs");
    assert!(output.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("dump lines are JSON"))
        .filter(|line: &Value| line["operation"] != "tick")
        .collect();
    let operations: Vec<&str> = lines.iter().map(|line| line["operation"].as_str().unwrap_or("?")).collect();
    assert_eq!(operations, ["create_accounts", "upsert_limit_profiles", "create_transfers", "create_transfers"]);
    assert_eq!(lines[2]["events"][1]["id"], json!("11"));
    assert_eq!(lines[0]["epoch"], json!(0));
    let first = lines[0]["sequence"].as_u64().expect("a sequence");
    let output = Command::new(TALLY)
        .args(["journal", "dump", "--count", "1", "--from"])
        .arg(first.to_string())
        .arg(&data)
        .output()
        .expect("dump runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains(r#""operation":"create_accounts""#), "{text}");
}

#[test]
fn journal_verify_reports_damage_with_a_nonzero_exit() {
    let dir = TempDir::new("verify");
    let data = dir.path().join("data");
    let mut exec = Exec::start(&data);
    exec.ask(r#"{"op": "create_accounts", "events": [{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]}"#);
    exec.ask(r#"{"op": "create_accounts", "events": [{"id": 3, "ledger": 1, "code": 1}]}"#);
    exec.finish();

    let segment = std::fs::read_dir(data.join("journal"))
        .expect("the journal directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    // A bit inside the first record's payload (after the segment prefix and the record header).
    let offset = tally_journal::SEGMENT_PREFIX_BYTES + tally_journal::RECORD_HEADER_BYTES + 3;
    bytes[offset] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write the segment back");
    // Without the snapshot the clean exit wrote: a snapshot covering the damage would let
    // start-up (and so verify) start after it.
    std::fs::remove_dir_all(data.join("snapshots")).expect("remove the snapshots");

    let output = Command::new(TALLY).args(["journal", "verify"]).arg(&data).output().expect("verify runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("corrupt"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let dir = TempDir::new("args");
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 path");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write a file");
    let under_a_file = not_a_dir.join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("an address").to_string();
    let rebuilt = dir.path().join("lost-disk");
    let rebuilt = rebuilt.to_str().expect("a UTF-8 path");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "Usage"),
        (vec!["launch"], "unrecognized subcommand"),
        (vec!["serve"], "--data"),
        (vec!["exec", "--data", data, "--durability", "sometimes"], "durability"),
        (vec!["exec", "--data", data, "--wait", "nap"], "wait strategy"),
        (vec!["exec", "--data", data, "--tick-interval-ms", "0"], "tick-interval-ms"),
        (vec!["serve", "--data", data, "--listen", "localhost"], "--listen"),
        (vec!["serve", "--data", data, "--listen", &taken], "cannot listen"),
        (vec!["exec", "--data", under_a_file.to_str().expect("UTF-8")], "data directory"),
        (vec!["client"], "--addr"),
        (vec!["status", "--addr", "nowhere:port"], "--addr"),
        (vec!["journal", "verify", not_a_dir.to_str().expect("UTF-8")], "not a directory"),
        (vec!["journal", "dump", data, "--from", "minus one"], "--from"),
        (vec!["rebuild", "--data", rebuilt, "--yes"], "pass --epoch"),
        (vec!["rebuild", "--data", rebuilt, "--epoch", "four"], "--epoch"),
        (vec!["serve", "--data", data, "--history-check", "sometimes"], "history check"),
        (vec!["serve", "--data", data, "--max-connections", "0"], "max-connections"),
        (vec!["exec", "--data", data, "--tick-interval-ms", "3600001"], "tick-interval-ms"),
        (
            vec![
                "reconcile",
                "--pg",
                "postgres://nobody@127.0.0.1:1/x",
                "--addr",
                "127.0.0.1:1",
                "--catch-up-s",
                "18446744073709551615",
            ],
            "catch-up-s",
        ),
        (
            vec!["standby", "--data", data, "--listen", "127.0.0.1:7101", "--primary", "127.0.0.1:7101"],
            "no node but this one",
        ),
        (
            vec!["standby", "--data", data, "--listen", "127.0.0.1:7101", "--primary", "127.0.0.1:7102,127.0.0.1:7102"],
            "twice",
        ),
        (
            vec![
                "standby",
                "--data",
                data,
                "--listen",
                "127.0.0.1:7101",
                "--primary",
                "127.0.0.1:7102",
                "--cluster",
                "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7102",
            ],
            "twice",
        ),
        (
            vec![
                "standby",
                "--data",
                data,
                "--listen",
                "127.0.0.1:7101",
                "--primary",
                "127.0.0.1:7102",
                "--cluster",
                "127.0.0.1:7101",
                "--auto-promote-after-ms",
                "1000",
            ],
            "other nodes",
        ),
        (
            vec![
                "standby",
                "--data",
                data,
                "--listen",
                "127.0.0.1:7101",
                "--primary",
                "127.0.0.1:7103",
                "--cluster",
                "127.0.0.1:7101,127.0.0.1:7102",
                "--auto-promote-after-ms",
                "1000",
            ],
            "not in --cluster",
        ),
        (
            vec![
                "standby",
                "--data",
                data,
                "--listen",
                "127.0.0.1:7101",
                "--primary",
                "127.0.0.1:7102",
                "--cluster",
                "127.0.0.1:7101,127.0.0.1:7102",
                "--auto-promote-after-ms",
                "1",
            ],
            "auto-promote-after-ms",
        ),
    ];
    for (args, expected) in cases {
        let output = Command::new(TALLY).args(&args).stdin(Stdio::null()).output().expect("tally runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "tally {args:?}: {stderr}");
        assert!(stderr.contains(expected), "tally {args:?}: expected {expected:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "tally {args:?}: {stderr}");
    }
    // A data directory another process has open is refused.
    let mut running = Exec::start(std::path::Path::new(data));
    running.ask(r#"{"op": "lookup_accounts", "ids": [1]}"#);
    let output = Command::new(TALLY).args(["exec", "--data", data]).stdin(Stdio::null()).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
    let rebuild = ["rebuild", "--data", data, "--epoch", "1", "--yes"];
    let output = Command::new(TALLY).args(rebuild).stdin(Stdio::null()).output().expect("runs");
    assert_eq!(output.status.code(), Some(2), "a running node's directory is not rebuilt");
    assert!(String::from_utf8_lossy(&output.stderr).contains("in use"));
    running.finish();

    // A dry run of rebuild over a directory that is not there creates nothing.
    let nowhere = dir.path().join("nowhere");
    let output = Command::new(TALLY)
        .args(["rebuild", "--data"])
        .arg(&nowhere)
        .args(["--epoch", "1"])
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!nowhere.exists(), "a dry run made the directory");

    // A node that is not there is a failure, not a usage error.
    let output = Command::new(TALLY).args(["status", "--addr", &free_address().to_string()]).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
}

/// Output to a reader that went away (`tally sim | head`) ends the command without a
/// panic, and a stderr that cannot be written keeps the command's exit code: `println!`
/// and `eprintln!` panicked on both (exit 101).
#[test]
fn a_closed_stdout_or_a_full_stderr_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = Command::new(TALLY)
        .args(["sim", "--seeds", "3", "--steps", "100"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("tally runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let dir = TempDir::new("full-stderr");
    let missing = dir.path().join("missing");
    let output =
        Command::new(TALLY).args(["journal", "verify"]).arg(&missing).stderr(full).output().expect("tally runs");
    assert_eq!(output.status.code(), Some(2), "a usage error stays exit 2 when stderr cannot be written");
}

/// `tally exec` over a standby's or a fenced node's data directory is refused before it
/// takes a write: a standby's took writes that its next start cut (acknowledged, then
/// lost), and a fenced node's first write hung for ever.
#[test]
fn exec_refuses_a_standby_or_fenced_directory() {
    let dir = TempDir::new("exec-replica");
    let data = dir.path().join("data");
    let mut exec = Exec::start(&data);
    exec.ask(r#"{"op": "lookup_accounts", "ids": [1]}"#);
    exec.finish();
    for role in ["3 standby\n", "3 fenced\n"] {
        std::fs::write(data.join("EPOCH"), role).expect("the role is written");
        let mut child = Command::new(TALLY)
            .args(["exec", "--data"])
            .arg(&data)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tally runs");
        let mut stdin = child.stdin.take().expect("stdin");
        // Ignored if it has already exited (the pipe is closed).
        let _ = stdin.write_all(br#"{"op":"create_accounts","events":[{"id":1,"ledger":1,"code":1}]}"#);
        let _ = stdin.write_all(b"\n");
        drop(stdin);
        let hung = common::exit_within(&mut child, std::time::Duration::from_secs(20)).is_none();
        let output = child.wait_with_output().expect("exits");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!hung, "{role:?}: exec hung");
        assert_eq!(output.status.code(), Some(2), "{role:?}: {stderr}");
        assert!(!stdout.contains("created"), "{role:?}: a write was taken: {stdout}");
        assert!(stderr.contains("tally standby"), "{role:?}: the way out is named: {stderr}");
    }
}

/// `tally journal verify` only reads: it creates no `LOCK` and leaves a staged snapshot
/// file alone (it took the lock for writing and removed staged files, so it failed on a
/// read-only copy and changed what it was asked to check).
#[test]
fn journal_verify_writes_nothing() {
    let dir = TempDir::new("verify-reads");
    let data = dir.path().join("data");
    let mut exec = Exec::start(&data);
    exec.ask(r#"{"op": "create_accounts", "events": [{"id": 1, "ledger": 1, "code": 1}]}"#);
    exec.finish();
    std::fs::remove_file(data.join("LOCK")).expect("the lock file is removed");
    let staged = data.join("snapshots").join("00000000000000000009.snap.staged");
    std::fs::write(&staged, b"half a snapshot").expect("a staged file");
    let output = Command::new(TALLY).args(["journal", "verify"]).arg(data.join("journal")).output().expect("runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!data.join("LOCK").exists(), "verify created a lock file");
    assert!(staged.exists(), "verify removed a staged snapshot file");
}

/// `tally serve` without the cluster flags over a replica set member's directory is
/// refused (no fence check would run, and a primary whose standby was promoted meanwhile
/// would acknowledge beside the new one); `--alone` serves it.
#[test]
fn serve_without_cluster_flags_refuses_a_replica_set_members_directory() {
    let dir = TempDir::new("serve-member");
    let data = dir.path().join("data");
    let mut exec = Exec::start(&data);
    exec.ask(r#"{"op": "lookup_accounts", "ids": [1]}"#);
    exec.finish();
    std::fs::write(data.join("EPOCH"), "3 primary\n").expect("the role is written");
    let listen = free_address().to_string();
    let mut refused = Command::new(TALLY)
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", &listen])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally runs");
    let served = common::exit_within(&mut refused, std::time::Duration::from_secs(20)).is_none();
    let output = refused.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!served, "it served without the cluster flags: {stderr}");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("belongs to a replica set") && stderr.contains("--alone"), "{stderr}");

    let mut alone = Command::new(TALLY)
        .args(["serve", "--alone", "--data"])
        .arg(&data)
        .args(["--listen", &listen])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(alone.try_wait().expect("waitable").is_none(), "--alone serves it");
        assert!(std::time::Instant::now() < deadline, "--alone never listened");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The port is bound before the check: still running a moment later is what says it passed.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(alone.try_wait().expect("waitable").is_none(), "--alone serves it");
    let _ = alone.kill();
    let _ = alone.wait();
}
