//! Scanning a whole journal: every segment in order, every record, header and boundary
//! verified, stopping at the first problem. Recovery, `verify` and the readers share it.

use crate::error::{DamageReason, JournalError};
use crate::format::{
    MARK_FLAG_SEALED, MARK_SLOT_OFFSETS, MarkSlot, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RecordHeader,
    SEGMENT_HEADER_BYTES, SegmentHeader, parse_segment_name, prefix_padding_is_zero, record_bytes, record_crc,
};
use crate::scan::{Cursor, last_nonzero, parse_next};
use crate::segment::segment_capacity;
use crate::storage::{SegmentFile, Storage};

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

/// Records that verify on their own (magic, version, bounds, CRC) anywhere after a damaged
/// record at `damaged_offset` that should have been `damaged_sequence`, as (sequence,
/// chain) in file order. The writer only appends, so on the boot that wrote them such
/// records prove the damage is not a write torn by a crash. Only read when there is
/// damage, so checking every 8-byte boundary is affordable.
pub(crate) fn intact_after(bytes: &[u8], damaged_offset: usize, damaged_sequence: u64) -> Vec<RecordHeader> {
    let mut found = Vec::new();
    let mut offset = damaged_offset + RECORD_ALIGN_BYTES;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        let record = intact_record_at(bytes, offset).filter(|(header, _)| header.sequence >= damaged_sequence);
        match record {
            Some((header, end)) => {
                found.push(header);
                offset = end;
            }
            None => offset += RECORD_ALIGN_BYTES,
        }
    }
    found
}

/// The record at `offset` if its header decodes and its CRC holds, with its end offset.
pub(crate) fn intact_record_at(bytes: &[u8], offset: usize) -> Option<(RecordHeader, usize)> {
    let header_bytes: &[u8; RECORD_HEADER_BYTES] = bytes.get(offset..offset + RECORD_HEADER_BYTES)?.try_into().ok()?;
    let header = RecordHeader::decode(header_bytes).ok()?;
    let payload_bytes = usize::try_from(header.payload_bytes).ok()?;
    let payload_start = offset + RECORD_HEADER_BYTES;
    let payload = bytes.get(payload_start..payload_start.checked_add(payload_bytes)?)?;
    let end = offset.checked_add(record_bytes(payload_bytes)?)?;
    (record_crc(header_bytes, payload) == header.crc && end <= bytes.len()).then_some((header, end))
}
