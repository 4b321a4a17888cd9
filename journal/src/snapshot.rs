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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::JournalError;
use crate::format::read_u64;

const SNAPSHOT_MAGIC: [u8; 8] = *b"TALLYSNP";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 64;
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMPORARY_SUFFIX: &str = ".snap.tmp";
const STAGED_SUFFIX: &str = ".snap.staged";

/// A directory of snapshots.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
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
        let store = SnapshotStore { dir: dir.into() };
        std::fs::create_dir_all(&store.dir).map_err(|error| JournalError::io(&store.dir, error))?;
        for name in store.names()? {
            if name.ends_with(TEMPORARY_SUFFIX) || name.ends_with(STAGED_SUFFIX) {
                let path = store.dir.join(&name);
                std::fs::remove_file(&path).map_err(|error| JournalError::io(path, error))?;
            }
        }
        Ok(store)
    }

    /// The store in an existing directory, left as it is (no temporary file removed): for
    /// a reader beside the process that writes snapshots there.
    pub fn existing(dir: impl Into<PathBuf>) -> SnapshotStore {
        SnapshotStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a snapshot covering `sequence`: temporary file, fsync, rename, fsync of the
    /// directory. Errors are returned, not fatal: nothing relies on a snapshot until this
    /// returned `Ok`, and a failed file is never synced a second time.
    pub fn write(&self, sequence: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
        let final_path = self.path_of(sequence);
        let temporary = self.dir.join(format!("{sequence:020}{TEMPORARY_SUFFIX}"));
        let io_error = |error| JournalError::io(&temporary, error);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temporary).map_err(io_error)?;
        file.write_all(&encode_header(sequence, bytes)).map_err(io_error)?;
        file.write_all(bytes).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        drop(file);
        std::fs::rename(&temporary, &final_path).map_err(|error| JournalError::io(&final_path, error))?;
        self.sync_dir()?;
        Ok(final_path)
    }

    /// Writes a checkpoint covering `sequence` under its staged name and syncs it; it is not
    /// a recovery point until [`SnapshotStore::promote`]. Errors are returned, not fatal.
    pub fn write_staged(&self, sequence: u64, bytes: &[u8]) -> Result<PathBuf, JournalError> {
        let staged = self.staged_path_of(sequence);
        let io_error = |error| JournalError::io(&staged, error);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&staged).map_err(io_error)?;
        file.write_all(&encode_header(sequence, bytes)).map_err(io_error)?;
        file.write_all(bytes).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        Ok(staged)
    }

    /// Reads and verifies the staged checkpoint covering `sequence` (as [`SnapshotStore::load`]).
    pub fn load_staged(&self, sequence: u64) -> Result<Snapshot, JournalError> {
        read_verified(self.staged_path_of(sequence), sequence)
    }

    /// Makes the staged checkpoint covering `sequence` a snapshot: rename, then a sync of
    /// the directory.
    pub fn promote(&self, sequence: u64) -> Result<PathBuf, JournalError> {
        let final_path = self.path_of(sequence);
        std::fs::rename(self.staged_path_of(sequence), &final_path)
            .map_err(|error| JournalError::io(&final_path, error))?;
        self.sync_dir()?;
        Ok(final_path)
    }

    /// Deletes the staged checkpoint covering `sequence`, if there is one.
    pub fn discard_staged(&self, sequence: u64) -> Result<(), JournalError> {
        let staged = self.staged_path_of(sequence);
        match std::fs::remove_file(&staged) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(JournalError::io(staged, error)),
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
        read_verified(self.path_of(sequence), sequence)
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
            if retention.kept.len() < keep_snapshots && self.load(sequence).is_ok() {
                retention.kept.push(sequence);
            }
        }
        retention.kept.reverse();
        let newest_kept = retention.kept.last().copied();
        for sequence in sequences {
            let older = newest_kept.is_some_and(|newest| sequence < newest);
            if older && !retention.kept.contains(&sequence) {
                let path = self.path_of(sequence);
                std::fs::remove_file(&path).map_err(|error| JournalError::io(path, error))?;
                retention.removed.push(sequence);
            }
        }
        if !retention.removed.is_empty() {
            self.sync_dir()?;
        }
        Ok(retention)
    }

    /// The file of the snapshot covering `sequence`.
    pub fn path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}{SNAPSHOT_SUFFIX}"))
    }

    fn staged_path_of(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:020}{STAGED_SUFFIX}"))
    }

    fn names(&self) -> Result<Vec<String>, JournalError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| JournalError::io(&self.dir, error))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| JournalError::io(&self.dir, error))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self) -> Result<(), JournalError> {
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(|error| JournalError::io(&self.dir, error))
    }
}

/// Reads the file at `path` and checks its header and checksum against `sequence`.
fn read_verified(path: PathBuf, sequence: u64) -> Result<Snapshot, JournalError> {
    let file = std::fs::read(&path).map_err(|error| JournalError::io(&path, error))?;
    let damaged = |reason| JournalError::SnapshotDamaged { path: path.clone(), reason };
    let header = file.get(..SNAPSHOT_HEADER_BYTES).ok_or(damaged("shorter than its header"))?;
    if header[..8] != SNAPSHOT_MAGIC || header[8..12] != SNAPSHOT_VERSION.to_le_bytes() {
        return Err(damaged("bad magic or version"));
    }
    if read_u64(header, 16) != sequence {
        return Err(damaged("covered sequence does not match the file name"));
    }
    let payload = &file[SNAPSHOT_HEADER_BYTES..];
    if u64::try_from(payload.len()).ok() != Some(read_u64(header, 24)) {
        return Err(damaged("length does not match the file"));
    }
    if checksum(&header[..32], payload) != header[32..64] {
        return Err(damaged("BLAKE3 checksum mismatch"));
    }
    Ok(Snapshot { sequence, bytes: payload.to_vec() })
}

fn encode_header(sequence: u64, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    header[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let sum = checksum(&header[..32], payload);
    header[32..64].copy_from_slice(&sum);
    header
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
