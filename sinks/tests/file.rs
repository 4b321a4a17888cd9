//! The file sink on its own: a torn or unacknowledged tail is cut on resume, files begun
//! after the watermark are removed, and files rotate and are trimmed to the count kept.

use std::path::Path;

use tally_codecs::outcome::{Outcome, OutcomeEvents};
use tally_sinks::file::{FileConfig, FileSink, files};
use tally_sinks::sink::Sink;

fn tick(sequence: u64) -> Outcome {
    Outcome {
        sequence,
        timestamp: sequence,
        // Stands in for the entry's stored checksum, which a sink keeps beside its watermark.
        checksum: u32::try_from(sequence).unwrap_or(u32::MAX) ^ 0x7a11_0000,
        events: OutcomeEvents::Tick,
        results: Vec::new(),
        transfers: Vec::new(),
        accounts: Vec::new(),
        expired: vec![u128::from(sequence)],
    }
}

fn sequences(dir: &Path) -> Vec<u64> {
    let mut found = Vec::new();
    for (_, name) in files(dir).expect("files") {
        let text = std::fs::read_to_string(dir.join(name)).expect("readable");
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            found.push(value["sequence"].as_u64().expect("a sequence"));
        }
    }
    found
}

fn temporary(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tally-file-sink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_torn_tail_and_a_file_begun_after_the_watermark_are_cut_on_resume() {
    let dir = temporary("torn");
    let config = FileConfig { file_bytes_max: 1, files_keep: 0, ..FileConfig::new(&dir) };
    let mut sink = FileSink::new(config.clone());
    assert_eq!(sink.resume().expect("resume"), 0);
    assert_eq!(sink.held_entry(), None, "nothing held yet");
    sink.write(&[tick(1), tick(2)]).expect("write");
    sink.write(&[tick(3)]).expect("write");
    // A crash after appending, before the watermark: a torn line in the current file,
    // and a file begun for the next batch.
    let (_, newest) = files(&dir).expect("files").pop().expect("a file");
    let mut torn = std::fs::OpenOptions::new().append(true).open(dir.join(newest)).expect("open");
    std::io::Write::write_all(&mut torn, b"{\"sequence\":4,\"tor").expect("append");
    std::fs::write(dir.join("00000000000000000004.jsonl"), b"{\"sequence\":4}\n").expect("write");

    let mut restarted = FileSink::new(config);
    assert_eq!(restarted.resume().expect("resume"), 3);
    assert_eq!(restarted.held_entry(), Some((3, tick(3).checksum)), "the watermark keeps its entry's checksum");
    restarted.write(&[tick(4), tick(5)]).expect("write");
    assert_eq!(sequences(&dir), [1, 2, 3, 4, 5], "each sequence once, in order");
    assert_eq!(files(&dir).expect("files").len(), 3, "a new file per batch at a 1-byte limit");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn only_the_newest_files_are_kept() {
    let dir = temporary("keep");
    let config = FileConfig { file_bytes_max: 1, files_keep: 2, ..FileConfig::new(&dir) };
    let mut sink = FileSink::new(config);
    assert_eq!(sink.resume().expect("resume"), 0);
    for sequence in 1..=5 {
        sink.write(&[tick(sequence)]).expect("write");
    }
    assert_eq!(sequences(&dir), [4, 5]);
    assert_eq!(sink.resume().expect("resume"), 5);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn with_files_keep_1_a_write_failing_after_rotation_still_resumes() {
    let dir = temporary("keep-1-failed");
    let config = FileConfig { file_bytes_max: 1, files_keep: 1, ..FileConfig::new(&dir) };
    let mut sink = FileSink::new(config.clone());
    assert_eq!(sink.resume().expect("resume"), 0);
    sink.write(&[tick(1)]).expect("write");
    // The next batch begins a new file (the first is full) and is appended, but its
    // watermark cannot be written: a directory stands where its temporary file goes
    // (as ENOSPC or EIO would, or a crash before the rename).
    let blocker = dir.join("WATERMARK.new");
    std::fs::create_dir(&blocker).expect("block the watermark's temporary file");
    assert!(sink.write(&[tick(2)]).is_err(), "the watermark cannot be written");
    std::fs::remove_dir(&blocker).expect("unblock");

    let mut restarted = FileSink::new(config);
    assert_eq!(restarted.resume().expect("the file the watermark names is still there"), 1);
    assert_eq!(sequences(&dir), [1], "the unacknowledged batch is cut");
    restarted.write(&[tick(2)]).expect("write");
    assert_eq!(sequences(&dir), [2], "once the watermark names the new file, the old one goes");
    assert_eq!(restarted.resume().expect("resume"), 2);
    std::fs::remove_dir_all(&dir).expect("clean up");
}
