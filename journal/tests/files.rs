//! The real file backend: each flush method survives a reopen, a short (truncated) last
//! segment is regrown and its tail reported, and the operator functions work on a dir.

mod common;

use common::*;
use tally_journal::{FlushMethod, Journal, JournalConfig, JournalReader, ReadLimit, verify};

fn file_config(dir: &std::path::Path, flush_method: FlushMethod) -> JournalConfig {
    let mut config = JournalConfig::new(dir);
    config.segment_bytes = 64 << 10;
    config.payload_bytes_max = 1024;
    config.flush_method = flush_method;
    config.on_flush_failure = panicking_hook;
    config
}

fn write_and_reopen(flush_method: FlushMethod) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = file_config(dir.path(), flush_method);
    let (mut journal, report) = Journal::open(&config).expect("open");
    assert_eq!((report.first_sequence, report.last_sequence), (1, 0));
    for sequence in 1..=1_000 {
        append_record(&mut journal, sequence);
        if sequence % 100 == 0 {
            journal.flush();
        }
    }
    assert_eq!(journal.durable_sequence(), 1_000);
    let chain = journal.last_chain();
    drop(journal);
    let (journal, report) = Journal::open(&config).expect("reopen");
    assert_eq!(report.last_sequence, 1_000);
    assert_eq!(journal.last_chain(), chain);
    let report = verify(dir.path()).expect("verify");
    assert_eq!((report.records, report.segments > 1), (1_000, true));
}

#[test]
fn fdatasync_journal_survives_reopen() {
    write_and_reopen(FlushMethod::Fdatasync);
}

#[test]
fn msync_journal_survives_reopen() {
    write_and_reopen(FlushMethod::Msync);
}

/// With the feature and a willing kernel this runs io_uring; otherwise the fallback.
#[test]
fn io_uring_journal_survives_reopen() {
    write_and_reopen(FlushMethod::IoUring);
}

#[test]
fn truncated_last_segment_file_is_regrown_and_its_torn_tail_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = file_config(dir.path(), FlushMethod::Fdatasync);
    let (mut journal, _) = Journal::open(&config).expect("open");
    for sequence in 1..=60 {
        append_record(&mut journal, sequence);
        if sequence % 20 == 0 {
            journal.flush();
        }
    }
    drop(journal);
    // Cut into record 55, above the recorded mark (40), as a torn write would.
    let segment = dir.path().join("00000000000000000001.seg");
    let ends: usize =
        (1..55).map(|sequence| tally_journal::record_bytes(test_record(sequence).payload.len()).expect("size")).sum();
    let cut = (tally_journal::SEGMENT_PREFIX_BYTES + ends + 20) as u64;
    std::fs::OpenOptions::new().write(true).open(&segment).expect("open").set_len(cut).expect("truncate");
    let (mut journal, report) = Journal::open(&config).expect("a torn tail is tolerated");
    assert_eq!(report.last_sequence, 54);
    let tail = report.torn_tail.expect("reported");
    assert_eq!(tail.offset, cut - 20);
    assert!(tail.bytes_discarded > 0);
    assert_eq!(std::fs::metadata(&segment).expect("stat").len(), 64 << 10, "regrown to full size");
    assert_eq!(journal.append(1, 10_000, 1, b"continues").expect("append"), 55);
}

#[test]
fn dump_reads_every_record_of_a_closed_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = file_config(dir.path(), FlushMethod::Fdatasync);
    let (mut journal, _) = Journal::open(&config).expect("open");
    for sequence in 1..=500 {
        append_record(&mut journal, sequence);
    }
    journal.close();
    let mut dump = JournalReader::open(dir.path(), 0, ReadLimit::Everything).expect("reader");
    let mut count = 0;
    while let Some(record) = dump.next_record().expect("sound") {
        count += 1;
        let written = test_record(record.sequence);
        assert_eq!(
            (record.operation, record.timestamp, record.payload),
            (written.operation, written.timestamp, &written.payload[..])
        );
    }
    assert_eq!(count, 500);
}

#[test]
fn verify_of_a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(verify(dir.path().join("absent")).is_err());
}
