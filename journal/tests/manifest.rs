//! The manifest: a missing or rolled-back segment is refused with its name, one damaged
//! slot is reported, and a journal written before manifests existed gets one.

mod common;

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{DamageReason, JournalError, MANIFEST_NAME, Storage, verify_on, verify_on_after_snapshot};

fn closed_journal(records: u64) -> (MemStorage, tally_journal::JournalConfig) {
    let storage = MemStorage::new();
    let config = mem_config(1 << 20);
    write_records(&storage, &config, records, 10).close();
    (storage, config)
}

fn reason_of(error: &JournalError) -> DamageReason {
    match error {
        JournalError::Corrupt { reason, .. } => *reason,
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn deleting_the_only_segment_after_a_snapshot_is_refused_naming_it() {
    let (storage, mut config) = closed_journal(50);
    let names = segment_names(&storage);
    assert_eq!(names.len(), 1);
    storage.remove(&names[0]).expect("remove");
    config.snapshot_sequence = 30;
    let error = recover(&storage, &config).err().expect("must refuse");
    assert!(matches!(reason_of(&error), DamageReason::SegmentMissing { durable_sequence: 50, .. }), "{error}");
    assert!(error.to_string().contains(&names[0]), "{error}");
    let verified = verify_on_after_snapshot(&storage, 30).expect_err("verify agrees");
    assert!(matches!(reason_of(&verified), DamageReason::SegmentMissing { .. }));
    assert!(segment_names(&storage).is_empty(), "a refusal changes nothing");
}

#[test]
fn a_segment_rolled_back_to_an_older_copy_is_refused() {
    let (storage, config) = closed_journal(20);
    let name = segment_names(&storage).remove(0);
    let older = storage.durable_image(&name).expect("image");
    let (mut journal, _) = recover(&storage, &config).expect("reopen");
    for sequence in 21..=40 {
        append_record(&mut journal, sequence);
    }
    journal.close();
    storage.set_image(&name, older);
    let error = recover(&storage, &config).err().expect("must refuse");
    assert_eq!(reason_of(&error), DamageReason::RolledBack { last: 20, recorded: 40 }, "{error}");
    assert!(verify_on(&storage).is_err(), "verify agrees");
}

#[test]
fn a_journal_without_a_manifest_gets_one_at_open_and_is_guarded_from_then_on() {
    let (storage, config) = closed_journal(30);
    storage.remove(MANIFEST_NAME).expect("remove manifest");
    assert!(verify_on(&storage).expect("still sound").manifest_missing);
    let (journal, report) = recover(&storage, &config).expect("open");
    assert!(report.manifest_created);
    assert_eq!(journal.manifest().durable_sequence, 30);
    drop(journal);
    storage.remove(&segment_names(&storage)[0]).expect("remove");
    assert!(matches!(
        reason_of(&recover(&storage, &config).err().expect("refused")),
        DamageReason::SegmentMissing { .. }
    ));
}

#[test]
fn one_damaged_manifest_slot_is_reported_and_both_are_refused() {
    let (storage, config) = closed_journal(30);
    let mut image = storage.durable_image(MANIFEST_NAME).expect("manifest");
    image[2048 + 30] ^= 0x10;
    storage.set_image(MANIFEST_NAME, image.clone());
    assert_eq!(verify_on(&storage).expect("sound").manifest_slots_damaged, 1);
    let (journal, report) = recover(&storage, &config).expect("the other slot is used");
    assert_eq!(report.manifest_slots_damaged, 1);
    drop(journal);
    image[30] ^= 0x10;
    storage.set_image(MANIFEST_NAME, image);
    let error = recover(&storage, &config).err().expect("both slots damaged");
    assert_eq!(reason_of(&error), DamageReason::ManifestDamaged);
}

#[test]
fn retention_and_roll_over_keep_the_manifest_current() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let mut journal = write_records(&storage, &config, 200, 10);
    let firsts = journal.segment_first_sequences().to_vec();
    assert_eq!(journal.manifest().last_segment, firsts[firsts.len() - 1]);
    journal.remove_segments_covered_by(firsts[2] - 1).expect("retention");
    journal.note_snapshot(firsts[2] - 1);
    assert_eq!(journal.manifest().first_segment, firsts[2]);
    assert_eq!(journal.manifest().snapshot_sequence, firsts[2] - 1);
    journal.close();
    let mut config = config;
    config.snapshot_sequence = firsts[2] - 1;
    let (_, report) = recover(&storage, &config).expect("sound after retention");
    assert_eq!(report.first_sequence, firsts[2]);
    assert_eq!(report.manifest_snapshot_sequence, firsts[2] - 1);
    storage.remove(&segment_name_of(firsts[2])).expect("remove");
    let error = recover(&storage, &config).err().expect("the first kept segment is missing");
    assert!(matches!(reason_of(&error), DamageReason::SegmentMissing { .. }), "{error}");
}

fn segment_name_of(first: u64) -> String {
    tally_journal::segment_name(first)
}
