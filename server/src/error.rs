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
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("journal record {sequence} cannot be replayed: {source}")]
    Replay {
        sequence: u64,
        #[source]
        source: RecordError,
    },
}
