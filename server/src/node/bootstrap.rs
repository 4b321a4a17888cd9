//! A standby that needs records its primary no longer holds starts from the primary's
//! checkpoint: received over the authenticated peer port, checked chunk by chunk (names,
//! lengths, BLAKE3 hashes per chunk and per file: `tally_replication::checkpoint`, whose
//! sans-I/O `Receiving` says where each accepted chunk goes; this module does the
//! writing), written to disk as it arrives, loaded, and only then installed in place of
//! the standby's snapshots, history store and journal. The checkpoint is a snapshot and
//! the primary's history store cut at the snapshot's sequence (`history::dump`): without
//! the history, this node's cold look-ups would not find ids used before the checkpoint,
//! and a retry of one would be applied again. Nothing of it is held in memory but one
//! chunk (and, once loaded, the snapshot's ledger): a checkpoint may be as large as the
//! disk allows, which is checked against the offer before the first chunk is read, and
//! the primary may take as long as it needs while it keeps sending (a progress timeout).
//!
//! Receive and install order, so that a crash at any point leaves a directory that
//! start-up can use:
//!
//! 0. chunks → `DIR/checkpoint-receiving/NAME.incoming` at their offsets; once every
//!    file is complete: fsync each, rename to `NAME`, fsync the directory. Start-up
//!    removes this directory: an unfinished transfer changed nothing else;
//! 1. `DIR/checkpoint-receiving/` is renamed to `DIR/checkpoint-incoming/` (fsync `DIR`),
//!    then loaded there: the snapshot into a ledger, and the history dump, read as a
//!    stream and checked row by row against the cut that ledger gives, into a fresh store
//!    file `DIR/checkpoint-incoming/history.redb` (its last, durable transaction writes
//!    the checkpoint's sequence as its mark). A checkpoint that does not load is refused
//!    and nothing else changes;
//! 2. that store file is renamed over `DIR/history/history.redb` (fsync `DIR/history`);
//! 3. the journal's files are removed (fsync), and the outcome stream's (fsync): it is
//!    derived, and starts after the checkpoint as the journal does;
//! 4. the snapshots are removed and the checkpoint's snapshot renamed into
//!    `DIR/snapshots/` (fsync);
//! 5. a new, empty journal is created that starts after the checkpoint's sequence and
//!    chains from its chain hash (the journal syncs its first segment and directory);
//! 6. the staging directory is removed (fsync `DIR`).
//!
//! Start-up finding `DIR/checkpoint-incoming/` knows an install was interrupted somewhere
//! in 1–6: it clears the journal, the snapshots, the history store and the staging
//! directory, and the standby asks for the checkpoint again (it now holds nothing, so the
//! primary offers it again). A clear for a checkpoint ([`clear_for_checkpoint`]) and
//! `tally rebuild` run under the same directory, empty, so an interrupted clear is
//! finished the same way.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_journal::{FlushMethod, Journal, JournalConfig, Storage};
use tally_replication::{ChainHash, CheckpointFileInfo, LogPosition, Message, Receiving};

use super::DataDir;
use super::peer_io::{self, PeerError};
use super::role::Role;
use super::snapshots;
use super::standby::StandbyConfig;
use crate::error::NodeError;
use crate::history::{self, dump};

/// The staging directory under the data directory: its presence marks an install in
/// progress.
pub const STAGING: &str = "checkpoint-incoming";
/// Where the chunks of a checkpoint are written as they arrive; renamed to [`STAGING`]
/// once every file is complete and durable. Start-up removes it: a transfer that did
/// not finish changed nothing else.
pub const RECEIVING: &str = "checkpoint-receiving";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest the primary may stay silent while it answers the subscription: before its
/// offer (it sends `CheckpointPreparing` every second while it writes the files), and
/// between two chunks. A progress timeout: a transfer of any size may take as long as it
/// needs while bytes flow.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

/// A checkpoint received whole: its files are durable in `DIR/checkpoint-receiving/`,
/// each checked against its BLAKE3 hash, not yet loaded (see [`install`]).
#[derive(Debug)]
pub struct Received {
    pub sequence: u64,
    pub chain: ChainHash,
    pub files: Vec<CheckpointFileInfo>,
}

