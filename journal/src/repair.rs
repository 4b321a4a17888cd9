//! Repair of damage below the durable mark from a peer's copy of the same records.
//!
//! Recovery refuses a journal with a damaged record that intact ones follow: in the last
//! segment (`DamageReason::DamagedBeforeIntact`: those records were flushed, perhaps
//! acknowledged, and a valid record after them proves the damage is not a torn write) or
//! anywhere in a sealed one (a sealed segment was flushed whole before its successor was
//! created). [`damaged_range`] names the damaged sequences; [`repair`] writes a peer's
//! copy of exactly those records in place, and only if it matches the hash chain on both
//! sides: the first copied record chains from the last intact record before the damage,
//! each copied record chains from the one before, and what follows the damage chains
//! from the last copied one: the first intact record after it in the same segment, at the
//! very offset where the copy ends, or, when the damage reaches the end of a sealed
//! segment, the next segment's header (its first sequence and the chain it continues),
//! with nothing but zeros left after the copy. Any mismatch refuses the copy and leaves
//! the journal untouched.
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

/// What follows the damaged records.
enum After {
    /// The first intact record after them in the same segment.
    Record { offset: usize, sequence: u64 },
    /// The damage reaches the end of a sealed segment: the next segment starts at
    /// `sequence`, continuing the chain `previous_chain`.
    NextSegment { sequence: u64, previous_chain: ChainHash },
}

impl After {
    fn sequence(&self) -> u64 {
        match *self {
            After::Record { sequence, .. } | After::NextSegment { sequence, .. } => sequence,
        }
    }
}

/// Where the damage is: the segment, the cursor at the first damaged record, and what
/// follows the damaged records.
struct Located<F> {
    name: String,
    segment: F,
    cursor: Cursor,
    after: After,
}

/// The first segment (in sequence order) with a record that does not verify, and what
/// follows the damage. Damage that is not a record's (a segment header, stray bytes after
/// a sealed segment's last record, a last segment with nothing intact after the damage:
/// a torn tail, which recovery cuts) is `NoDamage`: nothing a peer's records can mend.
fn locate<S: Storage>(storage: &S, writable: bool) -> Result<Located<S::Segment>, RepairError> {
    let segments = list_segments(storage)?;
    for (index, entry) in segments.iter().enumerate() {
        let name = entry.name.clone();
        let segment = storage.open(&name, writable).map_err(|error| JournalError::io(storage.path_of(&name), error))?;
        let header = SegmentHeader::decode(segment.bytes()).map_err(|reason| JournalError::Corrupt {
            segment: name.clone(),
            offset: 0,
            sequence: entry.first_sequence,
            reason,
        })?;
        let mut cursor = Cursor::at_segment_start(&header, None);
        let damaged = loop {
            match parse_next(segment.bytes(), &cursor) {
                Ok(Some(record)) => cursor.advance(&record),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        if !damaged {
            continue;
        }
        // The first intact record after the damage, as recovery finds it.
        let bytes = segment.bytes();
        let mut offset = cursor.offset + RECORD_ALIGN_BYTES;
        while offset + RECORD_HEADER_BYTES <= bytes.len() {
            if let Some((header, _)) =
                intact_record_at(bytes, offset).filter(|(header, _)| header.sequence > cursor.next_sequence)
            {
                let after = After::Record { offset, sequence: header.sequence };
                return Ok(Located { name, segment, cursor, after });
            }
            offset += RECORD_ALIGN_BYTES;
        }
        // Nothing intact after it here: a sealed segment's damage ends where its
        // successor begins; in the last segment it is a torn tail.
        let Some(next) = segments.get(index + 1) else { return Err(RepairError::NoDamage) };
        let next_segment =
            storage.open(&next.name, false).map_err(|error| JournalError::io(storage.path_of(&next.name), error))?;
        let Ok(next_header) = SegmentHeader::decode(next_segment.bytes()) else { return Err(RepairError::NoDamage) };
        if next_header.first_sequence != next.first_sequence || next_header.first_sequence <= cursor.next_sequence {
            return Err(RepairError::NoDamage);
        }
        let after =
            After::NextSegment { sequence: next_header.first_sequence, previous_chain: next_header.previous_chain };
        return Ok(Located { name, segment, cursor, after });
    }
    Err(RepairError::NoDamage)
}

/// The damaged range of the journal in `dir`, if it has damaged records followed by
/// intact ones (in the same segment or, for a sealed segment, in the next).
pub fn damaged_range(dir: impl AsRef<Path>) -> Result<Option<DamagedRange>, JournalError> {
    let storage = FileStorage::new(dir.as_ref(), FlushMethod::default())?;
    damaged_range_on(&storage)
}

/// [`damaged_range`] on any storage.
pub fn damaged_range_on<S: Storage>(storage: &S) -> Result<Option<DamagedRange>, JournalError> {
    match locate(storage, false) {
        Ok(located) => Ok(Some(DamagedRange {
            segment: located.name,
            first: located.cursor.next_sequence,
            last: located.after.sequence() - 1,
        })),
        Err(RepairError::NoDamage) => Ok(None),
        Err(RepairError::Journal(error)) => Err(error),
        Err(other) => Err(JournalError::io(storage.path_of(""), std::io::Error::other(other.to_string()))),
    }
}

/// Writes `records` (a peer's copy of exactly the damaged range) in place if they match
/// the hash chain on both sides, and syncs them; otherwise changes nothing.
pub fn repair(dir: impl AsRef<Path>, records: &[PeerRecord]) -> Result<DamagedRange, RepairError> {
    let storage = FileStorage::new(dir.as_ref(), FlushMethod::default())?;
    repair_on(&storage, records)
}

pub fn repair_on<S: Storage>(storage: &S, records: &[PeerRecord]) -> Result<DamagedRange, RepairError> {
    let Located { name, mut segment, cursor, after } = locate(storage, true)?;
    let after_sequence = after.sequence();
    let range = DamagedRange { segment: name.clone(), first: cursor.next_sequence, last: after_sequence - 1 };
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
    let copy_end = cursor.offset + bytes.len();
    let current = segment.bytes();
    let misaligned = || RepairError::Misaligned { sequence: after_sequence };
    match after {
        After::Record { offset, sequence } => {
            if copy_end != offset {
                return Err(misaligned());
            }
            let header_bytes: &[u8; RECORD_HEADER_BYTES] = current
                .get(offset..offset + RECORD_HEADER_BYTES)
                .and_then(|slice| slice.try_into().ok())
                .ok_or_else(misaligned)?;
            let header = RecordHeader::decode(header_bytes).map_err(|_| misaligned())?;
            let payload_start = offset + RECORD_HEADER_BYTES;
            let payload =
                current.get(payload_start..payload_start + header.payload_bytes as usize).ok_or_else(misaligned)?;
            if chain_hash(&chain, header_bytes, payload) != header.chain {
                return Err(RepairError::ChainAfter { sequence });
            }
        }
        After::NextSegment { sequence, previous_chain } => {
            // The copy must fit the sealed segment and leave only zeros after it, as the
            // writer left it when it rolled over.
            let rest = current.get(copy_end..).ok_or_else(misaligned)?;
            if rest.iter().any(|&byte| byte != 0) {
                return Err(misaligned());
            }
            if previous_chain != chain {
                return Err(RepairError::ChainAfter { sequence });
            }
        }
    }
    let write_error = |source| RepairError::Write { segment: name.clone(), source };
    segment.write(cursor.offset, &bytes).map_err(write_error)?;
    segment.sync(cursor.offset..copy_end).map_err(write_error)?;
    Ok(range)
}
