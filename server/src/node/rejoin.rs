//! A node returning as a standby (typically a former primary) finds where its journal
//! and the primary's part, and truncates its own suffix after that point before it
//! follows. That suffix was never acknowledged: the promotion rule gave the new primary
//! every acknowledged input (docs/design.md §7a), so what the new primary lacks was not.
//!
//! The search (`tally_replication::probe`) probes the primary with this node's records at
//! exponentially growing distances from its end, then bisects: O(log n) round trips on
//! one connection. A chain hash that matches at a sequence matches at every sequence
//! before it. The primary says of each record whether it holds it, diverged there, or no
//! longer holds what is needed to tell (a primary of an earlier release says only
//! "differs", and the search treats that as divergence).

use tally_journal::{Journal, JournalConfig, RecoveryMode, SnapshotStore};
use tally_replication::probe::NothingShared;
use tally_replication::{CommonSearch, Found, LogPosition, Message, NextProbe, ProbeAnswer};

use super::peer_io::{self, PeerError, PeerStream};
use super::role::Role;
use super::standby::StandbyConfig;
use super::{DataDir, snapshots};
use crate::error::NodeError;

/// Truncates this node's journal after the last record it shares with the primary, if
/// a primary answers and the logs differ. Unreachable primaries change nothing.
pub(super) fn truncate_divergent_suffix(config: &StandbyConfig, dirs: &DataDir, role: &Role) -> Result<(), NodeError> {
    let store = SnapshotStore::open(&dirs.snapshots)?;
    let restored = snapshots::load(&store)?;
    let journal_config = JournalConfig {
        snapshot_sequence: restored.sequence,
        segment_bytes: config.journal_segment_bytes,
        ..JournalConfig::new(&dirs.journal)
    };
    // Damaged records are repaired before the search reads them (until 2026-12-07 this
    // open refused them, so a standby never reached the repair in `recover_local`).
    let source = super::standby::repair_source(config, role.epoch());
    let (journal, report) = super::open_repairing(&journal_config, Some(&source))?;
    if super::recover::cut_records(&report) {
        // Records above the durable mark on disk were cut as a torn tail: flushed ones
        // among them may have been acknowledged, so this log may lack what this node
        // acknowledged (docs/design.md §7a).
        crate::errln!(
            "tally: the journal's tail was cut at start: recovering until this node has caught up with a primary"
        );
        role.mark_recovering()?;
    }
    // A journal that holds no record: a checkpoint was installed and nothing has arrived
    // since (an idle primary checkpoints at its last sequence). No record of this node can
    // have diverged, and there is none to probe with: it follows from the checkpoint.
    // Until 2026-12-07 reading the missing record failed every start of such a standby.
    let oldest_held = journal.segment_first_sequences().first().copied().unwrap_or(1);
    if journal.last_sequence() < oldest_held {
        journal.close();
        return Ok(());
    }
    let end = position_at(&journal, journal.last_sequence())?;
    if end.last_sequence == 0 {
        journal.close();
        return Ok(());
    }
    // The search may go back to the oldest record this journal still holds, not just to
    // the newest snapshot: a primary that applied its suffix (`local`, `none`) may have
    // written a snapshot inside it, when it was stopped to rejoin if not before.
    let first_kept = if oldest_held <= 1 { 0 } else { oldest_held };
    let mut found = None;
    'primaries: for &address in config.primaries.iter().filter(|&&address| address != config.node) {
        // Asked with the reason first; a primary of an earlier release refuses that frame
        // and closes the connection, and is asked again without it.
        for reason in [true, false] {
            let Ok(mut peer) = peer_io::connect(address, &config.key, peer_io::HANDSHAKE_TIMEOUT) else {
                continue 'primaries;
            };
            let _ = peer.set_read_timeout(Some(peer_io::HANDSHAKE_TIMEOUT));
            match find_common(&mut peer, &journal, end, first_kept, reason, role.epoch()) {
                Ok(Found::Checkpoint(why)) => {
                    journal.close();
                    // No record this journal still holds is both shared with the primary
                    // and still held there. Only the primary's checkpoint can help: what
                    // this node holds beyond it was never acknowledged, or the checkpoint
                    // covers it.
                    let why = match why {
                        NothingShared::PartBeforeOldest => "the logs part before this journal's oldest record",
                        NothingShared::TrimmedPast => "it no longer holds the records where the logs part",
                    };
                    crate::errln!(
                        "tally: REJOIN: no record this journal holds ({first_kept}..={}) can be followed from on {address} ({why}): clearing the journal, snapshots and history store to start from {address}'s checkpoint",
                        end.last_sequence
                    );
                    return super::bootstrap::clear_for_checkpoint(dirs, role);
                }
                Ok(common) => {
                    found = Some((address, common));
                    break 'primaries;
                }
                // Not the primary: try the next address.
                Err(PeerError::Refused(error)) => {
                    crate::errln!("tally: could not compare this journal with {address}'s: {error}");
                    continue 'primaries;
                }
                Err(error) if reason => {
                    crate::errln!(
                        "tally: {address} did not answer a probe asking why records differ ({error}): asking without"
                    );
                }
                Err(error) => crate::errln!("tally: could not compare this journal with {address}'s: {error}"),
            }
        }
    }
    journal.close();
    let Some((address, Found::Common(common))) = found else { return Ok(()) };
    if needs_checkpoint(common, oldest_held, &store.list()?) {
        crate::errln!(
            "tally: REJOIN: the logs part after sequence {common}, which no snapshot at or below it and no record this \
             journal holds ({oldest_held}..) can rebuild: clearing the journal, snapshots and history store to start \
             from {address}'s checkpoint"
        );
        return super::bootstrap::clear_for_checkpoint(dirs, role);
    }
    crate::errln!(
        "tally: this journal diverges from {address}'s after sequence {common}: truncating the {} records after it \
         (never acknowledged: the new primary would hold them)",
        end.last_sequence - common
    );
    store.remove_newer_than(common)?;
    let restored = snapshots::load(&store)?;
    // The snapshot replay would start from is the newest that verifies: a damaged one at or
    // below `common` (listed above) leaves an older base the journal may no longer reach.
    if needs_checkpoint(common, oldest_held, &[restored.sequence]) {
        crate::errln!(
            "tally: REJOIN: the newest snapshot at or below sequence {common} that verifies is at {}, and this journal \
             holds records only from {oldest_held}: clearing the journal, snapshots and history store to start from \
             {address}'s checkpoint",
            restored.sequence
        );
        return super::bootstrap::clear_for_checkpoint(dirs, role);
    }
    let truncate = JournalConfig {
        snapshot_sequence: restored.sequence,
        recovery: RecoveryMode::TruncateAt(common),
        segment_bytes: config.journal_segment_bytes,
        ..JournalConfig::new(&dirs.journal)
    };
    let (journal, _) = Journal::open(&truncate)?;
    journal.close();
    Ok(())
}

