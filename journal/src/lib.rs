//! tally-journal: the segmented memory-mapped journal of every input Tally applies.
//!
//! - [`Journal`]: the single writer (append, group-commit flush, roll-over, retention).
//! - [`JournalReader`]: zero-copy readers that verify CRC and chain, bounded by the
//!   durable mark unless told otherwise.
//! - recovery on [`Journal::open`], with an explicit [`RecoveryMode`].
//! - [`SnapshotStore`]: snapshot bytes on disk, crash-safe, through the [`Directory`]
//!   seam ([`OsDirectory`] for real, [`sim::MemStorage::directory`] in the simulator).
//! - [`verify`] and [`JournalReader`] with [`ReadLimit::Everything`] for operator tools.
//! - [`Storage`]: the backend seam; [`FileStorage`] (mmap) for real, [`sim::MemStorage`]
//!   for crash and fault tests.
//!
//! The on-disk format, commit protocol and recovery rules are in `journal/README.md`.

mod assess;
mod directory;
mod error;
mod file_storage;
mod format;
mod manifest;
#[cfg(feature = "sim-bugs")]
pub mod planted;
mod reader;
mod recovery;
pub mod repair;
mod scan;
mod segment;
pub mod sim;
mod snapshot;
mod spare;
mod storage;
mod survey;
#[cfg(feature = "io-uring")]
mod uring;
mod verify;
mod writer;

pub use assess::SET_ASIDE_SUFFIX;
pub use directory::{Cursor, Directory, DirectoryFile, OsDirectory};
pub use error::{DamageReason, JournalError};
pub use file_storage::{FileSegment, FileStorage};
pub use format::{
    ChainHash, RECORD_HEADER_BYTES, SEGMENT_PREFIX_BYTES, parse_segment_name, record_bytes, segment_name,
};
pub use manifest::{MANIFEST_NAME, ManifestState};
pub use reader::{JournalReader, ReadLimit};
pub use recovery::{RecoveryMode, RecoveryReport, TornTail};
pub use scan::RecordRef;
pub use segment::{FlushFailure, FlushFailureHook, abort_on_flush_failure};
pub use snapshot::{Retention, Snapshot, SnapshotLoad, SnapshotStore};
pub use storage::{FlushMethod, SegmentFile, Storage};
pub use verify::{VerifyReport, verify, verify_after_snapshot, verify_on, verify_on_after_snapshot};
pub use writer::{
    Journal, JournalConfig, PAYLOAD_BYTES_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT, SPARE_AT_FILL_PERCENT_DEFAULT,
};
