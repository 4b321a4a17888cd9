//! A standby that needs records its primary no longer holds starts from the primary's
//! checkpoint: received over the authenticated peer port, checked (names, lengths, BLAKE3
//! hashes: `tally_replication::checkpoint`), written durably to a staging directory,
//! loaded there, and only then installed in place of the standby's snapshots and journal.
//!
//! Install order, so that a crash at any point leaves a directory that start-up can use:
//!
//! 1. files → `DIR/checkpoint-incoming/` (temporary name, fsync, rename, fsync the
//!    directory and `DIR`), then loaded there: a checkpoint that does not load is refused
//!    and nothing else changes;
//! 2. the journal's files are removed (fsync);
//! 3. the snapshots are removed and the checkpoint's files renamed into `DIR/snapshots/`
//!    (fsync);
//! 4. a new, empty journal is created that starts after the checkpoint's sequence and
//!    chains from its chain hash (the journal syncs its first segment and directory);
//! 5. the staging directory is removed (fsync `DIR`).
//!
//! Start-up finding `DIR/checkpoint-incoming/` knows an install was interrupted somewhere
//! in 1–5: it clears the journal, the snapshots and the staging directory, and the standby
//! asks for the checkpoint again (it now holds nothing, so the primary offers it again).

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tally_journal::{Journal, JournalConfig};
use tally_replication::{Checkpoint, LogPosition, Message, Receiving};

use super::DataDir;
use super::peer_io::{self, PeerError};
use super::snapshots;
use super::standby::StandbyConfig;
use crate::error::NodeError;
use crate::history::HistoryStore;

