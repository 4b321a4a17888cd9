//! Snapshots of the ledger: the newest valid one is loaded at start, so that replay
//! begins after it; a node that shuts down cleanly writes one covering its whole journal.
//! A snapshot only shortens recovery; the journal keeps every record.

use std::path::Path;
use tally_codecs::snapshot::LedgerImage;
use tally_engine::{ImageError, Ledger};

use tally_journal::{JournalReader, ReadLimit, SnapshotStore};
use tally_replication::{Checkpoint, CheckpointFile};

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
pub fn load(store: &SnapshotStore) -> Result<Restored, NodeError> {
    let load = store.load_newest()?;
    for damaged in &load.damaged {
        eprintln!("tally: skipped a damaged snapshot: {damaged}");
    }
    let Some(snapshot) = load.newest else {
        return Ok(Restored { ledger: Ledger::new(), sequence: 0 });
    };
    let ledger = LedgerImage::from_bytes(&snapshot.bytes)
        .map_err(ImageError::from)
        .and_then(|image| Ledger::from_image(&image))
        .map_err(|source| NodeError::Snapshot { sequence: snapshot.sequence, source })?;
    Ok(Restored { ledger, sequence: snapshot.sequence })
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
pub fn encode(sequence: u64, ledger: &Ledger) -> Result<impl AsRef<[u8]>, NodeError> {
    ledger.to_image().to_bytes().map_err(|error| NodeError::Snapshot { sequence, source: ImageError::from(error) })
}

/// The cross-check: the staged bytes, decoded into a ledger from scratch, must have the
/// state hash the business logic published for `sequence`. A difference means the state
/// is not a function of what the checkpoint holds (nondeterminism, or an image bug).
pub fn verify(snapshot: &tally_journal::Snapshot, published_hash: u128) -> Result<(), NodeError> {
    let sequence = snapshot.sequence;
    let ledger = LedgerImage::from_bytes(&snapshot.bytes)
        .map_err(ImageError::from)
        .and_then(|image| Ledger::from_image(&image))
        .map_err(|source| NodeError::Snapshot { sequence, source })?;
    let found = ledger.state_hash();
    if found != published_hash {
        return Err(NodeError::CheckpointMismatch { sequence, published: published_hash, found });
    }
    Ok(())
}

/// Makes the staged checkpoint at `sequence` the recovery point, then drops the older
/// snapshots beyond [`SNAPSHOTS_KEPT`]. Returns the sequence of the oldest snapshot kept.
pub fn commit(store: &SnapshotStore, sequence: u64) -> Result<u64, NodeError> {
    store.promote(sequence)?;
    let retention = store.retain(SNAPSHOTS_KEPT)?;
    Ok(retention.kept.iter().copied().min().unwrap_or(sequence))
}

/// The files a standby needs to restart from this node's state when this node no longer
/// holds the records it lacks: the newest snapshot file that verifies, as it is on disk,
/// and the history store's rows that snapshot covers ([`dump`]: without them the
/// standby's cold look-ups would miss every id used before the checkpoint), with the
/// chain hash of the last record it covers (read from the journal, which keeps every
/// record after the oldest kept snapshot, or from the header of the segment that starts
/// after it). The files are opaque to the shipping: whatever this module writes,
/// [`verify_checkpoint`] and `bootstrap::install` on the standby load and check before
/// anything uses it.
pub fn checkpoint(snapshots_dir: &Path, journal_dir: &Path, history: &HistoryStore) -> Result<Checkpoint, String> {
    // The checkpoint writer stages files beside this reader: leave them alone.
    let store = SnapshotStore::existing(snapshots_dir);
    let newest = store.load_newest().map_err(|error| format!("cannot read the snapshots: {error}"))?;
    let Some(snapshot) = newest.newest else {
        return Err("this node has no snapshot".to_owned());
    };
    let sequence = snapshot.sequence;
    let path = store.path_of(sequence);
    let bytes = std::fs::read(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
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
    let history = history
        .dump(dump::Cut::of(sequence, &ledger))
        .map_err(|error| format!("cannot dump the history store at sequence {sequence}: {error}"))?;
    let files =
        vec![CheckpointFile { name, bytes }, CheckpointFile { name: dump::FILE_NAME.to_owned(), bytes: history }];
    Ok(Checkpoint { sequence, chain, files })
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
