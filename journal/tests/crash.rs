//! Crashes and failed flushes: recovery returns exactly what was made durable, a cut
//! below the recorded durable mark is an error, and a failed flush stops the writer.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{RECORD_HEADER_BYTES, SEGMENT_PREFIX_BYTES, record_bytes, verify_on};

const RECORDS: u64 = 240;
const FLUSH_EVERY: u64 = 10;

/// Offset inside its segment where each record's bytes end, per segment:
/// (first_sequence, ends). `padded` counts the zero padding as part of the record (a
/// truncation that drops padding damages the record; zeroing padding changes nothing).
fn record_ends(names: &[String], padded: bool) -> Vec<(u64, Vec<usize>)> {
    let firsts: Vec<u64> = names.iter().map(|name| name[..20].parse().expect("segment name")).collect();
    firsts
        .iter()
        .enumerate()
        .map(|(index, &first)| {
            let next = firsts.get(index + 1).copied().unwrap_or(RECORDS + 1);
            let mut offset = SEGMENT_PREFIX_BYTES;
            let ends = (first..next)
                .map(|sequence| {
                    let payload = test_record(sequence).payload.len();
                    let start = offset;
                    offset += record_bytes(payload).expect("size");
                    if padded { offset } else { start + RECORD_HEADER_BYTES + payload }
                })
                .collect();
            (first, ends)
        })
        .collect()
}

/// Damages one segment image with `damage` at every offset and checks each recovery.
fn check_every_cut(damage: fn(&[u8], usize) -> Vec<u8>, padded: bool, segments_to_cut: usize) {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, RECORDS, FLUSH_EVERY));
    let names = segment_names(&storage);
    assert!(names.len() >= 3, "the journal should span several segments");
    let images: Vec<Vec<u8>> = names.iter().map(|name| storage.durable_image(name).expect("image")).collect();
    let durable_mark = verify_on(&storage).expect("sound journal").recorded_durable_mark;
    assert!((RECORDS - FLUSH_EVERY..RECORDS).contains(&durable_mark), "the mark lags by one flush: {durable_mark}");
    let chains = expected_chains(RECORDS);
    let ends = record_ends(&names, padded);
    for index in names.len().saturating_sub(segments_to_cut)..names.len() {
        let (first, record_ends) = &ends[index];
        for cut in 0..images[index].len() {
            let damaged = MemStorage::new();
            for (other, name) in names.iter().enumerate() {
                let image = if other == index { damage(&images[index], cut) } else { images[other].clone() };
                damaged.set_image(name, image);
            }
            let kept_here = record_ends.iter().take_while(|&&end| end <= cut).count() as u64;
            let kept = if kept_here == record_ends.len() as u64 { RECORDS } else { first - 1 + kept_here };
            match recover(&damaged, &config) {
                Ok((journal, report)) => {
                    assert!(kept >= durable_mark, "cut at {cut} of {} lost records below the mark", names[index]);
                    assert_eq!(report.last_sequence, kept, "longest valid prefix, cut at {cut} of {}", names[index]);
                    assert_eq!(journal.last_chain(), chains[kept as usize]);
                }
                Err(error) => assert!(
                    kept < durable_mark || cut < SEGMENT_PREFIX_BYTES,
                    "cut at {cut} of {} keeps {kept} >= mark {durable_mark} yet failed: {error}",
                    names[index]
                ),
            }
        }
    }
}

#[test]
fn truncation_at_every_byte_offset_recovers_the_longest_prefix_or_reports_a_cut_below_the_mark() {
    check_every_cut(|image, cut| image[..cut].to_vec(), true, usize::MAX);
}

#[test]
fn zeroing_from_every_byte_offset_recovers_the_longest_prefix_or_reports_a_cut_below_the_mark() {
    fn zero_from(image: &[u8], cut: usize) -> Vec<u8> {
        let mut damaged = image.to_vec();
        damaged[cut..].fill(0);
        damaged
    }
    check_every_cut(zero_from, false, 2);
}

#[test]
fn crash_loses_exactly_the_unflushed_records() {
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let chains = expected_chains(120);
    for crash_after in 0..=120u64 {
        let storage = MemStorage::new();
        let (mut journal, _) = recover(&storage, &config).expect("open");
        for sequence in 1..=crash_after {
            append_record(&mut journal, sequence);
            if sequence % 7 == 0 {
                journal.flush();
            }
        }
        let durable = journal.durable_sequence();
        drop(journal);
        storage.crash();
        let (journal, report) = recover(&storage, &config).expect("recover after crash");
        assert_eq!(report.last_sequence, durable, "crash after {crash_after} appends");
        assert_eq!(journal.last_chain(), chains[durable as usize]);
    }
}

