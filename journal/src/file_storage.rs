//! The real storage: segment files pre-allocated with `fallocate` and memory-mapped with
//! memmap2. All of the crate's memory-mapping `unsafe` lives here.
//!
//! Why the mappings are sound to hold (the contract memmap2 asks callers to uphold):
//! - A journal directory belongs to one writer (one [`crate::Journal`]) at a time; nothing
//!   outside the journal changes or truncates its files while they are open. The journal
//!   itself never shrinks a segment (recovery "truncates" by zeroing), so no page of a
//!   mapping ever lies past the end of its file, which would raise SIGBUS.
//! - Segments are pre-allocated (never sparse), so writing through a mapping cannot hit
//!   ENOSPC, which mmap would turn into SIGBUS.
//! - Readers in other threads read only bytes of records at or below a sequence the writer
//!   published with a Release store after writing them, and the writer never rewrites a
//!   published record, so no byte a reader borrows changes under it.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};

use crate::directory::{Directory, OsDirectory};
use crate::error::JournalError;
use crate::storage::{FlushMethod, SegmentFile, Storage};

/// Segment files in a directory on a local file system.
#[derive(Clone, Debug)]
pub struct FileStorage {
    /// The directory's own operations (list, rename, remove, sync) are those of the
    /// snapshot store's [`OsDirectory`].
    dir: OsDirectory,
    flush_method: FlushMethod,
    /// Writable segments are written with `pwrite` instead of through their mapping
    /// ([`FileStorage::with_file_writes`]).
    file_writes: bool,
}

impl FileStorage {
    /// Opens (creating if needed) the directory. With [`FlushMethod::IoUring`] the kernel
    /// is probed here; if it refuses, the storage falls back to `fdatasync` and says why
    /// on stderr.
    pub fn new(dir: impl Into<PathBuf>, flush_method: FlushMethod) -> Result<FileStorage, JournalError> {
        let dir = dir.into();
        let dir = OsDirectory::create_all(&dir).map_err(|error| JournalError::io(&dir, error))?;
        let flush_method = effective_flush_method(flush_method);
        Ok(FileStorage { dir, flush_method, file_writes: false })
    }

    /// Writes segments with `pwrite` from now on instead of copying into the mapping;
    /// reads still go through the mapping, which shows the same page cache. For a
    /// stream of large entries into fresh segments: a copy into a mapping takes a page
    /// fault per 4 KiB page (the page is read in, zeroed, then made writable, twice into
    /// the kernel), a `pwrite` takes none; writing 256 MiB cost 0.23-0.58 s of CPU
    /// through a mapping and 0.04-0.05 s with `pwrite` on the development VM
    /// (perf-reports/2026-12-03-standby-cpu.md). Ignored with [`FlushMethod::IoUring`],
    /// which stages its own writes.
    #[must_use]
    pub fn with_file_writes(mut self) -> FileStorage {
        self.file_writes = true;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The flush method in use, after any io_uring fallback.
    pub fn flush_method(&self) -> FlushMethod {
        self.flush_method
    }

    fn segment(&self, file: File, writable: bool) -> io::Result<FileSegment> {
        let bytes = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "segment larger than the address space"))?;
        let map = Mapping::new(&file, bytes, writable)?;
        #[cfg(feature = "io-uring")]
        let staged = match (writable, self.flush_method) {
            (true, FlushMethod::IoUring) => Some(crate::uring::StagedWriter::new()?),
            _ => None,
        };
        Ok(FileSegment {
            file,
            map,
            flush_method: self.flush_method,
            file_writes: self.file_writes,
            #[cfg(feature = "io-uring")]
            staged,
        })
    }
}

#[cfg(feature = "io-uring")]
fn effective_flush_method(requested: FlushMethod) -> FlushMethod {
    if requested != FlushMethod::IoUring {
        return requested;
    }
    match crate::uring::probe() {
        Ok(()) => FlushMethod::IoUring,
        Err(reason) => {
            eprintln!("tally-journal: io_uring unavailable ({reason}); flushing with fdatasync instead");
            FlushMethod::Fdatasync
        }
    }
}

