//! An in-memory storage with a simulated page cache, for crash and fault tests (here and
//! in the replication simulation). Each file has a *cache* image, which every write
//! changes, and a *durable* image, which only a successful sync updates. A crash throws
//! the cache away, optionally after writing back a random subset of dirty 512-byte
//! sectors first, as the kernel's out-of-order writeback can. Directory entries are kept
//! the same way: a creation, rename or removal changes the directory at once and becomes
//! durable only with a sync of the directory ([`Storage::sync_dir`], [`Directory::sync`]),
//! as POSIX promises (a file's own fsync does not make its name durable), so a crash
//! brings back the names of the last directory sync. A handle opened before a crash belongs
//! to a process that died with the power: its writes and syncs reach nothing (so a
//! destructor that flushes, run after the crash, cannot make anything durable).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::directory::{Directory, DirectoryFile};
use crate::storage::{SegmentFile, Storage};

const SECTOR_BYTES: usize = 512;

#[derive(Clone, Default)]
struct MemFile {
    cache: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors of `cache` written since the last sync, so that a sync copies only them.
    dirty: BTreeSet<usize>,
}

impl MemFile {
    fn write(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        self.cache.resize(self.cache.len().max(end), 0);
        self.cache[offset..end].copy_from_slice(data);
        self.dirty.extend(offset / SECTOR_BYTES..end.div_ceil(SECTOR_BYTES));
    }

    /// The durable image becomes the cache image: the same as copying all of it.
    fn sync(&mut self) {
        self.durable.resize(self.cache.len(), 0);
        for sector in std::mem::take(&mut self.dirty) {
            let start = sector * SECTOR_BYTES;
            if start >= self.cache.len() {
                break;
            }
            let end = (start + SECTOR_BYTES).min(self.cache.len());
            self.durable[start..end].copy_from_slice(&self.cache[start..end]);
        }
    }

    fn lose_cache(&mut self) {
        self.cache.clone_from(&self.durable);
        self.dirty.clear();
    }
}

/// Names point at inodes, so a handle keeps working after its file is renamed or
/// removed, as on a POSIX file system.
#[derive(Default)]
struct Disk {
    names: BTreeMap<String, usize>,
    /// The directory as of its last sync: what a crash brings back.
    durable_names: BTreeMap<String, usize>,
    inodes: Vec<MemFile>,
    /// Syncs that succeeded so far.
    syncs_done: u64,
    /// When set, the sync after this many successful ones fails with EIO.
    fail_sync_after: Option<u64>,
    /// When set, the next sync fails with EIO once and drops the file's dirty sectors.
    fail_next_sync: bool,
    /// Power losses so far: the simulated machine's boot.
    boots: u64,
    /// Free space the disk reports, when limited.
    available_bytes: Option<u64>,
    /// Whether directory syncs count among the syncs and fail like them.
    dir_syncs_count: bool,
}

/// A shared in-memory "disk". Clones share it; [`MemStorage::fork`] copies it.
#[derive(Clone, Default)]
pub struct MemStorage {
    disk: Arc<Mutex<Disk>>,
}

