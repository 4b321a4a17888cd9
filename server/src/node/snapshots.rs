//! Snapshots of the ledger: the newest valid one is loaded at start, so that replay
//! begins after it; a node that shuts down cleanly writes one covering its whole journal.
//! A snapshot only shortens recovery; the journal keeps every record.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use tally_codecs::snapshot::LedgerImage;
use tally_engine::{ImageError, Ledger};

use tally_journal::{Directory, JournalReader, ReadLimit, SnapshotStore};

use crate::error::NodeError;
use crate::history::{HistoryStore, dump};

/// Snapshot files kept: the newest, and one before it in case the newest is damaged.
const SNAPSHOTS_KEPT: usize = 2;

/// The ledger to start from, and the last journal sequence it covers (0: none).
pub struct Restored {
    pub ledger: Ledger,
    pub sequence: u64,
}

/// The newest snapshot that verifies, or an empty ledger when there is none. A snapshot
/// whose checksum holds but whose image is refused stops the start: it was written by
/// this software, so it points at a bug or a format change an operator must look at.
pub fn load<D: Directory>(store: &SnapshotStore<D>) -> Result<Restored, NodeError> {
    let load = store.load_newest()?;
    for damaged in &load.damaged {
        tracing::warn!(%damaged, "skipped a damaged snapshot");
    }
    let Some(snapshot) = load.newest else {
        return Ok(Restored { ledger: Ledger::new(), sequence: 0 });
    };
    decode(snapshot)
}

/// Loads the snapshot at `sequence` (an older one than the newest: see
/// `recover::against_outcomes`).
pub fn load_at<D: Directory>(store: &SnapshotStore<D>, sequence: u64) -> Result<Restored, NodeError> {
    decode(store.load(sequence)?)
}

fn decode(snapshot: tally_journal::Snapshot) -> Result<Restored, NodeError> {
    let tally_journal::Snapshot { sequence, bytes } = snapshot;
    let image = LedgerImage::from_bytes(&bytes).map_err(|error| NodeError::Snapshot { sequence, source: error.into() });
    // The bytes go before the ledger is built: a start holds at most two forms at once.
    drop(bytes);
    let ledger = Ledger::from_image(&image?).map_err(|source| NodeError::Snapshot { sequence, source })?;
    Ok(Restored { ledger, sequence })
}

/// A checkpoint that became the recovery point, as the journal stage learns of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The sequence the new checkpoint covers (recorded in the journal's manifest).
    pub sequence: u64,
    /// The oldest checkpoint still kept: journal records up to it are no longer needed
    /// by recovery (the derived stores' marks may still hold them back).
    pub oldest_kept: u64,
}

/// The snapshot image of `ledger`, which is the state after journal record `sequence`.
#[cfg(test)]
pub fn encode(sequence: u64, ledger: &Ledger) -> Result<impl AsRef<[u8]>, NodeError> {
    ledger.to_image().to_bytes().map_err(|error| NodeError::Snapshot { sequence, source: ImageError::from(error) })
}

/// Writes the image of `ledger`, the state after journal record `sequence`, as the staged
/// checkpoint at `sequence`, serialised straight into the file: the writer holds the
/// image (as large as the hot state) but never its bytes as well.
pub fn write_staged<D: Directory>(store: &SnapshotStore<D>, sequence: u64, ledger: &Ledger) -> Result<(), NodeError> {
    let image = ledger.to_image();
    store.write_staged_with(sequence, |file| image.write_to(file))?;
    Ok(())
}

/// The cross-check: the staged bytes, decoded into a ledger from scratch, must have the
/// state hash the business logic published for `sequence`. A difference means the state
/// is not a function of what the checkpoint holds (nondeterminism, or an image bug). Each
/// form is dropped as soon as the next one is built (bytes, image, ledger), so the check
/// holds at most two of them.
pub fn verify(snapshot: tally_journal::Snapshot, published_hash: u128) -> Result<(), NodeError> {
    let tally_journal::Snapshot { sequence, bytes } = snapshot;
    let image = LedgerImage::from_bytes(&bytes).map_err(|error| NodeError::Snapshot { sequence, source: error.into() });
    drop(bytes);
    let ledger = Ledger::from_image(&image?).map_err(|source| NodeError::Snapshot { sequence, source })?;
    let found = ledger.state_hash();
    if found != published_hash {
        return Err(NodeError::CheckpointMismatch { sequence, published: published_hash, found });
    }
    Ok(())
}

/// Makes the staged checkpoint at `sequence` the recovery point, then drops the older
/// snapshots beyond [`SNAPSHOTS_KEPT`]. Returns the sequence of the oldest snapshot kept.
pub fn commit<D: Directory>(store: &SnapshotStore<D>, sequence: u64) -> Result<u64, NodeError> {
    store.promote(sequence)?;
    let retention = store.retain(SNAPSHOTS_KEPT)?;
    Ok(retention.kept.iter().copied().min().unwrap_or(sequence))
}

/// A checkpoint as the primary sends it: the files a restart needs, open on disk, with
/// their lengths and BLAKE3 hashes, covering journal records up to `sequence`, whose
/// chain hash is `chain`.
pub struct Outgoing {
    pub sequence: u64,
    pub chain: tally_replication::ChainHash,
    pub files: Vec<OutgoingFile>,
}