#[test]
fn crash_with_out_of_order_writeback_keeps_every_flushed_record_and_nothing_unwritten() {
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let chains = expected_chains(150);
    for seed in 1..=150u64 {
        let storage = MemStorage::new();
        let (mut journal, _) = recover(&storage, &config).expect("open");
        let appended = seed;
        for sequence in 1..=appended {
            append_record(&mut journal, sequence);
            if sequence % 9 == 0 {
                journal.flush();
            }
        }
        let durable = journal.durable_sequence();
        drop(journal);
        storage.crash_with_partial_writeback(seed * 7919);
        let (journal, report) = recover(&storage, &config).expect("a torn tail above the mark is tolerated");
        assert!((durable..=appended).contains(&report.last_sequence), "seed {seed}: {report:?}");
        assert_eq!(journal.last_chain(), chains[report.last_sequence as usize]);
        assert_eq!(assert_records_match_written(&storage, 1), report.last_sequence);
    }
}

#[test]
fn failed_flush_fires_the_hook_and_the_writer_never_continues() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let mut journal = write_records(&storage, &config, 5, 5);
    storage.fail_sync_after(0);
    for sequence in 6..=8 {
        append_record(&mut journal, sequence);
    }
    HOOK_FIRED.with(|fired| fired.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| journal.flush()));
    assert!(outcome.is_err(), "a failed flush must not return");
    assert_eq!(HOOK_FIRED.with(|fired| fired.get()), 1);
    assert_eq!(journal.durable_sequence(), 5, "the durable mark does not advance past a failed flush");
    drop(journal);
    storage.crash();
    storage.heal();
    let (_, report) = recover(&storage, &config).expect("recover");
    assert_eq!(report.last_sequence, 5);
}

#[test]
fn flush_failure_at_every_sync_point_leaves_exactly_the_flushed_records() {
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let chains = expected_chains(100);
    // Count the syncs of a clean run, then fail each one in turn. Syncs include record
    // flushes, segment creation and sealing at roll-over.
    let clean = MemStorage::new();
    drop(write_records(&clean, &config, 100, 4));
    let total_syncs = clean.syncs_done();
    for failing_sync in 0..total_syncs {
        let storage = MemStorage::new();
        storage.fail_sync_after(failing_sync);
        HOOK_FIRED.with(|fired| fired.set(0));
        let mut durable = 0;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (mut journal, _) = recover(&storage, &config).expect("open");
            for sequence in 1..=100 {
                append_record(&mut journal, sequence);
                if sequence % 4 == 0 {
                    journal.flush();
                    durable = journal.durable_sequence();
                }
            }
        }));
        assert!(outcome.is_err(), "sync {failing_sync} failed yet the writer carried on");
        assert_eq!(HOOK_FIRED.with(|fired| fired.get()), 1);
        storage.crash();
        storage.heal();
        let (journal, report) = recover(&storage, &config).expect("recover after the failed flush");
        assert!(report.last_sequence >= durable, "sync {failing_sync}: lost acknowledged records");
        assert!(report.last_sequence <= durable + 4, "sync {failing_sync}: {report:?}");
        assert_eq!(journal.last_chain(), chains[report.last_sequence as usize]);
    }
}

