//! A hot standby: it follows a primary's journal and keeps its own ledger current.
//!
//! ```text
//! primary ──Records──▶ follow thread: check (Follower), append, flush, Ack ──▶ primary
//!                          │ (records, checkpoints, in order)
//!                          ▼
//!                      business-logic thread: apply each record, compare checkpoints
//! ```
//!
//! Records are journaled, then acknowledged, then applied: an acknowledgement promises
//! only what is on this standby's disk. The business-logic thread applies each record
//! exactly as replay does (`replay::Deriving`): the same hot window and eviction, the same
//! cold look-ups, and the same derived stores as the primary — the history store
//! (`DIR/history/`) and the outcome stream (`DIR/outcomes/`), registered in its
//! `DerivedMarks` — so a promoted standby answers lookups, account queries and retries of
//! old ids as the old primary did, and its checkpoints wait for those stores as a
//! primary's do. A record whose chain hash differs from the
//! primary's, a gap, or a checkpoint whose state hash differs from this ledger's stops the
//! process with a message: a standby that silently disagreed would be promoted one day.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};
use tally_engine::Ledger;
use tally_engine::pipeline::{CheckpointTaker, PipelineStats, checkpoint_channel};
use tally_journal::{FileStorage, FlushMethod, Journal, SnapshotStore};
use tally_replication::{Checkpoints, ClusterKey, FollowError, Follower, LogPosition, Message, Record, Step};

use super::checkpoints::{self, CheckpointWriter, Checkpointing, Due};
use super::derived::DerivedMarks;
use super::history_thread::HistoryThread;
use super::outcome_log::OutcomeStream;
use super::peer_io::{self, PeerError, PeerStream};
use super::peers::LocalLog;
use super::replay::Deriving;
use super::role::{Role, RoleKind};
use super::snapshots::Written;
use super::{DataDir, StatusSource, journal_codec, recover};
use crate::error::NodeError;

/// How long a connection attempt to a primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between rounds of connection attempts: short at first, so that a standby finds a
/// just-promoted primary within milliseconds (under `replicated:k` the new primary
/// acknowledges nothing until k standbys follow it), then doubling up to the longest.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);
/// Pause between rounds of asking peers their epochs (`Following::confirm_epoch`): peers
/// of a set started together come up within moments of each other.
const EPOCH_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How often a blocked read or a pause looks for a stop request: it bounds how long
/// `tally promote` waits for the follow thread to stop.
const STOP_POLL: Duration = Duration::from_millis(20);
/// A followed primary silent this long (fifteen heartbeats) is taken for gone: the
/// connection is dropped and the primaries are asked again.
const PRIMARY_SILENCE: Duration = Duration::from_secs(3);
/// How long the standby's business-logic thread waits for work before it offers its state
/// to a checkpoint that was asked for (a primary that has gone quiet sends no batches).
const IDLE_OFFER: Duration = Duration::from_millis(100);
/// Batches waiting for the business-logic thread, at most (back-pressure on the stream).
const APPLY_QUEUE: usize = 64;

#[derive(Clone)]
pub struct StandbyConfig {
    pub data_dir: PathBuf,
    /// This node's address: how the primary names it among its standbys.
    pub node: SocketAddr,
    pub primaries: Vec<SocketAddr>,
    pub key: ClusterKey,
    pub snapshot_interval: Option<Duration>,
    /// A checkpoint also once this many events were applied since the last attempt (0: by
    /// time only; `NodeConfig::snapshot_after_events`).
    pub snapshot_after_events: u64,
    /// Size of each new journal segment file (`--journal-segment-mib`).
    pub journal_segment_bytes: usize,
    /// Peers besides the primaries to repair damaged journal records from (`--repair-from`).
    pub repair_from: Vec<SocketAddr>,
    /// The hot window's bounds (`--hot-window`, `--hot-window-events`, docs/design.md §3.9).
    pub hot_window: u64,
    pub hot_window_events: u64,
    /// How the history store is checked when it is opened (`--history-check`).
    pub history_check: crate::history::HistoryCheck,
    /// The largest checkpoint chunk accepted (`--checkpoint-chunk-bytes`).
    pub checkpoint_chunk_bytes: usize,
    /// k of the durability policy (`replicated:k`; 0 for `none`/`local`): a node that
    /// starts without an epoch file hears k + 1 peers' epochs before it follows anyone.
    pub replicas: usize,
    /// Whether it acknowledges what it has made durable: a member of the replica set
    /// (`--cluster`) does. One started without `--cluster` does not: no promotion asks it
    /// for a promise, so an input only it held would be lost by a promotion that needs no
    /// `--force`, and its acknowledgement must not count towards `replicated:k`.
    pub acknowledges: bool,
    /// When a standby of this process last heard a primary, shared by every standby opened
    /// with this configuration (and its clones).
    pub last_heard: LastHeard,
    /// What the primary followed says its sinks all hold durably
    /// ([`Message::SinksHold`]): the standby deletes its outcome segments below it (0, as
    /// at start: nothing is deleted). Shared like `last_heard`.
    pub sinks_hold: Arc<AtomicU64>,
}

