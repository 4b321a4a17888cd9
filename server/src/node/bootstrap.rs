//! A standby that needs records its primary no longer holds starts from the primary's
//! checkpoint: received over the authenticated peer port, checked (names, lengths, BLAKE3
//! hashes: `tally_replication::checkpoint`), written durably to a staging directory,
//! loaded there, and only then installed in place of the standby's snapshots, history
//! store and journal. The checkpoint is a snapshot and the primary's history store cut at
//! the snapshot's sequence (`history::dump`): without the history, this node's cold
//! look-ups would not find ids used before the checkpoint, and a retry of one would be
//! applied again.
//!
//! Install order, so that a crash at any point leaves a directory that start-up can use:
//!
//! 1. files → `DIR/checkpoint-incoming/` (temporary name, fsync, rename, fsync the
//!    directory and `DIR`), then loaded there: the snapshot into a ledger, and the history
//!    dump, checked row by row against the cut that ledger gives, into a fresh store file
//!    `DIR/checkpoint-incoming/history.redb` (one durable transaction whose mark is the
//!    checkpoint's sequence). A checkpoint that does not load is refused and nothing else
//!    changes;
//! 2. that store file is renamed over `DIR/history/history.redb` (fsync `DIR/history`);
//! 3. the journal's files are removed (fsync);
//! 4. the snapshots are removed and the checkpoint's snapshot renamed into
//!    `DIR/snapshots/` (fsync);
//! 5. a new, empty journal is created that starts after the checkpoint's sequence and
//!    chains from its chain hash (the journal syncs its first segment and directory);
//! 6. the staging directory is removed (fsync `DIR`).
//!
//! Start-up finding `DIR/checkpoint-incoming/` knows an install was interrupted somewhere
//! in 1–6: it clears the journal, the snapshots, the history store and the staging
//! directory, and the standby asks for the checkpoint again (it now holds nothing, so the
//! primary offers it again).

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_journal::{Journal, JournalConfig};
use tally_replication::{Checkpoint, LogPosition, Message, Receiving};

use super::DataDir;
use super::peer_io::{self, PeerError};
use super::snapshots;
use super::standby::StandbyConfig;
use crate::error::NodeError;
use crate::history::{self, dump};

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
        "tally: an interrupted checkpoint install was found ({}): clearing the journal, snapshots and history store; the primary's checkpoint will be fetched again",
        staging.display()
    );
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    if dirs.history.exists() {
        clear_files(&dirs.history)?;
    }
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
/// journal and the history store must be closed.
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
    let staged_store = match load_staged(checkpoint, &staging) {
        Ok(staged_store) => staged_store,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(error);
        }
    };
    std::fs::create_dir_all(&dirs.history).map_err(|source| NodeError::Io { path: dirs.history.clone(), source })?;
    let store = dirs.history.join(history::FILE_NAME);
    std::fs::rename(&staged_store, &store).map_err(|source| NodeError::Io { path: store, source })?;
    sync_dir(&dirs.history)?;
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    for file in checkpoint.files.iter().filter(|file| file.name != dump::FILE_NAME) {
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

/// Loads the staged snapshot and builds the history store from the staged dump, cut
/// where that snapshot's ledger says; returns the built store's path (in `staging`).
fn load_staged(checkpoint: &Checkpoint, staging: &Path) -> Result<PathBuf, NodeError> {
    let Some(dump) = checkpoint.files.iter().find(|file| file.name == dump::FILE_NAME) else {
        return Err(NodeError::Checkpoint(format!(
            "the checkpoint at sequence {} carries no history dump ({})",
            checkpoint.sequence,
            dump::FILE_NAME
        )));
    };
    let restored = snapshots::verify_checkpoint(staging, checkpoint.sequence)?;
    let cut = dump::Cut::of(checkpoint.sequence, &restored.ledger);
    let staged_store = staging.join(history::FILE_NAME);
    let rows = dump::build_store(&dump.bytes, cut, &staged_store)
        .map_err(|error| NodeError::Checkpoint(format!("the history dump is refused: {error}")))?;
    sync_dir(staging)?;
    eprintln!("tally: the checkpoint's history store holds {rows} rows up to sequence {}", checkpoint.sequence);
    Ok(staged_store)
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

#[cfg(test)]
mod tests {
    use tally_engine::{Effects, HistoryLookup, Ledger};
    use tally_journal::SnapshotStore;
    use tally_replication::CheckpointFile;

    use super::*;
    use crate::history::HistoryStore;

    const SEQUENCE: u64 = 9;

    /// A checkpoint as a primary would send it: an empty ledger's snapshot at
    /// [`SEQUENCE`] and its history dump.
    fn checkpoint(root: &Path) -> Checkpoint {
        let ledger = Ledger::new();
        let store = SnapshotStore::open(root.join("primary-snapshots")).expect("snapshot store");
        let image = snapshots::encode(SEQUENCE, &ledger).expect("encode");
        store.write_staged(SEQUENCE, image.as_ref()).expect("stage");
        let path = store.promote(SEQUENCE).expect("promote");
        let name = path.file_name().and_then(|name| name.to_str()).expect("a file name").to_owned();
        let snapshot = CheckpointFile { name, bytes: std::fs::read(&path).expect("read the snapshot") };
        let (history, _) = HistoryStore::open(&root.join("primary-history")).expect("history");
        history.write(&[], SEQUENCE, true);
        let bytes = history.dump(dump::Cut::of(SEQUENCE, &ledger)).expect("dump");
        let dump = CheckpointFile { name: dump::FILE_NAME.to_owned(), bytes };
        Checkpoint { sequence: SEQUENCE, chain: [7; 16], files: vec![snapshot, dump] }
    }

    /// A standby directory whose history store already holds failed id 5 at sequence 3.
    fn standby(root: &Path) -> DataDir {
        let dirs = DataDir::create(&root.join("standby")).expect("data dir");
        let (history, _) = HistoryStore::open(&dirs.history).expect("history");
        history.write(&[Effects { sequence: 3, failed: vec![(5, 1)], ..Effects::default() }], 3, true);
        dirs
    }

    #[test]
    fn a_refused_history_dump_installs_nothing_and_a_good_one_replaces_the_store() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = standby(root.path());
        let good = checkpoint(root.path());
        let mut damaged = good.clone();
        damaged.files[1].bytes.truncate(20);
        let mut without = good.clone();
        without.files.pop();
        for bad in [&damaged, &without] {
            let error = install(bad, &dirs, 16 << 20).expect_err("refused");
            assert!(matches!(error, NodeError::Checkpoint(_)), "{error}");
            assert!(!dirs.root.join(STAGING).exists(), "the staging directory is cleared");
            assert_eq!(std::fs::read_dir(&dirs.snapshots).expect("snapshots").count(), 0, "no snapshot installed");
            let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
            assert_eq!((mark, history.failed(5)), (3, Some((1, 3))), "the history store is untouched");
        }
        install(&good, &dirs, 16 << 20).expect("installed");
        assert!(!dirs.root.join(STAGING).exists());
        let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
        assert_eq!((mark, history.failed(5)), (SEQUENCE, None), "the primary's store replaced the standby's");
        assert!(dirs.snapshots.join(&good.files[0].name).exists(), "the snapshot is in place");
        assert!(!dirs.snapshots.join(dump::FILE_NAME).exists(), "the dump is not a snapshot");
    }
}
