//! Recovery: scan every segment in order, verify every record, then decide by mode what
//! to do with whatever follows the last valid record.
//!
//! The rule that separates a torn tail from damage: only the tail of the *last* segment,
//! and only above the durable mark recorded in that segment's mark slots, may be cut.
//! Anything wrong in an older segment, at a segment boundary, in a segment header, or
//! below the recorded mark is [`JournalError::Corrupt`] unless the operator chose
//! [`RecoveryMode::TruncateAt`].

use crate::error::{DamageReason, JournalError};
use crate::format::{
    ChainHash, MARK_FLAG_SEALED, MARK_SLOT_OFFSETS, MarkSlot, SEGMENT_HEADER_BYTES, SegmentHeader, parse_segment_name,
    prefix_padding_is_zero,
};
use crate::scan::{Cursor, last_nonzero, parse_next};
use crate::segment::{
    FlushFailureHook, TEMPORARY_SUFFIX, create_segment, new_header, segment_capacity, sync_or_stop, write_mark,
    zero_tail,
};
use crate::storage::{SegmentFile, Storage};

/// What recovery may do with a journal whose end is not clean.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut a torn tail after the last valid record of the last segment, provided nothing
    /// at or below the recorded durable mark is lost; refuse anything else.
    #[default]
    TolerateTornTail,
    /// The operator's decision after inspecting damage (e.g. before re-fetching the rest
    /// from a peer): keep records up to and including this sequence, which must all be
    /// valid, and discard everything after it, even below the recorded durable mark.
    TruncateAt(u64),
}

/// What recovery found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The first record in the journal (the next sequence to append when it is empty).
    pub first_sequence: u64,
    /// The last valid record kept (`first_sequence - 1` when the journal is empty).
    pub last_sequence: u64,
    pub records_recovered: u64,
    /// The durable mark found in the last segment's mark slots.
    pub recorded_durable_mark: u64,
    /// A torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
    /// Mark slots found damaged (neither valid nor blank), e.g. by a torn slot write
    /// during a crash; the other slot of the pair was used.
    pub mark_slots_damaged: usize,
    /// Segments deleted by [`RecoveryMode::TruncateAt`].
    pub segments_removed: Vec<String>,
    /// Temporary files of interrupted segment creations that were deleted.
    pub temporaries_removed: Vec<String>,
    /// The first sequence to replay on top of the snapshot.
    pub replay_from: u64,
}

/// Bytes discarded after the last valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: String,
    pub offset: u64,
    pub bytes_discarded: u64,
    /// Why the record at `offset` was not valid; `None` when it read as clean free space
    /// and only stray bytes further on (or a short file) were discarded.
    pub reason: Option<DamageReason>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentEntry {
    pub name: String,
    pub first_sequence: u64,
}

/// The first problem found, and whether it may be a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    pub segment: usize,
    pub offset: usize,
    pub sequence: u64,
    pub reason: DamageReason,
    pub tail_candidate: bool,
}

/// The result of scanning every segment.
pub(crate) struct JournalScan {
    pub segments: Vec<SegmentEntry>,
    pub first_sequence: u64,
    /// The segment holding the end of the valid prefix, and the cursor after it.
    pub end: Option<(usize, Cursor)>,
    pub damage: Option<Damage>,
    pub last_header: Option<SegmentHeader>,
    pub last_mark: Option<MarkSlot>,
    /// Mark slots that are neither valid nor blank, over all segments read.
    pub mark_slots_damaged: usize,
}

impl JournalScan {
    pub fn last_sequence(&self) -> u64 {
        self.end.map_or(self.first_sequence.saturating_sub(1), |(_, cursor)| cursor.last_sequence())
    }

    pub fn corrupt(&self, damage: &Damage) -> JournalError {
        JournalError::Corrupt {
            segment: self.segments[damage.segment].name.clone(),
            offset: damage.offset as u64,
            sequence: damage.sequence,
            reason: damage.reason,
        }
    }
}

/// Segment files in sequence order; other files are ignored.
pub(crate) fn list_segments<S: Storage>(storage: &S) -> Result<Vec<SegmentEntry>, JournalError> {
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    let mut segments: Vec<SegmentEntry> = names
        .into_iter()
        .filter_map(|name| parse_segment_name(&name).map(|first_sequence| SegmentEntry { name, first_sequence }))
        .collect();
    segments.sort_by_key(|entry| entry.first_sequence);
    Ok(segments)
}

