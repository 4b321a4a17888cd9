//! Segment roll-over, sealing, retention, open after a snapshot, operator truncation,
//! and the writer's argument checks.

mod common;

use common::*;
use tally_journal::sim::MemStorage;
use tally_journal::{DamageReason, JournalError, RecoveryMode, Storage, segment_name, verify_on};

#[test]
fn segments_roll_over_and_are_named_by_their_first_sequence() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let journal = write_records(&storage, &config, 300, 25);
    let firsts = journal.segment_first_sequences().to_vec();
    assert!(firsts.len() >= 5, "{firsts:?}");
    assert_eq!(firsts[0], 1);
    let names: Vec<String> = firsts.iter().map(|&first| segment_name(first)).collect();
    assert_eq!(segment_names(&storage), names);
    assert_eq!(names[0], "00000000000000000001.seg");
    journal.close();
    let (reopened, report) = recover(&storage, &config).expect("reopen");
    assert_eq!((report.first_sequence, report.last_sequence, report.records_recovered), (1, 300, 300));
    assert_eq!(report.recorded_durable_mark, 300, "close records the exact mark");
    assert_eq!(reopened.segment_first_sequences(), &firsts[..]);
    assert_eq!(assert_records_match_written(&storage, 1), 300);
}

#[test]
fn losing_the_newest_segment_file_is_detected_by_the_seal() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 100, 10));
    let names = segment_names(&storage);
    let newest = &names[names.len() - 1];
    storage.remove(newest).expect("remove");
    let error = recover(&storage, &config).err().expect("must refuse");
    let JournalError::Corrupt { segment, reason, .. } = &error else { panic!("expected Corrupt: {error}") };
    assert!(matches!(reason, DamageReason::SegmentMissing { .. }), "the manifest names it first: {error}");
    assert_eq!(segment, newest);
    // Without the manifest, the seal of the segment before it still catches it.
    storage.remove(tally_journal::MANIFEST_NAME).expect("remove manifest");
    let error = recover(&storage, &config).err().expect("must refuse");
    assert!(matches!(error, JournalError::Corrupt { reason: DamageReason::SuccessorMissing, .. }), "{error}");
}

#[test]
fn a_missing_middle_segment_is_a_sequence_gap() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 100, 10));
    let names = segment_names(&storage);
    storage.remove(&names[1]).expect("remove");
    let error = recover(&storage, &config).err().expect("must refuse");
    assert!(matches!(error, JournalError::Corrupt { reason: DamageReason::SequenceGap { .. }, .. }), "{error}");
}

#[test]
fn retention_removes_only_segments_the_snapshot_covers_entirely() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let mut journal = write_records(&storage, &config, 200, 10);
    let firsts = journal.segment_first_sequences().to_vec();
    let snapshot = firsts[2]; // covers segments 0 and 1 entirely, segment 2 only in part
    let removed = journal.remove_segments_covered_by(snapshot).expect("retention");
    assert_eq!(removed, vec![segment_name(firsts[0]), segment_name(firsts[1])]);
    assert_eq!(journal.segment_first_sequences(), &firsts[2..]);
    let everything = journal.remove_segments_covered_by(u64::MAX).expect("retention");
    assert_eq!(everything.len(), firsts.len() - 3, "the active segment is never removed");
    drop(journal);
    let mut reopen = config.clone();
    reopen.snapshot_sequence = 195;
    let (_, report) = recover(&storage, &reopen).expect("a journal starting later still opens");
    assert_eq!((report.first_sequence, report.last_sequence, report.replay_from), (firsts[firsts.len() - 1], 200, 196));
}

#[test]
fn open_after_a_snapshot_replays_from_the_next_sequence() {
    let storage = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 50, 50));
    config.snapshot_sequence = 30;
    let (_, report) = recover(&storage, &config).expect("open");
    assert_eq!(report.replay_from, 31);
    config.snapshot_sequence = 60;
    let error = recover(&storage, &config).err().expect("a snapshot ahead of the journal means lost records");
    assert!(matches!(error, JournalError::Corrupt { reason: DamageReason::SnapshotNotCovered { .. }, .. }));
}

#[test]
fn empty_journal_opened_after_a_snapshot_starts_at_the_next_sequence() {
    let storage = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    config.snapshot_sequence = 1_000;
    config.genesis_chain = [9; 16];
    let (mut journal, report) = recover(&storage, &config).expect("open");
    assert_eq!((report.first_sequence, report.last_sequence, report.replay_from), (1_001, 1_000, 1_001));
    assert_eq!(journal.last_chain(), [9; 16]);
    assert_eq!(journal.append(1, 5, 2, b"after snapshot").expect("append"), 1_001);
    assert_eq!(segment_names(&storage), vec![segment_name(1_001)]);
}

