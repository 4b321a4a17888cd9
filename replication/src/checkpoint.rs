//! Checkpoint shipping: when a standby needs records the primary no longer holds, the
//! primary sends the files a restart needs (its newest snapshot today) and then the tail.
//!
//! The files are opaque here: a name and bytes, announced with their lengths and BLAKE3
//! hashes in one `CheckpointOffer`, then sent in order in `CheckpointChunk`s. The receiver
//! checks names, order, lengths and hashes; the driver then writes the files durably and
//! loads them before it uses them (the format belongs to the node, not to this crate).

use crate::ChainHash;
use crate::message::{CheckpointFileInfo, Message};

/// Bytes of file data per chunk message.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Files in one checkpoint, at most.
pub const FILES_MAX: usize = 16;
/// Longest file name.
pub const FILE_NAME_BYTES_MAX: usize = 128;
/// Bytes of all files of one checkpoint together, at most. The receiver holds the files
/// in memory until they are complete (docs/design.md §7a, "Limits"), so an offer that
/// announces more is refused before a chunk is read: 4 GiB is the snapshot of a few
/// million open accounts plus the history dump of a few million transfers (≈ 550 bytes
/// each with their list and balance rows).
pub const CHECKPOINT_BYTES_MAX: u64 = 4 << 30;

/// A checkpoint as the primary reads it and as the standby receives it: the files a
/// restart needs, covering journal records up to `sequence`, whose chain hash is `chain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub sequence: u64,
    pub chain: ChainHash,
    pub files: Vec<CheckpointFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

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
    #[error("checkpoint file {0} does not match its announced BLAKE3 hash")]
    HashMismatch(String),
    #[error("the checkpoint is incomplete")]
    Incomplete,
}

/// The primary's messages for `checkpoint`: the offer, then every chunk in order.
pub fn messages(epoch: u32, checkpoint: &Checkpoint) -> Vec<Message> {
    let files = checkpoint
        .files
        .iter()
        .map(|file| CheckpointFileInfo {
            name: file.name.clone(),
            length: file.bytes.len() as u64,
            hash: *blake3::hash(&file.bytes).as_bytes(),
        })
        .collect();
    let mut out =
        vec![Message::CheckpointOffer { epoch, sequence: checkpoint.sequence, chain: checkpoint.chain, files }];
    for (index, file) in checkpoint.files.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        for (number, bytes) in file.bytes.chunks(CHUNK_BYTES).enumerate() {
            let offset = (number * CHUNK_BYTES) as u64;
            out.push(Message::CheckpointChunk { epoch, file: index, offset, bytes: bytes.to_vec() });
        }
    }
    out
}

/// The standby's side: collects the chunks of one offered checkpoint.
#[derive(Debug)]
pub struct Receiving {
    sequence: u64,
    chain: ChainHash,
    infos: Vec<CheckpointFileInfo>,
    files: Vec<Vec<u8>>,
    /// The file the next chunk belongs to (files are sent in order, each from offset 0).
    current: usize,
}

impl Receiving {
    /// Starts receiving an offered checkpoint, refusing names that are not plain file names.
    pub fn offer(
        sequence: u64,
        chain: ChainHash,
        infos: Vec<CheckpointFileInfo>,
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
        let files = vec![Vec::new(); infos.len()];
        let mut receiving = Receiving { sequence, chain, infos, files, current: 0 };
        receiving.skip_full_files();
        Ok(receiving)
    }

    /// One chunk; chunks must arrive in order, with no gap and no overlap.
    pub fn chunk(&mut self, file: u32, offset: u64, bytes: &[u8]) -> Result<(), CheckpointError> {
        let expected_offset = self.files.get(self.current).map_or(0, |data| data.len() as u64);
        let expected_file = u32::try_from(self.current).unwrap_or(u32::MAX);
        if file != expected_file || offset != expected_offset || self.current >= self.files.len() {
            return Err(CheckpointError::OutOfOrder { file, offset, expected_file, expected_offset });
        }
        let info = &self.infos[self.current];
        let end = offset.checked_add(bytes.len() as u64);
        if end.is_none_or(|end| end > info.length) {
            return Err(CheckpointError::TooLong(info.name.clone()));
        }
        self.files[self.current].extend_from_slice(bytes);
        self.skip_full_files();
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.current >= self.files.len()
    }

