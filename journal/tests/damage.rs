//! Damage anywhere in a small journal is detected: recovery either refuses with
//! `Corrupt`, or reports what it cut or found damaged, and never returns a record whose
//! bytes differ from what was written.

mod common;

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{DamageReason, JournalError, verify_on};

const RECORDS: u64 = 40;

/// A journal of two segments, flushed every 5 records, as durable images.
fn small_journal() -> (Vec<String>, Vec<Vec<u8>>) {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, RECORDS, 5));
    let names = segment_names(&storage);
    assert_eq!(names.len(), 2, "the test wants a sealed segment and an active one");
    let images = names.iter().map(|name| storage.durable_image(name).expect("image")).collect();
    (names, images)
}

/// Recovers a copy of the journal with segment `index` replaced by `damaged_image` and
/// checks that the damage was detected and nothing altered came back.
fn assert_detected(names: &[String], images: &[Vec<u8>], index: usize, damaged_image: Vec<u8>, what: &str) {
    let storage = MemStorage::new();
    for (other, name) in names.iter().enumerate() {
        let image = if other == index { damaged_image.clone() } else { images[other].clone() };
        storage.set_image(name, image);
    }
    let verified = verify_on(&storage);
    match recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)) {
        Err(JournalError::Corrupt { .. }) => {
            assert!(verified.is_err(), "{what}: recovery refused but verify passed");
        }
        Err(other) => panic!("{what}: unexpected error {other}"),
        Ok((_, report)) => {
            assert!(
                report.torn_tail.is_some() || report.mark_slots_damaged > 0,
                "{what} in {} went unnoticed: {report:?}",
                names[index]
            );
            assert_eq!(assert_records_match_written(&storage, 1), report.last_sequence, "{what}");
        }
    }
}

#[test]
fn flipping_any_byte_is_detected_and_never_returns_altered_records() {
    let (names, images) = small_journal();
    for (index, image) in images.iter().enumerate() {
        for offset in 0..image.len() {
            let mut damaged = image.clone();
            damaged[offset] ^= 0xA5;
            assert_detected(&names, &images, index, damaged, &format!("flip at {offset}"));
        }
    }
}

#[test]
fn zeroing_any_sector_is_detected_and_never_returns_altered_records() {
    let (names, images) = small_journal();
    for (index, image) in images.iter().enumerate() {
        for start in (0..image.len()).step_by(512) {
            let end = (start + 512).min(image.len());
            if image[start..end].iter().all(|&byte| byte == 0) {
                continue;
            }
            let mut damaged = image.clone();
            damaged[start..end].fill(0);
            assert_detected(&names, &images, index, damaged, &format!("zeroed sector at {start}"));
        }
    }
}

