//! Library side of the operator tools: `verify` checks a journal without changing it;
//! `dump` is a [`crate::JournalReader`] opened with [`crate::ReadLimit::Everything`].

use std::path::Path;

use crate::error::{DamageReason, JournalError};
use crate::file_storage::FileStorage;
use crate::recovery::{TornTail, list_segments, scan_journal};
use crate::scan::last_nonzero;
use crate::storage::{FlushMethod, SegmentFile, Storage};

/// A sound journal, as `verify` found it.
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
}

/// Verifies every record of the journal in `dir` (CRC, chain, gapless sequence, segment
/// boundaries, durable mark) without writing anything. `Err(Corrupt)` names the first
/// problem with its segment, offset and sequence.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, JournalError> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        let error = std::io::Error::new(std::io::ErrorKind::NotFound, "journal directory not found");
        return Err(JournalError::io(dir, error));
    }
    verify_on(&FileStorage::new(dir, FlushMethod::default())?)
}

/// [`verify`] over any storage.
pub fn verify_on<S: Storage>(storage: &S) -> Result<VerifyReport, JournalError> {
    let segments = list_segments(storage)?;
    let segment_count = segments.len();
    if segments.is_empty() {
        return Ok(VerifyReport {
            segments: 0,
            first_sequence: 1,
            last_sequence: 0,
            records: 0,
            recorded_durable_mark: 0,
            mark_slots_damaged: 0,
            torn_tail: None,
        });
    }
    let scan = scan_journal(storage, segments)?;
    if let Some(damage) = scan.damage.filter(|damage| !damage.tail_candidate) {
        return Err(scan.corrupt(&damage));
    }
    let (Some((end_index, end)), Some(mark)) = (scan.end, scan.last_mark) else {
        return Err(JournalError::Corrupt {
            segment: scan.segments[segment_count - 1].name.clone(),
            offset: 0,
            sequence: scan.last_sequence() + 1,
            reason: DamageReason::MarkSlotsDamaged,
        });
    };
    let name = &scan.segments[end_index].name;
    let last_sequence = end.last_sequence();
    if last_sequence < mark.durable_sequence {
        return Err(JournalError::Corrupt {
            segment: name.clone(),
            offset: end.offset as u64,
            sequence: end.next_sequence,
            reason: DamageReason::BelowDurableMark { last: last_sequence, durable_mark: mark.durable_sequence },
        });
    }
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let stray_bytes = last_nonzero(segment.bytes(), end.offset).map_or(0, |last| (last + 1 - end.offset) as u64);
    let torn_tail = (stray_bytes > 0 || scan.damage.is_some()).then(|| TornTail {
        segment: name.clone(),
        offset: end.offset as u64,
        bytes_discarded: stray_bytes,
        reason: scan.damage.map(|damage| damage.reason),
    });
    Ok(VerifyReport {
        segments: segment_count,
        first_sequence: scan.first_sequence,
        last_sequence,
        records: last_sequence + 1 - scan.first_sequence,
        recorded_durable_mark: mark.durable_sequence,
        mark_slots_damaged: scan.mark_slots_damaged,
        torn_tail,
    })
}