/// Scans and verifies every segment, stopping at the first problem.
pub(crate) fn scan_journal<S: Storage>(storage: &S, segments: Vec<SegmentEntry>) -> Result<JournalScan, JournalError> {
    let first_sequence = segments.first().map_or(1, |entry| entry.first_sequence);
    let mut scan = JournalScan {
        segments,
        first_sequence,
        end: None,
        damage: None,
        last_header: None,
        last_mark: None,
        mark_slots_damaged: 0,
    };
    let count = scan.segments.len();
    for index in 0..count {
        let name = &scan.segments[index].name;
        let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
        let expected = scan.end.map_or(scan.segments[index].first_sequence, |(_, cursor)| cursor.next_sequence);
        let structural =
            |offset, reason| Damage { segment: index, offset, sequence: expected, reason, tail_candidate: false };
        let header = match check_header(segment.bytes(), &scan.segments[index], scan.end.as_ref()) {
            Ok(header) => header,
            Err((offset, reason)) => {
                scan.damage = Some(structural(offset, reason));
                return Ok(scan);
            }
        };
        let mut cursor = Cursor::at_segment_start(&header, scan.end.as_ref().map(|(_, cursor)| cursor));
        let is_last = index + 1 == count;
        loop {
            match parse_next(segment.bytes(), &cursor) {
                Ok(Some(record)) => cursor.advance(&record),
                Ok(None) => break,
                Err(reason) => {
                    scan.end = Some((index, cursor));
                    scan.damage = Some(Damage {
                        segment: index,
                        offset: cursor.offset,
                        sequence: cursor.next_sequence,
                        reason,
                        tail_candidate: is_last,
                    });
                    break;
                }
            }
        }
        scan.end = Some((index, cursor));
        scan.mark_slots_damaged += MarkSlot::damaged_slots(segment.bytes());
        // Nothing is ever written after the last record of a sealed segment: the writer
        // rolled over because the next record did not fit.
        if !is_last
            && scan.damage.is_none()
            && let Some(stray) = last_nonzero(segment.bytes(), cursor.offset)
        {
            scan.damage = Some(Damage {
                segment: index,
                offset: stray,
                sequence: cursor.next_sequence,
                reason: DamageReason::NonZeroAfterLastRecord,
                tail_candidate: false,
            });
        }
        if is_last {
            scan.last_header = Some(header);
            scan.last_mark = MarkSlot::newest(segment.bytes());
            let mark_damage = match scan.last_mark {
                None => Some(DamageReason::MarkSlotsDamaged),
                Some(mark) if mark.flags & MARK_FLAG_SEALED != 0 => Some(DamageReason::SuccessorMissing),
                Some(_) => None,
            };
            if let (None, Some(reason)) = (scan.damage, mark_damage) {
                scan.damage = Some(structural(MARK_SLOT_OFFSETS[0], reason));
            }
        }
        if scan.damage.is_some() {
            return Ok(scan);
        }
    }
    Ok(scan)
}

/// Checks a segment's header against its name and against the end of its predecessor.
/// On failure returns the offset to blame and why.
fn check_header(
    bytes: &[u8],
    entry: &SegmentEntry,
    previous: Option<&(usize, Cursor)>,
) -> Result<SegmentHeader, (usize, DamageReason)> {
    let header = SegmentHeader::decode(bytes).map_err(|reason| (0, reason))?;
    if header.first_sequence != entry.first_sequence {
        let reason = DamageReason::SegmentNameMismatch { name: entry.first_sequence, header: header.first_sequence };
        return Err((0, reason));
    }
    if segment_capacity(&header).is_none() {
        return Err((0, DamageReason::BadSegmentHeader));
    }
    if !prefix_padding_is_zero(bytes) {
        return Err((SEGMENT_HEADER_BYTES, DamageReason::NonZeroPrefix));
    }
    if let Some((_, cursor)) = previous {
        if header.first_sequence != cursor.next_sequence {
            let reason = DamageReason::SequenceGap { last: cursor.last_sequence(), next: header.first_sequence };
            return Err((0, reason));
        }
        if header.previous_chain != cursor.chain {
            return Err((0, DamageReason::ChainMismatch));
        }
    }
    Ok(header)
}

/// Settings recovery needs from the journal configuration.
pub(crate) struct RecoverOptions {
    pub segment_bytes: usize,
    pub mode: RecoveryMode,
    pub snapshot_sequence: u64,
    pub genesis_chain: ChainHash,
    pub hook: FlushFailureHook,
}

/// The writer's starting state after recovery.
pub(crate) struct Recovered<F> {
    pub segments: Vec<u64>,
    pub active: F,
    pub active_capacity: usize,
    pub end: Cursor,
    pub mark: MarkSlot,
    pub report: RecoveryReport,
}

