//! The spare: the next segment's file prepared in the background. A roll-over uses it
//! (and so needs no new space), survives a failed sync or a crash at each of its steps,
//! falls back to creating the segment itself when no spare is ready, and a spare left in
//! the directory is reused at open (a temporary or wrong-sized one is removed).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{JournalConfig, JournalError, Storage, verify_on};

fn spare_config(percent: Option<u8>) -> JournalConfig {
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    config.spare_at_fill_percent = percent;
    config
}

fn has_file(storage: &MemStorage, name: &str) -> bool {
    storage.list().expect("list").iter().any(|file| file == name)
}

/// Waits (bounded) for the background thread to finish the spare.
fn wait_for_spare(storage: &MemStorage) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !has_file(storage, "SPARE") {
        assert!(Instant::now() < deadline, "the spare never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Appends from `next` until the journal holds `segments` segments; returns the next
/// sequence.
fn append_until_segments(journal: &mut tally_journal::Journal<MemStorage>, mut next: u64, segments: usize) -> u64 {
    while journal.segment_first_sequences().len() < segments {
        append_record(journal, next);
        next += 1;
    }
    next
}

#[test]
fn roll_over_uses_the_prepared_spare_and_needs_no_new_space() {
    let storage = MemStorage::new();
    let (mut journal, _) = recover(&storage, &spare_config(Some(0))).expect("open");
    wait_for_spare(&storage);
    storage.limit_space(0);
    let next = append_until_segments(&mut journal, 1, 2);
    assert!(!has_file(&storage, "SPARE.tmp"));
    // The spare asked for after that roll-over cannot be made: the next roll-over falls
    // back to creating its segment, which reports the shortage.
    let mut sequence = next;
    let error = loop {
        let record = test_record(sequence);
        match journal.append(record.epoch, record.timestamp, record.operation, &record.payload) {
            Ok(_) => sequence += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, JournalError::NoSpace { needed_bytes, .. } if needed_bytes == SMALL_SEGMENT_BYTES as u64));
    storage.limit_space(u64::MAX);
    let next = append_until_segments(&mut journal, sequence, 3);
    journal.flush();
    drop(journal);
    assert_eq!(assert_records_match_written(&storage, 1), next - 1);
    verify_on(&storage).expect("a sound journal");
}

#[test]
fn roll_over_without_a_spare_creates_the_segment_itself() {
    let storage = MemStorage::new();
    let mut journal = write_records(&storage, &spare_config(None), 120, 5);
    assert!(journal.segment_first_sequences().len() >= 4, "several roll-overs");
    journal.flush();
    drop(journal);
    assert!(!has_file(&storage, "SPARE"), "no spare without the background thread");
    assert_eq!(assert_records_match_written(&storage, 1), 120);
}

#[test]
fn leftover_spare_is_reused_at_open() {
    let storage = MemStorage::new();
    let (mut journal, _) = recover(&storage, &spare_config(Some(0))).expect("open");
    append_record(&mut journal, 1);
    journal.flush();
    wait_for_spare(&storage);
    drop(journal);
    // Reopened without the background thread: the spare found is used all the same.
    let (mut journal, report) = recover(&storage, &spare_config(None)).expect("reopen");
    assert!(report.spare_reused, "{report:?}");
    storage.limit_space(0);
    let next = append_until_segments(&mut journal, 2, 2);
    assert!(!has_file(&storage, "SPARE"), "the spare became the new segment");
    journal.close();
    assert_eq!(assert_records_match_written(&storage, 1), next - 1);
}

#[test]
fn leftover_temporary_or_wrong_sized_spare_is_removed_at_open() {
    let storage = MemStorage::new();
    drop(write_records(&storage, &spare_config(None), 10, 5));
    storage.set_image("SPARE.tmp", vec![0; SMALL_SEGMENT_BYTES]);
    storage.set_image("SPARE", vec![0; 3 * 4096]);
    let (_, report) = recover(&storage, &spare_config(None)).expect("reopen");
    assert!(!report.spare_reused);
    assert_eq!(report.temporaries_removed, ["SPARE.tmp", "SPARE"]);
    assert!(!has_file(&storage, "SPARE.tmp") && !has_file(&storage, "SPARE"));
}

#[test]
fn spare_holding_an_interrupted_roll_overs_prefix_is_rewritten_when_used() {
    let storage = MemStorage::new();
    drop(write_records(&storage, &spare_config(None), 10, 5));
    // What a crash after the spare's prefix was synced, before its rename, leaves: a
    // spare whose prefix names some segment.
    let first = segment_names(&storage)[0].clone();
    let mut image = vec![0; SMALL_SEGMENT_BYTES];
    image[..tally_journal::SEGMENT_PREFIX_BYTES]
        .copy_from_slice(&storage.durable_image(&first).expect("image")[..tally_journal::SEGMENT_PREFIX_BYTES]);
    storage.set_image("SPARE", image);
    let (mut journal, report) = recover(&storage, &spare_config(None)).expect("reopen");
    assert!(report.spare_reused);
    let next = append_until_segments(&mut journal, 11, 3);
    journal.close();
    verify_on(&storage).expect("the reused spare's prefix was rewritten");
    assert_eq!(assert_records_match_written(&storage, 1), next - 1);
}

#[test]
fn prepared_roll_over_recovers_from_a_failed_sync_and_crash_at_every_step() {
    const RECORDS: u64 = 60;
    const FLUSH_EVERY: u64 = 4;
    let config = spare_config(Some(0));
    let chains = expected_chains(RECORDS + 40);
    let clean = MemStorage::new();
    drop(write_records(&clean, &config, RECORDS, FLUSH_EVERY));
    for failing_sync in 0..clean.syncs_done() {
        for partial_writeback in [false, true] {
            let storage = MemStorage::new();
            storage.fail_sync_after(failing_sync);
            let mut durable = 0;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let (mut journal, _) = recover(&storage, &config).expect("open");
                for sequence in 1..=RECORDS {
                    append_record(&mut journal, sequence);
                    if sequence % FLUSH_EVERY == 0 {
                        journal.flush();
                        durable = journal.durable_sequence();
                    }
                }
            }));
            assert!(outcome.is_err(), "sync {failing_sync} failed yet the writer carried on");
            if partial_writeback {
                storage.crash_with_partial_writeback(failing_sync * 7919 + 1);
            } else {
                storage.crash();
            }
            storage.heal();
            let (mut journal, report) = recover(&storage, &config).expect("recover after the crash");
            let last = report.last_sequence;
            assert!((durable..=durable + FLUSH_EVERY).contains(&last), "sync {failing_sync}: {report:?}");
            assert_eq!(journal.last_chain(), chains[last as usize]);
            assert!(storage.list().expect("list").iter().all(|name| !name.ends_with(".tmp")), "temporaries remain");
            for sequence in last + 1..=last + 40 {
                append_record(&mut journal, sequence);
            }
            journal.close();
            assert_eq!(assert_records_match_written(&storage, 1), last + 40, "sync {failing_sync}");
        }
    }
}

#[test]
fn file_backed_spare_is_made_used_and_left_for_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = JournalConfig::new(dir.path());
    config.segment_bytes = 64 << 10;
    config.payload_bytes_max = 1024;
    config.on_flush_failure = panicking_hook;
    config.spare_at_fill_percent = Some(0);
    let spare = dir.path().join("SPARE");
    let (mut journal, _) = tally_journal::Journal::open(&config).expect("open");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spare.exists() {
        assert!(Instant::now() < deadline, "the spare never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(std::fs::metadata(&spare).expect("stat").len(), 64 << 10, "allocated in full");
    let mut sequence = 1;
    while journal.segment_first_sequences().len() < 3 {
        append_record(&mut journal, sequence);
        sequence += 1;
    }
    journal.close();
    let (journal, report) = tally_journal::Journal::open(&config).expect("reopen");
    assert!(report.spare_reused, "the spare asked for at the last roll-over is reused: {report:?}");
    assert_eq!(journal.last_sequence(), sequence - 1);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert!(names.iter().all(|name| !name.ends_with(".tmp")), "{names:?}");
}