#[test]
fn damage_in_a_sealed_segment_is_corrupt_with_its_position() {
    let (names, images) = small_journal();
    let storage = MemStorage::new();
    let mut damaged = images[0].clone();
    let offset = tally_journal::SEGMENT_PREFIX_BYTES + 100;
    damaged[offset] ^= 1;
    storage.set_image(&names[0], damaged);
    storage.set_image(&names[1], images[1].clone());
    let error = recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)).err().expect("must refuse");
    match error {
        JournalError::Corrupt { segment, offset: at, sequence, reason } => {
            assert_eq!(segment, names[0]);
            assert!(at <= offset as u64 && sequence >= 1);
            assert!(matches!(reason, DamageReason::CrcMismatch | DamageReason::LengthOutOfBounds(_)), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let verified = verify_on(&storage).expect_err("verify must report it too");
    assert!(matches!(verified, JournalError::Corrupt { .. }));
}

#[test]
fn a_valid_record_copied_to_the_wrong_place_is_caught_by_sequence_and_chain() {
    let (names, images) = small_journal();
    // Misdirected write: the last segment's first record copied over its second.
    let storage = MemStorage::new();
    let mut damaged = images[1].clone();
    let first = tally_journal::SEGMENT_PREFIX_BYTES;
    let first_sequence: u64 = names[1][..20].parse().expect("name");
    let length = tally_journal::record_bytes(test_record(first_sequence).payload.len()).expect("size");
    let copy = damaged[first..first + length].to_vec();
    damaged[first + length..first + 2 * length].copy_from_slice(&copy);
    storage.set_image(&names[0], images[0].clone());
    storage.set_image(&names[1], damaged);
    let verified = verify_on(&storage).expect_err("a misdirected record below the mark is corrupt");
    let JournalError::Corrupt { reason, .. } = verified else { panic!("expected Corrupt") };
    assert!(matches!(reason, DamageReason::BelowDurableMark { .. }), "{reason}");
}

const SECTOR_BYTES: usize = 512;

/// The journal of [`small_journal`] written again, with the durable image of every
/// segment after each flush: what an older copy of any sector held.
fn images_after_each_flush() -> (Vec<String>, Vec<Vec<Vec<u8>>>) {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let (mut journal, _) = tally_journal::Journal::open_on(storage.clone(), &config).expect("open fresh journal");
    let mut flushes = Vec::new();
    for sequence in 1..=RECORDS {
        append_record(&mut journal, sequence);
        if sequence % 5 == 0 {
            journal.flush();
            let names = segment_names(&storage);
            flushes.push(names.iter().map(|name| storage.durable_image(name).expect("image")).collect::<Vec<_>>());
        }
    }
    let names = segment_names(&storage);
    assert_eq!(names.len(), 2, "the test wants a sealed segment and an active one");
    (names, flushes)
}

/// Like [`assert_detected`], for damage that may also be harmless: a mark slot's sector
/// holding an older mark loses nothing (the other slot, or the records after the mark,
/// still tell the truth). Every record recovery returns must be the one written, and
/// records may only be missing when recovery said so.
fn assert_detected_or_harmless(names: &[String], images: &[Vec<u8>], index: usize, damaged_image: Vec<u8>, what: &str) {
    let storage = MemStorage::new();
    for (other, name) in names.iter().enumerate() {
        let image = if other == index { damaged_image.clone() } else { images[other].clone() };
        storage.set_image(name, image);
    }
    match recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)) {
        Err(JournalError::Corrupt { .. }) => {
            assert!(verify_on(&storage).is_err(), "{what}: recovery refused but verify passed");
        }
        Err(other) => panic!("{what}: unexpected error {other}"),
        Ok((_, report)) => {
            assert_eq!(assert_records_match_written(&storage, 1), report.last_sequence, "{what}");
            assert!(
                report.last_sequence == RECORDS || report.torn_tail.is_some(),
                "{what} in {}: records lost without a report: {report:?}",
                names[index]
            );
        }
    }
}

/// A lost write: the disk (or a cache in front of it) keeps an older version of one
/// sector, from any earlier flush, while everything around it is current.
#[test]
fn a_sector_rolled_back_to_an_earlier_flush_is_detected_and_never_returns_altered_records() {
    let (names, flushes) = images_after_each_flush();
    let current = flushes.last().expect("at least one flush").clone();
    let mut rolled_back = 0;
    for (flush, older) in flushes.iter().enumerate() {
        for (index, image) in current.iter().enumerate() {
            // A segment that did not exist yet reads as zeros (never written).
            let older_image = older.get(index).cloned().unwrap_or_else(|| vec![0; image.len()]);
            for start in (0..image.len()).step_by(SECTOR_BYTES) {
                let end = (start + SECTOR_BYTES).min(image.len());
                if older_image[start..end] == image[start..end] {
                    continue;
                }
                let mut damaged = image.clone();
                damaged[start..end].copy_from_slice(&older_image[start..end]);
                let what = format!("sector at {start} rolled back to flush {flush}");
                assert_detected_or_harmless(&names, &current, index, damaged, &what);
                rolled_back += 1;
            }
        }
    }
    assert!(rolled_back > 20, "only {rolled_back} sectors ever changed");
}

/// A misdirected write: the bytes meant for one sector land on another sector of the same
/// segment, which loses what it held.
#[test]
fn a_sector_written_to_the_wrong_place_is_detected_and_never_returns_altered_records() {
    let (names, images) = small_journal();
    let mut misdirected = 0;
    for (index, image) in images.iter().enumerate() {
        let sectors = image.len().div_ceil(SECTOR_BYTES);
        for from in 0..sectors {
            let source = &image[from * SECTOR_BYTES..((from + 1) * SECTOR_BYTES).min(image.len())];
            for to in (0..sectors).filter(|&to| to != from) {
                let target = to * SECTOR_BYTES..(to * SECTOR_BYTES + source.len()).min(image.len());
                if image[target.clone()] == source[..target.len()] {
                    continue;
                }
                let mut damaged = image.clone();
                damaged[target.clone()].copy_from_slice(&source[..target.len()]);
                let what = format!("sector {from} written over sector {to}");
                assert_detected_or_harmless(&names, &images, index, damaged, &what);
                misdirected += 1;
            }
        }
    }
    assert!(misdirected > 100, "only {misdirected} misdirected writes changed anything");
}

