//! Damage at the end of the journal: intact records after it on the boot that wrote them
//! make it damage (refused, naming the range); otherwise it is cut and the cut records
//! are reported; a snapshot covering damage lets the journal start after it.

mod common;

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{DamageReason, JournalError, SEGMENT_PREFIX_BYTES, Storage, record_bytes, verify_on};

/// Offset of record `sequence` in a journal whose first segment holds it.
fn offset_of(sequence: u64) -> usize {
    SEGMENT_PREFIX_BYTES
        + (1..sequence).map(|s| record_bytes(test_record(s).payload.len()).expect("size")).sum::<usize>()
}

/// 40 records flushed every 10, the writer killed (no close): the recorded mark is 30.
fn killed_journal_with_record_damaged(damaged: u64) -> MemStorage {
    let storage = MemStorage::new();
    drop(write_records(&storage, &mem_config(1 << 20), 40, 10));
    let name = segment_names(&storage).remove(0);
    let mut image = storage.durable_image(&name).expect("image");
    image[offset_of(damaged) + 20] ^= 0x40;
    storage.set_image(&name, image);
    storage
}

#[test]
fn damage_with_intact_records_after_it_on_the_same_boot_is_refused_naming_the_range() {
    let storage = killed_journal_with_record_damaged(33);
    let error = recover(&storage, &mem_config(1 << 20)).err().expect("must refuse");
    let JournalError::Corrupt { reason, sequence, .. } = &error else { panic!("expected Corrupt: {error}") };
    assert_eq!(*reason, DamageReason::DamagedBeforeIntact { first: 33, last: 40 });
    assert_eq!(*sequence, 33);
    assert!(matches!(verify_on(&storage), Err(JournalError::Corrupt { .. })), "verify agrees");
}

#[test]
fn after_a_power_loss_the_same_damage_is_cut_and_the_cut_records_are_reported() {
    let storage = killed_journal_with_record_damaged(33);
    storage.reboot();
    let (_, report) = recover(&storage, &mem_config(1 << 20)).expect("cannot be told from a torn write");
    let torn = report.torn_tail.expect("reported");
    assert_eq!(report.last_sequence, 32);
    assert_eq!((torn.first_sequence_cut, torn.last_intact_sequence_cut), (33, Some(40)));
    assert!(torn.reason.is_some());
}

#[test]
fn damage_to_the_very_last_record_is_cut_and_reported() {
    let storage = killed_journal_with_record_damaged(40);
    let (_, report) = recover(&storage, &mem_config(1 << 20)).expect("a torn last record");
    let torn = report.torn_tail.expect("reported");
    assert_eq!((report.last_sequence, torn.first_sequence_cut, torn.last_intact_sequence_cut), (39, 40, None));
}

#[test]
fn damage_below_the_mark_that_the_snapshot_covers_starts_after_the_snapshot() {
    let storage = MemStorage::new();
    let mut config = mem_config(1 << 20);
    write_records(&storage, &config, 50, 10).close();
    let name = segment_names(&storage).remove(0);
    let mut image = storage.durable_image(&name).expect("image");
    image[offset_of(20) + 20] ^= 0x40;
    storage.set_image(&name, image);
    config.snapshot_sequence = 40;
    assert!(recover(&storage, &config).is_err(), "a snapshot at 40 does not cover the journal up to 50");
    config.snapshot_sequence = 50;
    let (mut journal, report) = recover(&storage, &config).expect("the snapshot covers the damage");
    assert_eq!(report.set_aside, vec![name.clone()]);
    assert!(report.damage_covered_by_snapshot.is_some());
    assert_eq!((report.first_sequence, report.last_sequence), (51, 50));
    assert_eq!(journal.last_chain(), expected_chains(50)[50], "the chain continues from record 50");
    append_record(&mut journal, 51);
    journal.close();
    assert!(storage.list().expect("list").contains(&format!("{name}.damaged")), "kept for inspection");
    let (_, report) = recover(&storage, &config).expect("sound from then on");
    assert_eq!((report.first_sequence, report.last_sequence), (51, 51));
}

