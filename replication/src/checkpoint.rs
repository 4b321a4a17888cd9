//! Checkpoint shipping: when a standby needs records the primary no longer holds, the
//! primary sends the files a restart needs (its newest snapshot and its history dump)
//! and then the tail.
//!
//! The files are opaque here: a name, a length and a BLAKE3 hash each, announced in one
//! `CheckpointOffer`, then sent in order in `CheckpointChunk`s that carry the BLAKE3 hash
//! of their own bytes. Neither side holds a file in memory: the sender reads one chunk at
//! a time from disk ([`chunks`] says which bytes, [`chunk`] makes the message), and the
//! receiver ([`Receiving`]) checks each chunk (its place, its length, its own hash, and
//! the file's running hash once the file is complete) and answers with the one action its
//! driver performs: write these bytes to staged file `file` at `offset`. The driver owns
//! the staging files; this core never sees a path (docs/design.md §7a, "Checkpoints").

use crate::ChainHash;
use crate::message::{CheckpointFileInfo, Message};

/// Bytes of file data per chunk message by default.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The smallest and largest chunk size a node may be configured with: a receiver refuses
/// a chunk larger than its own configured size, the only file data it holds in memory.
pub const CHUNK_BYTES_MIN: usize = 512;
pub const CHUNK_BYTES_MAX: usize = 4 << 20;
/// Files in one checkpoint, at most.
pub const FILES_MAX: usize = 16;
/// Longest file name.
pub const FILE_NAME_BYTES_MAX: usize = 128;
/// Bytes of all files of one checkpoint together, at most: a bound on what an offer may
/// announce at all (1 TiB). The real bound is the receiver's free disk, which its driver
/// checks against [`Receiving::total_bytes`] before the first chunk is read.
pub const CHECKPOINT_BYTES_MAX: u64 = 1 << 40;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("a checkpoint of {0} files (at most {FILES_MAX})")]
    TooManyFiles(usize),
    #[error("a checkpoint with no file")]
    NoFiles,
    #[error("a checkpoint of {0} bytes (at most {CHECKPOINT_BYTES_MAX})")]
    TooLarge(u64),
    #[error("checkpoint file name {0:?} is not a plain file name")]
    BadName(String),
    #[error("checkpoint file name {0:?} appears twice")]
    DuplicateName(String),
    #[error(
        "a chunk for file {file} at offset {offset} arrived where file {expected_file} at offset {expected_offset} was expected"
    )]
    OutOfOrder { file: u32, offset: u64, expected_file: u32, expected_offset: u64 },
    #[error("a chunk runs past the announced length of checkpoint file {0}")]
    TooLong(String),
    #[error("a chunk of {bytes} bytes is larger than this node's chunk size {max}")]
    ChunkTooLarge { bytes: usize, max: usize },
    #[error("an empty chunk for checkpoint file {0}")]
    EmptyChunk(String),
    #[error("a chunk of checkpoint file {name} at offset {offset} does not match its BLAKE3 hash")]
    ChunkHashMismatch { name: String, offset: u64 },
    #[error("checkpoint file {0} does not match its announced BLAKE3 hash")]
    HashMismatch(String),
    #[error("the checkpoint is incomplete")]
    Incomplete,
}

/// One chunk the sender reads and sends: `length` bytes of file `file` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRead {
    pub file: u32,
    pub offset: u64,
    pub length: usize,
}

/// The chunks of files of these lengths, in the order they must be sent (files in order,
/// each from offset 0, every chunk `chunk_bytes` long but a file's last; an empty file
/// has none).
pub fn chunks(lengths: &[u64], chunk_bytes: usize) -> impl Iterator<Item = ChunkRead> + '_ {
    let step = chunk_bytes.max(1) as u64;
    lengths.iter().enumerate().flat_map(move |(index, &length)| {
        let file = u32::try_from(index).unwrap_or(u32::MAX);
        (0..length.div_ceil(step)).map(move |number| {
            let offset = number * step;
            // At most `step`, which came from a usize.
            let length = usize::try_from((length - offset).min(step)).unwrap_or(usize::MAX);
            ChunkRead { file, offset, length }
        })
    })
}