/// Every record as a peer would send it, read from an undamaged copy.
fn peer_records(names: &[String], images: &[Vec<u8>]) -> Vec<tally_journal::repair::PeerRecord> {
    let storage = MemStorage::new();
    for (name, image) in names.iter().zip(images) {
        storage.set_image(name, image.clone());
    }
    let mut reader =
        tally_journal::JournalReader::open_on(storage, 1, tally_journal::ReadLimit::Everything).expect("open reader");
    let mut records = Vec::new();
    while let Some(record) = reader.next_record().expect("read") {
        records.push(tally_journal::repair::PeerRecord {
            sequence: record.sequence,
            epoch: record.epoch,
            timestamp: record.timestamp,
            operation: record.operation,
            chain: record.chain,
            payload: record.payload.to_vec(),
        });
    }
    records
}

#[test]
fn a_damaged_record_in_a_sealed_or_the_last_segment_is_named_and_only_a_copy_that_chains_repairs_it() {
    use tally_journal::repair::{damaged_range_on, repair_on};
    let (names, images) = small_journal();
    let records = peer_records(&names, &images);
    assert_eq!(records.len() as u64, RECORDS);
    let second_first: u64 = names[1][..20].parse().expect("name");
    let mut repaired_in = [0usize; 2];
    // Every record below the durable mark the last flush recorded (35: the mark lags one
    // flush). Damage to a record of the last flush, after a restart, is indistinguishable
    // from a write torn by a power loss: recovery cuts it and reports the cut.
    for sequence in 1..=RECORDS - 5 {
        let (index, first) = if sequence < second_first { (0, 1) } else { (1, second_first) };
        let offset = tally_journal::SEGMENT_PREFIX_BYTES
            + (first..sequence)
                .map(|earlier| tally_journal::record_bytes(test_record(earlier).payload.len()).expect("size"))
                .sum::<usize>();
        let storage = MemStorage::new();
        for (other, name) in names.iter().enumerate() {
            let mut image = images[other].clone();
            if other == index {
                image[offset + 20] ^= 0x40;
            }
            storage.set_image(name, image);
        }
        let what = format!("record {sequence} damaged");
        let recovered = recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)).map(|(_, report)| report);
        assert!(recovered.is_err(), "{what}: recovery must refuse, got {recovered:?}");
        let range = damaged_range_on(&storage).expect("survey").expect(&what);
        assert_eq!((range.segment.as_str(), range.first, range.last), (names[index].as_str(), sequence, sequence));
        let copy = &records[(sequence - 1) as usize];
        // A copy from another history (another payload, so another chain) is refused and
        // changes nothing.
        let mut other = copy.clone();
        other.payload.push(1);
        let before: Vec<Vec<u8>> = names.iter().map(|name| storage.durable_image(name).expect("image")).collect();
        assert!(repair_on(&storage, &[other]).is_err(), "{what}: a copy that does not chain must be refused");
        let after: Vec<Vec<u8>> = names.iter().map(|name| storage.durable_image(name).expect("image")).collect();
        assert_eq!(before, after, "{what}: a refused copy changed the journal");
        // A copy of more or fewer records than the damage is refused too.
        let two = &records[(sequence - 1) as usize..=sequence as usize];
        assert!(repair_on(&storage, two).is_err(), "{what}: a longer copy must be refused");
        repair_on(&storage, std::slice::from_ref(copy)).expect(&what);
        storage.crash();
        let (_, report) = recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)).expect(&what);
        assert_eq!(report.last_sequence, RECORDS, "{what}");
        assert_eq!(assert_records_match_written(&storage, 1), RECORDS, "{what}");
        repaired_in[index] += 1;
    }
    assert!(repaired_in[0] > 0 && repaired_in[1] > 0, "both segments exercised: {repaired_in:?}");
}
