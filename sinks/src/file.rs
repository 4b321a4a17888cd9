//! Outcome entries as JSON lines (`crate::json`, one line per journal sequence) in
//! rotating files: `DIR/<first sequence, 20 digits>.jsonl`, a new file once the current
//! one has reached its size limit, the oldest files deleted beyond a count.
//!
//! Exactly once: each batch is appended and synced, then `DIR/WATERMARK` is replaced
//! (written, synced, renamed, directory synced) with the batch's last sequence, the file
//! and its length, and the checksum of the entry at it (so that a resume against another
//! history is noticed, `Sink::held_entry`). On resume, whatever lies past the watermark (a
//! torn tail, a file begun after it) was written but never acknowledged, and is cut off
//! before writing on.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use tally_codecs::outcome::Outcome;

use crate::json::write_entry_line;
use crate::sink::{Sink, SinkError};

/// A file is closed and a new one begun once it holds this many bytes.
pub const FILE_BYTES_DEFAULT: u64 = 64 << 20;
/// The most files kept (the oldest are deleted); 0 keeps every file.
pub const FILES_KEEP_DEFAULT: usize = 16;
pub const FILE_SUFFIX: &str = ".jsonl";
pub const WATERMARK_FILE: &str = "WATERMARK";
/// The watermark's first word: version 2 adds the checksum of the entry at the watermark;
/// version 1 (without it) is still read.
const WATERMARK_MAGIC: &str = "tally-file-sink-2";
const WATERMARK_MAGIC_1: &str = "tally-file-sink-1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileConfig {
    pub dir: PathBuf,
    pub file_bytes_max: u64,
    pub files_keep: usize,
}

impl FileConfig {
    pub fn new(dir: impl Into<PathBuf>) -> FileConfig {
        FileConfig { dir: dir.into(), file_bytes_max: FILE_BYTES_DEFAULT, files_keep: FILES_KEEP_DEFAULT }
    }
}

/// Where the files stood after the last acknowledged batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Watermark {
    sequence: u64,
    /// The file the batch went into; empty before the first batch.
    file: String,
    length: u64,
    /// The checksum of the entry at `sequence` ([`Outcome::checksum`]); `None` before the
    /// first batch and in a version-1 watermark.
    entry_checksum: Option<u32>,
}

impl Watermark {
    fn line(&self) -> String {
        let entry = self.entry_checksum.map_or_else(|| "-".to_owned(), |checksum| format!("{checksum:08x}"));
        let body = format!("{WATERMARK_MAGIC} {} {} {} {entry}", self.sequence, self.file, self.length);
        format!("{body} {:08x}\n", crc32c::crc32c(body.as_bytes()))
    }