/// When a standby last heard a primary (a message on the subscription it follows),
/// shared by every standby a process runs in turn, so that a peer's pre-vote reads it
/// without waiting for a standby that is being reopened or promoted
/// (`Promoter::silence`). It starts as heard when created.
#[derive(Clone, Debug)]
pub struct LastHeard {
    base: Instant,
    millis: Arc<AtomicU64>,
}

impl Default for LastHeard {
    fn default() -> LastHeard {
        LastHeard { base: Instant::now(), millis: Arc::new(AtomicU64::new(0)) }
    }
}

impl LastHeard {
    pub fn heard(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_max(now, Ordering::AcqRel);
    }

    pub fn silence(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.millis.load(Ordering::Acquire)))
    }
}

/// What the follow thread hands the business-logic thread, in stream order.
enum Work {
    Records(Vec<Record>),
    Checkpoint {
        sequence: u64,
        state_hash: u128,
    },
    /// A new subscription from this position: a checkpoint still waiting above it came from
    /// the primary before, whose history past it may not be the one that follows.
    Subscribed {
        last_sequence: u64,
    },
}

/// `Standby::heard_ms` before the first message from a primary (a time since start would
/// read as "heard at start": ready before anything was heard).
const NEVER_HEARD: u64 = u64::MAX;

pub struct Standby {
    checkpoints: Option<Checkpointing>,
    stop: Arc<AtomicBool>,
    follow: Option<JoinHandle<LogPosition>>,
    /// Lets the follow thread start ([`Standby::start_following`]); dropped, it ends.
    go: Option<Sender<()>>,
    log: LocalLog,
    apply: Option<JoinHandle<Ledger>>,
    status: StatusSource,
    stats: Arc<PipelineStats>,
    /// Milliseconds since `started` when a message last came from a primary;
    /// [`NEVER_HEARD`] until the first.
    heard_ms: Arc<AtomicU64>,
    started: Instant,
    marks: DerivedMarks,
    /// Set by the follow thread when it stopped for this standby to be opened again (see
    /// [`Reopen`]): whoever runs it stops it and opens it again (`Promoter::reopen_standby`).
    reopen: Arc<AtomicU8>,
    _lock: std::fs::File,
}

