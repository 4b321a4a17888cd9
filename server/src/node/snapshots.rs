//! Snapshots of the ledger: the newest valid one is loaded at start, so that replay
//! begins after it; a node that shuts down cleanly writes one covering its whole journal.
//! A snapshot only shortens recovery; the journal keeps every record.

use tally_codecs::snapshot::LedgerImage;
use tally_engine::{ImageError, Ledger};
use tally_journal::SnapshotStore;

use crate::error::NodeError;

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

/// A snapshot the background snapshotter wrote, as the journal stage learns of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The sequence the new snapshot covers (recorded in the journal's manifest).
    pub sequence: u64,
    /// The oldest snapshot still kept: journal records up to it are no longer needed.
    pub oldest_kept: u64,
}

/// Writes a snapshot of `ledger`, which must be the state after journal record `sequence`
/// and nothing else, then drops the older snapshots beyond [`SNAPSHOTS_KEPT`]. Returns the
/// sequence of the oldest snapshot kept: journal records up to it are no longer needed.
pub fn write(store: &SnapshotStore, sequence: u64, ledger: &Ledger) -> Result<u64, NodeError> {
    let bytes = ledger
        .to_image()
        .to_bytes()
        .map_err(|error| NodeError::Snapshot { sequence, source: ImageError::from(error) })?;
    store.write(sequence, &bytes)?;
    let retention = store.retain(SNAPSHOTS_KEPT)?;
    Ok(retention.kept.iter().copied().min().unwrap_or(sequence))
}
