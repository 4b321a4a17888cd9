//! The outcome log: `DIR/events/outcomes.log`, the result of every applied mutation, in
//! journal order, for sinks to tail. It is derived from the journal and rebuilt from it on
//! start, so it is written through a buffer and never synced: a crash loses only a tail
//! that the next start's replay writes again.
//!
//! Record layout (little-endian): an [`OutcomeHeader`] of 32 bytes, then `count`
//! [`EventResult`]s of 16 bytes. The checksum is CRC32C over the header (checksum zeroed)
//! and the results, so a torn tail is recognised and cut.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};
use crossbeam::channel::Receiver;
use tally_codecs::EventResult;
use tally_codecs::wire::{EVENTS_PER_REQUEST_MAX, Reply};
use tally_engine::pipeline::{Command, OutcomeLog};

use crate::error::NodeError;

/// "TOUT" as a little-endian u32.
const OUTCOME_MAGIC: u32 = u32::from_le_bytes(*b"TOUT");
/// Buffered bytes before a write reaches the file: a few full batches of results.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
struct OutcomeHeader {
    magic: u32,
    operation: u8,
    reserved: [u8; 3],
    count: u32,
    checksum: u32,
    /// The journal sequence of the input.
    sequence: u64,
    /// The input's timestamp as the sequencer assigned it.
    timestamp: u64,
}

const _: () = assert!(size_of::<OutcomeHeader>() == 32);

impl OutcomeHeader {
    fn checksum(&self, results: &[u8]) -> u32 {
        let zeroed = OutcomeHeader { checksum: 0, ..*self };
        crc32c::crc32c_append(crc32c::crc32c(bytemuck::bytes_of(&zeroed)), results)
    }
}

/// The writer of the outcome log.
pub struct OutcomeFile {
    path: PathBuf,
    /// `None` after a write failed: the log then stops, and the next start rebuilds it.
    writer: Option<BufWriter<File>>,
    /// The last sequence written; replay writes only what follows it.
    last_sequence: u64,
    /// Journal sequences of the requests the journal stage appended, in order: the
    /// pipeline hands this stage only timestamps, commands and replies.
    sequences: Receiver<u64>,
}

impl OutcomeFile {
    /// Opens the log, keeping its valid records up to `journal_last_sequence` and cutting
    /// whatever follows (a torn tail, or records of inputs the journal no longer holds).
    pub fn open(path: &Path, journal_last_sequence: u64, sequences: Receiver<u64>) -> Result<OutcomeFile, NodeError> {
        let io = |source| NodeError::Io { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let (valid_bytes, last_sequence) = scan(&mut file, journal_last_sequence).map_err(io)?;
        file.set_len(valid_bytes).map_err(io)?;
        file.seek(SeekFrom::Start(valid_bytes)).map_err(io)?;
        let writer = Some(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file));
        Ok(OutcomeFile { path: path.to_path_buf(), writer, last_sequence, sequences })
    }

    /// Records the outcome of the journal record `sequence` during replay, unless the log
    /// already has it.
    pub fn catch_up(&mut self, sequence: u64, timestamp: u64, reply: &Reply) {
        if sequence > self.last_sequence {
            self.write(sequence, timestamp, reply);
        }
    }

    fn write(&mut self, sequence: u64, timestamp: u64, reply: &Reply) {
        let results = match reply {
            Reply::CreateAccounts(results) | Reply::CreateTransfers(results) | Reply::UpsertLimitProfiles(results) => {
                results
            }
            _ => return,
        };
        let Some(writer) = self.writer.as_mut() else { return };
        let bytes: &[u8] = bytemuck::cast_slice(results);
        // A reply never holds more than EVENTS_PER_REQUEST_MAX results, so the count fits.
        let count = u32::try_from(results.len()).unwrap_or(u32::MAX);
        let mut header = OutcomeHeader {
            magic: OUTCOME_MAGIC,
            operation: reply.operation() as u8,
            reserved: [0; 3],
            count,
            checksum: 0,
            sequence,
            timestamp,
        };
        header.checksum = header.checksum(bytes);
        let written = writer.write_all(bytemuck::bytes_of(&header)).and_then(|()| writer.write_all(bytes));
        match written {
            Ok(()) => self.last_sequence = sequence,
            Err(error) => self.fail(&error),
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        let path = self.path.display();
        eprintln!("tally: outcome log {path} stopped: {error}; the next start rebuilds it from the journal");
        self.writer = None;
    }
}

impl OutcomeLog for OutcomeFile {
    fn record(&mut self, timestamp: u64, command: &Command, reply: &Reply) {
        if !command.is_mutation() {
            return;
        }
        // The journal stage appended this input (and sent its sequence) before the
        // business logic applied it, so the sequence is always there.
        match self.sequences.try_recv() {
            Ok(sequence) => self.write(sequence, timestamp, reply),
            Err(_) => {
                let error = std::io::Error::other("the journal sequence of an outcome is missing");
                self.fail(&error);
            }
        }
    }

