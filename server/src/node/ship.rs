//! The primary's side of replication: for each subscribed standby, one thread streams the
//! journal (from the standby's last record, then live) and another reads its
//! acknowledgements into the replicated watermark the durability gate waits on.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tally_engine::pipeline::{Durability, PipelineStats};
use tally_journal::{JournalReader, ReadLimit};
use tally_replication::{CheckpointFileInfo, CheckpointSchedule, LogPosition, Message, Primary, Record};

use super::peer_io::{PeerError, PeerStream};
use super::role::{Role, RoleKind};
use super::snapshots;
use crate::history::HistoryStore;

/// Records per `Records` message, at most; and their payload bytes, at most.
const RECORDS_PER_SEND_MAX: usize = 1024;
pub(super) const SEND_BYTES_MAX: usize = 4 << 20;
/// The longest an idle shipper sleeps without a ring of the journal bell: it bounds how
/// late a due checkpoint or a closed connection is noticed (not how late records go out:
/// the bell wakes the shipper for those).
const IDLE_WAIT_MAX: Duration = Duration::from_millis(20);

/// The longest between two heartbeats. An empty `Records` message is the heartbeat, and
/// it says two things: the primary is alive (an idle primary journals nothing, so without
/// it a standby could not tell an idle primary from a dead one, and
/// `--auto-promote-after-ms` would depose a healthy primary), and this stream has shipped
/// everything the primary's log held when it was sent, so a recovering standby that
/// receives it holds every input acknowledged before (`Role::caught_up`). It is sent only
/// when the reader is at the log's end: while records flow too, at most once an interval.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);

/// The directory under the data directory where checkpoint dumps being sent are written.
pub const OUTGOING: &str = "checkpoint-outgoing";
/// How often a standby waiting for a checkpoint hears that it is still being prepared.
const PREPARING_INTERVAL: Duration = Duration::from_secs(1);

/// Applied sequences between two state-hash checkpoints shipped to standbys.
pub const CHECKPOINT_INTERVAL: u64 = 64;

/// What the shipping threads share with the node.
pub struct Shipping {
    pub journal_dir: PathBuf,
    /// Where the checkpoint for a standby that needs records this node no longer holds
    /// comes from.
    pub snapshots_dir: PathBuf,
    /// Where the history dump of a checkpoint being sent is written (an unnamed file).
    pub outgoing_dir: PathBuf,
    /// Bytes of file data per checkpoint chunk (`--checkpoint-chunk-bytes`).
    pub chunk_bytes: usize,
    /// The history store, whose rows up to that checkpoint go with it. Weak: the store
    /// closes with the pipeline, so a fenced primary that rejoins as a standby can open it
    /// again (this is held only while a dump is read).
    pub history: Weak<HistoryStore>,
    /// Records are shipped up to this mark ([`shipping_limit`]).
    pub visible: Arc<AtomicU64>,
    pub primary: Mutex<Primary>,
    /// The watermark `replicated:k` waits for.
    pub replicated: Arc<AtomicU64>,
    pub stats: Arc<PipelineStats>,
    pub role: Arc<Role>,
    /// Standbys being streamed to now. While some node of the set is not among them, the
    /// primary asks its peers for their epochs (a partitioned primary learns that way,
    /// once healed, that it was replaced; see `Promoter::rejoin_when_fenced`).
    pub followers: AtomicUsize,
    /// Rung by the journal stage after each commit: the visible mark may have moved.
    pub bell: Arc<super::bell::Bell>,
    /// What each standby that subscribed holds, for `/metrics`.
    pub standbys: StandbyProgress,
    /// The first input of this primary's own epoch, when it inherited older ones.
    pub epoch_start: EpochStart,
    /// The durable watermarks of this node's sinks: the lowest is sent to standbys
    /// ([`Message::SinksHold`]), which delete their outcome segments below it. Empty: no
    /// sink, nothing sent, and standbys keep every segment.
    pub sinks_hold: Vec<Arc<AtomicU64>>,
}

/// A primary whose log ends in records of an older epoch (it was promoted and inherited
/// them) counts none of them committed until a standby holds a record of its own epoch
/// after them (Raft's rule, docs/design.md §7a), so its sinks publish none of them. A
/// client's write brings such a record; on an idle primary nothing would, and settlement
/// would miss the inherited transfers until the next write. So once a stream has shipped
/// a standby the whole log and the last record it shipped is of an older epoch, the
/// primary journals one tick (once per primary: the first stream to get there asks).
/// Under `local` the flush commits and nothing is needed.
///
/// Not before the standby holds the log: requests behind the tick wait for it, so it must
/// be one the standby can acknowledge at once, not after a long catch-up.
pub struct EpochStart {
    submitter: Option<tally_engine::pipeline::Submitter>,
    asked: AtomicBool,
}

