//! A node: the data directory, recovery, and the running pipeline.
//!
//! Layout of a data directory:
//!
//! ```text
//! DIR/journal/     the journal segments (the inputs; the source of truth)
//! DIR/snapshots/   snapshot files
//! DIR/outcomes/    the outcome stream: one entry per journal sequence, for sinks
//! DIR/history/     history.redb, the history store (every transfer, lists, balance rows)
//! DIR/LOCK         locked while a node has the directory open
//! DIR/EPOCH        the epoch and role this node last acted in (see `role`)
//! ```

mod bell;
mod bootstrap;
pub(crate) mod checkpoints;
pub mod derived;
mod history_thread;
pub mod input_log;
pub mod journal_codec;
pub mod outcome_log;
mod peer_io;
pub mod peers;
pub mod promote;
pub mod rebuild;
pub(crate) mod recover;
mod recovery_messages;
pub(crate) mod rejoin;
pub mod repair;
pub(crate) mod replay;
pub mod role;
pub mod ship;
pub mod sinks;
pub(crate) mod snapshots;
pub mod standby;
mod status;

use std::fs::{File, TryLockError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tally_engine::Ledger;
use tally_engine::pipeline::{
    Durability, History, InputLog, Pipeline, PipelineConfig, Submitter, Wait, checkpoint_channel,
};
use tally_journal::{FileStorage, FlushMethod, Journal, JournalConfig, SnapshotStore};
use tally_replication::{ClusterKey, Primary};

use self::checkpoints::{CheckpointWriter, Checkpointing, Due};
use self::derived::DerivedMarks;
use self::input_log::JournalInputLog;
use self::outcome_log::OutcomeStream;
use self::peers::{LocalLog, PeerService};
use self::role::{Role, RoleKind};
use self::ship::Shipping;
use self::sinks::Sinks;
pub use self::status::StatusSource;
use crate::error::NodeError;
use crate::history::{HistoryCheck, HistoryStore};

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub wait: Wait,
    /// How often a tick input drives pending-transfer expiry.
    pub tick_interval: Duration,
    /// How often a checkpoint is taken; `None`: never (then only a clean shutdown
    /// writes one).
    pub snapshot_interval: Option<Duration>,
    /// With periodic checkpoints on, one is also taken once this many events were applied
    /// since the last attempt (0: by time only), so that a restart at full speed replays a
    /// bounded tail of the journal.
    pub snapshot_after_events: u64,
    /// Size of each new journal segment file (pre-allocated in full).
    pub journal_segment_bytes: usize,
    /// The replica set, when this node is part of one.
    pub replication: Option<ReplicationConfig>,
    /// Peers to fetch damaged journal records from at start-up (`--repair-from`); needs
    /// `replication` for the cluster secret.
    pub repair_from: Vec<SocketAddr>,
    /// Settlement into PostgreSQL, when configured.
    pub settlement: Option<tally_sinks::postgres::PostgresConfig>,
    /// Events into NATS JetStream, when configured.
    pub events: Option<tally_sinks::nats::NatsConfig>,
    /// JSON lines in rotating files, when configured (`tally serve` sets it by default).
    pub files: Option<tally_sinks::file::FileConfig>,
    /// The nice value of the sink threads (`--sink-nice`): 19 by default, so that sinks
    /// take CPU the pipeline leaves; 0 leaves them at the node's own priority.
    pub sink_nice: i32,
    /// Whether sinks hold back while the core is busy (`--sink-hold-above`,
    /// `--sink-hold-ms`); `None`: they never do.
    pub sink_hold: Option<tally_sinks::sink::HoldConfig>,
    /// The hot window's bound in inputs (docs/design.md §3.9): what an input at sequence
    /// `S` commits leaves memory when `S + W` is applied at the latest, and is read from
    /// the history store after that.
    pub hot_window: u64,
    /// The hot window's bound in transfer events: what an input commits leaves memory
    /// once the inputs after it carry more than this many.
    pub hot_window_events: u64,
    /// How the history store is checked when the node opens it (`--history-check`).
    pub history_check: HistoryCheck,
    /// Bytes of file data per checkpoint chunk this node sends, and the largest it accepts
    /// (`--checkpoint-chunk-bytes`, a test knob; every node of a set must agree).
    pub checkpoint_chunk_bytes: usize,
}

/// A node's place in a replica set.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    pub key: ClusterKey,
    /// Every node of the set, this one included.
    pub cluster: Vec<SocketAddr>,
}

/// Periodic checkpoints by default: a restart then replays minutes of journal, not all of it.
pub const SNAPSHOT_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);