/// Whether keeping the first `common` records needs the primary's checkpoint: replay
/// after the truncation starts from the newest snapshot at or below `common` (or from
/// record 1 without one), and the journal, whose oldest record is `oldest_held` (earlier
/// segments trimmed, or set aside as damaged under a snapshot), must hold the record after
/// it.
pub fn needs_checkpoint(common: u64, oldest_held: u64, snapshots: &[u64]) -> bool {
    let base = snapshots.iter().copied().filter(|&sequence| sequence <= common).max().unwrap_or(0);
    base.saturating_add(1) < oldest_held
}

/// Runs the search for the last record this journal shares with the primary's, probing
/// it over `peer` (asking why records differ if `reason`). The probes carry `epoch`, this
/// node's own (at least that of its last record): a primary of an older epoch refuses
/// them rather than have this node truncate records of the epoch that replaced it. (Not
/// the highest epoch heard of: a candidacy that failed is heard of, and no primary holds
/// its epoch; a subscription carries the node's own epoch too.)
fn find_common(
    peer: &mut PeerStream,
    journal: &Journal,
    end: LogPosition,
    first_kept: u64,
    reason: bool,
    epoch: u32,
) -> Result<Found, PeerError> {
    let (mut search, mut next) = CommonSearch::start(end.last_sequence, first_kept);
    loop {
        match next {
            NextProbe::Done(found) => return Ok(found),
            NextProbe::Probe(sequence) => {
                let position = if sequence == end.last_sequence {
                    end
                } else {
                    position_at(journal, sequence).map_err(|error| PeerError::Refused(error.to_string()))?
                };
                next = search.on_answer(probe(peer, epoch, position, reason)?);
            }
        }
    }
}