    fn parse(text: &str) -> Option<Watermark> {
        let text = text.strip_suffix('\n')?;
        let (body, checksum) = text.rsplit_once(' ')?;
        if u32::from_str_radix(checksum, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut fields = body.split(' ');
        let version = match fields.next()? {
            WATERMARK_MAGIC => 2,
            WATERMARK_MAGIC_1 => 1,
            _ => return None,
        };
        let sequence = fields.next()?.parse().ok()?;
        let file = fields.next()?.to_string();
        let length = fields.next()?.parse().ok()?;
        let entry_checksum = match (version, fields.next()) {
            (1, None) => None,
            (2, Some("-")) => None,
            (2, Some(hex)) if hex.len() == 8 => Some(u32::from_str_radix(hex, 16).ok()?),
            _ => return None,
        };
        fields.next().is_none().then_some(Watermark { sequence, file, length, entry_checksum })
    }
}

/// The file currently written.
struct Current {
    name: String,
    file: File,
    length: u64,
}

pub struct FileSink {
    config: FileConfig,
    current: Option<Current>,
    buffer: Vec<u8>,
    /// The entry at the watermark and its checksum, when the watermark keeps one.
    held: Option<(u64, u32)>,
}

impl FileSink {
    pub fn new(config: FileConfig) -> FileSink {
        FileSink { config, current: None, buffer: Vec::new(), held: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.config.dir.join(name)
    }

    fn read_watermark(&self) -> Result<Watermark, SinkError> {
        let path = self.path(WATERMARK_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Watermark::parse(&text)
                .ok_or_else(|| SinkError::Destination(format!("{} is damaged: {text:?}", path.display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Watermark::default()),
            Err(error) => Err(io(&path, error)),
        }
    }

    fn write_watermark(&self, watermark: &Watermark) -> Result<(), SinkError> {
        let temporary = self.path(&format!("{WATERMARK_FILE}.new"));
        let mut file = File::create(&temporary).map_err(|error| io(&temporary, error))?;
        file.write_all(watermark.line().as_bytes()).map_err(|error| io(&temporary, error))?;
        file.sync_data().map_err(|error| io(&temporary, error))?;
        let path = self.path(WATERMARK_FILE);
        std::fs::rename(&temporary, &path).map_err(|error| io(&path, error))?;
        sync_dir(&self.config.dir)
    }

    /// Starts a new file for entries from `first_sequence` on.
    fn begin_file(&mut self, first_sequence: u64) -> Result<(), SinkError> {
        let name = format!("{first_sequence:020}{FILE_SUFFIX}");
        let path = self.path(&name);
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|error| io(&path, error))?;
        self.current = Some(Current { name, file, length: 0 });
        Ok(())
    }

    /// Deletes the oldest files beyond the count kept, never `watermark_file`. Called only
    /// once the watermark names the newest file: until then the file it names is the one
    /// resume reopens, and with `files_keep` 1 it is the one a trim at rotation would take
    /// (a failed write or a crash in between left a watermark naming a deleted file, and a
    /// sink that could never resume).
    fn trim(&self, watermark_file: &str) -> Result<(), SinkError> {
        if self.config.files_keep == 0 {
            return Ok(());
        }
        let files = files(&self.config.dir)?;
        let excess = files.len().saturating_sub(self.config.files_keep);
        for (_, old) in files[..excess].iter().filter(|(_, name)| name != watermark_file) {
            std::fs::remove_file(self.path(old)).map_err(|error| io(&self.path(old), error))?;
        }
        Ok(())
    }

    fn write_batch(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else { return Ok(()) };
        let rotating = self.current.as_ref().is_none_or(|current| current.length >= self.config.file_bytes_max);
        if rotating {
            self.begin_file(first.sequence)?;
        }
        self.buffer.clear();
        for outcome in batch {
            write_entry_line(outcome, &mut self.buffer);
        }
        let Some(current) = self.current.as_mut() else { return Err(SinkError::Destination("no file".into())) };
        let path = self.config.dir.join(&current.name);
        current.file.write_all(&self.buffer).map_err(|error| io(&path, error))?;
        current.file.sync_data().map_err(|error| io(&path, error))?;
        current.length += self.buffer.len() as u64;
        let watermark = Watermark {
            sequence: last.sequence,
            file: current.name.clone(),
            length: current.length,
            entry_checksum: Some(last.checksum),
        };
        self.write_watermark(&watermark)?;
        if rotating { self.trim(&watermark.file) } else { Ok(()) }
    }
}

impl Sink for FileSink {
    fn resume(&mut self) -> Result<u64, SinkError> {
        self.current = None;
        let dir = self.config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|error| io(&dir, error))?;
        let watermark = self.read_watermark()?;
        // Files begun after the watermark hold nothing acknowledged.
        for (first, name) in files(&dir)? {
            if first > watermark.sequence && name != watermark.file {
                std::fs::remove_file(self.path(&name)).map_err(|error| io(&self.path(&name), error))?;
            }
        }
        if !watermark.file.is_empty() {
            let path = self.path(&watermark.file);
            let file = OpenOptions::new().append(true).open(&path).map_err(|error| io(&path, error))?;
            // A torn or unacknowledged tail goes: the next batch follows the watermark.
            file.set_len(watermark.length).map_err(|error| io(&path, error))?;
            file.sync_all().map_err(|error| io(&path, error))?;
            self.current = Some(Current { name: watermark.file.clone(), file, length: watermark.length });
        }
        sync_dir(&dir)?;
        self.held = watermark.entry_checksum.map(|checksum| (watermark.sequence, checksum));
        Ok(watermark.sequence)
    }

    fn held_entry(&self) -> Option<(u64, u32)> {
        self.held
    }

    fn write(&mut self, batch: &[Outcome]) -> Result<(), SinkError> {
        let result = self.write_batch(batch);
        if result.is_err() {
            // Resume finds where the files stand from the watermark.
            self.current = None;
        }
        result
    }
}

/// The data files in `dir`, by first sequence.
pub fn files(dir: &Path) -> Result<Vec<(u64, String)>, SinkError> {
    let entries = std::fs::read_dir(dir).map_err(|error| io(dir, error))?;
    let mut found = Vec::new();
    for entry in entries {
        let name = entry.map_err(|error| io(dir, error))?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(FILE_SUFFIX) else { continue };
        if let Ok(first) = digits.parse::<u64>()
            && digits.len() == 20
        {
            found.push((first, name.to_string()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(|error| io(dir, error))
}

fn io(path: &Path, error: std::io::Error) -> SinkError {
    SinkError::Destination(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_reads_back_and_a_damaged_one_is_refused() {
        let file = "00000000000000000001.jsonl".to_owned();
        let watermark = Watermark { sequence: 42, file: file.clone(), length: 977, entry_checksum: Some(0xdead_beef) };
        let line = watermark.line();
        assert_eq!(Watermark::parse(&line), Some(watermark));
        let empty = Watermark::default();
        assert_eq!(Watermark::parse(&empty.line()), Some(empty));
        // Written by a release before entry checksums: read, with none.
        let body = format!("{WATERMARK_MAGIC_1} 42 {file} 977");
        let version_1 = format!("{body} {:08x}\n", crc32c::crc32c(body.as_bytes()));
        assert_eq!(Watermark::parse(&version_1), Some(Watermark { entry_checksum: None, ..watermark_42(&file) }));
        for cut in 0..line.len() {
            assert_eq!(Watermark::parse(&line[..cut]), None, "cut at {cut}");
        }
        let altered = line.replacen("42", "43", 1);
        assert_eq!(Watermark::parse(&altered), None, "a changed sequence fails the checksum");
    }

    fn watermark_42(file: &str) -> Watermark {
        Watermark { sequence: 42, file: file.to_owned(), length: 977, entry_checksum: None }
    }
}
