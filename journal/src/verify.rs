//! Library side of the operator tools: `verify` checks a journal without changing it, by
//! making the same decision start-up makes ([`crate::assess`]) and reporting it; `dump`
//! is a [`crate::JournalReader`] opened with [`crate::ReadLimit::Everything`].

use std::path::Path;

use crate::assess::{Plan, assess};
use crate::error::JournalError;
use crate::file_storage::FileStorage;
use crate::manifest::MANIFEST_NAME;
use crate::recovery::{RecoveryMode, TornTail};
use crate::scan::last_nonzero;
use crate::storage::{FlushMethod, SegmentFile, Storage};
use crate::survey::list_segments;

/// A journal start-up would accept, as `verify` found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub segments: usize,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub records: u64,
    pub recorded_durable_mark: u64,
    /// Mark slots that are neither valid nor blank.
    pub mark_slots_damaged: usize,
    /// Bytes after the last valid record that recovery would cut (never below the mark).
    pub torn_tail: Option<TornTail>,
    /// The journal has no manifest yet; the next start creates it.
    pub manifest_missing: bool,
    /// Manifest slots that do not verify.
    pub manifest_slots_damaged: usize,
    /// Segments the next start would set aside because the snapshot covers their damage.
    pub set_aside: Vec<String>,
    /// The damage those segments hold.
    pub damage_covered_by_snapshot: Option<String>,
}

/// Verifies the journal in `dir` as a start without a snapshot would: every record (CRC,
/// chain, gapless sequence, segment boundaries, durable mark) and the manifest, without
/// writing anything. `Err(Corrupt)` names the first problem with its segment, offset and
/// sequence; a directory with no journal is [`JournalError::NoJournal`].
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, JournalError> {
    verify_after_snapshot(dir, 0)
}

/// [`verify`] for a node whose newest valid snapshot covers `snapshot_sequence`.
pub fn verify_after_snapshot(dir: impl AsRef<Path>, snapshot_sequence: u64) -> Result<VerifyReport, JournalError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        let error = std::io::Error::new(std::io::ErrorKind::NotFound, "journal directory not found");
        return Err(JournalError::io(dir, error));
    }
    verify_on_after_snapshot(&FileStorage::new(dir, FlushMethod::default())?, snapshot_sequence)
}

/// [`verify`] over any storage.
pub fn verify_on<S: Storage>(storage: &S) -> Result<VerifyReport, JournalError> {
    verify_on_after_snapshot(storage, 0)
}

/// [`verify_after_snapshot`] over any storage.
pub fn verify_on_after_snapshot<S: Storage>(storage: &S, snapshot_sequence: u64) -> Result<VerifyReport, JournalError> {
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    let manifest_missing = !names.iter().any(|name| name == MANIFEST_NAME);
    if manifest_missing && list_segments(storage)?.is_empty() {
        return Err(JournalError::NoJournal { dir: storage.path_of("") });
    }
    let assessment = assess(storage, RecoveryMode::TolerateTornTail, snapshot_sequence, [0; 16])?;
    let mut report = VerifyReport {
        segments: 0,
        first_sequence: snapshot_sequence + 1,
        last_sequence: snapshot_sequence,
        records: 0,
        recorded_durable_mark: snapshot_sequence,
        mark_slots_damaged: 0,
        torn_tail: None,
        manifest_missing,
        manifest_slots_damaged: assessment.manifest_slots_damaged,
        set_aside: assessment.set_aside,
        damage_covered_by_snapshot: assessment.damage_covered,
    };
    let Plan::Keep { scan, keep } = assessment.plan else {
        return Ok(report);
    };
    let name = &scan.segments[keep.end_index].name;
    let last_sequence = keep.end.last_sequence();
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let stray_bytes =
        last_nonzero(segment.bytes(), keep.end.offset).map_or(0, |last| (last + 1 - keep.end.offset) as u64);
    report.torn_tail = (stray_bytes > 0 || scan.damage.is_some()).then(|| TornTail {
        segment: name.clone(),
        offset: keep.end.offset as u64,
        bytes_discarded: stray_bytes,
        reason: scan.damage.map(|damage| damage.reason),
        first_sequence_cut: keep.end.next_sequence,
        last_intact_sequence_cut: keep.intact_after.iter().copied().max(),
    });
    report.segments = scan.segments.len();
    report.first_sequence = scan.first_sequence;
    report.last_sequence = last_sequence;
    report.records = last_sequence + 1 - scan.first_sequence;
    report.recorded_durable_mark = keep.mark.durable_sequence;
    report.mark_slots_damaged = scan.mark_slots_damaged;
    Ok(report)
}