/// A checkpoint at least every this many applied events: at the node's full rate a minute
/// holds tens of millions, all replayed after a crash. With it a crash restart at 12 M
/// transfers took 9.5–12.1 s against 32.1 s, most of it not the replay
/// (perf-reports/2026-12-04-restart.md).
pub const SNAPSHOT_AFTER_EVENTS_DEFAULT: u64 = 4_000_000;

impl NodeConfig {
    /// A node over `data_dir` with `local` durability and the parking wait strategy.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        let defaults = PipelineConfig::default();
        NodeConfig {
            data_dir: data_dir.into(),
            durability: Durability::Local,
            wait: Wait::Parking,
            tick_interval: defaults.tick_interval,
            snapshot_interval: Some(SNAPSHOT_INTERVAL_DEFAULT),
            snapshot_after_events: SNAPSHOT_AFTER_EVENTS_DEFAULT,
            journal_segment_bytes: tally_journal::SEGMENT_BYTES_DEFAULT,
            replication: None,
            repair_from: Vec::new(),
            settlement: None,
            events: None,
            files: None,
            sink_nice: tally_sinks::sink::NICE_DEFAULT,
            sink_hold: None,
            hot_window: tally_engine::HOT_WINDOW_DEFAULT,
            hot_window_events: tally_engine::HOT_WINDOW_EVENTS_DEFAULT,
            history_check: HistoryCheck::OnOpen,
            checkpoint_chunk_bytes: tally_replication::checkpoint::CHUNK_BYTES,
        }
    }
}

/// What recovery did at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The last journal sequence the snapshot loaded at start covers (0: no snapshot).
    pub snapshot_sequence: u64,
    /// Journal records applied on top of the snapshot (or the empty ledger).
    pub records_replayed: u64,
    /// Read transactions replay opened on the history store (its cold look-ups).
    pub history_reads: u64,
    /// The journal's last sequence after recovery.
    pub last_sequence: u64,
    pub state_hash: u128,
}

/// A running node: the pipeline over the recovered ledger. Dropping it stops the
/// pipeline; [`Node::shutdown`] also hands the ledger back.
pub struct Node {
    /// Stopped first: they only read the outcome stream.
    sinks: Sinks,
    /// Stopped first: it waits on the business-logic thread for copies.
    checkpoints: Option<Checkpointing>,
    pipeline: Pipeline,
    status: StatusSource,
    recovery: Recovery,
    /// Durable marks of the stores derived from the journal (the history store, the
    /// outcome stream): checkpoints and journal retention wait on the lowest.
    derived: DerivedMarks,
    peers: PeerService,
    shipping: Option<Arc<Shipping>>,
    log: LocalLog,
    /// What the outcome stream keeps on disk (segments deleted once every sink has them).
    outcome_retention: Arc<outcome_log::RetentionStats>,
    /// How long the journal stage's flushes take, for metrics.
    flush_latency: Arc<crate::metrics::LatencyHistogram>,
    /// The data directory (for the unflushed-acknowledgements mark at a clean stop).
    data_dir: PathBuf,
    /// Held until the pipeline (and with it the journal) is gone: fields drop in order.
    _lock: File,
}