#[cfg(not(feature = "io-uring"))]
fn effective_flush_method(requested: FlushMethod) -> FlushMethod {
    if requested != FlushMethod::IoUring {
        return requested;
    }
    eprintln!("tally-journal: built without the io-uring feature; flushing with fdatasync instead");
    FlushMethod::Fdatasync
}

impl Storage for FileStorage {
    type Segment = FileSegment;

    fn list(&self) -> io::Result<Vec<String>> {
        self.dir.list()
    }

    fn create(&self, name: &str, bytes: usize) -> io::Result<FileSegment> {
        let path = self.dir.path_of(name);
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        // The new length is metadata: make it durable before anything relies on the
        // file being this long (redb once lost a file extension this way).
        let prepared = preallocate(&file, bytes).and_then(|()| file.sync_all());
        if let Err(error) = prepared {
            // Nothing refers to the half-made file yet; leaving it would only confuse.
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        self.segment(file, true)
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<FileSegment> {
        let file = OpenOptions::new().read(true).write(writable).open(self.dir.path_of(name))?;
        self.segment(file, writable)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.dir.rename(from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.dir.remove(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.dir.sync()
    }

    fn sync_and_drop_cache(&self, name: &str) -> io::Result<()> {
        // Read-only is enough for fdatasync and fadvise on Linux, and no mapping: the
        // kernel does not drop pages that a mapping holds.
        let file = File::open(self.dir.path_of(name))?;
        file.sync_data()?;
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open
        // and owned by `file` for the duration of the call. Offset 0 and length 0 mean
        // the whole file. DONTNEED drops the file's clean pages that nothing maps, those
        // a failed writeback left clean included (after the sync above every page is
        // clean), so the next mapping reads them from the disk.
        let result = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if result != 0 {
            // posix_fadvise returns the error number instead of setting errno.
            return Err(io::Error::from_raw_os_error(result));
        }
        Ok(())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.path_of(name)
    }

    fn available_bytes(&self) -> Option<u64> {
        let path = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes()).ok()?;
        let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stats`
        // points at writable memory of the size statvfs fills.
        let result = unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) };
        if result != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it filled the structure.
        let stats = unsafe { stats.assume_init() };
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    fn boot_id(&self) -> [u8; 16] {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map_or([0; 16], |text| parse_boot_id(&text))
    }
}

/// The 32 hex digits of a boot id such as `4f1c…-…`, or zero when it does not parse.
fn parse_boot_id(text: &str) -> [u8; 16] {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    let mut id = [0u8; 16];
    if digits.len() != 32 {
        return id;
    }
    for (byte, pair) in id.iter_mut().zip(digits.chunks(2)) {
        let text = std::str::from_utf8(pair).unwrap_or("00");
        *byte = u8::from_str_radix(text, 16).unwrap_or(0);
    }
    id
}

/// An open, mapped segment file.
pub struct FileSegment {
    file: File,
    map: Mapping,
    flush_method: FlushMethod,
    /// See [`FileStorage::with_file_writes`].
    file_writes: bool,
    #[cfg(feature = "io-uring")]
    staged: Option<crate::uring::StagedWriter>,
}

enum Mapping {
    /// A zero-length file cannot be mapped.
    Empty,
    ReadOnly(Mmap),
    Writable(MmapMut),
}

impl Mapping {
    fn new(file: &File, bytes: usize, writable: bool) -> io::Result<Mapping> {
        if bytes == 0 {
            return Ok(Mapping::Empty);
        }
        let options = {
            let mut options = MmapOptions::new();
            options.len(bytes);
            options
        };
        if writable {
            // SAFETY: see the module comment: single writer, files never shrink while
            // mapped, `bytes` is the file's current length so no page lies past EOF.
            unsafe { options.map_mut(file) }.map(Mapping::Writable)
        } else {
            // SAFETY: as above; a read-only view only reads bytes published to it.
            unsafe { options.map(file) }.map(Mapping::ReadOnly)
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Mapping::Empty => &[],
            Mapping::ReadOnly(map) => map,
            Mapping::Writable(map) => map,
        }
    }
}

impl SegmentFile for FileSegment {
    fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        #[cfg(feature = "io-uring")]
        if let Some(staged) = &mut self.staged {
            return staged.write(&self.file, offset, data);
        }
        let Mapping::Writable(map) = &mut self.map else {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "segment is not mapped writable"));
        };
        if self.file_writes {
            // The same bound as a write through the mapping: never past the file's end,
            // so the file never grows under a mapping that does not cover it.
            let end = offset.checked_add(data.len()).filter(|end| *end <= map.len());
            if end.is_none() {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "write past the end of the segment"));
            }
            return self.file.write_all_at(data, offset as u64);
        }
        let target = offset
            .checked_add(data.len())
            .and_then(|end| map.get_mut(offset..end))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write past the end of the segment"))?;
        target.copy_from_slice(data);
        Ok(())
    }

    fn sync(&mut self, range: Range<usize>) -> io::Result<()> {
        match (self.flush_method, &self.map) {
            (FlushMethod::Msync, Mapping::Writable(map)) if !range.is_empty() => {
                map.flush_range(range.start, range.len())
            }
            (FlushMethod::Msync, _) => Ok(()),
            (FlushMethod::Fdatasync, _) => self.file.sync_data(),
            #[cfg(feature = "io-uring")]
            (FlushMethod::IoUring, _) => match &mut self.staged {
                Some(staged) => staged.sync(&self.file),
                None => self.file.sync_data(),
            },
            // Never chosen: FileStorage::new falls back to Fdatasync without the feature.
            #[cfg(not(feature = "io-uring"))]
            (FlushMethod::IoUring, _) => self.file.sync_data(),
        }
    }

    fn grow(&mut self, bytes: usize) -> io::Result<()> {
        if self.map.bytes().len() >= bytes {
            return Ok(());
        }
        preallocate(&self.file, bytes)?;
        self.file.sync_all()?;
        let writable = matches!(self.map, Mapping::Writable(_));
        self.map = Mapping::new(&self.file, bytes, writable)?;
        Ok(())
    }

    fn writes_visible_at_once(&self) -> bool {
        #[cfg(feature = "io-uring")]
        if self.staged.is_some() {
            return false;
        }
        true
    }
}

/// Allocates real blocks for `bytes` bytes (zeros). A sparse file would let a write
/// through the mapping fail with SIGBUS when the disk is full.
fn preallocate(file: &File, bytes: usize) -> io::Result<()> {
    let length = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size exceeds off_t"))?;
    // SAFETY: fallocate only reads its integer arguments; the descriptor is open and owned
    // by `file` for the duration of the call. Mode 0 keeps existing data.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return write_zeros(file, bytes);
    }
    Err(error)
}

/// The fallback for file systems without `fallocate`: really write the zeros.
fn write_zeros(file: &File, bytes: usize) -> io::Result<()> {
    const CHUNK_BYTES: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES];
    let mut offset = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    while offset < bytes {
        let chunk = CHUNK_BYTES.min(bytes - offset);
        file.write_all_at(&zeros[..chunk], offset as u64)?;
        offset += chunk;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{FileStorage, FlushMethod};
    use crate::storage::{SegmentFile, Storage};

    /// Minor page faults this thread has taken so far.
    fn minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `usage` points at writable memory of the size getrusage fills.
        let result = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(result, 0, "getrusage");
        // SAFETY: getrusage returned 0, so it filled the structure.
        unsafe { usage.assume_init() }.ru_minflt
    }

    const SEGMENT_BYTES: usize = 8 << 20;

    /// Writes a fresh segment in 64 KiB pieces; returns the page faults taken meanwhile.
    fn faults_writing(storage: &FileStorage) -> i64 {
        let mut segment = storage.create("segment", SEGMENT_BYTES).expect("create");
        let piece: Vec<u8> = (0..64 << 10).map(|index| (index % 251) as u8 + 1).collect();
        let before = minor_faults();
        for offset in (0..SEGMENT_BYTES).step_by(piece.len()) {
            segment.write(offset, &piece).expect("write");
        }
        let faults = minor_faults() - before;
        assert!(segment.bytes().chunks(piece.len()).all(|chunk| chunk == piece), "the mapping shows every write");
        assert!(segment.write(SEGMENT_BYTES - 1, &[1, 2]).is_err(), "no write past the end");
        segment.sync(0..SEGMENT_BYTES).expect("sync");
        faults
    }

    #[test]
    fn file_writes_take_no_page_fault_per_page_and_show_through_the_mapping() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mapped = FileStorage::new(dir.path().join("mapped"), FlushMethod::Fdatasync).expect("storage");
        let written = FileStorage::new(dir.path().join("written"), FlushMethod::Fdatasync).expect("storage");
        let pages = (SEGMENT_BYTES / 4096) as i64;
        let through_mapping = faults_writing(&mapped);
        let with_pwrite = faults_writing(&written.with_file_writes());
        assert!(through_mapping >= pages / 2, "the test's premise: a mapping faults pages in ({through_mapping})");
        assert!(with_pwrite < pages / 16, "pwrite took {with_pwrite} faults for {pages} pages");
        let reopened = FileStorage::new(dir.path().join("written"), FlushMethod::Fdatasync).expect("storage");
        let segment = reopened.open("segment", false).expect("open");
        assert_eq!(segment.bytes()[..3], [1, 2, 3], "the bytes are in the file");
    }

    /// Pages of the file at `path` in the page cache, seen through a fresh mapping that
    /// touches none of them.
    fn cached_pages(path: &std::path::Path) -> usize {
        let file = std::fs::File::open(path).expect("open");
        // SAFETY: nothing changes the file while the test maps it; the bytes are not read.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
        // SAFETY: sysconf only reads its argument.
        let page_bytes = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size");
        let mut residency = vec![0u8; map.len().div_ceil(page_bytes)];
        // SAFETY: the range is the whole mapping, and `residency` has one byte per page.
        let result = unsafe { libc::mincore(map.as_ptr() as *mut libc::c_void, map.len(), residency.as_mut_ptr()) };
        assert_eq!(result, 0, "mincore");
        residency.iter().filter(|&&page| page & 1 != 0).count()
    }

    /// Whether `path` lies on a file system whose page cache is its storage (tmpfs,
    /// ramfs), where there is no disk to drop the pages for.
    fn memory_backed(path: &std::path::Path) -> bool {
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        let mut stats = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: `path` is NUL-terminated and outlives the call; `stats` is writable.
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), stats.as_mut_ptr()) }, 0, "statfs");
        // SAFETY: statfs returned 0, so it filled the structure.
        let kind = unsafe { stats.assume_init() }.f_type;
        // RAMFS_MAGIC (libc lacks it).
        [libc::TMPFS_MAGIC, 0x8584_58f6].contains(&kind)
    }

    /// Recovery's first step on the last segment: the pages a killed writer left dirty
    /// reach the file, and the cache no longer holds them, so the scan reads the disk.
    #[test]
    fn sync_and_drop_cache_writes_a_killed_writers_pages_and_drops_them_from_the_cache() {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = FileStorage::new(dir.path(), FlushMethod::Fdatasync).expect("storage");
        let written: Vec<u8> = (0..256 << 10).map(|index| (index % 251) as u8 + 1).collect();
        let mut segment = storage.create("segment", 1 << 20).expect("create");
        segment.write(0, &written).expect("write");
        drop(segment);
        let path = storage.path_of("segment");
        let before = cached_pages(&path);
        assert!(before > 0, "the test's premise: the written pages are in the cache");
        storage.sync_and_drop_cache("segment").expect("sync and drop");
        let after = cached_pages(&path);
        if !memory_backed(dir.path()) {
            assert_eq!(after, 0, "{before} pages cached before, {after} after");
        }
        let segment = storage.open("segment", false).expect("open");
        assert_eq!(segment.bytes()[..written.len()], written[..], "the unsynced writes reached the file");
    }
}
