//! The on-disk layout: segment prefix (segment header + two durable-mark slots) and
//! record header. Everything is little-endian and encoded field by field, so the layout
//! never depends on struct padding. See `journal/README.md` for the picture.

use crate::error::DamageReason;

/// Bytes reserved at the start of every segment before the first record: one page, so
/// records start page-aligned and the prefix never shares a page with record bytes.
pub const SEGMENT_PREFIX_BYTES: usize = 4096;
/// Where the segment header lives inside the prefix, and its size.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// The two durable-mark slots sit in different 512-byte sectors, so a torn write of one
/// (sector writes are not atomic) never damages the other.
pub const MARK_SLOT_OFFSETS: [usize; 2] = [512, 1024];
pub const MARK_SLOT_BYTES: usize = 32;

/// Fixed record header; the payload follows, then zero padding to [`RECORD_ALIGN_BYTES`].
pub const RECORD_HEADER_BYTES: usize = 48;
pub const RECORD_ALIGN_BYTES: usize = 8;

pub const SEGMENT_MAGIC: [u8; 8] = *b"TALLYJNL";
pub const RECORD_MAGIC: u16 = u16::from_le_bytes(*b"TJ");
pub const MARK_MAGIC: u32 = u32::from_le_bytes(*b"MARK");
pub const FORMAT_VERSION: u8 = 1;

/// Mark-slot flag: a successor segment was created, so this segment must not be the last.
pub const MARK_FLAG_SEALED: u32 = 1;

/// A 128-bit BLAKE3 chain hash.
pub type ChainHash = [u8; 16];

/// Total bytes a record with `payload_bytes` occupies, header and padding included.
/// `None` only when the size does not fit a `usize` (a corrupt length on 32-bit hosts).
pub fn record_bytes(payload_bytes: usize) -> Option<usize> {
    let unpadded = RECORD_HEADER_BYTES.checked_add(payload_bytes)?;
    unpadded.checked_next_multiple_of(RECORD_ALIGN_BYTES)
}

/// Whether every prefix byte outside the header and the mark slots is zero (they are
/// never written, so anything else there is damage).
pub fn prefix_padding_is_zero(prefix: &[u8]) -> bool {
    let Some(prefix) = prefix.get(..SEGMENT_PREFIX_BYTES) else {
        return false;
    };
    let mut used = [false; SEGMENT_PREFIX_BYTES];
    used[..SEGMENT_HEADER_BYTES].fill(true);
    for offset in MARK_SLOT_OFFSETS {
        used[offset..offset + MARK_SLOT_BYTES].fill(true);
    }
    prefix.iter().zip(used).all(|(&byte, used)| used || byte == 0)
}

/// The header of a segment, written once when the segment is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_sequence: u64,
    pub segment_bytes: u64,
    /// Chain hash of record `first_sequence - 1` (the journal's genesis value for the
    /// first segment), so every segment can be verified without its predecessors.
    pub previous_chain: ChainHash,
    /// Epoch and timestamp of record `first_sequence - 1` (0 where unknown: the first
    /// segment, or one written before these fields existed), so that a journal whose
    /// earlier segments are gone (trimmed, or set aside as damaged under a snapshot)
    /// still knows the epoch of its last record while its active segment is empty.
    pub previous_epoch: u32,
    pub previous_timestamp: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8] = FORMAT_VERSION;
        out[16..24].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[24..32].copy_from_slice(&self.segment_bytes.to_le_bytes());
        out[32..48].copy_from_slice(&self.previous_chain);
        out[48..52].copy_from_slice(&self.previous_epoch.to_le_bytes());
        out[56..64].copy_from_slice(&self.previous_timestamp.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, DamageReason> {
        let header: &[u8; SEGMENT_HEADER_BYTES] = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .and_then(|slice| slice.try_into().ok())
            .ok_or(DamageReason::SegmentTooShort)?;
        if header[0..8] != SEGMENT_MAGIC {
            return Err(DamageReason::BadSegmentHeader);
        }
        let mut zeroed = *header;
        zeroed[12..16].fill(0);
        if crc32c::crc32c(&zeroed) != read_u32(header, 12) {
            return Err(DamageReason::BadSegmentHeader);
        }
        if header[8] != FORMAT_VERSION {
            return Err(DamageReason::UnsupportedVersion(header[8]));
        }
        let mut previous_chain = [0u8; 16];
        previous_chain.copy_from_slice(&header[32..48]);
        Ok(SegmentHeader {
            first_sequence: read_u64(header, 16),
            segment_bytes: read_u64(header, 24),
            previous_chain,
            previous_epoch: read_u32(header, 48),
            previous_timestamp: read_u64(header, 56),
        })
    }
}

/// One durable-mark slot. The writer alternates between the two slots; the valid slot
/// with the higher generation wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkSlot {
    pub generation: u64,
    pub durable_sequence: u64,
    pub flags: u32,
}