pub(crate) fn recover<S: Storage>(
    storage: &S,
    options: &RecoverOptions,
) -> Result<Recovered<S::Segment>, JournalError> {
    let temporaries_removed = remove_temporaries(storage, options.hook)?;
    let segments = list_segments(storage)?;
    let mut recovered = if segments.is_empty() {
        start_empty(storage, options)?
    } else {
        let scan = scan_journal(storage, segments)?;
        match options.mode {
            RecoveryMode::TolerateTornTail => cut_torn_tail(storage, scan, options.hook)?,
            RecoveryMode::TruncateAt(sequence) => truncate_at(storage, scan, sequence, options.hook)?,
        }
    };
    recovered.report.temporaries_removed = temporaries_removed;
    recovered.report.replay_from = options.snapshot_sequence.saturating_add(1);
    let report = &recovered.report;
    if report.first_sequence > report.replay_from || report.last_sequence < options.snapshot_sequence {
        return Err(JournalError::Corrupt {
            segment: crate::format::segment_name(report.first_sequence),
            offset: 0,
            sequence: report.replay_from,
            reason: DamageReason::SnapshotNotCovered { first: report.first_sequence, needed: report.replay_from },
        });
    }
    Ok(recovered)
}

fn remove_temporaries<S: Storage>(storage: &S, hook: FlushFailureHook) -> Result<Vec<String>, JournalError> {
    let names = storage.list().map_err(|error| JournalError::io(storage.path_of(""), error))?;
    let temporaries: Vec<String> = names
        .into_iter()
        .filter(|name| name.strip_suffix(TEMPORARY_SUFFIX).is_some_and(|base| parse_segment_name(base).is_some()))
        .collect();
    for name in &temporaries {
        storage.remove(name).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    }
    if !temporaries.is_empty() {
        sync_dir_or_stop(storage, hook);
    }
    Ok(temporaries)
}

fn sync_dir_or_stop<S: Storage>(storage: &S, hook: FlushFailureHook) {
    if let Err(error) = storage.sync_dir() {
        hook(&crate::segment::FlushFailure { path: storage.path_of(""), error });
    }
}

/// A new journal: one empty segment starting right after the snapshot.
fn start_empty<S: Storage>(storage: &S, options: &RecoverOptions) -> Result<Recovered<S::Segment>, JournalError> {
    let first_sequence = options.snapshot_sequence.saturating_add(1);
    let header = new_header(first_sequence, options.segment_bytes, options.genesis_chain);
    let durable = first_sequence - 1;
    let active = create_segment(storage, header, durable, options.hook)?;
    let report = RecoveryReport {
        first_sequence,
        last_sequence: durable,
        recorded_durable_mark: durable,
        ..RecoveryReport::default()
    };
    Ok(Recovered {
        segments: vec![first_sequence],
        active,
        active_capacity: options.segment_bytes,
        end: Cursor::at_segment_start(&header, None),
        mark: MarkSlot { generation: 1, durable_sequence: durable, flags: 0 },
        report,
    })
}

fn cut_torn_tail<S: Storage>(
    storage: &S,
    scan: JournalScan,
    hook: FlushFailureHook,
) -> Result<Recovered<S::Segment>, JournalError> {
    if let Some(damage) = scan.damage.filter(|damage| !damage.tail_candidate) {
        return Err(scan.corrupt(&damage));
    }
    // Without a damage report the scan always read the last segment's header and mark.
    let (Some((end_index, end)), Some(header), Some(mark)) = (scan.end, scan.last_header, scan.last_mark) else {
        let damage = Damage {
            segment: scan.segments.len() - 1,
            offset: MARK_SLOT_OFFSETS[0],
            sequence: scan.last_sequence() + 1,
            reason: DamageReason::MarkSlotsDamaged,
            tail_candidate: false,
        };
        return Err(scan.corrupt(&damage));
    };
    let last_sequence = end.last_sequence();
    if last_sequence < mark.durable_sequence {
        return Err(JournalError::Corrupt {
            segment: scan.segments[end_index].name.clone(),
            offset: end.offset as u64,
            sequence: end.next_sequence,
            reason: DamageReason::BelowDurableMark { last: last_sequence, durable_mark: mark.durable_sequence },
        });
    }
    let name = scan.segments[end_index].name.clone();
    let (active, capacity, bytes_discarded) =
        reopen_and_clean(storage, &name, &header, end.offset, last_sequence, mark, hook)?;
    let torn_tail = (bytes_discarded > 0 || scan.damage.is_some()).then(|| TornTail {
        segment: name,
        offset: end.offset as u64,
        bytes_discarded,
        reason: scan.damage.map(|damage| damage.reason),
    });
    Ok(Recovered {
        segments: scan.segments.iter().map(|entry| entry.first_sequence).collect(),
        active,
        active_capacity: capacity,
        end,
        mark: MarkSlot { generation: mark.generation + 1, durable_sequence: last_sequence, flags: 0 },
        report: RecoveryReport {
            first_sequence: scan.first_sequence,
            last_sequence,
            records_recovered: last_sequence + 1 - scan.first_sequence,
            recorded_durable_mark: mark.durable_sequence,
            torn_tail,
            mark_slots_damaged: scan.mark_slots_damaged,
            ..RecoveryReport::default()
        },
    })
}