impl MemStorage {
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock (a test's injected hook) leaves the disk usable.
        self.disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An independent copy of this disk (cache and durable images).
    pub fn fork(&self) -> MemStorage {
        let disk = self.disk();
        let copy = Disk {
            names: disk.names.clone(),
            durable_names: disk.durable_names.clone(),
            inodes: disk.inodes.clone(),
            syncs_done: 0,
            fail_sync_after: None,
            fail_next_sync: false,
            boots: disk.boots,
            available_bytes: disk.available_bytes,
            dir_syncs_count: disk.dir_syncs_count,
        };
        MemStorage { disk: Arc::new(Mutex::new(copy)) }
    }

    /// Makes the sync after `successful_syncs` more successful ones fail with EIO.
    pub fn fail_sync_after(&self, successful_syncs: u64) {
        let mut disk = self.disk();
        disk.fail_sync_after = Some(disk.syncs_done + successful_syncs);
    }

    /// Makes the next sync of any file on this disk fail with EIO, once, and lose that
    /// file's unsynced writes on the way: they stay readable in the cache but are no
    /// longer dirty, so no later sync writes them (Linux marks the pages clean after a
    /// failed writeback; PostgreSQL's "fsyncgate"). Retrying the sync then "succeeds"
    /// with nothing on disk.
    pub fn fail_next_sync(&self) {
        self.disk().fail_next_sync = true;
    }

    /// Writes `bytes` at `offset` of `name`'s durable image only, as rot on the medium or
    /// a write the disk put in the wrong place: a running process (its page cache) does
    /// not see it, the next boot does. Returns whether the file exists and holds that
    /// range.
    pub fn damage_durable(&self, name: &str, offset: usize, bytes: &[u8]) -> bool {
        let mut disk = self.disk();
        let Some(&inode) = disk.names.get(name) else { return false };
        let durable = &mut disk.inodes[inode].durable;
        match offset.checked_add(bytes.len()).and_then(|end| durable.get_mut(offset..end)) {
            Some(range) => {
                range.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Makes directory syncs count among the syncs ([`MemStorage::syncs_done`]) and fail
    /// like file syncs ([`MemStorage::fail_sync_after`]), so a test can stop a sequence of
    /// renames and removals at each of its durable points. Off by default.
    pub fn count_dir_syncs(&self) {
        self.disk().dir_syncs_count = true;
    }

    /// Removes an injected sync failure (the "disk" was replaced), so recovery can run.
    pub fn heal(&self) {
        let mut disk = self.disk();
        disk.fail_sync_after = None;
        disk.fail_next_sync = false;
    }

    /// Makes the disk report `bytes` free (it does not enforce it).
    pub fn limit_space(&self, bytes: u64) {
        self.disk().available_bytes = Some(bytes);
    }

    /// Successful syncs so far.
    pub fn syncs_done(&self) -> u64 {
        self.disk().syncs_done
    }

    /// Power loss: everything not synced is lost (file contents and directory entries),
    /// and the machine boots again.
    pub fn crash(&self) {
        let mut disk = self.disk();
        disk.boots += 1;
        for file in &mut disk.inodes {
            file.lose_cache();
        }
        disk.names = disk.durable_names.clone();
    }

    /// The machine reboots without losing anything (a clean reboot, or the disk moved
    /// to another machine): the page cache was written back first.
    pub fn reboot(&self) {
        let mut disk = self.disk();
        disk.boots += 1;
        disk.durable_names = disk.names.clone();
    }

    /// Power loss after the kernel wrote back a pseudo-random subset (chosen by `seed`)
    /// of the dirty sectors, in no particular order.
    pub fn crash_with_partial_writeback(&self, seed: u64) {
        let mut state = seed | 1;
        let mut disk = self.disk();
        disk.boots += 1;
        for file in &mut disk.inodes {
            let cache_bytes = file.cache.len();
            file.durable.resize(cache_bytes, 0);
            for start in (0..cache_bytes).step_by(SECTOR_BYTES) {
                let end = (start + SECTOR_BYTES).min(cache_bytes);
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if state.is_multiple_of(2) {
                    let sector = file.cache[start..end].to_vec();
                    file.durable[start..end].copy_from_slice(&sector);
                }
            }
            file.lose_cache();
        }
        disk.names = disk.durable_names.clone();
    }

    /// Makes the directory's entries durable (a directory fsync).
    fn sync_names(&self) {
        let mut disk = self.disk();
        disk.durable_names = disk.names.clone();
    }

    /// Names of every file on this disk.
    pub fn directory_names(&self) -> Vec<String> {
        self.disk().names.keys().cloned().collect()
    }

    /// The durable image of `name`.
    pub fn durable_image(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk();
        disk.names.get(name).map(|&inode| disk.inodes[inode].durable.clone())
    }

    /// Replaces both images of `name` (creating it), e.g. with a damaged copy.
    pub fn set_image(&self, name: &str, bytes: Vec<u8>) {
        let file = MemFile { cache: bytes.clone(), durable: bytes, dirty: BTreeSet::new() };
        let mut disk = self.disk();
        disk.inodes.push(file);
        let inode = disk.inodes.len() - 1;
        disk.names.insert(name.to_string(), inode);
        disk.durable_names.insert(name.to_string(), inode);
    }

    /// The same disk seen as a [`Directory`] of whole files (a snapshot store's), which
    /// loses and tears unsynced writes on [`MemStorage::crash`] as segments do.
    pub fn directory(&self) -> MemDirectory {
        MemDirectory { storage: self.clone() }
    }

    fn file_error(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
    }
}

impl Storage for MemStorage {
    type Segment = MemSegment;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.disk().names.keys().cloned().collect())
    }

    fn create(&self, name: &str, bytes: usize) -> io::Result<MemSegment> {
        let mut disk = self.disk();
        if disk.names.contains_key(name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, name.to_string()));
        }
        let zeros = vec![0u8; bytes];
        disk.inodes.push(MemFile { cache: zeros.clone(), durable: zeros.clone(), dirty: BTreeSet::new() });
        let inode = disk.inodes.len() - 1;
        disk.names.insert(name.to_string(), inode);
        Ok(MemSegment { storage: self.clone(), inode, view: zeros, writable: true, boot: disk.boots })
    }

