//! The history store's file on the simulator's disk: a redb storage backend over a file
//! of a [`MemDirectory`], so the real `HistoryStore` runs on a disk that loses (and tears)
//! what was not synced when a node loses power.

use std::io;
use std::sync::Arc;

use tally_journal::sim::{MemHandle, MemStorage};
use tally_journal::{Directory, DirectoryFile};

use crate::history::{FILE_NAME, HistoryCheck, HistoryError, HistoryStore};

/// redb's page cache for a simulated node's store: its files hold a few hundred records.
const CACHE_BYTES: usize = 1 << 20;

/// A redb file on the simulator's disk.
pub struct HistoryFile {
    file: MemHandle,
}

impl std::fmt::Debug for HistoryFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("HistoryFile")
    }
}

impl redb::StorageBackend for HistoryFile {
    fn len(&self) -> io::Result<u64> {
        self.file.length()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if self.file.read_at(out, offset)? != out.len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the history file"));
        }
        Ok(())
    }

    fn set_len(&self, length: u64) -> io::Result<()> {
        self.file.set_length(length)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
}

/// Opens (creating) the history store in its file on `disk`; returns it and its mark.
pub fn open_history(disk: &MemStorage) -> Result<(Arc<HistoryStore>, u64), HistoryError> {
    let directory = disk.directory();
    let path = directory.path_of(FILE_NAME);
    let existing = directory.list().is_ok_and(|names| names.iter().any(|name| name == FILE_NAME));
    let file = if existing { directory.open_for_writing(FILE_NAME) } else { directory.create(FILE_NAME) };
    let file = file.map_err(|error| HistoryError::Store { path: path.clone(), message: error.to_string() })?;
    // As `HistoryStore::open` does: the new file's name is durable only with its directory.
    directory.sync().map_err(|error| HistoryError::Store { path: path.clone(), message: error.to_string() })?;
    // As `tally`'s default (`--history-check on-open`): a file that rotted is refused.
    HistoryStore::open_on(HistoryFile { file }, path, CACHE_BYTES, HistoryCheck::OnOpen)
}