impl EpochStart {
    /// Journals the tick through `submitter` when a policy that waits for standbys needs
    /// it (`None`: never).
    pub fn new(submitter: Option<tally_engine::pipeline::Submitter>) -> EpochStart {
        EpochStart { submitter, asked: AtomicBool::new(false) }
    }

    /// A stream reached the log's end with `last_epoch` the epoch of its last record
    /// (`shipped` records in all, the standby's included), this primary being in `epoch`.
    fn at_end(&self, last_epoch: u32, shipped: u64, epoch: u32) {
        let Some(submitter) = &self.submitter else { return };
        if shipped == 0 || last_epoch >= epoch || self.asked.swap(true, Ordering::AcqRel) {
            return;
        }
        match submitter.tick() {
            Ok(()) => crate::errln!(
                "tally: the log ends in epoch {last_epoch} records inherited by this primary of epoch {epoch}: journaled a tick of its own, so \
                 that a standby holding it commits them"
            ),
            Err(error) => crate::errln!("tally: no tick of epoch {epoch} could be journaled: {error}"),
        }
    }
}

/// Standbys tracked at most; one subscribing beyond that is served but not tracked (a
/// replica set has a handful of members; this bounds what a misconfigured one can cost).
const STANDBYS_TRACKED_MAX: usize = 32;

/// Per standby (by the node address it subscribes with): the last sequence it
/// acknowledged as durable, and when it last acknowledged. Written by its acknowledgement
/// reader, read by the scrape; the business logic never touches it.
#[derive(Clone, Default)]
pub struct StandbyProgress {
    standbys: Arc<Mutex<BTreeMap<String, Arc<StandbyAcks>>>>,
}

/// One standby's acknowledgements.
pub struct StandbyAcks {
    /// The highest sequence it holds durably, as far as this primary knows.
    pub acknowledged: AtomicU64,
    /// When it last acknowledged (or subscribed, before its first acknowledgement).
    last_ack: Mutex<Instant>,
    /// Streams this primary runs to it now (a reconnecting standby's old stream may
    /// end after its new one began).
    streams: AtomicUsize,
    /// Its subscriptions so far: only the latest stream's acknowledgements count, so an
    /// old stream still draining cannot raise `acknowledged` above what a standby that
    /// subscribed again (rebuilt, truncated) holds.
    subscription: AtomicU64,
}

impl StandbyAcks {
    /// Time since its last acknowledgement. A connected standby also answers each
    /// heartbeat of an idle primary, so this stays under [`HEARTBEAT_INTERVAL`] plus a
    /// round trip while it is alive; past [`ACK_SILENCE`] it is dropped.
    pub fn since_last_ack(&self) -> Duration {
        self.last_ack.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// Whether this primary streams to it now.
    pub fn connected(&self) -> bool {
        self.streams.load(Ordering::Acquire) > 0
    }

    fn acknowledged(&self, subscription: u64, sequence: u64) {
        if self.subscription.load(Ordering::Acquire) != subscription {
            return;
        }
        self.acknowledged.fetch_max(sequence, Ordering::AcqRel);
        *self.last_ack.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }
}

/// One stream's handle on its standby's progress.
pub struct StreamAcks {
    acks: Arc<StandbyAcks>,
    subscription: u64,
}

impl StreamAcks {
    fn acknowledged(&self, sequence: u64) {
        self.acks.acknowledged(self.subscription, sequence);
    }
}

impl StandbyProgress {
    /// A standby subscribed holding everything up to `holds` (which may be less than it
    /// acknowledged before: a rebuilt or truncated standby); `None` when too many are
    /// tracked already.
    fn subscribed(&self, node: &str, holds: u64) -> Option<StreamAcks> {
        let mut standbys = self.standbys.lock().unwrap_or_else(PoisonError::into_inner);
        if !standbys.contains_key(node) && standbys.len() >= STANDBYS_TRACKED_MAX {
            return None;
        }
        let acks = standbys.entry(node.to_owned()).or_insert_with(|| {
            Arc::new(StandbyAcks {
                acknowledged: AtomicU64::new(0),
                last_ack: Mutex::new(Instant::now()),
                streams: AtomicUsize::new(0),
                subscription: AtomicU64::new(0),
            })
        });
        let subscription = acks.subscription.fetch_add(1, Ordering::AcqRel) + 1;
        acks.acknowledged.store(holds, Ordering::Release);
        *acks.last_ack.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        acks.streams.fetch_add(1, Ordering::AcqRel);
        Some(StreamAcks { acks: Arc::clone(acks), subscription })
    }

