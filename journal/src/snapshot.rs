//! Snapshots on disk. The ledger serializes itself; this module stores those bytes so
//! that a crash at any point leaves either the old set of snapshots or the new one,
//! never a half-written file under a final name.
//!
//! A checkpoint is written in two steps: [`SnapshotStore::write_staged`] writes and syncs
//! `{sequence:020}.snap.staged`, which nothing loads; [`SnapshotStore::promote`] renames
//! it to its final name and syncs the directory, once the node has verified it and every
//! store derived from the journal holds its sequence. Staged files left by a crash are
//! deleted at open.
//!
//! File `{sequence:020}.snap` = 64-byte header + payload. Header: magic `TALLYSNP` (8),
//! version u32, reserved u32, covered sequence u64, payload length u64, BLAKE3 (32 bytes)
//! of the header's first 32 bytes followed by the payload.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::directory::{Cursor, Directory, DirectoryFile, OsDirectory};
use crate::error::JournalError;
use crate::format::read_u64;

const SNAPSHOT_MAGIC: [u8; 8] = *b"TALLYSNP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 64;
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".snap.tmp";
const STAGED_SUFFIX: &str = ".snap.staged";
/// Bytes read at a time when a streamed payload is read back for its checksum.
const HASH_READ_BYTES: usize = 1 << 20;

/// A directory of snapshots: a real one ([`OsDirectory`]) unless the simulator gives its
/// own disk ([`crate::sim::MemStorage::directory`]).
#[derive(Clone, Debug)]
pub struct SnapshotStore<D: Directory = OsDirectory> {
    dir: D,
}

/// The newest valid snapshot, and the damaged ones skipped on the way to it.
#[derive(Debug)]
pub struct SnapshotLoad {
    pub newest: Option<Snapshot>,
    pub damaged: Vec<JournalError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The last journal sequence the snapshot covers; replay starts after it.
    pub sequence: u64,
    pub bytes: Vec<u8>,
}

/// What [`SnapshotStore::retain`] kept and removed (covered sequences).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub kept: Vec<u64>,
    pub removed: Vec<u64>,
}

impl SnapshotStore {
    /// Opens (creating) the directory and deletes temporary files of interrupted writes
    /// and staged checkpoints that were never promoted.
    pub fn open(dir: impl Into<PathBuf>) -> Result<SnapshotStore, JournalError> {
        let dir = dir.into();
        let directory = OsDirectory::create_all(&dir).map_err(|error| JournalError::io(&dir, error))?;
        SnapshotStore::open_on(directory)
    }

