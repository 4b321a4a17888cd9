//! Repair of damage below the durable mark from a peer's copy of the same records.
//!
//! Recovery refuses a journal whose last segment holds a damaged record followed by
//! intact ones (`DamageReason::DamagedBeforeIntact`): those records were flushed, perhaps
//! acknowledged, and a valid record after them proves the damage is not a torn write.
//! [`damaged_range`] names the damaged sequences; [`repair`] writes a peer's copy of
//! exactly those records in place, and only if it matches the hash chain on both sides:
//! the first copied record chains from the last intact record before the damage, each
//! copied record chains from the one before, and the first intact record after the
//! damage chains from the last copied one, at the very offset where the copy ends. Any
//! mismatch refuses the copy and leaves the journal untouched.
//!
//! Only for a journal no writer has open (start-up, before [`crate::Journal::open`]).

use std::path::Path;

use crate::error::JournalError;
use crate::file_storage::FileStorage;
use crate::format::{ChainHash, RECORD_ALIGN_BYTES, RECORD_HEADER_BYTES, RecordHeader, SegmentHeader, chain_hash};
use crate::scan::{Cursor, parse_next};
use crate::storage::{FlushMethod, SegmentFile, Storage};
use crate::survey::{intact_record_at, list_segments};

/// The damaged records of the last segment, `first..=last`, and the intact record after
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRange {
    pub segment: String,
    pub first: u64,
    pub last: u64,
}

