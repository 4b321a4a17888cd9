//! The storage the journal writes through. The journal owns the protocol (what is written
//! where, and in which order it is made durable); a [`Storage`] only supplies the
//! primitives, so a fault-injecting backend ([`crate::sim::MemStorage`]) can stand in for
//! the real memory-mapped files ([`crate::FileStorage`]) in tests.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

/// How [`SegmentFile::sync`] makes written bytes durable on a [`crate::FileStorage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlushMethod {
    /// `msync(MS_SYNC)` over the written range of the mapping.
    Msync,
    /// `fdatasync` on the segment file (the written pages reach it through the mapping).
    #[default]
    Fdatasync,
    /// Record bytes are staged in memory and written with `pwrite` plus a linked
    /// `fdatasync` through io_uring, instead of through the mapping. Needs the cargo
    /// feature `io-uring` and a kernel that allows it; otherwise [`crate::FileStorage`]
    /// falls back to `Fdatasync` and says why on stderr.
    IoUring,
}

/// A directory of segment files. `'static` and `Send` so a clone can prepare the next
/// segment on a background thread.
pub trait Storage: Send + Sync + 'static {
    type Segment: SegmentFile;

    /// Names of all files in the directory (segment files and anything else).
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` with `bytes` bytes pre-allocated and zeroed, and opens it writable.
    /// The new name is not durable until [`Storage::sync_dir`].
    fn create(&self, name: &str, bytes: usize) -> io::Result<Self::Segment>;
    /// Opens an existing file, writable or read-only.
    fn open(&self, name: &str, writable: bool) -> io::Result<Self::Segment>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Makes every written page of `name` durable (`fdatasync`), then drops its pages from
    /// the page cache, so that the next reads of it return what is on the disk. Recovery
    /// calls it on the last segment before scanning, with no handle on the file open: a
    /// sync that failed before a restart on the same boot leaves its pages readable in the
    /// cache but clean, so no later sync writes them, and a scan of the cache would
    /// certify records that never reached the disk. An error is a failed sync.
    fn sync_and_drop_cache(&self, name: &str) -> io::Result<()>;
    /// Where `name` lives, for error messages.
    fn path_of(&self, name: &str) -> PathBuf;
    /// An id of the current boot of the machine (zero: unknown). Equal ids before and
    /// after a crash mean the process died but the machine did not: the page cache kept
    /// every byte written, so no write can have been torn by the disk.
    fn boot_id(&self) -> [u8; 16] {
        [0; 16]
    }
    /// Bytes free for new files, when the backend can tell.
    fn available_bytes(&self) -> Option<u64> {
        None
    }
}

/// One open segment file.
pub trait SegmentFile: Send + 'static {
    /// The file's contents as this handle sees them. For a writable handle that writes
    /// through its mapping this includes its own non-durable writes.
    fn bytes(&self) -> &[u8];
    /// Copies `data` to `offset`. Not durable until [`SegmentFile::sync`].
    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable; `range` is where the writes since the
    /// last sync lie (a backend may sync more). An error here is fatal to the journal.
    fn sync(&mut self, range: Range<usize>) -> io::Result<()>;
    /// Pre-allocates a file found shorter than `bytes` back to that length (recovery).
    fn grow(&mut self, bytes: usize) -> io::Result<()>;
    /// Whether [`SegmentFile::write`] is visible to other handles at once (it is when it
    /// goes through a shared mapping, not when it is staged for a later `pwrite`).
    fn writes_visible_at_once(&self) -> bool;
}