pub struct OutgoingFile {
    pub name: String,
    /// Open for reading: the snapshot file stays readable if retention removes it while
    /// it is sent, and the dump's file has no name at all (removed once created).
    pub file: File,
    pub length: u64,
    pub hash: [u8; 32],
}

/// Bytes read at a time while a file is hashed.
const HASH_READ_BYTES: usize = 1 << 20;

/// The files a standby needs to restart from this node's state when this node no longer
/// holds the records it lacks: the newest snapshot file that verifies, as it is on disk,
/// and the history store's rows that snapshot covers ([`dump`]: without them the
/// standby's cold look-ups would miss every id used before the checkpoint), written to
/// an unnamed file in `scratch_dir`, with the chain hash of the last record it covers
/// (read from the journal, which keeps every record after the oldest kept snapshot, or
/// from the header of the segment that starts after it). Nothing is held in memory but
/// the snapshot's ledger (for the dump's cut): both files are hashed as they are read
/// back. `preparing` is called at least every megabyte written or hashed (it keeps the
/// standby's progress timeout from expiring while a large dump is written). The files
/// are opaque to the shipping: [`verify_checkpoint`] and `bootstrap::install` on the
/// standby load and check them before anything uses them.
pub fn checkpoint(
    snapshots_dir: &Path,
    journal_dir: &Path,
    history: &HistoryStore,
    scratch_dir: &Path,
    preparing: &mut dyn FnMut() -> std::io::Result<()>,
) -> Result<Outgoing, String> {
    // The checkpoint writer stages files beside this reader: leave them alone.
    let store = SnapshotStore::existing(snapshots_dir);
    let newest = store.load_newest().map_err(|error| format!("cannot read the snapshots: {error}"))?;
    let Some(snapshot) = newest.newest else {
        return Err("this node has no snapshot".to_owned());
    };
    let sequence = snapshot.sequence;
    let path = store.path_of(sequence);
    let snapshot_file = File::open(&path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| format!("{} has no file name", path.display()))?
        .to_owned();
    let chain = JournalReader::open(journal_dir, sequence + 1, ReadLimit::Everything)
        .and_then(|mut reader| reader.chain_before())
        .map_err(|error| format!("cannot read the chain hash of record {sequence}: {error}"))?;
    let ledger = LedgerImage::from_bytes(&snapshot.bytes)
        .map_err(ImageError::from)
        .and_then(|image| Ledger::from_image(&image))
        .map_err(|error| format!("cannot load the snapshot at sequence {sequence}: {error}"))?;
    drop(snapshot);
    let dump_file = unnamed_file(scratch_dir)?;
    let mut writer =
        std::io::BufWriter::with_capacity(HASH_READ_BYTES, Ticking { file: &dump_file, preparing: &mut *preparing });
    history
        .dump_to(dump::Cut::of(sequence, &ledger), &mut writer)
        .map_err(|error| format!("cannot dump the history store at sequence {sequence}: {error}"))?;
    drop(writer);
    drop(ledger);
    let mut files = Vec::with_capacity(2);
    for (name, file) in [(name, snapshot_file), (dump::FILE_NAME.to_owned(), dump_file)] {
        let (length, hash) =
            hash_file(&file, preparing).map_err(|error| format!("cannot read back {name}: {error}"))?;
        files.push(OutgoingFile { name, file, length, hash });
    }
    Ok(Outgoing { sequence, chain, files })
}

/// A new file in `dir` whose name is removed at once: it disappears when closed, and a
/// crash leaves nothing to clean up.
fn unnamed_file(dir: &Path) -> Result<File, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{number}.dump", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    std::fs::remove_file(&path).map_err(|error| format!("cannot remove {}: {error}", path.display()))?;
    Ok(file)
}

/// Length and BLAKE3 hash of a file, read from its start.
fn hash_file(file: &File, preparing: &mut dyn FnMut() -> std::io::Result<()>) -> std::io::Result<(u64, [u8; 32])> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_READ_BYTES];
    let mut offset = 0u64;
    loop {
        let read = file.read_at(&mut buffer, offset)?;
        if read == 0 {
            return Ok((offset, *hasher.finalize().as_bytes()));
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
        preparing()?;
    }
}

/// The dump's file, telling `preparing` of each write (a write of the buffer above it).
struct Ticking<'a, 'b> {
    file: &'a File,
    preparing: &'b mut dyn FnMut() -> std::io::Result<()>,
}

impl Write for Ticking<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        (self.preparing)()?;
        self.file.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Ticking<'_, '_> {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(position)
    }
}

/// Loads a received checkpoint from the directory its files were written to: the ledger
/// it holds and the sequence it covers, which must be the one the primary announced.
pub fn verify_checkpoint(dir: &Path, announced: u64) -> Result<Restored, NodeError> {
    let store = SnapshotStore::open(dir)?;
    let loaded = store.load_newest()?;
    if let Some(damaged) = loaded.damaged.first() {
        return Err(NodeError::Checkpoint(format!("a received file is damaged: {damaged}")));
    }
    let restored = load(&store)?;
    if restored.sequence != announced {
        return Err(NodeError::Checkpoint(format!(
            "the files cover sequence {}, the primary announced {announced}",
            restored.sequence
        )));
    }
    Ok(restored)
}