/// A record as a peer holds it (the fields its chain hash covers, and the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    pub sequence: u64,
    pub epoch: u32,
    pub timestamp: u64,
    pub operation: u8,
    pub chain: ChainHash,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the journal has no damaged record followed by intact ones")]
    NoDamage,
    #[error("the copy covers sequences {got_first}..={got_last}, the damaged range is {first}..={last}")]
    WrongRange { first: u64, last: u64, got_first: u64, got_last: u64 },
    #[error("copied record {sequence} does not chain from the record before it (the peer's history differs)")]
    ChainBefore { sequence: u64 },
    #[error(
        "the first intact record after the damage ({sequence}) does not chain from the last copied one (the peer's history differs)"
    )]
    ChainAfter { sequence: u64 },
    #[error("the copied records do not end where the intact record {sequence} begins")]
    Misaligned { sequence: u64 },
    #[error("writing the repair to {segment}: {source}")]
    Write {
        segment: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the damage is: the segment, the cursor at the first damaged record, and the
/// first intact record after it (offset, sequence).
struct Located<F> {
    name: String,
    segment: F,
    cursor: Cursor,
    intact_offset: usize,
    intact_sequence: u64,
}

fn locate<S: Storage>(storage: &S, writable: bool) -> Result<Located<S::Segment>, RepairError> {
    let segments = list_segments(storage)?;
    let Some(entry) = segments.last() else { return Err(RepairError::NoDamage) };
    let name = entry.name.clone();
    let segment = storage.open(&name, writable).map_err(|error| JournalError::io(storage.path_of(&name), error))?;
    let header = SegmentHeader::decode(segment.bytes()).map_err(|reason| JournalError::Corrupt {
        segment: name.clone(),
        offset: 0,
        sequence: entry.first_sequence,
        reason,
    })?;
    let mut cursor = Cursor::at_segment_start(&header, None);
    loop {
        match parse_next(segment.bytes(), &cursor) {
            Ok(Some(record)) => cursor.advance(&record),
            Ok(None) => return Err(RepairError::NoDamage),
            Err(_) => break,
        }
    }
    // The first intact record after the damage, as recovery finds it.
    let bytes = segment.bytes();
    let mut offset = cursor.offset + RECORD_ALIGN_BYTES;
    while offset + RECORD_HEADER_BYTES <= bytes.len() {
        if let Some((header, _)) =
            intact_record_at(bytes, offset).filter(|(header, _)| header.sequence > cursor.next_sequence)
        {
            return Ok(Located { name, segment, cursor, intact_offset: offset, intact_sequence: header.sequence });
        }
        offset += RECORD_ALIGN_BYTES;
    }
    Err(RepairError::NoDamage)
}

/// The damaged range of the journal in `dir`, if its last segment has damaged records
/// followed by intact ones.
pub fn damaged_range(dir: impl AsRef<Path>) -> Result<Option<DamagedRange>, JournalError> {
    let storage = FileStorage::new(dir.as_ref(), FlushMethod::default())?;
    match locate(&storage, false) {
        Ok(located) => Ok(Some(DamagedRange {
            segment: located.name,
            first: located.cursor.next_sequence,
            last: located.intact_sequence - 1,
        })),
        Err(RepairError::NoDamage) => Ok(None),
        Err(RepairError::Journal(error)) => Err(error),
        Err(other) => Err(JournalError::io(dir.as_ref(), std::io::Error::other(other.to_string()))),
    }
}

/// Writes `records` (a peer's copy of exactly the damaged range) in place if they match
/// the hash chain on both sides, and syncs them; otherwise changes nothing.
pub fn repair(dir: impl AsRef<Path>, records: &[PeerRecord]) -> Result<DamagedRange, RepairError> {
    let storage = FileStorage::new(dir.as_ref(), FlushMethod::default())?;
    repair_on(&storage, records)
}

pub fn repair_on<S: Storage>(storage: &S, records: &[PeerRecord]) -> Result<DamagedRange, RepairError> {
    let Located { name, mut segment, cursor, intact_offset, intact_sequence } = locate(storage, true)?;
    let range = DamagedRange { segment: name.clone(), first: cursor.next_sequence, last: intact_sequence - 1 };
    let got_first = records.first().map_or(0, |record| record.sequence);
    let got_last = records.last().map_or(0, |record| record.sequence);
    let gapless = records.iter().zip(range.first..).all(|(record, expected)| record.sequence == expected);
    if !gapless || got_first != range.first || got_last != range.last {
        return Err(RepairError::WrongRange { first: range.first, last: range.last, got_first, got_last });
    }
    let mut bytes = Vec::new();
    let mut chain = cursor.chain;
    for record in records {
        let header = RecordHeader::seal(
            record.sequence,
            record.epoch,
            record.timestamp,
            record.operation,
            &record.payload,
            &chain,
        );
        let sealed =
            RecordHeader::decode(&header).map_err(|_| RepairError::ChainBefore { sequence: record.sequence })?;
        if sealed.chain != record.chain {
            return Err(RepairError::ChainBefore { sequence: record.sequence });
        }
        chain = record.chain;
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&record.payload);
        bytes.resize(bytes.len().next_multiple_of(RECORD_ALIGN_BYTES), 0);
    }
    if cursor.offset + bytes.len() != intact_offset {
        return Err(RepairError::Misaligned { sequence: intact_sequence });
    }
    let after = segment.bytes();
    let misaligned = || RepairError::Misaligned { sequence: intact_sequence };
    let header_bytes: &[u8; RECORD_HEADER_BYTES] = after
        .get(intact_offset..intact_offset + RECORD_HEADER_BYTES)
        .and_then(|slice| slice.try_into().ok())
        .ok_or_else(misaligned)?;
    let header = RecordHeader::decode(header_bytes).map_err(|_| misaligned())?;
    let payload_start = intact_offset + RECORD_HEADER_BYTES;
    let payload = after.get(payload_start..payload_start + header.payload_bytes as usize).ok_or_else(misaligned)?;
    if chain_hash(&chain, header_bytes, payload) != header.chain {
        return Err(RepairError::ChainAfter { sequence: intact_sequence });
    }
    let write_error = |source| RepairError::Write { segment: name.clone(), source };
    segment.write(cursor.offset, &bytes).map_err(write_error)?;
    segment.sync(cursor.offset..intact_offset).map_err(write_error)?;
    Ok(range)
}
