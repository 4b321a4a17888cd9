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
