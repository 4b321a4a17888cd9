//! The journal as an operator meets it: `journal verify` agrees with start-up (no journal,
//! a journal start-up refuses, a node holding the directory), start-up names a missing
//! segment, damaged slots and cut records are reported, `journal truncate` shows before it
//! acts, the segment size is a setting, and an outcome entry rotted below the snapshot is
//! rebuilt at start.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{ServerProcess, TALLY, TempDir, free_address};

const ACCOUNTS: &str =
    r#"{"op": "create_accounts", "events": [{"id": 1, "ledger": 1, "code": 1}, {"id": 2, "ledger": 1, "code": 1}]}"#;

fn transfer(id: u32) -> String {
    format!(
        r#"{{"op": "create_transfers", "events": [{{"id": {id}, "debit_account_id": 1, "credit_account_id": 2, "amount": "5", "ledger": 1, "code": 1}}]}}"#
    )
}

/// Runs `tally exec --data DATA ARGS…` over `lines` and returns its output.
fn exec(data: &Path, args: &[&str], lines: &[String]) -> Output {
    let mut child = Command::new(TALLY)
        .args(["exec", "--data"])
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally exec starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write a line");
    }
    drop(stdin);
    child.wait_with_output().expect("tally exec exits")
}

fn tally(args: &[&str], dir: &Path) -> Output {
    Command::new(TALLY).args(args).arg(dir).output().expect("tally runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A data directory after one `exec` run of some requests (it ends with a snapshot).
fn data_with_records(dir: &TempDir) -> PathBuf {
    let data = dir.path().join("data");
    let mut lines = vec![ACCOUNTS.to_owned()];
    lines.extend((10..15).map(transfer));
    let output = exec(&data, &[], &lines);
    assert!(output.status.success(), "{}", stderr(&output));
    data
}

/// The one file in `dir` whose name ends in `.extension`.
fn only_file(dir: &Path, extension: &str) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

fn only_segment(data: &Path) -> PathBuf {
    only_file(&data.join("journal"), "seg")
}

#[test]
fn verify_says_no_journal_here_for_an_empty_or_arbitrary_directory() {
    let dir = TempDir::new("no-journal");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let arbitrary = dir.path().join("arbitrary");
    std::fs::create_dir_all(arbitrary.join("sub")).expect("mkdir");
    std::fs::write(arbitrary.join("notes.txt"), "hello").expect("write");
    for target in [&empty, &arbitrary] {
        let output = tally(&["journal", "verify"], target);
        assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
        assert!(stderr(&output).contains("no journal here"), "{}", stderr(&output));
    }
    assert_eq!(std::fs::read_dir(&empty).expect("list").count(), 0, "verify created nothing");
}

#[test]
fn verify_and_start_up_refuse_a_journal_that_starts_after_a_snapshot_that_is_not_there() {
    let dir = TempDir::new("starts-at-690");
    let data = dir.path().join("data");
    let config = tally_journal::JournalConfig {
        snapshot_sequence: 689,
        ..tally_journal::JournalConfig::new(data.join("journal"))
    };
    let (mut journal, _) = tally_journal::Journal::open(&config).expect("a journal starting at 690");
    assert_eq!(journal.append(0, 1, 1, b"").expect("append"), 690);
    journal.close();
    std::fs::create_dir_all(data.join("snapshots")).expect("mkdir");
    let output = tally(&["journal", "verify"], &data);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("does not hold sequence 1"), "{}", stderr(&output));
    let output = exec(&data, &[], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("does not hold sequence 1"), "{}", stderr(&output));
}

#[test]
fn verify_and_truncate_refuse_while_a_node_holds_the_directory() {
    let dir = TempDir::new("held");
    let data = data_with_records(&dir);
    let server = ServerProcess::start(&data, free_address(), &[]);
    for args in [&["journal", "verify"][..], &["journal", "truncate", "--at", "1", "--yes"][..]] {
        let output = tally(args, &data);
        assert!(!output.status.success(), "{args:?}: {}", stdout(&output));
        assert!(stderr(&output).contains("in use by a running tally node"), "{}", stderr(&output));
    }
    // SIGKILL: a SIGTERM this early could arrive before the node installs its handler.
    server.kill();
    assert!(tally(&["journal", "verify"], &data).status.success(), "the lock went with the node");
}

#[test]
fn deleting_the_only_segment_makes_start_up_and_verify_refuse_naming_it() {
    let dir = TempDir::new("deleted");
    let data = data_with_records(&dir);
    let segment = only_segment(&data);
    let name = segment.file_name().and_then(|name| name.to_str()).expect("name").to_owned();
    std::fs::remove_file(&segment).expect("delete the segment");
    let output = exec(&data, &[], &[]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains(&name) && stderr(&output).contains("missing"), "{}", stderr(&output));
    let output = tally(&["journal", "verify"], &data);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&name), "{}", stderr(&output));
}