    /// Every standby tracked, by node address.
    pub fn each(&self) -> Vec<(String, Arc<StandbyAcks>)> {
        let standbys = self.standbys.lock().unwrap_or_else(PoisonError::into_inner);
        standbys.iter().map(|(node, acks)| (node.clone(), Arc::clone(acks))).collect()
    }
}

impl Shipping {
    fn core(&self) -> std::sync::MutexGuard<'_, Primary> {
        self.primary.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A peer in `epoch` asked something only a primary answers (a probe of its log): if
    /// that epoch is newer, this primary was replaced and is fenced, as by a subscription
    /// from it. Whether it was.
    pub fn check_peer_epoch(&self, epoch: u32) -> bool {
        let checked = self.core().check_epoch(epoch);
        match checked {
            Ok(()) => false,
            Err(fenced) => {
                self.fence(fenced.epoch);
                true
            }
        }
    }

    /// A peer told of a higher epoch: stop acknowledging at once. Unless this process is
    /// primary in that epoch or a newer one: then the stream that heard it belongs to an
    /// earlier incarnation of this node (a shipping thread blocked in a send outlived its
    /// node, which was fenced, rejoined and promoted again), and only that stream ends.
    fn fence(&self, epoch: u32) {
        self.role.heard_of(epoch);
        if self.role.kind() == RoleKind::Primary && epoch <= self.role.epoch() {
            crate::errln!(
                "tally: a stream of an earlier primary of this node heard of epoch {epoch}; this node is primary \
                 in epoch {} and stays so",
                self.role.epoch()
            );
            return;
        }
        if self.role.kind() == RoleKind::Primary {
            crate::errln!("tally: FENCED: a newer primary holds epoch {epoch}; this node accepts no more writes");
        }
        self.role.fence();
    }
}

/// How far a primary ships: under `replicated:k` (and `none`) up to the journal's
/// visible mark, before its own flush, so the standbys' flushes run beside it (a crash
/// that loses the primary's unflushed records leaves it recovering at its next start:
/// `Role::note_unflushed_acks`); under `local` and `local+replicated:k` only what it has
/// flushed. Shipping unflushed records there let a primary that lost power restart in the
/// same epoch with a shorter log and write other records at the same sequences, while a
/// standby kept the lost ones: two histories in one epoch, and a later promotion, taking
/// the longest log of the highest epoch, dropped what the restarted primary had
/// acknowledged. Under `local` the replies wait for the flush anyway; under
/// `local+replicated:k` a standby's flush now follows the primary's instead of running
/// beside it.
pub fn shipping_limit(durability: Durability, visible: &Arc<AtomicU64>, durable: &Arc<AtomicU64>) -> Arc<AtomicU64> {
    if ships_before_flush(durability) { Arc::clone(visible) } else { Arc::clone(durable) }
}

/// Whether a primary under `durability` ships records before its own flush (see
/// [`shipping_limit`]); the simulator's primary asks the same.
pub fn ships_before_flush(durability: Durability) -> bool {
    !durability.flushes_locally()
}

/// How long a send to a standby may make no progress before the standby is dropped (it
/// subscribes again when it reads again).
pub const STANDBY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a standby may send nothing (no acknowledgement, no answer to a heartbeat)
/// before the primary drops it (it subscribes again when it is back). A standby answers
/// every heartbeat, so a live one is heard at least every [`HEARTBEAT_INTERVAL`] even when
/// nothing is shipped; without this a frozen or black-holed standby of an idle primary
/// stayed "connected" for ever, and the primary, believing it followed, never asked its
/// peers whether it had been replaced.
pub const ACK_SILENCE: Duration = Duration::from_secs(10);

/// Serves one authenticated standby that subscribed at `position`.
pub fn serve_standby(mut peer: PeerStream, epoch: u32, node: String, position: LogPosition, shipping: &Arc<Shipping>) {
    let our_epoch = shipping.role.epoch();
    if let Err(fenced) = shipping.core().on_subscribe(epoch) {
        shipping.fence(fenced.epoch);
        let _ = peer.send(&Message::NewerEpoch { epoch: fenced.epoch });
        return;
    }
    if epoch < our_epoch {
        // The standby persists our epoch when the first records arrive.
        crate::errln!("tally: standby {node} follows from epoch {epoch}; this primary is in epoch {our_epoch}");
    }
    // A standby that stops reading (stopped, black-holed) must not hold this thread, and
    // the role it may fence, for the minutes TCP takes to give up: set before a
    // checkpoint goes out, which is the longest send.
    if let Err(error) = peer.set_write_timeout(Some(STANDBY_WRITE_TIMEOUT)) {
        crate::errln!("tally: standby {node}: cannot set a write timeout: {error}");
        return;
    }
    // Checked by `assess_position` (no record follows `u64::MAX`).
    let mut from = position.last_sequence.saturating_add(1);
    match assess_position(&shipping.journal_dir, &position) {
        Ok(()) => {}
        Err(PositionError::NotRetained(reason)) => match send_checkpoint(&mut peer, &node, shipping) {
            Ok(sequence) => {
                crate::errln!("tally: standby {node}: {reason}; sent the checkpoint at sequence {sequence}");
                from = sequence + 1;
            }
            Err(error) => {
                crate::errln!("tally: standby {node} refused: {reason}, and no checkpoint could be sent: {error}");
                let _ = peer.send(&Message::Refused { reason: format!("{reason}; no checkpoint: {error}") });
                return;
            }
        },
        Err(PositionError::Diverged(reason)) => {
            crate::errln!("tally: standby {node} refused: {reason}");
            let _ = peer.send(&Message::Diverged { reason });
            return;
        }
    }
    // What it acknowledged before counts no more than what it holds now.
    shipping.core().on_subscribed(&node, from - 1);
    crate::errln!("tally: standby {node} ({}) follows from sequence {from}", peer.peer);
    let closed = Arc::new(AtomicBool::new(false));
    let progress = shipping.standbys.subscribed(&node, from - 1);
    // The last sequence this stream has sent (or the standby held before it): no
    // acknowledgement counts for more, whatever a misbehaving peer claims.
    let shipped = Arc::new(AtomicU64::new(from - 1));
    let acks = match peer.try_clone() {
        Ok(reader) => {
            let (shipping, closed, node) = (Arc::clone(shipping), Arc::clone(&closed), node.clone());
            let (progress, shipped) = (
                progress.as_ref().map(|progress| StreamAcks {
                    acks: Arc::clone(&progress.acks),
                    subscription: progress.subscription,
                }),
                Arc::clone(&shipped),
            );
            std::thread::Builder::new()
                .name(format!("acks {node}"))
                .spawn(move || read_acks(reader, &node, &shipping, (&closed, &shipped), progress.as_ref()))
        }
        Err(error) => Err(error),
    };
    let Ok(acks) = acks else {
        crate::errln!("tally: standby {node}: cannot start its acknowledgement reader");
        return;
    };
    shipping.followers.fetch_add(1, Ordering::AcqRel);
    // The epoch of the standby's last record; unknown after a checkpoint (0: at worst one
    // tick more than needed).
    let held_epoch = if from == position.last_sequence.saturating_add(1) { position.last_epoch } else { 0 };
    if let Err(error) = stream(&mut peer, (from, held_epoch), shipping, (&closed, &shipped)) {
        crate::errln!("tally: standby {node}: stream ended: {error}");
    }
    shipping.followers.fetch_sub(1, Ordering::AcqRel);
    peer.shutdown();
    closed.store(true, Ordering::Release);
    let _ = acks.join();
    if let Some(progress) = progress {
        progress.acks.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends this node's checkpoint (see [`snapshots::checkpoint`]) to an authenticated
/// standby, one chunk read from disk at a time; returns the sequence it covers. While
/// the files are written and hashed, the standby hears `CheckpointPreparing` every
/// [`PREPARING_INTERVAL`], so its progress timeout does not expire.
fn send_checkpoint(peer: &mut PeerStream, node: &str, shipping: &Shipping) -> Result<u64, String> {
    let history = shipping.history.upgrade().ok_or("the history store is closed: this node is stopping")?;
    let epoch = shipping.role.epoch();
    let mut told = Instant::now();
    let mut preparing = || -> std::io::Result<()> {
        if told.elapsed() >= PREPARING_INTERVAL {
            told = Instant::now();
            peer.send(&Message::CheckpointPreparing { epoch })
                .map_err(|error| std::io::Error::other(error.to_string()))?;
        }
        Ok(())
    };
    let checkpoint = snapshots::checkpoint(
        &shipping.snapshots_dir,
        &shipping.journal_dir,
        &history,
        &shipping.outgoing_dir,
        &mut preparing,
    )?;
    drop(history);
    let bytes: u64 = checkpoint.files.iter().map(|file| file.length).sum();
    crate::errln!(
        "tally: standby {node}: sending the checkpoint at sequence {} ({} files, {bytes} bytes)",
        checkpoint.sequence,
        checkpoint.files.len()
    );
    let files = checkpoint
        .files
        .iter()
        .map(|file| CheckpointFileInfo { name: file.name.clone(), length: file.length, hash: file.hash })
        .collect();
    let offer = Message::CheckpointOffer { epoch, sequence: checkpoint.sequence, chain: checkpoint.chain, files };
    peer.send(&offer).map_err(|error| error.to_string())?;
    let lengths: Vec<u64> = checkpoint.files.iter().map(|file| file.length).collect();
    for read in tally_replication::checkpoint::chunks(&lengths, shipping.chunk_bytes) {
        let file = &checkpoint.files[read.file as usize];
        let mut bytes = vec![0u8; read.length];
        file.file
            .read_exact_at(&mut bytes, read.offset)
            .map_err(|error| format!("cannot read {} at {}: {error}", file.name, read.offset))?;
        peer.send(&tally_replication::checkpoint::chunk(epoch, read, bytes)).map_err(|error| error.to_string())?;
    }
    Ok(checkpoint.sequence)
}

/// Why a subscriber's position cannot simply be continued.
pub enum PositionError {
    /// This node no longer holds the record after it: only a checkpoint can help.
    NotRetained(String),
    /// Its log is not a prefix of ours.
    Diverged(String),
}

/// The standby's last record must be ours too (same sequence, same chain hash): then its
/// log is a prefix of ours and streaming continues it. Otherwise says whether the
/// position is too old for this journal or diverged (also what a `Probe` is answered
/// with). The chain of the standby's last record is read from our record, or from the
/// header of the segment that starts right after it.
pub fn assess_position(journal_dir: &std::path::Path, position: &LogPosition) -> Result<(), PositionError> {
    let Some(next) = position.last_sequence.checked_add(1) else {
        return Err(PositionError::Diverged(format!("no log holds sequence {}", position.last_sequence)));
    };
    let mut reader = match JournalReader::open(journal_dir, next, ReadLimit::Everything) {
        Ok(reader) => reader,
        Err(tally_journal::JournalError::SequenceNotFound(_)) => {
            return Err(PositionError::NotRetained(format!("this primary no longer holds sequence {next}")));
        }
        Err(error) => {
            return Err(PositionError::Diverged(format!("this primary cannot read sequence {next}: {error}")));
        }
    };
    match reader.chain_before() {
        Ok(chain) if chain == position.last_chain => Ok(()),
        Ok(_) => Err(PositionError::Diverged(format!(
            "the standby's log diverges from the primary's at or before sequence {}",
            position.last_sequence
        ))),
        Err(tally_journal::JournalError::SequenceNotFound(_)) => Err(PositionError::Diverged(format!(
            "the standby holds sequence {} and this primary does not: its log diverges",
            position.last_sequence
        ))),
        Err(error) => Err(PositionError::Diverged(format!(
            "this primary cannot read sequence {}: {error}",
            position.last_sequence
        ))),
    }
}

/// A journal record as a replication message carries it.
pub fn to_record(record: &tally_journal::RecordRef<'_>) -> Record {
    Record {
        sequence: record.sequence,
        epoch: record.epoch,
        timestamp: record.timestamp,
        operation: record.operation,
        chain: record.chain,
        payload: record.payload.to_vec(),
    }
}

/// Ships the journal from `from` to a standby whose record before it is of `held_epoch`.
fn stream(
    peer: &mut PeerStream,
    (from, held_epoch): (u64, u32),
    shipping: &Shipping,
    (closed, shipped_mark): (&AtomicBool, &AtomicU64),
) -> Result<(), PeerError> {
    let mut reader = JournalReader::open(&shipping.journal_dir, from, ReadLimit::Visible(shipping.visible.clone()))
        .map_err(|error| PeerError::Refused(error.to_string()))?;
    let mut batch = Vec::new();
    // `None` until the first send: a new subscriber hears from its primary at once, before
    // its auto-promotion timer (which has been running since the old primary went quiet)
    // can mistake the new primary for an absent one.
    let mut last_heartbeat: Option<Instant> = None;
    // This stream's own: every standby, on every connection, gets every interval's hash.
    let mut checkpoints = CheckpointSchedule::new(CHECKPOINT_INTERVAL);
    // This primary's own epoch (fixed for its life), not the role's: a promise of a newer
    // one may move the role, and records labelled with it would carry an epoch this
    // primary does not hold.
    let epoch = shipping.core().epoch();
    // The last record shipped (or held before): its sequence and epoch.
    let (mut last_sequence, mut last_epoch) = (from - 1, held_epoch);
    // The last `SinksHold` sent on this stream.
    let mut sinks_hold_sent = 0u64;
    loop {
        if closed.load(Ordering::Acquire) {
            return Err(PeerError::Closed);
        }
        if shipping.role.kind() != RoleKind::Primary {
            return Err(PeerError::Refused("this node is no longer primary".into()));
        }
        // Primary again, in a newer epoch: this stream is left from an earlier run of this
        // process (blocked in a send while it was fenced and rejoined), whose reader and
        // epoch label are the old run's. The new run streams for itself.
        if shipping.role.epoch() != epoch {
            return Err(PeerError::Refused(format!(
                "this stream is of epoch {epoch}; this node is primary in epoch {}",
                shipping.role.epoch()
            )));
        }
        // Read before the journal: a commit after this read rings, and the wait below
        // then returns at once.
        let rings = shipping.bell.rings();
        batch.clear();
        let mut bytes = 0usize;
        let mut at_end = false;
        while batch.len() < RECORDS_PER_SEND_MAX && bytes < SEND_BYTES_MAX {
            let record = reader.next_record().map_err(|error| PeerError::Refused(error.to_string()))?;
            let Some(record) = record else {
                at_end = true;
                break;
            };
            bytes += record.payload.len();
            batch.push(to_record(&record));
        }
        let shipped = !batch.is_empty();
        if let Some(record) = batch.last() {
            (last_sequence, last_epoch) = (record.sequence, record.epoch);
        }
        if shipped {
            // Before the send: the standby's acknowledgement may come back before this
            // thread runs again.
            shipped_mark.store(last_sequence, Ordering::Release);
            peer.send(&Message::Records { epoch, records: std::mem::take(&mut batch) })?;
        }
        // The send above may have blocked: ask the role again before journaling anything.
        if at_end && shipping.role.kind() == RoleKind::Primary {
            shipping.epoch_start.at_end(last_epoch, last_sequence, epoch);
        }
        // After the records: the heartbeat vouches for everything sent before it.
        if at_end && last_heartbeat.is_none_or(|sent| sent.elapsed() >= HEARTBEAT_INTERVAL) {
            peer.send(&Message::Records { epoch, records: Vec::new() })?;
            last_heartbeat = Some(Instant::now());
        }
        // Asked after every send, not only when idle: under steady load the reader is
        // never idle, and the standby would get no hash until the load stopped. The
        // applied sequence then trails what was shipped; the standby keeps its recent
        // hashes to compare such a late one.
        let (applied, state_hash) = shipping.stats.applied_state();
        if let Some(checkpoint) = checkpoints.due(epoch, applied, state_hash) {
            peer.send(&checkpoint)?;
        }
        // What every sink holds, once it has moved (and only up to what was shipped: a
        // standby deletes nothing it has not received).
        let sinks_hold = shipping.sinks_hold.iter().map(|mark| mark.load(Ordering::Acquire)).min();
        if let Some(hold) = sinks_hold.map(|hold| hold.min(last_sequence))
            && hold > sinks_hold_sent
        {
            peer.send(&Message::SinksHold { epoch, sequence: hold })?;
            sinks_hold_sent = hold;
        }
        if shipped {
            continue;
        }
        let heartbeat_due =
            last_heartbeat.map_or(Duration::ZERO, |sent| HEARTBEAT_INTERVAL.saturating_sub(sent.elapsed()));
        shipping.bell.wait_unless_rung_since(rings, heartbeat_due.min(IDLE_WAIT_MAX));
    }
}

fn read_acks(
    mut peer: PeerStream,
    node: &str,
    shipping: &Shipping,
    (closed, shipped): (&AtomicBool, &AtomicU64),
    progress: Option<&StreamAcks>,
) {
    // The socket's receive timeout, shared with the streaming half (which never reads).
    if let Err(error) = peer.set_read_timeout(Some(ACK_SILENCE)) {
        crate::errln!("tally: standby {node}: cannot set a read timeout: {error}");
        closed.store(true, Ordering::Release);
        peer.shutdown();
        return;
    }
    while !closed.load(Ordering::Acquire) {
        let message = match peer.recv() {
            Ok(message) => message,
            Err(PeerError::Io(error))
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                if !closed.load(Ordering::Acquire) {
                    crate::errln!(
                        "tally: standby {node}: nothing from it for {} s (it answers every heartbeat): dropped; it subscribes again when it is back",
                        ACK_SILENCE.as_secs()
                    );
                }
                break;
            }
            Err(error) => {
                if !closed.load(Ordering::Acquire) {
                    crate::errln!("tally: standby {node}: {error}");
                }
                break;
            }
        };
        let outcome = match message {
            // A fenced node's gate is halted; its watermark stays where it was.
            Message::Ack { .. } if shipping.role.kind() != RoleKind::Primary => break,
            Message::Ack { epoch, durable_sequence } => {
                let durable_sequence = durable_sequence.min(shipped.load(Ordering::Acquire));
                let mut core = shipping.core();
                let outcome = core.on_ack(node, epoch, durable_sequence);
                // An acknowledgement given to an older primary says nothing of our records.
                let ours = epoch == core.epoch();
                drop(core);
                if let (Ok(_), true, Some(progress)) = (&outcome, ours, progress) {
                    progress.acknowledged(durable_sequence);
                }
                outcome
            }
            Message::NewerEpoch { epoch } => shipping.core().check_epoch(epoch).map(|()| None),
            other => {
                crate::errln!("tally: standby {node} sent an unexpected {other:?}; closing");
                break;
            }
        };
        match outcome {
            Ok(Some(watermark)) => {
                shipping.replicated.fetch_max(watermark, Ordering::AcqRel);
            }
            Ok(None) => {}
            Err(fenced) => {
                shipping.fence(fenced.epoch);
                break;
            }
        }
    }
    closed.store(true, Ordering::Release);
    peer.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Shipping` whose primary core holds `core_epoch`, over a role loaded from `dir`.
    fn shipping(dir: &std::path::Path, core_epoch: u32) -> Shipping {
        let role = Arc::new(Role::load(dir).expect("role"));
        Shipping {
            journal_dir: dir.join("journal"),
            snapshots_dir: dir.join("snapshots"),
            outgoing_dir: dir.join(OUTGOING),
            chunk_bytes: 1 << 20,
            history: Weak::new(),
            visible: Arc::new(AtomicU64::new(0)),
            primary: Mutex::new(Primary::new(core_epoch, 1)),
            replicated: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(PipelineStats::default()),
            role,
            followers: AtomicUsize::new(0),
            bell: Arc::new(super::super::bell::Bell::default()),
            standbys: StandbyProgress::default(),
            epoch_start: EpochStart::new(None),
            sinks_hold: Vec::new(),
        }
    }

    #[test]
    fn a_newer_epoch_fences_the_primary_it_ships_for() {
        let root = tempfile::tempdir().expect("temp dir");
        let shipping = shipping(root.path(), 1);
        shipping.role.enter(1, RoleKind::Primary).expect("primary in epoch 1");
        assert!(shipping.check_peer_epoch(2), "a peer in epoch 2 deposes a primary of epoch 1");
        assert_eq!(shipping.role.kind(), RoleKind::Fenced);
    }

    /// A stream of an earlier incarnation (its core in epoch 1) hears of epoch 2 after the
    /// process was promoted again in epoch 3: it ends, and the primary of epoch 3 stays.
    #[test]
    fn a_stale_stream_does_not_fence_a_newer_primary_of_the_same_process() {
        let root = tempfile::tempdir().expect("temp dir");
        let stale = shipping(root.path(), 1);
        stale.role.enter(3, RoleKind::Primary).expect("primary again, in epoch 3");
        assert!(stale.check_peer_epoch(2), "the stale stream's own core is fenced");
        assert_eq!((stale.role.kind(), stale.role.epoch()), (RoleKind::Primary, 3), "the new primary stays");
        drop(stale);
        let stale = shipping(root.path(), 1);
        assert_eq!((stale.role.kind(), stale.role.epoch()), (RoleKind::Primary, 3));
        assert!(stale.check_peer_epoch(4), "an epoch newer than the role's");
        assert_eq!(stale.role.kind(), RoleKind::Fenced, "fences it");
    }

    /// A loopback connection: this end as the primary's `PeerStream` (no handshake), and
    /// the standby's raw socket.
    fn connection() -> (PeerStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        let standby = std::net::TcpStream::connect(address).expect("connected");
        let (primary, _) = listener.accept().expect("accepted");
        (PeerStream::new(primary, address), standby)
    }

    /// A stream left from an earlier run of this process (its core in epoch 1) finds the
    /// process primary again in epoch 3: it ends at once, where it went on shipping the
    /// journal under epoch 1 and sending heartbeats that kept a standby on it.
    #[test]
    fn a_stream_of_an_earlier_run_ends_when_its_process_is_primary_in_a_newer_epoch() {
        let root = tempfile::tempdir().expect("temp dir");
        let stale = shipping(root.path(), 1);
        let config = tally_journal::JournalConfig::new(&stale.journal_dir);
        let (mut journal, _) = tally_journal::Journal::open(&config).expect("a new journal");
        for sequence in 1..=3u64 {
            journal.append(1, sequence, 1, &sequence.to_le_bytes()).expect("appended");
        }
        journal.flush();
        journal.close();
        stale.visible.store(3, Ordering::Release);
        stale.role.enter(3, RoleKind::Primary).expect("primary again, in epoch 3");
        let (mut peer, _standby) = connection();
        let (done, ended) = std::sync::mpsc::channel();
        let stale = Arc::new(stale);
        let streaming = Arc::clone(&stale);
        std::thread::spawn(move || {
            let (closed, shipped) = (AtomicBool::new(false), AtomicU64::new(0));
            let _ = done.send(stream(&mut peer, (1, 1), &streaming, (&closed, &shipped)).map_err(|e| e.to_string()));
        });
        let outcome = ended.recv_timeout(Duration::from_secs(5)).expect("the stale stream ended");
        let error = outcome.expect_err("it ends with a reason");
        assert!(error.contains("primary in epoch 3"), "{error}");
    }

    /// An acknowledgement counts for at most what its stream has shipped: a peer that
    /// claims `u64::MAX` (a bug, or a node holding the secret) no longer moves the
    /// replicated watermark past what any standby holds.
    #[test]
    fn an_acknowledgement_counts_for_no_more_than_the_stream_shipped() {
        use std::io::Write;
        let root = tempfile::tempdir().expect("temp dir");
        let shipping = shipping(root.path(), 1);
        shipping.role.enter(1, RoleKind::Primary).expect("primary in epoch 1");
        let (peer, mut standby) = connection();
        let mut ack = Vec::new();
        Message::Ack { epoch: 1, durable_sequence: u64::MAX }.encode(&mut ack);
        standby.write_all(&ack).expect("sent");
        drop(standby);
        let (closed, shipped) = (AtomicBool::new(false), AtomicU64::new(7));
        read_acks(peer, "standby", &shipping, (&closed, &shipped), None);
        assert_eq!(shipping.replicated.load(Ordering::Acquire), 7);
    }

    #[test]
    fn a_position_at_the_last_sequence_there_can_be_is_refused_without_a_panic() {
        let root = tempfile::tempdir().expect("temp dir");
        let position = LogPosition { last_epoch: 1, last_sequence: u64::MAX, last_chain: Default::default() };
        assert!(matches!(assess_position(root.path(), &position), Err(PositionError::Diverged(_))));
    }

    /// A standby that subscribes again holding less (rebuilt, truncated) shows what it
    /// holds now, not the most it ever acknowledged; its old stream's late
    /// acknowledgements no longer count.
    #[test]
    fn a_standby_that_subscribes_again_with_less_shows_what_it_holds_now() {
        let progress = StandbyProgress::default();
        let first = progress.subscribed("b", 100).expect("tracked");
        first.acknowledged(150);
        let second = progress.subscribed("b", 0).expect("tracked");
        let acknowledged = || progress.each()[0].1.acknowledged.load(Ordering::Acquire);
        assert_eq!(acknowledged(), 0, "the rebuilt standby holds nothing");
        first.acknowledged(160);
        assert_eq!(acknowledged(), 0, "the old stream's acknowledgement is ignored");
        second.acknowledged(20);
        assert_eq!(acknowledged(), 20);
    }
}
