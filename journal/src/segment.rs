//! Segment-level operations shared by the writer and recovery: the creation protocol, the
//! durable-mark slots, zeroing a tail, and the rule that a failed sync stops the process.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use crate::error::JournalError;
use crate::format::{
    ChainHash, MARK_SLOT_OFFSETS, MarkSlot, SEGMENT_HEADER_BYTES, SEGMENT_PREFIX_BYTES, SegmentHeader, segment_name,
};
use crate::scan::last_nonzero;
use crate::storage::{SegmentFile, Storage};

/// Suffix of a segment being created; such files are deleted at recovery.
pub(crate) const TEMPORARY_SUFFIX: &str = ".tmp";

/// A sync (or a write that a later sync would have covered) that failed. After this the
/// kernel may have dropped the dirty pages and marked them clean, so retrying could
/// "succeed" with nothing on disk (PostgreSQL's fsyncgate): the only safe reaction is to
/// stop and recover from what is durable.
#[derive(Debug)]
pub struct FlushFailure {
    pub path: PathBuf,
    pub error: io::Error,
}

/// What the journal calls on a [`FlushFailure`]. It must not return. Production uses
/// [`abort_on_flush_failure`]; tests install a hook that panics so they can observe it.
pub type FlushFailureHook = fn(&FlushFailure) -> !;

/// Writes the failure to stderr and aborts the process.
pub fn abort_on_flush_failure(failure: &FlushFailure) -> ! {
    eprintln!(
        "tally-journal: FATAL: flushing {} failed: {}; stopping, never retrying a failed sync",
        failure.path.display(),
        failure.error
    );
    std::process::abort()
}

/// Syncs `range` of `segment`, or hands the failure to `hook`.
pub(crate) fn sync_or_stop<F: SegmentFile>(
    segment: &mut F,
    range: Range<usize>,
    path: PathBuf,
    hook: FlushFailureHook,
) {
    if let Err(error) = segment.sync(range.clone()) {
        #[cfg(feature = "sim-bugs")]
        if crate::planted::on(crate::planted::Planted::RetryFailedFlush) && segment.sync(range).is_ok() {
            return;
        }
        hook(&FlushFailure { path, error });
    }
}

/// Writes `data` at `offset`; a failure is treated like a failed flush because the bytes
/// may be half in the page cache.
pub(crate) fn write_or_stop<F: SegmentFile>(
    segment: &mut F,
    offset: usize,
    data: &[u8],
    path: impl FnOnce() -> PathBuf,
    hook: FlushFailureHook,
) {
    if let Err(error) = segment.write(offset, data) {
        hook(&FlushFailure { path: path(), error });
    }
}

/// Writes mark slot `generation` (slot `generation % 2`), not yet synced.
pub(crate) fn write_mark<F: SegmentFile>(segment: &mut F, mark: MarkSlot) -> io::Result<()> {
    let slot = MARK_SLOT_OFFSETS[usize::from(mark.generation % 2 == 1)];
    segment.write(slot, &mark.encode())
}

/// Creates the segment starting at `first_sequence`: pre-allocated under a temporary
/// name, header and first mark written and synced, renamed into place, directory synced.
/// A crash at any point leaves either no segment or a complete one (plus maybe a
/// temporary file that recovery deletes).
pub(crate) fn create_segment<S: Storage>(
    storage: &S,
    header: SegmentHeader,
    durable_sequence: u64,
    hook: FlushFailureHook,
) -> Result<S::Segment, JournalError> {
    let name = segment_name(header.first_sequence);
    let temporary = format!("{name}{TEMPORARY_SUFFIX}");
    let segment_bytes = usize::try_from(header.segment_bytes)
        .map_err(|_| JournalError::InvalidConfig("segment size exceeds the address space"))?;
    check_space(storage, &name, header.segment_bytes)?;
    let mut segment = storage
        .create(&temporary, segment_bytes)
        .map_err(|error| JournalError::io(storage.path_of(&temporary), error))?;
    write_prefix_and_sync(&mut segment, header, durable_sequence, storage.path_of(&temporary), hook);
    rename_into_place(storage, &temporary, &name, hook)?;
    Ok(segment)
}

/// `NoSpace` when the file system reports less than `needed_bytes` free for `name`.
pub(crate) fn check_space<S: Storage>(storage: &S, name: &str, needed_bytes: u64) -> Result<(), JournalError> {
    match storage.available_bytes() {
        Some(available_bytes) if available_bytes < needed_bytes => {
            Err(JournalError::NoSpace { path: storage.path_of(name), needed_bytes, available_bytes })
        }
        _ => Ok(()),
    }
}

/// Writes a new segment's header and both mark slots (= `durable_sequence`) into an
/// allocated, zeroed file and syncs them.
pub(crate) fn write_prefix_and_sync<F: SegmentFile>(
    segment: &mut F,
    header: SegmentHeader,
    durable_sequence: u64,
    path: PathBuf,
    hook: FlushFailureHook,
) {
    write_or_stop(segment, 0, &header.encode(), || path.clone(), hook);
    // Both slots, so that a blank slot is always damage.
    for generation in [0, 1] {
        let mark = MarkSlot { generation, durable_sequence, flags: 0 };
        if let Err(error) = write_mark(segment, mark) {
            hook(&FlushFailure { path: path.clone(), error });
        }
    }
    sync_or_stop(segment, 0..SEGMENT_PREFIX_BYTES, path, hook);
}

/// Renames a complete segment file to its segment name and makes the rename durable.
pub(crate) fn rename_into_place<S: Storage>(
    storage: &S,
    from: &str,
    name: &str,
    hook: FlushFailureHook,
) -> Result<(), JournalError> {
    storage.rename(from, name).map_err(|error| JournalError::io(storage.path_of(name), error))?;
    if let Err(error) = storage.sync_dir() {
        hook(&FlushFailure { path: storage.path_of(name), error });
    }
    Ok(())
}

/// A fresh segment header, continuing from the record before `first_sequence`: its chain
/// hash, epoch and timestamp.
pub(crate) fn new_header(
    first_sequence: u64,
    segment_bytes: usize,
    previous_chain: ChainHash,
    previous_epoch: u32,
    previous_timestamp: u64,
) -> SegmentHeader {
    SegmentHeader {
        first_sequence,
        segment_bytes: segment_bytes as u64,
        previous_chain,
        previous_epoch,
        previous_timestamp,
    }
}

/// Zeroes everything from `from` to the last non-zero byte (not synced). Returns the
/// number of bytes that were zeroed.
pub(crate) fn zero_tail<F: SegmentFile>(segment: &mut F, from: usize) -> io::Result<u64> {
    const CHUNK_BYTES: usize = 1 << 20;
    let Some(last) = last_nonzero(segment.bytes(), from) else {
        return Ok(0);
    };
    let zeros = vec![0u8; CHUNK_BYTES.min(last + 1 - from)];
    let mut offset = from;
    while offset <= last {
        let chunk = CHUNK_BYTES.min(last + 1 - offset);
        segment.write(offset, &zeros[..chunk])?;
        offset += chunk;
    }
    Ok((last + 1 - from) as u64)
}

/// The segment size recorded in a header, as a usize no smaller than the prefix.
pub(crate) fn segment_capacity(header: &SegmentHeader) -> Option<usize> {
    usize::try_from(header.segment_bytes).ok().filter(|&bytes| bytes >= SEGMENT_PREFIX_BYTES.max(SEGMENT_HEADER_BYTES))
}