    fn open(&self, name: &str, writable: bool) -> io::Result<MemSegment> {
        let disk = self.disk();
        let inode = *disk.names.get(name).ok_or_else(|| Self::file_error(name))?;
        let view = disk.inodes[inode].cache.clone();
        Ok(MemSegment { storage: self.clone(), inode, view, writable, boot: disk.boots })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk();
        let inode = disk.names.remove(from).ok_or_else(|| Self::file_error(from))?;
        disk.names.insert(to.to_string(), inode);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.disk().names.remove(name).map(|_| ()).ok_or_else(|| Self::file_error(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        {
            let mut disk = self.disk();
            if disk.dir_syncs_count {
                if disk.fail_sync_after == Some(disk.syncs_done) {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                disk.syncs_done += 1;
            }
        }
        self.sync_names();
        Ok(())
    }

    /// A sync of `name` (which fails like any other, [`MemStorage::fail_next_sync`] and
    /// [`MemStorage::fail_sync_after`]), then its cache image becomes its durable image:
    /// sectors a failed sync left clean but not durable read as the disk holds them. The
    /// views of handles already open keep what they saw, as a mapping keeps its pages.
    fn sync_and_drop_cache(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        let inode = *disk.names.get(name).ok_or_else(|| Self::file_error(name))?;
        let boot = disk.boots;
        sync_inode(&mut disk, inode, boot)?;
        // After the sync nothing is dirty, so this only drops clean sectors.
        disk.inodes[inode].lose_cache();
        Ok(())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        PathBuf::from("mem").join(name)
    }

    fn available_bytes(&self) -> Option<u64> {
        self.disk().available_bytes
    }

    fn boot_id(&self) -> [u8; 16] {
        let mut id = [0xB0; 16];
        id[..8].copy_from_slice(&self.disk().boots.to_le_bytes());
        id
    }
}

/// A handle on a [`MemStorage`] file. Its view is the cache image when it was opened plus
/// its own writes: other handles' later writes are not seen (unlike a shared mapping).
pub struct MemSegment {
    storage: MemStorage,
    inode: usize,
    view: Vec<u8>,
    writable: bool,
    /// The boot it was opened in: after a crash its writes reach nothing.
    boot: u64,
}

impl SegmentFile for MemSegment {
    fn bytes(&self) -> &[u8] {
        &self.view
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let range = offset
            .checked_add(data.len())
            .filter(|&end| self.writable && end <= self.view.len())
            .map(|end| offset..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write outside the segment"))?;
        self.view[range.clone()].copy_from_slice(data);
        let mut disk = self.storage.disk();
        if disk.boots == self.boot {
            disk.inodes[self.inode].write(range.start, data);
        }
        Ok(())
    }

    fn sync(&mut self, _range: Range<usize>) -> io::Result<()> {
        sync_inode(&mut self.storage.disk(), self.inode, self.boot)
    }

    fn grow(&mut self, bytes: usize) -> io::Result<()> {
        if self.view.len() >= bytes {
            return Ok(());
        }
        self.view.resize(bytes, 0);
        let mut disk = self.storage.disk();
        if disk.boots != self.boot {
            return Ok(());
        }
        let file = &mut disk.inodes[self.inode];
        file.cache.resize(bytes, 0);
        file.durable.resize(bytes, 0);
        Ok(())
    }

    fn writes_visible_at_once(&self) -> bool {
        false
    }
}

/// A [`MemStorage`] as a [`Directory`] ([`MemStorage::directory`]). Entries (creation,
/// rename, removal) become durable with [`Directory::sync`], as for segments.
#[derive(Clone)]
pub struct MemDirectory {
    storage: MemStorage,
}

impl Directory for MemDirectory {
    type File = MemHandle;

    fn list(&self) -> io::Result<Vec<String>> {
        Storage::list(&self.storage)
    }

    fn create(&self, name: &str) -> io::Result<MemHandle> {
        let mut disk = self.storage.disk();
        let inode = match disk.names.get(name) {
            Some(&inode) => {
                disk.inodes[inode].cache.clear();
                disk.inodes[inode].dirty.clear();
                inode
            }
            None => {
                disk.inodes.push(MemFile::default());
                let inode = disk.inodes.len() - 1;
                disk.names.insert(name.to_string(), inode);
                inode
            }
        };
        let boot = disk.boots;
        Ok(MemHandle { storage: self.storage.clone(), inode, writable: true, boot })
    }

    fn open(&self, name: &str) -> io::Result<MemHandle> {
        let disk = self.storage.disk();
        let inode = *disk.names.get(name).ok_or_else(|| MemStorage::file_error(name))?;
        Ok(MemHandle { storage: self.storage.clone(), inode, writable: false, boot: disk.boots })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Storage::rename(&self.storage, from, to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        Storage::remove(&self.storage, name)
    }

    fn sync(&self) -> io::Result<()> {
        self.storage.sync_names();
        Ok(())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        Storage::path_of(&self.storage, name)
    }
}

impl MemDirectory {
    /// Opens `name` for reading and writing, as it is (a database file).
    pub fn open_for_writing(&self, name: &str) -> io::Result<MemHandle> {
        let disk = self.storage.disk();
        let inode = *disk.names.get(name).ok_or_else(|| MemStorage::file_error(name))?;
        Ok(MemHandle { storage: self.storage.clone(), inode, writable: true, boot: disk.boots })
    }
}

/// An open file of a [`MemDirectory`]: reads and writes go to the file's cache image,
/// shared by every handle (as the page cache is).
pub struct MemHandle {
    storage: MemStorage,
    inode: usize,
    writable: bool,
    /// The boot it was opened in: after a crash its writes reach nothing.
    boot: u64,
}

impl MemHandle {
    /// Cuts or extends the file to `bytes` (new bytes are zeros), as `ftruncate`.
    pub fn set_length(&self, bytes: u64) -> io::Result<()> {
        let bytes = usize::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut disk = self.storage.disk();
        if !self.writable || disk.boots != self.boot {
            return Ok(());
        }
        let file = &mut disk.inodes[self.inode];
        let old = file.cache.len();
        file.cache.resize(bytes, 0);
        if bytes > old {
            file.dirty.extend(old / SECTOR_BYTES..bytes.div_ceil(SECTOR_BYTES));
        }
        Ok(())
    }
}

impl DirectoryFile for MemHandle {
    fn length(&self) -> io::Result<u64> {
        Ok(self.storage.disk().inodes[self.inode].cache.len() as u64)
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let disk = self.storage.disk();
        let cache = &disk.inodes[self.inode].cache;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(cache.len());
        let read = buffer.len().min(cache.len() - start);
        buffer[..read].copy_from_slice(&cache[start..start + read]);
        Ok(read)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let end = usize::try_from(offset).ok().and_then(|start| start.checked_add(bytes.len()));
        let Some(end) = end.filter(|_| self.writable) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "write to a read-only or too large file"));
        };
        let mut disk = self.storage.disk();
        if disk.boots == self.boot {
            disk.inodes[self.inode].write(end - bytes.len(), bytes);
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        sync_inode(&mut self.storage.disk(), self.inode, self.boot)
    }
}

/// A sync of `inode` by a handle opened in `boot`: an injected failure, nothing (the
/// handle's process died in a crash since), or the durable image made the cache's.
fn sync_inode(disk: &mut Disk, inode: usize, boot: u64) -> io::Result<()> {
    if disk.boots != boot {
        return Ok(());
    }
    if disk.fail_sync_after == Some(disk.syncs_done) {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    if std::mem::take(&mut disk.fail_next_sync) {
        disk.inodes[inode].dirty.clear();
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    disk.syncs_done += 1;
    disk.inodes[inode].sync();
    Ok(())
}
