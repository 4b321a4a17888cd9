//! Errors at the crate boundary.

use std::path::PathBuf;

use crate::node::journal_codec::RecordError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory (or one of its subdirectories) cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another tally process")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] tally_journal::JournalError),
    #[error("snapshot covering sequence {sequence} is refused: {source}")]
    Snapshot {
        sequence: u64,
        #[source]
        source: tally_engine::ImageError,
    },
    #[error(
        "checkpoint at sequence {sequence} decodes to state hash {found:#034x}, but the business logic published {published:#034x}: the state is not a function of the checkpoint (nondeterminism or an image bug)"
    )]
    CheckpointMismatch { sequence: u64, published: u128, found: u128 },
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("journal record {sequence} cannot be replayed: {source}")]
    Replay {
        sequence: u64,
        #[source]
        source: RecordError,
    },
    /// A standby could not receive or install its primary's checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Damaged journal records with intact ones after them: flushed, perhaps
    /// acknowledged, so never dropped silently.
    #[error(
        "journal records {first}..={last} (in {segment}) are damaged and intact records follow them: they were flushed and may have been acknowledged, so this node will not start without them; {why}"
    )]
    Damaged { first: u64, last: u64, segment: String, why: String },
    /// `tally serve` over a data directory marked recovering (`DIR/RECOVERING`).
    #[error(
        "data directory {path} may lack acknowledged inputs and has not caught up with a primary ({path}/RECOVERING \
         says why): serving it would lose whatever it lacks; start it with `tally standby` until it has caught up, or remove that file to serve \
         it as it is"
    )]
    Recovering { path: PathBuf },
    /// `tally rebuild` refused (what it would need is named).
    #[error("rebuild refused: {0}")]
    Rebuild(String),
}
