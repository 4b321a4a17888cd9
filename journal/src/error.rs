//! The errors at the crate boundary.

use std::path::PathBuf;

/// What exactly is wrong with the bytes at a position in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DamageReason {
    #[error("segment file is shorter than its header")]
    SegmentTooShort,
    #[error("segment header has a bad magic or checksum")]
    BadSegmentHeader,
    #[error("segment header claims first sequence {header} but the file is named for {name}")]
    SegmentNameMismatch { name: u64, header: u64 },
    #[error("unused bytes of the segment prefix are not zero")]
    NonZeroPrefix,
    #[error("bytes after the last record of a sealed segment are not zero")]
    NonZeroAfterLastRecord,
    #[error("both durable-mark slots are damaged")]
    MarkSlotsDamaged,
    #[error("segment is sealed (a successor was created) but its successor is missing")]
    SuccessorMissing,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("record magic is wrong")]
    BadRecordMagic,
    #[error("record length {0} does not fit the segment or the configured maximum")]
    LengthOutOfBounds(u32),
    #[error("record checksum (CRC32C) mismatch")]
    CrcMismatch,
    #[error("record padding is not zero")]
    NonZeroPadding,
    #[error("expected sequence {expected}, found {found}")]
    SequenceMismatch { expected: u64, found: u64 },
    #[error("chain hash does not follow from the previous record")]
    ChainMismatch,
    #[error("epoch went back from {previous} to {found}")]
    EpochRegressed { previous: u32, found: u32 },
    #[error("timestamp went back from {previous} to {found}")]
    TimestampRegressed { previous: u64, found: u64 },
    #[error("segment ends at sequence {last} but the next segment starts at {next}")]
    SequenceGap { last: u64, next: u64 },
    #[error("valid records end at sequence {last}, below the recorded durable mark {durable_mark}")]
    BelowDurableMark { last: u64, durable_mark: u64 },
    #[error("the writer published sequence {published} but the record is not there")]
    PublishedRecordMissing { published: u64 },
    #[error(
        "the journal (from sequence {first}) does not hold sequence {needed}, where replay must start (the \
         sequence after the newest snapshot, or 1 without one)"
    )]
    SnapshotNotCovered { first: u64, needed: u64 },
    #[error(
        "the manifest records segments from {first_segment} to {last_segment} (durable through sequence \
         {durable_sequence}) but this segment file is missing"
    )]
    SegmentMissing { first_segment: u64, last_segment: u64, durable_sequence: u64 },
    #[error(
        "valid records end at sequence {last}, but sequence {recorded} was recorded as durable: the journal \
         lost records (a segment missing or rolled back to an older copy?)"
    )]
    RolledBack { last: u64, recorded: u64 },
    #[error(
        "records from sequence {first} are damaged but intact records up to sequence {last} follow them, \
         written on this boot: this is damage to records that may have been acknowledged, not a torn write"
    )]
    DamagedBeforeIntact { first: u64, last: u64 },
    #[error("both manifest slots are damaged")]
    ManifestDamaged,
}

/// Errors returned by the journal. A failed flush is not among them: it stops the
/// process (see [`crate::FlushFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal corrupt in segment {segment} at offset {offset} (sequence {sequence}): {reason}")]
    Corrupt { segment: String, offset: u64, sequence: u64, reason: DamageReason },
    #[error("invalid journal configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("record payload of {payload_bytes} bytes exceeds the maximum of {max_payload_bytes}")]
    RecordTooLarge { payload_bytes: usize, max_payload_bytes: usize },
    #[error("epoch {epoch} is below the last appended epoch {last}")]
    EpochRegressed { epoch: u32, last: u32 },
    #[error("timestamp {timestamp} is below the last appended timestamp {last}")]
    TimestampRegressed { timestamp: u64, last: u64 },
    #[error("cannot truncate at sequence {requested}: valid records end at {last}")]
    TruncateBeyondEnd { requested: u64, last: u64 },
    #[error("sequence {0} is not in the journal")]
    SequenceNotFound(u64),
    #[error(
        "not enough disk space for journal segment {path}: it needs {needed_bytes} bytes, {available_bytes} are \
         free (free space, or choose a smaller segment size)"
    )]
    NoSpace { path: PathBuf, needed_bytes: u64, available_bytes: u64 },
    #[error("no journal here: {dir} holds no journal segments and no manifest")]
    NoJournal { dir: PathBuf },
    #[error("snapshot {path} is damaged: {reason}")]
    SnapshotDamaged { path: PathBuf, reason: &'static str },
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> JournalError {
        JournalError::Io { path: path.into(), source }
    }
}