/// The staging directory under the data directory.
pub const STAGING: &str = "checkpoint-incoming";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the primary may take between two messages while it answers the subscription.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Clears what an interrupted install left (see the module's documentation).
pub fn clear_interrupted_install(dirs: &DataDir) -> Result<(), NodeError> {
    let staging = dirs.root.join(STAGING);
    if !staging.exists() {
        return Ok(());
    }
    eprintln!(
        "tally: an interrupted checkpoint install was found ({}): clearing the journal and snapshots; the primary's checkpoint will be fetched again",
        staging.display()
    );
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    std::fs::remove_dir_all(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    sync_dir(&dirs.root)
}

/// Subscribes at `position` to the first primary that answers; if it no longer holds the
/// records after `position` it sends its checkpoint, returned here (checked, not yet
/// installed: see [`install`]). Unreachable peers and peers that are not primary are
/// skipped: following then starts as usual (and a checkpoint offered later stops the
/// standby with a message asking for a restart).
pub fn fetch_checkpoint_if_needed(
    config: &StandbyConfig,
    epoch: u32,
    position: LogPosition,
) -> Result<Option<Checkpoint>, NodeError> {
    for &address in &config.primaries {
        if address == config.node {
            continue;
        }
        match ask(config, address, epoch, position) {
            Ok(Some(checkpoint)) => {
                let files: usize = checkpoint.files.iter().map(|file| file.bytes.len()).sum();
                eprintln!(
                    "tally: {address} no longer holds record {}: received its checkpoint at sequence {} ({files} bytes)",
                    position.last_sequence + 1,
                    checkpoint.sequence
                );
                return Ok(Some(checkpoint));
            }
            Ok(None) => return Ok(None),
            Err(AskError::Peer(error)) => eprintln!("tally: asking {address} for the stream: {error}"),
            Err(AskError::Checkpoint(error)) => {
                return Err(NodeError::Checkpoint(format!("the checkpoint from {address} is refused: {error}")));
            }
        }
    }
    Ok(None)
}

enum AskError {
    Peer(PeerError),
    Checkpoint(String),
}

impl From<PeerError> for AskError {
    fn from(error: PeerError) -> AskError {
        AskError::Peer(error)
    }
}

/// One subscription: `Some` checkpoint if the primary offered one, `None` if it streams
/// records (nothing to install).
fn ask(
    config: &StandbyConfig,
    address: SocketAddr,
    epoch: u32,
    position: LogPosition,
) -> Result<Option<Checkpoint>, AskError> {
    let mut peer = peer_io::connect(address, &config.key, CONNECT_TIMEOUT)?;
    peer.send(&Message::Subscribe { epoch, node: config.node.to_string(), position })?;
    peer.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(PeerError::Io)?;
    let mut receiving = match peer.recv()? {
        Message::CheckpointOffer { sequence, chain, files, .. } => {
            Receiving::offer(sequence, chain, files).map_err(|error| AskError::Checkpoint(error.to_string()))?
        }
        Message::Records { .. } | Message::Checkpoint { .. } => {
            peer.shutdown();
            return Ok(None);
        }
        other => return Err(PeerError::Refused(format!("unexpected {other:?}")).into()),
    };
    while !receiving.is_complete() {
        match peer.recv()? {
            Message::CheckpointChunk { file, offset, bytes, .. } => {
                receiving.chunk(file, offset, &bytes).map_err(|error| AskError::Checkpoint(error.to_string()))?;
            }
            other => {
                return Err(AskError::Checkpoint(format!("expected a checkpoint chunk, got {}", kind_of(&other))));
            }
        }
    }
    // The primary now streams the tail; following subscribes again from the checkpoint.
    peer.shutdown();
    receiving.finish().map(Some).map_err(|error| AskError::Checkpoint(error.to_string()))
}

fn kind_of(message: &Message) -> &'static str {
    match message {
        Message::Records { .. } => "records",
        Message::Checkpoint { .. } => "a state-hash checkpoint",
        _ => "another message",
    }
}

/// Installs a received checkpoint (see the module's documentation for the order). The
/// journal must be closed.
pub fn install(checkpoint: &Checkpoint, dirs: &DataDir, segment_bytes: usize) -> Result<(), NodeError> {
    let staging = dirs.root.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    }
    std::fs::create_dir(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    sync_dir(&dirs.root)?;
    for file in &checkpoint.files {
        write_durably(&staging, &file.name, &file.bytes)?;
    }
    sync_dir(&staging)?;
    // Loaded before use: a checkpoint that does not load changes nothing but the staging.
    if let Err(error) = snapshots::verify_checkpoint(&staging, checkpoint.sequence) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    record_history_start(dirs, checkpoint.sequence)?;
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    for file in &checkpoint.files {
        let to = dirs.snapshots.join(&file.name);
        std::fs::rename(staging.join(&file.name), &to).map_err(|source| NodeError::Io { path: to, source })?;
    }
    sync_dir(&dirs.snapshots)?;
    let config = JournalConfig {
        snapshot_sequence: checkpoint.sequence,
        genesis_chain: checkpoint.chain,
        segment_bytes,
        ..JournalConfig::new(&dirs.journal)
    };
    let (journal, _) = Journal::open(&config)?;
    journal.close();
    std::fs::remove_dir_all(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    sync_dir(&dirs.root)
}

/// Records in the history store that it starts at the checkpoint: history before it
/// was not shipped and is not on this node (see the README's replication section), and
/// what follows is written from the records that follow. Without this a start would see
/// a snapshot ahead of the history store and replay from a journal that now begins after
/// the checkpoint. Done before the journal is cleared, so a crash in between leaves the
/// staging directory and the next start fetches the checkpoint again.
fn record_history_start(dirs: &DataDir, sequence: u64) -> Result<(), NodeError> {
    let (store, start) = HistoryStore::open(&dirs.history)?;
    if start < sequence {
        eprintln!(
            "tally: the history store holds sequences up to {start}; the checkpoint is at {sequence}: \
             lookups of transfers committed before it are not answered by this node"
        );
        store.write(&[], sequence, true);
    }
    Ok(())
}

fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), NodeError> {
    let temporary = dir.join(format!("{name}.incoming"));
    let io = |source| NodeError::Io { path: temporary.clone(), source };
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    let path = dir.join(name);
    std::fs::rename(&temporary, &path).map_err(|source| NodeError::Io { path, source })
}

/// Removes every file directly in `dir` and syncs it.
fn clear_files(dir: &Path) -> Result<(), NodeError> {
    let io = |source| NodeError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|source| NodeError::Io { path: path.clone(), source })?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|source| NodeError::Io { path: dir.to_path_buf(), source })
}