impl MarkSlot {
    pub fn encode(&self) -> [u8; MARK_SLOT_BYTES] {
        let mut out = [0u8; MARK_SLOT_BYTES];
        out[0..4].copy_from_slice(&MARK_MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.durable_sequence.to_le_bytes());
        out[24..28].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<MarkSlot> {
        let slot: &[u8; MARK_SLOT_BYTES] = bytes.get(..MARK_SLOT_BYTES)?.try_into().ok()?;
        let mut zeroed = *slot;
        zeroed[4..8].fill(0);
        let valid = read_u32(slot, 0) == MARK_MAGIC && crc32c::crc32c(&zeroed) == read_u32(slot, 4);
        valid.then(|| MarkSlot {
            generation: read_u64(slot, 8),
            durable_sequence: read_u64(slot, 16),
            flags: read_u32(slot, 24),
        })
    }

    /// How many of the prefix's slots do not verify. Both slots are written when a
    /// segment is created, so a blank slot is damage too.
    pub fn damaged_slots(prefix: &[u8]) -> usize {
        MARK_SLOT_OFFSETS.iter().filter(|&&offset| prefix.get(offset..).and_then(MarkSlot::decode).is_none()).count()
    }

    /// The newest valid slot of a segment prefix, or `None` when both are damaged.
    pub fn newest(prefix: &[u8]) -> Option<MarkSlot> {
        MARK_SLOT_OFFSETS
            .iter()
            .filter_map(|&offset| prefix.get(offset..).and_then(MarkSlot::decode))
            .max_by_key(|slot| slot.generation)
    }
}

/// The fixed header of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub operation: u8,
    pub epoch: u32,
    pub payload_bytes: u32,
    pub crc: u32,
    pub sequence: u64,
    pub timestamp: u64,
    pub chain: ChainHash,
}

// Field offsets inside the record header.
const CRC_RANGE: std::ops::Range<usize> = 12..16;
const CHAIN_RANGE: std::ops::Range<usize> = 32..48;

impl RecordHeader {
    /// Builds the header for `payload`, computing its chain hash from `previous_chain`
    /// and its CRC32C over the header (CRC field zeroed) and the payload.
    pub fn seal(
        sequence: u64,
        epoch: u32,
        timestamp: u64,
        operation: u8,
        payload: &[u8],
        previous_chain: &ChainHash,
    ) -> [u8; RECORD_HEADER_BYTES] {
        let payload_bytes = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        out[2] = FORMAT_VERSION;
        out[3] = operation;
        out[4..8].copy_from_slice(&epoch.to_le_bytes());
        out[8..12].copy_from_slice(&payload_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&sequence.to_le_bytes());
        out[24..32].copy_from_slice(&timestamp.to_le_bytes());
        let chain = chain_hash(previous_chain, &out, payload);
        out[CHAIN_RANGE].copy_from_slice(&chain);
        let crc = record_crc(&out, payload);
        out[CRC_RANGE].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the fixed fields without checking anything but the magic and version.
    pub fn decode(header: &[u8; RECORD_HEADER_BYTES]) -> Result<RecordHeader, DamageReason> {
        if read_u16(header, 0) != RECORD_MAGIC {
            return Err(DamageReason::BadRecordMagic);
        }
        if header[2] != FORMAT_VERSION {
            return Err(DamageReason::UnsupportedVersion(header[2]));
        }
        let mut chain = [0u8; 16];
        chain.copy_from_slice(&header[CHAIN_RANGE]);
        Ok(RecordHeader {
            operation: header[3],
            epoch: read_u32(header, 4),
            payload_bytes: read_u32(header, 8),
            crc: read_u32(header, 12),
            sequence: read_u64(header, 16),
            timestamp: read_u64(header, 24),
            chain,
        })
    }
}

/// CRC32C over the header with its CRC field zeroed, then the payload.
pub fn record_crc(header: &[u8; RECORD_HEADER_BYTES], payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&header[..CRC_RANGE.start]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    let crc = crc32c::crc32c_append(crc, &header[CRC_RANGE.end..]);
    crc32c::crc32c_append(crc, payload)
}

/// BLAKE3(previous chain || header without its CRC and chain fields || payload), first
/// 16 bytes. The CRC is left out because it is computed after (and over) the chain.
pub fn chain_hash(previous: &ChainHash, header: &[u8; RECORD_HEADER_BYTES], payload: &[u8]) -> ChainHash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(&header[..CRC_RANGE.start]);
    hasher.update(&header[CRC_RANGE.end..CHAIN_RANGE.start]);
    hasher.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

pub fn read_u16(bytes: &[u8], at: usize) -> u16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(raw)
}

pub fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

pub fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// File name of the segment whose first record is `first_sequence`.
pub fn segment_name(first_sequence: u64) -> String {
    format!("{first_sequence:020}.seg")
}

/// The first sequence a segment file name claims, or `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_crc_covers_the_chain() {
        let previous = [7u8; 16];
        let header = RecordHeader::seal(42, 3, 1_000, 2, b"payload", &previous);
        let decoded = RecordHeader::decode(&header).expect("fresh header decodes");
        assert_eq!((decoded.sequence, decoded.epoch, decoded.timestamp), (42, 3, 1_000));
        assert_eq!(decoded.payload_bytes, 7);
        assert_eq!(decoded.crc, record_crc(&header, b"payload"));
        assert_eq!(decoded.chain, chain_hash(&previous, &header, b"payload"));
    }

    #[test]
    fn segment_names_are_twenty_digits_and_strictly_parsed() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_segment_name("1.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000001.seg.tmp"), None);
    }

    #[test]
    fn newest_mark_slot_wins_and_a_damaged_slot_is_ignored() {
        let mut prefix = vec![0u8; SEGMENT_PREFIX_BYTES];
        let older = MarkSlot { generation: 1, durable_sequence: 10, flags: 0 };
        let newer = MarkSlot { generation: 2, durable_sequence: 20, flags: 0 };
        prefix[512..544].copy_from_slice(&older.encode());
        prefix[1024..1056].copy_from_slice(&newer.encode());
        assert_eq!(MarkSlot::newest(&prefix), Some(newer));
        prefix[1030] ^= 1;
        assert_eq!(MarkSlot::newest(&prefix), Some(older));
    }
}