    fn end_of_batch(&mut self) {
        // Makes the batch visible to tailers; the log is derived, so no sync.
        if let Some(Err(error)) = self.writer.as_mut().map(BufWriter::flush) {
            self.fail(&error);
        }
    }
}

/// Bytes of valid records from the start, and the last sequence among them.
fn scan(file: &mut File, journal_last_sequence: u64) -> std::io::Result<(u64, u64)> {
    let mut reader = BufReader::new(file);
    let mut results = vec![0u8; EVENTS_PER_REQUEST_MAX * size_of::<EventResult>()];
    let (mut valid_bytes, mut last_sequence) = (0u64, 0u64);
    loop {
        let mut header = OutcomeHeader::default();
        if !read_exact_or_end(&mut reader, bytemuck::bytes_of_mut(&mut header))? {
            return Ok((valid_bytes, last_sequence));
        }
        let count = header.count as usize;
        let plausible = header.magic == OUTCOME_MAGIC
            && count <= EVENTS_PER_REQUEST_MAX
            && header.sequence > last_sequence
            && header.sequence <= journal_last_sequence;
        if !plausible {
            return Ok((valid_bytes, last_sequence));
        }
        let body = &mut results[..count * size_of::<EventResult>()];
        if !read_exact_or_end(&mut reader, body)? || header.checksum(body) != header.checksum {
            return Ok((valid_bytes, last_sequence));
        }
        valid_bytes += (size_of::<OutcomeHeader>() + body.len()) as u64;
        last_sequence = header.sequence;
    }
}

/// Fills `buffer`, or answers `false` when the file ends first.
fn read_exact_or_end(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use tally_codecs::EventResult;

    use super::*;

    fn path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tally-outcomes-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        dir.join("outcomes.log")
    }

    fn open(path: &Path, journal_last_sequence: u64) -> OutcomeFile {
        let (_, sequences) = crossbeam::channel::unbounded();
        OutcomeFile::open(path, journal_last_sequence, sequences).expect("the log opens")
    }

    fn reply(timestamp: u64) -> Reply {
        Reply::CreateTransfers(vec![EventResult { timestamp, status: 0, reserved: 0 }; 3])
    }

    #[test]
    fn reopening_keeps_whole_records_and_cuts_a_torn_tail() {
        let path = path("torn");
        let mut log = open(&path, 10);
        for sequence in 1..=3 {
            log.catch_up(sequence, sequence * 100, &reply(sequence));
        }
        log.end_of_batch();
        drop(log);
        let whole = std::fs::metadata(&path).expect("the log exists").len();
        assert_eq!(whole, 3 * (32 + 3 * 16));
        let mut file = OpenOptions::new().append(true).open(&path).expect("open for append");
        file.write_all(&[0x54; 40]).expect("append a torn record");
        drop(file);

        let mut log = open(&path, 10);
        assert_eq!(log.last_sequence, 3);
        log.catch_up(3, 300, &reply(3));
        log.catch_up(4, 400, &reply(4));
        log.end_of_batch();
        drop(log);
        assert_eq!(std::fs::metadata(&path).expect("the log exists").len(), whole + 32 + 3 * 16);
        let _ = std::fs::remove_dir_all(path.parent().expect("a parent directory"));
    }

    #[test]
    fn records_beyond_the_journal_are_dropped() {
        let path = path("beyond");
        let mut log = open(&path, 10);
        for sequence in 1..=5 {
            log.catch_up(sequence, sequence, &reply(sequence));
        }
        drop(log);
        let log = open(&path, 2);
        assert_eq!(log.last_sequence, 2);
        drop(log);
        assert_eq!(std::fs::metadata(&path).expect("the log exists").len(), 2 * (32 + 3 * 16));
        let _ = std::fs::remove_dir_all(path.parent().expect("a parent directory"));
    }
}