/// The message carrying the bytes read for `read`.
pub fn chunk(epoch: u32, read: ChunkRead, bytes: Vec<u8>) -> Message {
    let hash = *blake3::hash(&bytes).as_bytes();
    Message::CheckpointChunk { epoch, file: read.file, offset: read.offset, bytes, hash }
}

/// What the driver does with an accepted chunk: write its bytes to the staged file
/// number `file` (the offer's order) at `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub file: usize,
    pub offset: u64,
}

/// The standby's side: checks the chunks of one offered checkpoint as they arrive.
#[derive(Debug)]
pub struct Receiving {
    sequence: u64,
    chain: ChainHash,
    infos: Vec<CheckpointFileInfo>,
    chunk_bytes_max: usize,
    /// The file the next chunk belongs to (files are sent in order, each from offset 0),
    /// how much of it has arrived, and its running hash.
    current: usize,
    received: u64,
    hasher: blake3::Hasher,
}

impl Receiving {
    /// Starts receiving an offered checkpoint, refusing names that are not plain file
    /// names, and chunks larger than `chunk_bytes_max` later.
    pub fn offer(
        sequence: u64,
        chain: ChainHash,
        infos: Vec<CheckpointFileInfo>,
        chunk_bytes_max: usize,
    ) -> Result<Receiving, CheckpointError> {
        if infos.is_empty() {
            return Err(CheckpointError::NoFiles);
        }
        if infos.len() > FILES_MAX {
            return Err(CheckpointError::TooManyFiles(infos.len()));
        }
        let total = infos.iter().try_fold(0u64, |total, info| total.checked_add(info.length));
        match total {
            Some(total) if total <= CHECKPOINT_BYTES_MAX => {}
            Some(total) => return Err(CheckpointError::TooLarge(total)),
            None => return Err(CheckpointError::TooLarge(u64::MAX)),
        }
        for (index, info) in infos.iter().enumerate() {
            if !plain_file_name(&info.name) {
                return Err(CheckpointError::BadName(info.name.clone()));
            }
            if infos[..index].iter().any(|earlier| earlier.name == info.name) {
                return Err(CheckpointError::DuplicateName(info.name.clone()));
            }
        }
        let mut receiving = Receiving {
            sequence,
            chain,
            infos,
            chunk_bytes_max,
            current: 0,
            received: 0,
            hasher: blake3::Hasher::new(),
        };
        receiving.finish_full_files()?;
        Ok(receiving)
    }

    /// The files announced, in order: the driver creates one staging file for each.
    pub fn files(&self) -> &[CheckpointFileInfo] {
        &self.infos
    }

    /// Bytes of all files together (at most [`CHECKPOINT_BYTES_MAX`]).
    pub fn total_bytes(&self) -> u64 {
        self.infos.iter().map(|info| info.length).sum()
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    pub fn chain(&self) -> ChainHash {
        self.chain
    }

    /// One chunk; chunks must arrive in order, with no gap and no overlap, each matching
    /// its hash. A file's last chunk is accepted only if the whole file matches its
    /// announced hash. The driver writes the bytes only when this says so.
    pub fn chunk(&mut self, file: u32, offset: u64, bytes: &[u8], hash: &[u8; 32]) -> Result<Write, CheckpointError> {
        let expected_file = u32::try_from(self.current).unwrap_or(u32::MAX);
        if self.is_complete() || file != expected_file || offset != self.received {
            return Err(CheckpointError::OutOfOrder { file, offset, expected_file, expected_offset: self.received });
        }
        if bytes.len() > self.chunk_bytes_max {
            return Err(CheckpointError::ChunkTooLarge { bytes: bytes.len(), max: self.chunk_bytes_max });
        }
        let info = &self.infos[self.current];
        if bytes.is_empty() {
            return Err(CheckpointError::EmptyChunk(info.name.clone()));
        }
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > info.length) {
            return Err(CheckpointError::TooLong(info.name.clone()));
        }
        if blake3::hash(bytes).as_bytes() != hash {
            return Err(CheckpointError::ChunkHashMismatch { name: info.name.clone(), offset });
        }
        self.hasher.update(bytes);
        self.received += bytes.len() as u64;
        let write = Write { file: self.current, offset };
        self.finish_full_files()?;
        Ok(write)
    }