impl Standby {
    /// Recovers the data directory as a node does, ready to follow the primaries once
    /// [`Standby::start_following`] is called. `follow_lock`: the lock a promise takes
    /// (`LocalLog::follow_lock`), shared by every standby and primary a process runs in
    /// turn; `None` for the first.
    pub fn open(
        config: StandbyConfig,
        role: Arc<Role>,
        follow_lock: Option<Arc<std::sync::Mutex<()>>>,
    ) -> Result<Standby, NodeError> {
        let dirs = DataDir::create(&config.data_dir)?;
        let lock = dirs.lock()?;
        if role.after_unflushed_acks(&dirs.root)? {
            crate::errln!(
                "tally: this node replied as a primary before its own flush and did not stop cleanly: recovering until it has caught up with a primary"
            );
        }
        // Before the epoch file is written: a restart must still know the epoch is unconfirmed.
        let new_node = !dirs.root.join(super::role::EPOCH_FILE).exists();
        if new_node && !role.epoch_unconfirmed() {
            role.mark_epoch_unconfirmed()?;
        }
        role.enter(role.epoch(), RoleKind::Standby)?;
        // Before anything reads the journal: an interrupted checkpoint install leaves one
        // that must not be trusted.
        super::bootstrap::clear_interrupted_install(&dirs, &role)?;
        super::rejoin::truncate_divergent_suffix(&config, &dirs, &role)?;
        let mut local = recover_local(&dirs, &config, role.epoch())?;
        let position = LogPosition {
            last_epoch: local.journal.last_epoch(),
            last_sequence: local.journal.last_sequence(),
            last_chain: local.journal.last_chain(),
        };
        // An empty log: a new node, or one whose disk was replaced. Either may stand in
        // the replica set for a node that held acknowledged inputs.
        if position.last_sequence == 0 && !role.recovering() {
            crate::errln!("tally: this node's log is empty: recovering until it has caught up with a primary");
            role.mark_recovering()?;
        }
        if let Some(checkpoint) = super::bootstrap::fetch_checkpoint_if_needed(&config, &dirs, role.epoch(), position)?
        {
            // The history store is opened once per process: everything recovered goes first.
            let Local { journal, derived, .. } = local;
            journal.close();
            drop(derived);
            // The new journal starts after the checkpoint without the epoch of its last
            // record (the offer does not carry it), so its promise would rank it in epoch 0
            // until a record arrives: recovering until then (`Following::last_epoch_known`).
            role.mark_recovering()?;
            super::bootstrap::install(&checkpoint, &dirs, config.journal_segment_bytes)?;
            crate::errln!("tally: installed the checkpoint at sequence {}; following from there", checkpoint.sequence);
            local = recover_local(&dirs, &config, role.epoch())?;
        }
        let Local { snapshots, restored, journal, ledger, derived: stores, marks } = local;
        let stats = Arc::new(PipelineStats::default());
        stats.publish(journal.last_sequence(), 0, 0, &ledger);
        let last_sequence = Arc::new(AtomicU64::new(journal.last_sequence()));
        let durable = journal.durable_mark();
        let status =
            StatusSource::new(stats.clone(), last_sequence.clone(), durable.clone(), role.clone(), Instant::now());
        let log = LocalLog {
            journal_dir: dirs.journal.clone(),
            limit: durable.clone(),
            follow_lock: follow_lock.unwrap_or_default(),
        };
        // Journal retention as on a primary: the checkpoint writer tells the follow thread,
        // which owns the journal, of each recovery point (`input_log::retain`).
        let (retained_to, retained_from) = crossbeam::channel::unbounded();
        let (taker, requests) = checkpoint_channel();
        let taker = config.snapshot_interval.is_some().then_some(taker);
        let writer = CheckpointWriter::new(snapshots, stats.clone(), marks.clone(), Some(retained_to), restored);
        // An idle standby's business-logic thread offers a copy on its own (see `apply_loop`).
        let checkpoints = Some(Checkpointing::start(
            writer,
            requests,
            Due::of(config.snapshot_interval, config.snapshot_after_events),
            None,
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (work, queued) = crossbeam::channel::bounded(APPLY_QUEUE);
        let applied_from = journal.last_sequence();
        let apply_stats = stats.clone();
        let apply = std::thread::Builder::new()
            .name("business-logic".into())
            .spawn(move || apply_loop(ledger, stores, applied_from, &queued, &apply_stats, taker.as_ref()))
            .map_err(|source| NodeError::Io { path: dirs.root.clone(), source })?;
        let started = Instant::now();
        let heard_ms = Arc::new(AtomicU64::new(NEVER_HEARD));
        let reopen = Arc::new(AtomicU8::new(REOPEN_NONE));
        let (go, gone) = crossbeam::channel::bounded(1);
        let following = Following {
            go: gone,
            reopen: reopen.clone(),
            heard_ms: heard_ms.clone(),
            started,
            config,
            role,
            journal: Some(journal),
            last_sequence,
            work,
            stop: stop.clone(),
            follow_lock: log.follow_lock.clone(),
            retained_from,
            derived: marks.clone(),
        };
        let follow = std::thread::Builder::new()
            .name("follow".into())
            .spawn(move || following.run())
            .map_err(|source| NodeError::Io { path: dirs.root.clone(), source })?;
        Ok(Standby {
            checkpoints,
            stop,
            follow: Some(follow),
            go: Some(go),
            log,
            apply: Some(apply),
            status,
            stats,
            heard_ms,
            started,
            marks,
            reopen,
            _lock: lock,
        })
    }

    /// Lets the follow thread subscribe, append and acknowledge. Called once whoever runs
    /// this standby has published its [`Standby::log`] to the peer service: a promise must
    /// read the log of the standby that may acknowledge, never the one it replaced (a
    /// promise reading a stopped standby's frozen end while this one acknowledged past it
    /// would let a promotion lose those records).
    pub fn start_following(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }

    /// Why this standby no longer follows and must be stopped and opened again, if it
    /// must.
    pub fn needs_reopen(&self) -> Option<Reopen> {
        match self.reopen.load(Ordering::Acquire) {
            REOPEN_CHECKPOINT => Some(Reopen::Checkpoint),
            REOPEN_DIVERGED => Some(Reopen::Diverged),
            _ => None,
        }
    }

    /// The durable marks of this standby's derived stores (history, outcomes).
    pub fn derived_marks(&self) -> DerivedMarks {
        self.marks.clone()
    }

    pub fn status(&self) -> StatusSource {
        self.status.clone()
    }

    /// This standby's journal as peers may read it.
    pub fn log(&self) -> LocalLog {
        self.log.clone()
    }

    /// How long since a primary was last heard from (since start if never).
    pub fn silence(&self) -> Duration {
        let heard = match self.heard_ms.load(Ordering::Acquire) {
            NEVER_HEARD => 0,
            heard => heard,
        };
        self.started.elapsed().saturating_sub(Duration::from_millis(heard))
    }

    /// Whether this standby has heard from a primary since it opened.
    pub fn heard_a_primary(&self) -> bool {
        self.heard_ms.load(Ordering::Acquire) != NEVER_HEARD
    }

    /// Stops following, applies what was received, closes the journal, writes a
    /// checkpoint and returns the ledger and where the journal ends.
    pub fn shutdown(mut self) -> (Ledger, LogPosition) {
        // The follow thread stops while the checkpoint thread is joined: a promotion waits
        // for the slower of the two, not for both in turn.
        self.stop.store(true, Ordering::Release);
        // A follow thread that never started ends without following.
        self.go = None;
        let writer = self.checkpoints.take().and_then(Checkpointing::stop);
        let position = match self.follow.take().map(JoinHandle::join) {
            Some(Ok(position)) => position,
            _ => {
                crate::errln!("tally: the follow thread panicked");
                LogPosition::default()
            }
        };
        let ledger = match self.apply.take().map(JoinHandle::join) {
            Some(Ok(ledger)) => ledger,
            _ => {
                crate::errln!("tally: the standby's business-logic thread panicked");
                return (Ledger::new(), position);
            }
        };
        checkpoints::at_shutdown(writer, self.stats.applied_sequence(), &ledger);
        (ledger, position)
    }
}

/// What a standby's business-logic thread writes besides its ledger: the stores derived
/// from the journal, as the primary's history and outcome stages write them.
struct DerivedStores {
    outcomes: OutcomeStream<FileStorage>,
    history: HistoryThread,
    /// Records at or below this were in the history store when it was opened.
    history_from: u64,
}

/// A standby's directory, recovered.
struct Local {
    snapshots: SnapshotStore,
    /// The sequence the loaded snapshot covers (0: none).
    restored: u64,
    journal: Journal,
    /// The state after the journal's last record.
    ledger: Ledger,
    derived: DerivedStores,
    marks: DerivedMarks,
}

/// Where a standby fetches damaged journal records from: its primaries, then `--repair-from`.
pub(super) fn repair_source(config: &StandbyConfig, epoch: u32) -> super::repair::RepairSource {
    let peers = config.primaries.iter().chain(&config.repair_from).copied().filter(|peer| *peer != config.node);
    super::repair::RepairSource { peers: peers.collect(), key: config.key.clone(), epoch }
}

/// Loads the newest snapshot, opens the journal and the derived stores and replays the
/// journal into all of them, as a node's start-up does (`recover::recover`). Damaged
/// journal records are repaired from the primaries (and `--repair-from`).
/// This standby's hash in both definitions a primary may send (see `OwnHash`).
fn own_hash(ledger: &Ledger) -> tally_replication::OwnHash {
    tally_replication::OwnHash { current: ledger.state_hash(), previous: ledger.previous_state_hash() }
}

fn recover_local(dirs: &DataDir, config: &StandbyConfig, epoch: u32) -> Result<Local, NodeError> {
    let (snapshots, restored, history_store, history_start) = super::restore_with_history(dirs, config.history_check)?;
    let (journal, report) = super::open_journal(
        &dirs.journal,
        restored.sequence,
        config.journal_segment_bytes,
        Some(&repair_source(config, epoch)),
    )?;
    let outcome_storage = FileStorage::new(&dirs.outcomes, FlushMethod::Fdatasync)?.with_file_writes();
    let segment_bytes = tally_sinks::stream::SEGMENT_BYTES_DEFAULT;
    let outcomes = OutcomeStream::open(outcome_storage, segment_bytes, report.last_sequence)?;
    // The newest recovery point on disk, whichever snapshot replay starts from.
    let snapshot_sequence = restored.sequence;
    let stores = recover::Stores {
        history: history_store,
        history_start,
        outcomes,
        hot_window: (config.hot_window, config.hot_window_events),
    };
    let recover::Recovered { ledger, mut outcomes, history, derived: marks, .. } =
        recover::recover(&journal, report.replay_from, restored, &snapshots, stores)?;
    outcomes.set_sync_interval(super::outcome_log::SYNC_INTERVAL);
    // A promoted standby's sinks resume from the primary's sinks' destinations: what
    // those hold it need not keep (until 2026-12-08 a standby kept every segment).
    outcomes.retain_for(vec![Arc::clone(&config.sinks_hold)]);
    let history_from = history.mark.load(Ordering::Acquire);
    let history = HistoryThread::start(history).map_err(|source| NodeError::Io { path: dirs.root.clone(), source })?;
    let derived = DerivedStores { outcomes, history, history_from };
    Ok(Local { snapshots, restored: snapshot_sequence, journal, ledger, derived, marks })
}

/// A disagreement with the primary: never papered over.
fn stop_loudly(error: &FollowError) -> ! {
    tracing::error!(%error, "STANDBY STOPPED: this node's copy cannot be trusted; rebuild it from the primary");
    std::process::exit(1)
}

struct Following {
    config: StandbyConfig,
    role: Arc<Role>,
    /// Closed (taken) when the thread ends.
    journal: Option<Journal>,
    last_sequence: Arc<AtomicU64>,
    work: Sender<Work>,
    stop: Arc<AtomicBool>,
    /// See [`LocalLog::follow_lock`].
    follow_lock: Arc<std::sync::Mutex<()>>,
    heard_ms: Arc<AtomicU64>,
    started: Instant,
    /// Recovery points from the checkpoint writer, and the derived stores' marks: what
    /// journal retention may delete below.
    retained_from: Receiver<Written>,
    derived: DerivedMarks,
    /// See [`Standby::needs_reopen`].
    reopen: Arc<AtomicU8>,
    /// One message (or its sender dropped) before the thread follows anyone.
    go: Receiver<()>,
}

impl Following {
    fn run(mut self) -> LogPosition {
        if self.go.recv().is_err() {
            return self.end();
        }
        if self.role.epoch_unconfirmed() && !self.confirm_epoch() {
            return self.end();
        }
        let mut pause = RETRY_PAUSE_MIN;
        while !self.stop.load(Ordering::Acquire) {
            for index in 0..self.config.primaries.len() {
                let address = self.config.primaries[index];
                if address == self.config.node {
                    continue;
                }
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
                let heard_before = self.heard_ms.load(Ordering::Acquire);
                match self.follow(address) {
                    Ok(()) => {}
                    Err(FollowEnd::Peer(error)) => crate::errln!("tally: following {address}: {error}"),
                    Err(FollowEnd::Diverged(error)) => stop_loudly(&error),
                    Err(FollowEnd::CheckpointOffered) => {
                        crate::errln!(
                            "tally: CHECKPOINT: the primary {address} no longer holds the records after {} and offers its checkpoint: this standby stops following to install it",
                            self.position().last_sequence
                        );
                        self.role.set_primary(None);
                        self.reopen.store(REOPEN_CHECKPOINT, Ordering::Release);
                        return self.end();
                    }
                    Err(FollowEnd::LogDiverged(reason)) => {
                        crate::errln!(
                            "tally: REJOIN: the primary {address} refuses this standby's log ({reason}): this standby stops following to drop what diverges and follow again"
                        );
                        self.role.set_primary(None);
                        self.reopen.store(REOPEN_DIVERGED, Ordering::Release);
                        return self.end();
                    }
                }
                self.role.set_primary(None);
                if self.heard_ms.load(Ordering::Acquire) != heard_before {
                    // A primary was followed: when it goes, look for the next one at once.
                    pause = RETRY_PAUSE_MIN;
                }
            }
            self.pause(pause);
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
        self.end()
    }

    /// A node that started without an epoch file (a new node, or a lost disk) asks its
    /// peers their epochs until k + 1 of them (all, in a set of k + 1 or fewer others) have
    /// answered, and takes the highest. Any promotion while it was away had N − k promises,
    /// at least N − k − 1 of them from these peers, so k + 1 answers include one from a
    /// promiser: at that epoch this node refuses a primary the promotion deposed, whose k
    /// acknowledgements it could otherwise complete (docs/design.md §7a). A node rebuilt with
    /// `tally rebuild --epoch E` above its own asks too, and waits until they hold E: E
    /// shown to a primary below it would fence that primary, so a mistyped one only keeps
    /// this node out (and says so). `false` if the node stops first.
    fn confirm_epoch(&mut self) -> bool {
        let peers: Vec<SocketAddr> =
            self.config.primaries.iter().copied().filter(|&peer| peer != self.config.node).collect();
        let needed = tally_replication::epoch_answers_needed(self.config.replicas, peers.len());
        let mut answers = std::collections::BTreeMap::new();
        let mut told = Instant::now();
        let mut claim_told = false;
        crate::errln!(
            "tally: this node's epoch is not confirmed (no epoch file, or one given to `tally rebuild --epoch`): asking \
             {needed} of {peers:?} for theirs before it follows"
        );
        while !self.stop.load(Ordering::Acquire) {
            for &peer in &peers {
                if let Some(epoch) = super::rejoin::peer_epoch(peer, &self.config.key) {
                    answers.insert(peer, epoch);
                }
            }
            let mut below_claim = None;
            if answers.len() >= needed {
                let highest = answers.values().copied().max().unwrap_or(0);
                match self.role.confirm_epoch(highest) {
                    Ok(true) => {
                        crate::errln!(
                            "tally: {} peers told their epochs ({answers:?}): this node holds epoch {}",
                            answers.len(),
                            self.role.epoch()
                        );
                        return true;
                    }
                    Ok(false) => below_claim = Some(highest),
                    Err(error) => {
                        crate::errln!("tally: stopping: cannot record epoch {highest}: {error}");
                        std::process::abort()
                    }
                }
            }
            if told.elapsed() >= Duration::from_secs(5) || (below_claim.is_some() && !claim_told) {
                told = Instant::now();
                if let Some(highest) = below_claim {
                    claim_told = true;
                    crate::errln!(
                        "tally: `tally rebuild --epoch {claim}` gave this node an epoch above every peer's (the highest of \
                         {answers:?} is {highest}): it follows no one until a peer holds epoch {claim}. If {claim} was \
                         mistyped, stop this node and run `tally rebuild --epoch {highest}`",
                        claim = self.role.claimed_epoch()
                    );
                } else {
                    crate::errln!(
                        "tally: waiting for {needed} peers' epochs before following anyone; {} answered: {answers:?}",
                        answers.len()
                    );
                }
            }
            self.pause(EPOCH_RETRY_PAUSE);
        }
        false
    }

    /// Closes the journal; returns where it ends.
    fn end(mut self) -> LogPosition {
        let position = self.position();
        if let Some(journal) = self.journal.take() {
            journal.close();
        }
        position
    }

    /// Sleeps `pause`, or less if the node is stopping.
    fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        while !self.stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
    }

    fn journal(&mut self) -> &mut Journal {
        self.journal.as_mut().expect("invariant: the journal is open while the follow thread runs")
    }

    fn position(&mut self) -> LogPosition {
        let journal = self.journal();
        LogPosition {
            last_epoch: journal.last_epoch(),
            last_sequence: journal.last_sequence(),
            last_chain: journal.last_chain(),
        }
    }

    /// Whether the journal's last epoch is what its last record was written in: it holds a
    /// record, or it is empty from sequence 1, or it continues a record whose epoch it was
    /// told. A journal started from a checkpoint holds none until the primary sends one,
    /// and reads epoch 0 for the checkpoint's last record whatever that record's epoch was.
    fn last_epoch_known(&mut self) -> bool {
        let journal = self.journal();
        let first = journal.segment_first_sequences().first().copied().unwrap_or(1);
        journal.last_sequence() == 0 || journal.last_sequence() >= first || journal.last_epoch() != 0
    }

    /// Follows one primary until the connection ends or the node stops.
    fn follow(&mut self, address: SocketAddr) -> Result<(), FollowEnd> {
        let mut peer = peer_io::connect(address, &self.config.key, CONNECT_TIMEOUT)?;
        let position = self.position();
        let mut follower = Follower::new(self.role.epoch(), position);
        let _ = self.work.send(Work::Subscribed { last_sequence: position.last_sequence });
        peer.send(&follower.subscribe(&self.config.node.to_string()))?;
        peer.set_read_timeout(Some(STOP_POLL)).map_err(PeerError::Io)?;
        // Answers are sent holding the follow lock: a primary frozen with its receive
        // window full (SIGSTOP, a paused container) would otherwise block this thread in a
        // send for ever, past the silence check, and with it every promise and the stop.
        peer.set_write_timeout(Some(PRIMARY_SILENCE)).map_err(PeerError::Io)?;
        self.role.set_primary(Some(address));
        let mut last_message = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let message = match peer.recv() {
                Ok(message) => message,
                Err(PeerError::Io(error))
                    if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    // A primary that lost power, or a link that went dark, closes nothing:
                    // without these the thread would wait on the connection for ever.
                    if self.role.epoch() > follower.epoch() {
                        let _ = peer.send(&Message::NewerEpoch { epoch: self.role.epoch() });
                        return Err(PeerError::Refused("this node promised a newer epoch".into()).into());
                    }
                    if last_message.elapsed() >= PRIMARY_SILENCE {
                        peer.shutdown();
                        return Err(PeerError::Refused(format!(
                            "nothing from the primary for {} ms (it sends a heartbeat every {} ms): looking for a primary again",
                            last_message.elapsed().as_millis(),
                            super::ship::HEARTBEAT_INTERVAL.as_millis()
                        ))
                        .into());
                    }
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            last_message = Instant::now();
            let heard = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).min(NEVER_HEARD - 1);
            self.heard_ms.store(heard, Ordering::Release);
            self.config.last_heard.heard();
            if let Some(journal) = self.journal.as_mut() {
                super::input_log::retain(journal, &self.retained_from, &self.derived);
            }
            match message {
                Message::Records { epoch, records } => {
                    let lock = Arc::clone(&self.follow_lock);
                    let _following = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    // A promise made since the last message: the old primary learns of it.
                    if self.role.epoch() > follower.epoch() {
                        peer.send(&Message::NewerEpoch { epoch: self.role.epoch() })?;
                        return Err(PeerError::Refused("this node promised a newer epoch".into()).into());
                    }
                    self.on_records(&mut peer, &mut follower, epoch, records)?;
                }
                Message::SinksHold { epoch, sequence } => {
                    // From this stream's primary only: an older one's sinks say nothing of
                    // the primary a promotion would take over from.
                    if epoch == follower.epoch() {
                        self.config.sinks_hold.store(sequence, Ordering::Release);
                    }
                }
                Message::Checkpoint { sequence, state_hash, .. } => {
                    // The business-logic thread has stopped only if the node is stopping.
                    let _ = self.work.send(Work::Checkpoint { sequence, state_hash });
                }
                // The primary no longer holds the next record and prepares or offers its
                // checkpoint. The journal and ledger are in use by the running standby: it
                // is stopped and opened again, which subscribes again, receives the
                // checkpoint and installs it before they are in use (`Standby::open`).
                // This connection closes at once, so the primary stops preparing for it.
                Message::CheckpointOffer { .. } | Message::CheckpointPreparing { .. } => {
                    peer.shutdown();
                    return Err(FollowEnd::CheckpointOffered);
                }
                Message::NewerEpoch { epoch } => {
                    return Err(
                        PeerError::Refused(format!("this node knows epoch {epoch}, newer than the peer's")).into()
                    );
                }
                other => return Err(PeerError::Refused(format!("unexpected {other:?} from the primary")).into()),
            }
        }
        Ok(())
    }

    fn on_records(
        &mut self,
        peer: &mut PeerStream,
        follower: &mut Follower,
        epoch: u32,
        records: Vec<Record>,
    ) -> Result<(), FollowEnd> {
        for step in follower.on_records(epoch, &records)? {
            match step {
                Step::Answer(answer) => {
                    peer.send(&answer)?;
                    return Ok(());
                }
                Step::PersistEpoch(epoch) => {
                    if let Err(error) = self.role.enter(epoch, RoleKind::Standby) {
                        crate::errln!("tally: stopping: cannot record epoch {epoch}: {error}");
                        std::process::abort()
                    }
                }
            }
        }
        if records.is_empty() {
            // A heartbeat: the primary is alive, and this stream has shipped everything its
            // log held (`ship::HEARTBEAT_INTERVAL`); each message before it was flushed
            // here, and it comes from a primary of this node's epoch or a newer one (the
            // follower refused it otherwise). A recovering node now holds every input it
            // ever acknowledged. Nothing to journal or apply.
            if self.role.recovering() && self.last_epoch_known() {
                if let Err(error) = self.role.caught_up() {
                    crate::errln!("tally: stopping: cannot record that this node caught up: {error}");
                    std::process::abort()
                }
                tracing::warn!(
                    last_sequence = follower.position().last_sequence,
                    epoch,
                    "CAUGHT UP: this node holds everything its primary has; it promises and may be promoted again"
                );
            }
            // Answered, so that the primary can tell a live standby from a frozen or
            // black-holed one while it has nothing to ship (`ship::ACK_SILENCE`).
            peer.send(&follower.on_heartbeat(self.config.acknowledges))?;
            return Ok(());
        }
        for record in &records {
            let journal = self.journal();
            let sequence = match journal.append(record.epoch, record.timestamp, record.operation, &record.payload) {
                Ok(sequence) => sequence,
                Err(error) => {
                    crate::errln!("tally: stopping: journal append failed: {error}");
                    std::process::abort()
                }
            };
            let chain = journal.last_chain();
            follower.appended(sequence, record.epoch, chain)?;
        }
        // One flush per message: group commit on the standby too.
        let journal = self.journal();
        journal.flush();
        let (durable, last) = (journal.durable_sequence(), journal.last_sequence());
        self.last_sequence.store(last, Ordering::Release);
        // Acknowledged before the records go to the business-logic thread, whose queue may
        // be full (a catch-up): what is durable here is owed to the primary at once, and an
        // ack held behind the apply queue would look like a silent standby. The records go
        // to the business-logic thread even when the ack cannot be sent (the primary has
        // just died): they are journaled all the same, and the next primary streams from
        // the journal's end, so records skipped here would never be applied and the ledger
        // would silently fall behind its journal. Every batch is answered, by a standby
        // that does not count too, so that a long catch-up is not taken for silence.
        let acked = peer.send(&follower.answer_batch(durable, self.config.acknowledges));
        let _ = self.work.send(Work::Records(records));
        acked?;
        Ok(())
    }
}

enum FollowEnd {
    Peer(PeerError),
    Diverged(FollowError),
    /// The primary no longer holds the next record: it prepares or offers its checkpoint.
    CheckpointOffered,
    /// The primary's log parts from this one: this node must drop what diverges.
    LogDiverged(String),
}

impl From<PeerError> for FollowEnd {
    fn from(error: PeerError) -> FollowEnd {
        match error {
            PeerError::Diverged(reason) => FollowEnd::LogDiverged(reason),
            error => FollowEnd::Peer(error),
        }
    }
}

/// Why a running standby stopped following for whoever runs it to open it again; the
/// start-up path then does what following cannot do in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// The primary no longer holds the next record and offers its checkpoint: opening
    /// fetches and installs it.
    Checkpoint,
    /// The primary refused this log as diverged from its own (a suffix the new primary
    /// never had, written in an epoch it replaced): opening probes for the last shared
    /// record and truncates after it (`rejoin::truncate_divergent_suffix`).
    Diverged,
}