    /// The whole checkpoint, once every file is complete and matches its hash.
    pub fn finish(self) -> Result<Checkpoint, CheckpointError> {
        if !self.is_complete() {
            return Err(CheckpointError::Incomplete);
        }
        let mut files = Vec::with_capacity(self.files.len());
        for (info, bytes) in self.infos.into_iter().zip(self.files) {
            if *blake3::hash(&bytes).as_bytes() != info.hash {
                return Err(CheckpointError::HashMismatch(info.name));
            }
            files.push(CheckpointFile { name: info.name, bytes });
        }
        Ok(Checkpoint { sequence: self.sequence, chain: self.chain, files })
    }

    fn skip_full_files(&mut self) {
        while self.current < self.files.len()
            && self.files[self.current].len() as u64 == self.infos[self.current].length
        {
            self.current += 1;
        }
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

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            sequence: 40,
            chain: [9; 16],
            files: vec![
                CheckpointFile {
                    name: "00000000000000000040.snap".into(),
                    bytes: (0..CHUNK_BYTES * 2 + 5).map(|i| i as u8).collect(),
                },
                CheckpointFile { name: "empty".into(), bytes: Vec::new() },
                CheckpointFile { name: "small".into(), bytes: vec![1, 2, 3] },
            ],
        }
    }

    fn receive(messages: &[Message]) -> Result<Checkpoint, CheckpointError> {
        let Some(Message::CheckpointOffer { sequence, chain, files, .. }) = messages.first() else {
            panic!("the offer comes first")
        };
        let mut receiving = Receiving::offer(*sequence, *chain, files.clone())?;
        for message in &messages[1..] {
            let Message::CheckpointChunk { file, offset, bytes, .. } = message else { panic!("then chunks") };
            receiving.chunk(*file, *offset, bytes)?;
        }
        receiving.finish()
    }

    #[test]
    fn a_checkpoint_arrives_whole_in_chunks() {
        let messages = messages(3, &checkpoint());
        assert_eq!(messages.len(), 1 + 3 + 1, "an offer, three chunks of the big file, one of the small one");
        assert_eq!(receive(&messages), Ok(checkpoint()));
    }

    #[test]
    fn damaged_reordered_missing_or_long_chunks_are_refused() {
        let good = messages(3, &checkpoint());
        let mut flipped = good.clone();
        if let Message::CheckpointChunk { bytes, .. } = &mut flipped[2] {
            bytes[7] ^= 1;
        }
        assert!(matches!(receive(&flipped), Err(CheckpointError::HashMismatch(_))));
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(matches!(receive(&swapped), Err(CheckpointError::OutOfOrder { .. })));
        assert_eq!(receive(&good[..good.len() - 1]), Err(CheckpointError::Incomplete));
        let mut long = good.clone();
        if let Some(Message::CheckpointChunk { bytes, .. }) = long.last_mut() {
            bytes.push(0);
        }
        assert!(matches!(receive(&long), Err(CheckpointError::TooLong(_))));
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for name in ["", ".", "..", "../x", "a/b", "/etc", "a\0b", "é"] {
            let info = CheckpointFileInfo { name: name.into(), length: 0, hash: [0; 32] };
            assert!(matches!(Receiving::offer(1, [0; 16], vec![info]), Err(CheckpointError::BadName(_))), "{name:?}");
        }
        let info = CheckpointFileInfo { name: "a".into(), length: 0, hash: [0; 32] };
        assert!(matches!(
            Receiving::offer(1, [0; 16], vec![info.clone(), info]),
            Err(CheckpointError::DuplicateName(_))
        ));
        assert_eq!(Receiving::offer(1, [0; 16], vec![]).err(), Some(CheckpointError::NoFiles));
    }

    #[test]
    fn an_offer_announcing_more_than_the_limit_is_refused_before_any_chunk() {
        let file = |name: &str, length: u64| CheckpointFileInfo { name: name.into(), length, hash: [0; 32] };
        let at_limit = vec![file("a", CHECKPOINT_BYTES_MAX - 1), file("b", 1)];
        assert!(Receiving::offer(1, [0; 16], at_limit).is_ok());
        let over = vec![file("a", CHECKPOINT_BYTES_MAX), file("b", 1)];
        assert_eq!(Receiving::offer(1, [0; 16], over).err(), Some(CheckpointError::TooLarge(CHECKPOINT_BYTES_MAX + 1)));
        let overflowing = vec![file("a", u64::MAX), file("b", 1)];
        assert_eq!(Receiving::offer(1, [0; 16], overflowing).err(), Some(CheckpointError::TooLarge(u64::MAX)));
    }
}