#[test]
fn operator_truncation_discards_damage_below_the_mark_and_later_segments() {
    let storage = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 150, 10));
    let names = segment_names(&storage);
    let mut image = storage.durable_image(&names[1]).expect("image");
    image[tally_journal::SEGMENT_PREFIX_BYTES + 200] ^= 0xFF;
    storage.set_image(&names[1], image);
    let error = recover(&storage, &config).err().expect("damage below the mark");
    let JournalError::Corrupt { sequence: damaged, .. } = error else { panic!("expected Corrupt: {error}") };
    config.recovery = RecoveryMode::TruncateAt(damaged + 5);
    assert!(matches!(recover(&storage, &config), Err(JournalError::TruncateBeyondEnd { .. })));
    config.recovery = RecoveryMode::TruncateAt(damaged - 1);
    let (mut journal, report) = recover(&storage, &config).expect("operator truncation");
    assert_eq!(report.last_sequence, damaged - 1);
    assert_eq!(report.segments_removed.len(), names.len() - 2);
    assert_eq!(journal.append(9, 10_000, 1, b"new history").expect("append"), damaged);
    journal.close();
    config.recovery = RecoveryMode::TolerateTornTail;
    let (_, report) = recover(&storage, &config).expect("sound again");
    assert_eq!(report.last_sequence, damaged);
    assert!(verify_on(&storage).is_ok());
}

#[test]
fn oversized_payloads_and_regressing_epochs_or_timestamps_are_errors() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    let (mut journal, _) = recover(&storage, &config).expect("open");
    let too_big = vec![0u8; config.payload_bytes_max + 1];
    assert!(matches!(journal.append(1, 1, 1, &too_big), Err(JournalError::RecordTooLarge { .. })));
    assert_eq!(journal.append(2, 100, 1, b"x").expect("append"), 1);
    assert!(matches!(journal.append(1, 100, 1, b"x"), Err(JournalError::EpochRegressed { .. })));
    assert!(matches!(journal.append(2, 99, 1, b"x"), Err(JournalError::TimestampRegressed { .. })));
    assert_eq!(journal.append(2, 100, 1, b"").expect("empty payload"), 2);
    assert_eq!((journal.last_sequence(), journal.last_timestamp(), journal.last_epoch()), (2, 100, 2));
}

#[test]
fn invalid_configurations_are_refused() {
    let storage = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    config.segment_bytes = 5_000;
    assert!(matches!(recover(&storage, &config), Err(JournalError::InvalidConfig(_))));
    config.segment_bytes = SMALL_SEGMENT_BYTES;
    config.payload_bytes_max = SMALL_SEGMENT_BYTES;
    assert!(matches!(recover(&storage, &config), Err(JournalError::InvalidConfig(_))));
}

#[test]
fn interrupted_segment_creation_leaves_a_temporary_that_recovery_removes() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    drop(write_records(&storage, &config, 20, 20));
    storage.set_image("00000000000000000021.seg.tmp", vec![0u8; 100]);
    let (_, report) = recover(&storage, &config).expect("open");
    assert_eq!(report.temporaries_removed, vec!["00000000000000000021.seg.tmp".to_string()]);
    assert_eq!(report.last_sequence, 20);
    assert!(!storage.list().expect("list").iter().any(|name| name.ends_with(".tmp")));
}

#[test]
fn too_little_free_space_for_a_segment_is_an_error_naming_the_size_and_leaves_no_file() {
    let storage = MemStorage::new();
    let config = mem_config(SMALL_SEGMENT_BYTES);
    storage.limit_space(SMALL_SEGMENT_BYTES as u64 - 1);
    let error = recover(&storage, &config).err().expect("no room for the first segment");
    assert!(
        matches!(error, JournalError::NoSpace { needed_bytes, .. } if needed_bytes == SMALL_SEGMENT_BYTES as u64),
        "{error}"
    );
    assert!(storage.list().expect("list").is_empty(), "nothing left behind");
    storage.limit_space(SMALL_SEGMENT_BYTES as u64);
    assert!(recover(&storage, &config).is_ok());
}