#[test]
fn power_loss_at_every_sync_of_a_truncation_leaves_a_journal_that_opens_whole_or_cut() {
    // A rejoining node cuts its divergent suffix with `TruncateAt` and then opens the
    // journal plainly. A power loss part-way through the cut must leave a journal that
    // opens: as before the cut or part of the way there (the rejoin finds the divergence
    // again and cuts again), or cut.
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    let chains = expected_chains(150);
    let cut_at = 37;
    let prepared = MemStorage::new();
    drop(write_records(&prepared, &config, 150, 10));
    assert!(segment_names(&prepared).len() > 3, "the cut must remove whole segments too");
    prepared.reboot();
    prepared.count_dir_syncs();
    let counting = prepared.fork();
    config.recovery = tally_journal::RecoveryMode::TruncateAt(cut_at);
    drop(recover(&counting, &config).expect("a clean truncation"));
    let total_syncs = counting.syncs_done();
    assert!(total_syncs > 2, "the truncation syncs at least the directory and the kept segment");
    for failing_sync in 0..total_syncs {
        let storage = prepared.fork();
        storage.fail_sync_after(failing_sync);
        config.recovery = tally_journal::RecoveryMode::TruncateAt(cut_at);
        let interrupted = catch_unwind(AssertUnwindSafe(|| drop(recover(&storage, &config))));
        assert!(interrupted.is_err(), "sync {failing_sync} failed and the truncation carried on");
        storage.crash();
        storage.heal();
        config.recovery = tally_journal::RecoveryMode::TolerateTornTail;
        let (journal, report) = recover(&storage, &config)
            .unwrap_or_else(|error| panic!("power loss before sync {failing_sync} of the cut: {error}"));
        // Any prefix at least as long as the cut: the caller cuts again at its next start.
        assert!(
            (cut_at..=150).contains(&report.last_sequence),
            "sync {failing_sync}: opened at {}",
            report.last_sequence
        );
        assert_eq!(journal.last_chain(), chains[report.last_sequence as usize]);
        drop(journal);
        // The same point with a part of the dirty sectors written back, in any order.
        for seed in 0..16 {
            let storage = prepared.fork();
            storage.fail_sync_after(failing_sync);
            config.recovery = tally_journal::RecoveryMode::TruncateAt(cut_at);
            let interrupted = catch_unwind(AssertUnwindSafe(|| drop(recover(&storage, &config))));
            assert!(interrupted.is_err());
            storage.crash_with_partial_writeback(seed * 7919 + failing_sync);
            storage.heal();
            config.recovery = tally_journal::RecoveryMode::TolerateTornTail;
            let (journal, report) = recover(&storage, &config).unwrap_or_else(|error| {
                panic!("power loss before sync {failing_sync} of the cut, writeback seed {seed}: {error}")
            });
            assert!((cut_at..=150).contains(&report.last_sequence), "sync {failing_sync}, seed {seed}: {report:?}");
            assert_eq!(journal.last_chain(), chains[report.last_sequence as usize]);
        }
    }
}

/// 10 records flushed, then 11..=`last` appended without a flush and the writer killed:
/// those are only in the page cache, where the next start (on the same boot) reads them.
fn killed_with_unflushed_appends(config: &tally_journal::JournalConfig, last: u64) -> MemStorage {
    let storage = MemStorage::new();
    let mut journal = write_records(&storage, config, 10, 10);
    for sequence in 11..=last {
        append_record(&mut journal, sequence);
    }
    drop(journal);
    storage
}

/// A power loss during each sync of a start (or of a cut) that follows a kill, with a part
/// of the dirty sectors written back in any order, must leave a journal that opens and
/// keeps every flushed record.
fn check_power_loss_at_every_sync_after_a_kill(recovery: tally_journal::RecoveryMode) {
    let mut config = mem_config(1 << 16);
    let chains = expected_chains(30);
    let killed = killed_with_unflushed_appends(&config, 30);
    killed.count_dir_syncs();
    let counting = killed.fork();
    config.recovery = recovery;
    drop(recover(&counting, &config).expect("a clean start"));
    let total_syncs = counting.syncs_done();
    for failing_sync in 0..total_syncs {
        for seed in 0..32 {
            let storage = killed.fork();
            storage.fail_sync_after(failing_sync);
            config.recovery = recovery;
            let interrupted = catch_unwind(AssertUnwindSafe(|| drop(recover(&storage, &config))));
            assert!(interrupted.is_err(), "sync {failing_sync} failed and the start carried on");
            storage.crash_with_partial_writeback(seed * 7919 + failing_sync);
            storage.heal();
            config.recovery = tally_journal::RecoveryMode::TolerateTornTail;
            let (journal, report) = recover(&storage, &config).unwrap_or_else(|error| {
                panic!("power loss at sync {failing_sync} after the kill, writeback seed {seed}: {error}")
            });
            assert!((10..=30).contains(&report.last_sequence), "sync {failing_sync}, seed {seed}: {report:?}");
            assert_eq!(journal.last_chain(), chains[report.last_sequence as usize]);
        }
    }
}

#[test]
fn power_loss_during_the_start_after_a_kill_keeps_the_flushed_records_and_opens() {
    check_power_loss_at_every_sync_after_a_kill(tally_journal::RecoveryMode::TolerateTornTail);
}