/// A journal that starts over after the snapshot still knows the epoch and timestamp of
/// the snapshot's last record (its first segment's header holds them), also at the next
/// start with nothing appended: a node in that state reports its position in elections by
/// that epoch (epoch 0 let a candidate with a longer log of an older epoch win; `tally sim`
/// found it).
#[test]
fn a_journal_started_over_after_the_snapshot_keeps_the_epoch_and_timestamp_it_continues() {
    let storage = MemStorage::new();
    let mut config = mem_config(1 << 20);
    write_records(&storage, &config, 250, 10).close();
    let name = segment_names(&storage).remove(0);
    let mut image = storage.durable_image(&name).expect("image");
    image[offset_of(20) + 20] ^= 0x40;
    storage.set_image(&name, image);
    config.snapshot_sequence = 250;
    let last = test_record(250);
    assert_eq!(last.epoch, 3);
    let (journal, report) = recover(&storage, &config).expect("the snapshot covers the damage");
    assert_eq!((report.first_sequence, report.last_sequence), (251, 250));
    assert_eq!((journal.last_epoch(), journal.last_timestamp()), (last.epoch, last.timestamp));
    drop(journal);
    storage.crash();
    let (journal, report) = recover(&storage, &config).expect("reopens");
    assert_eq!((report.first_sequence, report.last_sequence), (251, 250));
    assert_eq!((journal.last_epoch(), journal.last_timestamp()), (last.epoch, last.timestamp));
}

/// Starting over after the snapshot sets the damaged segments aside only once the segment
/// it starts over in is durable (its header holds the chain, epoch and timestamp it
/// continues). A power loss at each sync of that recovery, in turn, leaves a journal whose
/// next start continues the same chain, epoch and timestamp: with the segments set aside
/// first, a loss before the new segment was durable left an empty journal chaining from
/// zero.
#[test]
fn a_power_loss_at_any_sync_of_a_start_over_keeps_what_the_journal_continues() {
    let damaged = MemStorage::new();
    let mut config = mem_config(1 << 20);
    write_records(&damaged, &config, 250, 10).close();
    let name = segment_names(&damaged).remove(0);
    let mut image = damaged.durable_image(&name).expect("image");
    image[offset_of(20) + 20] ^= 0x40;
    damaged.set_image(&name, image);
    config.snapshot_sequence = 250;
    let (last, chain) = (test_record(250), expected_chains(250)[250]);
    let clean = damaged.fork();
    drop(recover(&clean, &config).expect("the snapshot covers the damage"));
    let syncs = clean.syncs_done();
    assert!(syncs >= 2, "a start-over syncs its new segment and the directory: {syncs}");
    for failing in 0..syncs {
        let storage = damaged.fork();
        storage.fail_sync_after(failing);
        let outcome = std::panic::catch_unwind(|| recover(&storage, &config).map(drop));
        assert!(outcome.is_err(), "sync {failing} failed and recovery carried on");
        storage.crash();
        storage.heal();
        let (journal, report) = recover(&storage, &config).unwrap_or_else(|error| panic!("sync {failing}: {error}"));
        assert_eq!((report.first_sequence, report.last_sequence), (251, 250), "sync {failing}");
        let continued = (journal.last_chain(), journal.last_epoch(), journal.last_timestamp());
        assert_eq!(continued, (chain, last.epoch, last.timestamp), "sync {failing}");
    }
}

#[test]
fn damage_in_an_older_segment_that_the_snapshot_covers_sets_that_segment_aside() {
    let storage = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    let journal = write_records(&storage, &config, 120, 10);
    let firsts = journal.segment_first_sequences().to_vec();
    drop(journal);
    let names = segment_names(&storage);
    let mut image = storage.durable_image(&names[0]).expect("image");
    image[SEGMENT_PREFIX_BYTES + 60] ^= 0x40;
    storage.set_image(&names[0], image);
    config.snapshot_sequence = firsts[1] - 2;
    assert!(recover(&storage, &config).is_err(), "record {} is needed and only segment 0 has it", firsts[1] - 1);
    config.snapshot_sequence = firsts[1] - 1;
    let (_, report) = recover(&storage, &config).expect("covered");
    assert_eq!(report.set_aside, vec![names[0].clone()]);
    assert_eq!((report.first_sequence, report.last_sequence), (firsts[1], 120));
}