#[test]
fn one_damaged_mark_slot_is_reported_by_verify_and_start_up() {
    let dir = TempDir::new("mark-slot");
    let data = data_with_records(&dir);
    let segment = only_segment(&data);
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[512 + 20] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");
    let output = tally(&["journal", "verify"], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("1 durable-mark slot(s) damaged"), "{}", stdout(&output));
    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("WARNING: 1 durable-mark slot(s)"), "{}", stderr(&output));
}

#[test]
fn damage_that_the_snapshot_covers_starts_from_the_snapshot_and_says_so() {
    let dir = TempDir::new("covered");
    let data = data_with_records(&dir);
    let segment = only_segment(&data);
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[tally_journal::SEGMENT_PREFIX_BYTES + tally_journal::RECORD_HEADER_BYTES + 3] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");
    let output = tally(&["journal", "verify"], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("damage covered by the snapshot"), "{}", stdout(&output));
    let output = exec(&data, &[], &[r#"{"op": "lookup_accounts", "ids": [2]}"#.to_owned()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("starting from the snapshot"), "{}", stderr(&output));
    assert!(stdout(&output).contains(r#""credits_posted":"25""#), "{}", stdout(&output));
}

#[test]
fn truncate_shows_what_it_would_discard_and_acts_only_with_yes() {
    let dir = TempDir::new("truncate");
    let data = data_with_records(&dir);
    for snapshot in std::fs::read_dir(data.join("snapshots")).expect("snapshots") {
        std::fs::remove_file(snapshot.expect("entry").path()).expect("remove the snapshot");
    }
    let before = stdout(&tally(&["journal", "verify"], &data));
    let output = tally(&["journal", "truncate", "--at", "2"], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("would discard") && stdout(&output).contains("--yes"), "{}", stdout(&output));
    assert_eq!(stdout(&tally(&["journal", "verify"], &data)), before, "a preview changes nothing");
    let output = tally(&["journal", "truncate", "--at", "2", "--yes"], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    let after = stdout(&tally(&["journal", "verify"], &data));
    assert!(after.contains("(sequences 1 to 2)"), "{after}");
    assert!(!data.join("RECOVERING").exists(), "an epoch-0 primary is only warned");
    // A replica that loses records may lack some it acknowledged: it is marked recovering.
    std::fs::write(data.join("EPOCH"), "2 standby\n").expect("a replica's epoch file");
    let output = tally(&["journal", "truncate", "--at", "1", "--yes"], &data);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("marked recovering"), "{}", stdout(&output));
    assert!(data.join("RECOVERING").exists());
}

#[test]
fn the_segment_size_is_a_setting() {
    let dir = TempDir::new("segment-size");
    let data = dir.path().join("data");
    let output = exec(&data, &["--journal-segment-mib", "4"], &[ACCOUNTS.to_owned()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let length = std::fs::metadata(only_segment(&data)).expect("metadata").len();
    assert_eq!(length, 4 << 20);
    let output = exec(&data, &["--journal-segment-mib", "1"], &[]);
    assert_eq!(output.status.code(), Some(2), "below the smallest size");
}

#[test]
fn a_snapshot_the_manifest_records_but_that_is_gone_is_reported_at_start() {
    let dir = TempDir::new("snapshot-gone");
    let data = data_with_records(&dir);
    // The second run records the first run's snapshot in the manifest and writes another.
    let output = exec(&data, &[], &[transfer(20)]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut snapshots: Vec<PathBuf> = std::fs::read_dir(data.join("snapshots"))
        .expect("snapshots")
        .map(|entry| entry.expect("entry").path())
        .collect();
    snapshots.sort();
    std::fs::remove_file(snapshots.last().expect("a snapshot")).expect("remove the newest snapshot");
    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("that snapshot is missing or damaged"), "{}", stderr(&output));
}

/// (offset, sequence) of every record in a segment file, walking the record headers.
fn record_positions(bytes: &[u8]) -> Vec<(usize, u64)> {
    let header_bytes = tally_journal::RECORD_HEADER_BYTES;
    let mut offset = tally_journal::SEGMENT_PREFIX_BYTES;
    let mut positions = Vec::new();
    while offset + header_bytes <= bytes.len() && bytes[offset..offset + header_bytes].iter().any(|&byte| byte != 0) {
        let payload = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().expect("4 bytes")) as usize;
        let sequence = u64::from_le_bytes(bytes[offset + 16..offset + 24].try_into().expect("8 bytes"));
        positions.push((offset, sequence));
        offset += tally_journal::record_bytes(payload).expect("a record size");
    }
    positions
}

#[test]
fn a_cut_in_the_last_group_commit_is_a_loud_warning_naming_the_sequence() {
    let dir = TempDir::new("last-commit");
    let data = dir.path().join("data");
    let mut child = Command::new(TALLY)
        .args(["exec", "--data"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tally exec starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut replies = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in std::iter::once(ACCOUNTS.to_owned()).chain((30..33).map(transfer)) {
        writeln!(stdin, "{line}").expect("write a line");
        stdin.flush().expect("flush");
        let mut reply = String::new();
        std::io::BufRead::read_line(&mut replies, &mut reply).expect("a reply");
        assert!(reply.contains("created"), "{reply}");
    }
    // SIGKILL: no clean close, so the durable mark on disk lags the last flush.
    child.kill().expect("kill");
    child.wait().expect("reaped");
    let segment = only_segment(&data);
    let mut bytes = std::fs::read(&segment).expect("read");
    let &(offset, last) = record_positions(&bytes).last().expect("records");
    bytes[offset + 20] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");
    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&format!("WARNING: journal recovery CUT the record at sequence {last}")), "{text}");
    assert!(text.contains("MAY HAVE BEEN ACKNOWLEDGED"), "{text}");
}

/// Flips one bit of the entry bytes of the outcome stream, `fraction` of the way in.
fn rot_outcome_entry(data: &Path, fraction: (usize, usize)) {
    let segment = only_file(&data.join("outcomes"), "outcomes");
    let mut bytes = std::fs::read(&segment).expect("the segment");
    let used = bytes.iter().rposition(|&byte| byte != 0).expect("entries") + 1;
    bytes[used * fraction.0 / fraction.1] ^= 0x40;
    std::fs::write(&segment, bytes).expect("the damaged segment");
}

/// Reads the outcome stream from entry 1 to `last`: it must be whole and gapless.
fn assert_stream_gapless(data: &Path, last: u64, log: &str) {
    let storage = tally_journal::FileStorage::new(data.join("outcomes"), tally_journal::FlushMethod::Fdatasync)
        .expect("the outcome stream");
    let mut reader = tally_sinks::stream::StreamReader::new(storage, 1);
    let mut read = 0;
    while let Some(outcome) = reader.next(last).expect("the stream reads") {
        read += 1;
        assert_eq!(outcome.sequence, read, "gapless");
    }
    assert_eq!(read, last, "{log}");
}

/// An outcome entry that rots in the newest segment, below the snapshot the next start
/// begins from: the start cuts the stream at the damage, and since the snapshot is past the
/// cut, replays the journal from its start to rebuild it, so the stream stays gapless
/// (docs/design.md §7b).
#[test]
fn an_outcome_entry_rotted_below_the_snapshot_is_rebuilt_from_the_journal() {
    let dir = TempDir::new("outcome-rot");
    let data = data_with_records(&dir);
    // A bit in the second of six entries (the snapshot is at the sixth).
    rot_outcome_entry(&data, (1, 3));

    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("outcome stream gap"), "{}", stderr(&output));
    assert_stream_gapless(&data, 6, &stderr(&output));
}

/// The same with an older snapshot at or below the damage: the start replays from it, not
/// from the journal's start (which a node that trims its journal no longer holds).
#[test]
fn an_outcome_entry_rotted_between_two_snapshots_is_rebuilt_from_the_older_one() {
    let dir = TempDir::new("outcome-rot-older");
    let data = data_with_records(&dir);
    let output = exec(&data, &[], &(20..25).map(transfer).collect::<Vec<_>>());
    assert!(output.status.success(), "{}", stderr(&output));
    // A bit in one of entries 7 to 11: past the snapshot at 6, before the one at 11.
    rot_outcome_entry(&data, (3, 4));

    let output = exec(&data, &[], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("replaying from the snapshot at 6"), "{}", stderr(&output));
    assert_stream_gapless(&data, 11, &stderr(&output));
}