const REOPEN_NONE: u8 = 0;
const REOPEN_CHECKPOINT: u8 = 1;
const REOPEN_DIVERGED: u8 = 2;

impl From<FollowError> for FollowEnd {
    fn from(error: FollowError) -> FollowEnd {
        FollowEnd::Diverged(error)
    }
}

/// The standby's business-logic thread: applies records in order with their journaled
/// timestamps, exactly as replay does, compares the primary's checkpoints and, when its
/// own checkpoint writer asks, copies its state after a batch.
fn apply_loop(
    mut ledger: Ledger,
    mut stores: DerivedStores,
    mut applied: u64,
    queued: &Receiver<Work>,
    stats: &PipelineStats,
    checkpoint_taker: Option<&CheckpointTaker>,
) -> Ledger {
    let mut checkpoints = Checkpoints::default();
    // How long the outcome stream may wait before what it holds falls due for an fsync.
    let mut derived_due: Option<Duration> = None;
    loop {
        let wait = derived_due.map_or(IDLE_OFFER, |due| due.min(IDLE_OFFER));
        let work = match queued.recv_timeout(wait) {
            Ok(work) => work,
            Err(RecvTimeoutError::Timeout) => {
                // The history thread makes its own commits durable when they fall due.
                derived_due = stores.outcomes.idle_at(Instant::now());
                // Idle: the ledger is the state after `applied`, as at a batch's end.
                if let Some(taker) = checkpoint_taker {
                    taker.offer(applied, &ledger, stats);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match work {
            Work::Subscribed { last_sequence } => checkpoints.resubscribed(last_sequence),
            Work::Checkpoint { sequence, state_hash } => {
                let too_late = checkpoints.too_late();
                if let Err(error) = checkpoints.on_checkpoint(sequence, state_hash, applied, own_hash(&ledger)) {
                    stop_loudly(&error);
                }
                let now_too_late = checkpoints.too_late();
                // Said at the 1st, 2nd, 4th, ... so that a standby far behind does not flood the log.
                if now_too_late > too_late && now_too_late.is_power_of_two() {
                    crate::errln!(
                        "tally: standby: the primary's state hash after {sequence} came when this standby was at {applied}, past the hashes it keeps: not compared ({now_too_late} so far)"
                    );
                }
            }
            Work::Records(records) => {
                let mut events = 0u64;
                let mut deriving = Deriving {
                    outcomes: &mut stores.outcomes,
                    history: &mut stores.history,
                    history_from: stores.history_from,
                };
                for record in &records {
                    if record.sequence != applied + 1 {
                        crate::errln!(
                            "tally: STANDBY STOPPED: record {} reached the business logic after {applied}: the ledger would no longer be its journal's state",
                            record.sequence
                        );
                        std::process::exit(1)
                    }
                    let command = match journal_codec::decode(record.operation, &record.payload) {
                        Ok(command) => command,
                        Err(error) => {
                            crate::errln!(
                                "tally: STANDBY STOPPED: record {} does not decode: {error}",
                                record.sequence
                            );
                            std::process::exit(1)
                        }
                    };
                    events += command.events() as u64;
                    deriving.apply(&mut ledger, record.sequence, record.timestamp, &command);
                    applied = record.sequence;
                    // The hash is a running sum (O(1) to read): kept after every record
                    // so that a checkpoint arriving after this one is still compared.
                    if let Err(error) = checkpoints.applied(applied, own_hash(&ledger)) {
                        stop_loudly(&error);
                    }
                }
                // The outcome entries are synced at most once per interval; the history
                // goes to its thread. A checkpoint offered below never covers what the
                // derived stores do not hold durably: the checkpoint writer waits for
                // their marks.
                let now = Instant::now();
                stores.outcomes.end_of_batch_at(now);
                stores.history.end_of_batch();
                derived_due = stores.outcomes.idle_at(now);
                stats.publish(applied, records.len() as u64, events, &ledger);
                if let Some(taker) = checkpoint_taker {
                    taker.offer(applied, &ledger, stats);
                }
            }
        }
    }
    ledger
}