/// Clears what an interrupted install left (see the module's documentation), and the
/// files of a transfer that did not finish.
pub fn clear_interrupted_install(dirs: &DataDir, role: &Role) -> Result<(), NodeError> {
    let receiving = dirs.root.join(RECEIVING);
    if receiving.exists() {
        remove_durably(&receiving, &dirs.root)?;
    }
    let staging = dirs.root.join(STAGING);
    if !staging.exists() {
        return Ok(());
    }
    crate::errln!(
        "tally: an interrupted checkpoint install or clear was found ({}): clearing the journal, snapshots and history store; the primary's checkpoint will be fetched again",
        staging.display()
    );
    clear_for_checkpoint(dirs, role)
}

/// Removes the journal, the snapshots, the history store and the outcome stream: this node then holds
/// nothing, and its primary offers its checkpoint (or streams from the first record).
/// The node is marked recovering first (`Role::mark_recovering`).
///
/// The removals run under the staging directory, made durable first and removed last, so
/// a power loss part-way is finished by the next start ([`clear_interrupted_install`]).
/// Without it, a loss after the journal went but before the snapshots' removal was
/// durable left a snapshot (often one past the common prefix) over an empty journal,
/// which start-up took for an installed checkpoint: the node subscribed, was answered
/// `Diverged`, reopened, and did so for ever.
pub fn clear_for_checkpoint(dirs: &DataDir, role: &Role) -> Result<(), NodeError> {
    role.mark_recovering()?;
    let staging = dirs.root.join(STAGING);
    std::fs::create_dir_all(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    sync_dir(&dirs.root)?;
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    if dirs.history.exists() {
        clear_files(&dirs.history)?;
    }
    clear_outcomes(dirs)?;
    remove_durably(&staging, &dirs.root)
}

/// Removes the outcome stream's segments (it is derived: rebuilt from the checkpoint and
/// the journal).
fn clear_outcomes(dirs: &DataDir) -> Result<(), NodeError> {
    if dirs.outcomes.exists() { clear_files(&dirs.outcomes) } else { Ok(()) }
}

/// Subscribes at `position` to the first primary that answers; if it no longer holds the
/// records after `position` it sends its checkpoint, received here into
/// `DIR/checkpoint-receiving/` (checked, not yet installed: see [`install`]). Unreachable
/// peers and peers that are not primary are skipped: following then starts as usual (and
/// a checkpoint offered later makes the running standby come back here).
pub fn fetch_checkpoint_if_needed(
    config: &StandbyConfig,
    dirs: &DataDir,
    epoch: u32,
    position: LogPosition,
) -> Result<Option<Received>, NodeError> {
    for &address in &config.primaries {
        if address == config.node {
            continue;
        }
        match ask(config, dirs, address, epoch, position) {
            Ok(Some(received)) => {
                let bytes: u64 = received.files.iter().map(|file| file.length).sum();
                crate::errln!(
                    "tally: {address} no longer holds record {}: received its checkpoint at sequence {} ({bytes} bytes)",
                    position.last_sequence + 1,
                    received.sequence
                );
                return Ok(Some(received));
            }
            Ok(None) => return Ok(None),
            Err(AskError::Peer(error)) => crate::errln!("tally: asking {address} for the stream: {error}"),
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

impl From<NodeError> for AskError {
    fn from(error: NodeError) -> AskError {
        AskError::Checkpoint(error.to_string())
    }
}

/// One subscription: `Some` checkpoint if the primary offered one (received whole), `None`
/// if it streams records (nothing to install). A transfer that fails leaves nothing.
fn ask(
    config: &StandbyConfig,
    dirs: &DataDir,
    address: SocketAddr,
    epoch: u32,
    position: LogPosition,
) -> Result<Option<Received>, AskError> {
    let mut peer = peer_io::connect(address, &config.key, CONNECT_TIMEOUT)?;
    peer.send(&Message::Subscribe { epoch, node: config.node.to_string(), position })?;
    peer.set_read_timeout(Some(PROGRESS_TIMEOUT)).map_err(PeerError::Io)?;
    let receiving = loop {
        match peer.recv()? {
            Message::CheckpointPreparing { .. } => {}
            Message::CheckpointOffer { sequence, chain, files, .. } => {
                break Receiving::offer(sequence, chain, files, config.checkpoint_chunk_bytes)
                    .map_err(|error| AskError::Checkpoint(error.to_string()))?;
            }
            Message::Records { .. } | Message::Checkpoint { .. } => {
                peer.shutdown();
                return Ok(None);
            }
            other => return Err(PeerError::Refused(format!("unexpected {other:?}")).into()),
        }
    };
    check_free_space(dirs, &receiving)?;
    let into = dirs.root.join(RECEIVING);
    let received = receive(&mut peer, receiving, &into);
    // The primary now streams the tail; following subscribes again from the checkpoint.
    peer.shutdown();
    if received.is_err() {
        let _ = std::fs::remove_dir_all(&into);
    }
    received.map(Some)
}

/// Refuses a checkpoint this disk cannot hold: its files, and the history store built
/// from its dump (about the dump's size again; counted twice for the store's own
/// overhead).
fn check_free_space(dirs: &DataDir, receiving: &Receiving) -> Result<(), AskError> {
    let dump_bytes =
        receiving.files().iter().filter(|file| file.name == dump::FILE_NAME).map(|file| file.length).sum::<u64>();
    let needed = receiving.total_bytes().saturating_add(dump_bytes.saturating_mul(2));
    let storage = tally_journal::FileStorage::new(&dirs.root, FlushMethod::Fdatasync).map_err(NodeError::from)?;
    match storage.available_bytes() {
        Some(free) if free < needed => Err(AskError::Checkpoint(format!(
            "the checkpoint at sequence {} needs about {needed} bytes free in {} ({} bytes of files and the history store built from its {dump_bytes}-byte dump); {free} bytes are free",
            receiving.sequence(),
            dirs.root.display(),
            receiving.total_bytes()
        ))),
        _ => Ok(()),
    }
}

/// Receives every chunk into `into` (created afresh): each accepted chunk is written at
/// its offset in its file's `.incoming` file; once all are complete they are synced and
/// renamed to their names, and `into` and `DIR` are synced.
fn receive(peer: &mut peer_io::PeerStream, mut receiving: Receiving, into: &Path) -> Result<Received, AskError> {
    if into.exists() {
        std::fs::remove_dir_all(into).map_err(|source| NodeError::Io { path: into.to_path_buf(), source })?;
    }
    std::fs::create_dir(into).map_err(|source| NodeError::Io { path: into.to_path_buf(), source })?;
    let mut staged = Vec::with_capacity(receiving.files().len());
    for info in receiving.files() {
        let path = into.join(format!("{}.incoming", info.name));
        let file = File::create(&path).map_err(|source| NodeError::Io { path: path.clone(), source })?;
        staged.push((file, path));
    }
    while !receiving.is_complete() {
        match peer.recv()? {
            Message::CheckpointChunk { file, offset, bytes, hash, .. } => {
                let write = receiving
                    .chunk(file, offset, &bytes, &hash)
                    .map_err(|error| AskError::Checkpoint(error.to_string()))?;
                let (file, path) = &staged[write.file];
                file.write_all_at(&bytes, write.offset)
                    .map_err(|source| NodeError::Io { path: path.clone(), source })?;
            }
            other => {
                return Err(AskError::Checkpoint(format!("expected a checkpoint chunk, got {}", kind_of(&other))));
            }
        }
    }
    let (sequence, chain) = (receiving.sequence(), receiving.chain());
    let files = receiving.finish().map_err(|error| AskError::Checkpoint(error.to_string()))?;
    for ((file, path), info) in staged.into_iter().zip(&files) {
        file.sync_all().map_err(|source| NodeError::Io { path: path.clone(), source })?;
        drop(file);
        let to = into.join(&info.name);
        std::fs::rename(&path, &to).map_err(|source| NodeError::Io { path: to, source })?;
    }
    sync_dir(into)?;
    Ok(Received { sequence, chain, files })
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
pub fn install(received: &Received, dirs: &DataDir, segment_bytes: usize) -> Result<(), NodeError> {
    let staging = dirs.root.join(STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    }
    let receiving = dirs.root.join(RECEIVING);
    std::fs::rename(&receiving, &staging).map_err(|source| NodeError::Io { path: staging.clone(), source })?;
    sync_dir(&dirs.root)?;
    // Loaded before use: a checkpoint that does not load changes nothing but the staging.
    let staged_store = match load_staged(received, &staging) {
        Ok(staged_store) => staged_store,
        Err(error) => {
            // Made durable: a staging directory that came back after a power loss would
            // be taken for an interrupted install, and the next start would clear this
            // node's journal for a checkpoint it refused.
            if let Err(removal) = remove_durably(&staging, &dirs.root) {
                crate::errln!("tally: the refused checkpoint's staging directory: {removal}");
            }
            return Err(error);
        }
    };
    std::fs::create_dir_all(&dirs.history).map_err(|source| NodeError::Io { path: dirs.history.clone(), source })?;
    let store = dirs.history.join(history::FILE_NAME);
    std::fs::rename(&staged_store, &store).map_err(|source| NodeError::Io { path: store, source })?;
    sync_dir(&dirs.history)?;
    clear_files(&dirs.journal)?;
    clear_files(&dirs.snapshots)?;
    // The outcome stream too: it starts after the checkpoint, as the journal does. Kept,
    // it went on from the new journal's first record with a gap, and the next start took
    // the gap for a damaged tail and cut every entry after it (found in review).
    clear_outcomes(dirs)?;
    for file in received.files.iter().filter(|file| file.name != dump::FILE_NAME) {
        let to = dirs.snapshots.join(&file.name);
        std::fs::rename(staging.join(&file.name), &to).map_err(|source| NodeError::Io { path: to, source })?;
    }
    sync_dir(&dirs.snapshots)?;
    let config = JournalConfig {
        snapshot_sequence: received.sequence,
        genesis_chain: received.chain,
        segment_bytes,
        ..JournalConfig::new(&dirs.journal)
    };
    let (journal, _) = Journal::open(&config)?;
    journal.close();
    remove_durably(&staging, &dirs.root)
}

/// Loads the staged snapshot and builds the history store from the staged dump (read as
/// a stream), cut where that snapshot's ledger says; returns the built store's path (in
/// `staging`).
fn load_staged(received: &Received, staging: &Path) -> Result<PathBuf, NodeError> {
    if !received.files.iter().any(|file| file.name == dump::FILE_NAME) {
        return Err(NodeError::Checkpoint(format!(
            "the checkpoint at sequence {} carries no history dump ({})",
            received.sequence,
            dump::FILE_NAME
        )));
    }
    let restored = snapshots::verify_checkpoint(staging, received.sequence)?;
    let cut = dump::Cut::of(received.sequence, &restored.ledger);
    drop(restored);
    let staged_store = staging.join(history::FILE_NAME);
    let rows = dump::build_store(&staging.join(dump::FILE_NAME), cut, &staged_store)
        .map_err(|error| NodeError::Checkpoint(format!("the history dump is refused: {error}")))?;
    sync_dir(staging)?;
    crate::errln!("tally: the checkpoint's history store holds {rows} rows up to sequence {}", received.sequence);
    Ok(staged_store)
}

/// Removes every file directly in `dir` and syncs it.
pub(super) fn clear_files(dir: &Path) -> Result<(), NodeError> {
    let io = |source| NodeError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|source| NodeError::Io { path: path.clone(), source })?;
        }
    }
    sync_dir(dir)
}

/// Removes `dir` and its contents, then syncs `parent`, so the removal survives a power loss.
fn remove_durably(dir: &Path, parent: &Path) -> Result<(), NodeError> {
    std::fs::remove_dir_all(dir).map_err(|source| NodeError::Io { path: dir.to_path_buf(), source })?;
    sync_dir(parent)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|source| NodeError::Io { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use tally_engine::{Effects, HistoryLookup, Ledger};
    use tally_journal::SnapshotStore;

    use super::*;
    use crate::history::HistoryStore;

    const SEQUENCE: u64 = 9;

    /// The files of a checkpoint as a primary would send them: an empty ledger's snapshot
    /// at [`SEQUENCE`] and its history dump.
    fn checkpoint_files(root: &Path) -> Vec<(String, Vec<u8>)> {
        let ledger = Ledger::new();
        let store = SnapshotStore::open(root.join("primary-snapshots")).expect("snapshot store");
        let image = snapshots::encode(SEQUENCE, &ledger).expect("encode");
        store.write_staged(SEQUENCE, image.as_ref()).expect("stage");
        let path = store.promote(SEQUENCE).expect("promote");
        let name = path.file_name().and_then(|name| name.to_str()).expect("a file name").to_owned();
        let snapshot = (name, std::fs::read(&path).expect("read the snapshot"));
        let (history, _) = HistoryStore::open(&root.join("primary-history")).expect("history");
        history.write(&[], SEQUENCE, true);
        let bytes = history.dump(dump::Cut::of(SEQUENCE, &ledger)).expect("dump");
        vec![snapshot, (dump::FILE_NAME.to_owned(), bytes)]
    }

    /// `files` as `receive` leaves them: in `DIR/checkpoint-receiving/`.
    fn received(dirs: &DataDir, files: &[(String, Vec<u8>)]) -> Received {
        let into = dirs.root.join(RECEIVING);
        std::fs::create_dir_all(&into).expect("receiving directory");
        let files = files
            .iter()
            .map(|(name, bytes)| {
                std::fs::write(into.join(name), bytes).expect("a received file");
                CheckpointFileInfo {
                    name: name.clone(),
                    length: bytes.len() as u64,
                    hash: *blake3::hash(bytes).as_bytes(),
                }
            })
            .collect();
        Received { sequence: SEQUENCE, chain: [7; 16], files }
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
        let good = checkpoint_files(root.path());
        let mut damaged = good.clone();
        damaged[1].1.truncate(20);
        let mut without = good.clone();
        without.pop();
        for bad in [&damaged, &without] {
            let error = install(&received(&dirs, bad), &dirs, 16 << 20).expect_err("refused");
            assert!(matches!(error, NodeError::Checkpoint(_)), "{error}");
            assert!(!dirs.root.join(STAGING).exists(), "the staging directory is cleared");
            assert_eq!(std::fs::read_dir(&dirs.snapshots).expect("snapshots").count(), 0, "no snapshot installed");
            let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
            assert_eq!((mark, history.failed(5)), (3, Some((1, 3))), "the history store is untouched");
        }
        let outcome_segment = dirs.outcomes.join("00000000000000000001.out");
        std::fs::create_dir_all(&dirs.outcomes).expect("outcomes directory");
        std::fs::write(&outcome_segment, b"entries 1 to 2").expect("an outcome segment");
        install(&received(&dirs, &good), &dirs, 16 << 20).expect("installed");
        assert!(!outcome_segment.exists(), "the outcome stream starts after the checkpoint, as the journal does");
        assert!(!dirs.root.join(STAGING).exists());
        assert!(!dirs.root.join(RECEIVING).exists());
        let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
        assert_eq!((mark, history.failed(5)), (SEQUENCE, None), "the primary's store replaced the standby's");
        assert!(dirs.snapshots.join(&good[0].0).exists(), "the snapshot is in place");
        assert!(!dirs.snapshots.join(dump::FILE_NAME).exists(), "the dump is not a snapshot");
    }

    #[test]
    fn an_unfinished_transfer_is_removed_at_start_up_and_nothing_else_is_cleared() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = standby(root.path());
        let files = checkpoint_files(root.path());
        received(&dirs, &files[..1]);
        let role = Role::load(&dirs.root).expect("role");
        clear_interrupted_install(&dirs, &role).expect("cleared");
        assert!(!role.recovering(), "nothing was cleared, so nothing is recovering");
        assert!(!dirs.root.join(RECEIVING).exists());
        let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
        assert_eq!((mark, history.failed(5)), (3, Some((1, 3))), "the history store is untouched");
    }

    /// A clear for a checkpoint stopped part-way (here by an error; a power loss leaves
    /// the same files: the journal gone, a snapshot still there) is finished by the next
    /// start. Without the staging directory as its marker, start-up found a snapshot over
    /// an empty journal, took it for an installed checkpoint, and never caught up.
    #[test]
    fn a_clear_stopped_part_way_is_finished_at_the_next_start() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = standby(root.path());
        let role = Role::load(&dirs.root).expect("role");
        std::fs::write(dirs.journal.join("00000000000000000001.seg"), b"a segment").expect("a segment");
        let snapshot = dirs.snapshots.join("00000000000000000009.snap");
        std::fs::write(&snapshot, b"a snapshot past the common prefix").expect("a snapshot");
        // The snapshots' directory cannot be listed: the clear stops after the journal.
        let held = root.path().join("held-snapshots");
        std::fs::rename(&dirs.snapshots, &held).expect("moved aside");
        std::fs::write(&dirs.snapshots, b"not a directory").expect("in its place");
        clear_for_checkpoint(&dirs, &role).expect_err("the clear stops part-way");
        assert_eq!(std::fs::read_dir(&dirs.journal).expect("journal").count(), 0, "the journal went first");
        std::fs::remove_file(&dirs.snapshots).expect("removed");
        std::fs::rename(&held, &dirs.snapshots).expect("back");

        clear_interrupted_install(&dirs, &role).expect("the next start");
        assert!(!snapshot.exists(), "the interrupted clear was finished");
        let (history, mark) = HistoryStore::open(&dirs.history).expect("history");
        assert_eq!((mark, history.failed(5)), (0, None), "the history store was cleared");
        assert!(!dirs.root.join(STAGING).exists(), "the marker is gone once the clear is done");
        assert!(Role::load(&dirs.root).expect("role").recovering(), "the node stays recovering");
    }
}
