//! The seam between a store of whole files (the snapshot store) and the file system. The
//! store owns the protocol (what it writes, in which order it syncs and renames); a
//! [`Directory`] only supplies the primitives, so the simulator's disk
//! ([`crate::sim::MemStorage`], which loses what was not synced on a power loss) can stand
//! in for a real directory ([`OsDirectory`]). Unlike [`crate::Storage`], files here are
//! read and written with `pread`/`pwrite`, never mapped: a snapshot is read once and
//! dropped, and its pages should not stay in the process.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A directory of files written whole.
pub trait Directory: Clone + Send + Sync + 'static {
    type File: DirectoryFile;

    /// Names of all files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Creates `name` empty (truncating a file of that name), for reading and writing.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens `name` for reading.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`; an error of kind `NotFound` when there is no such file.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync(&self) -> io::Result<()>;
    /// The path of `name`, for messages.
    fn path_of(&self, name: &str) -> PathBuf;
}

/// An open file of a [`Directory`].
pub trait DirectoryFile: Send {
    fn length(&self) -> io::Result<u64>;
    /// Reads at most `buffer.len()` bytes at `offset`; 0 at the end of the file.
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `bytes` at `offset`, growing the file when it ends before.
    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's contents durable.
    fn sync(&self) -> io::Result<()>;
}

/// A real directory.
#[derive(Clone, Debug)]
pub struct OsDirectory {
    dir: PathBuf,
}

impl OsDirectory {
    /// The directory at `dir`, created when missing.
    pub fn create_all(dir: impl Into<PathBuf>) -> io::Result<OsDirectory> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(OsDirectory { dir })
    }

    /// The directory at `dir`, as it is (nothing created).
    pub fn existing(dir: impl Into<PathBuf>) -> OsDirectory {
        OsDirectory { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Directory for OsDirectory {
    type File = File;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn create(&self, name: &str) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(self.dir.join(name))
    }

    fn open(&self, name: &str) -> io::Result<File> {
        File::open(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn sync(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl DirectoryFile for File {
    fn length(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buffer, offset)
    }

    fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, bytes, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_all()
    }
}

/// A file read and written as a stream from a position (`io::Read` and `io::Write` over
/// [`DirectoryFile::read_at`] and [`DirectoryFile::write_all_at`]).
pub struct Cursor<'a, F> {
    pub file: &'a F,
    pub offset: u64,
}

impl<F: DirectoryFile> io::Read for Cursor<'_, F> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buffer, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

impl<F: DirectoryFile> io::Write for Cursor<'_, F> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.file.write_all_at(bytes, self.offset)?;
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