impl Node {
    /// Opens the data directory (creating it), recovers the ledger from the journal and
    /// starts the pipeline.
    pub fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        DataDir::create(&config.data_dir)?;
        Node::open_with_role(config, Arc::new(Role::load(&config.data_dir)?))
    }

    /// [`Node::open`] with the role a process already shares with its gateway (a
    /// promoted standby's).
    pub fn open_with_role(config: &NodeConfig, role: Arc<Role>) -> Result<Node, NodeError> {
        let dirs = DataDir::create(&config.data_dir)?;
        let lock = dirs.lock()?;
        role.after_unflushed_acks(&dirs.root)?;
        if role.recovering() {
            return Err(NodeError::Recovering { path: dirs.root.clone() });
        }
        if role.kind() == RoleKind::Standby {
            // Started with `serve` over a standby's directory: it stays a follower in
            // spirit and refuses writes; `tally standby` (or a promotion) is the way on.
            role.enter(role.epoch(), RoleKind::Fenced)?;
        }
        let (snapshots, restored, history_store, history_start) = restore_with_history(&dirs, config.history_check)?;
        let repair_source = match (&config.replication, config.repair_from.is_empty()) {
            (Some(replication), false) => Some(repair::RepairSource {
                peers: config.repair_from.clone(),
                key: replication.key.clone(),
                epoch: role.epoch(),
            }),
            _ => None,
        };
        let (journal, report) =
            open_journal(&dirs.journal, restored.sequence, config.journal_segment_bytes, repair_source.as_ref())?;
        if config.replication.is_some() && recover::cut_records(&report) {
            // As a standby's start does (`rejoin::truncate_divergent_suffix`): records
            // above the durable mark on disk were cut, and flushed ones among them may have
            // been acknowledged. A member of a replica set does not serve that log; it
            // catches up as a standby first. A lone node has no one to ask: it warns only.
            crate::errln!(
                "tally: the journal's tail was cut at start: recovering until this node has caught up with a primary"
            );
            role.mark_recovering()?;
            journal.close();
            return Err(NodeError::Recovering { path: dirs.root.clone() });
        }
        let outcome_storage = FileStorage::new(&dirs.outcomes, FlushMethod::Fdatasync)?.with_file_writes();
        let segment_bytes = tally_sinks::stream::SEGMENT_BYTES_DEFAULT;
        let outcomes = OutcomeStream::open(outcome_storage, segment_bytes, report.last_sequence)?;
        // The newest recovery point on disk, whichever snapshot replay starts from.
        let snapshot_sequence = restored.sequence;
        let stores = recover::Stores {
            history: history_store.clone(),
            history_start,
            outcomes,
            hot_window: (config.hot_window, config.hot_window_events),
        };
        let reads_before = history_store.read_transactions();
        let recover::Recovered { ledger, mut outcomes, history, derived, records_replayed, from_snapshot } =
            recover::recover(&journal, report.replay_from, restored, &snapshots, stores)?;
        outcomes.set_sync_interval(outcome_log::SYNC_INTERVAL);
        let recovery = Recovery {
            snapshot_sequence: from_snapshot,
            records_replayed,
            history_reads: history_store.read_transactions() - reads_before,
            last_sequence: journal.last_sequence(),
            state_hash: ledger.state_hash(),
        };

        let durable_sequence = journal.durable_mark();
        let (retained_sender, retained_from) = crossbeam::channel::unbounded();
        let (checkpoint_taker, checkpoint_requests) = checkpoint_channel();
        let replicated = Arc::new(AtomicU64::new(0));
        let visible = journal.visible_mark();
        let visible_limit = visible.clone();
        let bell = Arc::new(bell::Bell::default());
        let input_log = JournalInputLog::new(
            journal,
            Some(retained_from),
            derived.clone(),
            replicated.clone(),
            role.halted(),
            role.epoch(),
            bell.clone(),
        );
        let last_sequence = input_log.last_sequence();
        let flush_latency = input_log.flush_latency();
        // Sinks publish only what the policy has committed: the stream replayed at open
        // holds the whole local journal, and under `replicated:k` its tail may be inputs no
        // standby holds, which a failover discards (`tally_sinks::sink::Source`).
        let watermarks = input_log.watermarks();
        let durability = config.durability;
        let commit: tally_sinks::sink::CommitMark = Arc::new(move || watermarks.passed(durability));
        let outcomes_durable = outcomes.durable_mark();
        let sinks = Sinks::start(config, &dirs.outcomes, &outcomes_durable, commit, &outcomes.activity())?;
        outcomes.retain_for(sinks.watermarks());
        let outcome_retention = outcomes.retention();
        let pipeline_config = PipelineConfig {
            durability: config.durability,
            wait: config.wait,
            tick_interval: config.tick_interval,
            checkpoints: config.snapshot_interval.is_some().then_some(checkpoint_taker),
            ..PipelineConfig::default()
        };
        // The cold-lookup rule reads what look-ups find; retention reads the durable mark
        // (durable), which the registry already holds.
        let history_visible = history.visible_mark();
        let shipped_history = Arc::downgrade(&history_store);
        let history = History { lookup: history_store, writer: Box::new(history), mark: history_visible };
        let pipeline = Pipeline::start_with_history(
            pipeline_config,
            ledger,
            Box::new(input_log),
            Box::new(outcomes),
            Some(history),
        );
        let writer = CheckpointWriter::new(
            snapshots,
            pipeline.stats(),
            derived.clone(),
            Some(retained_sender),
            snapshot_sequence,
        );
        let nudge = checkpoints::nudge_by_empty_query(pipeline.submitter());
        let checkpoints = Some(Checkpointing::start(
            writer,
            checkpoint_requests,
            Due::of(config.snapshot_interval, config.snapshot_after_events),
            Some(nudge),
        ));
        let status =
            StatusSource::new(pipeline.stats(), last_sequence, durable_sequence.clone(), role.clone(), Instant::now());
        let shipping = config.replication.as_ref().map(|_| {
            let replicas = usize::from(config.durability.replicas());
            Arc::new(Shipping {
                journal_dir: dirs.journal.clone(),
                snapshots_dir: dirs.snapshots.clone(),
                outgoing_dir: dirs.root.join(ship::OUTGOING),
                chunk_bytes: config.checkpoint_chunk_bytes,
                history: shipped_history.clone(),
                visible: ship::shipping_limit(config.durability, &visible, &durable_sequence),
                primary: Mutex::new(Primary::new(role.epoch(), replicas)),
                replicated,
                stats: pipeline.stats(),
                role: role.clone(),
                followers: std::sync::atomic::AtomicUsize::new(0),
                bell,
                standbys: ship::StandbyProgress::default(),
                epoch_start: ship::EpochStart::new((replicas > 0).then(|| pipeline.submitter())),
                sinks_hold: sinks.watermarks(),
            })
        });
        if role.kind() == RoleKind::Primary {
            role.enter(role.epoch(), RoleKind::Primary)?;
            // Before the first reply can leave.
            Role::note_unflushed_acks(&dirs.root, config.durability)?;
            role.set_submitter(Some(pipeline.submitter()));
        }
        let log =
            LocalLog { journal_dir: dirs.journal.clone(), limit: visible_limit, follow_lock: Arc::new(Mutex::new(())) };
        let peers = PeerService {
            key: config.replication.as_ref().map(|r| r.key.clone()),
            role,
            shipping: Arc::new(RwLock::new(shipping.clone())),
            log: Arc::new(RwLock::new(log.clone())),
            promoter: None,
        };
        Ok(Node {
            sinks,
            checkpoints,
            pipeline,
            status,
            recovery,
            derived,
            peers,
            shipping,
            log,
            outcome_retention,
            flush_latency,
            data_dir: dirs.root.clone(),
            _lock: lock,
        })
    }

    /// A handle for submitting requests: [`Submitter::execute`] is the blocking,
    /// in-process way to run one.
    pub fn submitter(&self) -> Submitter {
        self.pipeline.submitter()
    }

    pub fn status(&self) -> StatusSource {
        self.status.clone()
    }

    /// What this node offers peers on its port.
    pub fn peers(&self) -> PeerService {
        self.peers.clone()
    }

    /// The journal shipping of a primary in a replica set.
    pub fn shipping(&self) -> Option<Arc<Shipping>> {
        self.shipping.clone()
    }

    /// This node's journal as peers may read it.
    pub fn log(&self) -> LocalLog {
        self.log.clone()
    }

    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// The registry where stores derived from the journal publish their durable marks:
    /// checkpoints and journal retention wait on the lowest.
    pub fn derived_marks(&self) -> DerivedMarks {
        self.derived.clone()
    }

    /// What the outcome stream keeps on disk, for metrics.
    pub fn outcome_retention(&self) -> Arc<outcome_log::RetentionStats> {
        Arc::clone(&self.outcome_retention)
    }

    /// How long the journal stage's flushes take (one sample per flushed batch).
    pub fn flush_latency(&self) -> Arc<crate::metrics::LatencyHistogram> {
        Arc::clone(&self.flush_latency)
    }

    /// Each sink's name and counters.
    pub fn sink_stats(&self) -> Vec<(&'static str, Arc<tally_sinks::sink::SinkStats>)> {
        self.sinks.stats.clone()
    }

    /// Applies everything submitted, stops the pipeline, closes the journal, writes a
    /// checkpoint of the final state (a failure is logged: the journal still has it all)
    /// and returns the final ledger.
    pub fn shutdown(mut self) -> Ledger {
        self.peers.role.set_submitter(None);
        // One checkpoint writer at a time: the periodic one stops before the final one.
        let writer = self.checkpoints.take().and_then(Checkpointing::stop);
        // The ledger is the state after the last input the durability gate let through;
        // inputs still waiting for a standby at shutdown stay in the journal only.
        let stats = self.pipeline.stats();
        let ledger = self.pipeline.shutdown();
        // The journal is closed, everything in it flushed: nothing acknowledged can be lost.
        if let Err(error) = Role::clear_unflushed_acks(&self.data_dir) {
            tracing::warn!(%error, "the unflushed-acknowledgements mark stays: the next start will be recovering");
        }
        checkpoints::at_shutdown(writer, stats.applied_sequence(), &ledger);
        ledger
    }
}

