//! The ledger snapshot image, serialised with rkyv.
//!
//! The records are stored as their little-endian bytes (they are `Pod`, so the bytes are
//! the encoding); rkyv frames them together with the small derived tables and validates
//! the whole image on load. The image carries a format version: a snapshot written by a
//! different layout is refused rather than misread, and the node then replays the journal.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// Bump when any field or record layout of the image changes.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 4;

/// The alignment an image is decoded at.
const IMAGE_ALIGN: usize = 16;

/// A pending transfer the hot state holds: its commit number, status, deadline, and the
/// sequence that resolved it (0 while it is open). Its transfer record is at the same
/// position in [`LedgerImage::pending_transfers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PendingEntry {
    pub number: u64,
    pub status: u8,
    pub expires_at: u64,
    pub resolved_at: u64,
}

/// An id whose first attempt failed for a transient reason, the code it got, and the
/// sequence of the input that failed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FailedId {
    pub id: u128,
    pub code: u32,
    pub sequence: u64,
}

/// One hot balance-history row of a `history` account (by account index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct HistoryEntry {
    pub account: u32,
    pub sequence: u64,
    pub debit: bool,
    pub timestamp: u64,
    pub balances: [u128; 4],
}

/// A debit kept for rolling windows (by account index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WindowDebit {
    pub account: u32,
    pub timestamp: u64,
    pub amount: u128,
}

/// The hot state of a ledger (docs/design.md §3.9, §5); indexes are rebuilt on load. What
/// has left the hot window is in the history store, and only its share of the state hash
/// (`evicted_hash`) is here.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LedgerImage {
    pub format_version: u32,
    pub last_timestamp: u64,
    /// The sequence of the last input applied.
    pub sequence: u64,
    /// `Account` records, in creation order, as bytes.
    pub accounts: Vec<u8>,
    /// The hot `Transfer` records, in commit order, as bytes; the first has number
    /// `transfers_base`, and `transfer_sequences` holds each one's committing sequence.
    pub transfers: Vec<u8>,
    pub transfer_sequences: Vec<u64>,
    pub transfers_base: u64,
    /// `LimitProfile` records, sorted by id, as bytes.
    pub profiles: Vec<u8>,
    /// Open pending transfers by number, then resolved ones by resolving sequence.
    pub pending: Vec<PendingEntry>,
    /// The `Transfer` record of each entry of `pending`, as bytes.
    pub pending_transfers: Vec<u8>,
    pub failed_accounts: Vec<FailedId>,
    /// Hot failed transfer ids, in the order they failed.
    pub failed_transfers: Vec<FailedId>,
    /// Hot balance-history rows in commit order; the first has number `history_base`.
    pub history: Vec<HistoryEntry>,
    pub history_base: u64,
    pub window_debits: Vec<WindowDebit>,
    pub window_seconds_max: u32,
    /// The state-hash terms of everything that has left the hot state.
    pub evicted_hash: u128,
    /// The largest transfer id ever committed or failed, evicted ones included (added in
    /// format version 4).
    pub largest_id: u128,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot image is malformed: {0}")]
    Malformed(String),
    #[error("snapshot format version {found} is not the supported {expected}")]
    Version { found: u32, expected: u32 },
    #[error("snapshot {table} table is {bytes} bytes, not a whole number of {record_bytes}-byte records")]
    Misaligned { table: &'static str, bytes: usize, record_bytes: usize },
}

impl LedgerImage {
    pub fn to_bytes(&self) -> Result<AlignedVec, SnapshotError> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|error| SnapshotError::Malformed(error.to_string()))
    }

    /// Serialises the image into `writer` as it goes, without the whole image in memory
    /// at once: the bytes are exactly those of [`LedgerImage::to_bytes`] (rkyv aligns
    /// relative to the start of the stream, which a reader copies to an aligned buffer).
    pub fn write_to(&self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        rkyv::api::high::to_bytes_in::<_, rancor::Error>(self, rkyv::ser::writer::IoWriter::new(writer))
            .map(drop)
            .map_err(std::io::Error::other)
    }

    /// Validates and decodes an image; the bytes may come from a damaged file.
    pub fn from_bytes(bytes: &[u8]) -> Result<LedgerImage, SnapshotError> {
        // rkyv needs its input aligned. A large buffer from the allocator is (16 bytes on
        // every 64-bit target we build for), and then it is read where it is; otherwise
        // it is copied into an aligned buffer (one memcpy, as large as the image).
        let decoded = if (bytes.as_ptr() as usize).is_multiple_of(IMAGE_ALIGN) {
            rkyv::from_bytes::<LedgerImage, rancor::Error>(bytes)
        } else {
            let mut aligned = AlignedVec::<IMAGE_ALIGN>::with_capacity(bytes.len());
            aligned.extend_from_slice(bytes);
            rkyv::from_bytes::<LedgerImage, rancor::Error>(&aligned)
        };
        let image = decoded.map_err(|error| SnapshotError::Malformed(error.to_string()))?;
        if image.format_version != SNAPSHOT_FORMAT_VERSION {
            return Err(SnapshotError::Version { found: image.format_version, expected: SNAPSHOT_FORMAT_VERSION });
        }
        Ok(image)
    }
}

/// Decodes a table of `Pod` records from its bytes, refusing a partial record.
pub fn records<T: bytemuck::Pod>(table: &'static str, bytes: &[u8]) -> Result<Vec<T>, SnapshotError> {
    let record_bytes = size_of::<T>();
    if !bytes.len().is_multiple_of(record_bytes) {
        return Err(SnapshotError::Misaligned { table, bytes: bytes.len(), record_bytes });
    }
    Ok(bytemuck::pod_collect_to_vec(bytes))
}

/// The records of a table one by one, read from its bytes where they lie (no copy of the
/// table), refusing a partial record.
pub fn record_iter<'a, T: bytemuck::Pod>(
    table: &'static str,
    bytes: &'a [u8],
) -> Result<impl ExactSizeIterator<Item = T> + 'a, SnapshotError> {
    let record_bytes = size_of::<T>();
    if !bytes.len().is_multiple_of(record_bytes) {
        return Err(SnapshotError::Misaligned { table, bytes: bytes.len(), record_bytes });
    }
    Ok(bytes.chunks_exact(record_bytes).map(bytemuck::pod_read_unaligned))
}

/// The bytes of a table of `Pod` records, collected from `records` (of which there are
/// `count`) into one buffer of exactly that size, without a second copy.
pub fn record_bytes<'a, T: bytemuck::Pod>(count: usize, records: impl Iterator<Item = &'a T>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(count * size_of::<T>());
    for record in records {
        bytes.extend_from_slice(bytemuck::bytes_of(record));
    }
    bytes
}