    /// The store in an existing directory, left as it is (no temporary file removed): for
    /// a reader beside the process that writes snapshots there.
    pub fn existing(dir: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { dir: OsDirectory::existing(dir) }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl<D: Directory> SnapshotStore<D> {
    /// [`SnapshotStore::open`] on any directory.
    pub fn open_on(dir: D) -> Result<SnapshotStore<D>, JournalError> {
        let store = SnapshotStore { dir };
        for name in store.names()? {
            if name.ends_with(TEMPORARY_SUFFIX) || name.ends_with(STAGED_SUFFIX) {
                store.dir.remove(&name).map_err(|error| store.io_error(&name, error))?;
            }
        }
        Ok(store)
    }

    /// Writes a snapshot covering `sequence`: temporary file, fsync, rename, fsync of the
    /// directory. Errors are returned, not fatal: nothing relies on a snapshot until this
    /// returned `Ok`, and a failed file is never synced a second time.
    pub fn write(&self, sequence: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
        let temporary = format!("{sequence:020}{TEMPORARY_SUFFIX}");
        self.write_whole(&temporary, sequence, bytes)?;
        let final_name = name_of(sequence);
        self.dir.rename(&temporary, &final_name).map_err(|error| self.io_error(&final_name, error))?;
        self.sync_dir()?;
        Ok(self.dir.path_of(&final_name))
    }

    /// Writes a checkpoint covering `sequence` under its staged name and syncs it; it is not
    /// a recovery point until [`SnapshotStore::promote`]. Errors are returned, not fatal.
    pub fn write_staged(&self, sequence: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
        let staged = staged_name_of(sequence);
        self.write_whole(&staged, sequence, bytes)?;
        Ok(self.dir.path_of(&staged))
    }

    /// Header and payload into `name`, then a sync of the file.
    fn write_whole(&self, name: &str, sequence: u64, bytes: &[u8]) -> Result<(), JournalError> {
        let io_error = |error| self.io_error(name, error);
        let file = self.dir.create(name).map_err(io_error)?;
        file.write_all_at(&encode_header(sequence, bytes), 0).map_err(io_error)?;
        file.write_all_at(bytes, SNAPSHOT_HEADER_BYTES as u64).map_err(io_error)?;
        file.sync().map_err(io_error)
    }

    /// Writes a checkpoint covering `sequence` under its staged name as
    /// [`SnapshotStore::write_staged`] does, with the payload streamed by `payload` into
    /// the file instead of held in memory: the payload is written after room for the
    /// header, then read back from the file (in [`HASH_READ_BYTES`] pieces) for its
    /// checksum, and the header goes in last, before the sync. The file is the same as
    /// `write_staged` writes for the same payload. An error of `payload` is returned as
    /// an I/O error of the file; a half-written staged file is never loaded (the caller
    /// discards it, and an open deletes it).
    pub fn write_staged_with(
        &self,
        sequence: u64,
        payload: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<PathBuf, JournalError> {
        let staged = staged_name_of(sequence);
        let io_error = |error| self.io_error(&staged, error);
        let file = self.dir.create(&staged).map_err(io_error)?;
        let cursor = Cursor { file: &file, offset: SNAPSHOT_HEADER_BYTES as u64 };
        let mut counted = Counted { inner: std::io::BufWriter::with_capacity(HASH_READ_BYTES, cursor), bytes: 0 };
        payload(&mut counted).map_err(io_error)?;
        counted.flush().map_err(io_error)?;
        let length = counted.bytes;
        drop(counted);
        let mut header = header_fields(sequence, length);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&header[..32]);
        let mut buffer = vec![0u8; HASH_READ_BYTES];
        let mut offset = SNAPSHOT_HEADER_BYTES as u64;
        let end = offset + length;
        while offset < end {
            let want = usize::try_from(end - offset).unwrap_or(usize::MAX).min(buffer.len());
            let read = file.read_at(&mut buffer[..want], offset).map_err(io_error)?;
            if read == 0 {
                return Err(io_error(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the staged file is shorter than what was written to it",
                )));
            }
            hasher.update(&buffer[..read]);
            offset += read as u64;
        }
        header[32..64].copy_from_slice(hasher.finalize().as_bytes());
        file.write_all_at(&header, 0).map_err(io_error)?;
        file.sync().map_err(io_error)?;
        Ok(self.dir.path_of(&staged))
    }

    /// Reads and verifies the staged checkpoint covering `sequence` (as [`SnapshotStore::load`]).
    pub fn load_staged(&self, sequence: u64) -> Result<Snapshot, JournalError> {
        self.read_verified(&staged_name_of(sequence), sequence)
    }

    /// Makes the staged checkpoint covering `sequence` a snapshot: rename, then a sync of
    /// the directory.
    pub fn promote(&self, sequence: u64) -> Result<PathBuf, JournalError> {
        let final_name = name_of(sequence);
        self.dir.rename(&staged_name_of(sequence), &final_name).map_err(|error| self.io_error(&final_name, error))?;
        self.sync_dir()?;
        Ok(self.dir.path_of(&final_name))
    }

    /// Deletes the staged checkpoint covering `sequence`, if there is one.
    pub fn discard_staged(&self, sequence: u64) -> Result<(), JournalError> {
        let staged = staged_name_of(sequence);
        match self.dir.remove(&staged) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(self.io_error(&staged, error)),
            _ => Ok(()),
        }
    }

    /// Covered sequences of all snapshot files, oldest first (valid or not).
    pub fn list(&self) -> Result<Vec<u64>, JournalError> {
        let mut sequences: Vec<u64> = self.names()?.iter().filter_map(|name| parse_name(name)).collect();
        sequences.sort_unstable();
        Ok(sequences)
    }

    /// Reads and verifies the snapshot covering `sequence`.
    pub fn load(&self, sequence: u64) -> Result<Snapshot, JournalError> {
        self.read_verified(&name_of(sequence), sequence)
    }

    /// The newest snapshot that verifies; damaged newer ones are skipped and reported.
    pub fn load_newest(&self) -> Result<SnapshotLoad, JournalError> {
        let mut damaged = Vec::new();
        for sequence in self.list()?.into_iter().rev() {
            match self.load(sequence) {
                Ok(snapshot) => return Ok(SnapshotLoad { newest: Some(snapshot), damaged }),
                Err(error @ JournalError::SnapshotDamaged { .. }) => damaged.push(error),
                Err(error) => return Err(error),
            }
        }
        Ok(SnapshotLoad { newest: None, damaged })
    }