    pub fn is_complete(&self) -> bool {
        self.current >= self.infos.len()
    }

    /// The files received, once every one is complete (each was checked against its hash
    /// as its last chunk arrived).
    pub fn finish(self) -> Result<Vec<CheckpointFileInfo>, CheckpointError> {
        if !self.is_complete() {
            return Err(CheckpointError::Incomplete);
        }
        Ok(self.infos)
    }

    /// Moves past every file that is complete (empty files at once), checking each
    /// against its announced hash.
    fn finish_full_files(&mut self) -> Result<(), CheckpointError> {
        while let Some(info) = self.infos.get(self.current)
            && self.received == info.length
        {
            if self.hasher.finalize().as_bytes() != &info.hash {
                return Err(CheckpointError::HashMismatch(info.name.clone()));
            }
            self.current += 1;
            self.received = 0;
            self.hasher = blake3::Hasher::new();
        }
        Ok(())
    }
}

/// A name that can only mean a file directly in the target directory.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= FILE_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL_CHUNK: usize = 1000;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("00000000000000000040.snap".into(), (0..SMALL_CHUNK * 2 + 5).map(|i| i as u8).collect()),
            ("empty".into(), Vec::new()),
            ("small".into(), vec![1, 2, 3]),
        ]
    }

    fn infos(files: &[(String, Vec<u8>)]) -> Vec<CheckpointFileInfo> {
        files
            .iter()
            .map(|(name, bytes)| CheckpointFileInfo {
                name: name.clone(),
                length: bytes.len() as u64,
                hash: *blake3::hash(bytes).as_bytes(),
            })
            .collect()
    }

    /// The chunk messages a sender reading `files` sends.
    fn messages(files: &[(String, Vec<u8>)], chunk_bytes: usize) -> Vec<Message> {
        let lengths: Vec<u64> = files.iter().map(|(_, bytes)| bytes.len() as u64).collect();
        chunks(&lengths, chunk_bytes)
            .map(|read| {
                let offset = read.offset as usize;
                chunk(3, read, files[read.file as usize].1[offset..offset + read.length].to_vec())
            })
            .collect()
    }

    /// Receives `messages` into buffers standing in for the staged files, as the driver
    /// writes them: only what is accepted, where the core says.
    fn receive(files: &[(String, Vec<u8>)], messages: &[Message]) -> Result<Vec<Vec<u8>>, CheckpointError> {
        let mut receiving = Receiving::offer(40, [9; 16], infos(files), SMALL_CHUNK)?;
        let mut staged = vec![Vec::new(); receiving.files().len()];
        for message in messages {
            let Message::CheckpointChunk { file, offset, bytes, hash, .. } = message else { panic!("chunks only") };
            let write = receiving.chunk(*file, *offset, bytes, hash)?;
            let staged = &mut staged[write.file];
            assert_eq!(staged.len() as u64, write.offset, "every write continues its file");
            staged.extend_from_slice(bytes);
        }
        receiving.finish()?;
        Ok(staged)
    }

    #[test]
    fn a_checkpoint_arrives_whole_in_chunks_no_larger_than_the_receivers_size() {
        let files = files();
        let messages = messages(&files, SMALL_CHUNK);
        assert_eq!(messages.len(), 3 + 1, "three chunks of the big file, none of the empty one, one of the small one");
        let expected: Vec<Vec<u8>> = files.iter().map(|(_, bytes)| bytes.clone()).collect();
        assert_eq!(receive(&files, &messages), Ok(expected));
        let larger = self::messages(&files, SMALL_CHUNK + 1);
        assert_eq!(
            receive(&files, &larger),
            Err(CheckpointError::ChunkTooLarge { bytes: SMALL_CHUNK + 1, max: SMALL_CHUNK })
        );
    }

    #[test]
    fn damaged_reordered_missing_or_long_chunks_are_refused() {
        let files = files();
        let good = messages(&files, SMALL_CHUNK);
        // A flipped bit with the chunk's own hash recomputed is caught by the file's hash.
        let mut rehashed = good.clone();
        if let Message::CheckpointChunk { bytes, hash, .. } = &mut rehashed[1] {
            bytes[7] ^= 1;
            *hash = *blake3::hash(bytes).as_bytes();
        }
        assert!(matches!(receive(&files, &rehashed), Err(CheckpointError::HashMismatch(_))));
        // Without, by the chunk's.
        let mut flipped = good.clone();
        if let Message::CheckpointChunk { bytes, .. } = &mut flipped[1] {
            bytes[7] ^= 1;
        }
        assert!(matches!(receive(&files, &flipped), Err(CheckpointError::ChunkHashMismatch { offset: 1000, .. })));
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        assert!(matches!(receive(&files, &swapped), Err(CheckpointError::OutOfOrder { .. })));
        assert_eq!(receive(&files, &good[..good.len() - 1]), Err(CheckpointError::Incomplete));
        let mut long = good.clone();
        if let Some(Message::CheckpointChunk { bytes, hash, .. }) = long.last_mut() {
            bytes.push(0);
            *hash = *blake3::hash(bytes).as_bytes();
        }
        assert!(matches!(receive(&files, &long), Err(CheckpointError::TooLong(_))));
        let mut after = good.clone();
        after.push(good[0].clone());
        assert!(matches!(receive(&files, &after), Err(CheckpointError::OutOfOrder { .. })));
    }

    #[test]
    fn an_empty_file_must_match_its_announced_hash_too() {
        let mut announced = infos(&files());
        announced[1].hash = [1; 32];
        let mut receiving = Receiving::offer(40, [9; 16], announced, SMALL_CHUNK).expect("offer");
        for message in messages(&files(), SMALL_CHUNK).iter().take(3) {
            let Message::CheckpointChunk { file, offset, bytes, hash, .. } = message else { panic!("chunks only") };
            if let Err(error) = receiving.chunk(*file, *offset, bytes, hash) {
                assert_eq!(error, CheckpointError::HashMismatch("empty".into()));
                return;
            }
        }
        panic!("the empty file's wrong hash was accepted");
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for name in ["", ".", "..", "../x", "a/b", "/etc", "a\0b", "é"] {
            let info = CheckpointFileInfo { name: name.into(), length: 0, hash: [0; 32] };
            assert!(
                matches!(Receiving::offer(1, [0; 16], vec![info], CHUNK_BYTES), Err(CheckpointError::BadName(_))),
                "{name:?}"
            );
        }
        let info = CheckpointFileInfo { name: "a".into(), length: 1, hash: [0; 32] };
        assert!(matches!(
            Receiving::offer(1, [0; 16], vec![info.clone(), info], CHUNK_BYTES),
            Err(CheckpointError::DuplicateName(_))
        ));
        assert_eq!(Receiving::offer(1, [0; 16], vec![], CHUNK_BYTES).err(), Some(CheckpointError::NoFiles));
    }

    #[test]
    fn an_offer_announcing_more_than_the_limit_is_refused_before_any_chunk() {
        let file = |name: &str, length: u64| CheckpointFileInfo { name: name.into(), length, hash: [0; 32] };
        let at_limit = vec![file("a", CHECKPOINT_BYTES_MAX - 1), file("b", 1)];
        let receiving = Receiving::offer(1, [0; 16], at_limit, CHUNK_BYTES).expect("at the limit");
        assert_eq!(receiving.total_bytes(), CHECKPOINT_BYTES_MAX);
        let over = vec![file("a", CHECKPOINT_BYTES_MAX), file("b", 1)];
        assert_eq!(
            Receiving::offer(1, [0; 16], over, CHUNK_BYTES).err(),
            Some(CheckpointError::TooLarge(CHECKPOINT_BYTES_MAX + 1))
        );
        let overflowing = vec![file("a", u64::MAX), file("b", 1)];
        assert_eq!(
            Receiving::offer(1, [0; 16], overflowing, CHUNK_BYTES).err(),
            Some(CheckpointError::TooLarge(u64::MAX))
        );
    }
}
