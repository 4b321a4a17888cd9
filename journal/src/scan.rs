//! Parsing and verifying records one at a time over a segment's bytes. Recovery, readers
//! and `verify` share this code, so every path checks the same things: magic, version,
//! bounds, CRC32C, zero padding, gapless sequence, chain hash, epoch and timestamp order.

use std::ops::Range;

use crate::error::DamageReason;
use crate::format::{
    ChainHash, RECORD_HEADER_BYTES, RecordHeader, SEGMENT_PREFIX_BYTES, SegmentHeader, chain_hash, record_bytes,
    record_crc,
};

/// One record as returned by a reader: header fields and its payload, borrowed from the
/// segment's mapping (no copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub sequence: u64,
    pub epoch: u32,
    pub timestamp: u64,
    /// A `tally_codecs::Operation` value; opaque to the journal.
    pub operation: u8,
    pub chain: ChainHash,
    pub payload: &'a [u8],
}

/// Where the next record should be and what it must follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub offset: usize,
    pub next_sequence: u64,
    pub chain: ChainHash,
    pub epoch: u32,
    pub timestamp: u64,
}

impl Cursor {
    /// The cursor at the first record of a segment. Epoch and timestamp order is checked
    /// from there on; `previous` carries them across a segment boundary when known.
    pub fn at_segment_start(header: &SegmentHeader, previous: Option<&Cursor>) -> Cursor {
        Cursor {
            offset: SEGMENT_PREFIX_BYTES,
            next_sequence: header.first_sequence,
            chain: header.previous_chain,
            epoch: previous.map_or(header.previous_epoch, |cursor| cursor.epoch),
            timestamp: previous.map_or(header.previous_timestamp, |cursor| cursor.timestamp),
        }
    }

    pub fn last_sequence(&self) -> u64 {
        self.next_sequence.saturating_sub(1)
    }

    pub fn advance(&mut self, record: &ParsedRecord) {
        self.offset = record.end;
        self.next_sequence = record.header.sequence.saturating_add(1);
        self.chain = record.header.chain;
        self.epoch = record.header.epoch;
        self.timestamp = record.header.timestamp;
    }
}

/// A verified record, as positions in the segment (so no borrow is held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedRecord {
    pub header: RecordHeader,
    pub payload: Range<usize>,
    /// Offset just past the record's padding.
    pub end: usize,
}

impl ParsedRecord {
    pub fn as_ref<'a>(&self, bytes: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            sequence: self.header.sequence,
            epoch: self.header.epoch,
            timestamp: self.header.timestamp,
            operation: self.header.operation,
            chain: self.header.chain,
            payload: &bytes[self.payload.clone()],
        }
    }
}

/// Parses and verifies the record at `cursor`. `Ok(None)` is a clean end of the segment's
/// records: an all-zero header (pre-allocated space) or no room left for a header.
pub(crate) fn parse_next(bytes: &[u8], cursor: &Cursor) -> Result<Option<ParsedRecord>, DamageReason> {
    let Some(header_bytes) =
        cursor.offset.checked_add(RECORD_HEADER_BYTES).and_then(|end| bytes.get(cursor.offset..end))
    else {
        return Ok(None);
    };
    if header_bytes.iter().all(|&byte| byte == 0) {
        return Ok(None);
    }
    let header_array: &[u8; RECORD_HEADER_BYTES] =
        header_bytes.try_into().map_err(|_| DamageReason::SegmentTooShort)?;
    let header = RecordHeader::decode(header_array)?;
    let payload_bytes =
        usize::try_from(header.payload_bytes).map_err(|_| DamageReason::LengthOutOfBounds(header.payload_bytes))?;
    let payload_start = cursor.offset + RECORD_HEADER_BYTES;
    let payload_end = payload_start.checked_add(payload_bytes);
    let end = record_bytes(payload_bytes).and_then(|total| cursor.offset.checked_add(total));
    let (Some(payload_end), Some(end)) = (payload_end, end) else {
        return Err(DamageReason::LengthOutOfBounds(header.payload_bytes));
    };
    let Some(record) = bytes.get(cursor.offset..end) else {
        return Err(DamageReason::LengthOutOfBounds(header.payload_bytes));
    };
    let payload = &bytes[payload_start..payload_end];
    if record_crc(header_array, payload) != header.crc {
        return Err(DamageReason::CrcMismatch);
    }
    // The CRC does not cover the padding, so a flipped padding byte is caught here.
    if record[RECORD_HEADER_BYTES + payload_bytes..].iter().any(|&byte| byte != 0) {
        return Err(DamageReason::NonZeroPadding);
    }
    check_order(&header, cursor)?;
    if chain_hash(&cursor.chain, header_array, payload) != header.chain {
        return Err(DamageReason::ChainMismatch);
    }
    Ok(Some(ParsedRecord { header, payload: payload_start..payload_end, end }))
}

fn check_order(header: &RecordHeader, cursor: &Cursor) -> Result<(), DamageReason> {
    if header.sequence != cursor.next_sequence {
        return Err(DamageReason::SequenceMismatch { expected: cursor.next_sequence, found: header.sequence });
    }
    if header.epoch < cursor.epoch {
        return Err(DamageReason::EpochRegressed { previous: cursor.epoch, found: header.epoch });
    }
    if header.timestamp < cursor.timestamp {
        return Err(DamageReason::TimestampRegressed { previous: cursor.timestamp, found: header.timestamp });
    }
    Ok(())
}

/// Index of the last non-zero byte at or after `from`, if any. Checks whole pages first
/// because the tail of a segment is mostly zeros.
pub(crate) fn last_nonzero(bytes: &[u8], from: usize) -> Option<usize> {
    const PAGE_BYTES: usize = 4096;
    let tail = bytes.get(from..)?;
    let page = tail.chunks(PAGE_BYTES).rposition(|chunk| !all_zero(chunk))?;
    let page_start = page * PAGE_BYTES;
    let page_end = (page_start + PAGE_BYTES).min(tail.len());
    let within = tail[page_start..page_end].iter().rposition(|&byte| byte != 0)?;
    Some(from + page_start + within)
}

/// Whether every byte is zero. The bytes are ORed together without stopping early, which
/// the compiler turns into wide vector instructions; a byte-wise `any` stops to test each
/// byte. A segment's tail is hundreds of MiB of zeros that every start (and every
/// promotion) scans, so this is the difference between tens and hundreds of milliseconds.
fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, &byte| acc | byte) == 0
}

#[cfg(test)]
mod tests {
    use super::last_nonzero;

    #[test]
    fn last_nonzero_finds_the_last_set_byte_in_any_page() {
        let mut bytes = vec![0u8; 5 * 4096 + 100];
        assert_eq!(last_nonzero(&bytes, 0), None, "all zeros");
        bytes[7] = 1;
        assert_eq!(last_nonzero(&bytes, 0), Some(7));
        assert_eq!(last_nonzero(&bytes, 8), None, "only what is at or after `from` counts");
        bytes[3 * 4096 + 17] = 0x80;
        assert_eq!(last_nonzero(&bytes, 8), Some(3 * 4096 + 17));
        let last = bytes.len() - 1;
        bytes[last] = 2;
        assert_eq!(last_nonzero(&bytes, 8), Some(last), "the short last page is checked too");
        assert_eq!(last_nonzero(&bytes, bytes.len() + 1), None, "past the end");
    }
}