    /// Keeps the newest `keep_snapshots` snapshots that verify and removes every other
    /// snapshot file older than the newest kept one (damaged ones included). Journal
    /// segments covered by `kept[0]` (the oldest kept) may then be deleted with
    /// [`crate::Journal::remove_segments_covered_by`].
    pub fn retain(&self, keep_snapshots: usize) -> Result<Retention, JournalError> {
        let mut retention = Retention::default();
        let sequences = self.list()?;
        for &sequence in sequences.iter().rev() {
            if retention.kept.len() >= keep_snapshots {
                break;
            }
            // Only a snapshot shown damaged is passed over (and removed below); any other
            // failure to read it (an I/O error, too many open files) ends this retention
            // with nothing removed, since a transient failure must not cost a recovery point.
            match self.load(sequence) {
                Ok(_) => retention.kept.push(sequence),
                Err(JournalError::SnapshotDamaged { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        retention.kept.reverse();
        let newest_kept = retention.kept.last().copied();
        for sequence in sequences {
            let older = newest_kept.is_some_and(|newest| sequence < newest);
            if older && !retention.kept.contains(&sequence) {
                let name = name_of(sequence);
                self.dir.remove(&name).map_err(|error| self.io_error(&name, error))?;
                retention.removed.push(sequence);
            }
        }
        if !retention.removed.is_empty() {
            self.sync_dir()?;
        }
        Ok(retention)
    }

    /// Removes every snapshot covering records after `sequence`, then syncs the directory:
    /// a journal cut back to `sequence` (a diverged suffix dropped on rejoin) must not be
    /// started from a state that includes the records it dropped. Returns what it removed.
    pub fn remove_newer_than(&self, sequence: u64) -> Result<Vec<u64>, JournalError> {
        let newer: Vec<u64> = self.list()?.into_iter().filter(|&covered| covered > sequence).collect();
        for &covered in &newer {
            let name = name_of(covered);
            self.dir.remove(&name).map_err(|error| self.io_error(&name, error))?;
        }
        if !newer.is_empty() {
            self.sync_dir()?;
        }
        Ok(newer)
    }

    /// The file of the snapshot covering `sequence`.
    pub fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.path_of(&name_of(sequence))
    }

    fn names(&self) -> Result<Vec<String>, JournalError> {
        self.dir.list().map_err(|error| self.io_error("", error))
    }

    fn sync_dir(&self) -> Result<(), JournalError> {
        self.dir.sync().map_err(|error| self.io_error("", error))
    }

    fn io_error(&self, name: &str, error: std::io::Error) -> JournalError {
        JournalError::io(self.dir.path_of(name), error)
    }

    /// Reads the file `name` and checks its header and checksum against `sequence`. The
    /// payload is read straight into the one buffer returned (a snapshot can be hundreds
    /// of megabytes: no second copy of it is made).
    fn read_verified(&self, name: &str, sequence: u64) -> Result<Snapshot, JournalError> {
        let path = self.dir.path_of(name);
        let io_error = |error| JournalError::io(&path, error);
        let damaged = |reason| JournalError::SnapshotDamaged { path: path.clone(), reason };
        let file = self.dir.open(name).map_err(io_error)?;
        let file_bytes = file.length().map_err(io_error)?;
        let mut reader = Cursor { file: &file, offset: 0 };
        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        match reader.read_exact(&mut header) {
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(damaged("shorter than its header"));
            }
            other => other.map_err(io_error)?,
        }
        if header[..8] != SNAPSHOT_MAGIC || header[8..12] != SNAPSHOT_VERSION.to_le_bytes() {
            return Err(damaged("bad magic or version"));
        }
        if read_u64(&header, 16) != sequence {
            return Err(damaged("covered sequence does not match the file name"));
        }
        let length = read_u64(&header, 24);
        if Some(length) != file_bytes.checked_sub(SNAPSHOT_HEADER_BYTES as u64) {
            return Err(damaged("length does not match the file"));
        }
        let length = usize::try_from(length).map_err(|_| damaged("larger than this machine can address"))?;
        let mut payload = Vec::new();
        payload.try_reserve_exact(length).map_err(|_| damaged("larger than the memory this process can get"))?;
        reader.take(length as u64).read_to_end(&mut payload).map_err(io_error)?;
        if payload.len() != length {
            return Err(damaged("length does not match the file"));
        }
        if checksum(&header[..32], &payload) != header[32..64] {
            return Err(damaged("BLAKE3 checksum mismatch"));
        }
        Ok(Snapshot { sequence, bytes: payload })
    }
}

fn name_of(sequence: u64) -> String {
    format!("{sequence:020}{SNAPSHOT_SUFFIX}")
}

fn staged_name_of(sequence: u64) -> String {
    format!("{sequence:020}{STAGED_SUFFIX}")
}

/// The header's first 32 bytes (magic, version, sequence, payload length); the checksum
/// goes into the rest.
fn header_fields(sequence: u64, payload_bytes: u64) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    header[24..32].copy_from_slice(&payload_bytes.to_le_bytes());
    header
}

fn encode_header(sequence: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = header_fields(sequence, payload.len() as u64);
    let sum = checksum(&header[..32], payload);
    header[32..64].copy_from_slice(&sum);
    header
}

/// A writer that counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn checksum(header_fields: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header_fields);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit())).then(|| digits.parse().ok())?
}