#[test]
fn power_loss_during_a_cut_after_a_kill_keeps_the_flushed_records_and_opens() {
    check_power_loss_at_every_sync_after_a_kill(tally_journal::RecoveryMode::TruncateAt(25));
}

/// 10 records flushed, then 11..=20 appended and their flush failed (EIO): the kernel
/// marks the pages it could not write clean and keeps them readable in the cache, so
/// a start on the same boot (the process aborted, the machine did not reboot) must read
/// the disk: taking 11..=20 from the cache, it would record a durable mark over them, and
/// an eviction or power loss later would leave a hole below acknowledged records.
#[test]
fn a_start_on_the_same_boot_after_a_failed_flush_reads_the_disk_not_the_cache() {
    let storage = MemStorage::new();
    let config = mem_config(1 << 16);
    let chains = expected_chains(20);
    let mut journal = write_records(&storage, &config, 10, 10);
    for sequence in 11..=20 {
        append_record(&mut journal, sequence);
    }
    storage.fail_next_sync();
    HOOK_FIRED.with(|fired| fired.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| journal.flush()));
    assert!(outcome.is_err(), "a failed flush must not return");
    assert_eq!(HOOK_FIRED.with(|fired| fired.get()), 1);
    // A kill, not a power loss: the page cache (with 11..=20 clean in it) survives.
    drop(journal);
    storage.heal();
    let (mut journal, report) = recover(&storage, &config).expect("recover on the same boot");
    assert_eq!(report.last_sequence, 10, "records of the failed flush never reached the disk: {report:?}");
    assert_eq!(journal.last_chain(), chains[10]);
    // New records on top are flushed (acknowledged); a power loss keeps every one.
    for sequence in 11..=20 {
        append_record(&mut journal, sequence);
    }
    journal.flush();
    assert_eq!(journal.durable_sequence(), 20);
    drop(journal);
    storage.crash();
    let (journal, report) = recover(&storage, &config).expect("no hole below the acknowledged records");
    assert_eq!(report.last_sequence, 20);
    assert_eq!(journal.last_chain(), chains[20]);
    assert_eq!(assert_records_match_written(&storage, 1), 20);
}

/// A sync that fails in the start itself (the one that makes the last segment durable
/// before it is read from the disk) stops the start like a failed flush, and the next
/// start reads the disk: the records appended without a flush before the kill, left
/// clean in the cache by the failure, are not kept.
#[test]
fn a_failed_sync_at_the_start_stops_it_and_the_next_start_reads_the_disk() {
    let config = mem_config(1 << 16);
    let chains = expected_chains(20);
    let storage = killed_with_unflushed_appends(&config, 20);
    storage.fail_next_sync();
    HOOK_FIRED.with(|fired| fired.set(0));
    let interrupted = catch_unwind(AssertUnwindSafe(|| drop(recover(&storage, &config))));
    assert!(interrupted.is_err(), "a failed sync during the start must not return");
    assert_eq!(HOOK_FIRED.with(|fired| fired.get()), 1);
    storage.heal();
    let (journal, report) = recover(&storage, &config).expect("recover on the same boot");
    assert_eq!(report.last_sequence, 10, "{report:?}");
    assert_eq!(journal.last_chain(), chains[10]);
    drop(journal);
    storage.crash();
    let (_, report) = recover(&storage, &config).expect("recover after a power loss");
    assert_eq!(report.last_sequence, 10);
}

/// A kill with no failed sync: the records appended without a flush are dirty in the
/// cache, the start's sync writes them, and they are kept, durable (a power loss right
/// after the start loses none).
#[test]
fn a_start_after_a_kill_keeps_the_unflushed_records_its_sync_makes_durable() {
    let config = mem_config(1 << 16);
    let chains = expected_chains(20);
    let storage = killed_with_unflushed_appends(&config, 20);
    let (journal, report) = recover(&storage, &config).expect("recover after a kill");
    assert_eq!(report.last_sequence, 20, "{report:?}");
    assert_eq!(journal.last_chain(), chains[20]);
    drop(journal);
    storage.crash();
    let (journal, report) = recover(&storage, &config).expect("recover after a power loss");
    assert_eq!(report.last_sequence, 20, "{report:?}");
    assert_eq!(journal.last_chain(), chains[20]);
    assert_eq!(assert_records_match_written(&storage, 1), 20);
}