/// Opens the segment that will be active, restores its full length if the file was found
/// short, zeroes everything after `end_offset`, records `durable_sequence` in the next
/// mark slot and syncs. Returns the segment, its capacity and the bytes discarded.
fn reopen_and_clean<S: Storage>(
    storage: &S,
    name: &str,
    header: &SegmentHeader,
    end_offset: usize,
    durable_sequence: u64,
    mark: MarkSlot,
    hook: FlushFailureHook,
) -> Result<(S::Segment, usize, u64), JournalError> {
    let path = storage.path_of(name);
    let io_error = |error| JournalError::io(storage.path_of(name), error);
    let capacity = segment_capacity(header).ok_or(JournalError::InvalidConfig("segment header size"))?;
    let mut active = storage.open(name, true).map_err(io_error)?;
    let short_bytes = capacity.saturating_sub(active.bytes().len()) as u64;
    active.grow(capacity).map_err(io_error)?;
    let zeroed = zero_tail(&mut active, end_offset).map_err(io_error)?;
    let next_mark = MarkSlot { generation: mark.generation + 1, durable_sequence, flags: 0 };
    if let Err(error) = write_mark(&mut active, next_mark) {
        hook(&crate::segment::FlushFailure { path: path.clone(), error });
    }
    sync_or_stop(&mut active, 0..capacity, path, hook);
    Ok((active, capacity, zeroed + short_bytes))
}

fn truncate_at<S: Storage>(
    storage: &S,
    scan: JournalScan,
    sequence: u64,
    hook: FlushFailureHook,
) -> Result<Recovered<S::Segment>, JournalError> {
    let last_valid = scan.last_sequence();
    if sequence > last_valid || sequence.saturating_add(1) < scan.first_sequence {
        return Err(JournalError::TruncateBeyondEnd { requested: sequence, last: last_valid });
    }
    let keep = scan
        .segments
        .iter()
        .rposition(|entry| entry.first_sequence <= sequence + 1)
        .ok_or(JournalError::SequenceNotFound(sequence))?;
    let mut segments_removed = Vec::new();
    for entry in scan.segments[keep + 1..].iter().rev() {
        storage.remove(&entry.name).map_err(|error| JournalError::io(storage.path_of(&entry.name), error))?;
        segments_removed.push(entry.name.clone());
    }
    if !segments_removed.is_empty() {
        sync_dir_or_stop(storage, hook);
    }
    let name = scan.segments[keep].name.clone();
    let (header, end, mark) = position_after(storage, &name, sequence)?;
    let (active, capacity, _) = reopen_and_clean(storage, &name, &header, end.offset, sequence, mark, hook)?;
    Ok(Recovered {
        segments: scan.segments[..=keep].iter().map(|entry| entry.first_sequence).collect(),
        active,
        active_capacity: capacity,
        end,
        mark: MarkSlot { generation: mark.generation + 1, durable_sequence: sequence, flags: 0 },
        report: RecoveryReport {
            first_sequence: scan.first_sequence,
            last_sequence: sequence,
            records_recovered: sequence + 1 - scan.first_sequence,
            recorded_durable_mark: scan.last_mark.map_or(0, |mark| mark.durable_sequence),
            mark_slots_damaged: scan.mark_slots_damaged,
            segments_removed,
            ..RecoveryReport::default()
        },
    })
}

/// Re-reads segment `name` up to and including record `sequence` (already verified by the
/// scan) and returns its header, the cursor after that record and its newest mark slot
/// (generation 0 when both slots are damaged: they are rewritten next).
fn position_after<S: Storage>(
    storage: &S,
    name: &str,
    sequence: u64,
) -> Result<(SegmentHeader, Cursor, MarkSlot), JournalError> {
    let segment = storage.open(name, false).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    let bytes = segment.bytes();
    let corrupt = |offset: usize, sequence: u64, reason| JournalError::Corrupt {
        segment: name.to_string(),
        offset: offset as u64,
        sequence,
        reason,
    };
    let header = SegmentHeader::decode(bytes).map_err(|reason| corrupt(0, sequence, reason))?;
    let mut cursor = Cursor::at_segment_start(&header, None);
    while cursor.next_sequence <= sequence {
        match parse_next(bytes, &cursor) {
            Ok(Some(record)) => cursor.advance(&record),
            Ok(None) => return Err(JournalError::SequenceNotFound(cursor.next_sequence)),
            Err(reason) => return Err(corrupt(cursor.offset, cursor.next_sequence, reason)),
        }
    }
    let mark = MarkSlot::newest(bytes).unwrap_or(MarkSlot { generation: 0, durable_sequence: 0, flags: 0 });
    Ok((header, cursor, mark))
}