/// Locks the data directory at `root` for an operator tool, as a node does, so that the
/// tool never works on a journal a node has open.
/// Takes the data directory's lock for a tool that only reads: an existing `LOCK` is
/// opened read-only (a lock on a read-only file system or a copy the tool may not write);
/// without one no node has run there, and nothing is created (`None`).
pub fn lock_data_dir_to_read(root: &Path) -> Result<Option<File>, NodeError> {
    let path = root.join("LOCK");
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NodeError::DataDir { path, source }),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(NodeError::Locked { path: root.to_path_buf() }),
        Err(TryLockError::Error(source)) => Err(NodeError::DataDir { path, source }),
    }
}

pub fn lock_data_dir(root: &Path) -> Result<File, NodeError> {
    DataDir {
        root: root.to_path_buf(),
        journal: PathBuf::new(),
        snapshots: PathBuf::new(),
        outcomes: PathBuf::new(),
        history: PathBuf::new(),
    }
    .lock()
}

/// Opens (recovers) the journal after the snapshot at `snapshot_sequence` and prints what
/// recovery found, as every role does at start: a node, a standby.
fn open_journal(
    dir: &Path,
    snapshot_sequence: u64,
    segment_bytes: usize,
    repair_source: Option<&repair::RepairSource>,
) -> Result<(Journal, tally_journal::RecoveryReport), NodeError> {
    let config = JournalConfig { snapshot_sequence, segment_bytes, ..JournalConfig::new(dir) };
    let (journal, report) = open_repairing(&config, repair_source)?;
    recovery_messages::print(&report, snapshot_sequence);
    Ok((journal, report))
}