fn probe(peer: &mut PeerStream, epoch: u32, position: LogPosition, reason: bool) -> Result<ProbeAnswer, PeerError> {
    peer.send(&Message::Probe { epoch, position, reason })?;
    match peer.recv()? {
        Message::Probed { sequence, answer } if sequence == position.last_sequence => Ok(answer),
        other => Err(PeerError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// Epoch, sequence and chain of record `sequence` (the empty log's for 0).
fn position_at(journal: &Journal, sequence: u64) -> Result<LogPosition, NodeError> {
    if sequence == 0 {
        return Ok(LogPosition::default());
    }
    let mut reader = journal.reader(sequence)?;
    match reader.next_record()? {
        Some(record) => {
            Ok(LogPosition { last_epoch: record.epoch, last_sequence: record.sequence, last_chain: record.chain })
        }
        None => Ok(LogPosition::default()),
    }
}

/// How long a fenced node waits between rounds of asking its peers which is primary.
pub const FIND_PRIMARY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Asks each peer in turn (probing the empty log, which any primary of `epoch` or newer
/// answers and any other node refuses) until one answers as primary; `None` if `stop` says
/// so first. A fenced node does not know who fenced it: a `Prepare` names only the epoch,
/// and the newer primary may still be collecting promises.
pub fn find_primary(
    peers: &[std::net::SocketAddr],
    key: &tally_replication::ClusterKey,
    epoch: u32,
    stop: &dyn Fn() -> bool,
) -> Option<std::net::SocketAddr> {
    while !stop() {
        for &address in peers {
            let Ok(mut peer) = peer_io::connect(address, key, peer_io::HANDSHAKE_TIMEOUT) else { continue };
            let _ = peer.set_read_timeout(Some(peer_io::HANDSHAKE_TIMEOUT));
            let asked = Message::Probe { epoch, position: LogPosition::default(), reason: false };
            if let Ok(Message::Probed { .. }) = peer.send(&asked).and_then(|()| peer.recv()) {
                return Some(address);
            }
        }
        std::thread::sleep(FIND_PRIMARY_PAUSE);
    }
    None
}

/// The first peer found in an epoch newer than `epoch`, and that epoch. A peer answers a
/// `Fetch` from an older epoch with `NewerEpoch` (and an empty range with nothing), so an
/// empty fetch asks a peer's epoch without touching its state. Unreachable peers are
/// skipped.
pub fn newer_epoch(
    peers: &[std::net::SocketAddr],
    key: &tally_replication::ClusterKey,
    epoch: u32,
) -> Option<(std::net::SocketAddr, u32)> {
    for &address in peers {
        let Ok(mut peer) = peer_io::connect(address, key, EPOCH_QUESTION_TIMEOUT) else { continue };
        let _ = peer.set_read_timeout(Some(EPOCH_QUESTION_TIMEOUT));
        let asked = Message::Fetch { epoch, from: 1, to: 0 };
        if let Ok(Message::NewerEpoch { epoch: newer }) = peer.send(&asked).and_then(|()| peer.recv())
            && newer > epoch
        {
            return Some((address, newer));
        }
    }
    None
}

/// A peer's epoch, asked with an empty `Fetch` of epoch 0 (answered `NewerEpoch` by a
/// peer past epoch 0, with an empty `Records` of its epoch otherwise); `None` if it cannot
/// be reached or answers anything else.
pub fn peer_epoch(address: std::net::SocketAddr, key: &tally_replication::ClusterKey) -> Option<u32> {
    let mut peer = peer_io::connect(address, key, EPOCH_QUESTION_TIMEOUT).ok()?;
    let _ = peer.set_read_timeout(Some(EPOCH_QUESTION_TIMEOUT));
    match peer.send(&Message::Fetch { epoch: 0, from: 1, to: 0 }).and_then(|()| peer.recv()) {
        Ok(Message::NewerEpoch { epoch } | Message::Records { epoch, .. }) => Some(epoch),
        _ => None,
    }
}

/// How long asking one peer its epoch may take.
const EPOCH_QUESTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::sync::mpsc;

    use tally_replication::ClusterKey;
    use tally_replication::message::VERSION_ORIGINAL;

    use super::*;
    use crate::node::peer_io::PeerStream;

    /// Records in the returning node's journal, and how many of them the primary shares.
    const RECORDS: u64 = 40;
    const SHARED: u64 = 23;
    /// The smallest segment that fits the largest payload.
    const SEGMENT_BYTES: usize = 4 << 20;

    fn key() -> ClusterKey {
        ClusterKey::new("rejoin-test", b"a secret of the rejoin unit test").expect("a valid key")
    }

    /// A journal of [`RECORDS`] records in `dirs`; the position of each (index 0: the
    /// empty log's).
    fn journal_with_records(dirs: &DataDir) -> Vec<LogPosition> {
        let config = JournalConfig { segment_bytes: SEGMENT_BYTES, ..JournalConfig::new(&dirs.journal) };
        let (mut journal, _) = Journal::open(&config).expect("a new journal");
        for sequence in 1..=RECORDS {
            journal.append(1, sequence, 1, &sequence.to_le_bytes()).expect("appended");
        }
        journal.flush();
        let positions = (0..=RECORDS).map(|sequence| position_at(&journal, sequence).expect("a position")).collect();
        journal.close();
        positions
    }

    /// A primary of the release before probes said why records differ: it shares the
    /// returning node's records up to [`SHARED`] and answers a probe only "holds" or
    /// "differs", in version-0 frames. Its decoder refused a frame whose version byte is
    /// not zero ("reserved header bytes are not zero"), and it closed the connection; a
    /// message decoded here that needs version 1 is treated the same way. Reports the
    /// version of each connection's first probe.
    fn old_primary(shared: Vec<LogPosition>) -> (SocketAddr, mpsc::Receiver<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        let (versions, seen) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Ok(mut peer) = peer_io::accept(PeerStream::new(stream, address), &key()) else { continue };
                let mut first = true;
                while let Ok(message) = peer.recv() {
                    if first {
                        let _ = versions.send(message.version());
                        first = false;
                    }
                    if message.version() != VERSION_ORIGINAL {
                        break;
                    }
                    let Message::Probe { position, .. } = message else { break };
                    let answer = if shared.get(position.last_sequence as usize) == Some(&position) {
                        ProbeAnswer::Holds
                    } else {
                        ProbeAnswer::Differs
                    };
                    if peer.send(&Message::Probed { sequence: position.last_sequence, answer }).is_err() {
                        break;
                    }
                }
            }
        });
        (address, seen)
    }

    /// The gap this guards: a returning node asks in version 1 first; a primary of an
    /// earlier release refuses that frame and closes the connection, and the node must ask
    /// again in version 0. Without that second attempt it finds no common record, truncates
    /// nothing, and its diverged suffix is refused by the primary for good.
    #[test]
    fn a_primary_of_an_earlier_release_that_refuses_the_version_one_probe_is_probed_again_in_version_zero() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs = DataDir::create(root.path()).expect("data dir");
        let positions = journal_with_records(&dirs);
        let (primary, versions) = old_primary(positions[..=SHARED as usize].to_vec());
        let config = StandbyConfig {
            data_dir: dirs.root.clone(),
            node: "127.0.0.1:1".parse().expect("an address"),
            primaries: vec![primary],
            key: key(),
            snapshot_interval: None,
            snapshot_after_events: 0,
            journal_segment_bytes: SEGMENT_BYTES,
            repair_from: Vec::new(),
            hot_window: 2,
            hot_window_events: tally_engine::HOT_WINDOW_EVENTS_DEFAULT,
            history_check: crate::history::HistoryCheck::OnOpen,
            checkpoint_chunk_bytes: 1 << 20,
            replicas: 0,
            acknowledges: true,
            last_heard: crate::node::standby::LastHeard::default(),
            sinks_hold: std::sync::Arc::default(),
        };

        let role = Role::load(&dirs.root).expect("role");
        truncate_divergent_suffix(&config, &dirs, &role).expect("the rejoin search runs");

        let config = JournalConfig { segment_bytes: SEGMENT_BYTES, ..JournalConfig::new(&dirs.journal) };
        let (journal, _) = Journal::open(&config).expect("the journal reopens");
        assert_eq!(journal.last_sequence(), SHARED, "truncated after the last shared record");
        assert_eq!(position_at(&journal, SHARED).expect("a position"), positions[SHARED as usize]);
        journal.close();
        let first_probes: Vec<u8> = versions.try_iter().collect();
        assert_eq!(first_probes, [1, 0], "asked in version 1, then again in version 0");
    }
}