#[test]
fn a_record_too_large_for_an_empty_smaller_active_segment_is_refused_instead_of_replacing_it() {
    // Closed empty with small segments, then reopened with larger segments and records:
    // the active segment keeps its size. A roll-over from it would create the next
    // segment under the same name (both start at sequence 1), and retention would later
    // delete that live file.
    let storage = MemStorage::new();
    let (journal, _) = recover(&storage, &mem_config(SMALL_SEGMENT_BYTES)).expect("open");
    journal.close();
    let mut config = mem_config(1 << 16);
    config.payload_bytes_max = 16 << 10;
    let (mut journal, _) = recover(&storage, &config).expect("reopen with larger segments");
    let large = vec![7u8; 5_000];
    let refused = journal.append(1, 1_000, 1, &large);
    assert!(
        matches!(refused, Err(JournalError::RecordTooLarge { payload_bytes: 5_000, max_payload_bytes: 4_048 })),
        "a 5000-byte record for the empty 8 KiB active segment: {refused:?}, segments {:?}",
        journal.segment_first_sequences()
    );
    assert_eq!(journal.segment_first_sequences(), &[1]);
    assert_eq!(journal.remove_segments_covered_by(1).expect("retention"), Vec::<String>::new());
    // Smaller records fill the small segment and roll over to one of the new size, where
    // the large record fits.
    for sequence in 1..=40 {
        append_record(&mut journal, sequence);
    }
    let firsts = journal.segment_first_sequences().to_vec();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
    let last = test_record(40);
    assert_eq!(journal.append(last.epoch, last.timestamp, 1, &large).expect("fits a new segment"), 41);
    journal.flush();
    assert_eq!(journal.remove_segments_covered_by(firsts[1] - 1).expect("retention"), vec![segment_name(1)]);
    journal.close();
    config.snapshot_sequence = firsts[1] - 1;
    let (_, report) = recover(&storage, &config).expect("reopen after the snapshot");
    assert_eq!((report.first_sequence, report.last_sequence), (firsts[1], 41));
}

/// A [`MemStorage`] whose `remove` of one name fails once, as an unlink can (EACCES,
/// EPERM on an immutable file, EIO).
#[derive(Clone)]
struct RemoveFailsOnce {
    disk: MemStorage,
    failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Storage for RemoveFailsOnce {
    type Segment = tally_journal::sim::MemSegment;

    fn list(&self) -> std::io::Result<Vec<String>> {
        self.disk.list()
    }

    fn create(&self, name: &str, bytes: usize) -> std::io::Result<Self::Segment> {
        self.disk.create(name, bytes)
    }

    fn open(&self, name: &str, writable: bool) -> std::io::Result<Self::Segment> {
        self.disk.open(name, writable)
    }

    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.disk.rename(from, to)
    }

    fn remove(&self, name: &str) -> std::io::Result<()> {
        let mut failing = self.failing.lock().expect("lock");
        if failing.as_deref() == Some(name) {
            *failing = None;
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        self.disk.remove(name)
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        self.disk.sync_dir()
    }

    fn sync_and_drop_cache(&self, name: &str) -> std::io::Result<()> {
        self.disk.sync_and_drop_cache(name)
    }

    fn path_of(&self, name: &str) -> std::path::PathBuf {
        self.disk.path_of(name)
    }

    fn boot_id(&self) -> [u8; 16] {
        self.disk.boot_id()
    }

    fn available_bytes(&self) -> Option<u64> {
        self.disk.available_bytes()
    }
}

#[test]
fn retention_after_a_partly_failed_removal_drops_what_went_and_goes_on_from_the_failure() {
    let disk = MemStorage::new();
    let mut config = mem_config(SMALL_SEGMENT_BYTES);
    let storage = RemoveFailsOnce { disk: disk.clone(), failing: Default::default() };
    let (mut journal, _) = tally_journal::Journal::open_on(storage.clone(), &config).expect("open");
    for sequence in 1..=200 {
        append_record(&mut journal, sequence);
    }
    journal.flush();
    let firsts = journal.segment_first_sequences().to_vec();
    assert!(firsts.len() >= 5, "{firsts:?}");
    *storage.failing.lock().expect("lock") = Some(segment_name(firsts[1]));
    let error = journal.remove_segments_covered_by(firsts[3] - 1).expect_err("the second removal fails");
    assert!(matches!(&error, JournalError::Io { .. }), "{error}");
    assert_eq!(journal.segment_first_sequences(), &firsts[1..], "the removed first segment left the list");
    // The removal before the failure is durable: a power loss now does not bring it back.
    let after_power_loss = disk.fork();
    after_power_loss.crash();
    assert!(!segment_names(&after_power_loss).contains(&segment_name(firsts[0])));
    // A file already gone (here removed behind the journal's back) counts as removed.
    disk.remove(&segment_name(firsts[2])).expect("remove");
    let removed = journal.remove_segments_covered_by(firsts[3] - 1).expect("retention goes on");
    assert_eq!(removed, vec![segment_name(firsts[1]), segment_name(firsts[2])]);
    assert_eq!(journal.segment_first_sequences(), &firsts[3..]);
    journal.close();
    config.snapshot_sequence = firsts[3] - 1;
    let (_, report) = recover(&disk, &config).expect("reopen after the snapshot");
    assert_eq!((report.first_sequence, report.last_sequence), (firsts[3], 200));
}