/// Opens the journal; damage with intact records after it is repaired from
/// `repair_source` first (refused, naming the range, without one).
fn open_repairing(
    config: &JournalConfig,
    repair_source: Option<&repair::RepairSource>,
) -> Result<(Journal, tally_journal::RecoveryReport), NodeError> {
    match Journal::open(config) {
        Ok(opened) => Ok(opened),
        // Any refusal for damage: in the last segment it is `DamagedBeforeIntact` or
        // `BelowDurableMark`, in a sealed one the record's own reason (a checksum, the
        // chain); `repair::find` names a range only where intact records follow the damage.
        Err(error @ tally_journal::JournalError::Corrupt { .. }) => {
            let Some(range) = repair::find(&config.dir) else { return Err(error.into()) };
            match repair_source {
                Some(source) => repair::repair_from(&config.dir, &range, source)?,
                None => {
                    return Err(repair::damaged(
                        &range,
                        "start it with --repair-from ADDR, a peer of the replica set that holds them",
                    ));
                }
            }
            Ok(Journal::open(config)?)
        }
        Err(error) => Err(error.into()),
    }
}

/// The paths of a data directory.
struct DataDir {
    root: PathBuf,
    journal: PathBuf,
    snapshots: PathBuf,
    outcomes: PathBuf,
    history: PathBuf,
}

impl DataDir {
    fn create(root: &Path) -> Result<DataDir, NodeError> {
        let journal = root.join("journal");
        let snapshots = root.join("snapshots");
        let outcomes = root.join("outcomes");
        for dir in [&journal, &snapshots, &outcomes] {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::DataDir { path: dir.clone(), source })?;
        }
        let history = root.join("history");
        Ok(DataDir { root: root.to_path_buf(), journal, snapshots, outcomes, history })
    }

    /// Locks the directory for this process: two writers on one journal would corrupt
    /// it. The kernel drops the lock when the process ends, however it ends.
    fn lock(&self) -> Result<File, NodeError> {
        let path = self.root.join("LOCK");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| NodeError::DataDir { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => Err(NodeError::Locked { path: self.root.clone() }),
            Err(TryLockError::Error(source)) => Err(NodeError::DataDir { path, source }),
        }
    }
}

/// The newest snapshot that verifies and the history store, checked against each other:
/// the store must hold everything the snapshot's state has left behind (docs/design.md
/// §3.9), otherwise recovery replays the journal from its start instead. (Checkpoints wait
/// for the history store's mark and a checkpoint install brings the primary's store cut
/// at its sequence, so this catches a store that was lost or replaced.) A store that fails
/// `check` is refused (`HistoryError::Damaged`).
fn restore_with_history(
    dirs: &DataDir,
    check: HistoryCheck,
) -> Result<(SnapshotStore, snapshots::Restored, Arc<HistoryStore>, u64), NodeError> {
    let snapshots = SnapshotStore::open(&dirs.snapshots)?;
    let restored = snapshots::load(&snapshots)?;
    let (history_store, history_start) = HistoryStore::open_checked(&dirs.history, check)?;
    let restored = recover::against_history(restored, history_start);
    Ok((snapshots, restored, history_store, history_start))
}
